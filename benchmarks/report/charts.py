"""The three PNG charts of a result: throughput by contender, latency per message kind,
and cost per message against book size.

Charts need matplotlib (Agg backend, imported only when drawing, no pyplot state). The
PNGs carry no timestamp or software version, so the same result gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

from .result import (_contenders, _median, _number, _profiles, _ratio_to_engine, _scaling_points,
                     _section)
from .text import _label, _num, _runs

DPI = 110
CHARTS = ("throughput", "latency", "scaling")
GROUP_COLORS = {"carbonx": "#1f77b4", "reference": "#8c8c8c", "peer": "#ff7f0e"}
OTHER_COLOR = "#9467bd"
PERCENTILES = (("p50_ns", "p50", "#9ecae1"), ("p99_ns", "p99", "#3182bd"), ("p999_ns", "p99.9",
                                                                            "#08519c"))


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
        ys, medians, height=0.62, color=colors, xerr=[[m - lo for m, lo in zip(medians, lows)],
                                                      [hi - m for m, hi in zip(medians, highs)]],
        ecolor="#333333", capsize=3)
    labels = [
        _label(r) +
        (f"\n(first {_num(r['prefix'])} messages)" if _number(r.get("prefix")) is not None else "")
        + ("  [trades differ]" if r.get("agrees") is False else "") for r in rows
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
    title += (", median of each contender's runs" if runs.startswith("runs:") else
              f", median of {runs}" if not runs.startswith("-") else "")
    ax.set_title(title)
    present = list(dict.fromkeys(groups))
    fig.legend(
        handles=[
            Patch(color=GROUP_COLORS.get(g, OTHER_COLOR), label=f"group: {g}") for g in present
        ], loc="outside lower center", ncol=len(present), fontsize=9, frameon=False)
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
            bars = ax.bar([x + (j - 1) * width for x in xs], values, width, label=label,
                          color=color)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=2)
            finite = [v for v in values if not math.isnan(v)]
            tallest, lowest = max([tallest, *finite]), min([lowest, *finite])
        maxima = [(_number(st.get("max_ns")) or 0) / 1000 for _, st in kinds]
        maxima = [m if m > 0 else math.nan for m in maxima]
        ax.plot(xs, maxima, linestyle="none", marker="_", markersize=26, markeredgewidth=2,
                color="#d62728", label="max")
        tallest = max([tallest, *(m for m in maxima if not math.isnan(m))])
        ax.set_yscale("log")
        if tallest > 0 and lowest < math.inf:
            ax.set_ylim(lowest / 2, tallest * 8)
        ax.set_xticks(xs, labels=[f"{kind}\nn={_num(st.get('n'))}" for kind, st in kinds],
                      fontsize=9)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
        ax.set_ylabel("µs per message (log)")
        ax.set_title(
            f"profile {profile}: {_num(body.get('sampled'))} messages timed of "
            f"{_num(body.get('messages'))}", fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", ncol=4, fontsize=8, framealpha=0.9)
    latency = _section(result, "latency") or {}
    fig.suptitle("Latency per message kind: p50, p99, p99.9 and max" +
                 (f" (timer overhead {latency['timer_overhead_ns']:,} ns)" if _number(
                     latency.get("timer_overhead_ns")) is not None else ""))
    return _save(fig, path)


def _draw_scaling(result: dict, path: Path) -> Path | None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    scaling = _section(result, "scaling") or {}
    panels = (("resting", "resting orders in the book", "resting_ratio_largest_to_smallest",
               "#1f77b4"), ("instruments", "instruments", "instruments_ratio_largest_to_smallest",
                            "#2ca02c"))
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
            ax.annotate(f"{median:,.0f}", (x, median), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(xs, labels=[_num(x) for x in xs], fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, max(highs) * 1.25)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        if len(xs) == 1:
            ax.set_xlim(xs[0] / 3, xs[0] * 3)
        ratio = _number(scaling.get(ratio_key))
        ax.set_title(
            f"against {xlabel}" +
            (f": largest / smallest {ratio:.2f}x" if ratio is not None else ""), fontsize=10)
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
            _median(p.get("ns_per_msg")) is not None for axis in ("resting", "instruments")
            for p in _scaling_points(result, axis)):
        return "no scaling section (or no scaling points) in this result"
    return None
