"""Comparing two results metric by metric: ``compare`` names the regressions beyond a
tolerance, ``_summary`` says it in plain text lines for the command line."""

from __future__ import annotations

from .result import _commit, _contenders, _median, _number, _profiles, _scaling_points, _section
from .text import _num


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
        add(f"scaling/instruments {_num(point['instruments'])} ns/msg",
            _median(point.get("ns_per_msg")), "lower")
    for contender, methods in (_section(result, "memory") or {}).items():
        for method, run in methods.items() if isinstance(methods, dict) else ():
            if isinstance(run, dict):
                add(f"memory/{contender} bytes/order ({method})", run.get("bytes_per_order"),
                    "lower")
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


def compare(old: dict, new: dict, *, tolerance: float = 0.10,
            latency_tolerance: float = 0.50) -> dict:
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
            rows.append({
                "metric": name,
                "old": before.get(name, (None, ))[0],
                "new": after.get(name, (None, ))[0],
                "change": None,
                "better": better,
                "status": "missing"
            })
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
        rows.append({
            "metric": name,
            "old": x,
            "new": y,
            "change": None if change is None else round(change, 6),
            "better": better,
            "status": status
        })

    def about(result: dict) -> dict:
        created, mode = result.get("created_utc"), result.get("mode")
        return {
            "created_utc": created if isinstance(created, str) else None,
            "commit": _commit(result),
            "mode": mode if isinstance(mode, str) else None,
            "messages": _number((_section(result, "settings") or {}).get("messages"))
        }

    return {
        "old": about(old),
        "new": about(new),
        "tolerance": tolerance,
        "latency_tolerance": max(tolerance, latency_tolerance),
        "metrics": rows,
        "regressions": [r["metric"] for r in rows if r["status"] == "regression"],
        "improvements": [r["metric"] for r in rows if r["status"] == "improvement"]
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
    return (("the two runs are not alike (" + "; ".join(differ) + "): changes may "
             "reflect the sizes, not the code") if differ else None)


def _summary(compared: dict) -> str:
    """Return the comparison as plain text lines, regressions first."""
    by_status: dict[str, list[dict]] = {}
    for row in compared["metrics"]:
        by_status.setdefault(row["status"], []).append(row)
    warning = _unlike(compared)
    lines = [f"  warning: {warning}"] if warning else []
    for status, word in (("regression", "REGRESSION "), ("improvement", "improvement")):
        for row in by_status.get(status, ()):
            lines.append(f"  {word} {row['metric']}: {_num(row['old'])} -> {_num(row['new'])} "
                         f"({_change_text(row)}, {row['better']} is better)")
    counts = ", ".join(f"{len(by_status.get(s, ()))} {s}"
                       for s in ("regression", "improvement", "same", "missing"))
    lines.append(f"  {counts} (tolerance {compared['tolerance']:.0%})")
    return "\n".join(lines)
