"""Bytes per resting order: a fresh process, one contender, N non-crossing limit orders.

``python -m benchmarks.memory --contender engine|plain --method tracemalloc|rss``

Orders are made one at a time from a seeded generator and handed straight to the
contender, so what stays allocated afterwards is what the contender keeps: its order
records, the order id strings, its indexes and levels. Bids sit below the mid and asks
above it, over ``levels`` price levels per side on each instrument, so nothing trades
and every order rests. Two methods, each in its own process:

* ``tracemalloc``: Python allocations still live at the end minus those at the start
  (exact, but tracing slows the run and its own bookkeeping is not counted);
* ``rss``: the resident set size delta (what the operating system sees, allocator
  slack and fragmentation included; ``/proc/self/statm``, Linux only).

The engine runs like ``gateway.tools.replay``: events go to a list emptied every 65,536
commands, the garbage collector paused while orders go in.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Iterator

from exchange import Engine, PlaceOrder, default_market

from .plain import PlainMatcher
from .stats import emit, rss_bytes

__all__ = ["resting_orders", "measure"]

_CHUNK = 1 << 16


def resting_orders(count: int, *, seed: int = 7, instruments: tuple[str, ...] = ("CEA24", "CEA25"),
                   levels: int = 1000, mid_ticks: int = 6000,
                   accounts: int = 50) -> Iterator[PlaceOrder]:
    """Yield *count* seeded limit orders that never cross (tick 0.01).

    >>> [(o.side, o.price) for o in resting_orders(2, levels=3)]
    [('sell', '60.02'), ('sell', '60.01')]
    """
    rng = random.Random(seed)
    names = [f"acc{i:03d}" for i in range(accounts)]
    for serial in range(count):
        symbol = instruments[rng.randrange(len(instruments))]
        is_buy = rng.random() < 0.5
        offset = 1 + rng.randrange(levels)
        ticks = mid_ticks - offset if is_buy else mid_ticks + offset
        yield PlaceOrder(order_id=f"m{serial}", account=names[rng.randrange(accounts)],
                         instrument=symbol, side="buy" if is_buy else "sell",
                         price=f"{ticks // 100}.{ticks % 100:02d}", qty=rng.randint(1, 500))


def _feed_engine(orders: Iterator[PlaceOrder]):
    engine = Engine(default_market())
    submit = engine.submit
    out: list = []
    for done, order in enumerate(orders, 1):
        submit(order, out)
        if not done % _CHUNK:
            out.clear()
    out.clear()
    resting = sum(1 for symbol in engine.market.instruments for is_buy in (True, False)
                  for _ in engine.book(symbol).orders(is_buy))
    return engine, resting


def _feed_plain(orders: Iterator[PlaceOrder]):
    matcher = PlainMatcher()
    new = matcher.new
    for order in orders:
        new(order)
    if matcher.trades:
        raise AssertionError("the memory test's orders traded: they must all rest")
    return matcher, len(matcher.orders)


def measure(contender: str, method: str, count: int, *, levels: int = 1000,
            instruments: tuple[str, ...] = ("CEA24", "CEA25")) -> dict:
    """Feed *count* resting orders to *contender*; return the bytes it keeps per order."""
    feed = {"engine": _feed_engine, "plain": _feed_plain}[contender]
    orders = resting_orders(count, levels=levels, instruments=instruments)
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    elif method == "rss":
        before = rss_bytes()
        if before is None:
            return {
                "contender": contender,
                "method": method,
                "orders": count,
                "error": "RSS unavailable (no /proc/self/statm)"
            }
    else:
        raise ValueError(f"unknown method {method!r}")
    gc.disable()
    started = time.perf_counter()
    kept, resting = feed(orders)
    seconds = time.perf_counter() - started
    gc.enable()
    gc.collect()
    if method == "tracemalloc":
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        after = rss_bytes() or 0
    if resting != count:
        raise AssertionError(f"{contender}: {resting} orders rest, expected {count}")
    del kept
    return {
        "contender": contender,
        "method": method,
        "orders": count,
        "resting": resting,
        "instruments": list(instruments),
        "levels_per_side": levels,
        "bytes": after - before,
        "bytes_per_order": round((after - before) / count, 1),
        "seconds": round(seconds, 3)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description="Bytes per resting order, one contender.")
    parser.add_argument("--contender", choices=("engine", "plain"), required=True)
    parser.add_argument("--method", choices=("tracemalloc", "rss"), required=True)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=1000, help="price levels per side")
    args = parser.parse_args(argv)
    emit(measure(args.contender, args.method, args.orders, levels=args.levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
