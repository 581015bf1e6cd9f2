"""Cost per message as the book grows and as instruments multiply.

``python -m benchmarks.scaling resting N FILE``: the engine is first loaded with *N*
resting orders that never trade (buys below and sells above every price the file
uses, spread over up to 1,000 levels a side, 100 accounts), then the file's messages run
through it with the clock on. Same file at every *N*, so the difference is what the
larger book costs: bigger order maps and id sets, longer queues, colder caches.
Bytes per resting order are the resident set's growth over the loading, divided by *N*.

``python -m benchmarks.scaling instruments K FILE``: the file's orders are dealt out to
*K* instruments in turn (order *i* goes to instrument *i mod K*; cancels follow their
order by id), in a market of *K* spot instruments like ``CEA25``, and run with the clock
on. Each book gets a share of the flow, so the books are thinner as *K* grows.

Each size runs in its own process (the parent starts one per size), ``--repeat`` times
on a fresh engine, garbage collector paused while timing, events dropped every 1,024
commands as ``carbonx replay`` does.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import msgspec

from exchange import Engine, default_market
from exchange.commands import PlaceOrder
from exchange.market import parse_market
from exchange.orderfile import read_order_file

from .peers import feed
from .stats import emit, rss_bytes, spread

__all__ = ["resting", "instruments", "deep_orders", "market_of", "deal_out"]

MAX_LEVELS = 1000  # price levels a side for the resting orders


def _run(engine: Engine, commands: list) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        feed(engine, commands)
        return time.perf_counter() - started
    finally:
        gc.enable()


def _per_message(commands: list, runs: list[float]) -> dict:
    """The message count, each run's seconds and the spread of nanoseconds a message."""
    return {
        "messages": len(commands),
        "runs_s": [round(s, 6) for s in runs],
        "ns_per_msg": spread([s / len(commands) * 1e9 for s in runs], 1)
    }


def deep_orders(count: int, low: int, high: int, symbol: str = "CEA25") -> list[PlaceOrder]:
    """Return *count* limit orders that rest without trading: buys below tick *low*,
    sells above tick *high*, over up to ``MAX_LEVELS`` levels a side.

    >>> [(o.side, o.price) for o in deep_orders(4, 6000, 6010)]
    [('buy', '59.99'), ('sell', '60.11'), ('buy', '59.98'), ('sell', '60.12')]
    """
    levels = max(1, min(MAX_LEVELS, count // 2))
    if low - levels < 1:
        raise ValueError("the file's prices leave no room below them for resting buys")
    orders = []
    for index in range(count):
        level = (index // 2) % levels
        is_buy = not index % 2
        ticks = low - 1 - level if is_buy else high + 1 + level
        orders.append(
            PlaceOrder(order_id=f"deep{index}", account=f"deep{index % 100:02d}", instrument=symbol,
                       side="buy" if is_buy else "sell", price=f"{ticks // 100}.{ticks % 100:02d}",
                       qty=10, stp="none"))
    return orders


def _price_range(commands: list) -> tuple[int, int]:
    tick = default_market()["CEA25"].tick
    ticks = [
        tick.to_units(c.price) for c in commands if type(c) is PlaceOrder and c.price is not None
    ]
    return min(ticks), max(ticks)


def resting(count: int, path: str, *, repeat: int = 3) -> dict:
    """Return the cost per message of the file at *path* over *count* resting orders."""
    commands = read_order_file(path, default_stp="none")
    low, high = _price_range(commands)
    preload = deep_orders(count, low, high)
    runs, grown, trades = [], [], set()
    for _ in range(repeat):
        gc.collect()
        before = rss_bytes()
        engine = Engine(default_market())
        _run(engine, preload)
        after = rss_bytes()
        if before is not None and after is not None:
            grown.append((after - before) / count)
        resting_before = engine.trades
        runs.append(_run(engine, commands))
        trades.add(engine.trades - resting_before)
        del engine
    return {
        "resting": count,
        **_per_message(commands, runs),
        "bytes_per_order": round(min(grown), 1) if grown else None,
        "trades": sorted(trades),
        "levels_per_side": max(1, min(MAX_LEVELS, count // 2))
    }


def market_of(count: int):
    """Return a market of *count* spot instruments ``S0000``... like ``CEA25``."""
    text = '[defaults]\ncurrency = "CNY"\n' + "".join(
        f'[instruments.S{index:04d}]\nkind = "spot"\ntick = "0.01"\nmax_qty = 99_999\n'
        for index in range(count))
    return parse_market(text, f"<{count} instruments>")


def deal_out(commands: list, count: int) -> list:
    """Return *commands* with order *i* moved to instrument ``S{i mod count}``."""
    dealt = []
    serial = 0
    for command in commands:
        if type(command) is PlaceOrder:
            command = msgspec.structs.replace(command, instrument=f"S{serial % count:04d}")
            serial += 1
        dealt.append(command)
    return dealt


def instruments(count: int, path: str, *, repeat: int = 3) -> dict:
    """Return the cost per message of the file at *path* dealt out to *count* instruments."""
    commands = deal_out(read_order_file(path, default_stp="none"), count)
    market = market_of(count)
    runs, trades = [], set()
    for _ in range(repeat):
        engine = Engine(market)
        runs.append(_run(engine, commands))
        trades.add(engine.trades)
        del engine
    return {"instruments": count, **_per_message(commands, runs), "trades": sorted(trades)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description="Cost per message by book size or instruments.")
    parser.add_argument("axis", choices=("resting", "instruments"))
    parser.add_argument("size", type=int)
    parser.add_argument("file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    measure = resting if args.axis == "resting" else instruments
    emit(measure(args.size, args.file, repeat=args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
