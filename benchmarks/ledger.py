"""Ledger and journal: replay throughput with each on, against matching only (issue 3).

Three modes of ``carbonx replay FILE --json`` on one funded mixed file (a deposit and
an issue row per account first, so no order is refused and all three modes trade the
same): matching only, ``--ledger``, and ``--ledger --journal DIR`` (group commit of
4,096 commands, one frame, write and fsync each, a snapshot every 500,000 written by a
forked child). Each run is a fresh process; the modes alternate within a round, and
each round gives the ratios
ledger / matching and journal / matching, of the end-to-end ``msgs_per_s`` (read,
decode, process: the pinned "replay throughput") and of ``engine_msgs_per_s``.

Checks: the three modes make the same trades and volume; the ledger modes reject
nothing that matching only accepts; the journaled run ends in the ledger run's state
hash; and ``carbonx holdings DIR --json`` recovers every command of the last journal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .data import unlimited_market
from .endtoend import replay_command, run_once
from .stats import spread

__all__ = ["measure", "MODES"]

MODES = {"matching": (), "ledger": ("--ledger", ), "journal": ("--ledger", "--journal")}


def measure(path: str | Path, *, repeat: int = 3, stp: str | None = None) -> dict:
    """Run the three modes *repeat* rounds; return medians, per-round ratios and checks.

    *stp*, when given, is passed as ``--stp`` to every replay (the contenders table
    uses ``none``, so these runs trade exactly like the matching-only contenders).
    """
    Path(path).read_bytes()  # into the page cache
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="carbonx-bench-journal-"))
    journal = scratch / "journal"
    recovery: dict | None = None
    try:
        market = scratch / "unlimited.toml"
        market.write_text(unlimited_market())
        for _ in range(repeat):
            for mode, flags in MODES.items():
                shutil.rmtree(journal, ignore_errors=True)
                extra = [*flags, str(journal)] if mode == "journal" else list(flags)
                extra += ["--market", str(market)]
                if stp is not None:
                    extra += ["--stp", stp]
                runs[mode].append(run_once(path, *extra))
        journal_bytes = sum(p.stat().st_size for p in journal.iterdir())
        started = time.perf_counter()
        holdings = [*replay_command()[:-1], "holdings"]  # same entry point, other command
        done = subprocess.run([*holdings, str(journal), "--json"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            failures.append(f"carbonx holdings failed: {done.stderr.strip()}")
        else:
            recovered = json.loads(done.stdout)
            recovery = {
                "seq": recovered["seq"],
                "wall_s": round(wall, 3),
                "journal_bytes": journal_bytes,
                "snapshots": sorted(p.name for p in journal.glob("snapshot-*"))
            }
            if recovered["seq"] != runs["journal"][-1]["messages"]:
                failures.append(f"recovery found {recovered['seq']} commands, the journal "
                                f"run had {runs['journal'][-1]['messages']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    first = runs["matching"][0]
    for mode, mode_runs in runs.items():
        for number, run in enumerate(mode_runs, 1):
            if (run["trades"], run["volume"]) != (first["trades"], first["volume"]):
                failures.append(f"{mode} run {number}: trades/volume differ from matching only")
            # Funded: the ledger may refuse nothing that matching alone accepted (with
            # stp none a cancel can name an order that has already traded away: those
            # are rejected the same in every mode).
            if mode != "matching" and run.get("rejects") != first.get("rejects"):
                failures.append(f"{mode} run {number}: rejections {run.get('rejects')} differ "
                                f"from matching only's {first.get('rejects')} in a funded file")
    ledger_hashes = {r["state_hash"] for r in runs["ledger"]}
    journal_hashes = {r["state_hash"] for r in runs["journal"]}
    if len(ledger_hashes) != 1 or ledger_hashes != journal_hashes:
        failures.append("the journaled replay ends in a different state from the ledger replay")

    def ratios(mode: str, key: str) -> dict:
        return spread([r[key] / m[key] for r, m in zip(runs[mode], runs["matching"])], 3)

    return {
        "messages": first["messages"],
        "trades": first["trades"],
        "volume": first["volume"],
        "modes": {
            mode: {
                "msgs_per_s": spread([r["msgs_per_s"] for r in mode_runs], 0),
                "engine_msgs_per_s": spread([r["engine_msgs_per_s"] for r in mode_runs], 0),
                "elapsed_s": spread([r["elapsed_s"] for r in mode_runs]),
                "state_hash": mode_runs[0].get("state_hash")
            }
            for mode, mode_runs in runs.items()
        },
        "ratios": {
            "ledger_over_matching": ratios("ledger", "msgs_per_s"),
            "journal_over_matching": ratios("journal", "msgs_per_s"),
            "ledger_over_matching_engine": ratios("ledger", "engine_msgs_per_s"),
            "journal_over_matching_engine": ratios("journal", "engine_msgs_per_s")
        },
        "recovery": recovery,
        "runs": runs,
        "failures": failures
    }
