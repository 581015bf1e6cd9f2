"""Where a replay spends its time: ``run_replay`` under cProfile, in a fresh process.

``python -m benchmarks.hotspots FILE [--top N]`` prints the split between reading +
decoding and the engine, and the functions with the most time of their own. cProfile
inflates the cost of calls, so read the shares as a map of where time goes, not as
timings; the unprofiled numbers are the end-to-end benchmark's. The profile also holds
the final ``state_hash()`` (snapshot, sorting), which the replay's clock leaves out; its
cumulative time is reported so it can be set aside.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

from .stats import emit

__all__ = ["profile_replay"]


def _label(filename: str, line: int, name: str) -> str:
    path = Path(filename)
    for anchor in ("exchange", "gateway", "benchmarks", "sortedcontainers", "msgspec"):
        if anchor in path.parts:
            index = len(path.parts) - 1 - path.parts[::-1].index(anchor)
            return f"{'/'.join(path.parts[index:])}:{line}({name})"
    if filename == "~":
        return name  # a built-in: "<method 'append' of 'list' objects>"
    return f"{path.name}:{line}({name})"


def profile_replay(path: str | Path, *, top: int = 15) -> dict:
    """Profile ``gateway.tools.replay.run_replay`` on *path*; return phases and top functions."""
    from gateway.tools.replay import run_replay

    profiler = cProfile.Profile()
    profiler.enable()
    result = run_replay(path)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    functions = [{
        "function": _label(*key),
        "calls": nc,
        "own_s": round(tt, 3),
        "cum_s": round(ct, 3),
        "own_share": round(tt / total, 3)
    } for key, (_, nc, tt, ct, _) in rows[:top]]
    # run_replay hashes the final state after its clock stops; say how much that was.
    hashing = sum(ct for (filename, _, name), (_, _, _, ct, _) in stats.stats.items()
                  if name == "state_hash" and filename.endswith("engine.py"))
    return {
        "profiler": "cProfile",
        "messages": result.messages,
        "profiled_total_s": round(total, 3),
        "state_hash_s": round(hashing, 3),
        "profiled_elapsed_s": round(result.elapsed_s, 3),
        "profiled_read_decode_s": round(result.elapsed_s - result.engine_s, 3),
        "profiled_engine_s": round(result.engine_s, 3),
        "read_decode_share": round((result.elapsed_s - result.engine_s) / result.elapsed_s, 3),
        "top_own_time": functions
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotspots",
                                     description="Profile a replay and show where time goes.")
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="emit a result line for the suite")
    args = parser.parse_args(argv)
    report = profile_replay(args.file, top=args.top)
    if args.json:
        emit(report)
        return 0
    print(f"{report['messages']:,} messages under cProfile: {report['profiled_elapsed_s']} s, "
          f"read + decode {report['profiled_read_decode_s']} s "
          f"({report['read_decode_share']:.0%}), engine {report['profiled_engine_s']} s; "
          f"the final state_hash (outside elapsed) took {report['state_hash_s']} s")
    print(f"{'own s':>8} {'share':>6} {'cum s':>8} {'calls':>10}  function")
    for row in report["top_own_time"]:
        print(f"{row['own_s']:>8.3f} {row['own_share']:>6.1%} {row['cum_s']:>8.3f} "
              f"{row['calls']:>10,}  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
