"""``carbonx demo``: the whole exchange with bots, for a bounded time, in one process.

The embedded broker on a free loopback port, the gateway with the engine, ledger and a
journal, and bots that connect over MQTT like any outside bot: two market makers, three
noise traders, a compliance buyer and a power company with allowances to spare, on CEA25
and CEA24, over two trading days (``--days``) that each end with the operator's end of
day. The compliance buyer is 154,000 t short: the power company offers it 150,000 t in
one block agreement, which it accepts, and it buys the rest on the order book. Both
market makers quote under an obligation (both sides, at least 100 t, within a maximum
spread, for half the session): mm-1 keeps it on CEA25 and earns back half its maker
fees; mm-2's CEA24 obligation allows a spread narrower than it quotes, so it misses.

At the end: trades, volume and VWAP per instrument, the block agreements, the market
makers' assessments day by day, and each bot's holdings and profit and loss (cash change
plus the units change marked at the last trade price).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from exchange import Engine, Market, default_market
from exchange.market import parse_market
from exchange.commands import Deposit, IssueAllowances, OpenAccount
from exchange.journal import create_journal
from exchange.market import format_cash
from exchange.sequencer import Sequencer
from gateway.bots.client import ExchangeClient
from gateway.bots.traders import BlockSeller, ComplianceBuyer, MarketMaker, NoiseTrader, _Bot
from gateway.errors import UsageError
from gateway.mqtt.brokerconfig import generate_password
from gateway.mqtt.embedded import GATEWAY_USER, EmbeddedBroker
from gateway.protocol import OPERATOR
from gateway.mqtt.serve import run_async
from gateway.mqtt.service import GatewayCore, run_gateway

__all__ = ["run_demo", "DemoResult"]


@dataclass(frozen=True)
class _Seat:
    account: str
    kind: str  # account kind in the ledger
    instrument: str
    cash: str  # CNY deposited
    units: int  # allowances issued


_SEATS = (_Seat("mm-1", "market_maker", "CEA25", "5000000",
                40_000), _Seat("mm-2", "market_maker", "CEA24", "5000000",
                               40_000), _Seat("noise-1", "financial", "CEA25", "1000000", 5_000),
          _Seat("noise-2", "financial", "CEA25", "1000000",
                5_000), _Seat("noise-3", "financial", "CEA24", "1000000",
                              5_000), _Seat("steel-1", "covered", "CEA25", "12000000", 3_000),
          _Seat("power-1", "covered", "CEA25", "1000000", 400_000))
_FAIR = {"CEA25": 6000, "CEA24": 5850}  # ticks of 0.01 CNY: 60.00 and 58.50
_BLOCK = 150_000  # what the power company offers the steel company in one block
_SHORT = 154_000  # the steel company's shortfall: the block, and the rest on the book
# The market makers' obligations: mm-1 quotes 0.10 wide on CEA25 (within 0.30); mm-2
# quotes 0.10 wide on CEA24, where the obligation allows 0.05.
_OBLIGATIONS = """
[market_makers.CEA25]
max_spread = "0.30"
min_qty = 100
min_presence = "0.5"
rebate = "0.5"

[market_makers.CEA24]
max_spread = "0.05"
min_qty = 100
min_presence = "0.5"
rebate = "0.5"
"""


@dataclass
class DemoResult:
    seconds: float
    messages: int
    commands: int
    trades: int
    summary: str


def _funding(seats) -> list:
    commands: list = []
    for seat in seats:
        commands.append(OpenAccount(account=seat.account, kind=seat.kind))
        commands.append(Deposit(account=seat.account, currency="CNY", amount=seat.cash))
        commands.append(
            IssueAllowances(account=seat.account, instrument=seat.instrument, qty=seat.units))
    return commands


def _bot(seat: _Seat, client: ExchangeClient, market: Market, seed: int) -> _Bot:
    tick = market[seat.instrument].tick
    fair = _FAIR[seat.instrument]
    if seat.kind == "market_maker":
        return MarketMaker(client, seat.instrument, tick, fair=fair, seed=seed)
    if seat.account.startswith("power"):
        return BlockSeller(client, seat.instrument, tick, fair=fair, seed=seed,
                           buyer="steel-1", qty=_BLOCK)
    if seat.kind == "covered":
        return ComplianceBuyer(client, seat.instrument, tick, fair=fair, seed=seed, need=_SHORT,
                               surrender=seat.units)
    return NoiseTrader(client, seat.instrument, tick, fair=fair, seed=seed)


def demo_market() -> Market:
    """The default market with the demo's quoting obligations, its schedule set aside (the
    bots trade whenever the demo runs)."""
    return parse_market(default_market().text + _OBLIGATIONS, "<demo>").open_all_hours()


async def _demo(seconds: float, seed: int, journal_dir: str, out, kept: bool,
                days: int = 2, web: int | None = None) -> DemoResult:
    market = demo_market()
    engine = Engine(market, ledger=True)
    writer = create_journal(journal_dir, market.text, ledger=True)
    Sequencer(engine, writer).run(_funding(_SEATS), [])
    start_holdings = _holdings(engine)
    core = GatewayCore(engine, journal=writer)
    credentials = {seat.account: generate_password(12) for seat in _SEATS}
    credentials[GATEWAY_USER] = generate_password(12)
    credentials[OPERATOR] = generate_password(12)
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    async with EmbeddedBroker(credentials) as broker:
        print(
            f"embedded broker on mqtt://{broker.host}:{broker.port}; journal in "
            f"{journal_dir}; {len(_SEATS)} bots for {seconds:g} s", file=out, flush=True)
        stop, ready = asyncio.Event(), asyncio.Event()
        gateway = asyncio.ensure_future(
            run_gateway(core, host=broker.host, port=broker.port, username=GATEWAY_USER,
                        password=credentials[GATEWAY_USER], stop=stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            portal = await _web(core, credentials, web, journal_dir, stop, out)
        except UsageError:
            stop.set()
            await gateway
            raise
        clients = [
            ExchangeClient(seat.account, credentials[seat.account], broker.host, broker.port,
                           market_data=[seat.instrument]) for seat in _SEATS
        ]
        for client in clients:
            await client.__aenter__()
        try:
            bots = [
                _bot(seat, client, market, seed + i)
                for i, (seat, client) in enumerate(zip(_SEATS, clients))
            ]
            until = loop.time() + seconds
            runs = [asyncio.ensure_future(bot.run(until)) for bot in bots]
            progress = asyncio.ensure_future(_progress(core, until, out))
            days_done = asyncio.ensure_future(_trading_days(core, seconds, days, out))
            await asyncio.gather(*runs)
            await days_done
            await _end_of_day(core, out)  # the last day ends when the bots stop
            progress.cancel()
        finally:
            for client in clients:
                await client.close()
            stop.set()
            await gateway
            if portal is not None:
                await portal
    writer.close()
    elapsed = time.perf_counter() - began
    summary = _summary(core, market, bots, start_holdings, _holdings(engine), elapsed)
    summary += "\n\n" + _blocks_and_quoting(core, market)
    summary += "\n\n" + _rejections(core) + "\n\n" + _next_steps(journal_dir if kept else None)
    return DemoResult(elapsed, core.stats.messages, core.stats.commands, engine.trades, summary)


async def _web(core: GatewayCore, credentials: dict[str, str], port: int | None,
               journal_dir: str, stop: asyncio.Event, out) -> asyncio.Task | None:
    """Serve the web portal on *port* (``--web``) until *stop*; its logins written to
    credentials.json in the journal directory, never printed."""
    if port is None:
        return None
    from gateway.mqtt.serve import save_credentials
    from gateway.web.server import WebPortal, serve_web

    path = Path(journal_dir) / "credentials.json"
    save_credentials(path, {k: v for k, v in credentials.items() if k != GATEWAY_USER})
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        serve_web(WebPortal(core, credentials), port=port, stop=stop, ready=ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not ready.is_set():  # a port in use, say: said as serve --web says it
        error = task.exception() if task.done() else "no answer within 10 s"
        if not task.done():
            task.cancel()
        raise UsageError(f"the web portal cannot listen on 127.0.0.1:{port}: "
                         f"{getattr(error, 'strerror', None) or error}")
    print(f"web portal on http://127.0.0.1:{port}/; logins (each bot's account, and "
          f"operator) in {path}", file=out, flush=True)
    return task


async def _trading_days(core: GatewayCore, seconds: float, days: int, out) -> None:
    """The operator's end of day after each day but the last (which ends with the run)."""
    for _ in range(days - 1):
        await asyncio.sleep(seconds / days)
        await _end_of_day(core, out)


async def _end_of_day(core: GatewayCore, out) -> None:
    """End the trading day through the gateway, as the operator's eod does, and wait
    until it has run."""
    day = core.engine.day
    core.end_of_day()
    while core.engine.day == day:
        await asyncio.sleep(0.02)
    print(f"\nday {day} ended", file=out, flush=True)


async def _progress(core: GatewayCore, until: float, out) -> None:
    loop = asyncio.get_running_loop()
    live = out.isatty()
    while True:
        await asyncio.sleep(0.25 if live else 2.0)
        left = max(until - loop.time(), 0)
        traded = "  ".join(f"{symbol} {n} trades, last {core.last_price(symbol)}"
                           for symbol, n in sorted(core.trade_counts().items()))
        line = f"{left:5.1f} s left  {core.stats.commands} commands  {traded or 'no trades yet'}"
        print(("\r" + line.ljust(100)) if live else line, end="" if live else "\n", file=out,
              flush=True)


def _holdings(engine: Engine) -> dict[tuple[str, str], int]:
    return {
        (account, asset): available + held + locked + pledged
        for account, asset, available, held, locked, pledged in engine.ledger.holdings()
    }


def _blocks_and_quoting(core: GatewayCore, market: Market) -> str:
    """The block agreements and auctions traded, and each day's quoting assessments."""
    lines = []
    for (symbol, mode), (count, volume) in sorted(core.traded_away.items()):
        lines.append(f"{mode} trades: {symbol} {count} for {volume:,} t")
    if not lines:
        lines.append("block trades: none")
    lines += ["", "day  market maker  instrument  presence  spread (CNY)  obligation  rebate (CNY)"]
    for event in core.assessments:
        spread = market[event.instrument].format_price(event.average_spread) or "-"
        lines.append(f"{event.day:>3}  {event.account:<12}  {event.instrument:<10}  "
                     f"{event.presence_bps / 100:>7.2f}%  {spread:>12}  "
                     f"{'met' if event.met else 'missed':<10}  "
                     f"{format_cash(event.currency, event.rebate):>12}")
    return "\n".join(lines)


def _summary(core: GatewayCore, market: Market, bots, before, after, elapsed) -> str:
    lines = [
        f"demo: {elapsed:.1f} s, {core.stats.messages} messages, "
        f"{core.stats.commands} commands, {core.engine.trades} trades, "
        f"{core.stats.turned_away} turned away at the edge", "",
        "instrument  trades     volume (t)  VWAP (CNY/t)  last"
    ]
    for symbol, (count, volume, notional) in sorted(core.traded.items()):
        tick = market[symbol].tick
        vwap = tick.format((2 * notional + volume) // (2 * volume)) if volume else "-"
        lines.append(
            f"{symbol:<10}  {count:>6}  {volume:>13,}  {vwap:>12}  {core.last_price(symbol)}")
    lines += [
        "", "bot       role               CNY (end)        allowances  "
        "orders  fills  rejected  P&L (CNY, marked at last)"
    ]
    for bot in bots:
        account, symbol = bot.client.account, bot.instrument
        inst = market[symbol]
        cash0, cash1 = before.get((account, "CNY"), 0), after.get((account, "CNY"), 0)
        units0, units1 = before.get((account, symbol), 0), after.get((account, symbol), 0)
        last = core.last_ticks(symbol) or _FAIR[symbol]
        # Surrendered units left the market for good; they are not a trading loss.
        moved = units1 + bot.state.surrendered - units0
        pnl = cash1 - cash0 + moved * last * inst.tick_value
        lines.append(
            f"{account:<9} {bot.state.role:<17} {format_cash('CNY', cash1):>14}  "
            f"{units1:>10,}  {bot.state.orders:>6}  {bot.state.fills:>5}  "
            f"{bot.state.rejected:>8}  {format_cash('CNY', pnl):>12}" +
            (f"  (surrendered {bot.state.surrendered:,})" if bot.state.surrendered else ""))
    return "\n".join(lines)


# What a rejection the bots meet means, in a line (every reason: docs/mqtt.md).
_MEANING = {
    "insufficient_cash": "a buy the account's cash could not cover (the ledger holds cash "
                         "before an order rests)",
    "insufficient_allowances": "a sell of allowances the account does not have free (no "
                               "short selling; bought units are locked until the day ends)",
    "price_out_of_band": "a price outside the band around the reference price",
    "unknown_order": "a cancel or amend of an order already filled or cancelled",
    "post_only_would_trade": "a post-only order that would have traded at once",
    "duplicate_command": "a command sent again after a reconnect, answered from memory",
    "rate_limited": "more commands a second than an account may send",
    "overloaded": "more commands waiting than an account may queue",
    "position_limit": "a buy past the account's position limit",
}


def _rejections(core: GatewayCore) -> str:
    """The rejections by reason, each with what it means."""
    counts = dict(core.engine.rejects)
    for reason, count in core.stats.by_reason.items():
        counts[reason] = counts.get(reason, 0) + count
    if not counts:
        return "rejections: none"
    lines = [f"rejections: {sum(counts.values()):,}, by reason:"]
    for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        meaning = _MEANING.get(reason, "see the rejection reasons in docs/mqtt.md")
        lines.append(f"  {count:>7,}  {reason}: {meaning}")
    return "\n".join(lines)


def _next_steps(journal: str | None) -> str:
    """What a newcomer may try next."""
    kept = (f"  carbonx holdings {journal}    every account's holdings, recovered from the "
            f"demo's journal" if journal is not None else
            "  carbonx demo --journal DIR    keep the demo's journal, then: carbonx holdings DIR")
    return "\n".join([
        "next:", kept,
        "  carbonx serve --always-open    the exchange for your own bots (README: "
        "\"Trading over MQTT\")",
        "  carbonx replay examples/orders-mixed.csv    replay an order file and sum it up"
    ])


def run_demo(seconds: float = 20.0, seed: int = 1, journal: str | None = None,
             out=sys.stderr, days: int = 2, web: int | None = None) -> DemoResult:
    """Run the demo over *days* trading days and print its progress to *out*; return what
    happened. *web*: serve the web portal on that port too."""
    if web is not None:
        # Tried before the journal is made: a port in use leaves no journal in --journal
        # DIR (which a second try would then refuse).
        from gateway.web import probe_port

        try:
            probe_port("127.0.0.1", web)
        except OSError as exc:
            raise UsageError(f"the web portal cannot listen on 127.0.0.1:{web}: "
                             f"{exc.strerror or exc}") from None
    if journal is not None:
        return _run(seconds, seed, journal, out, kept=True, days=days, web=web)
    with tempfile.TemporaryDirectory(prefix="carbonx-demo-") as directory:
        return _run(seconds, seed, directory, out, kept=False, days=days, web=web)


def _run(seconds: float, seed: int, journal: str, out, kept: bool, days: int,
         web: int | None) -> DemoResult:
    result: list[DemoResult] = []

    async def main() -> None:
        result.append(await _demo(seconds, seed, journal, out, kept, days, web))

    run_async(main())
    if out.isatty():
        print(file=out)
    return result[0]
