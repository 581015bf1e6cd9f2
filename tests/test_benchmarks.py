"""The benchmark suite runs, checks agreement, and writes the result it promises.

Speed is never asserted here (the machine is shared and noisy); correctness is: every
contender whose semantics match must trade exactly like the engine, in order, and the
suite must notice when one does not.
"""

from __future__ import annotations

import doctest
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as suite
from benchmarks import contenders, endtoend, latency, memory, peers, scaling, stats
from exchange import Engine, default_market
from exchange.orderfile import read_order_file
from gateway.tools.genorders import CARBON_HEADER, generate_carbon, generate_mixed, write_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "mixed.csv"
    write_rows(path, generate_mixed(3000, seed=5, fund=True), "csv")
    return path


@pytest.fixture(scope="module")
def carbon_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "carbon.csv"
    write_rows(path, generate_carbon(3000, seed=5), "csv", CARBON_HEADER)
    return path


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One quick suite run at tiny sizes, in a fresh process, as a user would start it:
    from a directory of its own, with relative --out and --data (the stages' processes
    run in the repository, and once took --data from there)."""
    base = tmp_path_factory.mktemp("suite")
    done = subprocess.run([
        sys.executable, "-m", "benchmarks", "--quick", "--messages", "4000", "--memory-orders",
        "3000", "--naive-prefix", "800", "--profile", "never", "--out", "results", "--data",
        "data"
    ], cwd=base, capture_output=True, text=True, timeout=180)
    return done, base / "results"


def _trades(adapter_name: str, path: Path) -> tuple[list, object]:
    adapter = peers.make(adapter_name)
    prepared = adapter.prepare(read_order_file(path, default_stp="none"))
    state = adapter.run(prepared)
    if isinstance(adapter, peers.EngineAdapter):
        return adapter.verify(prepared)[0], adapter
    return adapter.trades(state), adapter


# --- the whole suite --------------------------------------------------------------------


def test_quick_suite_passes_and_writes_the_expected_json(quick_result):
    done, results = quick_result
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads((results / "quick.json").read_text())
    assert not (results / "latest.json").exists()  # a quick run never replaces the full one
    assert {
        "schema", "mode", "created_utc", "settings", "targets", "machine", "data", "contenders",
        "end_to_end", "ledger", "latency", "scaling", "memory", "registry", "hotspots", "verdict",
        "failures", "ok", "total_s"
    } <= result.keys()
    assert result["ok"] is True and result["failures"] == []
    assert result["mode"] == "quick" and result["settings"]["messages"] == 4000
    assert {"pyorderbook", "lightmatchingengine"} <= result["machine"]["packages"].keys()

    rows = {row["name"]: row for row in result["contenders"]["rows"]}
    assert list(rows) == [
        "engine", "engine_ledger", "engine_journal", "naive", "plain", "pyorderbook",
        "lightmatchingengine"
    ]
    engine = rows["engine"]
    assert engine["trades"] > 0 and engine["ratio_to_engine"] == 1.0
    for name, row in rows.items():
        assert row["agrees"] is True, (name, row["agreement"])
        assert {"median", "min", "max", "n"} <= row["msgs_per_s"].keys()
        assert row["msgs_per_s"]["median"] > 0 and row["ratio_to_engine"] > 0
        if row["prefix"] is None:
            assert (row["trades"], row["volume"]) == (engine["trades"], engine["volume"])
    assert rows["naive"]["prefix"] == 800 and 0 < rows["naive"]["trades"] < engine["trades"]
    for name in ("plain", "pyorderbook", "lightmatchingengine"):
        assert rows[name]["left_out"] == {"deposit": 50, "issue": 50}
        assert "identical ordered trade list" in rows[name]["agreement"]
    for name in ("pyorderbook", "lightmatchingengine"):
        assert rows[name]["group"] == "peer" and rows[name]["version"]
        assert "ioc" in rows[name]["emulated"]
    # The contenders take turns in rounds, a process and a timed run each; a ratio to
    # the engine is the median of the ratios paired by round.
    settings = result["settings"]
    assert result["contenders"]["rounds"] == settings["repeat"]
    for name in ("engine", "naive", "plain", "pyorderbook", "lightmatchingengine"):
        row = rows[name]
        expected = settings["repeat"] if name in ("engine", "plain") else settings["peer_repeat"]
        assert row["rounds"] == len(row["runs_s"]) == expected
        paired = row["ratio_to_engine_rounds"]
        assert len(paired) == expected and row["ratio_to_engine"] == statistics.median(paired)
    assert set(rows["engine"]["ratio_to_engine_rounds"]) == {1.0}
    # ... and the engine is also timed in the plain matcher's own process, each round
    plain = rows["plain"]
    assert plain["engine_same_process_msgs_per_s"]["n"] == settings["repeat"]
    assert plain["ratio_to_engine_same_process"] > 0
    assert result["verdict"]["engine_over_plain_same_process"] == round(
        1 / plain["ratio_to_engine_same_process"], 3)
    fastest = max(("pyorderbook", "lightmatchingengine"), key=lambda n: rows[n]["ratio_to_engine"])
    assert result["verdict"]["engine_over_fastest_peer"] == round(
        1 / rows[fastest]["ratio_to_engine"], 3)

    e2e = result["end_to_end"]
    assert e2e["matches_in_process_engine"] is True and len(e2e["runs"]) >= 3
    for run in e2e["runs"]:
        assert set(endtoend.PINNED_KEYS) <= run.keys()
        assert run["accepted"] + run["rejected"] == run["messages"] == 4000

    led = result["ledger"]
    assert set(led["modes"]) == {"matching", "ledger", "journal"}
    assert led["modes"]["ledger"]["state_hash"] == led["modes"]["journal"]["state_hash"]
    assert led["modes"]["matching"]["state_hash"] == engine["state_hash"]
    assert led["recovery"]["seq"] == 4000

    profiles = result["latency"]["profiles"]
    assert set(profiles) == {"mixed", "carbon"}
    assert {"new_limit_rest", "new_limit_cross", "cancel",
            "new_ioc"} <= profiles["mixed"]["kinds"].keys()
    assert {"amend", "new_market", "new_fok", "eod"} <= profiles["carbon"]["kinds"].keys()
    for run in profiles.values():
        every = run["all"]
        assert every["n"] == run["sampled"] == sum(k["n"] for k in run["kinds"].values())
        assert every["p50_ns"] <= every["p99_ns"] <= every["p999_ns"] <= every["max_ns"]
        assert sum(run["histogram"]["counts"]["all"]) == every["n"]

    sc = result["scaling"]
    assert [r["resting"] for r in sc["resting"]] == [1000, 10_000, 100_000]
    assert [r["instruments"] for r in sc["instruments"]] == [1, 10, 100]
    # the resting orders never trade: every size makes the same trades, in every round
    assert len({tuple(r["trades"]) for r in sc["resting"]}) == 1
    assert all(len(r["trades"]) == 1 for r in sc["resting"])
    # the sizes take turns in rounds; each ratio is the median of the rounds' ratios
    for axis, rows in (("resting", sc["resting"]), ("instruments", sc["instruments"])):
        assert all(len(r["runs_s"]) == sc["rounds"] * 3 == 9 for r in rows)
        by_round = [[statistics.median(r["runs_s"][i:i + 3]) for i in range(0, 9, 3)]
                    for r in (rows[-1], rows[0])]
        paired = [big / small for big, small in zip(*by_round)]
        assert sc[f"{axis}_ratio_rounds"] == [round(r, 3) for r in paired]
        assert sc[f"{axis}_ratio_largest_to_smallest"] == round(statistics.median(paired), 3)

    compliance = result["registry"]["compliance"]
    assert compliance["entities"] == 1000 and compliance["rejected"] == {}
    assert compliance["state_hash"] and compliance["seconds"]["n"] == 3  # same on every run
    assert 0 < compliance["short"] < 1000
    settlement = result["registry"]["settlement"]
    assert settlement["positions"] == 10_000 and settlement["seconds"]["n"] == 3
    assert settlement["events_per_eod"] > 10_000  # a variation margin for every position

    names = [t["name"] for t in result["verdict"]["targets"]]
    assert any(n.startswith("engine / fastest peer") for n in names)
    assert any(n.startswith("p99 latency") for n in names) and len(names) >= 7

    report_dir = results / "quick-report"
    text = (report_dir / "report.md").read_text()
    assert "pyorderbook" in text and "lightmatchingengine" in text
    assert "## Registry and clearing" in text and "1,000 entities" in text
    assert "10,000 open futures positions" in text
    for chart in ("throughput", "latency", "scaling"):
        assert (report_dir / f"{chart}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Contenders: each in its own process" in done.stdout and "Targets" in done.stdout


def test_a_second_run_is_compared_with_the_first(quick_result, tmp_path):
    done, results = quick_result
    assert done.returncode == 0
    first = json.loads((results / "quick.json").read_text())
    slower = json.loads(json.dumps(first))
    slower["contenders"]["rows"][0]["msgs_per_s"]["median"] *= 2  # the old run was faster
    (tmp_path / "quick.json").write_text(json.dumps(slower))
    assert suite._previous(tmp_path, {"mode": "quick"})["created_utc"] == first["created_utc"]
    assert suite._previous(tmp_path, {"mode": "full"}) is None  # modes are never mixed
    compared = suite.report.compare(slower, first)
    assert "throughput/engine msgs/s" in compared["regressions"]


# --- agreement ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "pyorderbook", "lightmatchingengine"])
def test_every_contender_trades_exactly_like_the_engine(mixed_csv, name):
    engine_trades, _ = _trades("engine", mixed_csv)
    trades, adapter = _trades(name, mixed_csv)
    assert trades == engine_trades and len(trades) > 100
    assert adapter.left_out == {"deposit": 50, "issue": 50}


def test_the_naive_book_trades_like_the_fast_one_on_a_prefix(mixed_csv):
    record = contenders.work("naive", mixed_csv, repeat=1, prefix=600)
    fast, counts = peers.EngineAdapter().verify(read_order_file(mixed_csv, default_stp="none"),
                                                marks=(600, ))
    assert record["failures"] == [] and record["trades"] == counts[600] > 0
    assert record["trades_digest"] == contenders._digest(contenders._lines(fast[:counts[600]]))


def test_a_wrong_trade_is_caught(mixed_csv, tmp_path):
    engine = contenders.work("engine", mixed_csv, repeat=1, trades_out=tmp_path / "engine.trades")
    plain = contenders.work("plain", mixed_csv, repeat=1, trades_out=tmp_path / "plain.trades")
    assert contenders.compare_trades("plain", plain, engine, tmp_path)["agrees"] is True
    lines = (tmp_path / "plain.trades").read_text().splitlines()
    aggressor, resting, price, qty = lines[7].split(",")
    lines[7] = f"{aggressor},{resting},{price},{int(qty) + 1}"
    (tmp_path / "plain.trades").write_text("\n".join(lines) + "\n")
    verdict = contenders.compare_trades("plain", plain, engine, tmp_path)
    assert verdict["agrees"] is False and "#7" in verdict["agreement"]
    (tmp_path / "plain.trades").write_text("\n".join(lines[:-1]) + "\n")  # one trade missing
    assert contenders.compare_trades("plain", plain, engine, tmp_path)["agrees"] is False


def test_a_stream_the_peers_cannot_take_is_not_compared(carbon_csv, tmp_path):
    _, adapter = _trades("pyorderbook", carbon_csv)
    assert {"amend", "market", "fok", "eod"} <= adapter.left_out.keys()
    record = {"left_out": adapter.left_out, "prefix": None}
    verdict = contenders.compare_trades("pyorderbook", record, {}, tmp_path)
    assert verdict["agrees"] is None and "left out" in verdict["agreement"]


def test_default_stp_differs_from_none_so_the_check_is_not_vacuous(mixed_csv):
    # With cancel_resting the engine must trade differently on this file; if it did not,
    # the stp-none comparison would not be exercising what it claims to.
    engine = Engine(default_market())
    events = [e for c in read_order_file(mixed_csv) for e in engine.execute(c)]
    assert peers.engine_trades(events) != _trades("plain", mixed_csv)[0]


# --- latency, scaling, memory ---------------------------------------------------------------


def test_latency_sorts_every_sampled_command_into_a_kind(carbon_csv):
    run = latency.measure(str(carbon_csv), every=1)
    assert run["sampled"] == run["messages"] == 3000
    assert sum(k["n"] for k in run["kinds"].values()) == 3000
    assert "rejected" not in run["kinds"]  # the carbon file replays without rejections
    assert run["kinds"]["eod"]["n"] == sum(1 for line in carbon_csv.read_text().splitlines()
                                           if line.startswith("eod,"))


def test_resting_orders_for_scaling_never_trade(mixed_csv):
    plain_run = scaling.resting(10, str(mixed_csv), repeat=1)
    deep_run = scaling.resting(5000, str(mixed_csv), repeat=1)
    assert plain_run["trades"] == deep_run["trades"] and deep_run["trades"][0] > 0
    assert deep_run["levels_per_side"] == 1000


def test_dealing_out_to_instruments_keeps_every_message(mixed_csv):
    commands = read_order_file(mixed_csv, default_stp="none")
    dealt = scaling.deal_out(commands, 7)
    assert len(dealt) == len(commands)
    assert {c.instrument for c in dealt if hasattr(c, "side")} == {f"S{i:04d}" for i in range(7)}
    run = scaling.instruments(7, str(mixed_csv), repeat=1)
    assert run["messages"] == len(commands) and run["trades"][0] > 0


def test_memory_worker_counts_every_resting_order():
    run = memory.measure("engine", "tracemalloc", 2000, levels=50)
    assert run["resting"] == 2000 and 50 < run["bytes_per_order"] < 5000
    run = memory.measure("plain", "tracemalloc", 2000, levels=50)
    assert run["resting"] == 2000 and run["bytes_per_order"] > 0


# --- the command line -------------------------------------------------------------------------


def test_failed_results_never_overwrite_the_committed_figures(tmp_path):
    path = suite.write_result({"ok": False, "mode": "full", "failures": ["x"]}, tmp_path)
    assert path.name == "failed.json" and not (tmp_path / "latest.json").exists()


def test_suite_rejects_fewer_than_three_runs(capsys):
    assert suite.main(["--quick", "--repeat", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


@pytest.mark.parametrize("module", [stats, memory, contenders, latency, scaling])
def test_doctests(module):
    failed, _ = doctest.testmod(module)
    assert failed == 0


def test_a_peer_that_is_not_installed_is_skipped_with_a_clear_note(mixed_csv, monkeypatch):
    monkeypatch.setattr(peers.PyOrderBookAdapter, "distribution", "no-such-package-x")
    monkeypatch.setattr(contenders, "ADAPTERS", {
        "engine": peers.EngineAdapter,
        "pyorderbook": peers.PyOrderBookAdapter
    })

    def worker(module, *args):
        assert args[0] != "pyorderbook"  # never started
        return contenders.work(args[0], args[1], repeat=1, trades_out=args[-1])

    section = contenders.measure(mixed_csv, names=("engine", "pyorderbook"), repeat=1,
                                 worker=worker)
    assert [r["name"] for r in section["rows"]] == ["engine"]
    assert "not installed" in section["skipped"]["pyorderbook"] and section["failures"] == []


def test_the_plain_pipeline_reads_and_trades_as_the_plain_matcher(mixed_csv, quick_result):
    """The end-to-end baseline (csv module + plain matcher) trades exactly as the plain
    matcher does on the same file decoded by carbonx's reader, and the suite records the
    ratio of carbonx replay to it."""
    from benchmarks import pipeline
    from benchmarks.plain import PlainMatcher

    ran = pipeline.run(str(mixed_csv))
    matcher = PlainMatcher()
    commands = read_order_file(mixed_csv, default_stp="none")
    matcher.run(commands)
    assert ran["messages"] == len(commands) and ran["trades"] == len(matcher.trades) > 0
    done, results = quick_result
    e2e = json.loads((results / "quick.json").read_text())["end_to_end"]
    assert e2e["plain_pipeline_msgs_per_s"]["median"] > 0
    assert e2e["over_plain_pipeline"] == round(
        e2e["msgs_per_s"]["median"] / e2e["plain_pipeline_msgs_per_s"]["median"], 3)
