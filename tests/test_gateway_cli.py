"""The gateway's commands as users run them: broker-config, serve (embedded broker and
mosquitto), demo, and the gateway benchmark's quick run (agreement, not speed)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serving
from mosquitto import free_port, require_mosquitto

from gateway.bots.client import ExchangeClient

REPO = Path(__file__).resolve().parents[1]


def carbonx(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=kwargs.pop("cwd", REPO), **kwargs)


def start_serve(*args: str, cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    return serving.start_serve(args, cwd=cwd, stdout=subprocess.PIPE, timeout=20,
                               ready=("gateway ready", "gateway on"))


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    return process.returncode, err


def trade(port: int, credentials: dict) -> tuple[dict, dict]:

    async def go():
        async with (ExchangeClient("alice", credentials["alice"], port=port) as
                    alice, ExchangeClient("bob", credentials["bob"], port=port) as bob):
            sold = await alice.place("CEA25", "sell", 100, "60.00", order_id="s1")
            bought = await bob.place("CEA25", "buy", 100, "60.00", order_id="b1")
            return sold, bought

    return asyncio.run(asyncio.wait_for(go(), 30))


FUNDING = ("action,account,instrument,qty\n"
           "deposit,alice,CNY,100000\nissue,alice,CEA25,1000\n"
           "deposit,bob,CNY,100000\n")


def test_serve_embedded_broker_trades_and_journals(tmp_path):
    (tmp_path / "init.csv").write_text(FUNDING)
    port = free_port()
    process, lines = start_serve("--init", "init.csv", "--journal", "j", "--port", str(port),
                                 "--always-open", cwd=tmp_path)
    try:
        credentials = json.loads((tmp_path / "j" / "credentials.json").read_text())
        assert set(credentials) == {"alice", "bob", "gateway", "operator"}
        assert oct((tmp_path / "j" / "credentials.json").stat().st_mode & 0o777) == "0o600"
        sold, bought = trade(port, credentials)
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert (sold["report"], bought["report"]) == ("accepted", "accepted")
    assert "Traceback" not in err and "1 trades this run\n" in err
    holdings = carbonx("holdings", str(tmp_path / "j"), "--json")
    rows = {(h["account"], h["asset"]): h for h in json.loads(holdings.stdout)["holdings"]}
    assert rows[("bob", "CEA25")]["locked"] == 100  # bought today: locked until T+1
    assert json.loads(holdings.stdout)["seq"] == 5  # 3 init rows + 2 orders
    # A clean stop left a snapshot of where it stopped: a restart (perhaps of a newer
    # carbonx, whose rules may differ) replays no command.
    from exchange.journal import recover

    recovered = recover(tmp_path / "j")
    assert (recovered.seq, recovered.snapshot_seq, recovered.replayed) == (5, 5, 0)
    # Started again on its journal and stopped: the summary counts this run's trades
    process, lines = start_serve("--journal", "j", "--port", str(port), "--always-open",
                                 cwd=tmp_path)
    code, err = stop(process)
    assert code == 0, err
    assert "0 trades this run (1 with the journal's before it)" in err, err


def test_serve_joins_mosquitto_with_broker_config(tmp_path):
    require_mosquitto()
    from mosquitto import Mosquitto

    port = free_port()
    done = carbonx("broker-config", "--out", str(tmp_path / "b"), "--port", str(port), "alice",
                   "bob:bobs-password")
    assert done.returncode == 0, done.stderr
    credentials = json.loads((tmp_path / "b" / "credentials.json").read_text())
    assert credentials["bob"] == "bobs-password"
    (tmp_path / "init.csv").write_text(FUNDING)
    with Mosquitto(tmp_path / "b"):
        url = f"mqtt://gateway:{credentials['gateway']}@127.0.0.1:{port}"
        process, _ = start_serve("--broker", url, "--init", "init.csv", "--always-open",
                                 cwd=tmp_path)
        try:
            time.sleep(0.3)
            sold, bought = trade(port, credentials)
        finally:
            code, err = stop(process)
    assert code == 0, err
    assert (sold["report"], bought["report"]) == ("accepted", "accepted")


@pytest.mark.parametrize(
    "args, message", [(["serve", "--broker", "http://x"], "expected mqtt://"),
                      (["serve", "--broker", "mqtt://127.0.0.1:1883"], "user and password"),
                      (["serve", "--port", "0"], "not a port"),
                      (["serve", "--web", "0"], "--web 0: not a port number"),
                      # options that would be passed over
                      (["serve", "--broker", "mqtt://gw:pw@127.0.0.1:1", "--port", "1884"],
                       "--credentials and --port are the embedded broker's"),
                      (["serve", "--web-credentials", "c.json"], "goes with --web"),
                      (["serve", "--node-id", "n1"], "goes with --cluster"),
                      (["serve", "--eod", "25:00"], "--eod: expected HH:MM"),
                      (["serve", "--init", "missing.csv"], "missing.csv"),
                      (["demo", "--seconds", "0"], "--seconds"),
                      (["broker-config", "--out", "x", "--port", "1883", "gateway"], "reserved"),
                      (["broker-config", "--out", "x", "--port", "1883", "a/b"], "a/b")])
def test_bad_gateway_options_exit_2_without_a_traceback(tmp_path, args, message):
    done = carbonx(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_demo_runs_bots_and_sums_up(tmp_path):
    done = carbonx("demo", "--seconds", "3", "--journal", str(tmp_path / "j"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "instrument  trades" in out and "CEA25" in out
    for bot in ("mm-1", "mm-2", "noise-1", "noise-2", "noise-3", "steel-1", "power-1"):
        assert bot in out
    trades = int(out.split(" trades,")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert trades > 0
    # Two trading days: the steel company bought 150,000 t of its shortfall in one block;
    # each market maker was assessed each day, mm-2 (quoting wider than its obligation
    # allows) missing it.
    assert "block trades: CEA25 1 for 150,000 t" in out
    assessed = [line.split() for line in out.splitlines()
                if line.split()[:1] in (["1"], ["2"]) and "CEA2" in line]
    assert [(row[0], row[1]) for row in assessed] == [("1", "mm-1"), ("1", "mm-2"),
                                                      ("2", "mm-1"), ("2", "mm-2")]
    assert [row[5] for row in assessed if row[1] == "mm-2"] == ["missed", "missed"]
    # The journal holds the whole session: recovery ends with the same trade count.
    recovered = json.loads(carbonx("holdings", str(tmp_path / "j"), "--json").stdout)
    assert recovered["seq"] > 18


def test_gateway_benchmark_quick_loses_nothing(tmp_path):
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--quick", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "gateway-quick.json").read_text())
    assert result["verdict"]["zero_lost"]
    # Every order rested (the market always open, the bots under their position limits):
    # a refusal would time the wrong work.
    assert result["verdict"]["rejected"] == 0 and result["gateway"]["first_refusal"] is None
    for side in ("gateway", "raw"):
        assert result[side]["unbatched"]["answered"] == result[side]["unbatched"]["sent"] > 0
        assert result[side]["batched"]["answered"] == result[side]["batched"]["sent"] > 0
        assert result[side]["latency_2000"]["n"] == result[side]["latency_2000"]["sent"]


def test_fairness_benchmark_quick_answers_every_quiet_order_and_refuses_none(tmp_path):
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fairness", "--quick", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "fairness-quick.json").read_text())
    runs = {key: run for key, run in result.items() if key not in ("settings", "verdict")}
    assert sorted(runs) == ["embedded_batch1", "embedded_batch100", "mosquitto_batch1",
                            "mosquitto_batch100"]
    for run in runs.values():
        quiet, flood = run["quiet"], run["flood"]
        assert quiet["unanswered"] == 0 and quiet["refused"] == 0
        assert quiet["n"] == quiet["sent"] > 0  # one latency sample per quiet order
        assert flood["refused"] == 0 and flood["answered"] > 0
        assert quiet["slowest"][0][1] == max(t for _, t in quiet["slowest"])
    assert result["verdict"]["refused"] == 0
    assert result["verdict"]["worst_quiet_p99_ms"] == max(r["quiet"]["p99_ms"]
                                                          for r in runs.values())
