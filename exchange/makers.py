"""The market-maker programme: how long each market maker quoted, and its rebate.

A ``[market_makers.SYMBOL]`` table (``exchange.market.QuotingObligation``) obliges every
market maker (an account of kind ``market_maker``) trading the instrument to quote both
sides, each order showing at least ``min_qty``, at most ``max_spread`` ticks apart, for at
least ``min_presence`` of the day's listing sessions. The ``QuotingMonitor`` measures it:

- The engine shows it every order accepted on an obligated instrument (``watch``); it
  keeps market makers' orders only, the same objects the book holds, so it sees fills,
  cancels and amends as they happen, and forgets an order whose ``qty`` became 0.
- ``advance(ts)`` runs before anything at *ts* happens: the orders as they are held over
  ``[previous, ts)``. Of that time, the part inside listing sessions (every nanosecond
  without a schedule) counts as session time; a maker quoted while its best bid and best
  ask, among its live limit orders showing at least ``min_qty``, were at most
  ``max_spread`` apart. While it had both sides at all (any size), the spread times the
  time adds up for the time-weighted average spread. Untriggered stops are not quotes.
- ``end_of_day`` gives one ``QuotingAssessed`` per market maker and obligated instrument
  it ever had an order on: presence in basis points (rounded down), whether it met the
  obligation (a day with session time only) and, if so, its rebate: the ``rebate``
  fraction of the maker fees it paid in the instrument that day (rounded down).

Session time is the whole day's listing sessions for every maker, however late it came.
Time is walked session by session (the zone's offsets, the local days and their
sessions), never nanosecond by nanosecond, and the monitor keeps the stretch ahead of
its clock that is all open or all closed: a move inside it costs nothing more, one out
of it the days and sessions it crosses (and a look up to eight days ahead). Inside a
session each move also scans the market makers' own live orders, sweeping out done ones.

>>> from exchange.book.fast import Order
>>> from exchange.market import QuotingObligation
>>> monitor = QuotingMonitor((QuotingObligation("CEA25", 10, 100, 8, 10, 3, 10),), None,
...                          lambda account: account == "mm1")
>>> for oid, is_buy, price in (("b", True, 7_000), ("s", False, 7_005)):
...     monitor.watch(Order(oid, "mm1", "CEA25", is_buy, price, 500, 500, 0, 0, 0, 0))
>>> monitor.advance(0)
>>> monitor.advance(60 * 10**9)
>>> [row] = monitor.end_of_day(20_500, {("mm1", "CEA25"): 1_000}, lambda s: "CNY", lambda: 1)
>>> row.presence_bps, row.average_spread, row.met, row.rebate
(10000, 5, True, 300)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeGuard

from exchange.book.fast import LIMIT, Order
from exchange.events import QuotingAssessed
from exchange.market import QuotingObligation
from exchange.schedule import NS, Schedule

__all__ = ["QuotingMonitor", "session_ns", "open_pieces"]

_DAY_NS = 86_400 * NS
_PRUNE_AT = 8  # a watch list is swept of done orders when it doubles from this size up
_AHEAD = 8 * _DAY_NS  # how far a closed stretch is looked ahead for the next session


def session_ns(schedule: Schedule | None, start: int, end: int) -> int:
    """The nanoseconds of ``[start, end)`` inside *schedule*'s listing sessions (all of
    them without a schedule), exactly as ``Schedule.is_open`` sees each one."""
    if schedule is None:
        return max(end - start, 0)
    starts = tuple(second for second, _ in schedule.offsets)
    return sum(b - a for a, b in open_pieces(schedule, starts, start, end))


def open_pieces(schedule: Schedule, starts: tuple[int, ...], start: int,
                end: int) -> Iterator[tuple[int, int]]:
    """The parts of ``[start, end)`` inside listing sessions, in time order, as engine
    times ``[a, b)`` (a session is cut where the zone's offset changes); *starts* are the
    UTC seconds where *schedule*'s offsets begin.

    Within a stretch of one UTC offset the local time is the engine time shifted, so each
    local day's sessions are read off whole or in part: the cost is the days crossed
    times the sessions of a day, and ``is_open`` holds at every nanosecond of a part and
    at none outside them. (``Schedule.open_span`` gives a one-nanosecond span inside a
    session that an offset change cuts: a walk by it could crawl.)"""
    sessions = schedule.sessions_of("listing")
    offsets = schedule.offsets
    t = start
    while t < end:
        index = bisect_right(starts, t // NS)
        shift = offsets[max(index - 1, 0)][1] * NS
        stop = min(end, starts[index] * NS) if index < len(starts) else end
        low, high = t + shift, stop + shift  # local time
        day = low // _DAY_NS
        while day * _DAY_NS < high:
            if schedule.is_business_day(day):
                base = day * _DAY_NS
                for first, last in sessions:
                    a, b = max(low, base + first * NS), min(high, base + last * NS)
                    if a < b:
                        yield a - shift, b - shift
            day += 1
        t = stop


class _Quoter:
    """One market maker on one obligated instrument: its live orders (lazily swept) and
    the day's accumulators."""

    __slots__ = ("account", "symbol", "max_spread", "min_qty", "orders", "limit", "quoted",
                 "both", "spread")

    def __init__(self, account: str, symbol: str, obligation: QuotingObligation) -> None:
        self.account = account
        self.symbol = symbol
        self.max_spread = obligation.max_spread
        self.min_qty = obligation.min_qty
        self.orders: list[Order] = []
        self.limit = _PRUNE_AT
        self.quoted = 0  # ns of session it quoted within the obligation
        self.both = 0  # ns of session it had both sides (any size, any spread)
        self.spread = 0  # sum of spread x ns over that time

    def row(self) -> list[object]:
        return [self.account, self.symbol, self.quoted, self.both, self.spread]


class QuotingMonitor:
    """Market makers' quoting on the obligated instruments, day by day (see the module)."""

    def __init__(self, obligations: tuple[QuotingObligation, ...], schedule: Schedule | None,
                 is_maker: Callable[[str], bool]) -> None:
        self.obligations = {o.symbol: o for o in obligations}
        self.symbols = frozenset(self.obligations)
        self.schedule = schedule
        self.is_maker = is_maker
        self.pairs: dict[tuple[str, str], _Quoter] = {}
        self.quoters: list[_Quoter] = []
        self.clock: int | None = None  # the time of the last advance
        self.session = 0  # ns of listing session today, so far
        self._starts = () if schedule is None else tuple(s for s, _ in schedule.offsets)
        # A stretch [start, end) known to be all open (True) or all closed (False).
        self._known = (0, 0, False)
        # Obligated instruments the operator has halted, and each one's session time
        # today while halted: a market maker is not held to quote what cannot trade.
        self.halted: set[str] = set()
        self.excused: dict[str, int] = {}

    def halt(self, symbol: str, halted: bool) -> None:
        """The operator halted (or resumed) *symbol*, as of the last ``advance``."""
        if symbol not in self.symbols:
            return
        if halted:
            self.halted.add(symbol)
        else:
            self.halted.discard(symbol)

    # --- the engine's calls --------------------------------------------------------------
    def watch(self, order: Order) -> None:
        """Keep *order* if a market maker's on an obligated instrument (its account and
        instrument are known to the monitor from then on, for the day's assessment)."""
        quoter = self.pairs.get((order.account, order.instrument))
        if quoter is None:
            obligation = self.obligations.get(order.instrument)
            if obligation is None or not self.is_maker(order.account):
                return
            quoter = self._quoter(order.account, order.instrument)
        if not order.qty:
            return
        orders = quoter.orders
        orders.append(order)
        if len(orders) > quoter.limit:
            orders[:] = [o for o in orders if o.qty]
            quoter.limit = max(_PRUNE_AT, 2 * len(orders))

    def advance(self, ts: int) -> None:
        """Account for the time from the previous call to *ts*, over which the watched
        orders were as they are now. The first call only sets the clock."""
        previous = self.clock
        if previous is not None and ts <= previous:
            return
        self.clock = ts
        if previous is None:
            return
        low, high, is_open = self._known
        if self.schedule is None:
            elapsed = ts - previous
        elif low <= previous and ts <= high:
            elapsed = ts - previous if is_open else 0
        else:
            elapsed = self._elapsed(self.schedule, previous, ts)
        if not elapsed:
            return
        self.session += elapsed
        halted = self.halted
        for symbol in halted:
            self.excused[symbol] = self.excused.get(symbol, 0) + elapsed
        for quoter in self.quoters:
            orders = quoter.orders
            if not orders or (halted and quoter.symbol in halted):
                continue
            min_qty = quoter.min_qty
            bid = ask = good_bid = good_ask = None
            done = False
            for order in orders:
                if not order.qty:
                    done = True
                    continue
                if order.kind != LIMIT:  # an untriggered stop is not in the book
                    continue
                price = order.price
                if order.is_buy:
                    if bid is None or price > bid:
                        bid = price
                    if order.visible >= min_qty and (good_bid is None or price > good_bid):
                        good_bid = price
                else:
                    if ask is None or price < ask:
                        ask = price
                    if order.visible >= min_qty and (good_ask is None or price < good_ask):
                        good_ask = price
            if done:
                quoter.orders = [o for o in orders if o.qty]
            if bid is None or ask is None:
                continue
            quoter.both += elapsed
            quoter.spread += (ask - bid) * elapsed
            if (good_bid is not None and good_ask is not None
                    and good_ask - good_bid <= quoter.max_spread):
                quoter.quoted += elapsed

    def day_end(self) -> int | None:
        """The local midnight that ends the day of the last clock move (with a schedule;
        else ``None``), on a day of 23 or 25 hours too."""
        schedule = self.schedule
        clock = self.clock
        if schedule is None or clock is None:
            return None
        # The first second of a later local day: local days never go back, so a search
        # by halves finds it, wherever the clocks change (at midnight itself, too).
        day = schedule.local_day(clock)
        low, high = clock // NS, clock // NS + 2 * 86_400
        while low < high:
            middle = (low + high) // 2
            if schedule.local_day(middle * NS) > day:
                high = middle
            else:
                low = middle + 1
        return low * NS

    def close_day(self, expiries: Sequence[tuple[int, Order]] = ()) -> None:
        """An end of day without a time: the local day of the last clock move is over,
        so the rest of its sessions count, with the orders as they stand (no command came
        between), but for the gtd *expiries* ``(expire_ts, order)``, in time order, each
        counted until its time. Without it that time fell into the next day's
        assessment."""
        end = self.day_end()
        if end is None:
            return
        for expire_ts, order in expiries:
            if expire_ts >= end:
                break
            self.advance(expire_ts)
            self._drop(order)  # expired: the next command that moves the clock takes it out
        self.advance(end)

    def _drop(self, order: Order) -> None:
        quoter = self.pairs.get((order.account, order.instrument))
        if quoter is not None:
            quoter.orders = [o for o in quoter.orders if o is not order]

    def end_of_day(self, day: int, maker_fees: Mapping[tuple[str, str], int],
                   currency_of: Callable[[str], str],
                   seq: Callable[[], int]) -> list[QuotingAssessed]:
        """One ``QuotingAssessed`` per market maker and obligated instrument it ever had
        an order on (by account, then instrument); the day's accumulators start again."""
        events = []
        for key in sorted(self.pairs):
            quoter = self.pairs[key]
            account, symbol = key
            o = self.obligations[symbol]
            session = self.session - self.excused.get(symbol, 0)
            quoted = quoter.quoted
            met = session > 0 and quoted * o.presence_den >= o.presence_num * session
            rebate = maker_fees.get(key, 0) * o.rebate_num // o.rebate_den if met else 0
            events.append(QuotingAssessed(
                seq=seq(), account=account, instrument=symbol, day=day, quoted_ns=quoted,
                session_ns=session, presence_bps=quoted * 10_000 // session if session else 0,
                average_spread=quoter.spread // quoter.both if quoter.both else None, met=met,
                rebate=rebate, currency=currency_of(symbol)))
            quoter.quoted = quoter.both = quoter.spread = 0
        self.session = 0
        self.excused.clear()
        return events

    # --- state (exchange.state) ----------------------------------------------------------
    def to_state(self) -> list[object]:
        """``[clock, session, rows]``: the clock (``None`` before the first ``advance``),
        today's session so far, and per market maker and instrument ``[account, symbol,
        quoted, both, spread]``; then, if an instrument was halted in today's session,
        ``[[symbol, ns], ...]``: its session time while halted. Watched orders and the
        halted instruments are not state: the engine tells them again after
        ``load_state``."""
        state: list[object] = [self.clock, self.session,
                               [self.pairs[key].row() for key in sorted(self.pairs)]]
        if self.excused:
            state.append([[symbol, ns] for symbol, ns in sorted(self.excused.items())])
        return state

    def load_state(self, rows: Sequence[object]) -> None:
        """Take *rows* (``to_state``) into this new monitor; ``ValueError`` on rows that
        are not its shape, an instrument without an obligation, or a pair given twice."""
        if not isinstance(rows, (list, tuple)) or len(rows) not in (3, 4):
            raise ValueError("makers: expected [clock, session, rows] and perhaps halted time")
        clock, session, pairs = rows[:3]
        excused: dict[str, int] = {}
        halted_rows = rows[3] if len(rows) == 4 else []
        if not isinstance(halted_rows, (list, tuple)):
            raise ValueError("makers: halted time is a list of [symbol, ns]")
        for row in halted_rows:
            if (not isinstance(row, (list, tuple)) or len(row) != 2 or row[0] not in self.symbols
                    or row[0] in excused or not _count(row[1]) or row[1] > session):
                raise ValueError(f"makers: halted time is [symbol, ns], got {row!r}")
            excused[row[0]] = row[1]
        if clock is not None and not _count(clock) or not _count(session):
            raise ValueError("makers: the clock and session must be whole numbers >= 0")
        assert clock is None or isinstance(clock, int)
        if not isinstance(pairs, (list, tuple)):
            raise ValueError("makers: expected a list of rows")
        loaded: dict[tuple[str, str], tuple[int, int, int]] = {}
        for row in pairs:
            if (not isinstance(row, (list, tuple)) or len(row) != 5
                    or not all(isinstance(v, str) for v in row[:2])
                    or not all(_count(v) for v in row[2:])):
                raise ValueError(f"makers: a row is [account, symbol, quoted, both, spread], "
                                 f"got {row!r}")
            account, symbol, quoted, both, spread = row
            if symbol not in self.obligations:
                raise ValueError(f"makers: {symbol!r} has no quoting obligation")
            if (account, symbol) in loaded:
                raise ValueError(f"makers: {account} {symbol} given twice")
            loaded[account, symbol] = (quoted, both, spread)
        self.pairs.clear()
        self.quoters.clear()
        for (account, symbol), (quoted, both, spread) in sorted(loaded.items()):
            quoter = self._quoter(account, symbol)
            quoter.quoted, quoter.both, quoter.spread = quoted, both, spread
        self.clock = clock
        self.session = session
        self.excused = excused
        self._known = (0, 0, False)

    def snapshot(self) -> list[object]:
        """The state as deterministic plain data (for the engine's state hash)."""
        return self.to_state()

    # --- inside --------------------------------------------------------------------------
    def _elapsed(self, schedule: Schedule, previous: int, ts: int) -> int:
        """The session time in ``[previous, ts)``; the stretch from *ts* on that is all
        open or all closed is kept for the calls to come."""
        elapsed = sum(b - a for a, b in open_pieces(schedule, self._starts, previous, ts))
        ahead = next(open_pieces(schedule, self._starts, ts, ts + _AHEAD), None)
        if ahead is None:
            self._known = (ts, ts + _AHEAD, False)
        elif ahead[0] > ts:
            self._known = (ts, ahead[0], False)
        else:
            self._known = (ts, ahead[1], True)
        return elapsed

    def _quoter(self, account: str, symbol: str) -> _Quoter:
        quoter = self.pairs[account, symbol] = _Quoter(account, symbol,
                                                       self.obligations[symbol])
        self.quoters.append(quoter)
        return quoter


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
