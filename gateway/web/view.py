"""What the web pages and the REST API show beyond the engine's own state.

The engine keeps the present: books, holdings, open orders, positions, the registry. The
pages also show some history, which the engine does not keep: recent trades with their
times (for the tape and the candles), each day's statistics, each account's recent
fills, and which public blocks and auctions are open. ``MarketView`` keeps these from the
gateway's events as each flush runs them (``GatewayCore.watchers``), in the same process
and the same order, so the pages read the exchange itself, never a copy that can drift:
they read the engine for the rest.

Bounded: ``keep`` trades per instrument and fills per account, ``days`` days of
statistics per instrument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exchange import Engine
from exchange.events import (AuctionBidAccepted, AuctionCleared, AuctionOpened, BlockAccepted,
                             BlockPosted, DailyStatistics, Event, OrderCancelled, OrderExpired,
                             TradeExecuted)
from gateway.mqtt.service import open_away

if TYPE_CHECKING:
    from gateway.mqtt.service import GatewayCore
    from gateway.web.auth import Credentials

__all__ = ["MarketView", "TradeRow", "Candle", "Portal"]


class Portal(Protocol):
    """What the API and the pages read of ``gateway.web.server.WebPortal`` (named here,
    not imported: the server imports them): the gateway's core, this view, the logins."""

    core: GatewayCore
    view: MarketView
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One trade as the tape shows it: ``ts`` the gateway's clock (ns) when it ran."""

    seq: int
    trade_id: int
    ts: int
    instrument: str
    price: int  # ticks
    qty: int
    aggressor: str
    mode: str
    buy_account: str
    sell_account: str
    buy_order_id: str
    sell_order_id: str


@dataclass(frozen=True, slots=True)
class Candle:
    """Open, high, low and close (ticks) and volume of the listing trades in one interval
    starting at ``start`` (ns)."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int


# Events a second (orders accepted, cancelled, traded, ...) from which the market counts
# as busy: then a page redraws at most once a second, and its browser and the gateway
# spend their time on the orders (benchmarks/web.py). Counted over each BUSY_WINDOW_NS.
BUSY_EVENTS = 2_000
BUSY_WINDOW_NS = 250_000_000


# The events whose news the view keeps; the others it passes over.
_KEPT = frozenset({TradeExecuted, DailyStatistics, BlockPosted, BlockAccepted, OrderCancelled,
                   OrderExpired, AuctionOpened, AuctionBidAccepted, AuctionCleared})


class MarketView:
    """Recent history of one gateway's market, kept from its events (see the module)."""

    def __init__(self, engine: Engine, *, keep: int = 1_000, days: int = 250) -> None:
        self.engine = engine
        self.market = engine.market
        self.keep = keep
        self.trades: dict[str, deque[TradeRow]] = {
            symbol: deque(maxlen=keep) for symbol in self.market.instruments
        }
        self.daily: dict[str, deque[DailyStatistics]] = {
            symbol: deque(maxlen=days) for symbol in self.market.instruments
        }
        self.fills: dict[str, deque[TradeRow]] = {}  # account -> its recent trades
        # Public blocks and the day's auctions by id, each open bid's auction, and the
        # bids each auction holds: as the engine has them when the view starts (a
        # recovered exchange), then kept from the events.
        self.blocks: dict[str, BlockPosted]
        self.auctions: dict[str, AuctionOpened]
        self.bid_of: dict[str, str]
        self.blocks, self.auctions, self.bid_of = open_away(engine)
        self.auction_bids: dict[str, int] = dict.fromkeys(self.auctions, 0)
        for name in self.bid_of.values():
            self.auction_bids[name] += 1
        self.cleared: deque[AuctionCleared] = deque(maxlen=100)
        self.version = 0  # grows with every flush that brought events
        self._listeners: list[Callable[[], None]] = []
        # Whether the last whole window of the gateway's clock brought events at a rate of
        # BUSY_EVENTS a second or more: the pages then redraw less often (gateway.web.pages).
        self.busy = False
        self._window_began = 0  # ns, the gateway's clock
        self._window_events = 0

    # --- fed by the gateway --------------------------------------------------------------
    def on_events(self, events: list[Event], ts: int) -> None:
        """Take the events of one flush, run at the gateway's clock *ts* (ns)."""
        self._count(len(events), ts)
        for event in events:
            kind = type(event)
            if kind not in _KEPT:
                continue  # most events (orders accepted) change no history (benchmarks/web.py)
            if kind is TradeExecuted:
                row = TradeRow(event.seq, event.trade_id, ts, event.instrument, event.price,
                               event.qty, event.aggressor, event.mode, event.buy_account,
                               event.sell_account, event.buy_order_id, event.sell_order_id)
                self.trades[event.instrument].append(row)
                for account in {event.buy_account, event.sell_account}:
                    fills = self.fills.get(account)
                    if fills is None:
                        fills = self.fills[account] = deque(maxlen=self.keep)
                    fills.append(row)
            elif kind is DailyStatistics:
                self.daily[event.instrument].append(event)
            elif kind is BlockPosted:
                if event.to_account is None:
                    self.blocks[event.order_id] = event
            elif kind is BlockAccepted or kind is OrderCancelled or kind is OrderExpired:
                self.blocks.pop(event.order_id, None)
                name = self.bid_of.pop(event.order_id, None)  # a bid withdrawn, or unfilled
                if name in self.auction_bids and kind is OrderCancelled:
                    self.auction_bids[name] -= 1
            elif kind is AuctionOpened:
                self.auctions[event.auction] = event
                self.auction_bids[event.auction] = 0
            elif kind is AuctionBidAccepted:
                self.auction_bids[event.auction] = self.auction_bids.get(event.auction, 0) + 1
                self.bid_of[event.order_id] = event.auction
            elif kind is AuctionCleared:
                self.auctions.pop(event.auction, None)
                self.auction_bids.pop(event.auction, None)
                self.cleared.append(event)
                # Its filled bids end with it (only unfilled ones are cancelled): kept, the
                # table grew with every auction a long-lived portal saw.
                for bid in [b for b, name in self.bid_of.items() if name == event.auction]:
                    del self.bid_of[bid]
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def _count(self, events: int, ts: int) -> None:
        """Count *events* at *ts* in the window they fall in. The market is busy as soon
        as a window holds a whole window's worth at BUSY_EVENTS a second (a flood's first
        quarter second is not drawn ten times a second: benchmarks/web.py); a window that
        has ended below that rate, or a window with no flush at all, makes it quiet."""
        elapsed = ts - self._window_began
        if elapsed >= BUSY_WINDOW_NS:
            self.busy = (elapsed < 2 * BUSY_WINDOW_NS and self._window_events * 10**9
                         >= BUSY_EVENTS * BUSY_WINDOW_NS)
            self._window_began, self._window_events = ts, 0
        self._window_events += events
        if self._window_events * 10**9 >= BUSY_EVENTS * BUSY_WINDOW_NS:
            self.busy = True

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call *listener* after every flush that brought events; return the function
        that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- history ---------------------------------------------------------------------------
    def recent_trades(self, symbol: str, limit: int = 100) -> list[TradeRow]:
        """The newest *limit* trades of *symbol*, newest first."""
        trades = self.trades[symbol]
        return [trades[i] for i in range(len(trades) - 1, max(len(trades) - limit, 0) - 1, -1)]

    def recent_fills(self, account: str, limit: int = 100) -> list[TradeRow]:
        """The newest *limit* trades *account* took part in, newest first."""
        fills = self.fills.get(account, ())
        return list(fills)[::-1][:limit]

    def candles(self, symbol: str, interval_s: int = 60, limit: int = 200) -> list[Candle]:
        """Candles of the listing trades kept, oldest first, each *interval_s* seconds."""
        width = interval_s * 10**9
        candles: list[Candle] = []
        for row in self.trades[symbol]:
            if row.mode != "listing":
                continue
            start = row.ts - row.ts % width
            if candles and candles[-1].start == start:
                last = candles[-1]
                candles[-1] = Candle(start, last.open, max(last.high, row.price),
                                     min(last.low, row.price), row.price, last.volume + row.qty)
            else:
                candles.append(Candle(start, row.price, row.price, row.price, row.price, row.qty))
        return candles[-limit:]
