"""``python -m benchmarks.report RESULT.json``: charts, a Markdown report, a comparison.

Turn one result of ``python -m benchmarks`` into ``report.md`` and three PNG charts, and
compare two results metric by metric, naming the regressions:

* ``throughput.png`` - median msgs/s per contender as horizontal bars, min .. max error
  bars, coloured by group (carbonx, reference, peer), the value and the ratio to the
  engine written on each bar;
* ``latency.png``    - one panel per latency profile: p50, p99 and p99.9 per message kind
  (and all kinds together) as grouped bars in µs on a log scale, the max as a dash;
* ``scaling.png``    - ns per message against resting orders and against instruments
  (both log x), the median as a line over its min .. max band.

``python -m benchmarks.report RESULT.json [--out DIR] [--compare OLD.json]
[--tolerance 0.1]`` writes the report (default folder: ``<RESULT stem>-report`` beside
RESULT); with ``--compare`` it prints the regressions and exits 1 if there is any, else 0.
A missing or unreadable file exits 2 with a one-line message.

Every section of a result may be absent or ``None`` (a failed stage, a quick run, a file
of an older schema): the report says what is missing, the chart of a missing section is
not drawn, and ``compare`` lists a metric found in only one of the two results as
``missing``, never as a regression. Results of schema 1, which have no ``contenders``
section, are read through their ``throughput`` section (engine and plain matcher).

Charts need matplotlib (Agg backend, imported only when drawing, no pyplot state); without
it the report is still written and says the charts were not drawn. The PNGs carry no
timestamp or software version, so the same result gives the same bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

__all__ = [
    "write_report",
    "compare",
    "headline_table",
    "targets_table",
    "readme_block",
    "update_readme",
    "main",
]

DPI = 110
CHARTS = ("throughput", "latency", "scaling")
GROUP_COLORS = {"carbonx": "#1f77b4", "reference": "#8c8c8c", "peer": "#ff7f0e"}
OTHER_COLOR = "#9467bd"
PERCENTILES = (
    ("p50_ns", "p50", "#9ecae1"),
    ("p99_ns", "p99", "#3182bd"),
    ("p999_ns", "p99.9", "#08519c"),
)
SECTIONS = (
    "settings",
    "machine",
    "contenders",
    "throughput",
    "latency",
    "scaling",
    "memory",
    "end_to_end",
    "ledger",
    "verdict",
    "targets",
)
MEASURED = ("contenders", "throughput", "latency", "scaling", "memory", "end_to_end", "ledger")
REPRODUCE = (
    "python -m benchmarks            # full run, writes benchmarks/results/latest.json",
    "python -m benchmarks --quick    # small sizes, writes benchmarks/results/quick.json",
    "python -m benchmarks.report benchmarks/results/latest.json --compare OLD.json",
)


# --- reading a result defensively ------------------------------------------------------


def _section(result: dict, key: str) -> dict | None:
    """Return ``result[key]`` if it is a dict, else ``None`` (absent, null, wrong type)."""
    value = result.get(key) if isinstance(result, dict) else None
    return value if isinstance(value, dict) else None


def _number(value) -> int | float | None:
    """Return *value* if it is a finite real number (not a bool), else ``None``.

    >>> _number(3), _number(2.5), _number(True), _number(float("nan")), _number("7")
    (3, 2.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _median(spread) -> int | float | None:
    return _number(spread.get("median")) if isinstance(spread, dict) else None


def _contenders(result: dict) -> list[dict]:
    """Return the contender rows in display order (schema 1: built from ``throughput``)."""
    section = _section(result, "contenders")
    if section is not None:
        rows = section.get("rows")
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
    legacy = _section(result, "throughput")
    if legacy is None:
        return []
    engine = legacy.get("engine") if isinstance(legacy.get("engine"), dict) else None
    plain = legacy.get("plain") if isinstance(legacy.get("plain"), dict) else None
    agreement = _section(result, "agreement") or {}
    rows = []
    for name, label, group, body in (
        ("engine", "carbonx engine (validation, events, STP)", "carbonx", engine),
        ("plain", "plain matcher (SortedDict + deque)", "reference", plain),
    ):
        if body is None:
            continue
        row = {
            "name": name,
            "label": label,
            "group": group,
            "msgs_per_s": body.get("msgs_per_s"),
            "trades": body.get("trades"),
            "volume": body.get("volume"),
        }
        if name == "plain" and isinstance(agreement.get("ok"), bool):
            row["agrees"] = agreement["ok"]
            row["agreement"] = "identical ordered trade list with stp none"
        rows.append(row)
    engine_median = _median((engine or {}).get("msgs_per_s"))
    for row in rows:
        median = _median(row["msgs_per_s"])
        if engine_median and median is not None:
            row["ratio_to_engine"] = median / engine_median
    return rows


def _ratio_to_engine(row: dict, rows: list[dict]) -> float | None:
    """Return the row's ``ratio_to_engine``, or compute it from the medians."""
    given = _number(row.get("ratio_to_engine"))
    if given is not None:
        return given
    engine = next((r for r in rows if r.get("name") == "engine"), None)
    top, bottom = _median(row.get("msgs_per_s")), _median((engine or {}).get("msgs_per_s"))
    return top / bottom if top is not None and bottom else None


def _profiles(result: dict) -> list[tuple[str, dict, list[tuple[str, dict]]]]:
    """Return ``(profile, body, [(kind, stats), ...])`` per latency profile with kinds.

    The profile's ``all`` summary comes last, as the kind ``all``.
    """
    latency = _section(result, "latency")
    profiles = (latency or {}).get("profiles")
    found = []
    for name, body in profiles.items() if isinstance(profiles, dict) else ():
        if not isinstance(body, dict):
            continue
        kinds = body.get("kinds") if isinstance(body.get("kinds"), dict) else {}
        pairs = [(str(kind), stats) for kind, stats in kinds.items() if isinstance(stats, dict)]
        if isinstance(body.get("all"), dict):
            pairs.append(("all", body["all"]))
        if pairs:
            found.append((str(name), body, pairs))
    return found


def _scaling_points(result: dict, axis: str) -> list[dict]:
    """Return the scaling points along *axis* (``resting`` or ``instruments``), by size."""
    points = (_section(result, "scaling") or {}).get(axis)
    if not isinstance(points, list):
        return []
    usable = [p for p in points if isinstance(p, dict) and (_number(p.get(axis)) or 0) > 0]
    return sorted(usable, key=lambda p: p[axis])


# --- formatting -------------------------------------------------------------------------


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
    return "runs: " + ", ".join(
        f"{count} ({', '.join(names)})" for count, names in by_count.items()
    )


def _label(row: dict) -> str:
    label = str(row.get("label") or row.get("name") or "?")
    version = row.get("version")
    return f"{label} {version}" if version else label


def _when(created) -> str:
    """Format ``created_utc``: ``2026-11-24T18:47:13+00:00`` -> ``2026-11-24 18:47:13 UTC``."""
    if not isinstance(created, str) or not created:
        return "date unknown"
    return created.replace("T", " ").replace("+00:00", " UTC")


def _commit(result: dict) -> str | None:
    git = (_section(result, "machine") or {}).get("git")
    commit = git.get("commit") if isinstance(git, dict) else None
    return commit if isinstance(commit, str) and commit else None


# --- metrics and comparison --------------------------------------------------------------


def _metrics(result: dict) -> dict[str, tuple[int | float, str]]:
    """Return ``{name: (value, "higher" | "lower")}`` for every comparable metric present."""
    found: dict[str, tuple[int | float, str]] = {}

    def add(name: str, value, better: str) -> None:
        number = _number(value)
        if number is not None:
            found[name] = (number, better)

    for row in _contenders(result):
        add(f"throughput/{row.get('name')} msgs/s", _median(row.get("msgs_per_s")), "higher")
    for profile, _, kinds in _profiles(result):
        for kind, stats in kinds:
            add(f"latency/{profile}/{kind} p99 ns", stats.get("p99_ns"), "lower")
            add(f"latency/{profile}/{kind} p99.9 ns", stats.get("p999_ns"), "lower")
    for point in _scaling_points(result, "resting"):
        size = _num(point["resting"])
        add(f"scaling/resting {size} ns/msg", _median(point.get("ns_per_msg")), "lower")
        add(f"scaling/resting {size} bytes/order", point.get("bytes_per_order"), "lower")
    for point in _scaling_points(result, "instruments"):
        add(
            f"scaling/instruments {_num(point['instruments'])} ns/msg",
            _median(point.get("ns_per_msg")),
            "lower",
        )
    for contender, methods in (_section(result, "memory") or {}).items():
        for method, run in methods.items() if isinstance(methods, dict) else ():
            if isinstance(run, dict):
                add(
                    f"memory/{contender} bytes/order ({method})",
                    run.get("bytes_per_order"),
                    "lower",
                )
    e2e = _section(result, "end_to_end") or {}
    add("end_to_end/replay msgs/s", _median(e2e.get("msgs_per_s")), "higher")
    ratios = (_section(result, "ledger") or {}).get("ratios")
    for key, spread in ratios.items() if isinstance(ratios, dict) else ():
        add(f"ledger/{key}", _median(spread), "higher")
    return found


def _change(old: float, new: float, better: str) -> float | None:
    """Return the fractional change, positive = better; ``None`` when *old* is 0."""
    if old == 0:
        return None
    change = (new - old) / abs(old)
    return change if better == "higher" else -change


def compare(
    old: dict, new: dict, *, tolerance: float = 0.10, latency_tolerance: float = 0.50
) -> dict:
    """Compare two results metric by metric; name regressions beyond *tolerance*.

    Latency tails (p99, p99.9 of a sample) move more from run to run on a shared
    machine than medians of throughput do, so ``latency/`` metrics use the wider
    *latency_tolerance* (never narrower than *tolerance*).

    ``change`` is signed so that positive is better: a throughput 20% higher and a
    latency 20% lower are both ``+0.2``. A change below ``-tolerance`` is a regression,
    above ``+tolerance`` an improvement, otherwise ``same``; a metric found in only one
    result is ``missing``. Metrics are listed in the order of *new*, then those only in
    *old*. ``old`` and ``new`` say which runs these are: ``created_utc``, ``commit``,
    ``mode`` and ``settings.messages`` (``None`` where not recorded). O(metrics).

    >>> old = {"end_to_end": {"msgs_per_s": {"median": 100}}}
    >>> new = {"end_to_end": {"msgs_per_s": {"median": 80}}}
    >>> found = compare(old, new)
    >>> found["regressions"], round(found["metrics"][0]["change"], 2)
    (['end_to_end/replay msgs/s'], -0.2)
    """
    if _number(tolerance) is None or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, not {tolerance!r}")
    before, after = _metrics(old), _metrics(new)
    rows = []
    for name in [*after, *(n for n in before if n not in after)]:
        if name not in before or name not in after:
            value, better = after.get(name) or before[name]
            rows.append(
                {
                    "metric": name,
                    "old": before.get(name, (None,))[0],
                    "new": after.get(name, (None,))[0],
                    "change": None,
                    "better": better,
                    "status": "missing",
                }
            )
            continue
        (x, better), (y, _) = before[name], after[name]
        change = _change(x, y, better)
        allowed = max(tolerance, latency_tolerance) if name.startswith("latency/") else tolerance
        if change is None:  # old was 0: no fraction, only a direction
            worse = y > x if better == "lower" else y < x
            status = "same" if y == x else ("regression" if worse else "improvement")
        elif change < -allowed:
            status = "regression"
        elif change > allowed:
            status = "improvement"
        else:
            status = "same"
        rows.append(
            {
                "metric": name,
                "old": x,
                "new": y,
                "change": None if change is None else round(change, 6),
                "better": better,
                "status": status,
            }
        )

    def about(result: dict) -> dict:
        created, mode = result.get("created_utc"), result.get("mode")
        return {
            "created_utc": created if isinstance(created, str) else None,
            "commit": _commit(result),
            "mode": mode if isinstance(mode, str) else None,
            "messages": _number((_section(result, "settings") or {}).get("messages")),
        }

    return {
        "old": about(old),
        "new": about(new),
        "tolerance": tolerance,
        "latency_tolerance": max(tolerance, latency_tolerance),
        "metrics": rows,
        "regressions": [r["metric"] for r in rows if r["status"] == "regression"],
        "improvements": [r["metric"] for r in rows if r["status"] == "improvement"],
    }


def _change_text(row: dict) -> str:
    if row["change"] is None:
        return "from 0"
    return f"{row['change']:+.1%}"


def _unlike(compared: dict) -> str | None:
    """Return a warning when the two runs differ in mode or size, else ``None``."""
    old, new = compared.get("old") or {}, compared.get("new") or {}
    differ = [
        f"{key} {_num(old.get(key)) if key == 'messages' else old.get(key)} -> "
        f"{_num(new.get(key)) if key == 'messages' else new.get(key)}"
        for key in ("mode", "messages")
        if old.get(key) is not None and new.get(key) is not None and old.get(key) != new.get(key)
    ]
    return (
        (
            "the two runs are not alike (" + "; ".join(differ) + "): changes may "
            "reflect the sizes, not the code"
        )
        if differ
        else None
    )


def _summary(compared: dict) -> str:
    """Return the comparison as plain text lines, regressions first."""
    by_status: dict[str, list[dict]] = {}
    for row in compared["metrics"]:
        by_status.setdefault(row["status"], []).append(row)
    warning = _unlike(compared)
    lines = [f"  warning: {warning}"] if warning else []
    for status, word in (("regression", "REGRESSION "), ("improvement", "improvement")):
        for row in by_status.get(status, ()):
            lines.append(
                f"  {word} {row['metric']}: {_num(row['old'])} -> {_num(row['new'])} "
                f"({_change_text(row)}, {row['better']} is better)"
            )
    counts = ", ".join(
        f"{len(by_status.get(s, ()))} {s}" for s in ("regression", "improvement", "same", "missing")
    )
    lines.append(f"  {counts} (tolerance {compared['tolerance']:.0%})")
    return "\n".join(lines)


# --- Markdown ---------------------------------------------------------------------------


def headline_table(result: dict) -> str:
    """Return the Markdown table of throughput by contender, one row per contender.

    Columns: contender, group, msgs/s median [min .. max], ratio to engine, trades,
    agrees, left out / emulated. Empty string when the result has no contenders.

    >>> print(headline_table({"contenders": {"rows": [{"name": "engine",
    ...     "label": "carbonx engine", "group": "carbonx", "ratio_to_engine": 1.0,
    ...     "msgs_per_s": {"median": 428905, "min": 425909, "max": 429948}}]}}))
    | contender | group | msgs/s median [min .. max] | ratio to engine | trades | agrees | left out / emulated |
    |---|---|---:|---:|---:|---|---|
    | carbonx engine | carbonx | 428,905 [425,909 .. 429,948] | 1.000x | - | n/a | - |
    """
    rows = _contenders(result)
    if not rows:
        return ""
    header = [
        "contender",
        "group",
        "msgs/s median [min .. max]",
        "ratio to engine",
        "trades",
        "agrees",
        "left out / emulated",
    ]
    body = [
        [
            _label(row),
            row.get("group"),
            _spread(row.get("msgs_per_s")),
            _ratio(_ratio_to_engine(row, rows)),
            _num(row.get("trades")),
            _agrees(row),
            _left_out(row),
        ]
        for row in rows
    ]
    return "\n".join(_table(header, body, "llrrrll"))


def _chart_line(name: str, charts: dict[str, Path], skipped: dict[str, str], alt: str) -> list[str]:
    if name in charts:
        return ["", f"![{alt}]({charts[name].name})"]
    return ["", f"_{name.capitalize()} chart skipped: {skipped.get(name, 'nothing to draw')}._"]


def _header_lines(result: dict) -> list[str]:
    mode = result.get("mode") if isinstance(result.get("mode"), str) else "unknown"
    when = _when(result.get("created_utc"))
    commit = _commit(result)
    lines = [
        f"# carbonx benchmarks: {mode} run, {when}, commit {commit[:12] if commit else 'unknown'}",
        "",
    ]
    m = _section(result, "machine")
    if m:
        packages = m.get("packages") if isinstance(m.get("packages"), dict) else {}
        git = m.get("git") if isinstance(m.get("git"), dict) else {}
        changed = git.get("uncommitted_changes")
        text = (
            f"Machine: {m.get('implementation') or 'Python'} {m.get('python', '?')} on "
            f"{m.get('platform', '?')}, {m.get('cpu', '?')}, {_num(m.get('cpu_count'))} CPUs"
        )
        if packages:
            text += "; " + ", ".join(f"{k} {v or '-'}" for k, v in packages.items())
        if isinstance(changed, list) and changed:
            text += f"; {len(changed)} uncommitted file(s): {', '.join(map(str, changed))}"
        lines.append(text + ".")
    else:
        lines.append("Machine: not recorded.")
    s = _section(result, "settings")
    if s:
        lines += [
            "",
            "Settings: "
            + ", ".join(
                f"{k.replace('_', ' ')} {_num(v) if _number(v) is not None else v}"
                for k, v in s.items()
            )
            + ".",
        ]
    failures = result.get("failures")
    if isinstance(failures, list) and failures:
        lines += ["", "**Failed checks:**", *(f"- {_cell(f)}" for f in failures)]
    return lines


def _throughput_lines(result: dict, charts, skipped) -> list[str]:
    lines = ["", "## Throughput by contender", ""]
    table = headline_table(result)
    if not table:
        return lines + ["_No contenders section in this result: throughput chart skipped._"]
    section = _section(result, "contenders")
    if section is None:
        lines += [
            "From the `throughput` section of an older schema (engine and plain matcher only).",
            "",
        ]
    else:
        where = [f"`{section['file']}`"] if isinstance(section.get("file"), str) else []
        if _number(section.get("messages")) is not None:
            where.append(f"{_num(section['messages'])} messages")
        lines += [
            ", ".join(where)
            + ("; " if where else "")
            + f"median [min .. max] of {_runs(_contenders(result), section)}; "
            "ratio = contender msgs/s over engine msgs/s.",
            "",
        ]
    lines.append(table)
    notes = [(row, row.get("note")) for row in _contenders(result) if row.get("note")]
    if notes:
        lines += ["", *(f"- {_cell(_label(row))}: {_cell(note)}" for row, note in notes)]
    return lines + _chart_line("throughput", charts, skipped, "Throughput by contender")


def targets_table(result: dict) -> str:
    """Return the Markdown table of the targets, met or missed (empty when none)."""
    lines = _targets_lines(result)[3:]
    return "\n".join(lines) if lines and lines[0].startswith("|") else ""


README_BEGIN = (
    "<!-- benchmark-results:begin (python -m benchmarks.report RESULT --readme README.md) -->"
)
README_END = "<!-- benchmark-results:end -->"


def readme_block(
    result: dict, chart: str = "benchmarks/results/latest-report/throughput.png"
) -> str:
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
        f"contender in its own process, median [min .. max].",
        "",
        headline_table(result),
        "",
        targets_table(result),
        "",
        f"![Throughput by contender]({chart})",
        README_END,
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
    updated = text[:start] + readme_block(result) + text[end + len(README_END) :]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def _targets_lines(result: dict) -> list[str]:
    lines = ["", "## Targets", ""]
    verdict = _section(result, "verdict") or {}
    targets = verdict.get("targets")
    if isinstance(targets, list) and targets:
        rows = [
            [
                t.get("name"),
                t.get("target"),
                _num(t.get("value")),
                {True: "met", False: "**missed**"}.get(t.get("met"), "-"),
            ]
            for t in targets
            if isinstance(t, dict)
        ]
        lines += _table(["target", "wanted", "measured", "verdict"], rows, "llrl")
        same = _number(verdict.get("engine_over_plain_same_process"))
        if same is not None:
            lines += [
                "",
                f"Engine over the plain matcher in the plain matcher's own process "
                f"(median of the rounds): {_ratio(same, 3)}.",
            ]
        return lines
    wanted = _section(result, "targets")
    if wanted:
        lines += ["No verdict per target in this result; the targets were:", ""]
        return lines + _table(["target", "value"], [[k, _num(v)] for k, v in wanted.items()], "lr")
    return lines + ["_No targets in this result._"]


def _latency_lines(result: dict, charts, skipped) -> list[str]:
    lines = ["", "## Latency per message kind", ""]
    latency = _section(result, "latency")
    profiles = _profiles(result)
    if latency is None or not profiles:
        return lines + ["_No latency section in this result: latency chart skipped._"]
    lines.append(
        f"One message in {_num(latency.get('sample_every'))} timed; timer overhead "
        f"{_num(latency.get('timer_overhead_ns'))} ns. Times in µs."
    )
    header = ["kind", "n", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs"]
    for profile, body, kinds in profiles:
        lines += [
            "",
            f"### Profile `{profile}`: `{body.get('file', '?')}`, "
            f"{_num(body.get('messages'))} messages, {_num(body.get('sampled'))} sampled",
            "",
        ]
        rows = [
            [
                f"**{kind}**" if kind == "all" else kind,
                _num(st.get("n")),
                *(_us(st.get(k)) for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns")),
            ]
            for kind, st in kinds
        ]
        lines += _table(header, rows, "lrrrrrr")
    return lines + _chart_line("latency", charts, skipped, "Latency percentiles per kind")


def _scaling_lines(result: dict, charts, skipped) -> list[str]:
    lines = ["", "## Scaling", ""]
    scaling = _section(result, "scaling")
    resting, instruments = (
        _scaling_points(result, "resting"),
        _scaling_points(result, "instruments"),
    )
    if scaling is None or not (resting or instruments):
        return lines + ["_No scaling section in this result: scaling chart skipped._"]
    rounds = scaling.get("rounds")
    lines.append(
        f"{_num(scaling.get('messages'))} messages per point; ns per message, "
        "median [min .. max]"
        + (
            f"; {rounds} rounds, the sizes taking turns, and "
            "each ratio the median of the rounds' ratios."
            if rounds
            else "."
        )
    )
    if resting:
        lines += ["", "### Against resting orders", ""]
        lines += _table(
            ["resting orders", "ns/msg", "bytes per order"],
            [
                [
                    _num(p["resting"]),
                    _spread(p.get("ns_per_msg")),
                    _num(p.get("bytes_per_order"), 1),
                ]
                for p in resting
            ],
            "rrr",
        )
        lines += [
            "",
            f"Largest over smallest: "
            f"{_ratio(scaling.get('resting_ratio_largest_to_smallest'), 2)}.",
        ]
    if instruments:
        lines += ["", "### Against instruments", ""]
        lines += _table(
            ["instruments", "ns/msg"],
            [[_num(p["instruments"]), _spread(p.get("ns_per_msg"))] for p in instruments],
            "rr",
        )
        lines += [
            "",
            f"Largest over smallest: "
            f"{_ratio(scaling.get('instruments_ratio_largest_to_smallest'), 2)}.",
        ]
    return lines + _chart_line("scaling", charts, skipped, "ns per message against book size")


def _memory_lines(result: dict) -> list[str]:
    lines = ["", "## Memory", ""]
    memory = _section(result, "memory")
    contenders = {k: v for k, v in (memory or {}).items() if isinstance(v, dict)}
    if not contenders:
        return lines + ["_No memory section in this result._"]
    instruments = memory.get("instruments")
    lines.append(
        f"{_num(memory.get('orders'))} resting orders"
        + (f" on {len(instruments)} instruments" if isinstance(instruments, list) else "")
        + (
            f", {_num(memory['levels_per_side'])} levels a side"
            if _number(memory.get("levels_per_side")) is not None
            else ""
        )
        + "; bytes per order."
    )
    lines.append("")
    methods = list(dict.fromkeys(m for runs in contenders.values() for m in runs))
    rows = [
        [
            name,
            *(
                _num((runs.get(m) or {}).get("bytes_per_order"), 1)
                if isinstance(runs.get(m), dict)
                else "-"
                for m in methods
            ),
        ]
        for name, runs in contenders.items()
    ]
    labels = {"rss": "RSS delta", "tracemalloc": "tracemalloc"}
    return lines + _table(
        ["contender", *(labels.get(m, m) for m in methods)], rows, "l" + "r" * len(methods)
    )


def _registry_lines(result: dict) -> list[str]:
    section = _section(result, "registry") or {}
    compliance, settlement = section.get("compliance"), section.get("settlement")
    lines = ["", "## Registry and clearing", ""]
    if isinstance(compliance, dict):
        lines.append(
            f"A whole compliance year (`carbonx comply`'s example scenario) for "
            f"{_num(compliance.get('entities'))} entities: "
            f"{_spread(compliance.get('seconds'), 2)} s, "
            f"{_num(compliance.get('commands'))} commands "
            f"({_num(compliance.get('commands_per_s'))} a second), "
            f"{_num(compliance.get('short'))} entities short."
        )
    if isinstance(settlement, dict):
        lines += [
            "",
            f"Daily settlement (`eod`) of {_num(settlement.get('positions'))} open "
            f"futures positions: {_spread(settlement.get('seconds'), 3)} s, "
            f"{_num(settlement.get('positions_per_s'))} positions a second.",
        ]
    return lines if len(lines) > 3 else []


def _end_to_end_lines(result: dict) -> list[str]:
    e2e = _section(result, "end_to_end")
    lines = []
    if e2e:
        lines += [
            "",
            "## End to end",
            "",
            "`carbonx replay FILE --json`, a fresh process per run; median [min .. max].",
            "",
        ]
        rows = [
            [label, _spread(e2e.get(key), digits)]
            for key, label, digits in (
                ("msgs_per_s", "msgs/s (read + decode + match)", 0),
                ("engine_msgs_per_s", "engine msgs/s (engine alone)", 0),
                ("elapsed_s", "elapsed s", 3),
                ("wall_s", "process wall s", 3),
            )
            if isinstance(e2e.get(key), dict)
        ]
        lines += _table(["measure", "value"], rows, "lr")
        if isinstance(e2e.get("matches_in_process_engine"), bool):
            lines += [
                "",
                "Same result as the in-process engine: "
                + ("yes." if e2e["matches_in_process_engine"] else "**NO**."),
            ]
    led = _section(result, "ledger")
    if led:
        lines += ["", "## Ledger and journal", ""]
        modes = led.get("modes") if isinstance(led.get("modes"), dict) else {}
        if modes:
            lines += _table(
                ["mode", "msgs/s", "engine msgs/s"],
                [
                    [mode, _spread(body.get("msgs_per_s")), _spread(body.get("engine_msgs_per_s"))]
                    for mode, body in modes.items()
                    if isinstance(body, dict)
                ],
                "lrr",
            )
            lines.append("")
        ratios = led.get("ratios") if isinstance(led.get("ratios"), dict) else {}
        if ratios:
            lines += _table(
                ["ratio", "median [min .. max]"],
                [[key, _spread(spread, 3)] for key, spread in ratios.items()],
                "lr",
            )
    return lines


def _compared_lines(compared: dict) -> list[str]:
    old = compared.get("old") or {}
    lines = [
        "",
        "## Compared with the previous run",
        "",
        f"Previous run: {_when(old.get('created_utc'))}, commit "
        f"{(old.get('commit') or 'unknown')[:12]}. Tolerance "
        f"{compared['tolerance']:.0%}; change signed so that positive is better.",
        "",
    ]
    if _unlike(compared):
        lines += [f"**Warning:** {_unlike(compared)}.", ""]
    by_status: dict[str, list[dict]] = {}
    for row in compared["metrics"]:
        by_status.setdefault(row["status"], []).append(row)
    for status, title in (("regression", "Regressions"), ("improvement", "Improvements")):
        rows = by_status.get(status, [])
        lines.append(f"**{title}: {len(rows)}**")
        if rows:
            lines += [
                "",
                *_table(
                    ["metric", "old", "new", "change", "better"],
                    [
                        [r["metric"], _num(r["old"]), _num(r["new"]), _change_text(r), r["better"]]
                        for r in rows
                    ],
                    "lrrrl",
                ),
            ]
        lines.append("")
    lines.append(f"Within tolerance: {len(by_status.get('same', []))} metric(s).")
    missing = by_status.get("missing", [])
    if missing:
        lines += [
            "",
            f"In only one of the two runs ({len(missing)}): "
            + ", ".join(
                f"`{r['metric']}` ({'new' if r['old'] is None else 'old'} only)" for r in missing
            )
            + ".",
        ]
    return lines


def _markdown(
    result: dict, charts: dict[str, Path], skipped: dict[str, str], compared: dict | None
) -> str:
    lines = _header_lines(result)
    lines += _throughput_lines(result, charts, skipped)
    lines += _targets_lines(result)
    lines += _latency_lines(result, charts, skipped)
    lines += _scaling_lines(result, charts, skipped)
    lines += _memory_lines(result)
    lines += _registry_lines(result)
    lines += _end_to_end_lines(result)
    if compared is not None:
        lines += _compared_lines(compared)
    lines += ["", "## How to reproduce", "", "```sh", *REPRODUCE, "```", ""]
    return "\n".join(lines)


# --- charts -----------------------------------------------------------------------------


def _figure(**kwargs):
    """Return a new matplotlib Figure on the Agg backend (no pyplot, no global state)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _save(fig, path: Path) -> Path:
    # No "Software" entry and Agg writes no time: the same result gives the same bytes.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _draw_throughput(result: dict, path: Path) -> Path | None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    every = _contenders(result)
    rows = [row for row in every if _median(row.get("msgs_per_s")) is not None]
    if not rows:
        return None
    fig = _figure(figsize=(10, 1.6 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    medians = [_median(r["msgs_per_s"]) for r in rows]
    lows = [_number(r["msgs_per_s"].get("min")) for r in rows]
    highs = [_number(r["msgs_per_s"].get("max")) for r in rows]
    lows = [m if lo is None else min(lo, m) for lo, m in zip(lows, medians)]
    highs = [m if hi is None else max(hi, m) for hi, m in zip(highs, medians)]
    groups = [str(r.get("group") or "other") for r in rows]
    colors = [GROUP_COLORS.get(g, OTHER_COLOR) for g in groups]
    ys = list(range(len(rows)))
    ax.barh(
        ys,
        medians,
        height=0.62,
        color=colors,
        xerr=[[m - lo for m, lo in zip(medians, lows)], [hi - m for m, hi in zip(medians, highs)]],
        ecolor="#333333",
        capsize=3,
    )
    labels = [
        _label(r)
        + (
            f"\n(first {_num(r['prefix'])} messages)"
            if _number(r.get("prefix")) is not None
            else ""
        )
        + ("  [trades differ]" if r.get("agrees") is False else "")
        for r in rows
    ]
    ax.set_yticks(ys, labels=labels)
    ax.invert_yaxis()
    top = max(highs) or 1
    for y, row, median, high in zip(ys, rows, medians, highs):
        ratio = _ratio_to_engine(row, every)
        text = f"{median:,.0f} msgs/s" + (f"  ({ratio:.2f}x engine)" if ratio is not None else "")
        ax.text(high + top * 0.012, y, text, va="center", fontsize=9)
    ax.set_xlim(0, top * 1.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_xlabel("messages per second (bar: median; whiskers: min .. max)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    section = _section(result, "contenders") or {}
    title = "Throughput by contender"
    if _number(section.get("messages")) is not None:
        title += f": {section['messages']:,} messages"
    runs = _runs(every, section)
    title += (
        ", median of each contender's runs"
        if runs.startswith("runs:")
        else f", median of {runs}"
        if not runs.startswith("-")
        else ""
    )
    ax.set_title(title)
    present = list(dict.fromkeys(groups))
    fig.legend(
        handles=[
            Patch(color=GROUP_COLORS.get(g, OTHER_COLOR), label=f"group: {g}") for g in present
        ],
        loc="outside lower center",
        ncol=len(present),
        fontsize=9,
        frameon=False,
    )
    return _save(fig, path)


def _draw_latency(result: dict, path: Path) -> Path | None:
    from matplotlib.ticker import FuncFormatter

    profiles = _profiles(result)
    if not profiles:
        return None
    widest = max(len(kinds) for _, _, kinds in profiles)
    fig = _figure(figsize=(max(8.0, 1.25 * widest + 2), 3.9 * len(profiles)))
    axes = fig.subplots(len(profiles), 1, squeeze=False)[:, 0]
    width = 0.27
    for ax, (profile, body, kinds) in zip(axes, profiles):
        xs = list(range(len(kinds)))
        tallest, lowest = 0.0, math.inf
        for j, (key, label, color) in enumerate(PERCENTILES):
            values = []
            for _, stats in kinds:
                ns = _number(stats.get(key))
                values.append(ns / 1000 if ns and ns > 0 else math.nan)
            bars = ax.bar(
                [x + (j - 1) * width for x in xs], values, width, label=label, color=color
            )
            ax.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=2)
            finite = [v for v in values if not math.isnan(v)]
            tallest, lowest = max([tallest, *finite]), min([lowest, *finite])
        maxima = [(_number(st.get("max_ns")) or 0) / 1000 for _, st in kinds]
        maxima = [m if m > 0 else math.nan for m in maxima]
        ax.plot(
            xs,
            maxima,
            linestyle="none",
            marker="_",
            markersize=26,
            markeredgewidth=2,
            color="#d62728",
            label="max",
        )
        tallest = max([tallest, *(m for m in maxima if not math.isnan(m))])
        ax.set_yscale("log")
        if tallest > 0 and lowest < math.inf:
            ax.set_ylim(lowest / 2, tallest * 8)
        ax.set_xticks(
            xs, labels=[f"{kind}\nn={_num(st.get('n'))}" for kind, st in kinds], fontsize=9
        )
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
        ax.set_ylabel("µs per message (log)")
        ax.set_title(
            f"profile {profile}: {_num(body.get('sampled'))} messages timed of "
            f"{_num(body.get('messages'))}",
            fontsize=10,
        )
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", ncol=4, fontsize=8, framealpha=0.9)
    latency = _section(result, "latency") or {}
    fig.suptitle(
        "Latency per message kind: p50, p99, p99.9 and max"
        + (
            f" (timer overhead {latency['timer_overhead_ns']:,} ns)"
            if _number(latency.get("timer_overhead_ns")) is not None
            else ""
        )
    )
    return _save(fig, path)


def _draw_scaling(result: dict, path: Path) -> Path | None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    scaling = _section(result, "scaling") or {}
    panels = (
        ("resting", "resting orders in the book", "resting_ratio_largest_to_smallest", "#1f77b4"),
        ("instruments", "instruments", "instruments_ratio_largest_to_smallest", "#2ca02c"),
    )
    if not any(_scaling_points(result, axis) for axis, *_ in panels):
        return None
    fig = _figure(figsize=(11, 4.3))
    for ax, (axis, xlabel, ratio_key, color) in zip(fig.subplots(1, 2), panels):
        points = [
            p for p in _scaling_points(result, axis) if _median(p.get("ns_per_msg")) is not None
        ]
        ax.set_xlabel(f"{xlabel} (log)")
        ax.set_ylabel("ns per message")
        if not points:
            ax.set_title(f"against {xlabel}: not measured", fontsize=10)
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center")
            continue
        xs = [p[axis] for p in points]
        medians = [_median(p["ns_per_msg"]) for p in points]
        lows = [_number(p["ns_per_msg"].get("min")) for p in points]
        highs = [_number(p["ns_per_msg"].get("max")) for p in points]
        lows = [m if lo is None else lo for lo, m in zip(lows, medians)]
        highs = [m if hi is None else hi for hi, m in zip(highs, medians)]
        ax.fill_between(xs, lows, highs, color=color, alpha=0.22, linewidth=0, label="min .. max")
        ax.plot(xs, medians, marker="o", color=color, label="median")
        for x, median in zip(xs, medians):
            ax.annotate(
                f"{median:,.0f}",
                (x, median),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_xticks(xs, labels=[_num(x) for x in xs], fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, max(highs) * 1.25)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        if len(xs) == 1:
            ax.set_xlim(xs[0] / 3, xs[0] * 3)
        ratio = _number(scaling.get(ratio_key))
        ax.set_title(
            f"against {xlabel}"
            + (f": largest / smallest {ratio:.2f}x" if ratio is not None else ""),
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    title = "Cost per message as the book grows"
    if _number(scaling.get("messages")) is not None:
        title += f" ({scaling['messages']:,} messages per point)"
    fig.suptitle(title)
    return _save(fig, path)


def _has_data(result: dict, name: str) -> str | None:
    """Return why chart *name* cannot be drawn from *result*, or ``None`` if it can."""
    if name == "throughput":
        if not any(_median(r.get("msgs_per_s")) is not None for r in _contenders(result)):
            return "no contenders section (or no throughput figures) in this result"
    elif name == "latency":
        if not _profiles(result):
            return "no latency section (or no latency profiles) in this result"
    elif not any(
        _median(p.get("ns_per_msg")) is not None
        for axis in ("resting", "instruments")
        for p in _scaling_points(result, axis)
    ):
        return "no scaling section (or no scaling points) in this result"
    return None


def write_report(
    result: dict, out_dir: str | Path, *, compared: dict | None = None
) -> dict[str, Path]:
    """Write ``report.md`` and the charts of *result* into *out_dir*; return their paths.

    Returns ``{"report": ..., "throughput": ..., "latency": ..., "scaling": ...}`` with
    only the files written: a chart whose section is missing is skipped (and an old copy
    of it in *out_dir* removed, so no stale chart sits beside the report), and the report
    says so. With *compared* (the output of ``compare``) the report gains a "Compared with
    the previous run" section. Without matplotlib only the report is written.
    """
    if not isinstance(result, dict):
        raise TypeError(f"a benchmark result is a dict, not {type(result).__name__}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    drawers = {"throughput": _draw_throughput, "latency": _draw_latency, "scaling": _draw_scaling}
    charts: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    missing_matplotlib = (
        None
        if importlib.util.find_spec("matplotlib")
        else "matplotlib is not installed (`pip install matplotlib`)"
    )
    for name in CHARTS:
        path = folder / f"{name}.png"
        reason = _has_data(result, name) or missing_matplotlib
        drawn = drawers[name](result, path) if reason is None else None
        if drawn is None:
            skipped[name] = reason or "nothing to draw"
            path.unlink(missing_ok=True)
        else:
            charts[name] = drawn
    report = folder / "report.md"
    tmp = folder / f"report.md.{os.getpid()}.tmp"
    tmp.write_text(_markdown(result, charts, skipped, compared), encoding="utf-8")
    os.replace(tmp, report)
    return {"report": report, **charts}


# --- command line -----------------------------------------------------------------------


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
            f"{path}: not a benchmark result (a JSON {type(result).__name__}, expected an object)"
        )
    if not any(key in result for key in MEASURED):
        raise _BadResult(
            f"{path}: not a carbonx benchmark result (none of the sections {', '.join(MEASURED)})"
        )
    wrong = [
        key for key in SECTIONS if result.get(key) is not None and not isinstance(result[key], dict)
    ]
    if wrong:
        raise _BadResult(f"{path}: section(s) {', '.join(wrong)} should be objects or null")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Write report.md and PNG charts (throughput, latency, scaling) for a "
        "result of `python -m benchmarks`; with --compare, name the metrics "
        "that got worse than OLD.json beyond the tolerance and exit 1 if any.",
    )
    parser.add_argument("result", metavar="RESULT.json", help="the result to report on")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where report.md and the charts go (default: <RESULT stem>-report "
        "beside RESULT, e.g. benchmarks/results/latest-report/)",
    )
    parser.add_argument(
        "--compare",
        metavar="OLD.json",
        help="an earlier result to compare with; exit 1 on any regression",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="change that counts as a regression or improvement (default 0.1)",
    )
    parser.add_argument(
        "--readme",
        metavar="README.md",
        help="also replace the results block of this README (headline "
        "table, targets, chart) with this result's",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m benchmarks.report"
    if _number(args.tolerance) is None or args.tolerance < 0:
        print(f"{prog}: error: --tolerance must be a number >= 0", file=sys.stderr)
        return 2
    try:
        result = _load_result(args.result)
        old = _load_result(args.compare) if args.compare else None
    except _BadResult as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    compared = compare(old, result, tolerance=args.tolerance) if old is not None else None
    source = Path(args.result)
    out = Path(args.out) if args.out else source.parent / f"{source.stem}-report"
    try:
        paths = write_report(result, out, compared=compared)
    except OSError as exc:
        print(f"{prog}: error: cannot write the report into {out}: {exc}", file=sys.stderr)
        return 2
    charts = [p.name for key, p in paths.items() if key != "report"]
    print(f"Wrote {paths['report']}" + (f" and {', '.join(charts)}" if charts else " (no charts)"))
    if args.readme:
        try:
            changed = update_readme(args.readme, result)
        except (OSError, ValueError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        print(f"{'Updated' if changed else 'Unchanged'}: the results block of {args.readme}")
    if compared is None:
        return 0
    print(f"Compared with {args.compare}:")
    print(_summary(compared))
    return 1 if compared["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
