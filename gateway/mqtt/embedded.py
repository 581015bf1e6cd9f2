"""An in-process MQTT 3.1.1 broker (amqtt) for the exchange's zero-setup default.

``async with EmbeddedBroker({"gateway": pw, "A": pw_a}) as broker:`` listens on
``broker.host:broker.port`` (127.0.0.1 and a free port by default; never a wildcard
address), over plain TCP only, until the block exits.

Access rules, enforced by the broker:

- Every client logs in with a user name and password; anonymous clients, unknown users
  and wrong passwords are refused (CONNACK "not authorised"). Account names are
  non-empty and contain none of ``/ + #``. Two names are the exchange's system users and
  must not be given to a trader (:func:`check_account_name` says why):
  ``gateway`` (:data:`GATEWAY_USER`, the engine's connection) and ``operator``
  (:data:`OPERATOR_USER`, the operator console).
- ``gateway`` may subscribe to ``cx/v1/orders/+`` and ``cx/v1/ops/commands``, and
  publish to ``cx/v1/exec/+``, ``cx/v1/md/#``, ``cx/v1/ops/reports`` and
  ``cx/v1/status`` (whether it serves).
- ``operator`` may publish only to ``cx/v1/ops/commands``, and subscribe to (and
  receive) only ``cx/v1/ops/reports``, ``cx/v1/md/#`` and ``cx/v1/status``: it places
  no orders.
- Any other user ``A`` may publish only to ``cx/v1/orders/A``, and subscribe to (and
  receive) only ``cx/v1/exec/A``, ``cx/v1/md/#`` and ``cx/v1/status``: nothing under
  ``cx/v1/ops/``.

A subscription's filter must lie wholly inside the user's rules: every topic it could
match must be allowed (``cx/v1/md/+/book`` is, ``cx/v1/exec/+`` and ``#`` are not).
Refused subscriptions get SUBACK failure (0x80); refused publishes are dropped silently
(MQTT 3.1.1 has no way to reject a publish). A connection is refused if its will message
names a topic the user may not publish to. Messages are retained only on ``cx/v1/md/...``
and ``cx/v1/status`` (public to every user): amqtt sends retained messages to a
connecting client without checking its rules, so a retained private message could leak.

Client identifiers, as mosquitto's ``use_username_as_clientid``: the broker checks the
login *before* the client identifier is looked at, then replaces the identifier with the
user name. So one account has one session, and a connection cannot reach another
account's session (amqtt 0.12 would drop, or hand over, the session of whatever client
identifier a CONNECT names, before authenticating it); a second connection of the same
account takes the session over and the first is disconnected. A refused login touches no
session at all.

Packet size: a packet over ``max_packet_size`` bytes (1 MiB, mosquitto's
``max_packet_size`` in ``carbonx broker-config``; the whole packet, fixed header
included) gets its connection closed as soon as its fixed header has been read, before
its body is: a client cannot make the broker buffer a 100 MiB publish.

Publishing rate: what one account (any user but ``gateway``: the operator, which sends
few messages, too) may publish is held to its
``limits`` (:class:`AccountLimits`: messages and bytes a second, and bursts; by default
a quarter of mosquitto's in ``carbonx broker-config``, as this broker shares the
exchange's process), by back-pressure: past its
budget, the broker waits before it reads the account's next packet, so a flood stays in
the flooder's own TCP connection (its publishes are acknowledged more slowly) instead of
filling the one stream that carries every account's orders to the gateway. The budget is
the account's across its reconnections.

amqtt patch points, all in ``_Broker`` (a subclass; nothing of amqtt's is modified):
``stream_connected`` wraps the connection's reader in :class:`_BoundedReader`,
``_handle_client_session`` gives it the account's :class:`_Throttle`, and
``_initialize_client_session`` is written here to amqtt 0.12's contract for it, so that
the identifier rule acts between reading the CONNECT and finding the session.
``tests/test_embedded_broker.py`` pins the source of the method it replaces, so an amqtt
upgrade that changes it fails there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from amqtt.adapters import (ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter)
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import format_client_message, gen_client_id

from gateway.mqtt.brokerconfig import (EMBEDDED_LIMITS, MAX_PACKET_SIZE, MAX_QUEUED_MESSAGES,
                                       AccountLimits)
from gateway.protocol import (GATEWAY, GATEWAY_STATUS, OPERATOR, OPS_COMMANDS, OPS_REPORTS,
                              account_name_problem, is_topic_level)
from gateway.mqtt.lanes import BroadcastQueue

__all__ = [
    "GATEWAY_USER", "OPERATOR_USER", "MAX_PACKET_SIZE", "EmbeddedBroker", "allowed",
    "check_account_name", "valid_account_name"
]

log = logging.getLogger("carbonx.broker")

GATEWAY_USER = GATEWAY  # the engine's connection
OPERATOR_USER = OPERATOR  # the operator console

_ROOT = "cx/v1"
_SYSTEM_RULES = {
    GATEWAY_USER: {
        "publish": (f"{_ROOT}/exec/+", f"{_ROOT}/md/#", OPS_REPORTS, GATEWAY_STATUS),
        "subscribe": (f"{_ROOT}/orders/+", OPS_COMMANDS)
    },
    OPERATOR_USER: {
        "publish": (OPS_COMMANDS, ),
        "subscribe": (OPS_REPORTS, f"{_ROOT}/md/#", GATEWAY_STATUS)
    }
}
_RETAINABLE = (f"{_ROOT}/md/#", GATEWAY_STATUS)  # public to every user
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_NOISY_LOGGERS = ("amqtt", "transitions")
BROADCAST_BATCH = 1000  # messages the broker delivers in one turn of its loop, at most


def check_account_name(name: str) -> str:
    """Return *name* if it may be a trader's account, else raise ``ValueError`` saying why:
    it is empty, has one of ``/ + #``, or is a system user's (``gateway``, ``operator``)."""
    problem = account_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def valid_account_name(name: str) -> bool:
    """Whether *name* may be a trader's account: non-empty, none of ``/ + #``, and neither
    ``gateway`` nor ``operator``."""
    return account_name_problem(name) is None


def _rules(user: str, action: str) -> tuple[str, ...]:
    system = _SYSTEM_RULES.get(user)
    if system is not None:
        return system[action]
    if action == "publish":
        return (f"{_ROOT}/orders/{user}", )
    return (f"{_ROOT}/exec/{user}", f"{_ROOT}/md/#", GATEWAY_STATUS)


def _well_formed(levels: list[str]) -> bool:
    last = len(levels) - 1
    return all(
        (level != "#" or i == last) and (level in ("+", "#") or not ({"+", "#"} & set(level)))
        for i, level in enumerate(levels))


def _within(inner: list[str], outer: list[str]) -> bool:
    """Whether every topic that filter *inner* matches is matched by filter *outer*."""
    for i, level in enumerate(outer):
        if level == "#":
            return len(inner) >= i  # `a/#` also matches `a` itself
        if i >= len(inner) or inner[i] == "#" or (level != "+" and inner[i] != level):
            return False
    return len(inner) == len(outer)


def allowed(user: str, topic: str, action: str) -> bool:
    """Whether *user* may ``"publish"`` to *topic* or ``"subscribe"`` to filter *topic*.

    >>> allowed("A", "cx/v1/orders/A", "publish"), allowed("A", "cx/v1/orders/B", "publish")
    (True, False)
    >>> allowed("A", "cx/v1/md/+/book", "subscribe"), allowed("A", "cx/v1/exec/+", "subscribe")
    (True, False)
    """
    if action not in ("publish", "subscribe") or not is_topic_level(user) or not topic:
        return False
    levels = topic.split("/")
    if not _well_formed(levels) or (action == "publish" and {"+", "#"} & set(levels)):
        return False
    return any(_within(levels, rule.split("/")) for rule in _rules(user, action))


class _Accounts:
    """User names and keyed hashes of their passwords (no plain passwords are kept)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._hashes: dict[str, bytes] = {}

    def _hash(self, password: str) -> bytes:
        return hmac.digest(self._key, password.encode(), hashlib.sha256)

    def set(self, name: str, password: str) -> None:
        if not is_topic_level(name):
            raise ValueError(f"invalid account name {name!r}: empty, or contains / + or #")
        if not password:
            raise ValueError(f"account {name!r} needs a non-empty password")
        self._hashes[name] = self._hash(password)

    def check(self, name: str | None, password: str | None) -> bool:
        expected = self._hashes.get(name or "")
        return expected is not None and hmac.compare_digest(expected, self._hash(password or ""))

    def admits(self, session: Session) -> bool:
        """Whether a CONNECT may log in: a known user, its password, a lawful will."""
        user = session.username or ""
        if not self.check(user, session.password):
            return False
        return not session.will_flag or allowed(user, session.will_topic or "", "publish")


class PasswordAuthPlugin(BaseAuthPlugin):
    """amqtt plugin: accept only known users with the right password and a lawful will.

    ``_Broker`` has checked the same before the session was looked up (and set the client
    identifier to the user name); this is amqtt's own hook, checked again.
    """

    @dataclass
    class Config:
        accounts: _Accounts | None = None

    async def authenticate(self, *, session: Session) -> bool:
        accounts: _Accounts | None = self.config.accounts
        ok = (accounts is not None and accounts.admits(session)
              and session.client_id == session.username)
        session.password = None  # amqtt would otherwise keep it for the whole session
        return ok


class TopicRulesPlugin(BaseTopicPlugin):
    """amqtt plugin: apply :func:`allowed` to every publish, subscribe and delivery."""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or not session.username or not topic or action is None:
            return False
        # A delivered topic is checked as a (wildcard-free) subscription filter.
        return allowed(session.username, topic,
                       "publish" if action == Action.PUBLISH else "subscribe")


class _PacketSizeGuard:
    """Follows the MQTT framing of the bytes a connection's reader hands to amqtt, and
    tells, as a fixed header completes, whether its packet is over the limit, and as a
    PUBLISH's topic completes, whether amqtt would lose its place in the stream on it.

    amqtt reads a packet's fixed header a byte at a time, then its body; every byte it
    reads passes through :meth:`feed` in order, so the guard knows where each packet
    starts without parsing more than the fixed header and a PUBLISH's topic. amqtt drops
    a PUBLISH whose topic holds a wildcard as soon as it has read the topic and goes on
    reading its payload as packets of their own, which neither the size limit nor the
    account's rate would see: such a packet, and one whose topic runs past its end,
    closes the connection (MQTT 3.1.1 4.8: a malformed packet closes it).
    """

    __slots__ = ("_body", "_header", "_length", "_publish", "_shift", "_topic", "_topic_length",
                 "limit", "published", "published_bytes")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.published = 0  # PUBLISH packets whose fixed header has been read ...
        self.published_bytes = 0  # ... and their sizes (the caller resets both)
        self._publish = False
        self.restart()

    def restart(self) -> None:
        """Expect a packet's first byte (amqtt starts over after a read timeout)."""
        self._header = 0  # fixed-header bytes read of the current packet
        self._length = 0  # its remaining length, so far
        self._shift = 0
        self._body = 0  # body bytes still to come
        self._topic: bytearray | None = None  # a PUBLISH's topic length and topic, so far
        self._topic_length = -1  # the topic's length once its two bytes are in

    def feed(self, data: bytes) -> str | None:
        """Account for *data*; return why the connection must close (a packet too large
        or malformed, as soon as its fixed header ends; a PUBLISH whose topic is not a
        topic name, as soon as its topic ends), else None."""
        i, n = 0, len(data)
        while i < n:
            if self._body:
                topic = self._topic
                if topic is None:
                    step = min(self._body, n - i)
                    self._body -= step
                    i += step
                    continue
                need = (2 if self._topic_length < 0 else self._topic_length + 2) - len(topic)
                step = min(need, self._body, n - i)
                topic += data[i:i + step]
                self._body -= step
                i += step
                if step < need:
                    if not self._body:  # the packet ended inside its topic
                        return "a PUBLISH whose topic runs past its end"
                    continue
                if self._topic_length < 0:
                    self._topic_length = int.from_bytes(topic, "big")
                    if self._topic_length > self._body:
                        return "a PUBLISH whose topic runs past its end"
                    if self._topic_length:
                        continue
                if b"+" in topic[2:] or b"#" in topic[2:]:
                    return "a PUBLISH to a topic filter (+ or #), not a topic name"
                self._topic, self._topic_length = None, -1
                continue
            byte = data[i]
            i += 1
            self._header += 1
            if self._header == 1:  # packet type and flags
                self._length = self._shift = 0
                self._publish = byte >> 4 == 3
                continue
            self._length += (byte & 0x7F) << self._shift
            self._shift += 7
            if byte & 0x80:  # the remaining length goes on
                if self._header >= 5:  # at most four length bytes
                    return "malformed packet length"
                continue
            size = self._header + self._length
            self._header = 0
            if size > self.limit:
                return f"a packet of {size} bytes is over the limit of {self.limit}"
            if self._publish:
                self.published += 1
                self.published_bytes += size
                if self._length:
                    self._topic, self._topic_length = bytearray(), -1
                else:
                    return "a PUBLISH whose topic runs past its end"
            self._body = self._length
        return None


class _Throttle:
    """One account's publishing budget: token buckets of messages and bytes. A charge
    past the budget leaves it in debt and returns the seconds to wait until the debt is
    paid, so however the account sends, it is held to the rates."""

    __slots__ = ("byte_burst", "byte_rate", "bytes", "burst", "held", "messages", "rate", "stamp")

    def __init__(self, rate: float, burst: float, byte_rate: float, byte_burst: float,
                 now: float) -> None:
        self.rate, self.burst = rate, burst
        self.byte_rate, self.byte_burst = byte_rate, byte_burst
        self.messages, self.bytes = burst, byte_burst
        self.stamp = now
        self.held = False  # whether the last charge had to wait (for the log)

    def charge(self, messages: int, nbytes: int, now: float) -> float:
        elapsed = max(now - self.stamp, 0.0)
        self.stamp = now
        self.messages = min(self.burst, self.messages + elapsed * self.rate) - messages
        self.bytes = min(self.byte_burst, self.bytes + elapsed * self.byte_rate) - nbytes
        return max(0.0, -self.messages / self.rate, -self.bytes / self.byte_rate)


class _BoundedReader(StreamReaderAdapter):
    """amqtt's TCP reader, closing the connection at a packet over the size limit before
    its body is read (amqtt itself would read any size the header announces), and, once
    the account is known, holding its publishes to its :class:`_Throttle`: past the
    budget it waits before handing amqtt the rest of the packet."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limit: int) -> None:
        super().__init__(reader)
        self._writer = writer
        self._guard = _PacketSizeGuard(limit)
        self._refused = False
        self.throttle: _Throttle | None = None
        self.account = ""

    async def read(self, n: int = -1) -> bytes:
        if self._refused:
            return b""
        try:
            data = await super().read(n)
        except asyncio.CancelledError:
            self._guard.restart()
            raise
        guard = self._guard
        why = guard.feed(data)
        if why is None:
            if guard.published and self.throttle is not None:
                await self._hold(guard)
            return data
        self._refused = True
        log.warning("closed the connection from %s: %s",
                    self._writer.get_extra_info("peername"), why)
        self._writer.transport.abort()
        return b""  # amqtt takes it for the end of the stream

    async def _hold(self, guard: _PacketSizeGuard) -> None:
        throttle = self.throttle
        assert throttle is not None
        loop = asyncio.get_running_loop()
        wait = throttle.charge(guard.published, guard.published_bytes, loop.time())
        guard.published = guard.published_bytes = 0
        if wait <= 0.0:
            throttle.held = False
            return
        if not throttle.held:
            throttle.held = True
            log.warning(
                "holding back %s: over its publishing rate of %d messages or %d bytes a second",
                self.account, throttle.rate, throttle.byte_rate)
        await asyncio.sleep(wait)


class _Subscribers(list):
    """One topic filter's subscribers, ``(session, qos)``, walked over a copy: amqtt's
    delivery loop awaits each subscriber's topic check as it walks them, and a clean
    session that went away meanwhile took itself out of the list, so the subscriber after
    it was skipped without a word."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.copy())  # a plain list: what the list holds now


class _Subscriptions(dict):
    """Topic filter -> its ``_Subscribers``, walked over a copy (keys and items): a client
    subscribing to a new filter while amqtt's delivery loop awaited a subscriber's check
    changed the dict under the loop, whose ``RuntimeError`` lost the message, already
    acknowledged to its sender, for every subscriber after that point."""

    def __setitem__(self, topic_filter: str, subscribers: list) -> None:
        if type(subscribers) is not _Subscribers:
            subscribers = _Subscribers(subscribers)
        super().__setitem__(topic_filter, subscribers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(super().keys()))

    def items(self):  # type: ignore[no-untyped-def,override]
        return list(super().items())


class _Broker(Broker):
    """amqtt's broker with the packet-size limit, the login checked before the session is
    looked up, client identifier = user name, and only market data retained."""

    def __init__(self, config: BrokerConfig, *, accounts: _Accounts,
                 max_packet_size: int = MAX_PACKET_SIZE,
                 limits: AccountLimits = EMBEDDED_LIMITS,
                 max_queued: int = MAX_QUEUED_MESSAGES) -> None:
        super().__init__(config)
        self._subscriptions = _Subscriptions()  # walked over copies: see the class
        self._broadcast_queue = BroadcastQueue()  # each topic in its own lane
        self._accounts = accounts
        self._max_packet_size = max_packet_size
        self._refused_ids: set[str] = set()
        self._limits = limits
        self._throttles: dict[str, _Throttle] = {}  # account -> its budget
        self._max_queued = max_queued
        self._overflowing: set[str] = set()  # offline sessions whose queue is full, said once

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        await self.external_connected(_BoundedReader(reader, writer, self._max_packet_size),
                                      StreamWriterAdapter(writer), listener_name)

    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        if topic_name is not None and any(_within(topic_name.split("/"), public.split("/"))
                                          for public in _RETAINABLE):
            await super().retain_message(source_session, topic_name, data, qos)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        """amqtt, at every connection, replays the retained messages of every topic filter
        any client on the broker holds, to the client connecting: an account that had
        subscribed only to its own reports got the market's status messages because
        another client watched them. Only the session's own subscriptions get them."""
        holders = self._subscriptions.get(subscription[0], ())
        if any(held.client_id == session.client_id for held, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _run_broadcast(self, running_tasks: deque) -> None:
        # amqtt's loop makes two tasks and waits a loop turn for each message it
        # delivers, so in a busy process (the gateway shares it) delivery fell behind at
        # a few hundred messages a second and every account's orders queued behind a
        # flood (benchmarks/fairness.py): deliver everything waiting in one turn.
        await super()._run_broadcast(running_tasks)
        queue = self._broadcast_queue
        for _ in range(BROADCAST_BATCH):
            if queue.empty():
                break
            await super()._run_broadcast(running_tasks)  # get() has one: no wait

    async def _retain_broadcast_message(self, broadcast: dict, qos: int,
                                        target_session: Session) -> None:
        """Keep a message for an offline persistent session, as amqtt does, up to
        ``max_queued`` of them: amqtt's queue has no bound, so an account that subscribed
        to all market data and went away grew the exchange's memory for as long as it
        stayed away. Past the bound new messages are dropped, as mosquitto's
        ``max_queued_messages`` (the same number) drops them."""
        client_id = target_session.client_id or ""
        if target_session.retained_messages.qsize() >= self._max_queued:
            if client_id not in self._overflowing:
                self._overflowing.add(client_id)
                log.warning("%s is away with %d messages queued: newer ones are dropped until "
                            "it reconnects", client_id, self._max_queued)
            return
        await super()._retain_broadcast_message(broadcast, qos, target_session)

    async def _admit(self, session: Session) -> None:
        """carbonx: the identifier rule, applied before amqtt looks the session up."""
        if not self._accounts.admits(session):
            # A fresh identifier that names no session: a refused CONNECT reaches nobody's.
            # amqtt's auth plugin refuses it again (CONNACK 5) and it is forgotten after.
            session.client_id = f"refused/{secrets.token_hex(8)}"
            session.clean_session = True
            self._refused_ids.add(session.client_id)
            return
        session.client_id = session.username
        self._overflowing.discard(session.client_id)  # back: its queue drains
        old_session, old_handler = self._sessions.get(session.client_id, (None, None))
        if (old_session is not None and old_handler is not None
                and old_session.transitions.is_connected()):
            # amqtt would drop (clean) or resume (persistent) the old connection's session
            # but leave it connected, its commands acting and their answers going to the
            # new one; the account's new connection takes over, as in mosquitto: close
            # the old one first.
            await old_handler.handle_connection_closed()
            await old_handler.stop()

    async def _handle_client_session(self, reader: ReaderAdapter, writer: WriterAdapter,
                                     client_session: Session, *args, **kwargs) -> None:
        user = client_session.username
        if (isinstance(reader, _BoundedReader) and user and user != GATEWAY_USER
                and client_session.client_id == user):  # an admitted account
            throttle = self._throttles.get(user)
            if throttle is None:
                limits = self._limits
                throttle = self._throttles[user] = _Throttle(limits.message_rate,
                                                             limits.message_burst, limits.byte_rate,
                                                             limits.byte_burst,
                                                             asyncio.get_running_loop().time())
            reader.throttle, reader.account = throttle, user
        try:
            await super()._handle_client_session(reader, writer, client_session, *args, **kwargs)
        finally:
            # amqtt keeps the session of a refused login for good: forget it.
            if client_session.client_id in self._refused_ids:
                self._refused_ids.discard(client_session.client_id)
                self._sessions.pop(client_session.client_id, None)

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter,
                                         remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT, apply the account's identifier rule, then resume or start the
        session; return the protocol handler and the session.

        amqtt's own method reads the CONNECT and looks the session up by identifier in one
        step; the identifier rule (``_admit``) must act between the two, so this method
        does the whole job, to amqtt 0.12's contract for it (a test pins amqtt's source).
        """
        peer = format_client_message(address=remote_address, port=remote_port)
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except NoDataError as exc:
            self.logger.error("%s closed before sending anything: %s", peer, exc)
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            self.logger.warning("%s sent an invalid CONNECT", peer)
            await writer.close()
            raise MQTTError(exc) from exc
        except AMQTTError as exc:
            self.logger.warning("%s: the first packet is not a CONNECT: %s", peer, exc)
            raise AMQTTError(exc) from exc
        await self._admit(session)
        session = await self._resume_or_start(session)
        grace = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(grace, int):
            session.keep_alive += grace
        return handler, session

    # What a resumed session takes from the connection that resumes it.
    _RENEWED = ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username",
                "password")

    async def _resume_or_start(self, session: Session) -> Session:
        """A clean session replaces whatever its identifier had; a persistent one resumes
        the stored session (``parent`` 1), renewed with the new connection's will,
        keep-alive and credentials, or starts afresh (``parent`` 0)."""
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
            return session
        stored = self._sessions.get(session.client_id)
        if stored is None:
            session.parent = 0
            return session
        resumed = stored[0]
        for name in self._RENEWED:
            setattr(resumed, name, getattr(session, name))
        resumed.parent = 1
        return resumed


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _check_bindable(host: str, port: int) -> None:
    """Raise ``OSError`` (e.g. EADDRINUSE) unless *host*:*port* can be listened on now,
    with the same ``SO_REUSEADDR`` as asyncio's server, which amqtt starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


class _StartFailed(logging.Filter):
    """Drops amqtt's "Broker startup failed" record (a traceback): the cause is raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


class _FailedDeliveries(logging.Filter):
    """amqtt logs each delivery a subscriber never acknowledged (a QoS 1 message whose
    PUBACK does not come in time) as an error with a traceback: a client that never
    acknowledges wrote a dozen lines a report into the exchange's log. Such records
    become one warning line, at most one every *every* seconds, counting the others."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._last = -every
        self._quiet = 0  # records held back since the last line

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if not isinstance(failure, TimeoutError):
            return True
        now = self._clock()
        if now - self._last < self.every:
            self._quiet += 1
            return False
        more = f" ({self._quiet} more since the last such line)" if self._quiet else ""
        self._last, self._quiet = now, 0
        record.msg, record.args = "a subscriber did not acknowledge a delivery in time: %s%s", (
            failure, more)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


@contextlib.contextmanager
def _quiet_start_failure() -> Iterator[None]:
    logger, quiet = logging.getLogger("amqtt.broker"), _StartFailed()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class EmbeddedBroker:
    """An amqtt broker on *host*:*port* (0: a free port) for the given users (name to password).

    Entering it raises ``OSError`` (``errno.EADDRINUSE`` for a port in use) when it cannot
    listen, and nothing is logged: the caller says what went wrong.
    """

    def __init__(self, credentials: dict[str, str], port: int = 0, host: str = "127.0.0.1", *,
                 max_packet_size: int = MAX_PACKET_SIZE,
                 limits: AccountLimits = EMBEDDED_LIMITS,
                 max_queued: int = MAX_QUEUED_MESSAGES) -> None:
        if host in _WILDCARD_HOSTS:
            raise ValueError(f"refusing to listen on the wildcard address {host!r}")
        if max_packet_size < 64:
            raise ValueError(f"max_packet_size {max_packet_size} is too small to log in")
        self.host = host
        self.port = port
        self.max_packet_size = max_packet_size
        self.limits = limits
        self.max_queued = max_queued  # messages kept for an account's offline session
        self._deliveries = _FailedDeliveries()  # amqtt's log of them, while it runs
        self._accounts = _Accounts()
        for name, password in credentials.items():
            self._accounts.set(name, password)
        self._broker: _Broker | None = None

    def add_account(self, name: str, password: str) -> None:
        """Add user *name*, or change its password; takes effect at its next login."""
        self._accounts.set(name, password)

    async def __aenter__(self) -> Self:
        for name in _NOISY_LOGGERS:
            noisy = logging.getLogger(name)
            if noisy.level == logging.NOTSET:
                noisy.setLevel(logging.WARNING)
        if self.port == 0:
            self.port = _free_port(self.host)
        else:
            _check_bindable(self.host, self.port)
        config = BrokerConfig(
            listeners={
                "default": ListenerConfig(type=ListenerType.TCP, bind=f"{self.host}:{self.port}")
            }, plugins={
                f"{__name__}.PasswordAuthPlugin": {
                    "accounts": self._accounts
                },
                f"{__name__}.TopicRulesPlugin": {}
            })
        broker = _Broker(config, accounts=self._accounts, max_packet_size=self.max_packet_size,
                         limits=self.limits, max_queued=self.max_queued)
        try:
            with _quiet_start_failure():
                await broker.start()
        except BrokerError as exc:
            # Taken between the check and the start: amqtt wraps the OSError.
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise OSError(cause.errno or errno.EADDRINUSE, cause.strerror
                              or str(cause)) from None
            raise
        logging.getLogger("amqtt.broker").addFilter(self._deliveries)
        self._broker = broker
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        broker, self._broker = self._broker, None
        try:
            if broker is not None:
                await broker.shutdown()
        finally:
            logging.getLogger("amqtt.broker").removeFilter(self._deliveries)
