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


@pytest.mark.parametrize("year", [2019, 2021, 2022, 2024])
def test_december_trades_run_on_a_business_day_and_past_one_buyers_limit(tmp_path, capsys, year):
    """They ran on 11 December whatever day it was (a Saturday for 2021, a Sunday for
    2022: refused market_closed), and one runner's account bought them all, refused
    position_limit past 1,000,000 t. (2019: in CEA19-20, of 2019 and 2020.)"""
    scenario = tmp_path / "s.toml"
    trades = "".join('[[december_trades]]\nprice = "98.00"\nqty = 99999\n' for _ in range(11))
    scenario.write_text(_STEEL.replace("year = 2024", f"year = {year}") + trades)
    assert main(["comply", str(scenario), "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert (report["price"], report["price_source"]) == ("98.00", "market")


def test_an_output_that_would_overwrite_an_input_or_another_is_refused(tmp_path, capsys):
    """comply --csv SCENARIO replaced the scenario with its report, and --csv and --chart
    on one path left only the chart; replay refused the like, as the docs say."""
    scenario = tmp_path / "s.toml"
    scenario.write_text('orders = "o.csv"\n' + _STEEL)
    orders = tmp_path / "o.csv"
    orders.write_text("action,account,instrument,qty\n")
    before = scenario.read_text(), orders.read_text()
    for argv, words in (
            (["--csv", str(scenario)], "would overwrite the scenario"),
            (["--csv", str(orders)], "would overwrite the scenario's order file"),
            (["--csv", str(tmp_path / "r.png"), "--chart", str(tmp_path / "r.png")],
             "--chart")):
        assert main(["comply", str(scenario), *argv]) == 2
        assert words in capsys.readouterr().err
    assert (scenario.read_text(), orders.read_text()) == before
    assert not (tmp_path / "r.png").exists()




@pytest.mark.parametrize(
    "body,words",
    [("year = 2024\n", "no [[entities]]"),
     ('year = 2024\n[[entities]]\nname = "a"\nsector = "glass"\n', "sector must be one of"),
     ('year = 2024\n[[entities]]\nname = "a"\nsector = "steel"\nprior_emissions = 1\n'
      "emissions = 1\n", "needs its 'intensity'"),
     ('year = 2018\n[[entities]]\nname = "a"\nsector = "steel"\nprior_emissions = 1\n'
      'emissions = 1\nintensity = "1.0"\n', "no allowance of vintage 2018"),
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


def test_a_restatement_keeps_the_records_verifier_and_months(tmp_path, monkeypatch):
    """A restatement revises the figure: the verifier and the months of monthly logs of
    the record it restates stay, unless it gives its own."""
    path = tmp_path / "s.toml"
    path.write_text(
        _PAIR.format(rule="verified_emissions").replace(
            'name = "dirty"', 'name = "dirty"\nverifier = "V12"\nmonths = 10') +
        '[[restatements]]\nentity = "dirty"\nemissions = 1300\n'
        '[[restatements]]\nentity = "clean"\nemissions = 900\nmonths = 11\n')
    engines = []
    real = comply.Engine

    def capture(*args, **kwargs):
        engines.append(real(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(comply, "Engine", capture)
    comply.run_cycle(comply.load_scenario(path))
    obligations = engines[0].ledger.registry.obligations
    dirty, clean = obligations[("dirty", 2024)], obligations[("clean", 2024)]
    assert (dirty.emissions, dirty.quality, dirty.verifier, dirty.months) == (1300, "revised",
                                                                              "V12", 10)
    assert (clean.emissions, clean.months) == (900, 11)


# --- strict scenarios: every bad value refused with one line naming the file and the key ---

_BASE = """year = 2024
multiple = 5
pre_allocation_share = "0.70"
[adjustment]
yearly = "1.00"
cap_share = "1.01"
[adjustment.regions]
west = "1.03"
[rules.power]
rule = "power_benchmark"
shortfall_cap = "0.20"
[rules.power.electricity]
gas = "0.3288"
[rules.power.heat]
gas = "0.0533"
[[december_trades]]
price = "97.50"
qty = 40000
[[entities]]
name = "ste-1"
sector = "steel"
region = "west"
intensity = "1.8"
prior_emissions = 1000
emissions = 1100
quality = "measured"
verifier = "V01"
months = 12
surrender_share = "1.0"
ccer = 0
[[entities]]
name = "pow-1"
sector = "power"
region = "west"
units = [{ type = "gas", electricity_mwh = "3000", heat_gj = "0", load = "0.5" }]
prior_emissions = 1000
emissions = 1100
[[restatements]]
entity = "ste-1"
emissions = 1200
"""


def _run_cli(tmp_path: Path, text: str | bytes, capsys, *extra: str) -> tuple[int, str, str]:
    """Run ``carbonx comply`` on a scenario of *text*; return its status, stdout and stderr."""
    path = tmp_path / "s.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    status = main(["comply", str(path), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_line_error(err: str, *words: str) -> None:
    """The error is one line, ``carbonx comply: error: FILE: ...``, with each of *words*."""
    assert err.count("\n") == 1 and err.startswith("carbonx comply: error: ")
    assert "s.toml" in err and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def _edit(old: str, new: str, count: int = 1) -> str:
    """The base scenario with its first *count* occurrences of *old* replaced by *new*."""
    assert old in _BASE
    return _BASE.replace(old, new, count)


def test_a_scenario_that_is_not_utf8_is_refused_naming_the_file(tmp_path, capsys):
    status, out, err = _run_cli(tmp_path, b'year = 2024\nname = "\xff\xfe"\n', capsys)
    assert status == 2 and not out
    _one_line_error(err, "not UTF-8 text", "byte 20")


@pytest.mark.parametrize(
    "old,new,words",
    [
        # 2: out-of-range shares and prices that are not numbers (the rules' own errors)
        ('pre_allocation_share = "0.70"', 'pre_allocation_share = "2"',
         ["'pre_allocation_share'", "0 to 1", "'2'"]),
        ('pre_allocation_share = "0.70"', 'pre_allocation_share = "-0.70"',
         ["'pre_allocation_share'", "'-0.70'"]),
        ('pre_allocation_share = "0.70"', "pre_allocation_share = 0.7",
         ["'pre_allocation_share'", "is a float"]),
        ('price = "97.50"', 'price = "x"', ["december trade 1: 'price'", "not a number"]),
        ('price = "97.50"', 'price = "0"', ["december trade 1: 'price'", "above 0"]),
        # 4: what the engine would refuse, found before it runs
        ('quality = "measured"', 'quality = "guess"',
         ["entity 1 (ste-1): 'quality'", "measured, default, estimated, revised", "'guess'"]),
        ("emissions = 1100", "emissions = 999999999999999999999",
         ["entity 1 (ste-1): 'emissions'", "whole number of tonnes"]),
        ('name = "ste-1"', 'name = "@exchange"', ["entity 1 (@exchange): 'name'", "reserved"]),
        ('name = "ste-1"', 'name = "market-buyer"', ["'name' 'market-buyer'", "reserved"]),
        # 5: typos and values that were silently taken
        ("multiple = 5", "multiple = 5\nmultipel = 6", ["unknown key(s) multipel"]),
        ('region = "west"', 'regoin = "west"', ["entity 1 (ste-1): unknown key(s) regoin"]),
        ("load = ", "lod = ", ["entity 2 (pow-1): unit 1: unknown key(s) lod"]),
        ('cap_share = "1.01"', 'cap_shar = "1.01"', ["[adjustment]: unknown key(s) cap_shar"]),
        ('qty = 40000', 'qty = 40000\nqyt = 5', ["december trade 1: unknown key(s) qyt"]),
        ("entity = ", "enity = ", ["restatement 1: unknown key(s) enity"]),
        ('shortfall_cap = "0.20"', 'shortfal_cap = "0.20"',
         ["[rules.power]: unknown key(s) shortfal_cap"]),
        ('gas = "0.3288"', 'gass = "0.3288"', ["rules.power.electricity: unknown key(s) gass"]),
        ("multiple = 5", "multiple = 5.5", ["'multiple'", "5 to 10", "5.5"]),
        ("multiple = 5", "multiple = 11", ["'multiple'", "5 to 10", "11"]),
        ("multiple = 5", 'multiple = "5"', ["'multiple'", "5 to 10"]),
        ("multiple = 5", 'multiple = 5\ndeadline_price = "98.005"',
         ["'deadline_price'", "'98.005' is not on the fen"]),
        ("qty = 40000", "qty = -40000", ["december trade 1: 'qty'", "-40000"]),
        ("qty = 40000", "qty = 0", ["december trade 1: 'qty'", "from 1"]),
        ('surrender_share = "1.0"', 'surrender_share = "2.0"',
         ["entity 1 (ste-1): 'surrender_share'", "0 to 1", "'2.0'"]),
        ('surrender_share = "1.0"', 'surrender_share = "-1"', ["'surrender_share'", "'-1'"]),
        ("ccer = 0", "ccer = -5", ["entity 1 (ste-1): 'ccer'", "-5"]),
        ('west = "1.03"', 'west = "-1.03"', ["adjustment.regions.west", "at least 0"]),
        ('yearly = "1.00"', 'yearly = "-1"', ["adjustment.yearly", "at least 0"]),
        ('gas = "0.3288"', 'gas = "-0.3288"', ["rules.power.electricity.gas", "at least 0"]),
        ('gas = "0.0533"', 'gas = "-1"', ["rules.power.heat.gas", "at least 0"]),
        ('shortfall_cap = "0.20"', 'shortfall_cap = "1.5"', ["rules.power.shortfall_cap"]),
        ('intensity = "1.8"', 'intensity = "0"', ["'intensity'", "above 0"]),
        ('region = "west"', "region = 5", ["entity 1 (ste-1): 'region' must be a string"]),
        ('verifier = "V01"', "verifier = 1", ["entity 1 (ste-1): 'verifier' must be a string"]),
        ('load = "0.5"', 'load = "1.5"', ["unit 1: 'load'", "0 to 1"]),
        ('type = "gas"', 'type = "wind"', ["unit 1: 'type'", "'wind'"]),
        ('electricity_mwh = "3000"', "electricity_mwh = 3000.5", ["'electricity_mwh'", "float"]),
        ("emissions = 1200", 'emissions = 1200\nquality = "guess"', ["restatement 1: 'quality'"]),
        ("year = 2024", "year = true", ["'year'"]),
        # 6: a key left out is said to be missing, not to be None
        ("prior_emissions = 1000\n", "", ["entity 1 (ste-1): 'prior_emissions' is missing"]),
        ('type = "gas", ', "", ["entity 2 (pow-1): unit 1: 'type' is missing"]),
        ('electricity_mwh = "3000", ', "", ["unit 1: 'electricity_mwh' is missing"]),
    ])
def test_bad_values_are_refused_naming_the_key(tmp_path, capsys, old, new, words):
    status, out, err = _run_cli(tmp_path, _edit(old, new), capsys)
    assert status == 2 and not out
    _one_line_error(err, *words)
    assert "None" not in err


@pytest.mark.parametrize("body,words", [
    ("december_trades = [1]\n" + _STEEL, "'december_trades' must be an array of tables"),
    (_STEEL.replace("[[entities]]", "restatements = [\"a\"]\n[[entities]]"),
     "'restatements' must be an array of tables"),
    (_STEEL.replace('sector = "steel"', 'sector = "power"\nunits = [1]'),
     "entity 1 (a): 'units' must be an array of tables"),
    (_STEEL.replace("year = 2024", "year = 2024\nadjustment = 1"), "[adjustment] must be a table"),
    (_STEEL.replace("year = 2024", "year = 2024\norders = 1"), "'orders' (an order file)"),
    (_STEEL.replace("year = 2024", "year = 2024\n_base = \"/\""), "unknown key(s) _base"),
])
def test_tables_of_the_wrong_shape_are_refused(tmp_path, capsys, body, words):
    status, out, err = _run_cli(tmp_path, body, capsys)
    assert status == 2 and not out
    _one_line_error(err, words)


def test_a_step_the_engine_refuses_stops_the_scenario_naming_it(tmp_path, capsys):
    # a December trade above the market's largest order: its fine price would change
    status, out, err = _run_cli(tmp_path, _edit("qty = 40000", "qty = 200000"), capsys)
    assert status == 2 and not out
    _one_line_error(err, "december trade 1 (200000 at 97.50) was refused",
                    "quantity_above_maximum")
    # a unit so large its final allocation is beyond what the registry takes
    status, out, err = _run_cli(
        tmp_path, _edit('electricity_mwh = "3000"', 'electricity_mwh = "1' + "0" * 25 + '"'),
        capsys)
    assert status == 2 and not out
    _one_line_error(err, "entity 'pow-1': its final allocation was refused", "invalid_quantity")


def test_rejections_print_the_plain_reason_codes(tmp_path, capsys):
    # the order file's commands are market activity: their rejections are counted (these
    # two at the epoch, when the market is closed)
    (tmp_path / "orders.csv").write_text(
        "action,order_id,account,instrument,side,type,price,qty,ts\n"
        "new,o1,nobody,CEA24,buy,limit,90.00,100,0\n"
        "new,o2,nobody,CEA24,buy,limit,90.00,100,0\n")
    status, out, err = _run_cli(tmp_path, 'orders = "orders.csv"\n' + _BASE, capsys)
    assert status == 0 and not err  # the base scenario the other tests break runs
    assert "compliance year 2024: 2 entities" in out
    line = next(line for line in out.splitlines() if "rejections" in line)
    assert line.endswith("rejections market_closed: 2"), line
    assert "Reason" not in out and "{" not in out


@pytest.mark.parametrize("name", ["out.txt", "out", "out.png.bak", "out.svg", "out.pdf"])
def test_an_unsupported_chart_format_is_refused_before_any_work(tmp_path, capsys, name,
                                                                 monkeypatch):
    ran = []
    monkeypatch.setattr(comply, "run_cycle", lambda data: ran.append(data))
    assert main(["comply", "--example", "--chart", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--chart {tmp_path / name}" in err and "a .png file" in err
    assert not ran and not (tmp_path / name).exists()
