"""Small helpers shared by the benchmark workers: summaries, worker output, RSS."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

__all__ = ["spread", "emit", "rss_bytes", "shown_path"]

RESULT_PREFIX = "BENCHMARK-RESULT "


def spread(values: list[float], digits: int = 6) -> dict:
    """Return ``{"median", "min", "max", "n"}`` of *values*, rounded to *digits* (0: int).

    >>> spread([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """

    def fix(value: float) -> float:
        return round(value, digits) if digits else round(value)

    return {
        "median": fix(statistics.median(values)),
        "min": fix(min(values)),
        "max": fix(max(values)),
        "n": len(values)
    }


def emit(result: dict) -> None:
    """Print a worker's result as one tagged JSON line on stdout for the parent to find."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_worker_output(stdout: str) -> dict:
    """Return the result a worker printed with ``emit``; raise ``ValueError`` if none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ValueError("the worker printed no result line")


def rss_bytes() -> int | None:
    """Return this process's resident set size in bytes (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def shown_path(path: str) -> str:
    """*path* as a result file may record it: relative to the repository when inside it
    (symbolic links not followed, so a venv's python stays ``.venv/bin/python``), else
    only its name; never a machine's own directories."""
    repo = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).absolute().relative_to(repo))
    except ValueError:
        return Path(path).name
