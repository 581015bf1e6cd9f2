"""Example bots: a market maker, a noise trader and a compliance buyer.

Each bot trades one instrument through an ``ExchangeClient`` until its deadline (an
event-loop time) and keeps what it learns from its own execution reports: inventory,
cash spent and received, open orders. Prices are worked in integer ticks and sent as
decimal strings; the only randomness is a seeded ``random.Random`` per bot, here at the
edge (the core never sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

from exchange.units import Scale
from gateway.bots.client import ExchangeClient, ExchangeError

__all__ = ["BotState", "MarketMaker", "NoiseTrader", "ComplianceBuyer", "BlockSeller"]


@dataclass
class BotState:
    """What a bot knows of itself from its reports."""

    name: str
    role: str
    bought: int = 0
    sold: int = 0
    spent_ticks: int = 0  # sum of price x qty over buys, in ticks x units
    received_ticks: int = 0  # ... over sells
    orders: int = 0
    rejected: int = 0
    fills: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    open: dict[str, int] = field(default_factory=dict)  # order id -> price in ticks
    surrendered: int = 0
    blocks: int = 0  # block agreements it took part in

    @property
    def inventory(self) -> int:
        return self.bought - self.sold


class _Bot:
    role = "bot"

    def __init__(self, client: ExchangeClient, instrument: str, tick: Scale, *, fair: int,
                 seed: int) -> None:
        self.client = client
        self.instrument = instrument
        self.tick = tick
        self.fair = fair  # ticks
        self.rng = random.Random(seed)
        self.state = BotState(client.account, self.role)
        self.last_trade: int | None = None
        self.best_bid: int | None = None
        self.best_ask: int | None = None

    def price(self, ticks: int) -> str:
        return self.tick.format(max(ticks, 1))

    async def run(self, until: float) -> None:
        """Trade until the loop's clock reaches *until*; then cancel what rests."""
        listener = asyncio.ensure_future(self._listen())
        try:
            await self.trade(until)
        except ExchangeError:
            pass  # the exchange went quiet; stop trading, keep the state
        finally:
            with contextlib.suppress(ExchangeError, asyncio.TimeoutError):
                await asyncio.wait_for(self.client.mass_cancel(self.instrument), 5)
            await asyncio.sleep(0.05)  # let the last reports arrive
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def trade(self, until: float) -> None:
        raise NotImplementedError

    async def _listen(self) -> None:
        reports = self.client.reports()
        market = self.client.market_data()
        get_report = asyncio.ensure_future(reports.__anext__())
        get_market = asyncio.ensure_future(market.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({get_report, get_market},
                                             return_when=asyncio.FIRST_COMPLETED)
                if get_report in done:
                    self._on_report(get_report.result())
                    get_report = asyncio.ensure_future(reports.__anext__())
                if get_market in done:
                    self._on_market(*get_market.result())
                    get_market = asyncio.ensure_future(market.__anext__())
        finally:
            get_report.cancel()
            get_market.cancel()

    def _on_report(self, report: dict) -> None:
        state = self.state
        kind = report.get("report")
        if kind == "fill":
            ticks = self.tick.to_units(report["price"])
            state.fills += 1
            if report["side"] == "buy":
                state.bought += report["qty"]
                state.spent_ticks += ticks * report["qty"]
            else:
                state.sold += report["qty"]
                state.received_ticks += ticks * report["qty"]
            if report["leaves_qty"] == 0:
                state.open.pop(report["order_id"], None)
        elif kind in ("cancelled", "expired"):
            state.open.pop(report.get("order_id"), None)
        elif kind == "rejected":
            state.rejected += 1
            reason = report.get("reason", "?")
            state.reasons[reason] = state.reasons.get(reason, 0) + 1
        elif kind == "surrendered":
            state.surrendered += report["qty"]

    def _on_market(self, topic: str, body) -> None:
        if topic.endswith("/trades") and body:
            self.last_trade = self.tick.to_units(body[-1]["price"])
        elif topic.endswith("/book"):
            bids, asks = body["bids"], body["asks"]
            self.best_bid = self.tick.to_units(bids[0][0]) if bids else None
            self.best_ask = self.tick.to_units(asks[0][0]) if asks else None

    async def place(self, side: str, qty: int, ticks: int | None, **fields) -> dict:
        self.state.orders += 1
        report = await self.client.place(self.instrument, side, qty,
                                         None if ticks is None else self.price(ticks), **fields)
        if report.get("report") == "accepted" and ticks is not None:
            self.state.open[report["order_id"]] = ticks
        return report

    async def pause(self, mean: float, until: float) -> bool:
        """Sleep about *mean* seconds; return False once the deadline has come."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(min(self.rng.expovariate(1 / mean), max(until - loop.time(), 0)))
        return loop.time() < until


class MarketMaker(_Bot):
    """Two-sided quotes around a drifting fair value; skews both quotes against its
    inventory and never quotes wider than *max_spread* ticks."""

    role = "market maker"

    def __init__(self, client: ExchangeClient, instrument: str, tick: Scale, *, fair: int,
                 seed: int, size: int = 200, half_spread: int = 5, max_spread: int = 30,
                 skew_per_unit: float = 0.01, max_inventory: int = 5_000,
                 interval: float = 0.05) -> None:
        super().__init__(client, instrument, tick, fair=fair, seed=seed)
        self.size, self.half_spread, self.max_spread = size, half_spread, max_spread
        self.skew_per_unit, self.max_inventory = skew_per_unit, max_inventory
        self.interval = interval
        self._quotes: dict[str, str | None] = {"buy": None, "sell": None}

    def quotes(self) -> tuple[int, int]:
        """Bid and ask in ticks for the current fair value and inventory."""
        skew = round(self.state.inventory * self.skew_per_unit)
        skew = max(-self.max_spread, min(self.max_spread, skew))
        bid = self.fair - self.half_spread - skew
        ask = self.fair + self.half_spread - skew
        if ask - bid > self.max_spread:
            middle = (ask + bid) // 2
            bid, ask = middle - self.max_spread // 2, middle + self.max_spread // 2
        return bid, max(ask, bid + 1)

    async def trade(self, until: float) -> None:
        while await self.pause(self.interval, until):
            self.fair += self.rng.choice((-2, -1, 0, 0, 1, 2))
            if self.last_trade is not None:  # lean towards where the market trades
                self.fair += (self.last_trade - self.fair) // 8
            bid, ask = self.quotes()
            inventory = self.state.inventory
            await self._quote("buy", bid, inventory < self.max_inventory)
            await self._quote("sell", ask, inventory > -self.max_inventory)

    async def _quote(self, side: str, ticks: int, wanted: bool) -> None:
        order_id = self._quotes[side]
        live = order_id is not None and order_id in self.state.open
        if not wanted:
            if live:
                await self.client.cancel(order_id)
            return
        if live and self.state.open[order_id] == ticks:
            return
        if live:
            report = await self.client.amend(order_id, price=self.price(ticks), qty=self.size)
            if report.get("report") == "amended":
                self.state.open[order_id] = ticks
                return
        report = await self.place(side, self.size, ticks)
        self._quotes[side] = report.get("order_id") if report.get("report") == "accepted" else None


class NoiseTrader(_Bot):
    """Random orders: mostly limits near the last trade, some marketable IOCs; cancels its
    oldest order when it has too many resting."""

    role = "noise trader"

    def __init__(self, client: ExchangeClient, instrument: str, tick: Scale, *, fair: int,
                 seed: int, interval: float = 0.04, max_open: int = 10) -> None:
        super().__init__(client, instrument, tick, fair=fair, seed=seed)
        self.interval, self.max_open = interval, max_open

    async def trade(self, until: float) -> None:
        rng = self.rng
        while await self.pause(self.interval, until):
            reference = self.last_trade or self.fair
            side = rng.choice(("buy", "sell"))
            qty = rng.randint(1, 30) * 10
            if rng.random() < 0.3:
                away = 20 if side == "buy" else -20  # crosses any sane spread
                await self.place(side, qty, reference + away, tif="ioc")
            else:
                offset = rng.randint(1, 15)
                await self.place(side, qty,
                                 reference - offset if side == "buy" else reference + offset)
            if len(self.state.open) > self.max_open:
                oldest = next(iter(self.state.open))
                await self.client.cancel(oldest)
                self.state.open.pop(oldest, None)


class ComplianceBuyer(_Bot):
    """A covered entity short of allowances: it must buy *need* units before its deadline,
    patient at first (bids inside the spread), more urgent as the deadline nears (larger
    slices, prices closer to the offer, and at the end it crosses). At the deadline it
    surrenders *surrender* of the units it held at the start."""

    role = "compliance buyer"

    def __init__(self, client: ExchangeClient, instrument: str, tick: Scale, *, fair: int,
                 seed: int, need: int, surrender: int = 0, interval: float = 0.2) -> None:
        super().__init__(client, instrument, tick, fair=fair, seed=seed)
        self.need, self.to_surrender, self.interval = need, surrender, interval
        self.offered: list[tuple[str, str]] = []  # blocks offered to it: (id, poster)

    def _on_report(self, report: dict) -> None:
        super()._on_report(report)
        account = self.client.account
        if (report.get("report") == "block" and report.get("to_account") == account
                and report.get("account") != account and report.get("side") == "sell"):
            self.offered.append((report["order_id"], report["account"]))

    def urgency(self, start: float, now: float, until: float) -> float:
        """From 0 at the start to 1 at the deadline, rising faster near the end."""
        share = min(max((now - start) / max(until - start, 1e-9), 0.0), 1.0)
        return share * share

    async def trade(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        working: str | None = None
        while await self.pause(self.interval, until):
            while self.offered:  # a block offered for its shortfall: take it whole
                block_id, poster = self.offered.pop(0)
                if self.need - self.state.bought >= 100_000:
                    answer = await self.client.accept_block(block_id, poster)
                    if answer.get("report") == "block_accepted":
                        self.state.blocks += 1
            remaining = self.need - self.state.bought
            if remaining <= 0:
                break
            urgency = self.urgency(start, loop.time(), until)
            bid = (self.best_bid if self.best_bid is not None else
                   (self.last_trade or self.fair) - 10)
            ask = (self.best_ask if self.best_ask is not None else
                   (self.last_trade or self.fair) + 10)
            price = bid + round((ask - bid) * urgency) if urgency < 0.8 else ask + 5
            qty = max(1, min(remaining, round(remaining * (0.05 + 0.5 * urgency))))
            if working is not None and working in self.state.open:
                await self.client.cancel(working)
            report = await self.place("buy", qty, price)
            working = report.get("order_id") if report.get("report") == "accepted" else None
        if self.to_surrender:
            with contextlib.suppress(ExchangeError):
                # the demo records no obligation: a voluntary cancellation
                await self.client.surrender(self.instrument, self.to_surrender, year=None)


class BlockSeller(_Bot):
    """A covered entity with allowances to spare: it offers *qty* in one block agreement
    to *buyer* at the fair price (away from the book, all or nothing) and waits."""

    role = "block seller"

    def __init__(self, client: ExchangeClient, instrument: str, tick: Scale, *, fair: int,
                 seed: int, buyer: str, qty: int) -> None:
        super().__init__(client, instrument, tick, fair=fair, seed=seed)
        self.buyer, self.qty = buyer, qty

    async def trade(self, until: float) -> None:
        answer = await self.client.post_block(self.instrument, "sell", self.qty,
                                              self.price(self.fair), to_account=self.buyer)
        if answer.get("report") == "block":
            self.state.blocks += 1
        while await self.pause(0.5, until):
            pass
