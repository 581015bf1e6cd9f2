"""A cluster on this machine for the tests and benchmarks.cluster: three nats-server
with JetStream, a mosquitto set up by ``carbonx broker-config``, and ``carbonx serve
--cluster`` nodes as processes, each with its output in a file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mosquitto import Mosquitto, free_port
from natsserver import end_process, start_cluster, urls

from exchange import Engine, default_market
from exchange.sequencer import Sequencer
from gateway.cluster.log import (LEASE_BUCKET, NODES_BUCKET, SNAPSHOT_BUCKET, STREAM, ClusterLog,
                                 NatsThread)
from gateway.mqtt.brokerconfig import AccountLimits, write_broker_config

INIT = "action,account,instrument,qty\ndeposit,alice,CNY,100000000\nissue,bob,CEA25,1000000\n"


class Node:
    def __init__(self, harness: Harness, name: str, extra: tuple[str, ...] = ()) -> None:
        self.harness, self.name, self.extra = harness, name, extra
        self.process: subprocess.Popen | None = None
        self.log_path = harness.directory / f"{name}.log"

    def start(self) -> Node:
        h = self.harness
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--cluster", h.cluster_url,
             "--node-id", self.name, "--broker",
             f"mqtt://gateway:{h.credentials['gateway']}@127.0.0.1:{h.port}", "--init",
             str(h.init), "--always-open", "--log-level", "WARNING", *self.extra],
            stdout=self.log_path.open("a"), stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def serving(self) -> bool:
        """Whether this node runs and is the gateway, by what it last said (not by the
        lease: a harness connected to a NATS server that was killed reads it late)."""
        if self.process is None or self.process.poll() is not None:
            return False
        out = self.output()
        ready = out.rfind("gateway ready")
        return ready > max(out.rfind("no longer leads"), out.rfind("following the log on"))

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused node must see the SIGTERM
        end_process(self.process, 15)


class Harness:
    def __init__(self, directory: Path, accounts: tuple[str, ...] = ("alice", "bob"),
                 init: str = INIT, limits: AccountLimits | None = None) -> None:
        self.directory = directory
        self.servers = start_cluster(directory / "nats", 3)
        self.cluster_url = urls(self.servers)
        self.port = free_port()
        self.credentials = write_broker_config(directory / "broker", self.port,
                                               dict.fromkeys(accounts), limits=limits)
        self.broker = Mosquitto(directory / "broker")
        self.broker.__enter__()
        self.init = directory / "init.csv"
        self.init.write_text(init)
        self.nodes: dict[str, Node] = {}
        self.thread = NatsThread()
        self.log = ClusterLog(self.cluster_url.split(","))
        self._opened = False

    def node(self, name: str, *extra: str) -> Node:
        node = self.nodes[name] = Node(self, name, extra)
        return node.start()

    def _open(self) -> None:
        if not self._opened:
            self.thread.call(self.log.open(create=False), 20)
            self._opened = True

    def log_server(self) -> str:
        """The name of the NATS server leading the log's stream."""
        self._open()
        return self.thread.call(self.log.js.stream_info(STREAM), 10).cluster.leader

    def wait_groups_led(self, timeout: float = 30.0) -> None:
        """Wait until the log's stream and every bucket has a leader again (after a NATS
        server is lost, JetStream elects them one by one, 4-9 s each by nats-server's
        own timeouts)."""
        self._open()
        names = [STREAM] + [f"KV_{b}" for b in (LEASE_BUCKET, NODES_BUCKET, SNAPSHOT_BUCKET)]
        deadline = time.monotonic() + timeout
        while True:
            try:
                infos = [self.thread.call(self.log.js.stream_info(n), 3) for n in names]
                if all(info.cluster and info.cluster.leader for info in infos):
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, f"JetStream's groups not led in {timeout} s"
            time.sleep(0.2)

    def kill_server(self, name: str) -> None:
        next(s for s in self.servers if s.name == name).kill()

    def statuses(self) -> dict[str, dict]:
        """The nodes' reports ({} while NATS cannot answer, as while it elects)."""
        self._open()
        try:
            return self.thread.call(self.log.statuses(list(self.nodes)), 10)
        except Exception:
            return {}

    def snapshot_seqs(self) -> set[int]:
        """The stream sequences of the snapshots whose chunks the bucket holds."""
        self._open()
        keys = self.thread.call(self.log.snapshots.keys(), 10)
        return {int(k[1:].partition(".")[0]) for k in keys if k.startswith("s")}

    def entries(self, timeout: float = 60.0) -> list:
        """The whole log (tried again while NATS cannot answer, as while it elects)."""
        self._open()
        found: list = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                more = self.thread.call(self.log.read(len(found) + 1, 1000), 30)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if not more:
                return found
            found += more

    def wait_leader(self, other_than: str | None = None, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, node in self.nodes.items():
                if name != other_than and node.serving():
                    return name
            time.sleep(0.02)
        outputs = {n: node.output()[-800:] for n, node in self.nodes.items()}
        raise AssertionError(f"no leader but {other_than} within {timeout} s: {outputs}")

    def wait_following(self, name: str, timeout: float = 30.0) -> None:
        """Wait until node *name* (just started) reports itself a follower."""
        began = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.statuses().get(name, {})
            if status.get("role") == "follower" and status.get("at", 0) > began:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} did not follow within {timeout} s: "
                             f"{self.nodes[name].output()[-800:]}")

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self._opened:
            try:
                self.thread.call(self.log.close(), 5)
            except Exception:
                pass
        self.thread.stop()
        self.broker.__exit__(None, None, None)
        for server in self.servers:
            server.stop()


def replayed(entries: list) -> Engine:
    """A fresh engine that applied every batch of the log, in order."""
    engine = Engine(default_market().open_all_hours(), ledger=True)
    sequencer = Sequencer(engine)
    for entry in entries:
        if entry.kind == "batch":
            sequencer.run(entry.commands, [])
    return engine
