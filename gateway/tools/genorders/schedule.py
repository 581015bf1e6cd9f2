"""When the carbon profile trades: the compliance year's trading days, messages per
day, and instants in the listing hours (09:30-11:30, 13:00-15:00 Beijing time) with the
bursts after the open and the re-open."""

from __future__ import annotations

import random
from datetime import date, timedelta

from exchange.calendar import format_date
from exchange.market import default_market


def _default_schedule_holidays() -> frozenset[int]:
    schedule = default_market().schedule
    return schedule.holidays if schedule is not None else frozenset()


DEADLINE = date(2025, 12, 31)
# Weekdays without trading: the default market's holidays (its [schedule]), so a generated
# file trades only when that market is open.
HOLIDAYS = frozenset(
    date.fromisoformat(format_date(day)) for day in _default_schedule_holidays())

_NS = 1_000_000_000
_BEIJING = 8 * 3600  # seconds east of UTC: the market's time zone
_SESSION = 7200 * _NS  # each listing session is two hours
_LUNCH = 5400 * _NS  # 11:30 to 13:00
_AM_BURST = 1800 * _NS  # the open burst: 30 minutes after 09:30
_PM_BURST = 1200 * _NS  # the re-open burst: 20 minutes after 13:00
_CLOSE = 2 * _SESSION + _LUNCH  # 15:00, from 09:30
AM_BURST_SHARE, PM_BURST_SHARE = 0.38, 0.10


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
