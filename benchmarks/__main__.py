"""``python -m benchmarks [--quick]``: the carbonx benchmark suite.

Stages, each measured in fresh processes (``sys.executable``) on seeded order files:

1. data        - the mixed profile (about 70% limit orders near the mid, 20% cancels,
                 10% marketable), the same funded (deposit and issue rows first), and the
                 carbon-market profile (``carbonx gen-orders --profile carbon``), cached
                 under benchmarks/data/;
2. contenders  - every contender in its own process on the identical funded stream:
                 the engine (matching only), the NaiveBook reference (on a prefix), the
                 plain matcher, and the PyPI peers pyorderbook and lightmatchingengine,
                 taking turns in rounds (ratios to the engine paired by round); their
                 ordered trade lists must equal the engine's (benchmarks/contenders.py);
3. end to end  - ``carbonx replay FILE --json``, a fresh process per run;
4. ledger      - ``carbonx replay --stp none`` of the funded file matching only, with
                 ``--ledger`` and with ``--ledger --journal``: two more contender rows;
5. latency     - per-message latency by kind, sampled with ``perf_counter_ns``, on the
                 mixed and the carbon profiles (benchmarks/latency.py);
6. scaling     - cost per message over 1,000 .. 1,000,000 resting orders and over
                 1 .. 1,000 instruments, a process per size (benchmarks/scaling.py);
7. memory      - bytes per resting order, engine and plain matcher, tracemalloc and RSS;
8. hotspots    - a cProfile summary of a replay when a target is missed (full runs).

Prints a table, writes the JSON result (``latest.json`` for a full run, ``quick.json`` for
``--quick``, ``failed.json`` when a check broke) and a Markdown report with PNG charts
(``latest-report/``, ``quick-report/``), compared with the previous result of the same
mode when there is one (regressions named). A broken check (contenders disagree, runs
differ, naive and fast books differ) fails the suite with exit status 1. Speed targets
are reported, never enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from . import contenders, data, endtoend, ledger, report
from .stats import parse_worker_output, shown_path, spread

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS_DIR = ROOT / "results"

TARGET_OVER_PEER = 3.0  # engine msgs/s over the fastest peer's, at least
TARGET_RATIO = 0.6  # engine msgs/s over plain msgs/s, at least
TARGET_SCALING = 1.25  # ns/msg at 1,000,000 resting orders over that at 1,000, at most
TARGET_P99_NS = 20_000  # p99 per-message latency, under
TARGET_END_TO_END = 300_000  # carbonx replay msgs_per_s, above
TARGET_PIPELINE = 0.5  # carbonx replay over the plain csv reader + plain matcher, at least
TARGET_LEDGER = 0.6  # replay --ledger over matching only, at least
TARGET_JOURNAL = 0.5  # replay --ledger --journal over matching only, at least
SCHEMA = 2

FULL = {
    "messages": 1_000_000,
    "carbon_messages": 1_000_000,
    "memory_orders": 1_000_000,
    "tracemalloc_orders": 200_000,
    "naive_prefix": 10_000,
    "repeat": 5,
    "peer_repeat": 3,
    "latency_every": 4,
    "scaling_messages": 200_000,
    "scaling_resting": (1_000, 10_000, 100_000, 1_000_000),
    "scaling_instruments": (1, 10, 100, 1_000),
    "registry_entities": 10_000,
    "clearing_positions": 100_000
}
QUICK = {
    "messages": 50_000,
    "carbon_messages": 50_000,
    "memory_orders": 100_000,
    "tracemalloc_orders": 20_000,
    "naive_prefix": 2_000,
    "repeat": 3,
    "peer_repeat": 3,
    "latency_every": 2,
    "scaling_messages": 20_000,
    "scaling_resting": (1_000, 10_000, 100_000),
    "scaling_instruments": (1, 10, 100),
    "registry_entities": 1_000,
    "clearing_positions": 10_000
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(
            "Benchmark carbonx beside its peers: every contender (engine, NaiveBook, plain "
            "matcher, pyorderbook, lightmatchingengine) in its own process on the same "
            "seeded stream, trades checked equal; end-to-end replay; ledger and journal; "
            "latency percentiles by message kind; scaling with resting orders and "
            "instruments; bytes per order. Writes JSON, a Markdown report and PNG charts. "
            "Full run: under ten minutes; --quick: under a minute."))
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (50,000 messages; scaling up to 100,000 orders)")
    parser.add_argument(
        "--messages", type=int, metavar="N",
        help="messages in the mixed and carbon files (default 1,000,000; quick 50,000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument(
        "--repeat", type=int, metavar="N",
        help="rounds of the engine and plain matcher contenders, a timed "
        "run each, and runs of the other carbonx stages; at least 3 "
        "(default 5; quick 3)")
    parser.add_argument("--memory-orders", type=int, metavar="N",
                        help="resting orders in the memory test (default 1,000,000; quick 100,000)")
    parser.add_argument("--naive-prefix", type=int, metavar="N",
                        help="messages run through NaiveBook (default 10,000; quick 2,000)")
    parser.add_argument(
        "--profile", choices=("auto", "always", "never"), default="auto",
        help="cProfile the replay: auto = a full run that misses a speed target (default)")
    parser.add_argument(
        "--out", metavar="DIR", default=str(RESULTS_DIR),
        help="where the JSON result and the report go (default benchmarks/results/)")
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
                              timeout=10).stdout

    try:
        commit = run("rev-parse", "HEAD").strip()
        # Porcelain lines are "XY path": never strip the output, X may be a space.
        changed = [
            ln[3:] for ln in run("status", "--porcelain", "--", "exchange", "gateway",
                                 "benchmarks").splitlines() if ln
        ]
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
    for name in ("carbonx", "msgspec", "sortedcontainers", "pyorderbook", "lightmatchingengine",
                 "matplotlib"):
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
        "executable": shown_path(sys.executable),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": _memory_total(),
        "packages": packages,
        "git": _git()
    }


# --- stages -----------------------------------------------------------------------------


def _worker(module: str, *args: str) -> dict:
    """Run ``python -m benchmarks.<module> ARGS`` in a fresh process; return its result."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:])} exited {done.returncode}:\n{done.stderr.strip()[-3000:]}")
    return parse_worker_output(done.stdout)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _shown(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def _stage(failures: list[str], what: str, action):
    """Run *action*; on a worker or parsing failure record it and return ``None``."""
    try:
        return action()
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        failures.append(f"{what} failed: {exc}")
        return None


def run_suite(settings: dict, *, seed: int = 1, profile: str = "auto",
              data_dir: str | Path | None = None, quick: bool = False) -> dict:
    """Run every stage with *settings* (sizes); return the whole result record."""
    started = time.perf_counter()
    failures: list[str] = []
    result: dict = {
        "schema": SCHEMA,
        "suite": "carbonx benchmarks",
        "mode": "quick" if quick else "full",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            **settings, "seed": seed
        },
        "targets": {
            "engine_over_fastest_peer_at_least": TARGET_OVER_PEER,
            "engine_over_plain_at_least": TARGET_RATIO,
            "largest_over_smallest_book_ns_per_msg_at_most": TARGET_SCALING,
            "p99_latency_ns_under": TARGET_P99_NS,
            "end_to_end_msgs_per_s_above": TARGET_END_TO_END,
            "end_to_end_over_plain_pipeline_at_least": TARGET_PIPELINE,
            "ledger_over_matching_at_least": TARGET_LEDGER,
            "journal_over_matching_at_least": TARGET_JOURNAL
        },
        "machine": machine_info(),
        "load_start": _load()
    }
    messages = settings["messages"]
    stage_s: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stage_s[name] = round(now - clock[0], 1)
        clock[0] = now

    _say(f"[1/9] data: mixed, funded mixed and carbon profiles, {messages:,} messages, seed {seed}")
    files = {}
    for key, profile_name, fund, size in (("mixed", "mixed", False, messages), ("funded", "mixed",
                                                                                True, messages),
                                          ("carbon", "carbon", False, settings["carbon_messages"])):
        facts = data.order_file(profile_name, size, seed=seed, data_dir=data_dir, fund=fund)
        files[key] = facts["path"]
        result.setdefault("data", {})[key] = {**facts, "path": _shown(facts["path"])}

    lap("data")
    _say(f"[2/9] contenders, each in its own process on {_shown(files['funded'])}")
    section = _stage(
        failures, "contenders",
        lambda: contenders.measure(files["funded"], repeat=settings["repeat"], peer_repeat=settings[
            "peer_repeat"], naive_prefix=settings["naive_prefix"], worker=_worker, say=_say))
    if section is not None:
        failures += section.pop("failures")
        section.update(file=_shown(files["funded"]), repeat=settings["repeat"],
                       peer_repeat=settings["peer_repeat"])
    result["contenders"] = section

    lap("contenders")
    _say(f"[3/9] end to end: carbonx replay --json and the plain pipeline, "
         f"{settings['repeat']} fresh processes each")
    e2e = _stage(failures, "end to end",
                 lambda: endtoend.measure(files["mixed"], repeat=settings["repeat"]))
    if e2e is not None:
        failures += e2e.pop("failures")
        # Beside it, the plain pipeline (csv module + plain matcher) on the same file.
        pipeline = [_worker("pipeline", files["mixed"]) for _ in range(settings["repeat"])]
        e2e["plain_pipeline_msgs_per_s"] = spread([r["msgs_per_s"] for r in pipeline], 0)
        e2e["over_plain_pipeline"] = round(
            e2e["msgs_per_s"]["median"] / e2e["plain_pipeline_msgs_per_s"]["median"], 3)
    result["end_to_end"] = e2e

    lap("end_to_end")
    _say(f"[4/9] ledger: replay --stp none matching only, --ledger, --ledger --journal; "
         f"{settings['peer_repeat']} rounds of fresh processes")
    led = _stage(
        failures, "ledger stage",
        lambda: ledger.measure(files["funded"], repeat=settings["peer_repeat"], stp="none"))
    if led is not None:
        failures += led.pop("failures")
        led["file"] = Path(files["funded"]).name
        if section is not None:
            _ledger_rows(section, led, failures)
    result["ledger"] = led

    lap("ledger")
    _say(f"[5/9] latency: one message in {settings['latency_every']} timed, mixed and carbon")
    latency: dict | None = {"sample_every": settings["latency_every"], "profiles": {}}
    for key in ("mixed", "carbon"):
        run = _stage(
            failures, f"latency ({key})", lambda key=key: _worker("latency", files[key], "--every",
                                                                  str(settings["latency_every"])))
        if run is not None:
            latency["timer_overhead_ns"] = run.pop("timer_overhead_ns")
            run["file"] = _shown(run["file"])
            latency["profiles"][key] = run
    result["latency"] = latency if latency["profiles"] else None
    mixed_run = latency["profiles"].get("mixed")
    if e2e is not None and mixed_run is not None:
        # The replay and the in-process engine of the latency run read the same file.
        e2e["matches_in_process_engine"] = all(
            e2e.get(k) == mixed_run.get(k) for k in ("trades", "volume", "state_hash"))
        if not e2e["matches_in_process_engine"]:
            failures.append(f"end to end: the replay's result differs from the in-process "
                            f"engine's ({e2e.get('state_hash')} != {mixed_run['state_hash']})")

    lap("latency")
    _say(f"[6/9] scaling: {settings['scaling_messages']:,} messages over "
         f"{', '.join(f'{n:,}' for n in settings['scaling_resting'])} resting orders and "
         f"{', '.join(map(str, settings['scaling_instruments']))} instruments")
    result["scaling"] = _stage(failures, "scaling", lambda: _scaling(settings, seed, data_dir))

    lap("scaling")
    orders = settings["memory_orders"]
    # tracemalloc slows allocation several times over: it counts a smaller book.
    traced = min(orders, settings["tracemalloc_orders"])
    _say(f"[7/9] memory: engine and plain, RSS with {orders:,} resting orders, "
         f"tracemalloc with {traced:,}")
    memory: dict = {"orders": orders, "tracemalloc_orders": traced}
    for contender in ("engine", "plain"):
        memory[contender] = {}
        for method, count in (("tracemalloc", traced), ("rss", orders)):
            run = _stage(
                failures, f"memory worker ({contender}, {method})",
                lambda contender=contender, method=method, count=count: _worker(
                    "memory", "--contender", contender, "--method", method, "--orders", str(count)))
            memory[contender][method] = run
            if run:
                memory["instruments"] = run.get("instruments")
                memory["levels_per_side"] = run.get("levels_per_side")
    result["memory"] = memory

    lap("memory")
    entities, positions = settings["registry_entities"], settings["clearing_positions"]
    _say(f"[8/9] registry and clearing: a compliance year of {entities:,} entities; the "
         f"daily settlement of {positions:,} futures positions; 3 runs each")
    registry = _stage(
        failures,
        "registry worker", lambda: _worker("registry", "--entities", str(entities), "--positions",
                                           str(positions), "--repeat", "3"))
    if registry is not None and not registry["compliance"]["state_hash"]:
        failures.append("registry: the compliance year's state hash differed between runs")
    result["registry"] = registry

    lap("registry")
    result["verdict"] = _verdict(result)
    missed = [t["name"] for t in result["verdict"]["targets"] if not t["met"]]
    if profile == "always" or (profile == "auto" and missed and not quick):
        _say("[9/9] hotspots: cProfile of run_replay (a target was missed)")
        result["hotspots"] = _stage(failures, "hotspots worker",
                                    lambda: _worker("hotspots", files["mixed"], "--json"))
    else:
        _say("[9/9] hotspots: skipped")
        result["hotspots"] = None

    lap("hotspots")
    result["stage_s"] = stage_s
    result["failures"] = failures
    result["ok"] = not failures
    result["load_end"] = _load()
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def _ledger_rows(section: dict, led: dict, failures: list[str]) -> None:
    """Add the ledger stage's ``--ledger`` and ``--journal`` replays as contender rows."""
    engine = next((r for r in section["rows"] if r["name"] == "engine"), None)
    version = metadata.version("carbonx") if engine is None else engine["version"]
    for mode, label, note in (("ledger", "carbonx engine + ledger",
                               "pre-trade risk holds and settlement of "
                               "every trade; carbonx replay --ledger, engine time"),
                              ("journal", "carbonx engine + ledger + journal",
                               "the same, every command "
                               "journaled first (group commit of 4,096, fsync each); engine time")):
        runs = led["runs"][mode]
        speed = led["modes"][mode]["engine_msgs_per_s"]
        row = {
            "name": f"engine_{mode}",
            "label": label,
            "group": "carbonx",
            "version": version,
            "note": note,
            "messages_sent": led["messages"],
            "left_out": {},
            "emulated": {},
            "runs_s": [r["engine_s"] for r in runs],
            "msgs_per_s": speed,
            "trades": led["trades"],
            "volume": led["volume"],
            "prefix": None
        }
        if engine is None:
            row.update(agrees=None, agreement="no engine run to compare with")
        elif (led["trades"], led["volume"]) == (engine["trades"], engine["volume"]):
            row.update(agrees=True,
                       agreement=f"same trade count and volume ({led['trades']:,} trades)")
        else:
            row.update(
                agrees=False, agreement=f"{led['trades']:,} trades, volume "
                f"{led['volume']:,}; the engine {engine['trades']:,}, {engine['volume']:,}")
            failures.append(f"engine_{mode}: {row['agreement']}")
        if engine is not None:
            row["ratio_to_engine"] = round(speed["median"] / engine["msgs_per_s"]["median"], 4)
        names = [r["name"] for r in section["rows"]]
        after = names.index("engine_ledger" if mode == "journal" else "engine") if engine else -1
        section["rows"].insert(after + 1 if engine else len(names), row)
    # the matching-only replay must end where the in-process engine ended
    if engine is not None and led["modes"]["matching"]["state_hash"] != engine["state_hash"]:
        failures.append("ledger stage: the matching-only replay's state hash differs from "
                        "the engine contender's")


def _scaling(settings: dict, seed: int, data_dir) -> dict:
    facts = data.order_file("mixed", settings["scaling_messages"], seed=seed, data_dir=data_dir)
    path = facts["path"]
    # The sizes take turns in rounds, a fresh process each (its median of
    # SCALING_REPEAT runs), and a ratio is the median of the rounds' ratios: this VM's
    # speed drifts over minutes by more than the differences measured (see
    # benchmarks/contenders.py), and one 0.3 s run alone is at the mercy of a hiccup.
    axes = {"resting": settings["scaling_resting"], "instruments": settings["scaling_instruments"]}
    records: dict = {axis: {size: [] for size in sizes} for axis, sizes in axes.items()}
    for _ in range(SCALING_ROUNDS):
        for axis, sizes in axes.items():
            for size in sizes:
                records[axis][size].append(
                    _worker("scaling", axis, str(size), path, "--repeat", str(SCALING_REPEAT)))
    result = {
        "messages": settings["scaling_messages"],
        "file": _shown(path),
        "rounds": SCALING_ROUNDS
    }
    for axis, sizes in axes.items():
        rows = [_scaling_row(records[axis][size]) for size in sizes]
        smallest, largest = records[axis][sizes[0]], records[axis][sizes[-1]]
        paired = [
            statistics.median(big["runs_s"]) / statistics.median(small["runs_s"])
            for big, small in zip(largest, smallest)
        ]
        result[axis] = rows
        result[f"{axis}_ratio_rounds"] = [round(r, 3) for r in paired]
        result[f"{axis}_ratio_largest_to_smallest"] = round(statistics.median(paired), 3)
    return result


SCALING_ROUNDS = 3
SCALING_REPEAT = 3  # timed runs in each process, on a fresh engine each


def _scaling_row(records: list[dict]) -> dict:
    """One size's row from its per-round records: every round's run, one result."""
    row = dict(records[0])
    runs = [seconds for record in records for seconds in record["runs_s"]]
    row.update(runs_s=runs, ns_per_msg=spread([s / row["messages"] * 1e9 for s in runs], 1),
               trades=sorted({t
                              for record in records
                              for t in record["trades"]}))
    grown = [r["bytes_per_order"] for r in records if r.get("bytes_per_order") is not None]
    if grown:
        row["bytes_per_order"] = min(grown)
    return row


def _target(name: str, target: str, value, met: bool) -> dict:
    return {"name": name, "target": target, "value": value, "met": bool(met)}


def _verdict(result: dict) -> dict:
    """Headline numbers and the targets, met or missed (speed never fails the suite)."""
    verdict: dict = {"targets": []}
    targets = verdict["targets"]
    section = result.get("contenders")
    rows = {r["name"]: r for r in section["rows"]} if section else {}
    engine = rows.get("engine")
    if engine:
        verdict["engine_msgs_per_s"] = engine["msgs_per_s"]["median"]
        peers = [r for r in rows.values() if r["group"] == "peer"]
        if peers:
            # Paired by round (benchmarks/contenders.py): the median of the rounds' ratios.
            fastest = max(peers, key=lambda r: r["ratio_to_engine"])
            ratio = round(1 / fastest["ratio_to_engine"], 3)
            verdict["fastest_peer"] = fastest["name"]
            verdict["engine_over_fastest_peer"] = ratio
            targets.append(
                _target(f"engine / fastest peer ({fastest['name']})", f">= {TARGET_OVER_PEER}",
                        ratio, ratio >= TARGET_OVER_PEER))
        if "plain" in rows:
            ratio = rows["plain"]["ratio_to_engine"]
            value = round(1 / ratio, 3) if ratio else 0.0
            verdict["engine_over_plain"] = value
            same = rows["plain"].get("ratio_to_engine_same_process")
            if same:
                verdict["engine_over_plain_same_process"] = round(1 / same, 3)
            targets.append(
                _target("engine / plain matcher", f">= {TARGET_RATIO}", value, value
                        >= TARGET_RATIO))
        verdict["agreement"] = all(r.get("agrees") is not False for r in rows.values())
    scaling = result.get("scaling")
    if scaling:
        ratio = scaling["resting_ratio_largest_to_smallest"]
        sizes = scaling["resting"]
        targets.append(
            _target(f"ns/msg at {sizes[-1]['resting']:,} resting / at {sizes[0]['resting']:,}",
                    f"<= {TARGET_SCALING}", ratio, ratio <= TARGET_SCALING))
    latency = result.get("latency")
    if latency:
        for key, run in latency["profiles"].items():
            p99 = run["all"]["p99_ns"]
            verdict[f"p99_ns_{key}"] = p99
            targets.append(
                _target(f"p99 latency, {key} profile (ns)", f"< {TARGET_P99_NS:,}", p99, p99
                        < TARGET_P99_NS))
    e2e = result.get("end_to_end")
    if e2e:
        value = e2e["msgs_per_s"]["median"]
        verdict["end_to_end_msgs_per_s"] = value
        targets.append(
            _target("end to end, carbonx replay msgs/s", f"> {TARGET_END_TO_END:,}", value, value
                    > TARGET_END_TO_END))
        ratio = e2e.get("over_plain_pipeline")
        if ratio is not None:
            verdict["end_to_end_over_plain_pipeline"] = ratio
            targets.append(
                _target("end to end / plain csv reader + plain matcher",
                        f">= {TARGET_PIPELINE}", ratio, ratio >= TARGET_PIPELINE))
    led = result.get("ledger")
    if led:
        for key, target in (("ledger_over_matching", TARGET_LEDGER), ("journal_over_matching",
                                                                      TARGET_JOURNAL)):
            value = led["ratios"][key]["median"]
            verdict[key] = value
            targets.append(_target(key.replace("_", " "), f">= {target}", value, value >= target))
    memory = result.get("memory") or {}
    for contender in ("engine", "plain"):
        for method in ("tracemalloc", "rss"):
            run = (memory.get(contender) or {}).get(method)
            if run and "bytes_per_order" in run:
                verdict[f"{contender}_bytes_per_order_{method}"] = run["bytes_per_order"]
    return verdict


# --- report -----------------------------------------------------------------------------


def _n(value) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "-"


def _range(spread: dict, fmt: str = "{:,.0f}") -> str:
    low, high = fmt.format(spread["min"]), fmt.format(spread["max"])
    return f"{fmt.format(spread['median'])}  [{low} .. {high}]"


def _kinds_cell(row: dict) -> str:
    parts = [
        f"left out {', '.join(f'{k} {v:,}' for k, v in row['left_out'].items())}"
        if row.get("left_out") else "",
        f"emulated {', '.join(row['emulated'])}" if row.get("emulated") else ""
    ]
    return "; ".join(p for p in parts if p)


def render(result: dict) -> str:
    """Return the readable table of *result*."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"carbonx benchmarks ({result['mode']}): {s['messages']:,} messages, seed {s['seed']}; "
        f"median [min .. max]",
        f"  {m['implementation']} {m['python']} on {m['platform']}, {m['cpu']}, "
        f"{m['cpu_count']} CPUs, load {result['load_start']} -> {result.get('load_end')}",
        f"  carbonx {m['packages'].get('carbonx')} at {(m['git'].get('commit') or '?')[:12]}" +
        (f" + {len(m['git']['uncommitted_changes'])} uncommitted file(s)"
         if m["git"].get("uncommitted_changes") else "") + "; " +
        ", ".join(f"{k} {v}" for k, v in m["packages"].items() if k != "carbonx"), ""
    ]
    c = result.get("contenders")
    if c:
        lines += [
            f"Contenders: each in its own process on {c['file']} "
            f"({c['messages']:,} messages, stp none), GC paused",
            f"  {'contender':<44}{'msgs/s  [min .. max]':>34}{'x engine':>10}"
            f"{'trades':>10}  agrees"
        ]
        for row in c["rows"]:
            agrees = {True: "yes", False: "NO", None: "-"}[row.get("agrees")]
            label = row["label"] + (f" (first {row['prefix']:,})" if row.get("prefix") else "")
            lines.append(f"  {label:<44}{_range(row['msgs_per_s']):>34}"
                         f"{row.get('ratio_to_engine', 0):>10.3f}{_n(row['trades']):>10}  {agrees}")
            extra = _kinds_cell(row)
            if extra or row.get("agrees") is False:
                lines.append(f"  {'':<4}{extra}{'; ' if extra else ''}" +
                             (row["agreement"] if row.get("agrees") is not True else ""))
        for name, why in (c.get("skipped") or {}).items():
            lines.append(f"  {name}: not run, {why}")
        naive = next((r for r in c["rows"] if r["name"] == "naive"), None)
        if naive and naive.get("engine_same_prefix_msgs_per_s"):
            lines.append(f"  (on the naive prefix the engine makes "
                         f"{naive['engine_same_prefix_msgs_per_s']['median']:,} msgs/s)")
        plain = next((r for r in c["rows"] if r["name"] == "plain"), None)
        if plain and plain.get("ratio_to_engine_same_process"):
            lines.append(f"  (in the plain matcher's own process the engine makes "
                         f"{plain['engine_same_process_msgs_per_s']['median']:,} msgs/s: "
                         f"engine / plain {1 / plain['ratio_to_engine_same_process']:.3f})")
        lines.append("")
    e = result.get("end_to_end")
    if e and "msgs_per_s" in e:
        lines += [
            "End to end: carbonx replay FILE --json (mixed profile), a fresh process per run",
            f"  {'msgs_per_s (read + decode + match)':<50}{_range(e['msgs_per_s']):>34}",
            f"  {'engine_msgs_per_s (engine alone)':<50}{_range(e['engine_msgs_per_s']):>34}",
            f"  {'process wall s (start-up included)':<50}{_range(e['wall_s'], '{:.3f}'):>34}", ""
        ]
    led = result.get("ledger")
    if led and led.get("recovery"):
        rec = led["recovery"]
        lines += [
            f"Journal recovery: carbonx holdings recovered {rec['seq']:,} commands from "
            f"{rec['journal_bytes'] / 1e6:,.1f} MB in {rec['wall_s']} s", ""
        ]
    lat = result.get("latency")
    if lat:
        lines.append(f"Latency per message inside the engine, one in {lat['sample_every']} "
                     f"timed (timer cost {lat.get('timer_overhead_ns')} ns, included)")
        lines.append(f"  {'profile / kind':<28}{'n':>9}{'p50 us':>9}{'p99 us':>9}"
                     f"{'p99.9 us':>10}{'max us':>10}")
        for key, run in lat["profiles"].items():
            for kind, row in [*run["kinds"].items(), ("all", run["all"])]:
                lines.append(f"  {key + ' / ' + kind:<28}{row['n']:>9,}{row['p50_ns'] / 1e3:>9.2f}"
                             f"{row['p99_ns'] / 1e3:>9.2f}{row['p999_ns'] / 1e3:>10.2f}"
                             f"{row['max_ns'] / 1e3:>10.1f}")
        lines.append("")
    sc = result.get("scaling")
    if sc:
        lines.append(f"Scaling: {sc['messages']:,} messages of the mixed profile, ns per message")
        lines.append("  " + "   ".join(
            f"{r['resting']:,} resting: {r['ns_per_msg']['median']:,.0f}" +
            (f" ({r['bytes_per_order']:.0f} B/order)" if r.get("bytes_per_order") else "")
            for r in sc["resting"]))
        lines.append("  " + "   ".join(
            f"{r['instruments']:,} instruments: {r['ns_per_msg']['median']:,.0f}"
            for r in sc["instruments"]))
        lines.append("")
    mem = result.get("memory")
    if mem:
        lines += [
            f"Memory: bytes per resting order, with {mem.get('tracemalloc_orders', 0):,} "
            f"(tracemalloc) and {mem['orders']:,} (RSS) orders resting",
            f"  {'contender':<12}{'tracemalloc':>14}{'RSS delta':>14}"
        ]
        for contender in ("engine", "plain"):
            runs = mem.get(contender) or {}
            cells = [
                f"{runs[k]['bytes_per_order']:,.1f}"
                if runs.get(k) and "bytes_per_order" in runs[k] else "-"
                for k in ("tracemalloc", "rss")
            ]
            lines.append(f"  {contender:<12}{cells[0]:>14}{cells[1]:>14}")
        lines.append("")
    compliance = (result.get("registry") or {}).get("compliance")
    if compliance:
        took = compliance["seconds"]
        lines += [
            f"Registry: a compliance year of {compliance['entities']:,} entities in "
            f"{took['median']:.2f} s (min {took['min']:.2f}, max {took['max']:.2f}), "
            f"{compliance['commands']:,} commands, {compliance['commands_per_s']:,}/s"
        ]
        settlement = result["registry"].get("settlement")
        if settlement:
            took = settlement["seconds"]
            lines.append(f"Clearing: daily settlement of {settlement['positions']:,} futures "
                         f"positions in {took['median']:.3f} s "
                         f"({settlement['positions_per_s']:,} positions/s)")
        lines.append("")
    lines.append("Targets")
    for t in result["verdict"]["targets"]:
        value = t["value"]
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        lines.append(
            f"  {t['name']:<52}{shown:>14}  {t['target']:<12}{'met' if t['met'] else 'MISSED'}")
    h = result.get("hotspots")
    if h:
        lines += [
            "", f"Where replay time goes (cProfile, inflates call costs): read + decode "
            f"{h['read_decode_share']:.0%} of elapsed",
            f"  {'own s':>8} {'share':>6} {'calls':>10}  function"
        ]
        for row in h["top_own_time"][:10]:
            lines.append(f"  {row['own_s']:>8.3f} {row['own_share']:>6.1%} {row['calls']:>10,}"
                         f"  {row['function']}")
    lines.append("")
    if result["failures"]:
        lines.append("FAILED CHECKS:")
        lines += [f"  - {f}" for f in result["failures"]]
    else:
        lines.append("All checks passed (contenders agree, run-to-run equality, naive = fast, "
                     "replay = in-process engine). Speed targets are reported, not enforced.")
    stages = result.get("stage_s") or {}
    lines.append(f"Total {result['total_s']} s" +
                 (f" ({', '.join(f'{k} {v}' for k, v in stages.items())})" if stages else ""))
    return "\n".join(lines)


def write_result(result: dict, out_dir: str | Path) -> Path:
    """Write *result* as JSON into *out_dir*, atomically; return the path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result_name(result)}.json"
    tmp = folder / f"{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def result_name(result: dict) -> str:
    """``latest`` for a full run, ``quick`` for --quick, ``failed`` when a check broke."""
    return "failed" if not result["ok"] else ("quick" if result["mode"] == "quick" else "latest")


def _previous(folder: Path, result: dict) -> dict | None:
    """Return the last result of the same mode in *folder*, if one can be read."""
    try:
        old = json.loads(
            (folder / f"{'quick' if result['mode'] == 'quick' else 'latest'}.json").read_text())
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.messages is not None:
        settings["messages"] = settings["carbon_messages"] = args.messages
    for key in ("memory_orders", "naive_prefix", "repeat"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if settings["repeat"] < 3:
        print(
            "python -m benchmarks: error: --repeat must be at least 3 (medians of fewer "
            "runs mean little)", file=sys.stderr)
        return 2
    if settings["messages"] < 1 or settings["memory_orders"] < 1 or settings["naive_prefix"] < 1:
        print("python -m benchmarks: error: sizes must be positive", file=sys.stderr)
        return 2
    settings["naive_prefix"] = min(settings["naive_prefix"], settings["messages"])
    settings["scaling_messages"] = min(settings["scaling_messages"], settings["messages"])
    out = Path(args.out)
    previous = _previous(out, {"mode": "quick" if args.quick else "full"})
    # The stages' processes run in the repository: a relative --data is taken from here.
    result = run_suite(settings, seed=args.seed, profile=args.profile,
                       data_dir=Path(args.data).resolve(), quick=args.quick)
    compared = report.compare(previous, result) if previous else None
    if compared:
        result["compared"] = {
            "with": compared["old"],
            "regressions": compared["regressions"],
            "improvements": compared["improvements"]
        }
    path = write_result(result, out)
    written = report.write_report(result, out / f"{result_name(result)}-report", compared=compared)
    print(render(result))
    if compared:
        print(f"Compared with the previous {result['mode']} run "
              f"({compared['old'].get('created_utc')}): "
              f"{len(compared['regressions'])} regression(s)" +
              (": " + "; ".join(compared["regressions"]) if compared["regressions"] else "") +
              f", {len(compared['improvements'])} improvement(s)")
    print(f"Wrote {path} and {written['report']}")
    if result["failures"]:
        print("\nBENCHMARK FAILED: " + "; ".join(result["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
