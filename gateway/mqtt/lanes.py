"""The gateway's incoming messages, queued in one lane per topic and taken in turn.

A broker hands the gateway every account's orders in one ordered stream, and the MQTT
client queues them in that order before the gateway reads them. Read first in, first
out, a quiet bot's message waits behind every message of a flood that came before it:
with the flood at the exchange's capacity, a hundred or more of them
(benchmarks/fairness.py). Queued in lanes, one per topic (so one per account, and one
for the operator), and taken one message from each lane in turn, it waits behind at most
one message of each other account; each lane keeps its own order, which is the only
order MQTT promises.

:class:`LaneQueue` is an :class:`asyncio.Queue` with that order, for the client's
``queue_type``; :class:`Lanes` is the structure itself, without asyncio.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any


def topic_of(message: Any) -> str:
    """The lane of an aiomqtt message: its topic."""
    return message.topic.value


class Lanes:
    """Items in one FIFO lane per key; :meth:`popleft` takes the head of the lane whose
    turn it is, and a lane that still holds items goes to the back of the turn order."""

    __slots__ = ("_key", "_lanes", "_size", "_turns")

    def __init__(self, key: Callable[[Any], Hashable]) -> None:
        self._key = key
        self._lanes: dict[Hashable, deque] = {}
        self._turns: deque[Hashable] = deque()  # each non-empty lane once, in turn order
        self._size = 0

    def append(self, item: Any) -> None:
        key = self._key(item)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
        if not lane:
            self._turns.append(key)
        lane.append(item)
        self._size += 1

    def popleft(self) -> Any:
        if not self._size:
            raise IndexError("pop from empty lanes")
        turns = self._turns
        key = turns.popleft()
        lane = self._lanes[key]
        item = lane.popleft()
        if lane:
            turns.append(key)
        else:
            del self._lanes[key]  # an idle account's lane costs nothing
        self._size -= 1
        return item

    def __len__(self) -> int:
        return self._size

    @property
    def lanes(self) -> int:
        """How many lanes hold items."""
        return len(self._turns)


def broadcast_topic(broadcast: dict) -> str:
    """The lane of a message the embedded broker has to deliver: its topic."""
    return broadcast["topic"]


class LaneQueue(asyncio.Queue):
    """An :class:`asyncio.Queue` of MQTT messages in :class:`Lanes` by topic.

    It overrides the three storage hooks :class:`asyncio.Queue` documents for subclasses
    (as :class:`asyncio.PriorityQueue` does); ``maxsize`` bounds all lanes together."""

    lane_of: Callable[[Any], Hashable] = staticmethod(topic_of)

    def _init(self, maxsize: int) -> None:
        self._queue = Lanes(type(self).lane_of)  # type: ignore[assignment]

    def _put(self, item: Any) -> None:
        self._queue.append(item)

    def _get(self) -> Any:
        return self._queue.popleft()


class BroadcastQueue(LaneQueue):
    """The embedded broker's queue of messages to deliver, in lanes by topic: the
    gateway shares its process, and a flood's messages queued there first in, first
    out held up every other account's (benchmarks/fairness.py)."""

    lane_of = staticmethod(broadcast_topic)
