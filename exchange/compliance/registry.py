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
- ``convert`` (banking, the allocation plan's annex): 2019-2024 vintages become 2025
  vintage up to T = 10,000 + 1.5 x max(0, net sales in 2024-2025), counted from the
  market's own trades by the engine's clock, capped at the account's old-vintage
  holdings at the cut-off (the end of 2025-12-31, market time), less what it converted
  already. The registry records every account's old-vintage holdings (plus what it had
  converted) when the engine's clock first passes the cut-off, before the command that
  moved it runs; until then the cap uses the holdings of the moment. Conversion is
  accepted only in the application window, which closes at the end of 2026-06-10 in the
  market's time zone (``conversion_closed`` after; ``Registry(conversion_closes=)``);
  an entity assessed short at any deadline is excluded (``missed_surrender``). The old
  units are cancelled and new ones issued. Net sales count trades of 2019-2024 vintages
  only: the ledger's settlement adds to ``tally``'s net sales only the trades of an
  instrument ``old_vintage`` says is one;
- ``surrender`` with a ``year``: allowances of a vintage no later than the year (no
  borrowing; for 2025 and later, 2019-2024 vintages only once converted, so they are
  refused), offsets (``offset = true`` instruments, CCER) up to 5% of the obligation,
  never from projects inside the scheme (``in_scheme``) and, for 2025 on, only from
  projects registered after 2024-01-22 (``registered``),
  only before the deadline (the end of 31 December of the next year in the market's time
  zone, by the engine's clock) and before the year is assessed. Without a ``year`` a
  surrender is a voluntary cancellation, as before;
- ``deadline``: each entity with an obligation for the year is assessed: compliant, or
  short, fined ``multiple`` (5-10) times the price times the shortfall. The price is the
  operator's reference price when the deadline gives one (a real operator gives the
  published national average), else the volume-weighted price of the market's own
  allowance trades in the month before the deadline (December of the next year, months
  in the market's time zone); with neither, a deadline where anyone is short is refused
  (``no_market_price``). The shortfall is deducted from the next year's allocation (at
  most that allocation). The year is closed: no more surrender, allocation or
  restatement.

Time: the deadline, the months of the price and the banking dates are days of the
market's time zone (``Registry(schedule=)``, the market's ``Schedule``; ``None``: UTC).
The registry reads no clock: its time is the engine's (``clock``).

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
    from exchange.accounts import Account
    from exchange.market import Instrument
    from exchange.schedule import Schedule

__all__ = [
    "Registry", "Obligation", "Allocation", "civil_month", "deadline_ns", "local_day",
    "local_day_start_ns", "QUALITIES", "STAGES", "CONVERSION_CUTOFF", "CONVERSION_CLOSES"
]

QUALITIES = ("measured", "default", "estimated", "revised")
STAGES = ("pre", "final")
CONVERSION_YEAR = 2025  # from this year older vintages count only once converted
OLD_VINTAGE_LAST = 2024
NET_SALES_YEARS = (2024, 2025)  # the years whose net sales raise the banking cap
NEW_CCER_YEAR = 2025  # from this year only CCER registered after the cutoff
NEW_CCER_AFTER = days_from_civil(2024, 1, 22)
# Banking, the allocation plan's annex: the cap counts the old-vintage holdings at the end
# of this day, and applications close at the end of that one (days of the market's zone).
CONVERSION_CUTOFF = days_from_civil(2025, 12, 31)
CONVERSION_CLOSES = days_from_civil(2026, 6, 10)
_NEVER = 1 << 64  # past any engine time


def local_day(ts: int, schedule: Schedule | None = None) -> int:
    """Return the day number of *ts* in the market's time zone (*schedule*; ``None``: UTC)."""
    return day_of_ns(ts) if schedule is None else schedule.local_day(ts)


def local_day_start_ns(day: int, schedule: Schedule | None = None) -> int:
    """Return the first instant (engine ns) of *day* in the market's time zone.

    >>> local_day_start_ns(20_454) // 10**9   # 2026-01-01 00:00 UTC
    1767225600
    """
    return day_start_ns(day) if schedule is None else schedule.at(day, 0)


def civil_month(ts: int, schedule: Schedule | None = None) -> tuple[int, int]:
    """Return ``(year, month)`` of *ts* (integer ns since 1970-01-01) in the market's time
    zone (*schedule*; ``None``: UTC).

    >>> civil_month(0), civil_month(1_767_225_599 * 10**9), civil_month(1_767_225_600 * 10**9)
    ((1970, 1), (2025, 12), (2026, 1))
    """
    return civil_from_days(local_day(ts, schedule))[:2]


def deadline_ns(year: int, schedule: Schedule | None = None) -> int:
    """Return the first instant after the deadline of compliance *year*: 1 January of
    year + 2, 00:00 in the market's time zone (the deadline is the whole of 31 December of
    year + 1 there; *schedule* ``None``: UTC).

    >>> civil_month(deadline_ns(2024) - 1), civil_month(deadline_ns(2024))
    ((2025, 12), (2026, 1))
    """
    return local_day_start_ns(days_from_civil(year + 2, 1, 1), schedule)


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

    def __init__(self, instruments: Mapping[str, Instrument], schedule: Schedule | None = None,
                 accounts: Mapping[str, Account] | None = None, *,
                 conversion_closes: int = CONVERSION_CLOSES) -> None:
        """*schedule*: the market's time zone (``None``: UTC); *accounts*: the ledger's
        accounts, read (never changed) once, when the clock passes the banking cut-off;
        *conversion_closes*: the last day (a day number of the market's zone) of the
        banking application window."""
        self.instruments = instruments
        self.schedule = schedule
        self.accounts = accounts
        # the first instants after the cut-off day and after the application window
        self._cutoff_ns = local_day_start_ns(CONVERSION_CUTOFF + 1, schedule)
        self._window_end_ns = local_day_start_ns(conversion_closes + 1, schedule)
        self.obligations: dict[tuple[str, int], Obligation] = {}
        self.closed: set[int] = set()  # years assessed
        self.deductions: dict[tuple[str, int], int] = {}  # (account, year) -> units
        self.months: dict[tuple[int, int], list[int]] = {}  # (year, month) -> [fen, units]
        self.allocations: dict[tuple[str, int], Allocation] = {}
        self.net_sales: dict[str, int] = {}  # account -> units sold less bought
        self.converted: dict[str, int] = {}  # account -> units converted (banking)
        # account -> old-vintage units held at the banking cut-off plus those converted by
        # then (only accounts with any); None until the clock passes the cut-off
        self.cutoff: dict[str, int] | None = None
        self.missed: set[str] = set()  # accounts assessed short at a deadline (derived)
        self._clock = 0
        self._cutoff_due = self._cutoff_ns if accounts is not None else _NEVER
        self._month_clock = -1  # the clock ``_month`` was worked out for
        self._month: list[int] = [0, 0]
        self._net_year = False

    # --- time ---------------------------------------------------------------------------
    @property
    def clock(self) -> int:
        """The engine's clock (ns); set by the ledger each time it moves."""
        return self._clock

    @clock.setter
    def clock(self, ts: int) -> None:
        self._clock = ts
        if ts >= self._cutoff_due:
            self._take_cutoff()

    def _take_cutoff(self) -> None:
        """Record each account's old-vintage holdings (plus what it converted already):
        the clock has just passed the banking cut-off, and no command after it has run."""
        self._cutoff_due = _NEVER
        if self.cutoff is not None or self.accounts is None:
            return
        old = [symbol for symbol in self.instruments if self.old_vintage(symbol)]
        cutoff: dict[str, int] = {}
        for name, acct in self.accounts.items():
            if name.startswith("@"):
                continue  # the system accounts: no entity's
            held = sum(acct.holdings[s].total for s in old if s in acct.holdings)
            held += self.converted.get(name, 0)
            if held:
                cutoff[name] = held
        self.cutoff = cutoff

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
        if inst.offset or not inst.of_year(year):
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
        *to_symbol*, holding *old_holdings* old-vintage units now (``Rejected`` if none
        may: after the application window, or for an entity that missed a surrender).
        Past the cut-off the cap counts the holdings recorded then, not *old_holdings*."""
        new = self.instruments[to_symbol]
        if not self.old_vintage(symbol) or new.offset or new.vintage != CONVERSION_YEAR:
            raise Rejected(Reason.INELIGIBLE_VINTAGE)
        if self._clock >= self._window_end_ns:
            raise Rejected(Reason.CONVERSION_CLOSED)
        if account in self.missed:
            raise Rejected(Reason.MISSED_SURRENDER)
        if self.cutoff is None and self._clock >= self._cutoff_ns:
            self._take_cutoff()  # a registry restored past the cut-off without its record
        done = self.converted.get(account, 0)
        held = done + old_holdings if self.cutoff is None else self.cutoff.get(account, 0)
        return banking_cap(self.net_sales.get(account, 0), held) - done

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
        if year in self.closed or self._clock >= deadline_ns(year, self.schedule):
            raise Rejected(Reason.AFTER_DEADLINE)
        if qty > obligation.emissions - obligation.allowances - obligation.counted_offsets():
            raise Rejected(Reason.EXCEEDS_OBLIGATION)
        inst = self.instruments[symbol]
        if inst.offset:
            if inst.in_scheme or (year >= NEW_CCER_YEAR and
                                  (inst.registered is None or inst.registered <= NEW_CCER_AFTER)):
                raise Rejected(Reason.INELIGIBLE_OFFSET)
            if obligation.offsets + qty > ccer_cap(obligation.emissions):
                raise Rejected(Reason.OFFSET_CAP_EXCEEDED)
            return None
        first = inst.first_year  # a period's allowances (CEA19-20) from its first year on
        if first is None or first > year:
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
        clock = self._clock
        if clock != self._month_clock:
            self._month_clock = clock
            year_month = civil_month(clock, self.schedule)
            self._month = self.months.setdefault(year_month, [0, 0])
            self._net_year = year_month[0] in NET_SALES_YEARS
        return self._month, (self.net_sales if self._net_year else None)

    def deadline_month(self, year: int) -> tuple[int, int]:
        """Return ``(notional, volume)`` of allowance trades in December of *year* + 1,
        the month before the deadline of compliance *year*, whose average sets fines."""
        notional, volume = self.months.get((year + 1, 12), (0, 0))
        return notional, volume

    def assess(self, year: int, multiple: int, price: int | None = None,
               closed: Container[str] = (), now: int | None = None) -> list[tuple[str, Obligation]]:
        """Close *year*: return the assessed ``(account, obligation)`` rows in account
        order (``Rejected``, with nothing changed, if it cannot close). Fines are at
        *price* (minor units per unit: the operator's reference price) when given, else
        at the market's average of the month before the deadline. *closed*: accounts
        closed since, whose emissions can no longer be recorded. *now*: the command's own
        time, if it has one: a deadline stamped before the year's deadline has passed (the
        end of 31 December of the next year) is refused, as it would close the year, and
        its surrender window, for good."""
        if not 2000 <= year <= 9999:
            raise Rejected(Reason.INVALID_YEAR)  # a typo would close a year for good
        if year in self.closed:
            raise Rejected(Reason.YEAR_CLOSED)
        if now is not None and now < deadline_ns(year, self.schedule):
            raise Rejected(Reason.DEADLINE_NOT_PASSED)
        if multiple not in FINE_MULTIPLES:
            raise Rejected(Reason.INVALID_MULTIPLE)
        if price is not None and not 0 < price < 1 << 62:
            raise Rejected(Reason.INVALID_PRICE)
        if any(y == year and (account, y) not in self.obligations and account not in closed
               for account, y in self.allocations):
            # An entity allocated for the year has no verified emissions: the competent
            # authority determines them (an ``emissions`` row) before the year can close,
            # or it would pass its deadline neither compliant nor short.
            raise Rejected(Reason.NOT_VERIFIED)
        rows = sorted((account, ob) for (account, y), ob in self.obligations.items() if y == year)
        notional, volume = (price, 1) if price is not None else self.deadline_month(year)
        short = any(ob.allowances + ob.counted_offsets() < ob.emissions for _, ob in rows)
        if short and not volume:
            raise Rejected(Reason.NO_MARKET_PRICE)
        shortfalls = [max(0, ob.emissions - ob.allowances - ob.counted_offsets()) for _, ob in rows]
        fines = [fine_fen(gap, notional, volume, multiple) if gap else 0 for gap in shortfalls]
        if fines and max(fines) >= 1 << 62:
            # Checked before anything changes; every figure the ledger keeps is under 2^62.
            raise Rejected(Reason.FINE_OUT_OF_RANGE)
        for (account, ob), shortfall, fine in zip(rows, shortfalls, fines):
            ob.shortfall = shortfall
            ob.status = "short" if ob.shortfall else "compliant"
            ob.fine = fine
            if ob.shortfall:
                self.deductions[(account, year + 1)] = ob.shortfall
                self.missed.add(account)
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
            assert ob.status != "short" or account in self.missed, (account, year, "missed")
        assert all(units > 0 for units in (self.cutoff or {}).values()), "cut-off holdings"

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
            ], net_sales=dict(self.net_sales), converted=dict(self.converted), clock=self._clock,
            cutoff_holdings=None if self.cutoff is None else dict(self.cutoff))

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
        self._clock = state.clock  # not the setter: the cut-off record comes with the state
        self.cutoff = None if state.cutoff_holdings is None else dict(state.cutoff_holdings)
        if self.cutoff is not None:
            self._cutoff_due = _NEVER
        self.missed = {a for (a, _), ob in self.obligations.items() if ob.status == "short"}
        self._month_clock = -1  # the month cache is worked out again at the next trade

    # --- verification (continued) -------------------------------------------------------
    def snapshot(self) -> list[object]:
        """The registry's records for the state hash. Like the clock, the banking cut-off
        record is left out: the passing of time wrote it (a command rejected at that
        moment still moved the clock), it follows from the commands and their times, and
        ``to_state`` carries it."""
        return [[[a, y, ob.row()] for (a, y), ob in sorted(self.obligations.items())],
                sorted(self.closed),
                sorted([a, y, q] for (a, y), q in self.deductions.items()),
                sorted([y, m, f, u] for (y, m), (f, u) in self.months.items()),
                [[a, y, al.stage, al.allocation, al.deducted, al.issued]
                 for (a, y), al in sorted(self.allocations.items())],
                sorted(self.net_sales.items()),
                sorted(self.converted.items())]
