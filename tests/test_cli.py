"""The pinned ``carbonx`` command line (docs/cli.md): replay, gen-orders, exit statuses.

Most checks run ``gateway.cli.main`` in-process (fast); the exit-status and no-traceback
contract of bad input, the help texts and cross-process determinism run the real command
as a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.cli import main

PINNED_SUMMARY_KEYS = {
    "messages", "accepted", "rejected", "trades", "volume", "elapsed_s", "msgs_per_s", "engine_s",
    "engine_msgs_per_s"
}
FILL_KEYS = {
    "seq", "trade_id", "instrument", "price", "qty", "buy_order_id", "sell_order_id", "buy_account",
    "sell_account", "aggressor", "mode"
}
HEADER = "action,order_id,account,instrument,side,type,tif,price,qty\n"

# (golden file stem, extra replay arguments): the stem's expected fills were made so.
GOLDEN = [("basic", ["--stp", "none"]), ("rich", ["--stp", "none"]), ("stp", [])]

# --- helpers ------------------------------------------------------------------------------


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``carbonx ARGS`` in-process; return (status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def replay_json(capsys, *args) -> dict:
    status, out, err = cli(capsys, "replay", *args, "--json")
    assert status == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got {out!r}"
    summary = json.loads(lines[0])
    assert isinstance(summary, dict)
    return summary


def read_ndjson(path: Path) -> list[dict]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def comparable(fill: dict) -> dict:
    """A fill without seq and trade_id, its price as a Decimal; the golden files are of the
    order book alone, so their fills are all of the ``listing`` mode."""
    out = {k: v for k, v in fill.items() if k not in ("seq", "trade_id")}
    assert out.pop("mode", "listing") == "listing"
    out["price"] = Decimal(out["price"])
    return out


def data_rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return [row for row in csv.DictReader(fh)]


def csv_to_ndjson(csv_path: Path, out: Path) -> Path:
    """The equivalent NDJSON file: empty keys left out, qty as a JSON integer."""
    with open(out, "w", encoding="utf-8") as fh:
        for row in data_rows(csv_path):
            record = {k.strip(): v for k, v in row.items() if v != ""}
            if "qty" in record:
                record["qty"] = int(record["qty"])
            fh.write(json.dumps(record) + "\n")
    return out


def assert_bad_input(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, one clear message on stderr naming *fragments*, no traceback, nothing on stdout."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    message = proc.stderr.strip()
    assert message, "a bad input must be explained on stderr"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- golden files -------------------------------------------------------------------------


@pytest.mark.parametrize("stem,extra", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_fills(capsys, tmp_path, golden_dir, stem, extra):
    source = golden_dir / f"{stem}.csv"
    out = tmp_path / "fills.ndjson"
    summary = replay_json(capsys, source, "--fills", out, *extra)

    fills = read_ndjson(out)
    expected = read_ndjson(golden_dir / f"{stem}.fills.ndjson")
    assert len(fills) == len(expected)
    for i, (got, want) in enumerate(zip(fills, expected)):
        assert set(got) == FILL_KEYS, f"fill {i}: keys {sorted(got)}"
        assert comparable(got) == comparable(want), f"fill {i} differs"

    seqs = [f["seq"] for f in fills]
    assert all(type(s) is int for s in seqs)
    assert all(a < b for a, b in zip(seqs, seqs[1:])), "seq must strictly increase"
    trade_ids = [f["trade_id"] for f in fills]
    assert len(set(trade_ids)) == len(trade_ids), "trade_id must be unique"
    assert all(f["aggressor"] in ("buy", "sell") for f in fills)
    assert all(type(f["qty"]) is int and f["qty"] > 0 for f in fills)
    assert all(type(f["price"]) is str for f in fills), "prices are decimal strings"

    # The --json summary agrees with the file and with the fills.
    assert set(summary) >= PINNED_SUMMARY_KEYS
    assert summary["messages"] == len(data_rows(source))
    assert summary["accepted"] + summary["rejected"] == summary["messages"]
    assert summary["trades"] == len(fills)
    assert summary["volume"] == sum(f["qty"] for f in fills)
    for key in ("messages", "accepted", "rejected", "trades", "volume", "msgs_per_s",
                "engine_msgs_per_s"):
        assert type(summary[key]) is int and summary[key] >= 0, key
    for key in ("elapsed_s", "engine_s"):
        assert isinstance(summary[key], (int, float)) and summary[key] >= 0, key
    assert summary["engine_s"] <= summary["elapsed_s"] + 1e-6
    assert summary["msgs_per_s"] > 0 and summary["engine_msgs_per_s"] > 0
    assert sum(summary["rejects"].values()) == summary["rejected"]


def test_golden_rich_rejects_and_goes_on(capsys, golden_dir):
    """rich.csv has amends to zero and cancels of unknown ids: rejected, the replay goes on."""
    summary = replay_json(capsys, golden_dir / "rich.csv", "--stp", "none")
    assert summary["rejected"] > 0
    assert summary["rejects"].get("invalid_quantity", 0) > 0
    assert summary["rejects"].get("unknown_order", 0) > 0


def test_default_stp_option_changes_only_empty_rows(capsys, tmp_path, golden_dir):
    """stp.csv relies on the default self-trade mode; `--stp none` must change the outcome."""
    default = tmp_path / "default.ndjson"
    none = tmp_path / "none.ndjson"
    a = replay_json(capsys, golden_dir / "stp.csv", "--fills", default)
    b = replay_json(capsys, golden_dir / "stp.csv", "--fills", none, "--stp", "none")
    assert a["state_hash"] != b["state_hash"]
    assert read_ndjson(default) != read_ndjson(none)
    # A file whose every row names its own stp ignores --stp entirely.
    rows = data_rows(golden_dir / "stp.csv")
    full = tmp_path / "full.csv"
    with open(full, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            if row["action"] == "new" and not row["stp"]:
                row["stp"] = "cancel_resting"
            writer.writerow(row)
    c = replay_json(capsys, full, "--stp", "none")
    d = replay_json(capsys, full, "--stp", "cancel_both")
    assert c["state_hash"] == d["state_hash"] == a["state_hash"]


# --- determinism --------------------------------------------------------------------------


def test_replay_twice_same_state_and_events(capsys, tmp_path, golden_dir):
    source = golden_dir / "rich.csv"
    runs = []
    for i in range(2):
        events, fills = tmp_path / f"events{i}.ndjson", tmp_path / f"fills{i}.ndjson"
        summary = replay_json(capsys, source, "--stp", "none", "--events", events, "--fills", fills)
        runs.append((summary, events.read_bytes(), fills.read_bytes()))
    (s0, e0, f0), (s1, e1, f1) = runs
    assert s0["state_hash"] == s1["state_hash"]
    assert isinstance(s0["state_hash"], str) and s0["state_hash"]
    assert e0 == e1 and e0, "the --events file must be identical across replays"
    assert f0 == f1
    events = [json.loads(line) for line in e0.splitlines()]
    seqs = [e["seq"] for e in events]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), "event seq must strictly increase"
    trade_seqs = [e["seq"] for e in events if e.get("event") == "trade_executed"]
    assert trade_seqs == [json.loads(line)["seq"] for line in f0.splitlines()
                          ], ("a trade's seq in the fills file is its event's")


def test_replay_deterministic_across_processes(run_carbonx, tmp_path, golden_dir):
    """Different hash seeds, same state hash and byte-identical fills and events."""
    outputs = []
    for seed in ("1", "2"):
        fills, events = tmp_path / f"f{seed}.ndjson", tmp_path / f"e{seed}.ndjson"
        proc = run_carbonx("replay", golden_dir / "stp.csv", "--json", "--fills", fills, "--events",
                           events, env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append(
            (json.loads(proc.stdout)["state_hash"], fills.read_bytes(), events.read_bytes()))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("stem,extra", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_csv_and_ndjson_agree(capsys, tmp_path, golden_dir, stem, extra):
    source = golden_dir / f"{stem}.csv"
    ndjson = csv_to_ndjson(source, tmp_path / f"{stem}.ndjson")
    a = replay_json(capsys, source, "--fills", tmp_path / "a.ndjson", *extra)
    b = replay_json(capsys, ndjson, "--fills", tmp_path / "b.ndjson", *extra)
    assert a["state_hash"] == b["state_hash"]
    for key in ("messages", "accepted", "rejected", "trades", "volume", "rejects"):
        assert a[key] == b[key], key
    assert read_ndjson(tmp_path / "a.ndjson") == read_ndjson(tmp_path / "b.ndjson")
    # --format overrides the extension.
    odd = tmp_path / f"{stem}.orders"
    odd.write_bytes(ndjson.read_bytes())
    c = replay_json(capsys, odd, "--format", "ndjson", *extra)
    assert c["state_hash"] == a["state_hash"]


# --- bad files: exit 2, line number, no traceback -----------------------------------------

GOOD = "new,g1,acc1,CEA25,buy,limit,gtc,59.00,10\n"  # line 2 of every CSV case below
NDJSON_GOOD = '{"action":"new","order_id":"g1","account":"a","instrument":"CEA25","side":"buy","price":"59.00","qty":10}\n'

BAD_FILES = [
    # id, file name, content, expected line, fragments of the message
    ("price-abc", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtc,abc,10\n", 3, ["abc"]),
    ("qty-x1", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtc,60.00,x1\n", 3, ["x1"]),
    ("unknown-action", "o.csv", HEADER + GOOD + "buy,o1,a,CEA25,buy,limit,gtc,60.00,1\n", 3,
     ["action"]),
    ("unknown-side", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,long,limit,gtc,60.00,1\n", 3,
     ["long"]),
    ("unknown-type", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,iceberg,gtc,60.00,1\n", 3,
     ["iceberg"]),
    ("unknown-tif", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtx,60.00,1\n", 3, ["gtx"]),
    ("unknown-stp", "o.csv", HEADER.rstrip("\n") + ",stp\n" + GOOD.rstrip("\n") + ",\n" +
     "new,o1,a,CEA25,buy,limit,gtc,60.00,1,cancel_all\n", 3, ["cancel_all"]),
    ("qty-not-whole", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtc,60.00,1.5\n", 3,
     ["1.5"]),
    ("ragged-row", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtc,60.00\n", 3, []),
    ("ragged-row-long", "o.csv", HEADER + GOOD + "new,o1,a,CEA25,buy,limit,gtc,60.00,1,x\n", 3, []),
    ("unknown-column", "o.csv", "action,order_id,colour\nnew,o1,red\n", 1, ["colour"]),
    ("empty-file", "o.csv", "", 1, []),
    ("ndjson-malformed", "o.ndjson",
     NDJSON_GOOD + NDJSON_GOOD.replace("g1", "g2") + '{"action":"new","order_id":\n', 3, []),
    ("ndjson-float-price", "o.ndjson", NDJSON_GOOD +
     '{"action":"new","order_id":"o1","account":"a","instrument":"CEA25","side":"buy",'
     '"price":61.2,"qty":1}\n', 2, ["price"]),
    ("ndjson-unknown-key", "o.ndjson", NDJSON_GOOD +
     '{"action":"new","order_id":"o1","account":"a","instrument":"CEA25","side":"buy",'
     '"price":"61.20","qty":1,"colour":"red"}\n', 2, ["colour"]),
    ("ndjson-bad-side", "o.ndjson", "\n" + NDJSON_GOOD + "\n" +
     '{"action":"new","order_id":"o1","account":"a","instrument":"CEA25","side":"up",'
     '"price":"61.20","qty":1}\n', 4, ["up"])
]


@pytest.mark.parametrize("name,content,line,fragments", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_file_exit_2(run_carbonx, write_file, name, content, line, fragments):
    path = write_file(name, content)
    proc = run_carbonx("replay", path, "--json")
    message = assert_bad_input(proc, name, *fragments)
    assert f"line {line}" in message
    for other in range(1, 6):
        if other != line:
            assert f"line {other}:" not in message and f"line {other} " not in message


def test_missing_file_exit_2(run_carbonx, tmp_path):
    proc = run_carbonx("replay", tmp_path / "no-such-orders.csv")
    assert_bad_input(proc, "no-such-orders.csv")


def test_bad_row_late_in_file_writes_nothing(capsys, tmp_path, golden_dir):
    """The whole file is decoded before matching: a bad last row leaves no output at all."""
    text = (golden_dir / "basic.csv").read_text(encoding="utf-8")
    rows = len(text.splitlines())
    bad = tmp_path / "late.csv"
    bad.write_text(text + "new,zz,acc01,CEA25,buy,limit,gtc,60.00,lots\n", encoding="utf-8")
    fills, events = tmp_path / "fills.ndjson", tmp_path / "events.ndjson"
    status, out, err = cli(capsys, "replay", bad, "--fills", fills, "--events", events, "--json",
                           "--stp", "none")
    assert status == 2
    assert out == ""
    assert f"line {rows + 1}" in err and "lots" in err
    assert not fills.exists()
    assert not events.exists()


def test_bad_input_in_process_same_message(capsys, write_file):
    path = write_file("o.csv", HEADER + "new,o1,a,CEA25,buy,limit,gtc,abc,10\n")
    status, out, err = cli(capsys, "replay", path)
    assert status == 2 and out == ""
    assert "line 2" in err and "abc" in err and "Traceback" not in err


# --- rule-breaking rows are rejected and the replay goes on -------------------------------


def test_rule_breaking_rows_are_rejected(capsys, write_file):
    path = write_file(
        "rules.csv",
        HEADER + "".join([
            "new,o1,a,CEA25,buy,limit,gtc,60.001,10\n",  # off tick
            "new,o2,a,NOPE,buy,limit,gtc,60.00,10\n",  # unknown instrument
            "new,o3,a,CEA25,buy,limit,gtc,60.00,0\n",  # qty 0
            "cancel,ghost,a,,,,,,\n",  # unknown id
            "new,o4,a,CEA25,buy,limit,gtc,60.00,10\n",  # ok, rests
            "amend,o4,a,,,,,,0\n",  # amend to zero
            "new,o5,a,CEA25,buy,limit,gtc,60.00,100000\n",  # above spot max 99,999 t
            "new,o6,a,CEA-DEC26,buy,limit,gtc,60.00,10001\n",  # above futures max 10,000 lots
            "new,o7,a,CEA-DEC26,buy,limit,gtc,60.00,10000\n",  # ok: exactly the maximum
            "new,o8,b,CEA25,sell,limit,gtc,60.00,4\n",  # trades with o4 (still 10 open)
        ]))
    summary = replay_json(capsys, path)
    assert summary["messages"] == 10
    assert summary["rejected"] == 7 and summary["accepted"] == 3
    assert summary["rejects"] == {
        "off_tick": 1,
        "unknown_instrument": 1,
        "invalid_quantity": 2,
        "unknown_order": 1,
        "quantity_above_maximum": 2
    }
    assert summary["trades"] == 1 and summary["volume"] == 4


# --- options: --ledger, --market ----------------------------------------------------------


def test_market_bad_toml(run_carbonx, write_file):
    orders = write_file("o.csv", HEADER + GOOD)
    market = write_file("m.toml", "[instruments.X\ntick = '0.01'\n")
    assert_bad_input(run_carbonx("replay", orders, "--market", market), "m.toml", "TOML")


def test_market_invalid_config(run_carbonx, write_file):
    orders = write_file("o.csv", HEADER + GOOD)
    market = write_file("m.toml", '[instruments.X]\ntick = "0"\n')
    assert_bad_input(run_carbonx("replay", orders, "--market", market), "tick")


def test_market_missing_file(run_carbonx, write_file, tmp_path):
    orders = write_file("o.csv", HEADER + GOOD)
    assert_bad_input(run_carbonx("replay", orders, "--market", tmp_path / "nope.toml"), "nope.toml")


@pytest.mark.parametrize("extra", [["b.csv"], ["--bogus"]])
def test_an_extra_argument_is_the_subcommands_error_with_its_usage(run_carbonx, write_file,
                                                                   extra):
    orders = write_file("o.csv", HEADER + GOOD)
    proc = run_carbonx("replay", orders, *extra)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: carbonx replay ")
    assert f"carbonx replay: error: unrecognized arguments: {extra[0]}" in proc.stderr


def test_market_file_not_utf8(run_carbonx, write_file):
    orders = write_file("o.csv", HEADER + GOOD)
    market = write_file("m.toml", b"[instruments.X]\ntick = '0.01' # \xff\xfe\n")
    assert_bad_input(run_carbonx("replay", orders, "--market", market), "m.toml", "not UTF-8")


# --- outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("outputs, fragments", [
    (["--fills", "{orders}"], ["--fills", "would overwrite the order file"]),
    (["--fills", "out.ndjson", "--events", "out.ndjson"], ["--events", "would overwrite --fills"]),
    (["--ledger", "--holdings", "{orders}"], ["--holdings", "would overwrite the order file"]),
    (["--ledger", "--journal", "j", "--holdings", "nowhere/h.csv"], ["nowhere/h.csv",
                                                                     "no directory"]),
    (["--fills", "."], ["is a directory"]),
])
def test_outputs_that_cannot_be_written_or_would_overwrite_are_refused_first(
        run_carbonx, write_file, tmp_path, outputs, fragments):
    """Refused before anything is read or written: the order file, the other outputs and
    the journal stay as they were."""
    orders = write_file("o.csv", HEADER + GOOD)
    args = [a.format(orders=orders) for a in outputs]
    assert_bad_input(run_carbonx("replay", orders, *args), *fragments)
    assert orders.read_text(encoding="utf-8") == HEADER + GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv"]


def test_outputs_may_share_a_pipe_or_a_device(run_carbonx, write_file):
    orders = write_file("o.csv", HEADER + GOOD)
    proc = run_carbonx("replay", orders, "--fills", "/dev/stdout", "--events", "/dev/stdout",
                       "--daily", "/dev/null", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"event":"order_accepted"' in proc.stdout.replace(" ", "")


def test_a_journal_goes_only_into_a_new_or_empty_directory(run_carbonx, write_file, tmp_path):
    orders = write_file("o.csv", HEADER + GOOD)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    assert_bad_input(run_carbonx("replay", orders, "--ledger", "--journal", tmp_path / "d"),
                     "not empty and holds no journal")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["notes.txt"]
    (tmp_path / "e").mkdir()
    assert run_carbonx("replay", orders, "--ledger", "--journal", tmp_path / "e").returncode == 0
    assert (tmp_path / "e" / "meta.json").exists()


@pytest.mark.parametrize("args", [["--version"], ["replay", "{orders}"],
                                  ["replay", "{orders}", "--events", "/dev/stdout"],
                                  ["gen-orders", "--messages", "2000"],
                                  ["gen-orders", "--messages", "2000", "--out", "/dev/stdout"]])
def test_a_closed_pipe_is_output_cut_short_exit_0(write_file, args):
    """``carbonx ... | head``: the reader is gone; no traceback, status 0."""
    orders = write_file("o.csv", HEADER + GOOD)
    read, write = os.pipe()
    os.close(read)  # the reader went away before a byte was written
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway.cli",
                               *[a.format(orders=orders) for a in args]],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--version"], ["replay", "{orders}"],
                                  ["replay", "{orders}", "--events", "/dev/stdout"]])
def test_a_full_disk_on_standard_output_is_one_line_exit_2(write_file, args):
    orders = write_file("o.csv", HEADER + GOOD)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "gateway.cli",
                               *[a.format(orders=orders) for a in args]],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "No space left on device" in proc.stderr


def test_custom_market_band(capsys, write_file, tmp_path):
    """reference 60.01, band 0.1 (TOML float, read exactly): allowed 54.009.. -> 54.01..66.01."""
    market = write_file("m.toml",
                        "[instruments.X]\ntick = 0.01\nreference_price = 60.01\nband = 0.1\n")
    orders = write_file(
        "o.csv",
        HEADER + "".join([
            "new,o1,a,X,buy,limit,gtc,54.00,1\n",  # below the band
            "new,o2,a,X,buy,limit,gtc,54.01,1\n",  # low edge (rounded up)
            "new,o3,b,X,sell,limit,gtc,66.01,1\n",  # high edge (rounded down)
            "new,o4,b,X,sell,limit,gtc,66.02,1\n",  # above the band
            "new,o5,b,CEA25,sell,limit,gtc,60.00,1\n",  # not in this market
        ]))
    fills = tmp_path / "fills.ndjson"
    summary = replay_json(capsys, orders, "--market", market, "--fills", fills)
    assert summary["rejects"] == {"price_out_of_band": 2, "unknown_instrument": 1}
    assert summary["accepted"] == 2 and summary["trades"] == 0
    assert fills.read_text() == ""
    # Without --market the default market has no X at all.
    summary = replay_json(capsys, orders)
    assert summary["rejects"] == {"unknown_instrument": 4}


# --- help ---------------------------------------------------------------------------------

HELP_CASES = [([], ["replay", "gen-orders"]),
              (["replay"], [
                  "FILE", "--format", "--market", "--ledger", "--stp", "--fills", "--events",
                  "--json", "csv", "ndjson", "cancel_resting", "none"
              ]),
              (["gen-orders"], [
                  "--messages", "--seed", "--format", "--out", "--instruments", "--accounts",
                  "--profile", "mixed", "carbon", "--mix", "--depth-ticks", "--depth-shape",
                  "geometric", "--market-makers", "--deadline", "--fund"
              ])]


@pytest.mark.parametrize("sub,words", HELP_CASES, ids=["carbonx", "replay", "gen-orders"])
def test_help(run_carbonx, sub, words):
    proc = run_carbonx(*sub, "--help")
    assert proc.returncode == 0, proc.stderr
    for word in words:
        assert word in proc.stdout, word


def test_gen_orders_help_percent(run_carbonx):
    proc = run_carbonx("gen-orders", "--help")
    assert proc.returncode == 0
    assert "%%" not in proc.stdout
    assert "70%" in proc.stdout


def test_console_script_on_path(tmp_path):
    exe = shutil.which("carbonx")
    if exe is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence is a failure there
            pytest.fail("carbonx console script not on PATH (CI is set)")
        pytest.skip("carbonx console script not on PATH")
    proc = subprocess.run([exe, "replay", "--help"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "--fills" in proc.stdout
    proc = subprocess.run([exe, "replay", tmp_path / "missing.csv"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_no_command_prints_the_help(run_carbonx):
    proc = run_carbonx()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: carbonx")
    for sub in ("replay", "holdings", "journal-cut", "serve", "demo", "broker-config"):
        assert sub in proc.stdout, sub
    assert proc.stdout == run_carbonx("--help").stdout


def test_version(run_carbonx):
    from importlib import metadata

    proc = run_carbonx("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert re.fullmatch(r"carbonx \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout
    assert proc.stdout == f"carbonx {metadata.version('carbonx')}\n"
    assert "--version" in run_carbonx("--help").stdout


def test_version_without_installed_metadata(capsys, monkeypatch, tmp_path):
    """Not installed (run from a checkout): the source tree's pyproject.toml says it."""
    import tomllib
    from importlib import metadata

    import gateway.cli

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gateway.cli.metadata, "version", missing)
    with open(Path(gateway.cli.__file__).resolve().parents[1] / "pyproject.toml", "rb") as fh:
        expected = tomllib.load(fh)["project"]["version"]
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"carbonx {expected}\n"
    # Neither installed nor in a source tree: still an answer, still exit 0.
    monkeypatch.setattr(gateway.cli, "__file__", str(tmp_path / "gateway" / "cli.py"))
    assert gateway.cli.package_version() == "unknown"
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == "carbonx unknown\n"


def test_bad_stp_option_is_usage_error(run_carbonx, write_file):
    path = write_file("o.csv", HEADER + GOOD)
    proc = run_carbonx("replay", path, "--stp", "sometimes")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--stp" in proc.stderr


# --- gen-orders ---------------------------------------------------------------------------


def test_gen_orders_deterministic(run_carbonx, tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    for out, seed, hash_seed in ((a, 7, "1"), (b, 7, "2"), (c, 8, "1")):
        proc = run_carbonx("gen-orders", "--messages", 2000, "--seed", seed, "--out", out,
                           env={"PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    rows = data_rows(a)
    assert len(rows) == 2000
    assert a.read_text().splitlines()[0] == HEADER.strip()
    actions = {r["action"] for r in rows}
    assert actions <= {"new", "cancel"} and "new" in actions and "cancel" in actions


def test_gen_orders_ndjson_replays_like_csv(capsys, tmp_path):
    a, n = tmp_path / "a.csv", tmp_path / "a.ndjson"
    assert cli(capsys, "gen-orders", "--messages", 2000, "--seed", 7, "--out", a)[0] == 0
    assert (cli(capsys, "gen-orders", "--messages", 2000, "--seed", 7, "--format", "ndjson",
                "--out", n)[0] == 0)
    records = read_ndjson(n)
    assert len(records) == 2000
    assert all(type(r.get("qty", 0)) is int for r in records)
    assert all(v != "" for r in records for v in r.values()), "empty keys are left out"
    csv_summary = replay_json(capsys, a)
    nd_summary = replay_json(capsys, n)
    assert csv_summary["state_hash"] == nd_summary["state_hash"]
    assert csv_summary["messages"] == nd_summary["messages"] == 2000
    assert csv_summary["trades"] > 0
    # The generator cancels only live orders: nothing in its file is rejected.
    assert csv_summary["rejected"] == 0, csv_summary["rejects"]


def test_gen_orders_to_stdout_and_bad_instrument(capsys):
    status, out, _ = cli(capsys, "gen-orders", "--messages", 5, "--seed", 3)
    assert status == 0
    assert out.splitlines()[0] == HEADER.strip() and len(out.splitlines()) == 6
    status, out, err = cli(capsys, "gen-orders", "--messages", 5, "--instruments", "NOPE")
    assert status == 2 and "NOPE" in err


# --- bugs found and fixed (regressions) -------------------------------------------------------


def test_huge_price_is_rejected_not_a_crash(run_carbonx, write_file):
    path = write_file("o.csv", HEADER + "new,o1,a,CEA25,sell,limit,gtc,100000000000000000000,10\n")
    proc = run_carbonx("replay", path, "--json")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["rejected"] == 1


def test_huge_ts_no_crash(run_carbonx, write_file):
    path = write_file("o.csv", "action,ts\neod,100000000000000000000000\n")
    proc = run_carbonx("replay", path, "--json")
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2)
