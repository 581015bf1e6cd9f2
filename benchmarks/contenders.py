"""Every contender on the identical stream, each in its own fresh process.

``python -m benchmarks.contenders NAME FILE`` is the worker: it decodes the order file
(``read_order_file(FILE, default_stp="none")``, untimed), lets the contender's adapter
(``benchmarks.peers``) turn the commands into its own input (untimed), then times
``--repeat`` runs, each on a fresh instance with the garbage collector paused (as
``carbonx replay`` does). Every run must equal the first (trade count, volume, and the
state hash or the ordered trade list); the ordered trade list of one run is written to
``--trades-out`` for the parent to compare across contenders. The engine contenders run
once more, untimed, to collect their trades, so their timed runs look exactly like a
replay (events made, then dropped in chunks).

``measure`` is the parent side: one worker process per contender, in turn, then the
agreement check: every contender whose semantics match (nothing order-changing left
out) must produce the engine's trade list exactly, in order; ``naive`` runs on a prefix
and must produce the engine's trades up to that prefix. A fast wrong answer cannot win.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from exchange.orderfile import read_order_file

from .peers import ADAPTERS, EngineAdapter, make, package_version
from .stats import emit, spread

__all__ = ["measure", "work", "ORDER_KINDS", "compare_trades", "first_difference"]

# Kinds whose absence changes what trades; leaving out only ledger rows keeps a stream
# comparable trade for trade.
ORDER_KINDS = ("limit", "ioc", "fok", "market", "stop", "stop_limit", "amend", "cancel",
               "mass_cancel", "eod", "limit with display_qty or post_only", "off-tick price")


def first_difference(left: list, right: list) -> int | None:
    """Return the first index where *left* and *right* differ (length included), or ``None``.

    >>> first_difference([1, 2, 3], [1, 2, 3]), first_difference([1, 2], [1, 5]), first_difference([1], [1, 2])
    (None, 1, 1)
    """
    if left == right:
        return None
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return index
    return min(len(left), len(right))


def _lines(trades: list) -> list[str]:
    return [f"{a},{r},{p},{q}" for a, r, p, q in trades]


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _timed(adapter, prepared) -> tuple[float, object]:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        state = adapter.run(prepared)
        return time.perf_counter() - started, state
    finally:
        gc.enable()


def work(name: str, path: str | Path, *, repeat: int = 3, prefix: int | None = None,
         marks: tuple[int, ...] = (), trades_out: str | Path | None = None) -> dict:
    """Time contender *name* on the file at *path*; return its record (see module doc)."""
    gc.disable()
    commands = read_order_file(path, default_stp="none")
    gc.enable()
    if prefix is not None:
        commands = commands[:prefix]
    adapter = make(name)
    prepared = adapter.prepare(commands)
    failures: list[str] = []
    is_engine = isinstance(adapter, EngineAdapter)
    counts_at: dict = {}
    lines: list[str] | None = None
    if is_engine:
        trades, counts_at = adapter.verify(prepared, marks)
        lines = _lines(trades)
        del trades
    runs: list[float] = []
    first: dict | None = None
    for run_no in range(1, repeat + 1):
        seconds, state = _timed(adapter, prepared)
        runs.append(seconds)
        if is_engine:
            facts = adapter.facts(state)
        else:
            run_lines = _lines(adapter.trades(state))
            facts = {"trades": len(run_lines), "digest": _digest(run_lines),
                     "volume": sum(int(line.rsplit(",", 1)[1]) for line in run_lines)}
            if lines is None:
                lines = run_lines
            del run_lines
        del state
        if first is None:
            first = facts
        elif facts != first:
            failures.append(f"{name} run {run_no}: result differs from run 1 ({facts} != {first})")
    assert first is not None and lines is not None
    if is_engine and first["trades"] != len(lines):
        failures.append(f"{name}: the timed runs made {first['trades']} trades, the "
                        f"checked run {len(lines)}")
    if trades_out is not None:
        Path(trades_out).write_text("\n".join(lines) + ("\n" if lines else ""))
    messages = adapter.sent
    record = {
        "name": name, "label": adapter.label, "group": adapter.group,
        "version": adapter.version, "note": adapter.note,
        "messages_sent": messages, "left_out": adapter.left_out, "emulated": adapter.emulated,
        "runs_s": [round(s, 6) for s in runs], "seconds": spread(runs),
        "msgs_per_s": spread([messages / s for s in runs], 0),
        "trades": len(lines), "volume": first["volume"], "trades_digest": _digest(lines),
        "prefix": prefix, "trades_at": {str(k): v for k, v in counts_at.items()},
        "failures": failures,
    }
    if is_engine:
        record["state_hash"] = first["state_hash"]
        record["rejected"] = first["rejected"]
    if name == "naive":
        # Like for like: the fast book on the same prefix, in the same process.
        fast = EngineAdapter()
        fast_runs = [_timed(fast, prepared)[0] for _ in range(repeat)]
        record["engine_same_prefix_msgs_per_s"] = spread([messages / s for s in fast_runs], 0)
    return record


def compare_trades(name: str, record: dict, engine: dict, folder: Path) -> dict:
    """Return the agreement of contender *record* with the engine's trades.

    ``{"agrees": True | False | None, "agreement": text}``; ``None`` when the contender
    was not sent every order-changing command, so its trades cannot be expected equal.
    """
    skipped = sorted(k for k in record["left_out"] if k in ORDER_KINDS)
    if skipped:
        return {"agrees": None,
                "agreement": f"not compared: {', '.join(skipped)} left out"}
    ours = (folder / f"{name}.trades").read_text().splitlines()
    theirs = (folder / "engine.trades").read_text().splitlines()
    scope = "ordered trade list"
    if record.get("prefix") is not None:
        cut = engine["trades_at"].get(str(record["prefix"]))
        if cut is None:
            return {"agrees": False, "agreement": "the engine did not mark the prefix"}
        theirs = theirs[:cut]
        scope = f"ordered trade list of the first {record['prefix']:,} messages"
    index = first_difference(ours, theirs)
    if index is None:
        return {"agrees": bool(ours), "agreement": f"identical {scope} ({len(ours):,} trades)"
                if ours else "no trades at all: proves nothing"}
    return {"agrees": False,
            "agreement": f"{scope} differs at trade #{index}: "
                         f"{ours[index] if index < len(ours) else 'none'} vs engine "
                         f"{theirs[index] if index < len(theirs) else 'none'}"}


def measure(path: str | Path, *, names: tuple[str, ...] = tuple(ADAPTERS), repeat: int = 5,
            peer_repeat: int = 3, naive_prefix: int = 10_000, worker=None, say=None) -> dict:
    """Run each contender in *names* in its own process on *path*; return the section.

    *worker* runs ``python -m benchmarks.<module> ARGS`` and returns its emitted record.
    """
    failures: list[str] = []
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="carbonx-contenders-") as scratch:
        folder = Path(scratch)
        for name in names:
            distribution = getattr(ADAPTERS[name], "distribution", "")
            if distribution and package_version(distribution) is None:
                skipped[name] = f"{distribution} is not installed: pip install -e '.[bench]'"
                if say:
                    say(f"      {name}: skipped, {skipped[name]}")
                continue
            runs = peer_repeat if ADAPTERS[name].group == "peer" or name == "naive" else repeat
            args = [name, str(path), "--repeat", str(runs),
                    "--trades-out", str(folder / f"{name}.trades")]
            if name == "naive":
                args += ["--prefix", str(naive_prefix)]
            if name == "engine" and "naive" in names:
                args += ["--marks", str(naive_prefix)]
            if say:
                say(f"      {name}: {runs} runs")
            try:
                record = worker("contenders", *args)
            except (RuntimeError, ValueError) as exc:
                failures.append(f"contender {name} failed: {exc}")
                continue
            failures += record.pop("failures")
            rows.append(record)
        engine = next((r for r in rows if r["name"] == "engine"), None)
        for record in rows:
            if engine is None:
                record.update(agrees=None, agreement="no engine run to compare with")
            elif record is engine:
                record.update(agrees=True, agreement="the reference")
            else:
                record.update(compare_trades(record["name"], record, engine, folder))
                if record["agrees"] is False:
                    failures.append(f"{record['name']}: {record['agreement']}")
    if engine is not None:
        base = engine["msgs_per_s"]["median"]
        for record in rows:
            record["ratio_to_engine"] = round(record["msgs_per_s"]["median"] / base, 4)
    return {"messages": engine["messages_sent"] if engine else None, "rows": rows,
            "skipped": skipped, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contenders",
                                     description="Time one contender on one order file.")
    parser.add_argument("name", choices=tuple(ADAPTERS))
    parser.add_argument("file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefix", type=int, help="only the first N messages")
    parser.add_argument("--marks", default="", help="N,N: report the trade count after N messages")
    parser.add_argument("--trades-out", help="write the ordered trade list here")
    args = parser.parse_args(argv)
    marks = tuple(int(m) for m in args.marks.split(",") if m)
    emit(work(args.name, args.file, repeat=args.repeat, prefix=args.prefix, marks=marks,
              trades_out=args.trades_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
