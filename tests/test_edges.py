"""The clean edges: how ``carbonx serve`` fails to start (a port in use, an unreachable
broker, a refused login: one line, exit 2, nothing written), the gateway's password off
the command line, "gateway ready" only once it is, and commands that refuse unknown
enum values from any Python caller."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiomqtt
import msgspec
import pytest
import serving
from mosquitto import (  # noqa: F401  (the fixtures that ``broker`` asks for)
    Broker, Mosquitto, free_port, mosquitto_broker, mosquitto_factory, require_mosquitto)
from test_gateway_cli import FUNDING, trade

from exchange import Engine, default_market
from exchange.commands import (AnyCommand, CancelOrder, MassCancel, OpenAccount, PlaceOrder)
from exchange.journal import create_journal
from gateway.mqtt.brokerconfig import write_broker_config
from gateway.mqtt.serve import BrokerAddress, ServeError, probe_broker, resolve_broker


def test_an_error_in_a_loop_callback_is_one_line_on_the_log_not_a_traceback(caplog):
    """A leader woken from SIGSTOP printed 'Exception in callback ... RuntimeError: unable
    to perform operation on <UVPoll closed=True>' with a traceback (the MQTT client's
    callback on a socket the broker had closed). The loop's errors are said in one line,
    and the loop goes on."""
    import logging

    from gateway.mqtt.serve import run_async

    ran: list[str] = []

    async def main() -> None:
        def broken() -> None:
            raise RuntimeError("unable to perform operation on <UVPoll closed=True>")

        loop = asyncio.get_running_loop()
        loop.call_soon(broken)
        await asyncio.sleep(0.01)
        ran.append("after")

    with caplog.at_level(logging.WARNING, logger="carbonx.serve"):
        run_async(main())
    assert ran == ["after"]
    said = [r for r in caplog.records if r.name == "carbonx.serve"]
    assert len(said) == 1 and said[0].exc_info is None
    assert "RuntimeError: unable to perform operation" in said[0].getMessage()


def carbonx(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CARBONX_PASSWORD"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=environ,
                          stdin=subprocess.DEVNULL, check=False)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``carbonx serve: error: ...`` line of a failed start (exit 2)."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("carbonx serve: error: ")
    return lines[0].removeprefix("carbonx serve: error: ")


def start_serve(*args: str, cwd: Path,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    environ = {k: v for k, v in os.environ.items() if k != "CARBONX_PASSWORD"}
    environ.update(env or {})
    return serving.start_serve(args, cwd=cwd, env=environ, stdout=subprocess.PIPE)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Broker:
    """A running mosquitto (``carbonx broker-config``'s) with accounts alice and bob."""
    return request.getfixturevalue("mosquitto_broker")


@pytest.fixture
def held_port():
    """A loopback port that something else is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# --- 1. a port in use --------------------------------------------------------------------


def test_serve_on_a_port_in_use_says_so_and_writes_nothing(tmp_path: Path, held_port: int) -> None:
    (tmp_path / "init.csv").write_text(FUNDING)
    for extra in (["--journal", "j"], ["--journal", "j", "--credentials", "c.json"], []):
        done = carbonx("serve", "--port", str(held_port), "--init", "init.csv", *extra,
                       cwd=tmp_path)
        assert one_error_line(done) == (
            f"cannot listen on 127.0.0.1:{held_port}: address already in use")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["init.csv"], extra


def test_a_failed_start_takes_back_the_new_journal_but_never_an_old_one(tmp_path: Path) -> None:
    (tmp_path / "init.csv").write_text(FUNDING)
    (tmp_path / "creds.json").write_text("not json")  # read only after the journal is made
    (tmp_path / "empty").mkdir()
    for journal in ("new", "empty"):
        done = carbonx("serve", "--port", str(free_port()), "--init", "init.csv", "--journal",
                       journal, "--credentials", "creds.json", cwd=tmp_path)
        assert "cannot read credentials" in one_error_line(done)
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []
    # A journal that was there before is recovered, and stays when the start fails.
    create_journal(tmp_path / "old", default_market().text, ledger=True).close()
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    done = carbonx("serve", "--port", str(free_port()), "--journal", "old", "--credentials",
                   "creds.json", cwd=tmp_path)
    assert "cannot read credentials" in one_error_line(done)
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before


# --- 2. the password off the command line -------------------------------------------------


def test_resolve_broker_takes_the_password_from_url_file_or_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    url = "mqtt://gateway@127.0.0.1:1884"
    assert resolve_broker(url, password_file=secret, environ={}).password == "from-file"
    assert resolve_broker(url, environ={"CARBONX_PASSWORD": "env"}).password == "env"
    assert (resolve_broker(url, password_file=secret, environ={
        "CARBONX_PASSWORD": "env"
    }).password == "from-file")
    inline = resolve_broker("mqtt://gateway:p%40ss@127.0.0.1", environ={})
    assert (inline.host, inline.port, inline.username, inline.password) == ("127.0.0.1", 1883,
                                                                            "gateway", "p@ss")
    assert "p@ss" not in repr(inline)
    with pytest.raises(ServeError, match="no password for user gateway.*--password-file"):
        resolve_broker(url, environ={})
    with pytest.raises(ServeError, match="no password"):
        resolve_broker(url, environ={"CARBONX_PASSWORD": ""})
    with pytest.raises(ServeError, match="one way only"):
        resolve_broker("mqtt://gateway:x@127.0.0.1", password_file=secret, environ={})
    (tmp_path / "two").write_text("a\nb\n")
    (tmp_path / "blank").write_text("\n")
    for bad in ("two", "blank", "missing"):
        with pytest.raises(ServeError, match=f"--password-file .*{bad}"):
            resolve_broker(url, password_file=tmp_path / bad, environ={})


def test_serve_help_documents_the_password_sources(tmp_path: Path) -> None:
    done = carbonx("serve", "--help", cwd=tmp_path)
    text = " ".join(done.stdout.split())
    assert "--password-file FILE" in text and "CARBONX_PASSWORD" in text


@pytest.mark.parametrize(
    "args, message",
    [(["--broker", "mqtt://gateway@127.0.0.1:1"], "no password for user gateway"),
     (["--broker", "mqtt://gateway:pw@127.0.0.1:1", "--password-file", "pw"], "one way only"),
     (["--broker", "mqtt://gateway@127.0.0.1:1", "--password-file", "nope"
       ], "--password-file nope: cannot read it"),
     (["--password-file", "pw"], "--password-file is the gateway's password on --broker")])
def test_bad_password_options_are_usage_errors(tmp_path: Path, args: list[str],
                                               message: str) -> None:
    (tmp_path / "pw").write_text("secret\n")
    done = carbonx("serve", "--journal", "j", *args, cwd=tmp_path)
    assert message in one_error_line(done)
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("source", ["file", "environment"])
def test_serve_joins_mosquitto_with_the_password_off_the_command_line(tmp_path: Path,
                                                                      broker: Broker,
                                                                      source: str) -> None:
    (tmp_path / "init.csv").write_text(FUNDING)
    password = broker.gateway_password
    url = f"mqtt://gateway@127.0.0.1:{broker.port}"
    if source == "file":
        (tmp_path / "gw.pw").write_text(password + "\n")
        process, _ = start_serve("--broker", url, "--password-file", "gw.pw", "--init", "init.csv",
                                 "--always-open", cwd=tmp_path)
    else:
        process, _ = start_serve("--broker", url, "--init", "init.csv", "--always-open",
                                 cwd=tmp_path, env={"CARBONX_PASSWORD": password})
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline  # not for other users' ps to see
        sold, bought = trade(broker.port, broker.credentials)
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert (sold["report"], bought["report"]) == ("accepted", "accepted")


# --- 6. an unreachable broker or a refused login at the start ------------------------------


def test_serve_with_an_unreachable_broker_gives_up_soon_and_writes_nothing(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    began = time.monotonic()
    done = carbonx("serve", "--broker", f"mqtt://gateway@127.0.0.1:{port}", "--journal", "j",
                   cwd=tmp_path, env={"CARBONX_PASSWORD": "pw"})
    took = time.monotonic() - began
    assert one_error_line(done) == (
        f"cannot connect to broker 127.0.0.1:{port}: connection refused (5 attempts)")
    assert not (tmp_path / "j").exists()
    assert 2.5 < took < 20  # five tries, 0.2 s apart and doubling, not forever


def test_serve_with_a_refused_login_says_so_at_once_and_writes_nothing(
        tmp_path: Path, broker: Broker) -> None:
    began = time.monotonic()
    done = carbonx("serve", "--broker", f"mqtt://gateway@127.0.0.1:{broker.port}", "--journal", "j",
                   cwd=tmp_path, env={"CARBONX_PASSWORD": "wrong"})
    assert one_error_line(done) == (
        f"the broker at 127.0.0.1:{broker.port} refused the login for user gateway: not authorized")
    assert not (tmp_path / "j").exists()
    assert time.monotonic() - began < 10  # not retried


def test_probe_tells_a_refused_login_from_a_broker_that_is_not_there(broker: Broker) -> None:
    port = broker.port
    good = BrokerAddress("127.0.0.1", port, "gateway", broker.gateway_password)
    asyncio.run(probe_broker(good))
    for user, password in (("gateway", "wrong"), ("nobody", "x")):
        with pytest.raises(ServeError, match=f"refused the login for user {user}"):
            asyncio.run(probe_broker(BrokerAddress("127.0.0.1", port, user, password)))
    began = time.monotonic()
    with pytest.raises(ServeError, match=r"cannot connect .*connection refused \(3 attempts\)"):
        asyncio.run(
            probe_broker(BrokerAddress("127.0.0.1", free_port(), "gateway", "x"), attempts=3,
                         delay=0.1))
    assert time.monotonic() - began >= 0.3  # 0.1 + 0.2: the backoff


def test_probe_waits_for_a_broker_that_comes_up_during_its_retries(tmp_path: Path) -> None:
    require_mosquitto()
    port = free_port()
    credentials = write_broker_config(tmp_path, port, {"alice": None})
    broker = Mosquitto(tmp_path)
    starter = threading.Timer(0.3, broker.start)
    starter.start()
    try:
        asyncio.run(
            probe_broker(BrokerAddress("127.0.0.1", port, "gateway", credentials["gateway"])))
    finally:
        starter.join()
        broker.stop()


def test_gateway_ready_is_printed_only_once_it_takes_orders(tmp_path: Path, broker: Broker) -> None:
    (tmp_path / "init.csv").write_text(FUNDING)
    url = f"mqtt://gateway@127.0.0.1:{broker.port}"
    process, lines = start_serve("--broker", url, "--init", "init.csv", "--always-open",
                                 cwd=tmp_path, env={"CARBONX_PASSWORD": broker.gateway_password})

    async def one_order() -> dict:
        # A plain client, no resending: an order published before the gateway subscribed
        # would be dropped by the broker, and this would time out.
        async with aiomqtt.Client("127.0.0.1", broker.port, username="alice",
                                  password=broker.credentials["alice"]) as alice:
            await alice.subscribe("cx/v1/exec/alice", qos=1)
            await alice.publish(
                "cx/v1/orders/alice",
                json.dumps({
                    "action": "new",
                    "order_id": "r1",
                    "instrument": "CEA25",
                    "side": "sell",
                    "price": "60.00",
                    "qty": 1
                }), qos=1)
            async for message in alice.messages:
                body = json.loads(message.payload)
                return body[0] if isinstance(body, list) else body
        raise AssertionError("no answer")

    try:
        answer = asyncio.run(asyncio.wait_for(one_order(), 5))
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert answer["report"] == "accepted"
    assert lines[-1].startswith(f"gateway on 127.0.0.1:{broker.port} as gateway: connected")


# --- 5. commands refuse unknown enum values from any caller --------------------------------

ORDER = {
    "order_id": "o1",
    "account": "a",
    "instrument": "CEA25",
    "side": "buy",
    "qty": 10,
    "price": "60.00"
}


@pytest.mark.parametrize(
    "field, value, error, message",
    [("side", "BUY", ValueError, "side must be one of 'buy', 'sell', not 'BUY'"),
     ("side", None, ValueError, "side must be one of"),
     ("type", "LIMIT", ValueError, "type must be one of 'limit', 'market'"),
     ("tif", "x", ValueError, "tif must be one of 'gtc', 'day', 'ioc', 'fok', 'gtd', not 'x'"),
     ("stp", "y", ValueError, "stp must be one of 'cancel_resting'"),
     ("side", ["buy"], ValueError, "side must be one of"),
     ("qty", "10", TypeError, "qty must be an int, not str '10'"),
     ("qty", 10.0, TypeError, "qty must be an int, not float"),
     ("qty", True, TypeError, "qty must be an int, not bool")])
def test_place_order_refuses_unknown_values(field: str, value: object, error: type[Exception],
                                            message: str) -> None:
    with pytest.raises(
            error, match=f"^PlaceOrder: {message}".replace("(", r"\(").replace(")", r"\)").replace(
                "[", r"\[").replace("]", r"\]")):
        PlaceOrder(**{**ORDER, field: value})


def test_other_enum_fields_are_checked_too() -> None:
    with pytest.raises(ValueError, match="MassCancel: side must be one of 'buy', 'sell'"):
        MassCancel(account="a", side="SELL")
    with pytest.raises(ValueError, match="OpenAccount: kind must be one of 'covered'"):
        OpenAccount(account="a", kind="bank")
    assert MassCancel(account="a").side is None
    assert OpenAccount(account="a", kind="market_maker").kind == "market_maker"


def test_side_buy_in_capitals_can_no_longer_rest_on_the_sell_side() -> None:
    engine = Engine(default_market())
    with pytest.raises(ValueError):
        engine.execute(PlaceOrder(**{**ORDER, "side": "BUY"}))
    assert list(engine.live_orders()) == []
    engine.execute(PlaceOrder(**ORDER))
    (order, ) = engine.live_orders()
    assert order.is_buy


def test_a_negative_quantity_is_the_engines_sequenced_rejection() -> None:
    # Not refused when made: an order file's qty -5 row is journaled and rejected with a
    # reason, and a journal holding it must decode again. The engine rejects it.
    engine = Engine(default_market())
    events = engine.execute(PlaceOrder(**{**ORDER, "qty": -5}))
    assert [getattr(e, "reason", None) for e in events] == ["invalid_quantity"]
    assert list(engine.live_orders()) == []


def test_every_valid_value_is_made_and_decodes_again() -> None:
    from exchange.commands import ORDER_TYPES, SIDES, STP_MODES, TIFS

    decode = msgspec.msgpack.Decoder(AnyCommand).decode
    for side in SIDES:
        for kind in ORDER_TYPES:
            for tif in TIFS:
                for stp in (*STP_MODES, None):
                    order = PlaceOrder(**{
                        **ORDER, "side": side,
                        "type": kind,
                        "tif": tif,
                        "stp": stp
                    })
                    assert decode(msgspec.msgpack.encode(order)) == order
    cancel = CancelOrder(order_id="o1", account="a")
    assert decode(msgspec.msgpack.encode(cancel)) == cancel


def test_a_decoded_command_is_checked_like_a_made_one() -> None:
    decode = msgspec.json.Decoder(AnyCommand).decode
    with pytest.raises(msgspec.ValidationError):
        decode(json.dumps({"action": "new", **ORDER, "side": "BUY"}))
    with pytest.raises(msgspec.ValidationError):
        decode(json.dumps({"action": "open_account", "account": "a", "kind": "bank"}))
