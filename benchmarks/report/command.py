"""The command line: ``python -m benchmarks.report RESULT.json [--out DIR]
[--compare OLD.json] [--tolerance 0.1] [--readme README.md]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .comparison import _summary, compare
from .load import _BadResult, _load_result
from .readme import update_readme
from .result import _number
from .write import write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Write report.md and PNG charts (throughput, latency, scaling) for a "
        "result of `python -m benchmarks`; with --compare, name the metrics "
        "that got worse than OLD.json beyond the tolerance and exit 1 if any.")
    parser.add_argument("result", metavar="RESULT.json", help="the result to report on")
    parser.add_argument(
        "--out", metavar="DIR",
        help="where report.md and the charts go (default: <RESULT stem>-report "
        "beside RESULT, e.g. benchmarks/results/latest-report/)")
    parser.add_argument("--compare", metavar="OLD.json",
                        help="an earlier result to compare with; exit 1 on any regression")
    parser.add_argument("--tolerance", type=float, default=0.10, metavar="FRACTION",
                        help="change that counts as a regression or improvement (default 0.1)")
    parser.add_argument(
        "--readme", metavar="README.md",
        help="also replace the results block of this README (headline "
        "table, targets, chart) with this result's")
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
