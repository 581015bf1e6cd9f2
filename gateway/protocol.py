"""The protocol both sides of the MQTT link share: topic names, message limits, the
gateway's own rejection reasons, and publishers that keep call order.

The exchange's service and the bot client both import this module; it imports nothing
of the engine, so a bot loads none of it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import unicodedata
from collections import deque

__all__ = [
    "OrderedSender", "TopicSender", "orders_topic", "exec_topic", "trades_topic", "book_topic",
    "account_of", "is_msgpack", "daily_topic", "status_topic", "blocks_topic", "auctions_topic",
    "ORDERS_FILTER", "OPS_COMMANDS", "GATEWAY_STATUS", "GATEWAY_UP", "GATEWAY_STOPPED",
    "GATEWAY_FAILED", "GATEWAY_LOST", "gateway_status",
    "OPS_REPORTS", "OPERATOR", "GATEWAY", "SYSTEM_USERS", "SOCKET_OPTIONS", "PENDING_CALLS_WARNING",
    "MAX_PAYLOAD", "MAX_COMMANDS", "MAX_TEXT", "MALFORMED", "BAD_COMMAND", "NOT_PERMITTED",
    "WRONG_ACCOUNT", "TOO_LARGE", "TOO_MANY_COMMANDS", "RATE_LIMITED", "OVERLOADED",
    "account_name_problem", "is_topic_level"
]

ORDERS_FILTER = "cx/v1/orders/+"
# The operator's console: only the operator writes commands and reads their answers.
OPS_COMMANDS = "cx/v1/ops/commands"
OPS_REPORTS = "cx/v1/ops/reports"
# Whether the exchange's gateway serves, retained, for every user to read: "up" as it
# connects to the broker, "down" with reason "stopped" as it stops, "failed" as it ends
# on an error, and "down" with reason "lost" from the broker (its will) when its
# connection ends any other way.
GATEWAY_STATUS = "cx/v1/status"
GATEWAY_UP = b'{"status":"up"}'
GATEWAY_STOPPED = b'{"status":"down","reason":"stopped"}'
GATEWAY_FAILED = b'{"status":"down","reason":"failed"}'
GATEWAY_LOST = b'{"status":"down","reason":"lost"}'
# The broker's system users besides the accounts: no account may take these names.
GATEWAY = "gateway"
OPERATOR = "operator"
SYSTEM_USERS = frozenset({GATEWAY, OPERATOR})
_RESERVED_FOR = {GATEWAY: "the gateway's own MQTT user",
                 OPERATOR: "the operator console's MQTT user"}
# paho leaves Nagle's algorithm on: small reports would wait for delayed ACKs (~40 ms).
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), )
PENDING_CALLS_WARNING = 1 << 20  # aiomqtt warns past this many publishes in flight
_ORDERS_PREFIX = "cx/v1/orders/"

MAX_PAYLOAD = 256 * 1024  # bytes in one message
MAX_COMMANDS = 1000  # commands in one message
MAX_TEXT = 64  # characters in an id, an account, an instrument or a price
# Reasons for messages the gateway turns away before they reach the engine.
MALFORMED = "malformed"  # not JSON / msgpack, or not objects
BAD_COMMAND = "bad_command"  # a field of the wrong type, value or name
NOT_PERMITTED = "not_permitted"  # an operator action sent by a bot
WRONG_ACCOUNT = "wrong_account"  # the command names another account
TOO_LARGE = "too_large"  # the message exceeds MAX_PAYLOAD
TOO_MANY_COMMANDS = "too_many_commands"  # a list longer than MAX_COMMANDS
RATE_LIMITED = "rate_limited"  # the account sent faster than its limit
OVERLOADED = "overloaded"  # the account's intake is full: resend later


class _Draining:
    """What a sender with a ``waiting`` count shares: waiting until it is empty."""

    @property
    def waiting(self) -> int:
        """Messages queued or in flight."""
        raise NotImplementedError

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until everything queued has been published."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.waiting and loop.time() < deadline:
            await asyncio.sleep(0.005)


class OrderedSender(_Draining):
    """Publishes in call order with at most *window* publishes awaiting the broker.

    Profiled (benchmarks/gateway.py): aiomqtt counts its pending calls on every publish and paho
    scans its in-flight table on every acknowledgement, so thousands of outstanding publishes made
    each one cost O(n); a small window keeps both short while messages queue here. Publish tasks
    start in creation order, so messages leave in call order.
    """

    def __init__(self, client, window: int = 64, log: logging.Logger | None = None) -> None:
        self._client = client
        self.window = window
        self._queue: deque = deque()
        self._active = 0
        self._log = log or logging.getLogger("carbonx.mqtt")
        self.failed = 0

    def send(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        self._queue.append((topic, payload, qos, retain) if retain else (topic, payload, qos))
        self._pump()

    def send_all(self, messages) -> None:
        self._queue.extend(messages)
        self._pump()

    @property
    def waiting(self) -> int:
        return len(self._queue) + self._active

    def _pump(self) -> None:
        queue = self._queue
        while self._active < self.window and queue:
            # (topic, payload, qos), or with a fourth item: retain
            message = queue.popleft()
            self._active += 1
            task = asyncio.ensure_future(
                self._client.publish(message[0], message[1], qos=message[2],
                                     retain=len(message) > 3 and message[3]))
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._active -= 1
        if not task.cancelled() and task.exception() is not None:
            self.failed += 1
            self._log.info("a publish failed: %s", task.exception())
        self._pump()


class TopicSender(_Draining):
    """Publishes each topic's messages in call order, with an ``OrderedSender`` window of
    its own per topic: a subscriber slow to take its messages (a broker such as amqtt
    acknowledges a publish only once it has delivered it) holds up its own topic only,
    never another account's reports. Order between topics is not kept (MQTT keeps none).
    """

    def __init__(self, client, window: int = 32, log: logging.Logger | None = None) -> None:
        self._client = client
        self._window = window
        self._log = log
        self._senders: dict[str, OrderedSender] = {}

    def send_all(self, messages) -> None:
        senders = self._senders
        for message in messages:  # (topic, payload, qos[, retain])
            topic = message[0]
            sender = senders.get(topic)
            if sender is None:
                sender = senders[topic] = OrderedSender(self._client, self._window, self._log)
            sender.send(*message)

    @property
    def waiting(self) -> int:
        return sum(sender.waiting for sender in self._senders.values())


def is_topic_level(name: str) -> bool:
    """Whether *name* can be one level of a topic, as a user's name is in its topics:
    not empty, and none of ``/ + #``."""
    return bool(name) and not any(c in name for c in "/+#")


def account_name_problem(name: str) -> str | None:
    """Why *name* cannot be a trader's account, or ``None``. The name is its MQTT user
    (in mosquitto's password file, ``user:hash``), a level of its topics, its web login
    (HTTP Basic's ``user:password``) and a segment of its pages' paths: so not empty, not
    a system user's, none of ``/ + # :``, no whitespace or control characters, and
    neither ``.`` nor ``..``.

    >>> account_name_problem("steel-01") is None
    True
    >>> account_name_problem("a/b")
    "invalid account name 'a/b': empty, or contains / + or #"
    >>> account_name_problem("x:y")
    "account name 'x:y' must not contain ':' (none of / + # : are allowed)"
    """
    if name in _RESERVED_FOR:
        return f"account name {name!r} is reserved for {_RESERVED_FOR[name]}"
    if not is_topic_level(name):
        return f"invalid account name {name!r}: empty, or contains / + or #"
    if name in (".", ".."):
        return f"account name {name!r} is a path of its own in the web portal's addresses"
    for char in name:
        if char == ":":
            return f"account name {name!r} must not contain ':' (none of / + # : are allowed)"
        if char.isspace():
            return f"account name {name!r} must not contain whitespace"
        if unicodedata.category(char).startswith("C"):
            return (f"account name {name!r} must not contain control characters "
                    f"(found U+{ord(char):04X})")
    return None


def orders_topic(account: str) -> str:
    return _ORDERS_PREFIX + account


def exec_topic(account: str) -> str:
    return "cx/v1/exec/" + account


def trades_topic(instrument: str) -> str:
    return f"cx/v1/md/{instrument}/trades"


def book_topic(instrument: str) -> str:
    return f"cx/v1/md/{instrument}/book"


def daily_topic(instrument: str) -> str:
    """Each end of day's statistics of *instrument* (open, high, low, close, volumes)."""
    return f"cx/v1/md/{instrument}/daily"


def status_topic(instrument: str) -> str:
    """Whether *instrument* trades or is halted (retained: a bot that subscribes late
    learns it at once)."""
    return f"cx/v1/md/{instrument}/status"


def blocks_topic(instrument: str) -> str:
    """Public block quotes of *instrument* as they open and end."""
    return f"cx/v1/md/{instrument}/blocks"


def auctions_topic(instrument: str) -> str:
    """The state of each auction of *instrument*: opened, bids counted, cleared."""
    return f"cx/v1/md/{instrument}/auctions"


def gateway_status(body: object) -> str | None:
    """``"up"`` or ``"down"`` from a decoded message on ``GATEWAY_STATUS``; ``None`` for
    anything else (an empty retained message clears it: the status is unknown).

    >>> gateway_status({"status": "down", "reason": "lost"}), gateway_status([1])
    ('down', None)
    """
    status = body.get("status") if isinstance(body, dict) else None
    return status if status in ("up", "down") else None


def account_of(topic: str) -> str | None:
    """The account of an orders topic, or ``None`` if *topic* is not one."""
    if topic.startswith(_ORDERS_PREFIX):
        account = topic[len(_ORDERS_PREFIX):]
        if account and "/" not in account and len(account) <= MAX_TEXT:
            return account
    return None


def is_msgpack(payload: bytes) -> bool:
    """JSON commands start with ``{`` or ``[`` (after optional whitespace); msgpack's
    maps and arrays never do."""
    first = payload.lstrip()[:1]
    return first not in (b"{", b"[")
