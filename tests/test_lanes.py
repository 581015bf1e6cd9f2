"""The gateway's incoming messages are taken one lane (topic) at a time, in turn.

``Lanes`` is held to a plain reference (a list scanned for the next key's first item);
``LaneQueue`` is shown to keep asyncio.Queue's behaviour and, with a real aiomqtt client
on a real mosquitto, to hand a quiet account's message over ahead of a flood's backlog.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markets import order
from mosquitto import BrokerFactory

from gateway.mqtt.embedded import GATEWAY_USER, EmbeddedBroker
from gateway.mqtt.lanes import BroadcastQueue, LaneQueue, Lanes
from gateway.protocol import ORDERS_FILTER, orders_topic


class PlainLanes:
    """The reference: every item in one list in arrival order, and the keys in turn order;
    the next item is the first in the list whose key is the first in turn."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.turns: list[str] = []

    def append(self, key: str, item: object) -> None:
        if key not in self.turns:
            self.turns.append(key)
        self.items.append((key, item))

    def popleft(self) -> object:
        key = self.turns.pop(0)
        index = next(i for i, (k, _) in enumerate(self.items) if k == key)
        _, item = self.items.pop(index)
        if any(k == key for k, _ in self.items):
            self.turns.append(key)
        return item


PUT = st.sampled_from("abcd").map(lambda key: ("put", key))
OPS = st.lists(st.one_of(PUT, st.just(("get", ""))), max_size=200)


@given(OPS)
def test_lanes_equal_the_plain_reference(ops: list[tuple[str, str]]) -> None:
    lanes, plain = Lanes(lambda item: item[0]), PlainLanes()
    for n, (op, key) in enumerate(ops):
        if op == "put":
            lanes.append((key, n))
            plain.append(key, (key, n))
        elif plain.items:
            assert lanes.popleft() == plain.popleft()
        else:
            with pytest.raises(IndexError):
                lanes.popleft()
        assert len(lanes) == len(plain.items)
        assert lanes.lanes == len(plain.turns)


@given(st.lists(st.sampled_from("abcde"), max_size=300))
def test_each_lane_keeps_its_order_and_waits_behind_one_item_of_each_other(keys: list[str]) -> None:
    lanes = Lanes(lambda item: item[0])
    for n, key in enumerate(keys):
        lanes.append((key, n))
    out = [lanes.popleft() for _ in range(len(keys))]
    assert sorted(out) == sorted((key, n) for n, key in enumerate(keys))  # each once
    for key in set(keys):
        mine = [n for k, n in out if k == key]
        assert mine == sorted(mine)  # a lane's own order
    # Between two items of one lane, each other lane gives at most one.
    for key in set(keys):
        positions = [i for i, (k, _) in enumerate(out) if k == key]
        for before, after in zip(positions, positions[1:]):
            between = [k for k, _ in out[before + 1:after]]
            assert len(between) == len(set(between))


def message(topic: str, n: int) -> SimpleNamespace:
    return SimpleNamespace(topic=SimpleNamespace(value=topic), n=n)


def test_lane_queue_behaves_as_an_asyncio_queue() -> None:
    async def go() -> None:
        queue = LaneQueue(maxsize=3)
        assert queue.empty() and queue.qsize() == 0
        for n in range(3):
            queue.put_nowait(message("cx/v1/orders/flood", n))
        assert queue.full()
        with pytest.raises(asyncio.QueueFull):
            queue.put_nowait(message("cx/v1/orders/quiet", 9))
        assert (await queue.get()).n == 0
        queue.put_nowait(message("cx/v1/orders/quiet", 9))
        taken = [(await queue.get()).n for _ in range(3)]
        assert taken == [1, 9, 2]  # the quiet lane's turn comes after one of the flood's
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.put_nowait(message("cx/v1/orders/late", 5))
        assert (await asyncio.wait_for(waiter, 1)).n == 5  # a waiting get() is woken

    asyncio.run(go())


def test_broadcast_queue_takes_the_embedded_brokers_messages_by_topic() -> None:
    async def go() -> list[int]:
        queue = BroadcastQueue()
        for n in range(5):
            await queue.put({"topic": "cx/v1/orders/flood", "data": b"", "n": n})
        await queue.put({"topic": "cx/v1/orders/quiet", "data": b"", "n": 99})
        return [(await queue.get())["n"] for _ in range(6)]

    assert asyncio.run(go()) == [0, 99, 1, 2, 3, 4]


FLOOD = 300


def _payload(tag: str, n: int) -> bytes:
    import json

    return json.dumps(order(f"{tag}-{n}", "buy", "50.00", 1)).encode()


async def _backlog_then_read(host: str, port: int, gateway_password: str,
                             publish: dict[str, str], queue_type) -> list[str]:
    """Subscribe as the gateway with *queue_type*, let FLOOD messages of ``flood`` and
    then one of ``quiet`` arrive unread, and return the order the reader gets them in."""
    async with aiomqtt.Client(host, port, username=GATEWAY_USER, password=gateway_password,
                              queue_type=queue_type) as gateway:
        await gateway.subscribe(ORDERS_FILTER, qos=0)
        async with (aiomqtt.Client(host, port, username="flood",
                                   password=publish["flood"]) as flood,
                    aiomqtt.Client(host, port, username="quiet",
                                   password=publish["quiet"]) as quiet):
            for n in range(FLOOD):
                await flood.publish(orders_topic("flood"), _payload("f", n), qos=1)
            await quiet.publish(orders_topic("quiet"), _payload("q", 0), qos=1)
        deadline = time.monotonic() + 10
        while len(gateway.messages) < FLOOD + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(gateway.messages) == FLOOD + 1
        got = []
        async for received in gateway.messages:
            got.append(received.topic.value.rsplit("/", 1)[1])
            if len(got) == FLOOD + 1:
                break
        return got


def test_a_real_client_on_mosquitto_reads_the_quiet_account_ahead_of_a_flood(
        mosquitto_factory: BrokerFactory) -> None:
    broker = mosquitto_factory({"flood": None, "quiet": None}, limits=None)
    got = asyncio.run(asyncio.wait_for(_backlog_then_read(
        broker.host, broker.port, broker.credentials[GATEWAY_USER], broker.credentials,
        LaneQueue), 30))
    assert got.index("quiet") == 1 and got.count("flood") == FLOOD
    # The client's own queue, first in first out, would have kept it behind the flood.
    plain = asyncio.run(asyncio.wait_for(_backlog_then_read(
        broker.host, broker.port, broker.credentials[GATEWAY_USER], broker.credentials,
        asyncio.Queue), 30))
    assert plain.index("quiet") == FLOOD


def test_the_embedded_broker_delivers_a_quiet_accounts_message_ahead_of_a_backlog() -> None:
    """A flood's messages and then a quiet account's wait in the embedded broker's queue
    of messages to deliver (put there in one go, as its readers do when the gateway
    sharing its loop falls behind); the gateway receives the quiet one second."""
    passwords = {GATEWAY_USER: "gw", "flood": "f", "quiet": "q"}

    async def go() -> list[str]:
        async with EmbeddedBroker(passwords) as broker, aiomqtt.Client(
                broker.host, broker.port, username=GATEWAY_USER, password="gw") as gateway:
            await gateway.subscribe(ORDERS_FILTER, qos=0)
            amqtt_broker = broker._broker
            for n in range(FLOOD):  # no await suspends here: the queue fills in this order
                await amqtt_broker._broadcast_message(None, orders_topic("flood"), _payload("f", n))
            await amqtt_broker._broadcast_message(None, orders_topic("quiet"), _payload("q", 0))
            got: list[str] = []
            async for received in gateway.messages:
                got.append(received.topic.value.rsplit("/", 1)[1])
                if len(got) == FLOOD + 1:
                    break
            return got

    got = asyncio.run(asyncio.wait_for(go(), 30))
    assert got.count("flood") == FLOOD
    assert got.index("quiet") == 1
