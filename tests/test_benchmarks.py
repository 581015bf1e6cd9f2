"""The benchmark suite runs, checks agreement, and writes the result it promises.

Speed is never asserted here (the machine is shared and noisy); correctness is: the
engine with stp ``none`` must trade exactly like the plain matcher, and the suite must
notice when it does not.
"""
from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as suite
from benchmarks import endtoend, memory, stats, throughput
from exchange.orderfile import read_order_file
from gateway.genorders import generate_mixed, write_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "mixed.csv"
    write_rows(path, generate_mixed(3000, seed=5), "csv")
    return path


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One quick suite run at tiny sizes, in a fresh process, as a user would start it."""
    base = tmp_path_factory.mktemp("suite")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--messages", "4000",
         "--memory-orders", "3000", "--naive-prefix", "800", "--profile", "never",
         "--out", str(base / "results"), "--data", str(base / "data")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done, base / "results"


def test_quick_suite_passes_and_writes_the_expected_json(quick_result):
    done, results = quick_result
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Agreement, stp none" in done.stdout and "identical, in order" in done.stdout
    result = json.loads((results / "quick.json").read_text())
    assert not (results / "latest.json").exists()  # a quick run never replaces the full one

    assert {"schema", "mode", "created_utc", "settings", "targets", "machine", "data",
            "throughput", "agreement", "naive", "end_to_end", "memory", "hotspots",
            "verdict", "failures", "ok", "total_s"} <= result.keys()
    assert result["ok"] is True and result["failures"] == []
    assert result["mode"] == "quick" and result["settings"]["messages"] == 4000
    assert {"python", "platform", "cpu_count", "packages"} <= result["machine"].keys()
    assert {"carbonx", "msgspec", "sortedcontainers"} <= result["machine"]["packages"].keys()

    agreement = result["agreement"]
    assert agreement["ok"] and agreement["stp"] == "none"
    assert agreement["engine_trades"] == agreement["plain_trades"] > 0

    t = result["throughput"]
    assert t["messages"] == 4000 and t["repeat"] >= 3
    for contender in ("plain", "engine"):
        assert {"median", "min", "max", "n"} <= t[contender]["msgs_per_s"].keys()
        assert len(t[contender]["runs_s"]) == t["repeat"]
    assert t["engine"]["accepted"] + t["engine"]["rejected"] == 4000
    assert {"median", "min", "max", "runs"} <= t["ratio"].keys()

    assert result["naive"]["ok"] and result["naive"]["messages"] == 800

    e2e = result["end_to_end"]
    assert e2e["matches_in_process_engine"] is True
    assert len(e2e["runs"]) >= 3
    for run in e2e["runs"]:
        assert set(endtoend.PINNED_KEYS) <= run.keys()
        assert run["accepted"] + run["rejected"] == run["messages"] == 4000
    assert {"median", "min", "max"} <= e2e["msgs_per_s"].keys()

    for contender in ("engine", "plain"):
        for method in ("tracemalloc", "rss"):
            run = result["memory"][contender][method]
            assert run["resting"] == 3000 and run["bytes_per_order"] > 0
    assert {"plain_msgs_per_s", "engine_msgs_per_s", "engine_over_plain",
            "end_to_end_msgs_per_s", "agreement", "ledger_over_matching",
            "journal_over_matching"} <= result["verdict"].keys()

    # Ledger stage: three modes on one funded file, same trades, journal recovered whole.
    led = result["ledger"]
    assert led["messages"] == 4000 and led["trades"] > 0
    assert set(led["modes"]) == {"matching", "ledger", "journal"}
    for mode, runs in led["runs"].items():
        assert len(runs) >= 3
        for run in runs:
            assert run["messages"] == 4000 and run["trades"] == led["trades"]
            assert run["rejected"] == 0 or mode == "matching"
    assert led["modes"]["ledger"]["state_hash"] == led["modes"]["journal"]["state_hash"]
    assert led["recovery"]["seq"] == 4000 and led["recovery"]["journal_bytes"] > 0
    for key in ("ledger_over_matching", "journal_over_matching"):
        assert 0 < led["ratios"][key]["median"] < 2
    assert "Ledger and journal" in done.stdout


def test_engine_with_stp_none_trades_exactly_like_the_plain_matcher(mixed_csv):
    commands = read_order_file(mixed_csv, default_stp="none")
    _, matcher = throughput.run_plain(read_order_file(mixed_csv))
    record = throughput.check_agreement(commands, matcher.trades)
    assert record["ok"], record
    assert record["engine_trades"] == len(matcher.trades) > 0


def test_agreement_check_fails_on_any_difference(mixed_csv):
    commands = read_order_file(mixed_csv, default_stp="none")
    _, matcher = throughput.run_plain(commands)
    trades = list(matcher.trades)
    aggressor, resting, price, qty = trades[5]
    trades[5] = (aggressor, resting, price, qty + 1)
    record = throughput.check_agreement(commands, trades)
    assert not record["ok"] and record["first_difference"] == 5
    assert record["plain_trade"][3] == record["engine_trade"][3] + 1

    record = throughput.check_agreement(commands, matcher.trades[:-1])
    assert not record["ok"] and record["first_difference"] == len(matcher.trades) - 1
    assert not throughput.check_agreement(commands[:0], [])["ok"]  # no trades proves nothing


def test_default_stp_differs_from_plain_so_the_check_is_not_vacuous(mixed_csv):
    # With cancel_resting the engine must trade differently on this file; if it did not,
    # the stp-none agreement run would not be exercising what it claims to.
    _, engine, trades = throughput.run_engine(read_order_file(mixed_csv), keep="trades")
    _, matcher = throughput.run_plain(read_order_file(mixed_csv))
    assert trades != matcher.trades


def test_naive_reference_agrees_on_a_prefix(mixed_csv):
    record = throughput.check_naive(read_order_file(mixed_csv), 500)
    assert record["ok"] and record["events"] > 500


def test_memory_worker_counts_every_resting_order():
    run = memory.measure("engine", "tracemalloc", 2000, levels=50)
    assert run["resting"] == 2000 and 50 < run["bytes_per_order"] < 5000
    run = memory.measure("plain", "tracemalloc", 2000, levels=50)
    assert run["resting"] == 2000 and run["bytes_per_order"] > 0


def test_failed_results_never_overwrite_the_committed_figures(tmp_path):
    path = suite.write_result({"ok": False, "mode": "full", "failures": ["x"]}, tmp_path)
    assert path.name == "failed.json" and not (tmp_path / "latest.json").exists()


def test_suite_rejects_fewer_than_three_runs(capsys):
    assert suite.main(["--quick", "--repeat", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


@pytest.mark.parametrize("module", [stats, throughput, memory])
def test_doctests(module):
    failed, _ = doctest.testmod(module)
    assert failed == 0
