"""``carbonx comply``: a whole compliance year through the engine, and its report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.tools import comply

ROOT = Path(__file__).resolve().parent.parent
PINNED = [
    "entity", "sector", "obligation", "allocated", "surrendered_allowances", "surrendered_ccer",
    "shortfall", "fine", "status"
]


def _fen(text: str) -> int:
    units, cents = text.split(".")
    return int(units) * 100 + int(cents)


def test_the_shipped_example_is_the_generator_output():
    assert comply.EXAMPLE.read_text(encoding="utf-8") == comply.example_scenario()


def test_example_json_keeps_the_pinned_keys_and_its_sums(capsys):
    assert main(["comply", "--example", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the pinned keys, and the fine's multiple and price beside them
    assert set(report) == {"entities", "sectors", "multiple", "price", "price_source"}
    assert (report["multiple"], report["price"], report["price_source"]) == (5, "97.92", "market")
    rows = report["entities"]
    assert len(rows) == 300 and all(list(row) == PINNED for row in rows)
    assert {r["sector"] for r in rows} == set(comply.SECTORS)
    # December 2025: 40,000 t at 97.50 and 60,000 t at 98.20 -> 97.92 exactly
    average_fen = (9750 * 40_000 + 9820 * 60_000) // 100_000
    for r in rows:
        assert r["surrendered_ccer"] <= r["obligation"] // 20  # the 5% cap
        shortfall = max(0, r["obligation"] - r["surrendered_allowances"] - r["surrendered_ccer"])
        assert r["shortfall"] == shortfall
        assert r["status"] == ("short" if shortfall else "compliant")
        assert _fen(r["fine"]) == shortfall * average_fen * 5
    assert any(r["status"] == "short" for r in rows) and any(r["status"] == "compliant"
                                                             for r in rows)
    for sector in report["sectors"]:
        members = [r for r in rows if r["sector"] == sector["sector"]]
        assert sector["entities"] == len(members)
        assert sector["shortfall"] == sum(r["shortfall"] for r in members)
        assert _fen(sector["fine"]) == sum(_fen(r["fine"]) for r in members)


def test_industrial_sectors_stay_within_their_cap():
    report = comply.run_cycle(comply.load_scenario(comply.EXAMPLE))
    for sector in report["sectors"]:
        if sector["sector"] != "power":
            # the benchmark balances the sector to its emissions; regions may add 1% at most
            assert sector["obligation"] - sector["entities"] <= sector["allocated"]
            assert sector["allocated"] <= sector["obligation"] * 101 // 100


def test_csv_and_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, chart = tmp_path / "year.csv", tmp_path / "year.png"
    assert main(["comply", "--example", "--csv", str(out), "--chart", str(chart)]) == 0
    text = capsys.readouterr().out
    assert "compliance year 2024: 300 entities" in text and "aluminium" in text
    assert "fines at 5 x 97.92 CNY/t (the December average)" in text  # the multiple shown
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the pinned columns, then the fine's multiple on every row
    assert len(rows) == 300 and list(rows[0]) == [*PINNED, "multiple"]
    assert {row["multiple"] for row in rows} == {"5"}
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,words",
                         [(["comply"], "SCENARIO file or --example"),
                          (["comply", "--example", "x.toml"], "SCENARIO file or --example"),
                          (["comply", "/nonexistent/s.toml"], "cannot read")])
def test_bad_invocations_exit_2_with_a_message(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


_STEEL = ('year = 2024\n[[entities]]\nname = "a"\nsector = "steel"\nprior_emissions = 1\n'
          'emissions = 1\nintensity = "1.0"\n')


@pytest.mark.parametrize(
    "body,words",
    [("year = 2024\n", "no [[entities]]"),
     ('year = 2024\n[[entities]]\nname = "a"\nsector = "glass"\n', "sector must be one of"),
     ('year = 2024\n[[entities]]\nname = "a"\nsector = "steel"\nprior_emissions = 1\n'
      "emissions = 1\n", "needs its 'intensity'"),
     ('year = 2019\n[[entities]]\nname = "a"\nsector = "steel"\nprior_emissions = 1\n'
      'emissions = 1\nintensity = "1.0"\n', "no allowance of vintage 2019"),
     ("year = [", "Invalid value"), (_STEEL + "months = 13\n", "'months'"),
     (_STEEL + '[rules.steel]\nrule = "grandfathering"\n', "rule must be one of"),
     (_STEEL + '[rules.glass]\nrule = "verified_emissions"\n', "unknown sector 'glass'"),
     (_STEEL + '[[restatements]]\nentity = "b"\nemissions = 5\n', "unknown entity 'b'"),
     (_STEEL + '[[restatements]]\nentity = "a"\nemissions = "5"\n', "whole number")])
def test_bad_scenarios_are_refused_with_the_reason(tmp_path, body, words, capsys):
    path = tmp_path / "s.toml"
    path.write_text(body)
    assert main(["comply", str(path)]) == 2
    assert words in capsys.readouterr().err


def test_no_traceback_from_the_console(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('year = 2024\n[[entities]]\nname = "a"\nsector = "glass"\n')
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "comply",
                           str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_ten_thousand_entities_run_the_whole_cycle(tmp_path):
    # its time is measured by the benchmarks' compliance stage, not here
    path = tmp_path / "big.toml"
    path.write_text(comply.example_scenario(entities=10_000))
    report = comply.run_cycle(comply.load_scenario(path))
    assert len(report["entities"]) == 10_000 and not report["stats"]["rejected"]
    assert sum(s["entities"] for s in report["sectors"]) == 10_000


_PAIR = """year = 2024
pre_allocation_share = "0.70"
[rules.steel]
rule = "{rule}"
[[december_trades]]
price = "100.00"
qty = 10
[[entities]]
name = "clean"
sector = "steel"
intensity = "1.0"
prior_emissions = 1000
emissions = 1000
[[entities]]
name = "dirty"
sector = "steel"
intensity = "1.2"
prior_emissions = 1000
emissions = 1000
"""


def _allocated(report: dict) -> dict[str, int]:
    return {row["entity"]: row["allocated"] for row in report["entities"]}


def test_each_sector_takes_the_rule_its_scenario_names(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(_PAIR.format(rule="verified_emissions"))
    assert _allocated(comply.run_cycle(comply.load_scenario(path))) == {
        "clean": 1000,
        "dirty": 1000
    }
    path.write_text(_PAIR.format(rule="intensity_benchmark"))
    allocated = _allocated(comply.run_cycle(comply.load_scenario(path)))
    # BP balances the sector to its 2,000 t; the cleaner plant gets more (round down)
    assert allocated["clean"] > 1000 > allocated["dirty"]
    assert 1998 <= sum(allocated.values()) <= 2000


@pytest.mark.parametrize("restated", [1300, 900])
def test_a_restatement_recomputes_and_the_registry_moves_the_difference(tmp_path, restated):
    path = tmp_path / "s.toml"
    path.write_text(
        _PAIR.format(rule="verified_emissions") +
        f'[[restatements]]\nentity = "dirty"\nemissions = {restated}\n')
    report = comply.run_cycle(comply.load_scenario(path))
    rows = {row["entity"]: row for row in report["entities"]}
    assert rows["dirty"]["obligation"] == restated and rows["dirty"]["allocated"] == restated
    # it surrenders all it holds: 300 more were issued, or 100 clawed back
    assert rows["dirty"]["surrendered_allowances"] == restated
    assert rows["dirty"]["status"] == "compliant" and not report["stats"]["rejected"]
    assert rows["clean"]["allocated"] == 1000 and not report["stats"]["rejected"]
