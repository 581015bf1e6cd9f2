"""Writing a result's report: ``report.md`` and the charts that can be drawn, into one
folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .charts import CHARTS, _draw_latency, _draw_scaling, _draw_throughput, _has_data
from .markdown import _markdown


def write_report(result: dict, out_dir: str | Path, *,
                 compared: dict | None = None) -> dict[str, Path]:
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
    missing_matplotlib = (None if importlib.util.find_spec("matplotlib") else
                          "matplotlib is not installed (`pip install matplotlib`)")
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
