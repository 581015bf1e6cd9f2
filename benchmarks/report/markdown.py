"""The Markdown of ``report.md``: the headline table of throughput by contender, the
targets, latency, scaling, memory, registry, end-to-end and ledger sections, the
comparison with a previous run, and how to reproduce."""

from __future__ import annotations

from pathlib import Path

from .comparison import _change_text, _unlike
from .result import (_commit, _contenders, _number, _profiles, _ratio_to_engine, _scaling_points,
                     _section)
from .text import (_agrees, _cell, _label, _left_out, _num, _ratio, _runs, _spread, _table, _us,
                   _when)

REPRODUCE = ("python -m benchmarks            # full run, writes benchmarks/results/latest.json",
             "python -m benchmarks --quick    # small sizes, writes benchmarks/results/quick.json",
             "python -m benchmarks.report benchmarks/results/latest.json --compare OLD.json")


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
        "contender", "group", "msgs/s median [min .. max]", "ratio to engine", "trades", "agrees",
        "left out / emulated"
    ]
    body = [[
        _label(row),
        row.get("group"),
        _spread(row.get("msgs_per_s")),
        _ratio(_ratio_to_engine(row, rows)),
        _num(row.get("trades")),
        _agrees(row),
        _left_out(row)
    ] for row in rows]
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
        ""
    ]
    m = _section(result, "machine")
    if m:
        packages = m.get("packages") if isinstance(m.get("packages"), dict) else {}
        git = m.get("git") if isinstance(m.get("git"), dict) else {}
        changed = git.get("uncommitted_changes")
        text = (f"Machine: {m.get('implementation') or 'Python'} {m.get('python', '?')} on "
                f"{m.get('platform', '?')}, {m.get('cpu', '?')}, {_num(m.get('cpu_count'))} CPUs")
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
            "", "Settings: " +
            ", ".join(f"{k.replace('_', ' ')} {_num(v) if _number(v) is not None else v}"
                      for k, v in s.items()) + "."
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
            "From the `throughput` section of an older schema (engine and plain matcher only).", ""
        ]
    else:
        where = [f"`{section['file']}`"] if isinstance(section.get("file"), str) else []
        if _number(section.get("messages")) is not None:
            where.append(f"{_num(section['messages'])} messages")
        lines += [
            ", ".join(where) + ("; " if where else "") +
            f"median [min .. max] of {_runs(_contenders(result), section)}; "
            "ratio = contender msgs/s over engine msgs/s.", ""
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


def _targets_lines(result: dict) -> list[str]:
    lines = ["", "## Targets", ""]
    verdict = _section(result, "verdict") or {}
    targets = verdict.get("targets")
    if isinstance(targets, list) and targets:
        rows = [[
            t.get("name"),
            t.get("target"),
            _num(t.get("value")), {
                True: "met",
                False: "**missed**"
            }.get(t.get("met"), "-")
        ] for t in targets if isinstance(t, dict)]
        lines += _table(["target", "wanted", "measured", "verdict"], rows, "llrl")
        same = _number(verdict.get("engine_over_plain_same_process"))
        if same is not None:
            lines += [
                "", f"Engine over the plain matcher in the plain matcher's own process "
                f"(median of the rounds): {_ratio(same, 3)}."
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
    lines.append(f"One message in {_num(latency.get('sample_every'))} timed; timer overhead "
                 f"{_num(latency.get('timer_overhead_ns'))} ns. Times in µs.")
    header = ["kind", "n", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs"]
    for profile, body, kinds in profiles:
        lines += [
            "", f"### Profile `{profile}`: `{body.get('file', '?')}`, "
            f"{_num(body.get('messages'))} messages, {_num(body.get('sampled'))} sampled", ""
        ]
        rows = [[
            f"**{kind}**" if kind == "all" else kind,
            _num(st.get("n")), *(_us(st.get(k))
                                 for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns"))
        ] for kind, st in kinds]
        lines += _table(header, rows, "lrrrrrr")
    return lines + _chart_line("latency", charts, skipped, "Latency percentiles per kind")


def _scaling_lines(result: dict, charts, skipped) -> list[str]:
    lines = ["", "## Scaling", ""]
    scaling = _section(result, "scaling")
    resting, instruments = (_scaling_points(result,
                                            "resting"), _scaling_points(result, "instruments"))
    if scaling is None or not (resting or instruments):
        return lines + ["_No scaling section in this result: scaling chart skipped._"]
    rounds = scaling.get("rounds")
    lines.append(f"{_num(scaling.get('messages'))} messages per point; ns per message, "
                 "median [min .. max]" +
                 (f"; {rounds} rounds, the sizes taking turns, and "
                  "each ratio the median of the rounds' ratios." if rounds else "."))
    if resting:
        lines += ["", "### Against resting orders", ""]
        lines += _table(
            ["resting orders", "ns/msg", "bytes per order"],
            [[_num(p["resting"]),
              _spread(p.get("ns_per_msg")),
              _num(p.get("bytes_per_order"), 1)] for p in resting], "rrr")
        lines += [
            "", f"Largest over smallest: "
            f"{_ratio(scaling.get('resting_ratio_largest_to_smallest'), 2)}."
        ]
    if instruments:
        lines += ["", "### Against instruments", ""]
        lines += _table(
            ["instruments", "ns/msg"],
            [[_num(p["instruments"]), _spread(p.get("ns_per_msg"))] for p in instruments], "rr")
        lines += [
            "", f"Largest over smallest: "
            f"{_ratio(scaling.get('instruments_ratio_largest_to_smallest'), 2)}."
        ]
    return lines + _chart_line("scaling", charts, skipped, "ns per message against book size")


def _memory_lines(result: dict) -> list[str]:
    lines = ["", "## Memory", ""]
    memory = _section(result, "memory")
    contenders = {k: v for k, v in (memory or {}).items() if isinstance(v, dict)}
    if not contenders:
        return lines + ["_No memory section in this result._"]
    instruments = memory.get("instruments")
    lines.append(f"{_num(memory.get('orders'))} resting orders" +
                 (f" on {len(instruments)} instruments" if isinstance(instruments, list) else "") +
                 (f", {_num(memory['levels_per_side'])} levels a side" if _number(
                     memory.get("levels_per_side")) is not None else "") + "; bytes per order.")
    lines.append("")
    methods = list(dict.fromkeys(m for runs in contenders.values() for m in runs))
    rows = [[
        name, *(_num(
            (runs.get(m) or {}).get("bytes_per_order"), 1) if isinstance(runs.get(m), dict) else "-"
                for m in methods)
    ] for name, runs in contenders.items()]
    labels = {"rss": "RSS delta", "tracemalloc": "tracemalloc"}
    return lines + _table(["contender", *(labels.get(m, m)
                                          for m in methods)], rows, "l" + "r" * len(methods))


def _registry_lines(result: dict) -> list[str]:
    section = _section(result, "registry") or {}
    compliance, settlement = section.get("compliance"), section.get("settlement")
    lines = ["", "## Registry and clearing", ""]
    if isinstance(compliance, dict):
        lines.append(f"A whole compliance year (`carbonx comply`'s example scenario) for "
                     f"{_num(compliance.get('entities'))} entities: "
                     f"{_spread(compliance.get('seconds'), 2)} s, "
                     f"{_num(compliance.get('commands'))} commands "
                     f"({_num(compliance.get('commands_per_s'))} a second), "
                     f"{_num(compliance.get('short'))} entities short.")
    if isinstance(settlement, dict):
        lines += [
            "", f"Daily settlement (`eod`) of {_num(settlement.get('positions'))} open "
            f"futures positions: {_spread(settlement.get('seconds'), 3)} s, "
            f"{_num(settlement.get('positions_per_s'))} positions a second."
        ]
    return lines if len(lines) > 3 else []


def _end_to_end_lines(result: dict) -> list[str]:
    e2e = _section(result, "end_to_end")
    lines = []
    if e2e:
        lines += [
            "", "## End to end", "",
            "`carbonx replay FILE --json`, a fresh process per run; median [min .. max].", ""
        ]
        rows = [[label, _spread(e2e.get(key), digits)]
                for key, label, digits in (("msgs_per_s", "msgs/s (read + decode + match)", 0),
                                           ("engine_msgs_per_s", "engine msgs/s (engine alone)",
                                            0), ("elapsed_s", "elapsed s",
                                                 3), ("wall_s", "process wall s", 3))
                if isinstance(e2e.get(key), dict)]
        lines += _table(["measure", "value"], rows, "lr")
        if isinstance(e2e.get("matches_in_process_engine"), bool):
            lines += [
                "", "Same result as the in-process engine: " +
                ("yes." if e2e["matches_in_process_engine"] else "**NO**.")
            ]
    led = _section(result, "ledger")
    if led:
        lines += ["", "## Ledger and journal", ""]
        modes = led.get("modes") if isinstance(led.get("modes"), dict) else {}
        if modes:
            lines += _table(
                ["mode", "msgs/s", "engine msgs/s"],
                [[mode,
                  _spread(body.get("msgs_per_s")),
                  _spread(body.get("engine_msgs_per_s"))]
                 for mode, body in modes.items() if isinstance(body, dict)], "lrr")
            lines.append("")
        ratios = led.get("ratios") if isinstance(led.get("ratios"), dict) else {}
        if ratios:
            lines += _table(["ratio", "median [min .. max]"],
                            [[key, _spread(spread, 3)] for key, spread in ratios.items()], "lr")
    return lines


def _compared_lines(compared: dict) -> list[str]:
    old = compared.get("old") or {}
    lines = [
        "", "## Compared with the previous run", "",
        f"Previous run: {_when(old.get('created_utc'))}, commit "
        f"{(old.get('commit') or 'unknown')[:12]}. Tolerance "
        f"{compared['tolerance']:.0%}; change signed so that positive is better.", ""
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
                "", *_table(
                    ["metric", "old", "new", "change", "better"],
                    [[r["metric"],
                      _num(r["old"]),
                      _num(r["new"]),
                      _change_text(r), r["better"]] for r in rows], "lrrrl")
            ]
        lines.append("")
    lines.append(f"Within tolerance: {len(by_status.get('same', []))} metric(s).")
    missing = by_status.get("missing", [])
    if missing:
        lines += [
            "", f"In only one of the two runs ({len(missing)}): " +
            ", ".join(f"`{r['metric']}` ({'new' if r['old'] is None else 'old'} only)"
                      for r in missing) + "."
        ]
    return lines


def _markdown(result: dict, charts: dict[str, Path], skipped: dict[str, str],
              compared: dict | None) -> str:
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
