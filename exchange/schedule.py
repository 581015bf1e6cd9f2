"""The trading day: when each trading mode is in session, in the market's own time zone.

A market file's ``[schedule]`` (read by ``exchange.market``) becomes a ``Schedule``: the
time zone (as a table of UTC offsets, worked out from the time zone database when the
market is read, so nothing here reads a file or a clock), the sessions of each trading
mode as half-open ``[start, end)`` spans of local time, the trading weekdays and the
holidays. Engine times are integer nanoseconds since the epoch (UTC).

- ``is_open(mode, ts)``: is *ts* inside one of *mode*'s sessions on a business day?
  09:30:00 opens the default listing session; 11:30:00 is already closed.
- ``local_day(ts)``: the local calendar day (a day number, as ``exchange.calendar``).
- ``day_over(ts)``: is *ts* on a business day, at or after its last session's end? An
  ``eod`` is accepted then only.

Modes: ``listing`` (the order book), ``block`` and ``auction``; a mode the file does not
list keeps the listing sessions.

>>> schedule = Schedule(zone="+08:00", offsets=((0, 8 * 3600),),
...                     sessions={"listing": ((9 * 3600 + 1800, 11 * 3600 + 1800),)})
>>> at = lambda h, m, s=0: (20_424 * 86_400 + (h - 8) * 3600 + m * 60 + s) * 10**9  # 2025-12-02
>>> schedule.is_open("listing", at(9, 29, 59)), schedule.is_open("listing", at(9, 30))
(False, True)
>>> schedule.is_open("listing", at(11, 30)), schedule.day_over(at(11, 30))
(False, True)
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from exchange.calendar import FRIDAY, civil_from_days, days_from_civil, weekday

__all__ = ["Schedule", "MODES", "WEEKDAYS", "NS", "HOLIDAYS_NOTICE_DAYS"]

HOLIDAYS_NOTICE_DAYS = 30  # how long before its holidays run out a market is warned of it

NS = 10**9
_DAY_S = 86_400
MODES = ("listing", "block", "auction")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Schedule:
    """Sessions per trading mode, weekdays and holidays in one time zone.

    ``offsets``: ``(from_utc_second, offset_seconds)`` in time order, the first from the
    beginning of time; ``sessions``: mode -> ``(start, end)`` seconds of the local day,
    sorted and apart; ``weekdays``: trading weekdays (Monday 0); ``holidays``: local day
    numbers without trading.
    """

    zone: str
    offsets: tuple[tuple[int, int], ...]
    sessions: dict[str, tuple[tuple[int, int], ...]]
    weekdays: frozenset[int] = frozenset(range(FRIDAY + 1))
    holidays: frozenset[int] = frozenset()
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(start for start, _ in self.offsets))

    def offset(self, ts: int) -> int:
        """The zone's UTC offset (seconds) at engine time *ts*."""
        offsets = self.offsets
        if len(offsets) == 1:
            return offsets[0][1]
        return offsets[max(bisect_right(self._starts, ts // NS) - 1, 0)][1]

    def local(self, ts: int) -> tuple[int, int]:
        """``(day number, second of the day)`` of *ts* in the market's time zone."""
        return divmod(ts // NS + self.offset(ts), _DAY_S)

    def at(self, day: int, second: int) -> int:
        """The engine time of *second* into local *day*: the local time less the zone's
        offset, the offset taken where a first guess (the local time read as UTC) falls,
        then again where that lands."""
        local = (day * _DAY_S + second) * NS
        guess = local - self.offset(local) * NS
        return local - self.offset(guess) * NS

    def local_day(self, ts: int) -> int:
        """The local calendar day of *ts*."""
        return self.local(ts)[0]

    def is_business_day(self, day: int) -> bool:
        """A trading weekday that is not a holiday."""
        return weekday(day) in self.weekdays and day not in self.holidays

    def holidays_through(self) -> int | None:
        """The last day (a day number) of the latest year that lists a holiday: past it,
        every trading weekday is a business day until the market lists that year's
        holidays. ``None`` for a market that lists none (it keeps no holidays at all)."""
        if not self.holidays:
            return None
        return days_from_civil(civil_from_days(max(self.holidays))[0], 12, 31)

    def holidays_warning(self, ts: int, notice: int = HOLIDAYS_NOTICE_DAYS) -> str | None:
        """What the operator must be told at engine time *ts* if a year within *notice*
        days lists no holiday while the market keeps some: the listed holidays run out
        (or have run out), or a year among them was left out. Else ``None``.

        >>> s = Schedule(zone="UTC", offsets=((0, 0),), sessions={},
        ...              holidays=frozenset({days_from_civil(2026, 10, 1)}))
        >>> s.holidays_warning(days_from_civil(2026, 11, 30) * 86_400 * NS) is None
        True
        >>> s.holidays_warning(days_from_civil(2026, 12, 5) * 86_400 * NS).split(":")[0]
        'the market lists holidays through 2026 only'
        """
        through = self.holidays_through()
        if through is None:
            return None
        last = civil_from_days(through)[0]
        listed = {civil_from_days(day)[0] for day in self.holidays}
        today = self.local_day(ts)
        for year in range(civil_from_days(today)[0], civil_from_days(today + notice)[0] + 1):
            if year in listed:
                continue
            if year > last:
                return (f"the market lists holidays through {last} only: from {last + 1}-01-01 "
                        f"every weekday is a business day; add {last + 1}'s public holidays to "
                        "the market's [schedule] holidays")
            return (f"the market lists no holidays for {year}: every weekday of {year} is a "
                    f"business day; add {year}'s public holidays to the market's [schedule] "
                    "holidays")
        return None

    def sessions_of(self, mode: str) -> tuple[tuple[int, int], ...]:
        found = self.sessions.get(mode)
        return self.sessions.get("listing", ()) if found is None else found

    def is_open(self, mode: str, ts: int) -> bool:
        """Is *ts* inside one of *mode*'s sessions, on a business day?"""
        day, second = self.local(ts)
        if not self.is_business_day(day):
            return False
        return any(start <= second < end for start, end in self.sessions_of(mode))

    def open_span(self, mode: str, ts: int) -> tuple[int, int] | None:
        """The session of *mode* that holds *ts*, as engine times ``[start, end)``, or
        ``None`` when *mode* is closed at *ts*. Every time within the span is open (if
        the zone's offset changes inside the session, the span is *ts*'s nanosecond)."""
        day, second = self.local(ts)
        if not self.is_business_day(day):
            return None
        for start, end in self.sessions_of(mode):
            if start <= second < end:
                base = ts - (second - start) * NS - ts % NS
                until = base + (end - start) * NS
                if self.offset(base) != self.offset(until - 1):
                    return ts, ts + 1
                return base, until
        return None

    @property
    def day_end(self) -> int:
        """The second of the local day when its last session (of any mode) ends."""
        return max((end for spans in self.sessions.values() for _, end in spans), default=0)

    def day_over(self, ts: int) -> bool:
        """Is *ts* on a business day, at or after the day's last session?"""
        day, second = self.local(ts)
        return self.is_business_day(day) and second >= self.day_end
