"""Real ``nats-server`` processes with JetStream for the cluster tests: one server, or a
cluster of three on loopback ports, each with its own store, stopped by PID.

Debian's ``nats-server`` package provides the binary (``.ci/run`` installs it). Under CI
a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mosquitto import free_port

BINARY = shutil.which("nats-server") or "/usr/sbin/nats-server"


def require_nats_server() -> None:
    if not Path(BINARY).exists():
        if os.environ.get("CI"):
            pytest.fail("nats-server is missing (.ci/run installs Debian's nats-server)")
        pytest.skip("needs nats-server (Debian: apt-get install nats-server)")


def end_process(process: subprocess.Popen | None, wait: float = 10.0) -> None:
    """SIGTERM *process* if it runs, SIGKILL it if it has not ended within *wait* s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(wait)


class NatsServer:
    """One nats-server with JetStream on 127.0.0.1 (a member of *routes*' cluster)."""

    def __init__(self, directory: Path, name: str, port: int, cluster_port: int | None = None,
                 routes: list[int] | None = None, jetstream: bool = True) -> None:
        self.jetstream = jetstream  # False: a NATS server a cluster cannot run on
        self.directory = directory
        self.name = name
        self.port = port
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f'server_name: "{self.name}"', f'listen: "127.0.0.1:{self.port}"']
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.directory / "store"}" }}')
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats://127.0.0.1:{p}"' for p in self.routes)
            lines.append(f'cluster {{ name: "cx", listen: "127.0.0.1:{self.cluster_port}", '
                         f"routes: [{routes}] }}")
        config = self.directory / "nats.conf"
        config.write_text("\n".join(lines) + "\n")
        log = (self.directory / "nats.log").open("ab")
        self.process = subprocess.Popen([BINARY, "-c", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: "
                                   f"{(self.directory / 'nats.log').read_text()[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not listen on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        end_process(self.process)


def start_cluster(directory: Path, size: int = 3) -> list[NatsServer]:
    """*size* servers (1: a single server, no cluster), started; JetStream's meta leader
    is elected once a majority is up."""
    ports = [free_port() for _ in range(size)]
    if size == 1:
        return [NatsServer(directory / "n1", "n1", ports[0]).start()]
    cluster_ports = [free_port() for _ in range(size)]
    servers = [NatsServer(directory / f"n{i + 1}", f"n{i + 1}", ports[i], cluster_ports[i],
                          [p for j, p in enumerate(cluster_ports) if j != i])
               for i in range(size)]
    for server in servers:
        server.start()
    return servers


def urls(servers: list[NatsServer]) -> str:
    return ",".join(server.url for server in servers)
