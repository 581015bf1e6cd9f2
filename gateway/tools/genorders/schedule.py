"""When the carbon profile trades: the compliance year's trading days, messages per
day, and instants in the listing hours (09:30-11:30, 13:00-15:00 Beijing time) with the
bursts after the open and the re-open."""

from __future__ import annotations

import random
from calendar import timegm
from datetime import date, timedelta

from exchange.calendar import format_date
from exchange.market import default_market

# The default market's [schedule]: its holidays and its time zone's UTC offsets.
_SCHEDULE = default_market().schedule

DEADLINE = date(2025, 12, 31)
# Weekdays without trading: the default market's holidays (its [schedule]), so a generated
# file trades only when that market is open.
HOLIDAYS = frozenset(
    date.fromisoformat(format_date(day))
    for day in (_SCHEDULE.holidays if _SCHEDULE is not None else ()))

_NS = 1_000_000_000
_BEIJING = 8 * 3600  # seconds east of UTC: the market's time zone (but see open_ns)
_OPEN = 9 * 3600 + 1800  # 09:30, seconds into the local day
_SESSION = 7200 * _NS  # each listing session is two hours
_LUNCH = 5400 * _NS  # 11:30 to 13:00
_AM_BURST = 1800 * _NS  # the open burst: 30 minutes after 09:30
_PM_BURST = 1200 * _NS  # the re-open burst: 20 minutes after 13:00
_CLOSE = 2 * _SESSION + _LUNCH  # 15:00, from 09:30
AM_BURST_SHARE, PM_BURST_SHARE = 0.38, 0.10

# The deadlines whose compliance year an order file can carry: ``ts`` counts nanoseconds
# from 1970-01-01 (never negative) in a signed 64-bit integer (a replay refuses more).
# The first: its year starts on 1970-01-01; the last: its eod (15:00 in Beijing) is the
# last one before 2**63 ns (2262-04-11 23:47:16 UTC).
FIRST_DEADLINE = date(1970, 12, 31)
LAST_DEADLINE = date(1970, 1, 1) + timedelta(
    days=(((1 << 63) - 1) // _NS - (_OPEN + _CLOSE // _NS - _BEIJING)) // 86_400)


def deadline_problem(deadline: date) -> str | None:
    """Why a compliance year cannot end on *deadline* (its timestamps would be negative
    or past 64 bits), or ``None``.

    >>> deadline_problem(date(2025, 12, 31)) is None
    True
    >>> deadline_problem(date(1900, 1, 1)).endswith("must be from 1970-12-31 to 2262-04-11)")
    True
    """
    if FIRST_DEADLINE <= deadline <= LAST_DEADLINE:
        return None
    where = "before 1970" if deadline < FIRST_DEADLINE else "past 64-bit nanoseconds"
    return (f"its compliance year would have timestamps {where} (the deadline must be from "
            f"{FIRST_DEADLINE} to {LAST_DEADLINE})")


def open_ns(day: date) -> int:
    """Return 09:30 of *day* in the default market's time zone as engine time (ns since
    the epoch, UTC), at that day's UTC offset: +08:00, +09:00 in the summers of 1986-1991
    (China's daylight saving time; it never changed during listing hours).

    >>> open_ns(date(2025, 3, 3)) == timegm((2025, 3, 3, 1, 30, 0)) * _NS
    True
    """
    local = timegm((day.year, day.month, day.day, 9, 30, 0))
    offset = _BEIJING if _SCHEDULE is None else _SCHEDULE.offset((local - _BEIJING) * _NS)
    return (local - offset) * _NS


def trading_days(deadline: date = DEADLINE) -> list[date]:
    """Return the trading days of the compliance year ending on *deadline*, in order.

    The year runs from the day after the deadline's date one year earlier; trading days
    are Monday to Friday less ``HOLIDAYS``.

    >>> days = trading_days(date(2025, 12, 31))
    >>> len(days), days[0], days[-1]
    (243, datetime.date(2025, 1, 2), datetime.date(2025, 12, 31))
    """
    start = _months_before(deadline, 12) + timedelta(days=1)
    days, day = [], start
    while day <= deadline:
        if day.weekday() < 5 and day not in HOLIDAYS:
            days.append(day)
        day += timedelta(days=1)
    return days


def _months_before(day: date, months: int) -> date:
    """Return *day* moved back *months* months (the day clamped to the month's length)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    for last in (day.day, 30, 29, 28):
        try:
            return date(year, month + 1, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split *total* into whole parts proportional to *weights* (largest remainder)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    scale = total / sum(weights)
    quotas = [w * scale for w in weights]
    counts = [int(q) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def _day_counts(body: int, weights: list[float]) -> list[int]:
    """Return orders per day such that orders plus one ``eod`` per busy day = *body*.

    A file too small for every day (under two rows a day) uses evenly spaced days. A
    single row cannot hold an order and its eod: the caller cuts the eod.
    """
    days = len(weights)
    counts = [0] * days
    if body <= 0 or not days:
        return counts
    busy = days if body >= 2 * days else max(1, body // 8)
    chosen = [days - 1 - (days * j) // busy for j in range(busy)][::-1]
    parts = _allocate(max(body - busy, 1), [weights[i] for i in chosen])
    for i, part in zip(chosen, parts):
        counts[i] = part
    # Days that drew no order have no eod either: their rows go to the busiest day.
    idle = busy - sum(1 for c in counts if c)
    counts[max(chosen, key=lambda i: (counts[i], -i))] += idle
    return counts


def _day_times(rng: random.Random, count: int, open_ns: int) -> list[int]:
    """Return *count* sorted instants (ns) in one day's listing hours, bursts included.

    Bursts take the earlier of two uniform instants in their window, so their density
    falls linearly from the open to the window's end. Integer draws only.
    """
    randrange, random_ = rng.randrange, rng.random
    times = []
    append = times.append
    pm_open = open_ns + _SESSION + _LUNCH
    for _ in range(count):
        draw = random_()
        if draw < AM_BURST_SHARE:
            append(open_ns + min(randrange(_AM_BURST), randrange(_AM_BURST)))
        elif draw < AM_BURST_SHARE + PM_BURST_SHARE:
            append(pm_open + min(randrange(_PM_BURST), randrange(_PM_BURST)))
        else:
            offset = randrange(2 * _SESSION)
            append(open_ns + offset + (_LUNCH if offset >= _SESSION else 0))
    times.sort()
    return times
