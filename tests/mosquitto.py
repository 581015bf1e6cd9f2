"""Run real mosquitto brokers in tests (a helper module, not a test file).

- ``MOSQUITTO``: the broker binary (``None`` when not installed); ``require_mosquitto()``
  skips the calling test when it is missing, or fails it when ``$CI`` is set (under CI a
  skipped broker test is a failure). ``require_clients()``, ``require_tool(name)`` and
  ``require_module(name)`` do the same for ``mosquitto_pub``/``mosquitto_sub``, other
  commands and Python modules (aiomqtt).
- ``Mosquitto`` / ``start_mosquitto(config_dir, port=None)``: start ``mosquitto -c
  DIR/mosquitto.conf`` (as written by ``gateway.mqtt.brokerconfig``), wait until it
  listens on its port (checked in ``/proc``, else by connecting), and ``.stop()`` /
  ``.restart()`` it by PID; its log goes to ``DIR/mosquitto.log``. Run as root, with a
  config that has no ``user`` line (``carbonx broker-config`` never writes ``user root``),
  it starts mosquitto from a copy, ``DIR/mosquitto.test-root.conf``, that adds ``user
  root``: mosquitto would otherwise drop to the ``mosquitto`` user, who cannot reach the
  0600 files under pytest's private temporary directory.
- ``listening_sockets(pid)``: the TCP addresses a process listens on (from ``/proc``).
- Fixtures, to import into a test module or ``conftest.py`` (import both):
  ``mosquitto_factory`` (``make(accounts) -> Broker``) and ``mosquitto_broker`` (a
  running broker with accounts ``alice`` and ``bob``); every broker is stopped at teardown.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest

from gateway.mqtt.brokerconfig import (CONF_NAME, DEFAULT_LIMITS, GATEWAY_USER, AccountLimits,
                                       write_broker_config)

__all__ = [
    "MOSQUITTO", "MOSQUITTO_PUB", "MOSQUITTO_SUB", "Broker", "Mosquitto", "MosquittoStartError",
    "free_port", "listening_sockets", "mosquitto_broker", "mosquitto_factory", "require_clients",
    "require_module", "require_mosquitto", "require_tool", "start_mosquitto"
]

LOOPBACK = "127.0.0.1"
LOG_NAME = "mosquitto.log"
ROOT_CONF_NAME = "mosquitto.test-root.conf"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _find_binary(name: str, fallback: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return fallback if os.access(fallback, os.X_OK) else None


MOSQUITTO = _find_binary("mosquitto", "/usr/sbin/mosquitto")
MOSQUITTO_PUB = _find_binary("mosquitto_pub", "/usr/bin/mosquitto_pub")
MOSQUITTO_SUB = _find_binary("mosquitto_sub", "/usr/bin/mosquitto_sub")


def _missing(message: str) -> None:
    """Skip the test, or fail it when ``$CI`` is set: under CI nothing may be skipped."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_mosquitto() -> str:
    """The mosquitto binary; skip (or under ``$CI`` fail) the test when it is missing."""
    if MOSQUITTO is None:
        _missing("mosquitto is not installed: install the mosquitto broker "
                 "(e.g. apt-get install mosquitto) to run the MQTT broker tests")
    assert MOSQUITTO is not None
    return MOSQUITTO


def require_clients() -> tuple[str, str]:
    """``(mosquitto_pub, mosquitto_sub)``; skip (or under ``$CI`` fail) when missing."""
    if MOSQUITTO_PUB is None or MOSQUITTO_SUB is None:
        _missing("mosquitto_pub/mosquitto_sub are not installed: install the mosquitto "
                 "clients (e.g. apt-get install mosquitto-clients) to run this test")
    assert MOSQUITTO_PUB is not None and MOSQUITTO_SUB is not None
    return MOSQUITTO_PUB, MOSQUITTO_SUB


def require_tool(name: str) -> str:
    """The path of command *name*; skip (or under ``$CI`` fail) the test when missing."""
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} is not installed (it comes with mosquitto): install it to run this test")
    assert found is not None
    return found


def require_module(name: str) -> ModuleType:
    """Import *name*; skip (or under ``$CI`` fail) the test when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"Python package {name!r} is not installed ({exc}): "
                 f"pip install {name} to run the MQTT broker tests")
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def config_port(conf_path: Path) -> int:
    """The port of the single ``listener PORT ...`` line in a mosquitto config file."""
    ports = re.findall(r"^\s*listener\s+(\d+)\b", conf_path.read_text(), re.MULTILINE)
    if len(ports) != 1:
        raise ValueError(f"{conf_path}: expected exactly one listener line, found {ports}")
    return int(ports[0])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def _decode_proc_address(text: str) -> tuple[str, int]:
    """Decode ``0100007F:075B`` (``/proc/net/tcp``, address words in host order)."""
    address, port = text.split(":")
    raw = b"".join(struct.pack("=I", int(address[i:i + 8], 16)) for i in range(0, len(address), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The ``(address, port)`` pairs that process *pid* listens on over TCP (IPv4 and v6).

    Reads the socket inodes in ``/proc/PID/fd`` and the LISTEN rows of
    ``/proc/PID/net/tcp{,6}`` (the process's own network namespace). Linux only.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = TCP_LISTEN
                found.append(_decode_proc_address(cols[1]))
    return sorted(found)


class MosquittoStartError(RuntimeError):
    """The broker exited or did not accept connections in time; the message has its log."""

    address_in_use: bool = False


class Mosquitto:
    """One mosquitto process for ``DIR/mosquitto.conf``, started and stopped by PID.

    *port* defaults to the config's listener port; when given it must match it.
    """

    def __init__(self, config_dir: Path, port: int | None = None, *, executable: str | None = None,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.config_dir = Path(config_dir).resolve()
        self.conf_path = self.config_dir / CONF_NAME
        self.log_path = self.config_dir / LOG_NAME
        listener = config_port(self.conf_path)
        if port is not None and port != listener:
            raise ValueError(f"{self.conf_path} listens on port {listener}, not {port}")
        self.port = listener
        self.run_conf_path = self.conf_path  # what it was started from (see _run_conf)
        self.executable = executable or require_mosquitto()
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _run_conf(self) -> Path:
        """The config to start: DIR/mosquitto.conf, or, run as root without a ``user``
        line in it, a copy that keeps root (see the module's docstring)."""
        text = self.conf_path.read_text()
        if os.geteuid() != 0 or re.search(r"^\s*user\s", text, re.MULTILINE):
            return self.conf_path
        copy = self.config_dir / ROOT_CONF_NAME
        copy.write_text("# carbonx tests, run as root: mosquitto.conf, keeping root.\nuser root\n" +
                        text)
        return copy

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("mosquitto is not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything the broker logged so far (all starts, appended)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, retry_bind: bool = True) -> Mosquitto:
        """Start the broker and wait (at most *start_timeout*) until it listens on its port.

        With *retry_bind*, a bind failure (the port still held, e.g. just after a stop) is
        retried until *start_timeout*; any other early exit raises ``MosquittoStartError``.
        """
        if self.running:
            raise RuntimeError(f"mosquitto is already running (pid {self.pid})")
        deadline = time.monotonic() + self.start_timeout
        bind_failed = False
        while True:
            try:
                return self._start_once(deadline)
            except MosquittoStartError as exc:
                # The last try may time out before its bind error reaches the log: the
                # port was still taken if any try said so.
                exc.address_in_use = bind_failed = bind_failed or exc.address_in_use
                if not (retry_bind and exc.address_in_use) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _start_once(self, deadline: float) -> Mosquitto:
        log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn()
        try:
            self._wait_ready(deadline)
        except MosquittoStartError as exc:
            self.stop()
            with open(self.log_path, "rb") as log:
                log.seek(log_size)
                exc.address_in_use = b"Address already in use" in log.read()
            raise
        return self

    def _spawn(self) -> None:
        self.run_conf_path = self._run_conf()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (the broker's log, open while it runs)
        self._log.write(
            f"--- carbonx tests: starting {self.executable} -c {self.run_conf_path}\n".encode())
        self._log.flush()
        try:
            self._process = subprocess.Popen(
                [self.executable, "-c", str(self.run_conf_path)], cwd=self.config_dir,
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        except OSError:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise MosquittoStartError(
                    f"mosquitto exited with status {self._process.returncode} at start; "
                    f"log {self.log_path}:\n{self._log_tail()}")
            if self._listening():
                return
            if time.monotonic() >= deadline:
                raise MosquittoStartError(
                    f"mosquitto did not accept connections on {LOOPBACK}:{self.port} "
                    f"within {self.start_timeout} s; log {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        """Is *this* process listening on the port? (A TCP probe alone could be answered
        by whatever else holds the port; so on Linux ask ``/proc`` whose socket it is.)"""
        assert self._process is not None
        if not Path("/proc/self/net/tcp").exists():
            return _port_accepts(self.port)
        try:
            return (LOOPBACK, self.port) in listening_sockets(self._process.pid)
        except OSError:  # the process went away while /proc was read
            return False

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after a grace period) and reap it.

        Safe to call more than once.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> Mosquitto:
        """Stop the broker and start it again on the same port (clients must reconnect)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Mosquitto:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._process.pid}" if self.running and self._process else "stopped"
        return f"Mosquitto({str(self.config_dir)!r}, port={self.port}, {state})"


@contextmanager
def start_mosquitto(config_dir: Path, port: int | None = None) -> Iterator[Mosquitto]:
    """Run mosquitto for ``config_dir/mosquitto.conf`` for the ``with`` block; always stop it."""
    broker = Mosquitto(config_dir, port)
    try:
        yield broker.start()
    finally:
        broker.stop()


@dataclass
class Broker:
    """A running test broker: its process, config directory and every user's password."""

    mosquitto: Mosquitto
    config_dir: Path
    credentials: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.mosquitto.port

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def gateway_password(self) -> str:
        return self.credentials[GATEWAY_USER]

    def login(self, user: str) -> dict[str, object]:
        """Keyword arguments for ``aiomqtt.Client``: hostname, port, username, password."""
        return {
            "hostname": LOOPBACK,
            "port": self.port,
            "username": user,
            "password": self.credentials[user]
        }


BrokerFactory = Callable[..., Broker]
DEFAULT_ACCOUNTS: Mapping[str, str | None] = {"alice": None, "bob": None}


def _start_broker(config_dir: Path, accounts: Mapping[str, str | None],
                  limits: AccountLimits | None = DEFAULT_LIMITS) -> Broker:
    """Write a config for a free port and start it; retry with a new port if it was taken."""
    attempts = 3
    for attempt in range(1, attempts + 1):
        credentials = write_broker_config(config_dir, free_port(), accounts, force=attempt > 1,
                                          limits=limits)
        mosquitto = Mosquitto(config_dir)
        try:
            mosquitto.start(retry_bind=False)
        except MosquittoStartError as exc:
            if attempt == attempts or not exc.address_in_use:
                raise
            continue
        return Broker(mosquitto, config_dir, credentials)
    raise AssertionError("unreachable")


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """``make(accounts={'alice': None, 'bob': None}) -> Broker``: start brokers, stop at teardown.

    Each broker gets its own config directory under ``tmp_path`` and a free loopback port.
    """
    require_mosquitto()
    started: list[Broker] = []

    def make(accounts: Mapping[str, str | None] = DEFAULT_ACCOUNTS,
             limits: AccountLimits | None = DEFAULT_LIMITS) -> Broker:
        config_dir = tmp_path / f"broker{len(started)}"
        broker = _start_broker(config_dir, accounts, limits)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.mosquitto.stop()


@pytest.fixture
def mosquitto_broker(mosquitto_factory: BrokerFactory) -> Broker:
    """A running broker with accounts ``alice`` and ``bob`` (generated passwords)."""
    return mosquitto_factory()
