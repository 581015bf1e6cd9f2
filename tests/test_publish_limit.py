"""Each account's publishing limit, on both brokers.

One account's flood must not fill the stream that carries every account's orders to the
gateway. The embedded broker holds an account to its limit by back-pressure (it waits
before reading the account's next packet, so nothing is lost); mosquitto, through the
plugin ``carbonx broker-config`` builds, drops what is over the limit and tells the
account on its reports topic. The gateway is never limited.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from markets import order
from mosquitto import BrokerFactory

from gateway.mqtt.brokerconfig import (ACCOUNT_BYTE_BURST, LIMIT_NAME, MAX_PACKET_SIZE,
                                       AccountLimits, PluginBuildError, write_broker_config)
from gateway.mqtt.embedded import GATEWAY_USER, EmbeddedBroker, _Throttle

REPO = Path(__file__).resolve().parents[1]
TIGHT = AccountLimits(message_rate=40, message_burst=10, byte_rate=4 * MAX_PACKET_SIZE,
                      byte_burst=ACCOUNT_BYTE_BURST)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def first_payloads(client: aiomqtt.Client, count: int) -> list[bytes]:
    """The payloads of the first *count* messages *client* receives, within 5 seconds."""
    got: list[bytes] = []
    async with asyncio.timeout(5):
        async for message in client.messages:
            got.append(bytes(message.payload))
            if len(got) == count:
                break
    return got


async def payloads_for(client: aiomqtt.Client, seconds: float) -> list[bytes]:
    """The payloads of every message *client* receives in *seconds* (the time must run out)."""
    got: list[bytes] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append(bytes(message.payload))
    return got


# --- the budget itself ----------------------------------------------------------------


def test_throttle_lets_a_burst_through_then_holds_to_the_rate() -> None:
    throttle = _Throttle(rate=100, burst=10, byte_rate=1000, byte_burst=500, now=0.0)
    assert throttle.charge(10, 100, now=0.0) == 0.0  # the burst: no wait
    assert throttle.charge(5, 0, now=0.0) == pytest.approx(0.05)  # 5 over at 100/s
    # Paid back over time: after the debt is paid the bucket refills to its burst only.
    assert throttle.charge(0, 0, now=10.0) == 0.0
    assert throttle.messages == 10
    # Bytes hold it too: 1,500 bytes against a 500-byte bucket at 1,000 bytes a second.
    assert throttle.charge(1, 1500, now=10.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{
    "message_rate": 0
}, {
    "message_burst": -1
}, {
    "byte_rate": 1.5
}, {
    "byte_burst": MAX_PACKET_SIZE - 1
}, {
    "message_rate": True
}])
def test_limits_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AccountLimits(**kwargs)


# --- the embedded broker: back-pressure -------------------------------------------------


def test_embedded_broker_holds_a_flooding_account_to_its_rate_and_loses_nothing() -> None:
    users = {GATEWAY_USER: "gw-pw", "A": "a-pw", "B": "b-pw"}

    async def scenario() -> tuple[float, float, list[bytes]]:
        async with EmbeddedBroker(users, limits=TIGHT) as broker:

            def client(user: str) -> aiomqtt.Client:
                return aiomqtt.Client(broker.host, broker.port, username=user, password=users[user],
                                      timeout=10, identifier=f"{user}-{secrets.token_hex(4)}")

            async with client(GATEWAY_USER) as gateway, client("A") as a, client("B") as b:
                await gateway.subscribe("cx/v1/orders/+", qos=1)
                loop = asyncio.get_running_loop()
                start = loop.time()
                # 50 messages at once: 10 in the burst, 40 more at 40 a second.
                await asyncio.gather(*(a.publish("cx/v1/orders/A", f"a{i}".encode(), qos=1)
                                       for i in range(50)))
                flood = loop.time() - start
                # B, quiet, is not held up by A's budget.
                start = loop.time()
                await b.publish("cx/v1/orders/B", b"b0", qos=1)
                quiet = loop.time() - start
                got = await first_payloads(gateway, 51)
                # The gateway itself is never held: 200 publishes go straight through.
                await a.subscribe("cx/v1/exec/A", qos=1)
                start = loop.time()
                await asyncio.gather(*(gateway.publish("cx/v1/exec/A", b"r", qos=1)
                                       for _ in range(200)))
                assert loop.time() - start < 1.0
                return flood, quiet, got

    flood, quiet, got = run(scenario())
    assert flood >= 0.9  # (50 - 10) / 40 a second, less a little clock slack
    assert quiet < flood / 2
    assert sorted(got) == sorted([f"a{i}".encode() for i in range(50)] + [b"b0"])
    assert [m for m in got if m.startswith(b"a")] == [f"a{i}".encode() for i in range(50)]


def test_embedded_broker_says_whom_it_holds_back_and_at_what_rates_in_whole_numbers(
        caplog: pytest.LogCaptureFixture) -> None:
    """The warning names the rates as given (serve's --byte-rate 1048576), not as a float
    formatted short: '1.04858e+06 bytes' was neither the rate nor readable."""
    users = {GATEWAY_USER: "gw-pw", "A": "a-pw"}
    limits = AccountLimits(message_rate=40, message_burst=10, byte_rate=1_048_576,
                           byte_burst=ACCOUNT_BYTE_BURST)

    async def scenario() -> None:
        async with EmbeddedBroker(users, limits=limits) as broker:
            async with aiomqtt.Client(broker.host, broker.port, username="A",
                                      password=users["A"], timeout=10) as a:
                await asyncio.gather(*(a.publish("cx/v1/orders/A", b"x", qos=1)
                                       for _ in range(20)))

    with caplog.at_level("WARNING", logger="carbonx.broker"):
        run(scenario())
    held = [r.getMessage() for r in caplog.records if "holding back" in r.getMessage()]
    assert held, caplog.text
    assert held[0] == ("holding back A: over its publishing rate of 40 messages or 1048576 "
                       "bytes a second")


# --- mosquitto: the plugin -------------------------------------------------------------


def test_mosquitto_drops_what_is_over_the_limit_and_tells_the_account(
        mosquitto_factory: BrokerFactory) -> None:
    broker = mosquitto_factory(limits=TIGHT)

    def client(user: str) -> aiomqtt.Client:
        return aiomqtt.Client(**broker.login(user), timeout=10,
                              identifier=f"{user}-{secrets.token_hex(4)}")

    async def scenario() -> tuple[list[bytes], list[dict], list[bytes]]:
        async with client(GATEWAY_USER) as gateway, client("alice") as alice, client("bob") as bob:
            await gateway.subscribe("cx/v1/orders/+", qos=1)
            await alice.subscribe("cx/v1/exec/alice", qos=1)
            for i in range(100):
                await alice.publish("cx/v1/orders/alice", f"a{i}".encode(), qos=1)
            await bob.publish("cx/v1/orders/bob", b"b0", qos=1)
            orders = await payloads_for(gateway, 1.0)
            notices = [json.loads(payload) for payload in await payloads_for(alice, 0.5)]
            # The gateway is exempt: 300 reports reach alice.
            for _ in range(300):
                await gateway.publish("cx/v1/exec/alice", b"r", qos=1)
            return orders, notices, await first_payloads(alice, 300)

    orders, notices, reports = run(scenario())
    alices = [o for o in orders if o.startswith(b"a")]
    assert b"b0" in orders  # another account is not limited
    assert 10 <= len(alices) < 60  # the burst and the rate, not all 100
    assert alices == sorted(alices, key=lambda m: int(m[1:]))  # in order, gaps only
    assert notices and notices[0]["report"] == "notice"
    assert notices[0]["reason"] == "rate_limited" and notices[0]["dropped"] >= 1
    assert len(reports) == 300


def test_no_limit_writes_no_plugin(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None}, limits=None)
    conf = (tmp_path / "mosquitto.conf").read_text()
    assert not (tmp_path / LIMIT_NAME).exists()
    assert "plugin" not in [
        line.split()[0] for line in conf.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_plugin_lines_carry_the_limits(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None}, limits=TIGHT)
    lines = dict(
        line.split(" ", 1) for line in (tmp_path / "mosquitto.conf").read_text().splitlines()
        if line.startswith("plugin"))
    assert lines["plugin"] == str(tmp_path.resolve() / LIMIT_NAME)
    assert lines["plugin_opt_message_rate"] == "40"
    assert lines["plugin_opt_message_burst"] == "10"
    assert lines["plugin_opt_exempt"] == GATEWAY_USER


def test_a_missing_compiler_is_said_and_nothing_is_written(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    out = tmp_path / "conf"
    with pytest.raises(PluginBuildError, match="--no-limit"):
        write_broker_config(out, 18830, {"alice": None})
    assert not out.exists() or list(out.iterdir()) == []


def test_broker_config_cli_limit_options(tmp_path: Path) -> None:

    def broker_config(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([
            sys.executable, "-m", "gateway.cli", "broker-config", "--out",
            str(out), "--port", "18830", "alice", *extra
        ], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)

    bad = broker_config(tmp_path / "bad", "--message-rate", "0")
    # The option named as the user wrote it, not the field it sets (message_rate).
    assert bad.returncode == 2, bad.stderr
    assert "error: --message-rate must be a positive whole number, not 0" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    bad = broker_config(tmp_path / "bad", "--byte-rate", "-1")
    assert bad.returncode == 2 and "error: --byte-rate must be" in bad.stderr
    done = broker_config(tmp_path / "ok", "--message-rate", "5000")
    assert done.returncode == 0, done.stderr
    assert "plugin_opt_message_rate 5000" in (tmp_path / "ok" / "mosquitto.conf").read_text()
    assert "plugin_opt_message_burst 1000" in (tmp_path / "ok" / "mosquitto.conf").read_text()
    none = broker_config(tmp_path / "none", "--no-limit")
    assert none.returncode == 0 and not (tmp_path / "none" / LIMIT_NAME).exists()


# --- carbonx serve: the embedded broker's limit from the command line --------------------


def test_serve_message_rate_holds_an_account_on_the_embedded_broker(tmp_path: Path) -> None:
    from test_edges import start_serve, stop

    (tmp_path / "init.csv").write_text("action,account,instrument,qty\nissue,alice,CEA25,1000\n")
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    process, _ = start_serve("--port", str(port), "--init", "init.csv", "--credentials",
                             "creds.json", "--message-rate", "20", "--always-open", cwd=tmp_path)

    async def flood() -> tuple[float, int]:
        password = json.loads((tmp_path / "creds.json").read_text())["alice"]
        async with aiomqtt.Client("127.0.0.1", port, username="alice", password=password,
                                  timeout=10) as alice:
            await alice.subscribe("cx/v1/exec/alice", qos=1)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.gather(*(alice.publish("cx/v1/orders/alice",
                                                 json.dumps(order(f"o{i}", "sell", "60.00", 1)),
                                                 qos=1) for i in range(40)))
            held = loop.time() - start
            accepted = 0
            async with asyncio.timeout(5):
                async for message in alice.messages:
                    body = json.loads(message.payload)
                    for report in body if isinstance(body, list) else [body]:
                        accepted += report.get("report") == "accepted"
                    if accepted == 40:
                        break
            return held, accepted

    try:
        held, accepted = run(flood())
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert held >= 1.5  # (40 - a burst of 4) / 20 a second = 1.8 s, less clock slack
    assert accepted == 40  # held back, not dropped


def test_serve_names_the_rate_option_it_refuses(tmp_path: Path) -> None:
    for option, value in (("--message-rate", "0"), ("--byte-rate", "-5")):
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", option, value],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              check=False)
        assert done.returncode == 2, done.stderr
        assert f"carbonx serve: error: {option} must be a positive whole number" in done.stderr
        assert not any(tmp_path.iterdir())  # nothing written
