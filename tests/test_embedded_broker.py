"""The embedded broker: loopback only, password logins, per-user topic rules.

Each test runs its own event loop with ``asyncio.run`` under an overall timeout. To show
that a forbidden message is *not* delivered, a test sends it first and then an allowed
marker over the same path; the broker handles one client's messages in order, so the
first message to arrive must be the marker.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from typing import Any

import aiomqtt
import pytest

from gateway.embedded import GATEWAY_USER, EmbeddedBroker, allowed, valid_account_name

USERS = {GATEWAY_USER: "gw-secret", "A": "a-secret", "B": "b-secret"}
SUBACK_FAILURE = 0x80


def run(scenario: Coroutine[Any, Any, None], timeout: float = 5.0) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout))


def client(broker: EmbeddedBroker, user: str | None, password: str | None = None,
           **kwargs: Any) -> aiomqtt.Client:
    if user is not None and password is None:
        password = USERS[user]
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          identifier=f"{user}-{secrets.token_hex(6)}", timeout=2, **kwargs)


async def next_message(c: aiomqtt.Client, timeout: float = 1.0) -> tuple[str, bytes] | None:
    """The next message as (topic, payload), or None if none arrives within *timeout*."""
    try:
        message = await asyncio.wait_for(anext(c.messages), timeout)
    except TimeoutError:
        return None
    assert isinstance(message.payload, bytes)
    return message.topic.value, message.payload


async def suback(c: aiomqtt.Client, topic_filter: str) -> int:
    (code,) = await c.subscribe(topic_filter, qos=1)
    return code if isinstance(code, int) else code.value


# --- the rules, as a pure function ---------------------------------------------------

@pytest.mark.parametrize(("user", "topic", "action", "expected"), [
    # traders publish orders under their own name only
    ("A", "cx/v1/orders/A", "publish", True),
    ("A", "cx/v1/orders/B", "publish", False),
    ("A", "cx/v1/exec/A", "publish", False),
    ("A", "cx/v1/md/CEA25/trades", "publish", False),
    ("A", "cx/v1/orders/A/x", "publish", False),
    ("A", "cx/v1/orders/+", "publish", False),  # no wildcards in a topic name
    # traders read their own executions and all market data
    ("A", "cx/v1/exec/A", "subscribe", True),
    ("A", "cx/v1/md/#", "subscribe", True),
    ("A", "cx/v1/md/CEA25/trades", "subscribe", True),
    ("A", "cx/v1/md/+/book", "subscribe", True),
    ("A", "cx/v1/md/CEA25/#", "subscribe", True),
    ("A", "cx/v1/md", "subscribe", True),  # `cx/v1/md/#` matches its parent too
    ("A", "cx/v1/exec/B", "subscribe", False),
    ("A", "cx/v1/exec/+", "subscribe", False),
    ("A", "cx/v1/exec/#", "subscribe", False),
    ("A", "cx/v1/exec/A/x", "subscribe", False),
    ("A", "cx/v1/orders/A", "subscribe", False),
    ("A", "cx/v1/+/CEA25/trades", "subscribe", False),
    ("A", "cx/v1/#", "subscribe", False),
    ("A", "#", "subscribe", False),
    ("A", "+/v1/md/#", "subscribe", False),
    ("A", "$SYS/#", "subscribe", False),
    # malformed filters are refused
    ("A", "cx/v1/md/#/x", "subscribe", False),
    ("A", "cx/v1/md/CEA#", "subscribe", False),
    ("A", "cx/v1/md/CEA+/book", "subscribe", False),
    ("A", "", "subscribe", False),
    # the gateway
    ("gateway", "cx/v1/orders/+", "subscribe", True),
    ("gateway", "cx/v1/orders/A", "subscribe", True),
    ("gateway", "cx/v1/orders/#", "subscribe", False),
    ("gateway", "cx/v1/exec/+", "subscribe", False),
    ("gateway", "#", "subscribe", False),
    ("gateway", "cx/v1/exec/A", "publish", True),
    ("gateway", "cx/v1/md/CEA25/trades", "publish", True),
    ("gateway", "cx/v1/orders/A", "publish", False),
    ("gateway", "cx/v1/exec/A/x", "publish", False),
    # bad users and actions
    ("", "cx/v1/md/#", "subscribe", False),
    ("A/B", "cx/v1/orders/A/B", "publish", False),
    ("+", "cx/v1/orders/+", "publish", False),
    ("A", "cx/v1/exec/A", "receive", False),
])
def test_allowed(user: str, topic: str, action: str, expected: bool) -> None:
    assert allowed(user, topic, action) is expected


def test_valid_account_name() -> None:
    assert valid_account_name("A") and valid_account_name("trader-7")
    for name in ("", "A/B", "A+", "#", GATEWAY_USER):
        assert not valid_account_name(name), name


def test_bad_account_names_passwords_and_hosts_are_rejected() -> None:
    for name in ("", "A/B", "A+", "#"):
        with pytest.raises(ValueError, match="account name"):
            EmbeddedBroker({name: "pw"})
    with pytest.raises(ValueError, match="password"):
        EmbeddedBroker({"A": ""})
    broker = EmbeddedBroker(USERS)
    with pytest.raises(ValueError):
        broker.add_account("C/D", "pw")
    for host in ("0.0.0.0", "", "::"):
        with pytest.raises(ValueError, match="wildcard"):
            EmbeddedBroker(USERS, host=host)


# --- the running broker ---------------------------------------------------------------

def test_listens_on_loopback_only() -> None:
    psutil = pytest.importorskip("psutil")

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            assert (broker.host, broker.port > 0) == ("127.0.0.1", True)
            listening = {(c.laddr.ip, c.laddr.port)
                         for c in psutil.Process().net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == broker.port}
            assert listening == {("127.0.0.1", broker.port)}

    run(scenario())


def test_wrong_password_unknown_user_and_anonymous_are_refused() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            for user, password in (("A", "wrong"), ("A", USERS["B"]), ("Z", "pw"), (None, None)):
                with pytest.raises(aiomqtt.MqttCodeError):
                    async with client(broker, user, password):
                        pass
            async with client(broker, "A"):
                pass

    run(scenario())


def test_gateway_receives_a_traders_orders_but_not_forged_ones() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with client(broker, GATEWAY_USER) as gw, client(broker, "A") as a:
                assert await suback(gw, "cx/v1/orders/+") == 1
                assert await suback(a, "cx/v1/exec/A") == 1
                await a.publish("cx/v1/orders/B", b"forged order", qos=1)
                await a.publish("cx/v1/exec/A", b"forged fill", qos=1)
                await a.publish("cx/v1/orders/A", b"order", qos=1)
                assert await next_message(gw) == ("cx/v1/orders/A", b"order")
                # A's forged fill was handled before its order reached the gateway
                await gw.publish("cx/v1/exec/A", b"fill", qos=1)
                assert await next_message(a) == ("cx/v1/exec/A", b"fill")
                assert await next_message(gw, 0.1) is None
                assert await next_message(a, 0.1) is None

    run(scenario())


def test_trader_receives_own_executions_and_market_data_only() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with client(broker, GATEWAY_USER) as gw, client(broker, "A") as a, \
                    client(broker, "B") as b:
                for refused in ("cx/v1/exec/B", "cx/v1/exec/+", "#", "cx/v1/orders/A"):
                    assert await suback(a, refused) == SUBACK_FAILURE, refused
                for granted in ("cx/v1/exec/A", "cx/v1/md/CEA25/trades"):
                    assert await suback(a, granted) == 1, granted
                assert await suback(b, "cx/v1/exec/B") == 1
                await gw.publish("cx/v1/exec/B", b"B's fill", qos=1)
                await gw.publish("cx/v1/exec/A", b"A's fill", qos=1)
                await gw.publish("cx/v1/md/CEA25/trades", b"trade", qos=1)
                assert await next_message(b) == ("cx/v1/exec/B", b"B's fill")
                assert await next_message(a) == ("cx/v1/exec/A", b"A's fill")
                assert await next_message(a) == ("cx/v1/md/CEA25/trades", b"trade")
                assert await next_message(a, 0.1) is None

    run(scenario())


def test_add_account_lets_a_new_user_connect_and_replaces_passwords() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            with pytest.raises(aiomqtt.MqttCodeError):
                async with client(broker, "C", "c-secret"):
                    pass
            broker.add_account("C", "c-secret")
            async with client(broker, GATEWAY_USER) as gw, client(broker, "C", "c-secret") as c:
                await gw.subscribe("cx/v1/orders/+")
                await c.publish("cx/v1/orders/C", b"order", qos=1)
                assert await next_message(gw) == ("cx/v1/orders/C", b"order")
            broker.add_account("C", "new-secret")
            with pytest.raises(aiomqtt.MqttCodeError):
                async with client(broker, "C", "c-secret"):
                    pass
            async with client(broker, "C", "new-secret"):
                pass

    run(scenario())


def test_will_message_must_name_an_allowed_topic() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            with pytest.raises(aiomqtt.MqttCodeError):
                async with client(broker, "A", will=aiomqtt.Will("cx/v1/orders/B", b"x")):
                    pass
            async with client(broker, "A", will=aiomqtt.Will("cx/v1/orders/A", b"x")):
                pass

    run(scenario())


def test_another_user_cannot_take_over_a_persistent_session() -> None:
    def persistent(broker: EmbeddedBroker, user: str) -> aiomqtt.Client:
        return aiomqtt.Client(broker.host, broker.port, username=user, password=USERS[user],
                              identifier="carbonx-gateway", clean_session=False, timeout=2)

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with persistent(broker, GATEWAY_USER) as gw:
                await gw.subscribe("cx/v1/orders/+", qos=1)
            async with client(broker, "B") as b:  # queued for the offline gateway
                await b.publish("cx/v1/orders/B", b"B's order", qos=1)
            # amqtt would give A the gateway's session and B's queued order
            with pytest.raises(aiomqtt.MqttCodeError):
                async with persistent(broker, "A"):
                    pass
            async with persistent(broker, GATEWAY_USER) as gw:
                assert await next_message(gw) == ("cx/v1/orders/B", b"B's order")

    run(scenario())


def test_only_market_data_is_retained() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with client(broker, GATEWAY_USER) as gw, client(broker, "B") as b:
                await suback(b, "cx/v1/exec/B")
                await gw.publish("cx/v1/exec/B", b"B's fill", qos=1, retain=True)
                await gw.publish("cx/v1/md/CEA25/book", b"book", qos=1, retain=True)
                assert await next_message(b) == ("cx/v1/exec/B", b"B's fill")
                # amqtt would replay a retained B's fill to any newly connected client
                async with client(broker, "A") as a:
                    await suback(a, "cx/v1/md/+/book")
                    assert await next_message(a) == ("cx/v1/md/CEA25/book", b"book")
                    assert await next_message(a, 0.1) is None

    run(scenario())


def test_stops_cleanly_with_clients_connected(caplog: pytest.LogCaptureFixture,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        tasks_before = asyncio.all_tasks()
        async with EmbeddedBroker(USERS) as broker:
            a = client(broker, "A")
            await a.__aenter__()
            await a.subscribe("cx/v1/md/#")
        with pytest.raises(aiomqtt.MqttError):
            await next_message(a)  # the broker has gone: the client is disconnected
        await a.__aexit__(None, None, None)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(broker.host, broker.port)
        assert asyncio.all_tasks() == tasks_before

    with caplog.at_level(logging.WARNING):
        run(scenario())
    assert not caplog.records
    assert capfd.readouterr().err == ""
