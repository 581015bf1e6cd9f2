"""The README's results block: headline table, targets and the throughput chart, between
two marker comments, written by ``python -m benchmarks.report RESULT --readme README.md``."""

from __future__ import annotations

from pathlib import Path

from .markdown import headline_table, targets_table
from .result import _commit, _section
from .text import _num, _when

README_BEGIN = (
    "<!-- benchmark-results:begin (python -m benchmarks.report RESULT --readme README.md) -->")
README_END = "<!-- benchmark-results:end -->"


def readme_block(result: dict,
                 chart: str = "benchmarks/results/latest-report/throughput.png") -> str:
    """Return the README's results block for *result*: headline table, targets, a chart."""
    machine = _section(result, "machine") or {}
    settings = _section(result, "settings") or {}
    section = _section(result, "contenders") or {}
    lines = [
        README_BEGIN,
        f"Latest {result.get('mode', '?')} run: {_when(result.get('created_utc'))}, commit "
        f"{(_commit(result) or '?')[:12]}; {machine.get('implementation', 'Python')} "
        f"{machine.get('python', '?')}, {machine.get('cpu', '?')}, "
        f"{machine.get('cpu_count', '?')} CPUs; {_num(settings.get('messages'))} "
        f"messages of the funded mixed profile ({section.get('file', '?')}), each "
        f"contender in its own process, median [min .. max].", "",
        headline_table(result), "",
        targets_table(result), "", f"![Throughput by contender]({chart})", README_END
    ]
    return "\n".join(lines)


def update_readme(path: str | Path, result: dict) -> bool:
    """Replace the results block of the README at *path*; return whether it changed.

    Raises ``ValueError`` when the README has no block markers.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {README_BEGIN!r} ... {README_END!r} block")
    updated = text[:start] + readme_block(result) + text[end + len(README_END):]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text
