"""The plain matcher: price-time priority in ~80 lines, SortedDict + deque per level.

The practical ceiling for pure Python: limit orders and cancels, no validation, no
events, no self-trade prevention, no stops or icebergs. It reads the same decoded
commands as the engine and records trades as tuples, so results can be compared.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

from sortedcontainers import SortedDict

from exchange.commands import CancelOrder, PlaceOrder


class PlainMatcher:

    def __init__(self, tick: str = "0.01") -> None:
        self.tick = Decimal(tick)
        self.books: dict[str, tuple[SortedDict, SortedDict]] = {}
        self.orders: dict[str, list] = {}  # id -> [id, account, qty, key, levels]
        self.prices: dict[str, int] = {}
        self.trades: list[tuple] = []

    def price(self, text: str) -> int:
        ticks = self.prices.get(text)
        if ticks is None:
            ticks = self.prices[text] = int(Decimal(text) / self.tick)
        return ticks

    def new(self, cmd: PlaceOrder) -> None:
        book = self.books.get(cmd.instrument)
        if book is None:
            book = self.books[cmd.instrument] = (SortedDict(), SortedDict())
        bids, asks = book
        is_buy = cmd.side == "buy"
        price = self.price(cmd.price)
        qty = cmd.qty
        opposite, limit = (asks, price) if is_buy else (bids, -price)
        trades = self.trades
        while qty and opposite:
            key, level = opposite.peekitem(0)
            if key > limit:
                break
            while qty and level:
                resting = level[0]
                if not resting[2]:
                    level.popleft()
                    continue
                fill = min(qty, resting[2])
                qty -= fill
                resting[2] -= fill
                trades.append((cmd.order_id, resting[0], abs(key), fill))
                if not resting[2]:
                    level.popleft()
                    del self.orders[resting[0]]
            if not level:
                del opposite[key]
        if qty and cmd.tif not in ("ioc", "fok"):
            levels, key = (bids, -price) if is_buy else (asks, price)
            order = [cmd.order_id, cmd.account, qty, key, levels]
            level = levels.get(key)
            if level is None:
                level = levels[key] = deque()
            level.append(order)
            self.orders[cmd.order_id] = order

    def cancel(self, cmd: CancelOrder) -> None:
        order = self.orders.pop(cmd.order_id, None)
        if order is not None:
            order[2] = 0
            level = order[4].get(order[3])
            if level is not None and not any(o[2] for o in level):
                del order[4][order[3]]

    def run(self, commands: list) -> None:
        new, cancel = self.new, self.cancel
        for cmd in commands:
            if type(cmd) is PlaceOrder:
                new(cmd)
            elif type(cmd) is CancelOrder:
                cancel(cmd)
