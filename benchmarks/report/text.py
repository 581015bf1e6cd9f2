"""Formatting for the report and the comparison: numbers, spreads, ratios, dates and
Markdown table cells."""

from __future__ import annotations

from .result import _median, _number


def _num(value, digits: int | None = None) -> str:
    """Format a number with thousands separators; ``-`` when it is absent.

    >>> _num(1234567), _num(290239.4), _num(316.94), _num(0.54261), _num(None), _num(2.5, 2)
    ('1,234,567', '290,239', '316.9', '0.543', '-', '2.50')
    """
    number = _number(value)
    if number is None:
        return "-"
    if digits is not None:
        return f"{number:,.{digits}f}"
    if isinstance(number, int):
        return f"{number:,}"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if abs(number) >= 100:
        return f"{number:,.1f}"
    return f"{number:.3g}" if abs(number) >= 1 else f"{number:.3f}"


def _us(nanoseconds) -> str:
    """Format nanoseconds as microseconds with 2 decimals: ``_us(12345) == '12.35'``."""
    number = _number(nanoseconds)
    return "-" if number is None else f"{number / 1000:,.2f}"


def _spread(spread, digits: int = 0) -> str:
    """Format ``{"median", "min", "max"}`` as ``median [min .. max]``."""
    if not isinstance(spread, dict) or _median(spread) is None:
        return "-"
    parts = [_num(spread.get(k), digits) for k in ("median", "min", "max")]
    return f"{parts[0]} [{parts[1]} .. {parts[2]}]" if parts[1] != "-" else parts[0]


def _ratio(value, digits: int = 3) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.{digits}f}x"


def _cell(value) -> str:
    """Return *value* as text safe inside a Markdown table cell."""
    text = "-" if value is None or value == "" else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _row(cells) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list], align: str) -> list[str]:
    """Return the lines of a Markdown table; *align* has one ``l`` or ``r`` per column."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return [_row(header), rule, *(_row(r) for r in rows)]


def _agrees(row: dict) -> str:
    agrees, how = row.get("agrees"), row.get("agreement")
    word = {True: "yes", False: "**NO**"}.get(agrees, "n/a")
    return f"{word}: {how}" if how else word


def _left_out(row: dict) -> str:
    parts = []
    if _number(row.get("prefix")) is not None:
        parts.append(f"first {_num(row['prefix'])} messages only")
    left = row.get("left_out")
    if isinstance(left, dict) and left:
        parts.append("left out: " + ", ".join(f"{k} {_num(v)}" for k, v in left.items()))
    emulated = row.get("emulated")
    if isinstance(emulated, dict) and emulated:
        parts.append("emulated: " + ", ".join(f"{k} ({v})" for k, v in emulated.items()))
    return "; ".join(parts) or "-"


def _runs(rows: list[dict], section: dict) -> str:
    """Say how many runs each median is of: ``5 runs`` or ``5 runs (engine), 3 (peer)``."""
    by_count: dict[str, list[str]] = {}
    for row in rows:
        spread = row.get("msgs_per_s")
        count = _number(spread.get("n")) if isinstance(spread, dict) else None
        by_count.setdefault(_num(count), []).append(str(row.get("name")))
    by_count.pop("-", None)
    if not by_count:
        return f"{_num(section.get('repeat'))} runs"
    if len(by_count) == 1:
        return f"{next(iter(by_count))} runs"
    return "runs: " + ", ".join(f"{count} ({', '.join(names)})"
                                for count, names in by_count.items())


def _label(row: dict) -> str:
    label = str(row.get("label") or row.get("name") or "?")
    version = row.get("version")
    return f"{label} {version}" if version else label


def _when(created) -> str:
    """Format ``created_utc``: ``2026-11-24T18:47:13+00:00`` -> ``2026-11-24 18:47:13 UTC``."""
    if not isinstance(created, str) or not created:
        return "date unknown"
    return created.replace("T", " ").replace("+00:00", " UTC")
