"""The naive reference order book: obviously correct, deliberately slow.

Each side is one plain list of live orders. Priority is an explicit key, (price, arrival
number), recomputed by sorting on every change; matching takes the best order, trades or
applies self-trade prevention, and starts again. There is no lazy deletion, no level
structure, no cached best price. It exists so that tests can check, command for command,
that ``exchange.book.fast.FastBook`` gives the same events and the same state.

Complexity: O(n log n) per operation. Use it in tests and benchmarks only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from exchange.reasons import Reason
from exchange.book.fast import (FOK, IOC, MARKET, STP_AGGRESSOR, STP_NONE, STP_RESTING, Counters,
                                Order, OrderIds, order_rows, refuse_crossed)
from exchange.events import Event, OrderCancelled, TradeExecuted

__all__ = ["NaiveBook"]


@dataclass(slots=True)
class _Copy:
    """A resting order as ``fillable`` simulates it: the order, what it shows, its open
    quantity and its arrival number, changed on the copy only."""

    order: Order
    shown: int
    open: int
    arrival: int


class NaiveBook:
    """Reference implementation of the ``FastBook`` interface."""

    def __init__(self, symbol: str, counters: Counters, ids: OrderIds) -> None:
        self.symbol = symbol
        self._ctr = counters
        self._ids = ids
        self._side: dict[bool, list[Order]] = {True: [], False: []}
        self._arrival: dict[int, int] = {}  # id(order) -> arrival number at its level
        self._clock = 0
        self.last_price: int | None = None
        self.trade_count = 0
        self.volume = 0
        self.day_volume = 0
        self.day_notional = 0
        self.day_self_volume = 0  # of those, an account's trades with itself (stp none)
        self.day_self_notional = 0
        self.day_open = self.day_high = self.day_low = 0

    # --- priority ----------------------------------------------------------------------
    def _key(self, order: Order) -> tuple[int, int]:
        price_rank = -order.price if order.is_buy else order.price
        return (price_rank, self._arrival[id(order)])

    def _enqueue(self, order: Order) -> None:
        """Put *order* at the back of its price level."""
        self._clock += 1
        self._arrival[id(order)] = self._clock
        side = self._side[order.is_buy]
        if not any(o is order for o in side):
            side.append(order)
        side.sort(key=self._key)

    def _dequeue(self, order: Order) -> None:
        side = self._side[order.is_buy]
        side[:] = [o for o in side if o is not order]
        del self._arrival[id(order)]

    @staticmethod
    def _crosses(order: Order, resting: Order) -> bool:
        return resting.price <= order.price if order.is_buy else resting.price >= order.price

    # --- queries -----------------------------------------------------------------------
    def best_bid(self) -> int | None:
        return max((o.price for o in self._side[True]), default=None)

    def best_ask(self) -> int | None:
        return min((o.price for o in self._side[False]), default=None)

    def would_cross(self, is_buy: bool, price: int) -> bool:
        best = self.best_ask() if is_buy else self.best_bid()
        if best is None:
            return False
        return best <= price if is_buy else best >= price

    def orders(self, is_buy: bool) -> Iterator[Order]:
        yield from list(self._side[is_buy])

    def depth(self,
              levels: int = 10) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        result: list[list[tuple[int, int, int]]] = []
        for is_buy in (True, False):
            prices: list[int] = []
            for o in self._side[is_buy]:
                if o.price not in prices:
                    prices.append(o.price)
            rows: list[tuple[int, int, int]] = []
            for price in prices[:levels]:
                at = [o for o in self._side[is_buy] if o.price == price]
                rows.append((price, sum(o.visible for o in at), len(at)))
            result.append(rows)
        return result[0], result[1]

    def fillable(self, order: Order) -> bool:
        """Simulate matching on copies and tell whether *order* would fill completely."""
        # Copy (order, shown, open, arrival) and replay the matching loop on the copies.
        clock = self._clock
        book = [
            _Copy(o, o.visible, o.qty, self._arrival[id(o)]) for o in self._side[not order.is_buy]
        ]
        need = order.qty
        while need:
            book = [row for row in book if row.open]
            candidates = [row for row in book if self._crosses(order, row.order)]
            if not candidates:
                return False
            row = min(
                candidates, key=lambda r: (-r.order.price
                                           if r.order.is_buy else r.order.price, r.arrival))
            resting = row.order
            if order.stp != STP_NONE and resting.account == order.account:
                if order.stp != STP_RESTING:
                    return False
                row.open = 0
                continue
            fill = min(need, row.shown)
            need -= fill
            row.open -= fill
            row.shown -= fill
            if not row.shown and row.open:
                clock += 1
                row.shown = min(resting.display, row.open)
                row.arrival = clock
        return True

    # --- commands ----------------------------------------------------------------------
    def submit(self, order: Order, out: list[Event]) -> None:
        opposite = self._side[not order.is_buy]
        if opposite and self._crosses(order, opposite[0]):
            if order.post_only:
                return self.cancel_remainder(order, Reason.POST_ONLY_WOULD_TRADE, out)
            if order.tif == FOK and not self.fillable(order):
                return self.cancel_remainder(order, Reason.FOK_UNFILLED, out)
            self._match(order, out)
            if not order.qty:
                return None
        if order.tif == FOK:
            return self.cancel_remainder(order, Reason.FOK_UNFILLED, out)
        if order.kind == MARKET:
            return self.cancel_remainder(order, Reason.MARKET_REMAINDER, out)
        if order.tif == IOC:
            return self.cancel_remainder(order, Reason.IOC_REMAINDER, out)
        order.visible = min(order.display, order.qty) if order.display else order.qty
        self._enqueue(order)
        self._ids.live[order.order_id] = order
        return None

    def remove(self, order: Order) -> None:
        """Take *order* out of the book; its id stays live (the caller retires it)."""
        self._dequeue(order)
        order.qty = 0
        order.visible = 0

    def reduce(self, order: Order, qty: int) -> None:
        order.qty = qty
        order.visible = min(order.visible, qty)

    def cancel_remainder(self, order: Order, reason: str, out: list[Event]) -> None:
        self._ctr.seq += 1
        out.append(
            OrderCancelled(seq=self._ctr.seq, order_id=order.order_id, account=order.account,
                           instrument=self.symbol, side=order.side, cancelled_qty=order.qty,
                           reason=reason))
        order.qty = 0
        order.visible = 0

    def _match(self, order: Order, out: list[Event]) -> None:
        opposite = self._side[not order.is_buy]
        while order.qty and opposite and self._crosses(order, opposite[0]):
            resting = opposite[0]
            if order.stp != STP_NONE and resting.account == order.account:
                if order.stp != STP_AGGRESSOR:
                    cancelled = resting.qty
                    self.remove(resting)
                    self._ids.retire(resting.order_id)
                    self._ctr.seq += 1
                    out.append(
                        OrderCancelled(seq=self._ctr.seq, order_id=resting.order_id,
                                       account=resting.account, instrument=self.symbol,
                                       side=resting.side, cancelled_qty=cancelled,
                                       reason=Reason.STP_CANCEL_RESTING))
                if order.stp != STP_RESTING:
                    return self.cancel_remainder(order, Reason.STP_CANCEL_AGGRESSOR, out)
                continue
            fill = min(order.qty, resting.visible)
            order.qty -= fill
            resting.qty -= fill
            resting.visible -= fill
            self._ctr.seq += 1
            self._ctr.trade += 1
            buy, sell = (order, resting) if order.is_buy else (resting, order)
            out.append(
                TradeExecuted(seq=self._ctr.seq, trade_id=self._ctr.trade, instrument=self.symbol,
                              price=resting.price, qty=fill, buy_order_id=buy.order_id,
                              sell_order_id=sell.order_id, buy_account=buy.account,
                              sell_account=sell.account, aggressor=order.side,
                              buy_leaves_qty=buy.qty, sell_leaves_qty=sell.qty))
            self.last_price = price = resting.price
            self.trade_count += 1
            self.volume += fill
            if not self.day_volume:
                self.day_open = self.day_high = self.day_low = price
            self.day_high = max(self.day_high, price)
            self.day_low = min(self.day_low, price)
            self.day_volume += fill
            self.day_notional += fill * resting.price
            if buy.account == sell.account:
                self.day_self_volume += fill
                self.day_self_notional += fill * resting.price
            if resting.qty == 0:
                self.remove(resting)
                self._ids.retire(resting.order_id)
            elif resting.visible == 0:
                resting.visible = min(resting.display, resting.qty)
                self._enqueue(resting)
        return None

    # --- state (exchange.state) --------------------------------------------------------
    def restore(self, bids: list[Order], asks: list[Order]) -> None:
        """Load resting orders into this empty book, each side in priority order; they
        get arrival numbers in that order. The order ids are left to the caller.

        Raise ``ValueError`` if the book is not empty, a side is out of price order or
        the two sides cross.
        """
        for is_buy, orders in ((True, bids), (False, asks)):
            side = self._side[is_buy]
            if side:
                raise ValueError(f"{self.symbol}: restoring into a book that is not empty")
            last = None
            for order in orders:
                rank = -order.price if is_buy else order.price
                if last is not None and rank < last:
                    raise ValueError(
                        f"{self.symbol}: order {order.order_id} is out of price priority")
                last = rank
                self._clock += 1
                self._arrival[id(order)] = self._clock
                side.append(order)
        refuse_crossed(self.symbol, self.best_bid(), self.best_ask())

    # --- verification ------------------------------------------------------------------
    def snapshot(self) -> list[list[list[str | int]]]:
        return [order_rows(self._side[is_buy]) for is_buy in (True, False)]

    def check(self) -> None:
        for is_buy, side in self._side.items():
            assert side == sorted(side, key=self._key)
            for o in side:
                assert o.is_buy == is_buy and 0 < o.visible <= o.qty
                assert self._ids.live.get(o.order_id) is o
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask
