"""``carbonx admin``, the operator's console: its exit statuses, its output, and a run
against ``carbonx serve``; and ``benchmarks/admin.py`` at a tiny count.

The exit logic is tested against a fake exchange (an aiomqtt client on a mosquitto that
lets anyone logged in use any topic: subscribed to the operator's commands, it answers
as the contract says, in ways the real one may not: lists, answers to other ids,
duplicates, silence); the end-to-end test runs the real ``carbonx serve``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serving
from mosquitto import Mosquitto, free_port, require_mosquitto

from exchange.commands import Deposit, OpenAccount
from exchange.orderfile import OrderFileError
from gateway.mqtt.brokerconfig import hash_password
from gateway.protocol import (GATEWAY_FAILED, GATEWAY_LOST, GATEWAY_STATUS, GATEWAY_STOPPED,
                              OPS_COMMANDS, OPS_REPORTS)
from gateway.tools import admin

REPO = Path(__file__).resolve().parents[1]
OPERATOR_PASSWORD = "op-secret"
GATEWAY_PASSWORD = "gw-secret"


def carbonx_admin(*args: str, cwd: Path, stdin: str | None = None, env: dict | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "CARBONX_PASSWORD"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway.cli", "admin", *args], cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=environ, stdin=None if stdin is not None else subprocess.DEVNULL)


# --- reading the file ---------------------------------------------------------------------


def test_rows_keep_their_file_lines_csv_ndjson_and_stdin():
    csv_text = (b"action,account,instrument,qty\n\ndeposit,alice,CNY,100\r\n"
                b"open_account,bob,,\n\n\nwithdraw,bob,CNY,5\n")
    rows = admin.read_rows("-", stdin=lambda: csv_text)
    assert [(r.line, r.number) for r in rows] == [(3, 1), (4, 2), (7, 3)]
    assert isinstance(rows[0].command, Deposit) and rows[0].command.amount == "100"
    assert isinstance(rows[1].command, OpenAccount)
    ndjson = (b'\n{"action":"deposit","account":"alice","instrument":"CNY","qty":"100"}\n  \n'
              b'{"action":"open_account","account":"bob","command_id":"mine"}\n')
    rows = admin.read_rows("-", stdin=lambda: ndjson)  # sniffed: NDJSON
    assert [r.line for r in rows] == [2, 4]
    named = admin.with_command_ids(rows, "beef")
    assert [r.command.command_id for r in named] == ["admin-beef-1", "mine"]


def test_a_row_that_cannot_be_read_names_the_file_and_line():
    with pytest.raises(OrderFileError) as caught:
        admin.read_rows("-", stdin=lambda: b"action,account,instrument,qty\n\n"
                        b"deposit,a,CNY,1\nwithdraw,a,CNY,lots\n")
    assert str(caught.value).startswith("<stdin>, line 4: qty 'lots'")


def test_commands_go_out_keyed_like_the_order_file():
    """What is published: the order file's keys (deposit's fields are renamed to them)."""
    row = admin.with_command_ids(
        admin.read_rows("-", stdin=lambda: b"action,account,instrument,qty\n"
                        b"deposit,alice,CNY,100.50\n"), "cafe")[0]
    assert json.loads(admin._encode(row.command)) == {
        "action": "deposit",
        "account": "alice",
        "instrument": "CNY",
        "qty": "100.50",
        "command_id": "admin-cafe-1"
    }


def test_answer_lines_say_line_action_whom_outcome_and_reason():
    row = admin.read_rows("-", stdin=lambda: b"action,account,instrument,qty,to_account\n"
                          b"transfer,alice,CEA25,5,bob\n")[0]
    assert (admin.answer_line(row, {"report": "accepted", "seq": 7}) ==
            "line 2 transfer alice -> bob CEA25: accepted (seq 7)")
    assert (admin.answer_line(row, {
        "report": "rejected",
        "seq": None,
        "reason": "bad_command",
        "message": "qty must be positive",
        "duplicate": True
    }) == "line 2 transfer alice -> bob CEA25: rejected bad_command: qty must be positive "
            "(answered before: a duplicate command id)")


# --- failing before the exchange ---------------------------------------------------------


def test_an_unreadable_file_exits_2_naming_the_line_and_sends_nothing(tmp_path):
    (tmp_path / "bad.csv").write_text("action,account,instrument,qty\n"
                                      "deposit,alice,CNY,100\nwithdraw,alice,CNY,1.2.3\n")
    # Port 1 has no broker: the file is read (and refused) before any connection.
    done = carbonx_admin("--broker", "mqtt://operator:pw@127.0.0.1:1", "bad.csv", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("carbonx admin: error: bad.csv, line 3: qty '1.2.3'")
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    missing = carbonx_admin("--broker", "mqtt://operator:pw@127.0.0.1:1", "nope.csv",
                            cwd=tmp_path)
    assert missing.returncode == 2 and "nope.csv: cannot read" in missing.stderr


@pytest.mark.parametrize(
    "args, env, message",
    [(["--broker", "mqtt://operator@127.0.0.1:1"], {}, "no password for user operator"),
     (["--broker", "mqtt://127.0.0.1:1"], {}, "expected mqtt://operator@HOST:PORT"),
     (["--broker", "mqtt://operator@127.0.0.1:1", "--password-file", "none.txt"], {},
      "--password-file none.txt: cannot read"),
     (["--broker", "mqtt://operator@127.0.0.1:1"], {
         "CARBONX_PASSWORD": "pw"
     }, "cannot connect to broker 127.0.0.1:1"),
     (["--broker", "mqtt://operator@127.0.0.1:1", "--timeout", "0"], {}, "--timeout"),
     (["--broker", "mqtt://operator@127.0.0.1:1", "--timeout", "inf"], {}, "--timeout inf"),
     (["--broker", "mqtt://operator@127.0.0.1:1", "--timeout", "nan"], {}, "--timeout nan"),
     (["--broker", "mqtt://operator@127.0.0.1:99999"], {"CARBONX_PASSWORD": "pw"},
      "the port is not a number from 1 to 65535"),
     (["--broker", "mqtt://operator@[::1"], {"CARBONX_PASSWORD": "pw"},
      "broker URL 'mqtt://operator@[::1': Invalid IPv6 URL")])
def test_bad_options_and_no_broker_exit_2_with_one_line(tmp_path, args, env, message):
    (tmp_path / "ok.csv").write_text("action,account,instrument,qty\ndeposit,alice,CNY,100\n")
    done = carbonx_admin(*args, "ok.csv", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# --- a fake exchange on a mosquitto open to every logged-in user ------------------------


class FakeExchange:
    """Answers the operator's commands on OPS_REPORTS, in its own thread and loop:
    ``withdraw`` rejected ``insufficient_funds``; account ``silent`` never answered;
    account ``listy`` answered in a list after an answer to another id, marked
    duplicate; anything else accepted with the next ``seq``. With *lose_first*, the
    first copy of each command id is lost (as while a cluster's leader changes)."""

    def __init__(self, port: int, lose_first: bool = False) -> None:
        self.port = port
        self.lose_first = lose_first
        self.received: list[dict] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> FakeExchange:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"the fake exchange did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        import aiomqtt

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        seq = 100
        try:
            async with aiomqtt.Client("127.0.0.1", self.port, username="gateway",
                                      password=GATEWAY_PASSWORD) as client:
                await client.subscribe(OPS_COMMANDS, qos=1)
                self._ready.set()
                stopper = asyncio.ensure_future(self._stop.wait())
                messages = client.messages
                while True:
                    getter = asyncio.ensure_future(anext(messages))
                    await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if stopper.done():
                        getter.cancel()
                        return
                    command = json.loads(getter.result().payload)
                    self.received.append(command)
                    if self.lose_first and [c["command_id"] for c in self.received].count(
                            command["command_id"]) == 1:
                        continue
                    seq += 1
                    answer = {"report": "accepted", "seq": seq, "action": command["action"],
                              "command_id": command.get("command_id"),
                              "account": command.get("account")}
                    if command["action"] == "withdraw":
                        answer.update(report="rejected", reason="insufficient_funds",
                                      message="not enough CNY")
                    account = command.get("account")
                    if account == "silent":
                        continue
                    payload: object = answer
                    if account == "listy":
                        other = dict(answer, command_id="someone-else", report="rejected",
                                     reason="other")
                        payload = [other, dict(answer, duplicate=True)]
                    await client.publish(OPS_REPORTS, json.dumps(payload), qos=1)
        except BaseException as exc:  # said by __enter__ when it never started
            self._failure = exc
            raise


@pytest.fixture
def open_broker(tmp_path) -> Mosquitto:
    """A mosquitto on a free port where ``operator`` and ``gateway`` log in with their
    passwords (anything else is refused) and may use every topic."""
    require_mosquitto()
    directory = tmp_path / "open-broker"
    directory.mkdir()
    passwd = directory / "passwd"
    passwd.write_text(f"operator:{hash_password(OPERATOR_PASSWORD)}\n"
                      f"gateway:{hash_password(GATEWAY_PASSWORD)}\n")
    passwd.chmod(0o600)
    (directory / "mosquitto.conf").write_text(
        f"listener {free_port()} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n")
    broker = Mosquitto(directory)
    broker.start()
    yield broker
    broker.stop()


FILE = ("action,account,instrument,qty,kind\n"
        "open_account,alice,,,financial\n"
        "\n"
        "deposit,alice,CNY,1000,\n"
        "withdraw,alice,CNY,5000,\n"
        "issue,alice,CEA25,10,\n")


def url(broker: Mosquitto, password: str | None = None) -> str:
    auth = "operator" + (f":{password}" if password else "")
    return f"mqtt://{auth}@127.0.0.1:{broker.port}"


def test_all_accepted_exits_0_one_line_a_row(open_broker, tmp_path):
    (tmp_path / "pw").write_text(OPERATOR_PASSWORD + "\n")
    (tmp_path / "ok.csv").write_text(FILE.replace("withdraw,alice,CNY,5000,\n", ""))
    with FakeExchange(open_broker.port) as exchange:
        done = carbonx_admin("--broker", url(open_broker), "--password-file", "pw", "ok.csv",
                             cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "line 2 open_account alice: accepted (seq 101)",
        "line 4 deposit alice CNY: accepted (seq 102)",
        "line 5 issue alice CEA25: accepted (seq 103)",
    ]
    assert "3 row(s) sent: 3 accepted, 0 rejected" in done.stderr
    sent = exchange.received
    assert [c["action"] for c in sent] == ["open_account", "deposit", "issue"]
    assert sent[1] == {"action": "deposit", "account": "alice", "instrument": "CNY",
                       "qty": "1000", "command_id": sent[1]["command_id"]}
    ids = [c["command_id"] for c in sent]
    assert len(set(ids)) == 3 and all(i.startswith("admin-") for i in ids)
    assert [i.rsplit("-", 1)[1] for i in ids] == ["1", "2", "3"]


def test_a_rejected_row_exits_1_and_the_rows_after_it_still_go(open_broker, tmp_path):
    (tmp_path / "orders.csv").write_text(FILE)
    with FakeExchange(open_broker.port) as exchange:
        done = carbonx_admin("--broker", url(open_broker), "orders.csv", cwd=tmp_path,
                             env={"CARBONX_PASSWORD": OPERATOR_PASSWORD})
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[2:] == [
        "line 5 withdraw alice CNY: rejected insufficient_funds: not enough CNY (seq 103)",
        "line 6 issue alice CEA25: accepted (seq 104)",
    ]
    assert len(exchange.received) == 4
    assert "4 row(s) sent: 3 accepted, 1 rejected" in done.stderr


def test_json_from_stdin_prints_each_answer_with_its_line(open_broker, tmp_path):
    ndjson = ('{"action":"deposit","account":"alice","instrument":"CNY","qty":"7"}\n'
              '{"action":"withdraw","account":"alice","instrument":"CNY","qty":"9",'
              '"command_id":"mine-1"}\n'
              '{"action":"deposit","account":"listy","instrument":"CNY","qty":"1"}\n')
    with FakeExchange(open_broker.port):
        done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--json", "-",
                             cwd=tmp_path, stdin=ndjson)
    assert done.returncode == 1, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(a["line"], a["report"], a["action"]) for a in answers] == [
        (1, "accepted", "deposit"), (2, "rejected", "withdraw"), (3, "accepted", "deposit")
    ]
    assert answers[1]["command_id"] == "mine-1" and answers[1]["reason"] == "insufficient_funds"
    assert answers[0]["seq"] == 101 and answers[0]["command_id"].startswith("admin-")
    # The answer in a list after another id's: that one is ignored, this one taken,
    # its duplicate mark kept.
    assert answers[2]["duplicate"] is True and answers[2]["account"] == "listy"


def test_no_answer_exits_2_within_the_timeout(open_broker, tmp_path):
    """A broker with no exchange behind it, and an exchange that stays silent."""
    (tmp_path / "ok.csv").write_text(FILE)
    started = time.monotonic()
    done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--timeout", "0.5",
                         "ok.csv", cwd=tmp_path)
    assert time.monotonic() - started < 8
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"carbonx admin: error: no answer from the exchange to line 2 (open_account alice) "
        f"within 0.5 s (is carbonx serve running on the broker 127.0.0.1:{open_broker.port}?); "
        "the rows carry command ids admin-")
    assert "'--session " in lines[0]
    (tmp_path / "silent.csv").write_text("action,account,instrument,qty\n"
                                         "deposit,alice,CNY,1\ndeposit,silent,CNY,1\n"
                                         "deposit,alice,CNY,2\n")
    with FakeExchange(open_broker.port) as exchange:
        done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--timeout", "0.5",
                             "silent.csv", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.splitlines() == ["line 2 deposit alice CNY: accepted (seq 101)"]
    assert "no answer from the exchange to line 3 (deposit silent CNY)" in done.stderr
    assert len(exchange.received) == 2  # the row after the silence is not sent


@pytest.mark.parametrize("status, why", [(GATEWAY_STOPPED, "is down: it was stopped"),
                                         (GATEWAY_FAILED, "is down: it stopped on an error"),
                                         (GATEWAY_LOST, "is down: its connection was lost")])
def test_no_answer_while_the_gateway_is_down_says_so(open_broker, tmp_path, status, why):
    """The gateway's last word, retained on cx/v1/status, is the reason given."""
    import aiomqtt

    async def say() -> None:
        async with aiomqtt.Client("127.0.0.1", open_broker.port, username="gateway",
                                  password=GATEWAY_PASSWORD) as gateway:
            await gateway.publish(GATEWAY_STATUS, status, qos=1, retain=True)

    asyncio.run(say())
    (tmp_path / "ok.csv").write_text(FILE)
    done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--timeout", "0.5",
                         "ok.csv", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert (f"within 0.5 s (the exchange's gateway on the broker 127.0.0.1:{open_broker.port} "
            f"{why}); ") in done.stderr, done.stderr


def test_a_row_lost_on_the_way_is_sent_again_with_its_id(open_broker, tmp_path):
    """A row sent while no gateway read (a cluster's leader changing) was lost, and
    admin stopped after its timeout. It is now sent again each second with the same
    command id until answered."""
    (tmp_path / "ok.csv").write_text("action,account,instrument,qty\n"
                                     "deposit,alice,CNY,1\ndeposit,bob,CNY,2\n")
    with FakeExchange(open_broker.port, lose_first=True) as exchange:
        done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--timeout", "5",
                             "ok.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[1].strip() for line in done.stdout.splitlines()] == [
        "accepted (seq 101)", "accepted (seq 102)"]
    ids = [c["command_id"] for c in exchange.received]
    assert len(ids) == 4 and ids[0] == ids[1] != ids[2] == ids[3]


def test_a_session_sends_the_file_again_with_the_ids_of_an_earlier_run(open_broker, tmp_path):
    (tmp_path / "ok.csv").write_text("action,account,instrument,qty\ndeposit,alice,CNY,1\n")
    with FakeExchange(open_broker.port) as exchange:
        done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--session",
                             "0badc0de", "ok.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [c["command_id"] for c in exchange.received] == ["admin-0badc0de-1"]
    done = carbonx_admin("--broker", url(open_broker, OPERATOR_PASSWORD), "--session", "x-1",
                         "ok.csv", cwd=tmp_path)
    assert done.returncode == 2 and "--session 'x-1'" in done.stderr


def test_a_wrong_password_exits_2_saying_the_login_was_refused(open_broker, tmp_path):
    (tmp_path / "ok.csv").write_text(FILE)
    done = carbonx_admin("--broker", url(open_broker, "wrong"), "ok.csv", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"carbonx admin: error: the broker at 127.0.0.1:"
                                  f"{open_broker.port} refused the login for user operator")
    assert len(done.stderr.splitlines()) == 1
    assert "--session" not in done.stderr  # nothing was sent: no ids to send again


# --- end to end: carbonx serve with its embedded broker ---------------------------------


def start_serve(tmp_path: Path, port: int) -> subprocess.Popen:
    """``carbonx serve`` on the embedded broker, journaling in tmp_path/j, once ready."""
    (tmp_path / "init.csv").write_text("action,account,instrument,qty\ndeposit,bob,CNY,10\n")
    process, _ = serving.start_serve(
        ["--port", str(port), "--init", "init.csv", "--journal", "j"], cwd=tmp_path, timeout=20)
    return process


def stop_serve(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    assert process.returncode == 0, err
    return err


OPERATOR_FILE = ("action,account,instrument,qty,kind,command_id\n"
                 "open_account,carol,,,financial,\n"
                 "deposit,carol,CNY,1000,,\n"
                 "withdraw,carol,CNY,5000,,\n"
                 "deposit,carol,CNY,1,,op-once\n")


def test_end_to_end_with_carbonx_serve(tmp_path):
    port = free_port()
    serve = start_serve(tmp_path, port)
    try:
        password = json.loads((tmp_path / "j" / "credentials.json").read_text())["operator"]
        (tmp_path / "pw").write_text(password + "\n")
        (tmp_path / "ops.csv").write_text(OPERATOR_FILE)
        broker = ["--broker", f"mqtt://operator@127.0.0.1:{port}", "--password-file", "pw"]
        done = carbonx_admin(*broker, "ops.csv", cwd=tmp_path)
        # The last row again, by its command id: answered from the exchange's memory.
        (tmp_path / "again.ndjson").write_text(
            '{"action":"deposit","account":"carol","instrument":"CNY","qty":"1",'
            '"command_id":"op-once"}\n')
        again = carbonx_admin(*broker, "--json", "again.ndjson", cwd=tmp_path)
        # Anyone else is not the operator: an account may not read the operator's answers.
        bob = json.loads((tmp_path / "j" / "credentials.json").read_text())["bob"]
        intruder = carbonx_admin("--broker", f"mqtt://bob@127.0.0.1:{port}", "ops.csv",
                                 cwd=tmp_path, env={"CARBONX_PASSWORD": bob}, timeout=20)
        wrong = carbonx_admin("--broker", f"mqtt://operator:wrong@127.0.0.1:{port}", "ops.csv",
                              cwd=tmp_path)
    finally:
        stop_serve(serve)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    assert lines[0].startswith("line 2 open_account carol: accepted (seq ")
    assert lines[1].startswith("line 3 deposit carol CNY: accepted (seq ")
    assert lines[2].startswith("line 4 withdraw carol CNY: rejected insufficient_cash")
    assert lines[3].startswith("line 5 deposit carol CNY: accepted (seq ")
    seqs = [int(line.split("seq ")[1].split(")")[0].split(",")[0]) for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert "4 row(s) sent: 3 accepted, 1 rejected" in done.stderr

    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert (answer["report"], answer["command_id"], answer["line"]) == ("accepted", "op-once", 1)
    assert answer["duplicate"] is True and answer["seq"] == seqs[3]

    assert intruder.returncode == 2 and intruder.stdout == ""
    assert len(intruder.stderr.splitlines()) == 1 and "Traceback" not in intruder.stderr
    assert wrong.returncode == 2 and "refused the login for user operator" in wrong.stderr

    # Applied once each: 1,000 + 1 (the resent row is not applied again), no withdrawal.
    holdings = subprocess.run([sys.executable, "-m", "gateway.cli", "holdings", "j", "--json"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)
    cash = {(h["account"], h["asset"]): h["available"]
            for h in json.loads(holdings.stdout)["holdings"]}
    assert float(cash[("carol", "CNY")]) == 1001


# --- the benchmark, tiny ------------------------------------------------------------------


def test_the_admin_benchmark_runs_and_reports_sane_numbers(tmp_path):
    require_mosquitto()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.admin", "--count", "25", "--warmup", "3", "--json",
         "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result == json.loads((tmp_path / "admin.json").read_text())
    assert result["count"] == result["n"] == result["accepted"] == 25
    assert result["answers"] == {"accepted": 25}
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["p50_ms"] <= result["mean_ms"] * 10 and result["max_ms"] < 10_000


def test_a_connection_lost_while_a_row_is_being_published_is_said_at_once():
    """With the broker gone, the QoS 1 publish of a row waited for good: the reader's
    'lost the connection' went to a future no one awaited (asyncio printed 'exception
    never retrieved'), and admin said 'no answer from the exchange' after its timeout."""
    from gateway.mqtt.serve import BrokerAddress

    class Stalled:
        async def publish(self, *args, **kwargs):
            await asyncio.Event().wait()  # never acknowledged

    async def scenario() -> tuple[str, float]:
        client = admin.AdminClient(BrokerAddress("127.0.0.1", 1, "operator", "x"), timeout=10)
        client._mqtt = Stalled()

        async def lose() -> None:
            await asyncio.sleep(0.1)
            client._lost = "lost the connection to the broker 127.0.0.1:1"
            for future in client._pending.values():
                future.set_exception(admin.AdminError(client._lost))

        started = time.monotonic()
        loser = asyncio.ensure_future(lose())
        with pytest.raises(admin.AdminError) as caught:
            await client.send(Deposit(account="alice", currency="CNY", amount="1.00"))
        await loser
        return str(caught.value), time.monotonic() - started

    message, waited = asyncio.run(scenario())
    assert message == "lost the connection to the broker 127.0.0.1:1" and waited < 2


def test_a_row_whose_time_runs_out_mid_publish_leaves_no_publish_behind():
    """The publish raced the answer as a task of its own, which the row's timeout did not
    cancel: it ran on, and its failure printed 'Task exception was never retrieved'."""
    from gateway.mqtt.serve import BrokerAddress

    class Stalled:
        async def publish(self, *args, **kwargs):
            await asyncio.sleep(10)

    async def scenario() -> list:
        client = admin.AdminClient(BrokerAddress("127.0.0.1", 1, "operator", "x"), timeout=0.2)
        client._mqtt = Stalled()
        with pytest.raises(admin.AdminError, match="no answer from the exchange"):
            await client.send(Deposit(account="alice", currency="CNY", amount="1.00"))
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(scenario()) == []


def test_a_pledge_rows_line_names_its_pledge():
    from exchange.commands import EnforcePledge, PledgeAllowances, ReleasePledge

    assert admin.describe(PledgeAllowances(pledge_id="p1", account="acme", to_account="bank",
                                           instrument="CEA25", qty=5)) == \
        "pledge acme -> bank CEA25 pledge p1"
    assert admin.describe(ReleasePledge(pledge_id="p1", account="acme")) == \
        "pledge_release acme pledge p1"
    assert admin.describe(EnforcePledge(pledge_id="p2", account="acme", qty=3)) == \
        "pledge_enforce acme pledge p2"
