"""The command log on NATS JetStream: one stream, a leader's lease, snapshots, node status.

The stream ``CARBONX`` (subject ``carbonx.log``, file storage, up to three replicas kept
by JetStream's Raft) holds the exchange's commands in the order they act: each message a
batch as one flush of the gateway ran it (msgpack of the list of commands), or a leader's
marker. A leader appends a batch with the stream's expected last sequence
(``Nats-Expected-Last-Sequence``): a leader that has been replaced, whose log is behind,
is refused (:class:`Fenced`) before anything it holds acts.

Beside it, three key-value buckets: ``carbonx_leader`` (the lease: one key, ``leader``,
created by whoever takes it and renewed with its revision; a node that has seen the same
revision for LEASE_S by its own clock takes it over with that revision, so no server-side
expiry is needed, and the bucket has none), ``carbonx_nodes``
(each node's role, applied sequence and state hash, for ``carbonx cluster-status``) and
``carbonx_snapshots`` (the newest snapshot: the engine's versioned state,
``exchange.persist``, at a stream sequence, in chunks).

The NATS client runs in a thread of its own (:class:`NatsThread`): the gateway journals
from inside a flush, which is synchronous, so a batch's append waits there for
JetStream's acknowledgement as the local journal waits for its fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from exchange.commands import AnyCommand

log = logging.getLogger("carbonx.cluster")

STREAM = "CARBONX"
SUBJECT = "carbonx.log"
LEASE_BUCKET = "carbonx_leader"
LEASE_KEY = "leader"
NODES_BUCKET = "carbonx_nodes"
SNAPSHOT_BUCKET = "carbonx_snapshots"
LEASE_S = 1.0  # a lease not renewed for this long is gone
# JetStream's Raft groups elect a new leader 4-9 s after theirs is lost (nats-server's
# fixed election timeouts, and a second round when the first fails); meanwhile neither
# the lease nor the log answers. A leader rides that out: it steps down when the lease
# is positively taken, when it has not been able to renew it for LEASE_GRACE_S, or when
# it loses the broker connection while its lease is not fresh (ClusterNode.lease_fresh).
LEASE_GRACE_S = 20.0
APPEND_TIMEOUT_S = 2.0  # one try of an append; a retry of it is idempotent
READER_CHECK_S = 1.0  # a reader quiet this long is checked against the stream's end
READER_CREATE_S = 1.0  # one try at making a reader (an ordered consumer); a few are made
READER_TRIES = 3
READER_RETRY_S = 5.0  # after the tries failed, entries are got one by one this long
GET_LIMIT = 200  # entries got one by one in one read
KIND = "Carbonx-Kind"  # header: "batch" or "leader"
NODE = "Carbonx-Node"  # header: the node that appended the entry (its run: see below)
MARKET = "Carbonx-Market"  # header of a leader's marker: its market's fingerprint
# A lease holder, and an entry's appender, is a node's run: its name, this, and a token of
# the process (ClusterNode.holder); status rows and cluster-status show the name alone.
HOLDER_SEPARATOR = "#"
SNAPSHOT_CHUNK = 512 * 1024  # bytes a snapshot key holds (under JetStream's 1 MiB message)

_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(list[AnyCommand]).decode

T = TypeVar("T")


class ClusterError(Exception):
    """The cluster cannot be reached or used; the message says why."""


class Fenced(ClusterError):
    """An append was refused: the stream holds entries this node has not seen, so
    another node leads (or led) since. Nothing of the batch acted."""


class NatsThread:
    """An asyncio loop in a daemon thread for the NATS client; ``call`` runs a coroutine
    there and waits for it, ``submit`` hands back a future."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nats",
                                        daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """End what still runs there (the client's readers), then the loop and thread."""

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                self.call(finish(), 5)
            except Exception as exc:  # a stuck task: the loop stops all the same
                log.debug("nats thread: %s", exc)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


@dataclass
class Entry:
    """One message of the stream: a batch of commands or a leader's marker."""

    seq: int
    kind: str
    commands: list[AnyCommand]
    node: str | None = None  # who appended it (a leader's marker: the new leader)
    market: str | None = None  # a leader's marker: the fingerprint of its market, if given


def _entry(seq: int, headers: dict | None, data: bytes) -> Entry:
    headers = headers or {}
    kind = headers.get(KIND, "batch")
    appender = headers.get(NODE)
    return Entry(seq, kind, _decode_batch(data) if kind == "batch" else [],
                 None if appender is None else node_name(appender), headers.get(MARKET))


def parse_servers(text: str) -> list[str]:
    """``nats://HOST:PORT[,nats://HOST:PORT...]`` as a list; ``ValueError`` if empty or
    not nats:// addresses."""
    servers = [s.strip() for s in text.split(",") if s.strip()]
    if not servers or any(not s.startswith("nats://") for s in servers):
        raise ValueError(f"expected nats://HOST:PORT[,...], got {text!r}")
    return servers


def node_name(holder: str) -> str:
    """The node's name in a lease holder or appender (``NAME#TOKEN``; older ones are the
    name alone)."""
    name, separator, _ = holder.rpartition(HOLDER_SEPARATOR)
    return name if separator else holder


class ClusterLog:
    """The stream and buckets on one NATS connection (coroutines: run them in the
    :class:`NatsThread`)."""

    def __init__(self, servers: Sequence[str], *, replicas: int | None = None) -> None:
        self.servers = list(servers)
        self.replicas = replicas or min(3, len(self.servers))
        self.nc: Any = None
        self.js: Any = None
        self.quick_js: Any = None
        self.lease: Any = None
        self.nodes: Any = None
        self.snapshots: Any = None
        self._reader: Any = None  # the ordered consumer ``read`` keeps
        self._next = 0  # the sequence it delivers next
        self._quiet_since = 0.0  # when it last delivered (by the NATS thread's loop clock)
        self._behind: int | None = None  # the stream's end when the reader was quiet
        self._reader_failed = -READER_RETRY_S  # when a reader last could not be made

    async def open(self, *, timeout: float = 5.0, create: bool = True) -> None:
        """Connect, and find (with *create*, make if missing) the stream and buckets."""
        import nats
        from nats.js.api import KeyValueConfig, StorageType, StreamConfig

        seen: list[Exception] = []  # what nats-py met while connecting (refused, ...)

        async def quiet(exc: Exception) -> None:  # nats-py would print each traceback
            log.debug("nats: %s", exc)
            if len(seen) < 8:
                seen.append(exc)

        async def gone() -> None:
            if self.nc is not None and not self.nc.is_closed:
                log.warning("lost the connection to NATS; reconnecting")

        try:
            # Reconnects without end once connected (a node rides out a NATS restart);
            # the first connection has *timeout* seconds.
            self.nc = await asyncio.wait_for(nats.connect(
                self.servers, connect_timeout=min(timeout, 2.0), max_reconnect_attempts=-1,
                reconnect_time_wait=0.2, allow_reconnect=True, error_cb=quiet,
                disconnected_cb=gone), timeout)
        except Exception as exc:  # nats raises its own, OSErrors and the timeout
            # A timeout says only that it gave up: the last error it met says why.
            cause = seen[-1] if isinstance(exc, TimeoutError) and seen else exc
            reason = str(cause) or type(cause).__name__
            raise ClusterError(f"cannot reach NATS at {', '.join(self.servers)}: {reason}"
                               ) from None
        self.js = self.nc.jetstream(timeout=timeout)
        # For requests a node must not wait on long: making a reader, checking one.
        self.quick_js = self.nc.jetstream(timeout=READER_CREATE_S)
        if not create:
            looked_for = f"stream {STREAM}"
            try:
                await self.js.stream_info(STREAM)
                looked_for = f"bucket {LEASE_BUCKET}"  # (the stream is there)
                self.lease = await self.js.key_value(LEASE_BUCKET)
                looked_for = f"bucket {NODES_BUCKET}"
                self.nodes = await self.js.key_value(NODES_BUCKET)
                looked_for = f"bucket {SNAPSHOT_BUCKET}"
                self.snapshots = await self.js.key_value(SNAPSHOT_BUCKET)
            except Exception as exc:
                # Only a "not found" says there is no stream or bucket: a timeout is
                # JetStream electing a leader (4-9 s after a server is lost), and saying
                # "no stream" then could send an operator to make a new one.
                from nats.js.errors import NotFoundError, ServiceUnavailableError

                if isinstance(exc, ServiceUnavailableError):
                    why = ("JetStream does not answer: is it enabled on the servers, and are "
                           "enough of them up to elect its leader (two of three)?")
                elif isinstance(exc, NotFoundError):
                    why = f"no {looked_for}"
                else:
                    why = (f"JetStream does not answer now ({str(exc) or type(exc).__name__}):"
                           " it may be electing a leader after a server was lost; try again "
                           "in a few seconds")
                raise ClusterError(f"no carbonx cluster on {', '.join(self.servers)} ({why})"
                                   ) from None
            return
        config = StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE,
                              num_replicas=self.replicas)

        async def stream() -> None:
            try:
                await self.js.stream_info(STREAM)  # there already: nothing to create
            except Exception:
                await self.js.add_stream(config)

        async def bucket(name: str, **params: Any) -> Any:
            try:
                return await self.js.key_value(name)
            except Exception:
                return await self.js.create_key_value(
                    KeyValueConfig(bucket=name, replicas=self.replicas,
                                   storage=StorageType.FILE, **params))

        # JetStream's API can be slow to answer while its servers elect a leader or are
        # busy: a few tries before giving up.
        for attempt in range(5):
            try:
                await stream()
                # No age limit: while JetStream elects the bucket's leader no one can
                # renew the lease, and an age limit would then clear it under its holder.
                self.lease = await bucket(LEASE_BUCKET, history=1)
                self.nodes = await bucket(NODES_BUCKET, history=1)
                self.snapshots = await bucket(SNAPSHOT_BUCKET, history=1, max_value_size=-1)
                return
            except Exception as exc:
                last = exc
                log.warning("JetStream did not set up the log (%s); trying again", exc)
                await asyncio.sleep(0.5 * 2**attempt)
        hint = (" (is JetStream enabled on the NATS servers? nats-server -js, or a jetstream "
                "block in its configuration)" if type(last).__name__ == "ServiceUnavailableError"
                else "")
        raise ClusterError(f"cannot set up the stream {STREAM} and its buckets: {last}{hint}")

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    # --- the log ---------------------------------------------------------------------
    async def append(self, commands: list[AnyCommand], expected_last: int, node: str) -> int:
        """Append one batch of *node*'s after *expected_last*; return its sequence."""
        return await self._publish(_encode(commands), "batch", expected_last, node)

    async def mark_leader(self, node: str, expected_last: int, market: str | None = None) -> int:
        """Append a leader's marker of *node* after *expected_last*, with its *market*'s
        fingerprint; return its sequence."""
        return await self._publish(node.encode(), "leader", expected_last, node,
                                   {} if market is None else {MARKET: market})

    async def _publish(self, payload: bytes, kind: str, expected_last: int, node: str,
                       more: dict[str, str] | None = None) -> int:
        from nats.js.errors import APIError

        # The message id makes a retried append idempotent: JetStream answers a repeat of
        # a stored one with its sequence (a duplicate) before it checks the fence.
        headers = {KIND: kind, NODE: node, "Nats-Expected-Last-Sequence": str(expected_last),
                   "Nats-Msg-Id": f"{node}:{expected_last}", **(more or {})}
        try:
            ack = await self.js.publish(SUBJECT, payload, stream=STREAM, headers=headers,
                                        timeout=APPEND_TIMEOUT_S)
        except APIError as exc:
            if "wrong last sequence" in str(exc).lower() or getattr(exc, "err_code", 0) == 10071:
                raise Fenced(f"the stream is past {expected_last}: another node leads") from None
            raise ClusterError(f"the log refused a batch: {exc}") from None
        return ack.seq

    async def read(self, first: int, limit: int = 1000, wait: float = 0.05,
                   most: float = 0.2) -> list[Entry]:
        """Up to *limit* entries from sequence *first* on, as they come: an ordered
        consumer (JetStream's own replay of a stream, in order, gaps recovered) kept
        from one call to the next while they ask for the entry after the last; fewer at
        the log's end (*wait* seconds with nothing new) or after *most* seconds."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import ConsumerConfig, DeliverPolicy

        clock = asyncio.get_running_loop().time
        if self._reader is None or self._next != first:
            await self.stop_reading()
            if clock() - self._reader_failed < READER_RETRY_S:
                return await self._read_by_get(first, limit)
            config = (ConsumerConfig(deliver_policy=DeliverPolicy.ALL) if first <= 1 else
                      ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                     opt_start_seq=first))
            try:
                self._reader = await self._new_reader(config)
            except (TimeoutError, NatsTimeout):
                # JetStream makes consumers through its meta leader, which may be in an
                # election of its own: the stream's leader still answers gets.
                self._reader_failed = clock()
                log.warning("the log's reader could not be made; reading by sequence")
                return await self._read_by_get(first, limit)
            self._next = first
            self._quiet_since = clock()
            self._behind = None
        entries: list[Entry] = []
        deadline = clock() + most
        while len(entries) < limit and clock() < deadline:
            try:
                msg = await self._reader.next_msg(timeout=wait)
            except (TimeoutError, NatsTimeout):
                if not entries and clock() - self._quiet_since >= READER_CHECK_S:
                    await self._check_reader()
                break
            seq = msg.metadata.sequence.stream
            if seq != self._next:
                raise ClusterError(f"the log went from {self._next - 1} to {seq}: entries "
                                   "are missing (purged?)")
            entries.append(_entry(seq, msg.headers, msg.data))
            self._next = seq + 1
            self._quiet_since = clock()
            self._behind = None
        return entries

    async def _read_by_get(self, first: int, limit: int) -> list[Entry]:
        """Up to *limit* (at most GET_LIMIT) entries from *first*, one request each
        (answered by the stream's leader): for when no reader can be made."""
        from nats.js.errors import NotFoundError

        entries: list[Entry] = []
        for seq in range(first, first + min(limit, GET_LIMIT)):
            try:
                msg = await self.js.get_msg(STREAM, seq=seq)
            except NotFoundError:  # past the log's end
                break
            entries.append(_entry(seq, msg.headers, msg.data))
        return entries

    async def _new_reader(self, config: Any) -> Any:
        """An ordered consumer, tried READER_TRIES times: with a NATS server of the
        stream's lost, JetStream may place the consumer there, and the request times out
        (a third of the time, three servers less one)."""
        from nats.errors import TimeoutError as NatsTimeout

        for _ in range(READER_TRIES - 1):
            try:
                return await self.quick_js.subscribe(SUBJECT, ordered_consumer=True,
                                                     config=config)
            except (TimeoutError, NatsTimeout):
                log.debug("the log's reader was not made in %.1f s; trying again",
                          READER_CREATE_S)
        return await self.quick_js.subscribe(SUBJECT, ordered_consumer=True, config=config)

    async def _check_reader(self) -> None:
        """Every READER_CHECK_S with nothing read: if the stream held, a check ago, an
        entry still not read, the reader is stuck (its consumer was on a NATS server
        that is gone, and the client has not noticed yet): drop it, so the next read
        starts a new one."""
        self._quiet_since = asyncio.get_running_loop().time()
        if self._behind is not None and self._next <= self._behind:
            log.warning("the log's reader stopped at %d of %d or more; reading again "
                        "from there", self._next - 1, self._behind)
            self._behind = None
            await self.stop_reading()
            return
        # A short wait: a follower that cannot tell must go on to try the lease.
        info = await self.quick_js.stream_info(STREAM)
        self._behind = info.state.last_seq if info.state.last_seq >= self._next else None

    async def stop_reading(self) -> None:
        """Drop the ordered consumer (a leader reads nothing: it would only pile up)."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                await reader.unsubscribe()
            except Exception as exc:
                log.debug("nats: %s", exc)

    # --- the lease -------------------------------------------------------------------
    async def take_lease(self, node: str) -> int | None:
        """The lease's revision if *node* took it now, None if another holds it. Raises
        if the bucket could not say (no leader of its own, as while JetStream elects
        one): its reads may still answer then, from a replica, while its holder cannot
        renew it, so only a refused write shows the lease is held and writable."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return await self.lease.create(LEASE_KEY, node.encode())
        except KeyWrongLastSequenceError:
            return None

    async def lease_state(self) -> tuple[str, int] | None:
        """(holder, revision) of the lease, or None if no one holds it: as the bucket's
        leader has it. (The bucket's own get may be answered by a replica that lags,
        and a renewal that read an older holder there would step down for nothing.)"""
        from nats.js.errors import NotFoundError

        try:
            msg = await self.js.get_last_msg(f"KV_{LEASE_BUCKET}",
                                             f"$KV.{LEASE_BUCKET}.{LEASE_KEY}", direct=False)
        except NotFoundError:
            return None
        if not msg.data or (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return bytes(msg.data).decode(), msg.seq

    async def take_stale_lease(self, node: str, revision: int) -> int | None:
        """Take the lease from a holder that has not renewed revision *revision*: only
        one of several nodes trying it succeeds, and the holder, if it wakes, cannot
        renew it any more."""
        try:
            return await self.lease.update(LEASE_KEY, node.encode(), last=revision)
        except Exception:
            return None

    async def renew_lease(self, node: str, revision: int) -> int | None:
        """The lease's new revision; None if another node holds it now. Raises if the
        bucket does not answer (as while JetStream elects its leader): not known either
        way."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return await self.lease.update(LEASE_KEY, node.encode(), last=revision)
        except KeyWrongLastSequenceError:
            # Moved on: by another node, or by an earlier renewal of this one whose
            # answer was lost (the holder's name tells which); or gone, by the age limit
            # of a bucket made before it had none: then it is free, and taken again.
            state = await self.lease_state()
            if state is None:
                return await self.take_lease(node)
            if state[0] == node:
                return state[1]
            return None

    async def release_lease(self, revision: int) -> None:
        try:
            await self.lease.delete(LEASE_KEY, last=revision)
        except Exception:
            pass

    # --- node status and snapshots ---------------------------------------------------
    async def report(self, node: str, status: dict) -> None:
        await self.nodes.put(node, json.dumps(status).encode())

    async def statuses(self, names: Sequence[str] | None = None, *,
                       strict: bool = False) -> dict[str, dict]:
        """Each node's last report: of *names*, or of every node that has reported
        (*strict*: raise if the bucket cannot list them, rather than list none)."""
        out: dict[str, dict] = {}
        if names is None:
            try:
                names = await self.nodes.keys()
            except Exception as exc:
                if strict and type(exc).__name__ != "NoKeysError":
                    raise
                return out
        for key in names:
            try:
                entry = await self.nodes.get(key)
            except Exception:  # not reported yet
                continue
            out[key] = json.loads(bytes(entry.value))
        return out

    async def save_snapshot(self, seq: int, engine_seq: int, data: bytes) -> None:
        """The engine's state as of stream sequence *seq* (engine sequence
        *engine_seq*): chunks, then the pointer; then the chunks of snapshots older than
        the one the pointer named before (every snapshot was kept: 886 keys, 462 MB a
        server after 2.2 M commands). That one and this one stay, so a node reading the
        pointer a moment ago still finds its chunks, and so does a node whose snapshot
        of a nearby sequence lands just after this one."""
        previous = await self.latest_snapshot()
        chunks = [data[i:i + SNAPSHOT_CHUNK] for i in range(0, len(data), SNAPSHOT_CHUNK)]
        for n, chunk in enumerate(chunks):
            await self.snapshots.put(f"s{seq}.{n}", chunk)
        await self.snapshots.put("latest", json.dumps(
            {"seq": seq, "engine_seq": engine_seq, "chunks": len(chunks)}).encode())
        if previous is None:
            return
        older = min(seq, previous["seq"])
        try:
            keys = await self.snapshots.keys()
        except Exception as exc:  # none at all (NoKeysError), or NATS failed: next time
            log.debug("snapshot keys not listed: %s", exc)
            return
        for key in keys:
            number = key[1:].partition(".")[0]
            if key.startswith("s") and number.isdigit() and int(number) < older:
                await self.snapshots.purge(key)

    async def latest_snapshot(self) -> dict | None:
        """The newest snapshot's pointer (seq, engine_seq, chunks), None if none."""
        try:
            entry = await self.snapshots.get("latest")
        except Exception as exc:
            if type(exc).__name__ in ("KeyNotFoundError", "KeyDeletedError"):
                return None
            raise
        return json.loads(bytes(entry.value))

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot: ``(stream sequence, its bytes)``, None if none. A
        snapshot whose chunks go as it is read (two newer ones written meanwhile) is
        read again from the new pointer."""
        for _ in range(3):
            try:
                entry = await self.snapshots.get("latest")
            except Exception:
                return None
            meta = json.loads(bytes(entry.value))
            parts = []
            try:
                for n in range(meta["chunks"]):
                    parts.append(bytes((await self.snapshots.get(f"s{meta['seq']}.{n}")).value))
            except Exception as exc:
                if type(exc).__name__ not in ("KeyNotFoundError", "KeyDeletedError"):
                    raise
                continue
            return meta["seq"], b"".join(parts)
        return None

    async def stream_summary(self) -> dict:
        info = await self.js.stream_info(STREAM)
        cluster = getattr(info, "cluster", None)
        replicas = []
        if cluster is not None:
            replicas = [cluster.leader] + [r.name for r in (cluster.replicas or [])]
        return {"last_seq": info.state.last_seq, "messages": info.state.messages,
                "replicas": info.config.num_replicas, "servers": replicas}
