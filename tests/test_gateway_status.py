"""Whether the exchange's gateway serves, on ``cx/v1/status`` (retained, for every user):
``up`` once it has connected, ``down`` with reason ``stopped`` when it stops, and the
broker's will, ``down`` with reason ``lost``, when its process dies. A bot client resends
what waits unanswered as soon as the gateway is back up, not after its resend wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest
import serving
from markets import open_market, order
from test_gateway_mqtt import gateway_on

from exchange import Engine
from gateway.bots.client import ExchangeClient
from gateway.mqtt.embedded import GATEWAY_USER, EmbeddedBroker
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import GATEWAY_STATUS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parent.parent
LIMIT = 60  # seconds: no test here may hang
EMBEDDED_USERS = {GATEWAY_USER: "gw-secret", "alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request):
    """``(host, port, credentials)`` of a running broker of either kind."""
    if request.param == "mosquitto":
        real = request.getfixturevalue("mosquitto_broker")
        return real.host, real.port, real.credentials
    return None, None, EMBEDDED_USERS


@contextlib.asynccontextmanager
async def a_broker(host, port, credentials):
    """The broker's host and port for the block: the embedded one started for it."""
    if host is not None:
        yield host, port
        return
    async with EmbeddedBroker(credentials) as embedded:
        yield embedded.host, embedded.port


class Watcher:
    """An account reading ``cx/v1/status``: every message, decoded, with its retain flag."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.seen: list[tuple[dict, bool]] = []
        self._task = asyncio.ensure_future(self._read(client))

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.seen.append((json.loads(message.payload), bool(message.retain)))

    async def wait_for(self, status: dict, timeout: float = 10.0) -> bool:
        """Whether *status* is the last seen within *timeout* seconds; its retain flag."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.seen and self.seen[-1][0] == status:
                return self.seen[-1][1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"not {status} within {timeout} s; seen {self.seen}")


@contextlib.asynccontextmanager
async def watching(host, port, user, password):
    async with aiomqtt.Client(host, port, username=user, password=password,
                              identifier=f"watch-{user}") as client:
        await client.subscribe(GATEWAY_STATUS, qos=1)
        watcher = Watcher(client)
        try:
            yield watcher
        finally:
            watcher._task.cancel()


UP = {"status": "up"}
STOPPED = {"status": "down", "reason": "stopped"}
LOST = {"status": "down", "reason": "lost"}


def test_the_gateway_says_it_is_up_then_that_it_stopped_and_the_broker_keeps_that(broker):
    host, port, credentials = broker

    async def scenario():
        async with a_broker(host, port, credentials) as (host_, port_):
            core = GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))
            async with gateway_on(host_, port_, credentials, core):
                async with watching(host_, port_, "alice", credentials["alice"]) as alice:
                    up_retained = await alice.wait_for(UP)
                    # (the gateway stops as the block ends)
            # A bot that looks later learns it from the broker's retained copy.
            async with watching(host_, port_, "bob", credentials["bob"]) as bob:
                stopped_retained = await bob.wait_for(STOPPED)
            # And the next gateway says it is back.
            async with gateway_on(host_, port_, credentials, core):
                async with watching(host_, port_, "bob", credentials["bob"]) as bob:
                    back_retained = await bob.wait_for(UP)
        return up_retained, stopped_retained, back_retained

    up_retained, stopped_retained, back_retained = asyncio.run(
        asyncio.wait_for(scenario(), LIMIT))
    assert up_retained and stopped_retained and back_retained  # each kept by the broker


def _serve(port: int, password_file: Path) -> subprocess.Popen:
    """``carbonx serve`` on mosquitto at *port*, ready (its "gateway ready" line read)."""
    return serving.start_serve(["--broker", f"mqtt://gateway@127.0.0.1:{port}",
                                "--password-file", str(password_file), "--always-open",
                                "--log-level", "ERROR"], cwd=REPO)[0]


def test_a_killed_gateway_is_said_lost_by_the_broker_and_a_new_one_up(mosquitto_broker, tmp_path):
    password_file = tmp_path / "gateway.password"
    password_file.write_text(mosquitto_broker.gateway_password + "\n")
    password_file.chmod(0o600)
    host, port = mosquitto_broker.host, mosquitto_broker.port
    alice = mosquitto_broker.credentials["alice"]

    async def scenario():
        serve = await asyncio.to_thread(_serve, port, password_file)
        try:
            async with watching(host, port, "alice", alice) as watcher:
                await watcher.wait_for(UP)
                os.kill(serve.pid, signal.SIGKILL)
                await asyncio.to_thread(serve.wait, 10)
                lost_retained = await watcher.wait_for(LOST)
                serve = await asyncio.to_thread(_serve, port, password_file)
                await watcher.wait_for(UP)
            async with watching(host, port, "bob", mosquitto_broker.credentials["bob"]) as bob:
                up_retained = await bob.wait_for(UP)
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(serve.wait, 20)
            except subprocess.TimeoutExpired:
                serve.kill()
        return lost_retained, up_retained

    lost_retained, up_retained = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert lost_retained is False  # the will, delivered live to a bot watching
    assert up_retained is True  # a bot that looks later learns the new gateway is up


def test_a_bot_resends_what_waits_unanswered_as_soon_as_the_gateway_is_back(broker):
    """An order sent while the gateway is away reaches nobody (its session is clean):
    the client sends it again when the gateway says it is up, long before its own resend
    wait (a minute here) would."""
    host, port, credentials = broker

    async def scenario():
        async with a_broker(host, port, credentials) as (host_, port_):
            core = GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))
            async with ExchangeClient("alice", credentials["alice"], host_, port_,
                                      resend_after=60.0, timeout=20.0) as bot:
                async with gateway_on(host_, port_, credentials, core):
                    first = await bot.submit(order("before", "sell", "70.00", 1))
                    await _until(lambda: bot.gateway == "up")
                await _until(lambda: bot.gateway == "down")
                waiting = bot.submit(order("while-away", "sell", "70.00", 1))
                await asyncio.sleep(0.3)  # sent, to no one
                assert not waiting.done()
                started = time.monotonic()
                async with gateway_on(host_, port_, credentials, core):
                    answer = await asyncio.wait_for(waiting, 15)
                    waited = time.monotonic() - started
        return first, answer, waited, core

    first, answer, waited, core = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert first["report"] == answer["report"] == "accepted"
    assert answer["order_id"] == "while-away"
    assert waited < 15  # not the client's 60 s resend wait
    assert sorted(o.order_id for o in core.engine.live_orders()) == [
        "alice/before", "alice/while-away"]


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_a_gateway_that_ends_on_an_error_does_not_leave_up_behind(broker):
    """A gateway whose work fails (its journal's disk full, a cluster's log that will not
    take an append) leaves the broker with a clean DISCONNECT, and a clean disconnect
    sends no will: it must say it is down itself, or ``up`` stays retained for a gateway
    that is gone."""
    host, port, credentials = broker

    async def scenario():
        async with a_broker(host, port, credentials) as (host_, port_):
            core = GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))

            def broken(*args, **kwargs):
                raise OSError(28, "No space left on device")

            with pytest.raises(OSError, match="No space left"):  # (what the gateway raised)
                async with gateway_on(host_, port_, credentials, core) as task:
                    core.flush = broken  # type: ignore[method-assign]
                    async with aiomqtt.Client(host_, port_, username="alice",
                                              password=credentials["alice"]) as alice:
                        await alice.publish("cx/v1/orders/alice",
                                            json.dumps(order("o1", "buy", "60.00")), qos=1)
                    await asyncio.wait([task], timeout=10)  # it ends on the error
            async with watching(host_, port_, "bob", credentials["bob"]) as bob:
                await bob.wait_for({"status": "down", "reason": "failed"})

    asyncio.run(asyncio.wait_for(scenario(), LIMIT))


def test_a_bot_resends_when_a_gateway_comes_up_it_did_not_see_go_down(mosquitto_broker):
    """A broker that dies keeps no retained message across its restart (persistence
    false) and sends no will (it was the one that went), so a bot never hears the gateway
    go down. If the bot is back before the gateway, what it resends on connecting
    reaches nobody; the gateway's ``up``, published live when it is back, must still send
    it again at once."""
    host, port = mosquitto_broker.host, mosquitto_broker.port
    credentials = mosquitto_broker.credentials

    async def scenario():
        core = GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))
        async with ExchangeClient("alice", credentials["alice"], host, port,
                                  resend_after=60.0, timeout=30.0) as bot:
            async with gateway_on(host, port, credentials, core):
                await bot.submit(order("before", "sell", "70.00", 1))
                await _until(lambda: bot.gateway == "up")
                # The broker dies (its machine restarted, the gateway with it; stopped,
                # it would send the gateway's will first), and is back before the gateway.
                os.kill(mosquitto_broker.mosquitto.pid, signal.SIGKILL)
                await asyncio.to_thread(mosquitto_broker.mosquitto.stop)  # (reaped)
                await asyncio.sleep(0.5)
            await asyncio.to_thread(mosquitto_broker.mosquitto.start)
            await _until(lambda: bot.connected)
            waiting = bot.submit(order("while-away", "sell", "70.00", 1))
            await asyncio.sleep(0.5)  # sent, to no one
            assert not waiting.done()
            async with gateway_on(host, port, credentials, core):
                answer = await asyncio.wait_for(waiting, 15)
        return answer, core

    answer, core = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert (answer["report"], answer["order_id"]) == ("accepted", "while-away")
    assert sorted(o.order_id for o in core.engine.live_orders()) == [
        "alice/before", "alice/while-away"]


def test_a_bot_back_from_a_blip_resends_what_waits_once_not_twice(mosquitto_broker):
    """The bot's session is persistent: while it was away (its connection taken over, a
    network blip) the gateway restarted, and the broker queued 'down' then 'up' for it
    (QoS 1). On reconnecting it resends everything waiting, then hears the queued live
    'up' and sends it all again: each unanswered command went three times, not twice."""
    host, port = mosquitto_broker.host, mosquitto_broker.port
    credentials = mosquitto_broker.credentials

    async def scenario():
        seen: list = []
        async with aiomqtt.Client(host, port, username="gateway",
                                  password=credentials["gateway"]) as gateway:
            await gateway.subscribe("cx/v1/orders/+", qos=0)

            async def read():
                async for message in gateway.messages:
                    seen.append(json.loads(message.payload))

            reader = asyncio.ensure_future(read())
            await gateway.publish(GATEWAY_STATUS, json.dumps(UP), qos=1, retain=True)
            async with ExchangeClient("alice", credentials["alice"], host, port,
                                      retry_delay=1.0, resend_after=600.0) as bot:
                bot.submit(order("o1", "buy", "60.00", 1))
                await _until(lambda: len(seen) == 1 and bot.gateway == "up")
                async with aiomqtt.Client(host, port, username="alice",
                                          password=credentials["alice"], identifier="alice",
                                          clean_session=False):
                    pass  # alice's connection taken over: the bot is away, its session kept
                await gateway.publish(GATEWAY_STATUS, json.dumps(LOST), qos=1, retain=True)
                await gateway.publish(GATEWAY_STATUS, json.dumps(UP), qos=1, retain=True)
                await _until(lambda: bot.connects == 2 and bot.gateway == "up")
                await asyncio.sleep(1.0)
            reader.cancel()
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert len(seen) == 2  # sent, and resent once on reconnecting
