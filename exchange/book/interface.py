"""The order book's interface: what the engine asks of a book, whichever it is.

``FastBook`` (``exchange.book.fast``) and the reference ``NaiveBook``
(``exchange.book.naive``) both meet it; the engine, the ledger (it walks a book to size
a market buy) and the clearing house (it reads quotes) use a book only through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeAlias

from exchange.book.fast import Order
from exchange.events import Event

__all__ = ["DepthSide", "OrderBook"]

# (price, quantity shown, orders) per level, best first
DepthSide: TypeAlias = list[tuple[int, int, int]]


class OrderBook(Protocol):
    """What the engine uses of an instrument's order book (``FastBook``, or the reference
    ``NaiveBook``), and what it hands on: the ledger walks a book to size a market buy;
    the clearing house reads its quotes; ``Engine.book`` gives it to callers (depth)."""

    last_price: int | None
    trade_count: int
    volume: int
    day_volume: int
    day_notional: int
    day_self_volume: int  # of day_volume, an account's trades with itself (stp none)
    day_self_notional: int
    day_open: int
    day_high: int
    day_low: int

    def submit(self, order: Order, out: list[Event]) -> None:
        ...

    def remove(self, order: Order) -> None:
        ...

    def reduce(self, order: Order, qty: int) -> None:
        ...

    def cancel_remainder(self, order: Order, reason: str, out: list[Event]) -> None:
        ...

    def would_cross(self, is_buy: bool, price: int) -> bool:
        ...

    def best_bid(self) -> int | None:
        ...

    def best_ask(self) -> int | None:
        ...

    def orders(self, is_buy: bool) -> Iterator[Order]:
        ...

    def depth(self, levels: int = 10) -> tuple[DepthSide, DepthSide]:
        ...

    def restore(self, bids: list[Order], asks: list[Order]) -> None:
        ...

    def snapshot(self) -> list[list[list[str | int]]]:
        ...

    def check(self) -> None:
        ...
