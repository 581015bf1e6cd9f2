"""The registry's and the clearing house's work, timed: a whole compliance year for many
entities, and the daily settlement of many futures positions.

``python -m benchmarks.registry [--entities N] [--repeat R]``: generates the example
scenario of ``carbonx comply`` for N covered entities (``gateway.tools.comply.example_scenario``,
seed 2024) and runs its full cycle through the engine R times in this process:
pre-allocation, December trades, verified emissions, the allocation plan of every
sector, true-up, restatements, surrender and the deadline. Reports the seconds (median,
min, max), the commands per second, and the cycle's state hash, which must be the same
on every run.

``--positions P``: P accounts each hold one lot of ``CEA-DEC27`` (half long, half short,
from P/2 trades), then R trading days each end with ``eod``: one trade in the closing
window moves the price, and the eod settles every position (settlement price, variation
margin for each, margin top-ups and calls). Reports the eod's seconds and positions per
second, and checks that each day's variation margin sums to zero.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from exchange import Engine, default_market
from exchange.calendar import DAY_NS, days_from_civil
from exchange.commands import Deposit, EndOfDay, PlaceOrder
from exchange.events import VariationMargin
from gateway.tools import comply

from .stats import emit, spread

__all__ = ["measure_compliance", "measure_settlement"]
CONTRACT = "CEA-DEC27"


def measure_compliance(entities: int, repeat: int = 3) -> dict:
    """Time the full compliance cycle of the example scenario with *entities*."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.toml"
        path.write_text(comply.example_scenario(entities=entities), encoding="utf-8")
        data = comply.load_scenario(path)
        seconds, hashes, report = [], set(), None
        for _ in range(repeat):
            started = time.perf_counter()
            report = comply.run_cycle(data)
            seconds.append(time.perf_counter() - started)
            hashes.add(report["stats"]["state_hash"])
    stats = report["stats"]
    took = spread(seconds, 3)
    return {
        "entities": entities,
        "seconds": took,
        "commands": stats["commands"],
        "rejected": stats["rejected"],
        "commands_per_s": round(stats["commands"] / took["median"]),
        "short": sum(s["short"] for s in report["sectors"]),
        "state_hash": hashes.pop() if len(hashes) == 1 else None
    }


def measure_settlement(positions: int, repeat: int = 3) -> dict:
    """Time the end-of-day settlement of *positions* open futures positions."""
    engine = Engine(default_market(), ledger=True)
    day = days_from_civil(2027, 1, 4) * DAY_NS  # a Monday
    window = 6 * 3600 * 10**9 + 50 * 60 * 10**9  # 06:50 UTC = 14:50 Beijing
    pairs = positions // 2
    for n in range(pairs):
        for side, name in (("sell", f"s{n}"), ("buy", f"b{n}")):
            engine.execute(Deposit(account=name, currency="CNY", amount="100000.00"))
            engine.execute(
                PlaceOrder(order_id=f"{name}-0", account=name, instrument=CONTRACT, side=side,
                           price="80.00", qty=1, ts=day + window))
    seconds, events_per_day = [], 0
    for number in range(repeat + 1):
        if number:  # a trade in the window moves the settlement price
            price = f"{80 + number}.00"
            for side, name in (("sell", "s0"), ("buy", "b0")):
                engine.execute(
                    PlaceOrder(order_id=f"{name}-{number}", account=name, instrument=CONTRACT,
                               side=side, price=price, qty=1, ts=day + window))
        started = time.perf_counter()
        events = engine.execute(EndOfDay(ts=day + 8 * 3600 * 10**9))
        took = time.perf_counter() - started
        margins = [e for e in events if type(e) is VariationMargin]
        if sum(e.amount for e in margins) != 0:
            raise AssertionError("the day's variation margin does not sum to zero")
        if number:  # day one opens the positions; the timed days mark them
            seconds.append(took)
            events_per_day = len(events)
        day += DAY_NS
    engine.check()
    took = spread(seconds, 3)
    held = sum(1 for p in engine.ledger.clearing.positions[CONTRACT].values() if p.net)
    return {
        "positions": held,
        "seconds": took,
        "positions_per_s": round(held / took["median"]),
        "events_per_eod": events_per_day
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registry",
                                     description="Time the registry's compliance year.")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.entities < 1 or args.repeat < 1 or args.positions < 2:
        parser.error("--entities and --repeat must be at least 1, --positions at least 2")
    emit({
        "compliance": measure_compliance(args.entities, args.repeat),
        "settlement": measure_settlement(args.positions, args.repeat)
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
