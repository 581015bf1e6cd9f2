"""Engine snapshots: pickle against ``exchange.state`` on one engine of N resting orders.

``python -m benchmarks.snapshot [--orders 1000000] [--ledger] [--command-ids K]
[--repeat 3] [--json]``

One engine is filled with N limit orders that never cross (``benchmarks.memory``'s
seeded generator: 2 instruments, 1,000 levels a side, 50 accounts); with ``--ledger``
the accounts are funded first and every order holds its cash or allowances; with
``--command-ids K`` the last K orders carry a command id (the command window's
answers go into the state too). Then, on that same engine, each method writes and reads
its snapshot *repeat* times (medians printed):

* ``pickle``: ``pickle.dumps(engine)`` / ``pickle.loads`` (the journal's snapshots
  before ``exchange.state``);
* ``state``: ``encode_state(engine)`` / ``decode_state(data, check=False)``;
* ``state+check``: the same read with the engine's ``check()`` (the default).

The methods take turns, round by round (this VM's speed drifts over minutes). Each
restored engine's ``state_hash()`` is compared with the original's (outside the
timings). The garbage collector is paused in the timed regions, as in the rest of the
suite. Not part of ``python -m benchmarks`` (and not of the tests, but for a tiny run).
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import sys
import time
from collections.abc import Callable

import msgspec

from exchange import Deposit, Engine, IssueAllowances, default_market
from exchange.market import parse_market
from exchange.persist import decode_state, encode_state

from .data import unlimited_market
from .memory import resting_orders

__all__ = ["build", "measure"]


def build(count: int, *, ledger: bool = False, command_ids: int = 0) -> Engine:
    """An engine holding *count* resting orders (see the module docstring)."""
    # Accounts hold more than a position limit allows: the default market without them.
    engine = Engine(parse_market(unlimited_market()) if ledger else default_market(),
                    ledger=ledger)
    out: list = []
    if ledger:
        for number in range(50):
            account = f"acc{number:03d}"
            engine.submit(Deposit(account=account, currency="CNY", amount="100000000000.00"), out)
            for symbol in ("CEA24", "CEA25"):
                engine.submit(IssueAllowances(account=account, instrument=symbol, qty=50_000_000),
                              out)
    submit = engine.submit
    first_id = count - command_ids
    for serial, order in enumerate(resting_orders(count)):
        if serial >= first_id:
            order = msgspec.structs.replace(order, command_id=f"c{serial}")
        submit(order, out)
        if len(out) >= 65_536:
            out.clear()
    return engine


def _timed(action: Callable, *args) -> tuple:
    """``(action(*args), seconds)``, the garbage collector paused."""
    gc.disable()
    try:
        started = time.perf_counter()
        result = action(*args)
        return result, time.perf_counter() - started
    finally:
        gc.enable()


def measure(count: int, *, ledger: bool = False, command_ids: int = 0, repeat: int = 3) -> dict:
    """Time both methods on one engine of *count* resting orders; return the figures."""
    gc.disable()
    engine = build(count, ledger=ledger, command_ids=command_ids)
    gc.enable()
    resting = sum(1 for symbol in engine.market.instruments for is_buy in (True, False)
                  for _ in engine.book(symbol).orders(is_buy))
    expected = engine.state_hash()
    rows: dict[str, dict] = {}
    methods: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]] = {
        "pickle": (lambda: pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
        "state": (lambda: encode_state(engine), lambda data: decode_state(data, check=False)),
        "state+check": (lambda: encode_state(engine), lambda data: decode_state(data))
    }
    runs: dict[str, dict] = {
        name: {
            "write": [],
            "read": [],
            "bytes": 0,
            "same": True
        }
        for name in methods
    }
    for _ in range(repeat):  # the methods take turns, round by round
        for name, (write, read) in methods.items():
            run = runs[name]
            data, seconds = _timed(write)
            run["write"].append(seconds)
            run["bytes"] = len(data)
            restored, seconds = _timed(read, data)
            run["read"].append(seconds)
            run["same"] = run["same"] and restored.state_hash(
            ) == expected  # type: ignore[attr-defined]
            del restored, data
            gc.collect()
    for name, run in runs.items():
        rows[name] = {
            "write_s": round(statistics.median(run["write"]), 3),
            "read_s": round(statistics.median(run["read"]), 3),
            "bytes": run["bytes"],
            "same_state_hash": run["same"]
        }
    return {
        "orders": count,
        "resting": resting,
        "ledger": ledger,
        "command_ids": command_ids,
        "repeat": repeat,
        "methods": rows
    }


def table(result: dict) -> str:
    """The figures as a small text table."""
    lines = [(f"engine with {result['resting']:,} resting orders (ledger "
              f"{'on' if result['ledger'] else 'off'}, {result['command_ids']:,} command "
              f"ids); median of {result['repeat']}"),
             f"{'method':<12} {'write s':>8} {'read s':>8} {'size MB':>9}  same state_hash"]
    for name, row in result["methods"].items():
        lines.append(f"{name:<12} {row['write_s']:>8.3f} {row['read_s']:>8.3f} "
                     f"{row['bytes'] / 1e6:>9.1f}  {'yes' if row['same_state_hash'] else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.snapshot",
                                     description="Engine snapshots: pickle against exchange.state.")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--ledger", action="store_true", help="fund accounts; orders hold")
    parser.add_argument("--command-ids", type=int, default=0,
                        help="the last K orders carry a command id")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args.orders, ledger=args.ledger, command_ids=args.command_ids,
                     repeat=args.repeat)
    print(json.dumps(result) if args.json else table(result))
    return 0 if all(row["same_state_hash"] for row in result["methods"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
