"""``carbonx replay --ledger`` (with ``--holdings`` and ``--journal``) and ``carbonx holdings``.

Expected holdings are worked out by hand from the default market's rules: tick 0.01 CNY
(1 fen a tonne), maker fee 1 bp and taker 1.5 bp rounded down per fill, buys holding
price x qty plus 1.5 bp, T+1 on bought allowances.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from markets import futures_market

from exchange.market import format_cash, parse_market
from exchange.orderfile import parse_order_text
from gateway.cli import main
from gateway.tools.replay import event_record

ORDERS = """action,order_id,account,instrument,side,type,tif,price,qty,command_id
deposit,,bob,CNY,,,,,10000.00,
deposit,,bob,CNY,,,,,10000.00,dep-1
deposit,,bob,CNY,,,,,10000.00,dep-1
issue,,ann,CEA25,,,,,500,
new,s1,ann,CEA25,sell,limit,gtc,60.00,300,
new,b1,bob,CEA25,buy,limit,gtc,61.00,100,
new,b2,bob,CEA25,buy,limit,gtc,61.00,1000,
new,s2,bob,CEA25,sell,limit,gtc,61.00,10,
"""
# bob: 20,000.00 deposited (the resent dep-1 is refused); b1 buys 100 at 60.00 for
# 6,000.00 + 0.90 taker fee; b2 would need 61,000 + 9.15 > 13,999.10 left: refused;
# s2 would sell units still locked (T+1): refused. ann: 100 sold at 60.00 less 0.60.
EXPECTED = [["@clearing", "CNY", "0.00", "0.00", "0.00"],
            ["@exchange", "CNY", "1.50", "0.00", "0.00"],
            ["@registry", "CNY", "0.00", "0.00", "0.00"], ["ann", "CEA25", "200", "200", "0"],
            ["ann", "CNY", "5999.40", "0.00", "0.00"], ["bob", "CEA25", "0", "0", "100"],
            ["bob", "CNY", "13999.10", "0.00", "0.00"]]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def orders(tmp_path) -> Path:
    """``ORDERS`` in a file."""
    path = tmp_path / "o.csv"
    path.write_text(ORDERS)
    return path


def replay_json(capsys, orders: Path, *args) -> dict:
    """``carbonx replay ORDERS --ledger --json ARGS``, which must succeed: its summary."""
    code, out, err = run(capsys, "replay", orders, "--ledger", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_replay_with_ledger_writes_the_holdings_worked_out_by_hand(capsys, tmp_path, orders):
    summary = replay_json(capsys, orders, "--holdings", tmp_path / "h.csv")
    assert (summary["messages"], summary["accepted"], summary["rejected"]) == (8, 5, 3)
    assert summary["rejects"] == {
        "duplicate_command": 1,
        "insufficient_cash": 1,
        "insufficient_allowances": 1
    }
    with open(tmp_path / "h.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["account", "asset", "available", "held", "locked"]
    assert rows[1:] == EXPECTED


def test_matching_only_replay_of_the_same_file_trades_alike_and_ignores_ledger_rows(
        capsys, orders):
    code, out, _ = run(capsys, "replay", orders, "--json")
    summary = json.loads(out)
    # Without risk checks b2 and s2 are accepted (b2 rests, s2 crosses b2); dep-1's
    # resend is still a duplicate.
    assert code == 0 and summary["rejects"] == {"duplicate_command": 1}
    assert summary["trades"] == 2


def test_journal_then_holdings_recovers_the_same_state(capsys, tmp_path, orders):
    replayed = replay_json(capsys, orders, "--journal", tmp_path / "j")
    code, out, err = run(capsys, "holdings", tmp_path / "j", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["seq"] == 8 and report["positions"] == []
    assert [[r[k] for k in ("account", "asset", "available", "held", "locked")]
            for r in report["holdings"]] == [[a, s, *(v if s == "CNY" else int(v) for v in rest)]
                                             for a, s, *rest in EXPECTED]
    code, table, _ = run(capsys, "holdings", tmp_path / "j")
    assert code == 0 and "recovered 8 commands" in table and "13999.10" in table
    from exchange.journal import recover

    assert recover(tmp_path / "j").engine.state_hash() == replayed["state_hash"]


def test_pledges_show_in_the_holdings_file_and_in_what_holdings_recovers(capsys, tmp_path):
    """An auditor working from the journal sees who holds the collateral: the pledged
    units in their own column (the pinned five columns first), the pledges themselves in
    ``holdings --json`` and in the table; a file without pledges keeps the pinned header."""
    orders = tmp_path / "p.csv"
    orders.write_text("action,order_id,account,instrument,qty,to_account,kind\n"
                      "open_account,,bank,,,,financial\n"
                      "issue,,steel,CEA25,1000,,\n"
                      "pledge,L1,steel,CEA25,600,bank,\n"
                      "pledge_release,L1,steel,,100,,\n")
    summary = replay_json(capsys, orders, "--holdings", tmp_path / "h.csv", "--journal",
                          tmp_path / "j")
    assert summary["rejected"] == 0
    with open(tmp_path / "h.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["account", "asset", "available", "held", "locked", "pledged"]
    assert ["steel", "CEA25", "500", "0", "0", "500"] in rows
    code, out, err = run(capsys, "holdings", tmp_path / "j", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["pledges"] == [{"pledge_id": "L1", "account": "steel", "to_account": "bank",
                                  "instrument": "CEA25", "qty": 500}]
    [steel] = [r for r in report["holdings"] if r["account"] == "steel"]
    assert (steel["available"], steel["pledged"]) == (500, 500)
    code, table, _ = run(capsys, "holdings", tmp_path / "j")
    assert code == 0 and "pledges in force" in table and "L1" in table
    assert "pledged" in table.splitlines()[1]  # the holdings table's header names it


@pytest.mark.parametrize("limit", [1, 9])
def test_a_replay_whose_journal_cannot_be_written_says_so_and_leaves_no_journal(
        tmp_path, limit):
    """Under a file size limit the journal failed as a bare OSError ('cannot write the
    output: File too large', no file named) and left half a journal that a second run
    into the same directory refused. (A process of its own: the limit is per process.)"""
    import resource
    import subprocess
    import sys

    orders = tmp_path / "o.csv"
    rows = [ORDERS.splitlines()[0]] + [f"deposit,,acct{i},CNY,,,,,{i + 1}.00,"
                                       for i in range(3000)]
    orders.write_text("\n".join(rows) + "\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit * 1024, limit * 1024))

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "replay", str(orders), "--ledger",
                           "--journal", str(tmp_path / "j")], capture_output=True, text=True,
                          preexec_fn=small_files, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "File too large" in line and "Traceback" not in done.stderr
    assert str(tmp_path / "j") in line
    assert not (tmp_path / "j").exists()


def test_bad_ledger_options_are_refused_cleanly(capsys, tmp_path, orders):
    for option, value in (("--journal", tmp_path / "j"), ("--holdings", tmp_path / "h.csv")):
        code, _, err = run(capsys, "replay", orders, option, value)
        assert code == 2 and "needs --ledger" in err and "Traceback" not in err
    assert not (tmp_path / "j").exists() and not (tmp_path / "h.csv").exists()
    assert run(capsys, "replay", orders, "--ledger", "--journal", tmp_path / "j")[0] == 0
    code, _, err = run(capsys, "replay", orders, "--ledger", "--journal", tmp_path / "j")
    assert code == 2 and "already holds a journal" in err
    code, _, err = run(capsys, "holdings", tmp_path)
    assert code == 2 and "no journal" in err
    code, _, err = run(capsys, "holdings", tmp_path / "missing")
    assert code == 2 and "missing: no such directory" in err


def test_the_extended_columns_read_in_csv_and_ndjson():
    csv_text = ("action,account,instrument,qty,kind,to_account,command_id\n"
                "open_account,fi,,,financial,,c1\n"
                "transfer,fi,CEA25,5,,gen,\n"
                "suspend_account,fi,,,,,\n")
    ndjson = (
        '{"action":"open_account","account":"fi","kind":"financial","command_id":"c1"}\n'
        '{"action":"transfer","account":"fi","instrument":"CEA25","qty":5,"to_account":"gen"}\n'
        '{"action":"suspend_account","account":"fi"}\n')
    from_csv = parse_order_text(csv_text.encode(), "csv")
    assert from_csv == parse_order_text(ndjson.encode(), "ndjson")
    assert from_csv[0].kind == "financial" and from_csv[0].command_id == "c1"
    assert from_csv[1].to_account == "gen" and from_csv[1].qty == 5


def test_bad_extended_rows_name_their_line(capsys, tmp_path):
    for body, fragment in (("open_account,fi,,,bank,,\n", "unknown kind 'bank'"),
                           ("transfer,fi,CEA25,5,,,\n", "to_account is required")):
        orders = tmp_path / "bad.csv"
        orders.write_text("action,account,instrument,qty,kind,to_account,command_id\n" + body)
        code, _, err = run(capsys, "replay", orders, "--ledger")
        assert code == 2 and "line 2" in err and fragment in err


def test_events_show_cash_as_decimal_strings(capsys, tmp_path):
    from exchange import default_market
    from exchange.events import CashDeposited, TradeSettled

    market = default_market()
    assert (event_record(CashDeposited(seq=1, account="a", currency="CNY", amount=150),
                         market)["amount"] == "1.50")
    record = event_record(
        TradeSettled(seq=2, trade_id=1, instrument="CEA25", buy_account="b", sell_account="s",
                     qty=100, cash=600000, buy_fee=90, sell_fee=60), market)
    assert (record["cash"], record["buy_fee"], record["sell_fee"]) == ("6000.00", "0.90", "0.60")
    assert format_cash("CNY", -5) == "-0.05" and format_cash("JPY", 7) == "7"


def test_every_price_and_cash_of_the_events_file_is_a_decimal_string():
    """The fields a tester found written as integers beside a doc saying decimals: the
    clearing house's fees, margins, delivery cash and penalties, final prices and strikes
    (on the underlying's tick), fines and the deadline's prices."""
    from exchange.events import (ComplianceAssessed, ContractExpired, DeadlinePassed,
                                 DeliveryFailed, DeliverySettled, MarginCalled, MarginCallMet,
                                 OptionExercised, TradeCleared)

    market = parse_market(FUTURES_MARKET)
    cases = [
        (TradeCleared(seq=1, trade_id=1, instrument="F", buy_account="b", sell_account="s",
                      qty=2, price=8000, buy_position=2, sell_position=-2, buy_fee=1600,
                      sell_fee=800), {"price": "80.00", "buy_fee": "16.00", "sell_fee": "8.00"}),
        (MarginCalled(seq=2, account="a", equity=400400, maintenance=1200000, initial=1600000,
                      currency="CNY"), {"equity": "4004.00", "maintenance": "12000.00",
                                        "initial": "16000.00"}),
        (MarginCallMet(seq=3, account="a", equity=5, currency="CNY"), {"equity": "0.05"}),
        (DeliverySettled(seq=4, account="a", instrument="F", underlying="CEA25", side="buy",
                         tonnes=1000, cash=4500000), {"cash": "45000.00"}),
        (DeliveryFailed(seq=5, account="a", instrument="F", tonnes=10, penalty=123),
         {"penalty": "1.23"}),
        (ContractExpired(seq=6, instrument="F", final_price=9000), {"final_price": "90.00"}),
        (OptionExercised(seq=7, account="a", instrument="F", underlying="CEA25", lots=1,
                         strike=8500), {"strike": "85.00"}),
        (ComplianceAssessed(seq=8, account="e", year=2024, obligation=13,
                            surrendered_allowances=10, surrendered_offsets=0, shortfall=3,
                            fine=90015, status="short"), {"fine": "900.15"}),
        (DeadlinePassed(seq=9, year=2024, entities=1, short=1, average_price=6001, multiple=5,
                        price=6001, price_source="market"),
         {"price": "60.01", "average_price": "60.01", "multiple": 5}),
    ]
    for event, expected in cases:
        record = event_record(event, market)
        assert {key: record[key] for key in expected} == expected, type(event).__name__


FUTURES_MARKET = futures_market()
# Two days of tests/scenarios/futures_clearing.txt: a is short 2 lots (at 80.00 each),
# called after day 2's settlement at 85.00 cost it 10,000.00 of its 16,000.00.
FUTURES_ORDERS = """action,order_id,account,instrument,side,type,tif,price,qty,ts
deposit,,a,CNY,,,,,16000.00,
deposit,,b,CNY,,,,,100000.00,
deposit,,c,CNY,,,,,100000.00,
deposit,,d,CNY,,,,,24000.00,
new,a1,a,F,sell,limit,gtc,80.00,2,1797835800000000000
new,b1,b,F,buy,limit,gtc,80.00,1,1797835800000000000
eod,,,,,,,,,1797840000000000000
new,c1,c,F,buy,limit,gtc,80.00,1,1797915600000000000
new,d1,d,F,sell,limit,gtc,85.00,1,1797922200000000000
new,c2,c,F,buy,limit,gtc,85.00,1,1797922200000000000
eod,,,,,,,,,1797926400000000000
"""


def test_holdings_of_a_directory_that_is_not_there_says_so(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    for name, message in (("nowhere", "nowhere: no such directory"),
                          ("file", "file is not a directory")):
        assert main(["holdings", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err


def test_holdings_show_futures_positions_margin_and_equity(capsys, tmp_path):
    (tmp_path / "m.toml").write_text(FUTURES_MARKET)
    (tmp_path / "o.csv").write_text(FUTURES_ORDERS)
    code, out, err = run(capsys, "replay", tmp_path / "o.csv", "--market", tmp_path / "m.toml",
                         "--ledger", "--json", "--journal", tmp_path / "j")
    assert code == 0 and json.loads(out)["rejected"] == 0, err
    code, out, err = run(capsys, "holdings", tmp_path / "j", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["positions"] == [{
        "account": "a",
        "instrument": "F",
        "qty": -2,
        "avg_price": "80.00",
        "margin": "6000.00",
        "settlement": "85.00"
    }, {
        "account": "b",
        "instrument": "F",
        "qty": 1,
        "avg_price": "80.00",
        "margin": "8000.00",
        "settlement": "85.00"
    }, {
        "account": "c",
        "instrument": "F",
        "qty": 2,
        "avg_price": "82.50",
        "margin": "16000.00",
        "settlement": "85.00"
    }, {
        "account": "d",
        "instrument": "F",
        "qty": -1,
        "avg_price": "85.00",
        "margin": "8000.00",
        "settlement": "85.00"
    }]
    margin = {row["account"]: row for row in report["margin"]}
    assert margin["a"] == {
        "account": "a",
        "currency": "CNY",
        "margin": "6000.00",
        "equity": "6000.00",
        "initial": "16000.00",
        "maintenance": "12000.00",
        "margin_call": True
    }
    assert margin["b"]["equity"] == "105000.00" and margin["b"]["margin_call"] is False
    code, table, _ = run(capsys, "holdings", tmp_path / "j")
    assert code == 0 and "positions" in table and "CALLED" in table and "82.50" in table


def test_a_replay_stopped_by_a_full_disk_while_snapshotting_leaves_nothing(tmp_path):
    """A snapshot's writer failing beside the journal's write left snapshot-N.tmp (the
    replay's clean-up looked for another name) and its writer unwaited for."""
    import resource
    import subprocess
    import sys

    orders = tmp_path / "o.csv"
    # Resting orders (the snapshots grow), then commands whose long ids grow a segment's
    # group past the limit after a snapshot has started.
    orders.write_text("action,order_id,account,instrument,side,price,qty,command_id\n" + "".join(
        f"new,o{i},a{i},CEA25,buy,{50 + i / 100:.2f},1,\n" for i in range(1, 8_193)) + "".join(
        f"cancel,nope{i},a1,CEA25,,,,{'x' * 200}{i}\n" for i in range(8_193, 12_589)))
    script = ("import sys; from exchange import default_market\n"
              "from gateway.tools.replay import run_replay\n"
              "try:\n"
              "    run_replay(sys.argv[1], market=default_market().open_all_hours(),\n"
              "               journal=sys.argv[2], snapshot_every=300)\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__, exc)\n")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_100_000, 1_100_000))

    done = subprocess.run([sys.executable, "-c", script, str(orders), str(tmp_path / "j")],
                          capture_output=True, text=True, preexec_fn=small_files, timeout=120)
    assert done.stdout.startswith("JournalError cannot write the journal segment"), done
    assert not (tmp_path / "j").exists()
