"""The compliance registry: verified emissions, surrender against them, the deadline.

Owned by the ledger and run inside the engine's one sequenced pipeline, so every
registry command is journaled, replayed and hashed like a trade. Per covered entity
(an account) and compliance year it keeps the obligation (verified emissions, with their
data quality and verifier) and what has been surrendered against it.

Rules (docs/compliance.md: obligations, surrender, the deadline and fines; the numbers
live in ``exchange.compliance.allocation``):

- ``emissions``: a covered entity's verified emissions for a year set its obligation,
  with their data quality, verifier and monthly-log completeness (months logged, 0-12);
  a restatement replaces the record (the event names the old figure) until the year is
  assessed;
- ``allocate``: the year's free allocation in the year's vintage, ``pre`` (before
  verification) then ``final`` (the true-up, refused ``not_verified`` until the year's
  emissions are recorded; a restatement is followed by a new final). Each sets the
  allocation; the registry issues the difference from what it issued for that year
  before, or claws the excess back, after deducting the shortfall of the year before.
  The allocation itself is computed at the edge by the sector rules of
  ``exchange.compliance.allocation`` (an allocation plan is the ministry's; the registry executes
  it);
- ``convert`` (banking): 2019-2024 vintages become 2025 vintage up to T = 10,000 +
  1.5 x max(0, net sales in 2024-2025), counted from the market's own trades by the
  engine's clock, capped at the account's old-vintage holdings, less what it converted
  already. The old units are cancelled and new ones issued;
- ``surrender`` with a ``year``: allowances of a vintage no later than the year (no
  borrowing; for 2025 and later, 2019-2024 vintages only once converted, so they are
  refused), offsets (``offset = true`` instruments, CCER) up to 5% of the obligation,
  never from projects inside the scheme (``in_scheme``) and, for 2025 on, only from
  projects registered after 2024-01-22 (``registered``),
  only before the deadline (31 December of the next year, by the engine's clock) and
  before the year is assessed. Without a ``year`` a surrender is a voluntary
  cancellation, as before;
- ``deadline``: each entity with an obligation for the year is assessed: compliant, or
  short, fined ``multiple`` (5-10) times the volume-weighted price of the market's own
  allowance trades in the month before the deadline (December of the next year), times
  the shortfall; the shortfall is deducted from the next year's allocation (at most
  that allocation). The year is closed: no more surrender, allocation or restatement.

Invariant: surrendered units are in the registry's surrender account (``@registry``)
and never trade again; per entity and year, what the registry recorded as surrendered
equals what the ``AllowancesSurrendered`` events moved for that year.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exchange.reasons import Reason
from exchange.reasons import Rejected
from exchange.calendar import civil_from_days, day_of_ns, day_start_ns, days_from_civil
from exchange.compliance.allocation import FINE_MULTIPLES, banking_cap, ccer_cap, fine_fen
from exchange.state import (AllocationState, DeductionState, MonthState, ObligationState,
                            RegistryState)

if TYPE_CHECKING:
    from exchange.market import Instrument

__all__ = [
    "Registry", "Obligation", "Allocation", "civil_month", "deadline_ns", "QUALITIES", "STAGES"
]

QUALITIES = ("measured", "default", "estimated", "revised")
STAGES = ("pre", "final")
CONVERSION_YEAR = 2025  # from this year older vintages count only once converted
OLD_VINTAGE_LAST = 2024
NET_SALES_YEARS = (2024, 2025)  # the years whose net sales raise the banking cap
NEW_CCER_YEAR = 2025  # from this year only CCER registered after the cutoff
NEW_CCER_AFTER = days_from_civil(2024, 1, 22)


def civil_month(ts: int) -> tuple[int, int]:
    """Return ``(year, month)`` of *ts* (integer ns since 1970-01-01, UTC).

    >>> civil_month(0), civil_month(1_767_225_599 * 10**9), civil_month(1_767_225_600 * 10**9)
    ((1970, 1), (2025, 12), (2026, 1))
    """
    return civil_from_days(day_of_ns(ts))[:2]


def deadline_ns(year: int) -> int:
    """Return the first instant after the deadline of compliance *year*: 1 January of
    year + 2, 00:00 (the deadline is the whole of 31 December of year + 1).

    >>> civil_month(deadline_ns(2024) - 1), civil_month(deadline_ns(2024))
    ((2025, 12), (2026, 1))
    """
    return day_start_ns(days_from_civil(year + 2, 1, 1))


@dataclass
class Obligation:
    """One entity's compliance year: its verified emissions and what it surrendered."""

    emissions: int
    quality: str
    verifier: str | None
    months: int = 12
    allowances: int = 0  # surrendered allowances, units
    offsets: int = 0  # surrendered offsets (CCER), units
    status: str | None = None  # after the deadline: "compliant" or "short"
    shortfall: int = 0
    fine: int = 0  # fen

    def counted_offsets(self) -> int:
        """Offsets that count: a downward restatement can leave some above the 5% cap."""
        return min(self.offsets, ccer_cap(self.emissions))

    def row(self) -> list[int | str | None]:
        return [
            self.emissions, self.quality, self.verifier, self.months, self.allowances, self.offsets,
            self.status, self.shortfall, self.fine
        ]


@dataclass
class Allocation:
    """One entity's free allocation of a year: the latest figure and what was issued."""

    stage: str
    allocation: int  # the rule's figure, before any deduction
    deducted: int  # last year's shortfall taken off it (as it stood when allocated)
    issued: int  # units issued for the year, net of claw-backs


class Registry:
    """Obligations per (account, year), surrender eligibility and the yearly deadline."""

    def __init__(self, instruments: Mapping[str, Instrument]) -> None:
        self.instruments = instruments
        self.obligations: dict[tuple[str, int], Obligation] = {}
        self.closed: set[int] = set()  # years assessed
        self.deductions: dict[tuple[str, int], int] = {}  # (account, year) -> units
        self.months: dict[tuple[int, int], list[int]] = {}  # (year, month) -> [fen, units]
        self.allocations: dict[tuple[str, int], Allocation] = {}
        self.net_sales: dict[str, int] = {}  # account -> units sold less bought
        self.converted: dict[str, int] = {}  # account -> units converted (banking)
        self.clock = 0
        self._month_clock = -1  # the clock ``_month`` was worked out for
        self._month: list[int] = [0, 0]
        self._net_year = False

    # --- emissions ----------------------------------------------------------------------
    def record(self, account: str, year: int, qty: int, quality: str,
               months: int = 12) -> int | None:
        """Check an emissions record (``Rejected`` if it breaks a rule); return the
        emissions it restates, or ``None``."""
        if quality not in QUALITIES:
            raise Rejected(Reason.INVALID_QUALITY)
        if not 0 <= months <= 12:
            raise Rejected(Reason.INVALID_MONTHS)
        if not 2000 <= year <= 9999:
            raise Rejected(Reason.INVALID_YEAR)
        if qty < 0 or qty >= 1 << 62:
            raise Rejected(Reason.INVALID_QUANTITY)
        if year in self.closed:
            raise Rejected(Reason.YEAR_CLOSED)
        old = self.obligations.get((account, year))
        return None if old is None else old.emissions

    def apply_record(self, account: str, year: int, qty: int, quality: str, verifier: str | None,
                     months: int = 12) -> None:
        old = self.obligations.get((account, year))
        if old is None:
            self.obligations[(account, year)] = Obligation(qty, quality, verifier, months)
        else:
            old.emissions, old.quality, old.verifier, old.months = qty, quality, verifier, months

    # --- allocation ---------------------------------------------------------------------
    def allocate(self, account: str, symbol: str, year: int, qty: int,
                 stage: str) -> tuple[int, int]:
        """Check an allocation (``Rejected`` if it breaks a rule); return ``(deducted,
        change)``: the shortfall deducted, and the units to issue (positive) or claw back
        (negative)."""
        if stage not in STAGES:
            raise Rejected(Reason.INVALID_STAGE)
        if not 2000 <= year <= 9999:
            raise Rejected(Reason.INVALID_YEAR)
        if qty < 0 or qty >= 1 << 62:
            raise Rejected(Reason.INVALID_QUANTITY)
        inst = self.instruments[symbol]
        if inst.offset or inst.vintage != year:
            raise Rejected(Reason.INELIGIBLE_VINTAGE)
        if year in self.closed:
            raise Rejected(Reason.YEAR_CLOSED)
        before = self.allocations.get((account, year))
        if stage == "pre" and before is not None and before.stage == "final":
            raise Rejected(Reason.ALREADY_FINAL)
        if stage == "final" and (account, year) not in self.obligations:
            raise Rejected(Reason.NOT_VERIFIED)
        deducted = min(qty, self.deductions.get((account, year), 0))
        return deducted, qty - deducted - (before.issued if before else 0)

    def allocated(self, account: str, year: int, qty: int, stage: str, deducted: int,
                  change: int) -> None:
        before = self.allocations.get((account, year))
        issued = (before.issued if before else 0) + change
        self.allocations[(account, year)] = Allocation(stage, qty, deducted, issued)

    # --- banking ------------------------------------------------------------------------
    def conversion_left(self, account: str, symbol: str, to_symbol: str,
                        old_holdings: int) -> int:
        """Return how many units *account* may still convert from *symbol* into
        *to_symbol*, holding *old_holdings* old-vintage units (``Rejected`` if none may)."""
        new = self.instruments[to_symbol]
        if not self.old_vintage(symbol) or new.offset or new.vintage != CONVERSION_YEAR:
            raise Rejected(Reason.INELIGIBLE_VINTAGE)
        done = self.converted.get(account, 0)
        return banking_cap(self.net_sales.get(account, 0), done + old_holdings) - done

    def old_vintage(self, symbol: str) -> bool:
        """True if *symbol* is an allowance of a 2019-2024 vintage (convertible)."""
        inst = self.instruments.get(symbol)
        return (inst is not None and not inst.offset and inst.vintage is not None
                and inst.vintage <= OLD_VINTAGE_LAST)

    def convert(self, account: str, qty: int) -> None:
        self.converted[account] = self.converted.get(account, 0) + qty

    # --- surrender ----------------------------------------------------------------------
    def eligible(self, account: str, symbol: str, qty: int, year: int) -> None:
        """Raise ``Rejected`` with why *qty* of *symbol* cannot count against *account*'s
        *year*; return if it can."""
        obligation = self.obligations.get((account, year))
        if obligation is None:
            raise Rejected(Reason.NO_OBLIGATION)
        if year in self.closed or self.clock >= deadline_ns(year):
            raise Rejected(Reason.AFTER_DEADLINE)
        inst = self.instruments[symbol]
        if inst.offset:
            if inst.in_scheme or (year >= NEW_CCER_YEAR and
                                  (inst.registered is None or inst.registered <= NEW_CCER_AFTER)):
                raise Rejected(Reason.INELIGIBLE_OFFSET)
            if obligation.offsets + qty > ccer_cap(obligation.emissions):
                raise Rejected(Reason.OFFSET_CAP_EXCEEDED)
            return None
        vintage = inst.vintage
        if vintage is None or vintage > year:
            raise Rejected(Reason.INELIGIBLE_VINTAGE)
        if year >= CONVERSION_YEAR and self.old_vintage(symbol):
            raise Rejected(Reason.INELIGIBLE_VINTAGE)
        return None

    def surrendered(self, account: str, symbol: str, qty: int, year: int) -> None:
        obligation = self.obligations[(account, year)]
        if self.instruments[symbol].offset:
            obligation.offsets += qty
        else:
            obligation.allowances += qty

    # --- prices and the deadline ----------------------------------------------------------
    def counts_trades(self, symbol: str) -> bool:
        """Tell whether trades in *symbol* count (``tally``): allowances, not offsets."""
        inst = self.instruments[symbol]
        return inst.vintage is not None and not inst.offset

    def tally(self) -> tuple[list[int], dict[str, int] | None]:
        """Return where an allowance trade at the current clock counts: its month's
        ``[notional, volume]`` (notional in minor units), and the net sales by account
        when the year counts them (2024-2025), else ``None``. Valid until the clock
        moves. Only instruments whose trades count (``counts_trades``) are tallied: the
        ledger adds each such trade's notional and quantity to the month, and in those
        years the quantity to the seller's net sales and takes it from the buyer's."""
        # Profiled (benchmarks/ledger.py): working out the month per trade was a tenth of the
        # ledger's time; it is worked out again only when the clock has moved.
        if self.clock != self._month_clock:
            self._month_clock = self.clock
            year_month = civil_month(self.clock)
            self._month = self.months.setdefault(year_month, [0, 0])
            self._net_year = year_month[0] in NET_SALES_YEARS
        return self._month, (self.net_sales if self._net_year else None)

    def deadline_month(self, year: int) -> tuple[int, int]:
        """Return ``(notional, volume)`` of allowance trades in December of *year* + 1,
        the month before the deadline of compliance *year*, whose average sets fines."""
        notional, volume = self.months.get((year + 1, 12), (0, 0))
        return notional, volume

    def assess(self, year: int, multiple: int) -> list[tuple[str, Obligation]]:
        """Close *year*: return the assessed ``(account, obligation)`` rows in account
        order (``Rejected``, with nothing changed, if it cannot close)."""
        if year in self.closed:
            raise Rejected(Reason.YEAR_CLOSED)
        if multiple not in FINE_MULTIPLES:
            raise Rejected(Reason.INVALID_MULTIPLE)
        rows = sorted((account, ob) for (account, y), ob in self.obligations.items() if y == year)
        notional, volume = self.deadline_month(year)
        short = any(ob.allowances + ob.counted_offsets() < ob.emissions for _, ob in rows)
        if short and not volume:
            raise Rejected(Reason.NO_MARKET_PRICE)
        for account, ob in rows:
            ob.shortfall = max(0, ob.emissions - ob.allowances - ob.counted_offsets())
            ob.status = "short" if ob.shortfall else "compliant"
            ob.fine = fine_fen(ob.shortfall, notional, volume, multiple) if ob.shortfall else 0
            if ob.shortfall:
                self.deductions[(account, year + 1)] = ob.shortfall
        self.closed.add(year)
        return rows

    # --- verification -------------------------------------------------------------------
    def check(self, surrendered: dict[str, int]) -> None:
        """Raise ``AssertionError`` if the registry's records disagree with *surrendered*
        (the surrender account's units per instrument) or break a rule."""
        units = {s: q for s, q in surrendered.items() if s in self.instruments}
        offsets = sum(q for s, q in units.items() if self.instruments[s].offset)
        allowances = sum(units.values()) - offsets
        assert sum(ob.offsets for ob in self.obligations.values()) <= offsets, "offsets"
        assert sum(ob.allowances for ob in self.obligations.values()) <= allowances, "allowances"
        assert sum(self.net_sales.values()) == 0, "net sales do not balance"
        for key, allocation in self.allocations.items():
            assert allocation.issued == allocation.allocation - allocation.deducted, key
            assert 0 <= allocation.deducted <= self.deductions.get(key, 0), key
        for (account, year), ob in self.obligations.items():
            assert (ob.status is None) == (year not in self.closed), (account, year, "status")
            if ob.status is not None:
                assert ob.shortfall == max(0, ob.emissions - ob.allowances - ob.counted_offsets())

    # --- state (exchange.state) ---------------------------------------------------------
    def to_state(self) -> RegistryState:
        """Return the registry's state as data (its month cache is rebuilt, not kept)."""
        return RegistryState(
            obligations=[
                ObligationState(account=a, year=y, emissions=ob.emissions, quality=ob.quality,
                                verifier=ob.verifier, months=ob.months, allowances=ob.allowances,
                                offsets=ob.offsets, status=ob.status, shortfall=ob.shortfall,
                                fine=ob.fine) for (a, y), ob in self.obligations.items()
            ], closed=sorted(self.closed), deductions=[
                DeductionState(account=a, year=y, units=q) for (a, y), q in self.deductions.items()
            ], months=[
                MonthState(year=y, month=m, notional=f, volume=u)
                for (y, m), (f, u) in self.months.items()
            ], allocations=[
                AllocationState(account=a, year=y, stage=al.stage, allocation=al.allocation,
                                deducted=al.deducted, issued=al.issued)
                for (a, y), al in self.allocations.items()
            ], net_sales=dict(self.net_sales), converted=dict(self.converted), clock=self.clock)

    def load_state(self, state: RegistryState) -> None:
        """Take the state *state* (``to_state``) into this new registry. Raise
        ``ValueError`` on a repeated key or a value of the wrong kind."""

        def once(table: Container[object], key: object, what: str) -> None:
            if key in table:
                raise ValueError(f"registry: {what} {key} given twice")

        for ob in state.obligations:
            if ob.quality not in QUALITIES or ob.status not in (None, "compliant", "short"):
                raise ValueError(f"registry: obligation {ob.account} {ob.year}: "
                                 f"quality {ob.quality!r}, status {ob.status!r}")
            once(self.obligations, (ob.account, ob.year), "obligation")
            self.obligations[(ob.account, ob.year)] = Obligation(ob.emissions, ob.quality,
                                                                 ob.verifier, ob.months,
                                                                 ob.allowances, ob.offsets,
                                                                 ob.status, ob.shortfall, ob.fine)
        self.closed = set(state.closed)
        for d in state.deductions:
            once(self.deductions, (d.account, d.year), "deduction")
            self.deductions[(d.account, d.year)] = d.units
        for m in state.months:
            if not 1 <= m.month <= 12:
                raise ValueError(f"registry: month {m.year}-{m.month}")
            once(self.months, (m.year, m.month), "month")
            self.months[(m.year, m.month)] = [m.notional, m.volume]
        for al in state.allocations:
            if al.stage not in STAGES:
                raise ValueError(f"registry: allocation stage {al.stage!r}")
            once(self.allocations, (al.account, al.year), "allocation")
            self.allocations[(al.account, al.year)] = Allocation(al.stage, al.allocation,
                                                                 al.deducted, al.issued)
        self.net_sales = dict(state.net_sales)
        self.converted = dict(state.converted)
        self.clock = state.clock
        self._month_clock = -1  # the month cache is worked out again at the next trade

    # --- verification (continued) -------------------------------------------------------
    def snapshot(self) -> list[object]:
        return [[[a, y, ob.row()] for (a, y), ob in sorted(self.obligations.items())],
                sorted(self.closed),
                sorted([a, y, q] for (a, y), q in self.deductions.items()),
                sorted([y, m, f, u] for (y, m), (f, u) in self.months.items()),
                [[a, y, al.stage, al.allocation, al.deducted, al.issued]
                 for (a, y), al in sorted(self.allocations.items())],
                sorted(self.net_sales.items()),
                sorted(self.converted.items())]
