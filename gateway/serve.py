"""``carbonx serve``: the engine, its journal and the gateway, on a broker.

Without ``--broker`` the embedded broker (amqtt) runs in the same process on 127.0.0.1,
with a password for every account: from ``--credentials FILE`` (the JSON that
``carbonx broker-config`` writes) when it exists, otherwise generated for the accounts
named in ``--init`` and written to that file (mode 0600) so bots can read them. With
``--broker mqtt://USER:PASS@HOST:PORT`` the gateway is a client of that broker (mosquitto
configured by ``carbonx broker-config``), which then enforces the access rules.

With ``--journal DIR`` an existing journal is recovered first and goes on; ``--init`` is
applied only to a new journal (a recovered one already holds it).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from exchange import Engine, Market
from exchange.journal import JournalWriter, create_journal, reopen_journal
from exchange.orderfile import read_order_file

from .embedded import GATEWAY_USER, EmbeddedBroker, valid_account_name
from .service import GatewayCore, GatewaySettings, run_gateway

__all__ = ["BrokerAddress", "parse_broker_url", "open_engine", "serve", "run_async",
           "load_credentials", "ServeError"]

log = logging.getLogger("carbonx.serve")


class ServeError(Exception):
    """A problem with the serve options; the message says what to change."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str
    password: str


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://USER:PASS@HOST:PORT`` (port 1883 when left out)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ServeError(f"broker URL {url!r}: expected mqtt://USER:PASS@HOST:PORT")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ServeError(f"broker URL {url!r}: the port is not a number") from None
    if not parts.hostname or not parts.username or parts.password is None:
        raise ServeError(f"broker URL {url!r}: give the gateway's user and password, "
                         f"mqtt://USER:PASS@HOST:PORT")
    return BrokerAddress(parts.hostname, port, unquote(parts.username),
                         unquote(parts.password))


def open_engine(market: Market, *, journal: str | Path | None, init: str | Path | None,
                ledger: bool = True) -> tuple[Engine, JournalWriter | None, dict]:
    """The engine to serve: recovered from *journal* if it holds one, else new, with the
    *init* order file applied (and journaled). Returns (engine, writer, facts)."""
    facts: dict = {}
    writer = None
    if journal is not None and (Path(journal) / "meta.json").exists():
        recovered, writer = reopen_journal(journal)
        facts["recovered"] = recovered.seq
        engine = recovered.engine
        if init is not None:
            log.warning("the journal already holds %d commands: --init is not applied again",
                        recovered.seq)
        return engine, writer, facts
    engine = Engine(market, ledger=ledger)
    if journal is not None:
        writer = create_journal(journal, market.text, ledger=ledger)
    if init is not None:
        commands = read_order_file(init)
        if writer is not None:
            writer.append_many(commands)
            writer.commit()
        out: list = []
        for command in commands:
            engine.submit(command, out)
        facts["init"] = len(commands)
        facts["init_rejected"] = engine.rejected
        facts["accounts"] = sorted({a for c in commands
                                    if (a := getattr(c, "account", None))})
    return engine, writer, facts


def load_credentials(path: Path | None, accounts: list[str]) -> dict[str, str]:
    """Account passwords from *path*, or new ones for *accounts* written to *path*."""
    if path is not None and path.exists():
        try:
            credentials = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ServeError(f"cannot read credentials {path}: {exc}") from None
        if not isinstance(credentials, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in credentials.items()):
            raise ServeError(f"{path}: expected a JSON object of account: password")
    else:
        credentials = {}
    for account in accounts:
        if valid_account_name(account) and account not in credentials:
            credentials[account] = secrets.token_urlsafe(18)
    credentials.setdefault(GATEWAY_USER, secrets.token_urlsafe(18))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(credentials, fh, indent=1, sort_keys=True)
    return credentials


async def serve(core: GatewayCore, *, broker: BrokerAddress | None,
                credentials: dict[str, str], host: str = "127.0.0.1", port: int = 1883,
                stop: asyncio.Event, announce=None) -> None:
    """Run the gateway (and the embedded broker when *broker* is None) until *stop*."""
    if broker is not None:
        if announce:
            announce(f"gateway on {broker.host}:{broker.port} as {broker.username}")
        await run_gateway(core, host=broker.host, port=broker.port, username=broker.username,
                          password=broker.password, stop=stop)
        return
    async with EmbeddedBroker(credentials, port=port, host=host) as embedded:
        ready = asyncio.Event()
        task = asyncio.ensure_future(run_gateway(
            core, host=embedded.host, port=embedded.port, username=GATEWAY_USER,
            password=credentials[GATEWAY_USER], stop=stop, ready=ready))
        await asyncio.wait({task, asyncio.ensure_future(ready.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        if announce and ready.is_set():
            announce(f"embedded broker on mqtt://{embedded.host}:{embedded.port}; "
                     f"gateway ready")
        await task


def run_async(main) -> None:
    """Run *main* (a coroutine) on uvloop where it is installed, else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass


def main_serve(market: Market, *, broker_url: str | None, journal: str | None,
               init: str | None, credentials_path: str | None, port: int,
               settings: GatewaySettings | None = None) -> int:
    broker = parse_broker_url(broker_url) if broker_url else None
    engine, writer, facts = open_engine(market, journal=journal, init=init)
    if "recovered" in facts:
        print(f"recovered {facts['recovered']} commands from {journal}", file=sys.stderr)
    if "init" in facts:
        print(f"init: {facts['init']} commands, {facts['init_rejected']} rejected",
              file=sys.stderr)
    credentials: dict[str, str] = {}
    if broker is None:
        path = Path(credentials_path) if credentials_path else (
            Path(journal) / "credentials.json" if journal else Path("carbonx-credentials.json"))
        accounts = facts.get("accounts", [])
        if engine.ledger is not None:
            accounts = sorted(set(accounts) | {a for a in engine.ledger.accounts
                                               if not a.startswith("@")})
        credentials = load_credentials(path, accounts)
        print(f"credentials for {len(credentials) - 1} account(s) in {path}", file=sys.stderr)
    core = GatewayCore(engine, journal=writer, settings=settings)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(core, broker=broker, credentials=credentials, port=port, stop=stop,
                    announce=lambda text: print(text, file=sys.stderr, flush=True))

    try:
        run_async(main())
    finally:
        if writer is not None:
            writer.commit()
            writer.close()
    stats = core.stats
    print(f"stopped: {stats.messages} messages, {stats.commands} commands, "
          f"{stats.turned_away} turned away, {engine.trades} trades", file=sys.stderr)
    return 0
