"""The compliance registry: verified emissions, surrender against them, the deadline.

Owned by the ledger and run inside the engine's one sequenced pipeline, so every
registry command is journaled, replayed and hashed like a trade. Per covered entity
(an account) and compliance year it keeps the obligation (verified emissions, with their
data quality and verifier) and what has been surrendered against it.

Rules (shared/DOMAIN.md, compliance rules 6-9; the numbers live in ``exchange.allocation``):

- ``emissions``: an account's verified emissions for a year set its obligation; a
  restatement replaces the record (the event names the old figure) until the year is
  assessed;
- ``surrender`` with a ``year``: allowances of a vintage no later than the year (no
  borrowing; for 2025 and later, 2019-2024 vintages only once converted, which is not
  built yet, so they are refused), offsets (``offset = true`` instruments, CCER) up to 5%
  of the obligation, only before the deadline (31 December of the next year, by the
  engine's clock) and before the year is assessed. Without a ``year`` a surrender is a
  voluntary cancellation, as before;
- ``deadline``: each entity with an obligation for the year is assessed: compliant, or
  short, fined ``multiple`` (5-10) times the volume-weighted price of the market's own
  allowance trades in the month before the deadline (December of the next year), times
  the shortfall; the shortfall is recorded for deduction from the next year's allocation.
  The year is closed: no more surrender or restatement for it.

Invariant: surrendered units are in the registry's surrender account (``@registry``)
and never trade again; per entity and year, what the registry recorded as surrendered
equals what the ``AllowancesSurrendered`` events moved for that year.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import reasons
from .allocation import FINE_MULTIPLES, ccer_cap, fine_fen

__all__ = ["Registry", "Obligation", "civil_month", "deadline_ns", "QUALITIES"]

QUALITIES = ("measured", "default", "estimated", "revised")
CONVERSION_YEAR = 2025   # from this year older vintages need conversion (not built yet)
OLD_VINTAGE_LAST = 2024
_DAY_NS = 86_400 * 10**9


def civil_month(ts: int) -> tuple[int, int]:
    """Return ``(year, month)`` of *ts* (integer ns since 1970-01-01, UTC). Pure integer
    arithmetic (the days-to-civil algorithm), no clock or time zone.

    >>> civil_month(0), civil_month(1_767_225_599 * 10**9), civil_month(1_767_225_600 * 10**9)
    ((1970, 1), (2025, 12), (2026, 1))
    """
    days = ts // _DAY_NS + 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def deadline_ns(year: int) -> int:
    """Return the first instant after the deadline of compliance *year*: 1 January of
    year + 2, 00:00 (the deadline is the whole of 31 December of year + 1).

    >>> civil_month(deadline_ns(2024) - 1), civil_month(deadline_ns(2024))
    ((2025, 12), (2026, 1))
    """
    return _days_from_civil(year + 2, 1, 1) * _DAY_NS


@dataclass
class Obligation:
    """One entity's compliance year: its verified emissions and what it surrendered."""

    emissions: int
    quality: str
    verifier: str | None
    allowances: int = 0   # surrendered allowances, units
    offsets: int = 0      # surrendered offsets (CCER), units
    status: str | None = None   # after the deadline: "compliant" or "short"
    shortfall: int = 0
    fine: int = 0         # fen

    def counted_offsets(self) -> int:
        """Offsets that count: a downward restatement can leave some above the 5% cap."""
        return min(self.offsets, ccer_cap(self.emissions))

    def row(self) -> list:
        return [self.emissions, self.quality, self.verifier, self.allowances, self.offsets,
                self.status, self.shortfall, self.fine]


class Registry:
    """Obligations per (account, year), surrender eligibility and the yearly deadline."""

    def __init__(self, instruments: dict) -> None:
        self.instruments = instruments
        self.obligations: dict[tuple[str, int], Obligation] = {}
        self.closed: set[int] = set()            # years assessed
        self.deductions: dict[tuple[str, int], int] = {}   # (account, year) -> units
        self.months: dict[tuple[int, int], list[int]] = {}  # (year, month) -> [fen, units]
        self.clock = 0

    # --- emissions ----------------------------------------------------------------------
    def record(self, account: str, year: int, qty: int, quality: str) -> str | tuple:
        """Check an emissions record; return a reject reason or ``(old emissions,)``."""
        if quality not in QUALITIES:
            return reasons.INVALID_QUALITY
        if not 2000 <= year <= 9999:
            return reasons.INVALID_YEAR
        if qty < 0 or qty >= 1 << 62:
            return reasons.INVALID_QUANTITY
        if year in self.closed:
            return reasons.YEAR_CLOSED
        old = self.obligations.get((account, year))
        return (None if old is None else old.emissions,)

    def apply_record(self, account: str, year: int, qty: int, quality: str,
                     verifier: str | None) -> None:
        old = self.obligations.get((account, year))
        if old is None:
            self.obligations[(account, year)] = Obligation(qty, quality, verifier)
        else:
            old.emissions, old.quality, old.verifier = qty, quality, verifier

    # --- surrender ----------------------------------------------------------------------
    def eligible(self, account: str, symbol: str, qty: int, year: int) -> str | None:
        """Return why *qty* of *symbol* cannot count against *account*'s *year*, or None."""
        obligation = self.obligations.get((account, year))
        if obligation is None:
            return reasons.NO_OBLIGATION
        if year in self.closed or self.clock >= deadline_ns(year):
            return reasons.AFTER_DEADLINE
        inst = self.instruments[symbol]
        if inst.offset:
            if obligation.offsets + qty > ccer_cap(obligation.emissions):
                return reasons.OFFSET_CAP
            return None
        vintage = inst.vintage
        if vintage is None or vintage > year:
            return reasons.INELIGIBLE_VINTAGE
        if year >= CONVERSION_YEAR and vintage <= OLD_VINTAGE_LAST:
            return reasons.INELIGIBLE_VINTAGE
        return None

    def surrendered(self, account: str, symbol: str, qty: int, year: int) -> None:
        obligation = self.obligations[(account, year)]
        if self.instruments[symbol].offset:
            obligation.offsets += qty
        else:
            obligation.allowances += qty

    # --- prices and the deadline ----------------------------------------------------------
    def traded(self, symbol: str, notional: int, qty: int) -> None:
        """Count an allowance trade (*notional* in minor units) into its month's
        volume-weighted price."""
        inst = self.instruments[symbol]
        if inst.vintage is None or inst.offset:
            return
        month = self.months.setdefault(civil_month(self.clock), [0, 0])
        month[0] += notional
        month[1] += qty

    def deadline_month(self, year: int) -> tuple[int, int]:
        """Return ``(notional, volume)`` of allowance trades in December of *year* + 1,
        the month before the deadline of compliance *year*, whose average sets fines."""
        notional, volume = self.months.get((year + 1, 12), (0, 0))
        return notional, volume

    def assess(self, year: int, multiple: int) -> str | list[tuple[str, Obligation]]:
        """Close *year*: return the assessed ``(account, obligation)`` rows in account
        order, or a reject reason (nothing changed)."""
        if year in self.closed:
            return reasons.YEAR_CLOSED
        if multiple not in FINE_MULTIPLES:
            return reasons.INVALID_MULTIPLE
        rows = sorted((account, ob) for (account, y), ob in self.obligations.items()
                      if y == year)
        notional, volume = self.deadline_month(year)
        short = any(ob.allowances + ob.counted_offsets() < ob.emissions for _, ob in rows)
        if short and not volume:
            return reasons.NO_MARKET_PRICE
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
        for (account, year), ob in self.obligations.items():
            assert (ob.status is None) == (year not in self.closed), (account, year, "status")
            if ob.status is not None:
                assert ob.shortfall == max(0, ob.emissions - ob.allowances - ob.counted_offsets())

    def snapshot(self) -> list:
        return [[[a, y, ob.row()] for (a, y), ob in sorted(self.obligations.items())],
                sorted(self.closed), sorted([a, y, q] for (a, y), q in self.deductions.items()),
                sorted([y, m, f, u] for (y, m), (f, u) in self.months.items())]
