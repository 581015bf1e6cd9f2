"""``python -m benchmarks [--quick]``: the carbonx benchmark suite.

Stages, each measured in its own fresh process (``sys.executable``):

1. data       - the seeded mixed order file (about 70% limit orders near the mid, 20%
                cancels of live orders, 10% marketable), cached under benchmarks/data/;
2. throughput - the full engine (validation, events, self-trade prevention) against the
                plain matcher (benchmarks/plain.py) on the same decoded commands, in one
                process, median of several alternating rounds; with the agreement check
                (engine with stp ``none`` = plain matcher, trade for trade) and the
                ``NaiveBook`` reference on a prefix;
3. end to end - ``carbonx replay FILE --json``, a fresh process per run;
4. ledger     - ``carbonx replay`` of a funded file matching only, with ``--ledger`` and
                with ``--ledger --journal`` (benchmarks/ledger.py): ratios to matching;
5. memory     - bytes per resting order with N orders resting, engine and plain matcher,
                by tracemalloc and by RSS delta, each in its own process;
6. hotspots   - when the end-to-end target is missed (full runs), a cProfile summary.

Prints a table and writes the JSON result: ``latest.json`` for a full run, ``quick.json``
for ``--quick``, in ``--out`` (default benchmarks/results/). A broken check (engine and
plain disagree, runs differ, naive and fast books differ) fails the suite with exit
status 1 and writes ``failed.json`` instead. Speed targets are reported, never enforced.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import data, endtoend, ledger
from .stats import parse_worker_output

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS_DIR = ROOT / "results"

TARGET_RATIO = 0.5             # engine msgs/s over plain msgs/s, at least
TARGET_END_TO_END = 300_000    # carbonx replay msgs_per_s, above
TARGET_LEDGER = 0.6            # replay --ledger over matching only, at least
TARGET_JOURNAL = 0.5           # replay --ledger --journal over matching only, at least
SCHEMA = 1

FULL = {"messages": 1_000_000, "memory_orders": 1_000_000, "naive_prefix": 20_000, "repeat": 5}
QUICK = {"messages": 50_000, "memory_orders": 100_000, "naive_prefix": 5_000, "repeat": 3}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark carbonx: engine vs the plain matcher on a seeded mixed order file "
            "(same process, same decoded commands, trades checked equal with stp none), "
            "end-to-end `carbonx replay --json` in fresh processes, the NaiveBook "
            "reference on a prefix, and bytes per resting order. Full run: 1,000,000 "
            "messages, a few minutes; --quick: 50,000 messages, under 40 s."))
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (50,000 messages, 100,000 resting orders)")
    parser.add_argument("--messages", type=int, metavar="N",
                        help="messages in the mixed file (default 1,000,000; quick 50,000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="timed runs per contender, at least 3 (default 5; quick 3)")
    parser.add_argument("--memory-orders", type=int, metavar="N",
                        help="resting orders in the memory test (default 1,000,000; quick 100,000)")
    parser.add_argument("--naive-prefix", type=int, metavar="N",
                        help="messages run through NaiveBook (default 20,000; quick 5,000)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="cProfile the replay: auto = full run that misses the "
                             "end-to-end target (default)")
    parser.add_argument("--out", metavar="DIR", default=str(RESULTS_DIR),
                        help="where the JSON result goes (default benchmarks/results/)")
    parser.add_argument("--data", metavar="DIR", default=str(data.DATA_DIR),
                        help="cache of generated order files (default benchmarks/data/)")
    return parser


# --- machine ---------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _git() -> dict:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = run("rev-parse", "HEAD")
        changed = [ln[3:] for ln in run("status", "--porcelain", "--", "exchange", "gateway",
                                        "benchmarks").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit or None, "uncommitted_changes": changed}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """Return what a reader needs to weigh the numbers: interpreter, machine, versions."""
    packages = {}
    for name in ("carbonx", "msgspec", "sortedcontainers"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": _memory_total(),
        "packages": packages,
        "git": _git(),
    }


# --- stages -----------------------------------------------------------------------------

def _worker(module: str, *args: str) -> dict:
    """Run ``python -m benchmarks.<module> ARGS`` in a fresh process; return its result."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} exited {done.returncode}:\n"
                           f"{done.stderr.strip()[-3000:]}")
    return parse_worker_output(done.stdout)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_suite(settings: dict, *, seed: int = 1, profile: str = "auto",
              data_dir: str | Path | None = None, quick: bool = False) -> dict:
    """Run every stage with *settings* (sizes); return the whole result record."""
    started = time.perf_counter()
    failures: list[str] = []
    result: dict = {
        "schema": SCHEMA, "suite": "carbonx benchmarks", "mode": "quick" if quick else "full",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {**settings, "seed": seed},
        "targets": {"engine_over_plain_at_least": TARGET_RATIO,
                    "end_to_end_msgs_per_s_above": TARGET_END_TO_END,
                    "ledger_over_matching_at_least": TARGET_LEDGER,
                    "journal_over_matching_at_least": TARGET_JOURNAL},
        "machine": machine_info(), "load_start": _load(),
    }

    _say(f"[1/6] data: mixed profile, {settings['messages']:,} messages, seed {seed}")
    facts = data.mixed_file(settings["messages"], seed=seed, data_dir=data_dir)
    path = facts["path"]
    try:
        shown = str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        shown = path
    result["data"] = {**facts, "path": shown}

    _say(f"[2/6] throughput: engine vs plain matcher, {settings['repeat']} rounds, one process")
    try:
        throughput = _worker("throughput", path, "--repeat", str(settings["repeat"]),
                             "--naive-prefix", str(settings["naive_prefix"]))
        failures += throughput.pop("failures")
        throughput["file"] = shown
    except (RuntimeError, ValueError) as exc:
        throughput = None
        failures.append(f"throughput worker failed: {exc}")
    result["throughput"] = throughput
    result["agreement"] = throughput.pop("agreement") if throughput else None
    result["naive"] = throughput.pop("naive") if throughput else None

    _say(f"[3/6] end to end: carbonx replay --json, {settings['repeat']} fresh processes")
    try:
        e2e = endtoend.measure(path, repeat=settings["repeat"])
        failures += e2e.pop("failures")
        engine = (throughput or {}).get("engine", {})
        if engine and e2e.get("state_hash") and e2e["state_hash"] != engine.get("state_hash"):
            failures.append("end to end: the replay's state hash differs from the in-process "
                            f"engine's ({e2e['state_hash']} != {engine.get('state_hash')})")
        e2e["matches_in_process_engine"] = bool(engine) and all(
            e2e.get(k) == engine.get(k) for k in ("trades", "volume", "state_hash"))
    except (RuntimeError, ValueError, KeyError) as exc:
        e2e = None
        failures.append(f"end to end failed: {exc}")
    result["end_to_end"] = e2e

    _say(f"[4/6] ledger: replay matching only, --ledger, --ledger --journal; "
         f"{settings['repeat']} rounds of fresh processes")
    try:
        funded = data.mixed_file(settings["messages"], seed=seed, data_dir=data_dir, fund=True)
        ledger_result = ledger.measure(funded["path"], repeat=settings["repeat"])
        failures += ledger_result.pop("failures")
        ledger_result["file"] = Path(funded["path"]).name
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        ledger_result = None
        failures.append(f"ledger stage failed: {exc}")
    result["ledger"] = ledger_result

    orders = settings["memory_orders"]
    _say(f"[5/6] memory: {orders:,} resting orders, engine and plain, tracemalloc and RSS")
    memory: dict = {"orders": orders}
    for contender in ("engine", "plain"):
        memory[contender] = {}
        for method in ("tracemalloc", "rss"):
            try:
                run = _worker("memory", "--contender", contender, "--method", method,
                              "--orders", str(orders))
                memory[contender][method] = run
                memory["instruments"] = run.get("instruments")
                memory["levels_per_side"] = run.get("levels_per_side")
            except (RuntimeError, ValueError) as exc:
                memory[contender][method] = None
                failures.append(f"memory worker ({contender}, {method}) failed: {exc}")
    result["memory"] = memory

    missed = e2e is not None and e2e["msgs_per_s"]["median"] <= TARGET_END_TO_END
    if profile == "always" or (profile == "auto" and missed and not quick):
        _say("[6/6] hotspots: cProfile of run_replay (end-to-end target missed)")
        try:
            result["hotspots"] = _worker("hotspots", path, "--json")
        except (RuntimeError, ValueError) as exc:
            result["hotspots"] = None
            failures.append(f"hotspots worker failed: {exc}")
    else:
        _say("[6/6] hotspots: skipped")
        result["hotspots"] = None

    result["verdict"] = _verdict(result)
    result["failures"] = failures
    result["ok"] = not failures
    result["load_end"] = _load()
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def _verdict(result: dict) -> dict:
    """Headline numbers and the targets, met or missed (speed never fails the suite)."""
    throughput, e2e, memory = result["throughput"], result["end_to_end"], result["memory"]
    verdict: dict = {}
    if throughput:
        verdict["plain_msgs_per_s"] = throughput["plain"]["msgs_per_s"]["median"]
        verdict["engine_msgs_per_s"] = throughput["engine"]["msgs_per_s"]["median"]
        verdict["engine_over_plain"] = throughput["ratio"]["median"]
        verdict["ratio_target_met"] = throughput["ratio"]["median"] >= TARGET_RATIO
    if e2e:
        verdict["end_to_end_msgs_per_s"] = e2e["msgs_per_s"]["median"]
        verdict["end_to_end_target_met"] = e2e["msgs_per_s"]["median"] > TARGET_END_TO_END
    for contender in ("engine", "plain"):
        for method in ("tracemalloc", "rss"):
            run = (memory.get(contender) or {}).get(method)
            if run and "bytes_per_order" in run:
                verdict[f"{contender}_bytes_per_order_{method}"] = run["bytes_per_order"]
    if result["agreement"]:
        verdict["agreement"] = result["agreement"]["ok"]
    led = result.get("ledger")
    if led:
        verdict["ledger_over_matching"] = led["ratios"]["ledger_over_matching"]["median"]
        verdict["journal_over_matching"] = led["ratios"]["journal_over_matching"]["median"]
        verdict["ledger_target_met"] = verdict["ledger_over_matching"] >= TARGET_LEDGER
        verdict["journal_target_met"] = verdict["journal_over_matching"] >= TARGET_JOURNAL
    return verdict


# --- report -----------------------------------------------------------------------------

def _n(value) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "-"


def _range(spread: dict, fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(spread['median'])}  [{fmt.format(spread['min'])} .. {fmt.format(spread['max'])}]"


def render(result: dict) -> str:
    """Return the readable table of *result*."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"carbonx benchmarks ({result['mode']}): {s['messages']:,} messages, mixed profile, "
        f"seed {s['seed']}; median [min .. max] of {s['repeat']} runs",
        f"  {m['implementation']} {m['python']} on {m['platform']}, {m['cpu']}, "
        f"{m['cpu_count']} CPUs, load {result['load_start']} -> {result.get('load_end')}",
        f"  carbonx {m['packages'].get('carbonx')} at {(m['git'].get('commit') or '?')[:12]}"
        + (f" + {len(m['git']['uncommitted_changes'])} uncommitted file(s)"
           if m["git"].get("uncommitted_changes") else ""),
        "",
    ]
    t = result["throughput"]
    if t:
        ratio = t["ratio"]
        lines += [
            "Throughput: one process, the same decoded commands, GC paused "
            f"(decode alone: {t['decode_msgs_per_s']:,} msgs/s)",
            f"  {'contender':<50}{'msgs/s  [min .. max]':>34}{'trades':>11}",
            f"  {'plain matcher (SortedDict + deque, ~80 lines)':<50}"
            f"{_range(t['plain']['msgs_per_s']):>34}{_n(t['plain']['trades']):>11}",
            f"  {'engine (validation, events, STP cancel_resting)':<50}"
            f"{_range(t['engine']['msgs_per_s']):>34}{_n(t['engine']['trades']):>11}",
            f"  {'engine / plain, per round':<50}{_range(ratio, '{:.3f}'):>34}"
            f"   target >= {TARGET_RATIO}: "
            f"{'met' if ratio['median'] >= TARGET_RATIO else 'MISSED'}",
            "",
        ]
    a = result["agreement"]
    if a:
        lines.append(f"Agreement, stp none: engine {a['engine_trades']:,} trades, plain "
                     f"{a['plain_trades']:,} trades: "
                     + ("identical, in order" if a["ok"] else
                        f"DIFFERENT (first at #{a.get('first_difference')})"))
    nv = result["naive"]
    if nv:
        lines.append(f"NaiveBook reference, first {nv['messages']:,} messages: "
                     f"{nv['naive_msgs_per_s']:,} msgs/s (FastBook {nv['fast_msgs_per_s']:,}); "
                     f"events and state hash "
                     + ("equal" if nv["ok"] else "DIFFERENT"))
    e = result["end_to_end"]
    if e and "msgs_per_s" in e:
        met = e["msgs_per_s"]["median"] > TARGET_END_TO_END
        lines += [
            "",
            "End to end: carbonx replay FILE --json, a fresh process per run",
            f"  {'msgs_per_s (read + decode + match)':<50}{_range(e['msgs_per_s']):>34}"
            f"   target > {TARGET_END_TO_END:,}: {'met' if met else 'MISSED'}",
            f"  {'engine_msgs_per_s (engine alone)':<50}{_range(e['engine_msgs_per_s']):>34}",
            f"  {'elapsed_s':<50}{_range(e['elapsed_s'], '{:.3f}'):>34}",
            f"  {'  of which read + decode s':<50}{_range(e['read_decode_s'], '{:.3f}'):>34}",
            f"  {'  of which engine s':<50}{_range(e['engine_s'], '{:.3f}'):>34}",
            f"  {'process wall s (start-up included)':<50}{_range(e['wall_s'], '{:.3f}'):>34}",
            f"  same result as the in-process engine: "
            f"{'yes' if e.get('matches_in_process_engine') else 'NO'}",
        ]
    led = result.get("ledger")
    if led:
        r = led["ratios"]
        lines += ["", f"Ledger and journal: carbonx replay of {led['file']} "
                      f"({led['messages']:,} messages, funded first), fresh processes",
                  f"  {'mode':<50}{'msgs/s  [min .. max]':>34}{'engine msgs/s':>16}"]
        for mode, label in (("matching", "matching only"), ("ledger", "--ledger"),
                            ("journal", "--ledger --journal (group commit + fsync)")):
            m = led["modes"][mode]
            lines.append(f"  {label:<50}{_range(m['msgs_per_s']):>34}"
                         f"{_n(m['engine_msgs_per_s']['median']):>16}")
        for key, label, target in (("ledger_over_matching", "ledger / matching", TARGET_LEDGER),
                                   ("journal_over_matching", "journal / matching", TARGET_JOURNAL)):
            met = r[key]["median"] >= target
            lines.append(f"  {label + ', per round':<50}{_range(r[key], '{:.3f}'):>34}"
                         f"   target >= {target}: {'met' if met else 'MISSED'}"
                         f"   (engine alone {r[key + '_engine']['median']:.3f})")
        if led.get("recovery"):
            rec = led["recovery"]
            lines.append(f"  carbonx holdings recovered {rec['seq']:,} commands from "
                         f"{rec['journal_bytes'] / 1e6:,.1f} MB of journal in {rec['wall_s']} s "
                         f"(snapshots: {', '.join(rec['snapshots']) or 'none'})")
    mem = result["memory"]
    lines += ["", f"Memory: {mem['orders']:,} resting orders "
                  f"({len(mem.get('instruments') or ())} instruments, "
                  f"{mem.get('levels_per_side')} levels a side), bytes per order",
              f"  {'contender':<12}{'tracemalloc':>14}{'RSS delta':>14}"]
    for contender in ("engine", "plain"):
        runs = mem.get(contender) or {}
        cells = [f"{runs[m]['bytes_per_order']:,.1f}" if runs.get(m) and "bytes_per_order" in runs[m]
                 else "-" for m in ("tracemalloc", "rss")]
        lines.append(f"  {contender:<12}{cells[0]:>14}{cells[1]:>14}")
    h = result.get("hotspots")
    if h:
        lines += ["", f"Where replay time goes (cProfile, inflates call costs): read + decode "
                      f"{h['read_decode_share']:.0%} of elapsed "
                      f"({h['profiled_read_decode_s']} s of {h['profiled_elapsed_s']} s); "
                      f"shares of {h['profiled_total_s']} s profiled, of which "
                      f"{h['state_hash_s']} s is the final state_hash, outside elapsed",
                  f"  {'own s':>8} {'share':>6} {'calls':>10}  function"]
        for row in h["top_own_time"][:12]:
            lines.append(f"  {row['own_s']:>8.3f} {row['own_share']:>6.1%} {row['calls']:>10,}"
                         f"  {row['function']}")
    lines.append("")
    if result["failures"]:
        lines.append("FAILED CHECKS:")
        lines += [f"  - {f}" for f in result["failures"]]
    else:
        lines.append("All checks passed (agreement, run-to-run equality, naive = fast, "
                     "replay = in-process engine). Speed targets are reported, not enforced.")
    lines.append(f"Total {result['total_s']} s")
    return "\n".join(lines)


def write_result(result: dict, out_dir: str | Path) -> Path:
    """Write *result* as JSON into *out_dir*, atomically; return the path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = "failed.json" if not result["ok"] else (
        "quick.json" if result["mode"] == "quick" else "latest.json")
    path = folder / name
    tmp = folder / f"{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("messages", "memory_orders", "naive_prefix", "repeat"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if settings["repeat"] < 3:
        print("python -m benchmarks: error: --repeat must be at least 3 (medians of fewer "
              "runs mean little)", file=sys.stderr)
        return 2
    if settings["messages"] < 1 or settings["memory_orders"] < 1 or settings["naive_prefix"] < 0:
        print("python -m benchmarks: error: sizes must be positive", file=sys.stderr)
        return 2
    result = run_suite(settings, seed=args.seed, profile=args.profile, data_dir=args.data,
                       quick=args.quick)
    path = write_result(result, args.out)
    print(render(result))
    print(f"Wrote {path}")
    if result["failures"]:
        print("\nBENCHMARK FAILED: " + "; ".join(result["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
