"""The sharding model (benchmarks/sharding.py) at a tiny size: splitting instruments across
engine processes changes no matching result, cash is conserved exactly across the shards
with cross-shard top-ups, the top-up path really runs, and the JSON carries the figures.
No assertion here is about speed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import sharding
from benchmarks.stats import parse_worker_output
from exchange import default_market

ROOT = Path(__file__).resolve().parent.parent
TINY = {"orders": 2_000, "days": 2, "traders": 8, "buyers": 8, "seed": 5}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    """``python -m benchmarks.sharding --quick`` at 3,000 orders: its JSON, its result line
    and its table."""
    out = tmp_path_factory.mktemp("sharding")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sharding", "--quick", "--orders", "3000", "--out",
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "sharding-quick.json").read_text())
    return result, parse_worker_output(done.stdout), done.stdout


@pytest.fixture(scope="module")
def stream() -> sharding.Stream:
    return sharding.generate(TINY, 10)


@pytest.fixture(scope="module")
def runs(stream: sharding.Stream) -> dict[int, dict]:
    """The 10% stream on 1, 2 and 4 shards."""
    return {shards: sharding.run_config(stream, shards) for shards in sharding.SHARD_COUNTS}


def test_every_shard_count_matches_one_shard(runs: dict[int, dict]) -> None:
    one = runs[1]
    assert one["trades"] > 0 and one["volume"] > 0
    for shards, run in runs.items():
        assert run["checks"] == [], run["checks"]  # every shard's engine.check() passed
        assert (run["trades"], run["volume"]) == (one["trades"], one["volume"]), shards
        assert run["books"] == one["books"], shards  # trades, volume, last price, resting book
        assert run["rejects"] == one["rejects"], shards
        assert sharding.compare(one, run) == []


def test_cash_is_conserved_exactly_across_shards_with_top_ups(stream: sharding.Stream,
                                                              runs: dict[int, dict]) -> None:
    one = runs[1]
    for shards, run in runs.items():
        cash = run["cash"]
        assert all(type(v) is int for v in cash.values())  # fen, never floats
        assert cash["deposited"] == stream.deposited
        assert cash["total"] == cash["supply"] == cash["deposited"], shards
        assert cash["participants"] + cash["fees"] == cash["deposited"], shards
        assert cash["fees"] == one["cash"]["fees"] > 0, shards
        assert len(run["eod_cash"]) == TINY["days"]
        for statement in run["eod_cash"]:  # at every end of day, while nothing moves
            assert statement["total"] == statement["supply"] == stream.deposited
        # each account's cash summed over the shards is what it has on one shard
        mine = {k: v for k, v in run["holdings"].items() if k.endswith("/CNY") and v}
        theirs = {k: v for k, v in one["holdings"].items() if k.endswith("/CNY") and v}
        assert mine == theirs, shards
        assert run["topup_fen"] == run["lent_fen"]  # every fen lent arrived


def test_the_cross_shard_path_runs_when_its_share_is_over_zero(stream: sharding.Stream,
                                                                runs: dict[int, dict]) -> None:
    assert stream.flagged == TINY["orders"] // 10
    assert runs[1]["topups"] == 0  # one shard holds all the cash
    for shards in (2, 4):
        run = runs[shards]
        # each flagged buy is short on its shard, unless what an earlier one left there
        # (bought below its limit) covers it
        assert 0.9 * stream.flagged <= run["topups"] <= stream.flagged, shards
        assert run["topups"] == run["lent"], shards
        assert run["round_trip"]["n"] == run["topups"]
        assert run["refused"] == 0


def test_no_top_up_without_flagged_orders() -> None:
    stream = sharding.generate(TINY, 0)
    run = sharding.run_config(stream, 2)
    assert stream.flagged == 0 and run["topups"] == 0 and run["lent"] == 0
    assert sharding.compare(sharding.run_config(stream, 1), run) == []


def test_the_checks_catch_a_broken_run(runs: dict[int, dict]) -> None:
    one, four = runs[1], runs[4]
    broken = copy.deepcopy(four)
    broken["cash"]["total"] -= 1
    assert any("cash over all shards" in p for p in sharding.compare(one, broken))
    broken = copy.deepcopy(four)
    broken["trades"] += 1
    assert any("trades" in p for p in sharding.compare(one, broken))
    broken = copy.deepcopy(four)
    account = next(k for k in broken["holdings"] if k.endswith("/CNY") and broken["holdings"][k])
    broken["holdings"][account] += 1
    assert any("holdings differ" in p for p in sharding.compare(one, broken))
    broken = copy.deepcopy(four)
    broken["topups"] = 0
    assert any("never ran" in p for p in sharding.compare(one, broken))


def test_each_shard_holds_only_its_instruments_on_the_default_terms() -> None:
    default = default_market()
    for shards in sharding.SHARD_COUNTS:
        held = []
        for index in range(shards):
            market = sharding.shard_market(sharding._symbols_of(index, shards))
            held += list(market.instruments)
            for symbol in market.instruments:
                assert market[symbol] == default[symbol]
            assert market.schedule is None and not market.limits.by_kind  # open, no limits
        assert sorted(held) == sorted(sharding.INSTRUMENTS)


def test_the_quick_run_writes_the_figures(quick: tuple[dict, dict, str]) -> None:
    result, line, table = quick
    assert result["failures"] == []
    assert result["machine"]["cpus"] >= 1 and result["date"]
    throughput = {row["shards"]: row for row in result["throughput"]}
    assert sorted(throughput) == [1, 2, 4]
    for row in throughput.values():
        assert row["orders_per_s"]["median"] > 0
        assert (row["trades"], row["volume"]) == (throughput[1]["trades"], throughput[1]["volume"])
        assert row["agrees_with_1_shard"] is True
    rows = {(row["pct"], row["shards"]): row for row in result["cross_shard"]}
    assert sorted(rows) == [(p, s) for p in sharding.PATH_PCTS for s in sharding.SHARD_COUNTS]
    for (pct, shards), row in rows.items():
        assert row["agrees_with_1_shard"] is True
        cash = row["cash"]
        assert cash["total"] == cash["deposited"] == cash["participants"] + cash["fees"]
        if pct and shards > 1:
            assert 0 < row["topups"] <= row["flagged"]
            assert row["round_trip"]["p50_us"] > 0
            assert "extra_wall_us_per_path_order" in row
        else:
            assert row["topups"] == 0
    assert result["idle_round_trip"]["round_trips"] == sharding.QUICK["idle_round_trips"]
    assert line["benchmark"] == "sharding" and line["failures"] == 0
    assert set(line["orders_per_s"]) == {"1", "2", "4"}
    assert "(a) throughput" in table and "(b) cross-shard" in table
