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

Every contender's process runs its stream once untimed before the clock starts (the
engine contenders to collect their trades, the others as a warm-up whose trade list
every timed run must equal), so no contender's timed runs include a first run.

``measure`` is the parent side. The contenders take turns in rounds: each round starts
one fresh worker process per contender, in the same order, so a contender's runs and
the engine's in the same round are at most a minute or two apart. This machine's speed
drifts by more than the gaps being measured over minutes (a 2-core VM beside others),
so each contender's ratio to the engine is the median of its per-round ratios, which
that drift cannot bias. Then the agreement check: every contender whose semantics match
(nothing order-changing left out) must produce the engine's trade list exactly, in
order; ``naive`` runs on a prefix and must produce the engine's trades up to that
prefix. A fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
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

    >>> first_difference([1, 2, 3], [1, 2, 3]), first_difference([1, 2], [1, 5])
    (None, 1)
    >>> first_difference([1], [1, 2])
    1
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


def _line_facts(lines: list[str]) -> dict:
    return {
        "trades": len(lines),
        "digest": _digest(lines),
        "volume": sum(int(line.rsplit(",", 1)[1]) for line in lines)
    }


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
    else:
        # The untimed run of the others: their trade list, and a warm-up as the
        # engine's checked run is for the engine (the timed runs are alike for all).
        _, state = _timed(adapter, prepared)
        lines = _lines(adapter.trades(state))
        del state
    runs: list[float] = []
    first: dict | None = None if is_engine else _line_facts(lines)
    for run_no in range(1, repeat + 1):
        seconds, state = _timed(adapter, prepared)
        runs.append(seconds)
        if is_engine:
            facts = adapter.facts(state)
        else:
            facts = _line_facts(_lines(adapter.trades(state)))
        del state
        if first is None:
            first = facts
        elif facts != first:
            failures.append(
                f"{name} run {run_no}: result differs from the first ({facts} != {first})")
    assert first is not None and lines is not None
    if is_engine and first["trades"] != len(lines):
        failures.append(
            f"{name}: the timed runs made {first['trades']} trades, the checked run {len(lines)}")
    if trades_out is not None:
        Path(trades_out).write_text("\n".join(lines) + ("\n" if lines else ""))
    messages = adapter.sent
    record = {
        "name": name,
        "label": adapter.label,
        "group": adapter.group,
        "version": adapter.version,
        "note": adapter.note,
        "messages_sent": messages,
        "left_out": adapter.left_out,
        "emulated": adapter.emulated,
        "runs_s": [round(s, 6) for s in runs],
        "seconds": spread(runs),
        "msgs_per_s": spread([messages / s for s in runs], 0),
        "trades": len(lines),
        "volume": first["volume"],
        "trades_digest": _digest(lines),
        "prefix": prefix,
        "trades_at": {
            str(k): v
            for k, v in counts_at.items()
        },
        "failures": failures
    }
    if is_engine:
        record["state_hash"] = first["state_hash"]
        record["rejected"] = first["rejected"]
    if name == "naive":
        # Like for like: the fast book on the same prefix, in the same process.
        fast = EngineAdapter()
        fast_runs = [_timed(fast, prepared)[0] for _ in range(repeat)]
        record["engine_same_prefix_msgs_per_s"] = spread([messages / s for s in fast_runs], 0)
    if name == "plain":
        # The engine in the plain matcher's own process, on the same commands, after a
        # warm-up run as every contender has: the same-process ratio issue 2 asks for.
        engine = EngineAdapter()
        engine_input = engine.prepare(commands)
        _timed(engine, engine_input)
        engine_runs = [_timed(engine, engine_input)[0] for _ in range(repeat)]
        record["engine_same_process_msgs_per_s"] = spread([engine.sent / s for s in engine_runs], 0)
    return record


def compare_trades(name: str, record: dict, engine: dict, folder: Path) -> dict:
    """Return the agreement of contender *record* with the engine's trades.

    ``{"agrees": True | False | None, "agreement": text}``; ``None`` when the contender
    was not sent every order-changing command, so its trades cannot be expected equal.
    """
    skipped = sorted(k for k in record["left_out"] if k in ORDER_KINDS)
    if skipped:
        return {"agrees": None, "agreement": f"not compared: {', '.join(skipped)} left out"}
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
        return {
            "agrees": bool(ours),
            "agreement": f"identical {scope} ({len(ours):,} trades)"
            if ours else "no trades at all: proves nothing"
        }
    return {
        "agrees": False,
        "agreement": f"{scope} differs at trade #{index}: "
        f"{ours[index] if index < len(ours) else 'none'} vs engine "
        f"{theirs[index] if index < len(theirs) else 'none'}"
    }


def measure(path: str | Path, *, names: tuple[str, ...] = tuple(ADAPTERS), repeat: int = 5,
            peer_repeat: int = 3, naive_prefix: int = 10_000, worker=None, say=None) -> dict:
    """Run the contenders in *names* on *path* in rounds; return the section.

    *repeat* rounds; the peers and ``naive`` take part in the first *peer_repeat* of
    them. Each round starts one worker process per contender, in turn, for one timed
    run. *worker* runs ``python -m benchmarks.<module> ARGS`` and returns its emitted
    record.
    """
    failures: list[str] = []
    skipped: dict[str, str] = {}
    present = []
    for name in names:
        distribution = getattr(ADAPTERS[name], "distribution", "")
        if distribution and package_version(distribution) is None:
            skipped[name] = f"{distribution} is not installed: pip install -e '.[bench]'"
            if say:
                say(f"      {name}: skipped, {skipped[name]}")
        else:
            present.append(name)
    rounds = {
        name: peer_repeat if ADAPTERS[name].group == "peer" or name == "naive" else repeat
        for name in present
    }
    records: dict[str, list[dict]] = {name: [] for name in present}
    with tempfile.TemporaryDirectory(prefix="carbonx-contenders-") as scratch:
        folder = Path(scratch)
        if say:
            say(f"      {max(rounds.values(), default=0)} rounds of " +
                ", ".join(f"{name} ({count})" for name, count in rounds.items()))
        for number in range(max(rounds.values(), default=0)):
            for name in present:
                if number >= rounds[name] or (records[name] is None):
                    continue
                args = [name, str(path), "--repeat", "1"]
                if name == "naive":
                    args += ["--prefix", str(naive_prefix)]
                if name == "engine" and "naive" in present:
                    args += ["--marks", str(naive_prefix)]
                args += ["--trades-out", str(folder / f"{name}.{number}.trades")]
                try:
                    record = worker("contenders", *args)
                except (RuntimeError, ValueError) as exc:
                    failures.append(f"contender {name} failed: {exc}")
                    records[name] = None  # no more rounds of a contender that failed
                    continue
                records[name].append(record)
        rows = []
        for name in present:
            if records[name]:
                row = _merged(name, records[name], folder, failures)
                rows.append(row)
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
        for record in rows:
            paired = [
                theirs / ours for theirs, ours in zip(record.pop("round_msgs_per_s"),
                                                      engine["round_msgs_per_s_kept"])
            ]
            record["ratio_to_engine_rounds"] = [round(r, 4) for r in paired]
            record["ratio_to_engine"] = round(statistics.median(paired), 4)
        del engine["round_msgs_per_s_kept"]
    for record in rows:
        record.pop("round_msgs_per_s", None)
    return {
        "messages": engine["messages_sent"] if engine else None,
        "rows": rows,
        "rounds": max(rounds.values(), default=0),
        "skipped": skipped,
        "failures": failures
    }


def _merged(name: str, records: list[dict], folder: Path, failures: list[str]) -> dict:
    """Return one row from a contender's per-round records: the first round's, with the
    runs of every round; each round must give the same result as the first."""
    row = dict(records[0])
    failures += row.pop("failures")
    keys = ("trades", "volume", "trades_digest", "state_hash", "rejected")
    for number, record in enumerate(records[1:], 2):
        failures += record["failures"]
        if any(record.get(k) != row.get(k) for k in keys):
            failures.append(f"{name} round {number}: result differs from round 1")
    (folder / f"{name}.trades").write_text((folder / f"{name}.0.trades").read_text())
    runs = [seconds for record in records for seconds in record["runs_s"]]
    messages = row["messages_sent"]
    row.update(runs_s=runs, seconds=spread(runs), rounds=len(records),
               msgs_per_s=spread([messages / s for s in runs], 0))
    # Each round's speed, for the ratios paired by round (see the module docstring).
    per_round = [messages / statistics.median(r["runs_s"]) for r in records]
    row["round_msgs_per_s"] = per_round
    if name == "engine":
        row["round_msgs_per_s_kept"] = list(per_round)
    if name == "naive":
        row["engine_same_prefix_msgs_per_s"] = spread(
            [r["engine_same_prefix_msgs_per_s"]["median"] for r in records], 0)
    if name == "plain":
        row["engine_same_process_msgs_per_s"] = spread(
            [r["engine_same_process_msgs_per_s"]["median"] for r in records], 0)
        ratios = [
            plain / r["engine_same_process_msgs_per_s"]["median"]
            for plain, r in zip(per_round, records)
        ]
        row["ratio_to_engine_same_process"] = round(statistics.median(ratios), 4)
    return row


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
    emit(
        work(args.name, args.file, repeat=args.repeat, prefix=args.prefix, marks=marks,
             trades_out=args.trades_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
