"""The registry's yearly work, timed: a whole compliance year for many entities.

``python -m benchmarks.registry [--entities N] [--repeat R]``: generates the example
scenario of ``carbonx comply`` for N covered entities (``gateway.comply.example_scenario``,
seed 2024) and runs its full cycle through the engine R times in this process:
pre-allocation, December trades, verified emissions, the allocation plan of every
sector, true-up, restatements, surrender and the deadline. Reports the seconds (median,
min, max), the commands per second, and the cycle's state hash, which must be the same
on every run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from gateway import comply

from .stats import emit, spread

__all__ = ["measure_compliance"]


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
    return {"entities": entities, "seconds": took,
            "commands": stats["commands"], "rejected": stats["rejected"],
            "commands_per_s": round(stats["commands"] / took["median"]),
            "short": sum(s["short"] for s in report["sectors"]),
            "state_hash": hashes.pop() if len(hashes) == 1 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registry",
                                     description="Time the registry's compliance year.")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.entities < 1 or args.repeat < 1:
        parser.error("--entities and --repeat must be at least 1")
    emit({"compliance": measure_compliance(args.entities, args.repeat)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
