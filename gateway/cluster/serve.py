"""``carbonx serve --cluster`` and ``carbonx cluster-status``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from exchange.market import Market
from exchange.orderfile import read_order_file
from exchange.sequencer import Sequencer
from gateway.cluster.log import ClusterError, ClusterLog, NatsThread, node_name, parse_servers
from gateway.cluster.node import (SNAPSHOT_EVERY, ClusterNode, OtherMarket, StreamJournal,
                                  run_node)
from gateway.mqtt.serve import (ServeError, _check_readable, _run_gateway, probe_broker,
                                resolve_broker, run_async, stop_on_signals)
from gateway.mqtt.service import GatewayCore, GatewaySettings, LoginRefused
from gateway.mqtt.wire import operators_own

__all__ = ["main_cluster", "cluster_status"]

SILENT_S = 5.0  # a node not heard from for this long is shown as silent (it reports each 1 s)


def _open_log(cluster_url: str, create: bool = True) -> tuple[NatsThread, ClusterLog]:
    try:
        servers = parse_servers(cluster_url)
    except ValueError as exc:
        raise ServeError(f"--cluster: {exc}") from None
    thread = NatsThread()
    stream = ClusterLog(servers)
    try:
        thread.call(stream.open(create=create), 20)
    except (ClusterError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            thread.call(stream.close(), 5)
        thread.stop()
        raise ServeError(str(exc) or "NATS did not answer in time") from None
    return thread, stream


# A node's name keys its status in the cluster's buckets: NATS takes letters, digits,
# "-" and "_" there without question (a space is refused at every report).
_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def main_cluster(market: Market, *, cluster_url: str, broker_url: str | None, node_id: str | None,
                 init: str | None, settings: GatewaySettings | None = None,
                 password_file: str | None = None, environ: Mapping[str, str] | None = None,
                 snapshot_every: int | None = None) -> int:
    """``carbonx serve --cluster``: a node that follows the log and leads when it holds
    the lease (gateway.cluster.node). Raises ``ServeError`` when it cannot start."""
    if broker_url is None:
        raise ServeError("--cluster needs --broker: every node must reach the same broker, "
                         "so the embedded one cannot serve a cluster")
    broker = resolve_broker(broker_url, password_file=password_file, environ=environ)
    _check_readable(init)
    # Read whole before the lease is taken: a file that cannot be read stops the node
    # before anything runs, as it does serve without a cluster.
    commands = ([operators_own(c) for c in read_order_file(init)] if init is not None
                else None)  # the operator's rows
    if node_id is not None and not _NODE_ID.fullmatch(node_id):
        raise ServeError(f"--node-id {node_id!r}: letters, digits, '-' and '_', at most 64 "
                         "(it names the node's key in the cluster's buckets)")
    thread, stream = _open_log(cluster_url)
    try:
        try:
            free = thread.call(stream.lease_state(), 10) is None
        except Exception:  # the lease does not answer now: a leader may be serving
            free = False
        if free:
            # Only with no leader: the broker gives the gateway's user one connection, so
            # a probe would push the leading gateway off for a moment.
            run_async(probe_broker(broker))
    except BaseException:
        with contextlib.suppress(Exception):
            thread.call(stream.close(), 5)
        thread.stop()
        raise
    name = node_id or f"{socket.gethostname()}-{id(stream) & 0xffff:04x}"

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    base = settings or GatewaySettings()
    base.snapshot_every = snapshot_every or SNAPSHOT_EVERY
    node = ClusterNode(market, thread, stream, name, say=say,
                       snapshot_every=base.snapshot_every)

    async def serve(journal: StreamJournal, lost: asyncio.Event) -> str:
        if commands is not None and node.engine.seq == 0:
            # The first leader of an empty log applies the order file, through the log.
            Sequencer(node.engine, journal).run(commands, [])  # type: ignore[arg-type]
        core = GatewayCore(node.engine, journal=journal, settings=base)  # type: ignore[arg-type]
        journal.snapshot_due = lambda engine: node.snapshot(journal, engine)
        gateway_stop = asyncio.Event()

        async def watch() -> None:
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the gateway ended first and this watch is cancelled
                for wait in waits:
                    wait.cancel()
            gateway_stop.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await _run_gateway(
                core, host=broker.host, port=broker.port, username=broker.username,
                password=broker.password, stop=gateway_stop, may_reconnect=node.lease_fresh,
                refused_ends=True,
                announce=lambda: say(f"{name}: gateway on {broker.host}:{broker.port} as "
                                     f"{broker.username}: connected; gateway ready"))
        except LoginRefused as exc:
            # Retrying would be refused the same way, while the lease it holds keeps every
            # node that can log in from leading: it gives the lease up (run_node) and stops.
            raise ServeError(
                f"{name}: the broker at {broker.host}:{broker.port} refused the gateway's login "
                f"as {broker.username} ({exc}): check --password-file; this node gave up the "
                "lease so that another node leads") from None
        finally:
            watcher.cancel()
        if lost.is_set():
            return node.lost_why or "its lease was taken"
        if not stop.is_set():
            return "it lost the broker connection while its lease could not be renewed"
        return "stopped"

    stop = asyncio.Event()

    async def main() -> None:
        stop_on_signals(stop)
        say(f"{name}: following the log on {cluster_url}")
        await run_node(node, serve=serve, stop=stop)

    try:
        run_async(main())
    except OtherMarket as exc:  # nothing of it was applied or led
        raise ServeError(f"{name}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            thread.call(stream.close(), 5)
        thread.stop()
    say(f"{name}: stopped at log sequence {node.applied}, engine seq {node.engine.seq}")
    return 0


def cluster_status(cluster_url: str, *, as_json: bool = False, out=sys.stdout) -> int:
    """``carbonx cluster-status``: the leader, the stream and every node's report."""
    thread, stream = _open_log(cluster_url, create=False)
    unknown: dict[str, str] = {}  # what could not be read now (NATS electing, quorum lost)

    def ask(what: str, call: Any, default: Any) -> Any:
        try:
            return thread.call(call, 10)
        except Exception as exc:
            unknown[what] = str(exc) or type(exc).__name__
            return default

    try:
        state = ask("leader", stream.lease_state(), None)
        leader = node_name(state[0]) if state is not None else None
        summary = ask("stream", stream.stream_summary(), None)
        nodes = ask("nodes", stream.statuses(strict=True), {})
    finally:
        with contextlib.suppress(Exception):
            thread.call(stream.close(), 5)
        thread.stop()
    print(status_text({"leader": leader, "stream": summary, "nodes": nodes, "unknown": unknown},
                      time.time(), as_json=as_json), file=out)
    return 0


def status_text(result: dict, now: float, *, as_json: bool = False) -> str:
    """*result* (the leader, the stream's summary, each node's last report) as
    ``cluster-status`` prints it at time *now*: a node not heard from for ``SILENT_S``
    shows the role ``silent`` (it stopped without saying so, or cannot reach NATS), with
    the role it last reported in its JSON row."""
    for status in result["nodes"].values():
        status["silent"] = status["role"] != "stopped" and now - status["at"] > SILENT_S
    if as_json:
        return json.dumps(result, indent=1)
    summary = result["stream"]
    unknown = result.get("unknown", {})
    # What NATS could not answer now is said so, never shown as a free lease or no nodes.
    lines = [
        "leader: " + (f"(unknown: the lease does not answer: {unknown['leader']})"
                      if "leader" in unknown else result["leader"] or "(none: the lease is free)"),
        "stream: " + (f"(unknown: {unknown['stream']})" if summary is None else
                      f"last sequence {summary['last_seq']}, {summary['replicas']} replica(s)"
                      + (f" on {', '.join(summary['servers'])}" if summary["servers"] else "")),
        "node                 role       applied   engine seq  state hash        hashed at  seen"]
    if "nodes" in unknown:
        lines.append(f"(unknown: the nodes' reports do not answer: {unknown['nodes']})")
    for name, status in sorted(result["nodes"].items()):
        # A node hashes its state when quiet: under load its hash is of an earlier seq.
        hashed = status.get("hash_seq", status["engine_seq"])
        state_hash = status["state_hash"][:16] if status["state_hash"] else "(not yet)"
        role = "silent" if status["silent"] else status["role"]
        lines.append(
            f"{name:<20} {role:<9} {status['applied']:>8} {status['engine_seq']:>11}"
            f"  {state_hash:<16}  {hashed if hashed >= 0 else '-':>9}"
            f"  {now - status['at']:.1f} s ago")
    return "\n".join(lines)
