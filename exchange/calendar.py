"""Trading calendar: civil dates as integer day numbers, business days, futures expiries.

A date is an ``int``: days since 1970-01-01 (proleptic Gregorian, UTC, negative before
1970). Conversions use the days-from-civil algorithm in integer arithmetic only, so the
core stays pure: no ``datetime``, clock or time zone. Engine times are integer
nanoseconds since the epoch; ``day_of_ns`` and ``day_start_ns`` cross between the two.

Rules (docs/derivatives.md, futures):

- a business day is Monday to Friday and not one of the calendar's holidays;
- the last trading day of a contract month is its last Monday; however, if that Monday
  is not a business day, or one of the four days after it (Tuesday to Friday, which may
  fall in the next month) is not, it is the penultimate Monday of the month (ICE Endex
  EUA futures specification, "Last Trading Day"); if the penultimate Monday is not a
  business day either (the specification is silent), it is the latest business day
  before it, so that a long holiday such as the Spring Festival moves expiry back rather
  than leaving the contract without one;
- physical delivery is the third business day after the last trading day;
- series: ``monthly`` (every month), ``quarterly`` (Mar, Jun, Sep, Dec), ``december``.

Limits: text dates are ``YYYY-MM-DD`` with years 0001-9999 only (the integer functions
take any year); no time zone, the day boundary is 00:00 UTC (the clearing house reads a
market's days in its local time: ``exchange.derivatives.clearing``); a contract month
whose days up to its penultimate Monday are all holidays is refused, not moved into the
month before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CalendarError", "Calendar", "SERIES", "DAY_NS", "days_from_civil", "civil_from_days",
    "days_in_month", "weekday", "parse_date", "format_date", "parse_month", "contract_months",
    "day_start_ns", "day_of_ns"
]

DAY_NS = 86_400 * 10**9
FRIDAY = 4
SERIES = {"monthly": tuple(range(1, 13)), "quarterly": (3, 6, 9, 12), "december": (12, )}
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")


class CalendarError(ValueError):
    """An impossible date, a malformed date string or an invalid calendar request."""


def days_in_month(year: int, month: int) -> int:
    """Return the number of days in *month* of *year*.

    >>> days_in_month(2024, 2), days_in_month(2100, 2), days_in_month(2026, 12)
    (29, 28, 31)
    """
    if not 1 <= month <= 12:
        raise CalendarError(f"month {month} is not 1-12")
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def days_from_civil(year: int, month: int, day: int) -> int:
    """Return the day number (days since 1970-01-01) of a civil date; O(1).

    >>> days_from_civil(1970, 1, 1), days_from_civil(2026, 12, 28), days_from_civil(1969, 12, 31)
    (0, 20815, -1)
    >>> days_from_civil(2026, 2, 30)
    Traceback (most recent call last):
    ...
    exchange.calendar.CalendarError: 2026-02-30 is not a date: February 2026 has 28 days
    """
    if not 1 <= day <= days_in_month(year, month):
        raise CalendarError(
            f"{year:04d}-{month:02d}-{day:02d} is not a date: "
            f"{_MONTH_NAMES[month - 1]} {year} has {days_in_month(year, month)} days")
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Return ``(year, month, day)`` of day number *days*; O(1).

    >>> civil_from_days(0), civil_from_days(20815), civil_from_days(-1)
    ((1970, 1, 1), (2026, 12, 28), (1969, 12, 31))
    """
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def weekday(days: int) -> int:
    """Return the weekday of day number *days*, Monday = 0 ... Sunday = 6 (1970-01-01 was a
    Thursday).

    >>> weekday(0), weekday(days_from_civil(2026, 12, 28))
    (3, 0)
    """
    return (days + 3) % 7


def parse_date(text: str) -> int:
    """Return the day number of a strict ``YYYY-MM-DD`` date (year 0001-9999).

    >>> parse_date("2026-12-28")
    20815
    >>> parse_date("26-12-01")
    Traceback (most recent call last):
    ...
    exchange.calendar.CalendarError: '26-12-01' is not a date in the form YYYY-MM-DD
    """
    match = _DATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[1] == "0000":
        raise CalendarError(f"{text!r} is not a date in the form YYYY-MM-DD")
    return days_from_civil(int(match[1]), int(match[2]), int(match[3]))


def format_date(days: int) -> str:
    """Return day number *days* as ``YYYY-MM-DD``; the inverse of ``parse_date``.

    >>> format_date(20815)
    '2026-12-28'
    """
    year, month, day = civil_from_days(days)
    if not 1 <= year <= 9999:
        raise CalendarError(f"day {days} (year {year}) cannot be written as YYYY-MM-DD")
    return f"{year:04d}-{month:02d}-{day:02d}"


def parse_month(text: str) -> tuple[int, int]:
    """Return ``(year, month)`` of a strict ``YYYY-MM`` contract month.

    >>> parse_month("2026-12")
    (2026, 12)
    """
    match = _MONTH.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[1] == "0000" or not 1 <= int(match[2]) <= 12:
        raise CalendarError(f"{text!r} is not a month in the form YYYY-MM")
    return int(match[1]), int(match[2])


def contract_months(start_year: int, start_month: int, count: int,
                    series: str) -> list[tuple[int, int]]:
    """Return the next *count* contract months of *series* on or after the start month,
    as ``(year, month)`` in order; O(count).

    >>> contract_months(2026, 4, 3, "quarterly")
    [(2026, 6), (2026, 9), (2026, 12)]
    >>> contract_months(2026, 12, 2, "december")
    [(2026, 12), (2027, 12)]
    """
    if series not in SERIES:
        raise CalendarError(f"series {series!r} is not one of {', '.join(SERIES)}")
    if not 1 <= start_month <= 12:
        raise CalendarError(f"month {start_month} is not 1-12")
    if count < 0:
        raise CalendarError(f"count {count} is negative")
    months, year = SERIES[series], start_year
    found = [(year, m) for m in months if m >= start_month]
    while len(found) < count:
        year += 1
        found.extend((year, m) for m in months)
    return found[:count]


def day_start_ns(days: int) -> int:
    """Return the first nanosecond (00:00 UTC) of day number *days*.

    >>> day_start_ns(1), day_start_ns(-1)
    (86400000000000, -86400000000000)
    """
    return days * DAY_NS


def day_of_ns(ts_ns: int) -> int:
    """Return the day number containing *ts_ns* (floor division, so before 1970 too).

    >>> day_of_ns(0), day_of_ns(DAY_NS - 1), day_of_ns(-1)
    (0, 0, -1)
    """
    return ts_ns // DAY_NS


@dataclass(frozen=True)
class Calendar:
    """Business days and futures expiries for a set of holidays (day numbers).

    >>> cal = Calendar.from_strings(["2026-12-28"])   # a holiday on the last Monday
    >>> expiry = cal.last_trading_day(2026, 12)       # the penultimate Monday
    >>> format_date(expiry), format_date(cal.delivery_day(expiry))
    ('2026-12-21', '2026-12-24')
    """

    holidays: frozenset[int] = frozenset()

    @classmethod
    def from_strings(cls, dates: Iterable[str]) -> Calendar:
        """Return a calendar whose holidays are the ``YYYY-MM-DD`` *dates*."""
        return cls(frozenset(parse_date(text) for text in dates))

    def is_business_day(self, days: int) -> bool:
        """Return whether *days* is Monday to Friday and not a holiday; O(1)."""
        return weekday(days) <= FRIDAY and days not in self.holidays

    def previous_business_day(self, days: int) -> int:
        """Return *days* if it is a business day, else the latest business day before it;
        O(weekends and holidays skipped)."""
        while not self.is_business_day(days):
            days -= 1
        return days

    def add_business_days(self, days: int, n: int) -> int:
        """Return the *n*-th business day after *days* (*days* itself when n = 0; *days*
        need not be a business day); O(n + holidays skipped)."""
        if n < 0:
            raise CalendarError(f"business days {n} is negative")
        while n:
            days += 1
            n -= self.is_business_day(days)
        return days

    def last_trading_day(self, year: int, month: int) -> int:
        """Return the last trading day of contract month *year*-*month* (ICE Endex EUA
        futures): its last Monday, unless that Monday or one of the four days after it
        is not a business day; then its penultimate Monday, or, if that is not a
        business day, the latest business day before it. Raise ``CalendarError`` if
        that would leave the month; O(1 + holidays skipped).

        >>> format_date(Calendar().last_trading_day(2026, 12))
        '2026-12-28'
        >>> cal = Calendar.from_strings(["2026-12-31"])  # the Thursday after it
        >>> format_date(cal.last_trading_day(2026, 12))
        '2026-12-21'
        """
        last = days_from_civil(year, month, days_in_month(year, month))
        monday = last - weekday(last)  # Monday is weekday 0
        if all(self.is_business_day(day) for day in range(monday, monday + 5)):
            return monday
        penultimate = monday - 7  # the 15th or later: always in the month
        expiry = self.previous_business_day(penultimate)
        if civil_from_days(expiry)[:2] != (year, month):
            raise CalendarError(f"{year:04d}-{month:02d} has no business day on or before "
                                f"its penultimate Monday {format_date(penultimate)}")
        return expiry

    def delivery_day(self, last_trading_day: int, business_days: int = 3) -> int:
        """Return the physical delivery day: *business_days* business days after the last
        trading day."""
        return self.add_business_days(last_trading_day, business_days)
