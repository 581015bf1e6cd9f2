"""One ``carbonx serve --cluster`` process: a follower applying the log, or the leader.

Every node starts as a follower: it loads the newest snapshot (if the cluster has one),
applies the log after it, and goes on applying it as it grows, so its engine and state
hash are the leader's. It also tries, every LEASE_S / 10, to take the lease. The node that
takes it reads the log to its end, writes a leader's marker with the stream's expected
last sequence (a fence: a node still acting as leader can append nothing after it) and
only then connects to the broker as the gateway, with the stream as its journal
(:class:`StreamJournal`): a batch acts only once JetStream has stored it.

A leader renews its lease every LEASE_S / 3. When another node has taken it (this one
was paused or cut off), or an append is fenced, it stops being the gateway and follows
again from what it last appended; what it held unanswered, the bots resend to the new
leader, which answers a command id it has seen with its first answer. A renewal or an
append that goes unanswered (JetStream electing a leader after a NATS server was lost)
is tried again: for up to LEASE_GRACE_S the leader rides that out.

The followers write the cluster's snapshots; the leader only while none reports.

Every node must run the same market: a leader's marker carries its market's fingerprint,
a snapshot its market's text, and a node that finds another market in either stops
(:class:`OtherMarket`) rather than apply the log under other rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any

from exchange import Engine
from exchange.commands import AnyCommand
from exchange.market import Market
from exchange.persist import decode_state, encode_state
from exchange.sequencer import Sequencer
from gateway.cluster.log import (APPEND_TIMEOUT_S, HOLDER_SEPARATOR, LEASE_GRACE_S, LEASE_S,
                                 ClusterError, ClusterLog, Fenced, NatsThread)

log = logging.getLogger("carbonx.cluster")

STATUS_EVERY = 1.0  # seconds between two status reports of a node
QUIET_REPORTS = 2  # reports at the same engine seq before a node hashes its state
# A follower that reported this recently is taken to be alive, or coming back: a NATS
# outage of more than a few seconds stales every report, and a leader that then wrote the
# snapshot itself held the gateway up for seconds (7.6 s for 55 MB).
FOLLOWER_FRESH_S = 60.0
LEASE_CALL_S = 2.0  # a follower's try at the lease (tried again soon if it fails)
TAKE_SETTLE_S = 0.03  # after taking the lease, before reading whose it is (_try_lease)
APPEND_RETRY_PAUSE_S = 0.1  # between two tries of an append not acknowledged
APPEND_GIVE_UP_S = LEASE_GRACE_S + 5  # a batch not stored by then fails the leader
SNAPSHOT_EVERY = 200_000  # commands between two snapshots of the cluster


class OtherMarket(ClusterError):
    """The cluster runs another market than this node's: it must not follow or lead."""


def market_fingerprint(market: Market) -> str:
    """A short digest of *market*'s text (its rules, ``--always-open`` and
    ``--no-position-limits`` included): two nodes run the same market if they agree."""
    return hashlib.blake2b(market.text.encode(), digest_size=8).hexdigest()


_SAME_MARKET = ("start every node with the same --market file, and --always-open and "
                "--no-position-limits alike")


class StreamJournal:
    """The Sequencer's journal on the cluster's stream: ``append_many`` gathers a batch,
    ``commit`` appends it with the expected last sequence and waits for JetStream's
    acknowledgement (raising :class:`Fenced` if another node has appended since)."""

    def __init__(self, thread: NatsThread, stream: ClusterLog, last: int, seq: int,
                 node: str) -> None:
        self._thread = thread
        self._stream = stream
        self._node = node
        self.last = last  # the stream's last sequence, as this node last saw it
        self.seq = seq  # the engine's command count, journaled
        self._pending: list[AnyCommand] = []
        self.snapshot_due: Callable[[Engine], None] | None = None
        self.lease_lost = False  # set from the NATS thread: stop trying appends

    def append_many(self, commands: list[AnyCommand]) -> int:
        self._pending += commands
        self.seq += len(commands)
        return self.seq

    def sync(self) -> int:
        """The last command the stream holds: ``commit`` waits for its append itself."""
        return self.seq

    def commit(self, *, wait: bool = True) -> int:
        """Append the gathered batch and wait for it (whatever *wait* says: the batch
        must be stored before it acts, as the other nodes apply only what the stream
        holds). An append not acknowledged (JetStream electing a leader, a server lost)
        is tried again, the same message, until it is stored or fenced, or the lease is
        lost (``lease_lost``) or APPEND_GIVE_UP_S pass."""
        if self._pending:
            pending, self._pending = self._pending, []
            began = time.monotonic()
            failed = ""
            while True:
                try:
                    self.last = self._thread.call(
                        self._stream.append(pending, self.last, self._node),
                        APPEND_TIMEOUT_S + 1)
                    break
                except Fenced:
                    self.seq -= len(pending)
                    raise
                except Exception as exc:
                    if not failed:  # said once for the batch, however often it is tried
                        log.warning("%s: the log did not take a batch (%s); trying again",
                                    self._node, _reason(exc))
                    failed = _reason(exc)
                    if self.lease_lost or time.monotonic() - began >= APPEND_GIVE_UP_S:
                        # Not known to be stored: the batch does not act here; if it
                        # was stored, this node applies it when it follows again, and
                        # the bots' resends are answered from it.
                        self.seq -= len(pending)
                        raise ClusterError(f"an append was not acknowledged: {failed}"
                                           ) from None
                    time.sleep(APPEND_RETRY_PAUSE_S)
            if failed:
                log.warning("%s: the log took the batch after %.2f s", self._node,
                            time.monotonic() - began)
        return self.seq

    def snapshot(self, engine: Engine, *, background: bool = False) -> None:
        if self.snapshot_due is not None:
            self.snapshot_due(engine)


class ClusterNode:
    """A node of the cluster (see the module)."""

    def __init__(self, market: Market, thread: NatsThread, stream: ClusterLog, node: str, *,
                 say: Callable[[str], None] = print, snapshot_every: int = SNAPSHOT_EVERY
                 ) -> None:
        self.market = market
        self.fingerprint = market_fingerprint(market)
        self.snapshot_every = snapshot_every
        self._snapshot_seq = 0  # the engine seq of this node's last snapshot (or load)
        self._sending: asyncio.Future[None] | None = None  # a snapshot on its way
        self.thread = thread
        self.stream = stream
        self.node = node
        # This run of the node: the lease's holder and the appender of its log entries
        # (whose message ids make a retried append idempotent). Two processes started with
        # one --node-id must never take each other's lease or appends for their own: a
        # paused one, resumed, had its appends answered as duplicates of the other's and
        # took them as stored (acknowledged orders lost).
        self.holder = f"{node}{HOLDER_SEPARATOR}{secrets.token_hex(4)}"
        self.say = say
        self.engine = Engine(market, ledger=True)
        self.applied = 0  # the stream sequence the engine holds everything up to
        self.role = "follower"
        self.revision: int | None = None
        self._hash_at = (-1, "")  # (engine seq, state hash) last computed
        self._reported_seq = -1  # the engine seq at the last report
        self._quiet = 0  # reports in a row at the same engine seq (in one role)
        self.journal: StreamJournal | None = None  # while leading
        self.lost_why = ""  # why the lease was lost, when it was
        self.renewed = 0.0  # when the lease was last renewed (time.monotonic)
        # Followers wait a little more or less than one another before taking a stale
        # lease over: nats-server 2.9 checks a bucket's compare-and-set against what it
        # has applied, not what it is applying, so two takeovers of one revision at the
        # same instant can both succeed (seen in one run in four of the failover test,
        # staggered or not: followers look every LEASE_S / 10). The log's fence still lets
        # only the later leader write, and a node that took the lease reads it back
        # before it acts as leader (_try_lease).
        self._stagger = (zlib.crc32(node.encode()) % 200) / 1000

    async def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(asyncio.wrap_future(self.thread.submit(coro)), timeout)

    # --- following -------------------------------------------------------------------
    async def load(self) -> None:
        """Start from the newest snapshot, if the cluster has one."""
        snapshot = await self._call(self.stream.load_snapshot(), 60)
        if snapshot is None:
            return
        seq, data = snapshot
        try:
            engine = decode_state(data)
        except Exception as exc:  # a snapshot that does not decode: the log from its start
            log.warning("the cluster's snapshot at %d could not be read (%s); replaying the "
                        "log from its start", seq, exc)
            return
        if engine.market.text != self.market.text:
            raise OtherMarket(
                f"the cluster's snapshot at log sequence {seq} is of another market "
                f"(fingerprint {market_fingerprint(engine.market)}; this node's is "
                f"{self.fingerprint}): {_SAME_MARKET}")
        self.engine = engine
        self.applied = seq
        self._snapshot_seq = self.engine.seq
        self.say(f"{self.node}: loaded the snapshot at log sequence {seq} "
                 f"(engine seq {self.engine.seq})")

    async def catch_up(self, slice_s: float = 0.5) -> int:
        """Apply the log after ``applied``, to its end or for *slice_s* seconds (a log
        that grows as fast as it is read has no end to wait for); return how many
        entries were applied."""
        sequencer = Sequencer(self.engine)
        applied = 0
        deadline = time.monotonic() + slice_s
        while time.monotonic() < deadline:
            entries = await self._call(self.stream.read(self.applied + 1, 2000), 30)
            if not entries:
                return applied
            for entry in entries:
                if entry.kind == "batch":
                    sequencer.run(entry.commands, [])
                elif entry.market is not None and entry.market != self.fingerprint:
                    raise OtherMarket(
                        f"{entry.node or 'a node'} led from log sequence {entry.seq} on another "
                        f"market (fingerprint {entry.market}; this node's is "
                        f"{self.fingerprint}): {_SAME_MARKET}")
                self.applied = entry.seq
                applied += 1
        return applied

    async def _try_lease(self, seen: tuple[int, float] | None) -> int | None:
        """Take the lease if it is free, or if its holder has not renewed the revision
        seen for LEASE_S (by this node's clock); its revision if taken. Raises if the
        bucket could not answer the attempt (the caller then starts *seen* again)."""
        revision = await self._call(self.stream.take_lease(self.holder), LEASE_CALL_S)
        if revision is None and seen is not None and \
                time.monotonic() - seen[1] >= LEASE_S + self._stagger:
            revision = await self._call(self.stream.take_stale_lease(self.holder, seen[0]),
                                        LEASE_CALL_S)
            if revision is not None:
                log.warning("%s: took over the lease, not renewed for %.2f s (revision %d)",
                            self.node, time.monotonic() - seen[1], seen[0])
        if revision is None:
            return None
        # nats-server 2.9 can let two compare-and-sets of one revision both succeed (see
        # _stagger): the lease is this node's only if, once both would have been stored,
        # the bucket's leader names this node at the revision it was given.
        await asyncio.sleep(TAKE_SETTLE_S)
        state = await self._call(self.stream.lease_state(), LEASE_CALL_S)
        if state != (self.holder, revision):
            log.warning("%s: the lease it took at revision %d is %s; following", self.node,
                        revision, "free" if state is None else f"{state[0]}'s at {state[1]}")
            return None
        return revision

    def state_hash(self) -> tuple[int, str]:
        """(engine seq, state hash) as of the last time the engine was quiet: hashed
        only when nothing was applied for QUIET_REPORTS reports, as hashing the whole
        state takes time (0.4-1 s at 200,000 resting orders: hashed each second, a third
        of a busy leader's time; hashed at a failover, as long again before the new
        leader serves: benchmarks/cluster.py)."""
        seq = self.engine.seq
        self._quiet = self._quiet + 1 if seq == self._reported_seq else 0
        self._reported_seq = seq
        if self._hash_at[0] != seq and self._quiet >= QUIET_REPORTS:
            self._hash_at = (seq, self.engine.state_hash())
        return self._hash_at

    async def report(self) -> None:
        applied = self.journal.last if self.journal is not None else self.applied
        hash_seq, state_hash = self.state_hash()
        status = {"role": self.role, "applied": applied, "engine_seq": self.engine.seq,
                  "state_hash": state_hash, "hash_seq": hash_seq, "at": time.time()}
        try:
            await self._call(self.stream.report(self.node, status), 5)
        except Exception as exc:
            log.warning("%s: could not report its status: %s", self.node, exc)

    async def follow(self, stop: asyncio.Event) -> bool:
        """Apply the log as it grows until this node takes the lease (True) or *stop*."""
        self.role = "follower"
        reported = 0.0
        seen: tuple[int, float] | None = None  # the lease's revision, and since when
        while not stop.is_set():
            began = time.monotonic()
            try:
                count = await self.catch_up()
                revision = await self._try_lease(seen)
                if revision is None:
                    state = await self._call(self.stream.lease_state(), LEASE_CALL_S)
                    if state is not None and (seen is None or seen[0] != state[1]):
                        seen = (state[1], time.monotonic())
                        log.debug("%s: the lease is %s's at revision %d", self.node, *state)
            except OtherMarket:
                raise
            except Exception as exc:  # NATS busy or a server gone: the others answer soon
                log.warning("%s: NATS did not answer (%s); trying again", self.node,
                            _reason(exc))
                # Nor could the lease's holder be seen renewing it: its time starts
                # again once the bucket answers.
                seen = None
                await asyncio.sleep(0.5)
                continue
            if count:
                log.debug("%s: applied %d entries to log sequence %d in %.3f s", self.node,
                          count, self.applied, time.monotonic() - began)
                try:
                    await self._snapshot_if_due()
                except Exception as exc:
                    log.warning("%s: no snapshot now: %s", self.node, _reason(exc))
            if revision is not None:
                self.revision = revision
                return True
            if time.monotonic() - reported >= STATUS_EVERY:
                reported = time.monotonic()
                await self.report()
            try:
                await asyncio.wait_for(stop.wait(), LEASE_S / 10)
            except TimeoutError:
                pass
        return False

    # --- leading ---------------------------------------------------------------------
    async def become_leader(self, lost: asyncio.Event) -> StreamJournal:
        """Read the log to its end and fence it with a leader's marker (again while
        entries keep coming, as long as the lease holds); raise Fenced if the lease is
        lost first."""
        while True:
            await self.catch_up()
            if lost.is_set():
                raise Fenced("the lease was lost before the log was read to its end")
            try:
                last = await self._call(
                    self.stream.mark_leader(self.holder, self.applied, self.fingerprint))
                break
            except Fenced:
                # An entry came after the last one read: read on, with a fresh reader
                # (the one kept may have been on a NATS server that is gone).
                await self._call(self.stream.stop_reading())
                continue
        await self._call(self.stream.stop_reading())
        self.applied = last
        self.role = "leader"
        self._quiet = 0  # no hashing as it starts to serve
        self.journal = StreamJournal(self.thread, self.stream, last, self.engine.seq, self.holder)
        self.journal.lease_lost = lost.is_set()
        return self.journal

    def keep_lease(self, lost: asyncio.Event) -> Any:
        """Renew the lease until another node holds it, or until it could not be
        renewed for LEASE_GRACE_S, then set *lost* (and the journal's ``lease_lost``):
        in the NATS thread, so a gateway busy in a long flush (or waiting for an append)
        never lets its lease lapse. Returns the future to cancel when leading ends."""
        loop = asyncio.get_running_loop()

        def lose(why: str) -> None:
            self.lost_why = why
            if self.journal is not None:
                self.journal.lease_lost = True
            loop.call_soon_threadsafe(lost.set)

        async def keep() -> None:
            self.renewed = time.monotonic()
            pause = LEASE_S / 3
            while True:
                await asyncio.sleep(pause)
                assert self.revision is not None
                try:
                    revision = await asyncio.wait_for(
                        self.stream.renew_lease(self.holder, self.revision), LEASE_S / 2)
                except Exception as exc:  # not known: JetStream may be electing
                    if time.monotonic() - self.renewed >= LEASE_GRACE_S:
                        lose(f"its lease could not be renewed for {LEASE_GRACE_S:.0f} s: "
                             f"{_reason(exc)}")
                        return
                    # Tried again at once: the bucket back, the lease must be renewed
                    # before a follower's second of patience (counted from the
                    # bucket's first answer) runs out.
                    pause = LEASE_S / 20
                    continue
                pause = LEASE_S / 3
                if revision is None:
                    lose("its lease was taken")
                    return
                self.revision = revision
                if time.monotonic() - self.renewed > 0.8 * LEASE_S:
                    log.warning("%s: the lease was renewed %.2f s after the last time",
                                self.node, time.monotonic() - self.renewed)
                self.renewed = time.monotonic()

        return self.thread.submit(keep())

    def lease_fresh(self) -> bool:
        """Whether the lease was renewed within two lease periods: a leader that has lost
        the broker connection reconnects only then (otherwise the new leader's login,
        not the broker, is the likely reason, and the two would push each other off)."""
        return time.monotonic() - self.renewed < 2 * LEASE_S

    def snapshot(self, journal: StreamJournal, engine: Engine) -> None:
        """The leader's turn to snapshot, every ``snapshot_every`` commands: left to the
        followers (``_snapshot_if_due``) while one reports; written here, in the
        foreground, only when none does."""
        try:
            statuses = self.thread.call(self.stream.statuses(), 5)
        except Exception as exc:
            log.debug("%s: the nodes' reports could not be read: %s", self.node, exc)
            statuses = {}
        now = time.time()
        if any(name != self.node and status.get("role") == "follower"
               and now - status.get("at", 0) < FOLLOWER_FRESH_S
               for name, status in statuses.items()):
            return
        try:
            self.thread.call(
                self._write_snapshot(journal.last, engine.seq, encode_state(engine)), 120)
        except Exception as exc:  # not written in time: the gateway goes on all the same
            log.warning("%s: the snapshot could not be written: %s", self.node, _reason(exc))

    async def _write_snapshot(self, applied: int, seq: int, data: bytes) -> None:
        """Store a snapshot (in the NATS thread) and say so; a failure is logged: the
        log still holds everything, the next snapshot comes later."""
        try:
            await self.stream.save_snapshot(applied, seq, data)
            self.say(f"{self.node}: snapshot at log sequence {applied} ({len(data):,} bytes)")
        except Exception as exc:
            log.warning("%s: the snapshot could not be written: %s", self.node, _reason(exc))

    async def _snapshot_if_due(self) -> None:
        """A follower writes the cluster's snapshot every ``snapshot_every`` commands
        (encoding a big state takes a second: off the leader's way, benchmarks/cluster.py),
        unless another node has just written one. It is sent in the background, so the
        node goes on following, and can take the lease, meanwhile."""
        if self.engine.seq - self._snapshot_seq < self.snapshot_every:
            return
        if self._sending is not None and not self._sending.done():
            return  # the last one is still on its way
        self._snapshot_seq = self.engine.seq
        latest = await self._call(self.stream.latest_snapshot(), 5)
        if latest is not None and self.engine.seq - latest.get("engine_seq", 0) < \
                self.snapshot_every // 2:
            return
        # No deadline here: _write_snapshot ends (each put has JetStream's own timeout)
        # and says what failed.
        self._sending = asyncio.wrap_future(self.thread.submit(
            self._write_snapshot(self.applied, self.engine.seq, encode_state(self.engine))))


async def run_node(node: ClusterNode, *, serve: Callable[..., Any], stop: asyncio.Event) -> None:
    """Follow, lead when the lease comes, follow again when it goes, until *stop*.
    *serve(journal, lost)* runs the gateway until *lost* (or *stop*) is set and returns."""
    began = time.monotonic()
    await node.load()
    log.info("%s: loaded in %.2f s; reading the log from %d", node.node,
             time.monotonic() - began, node.applied + 1)
    while not stop.is_set():
        try:
            followed = await node.follow(stop)
        except OtherMarket:
            # It stops: said so, not left to show as "silent" (killed, paused, cut off).
            node.role = "stopped"
            await node.report()
            raise
        if not followed:
            # stopped while following: say so, as a leader stopping does
            node.role = "stopped"
            await node.report()  # (a NATS that is gone is logged, not raised)
            break
        lost = asyncio.Event()
        node.lost_why = ""
        keeper = node.keep_lease(lost)
        try:
            journal = await node.become_leader(lost)
        except Exception as exc:  # fenced, or NATS failed it: the lease goes with it
            keeper.cancel()
            if node.revision is not None:
                with contextlib.suppress(Exception):
                    await node._call(node.stream.release_lease(node.revision), 5)
            node.revision = None
            if isinstance(exc, OtherMarket):
                raise
            node.say(f"{node.node}: could not lead ({_reason(exc)}); following")
            continue
        node.say(f"{node.node}: leads from log sequence {journal.last} "
                 f"(engine seq {node.engine.seq})")
        reporter = asyncio.ensure_future(_report_while(node, lost))
        why = "stopped"
        try:
            why = await serve(journal, lost)
        except Fenced:
            why = "an append was fenced: another node leads"
        except ClusterError as exc:
            why = f"the log failed: {exc}"
        except BaseException:
            # This node cannot serve at all (its broker login refused, ...) and stops:
            # its lease goes now, not after the followers' second of patience.
            keeper.cancel()
            if node.revision is not None:
                with contextlib.suppress(Exception):  # (a cancellation meanwhile goes on)
                    await node._call(node.stream.release_lease(node.revision), 5)
            node.revision = None
            node.role = "stopped"
            with contextlib.suppress(Exception):
                await node.report()
            raise
        finally:
            keeper.cancel()
            reporter.cancel()
            node.applied = journal.last
            node.journal = None
            node.role = "follower"
        if stop.is_set():
            if node.revision is not None:
                await node._call(node.stream.release_lease(node.revision), 5)
            node.role = "stopped"
            await node.report()
            return
        node.say(f"{node.node}: no longer leads ({why}); following from log sequence "
                 f"{node.applied}")
        node.revision = None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _report_while(node: ClusterNode, lost: asyncio.Event) -> None:
    while not lost.is_set():
        await node.report()
        await asyncio.sleep(STATUS_EVERY)
