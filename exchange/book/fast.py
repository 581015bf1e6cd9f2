"""The fast order book of one instrument: price-time priority matching.

Layout: per side, a dict from price key to ``Level`` and a binary heap of the keys
(``heapq``, in C). Bid keys are negated prices so that, on both sides, the best level is
the heap's top and "crosses" is ``key <= limit_key``. A level that empties below the top
leaves its key in the heap, stale, until it surfaces; the top is always a live level,
and the heap never holds a key twice (a set tracks membership), so it is bounded by the
distinct prices in use and compacted when stale keys outnumber live ones. A level keeps
its orders in a deque in time order.
Cancelled orders are deleted lazily: they are marked dead (``qty == 0``) and skipped
when they reach the front; a level whose dead entries outnumber its live ones is
compacted, so memory stays proportional to live orders (amortised O(1) per cancel).

Invariants (checked by ``check()``):
  * the book is never crossed: best bid < best ask;
  * every level in the dict has at least one live order, and ``count`` live orders;
  * within a level live orders are in arrival order (FIFO), icebergs re-queued at the
    back after each displayed slice;
  * a live order has ``0 < visible <= qty``; ``visible == qty`` unless it is an iceberg;
  * every live order is in the order ids shared with the engine (``OrderIds.live``);
    a resting order that fills is moved to the done ids (``OrderIds.done``) at once.

Complexity: rest at an existing level O(1), at a new level O(log L); cancel O(1)
amortised plus O(log L) when the best level empties; each fill O(1); best price O(1).

The matching semantics are those of docs/market.md ("Orders and matching").
``exchange.book.naive.NaiveBook`` is the slow, obviously correct reference; both must
produce identical events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from heapq import heapify, heappop, heappush, nsmallest

import msgspec

from exchange.reasons import Reason
from exchange.events import Event, OrderCancelled, TradeExecuted

__all__ = [
    "Order", "Counters", "OrderIds", "FastBook", "order_rows", "refuse_crossed", "visible_of",
    "LIMIT", "MARKET", "STOP", "STOP_LIMIT", "PRICED", "GTC", "DAY", "IOC", "FOK", "GTD",
    "STP_RESTING", "STP_AGGRESSOR", "STP_BOTH", "STP_NONE", "NO_LIMIT"
]

# Order kinds. An untriggered stop keeps STOP / STOP_LIMIT; on triggering it becomes
# MARKET / LIMIT.
LIMIT, MARKET, STOP, STOP_LIMIT = 0, 1, 2, 3
KIND_CODES = {"limit": LIMIT, "market": MARKET, "stop": STOP, "stop_limit": STOP_LIMIT}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
PRICED = frozenset((LIMIT, STOP_LIMIT))  # the kinds with a limit price
GTC, DAY, GTD, IOC, FOK = 0, 1, 2, 3, 4  # tif >= IOC never rests
TIF_CODES = {"gtc": GTC, "day": DAY, "ioc": IOC, "fok": FOK, "gtd": GTD}
TIF_NAMES = {v: k for k, v in TIF_CODES.items()}
STP_RESTING, STP_AGGRESSOR, STP_BOTH, STP_NONE = 0, 1, 2, 3
STP_CODES = {
    "cancel_resting": STP_RESTING,
    "cancel_aggressor": STP_AGGRESSOR,
    "cancel_both": STP_BOTH,
    "none": STP_NONE
}
STP_NAMES = {v: k for k, v in STP_CODES.items()}

# Bound once for the remainder of every order that does not rest (benchmarks/contenders.py):
# an enum member costs three times a module global to look up.
_FOK_UNFILLED, _MARKET_REMAINDER, _IOC_REMAINDER = (Reason.FOK_UNFILLED, Reason.MARKET_REMAINDER,
                                                    Reason.IOC_REMAINDER)
NO_LIMIT = 1 << 62  # limit of a buy market order with no band; sells use 0


def order_rows(orders: Iterable[Order]) -> list[list[str | int]]:
    """Orders as plain data, in the given order: the rows of both books' ``snapshot``."""
    return [[o.order_id, o.account, o.price, o.qty, o.visible, o.display, o.tif, o.stp,
             o.post_only, o.expire_ts] for o in orders]


def refuse_crossed(symbol: str, bid: int | None, ask: int | None) -> None:
    """Raise ``ValueError`` if a book being loaded would be crossed."""
    if bid is not None and ask is not None and bid >= ask:
        raise ValueError(f"{symbol}: the book would be crossed ({bid} >= {ask})")


def visible_of(display: int, qty: int) -> int:
    """The displayed part of an order of open *qty* that shows *display* (0: all)."""
    return display if display and display < qty else qty


class Order(msgspec.Struct, gc=False, array_like=True):
    """A live order inside the engine. Mutable; never leaves the core.

    ``qty`` is the open quantity including any hidden part, ``visible`` the displayed
    part. ``qty == 0`` marks an order that is done (filled, cancelled, expired).
    ``gc=False``: an order holds only strings and ints, so it cannot be in a cycle;
    leaving it out of the garbage collector saves memory and collection time.
    ``array_like``: encoded as an array of its fields, in this order, exactly as an
    ``exchange.state.OrderState`` is, so engine states write and read orders without a
    copy (it changes nothing else). A new field goes at the end, with a default.
    """

    order_id: str
    account: str
    instrument: str
    is_buy: bool
    price: int
    qty: int
    visible: int
    display: int
    kind: int
    tif: int
    stp: int
    post_only: bool = False
    stop_price: int = 0
    expire_ts: int = 0
    accept_seq: int = 0

    @property
    def side(self) -> str:
        return "buy" if self.is_buy else "sell"


class Counters:
    """The engine's global counters, shared with its books: event ``seq`` and trade ids."""

    __slots__ = ("seq", "trade")

    def __init__(self) -> None:
        self.seq = 0
        self.trade = 0


class OrderIds:
    """The trading day's order ids, shared by the engine and its books.

    ``live`` maps the id of each live order (resting, or a stop not yet triggered) to it,
    in the order the ids were entered. ``done`` holds the other ids used today: orders
    that are done, blocks, auctions and bids; ``done_order`` lists them oldest first, so
    the engine can forget the oldest (``Engine._forget_done``). An id is in one of the
    two at most. Profiled (benchmarks/contenders.py, 0.57x to 0.6x the plain matcher):
    apart, the live table stays the size of the books, so a cancel's look-up rarely
    misses the cache; in one table with the day's done ids it did, and the sweep that
    forgot done ids had to visit every order.
    """

    __slots__ = ("live", "done", "done_order")

    def __init__(self) -> None:
        self.live: dict[str, Order] = {}
        self.done: set[str] = set()
        self.done_order: list[str] = []

    def __contains__(self, order_id: str) -> bool:
        """Is *order_id* used today (live or done)?"""
        return order_id in self.live or order_id in self.done

    def __len__(self) -> int:
        return len(self.live) + len(self.done)

    def retire(self, order_id: str) -> None:
        """The order *order_id* is done, or the id is taken by a block, an auction or a
        bid: it leaves the live orders, if it was one, and stays used for the day."""
        self.live.pop(order_id, None)
        if order_id not in self.done:
            self.done.add(order_id)
            self.done_order.append(order_id)

    def clear_done(self) -> None:
        """A new day: the ids of done orders may be used again."""
        self.done.clear()
        self.done_order.clear()


class Level:
    """One price level: live and lazily deleted orders in arrival order."""

    __slots__ = ("price", "orders", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.count = 0


class Side:
    """One side of a book: levels by key, and a heap of keys whose top is the best."""

    __slots__ = ("levels", "heap", "in_heap")

    def __init__(self) -> None:
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []
        self.in_heap: set[int] = set()

    def add_level(self, key: int, price: int) -> Level:
        level = self.levels[key] = Level(price)
        if key not in self.in_heap:
            heappush(self.heap, key)
            self.in_heap.add(key)
        return level

    def drop_level(self, key: int) -> None:
        """Forget the (empty) level at *key*; keep the heap's top a live level."""
        levels = self.levels
        del levels[key]
        heap = self.heap
        if heap[0] == key:
            in_heap = self.in_heap
            while heap and heap[0] not in levels:
                in_heap.discard(heappop(heap))
        elif len(heap) > 2 * len(levels) + 64:
            self.heap = list(levels)
            heapify(self.heap)
            self.in_heap = set(levels)

    def sorted_keys(self) -> list[int]:
        return sorted(self.levels)


class FastBook:
    """Order book and matcher for one instrument (see the module docstring)."""

    def __init__(self, symbol: str, counters: Counters, ids: OrderIds) -> None:
        self.symbol = symbol
        self._ctr = counters
        self._ids = ids
        # Bound once: the tables are emptied and refilled in place, never replaced.
        self._live = ids.live
        self._done = ids.done
        self._done_order = ids.done_order
        self._bids = Side()
        self._asks = Side()
        self.last_price: int | None = None
        self.trade_count = 0
        self.volume = 0
        self.day_volume = 0
        self.day_notional = 0
        # Of those, an account's trades with itself (stp none): they set no close.
        self.day_self_volume = 0
        self.day_self_notional = 0
        # The day's first, highest and lowest trade prices (meaningful once day_volume > 0).
        self.day_open = self.day_high = self.day_low = 0

    # --- queries -----------------------------------------------------------------------
    def best_bid(self) -> int | None:
        """Return the best bid price in ticks, or ``None``. O(1)."""
        heap = self._bids.heap
        return -heap[0] if heap else None

    def best_ask(self) -> int | None:
        """Return the best ask price in ticks, or ``None``. O(1)."""
        heap = self._asks.heap
        return heap[0] if heap else None

    def would_cross(self, is_buy: bool, price: int) -> bool:
        """Tell whether a limit order at *price* would trade on arrival. O(1)."""
        if is_buy:
            heap = self._asks.heap
            return bool(heap) and heap[0] <= price
        heap = self._bids.heap
        return bool(heap) and -heap[0] >= price

    def orders(self, is_buy: bool) -> Iterator[Order]:
        """Yield one side's live orders in priority order. O(n log L)."""
        side = self._bids if is_buy else self._asks
        for key in side.sorted_keys():
            for order in side.levels[key].orders:
                if order.qty:
                    yield order

    def depth(self,
              levels: int = 10) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Return up to *levels* ``(price, displayed qty, orders)`` per side, best first.

        O(L log levels) for L price levels.
        """
        result = []
        for book in (self._bids, self._asks):
            side = []
            for key in nsmallest(levels, book.levels):
                level = book.levels[key]
                shown = sum(o.visible for o in level.orders if o.qty)
                side.append((level.price, shown, level.count))
            result.append(side)
        return result[0], result[1]

    def fillable(self, order: Order) -> bool:
        """Tell whether *order* would fill completely now under its self-trade mode.

        Exact without simulating: within a level the aggressor takes every displayed
        slice in queue order, then the icebergs' hidden rest as they re-queue, so a
        level can give the displayed slices and then all hidden quantity. A resting
        order of the same account is skipped (``cancel_resting``) or ends the order
        (``cancel_aggressor``, ``cancel_both``) when it is met in the first pass.
        O(orders within the limit), nothing allocated per order.
        """
        # Profiled (benchmarks/latency.py): simulating the re-queues with a deque of
        # copies made fok the slowest order kind, p50 13 µs against 6 µs for ioc.
        if order.is_buy:
            side, limit = self._asks, order.price
        else:
            side, limit = self._bids, -order.price
        need, account, stp = order.qty, order.account, order.stp
        levels = side.levels
        for key in sorted(k for k in levels if k <= limit):
            hidden = 0
            for resting in levels[key].orders:
                open_qty = resting.qty
                if not open_qty:
                    continue
                if stp != STP_NONE and resting.account == account:
                    if stp == STP_RESTING:
                        continue
                    return False
                shown = resting.visible
                if need <= shown:
                    return True
                need -= shown
                hidden += open_qty - shown
            if need <= hidden:
                return True
            need -= hidden
        return False

    # --- commands ----------------------------------------------------------------------
    def submit(self, order: Order, out: list[Event]) -> None:
        """Match *order* (limit or market acting) against the book, then rest or cancel it.

        Appends ``TradeExecuted`` and ``OrderCancelled`` events to *out*. A resting order
        is entered in the live order ids. ``order.qty`` is left at the quantity that rested.
        The order comes in showing what it should (``visible_of(display, qty)``); the
        sweep keeps that so, and the order rests as it is.
        """
        # Hot path (benchmarks/contenders.py): resting is inlined here rather than a method call.
        # One name a statement, not a tuple packed and unpacked (benchmarks/contenders.py).
        price = order.price
        if order.is_buy:
            opposite = self._asks
            own = self._bids
            limit = price
            key = -price
        else:
            opposite = self._bids
            own = self._asks
            limit = -price
            key = price
        heap = opposite.heap
        if heap and heap[0] <= limit:
            if order.post_only:
                return self.cancel_remainder(order, Reason.POST_ONLY_WOULD_TRADE, out)
            if order.tif == FOK and not self.fillable(order):
                return self.cancel_remainder(order, Reason.FOK_UNFILLED, out)
            self._match(order, opposite, limit, out)
            if not order.qty:
                return None
        if order.tif >= IOC or order.kind == MARKET:
            reason = (_FOK_UNFILLED if order.tif == FOK else
                      _MARKET_REMAINDER if order.kind == MARKET else _IOC_REMAINDER)
            return self.cancel_remainder(order, reason, out)
        try:  # a subscript, not dict.get (benchmarks/contenders.py): a new level is rare
            level = own.levels[key]
        except KeyError:
            level = own.add_level(key, price)
        level.orders.append(order)
        level.count += 1
        self._live[order.order_id] = order
        return None

    def remove(self, order: Order) -> None:
        """Take a resting *order* out of the book, without an event.

        Marks it done (``qty = 0``). Its id stays live: the caller retires it
        (``OrderIds.retire``), or an amend enters the order anew under it. O(1) amortised;
        O(log L) if its level empties.
        """
        if order.is_buy:
            key, side = -order.price, self._bids
        else:
            key, side = order.price, self._asks
        level = side.levels[key]
        order.qty = 0
        order.visible = 0
        level.count -= 1
        if not level.count:
            side.drop_level(key)
        elif len(level.orders) > 2 * level.count + 16:
            level.orders = deque(o for o in level.orders if o.qty)

    def reduce(self, order: Order, qty: int) -> None:
        """Lower a resting order's open quantity in place; it keeps its time priority."""
        order.qty = qty
        if order.visible > qty:
            order.visible = qty

    # --- internals ---------------------------------------------------------------------
    def cancel_remainder(self, order: Order, reason: str, out: list[Event]) -> None:
        ctr = self._ctr
        ctr.seq += 1
        # By position (benchmarks/contenders.py): order_id, account, instrument, side,
        # cancelled_qty, reason.
        out.append(OrderCancelled(order.order_id, order.account, self.symbol,
                                  "buy" if order.is_buy else "sell", order.qty, reason,
                                  seq=ctr.seq))
        order.qty = 0
        order.visible = 0

    def _match(self, order: Order, side: Side, limit: int, out: list[Event]) -> None:
        # Hot path (profiled in benchmarks/): attributes and methods bound to locals, and
        # the global counters kept in locals for the sweep and written back after it.
        append = out.append
        ctr = self._ctr
        seq, trade = ctr.seq, ctr.trade
        live = self._live
        done = self._done
        done_order = self._done_order
        symbol = self.symbol
        account = order.account
        order_id = order.order_id
        stp = order.stp
        is_buy = order.is_buy
        remaining = order.qty
        killed = False
        volume = notional = price = last = first = own_volume = own_notional = 0
        heap = side.heap
        levels = side.levels
        while remaining and heap:
            key = heap[0]
            if key > limit:
                break
            level = levels[key]
            queue = level.orders
            price = level.price
            while queue:
                resting = queue[0]
                open_qty = resting.qty
                if not open_qty:
                    queue.popleft()
                    continue
                if stp != STP_NONE and resting.account == account:
                    if stp != STP_AGGRESSOR:
                        queue.popleft()
                        level.count -= 1
                        done_id = resting.order_id
                        del live[done_id]
                        done.add(done_id)
                        done_order.append(done_id)
                        resting.qty = resting.visible = 0
                        seq += 1
                        append(
                            OrderCancelled(order_id=resting.order_id, account=account,
                                           instrument=symbol, side="sell" if is_buy else "buy",
                                           cancelled_qty=open_qty,
                                           reason=Reason.STP_CANCEL_RESTING, seq=seq))
                    if stp != STP_RESTING:
                        killed = True
                        break
                    continue
                shown = resting.visible
                fill = remaining if remaining < shown else shown
                remaining -= fill
                open_qty -= fill
                shown -= fill
                resting.qty = open_qty
                seq += 1
                trade += 1
                # Profiled (benchmarks/contenders.py): by position, in the event's order (trade_id,
                # instrument, price, qty, buy and sell order ids, buy and sell accounts,
                # aggressor, buy and sell leaves).
                if is_buy:
                    append(TradeExecuted(trade, symbol, price, fill, order_id, resting.order_id,
                                         account, resting.account, "buy", remaining, open_qty,
                                         seq=seq))
                else:
                    append(TradeExecuted(trade, symbol, price, fill, resting.order_id, order_id,
                                         resting.account, account, "sell", open_qty, remaining,
                                         seq=seq))
                if not volume:
                    first = price
                volume += fill
                notional += fill * price
                if resting.account == account:  # a trade with itself (stp none)
                    own_volume += fill
                    own_notional += fill * price
                last = price
                if shown:
                    resting.visible = shown
                elif open_qty:
                    # Iceberg: the next slice goes to the back of the level.
                    display = resting.display
                    resting.visible = display if display < open_qty else open_qty
                    queue.popleft()
                    queue.append(resting)
                else:
                    # Filled: its id is done (OrderIds.retire, inlined).
                    resting.visible = 0
                    queue.popleft()
                    level.count -= 1
                    done_id = resting.order_id
                    del live[done_id]
                    done.add(done_id)
                    done_order.append(done_id)
                if not remaining:
                    break
            if not level.count:
                side.drop_level(key)
                heap = side.heap
            if killed:
                break
        if volume:
            self.last_price = last
            self.trade_count += trade - ctr.trade
            self.volume += volume
            # A sweep's prices run one way: its first and last are its extremes.
            if first < last:  # no tuple built (benchmarks/contenders.py)
                low, high = first, last
            else:
                low, high = last, first
            if not self.day_volume:
                self.day_open, self.day_high, self.day_low = first, high, low
            else:
                if high > self.day_high:
                    self.day_high = high
                if low < self.day_low:
                    self.day_low = low
            self.day_volume += volume
            self.day_notional += notional
            if own_volume:
                self.day_self_volume += own_volume
                self.day_self_notional += own_notional
        ctr.seq, ctr.trade = seq, trade
        order.qty = remaining
        if order.visible > remaining:
            order.visible = remaining
        if killed:
            self.cancel_remainder(order, Reason.STP_CANCEL_AGGRESSOR, out)

    # --- state (exchange.state) --------------------------------------------------------
    def restore(self, bids: list[Order], asks: list[Order]) -> None:
        """Load resting orders into this empty book, each side in priority order (best
        price first, then time), as ``orders()`` lists them. The order ids are left
        to the caller, who keeps their order. O(n); the heap of keys comes out sorted.

        Raise ``ValueError`` if the book is not empty, a side is out of price order or
        the two sides cross.
        """
        for orders, side, sign in ((bids, self._bids, -1), (asks, self._asks, 1)):
            levels = side.levels
            if levels:
                raise ValueError(f"{self.symbol}: restoring into a book that is not empty")
            last = None
            level = None
            for order in orders:
                key = sign * order.price
                if key != last:
                    if last is not None and key < last:
                        raise ValueError(
                            f"{self.symbol}: order {order.order_id} is out of price priority")
                    level = levels[key] = Level(order.price)
                    last = key
                level.orders.append(order)  # type: ignore[union-attr]
                level.count += 1  # type: ignore[union-attr]
            side.heap = list(levels)  # keys ascending: already a heap
            side.in_heap = set(levels)
        refuse_crossed(self.symbol, self.best_bid(), self.best_ask())

    # --- verification ------------------------------------------------------------------
    def snapshot(self) -> list[list[list[str | int]]]:
        """Return the book as plain data in priority order, for hashing and comparison."""
        return [order_rows(self.orders(is_buy)) for is_buy in (True, False)]

    def check(self) -> None:
        """Raise ``AssertionError`` if any invariant of the module docstring is broken."""
        for side, sign in ((self._bids, -1), (self._asks, 1)):
            levels = side.levels
            assert set(side.heap) == side.in_heap >= set(levels), "heap lost a level"
            assert len(side.heap) == len(side.in_heap), "a key is in the heap twice"
            assert not side.heap or side.heap[0] == min(levels), "heap top is not the best level"
            for key, level in levels.items():
                assert level.price == sign * key, "level stored under the wrong key"
                live_orders = [o for o in level.orders if o.qty]
                assert len(live_orders) == level.count >= 1, "level count is wrong"
                assert all(o.qty or not o.visible
                           for o in level.orders), ("a done order still shows a quantity")
                for o in live_orders:
                    assert o.price == level.price and o.is_buy == (sign == -1)
                    assert 0 < o.visible <= o.qty, "visible outside (0, qty]"
                    assert o.display or o.visible == o.qty, "plain order shows less than it has"
                    assert self._live.get(o.order_id) is o, "resting order not live by its id"
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, f"book crossed: {bid} >= {ask}"
