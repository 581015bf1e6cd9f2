"""The gateway: MQTT messages in, one ordered command stream through the engine, reports
and market data out.

``GatewayCore`` is the gateway without the network, so its rules are tested directly:
``receive`` decodes a message and queues its commands; ``flush`` runs everything queued
through the engine (journaled and committed first, when there is a journal) and returns
the messages to publish. ``run_gateway`` drives it from an aiomqtt client: it receives
for as long as messages are waiting, then flushes once per loop turn, so a burst costs
one journal commit, one report message per account and one trades message per
instrument, and throughput does not collapse under load.

Order of reports: one account's reports are published in engine order on one topic at
QoS 1 from one client, and MQTT keeps a topic's order between two clients.

Duplicates: a bot resending a command (same ``command_id``) after a reconnect gets the
original answer again, marked ``"duplicate": true``, and the engine applies it once.

The operator's console: rows on ``cx/v1/ops/commands`` (only the ``operator`` user may
write there) join the same ordered stream as every bot's commands, journaled alike, and
each is answered on ``cx/v1/ops/reports`` (``accepted`` or ``rejected`` with its reason,
carrying its ``command_id``). The end of the day that ``--eod`` schedules is the
operator's too, and is answered there.

Market data besides trades and depth: each end of day's statistics on
``cx/v1/md/{instrument}/daily``, and whether an instrument trades or is halted on
``cx/v1/md/{instrument}/status``. Status and depth are retained, and published for every
instrument when the gateway connects.

Whether the gateway itself serves, on ``cx/v1/status`` (retained): ``up`` once it has
connected and published those, ``down`` (reason ``stopped``) when it stops, ``down``
(reason ``failed``) when it ends on an error, and, from the broker as the connection's
will, ``down`` (reason ``lost``) when the process dies or its connection drops; the
status left retained by a gateway that is gone is never ``up``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exchange import Engine
from exchange.commands import (AdvanceClock, BidAuction, EndOfDay, OpenAuction, PlaceOrder,
                               PostBlock)
from exchange.events import (AccountOpened, AuctionBidAccepted, AuctionCleared, AuctionOpened,
                             BlockAccepted, BlockPosted, CommandRejected, DailyStatistics, Event,
                             OrderAccepted, OrderCancelled, OrderExpired, QuotingAssessed,
                             TradeExecuted, TradingDayEnded, TradingStatusChanged)
from exchange.journal import JournalWriter
from exchange.schedule import Schedule
from exchange.sequencer import SNAPSHOT_EVERY, Sequencer
from exchange.reasons import Reason
from gateway.mqtt.collector import Collector
from gateway.mqtt.lanes import LaneQueue
from gateway.mqtt.wire import (OPS_ID_PREFIX, WIRE_ACTIONS, AcceptedReport, OpsAcceptedReport,
                               RejectedReport, Report, ReportMaker, WireDecoder, opened_by,
                               client_id)
from gateway.protocol import (GATEWAY_FAILED, GATEWAY_LOST, GATEWAY_STATUS, GATEWAY_STOPPED,
                              GATEWAY_UP, OPS_COMMANDS, OPS_REPORTS, ORDERS_FILTER, OVERLOADED,
                              PENDING_CALLS_WARNING, RATE_LIMITED, SOCKET_OPTIONS, TopicSender,
                              account_of, auctions_topic, blocks_topic, book_topic, daily_topic,
                              exec_topic, is_msgpack, status_topic, trades_topic)

__all__ = ["GatewayCore", "GatewaySettings", "run_gateway", "Outgoing", "missed_ends_of_day",
           "next_end_of_day"]

log = logging.getLogger("carbonx.gateway")

# Unguessable: the session is clean (nothing queues for a gateway that is away; bots
# resend what stays unanswered), and where a broker keeps client ids apart by user it
# is replaced by the user name.
_IDENTIFIER = f"carbonx-gateway-{secrets.token_hex(8)}"
# CONNACK codes of a refused login (MQTT 3.1.1: bad user name or password, not
# authorised; MQTT 5: the same): trying again is refused the same way.
LOGIN_REFUSED = frozenset({4, 5, 134, 135})


class LoginRefused(Exception):
    """The broker refused the gateway's login (``run_gateway(..., refused_ends=True)``)."""

# topic, payload, qos; a retained message (an instrument's status) has a fourth item, True
Outgoing = tuple[str, bytes, int] | tuple[str, bytes, int, bool]
# Events that are market data of the trading modes away from the book, and the ends of
# an order that may be a public block's.
_MODE_DATA = (BlockPosted, BlockAccepted, AuctionOpened, AuctionBidAccepted, AuctionCleared)
_ENDS = (OrderCancelled, OrderExpired)
# Reports (or trades) per published message: a burst's reports go out in several messages
# of at most ~100 KB, well under a broker's packet limit (1 MiB in broker-config's).
REPORTS_PER_MESSAGE = 256

EXPIRY_CHECK_S = 0.25  # how often the gateway looks whether a gtd order's time has come
EXPIRY_RETRY_S = 0.01  # ... and, when one is due, how soon again at the soonest
RETRY_DELAY_MAX = 4.0  # seconds between two attempts to reach a broker that went away, at most
FREE_ANSWER = 16  # events an answer given again may hold without being charged to the rate
STATUS_TIMEOUT_S = 5.0  # how long a gateway ending on an error waits to say it is down
READ_SLICE = 0.005  # seconds the reader may have before a flush while messages keep coming
# Loop turns with nothing read that make the stream dry: a message takes two turns from
# the socket to the intake (the MQTT client reads it into its queue, then the reader
# takes it), so two quiet turns could flush while one was still on its way. With four,
# what came during a flush's journal commit goes into the next flush, not one message
# per flush (benchmarks/gateway.py: unbatched 1,600 -> 6,000-8,000 orders/s;
# benchmarks/fairness.py: quiet p99 33 -> 26 ms with the 5 ms slice).
QUIET_TURNS = 4

_OPERATOR = ""  # the intake of the operator's commands (ops rows, the scheduled end of day)

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


@dataclass
class GatewaySettings:
    """Tunable limits; the defaults suit a trading firm's bots on one machine."""

    book_levels: int = 10  # depth levels a side on .../book
    book_interval: float = 0.1  # seconds between two depth messages of an instrument
    rate: float = 50_000.0  # commands a second an account may send, sustained
    burst: float = 100_000.0  # ... and in a burst
    intake: int = 5_000  # commands an account may have waiting to be run
    snapshot_every: int = SNAPSHOT_EVERY  # journaled commands between snapshots
    # "HH:MM" in the market's time zone: end the trading day then, on its business days.
    eod_at: str | None = None
    flush_commands: int = 2_000  # commands run (and journaled) in one flush at most


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _Stats:
    messages: int = 0
    commands: int = 0
    turned_away: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    resends_dropped: int = 0  # resent while their first copy waited to run
    resends_answered: int = 0  # resent after they ran: answered from the window, not journaled


def _refused(command, reason: str, message: str) -> RejectedReport:
    """A ``rejected`` report for a decoded command the gateway will not pass on."""
    return RejectedReport(reason=reason, message=message,
                          action=type(command).__struct_config__.tag,
                          order_id=client_id(getattr(command, "order_id", None)),
                          command_id=command.command_id)


class GatewayCore:
    """Everything the gateway does between a received message and a published one."""

    def __init__(self, engine: Engine, *, journal: JournalWriter | None = None,
                 settings: GatewaySettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or GatewaySettings()
        # Every command reaches the engine through it: journaled and committed first.
        self._sequencer = Sequencer(engine, journal, snapshot_every=self.settings.snapshot_every)
        self.stats = _Stats()
        self._decoder = WireDecoder()
        ledger = engine.ledger
        if ledger is not None:
            self._decoder.exists = ledger.accounts.__contains__
        self._decoder.used = engine.id_used
        self._decoder.auction_ids = engine.auctions.auctions  # (one dict, emptied each day)
        self._reports = ReportMaker(engine.market)
        # Intake: per account, its commands and (account, RejectedReport) in the
        # order they came; flush takes from each account in turn, so one account's flood
        # waits behind itself, not in front of the others. At most settings.intake a
        # queue; past that a message is turned away whole (answered at the next flush).
        self._intake: dict[str, deque] = {}
        self._waiting = 0  # items in all intake queues
        self._answers: list = []  # (account, report): turned away at the door
        # (account, command_id) of the commands answered again since the last flush: a
        # resend needs one answer, and a message of 1,000 copies of the id of a command
        # with 1,000 fills made a million reports.
        self._again: set[tuple[str, str]] = set()
        self._buckets: dict[str, _Bucket] = {}
        self._packed: dict[str, bool] = {}  # account -> wants msgpack reports
        self._dirty: set[str] = set()
        # Set once a batch's fsync failed: the engine holds what the journal may not, and
        # nothing more (depth included) is published from it.
        self._halted = False
        # Public block quotes still open (engine id -> the post), and the day's auctions
        # (id -> [opening event, bids]), for their market data.
        self._blocks: dict[str, BlockPosted] = {}
        # Set by run_gateway: wakes its flushing loop for work the core queues itself.
        self.wake: Callable[[], None] | None = None
        # Called after each flush with its events, in order, and the gateway's clock (ns):
        # the web pages' view (gateway.web) keeps what the engine does not (recent trades
        # with their times, the days' statistics, fills by account).
        self.watchers: list[Callable[[list[Event], int], None]] = []
        self._auctions: dict[str, list] = {}
        self._bids: dict[str, str] = {}  # an open bid's engine id -> its auction
        self._restore_mode_data()
        self._book_sent: dict[str, float] = {}
        self._book_last: dict[str, tuple] = {}
        self._clock_ns = 0
        self._from_operator: set[int] = set()  # id() of the operator's queued commands
        # The operator's ids are one space, but the engine's window is by account and id:
        # which account (or "") each of the operator's ids in the window named.
        self._ops_ids: dict[str, str] = {
            command_id: account for account, command_id in engine.answered
            if command_id.startswith(OPS_ID_PREFIX)}
        # Called with each account the engine opens (the embedded broker gives it a login).
        self.on_account_opened: Callable[[str], None] | None = None
        self.traded: dict[str, list[int]] = {}  # instrument -> [trades, volume, notional]
        # The public trades feed: its session (new each time a gateway starts, or a
        # cluster node starts to lead) and the last number on each instrument's topic.
        self.feed_session = secrets.token_hex(4)
        self._trade_numbers: dict[str, int] = {}
        # (instrument, mode) -> [trades, volume] of the trading modes away from the book
        self.traded_away: dict[tuple[str, str], list[int]] = {}
        # The market makers' quoting assessments of each end of day, the newest last.
        self.assessments: collections.deque[QuotingAssessed] = collections.deque(maxlen=10_000)
        self._last: dict[str, int] = {}  # instrument -> last trade price (ticks)

    # --- in -----------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """Decode one message from *topic* and queue its commands (or its rejections) on
        the sending account's intake; a full intake turns the message away whole."""
        account = account_of(topic)
        if account is None:
            if topic == OPS_COMMANDS:
                return self._receive_ops(payload)
            log.warning("ignored a message on %r: not an orders topic", topic)
            return
        stats = self.stats
        stats.messages += 1
        queue = self._intake.get(account)
        if queue is None:
            queue = self._intake[account] = deque()
        elif len(queue) >= self.settings.intake:
            # Back-pressure: the account already has a full intake waiting. Turning the
            # message away reads only its ids, so a flood costs little besides its answers.
            message = (
                f"{len(queue)} commands of this account are waiting; resend once they are answered")
            self._not_taken(account, queue, self._decoder.turn_away(payload, OVERLOADED, message),
                            now)
            return
        # The engine's time is the gateway's clock when the message came in, never
        # going back (benchmarks/gateway.py: stamped here rather than copied into each command).
        self._clock_ns = self._decoder.ts = max(time.time_ns(), self._clock_ns)
        items = self._decoder.decode(account, payload)
        if len(items) > 1:
            items = self._first_copies(items)
        # Profiled (benchmarks/gateway.py, batched): counted in C, not by a generator per item.
        turned_away = list(map(type, items)).count(RejectedReport)
        commands = len(items) - turned_away
        if commands:
            # Reports follow the format of the bot's last message that held a command.
            self._packed[account] = is_msgpack(payload)
        if commands and not self._admit(account, commands,
                                        time.monotonic() if now is None else now):
            message = (f"{commands} command(s) in one message over the account's limit "
                       f"of {self.settings.rate:g}/s")
            self._not_taken(account, queue, [
                item if type(item) is RejectedReport else _refused(item, RATE_LIMITED, message)
                for item in items
            ], now)
            return
        stats.commands += commands
        self._waiting += len(items)
        if not turned_away:
            queue += items
            return
        for item in items:
            if type(item) is RejectedReport:
                self._count_turned_away(account, item)
                queue.append((account, item))
            else:
                queue.append(item)

    def _first_copies(self, items: list) -> list:
        """*items* of one message without the later copies of a command id: one answer
        is all its copies get (docs/mqtt.md), and a message's copies queued in the intake
        may run over two flushes (``flush_commands``), each of which answered the id again."""
        ids = [item.command_id for item in items if type(item) is not RejectedReport
               and item.command_id is not None]
        if len(set(ids)) == len(ids):
            return items
        seen: set[str] = set()
        kept = []
        for item in items:
            command_id = item.command_id
            if type(item) is not RejectedReport and command_id is not None:
                if command_id in seen:
                    self.stats.resends_dropped += 1
                    continue
                seen.add(command_id)
            kept.append(item)
        return kept

    def _not_taken(self, account: str, queue: deque, reports: list[RejectedReport],
                   now: float | None = None) -> None:
        """Answer the commands of a message turned away whole (``overloaded``,
        ``rate_limited``: not taken, so a copy sent later is taken), each under its
        command id, but for resends (a bot resends what stays unanswered): one that ran is
        answered as it was, one still waiting gets no report (its own comes when it runs).
        Told "not taken" after it acted, a bot would take a command that acted for refused."""
        queued: set | None = None
        # Short answers given again cost no tokens (the account has none to spare) but
        # together no more events than the message has commands: a message turned away
        # makes the gateway build no more than one report a command would.
        free = len(reports)
        for report in reports:
            command_id = report.command_id
            if type(command_id) is str and not command_id.startswith("@"):  # (no bot's id)
                events = len(self.engine.answer(account, command_id) or ())
                short = events <= FREE_ANSWER
                if ((account, command_id) in self._again or (short and events > free)
                        or self._over_budget(account, events, now)):
                    self._again.add((account, command_id))
                    self.stats.resends_dropped += 1
                    continue
                if short:
                    free -= events
                again = self._answered_before(account, command_id)
                if again is not None:
                    self._again.add((account, command_id))
                    self._answers += [(account, r) for r in again]
                    continue
                if queued is None:
                    queued = {getattr(c, "command_id", None) for c in queue}
                if command_id in queued:
                    self.stats.resends_dropped += 1
                    continue
            self._count_turned_away(account, report)
            self._answers.append((account, report))

    def _over_budget(self, account: str, events: int, now: float | None) -> bool:
        """Whether answering *account*'s resent command again, an answer of *events*
        events, would take the account over its rate: a long answer counts as one command
        an event it holds, so a command with 1,000 fills answered again costs what 1,000
        commands do, and resends
        cannot make the gateway rebuild large answers faster than the account may send
        commands. A resend over it gets no answer now (the bot resends it later). An
        answer of a few events, as most are, costs what turning a command away does, and
        is given whatever the rate (within a message turned away, as many events as it has
        commands: ``_not_taken``)."""
        return events > FREE_ANSWER and not self._admit(
            account, events, time.monotonic() if now is None else now)

    def _count_turned_away(self, account: str, report: RejectedReport) -> None:
        stats = self.stats
        stats.turned_away += 1
        reason = report.reason
        stats.by_reason[reason] = stats.by_reason.get(reason, 0) + 1
        log.info("turned away a command from %s: %s: %s", account, reason, report.message)

    def _admit(self, account: str, count: int, now: float) -> bool:
        """Token bucket per account: may *count* more commands go in now?"""
        settings = self.settings
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = self._buckets[account] = _Bucket(settings.burst, now)
        bucket.tokens = min(settings.burst, bucket.tokens + (now - bucket.stamp) * settings.rate)
        bucket.stamp = now
        # A message of more commands than the burst waits for a full bucket, and leaves it
        # in debt (it was refused for good: no bucket holds more than the burst).
        if bucket.tokens < min(count, settings.burst):
            return False
        bucket.tokens -= count
        return True

    def _receive_ops(self, payload: bytes) -> None:
        """The operator's rows: queued in its own intake (no rate limit: the broker lets
        only the operator write there), each answered on the ops reports topic."""
        self.stats.messages += 1
        self._clock_ns = self._decoder.ts = max(time.time_ns(), self._clock_ns)
        items = self._decoder.decode(None, payload)
        queue = self._operator_intake()
        for item in items:
            if type(item) is RejectedReport:
                self._count_turned_away("the operator", item)
                queue.append((OPS_REPORTS, item))
            else:
                self._from_operator.add(id(item))
                queue.append(item)
                self.stats.commands += 1  # counted as the accounts' are
        self._waiting += len(items)

    def end_of_day(self, at: int | None = None) -> None:
        """Queue the end of the trading day (the operator's, never a bot's): at the next
        flush it runs in the one ordered stream, journaled like any command, its news
        (variation margin, calls, deliveries) goes to each account's reports and its
        answer to the operator's. *at*: the engine time of a day's end that was missed
        (``missed_ends_of_day``), instead of now."""
        if at is None:
            self._clock_ns = max(time.time_ns(), self._clock_ns)
        command = EndOfDay(ts=self._clock_ns if at is None else at)
        self._from_operator.add(id(command))
        self._queue_own(command)  # a quiet market still ends its day

    def expire_due(self) -> bool:
        """Queue a move of the engine's clock to now if a gtd order's time has come (none
        of the accounts' commands may come to move it): the order leaves the book, and its
        owner hears, at its time. Journaled like any command, answered to no one. Return
        whether one was queued."""
        due = self.engine.next_expiry()
        now = max(time.time_ns(), self._clock_ns)
        if due is None or due > now or self._waiting:  # (a waiting command moves it)
            return False
        self._clock_ns = now
        self._queue_own(AdvanceClock(ts=now))
        return True

    def _operator_intake(self) -> deque:
        """The operator's intake (the exchange's own commands go there too)."""
        queue = self._intake.get(_OPERATOR)
        if queue is None:
            queue = self._intake[_OPERATOR] = deque()
        return queue

    def _queue_own(self, command) -> None:
        """Queue one of the exchange's own commands on the operator's intake and wake the
        flush, whether or not anything else is waiting."""
        self._operator_intake().append(command)
        self._waiting += 1
        if self.wake is not None:
            self.wake()

    @property
    def pending(self) -> int:
        """Commands and answers waiting for the next flush."""
        return self._waiting + len(self._answers)

    def _take(self) -> list:
        """Up to ``flush_commands`` items from the intake, taking from each account in
        turn (an equal share each, round after round), in each account's own order."""
        intake = self._intake
        budget = self.settings.flush_commands
        taken: list = []
        while budget > 0 and intake:
            share = max(budget // len(intake), 1)
            for account in list(intake):
                queue = intake[account]
                if len(queue) <= share:
                    taken += queue
                    budget -= len(queue)
                    del intake[account]
                else:
                    taken += [queue.popleft() for _ in range(share)]
                    budget -= share
                if budget <= 0:
                    break
        self._waiting -= len(taken)
        return taken

    # --- through the engine -----------------------------------------------------------
    def flush(self, now: float | None = None) -> list[Outgoing]:
        """Run every queued command; return the messages to publish, in order."""
        pending = self._take()
        if self._answers:
            pending += self._answers
            self._answers = []
        answered_again, self._again = self._again, set()
        if not pending:
            return self._books(time.monotonic() if now is None else now)
        commands = [c for c in pending if type(c) is not tuple]
        # A resend is answered, not journaled (the sets and the look-ups in C: this is
        # on every flush of benchmarks/gateway.py).
        keys = [(getattr(c, "account", None) or "", c.command_id) for c in commands
                if c.command_id is not None]
        unique = set(keys)
        if len(unique) < len(keys) or not self.engine.answered.keys().isdisjoint(unique):
            pending, commands = self._answer_resends(pending, answered_again, now)
        if self._from_operator:
            pending, commands = self._check_operator_ids(pending)
        if self.engine.auctions.auctions or any(type(c) is OpenAuction for c in commands):
            pending, commands = self._check_auction_ids(pending)
        by_account: dict[str, list[Report]] = {}
        trades: dict[str, list[dict]] = {}
        known = self.engine.market.instruments  # a rejection may name an unknown one
        reports = self._reports
        dirty = self._dirty
        made: list = []
        public: list[Outgoing] = []  # daily statistics and trading status
        operator = self._from_operator
        # Journaled and committed before the first of them acts (exchange.sequencer).
        step = self._sequencer.each(commands)
        make = reports.reports
        queue = by_account.get
        watched: list[Event] | None = [] if self.watchers else None
        opened: list[str] = []  # told once the batch is durable
        engine = self.engine
        for item in pending:
            if type(item) is tuple:
                account, report = item
                by_account.setdefault(account, []).append(report)
                continue
            clock = engine.clock
            command, out = next(step)
            # The command's result comes after the gtd orders its time expired, if it
            # moved the clock: those are reports of their own, before its answer.
            skip = engine.clock_events if engine.clock != clock else 0
            if watched is not None:
                watched += out
            made.clear()
            # The operator's news of this command, after its answer (a list once there is some).
            news: list | None = None
            for event in out:
                make(event, made)
                kind = type(event)
                if kind is OrderAccepted:
                    # The commonest event: of a listed instrument (the engine accepts no other),
                    # and no more than its report and depth (benchmarks/gateway.py, batched:
                    # with the news list made only when there is news, 3.4% fewer instructions).
                    dirty.add(event.instrument)
                    continue
                instrument = getattr(event, "instrument", None)
                if instrument in known:
                    dirty.add(instrument)
                    if kind is TradeExecuted:
                        trades.setdefault(instrument, []).append(reports.public_trade(event))
                        self._count_trade(event)
                    elif kind is DailyStatistics or kind is TradingStatusChanged:
                        public.append(self._public(event))
                    elif kind in _MODE_DATA or (kind in _ENDS and (
                            event.order_id in self._blocks or event.order_id in self._bids)):
                        data = self._mode_data(event)
                        if data is not None:
                            public.append(data)
                    elif kind is QuotingAssessed:  # the market maker's and the operator's news
                        self.assessments.append(event)
                        news = [*(news or ()), (OPS_REPORTS, made[-1][1])]
                elif kind is AccountOpened and self.on_account_opened is not None:
                    opened.append(event.account)
                elif kind is TradingDayEnded:  # the operator's or --eod's: once a day
                    warn_of_holidays(self)
            result = out[skip]
            mark = 0  # the first report of the command's own events (after the expiries')
            if skip:
                mark = next((i for i, (_, r) in enumerate(made)
                             if getattr(r, "seq", None) == result.seq), len(made))
            command_id = command.command_id
            if operator and id(command) in operator:
                operator.discard(id(command))
                if command_id is not None:
                    self._remember_ops_id(command_id, getattr(command, "account", None) or "")
                if type(result) is CommandRejected:
                    # The operator's row refused (a resend answered duplicate_command
                    # among them): its answer is the operator's; the account it names
                    # did nothing, and was told 'rejected' for a row that had acted.
                    made[:] = [(who, r) for who, r in made
                               if getattr(r, "seq", None) != result.seq]
                made.append((OPS_REPORTS, self._ops_answer(command, result)))
            elif command_id is not None:
                # Profiled (benchmarks/gateway.py): the common answer is the first report of
                # the command's own, to the sender, an accepted one.
                first = made[mark][1] if len(made) > mark else None
                if (type(first) is AcceptedReport and type(result) is not CommandRejected
                        and made[mark][0] == command.account and first.seq == result.seq):
                    first.command_id = command_id
                else:
                    self._answer(command, result, made)
            if news is not None:
                made += news
            for account, report in made:
                waiting = queue(account)
                if waiting is None:
                    by_account[account] = [report]
                else:
                    waiting.append(report)
        # The batch's fsync, going on beside the engine, is done before any of it is sent.
        try:
            self._sequencer.durable()
        except BaseException:
            # The batch has run but is not on disk: nothing of it is ever published, its
            # depth by a later flush or the depth timer neither.
            self._halted = True
            self._dirty.clear()
            raise
        for account in opened:
            self.on_account_opened(account)  # type: ignore[misc]  # set when any opened
        self._decoder.trim()
        journal = self._sequencer.journal
        if journal is not None and getattr(journal, "warnings", None):
            for warning in journal.warnings:  # a snapshot not written: trading goes on
                log.warning("%s", warning)
            journal.warnings.clear()
        if watched:
            for watcher in self.watchers:
                watcher(watched, self._clock_ns)
        outgoing: list[Outgoing] = []
        packed = self._packed
        step = REPORTS_PER_MESSAGE
        ops = by_account.pop(OPS_REPORTS, None)
        for account, items in by_account.items():
            encode = _msgpack.encode if packed.get(account) else _json.encode
            topic = exec_topic(account)
            if len(items) == 1:
                outgoing.append((topic, encode(items[0]), 1))
                continue
            for start in range(0, len(items), step):
                outgoing.append((topic, encode(items[start:start + step]), 1))
        if ops:
            for start in range(0, len(ops), step):
                chunk = ops[start:start + step]
                outgoing.append((OPS_REPORTS, _json.encode(chunk[0] if len(chunk) == 1 else chunk),
                                 1))
        numbers = self._trade_numbers
        session = self.feed_session
        for instrument, items in trades.items():
            topic = trades_topic(instrument)
            # Numbered on the topic, so a subscriber can tell a lost message (QoS 0) from
            # a quiet spell: 1, 2, 3 ... within the gateway's session.
            number = numbers.get(instrument, 0)
            for item in items:
                number += 1
                item["feed_seq"] = number
                item["feed"] = session
            numbers[instrument] = number
            for start in range(0, len(items), step):
                outgoing.append((topic, _json.encode(items[start:start + step]), 0))
        outgoing.extend(public)
        outgoing.extend(self._books(time.monotonic() if now is None else now))
        return outgoing

    def _public(self, event: DailyStatistics | TradingStatusChanged) -> Outgoing:
        """An instrument's daily statistics, or its trading status (retained)."""
        if type(event) is DailyStatistics:
            return (daily_topic(event.instrument), _json.encode(self._reports.daily(event)), 1)
        return self.status_message(event.instrument, event.seq)

    def _restore_mode_data(self) -> None:
        """The public blocks and the day's auctions an engine recovered from its journal
        holds, so their ends are published as those of blocks posted since."""
        self._blocks, opened, self._bids = open_away(self.engine)
        bids = Counter(self._bids.values())
        self._auctions = {name: [event, bids[name]] for name, event in opened.items()}

    def _mode_data(self, event) -> Outgoing | None:
        """Public blocks and auctions as market data: a public block quote posted, then
        accepted, withdrawn or expired; an auction opened, each bid counted, cleared."""
        kind = type(event)
        reports = self._reports
        if kind is BlockPosted:
            if event.to_account is None:
                self._blocks[event.order_id] = event
                return (blocks_topic(event.instrument),
                        _json.encode(reports.public_block(event, "open")), 1)
            return None
        if kind is OrderCancelled and event.order_id in self._bids:  # a bid withdrawn
            name = self._bids.pop(event.order_id)
            withdrawn = self._auctions.get(name)
            if withdrawn is None:
                return None
            withdrawn[1] -= 1
            body = reports.auction_state(event, withdrawn[0], withdrawn[1])
            return (auctions_topic(event.instrument), _json.encode(body), 1, True)
        if kind is BlockAccepted or kind is OrderCancelled or kind is OrderExpired:
            posted = self._blocks.pop(event.order_id, None)
            if posted is None:
                return None  # a directed block: never public
            status = ("accepted" if kind is BlockAccepted else
                      "withdrawn" if kind is OrderCancelled else "expired")
            body = reports.public_block(posted, status)
            body["seq"] = event.seq
            return (blocks_topic(event.instrument), _json.encode(body), 1)
        if kind is AuctionOpened:
            self._auctions[event.auction] = [event, 0]
        known = self._auctions.get(event.auction)
        if known is None:
            return None
        if kind is AuctionBidAccepted:
            known[1] += 1
            self._bids[event.order_id] = event.auction
        if kind is AuctionCleared:
            del self._auctions[event.auction]
            for bid in [b for b, name in self._bids.items() if name == event.auction]:
                del self._bids[bid]
        body = reports.auction_state(event, known[0], known[1])
        return (auctions_topic(event.instrument), _json.encode(body), 1, True)

    def retained(self) -> list[Outgoing]:
        """The retained messages the gateway publishes as it connects: each instrument's
        status and depth, then each open auction's state as of now. A bot that subscribes
        late gets them at once, after a restart of the gateway or of a broker that kept
        none too (and a depth the broker kept from before a restart is replaced)."""
        engine = self.engine
        out = [self.status_message(instrument) for instrument in engine.market.instruments]
        levels = self.settings.book_levels
        for instrument in engine.market.instruments:
            out.append(self._depth(instrument, engine.book(instrument).depth(levels)))
        for opened, bids in self._auctions.values():
            body = self._reports.auction_state(opened, opened, bids)
            body["seq"] = self.engine.seq
            out.append((auctions_topic(opened.instrument), _json.encode(body), 1, True))
        return out

    def status_message(self, instrument: str, seq: int | None = None) -> Outgoing:
        """Whether *instrument* trades or is halted, as the retained status message."""
        status = "halted" if self.engine.halted(instrument) else "trading"
        body = {"instrument": instrument, "status": status, "seq": seq or self.engine.seq}
        return (status_topic(instrument), _json.encode(body), 1, True)

    def _ops_answer(self, command, result) -> Report:
        """The operator's answer to *command*, whose result event is *result*; a resent
        command (its ``command_id`` seen) is answered as it was the first time, marked
        ``"duplicate": true``."""
        action = type(command).__struct_config__.tag
        command_id = command.command_id
        if command_id is not None:
            command_id = command_id.removeprefix(OPS_ID_PREFIX)  # the operator's own id
        account = getattr(command, "account", None)
        instrument = _instrument_of(command)
        duplicate = False
        if getattr(result, "reason", None) == Reason.DUPLICATE_COMMAND:
            first = self.engine.answer(account, command.command_id)
            if first:
                if not _same_subject(first[0], action, account, instrument, command):
                    # The id of an earlier row of another account, instrument, receiver or
                    # pledge: this row did nothing, and is not told it was done.
                    return RejectedReport(
                        seq=result.seq, action=action, reason=result.reason,
                        message=f"command_id {command_id!r} was used by an earlier command "
                        f"(seq {first[0].seq}); this row did nothing", command_id=command_id)
                result, duplicate = first[0], True
        return self._ops_report(result, action, account, instrument, command_id, duplicate)

    @staticmethod
    def _ops_report(result: Event, action: str, account: str | None, instrument: str | None,
                    command_id: str | None, duplicate: bool) -> Report:
        """The operator's report of *result*, its row's action and subject."""
        if type(result) is CommandRejected:
            return RejectedReport(seq=result.seq, action=action, reason=result.reason,
                                  duplicate=duplicate, command_id=command_id)
        return OpsAcceptedReport(seq=result.seq, action=action, account=account,
                                 instrument=instrument, duplicate=duplicate, command_id=command_id)

    def _count_trade(self, trade: TradeExecuted) -> None:
        if trade.mode != "listing":  # a block or an auction: not the order book's last price
            totals = self.traded_away.setdefault((trade.instrument, trade.mode), [0, 0])
            totals[0] += 1
            totals[1] += trade.qty
            return
        totals = self.traded.get(trade.instrument)
        if totals is None:
            totals = self.traded[trade.instrument] = [0, 0, 0]
        totals[0] += 1
        totals[1] += trade.qty
        totals[2] += trade.qty * trade.price
        self._last[trade.instrument] = trade.price

    def trade_counts(self) -> dict[str, int]:
        return {symbol: totals[0] for symbol, totals in self.traded.items()}

    def last_ticks(self, instrument: str) -> int | None:
        return self._last.get(instrument)

    def last_price(self, instrument: str) -> str:
        ticks = self._last.get(instrument)
        return "-" if ticks is None else self._reports.price(instrument, ticks)

    def _answer_resends(self, pending: list, answered: set[tuple[str, str]],
                        now: float | None = None) -> tuple[list, list]:
        """Take the resends out of *pending* (a bot resends what stays unanswered: after
        a restart of the broker or the exchange, while a cluster elects its leader): a
        bot's command that the engine's command window holds is answered with its first
        answer, once a flush (*answered*: those already answered again since the last
        flush), and a second copy of one that runs in this flush is dropped (its answer
        comes when the first runs). Neither is journaled: it would act on nothing, and
        would grow the journal (a cluster's log) by a copy a resend. An answer again is
        charged to the account's rate (``_over_budget``). Return the new pending items and
        the commands among them."""
        window = self.engine.answered
        operator = self._from_operator
        stats = self.stats
        seen = answered
        kept: list = []
        for item in pending:
            if type(item) is not tuple and item.command_id is not None \
                    and id(item) not in operator:
                account = getattr(item, "account", None)
                key = (account or "", item.command_id)
                if key in seen:
                    stats.resends_dropped += 1
                    continue
                if key in window:
                    if self._over_budget(key[0], len(window[key]), now):
                        stats.resends_dropped += 1
                        seen.add(key)
                        continue
                    again = self._answered_before(account, item.command_id)
                    if again:  # (none for the account: the engine answers it duplicate)
                        kept += [(account, r) for r in again]
                        stats.resends_answered += 1
                        seen.add(key)
                        continue
                seen.add(key)
            kept.append(item)
        return kept, [c for c in kept if type(c) is not tuple]

    def _remember_ops_id(self, command_id: str, account: str) -> None:
        ids = self._ops_ids
        ids[command_id] = account  # (an id the window forgot may be taken again)
        if len(ids) > 2 * self.engine.command_window + 1_000:  # forget what the window has
            window = self.engine.answered
            self._ops_ids = {c: a for c, a in ids.items() if (a, c) in window}

    def _check_auction_ids(self, pending: list) -> tuple[list, list]:
        """An auction's id against its initiator's order, block and bid ids, again as the
        commands are about to run: each was checked as its message was read, against the
        engine as it was then, so an auction and an order named alike in two messages of
        one flush (or of two flushes, read before the first ran) both got through. The
        later is refused (``duplicate_auction`` or ``duplicate_order_id``). Return the
        new pending items and the commands."""
        engine = self.engine
        auctions = engine.auctions.auctions
        used = engine.id_used
        operator = self._from_operator
        opened: set[tuple[str, str]] = set()  # this flush's (initiator, auction)
        named: set[str] = set()  # this flush's new ids, as the engine keeps them
        kept: list = []
        for item in pending:
            kind = type(item)
            if kind is OpenAuction:
                key = f"{item.account}/{item.auction}"
                if used(key) or key in named:
                    ops = id(item) in operator
                    operator.discard(id(item))
                    command_id = item.command_id
                    if ops and command_id is not None:
                        command_id = command_id.removeprefix(OPS_ID_PREFIX)
                    kept.append((OPS_REPORTS if ops else item.account, RejectedReport(
                        action="auction_open", reason=Reason.DUPLICATE_AUCTION,
                        message=f"auction {item.auction!r} is an id of {item.account}'s own "
                        "order, block or bid today", command_id=command_id)))
                    continue
                opened.add((item.account, item.auction))
            elif kind is PlaceOrder or kind is PostBlock or kind is BidAuction:
                bare = client_id(item.order_id)
                # Only the initiator's: its fills carry the auction's id as their order_id.
                if opened_by(auctions, bare, item.account) or (item.account, bare) in opened:
                    kept.append((item.account, RejectedReport(
                        action=kind.__struct_config__.tag, reason=Reason.DUPLICATE_ORDER_ID,
                        message=f"order_id {bare!r} is an auction's today", order_id=bare,
                        command_id=item.command_id)))
                    continue
                named.add(item.order_id)
            kept.append(item)
        return kept, [c for c in kept if type(c) is not tuple]

    def _check_operator_ids(self, pending: list) -> tuple[list, list]:
        """The operator's rows in *pending* against its ids: a row with an id that an
        earlier row about another account took (in the window, or earlier in *pending*)
        is refused ``duplicate_command``; a row resent with the id of one journaled before
        the operator's ids had their own space (its plain id in the window, the same
        action and subject) is answered as that one (across the upgrade, ``admin
        --session`` applied it again). Return the new pending items and the commands."""
        window = self.engine.answered
        operator = self._from_operator
        batch: dict[str, str] = {}  # this flush's operator ids, and the account each named
        kept: list = []
        for item in pending:
            command_id = None if type(item) is tuple else item.command_id
            if (command_id is not None and id(item) in operator
                    and command_id.startswith(OPS_ID_PREFIX)):
                account = getattr(item, "account", None)
                bare = command_id.removeprefix(OPS_ID_PREFIX)
                named = self._ops_ids.get(command_id)
                earlier = ((named, command_id) in window if named is not None else False)
                if not earlier:
                    named = batch.get(command_id)
                if named is not None and named != (account or "") and (
                        earlier or command_id in batch):
                    # The id of an earlier row about another account: this one does nothing.
                    operator.discard(id(item))
                    seq = window[(named, command_id)][0].seq if earlier else None
                    kept.append((OPS_REPORTS, RejectedReport(
                        action=type(item).__struct_config__.tag,
                        reason=Reason.DUPLICATE_COMMAND,
                        message=f"command_id {bare!r} was used by an earlier command"
                        + (f" (seq {seq})" if seq is not None else "") + "; this row did nothing",
                        command_id=bare)))
                    continue
                batch.setdefault(command_id, account or "")
                action = type(item).__struct_config__.tag
                # (not for the actions bots send too: that plain id may be the account's own)
                first = None if action in WIRE_ACTIONS else window.get((account or "", bare))
                if first and (account or "", command_id) not in window:
                    instrument = _instrument_of(item)
                    if _same_subject(first[0], action, account, instrument, item):
                        operator.discard(id(item))
                        kept.append((OPS_REPORTS, self._ops_report(
                            first[0], action, account, instrument, bare, duplicate=True)))
                        continue
            kept.append(item)
        return kept, [c for c in kept if type(c) is not tuple]

    def _answered_before(self, account: str, command_id: str) -> list[Report] | None:
        """The reports that answered *account*'s command *command_id*, its fills
        included, each marked ``"duplicate": true``, while the engine's command window
        holds it; else None."""
        first = self.engine.answer(account, command_id)
        if not first:
            return None
        again: list = []
        for event in first:
            self._reports.reports(event, again)
        answer = [r for who, r in again if who == account]
        for r in answer:  # built just now: no one else holds them
            r.duplicate = True
            if r.seq == first[0].seq:
                r.command_id = command_id
        return answer

    def _answer(self, command, result, made: list) -> None:
        """Tag the report that answers *command* with its command id; answer a resent
        command with what it was answered the first time, its fills included, from the
        engine's command window (which a recovered engine has too, so a resend after a
        restart gets its first answer), each report marked ``"duplicate": true``."""
        command_id = command.command_id
        account = command.account
        if getattr(result, "reason", None) == Reason.DUPLICATE_COMMAND:
            answer = self._answered_before(account, command_id)
            if answer is not None:
                for i, (who, report) in enumerate(made):
                    if who == account and report.seq == result.seq:
                        made[i:i + 1] = [(account, r) for r in answer]
                        return
        for who, report in made:
            if who == account and report.seq == result.seq:
                report.command_id = command_id
                return
        # The result concerned no account's report stream (e.g. an unknown order's
        # cancel, rejected without an account): answer it anyway.
        made.append((account,
                     RejectedReport(seq=result.seq, reason=getattr(result, "reason", "unknown"),
                                    command_id=command_id)))

    def _books(self, now: float) -> list[Outgoing]:
        """Depth of each changed instrument, at most once per ``book_interval``."""
        if not self._dirty or self._halted:
            return []
        interval = self.settings.book_interval
        sent = self._book_sent
        engine = self.engine
        levels = self.settings.book_levels
        outgoing = []
        for instrument in sorted(self._dirty):
            if now - sent.get(instrument, -1e18) < interval:
                continue
            self._dirty.discard(instrument)
            shape = engine.book(instrument).depth(levels)
            if self._book_last.get(instrument) == shape:
                continue
            sent[instrument] = now
            outgoing.append(self._depth(instrument, shape))
        return outgoing

    def _depth(self, instrument: str, shape: tuple) -> Outgoing:
        """The depth message of *instrument*'s book *shape* (``book.depth(levels)``), now
        the last published. Retained: a bot that subscribes between two changes has the
        depth at once."""
        self._book_last[instrument] = shape
        depth = self._reports.depth(instrument, self.engine.seq, shape)
        return (book_topic(instrument), _json.encode(depth), 0, True)

    @property
    def halted(self) -> bool:
        """A batch's fsync failed after the batch ran: the engine holds what the journal
        may not, so nothing of it is shown (the web portal answers 503)."""
        return self._halted

    def books_waiting(self) -> bool:
        return bool(self._dirty) and not self._halted

    def depth_now(self, now: float | None = None) -> list[Outgoing]:
        """Depth messages that are due (for the throttle's timer)."""
        return self._books(time.monotonic() if now is None else now)


# What an operator's action gives when it is accepted (its result event), to tell a resent
# row from another row that took its id.
_OPS_RESULTS = {
    "open_account": "AccountOpened", "suspend_account": "AccountStatusChanged",
    "resume_account": "AccountStatusChanged", "close_account": "AccountStatusChanged",
    "deposit": "CashDeposited", "withdraw": "CashWithdrawn", "issue": "AllowancesIssued",
    "transfer": "AllowancesTransferred", "surrender": "AllowancesSurrendered",
    "claw_back": "AllowancesClawedBack", "emissions": "EmissionsVerified",
    "allocate": "AllowancesAllocated", "convert": "AllowancesConverted",
    "deadline": "DeadlinePassed", "halt": "TradingStatusChanged",
    "resume": "TradingStatusChanged", "eod": "TradingDayEnded", "clock": "ClockAdvanced",
    "auction_open": "AuctionOpened", "auction_close": "AuctionCleared",
    "pledge": "AllowancesPledged", "pledge_release": "PledgeReleased",
    "pledge_enforce": "PledgeEnforced",
}
_ACCOUNT_STATUS = {"suspend_account": "suspended", "resume_account": "open",
                   "close_account": "closed"}


def _instrument_of(row: Any) -> str | None:
    """What an operator's row (or its result) names: its instrument, or the currency of
    a deposit or withdrawal."""
    return getattr(row, "instrument", None) or getattr(row, "currency", None)


def _same_subject(first: Event, action: str, account: str | None,
                  instrument: str | None, row: Any = None) -> bool:
    """Could *first*, the result of an earlier command with the same id, be that of the
    command *action* on *account* and *instrument* (each compared where the event names
    it)? With the command *row* itself, its receiving account (``to_account``) and the
    pledge a pledge row names are compared too."""
    pledge = getattr(row, "pledge_id", None)
    if type(first) is CommandRejected:
        if first.action != action:
            return False
        # a refused pledge row's answer carries the pledge's id as its order_id
        if pledge is not None and first.order_id is not None and first.order_id != pledge:
            return False
    elif action in _OPS_RESULTS:
        if type(first).__name__ != _OPS_RESULTS[action]:
            return False
        if type(first) is TradingStatusChanged and first.halted != (action == "halt"):
            return False
        if action in _ACCOUNT_STATUS and getattr(first, "status", None) != _ACCOUNT_STATUS[action]:
            return False
        for name in ("pledge_id", "to_account"):
            mine, theirs = getattr(row, name, None), getattr(first, name, None)
            if mine is not None and theirs is not None and mine != theirs:
                return False
    theirs = getattr(first, "account", None)
    if theirs is not None and account is not None and theirs != account:
        return False
    named = _instrument_of(first)
    return named is None or instrument is None or named == instrument


def open_away(engine: Engine) -> tuple[dict[str, BlockPosted], dict[str, AuctionOpened],
                                       dict[str, str]]:
    """What an engine (perhaps recovered from its journal) holds open away from the book,
    as the events that opened it: its public blocks and open auctions by id, and each open
    bid's auction."""
    blocks = {
        order.order_id: BlockPosted(seq=order.accept_seq, order_id=order.order_id,
                                    account=order.account, instrument=order.instrument,
                                    side=order.side, price=order.price, qty=order.qty)
        for order, to_account in engine.open_blocks() if to_account is None
    }
    auctions: dict[str, AuctionOpened] = {}
    bids: dict[str, str] = {}
    for name, auction in engine.auctions.auctions.items():
        if auction.open:
            first = auction.initiator
            auctions[name] = AuctionOpened(
                seq=first.accept_seq, auction=name, account=first.account,
                instrument=first.instrument, side="buy" if first.is_buy else "sell",
                qty=first.qty, reserve=first.price, pricing=auction.pricing,
                primary=auction.primary)
            bids.update((bid.order_id, name) for bid in auction.bids)
    return blocks, auctions, bids


async def run_gateway(core: GatewayCore, *, host: str, port: int, username: str, password: str,
                      stop: asyncio.Event, ready: asyncio.Event | None = None,
                      retry_delay: float = 0.5,
                      may_reconnect: Callable[[], bool] | None = None,
                      refused_ends: bool = False) -> None:
    """Serve until *stop* is set; reconnect after the broker goes away (unless
    *may_reconnect*, asked then, says no: a cluster leader unsure of its lease; with
    *refused_ends*, a refused login raises ``LoginRefused``: a cluster's node that cannot
    log in must give its lease up to one that can, not hold it while retrying), waiting
    *retry_delay* and twice as long after each failure, up to ``RETRY_DELAY_MAX``. The log
    says each loss and each longer wait, then while the broker stays away once a minute."""
    import aiomqtt

    delay = retry_delay
    failures = 0
    said = -math.inf  # when the last warning was logged (loop time)
    warn_of_holidays(core)
    while not stop.is_set():
        try:
            async with aiomqtt.Client(host, port, username=username, password=password,
                                      identifier=_IDENTIFIER, clean_session=True,
                                      max_inflight_messages=1000, keepalive=30,
                                      queue_type=LaneQueue, socket_options=SOCKET_OPTIONS,
                                      will=aiomqtt.Will(GATEWAY_STATUS, GATEWAY_LOST, qos=1,
                                                        retain=True)) as client:
                client.pending_calls_threshold = PENDING_CALLS_WARNING
                try:
                    # QoS 0 on this leg: the session is clean, so QoS 1 kept nothing across
                    # a lost connection (bots resend what stays unanswered) and cost a PUBACK
                    # written for every order message read (benchmarks/fairness.py).
                    await client.subscribe(ORDERS_FILTER, qos=0)
                    await client.subscribe(OPS_COMMANDS, qos=1)
                    for topic, payload, qos, _ in core.retained():
                        await client.publish(topic, payload, qos=qos, retain=True)
                    await client.publish(GATEWAY_STATUS, GATEWAY_UP, qos=1, retain=True)
                    if failures:
                        log.warning("gateway reconnected to %s:%d after %d failed attempt(s)",
                                    host, port, failures)
                    else:
                        log.info("gateway connected to %s:%d", host, port)
                    failures, delay = 0, retry_delay
                    if ready is not None:
                        ready.set()
                    await _pump(core, client, stop)
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    # Ended on an error (a journal that cannot be written, a cluster's log
                    # that fenced or failed an append): the context's exit disconnects
                    # cleanly, and a clean disconnect sends no will, so 'up' would stay.
                    await _say_down(client, GATEWAY_FAILED)
                    raise
                if stop.is_set():  # stopped on purpose: say so (a clean disconnect sends no will)
                    await client.publish(GATEWAY_STATUS, GATEWAY_STOPPED, qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            if stop.is_set():
                break
            if refused_ends and isinstance(exc, aiomqtt.MqttCodeError) and \
                    getattr(exc.rc, "value", exc.rc) in LOGIN_REFUSED:
                raise LoginRefused(str(exc)) from None
            if may_reconnect is not None and not may_reconnect():
                log.warning("broker connection lost (%s); not reconnecting", exc)
                return
            failures += 1
            now = asyncio.get_running_loop().time()
            if failures == 1 or delay < RETRY_DELAY_MAX or now - said >= 60:
                said = now
                what = "broker connection lost" if failures == 1 else "broker still unreachable"
                log.warning("%s (%s); retrying in %.1f s", what, exc, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)


async def _say_down(client, status: bytes) -> None:
    """Publish *status* (retained) on the way out after an error, if the broker still
    takes it: what failed is raised, not this."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.publish(GATEWAY_STATUS, status, qos=1, retain=True),
                               STATUS_TIMEOUT_S)


def warn_of_holidays(core: GatewayCore) -> None:
    """Log a warning if the market's listed holidays run out within a month (or have): a
    public holiday not listed is a business day, and the market would open on it. Said
    as the gateway starts and at each end of day."""
    schedule = core.engine.market.schedule
    warning = schedule.holidays_warning(time.time_ns()) if schedule is not None else None
    if warning is not None:
        log.warning("%s", warning)


async def _clear_retained(client, topic: str) -> None:
    """Clear a retained message on *topic* (an empty retained publish); a broker whose
    rules do not let the gateway write there drops it, and the copy is ignored again at
    the next connection."""
    with contextlib.suppress(Exception):
        await client.publish(topic, b"", qos=1, retain=True)


def next_end_of_day(now_ns: int, at: int, schedule: Schedule | None) -> int:
    """The first engine time after *now_ns* that is *at* seconds into a business day of
    *schedule* (its local time; any day at UTC time *at* without a schedule)."""
    if schedule is None:
        day, second = divmod(now_ns // 10**9, 86_400)
        return ((day if second < at else day + 1) * 86_400 + at) * 10**9
    day, second = schedule.local(now_ns)
    day = day if second < at else day + 1
    while not schedule.is_business_day(day):
        day += 1
    return schedule.at(day, at)


MISSED_DAYS_MAX = 31  # the most business days' ends a restarted gateway catches up


def missed_ends_of_day(now_ns: int, at: int, schedule: Schedule | None, ended: int | None,
                       clock: int) -> list[int]:
    """The engine times of the ends of day that ``--eod`` (*at* seconds into a business
    day) would have sent while the gateway was down: of each business day after *ended*
    (the last local day the engine ended; without one, from the day of the engine's
    *clock*, if anything ever ran) whose time is past at *now_ns*, oldest first, at most
    ``MISSED_DAYS_MAX``. None without a schedule (open all hours, any day may end)."""
    if schedule is None or (ended is None and not clock):
        return []
    first = ended + 1 if ended is not None else schedule.local(clock)[0]
    today, second = schedule.local(now_ns)
    last = today if second >= at else today - 1
    days = [d for d in range(first, last + 1) if schedule.is_business_day(d)]
    return [schedule.at(d, at) for d in days[-MISSED_DAYS_MAX:]]


async def sleep_until(due_ns: int) -> None:
    """Return once the wall clock (``time.time_ns``, the clock that stamps commands) has
    reached *due_ns*. An event loop's timer may fire early by the wall clock (uvloop's are
    whole milliseconds, from a cached loop time; the monotonic clock and the wall clock
    drift apart over a day's sleep): an end of day stamped before the last session's end
    would be rejected ``market_open``, journaled and told to the operator."""
    while (left := due_ns - time.time_ns()) > 0:
        await asyncio.sleep(max(left / 1e9, 0.001))


def seconds_of_day(text: str) -> int:
    """``"HH:MM"`` as seconds after midnight; raise ``ValueError`` naming the problem."""
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(hours) == len(minutes) == 2
            and int(hours) < 24 and int(minutes) < 60):
        raise ValueError(f"expected HH:MM, got {text!r}")
    return int(hours) * 3600 + int(minutes) * 60


async def _pump(core: GatewayCore, client, stop: asyncio.Event) -> None:
    publisher = TopicSender(client, window=64, log=log)
    messages = client.messages

    work = asyncio.Event()
    core.wake = work.set

    async def receive() -> None:
        # Reads only: a message costs its decoding (or, past a full intake, its ids).
        # While messages keep coming this task does not yield, so the broker's backlog
        # moves into the intake, where each account waits behind its own commands.
        async for message in messages:
            topic = message.topic.value
            if message.retain:
                # A retained copy is old news replayed by the broker at subscription:
                # never executed (it ran, or was refused, when it was sent live).
                log.warning("ignored a retained message on %r; clearing it", topic)
                asyncio.ensure_future(_clear_retained(client, topic))
                continue
            try:
                core.receive(topic, message.payload)
            except Exception:
                log.exception("dropped a message on %r that could not be handled", topic)
                continue
            work.set()

    async def catch_up() -> None:
        # Every account's orders come in one stream, so a quiet bot's message waits
        # behind a flood's until the reader has taken them: before each flush the reader
        # has the loop until the stream is dry (or READ_SLICE has passed), and the
        # flood waits in its own intake instead (benchmarks/fairness.py).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_SLICE
        dry = 0
        while dry < QUIET_TURNS and loop.time() < deadline:
            before = core.stats.messages
            await asyncio.sleep(0)
            dry = dry + 1 if core.stats.messages == before else 0

    async def run() -> None:
        # One flush (at most flush_commands commands, shared among the accounts
        # waiting) each time the reader has nothing more in hand.
        while True:
            await work.wait()
            work.clear()
            while core.pending:
                await catch_up()
                publisher.send_all(core.flush())
                await asyncio.sleep(0)

    async def depth_timer() -> None:
        interval = max(core.settings.book_interval, 0.01)
        while True:
            await asyncio.sleep(interval / 2)
            if core.books_waiting():
                publisher.send_all(core.depth_now())
            collector.tick(idle=not core.pending and not publisher.waiting)

    async def eod_timer() -> None:
        at = seconds_of_day(core.settings.eod_at or "")
        schedule = core.engine.market.schedule
        # The ends of day missed while the gateway was down, each at its own time: the
        # next day would have traded under the day before's band, with its day orders.
        missed = missed_ends_of_day(time.time_ns(), at, schedule, core.engine.last_day_ended,
                                    core.engine.clock)
        for due in missed:
            log.warning("ending the business day of %s missed while the gateway was down",
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(due // 10**9)))
            core.end_of_day(due)
            publisher.send_all(core.flush())
        while True:
            now = time.time_ns()
            due = next_end_of_day(now, at, schedule)
            log.info("the next end of day in %.0f s", (due - now) / 1e9)
            await sleep_until(due)
            core.end_of_day()
            publisher.send_all(core.flush())

    async def expiry_timer() -> None:
        # A gtd order leaves the book at its time, not at the next command: when the
        # earliest is due, the clock is moved on (EXPIRY_CHECK_S late at most).
        while True:
            due = core.engine.next_expiry()
            wait = EXPIRY_CHECK_S if due is None else min(
                max((due - time.time_ns()) / 1e9, 0.0), EXPIRY_CHECK_S)
            # Due with commands waiting (they move the clock): look again a little later,
            # never in a loop of zero waits that would keep the reader from the loop.
            await asyncio.sleep(max(wait, EXPIRY_RETRY_S))
            core.expire_due()

    collector = Collector()  # full collection passes when quiet (benchmarks/fairness.py)
    collector.start()
    tasks = [
        asyncio.ensure_future(receive()),
        asyncio.ensure_future(depth_timer()),
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(run()),
        asyncio.ensure_future(expiry_timer())
    ]
    if core.settings.eod_at:
        tasks.append(asyncio.ensure_future(eod_timer()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not tasks[2] and task.exception() is not None:
                raise task.exception()
        while core.pending:
            publisher.send_all(core.flush())
        await publisher.drain()
    finally:
        collector.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
