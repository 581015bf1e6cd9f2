"""The bot client: trade on a carbonx exchange over MQTT from asyncio.

>>> async def main():                                            # doctest: +SKIP
...     async with ExchangeClient("alice", "secret", port=1883) as ex:
...         accepted = await ex.place("CEA25", "buy", 100, "61.20")
...         async for report in ex.reports():
...             print(report)

Every command carries a ``command_id`` (made here unless given) and waits in a pending
table until the report that answers it arrives. When the broker goes away the client
reconnects, with backoff, and resends every command still unanswered, in order; the
gateway applies a command id once and answers a resend with the first answer (its
reports marked ``duplicate``), so an order is never lost and never doubled. ``reports()``
gives each answer once: a repeated answer to a command already answered here is passed
over. The gateway's ``overloaded`` and ``rate_limited`` say a command was not taken, not
what became of it: the command stays pending and is resent (``not_taken`` counts them),
and runs after what the gateway took meanwhile (await each answer where order matters).
On one connection a command still unanswered is sent again after ``resend_after`` (2 s),
then after twice as long each time, up to ``RESEND_MAX`` (30 s) between copies: a slow
gateway is not sent every waiting command again every 2 s. ``gateway`` says whether the
exchange's gateway serves (``"up"``, ``"down"``, or ``None`` before the broker has said,
and while the client is away from the broker): when it comes back up, or says ``up``
as it (re)connects, every command still unanswered is sent again at once, not after the
wait (a command sent while it was away reached nobody).
Order ids are the bot's own (made here unless given).

The exchange remembers the last 100,000 commands it ran (all accounts together) and each
account's own last 1,000: a resend after both is a new command to it (a new order is
then rejected ``duplicate_order_id``). One client per account: a second connection of
the same account takes over its session. ``ExchangeError`` says the exchange could not
be reached, or the login was refused, or a command was not answered in time (it stays
pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from gateway.protocol import (GATEWAY_STATUS, MAX_COMMANDS, MAX_PAYLOAD, PENDING_CALLS_WARNING,
                              SOCKET_OPTIONS, OrderedSender, exec_topic, gateway_status,
                              orders_topic)

__all__ = ["ExchangeClient", "ExchangeError"]

log = logging.getLogger("carbonx.client")


class _Inbox:
    """Messages received and not yet read, in order; bounded: past *limit* waiting, the
    newest are dropped (and counted by the caller)."""

    # Profiled (benchmarks.gateway, batched orders): asyncio.Queue.put_nowait per report
    # was about a seventh of a busy bot's time; a message's reports now go in at once.
    __slots__ = ("_items", "_limit", "_ready", "closed")

    def __init__(self, limit: int) -> None:
        self._items: deque = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, items: list) -> int:
        """Add *items* in order; return how many were dropped for want of room."""
        room = max(self._limit - len(self._items), 0)
        dropped = max(len(items) - room, 0)
        if dropped:
            items = items[:room]
        if items:
            self._items.extend(items)
            self._ready.set()
        return dropped

    async def get(self):
        """The oldest item, waiting for one if there is none; ``_CLOSED`` once the inbox is
        closed and empty."""
        while not self._items:
            if self.closed:
                return _CLOSED
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        """No more items come: a reader waiting, or to come, gets ``_CLOSED``."""
        self.closed = True
        self._ready.set()

    def take_all(self) -> list:
        """Every item waiting, oldest first, without waiting."""
        items = list(self._items)
        self._items.clear()
        return items


_CLOSED = object()  # what a closed inbox gives
# CONNACK codes of a refused login (MQTT 3.1.1: bad user name or password, not
# authorized; MQTT 5: the same two): retrying cannot help.
_LOGIN_REFUSED = frozenset({4, 5, 134, 135})
_ANSWERED_KEPT = 100_000  # command ids remembered as answered (the exchange's own window)
# The gateway's refusals that say a command was not taken (the account's intake full, or
# over its rate): it did nothing, and a copy sent later is taken as the command.
_NOT_TAKEN = frozenset({"overloaded", "rate_limited"})
RESEND_MAX = 30.0  # seconds: the longest wait between two copies of a command unanswered


class ExchangeError(Exception):
    """The client could not reach the exchange (or its login was refused), it is closed,
    or a command was not answered in time."""


class ExchangeClient:
    """One account's connection: place, amend and cancel orders; read reports and data.

    *market_data* lists instruments whose public trades and depth to receive
    (``"*"`` for all). With *msgpack*, commands and reports travel as msgpack.
    """

    def __init__(self, account: str, password: str, host: str = "127.0.0.1", port: int = 1883, *,
                 market_data: tuple[str, ...] | list[str] = (), msgpack: bool = False,
                 timeout: float = 10.0, retry_delay: float = 0.2, identifier: str | None = None,
                 queue_limit: int = 100_000, resend_after: float = 2.0) -> None:
        self.account = account
        self._password = password
        self.host, self.port = host, port
        self.timeout = timeout
        self._retry_delay = retry_delay
        self.resend_after = resend_after
        self._market_data = list(market_data)
        self._identifier = identifier or f"carbonx-{account}-{secrets.token_hex(4)}"
        self._encode = (msgspec.msgpack.Encoder() if msgpack else msgspec.json.Encoder()).encode
        self._json = msgspec.json.Decoder()
        self._packed = msgspec.msgpack.Decoder()
        self._session = secrets.token_hex(4)  # keeps this run's ids apart from earlier runs'
        self._counter = itertools.count(1)
        # command id -> [command, future, when last sent (loop time)]
        self._pending: dict[str, list] = {}
        self._reports = _Inbox(queue_limit)
        self._market = _Inbox(queue_limit)
        self._reports_limit = queue_limit
        self._mqtt = None
        self._sender: OrderedSender | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task | None = None
        self.connects = 0  # successful connections (reconnects = connects - 1)
        self.dropped_reports = 0  # reports dropped because nobody read them
        self.dropped_market_data = 0  # market data messages dropped so, apart
        # commands the gateway did not take (overloaded, rate_limited): resent, not answered
        self.not_taken = 0
        self.refused: str | None = None  # why the broker refused the login, if it did
        self.gateway: str | None = None  # "up" or "down": the exchange's gateway (cx/v1/status)
        # Command ids answered here, newest last (bounded): a repeated answer to one of
        # them (a resend's, marked duplicate) is not given to reports() again.
        self._answered: dict[str, None] = {}
        self._repeating = False  # the last message ended inside such a repeated answer

    # --- life ---------------------------------------------------------------------------
    async def __aenter__(self) -> ExchangeClient:
        self._runner = runner = asyncio.ensure_future(self._run())
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            # The login refused ends the runner at once: no reason to wait out the timeout.
            await asyncio.wait((connected, runner), timeout=self.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if not self._connected.is_set():
            await self.close()
            if self.refused is not None:
                raise ExchangeError(f"the broker at {self.host}:{self.port} refused the login "
                                    f"of {self.account!r}: {self.refused}")
            raise ExchangeError(f"could not connect to {self.host}:{self.port} as "
                                f"{self.account!r} within {self.timeout:g} s")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect: commands still unanswered are cancelled (their futures), and
        ``reports()`` and ``market_data()`` end once what came is read."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for _, future, *_ in self._pending.values():
            if not future.done():
                future.cancel()
        self._reports.close()
        self._market.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def unanswered(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        import aiomqtt

        delay = self._retry_delay
        while not self._closing:
            try:
                async with aiomqtt.Client(self.host, self.port, username=self.account,
                                          password=self._password, identifier=self._identifier,
                                          clean_session=False, max_inflight_messages=1000,
                                          keepalive=30, socket_options=SOCKET_OPTIONS) as mqtt:
                    mqtt.pending_calls_threshold = PENDING_CALLS_WARNING
                    await mqtt.subscribe(exec_topic(self.account), qos=1)
                    # QoS 0: a persistent session queues QoS 1 messages while the client
                    # is away, and a 'down' then 'up' queued so were heard after the
                    # connection's own resend, which sent everything waiting a second
                    # time. What it says now comes retained as it subscribes.
                    await mqtt.subscribe(GATEWAY_STATUS, qos=0)
                    for instrument in self._market_data:
                        await mqtt.subscribe(
                            f"cx/v1/md/{'+' if instrument == '*' else instrument}/#", qos=0)
                    self._mqtt = mqtt
                    self._sender = sender = OrderedSender(mqtt, log=log)
                    self.connects += 1
                    delay = self._retry_delay
                    self._resend(sender, late=False)
                    self._connected.set()  # (no await since: what comes next goes behind)
                    resender = asyncio.ensure_future(self._resend_late(sender))
                    try:
                        async for message in mqtt.messages:
                            self._dispatch(message.topic.value, message.payload,
                                           bool(message.retain))
                    finally:
                        resender.cancel()
            except aiomqtt.MqttCodeError as exc:
                if getattr(exc.rc, "value", exc.rc) in _LOGIN_REFUSED:  # an int, or paho's code
                    # Retrying would be refused the same way: say so, and stop.
                    self.refused = str(exc)
                    log.error("%s: the broker refused the login (%s)", self.account, exc)
                    return
                log.info("%s: connection to the broker lost (%s); retrying", self.account, exc)
            except aiomqtt.MqttError as exc:
                log.info("%s: connection to the broker lost (%s); retrying", self.account, exc)
            finally:
                self._connected.clear()
                self._mqtt = None
                self._sender = None
                # What the broker said of the gateway is old news once away from it (a
                # broker that died sent no will): unknown until it says again.
                self.gateway = None
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _resend(self, sender: OrderedSender, late: bool) -> None:
        """Queue again, in order and in batches, on the connection's *sender* (which
        publishes in call order behind what it holds) every command unanswered: all of
        them on (re)connecting, or, *late*, those whose wait since they were last sent has
        passed, each then waiting twice as long, up to ``RESEND_MAX``, before the next copy
        (under a slow gateway, copies every 2 s of every waiting command made its work
        many times what the bots meant: 25,798 commands for 1,816 in one run).

        On (re)connecting (*age* 0) this runs before the client counts as connected, with
        no await between: a command submitted after goes out behind them (not 2 s later
        behind later ones: an amend overtaken by the next amend of the same order, left in
        force). Awaiting each publish there, a bot that kept submitting (faster than the
        broker acknowledged) kept the client resending for as long, never connected and
        reading no report."""
        now = asyncio.get_running_loop().time()
        waiting = []
        for entry in self._pending.values():
            if not late:
                entry[2] = now
                waiting.append(entry[0])
            elif now - entry[2] >= entry[3]:
                entry[2] = now
                entry[3] = min(entry[3] * 2, RESEND_MAX)
                waiting.append(entry[0])
        for start in range(0, len(waiting), 500):
            sender.send(orders_topic(self.account), self._encode(waiting[start:start + 500]), 1)

    async def _resend_late(self, sender: OrderedSender) -> None:
        """A command can vanish (sent while the gateway was away from the broker, which
        kept no session): resend what stays unanswered; the gateway applies it once."""
        while True:
            await asyncio.sleep(self.resend_after / 2)
            self._resend(sender, late=True)

    def _gateway_said(self, status: str | None, retained: bool = False) -> None:
        """The gateway's status changed (or was told again): back up after being down,
        or saying ``up`` live (a gateway that has just connected, whether or not this
        client heard it go: a broker that died sent no will), what waits unanswered is
        resent now. A retained ``up`` heard on (re)connecting is not news: what waits
        was sent as the client connected."""
        was, self.gateway = self.gateway, status
        if status != was:
            log.info("%s: the exchange's gateway is %s", self.account, status or "unknown")
        if (status == "up" and (was == "down" or not retained)
                and self._sender is not None):
            self._resend(self._sender, late=False)

    def _dispatch(self, topic: str, payload: bytes, retained: bool = False) -> None:
        if not payload and topic == GATEWAY_STATUS:  # a retained status cleared
            return self._gateway_said(None, retained)
        try:
            body = (self._json if payload[:1] in (b"{", b"[") else self._packed).decode(payload)
        except msgspec.DecodeError:
            log.warning("%s: undecodable message on %s", self.account, topic)
            return
        if topic == GATEWAY_STATUS:
            return self._gateway_said(gateway_status(body), retained)
        if not topic.startswith("cx/v1/exec/"):
            # (its own count: a bot that reads no market data has lost no report)
            self.dropped_market_data += self._market.offer([(topic, body)])
            return
        reports = body if type(body) is list else [body]
        pending = self._pending
        answered = self._answered
        fresh = reports
        # Inside a repeated answer to a command answered here before (a long answer may
        # run on into the next message).
        repeated = self._repeating
        for index, report in enumerate(reports):
            # Only the report that answers a command carries its command id; the reports
            # after it (fills, settlements) are that answer's, marked like it.
            command_id = report.get("command_id")
            if (command_id is not None and report.get("reason") in _NOT_TAKEN
                    and command_id in pending):
                # Not taken: not its answer. Taken for one, it would hide the answer of
                # the copy the resend timer sends (an order told 'overloaded' that rests).
                # The command stays pending and goes again once its wait has passed.
                self.not_taken += 1
                pending[command_id][2] = asyncio.get_running_loop().time()
                repeated = False
                if fresh is reports:
                    fresh = reports[:index]
                continue
            if command_id is not None:
                entry = pending.pop(command_id, None)
                repeated = entry is None and command_id in answered
                if entry is not None and not entry[1].done():
                    entry[1].set_result(report)
                if not repeated:
                    answered[command_id] = None
                    if len(answered) > _ANSWERED_KEPT:
                        del answered[next(iter(answered))]
            elif not report.get("duplicate"):
                repeated = False
            if repeated and fresh is reports:
                fresh = reports[:index]
            elif not repeated and fresh is not reports:
                fresh.append(report)
        self._repeating = repeated
        dropped = self._reports.offer(fresh)
        if dropped:
            if not self.dropped_reports:
                log.warning("%s: %d reports wait unread (queue_limit): newer ones are dropped "
                            "(counted in dropped_reports)", self.account, self._reports_limit)
            self.dropped_reports += dropped

    # --- commands -----------------------------------------------------------------------
    def next_order_id(self) -> str:
        return f"{self._session}-{next(self._counter)}"

    def submit(self, command: dict) -> asyncio.Future:
        """Send one command without waiting; the future gets the report answering it."""
        return self.submit_many([command])[0]

    def submit_many(self, commands: list[dict]) -> list[asyncio.Future]:
        """Send *commands* as one message; return one future per command, in order.

        Raises ``ValueError`` for more than ``MAX_COMMANDS`` (1,000) commands or a message
        over ``MAX_PAYLOAD`` bytes, which the gateway would refuse whole (nothing is
        sent), and ``ExchangeError`` once the client is closed."""
        if self._closing:
            raise ExchangeError(f"the client of {self.account!r} is closed")
        if len(commands) > MAX_COMMANDS:
            raise ValueError(f"{len(commands)} commands in one message: the gateway takes at "
                             f"most {MAX_COMMANDS}")
        loop = asyncio.get_running_loop()
        now = loop.time()
        create_future = loop.create_future
        pending = self._pending
        prefix = f"{self._session}:"
        counter = self._counter
        futures = []
        batch = []
        for command in commands:
            command = dict(command)
            command_id = command.get("command_id")
            if command_id is None:
                command_id = command["command_id"] = f"{prefix}{next(counter)}"
            future = create_future()
            # [command, its answer, when last sent, how long to wait before sending again]
            pending[command_id] = [command, future, now, self.resend_after]
            futures.append(future)
            batch.append(command)
        payload = self._encode(batch[0] if len(batch) == 1 else batch)
        if len(payload) > MAX_PAYLOAD:
            for command in batch:
                del pending[command["command_id"]]
            raise ValueError(f"a message of {len(payload)} bytes: the gateway takes at most "
                             f"{MAX_PAYLOAD}")
        sender = self._sender
        if sender is not None and self._connected.is_set():
            sender.send(orders_topic(self.account), payload, 1)
        # Not connected: the commands wait in the pending table and go on reconnect.
        return futures

    async def request(self, command: dict) -> dict:
        """Send *command* and return the report that answers it."""
        future = self.submit(command)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise ExchangeError(f"no answer to {command.get('action')} "
                                f"{command.get('order_id', '')} within {self.timeout:g} s; "
                                "it stays pending, and is resent when the gateway is back or "
                                "its wait is over") from None

    async def place(self, instrument: str, side: str, qty: int, price: str | None = None, *,
                    type: str = "limit", tif: str = "gtc", order_id: str | None = None,
                    **fields: Any) -> dict:
        """Place an order; return its ``accepted`` or ``rejected`` report."""
        command = {
            "action": "new",
            "order_id": order_id or self.next_order_id(),
            "instrument": instrument,
            "side": side,
            "type": type,
            "tif": tif,
            "qty": qty,
            **fields
        }
        if price is not None:
            command["price"] = str(price)
        return await self.request(command)

    async def amend(self, order_id: str, *, price: str | None = None,
                    qty: int | None = None) -> dict:
        command: dict = {"action": "amend", "order_id": order_id}
        if price is not None:
            command["price"] = str(price)
        if qty is not None:
            command["qty"] = qty
        return await self.request(command)

    async def cancel(self, order_id: str) -> dict:
        return await self.request({"action": "cancel", "order_id": order_id})

    async def mass_cancel(self, instrument: str | None = None, side: str | None = None) -> dict:
        """Cancel every open order of this account, or only those of *instrument* and/or
        *side* (``"buy"`` or ``"sell"``); return the answer, with its ``count``."""
        command: dict = {"action": "mass_cancel"}
        if instrument:
            command["instrument"] = instrument
        if side:
            command["side"] = side
        return await self.request(command)

    async def surrender(self, instrument: str, qty: int, *, year: int | None) -> dict:
        """Surrender *qty* units: against the obligation of compliance *year* (the
        registry's rules apply), or with ``year=None`` as a voluntary cancellation, which
        counts against no obligation and is never given back. *year* has no default: a
        forgotten year would cancel the units silently."""
        command: dict = {"action": "surrender", "instrument": instrument, "qty": qty}
        if year is not None:
            command["year"] = year
        return await self.request(command)

    # --- block agreements and auctions ---------------------------------------------------
    async def post_block(self, instrument: str, side: str, qty: int, price: str, *,
                         to_account: str | None = None, order_id: str | None = None) -> dict:
        """Post a block agreement (all or nothing, away from the book) for *to_account*, or
        a public block quote without one; return its ``block`` or ``rejected`` report."""
        command: dict = {
            "action": "block",
            "order_id": order_id or self.next_order_id(),
            "instrument": instrument,
            "side": side,
            "qty": qty,
            "price": str(price)
        }
        if to_account:
            command["to_account"] = to_account
        return await self.request(command)

    async def accept_block(self, order_id: str, poster: str) -> dict:
        """Accept the block *order_id* that *poster* posted: it trades whole at once."""
        return await self.request({
            "action": "block_accept",
            "order_id": order_id,
            "to_account": poster
        })

    async def open_auction(self, auction: str, instrument: str, side: str, qty: int,
                           reserve: str, *, pricing: str = "uniform") -> dict:
        """Open a one-way auction: sell (buyers bid) or buy (sellers offer) *qty* with a
        reserve price; the operator clears it."""
        return await self.request({
            "action": "auction_open",
            "auction": auction,
            "instrument": instrument,
            "side": side,
            "qty": qty,
            "price": str(reserve),
            "pricing": pricing
        })

    async def bid(self, auction: str, qty: int, price: str, *,
                  order_id: str | None = None) -> dict:
        """Bid (or offer, in a purchase) in an open auction; ``cancel`` withdraws it."""
        return await self.request({
            "action": "auction_bid",
            "auction": auction,
            "order_id": order_id or self.next_order_id(),
            "qty": qty,
            "price": str(price)
        })

    # --- streams ------------------------------------------------------------------------
    async def reports(self) -> AsyncIterator[dict]:
        """Every execution report for this account, in order, as they come, each answer
        once; it ends when the client is closed."""
        while (report := await self._reports.get()) is not _CLOSED:
            yield report

    def reports_waiting(self) -> list[dict]:
        """The reports received and not yet read, without waiting."""
        return self._reports.take_all()

    async def market_data(self) -> AsyncIterator[tuple[str, Any]]:
        """``(topic, message)`` for the instruments named in *market_data*; it ends when
        the client is closed."""
        while (item := await self._market.get()) is not _CLOSED:
            yield item
