"""End to end: ``carbonx replay FILE --json``, each run a fresh process.

The numbers are the replay's own pinned summary (docs/cli.md): ``elapsed_s`` is
reading, decoding and matching (no interpreter start-up, no output), ``engine_s`` the
engine alone. The wall time of the whole process is kept beside them for context.
Every run must report the same result (trades, volume, state hash), and
``accepted + rejected`` must equal ``messages``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .stats import shown_path, spread

__all__ = ["PINNED_KEYS", "replay_command", "run_once", "measure"]

PINNED_KEYS = ("messages", "accepted", "rejected", "trades", "volume", "elapsed_s", "msgs_per_s",
               "engine_s", "engine_msgs_per_s")


def replay_command() -> list[str]:
    """Return the ``carbonx replay`` command of this interpreter's environment.

    The ``carbonx`` console script beside ``sys.executable`` when there is one, else
    ``python -m gateway.cli`` (the same entry point).
    """
    script = Path(sys.executable).parent / "carbonx"
    if script.is_file():
        return [str(script), "replay"]
    return [sys.executable, "-m", "gateway.cli", "replay"]


def run_once(path: str | Path, *extra: str) -> dict:
    """Run one replay of *path* in a fresh process; return its summary plus ``wall_s``."""
    command = [*replay_command(), str(path), "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall_s"] = round(wall, 6)
    return summary


def measure(path: str | Path, *, repeat: int = 3) -> dict:
    """Replay *path* *repeat* times, each in a fresh process; return medians and raw runs."""
    Path(path).read_bytes()  # into the page cache, so the first run reads no disk
    runs = [run_once(path) for _ in range(repeat)]
    failures: list[str] = []
    missing = [k for k in PINNED_KEYS if any(k not in run for run in runs)]
    if missing:
        failures.append(f"end to end: summary lacks pinned key(s) {', '.join(missing)}")
        return {"command": replay_command(), "runs": runs, "failures": failures}
    first = runs[0]
    for number, run in enumerate(runs, 1):
        if run["accepted"] + run["rejected"] != run["messages"]:
            failures.append(f"end to end run {number}: accepted + rejected != messages")
        for key in ("messages", "trades", "volume", "state_hash"):
            if run.get(key) != first.get(key):
                failures.append(f"end to end run {number}: {key} differs from run 1")
    command = replay_command()
    return {
        "command": [shown_path(command[0]), *command[1:], "FILE", "--json"],
        "messages": first["messages"],
        "trades": first["trades"],
        "volume": first["volume"],
        "state_hash": first.get("state_hash"),
        "msgs_per_s": spread([r["msgs_per_s"] for r in runs], 0),
        "elapsed_s": spread([r["elapsed_s"] for r in runs]),
        "engine_msgs_per_s": spread([r["engine_msgs_per_s"] for r in runs], 0),
        "engine_s": spread([r["engine_s"] for r in runs]),
        "read_decode_s": spread([r["elapsed_s"] - r["engine_s"] for r in runs]),
        "wall_s": spread([r["wall_s"] for r in runs]),
        "runs": runs,
        "failures": failures
    }
