"""Per-message latency inside the engine, by message kind.

``python -m benchmarks.latency FILE [--every K]``: decodes the file, then runs the engine
over every command as ``carbonx replay`` does (garbage collector paused, events dropped
in chunks) and times one command in *K* with ``time.perf_counter_ns`` around
``Engine.submit``. The other K-1 run untouched, so the timer's own cost (measured and
reported as ``timer_overhead_ns``, and included in every sample) never piles up on the
run. A sampled command's kind is read from the file and from the events it made (a
limit order that traded is ``new_limit_cross``, one that only rested ``new_limit_rest``),
after its clock has stopped.

Percentiles use the nearest-rank method on the samples of each kind.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from bisect import bisect_right

from exchange import Engine, default_market
from exchange.commands import AmendOrder, CancelOrder, EndOfDay, MassCancel, PlaceOrder
from exchange.events import CommandRejected, TradeExecuted
from exchange.orderfile import read_order_file

from .stats import emit

__all__ = ["measure", "percentile", "summarize", "histogram", "EDGES_NS", "kind_of"]

# Histogram bucket edges: 100 ns to ~10 ms, four buckets per doubling.
EDGES_NS = [0] + [round(100 * 2**(i / 4)) for i in range(67)]
_FLUSH = 4096  # events are dropped every this many commands


def percentile(ordered: list[int], fraction: float) -> int:
    """Return the nearest-rank percentile of the sorted list *ordered*.

    >>> percentile(list(range(1, 101)), 0.99), percentile([5], 0.5), percentile([1, 2], 0.5)
    (99, 5, 1)
    """
    rank = max(1, -(-int(round(fraction * 1_000_000)) * len(ordered) // 1_000_000))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples: list[int]) -> dict:
    """Return count, p50, p99, p99.9, max and mean of *samples* (nanoseconds)."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ns": percentile(ordered, 0.5),
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1],
        "mean_ns": round(sum(ordered) / len(ordered), 1)
    }


def histogram(samples: list[int], edges: list[int] = EDGES_NS) -> list[int]:
    """Return counts per bucket ``[edges[i], edges[i+1])``; the last bucket is open.

    >>> histogram([0, 99, 100, 5000, 10**9], [0, 100, 1000])
    [2, 1, 2]
    """
    counts = [0] * len(edges)
    for value in samples:
        counts[bisect_right(edges, value) - 1] += 1
    return counts


def kind_of(command, events: list) -> str:
    """Name the kind of *command* given the *events* it produced."""
    if events and type(events[-1]) is CommandRejected and len(events) == 1:
        return "rejected"
    kind = type(command)
    if kind is PlaceOrder:
        if command.type != "limit":
            return f"new_{command.type}"
        if command.tif in ("ioc", "fok"):
            return f"new_{command.tif}"
        if any(type(e) is TradeExecuted for e in events):
            return "new_limit_cross"
        return "new_limit_rest"
    if kind is CancelOrder:
        return "cancel"
    if kind is AmendOrder:
        return "amend"
    if kind is MassCancel:
        return "mass_cancel"
    if kind is EndOfDay:
        return "eod"
    return "ledger"


def timer_overhead_ns(rounds: int = 100_000) -> int:
    """Return the median cost of an empty ``perf_counter_ns`` pair, in nanoseconds."""
    clock = time.perf_counter_ns
    costs = []
    for _ in range(rounds):
        started = clock()
        costs.append(clock() - started)
    costs.sort()
    return costs[len(costs) // 2]


def measure(path: str, *, every: int = 4, ledger: bool = False) -> dict:
    """Run the file at *path* through the engine, timing one command in *every*."""
    gc.disable()
    commands = read_order_file(path)
    engine = Engine(default_market(), ledger=ledger)
    submit = engine.submit
    clock = time.perf_counter_ns
    out: list = []
    samples: list[tuple[int, object, list]] = []
    keep = samples.append
    gc.collect()
    for start in range(0, len(commands), _FLUSH):
        chunk = commands[start:start + _FLUSH]
        for index, command in enumerate(chunk):
            if index % every:
                submit(command, out)
                continue
            first = len(out)
            began = clock()
            submit(command, out)
            took = clock() - began
            keep((took, command, out[first:]))
        out.clear()
    gc.enable()
    by_kind: dict[str, list[int]] = {}
    for took, command, events in samples:
        by_kind.setdefault(kind_of(command, events), []).append(took)
    every_sample = [s[0] for s in samples]
    return {
        "file": path,
        "messages": len(commands),
        "sampled": len(samples),
        "every": every,
        "ledger": ledger,
        "trades": engine.trades,
        "volume": engine.volume,
        "state_hash": engine.state_hash(),
        "kinds": {
            kind: summarize(values)
            for kind, values in sorted(by_kind.items())
        },
        "all": summarize(every_sample),
        "histogram": {
            "edges_ns": EDGES_NS,
            "counts": {
                **{
                    kind: histogram(values)
                    for kind, values in by_kind.items()
                }, "all": histogram(every_sample)
            }
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency",
                                     description="Per-message latency by kind, sampled.")
    parser.add_argument("file")
    parser.add_argument("--every", type=int, default=4, help="time one command in K (default 4)")
    parser.add_argument("--ledger", action="store_true", help="with accounts and settlement")
    args = parser.parse_args(argv)
    result = measure(args.file, every=args.every, ledger=args.ledger)
    result["timer_overhead_ns"] = timer_overhead_ns()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
