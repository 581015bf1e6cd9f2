"""An in-process MQTT 3.1.1 broker (amqtt) for the exchange's zero-setup default.

``async with EmbeddedBroker({"gateway": pw, "A": pw_a}) as broker:`` listens on
``broker.host:broker.port`` (127.0.0.1 and a free port by default; never a wildcard
address), over plain TCP only, until the block exits.

Access rules, enforced by the broker:

- Every client logs in with a user name and password; anonymous clients, unknown users
  and wrong passwords are refused (CONNACK "not authorised"). Account names are
  non-empty and contain none of ``/ + #``; ``gateway`` (:data:`GATEWAY_USER`) is the
  gateway's own account and must not be given to a trader.
- ``gateway`` may subscribe to ``cx/v1/orders/+`` and publish to ``cx/v1/exec/+`` and
  ``cx/v1/md/#``.
- Any other user ``A`` may publish only to ``cx/v1/orders/A``, and subscribe to (and
  receive) only ``cx/v1/exec/A`` and ``cx/v1/md/#``.

A subscription's filter must lie wholly inside the user's rules: every topic it could
match must be allowed (``cx/v1/md/+/book`` is, ``cx/v1/exec/+`` and ``#`` are not).
Refused subscriptions get SUBACK failure (0x80); refused publishes are dropped silently
(MQTT 3.1.1 has no way to reject a publish). A connection is refused if its will message
names a topic the user may not publish to, or if its client identifier is that of another
user's persistent (``clean_session=False``) session. Messages are retained only on
``cx/v1/md/...`` (public to every user): amqtt sends retained messages to a connecting
client without checking its rules, so a retained private message could leak.

Clients should use unguessable client identifiers (aiomqtt's default): amqtt 0.12 drops
the subscriptions of a connected client as soon as another CONNECT with the same client
identifier arrives, before that CONNECT is authenticated.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext, BrokerConfig, ListenerConfig, ListenerType
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

__all__ = ["GATEWAY_USER", "EmbeddedBroker", "allowed", "valid_account_name"]

GATEWAY_USER = "gateway"

_ROOT = "cx/v1"
_GATEWAY_RULES = {
    "publish": (f"{_ROOT}/exec/+", f"{_ROOT}/md/#"),
    "subscribe": (f"{_ROOT}/orders/+",),
}
_RETAINABLE = f"{_ROOT}/md/#"
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_NOISY_LOGGERS = ("amqtt", "transitions")


def _valid_user(name: str) -> bool:
    return bool(name) and not any(c in name for c in "/+#")


def valid_account_name(name: str) -> bool:
    """Whether *name* may be a trader's account: non-empty, none of ``/ + #``, not ``gateway``."""
    return name != GATEWAY_USER and _valid_user(name)


def _rules(user: str, action: str) -> tuple[str, ...]:
    if user == GATEWAY_USER:
        return _GATEWAY_RULES[action]
    if action == "publish":
        return (f"{_ROOT}/orders/{user}",)
    return (f"{_ROOT}/exec/{user}", f"{_ROOT}/md/#")


def _well_formed(levels: list[str]) -> bool:
    last = len(levels) - 1
    return all((level != "#" or i == last) and (level in ("+", "#") or not ({"+", "#"} & set(level)))
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
    if action not in ("publish", "subscribe") or not _valid_user(user) or not topic:
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
        if not _valid_user(name):
            raise ValueError(f"invalid account name {name!r}: empty, or contains / + or #")
        if not password:
            raise ValueError(f"account {name!r} needs a non-empty password")
        self._hashes[name] = self._hash(password)

    def check(self, name: str | None, password: str | None) -> bool:
        expected = self._hashes.get(name or "")
        return expected is not None and hmac.compare_digest(expected, self._hash(password or ""))


class PasswordAuthPlugin(BaseAuthPlugin):
    """amqtt plugin: accept only known users with the right password and a lawful will.

    A persistent session's client identifier belongs to the user who first logged in with
    it: amqtt would hand the session, and the messages queued for it, to any user.
    """

    @dataclass
    class Config:
        accounts: _Accounts | None = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._owners: dict[str, str] = {}

    async def authenticate(self, *, session: Session) -> bool:
        accounts: _Accounts | None = self.config.accounts
        user = session.username or ""
        ok = accounts is not None and accounts.check(user, session.password)
        session.password = None  # amqtt would otherwise keep it for the whole session
        if session.will_flag:
            ok = ok and allowed(user, session.will_topic or "", "publish")
        ok = ok and self._owners.get(session.client_id, user) == user
        if ok and not session.clean_session:
            self._owners[session.client_id] = user
        return ok


class TopicRulesPlugin(BaseTopicPlugin):
    """amqtt plugin: apply :func:`allowed` to every publish, subscribe and delivery."""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or not session.username or not topic or action is None:
            return False
        # A delivered topic is checked as a (wildcard-free) subscription filter.
        return allowed(session.username, topic, "publish" if action == Action.PUBLISH else "subscribe")


class _Broker(Broker):
    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        if topic_name is not None and _within(topic_name.split("/"), _RETAINABLE.split("/")):
            await super().retain_message(source_session, topic_name, data, qos)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """An amqtt broker on *host*:*port* (0: a free port) for the given users (name to password)."""

    def __init__(self, credentials: dict[str, str], port: int = 0, host: str = "127.0.0.1") -> None:
        if host in _WILDCARD_HOSTS:
            raise ValueError(f"refusing to listen on the wildcard address {host!r}")
        self.host = host
        self.port = port
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
        config = BrokerConfig(
            listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=f"{self.host}:{self.port}")},
            plugins={
                f"{__name__}.PasswordAuthPlugin": {"accounts": self._accounts},
                f"{__name__}.TopicRulesPlugin": {},
            },
        )
        broker = _Broker(config)
        await broker.start()
        self._broker = broker
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
