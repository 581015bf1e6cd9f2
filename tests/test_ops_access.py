"""The operator console's topics on both brokers: only ``operator`` sends commands on
``cx/v1/ops/commands`` (to the gateway) and only it reads ``cx/v1/ops/reports`` (from the
gateway); no account reads or writes anything under ``cx/v1/ops/``, and the operator
writes nothing else (no orders).

Every scenario runs against a real mosquitto (configured by ``write_broker_config``,
``tests/mosquitto.py``) and against the embedded broker. Mosquitto grants every SUBSCRIBE
and filters on delivery; the embedded broker refuses a forbidden SUBSCRIBE: either way,
nothing forbidden may arrive. To show that a forbidden message is not delivered, it is
sent first and an allowed marker after it over the same connection: the subscriber must
see the marker and nothing before it (nor anything in a short wait after it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mosquitto import require_module

from gateway.mqtt.brokerconfig import GATEWAY_USER, OPERATOR_USER
from gateway.mqtt.embedded import EmbeddedBroker
from gateway.mqtt.serve import load_credentials
from gateway.protocol import OPS_COMMANDS, OPS_REPORTS

TIMEOUT = 4.0  # seconds a whole scenario may take
QUIET = 0.3  # how long a subscriber waits to show that nothing (more) arrives
EMBEDDED_USERS = {
    GATEWAY_USER: "gw-secret",
    OPERATOR_USER: "op-secret",
    "alice": "alice-secret",
    "bob": "bob-secret"
}

Received = list[tuple[str, bytes]]
Connect = Callable[[str], Any]  # user -> an aiomqtt client, for ``async with``
Scenario = Callable[[Connect], Awaitable[Any]]


@pytest.fixture(params=["mosquitto", "embedded"])
def on_broker(request: pytest.FixtureRequest) -> Callable[[Scenario], Any]:
    """``on_broker(scenario)``: run *scenario(connect)* against the broker of this
    parameter (users ``gateway``, ``operator``, ``alice`` and ``bob``) and return its result."""
    aiomqtt = require_module("aiomqtt")

    def client(host: str, port: int, user: str, password: str) -> Any:
        return aiomqtt.Client(host, port, username=user, password=password,
                              identifier=f"{user}-{secrets.token_hex(4)}", timeout=2)

    if request.param == "mosquitto":
        broker = request.getfixturevalue("mosquitto_broker")
        assert set(broker.credentials) == {"alice", "bob", GATEWAY_USER, OPERATOR_USER}

        def on_mosquitto(scenario: Scenario) -> Any:
            return asyncio.run(
                asyncio.wait_for(
                    scenario(lambda user: client(broker.host, broker.port, user, broker.
                                                 credentials[user])), TIMEOUT))

        return on_mosquitto

    def on_embedded(scenario: Scenario) -> Any:

        async def main() -> Any:
            async with EmbeddedBroker(EMBEDDED_USERS) as broker:
                return await scenario(
                    lambda user: client(broker.host, broker.port, user, EMBEDDED_USERS[user]))

        return asyncio.run(asyncio.wait_for(main(), TIMEOUT))

    return on_embedded


async def receive_until(mqtt: Any, marker: bytes) -> Received:
    """Every message up to and including the first with payload *marker*."""
    received: Received = []
    async for message in mqtt.messages:
        received.append((str(message.topic), bytes(message.payload)))
        if message.payload == marker:
            return received
    raise AssertionError("message stream ended")


async def receive_for(mqtt: Any, seconds: float = QUIET) -> Received:
    """Every message that arrives within *seconds*."""
    received: Received = []
    try:
        async with asyncio.timeout(seconds):
            async for message in mqtt.messages:
                received.append((str(message.topic), bytes(message.payload)))
    except TimeoutError:
        pass
    return received


async def subscribe(mqtt: Any, *filters: str) -> None:
    """Subscribe to each filter (granted or not: the tests look at what arrives)."""
    for topic_filter in filters:
        await mqtt.subscribe(topic_filter, qos=1)


def test_the_operators_command_reaches_the_gateway_and_no_account(
        on_broker: Callable[[Scenario], Any]) -> None:

    async def scenario(connect: Connect) -> tuple[Received, Received]:
        async with connect(GATEWAY_USER) as gateway, connect(OPERATOR_USER) as operator, connect(
                "alice") as alice:
            await subscribe(gateway, OPS_COMMANDS)
            await subscribe(alice, "cx/v1/exec/alice", OPS_COMMANDS, "cx/v1/ops/#")
            await operator.publish(OPS_COMMANDS, b'{"action":"halt"}', qos=1)
            gateway_seen = await receive_until(gateway, b'{"action":"halt"}')
            await gateway.publish("cx/v1/exec/alice", b"marker", qos=1)
            alice_seen = await receive_until(alice, b"marker") + await receive_for(alice)
            return gateway_seen, alice_seen

    gateway_seen, alice_seen = on_broker(scenario)
    assert gateway_seen == [(OPS_COMMANDS, b'{"action":"halt"}')]
    assert alice_seen == [("cx/v1/exec/alice", b"marker")]


def test_an_accounts_command_does_not_reach_the_gateway(
        on_broker: Callable[[Scenario], Any]) -> None:

    async def scenario(connect: Connect) -> Received:
        async with connect(GATEWAY_USER) as gateway, connect("alice") as alice:
            await subscribe(gateway, OPS_COMMANDS, "cx/v1/orders/+")
            await alice.publish(OPS_COMMANDS, b"forged command", qos=1)
            await alice.publish(OPS_REPORTS, b"forged report", qos=1)
            await alice.publish("cx/v1/orders/alice", b"marker", qos=1)
            return await receive_until(gateway, b"marker") + await receive_for(gateway)

    assert on_broker(scenario) == [("cx/v1/orders/alice", b"marker")]


def test_an_account_does_not_receive_ops_reports_and_the_operator_does(
        on_broker: Callable[[Scenario], Any]) -> None:

    async def scenario(connect: Connect) -> tuple[Received, Received]:
        async with connect(GATEWAY_USER) as gateway, connect(OPERATOR_USER) as operator, connect(
                "bob") as bob:
            await subscribe(operator, OPS_REPORTS)
            await subscribe(bob, "cx/v1/exec/bob", OPS_REPORTS, "cx/v1/ops/#")
            await gateway.publish(OPS_REPORTS, b"halted", qos=1)
            await gateway.publish("cx/v1/exec/bob", b"marker", qos=1)
            bob_seen = await receive_until(bob, b"marker") + await receive_for(bob)
            return bob_seen, await receive_until(operator, b"halted")

    bob_seen, operator_seen = on_broker(scenario)
    assert bob_seen == [("cx/v1/exec/bob", b"marker")]
    assert operator_seen == [(OPS_REPORTS, b"halted")]  # it was really published


def test_the_operator_reads_reports_and_market_data_only(
        on_broker: Callable[[Scenario], Any]) -> None:

    async def scenario(connect: Connect) -> Received:
        async with connect(GATEWAY_USER) as gateway, connect(OPERATOR_USER) as operator:
            await subscribe(operator, OPS_REPORTS, "cx/v1/md/#", "cx/v1/exec/alice",
                            "cx/v1/orders/+", OPS_COMMANDS)
            await gateway.publish("cx/v1/exec/alice", b"alice's fill", qos=1)
            await gateway.publish("cx/v1/md/CEA25/book", b"book", qos=1)
            await gateway.publish(OPS_REPORTS, b"report", qos=1)
            return await receive_until(operator, b"report") + await receive_for(operator)

    assert on_broker(scenario) == [("cx/v1/md/CEA25/book", b"book"), (OPS_REPORTS, b"report")]


def test_the_operator_places_no_orders_and_writes_nothing_but_commands(
        on_broker: Callable[[Scenario], Any]) -> None:

    async def scenario(connect: Connect) -> tuple[Received, Received]:
        async with connect(GATEWAY_USER) as gateway, connect(OPERATOR_USER) as operator, connect(
                "alice") as alice:
            await subscribe(gateway, "cx/v1/orders/+", OPS_COMMANDS)
            await subscribe(alice, "cx/v1/exec/alice", "cx/v1/md/#")
            await operator.publish("cx/v1/orders/alice", b"forged order", qos=1)
            await operator.publish("cx/v1/orders/operator", b"own order", qos=1)
            await operator.publish("cx/v1/exec/alice", b"forged fill", qos=1)
            await operator.publish("cx/v1/md/CEA25/book", b"forged book", qos=1)
            await operator.publish(OPS_REPORTS, b"forged report", qos=1)
            await operator.publish(OPS_COMMANDS, b"marker", qos=1)
            gateway_seen = await receive_until(gateway, b"marker") + await receive_for(gateway)
            return gateway_seen, await receive_for(alice)

    gateway_seen, alice_seen = on_broker(scenario)
    assert gateway_seen == [(OPS_COMMANDS, b"marker")]
    assert alice_seen == []


def test_serve_credentials_get_an_operator_password(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    made = load_credentials(path, ["alice"])
    assert set(made) == {"alice", GATEWAY_USER, OPERATOR_USER}
    assert len(set(made.values())) == 3 and len(made[OPERATOR_USER]) >= 20
    assert json.loads(path.read_text()) == made
    # A file written before the operator existed keeps its passwords and gains one.
    path.write_text(json.dumps({"alice": "a-pw", GATEWAY_USER: "gw-pw"}))
    again = load_credentials(path, ["alice", OPERATOR_USER])
    assert again["alice"] == "a-pw" and again[GATEWAY_USER] == "gw-pw"
    assert set(again) == {"alice", GATEWAY_USER, OPERATOR_USER}
    assert json.loads(path.read_text())[OPERATOR_USER] == again[OPERATOR_USER]
