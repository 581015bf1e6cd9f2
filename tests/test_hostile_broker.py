"""The hostile corpus over real brokers (the embedded amqtt broker and mosquitto): an
attacker's account publishes every case with a plain MQTT client; after each batch the
gateway still answers an honest bot and the honest account's state has not moved."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiomqtt
import pytest
from hostile_corpus import corpus
from markets import open_market
from test_gateway_mqtt import running_gateway

from exchange import Engine
from exchange.commands import Deposit, IssueAllowances
from gateway.bots.client import ExchangeClient
from gateway.mqtt.embedded import GATEWAY_USER
from gateway.mqtt.service import GatewayCore, GatewaySettings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LIMIT = 60
ACCOUNTS = {"alice": None, "bob": None, "mallory": None}


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request):
    """``(kind, host, port, credentials, mosquitto)``."""
    if request.param == "mosquitto":
        real = request.getfixturevalue("mosquitto_factory")(ACCOUNTS)
        return ("mosquitto", real.host, real.port, real.credentials, real.mosquitto)
    return ("embedded", None, None, {
        GATEWAY_USER: "gw-secret",
        "alice": "alice-secret",
        "bob": "bob-secret",
        "mallory": "mallory-secret"
    }, None)


def funded_core() -> GatewayCore:
    engine = Engine(open_market(), ledger=True)
    for account in ("alice", "bob"):
        engine.execute(Deposit(account=account, currency="CNY", amount="1000000"))
        engine.execute(IssueAllowances(account=account, instrument="CEA25", qty=100_000))
    return GatewayCore(engine, settings=GatewaySettings(book_interval=0))


def alice_view(engine: Engine) -> tuple:
    holdings = sorted((asset, h.available, h.held, h.locked)
                      for asset, h in engine.ledger.accounts["alice"].holdings.items())
    orders = sorted(
        (o.order_id, o.qty, o.price) for o in engine.live_orders() if o.account == "alice")
    return holdings, orders


async def probe(bob: ExchangeClient, n: int) -> None:
    answer = await asyncio.wait_for(bob.place("CEA25", "buy", 1, "10.00", order_id=f"probe{n}"), 10)
    assert answer["report"] == "accepted"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, LIMIT))


def test_the_hostile_corpus_leaves_the_gateway_serving_and_alice_untouched(broker):
    kind, host, port, credentials, _ = broker
    core = funded_core()
    cases = [c for c in corpus() if c[1] == "cx/v1/orders/mallory"]

    async def scenario():
        async with running_gateway(kind, host, port, credentials, core) as (h, p, task):
            async with (ExchangeClient("alice", credentials["alice"], h, p) as
                        alice, ExchangeClient("bob", credentials["bob"], h, p) as bob):
                assert (await alice.place("CEA25", "sell", 10, "60.00"))["report"] == "accepted"
                before = alice_view(core.engine)
                for start in range(0, len(cases), 15):
                    async with aiomqtt.Client(h, p, username="mallory",
                                              password=credentials["mallory"]) as mallory:
                        for _, topic, payload in cases[start:start + 15]:
                            await mallory.publish(topic, payload, qos=1)
                    await probe(bob, start)
                    assert not task.done()
                    assert alice_view(core.engine) == before
                return core.stats

    stats = run(scenario())
    assert stats.turned_away >= len(cases) // 2  # answered, not silently swallowed


def test_an_oversize_packet_is_refused_by_the_broker_and_the_gateway_goes_on(broker):
    kind, host, port, credentials, _ = broker
    core = funded_core()

    async def scenario():
        async with running_gateway(kind, host, port, credentials, core) as (h, p, task):
            async with ExchangeClient("bob", credentials["bob"], h, p) as bob:
                with contextlib.suppress(aiomqtt.MqttError):
                    async with aiomqtt.Client(h, p, username="mallory",
                                              password=credentials["mallory"]) as mallory:
                        await mallory.publish("cx/v1/orders/mallory", b"[" * (2 << 20), qos=1,
                                              timeout=5)
                await asyncio.sleep(0.2)
                await probe(bob, 1)
                assert not task.done()
                return core.stats.messages

    messages = run(scenario())
    assert messages == 1  # only bob's probe reached the gateway


def test_long_ids_and_a_flood_do_not_hold_up_another_account(broker):
    kind, host, port, credentials, _ = broker
    core = funded_core()
    core.settings.intake = 2_000

    async def scenario():
        async with running_gateway(kind, host, port, credentials, core) as (h, p, task):
            async with (ExchangeClient("bob", credentials["bob"], h, p) as bob,
                        aiomqtt.Client(h, p, username="mallory", password=credentials["mallory"]) as
                        mallory):
                await mallory.publish(
                    "cx/v1/orders/mallory",
                    json.dumps({
                        "action": "new",
                        "order_id": "x" * 120_000,
                        "instrument": "CEA25",
                        "side": "buy",
                        "price": "1.00",
                        "qty": 1
                    }).encode(), qos=1)
                batch = [{
                    "action": "new",
                    "order_id": f"f{i}",
                    "instrument": "CEA25",
                    "side": "buy",
                    "price": "1.00",
                    "qty": 1
                } for i in range(500)]
                flood = [
                    asyncio.ensure_future(
                        mallory.publish("cx/v1/orders/mallory",
                                        json.dumps(batch).encode(), qos=1)) for _ in range(40)
                ]
                await asyncio.sleep(0.05)
                await probe(bob, 1)
                await asyncio.gather(*flood)
                await probe(bob, 2)
                assert not task.done()
                return core.stats

    stats = run(scenario())
    assert stats.by_reason.get("bad_command") == 1


def test_a_retained_command_is_run_once_live_and_never_again_at_a_restart(mosquitto_factory):
    real = mosquitto_factory(ACCOUNTS)
    credentials = real.credentials
    core = funded_core()
    core.engine.execute(Deposit(account="mallory", currency="CNY", amount="1000"))
    order = {
        "action": "new",
        "order_id": "r1",
        "instrument": "CEA25",
        "side": "buy",
        "price": "1.00",
        "qty": 1
    }

    async def scenario():
        async with running_gateway("mosquitto", real.host, real.port, credentials,
                                   core) as (h, p, _):
            async with aiomqtt.Client(h, p, username="mallory",
                                      password=credentials["mallory"]) as mallory:
                await mallory.publish("cx/v1/orders/mallory",
                                      json.dumps(order).encode(), qos=1, retain=True)
                await mallory.publish("cx/v1/orders/mallory", b"\x91" * 3000 + b"\x90", qos=1,
                                      retain=True)
            for _ in range(100):
                if core.engine.order("mallory/r1") is not None:
                    break
                await asyncio.sleep(0.02)
        commands = core.stats.commands
        for restart in range(2):  # the gateway comes back: the broker replays retained
            async with running_gateway("mosquitto", real.host, real.port, credentials, core):
                await asyncio.sleep(0.3)
            assert core.stats.commands == commands, restart
        # and the gateway cleared the retained copies: a new subscriber finds none
        async with aiomqtt.Client(real.host, real.port, username=GATEWAY_USER,
                                  password=credentials[GATEWAY_USER]) as probe:
            await probe.subscribe("cx/v1/orders/+", qos=1)
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(0.5):
                    async for message in probe.messages:
                        raise AssertionError(f"still retained: {message.topic.value}")
        return commands

    commands = run(scenario())
    assert commands == 1
    assert core.engine.order("mallory/r1") is not None


def test_a_raw_socket_that_says_nothing_or_garbage_does_not_stop_the_gateway(broker):
    kind, host, port, credentials, _ = broker
    core = funded_core()

    async def scenario():
        async with running_gateway(kind, host, port, credentials, core) as (h, p, task):
            for junk in (b"", b"\x10\xff\xff\xff\xff\x7f", b"GET / HTTP/1.1\r\n\r\n",
                         bytes(range(256)) * 4):
                with socket.create_connection((h, p), timeout=2) as raw:
                    raw.sendall(junk)
            async with ExchangeClient("bob", credentials["bob"], h, p) as bob:
                await probe(bob, 1)
            assert not task.done()

    run(scenario())
