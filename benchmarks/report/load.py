"""Loading a result file: JSON that must be a carbonx benchmark result, or a one-line
reason why it is not (``_BadResult``)."""

from __future__ import annotations

import json
from pathlib import Path

SECTIONS = ("settings", "machine", "contenders", "throughput", "latency", "scaling", "memory",
            "end_to_end", "ledger", "verdict", "targets")
MEASURED = ("contenders", "throughput", "latency", "scaling", "memory", "end_to_end", "ledger")


class _BadResult(Exception):
    """A result file that cannot be read as a benchmark result."""


def _load_result(path: str | Path) -> dict:
    """Return the benchmark result in the JSON file *path*; raise ``_BadResult`` if it is
    not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _BadResult(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadResult(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadResult(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(result, dict):
        raise _BadResult(
            f"{path}: not a benchmark result (a JSON {type(result).__name__}, expected an object)")
    if not any(key in result for key in MEASURED):
        raise _BadResult(
            f"{path}: not a carbonx benchmark result (none of the sections {', '.join(MEASURED)})")
    wrong = [
        key for key in SECTIONS
        if result.get(key) is not None and not isinstance(result[key], dict)
    ]
    if wrong:
        raise _BadResult(f"{path}: section(s) {', '.join(wrong)} should be objects or null")
    return result
