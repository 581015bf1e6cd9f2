"""The embedded broker: loopback only, password logins, per-user topic rules.

Each test runs its own event loop with ``asyncio.run`` under an overall timeout. To show
that a forbidden message is *not* delivered, a test sends it first and then an allowed
marker over the same path; the broker handles one client's messages in order, so the
first message to arrive must be the marker.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import inspect
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import Any

import aiomqtt
import pytest

from gateway.mqtt import embedded
from gateway.mqtt.embedded import (GATEWAY_USER, MAX_PACKET_SIZE, OPERATOR_USER, EmbeddedBroker,
                                   _FailedDeliveries, _PacketSizeGuard, allowed,
                                   check_account_name, valid_account_name)

USERS = {GATEWAY_USER: "gw-secret", OPERATOR_USER: "op-secret", "A": "a-secret", "B": "b-secret"}
SUBACK_FAILURE = 0x80


def run(scenario: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
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
    (code, ) = await c.subscribe(topic_filter, qos=1)
    return code if isinstance(code, int) else code.value


# --- the rules, as a pure function ---------------------------------------------------


@pytest.mark.parametrize(
    ("user", "topic", "action", "expected"),
    [
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
        # the operator console: the gateway reads its commands and answers them
        ("gateway", "cx/v1/ops/commands", "subscribe", True),
        ("gateway", "cx/v1/ops/reports", "publish", True),
        ("gateway", "cx/v1/ops/commands", "publish", False),
        ("gateway", "cx/v1/ops/reports", "subscribe", False),
        ("gateway", "cx/v1/ops/#", "subscribe", False),
        ("operator", "cx/v1/ops/commands", "publish", True),
        ("operator", "cx/v1/ops/reports", "subscribe", True),
        ("operator", "cx/v1/md/#", "subscribe", True),
        ("operator", "cx/v1/md/CEA25/book", "subscribe", True),
        ("operator", "cx/v1/ops/reports", "publish", False),
        ("operator", "cx/v1/ops/commands", "subscribe", False),
        ("operator", "cx/v1/ops/#", "subscribe", False),
        ("operator", "cx/v1/orders/operator", "publish", False),
        ("operator", "cx/v1/orders/A", "publish", False),
        ("operator", "cx/v1/orders/+", "subscribe", False),
        ("operator", "cx/v1/exec/operator", "subscribe", False),
        ("operator", "cx/v1/exec/A", "publish", False),
        ("operator", "cx/v1/md/CEA25/book", "publish", False),
        # no account reads or writes anything under cx/v1/ops/
        ("A", "cx/v1/ops/commands", "publish", False),
        ("A", "cx/v1/ops/reports", "publish", False),
        ("A", "cx/v1/ops/commands", "subscribe", False),
        ("A", "cx/v1/ops/reports", "subscribe", False),
        ("A", "cx/v1/ops/#", "subscribe", False),
        # whether the gateway serves: it alone says so, everyone reads it
        ("gateway", "cx/v1/status", "publish", True),
        ("A", "cx/v1/status", "subscribe", True),
        ("operator", "cx/v1/status", "subscribe", True),
        ("A", "cx/v1/status", "publish", False),
        ("operator", "cx/v1/status", "publish", False),
        ("A", "cx/v1/status/x", "subscribe", False),
        # bad users and actions
        ("", "cx/v1/md/#", "subscribe", False),
        ("A/B", "cx/v1/orders/A/B", "publish", False),
        ("+", "cx/v1/orders/+", "publish", False),
        ("A", "cx/v1/exec/A", "receive", False)
    ])
def test_allowed(user: str, topic: str, action: str, expected: bool) -> None:
    assert allowed(user, topic, action) is expected


def test_valid_account_name() -> None:
    assert valid_account_name("A") and valid_account_name("trader-7")
    for name in ("", "A/B", "A+", "#", GATEWAY_USER, OPERATOR_USER):
        assert not valid_account_name(name), name


@pytest.mark.parametrize(("name", "message"),
                         [(GATEWAY_USER, "'gateway' is reserved for the gateway's own MQTT user"),
                          (OPERATOR_USER, "'operator' is reserved for the operator console's"),
                          ("", "invalid account name ''"), ("A/B", "invalid account name 'A/B'")])
def test_check_account_name_says_why_a_name_is_refused(name: str, message: str) -> None:
    assert check_account_name("trader-7") == "trader-7"
    with pytest.raises(ValueError, match=message):
        check_account_name(name)


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
            async with (client(broker, GATEWAY_USER) as gw, client(broker, "A") as
                        a, client(broker, "B") as b):
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


def test_an_offline_session_keeps_at_most_max_queued_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    """amqtt queues every message for an offline persistent session: one account
    subscribed to all market data and went away grew the exchange's memory for good.
    Past the bound newer messages are dropped, as mosquitto's max_queued_messages does."""

    async def scenario() -> None:
        async with EmbeddedBroker(USERS, max_queued=5) as broker:
            away = aiomqtt.Client(broker.host, broker.port, username="A", password=USERS["A"],
                                  identifier="A", clean_session=False, timeout=2)
            async with away as a:
                await a.subscribe("cx/v1/md/#", qos=1)
            async with client(broker, GATEWAY_USER) as gw:
                for n in range(12):
                    await gw.publish("cx/v1/md/CEA25/trades", f"t{n}".encode(), qos=1)
            async with away as a:
                got = []
                while (message := await next_message(a, 0.5)) is not None:
                    got.append(message[1])
            assert got == [f"t{n}".encode() for n in range(5)]

    with caplog.at_level(logging.WARNING, logger="gateway.mqtt.embedded"):
        run(scenario())
    warned = [r.getMessage() for r in caplog.records if "dropped until" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("A is away with 5 messages queued")


def test_unacknowledged_deliveries_are_one_line_now_and_then_not_a_traceback_each() -> None:
    """A subscriber that never sends PUBACK: amqtt logged each timed-out delivery as an
    error with its traceback (1,752 of them in one session)."""
    clock = [100.0]
    deliveries = _FailedDeliveries(every=10.0, clock=lambda: clock[0])
    logger = logging.getLogger("amqtt.broker")

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logger.makeRecord("amqtt.broker", logging.ERROR, __file__, 1,
                                 "Task failed and will be skipped: %s", ("task", ), info)

    first = record(TimeoutError("Timeout waiting for PUBACK"))
    assert deliveries.filter(first)
    assert (first.levelno, first.exc_info) == (logging.WARNING, None)
    assert first.getMessage() == ("a subscriber did not acknowledge a delivery in time: "
                                  "Timeout waiting for PUBACK")
    held = [deliveries.filter(record(TimeoutError("again"))) for _ in range(3)]
    assert held == [False] * 3
    other = record(ValueError("something else"))  # any other failure is left as it is
    assert deliveries.filter(other) and other.levelno == logging.ERROR and other.exc_info
    clock[0] += 10.0
    later = record(TimeoutError("Timeout waiting for PUBACK"))
    assert deliveries.filter(later)
    assert later.getMessage().endswith("(3 more since the last such line)")


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
            # amqtt would give A the gateway's session and B's queued order; here the
            # identifier is A's own name, so A gets A's (empty) session and nothing else.
            async with persistent(broker, "A") as a:
                assert await next_message(a, 0.2) is None
            async with persistent(broker, GATEWAY_USER) as gw:
                assert await next_message(gw) == ("cx/v1/orders/B", b"B's order")

    run(scenario())


def test_a_client_id_in_use_by_another_account_is_not_taken_over() -> None:

    def named(broker: EmbeddedBroker, user: str, password: str | None = None,
              **kwargs: Any) -> aiomqtt.Client:
        return aiomqtt.Client(broker.host, broker.port, username=user,
                              password=USERS[user] if password is None else password,
                              identifier="shared-id", timeout=2, **kwargs)

    async def scenario() -> None:
        async with (EmbeddedBroker(USERS) as broker, client(broker, GATEWAY_USER) as
                    gw, named(broker, "A") as a):
            assert await suback(a, "cx/v1/exec/A") == 1
            # Another account, a wrong password and a persistent CONNECT, all with A's
            # identifier: amqtt would drop A's subscriptions (or hand A's session over)
            # before looking at the password.
            async with named(broker, "B") as b:
                assert await suback(b, "cx/v1/exec/B") == 1
                await gw.publish("cx/v1/exec/B", b"B's fill", qos=1)
                assert await next_message(b) == ("cx/v1/exec/B", b"B's fill")
            for password, clean in (("wrong", True), ("wrong", False)):
                with pytest.raises(aiomqtt.MqttCodeError):
                    async with named(broker, "A", password, clean_session=clean):
                        pass
            await gw.publish("cx/v1/exec/A", b"A's fill", qos=1)
            assert await next_message(a) == ("cx/v1/exec/A", b"A's fill")

    run(scenario())


def test_refused_logins_leave_no_sessions_behind() -> None:

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            assert broker._broker is not None
            sessions = broker._broker._sessions
            for n in range(20):
                with pytest.raises(aiomqtt.MqttCodeError):
                    async with client(broker, "A", f"wrong-{n}"):
                        pass
            assert len(sessions) == 0
            async with client(broker, "A"):
                assert list(sessions) == ["A"]  # the identifier is the user name

    run(scenario())


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_an_accounts_second_connection_takes_over_from_its_first(clean: bool) -> None:
    """As in mosquitto, the first connection is closed, whether its session is clean or
    persistent (the bot client's): a persistent one stayed connected, its commands acted
    and their answers went to the other connection."""

    async def scenario() -> None:
        async with (EmbeddedBroker(USERS) as broker, client(broker, GATEWAY_USER) as
                    gw, client(broker, "A", clean_session=clean) as first):
            assert await suback(first, "cx/v1/exec/A") == 1
            async with client(broker, "A", clean_session=clean) as second:
                with pytest.raises(aiomqtt.MqttError):  # disconnected, as by mosquitto
                    await next_message(first, 2.0)
                if clean:
                    assert await suback(second, "cx/v1/exec/A") == 1
                await gw.publish("cx/v1/exec/A", b"A's fill", qos=1)
                assert await next_message(second) == ("cx/v1/exec/A", b"A's fill")

    run(scenario())


# --- oversize packets ---------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(user: str, password: str, client_id: str = "raw") -> bytes:
    body = (_string("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big") + _string(client_id) +
            _string(user) + _string(password))
    return b"\x10" + _varint(len(body)) + body


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _flood(writer: asyncio.StreamWriter, total: int) -> int:
    """Write *total* zero bytes (or as many as the peer takes before it hangs up)."""
    chunk, sent = bytes(1 << 16), 0
    try:
        while sent < total:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass
    return sent


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the broker ends the connection (EOF, or a reset) within 5 s, sending nothing."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_100_mib_publish_is_cut_off_at_its_header_and_others_go_on() -> None:
    announced = 100 << 20

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            reader, writer = await asyncio.open_connection(broker.host, broker.port)
            writer.write(connect_packet("A", USERS["A"]))
            assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
            before = _rss()
            writer.write(b"\x32" + _varint(announced) + _string("cx/v1/orders/A") + b"\x00\x01")
            sent = await _flood(writer, announced)
            assert await closed_by_peer(reader)
            writer.close()
            grown = _rss() - before
            assert sent < announced // 2, sent
            assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB"
            # The broker goes on serving everyone else.
            async with client(broker, GATEWAY_USER) as gw, client(broker, "A") as a:
                assert await suback(gw, "cx/v1/orders/+") == 1
                await a.publish("cx/v1/orders/A", b"x" * 500_000, qos=1)  # under the limit
                assert await next_message(gw) == ("cx/v1/orders/A", b"x" * 500_000)

    run(scenario(), timeout=30)


def test_an_oversize_connect_is_cut_off_before_the_login() -> None:

    async def scenario() -> None:
        async with EmbeddedBroker(USERS, max_packet_size=1024) as broker:
            reader, writer = await asyncio.open_connection(broker.host, broker.port)
            writer.write(connect_packet("A", "p" * 2000))
            assert await closed_by_peer(reader)  # no CONNACK: closed
            writer.close()
            async with client(broker, "A"):
                pass

    run(scenario())


def test_the_packet_size_guard_follows_the_framing() -> None:
    guard = _PacketSizeGuard(100)
    small = b"\x30" + _varint(98) + bytes(98)  # 100 bytes in all: the limit
    assert guard.feed(small * 3) is None  # several packets in one read
    for byte in small:  # ... and a byte at a time
        assert guard.feed(bytes([byte])) is None
    assert guard.feed(b"\xc0\x00") is None  # PINGREQ: no body
    assert guard.feed(b"\x30") is None
    assert guard.feed(_varint(99)) == "a packet of 101 bytes is over the limit of 100"
    guard.restart()
    assert guard.feed(b"\x30\x80\x80\x80\x80") == "malformed packet length"  # a fifth byte
    guard = _PacketSizeGuard(MAX_PACKET_SIZE)
    assert guard.feed(b"\x30" + _varint(100 << 20)) == (
        f"a packet of {(100 << 20) + 5} bytes is over the limit of {MAX_PACKET_SIZE}")


def _publish(topic: str, payload: bytes) -> bytes:
    body = _string(topic) + payload  # QoS 0: no packet id
    return b"\x30" + _varint(len(body)) + body


@pytest.mark.parametrize("topic", ["cx/v1/orders/+", "cx/v1/#", "a+b", "#"])
def test_the_guard_refuses_a_publish_to_a_topic_filter_when_its_topic_ends(topic: str) -> None:
    """amqtt drops such a packet after its topic and reads its payload as packets of their
    own, which the size limit and the rate would never see."""
    packet = _publish(topic, _publish("cx/v1/orders/A", b"hidden"))
    head = 2 + 2 + len(topic)  # fixed header, topic length, topic
    refusal = "a PUBLISH to a topic filter (+ or #), not a topic name"
    guard = _PacketSizeGuard(1000)
    assert guard.feed(packet[:head - 1]) is None  # not yet: the topic is not complete
    assert guard.feed(packet[head - 1:]) == refusal
    guard = _PacketSizeGuard(1000)
    answers = [guard.feed(bytes([byte])) for byte in packet[:head]]  # a byte at a time
    assert answers == [None] * (head - 1) + [refusal]
    guard = _PacketSizeGuard(1000)
    assert guard.feed(_publish("cx/v1/orders/A", b"+#") * 3) is None  # in a payload: fine


def test_the_guard_refuses_a_publish_whose_topic_runs_past_its_end() -> None:
    guard = _PacketSizeGuard(1000)
    # The topic says 50 bytes; the packet has 10 after the length: amqtt would read on
    # into the packets after it.
    assert guard.feed(b"\x30\x0c\x00\x32" + b"x" * 10) == "a PUBLISH whose topic runs past its end"
    guard = _PacketSizeGuard(1000)
    assert guard.feed(b"\x30\x01\x00") == "a PUBLISH whose topic runs past its end"
    guard = _PacketSizeGuard(1000)
    assert guard.feed(b"\x30\x00") == "a PUBLISH whose topic runs past its end"


def test_a_publish_to_a_topic_filter_closes_the_connection_and_hides_nothing() -> None:
    """A 4 MiB payload behind a wildcard topic reached the gateway past the 1 MiB limit."""

    async def scenario() -> None:
        async with EmbeddedBroker(USERS, max_packet_size=1 << 20) as broker:
            async with client(broker, GATEWAY_USER) as gw:
                assert await suback(gw, "cx/v1/orders/+") == 1
                reader, writer = await asyncio.open_connection(broker.host, broker.port)
                writer.write(connect_packet("A", USERS["A"]))
                assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK
                hidden = _publish("cx/v1/orders/A", b"x" * (4 << 20))
                writer.write(_publish("cx/v1/orders/+", hidden[:900_000]) + hidden[900_000:])
                assert await closed_by_peer(reader)
                writer.close()
                assert await next_message(gw) is None  # nothing hidden got through
                async with client(broker, "A") as a:  # A may connect again and publish
                    await a.publish("cx/v1/orders/A", b"fine", qos=1)
                    assert await next_message(gw) == ("cx/v1/orders/A", b"fine")

    run(scenario(), timeout=30)


# amqtt's Broker._initialize_client_session, which gateway.mqtt.embedded._Broker replaces to
# put the identifier rule inside it: a new amqtt that changes it must be looked at.
PINNED_INITIALIZE_SOURCE = "5dd89158bbe46266c62cc3ba6dedc0fcfbc197b6cfdd03d089ad3ba2a4422806"


def test_the_replaced_amqtt_method_is_the_one_pinned() -> None:
    from amqtt.broker import Broker

    source = inspect.getsource(Broker._initialize_client_session)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == PINNED_INITIALIZE_SOURCE, (
        "amqtt's Broker._initialize_client_session changed: check that gateway.mqtt.embedded."
        "_Broker._initialize_client_session (which replaces it) still keeps its contract, "
        "then pin the new hash")


# --- listening ------------------------------------------------------------------------


def test_a_port_in_use_raises_oserror_and_logs_nothing(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:

    async def scenario() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            with pytest.raises(OSError) as caught:
                async with EmbeddedBroker(USERS, port=port):
                    pass
            assert caught.value.errno == errno.EADDRINUSE
            # Taken between the check and amqtt's own bind: the same error, no traceback.
            monkeypatch.setattr(embedded, "_check_bindable", lambda host, port: None)
            with pytest.raises(OSError) as caught:
                async with EmbeddedBroker(USERS, port=port):
                    pass
            assert caught.value.errno == errno.EADDRINUSE

    with caplog.at_level(logging.DEBUG, logger="amqtt"):
        run(scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_retained_messages_go_only_to_the_clients_that_subscribed_to_them() -> None:
    """amqtt replayed, to each client connecting, the retained messages of every filter
    another client held: A, subscribed to its own reports only, got market data."""

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with client(broker, GATEWAY_USER) as gw:
                await gw.publish("cx/v1/md/CEA25/status", b"trading", qos=1, retain=True)
            async with client(broker, "B") as b:
                await suback(b, "cx/v1/md/#")
                assert await next_message(b) == ("cx/v1/md/CEA25/status", b"trading")
                async with client(broker, "A") as a:
                    await suback(a, "cx/v1/exec/A")
                    assert await next_message(a, 0.5) is None
                    await suback(a, "cx/v1/md/+/status")  # its own: it gets the message
                    assert await next_message(a) == ("cx/v1/md/CEA25/status", b"trading")

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


@pytest.mark.parametrize("change", ["subscribed", "went_away"])
def test_a_subscription_changed_during_a_delivery_loses_it_for_no_one(change: str) -> None:
    """amqtt awaits each subscriber's topic check while it walks the subscriptions: a
    client that subscribed to a new filter meanwhile changed the dict under the loop
    (RuntimeError: the message lost for B, whose filter came later), and a clean session
    that went away took itself out of a filter's list (B, after it, skipped). The gateway's
    message had been acknowledged: B would never have it. The broker's subscriptions are
    walked over copies."""

    async def scenario() -> None:
        async with EmbeddedBroker(USERS) as broker:
            async with (client(broker, GATEWAY_USER) as gw, client(broker, OPERATOR_USER) as op,
                        client(broker, "A") as a, client(broker, "B") as b):
                assert await suback(op, "cx/v1/md/#") == 1
                assert await suback(a, "cx/v1/md/#") == 1
                # B after A: on the same filter's list, or on a filter of its own after it
                assert await suback(b, "cx/v1/md/#" if change == "went_away" else
                                    "cx/v1/md/CEA25/trades") == 1
                inner = broker._broker
                assert inner is not None
                check = inner._topic_filtering
                done = False

                async def meanwhile(session, topic: str, action) -> bool:
                    nonlocal done
                    allowed = await check(session, topic=topic, action=action)
                    if session.client_id == "A" and not done:
                        done = True
                        if change == "subscribed":  # another client's new filter
                            inner._subscriptions["cx/v1/md/CEA24/book"] = []
                        else:  # the operator's clean session ends
                            inner._del_subscription("cx/v1/md/#", op_session)
                    return allowed

                op_session = next(s for s, _ in inner._subscriptions["cx/v1/md/#"]
                                  if s.client_id == OPERATOR_USER)
                inner._topic_filtering = meanwhile  # type: ignore[method-assign]
                await gw.publish("cx/v1/md/CEA25/trades", b"trade", qos=1)
                assert await next_message(a) == ("cx/v1/md/CEA25/trades", b"trade")
                assert await next_message(b) == ("cx/v1/md/CEA25/trades", b"trade")
                assert done

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
