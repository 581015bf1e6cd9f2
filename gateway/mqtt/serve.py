"""``carbonx serve``: the engine, its journal and the gateway, on a broker.

Without ``--broker`` the embedded broker (amqtt) runs in the same process on 127.0.0.1,
with a password for every account: from ``--credentials FILE`` (the JSON that
``carbonx broker-config`` writes) when it exists, otherwise generated for the accounts
named in ``--init`` and written to that file (mode 0600) so bots can read them. With
``--broker mqtt://USER@HOST:PORT`` the gateway is a client of that broker (mosquitto
configured by ``carbonx broker-config``), which then enforces the access rules; its
password comes from ``--password-file FILE`` or ``$CARBONX_PASSWORD`` (off the command
line, where other users' ``ps`` would see it), or, still, ``mqtt://USER:PASS@...``.

With ``--journal DIR`` an existing journal is recovered first and goes on; ``--init`` is
applied only to a new journal (a recovered one already holds it).

Nothing is left half-made when serve cannot start: the embedded broker listens, or the
remote broker has taken the gateway's login (one probing connection, retried a few times
with backoff), before the journal is created and the credentials file is written; an
unreadable ``--init`` is found first; a journal that ``--init`` or the credentials then
fail to start is removed again. "gateway ready" is printed only once the gateway is
connected and subscribed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from exchange import Engine, Market
from exchange.journal import JournalError, JournalWriter, create_journal, reopen_journal
from exchange.orderfile import read_order_file
from exchange.sequencer import Sequencer
from gateway.mqtt.brokerconfig import EMBEDDED_LIMITS, AccountLimits, generate_password
from gateway.protocol import SYSTEM_USERS
from gateway.mqtt.embedded import GATEWAY_USER, OPERATOR_USER, EmbeddedBroker, valid_account_name
from gateway.mqtt.service import GatewayCore, GatewaySettings, run_gateway, seconds_of_day
from gateway.mqtt.wire import operators_own

__all__ = [
    "PASSWORD_ENV", "BrokerAddress", "ServeError", "load_credentials", "open_engine",
    "parse_broker_url", "probe_broker", "resolve_broker", "run_async"
]

log = logging.getLogger("carbonx.serve")

PASSWORD_ENV = "CARBONX_PASSWORD"
LOOPBACK = "127.0.0.1"
PROBE_ATTEMPTS = 5  # logins tried at the start of --broker before giving up
PROBE_DELAY = 0.2  # seconds before the second, doubling after each
PROBE_TIMEOUT = 3.0  # seconds one login may take


class ServeError(Exception):
    """A problem with the serve options; the message says what to change."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return f"BrokerAddress({self.host!r}, {self.port}, {self.username!r})"


def _redacted(url: str) -> str:
    """*url* with any password in it replaced by ``***``, to quote in a message."""
    return re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:***@", url)


def parse_broker_url(url: str, password: str | None = None) -> BrokerAddress:
    """``mqtt://USER[:PASS]@HOST:PORT`` (port 1883 when left out). The URL's password,
    else *password*; neither is a ``ServeError``."""
    shown = _redacted(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": a [ without its ]
        raise ServeError(f"broker URL {shown!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "tcp"):
        raise ServeError(f"broker URL {shown!r}: expected mqtt://USER@HOST:PORT")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ServeError(f"broker URL {shown!r}: the port is not a number from 1 to 65535"
                         ) from None
    if not parts.hostname or not parts.username:
        raise ServeError(f"broker URL {shown!r}: give the gateway's user and password, "
                         f"mqtt://USER@HOST:PORT with --password-file FILE or "
                         f"${PASSWORD_ENV}")
    user = unquote(parts.username)
    if parts.password is not None:
        password = unquote(parts.password)
    if not password:
        raise ServeError(f"broker URL {shown!r}: no password for user {user}: give "
                         f"--password-file FILE or set ${PASSWORD_ENV}")
    return BrokerAddress(parts.hostname, port, user, password)


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The password in *path*: its one line, without the line break."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServeError(f"--password-file {path}: cannot read it: {reason}") from None
    lines = text.splitlines()
    if len(lines) != 1 or not lines[0]:
        found = f"{len(lines)} lines" if text.strip() else "nothing"
        raise ServeError(
            f"--password-file {path}: expected the password alone on one line, found {found}")
    return lines[0]


def resolve_broker(url: str, *, password_file: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> BrokerAddress:
    """The broker of ``--broker URL``, its password from the URL, else ``--password-file``,
    else ``$CARBONX_PASSWORD``; a password given both in the URL and by file is an error."""
    environ = os.environ if environ is None else environ
    try:
        has_own = urlsplit(url).password is not None
    except ValueError:
        return parse_broker_url(url)  # which says what is wrong with it
    if password_file is not None:
        if has_own:
            raise ServeError("--password-file: the broker URL has a password too; give "
                             "it one way only (better the file)")
        return parse_broker_url(url, read_password_file(password_file))
    return parse_broker_url(url, None if has_own else environ.get(PASSWORD_ENV) or None)


def _reason(exc: BaseException) -> str:
    """An OSError-like message as a phrase: ``[Errno 111] Connection refused`` ->
    ``connection refused``."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


# CONNACK refusals (MQTT 3.1.1 codes and the reason codes paho 2 turns them into).
_LOGIN_REFUSED = {4, 5, 134, 135}  # bad user name or password; not authorised
_TRY_AGAIN = {3, 136, 137}  # server unavailable; server busy
_CONNACK_TEXT = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised"
}


async def probe_broker(broker: BrokerAddress, *, attempts: int = PROBE_ATTEMPTS,
                       delay: float = PROBE_DELAY, timeout: float = PROBE_TIMEOUT) -> None:
    """Log in to *broker* once, as the gateway will, and log out; raise ``ServeError``
    saying why not. An unreachable or unavailable broker is tried *attempts* times,
    *delay* seconds apart and doubling; a refused login is not tried again.

    A clean session, like the gateway's (with ``use_username_as_clientid`` the broker
    makes the identifier ``gateway`` whatever it is, so the probe meets the gateway's
    session: a clean one holds nothing to lose)."""
    import aiomqtt

    from gateway.mqtt import service

    identifier = getattr(service, "_IDENTIFIER", None) or f"carbonx-probe-{secrets.token_hex(6)}"
    where = f"{broker.host}:{broker.port}"
    last = "no answer"
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay * 2**(attempt - 1))
        try:
            async with aiomqtt.Client(broker.host, broker.port, username=broker.username,
                                      password=broker.password, identifier=identifier,
                                      clean_session=True, timeout=timeout, keepalive=10):
                return
        except aiomqtt.MqttCodeError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            text = (str(exc.rc) if hasattr(exc.rc, "value") else _CONNACK_TEXT.get(
                code, f"return code {code}"))
            text = text[:1].lower() + text[1:]
            if code in _LOGIN_REFUSED:
                raise ServeError(
                    f"the broker at {where} refused the login for user {broker.username}: {text}"
                ) from None
            if code not in _TRY_AGAIN:
                raise ServeError(f"the broker at {where} refused the connection: {text}") from None
            last = text
        except aiomqtt.MqttError as exc:
            last = _reason(exc)
    raise ServeError(f"cannot connect to broker {where}: {last} ({attempts} attempts)")


def open_engine(market: Market, *, journal: str | Path | None, init: str | Path | None,
                ledger: bool = True) -> tuple[Engine, JournalWriter | None, dict]:
    """The engine to serve: recovered from *journal* if it holds one, else new, with the
    *init* order file applied (and journaled). Returns (engine, writer, facts)."""
    facts: dict = {}
    writer = None
    if journal is not None and (Path(journal) / "meta.json").exists():
        # Never truncates: damage is an error (see carbonx journal-cut), a torn tail stays
        # where it is and the journal goes on in a new segment.
        recovered, writer = reopen_journal(journal)
        facts["recovered"] = recovered.seq
        for warning in recovered.warnings:
            log.warning("journal: %s", warning)
        if recovered.torn_bytes:
            log.warning(
                "journal: a torn last frame (%d bytes, never committed) left in %s; "
                "going on in a new segment", recovered.torn_bytes, recovered.segment)
        engine = recovered.engine
        if init is not None:
            log.warning("the journal already holds %d commands: --init is not applied again",
                        recovered.seq)
        return engine, writer, facts
    engine = Engine(market, ledger=ledger)
    if journal is not None:
        writer = create_journal(journal, market.text, ledger=ledger)
    if init is not None:
        commands = [operators_own(c) for c in read_order_file(init)]  # the operator's rows
        Sequencer(engine, writer).run(commands, [])
        facts["init"] = len(commands)
        facts["init_rejected"] = engine.rejected
        facts["accounts"] = sorted({a for c in commands if (a := getattr(c, "account", None))})
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
            credentials[account] = generate_password()
    credentials.setdefault(GATEWAY_USER, generate_password())
    credentials.setdefault(OPERATOR_USER, generate_password())
    if path is not None:
        save_credentials(path, credentials)
    return credentials


def save_credentials(path: Path, credentials: Mapping[str, str]) -> None:
    """Write *credentials* to *path* (mode 0600), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(credentials, fh, indent=1, sort_keys=True)
    os.replace(temporary, path)


def run_async(main) -> None:
    """Run *main* (a coroutine) on uvloop where it is installed, else asyncio's loop, an
    error in a callback said in one line (``_one_line``)."""

    async def quietly():
        asyncio.get_running_loop().set_exception_handler(_one_line)
        return await main

    try:
        import uvloop
    except ImportError:
        asyncio.run(quietly())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(quietly())


def _one_line(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The loop's handler of an error no task awaits (a callback's, such as the MQTT
    client's on a socket the broker closed while the process was paused): one line on
    the log, the traceback only at debug level. Nothing stops for it, as before."""
    error = context.get("exception")
    if error is None:
        loop.default_exception_handler(context)
        return
    log.warning("%s: %s: %s", context.get("message", "an error in the event loop"),
                type(error).__name__, error)
    log.debug("its traceback", exc_info=error)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass


def _check_readable(path: str | None) -> None:
    """Fail now, before anything is written, if the ``--init`` file cannot be read."""
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ServeError(f"{path}: cannot read: {exc.strerror or exc}") from None


class _Started:
    """What serve has made so far: the engine, its journal writer and the gateway core;
    and, until it is up, how to take back a journal directory it made."""

    def __init__(self, journal: str | None) -> None:
        self.engine: Engine | None = None
        self.writer: JournalWriter | None = None
        self.core: GatewayCore | None = None
        self.trades_before = 0  # the trades the engine held as the gateway started (recovered)
        self._journal = Path(journal) if journal is not None else None
        self._before: set[str] | None = None  # the directory's entries, if it existed
        self._new = False  # it held no journal: one is made here
        if self._journal is not None and not (self._journal / "meta.json").exists():
            self._new = True
            if self._journal.is_dir():
                self._before = set(os.listdir(self._journal))

    def undo(self) -> None:
        """Remove the journal made here (never one that was there before)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if not self._new or self._journal is None or not self._journal.exists():
            return
        if self._before is None:
            shutil.rmtree(self._journal, ignore_errors=True)
            return
        for name in set(os.listdir(self._journal)) - self._before:
            path = self._journal / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _open(started: _Started, market: Market, *, journal: str | None, init: str | None,
          settings: GatewaySettings | None, credentials_path: str | None,
          embedded: EmbeddedBroker | None) -> dict[str, str]:
    """Recover or create the engine and journal, and for the embedded broker write the
    credentials and give it the accounts (returned). On a failure here, the journal made
    is undone."""
    credentials: dict[str, str] = {}
    notes: list[str] = []  # said once all is well: a failed start says one line
    try:
        engine, writer, facts = open_engine(market, journal=journal, init=init)
        started.engine, started.writer = engine, writer
        _check_eod(engine.market, settings)  # the market served: a recovered journal's own
        if "recovered" in facts:
            notes.append(f"recovered {facts['recovered']} commands from {journal}")
        if "init" in facts:
            notes.append(f"init: {facts['init']} commands, {facts['init_rejected']} rejected")
        if embedded is not None:
            path = (Path(credentials_path) if credentials_path else
                    (Path(journal) /
                     "credentials.json" if journal else Path("carbonx-credentials.json")))
            accounts = facts.get("accounts", [])
            if engine.ledger is not None:
                accounts = sorted(
                    set(accounts) | {a
                                     for a in engine.ledger.accounts if not a.startswith("@")})
            credentials = load_credentials(path, accounts)
            for name, password in credentials.items():
                embedded.add_account(name, password)
            traders = [name for name in credentials if name not in SYSTEM_USERS]
            notes.append(f"credentials for {len(traders)} account(s), the gateway and the "
                         f"operator in {path}")
            if not traders:
                notes.append(
                    "warning: no account can log in: the credentials file lists none; give the "
                    "accounts with --init (an order file of open_account, deposit and issue rows) "
                    "or their passwords with --credentials")
        open_accounts = ([a for a in engine.ledger.accounts if not a.startswith("@")]
                         if engine.ledger is not None else [])
        if not open_accounts:
            notes.append(
                "warning: no account is open on this exchange: nobody can trade until the "
                "operator opens and funds accounts (carbonx admin with open_account, deposit "
                "and issue rows, or --init)")
    except BaseException:
        started.undo()
        raise
    for note in notes:
        print(note, file=sys.stderr)
    started.core = core = GatewayCore(engine, journal=writer, settings=settings)
    started.trades_before = engine.trades
    if embedded is not None:
        core.on_account_opened = _give_login(embedded, credentials, path)
    return credentials


def _check_eod(market: Market, settings: GatewaySettings | None) -> None:
    """``--eod`` must come after the market's last session of the day."""
    schedule = market.schedule
    if settings is None or not settings.eod_at or schedule is None:
        return
    end = schedule.day_end
    if seconds_of_day(settings.eod_at) < end:
        raise ServeError(f"--eod {settings.eod_at}: the market's last session ends at "
                         f"{end // 3600:02d}:{end % 3600 // 60:02d} ({schedule.zone}); end the "
                         f"day after it")


def _give_login(embedded: EmbeddedBroker, credentials: dict[str, str],
                path: Path) -> Callable[[str], None]:
    """For the embedded broker: an account the operator opens live gets a generated
    password, added to the broker and written to the credentials file, so it can log in
    (a mosquitto's passwords are broker-config's)."""

    def opened(account: str) -> None:
        if account in credentials or not valid_account_name(account):
            return
        credentials[account] = generate_password()
        embedded.add_account(account, credentials[account])
        try:
            save_credentials(path, credentials)
        except OSError as exc:
            log.error("account %s opened, but its password could not be written to %s: %s",
                      account, path, exc.strerror or exc)
            return
        print(f"account {account} opened: its password is in {path}", file=sys.stderr)

    return opened


async def _run_gateway(core: GatewayCore, *, host: str, port: int, username: str, password: str,
                       stop: asyncio.Event, announce: Callable[[], None],
                       may_reconnect: Callable[[], bool] | None = None,
                       refused_ends: bool = False) -> None:
    """Run the gateway until *stop*; *announce* once it is connected and subscribed."""
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        run_gateway(core, host=host, port=port, username=username, password=password, stop=stop,
                    ready=ready, may_reconnect=may_reconnect, refused_ends=refused_ends))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if ready.is_set():
        announce()
    await task


def _web_available() -> None:
    """The web portal's packages, or a clear word on how to get them."""
    try:
        import fastapi  # noqa: F401
        import nicegui  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"--web needs the web extra ({exc.name} is missing): "
                         "pip install 'carbonx[web]'") from None


def _read_logins(path: str) -> dict[str, str]:
    """The accounts' and the operator's passwords from a credentials file."""
    try:
        logins = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServeError(f"--web-credentials {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ServeError(f"--web-credentials {path}: not a JSON object of passwords") from None
    if not isinstance(logins, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in logins.items()):
        raise ServeError(f"--web-credentials {path}: not a JSON object of passwords")
    return logins


def _probe_web(host: str, port: int) -> None:
    """The web portal's port, tried before anything is written: a port in use leaves no
    journal and no credentials behind, as one of the embedded broker's does not."""
    from gateway.web import probe_port

    try:
        probe_port(host, port)
    except OSError as exc:
        raise ServeError(f"the web portal cannot listen on {host}:{port}: "
                         f"{exc.strerror or exc}") from None


async def _start_web(core: GatewayCore, logins: dict[str, str], port: int | None, host: str,
                     stop: asyncio.Event, say: Callable[[str], None]) -> asyncio.Task | None:
    """Start the web portal beside the gateway (``--web``); ``None`` without it."""
    if port is None:
        return None
    from gateway.web.server import WebPortal, serve_web

    portal = WebPortal(core, logins)
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve_web(portal, port=port, host=host, stop=stop, ready=ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not ready.is_set():
        error = task.exception()
        raise ServeError(f"the web portal cannot listen on {host}:{port}: "
                         f"{getattr(error, 'strerror', None) or error}")
    say(f"web portal on http://{host}:{port}/ (REST API under /api/v1)")
    return task


async def _stop_web(task: asyncio.Task | None, stop: asyncio.Event) -> None:
    if task is not None:
        stop.set()
        await task


def main_serve(market: Market, *, broker_url: str | None, journal: str | None, init: str | None,
               credentials_path: str | None, port: int, settings: GatewaySettings | None = None,
               password_file: str | None = None, environ: Mapping[str, str] | None = None,
               limits: AccountLimits | None = None, web_port: int | None = None,
               web_host: str = LOOPBACK, web_credentials: str | None = None) -> int:
    """``carbonx serve``. Raises ``ServeError`` (nothing written) when it cannot start.
    *limits*: each account's publishing limit on the embedded broker (its defaults when
    None). *web_port*: serve the web portal there too (``gateway.web``), its logins the
    embedded broker's credentials, or with a broker of one's own *web_credentials* (a
    ``broker-config`` credentials file)."""
    web_logins: dict[str, str] | None = None
    if web_port is not None:
        _web_available()
        if broker_url and not web_credentials:
            raise ServeError("--web with --broker needs --web-credentials FILE (the "
                             "credentials.json broker-config wrote): the pages' logins are the "
                             "broker's passwords")
        if web_credentials:
            web_logins = _read_logins(web_credentials)
        _probe_web(web_host, web_port)
    broker = (resolve_broker(broker_url, password_file=password_file, environ=environ)
              if broker_url else None)
    if password_file is not None and broker is None:
        raise ServeError("--password-file is the gateway's password on --broker; the "
                         "embedded broker's passwords are in --credentials")
    _check_readable(init)
    if broker is not None:
        run_async(probe_broker(broker))
    started = _Started(journal)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def open_here(embedded: EmbeddedBroker | None) -> tuple[GatewayCore, dict[str, str]]:
        credentials = _open(started, market, journal=journal, init=init, settings=settings,
                            credentials_path=credentials_path, embedded=embedded)
        assert started.core is not None
        return started.core, credentials

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        if broker is not None:
            core, _ = open_here(None)
            web = await _start_web(core, web_logins or {}, web_port, web_host, stop, say)
            await _run_gateway(
                core, host=broker.host, port=broker.port, username=broker.username,
                password=broker.password, stop=stop,
                announce=lambda: say(f"gateway on {broker.host}:{broker.port} as "
                                     f"{broker.username}: connected; gateway ready"))
            await _stop_web(web, stop)
            return
        embedded = EmbeddedBroker({}, port=port, host=LOOPBACK, limits=limits or EMBEDDED_LIMITS)
        try:
            await embedded.__aenter__()
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {LOOPBACK}:{port}: "
                f"{_reason(exc) if not exc.strerror else exc.strerror.lower()}") from None
        try:
            # Listening: only now is anything written (journal, credentials).
            core, credentials = open_here(embedded)
            web = await _start_web(core, credentials, web_port, web_host, stop, say)
            await _run_gateway(
                core, host=embedded.host, port=embedded.port, username=GATEWAY_USER,
                password=credentials[GATEWAY_USER], stop=stop, announce=lambda: say(
                    f"embedded broker on mqtt://{embedded.host}:{embedded.port}; gateway ready"))
            await _stop_web(web, stop)
        finally:
            await embedded.__aexit__(None, None, None)

    clean = False
    try:
        run_async(main())
        clean = True
    finally:
        writer = started.writer
        if writer is not None:
            try:
                writer.commit()
                if clean and started.engine is not None and writer.seq > writer.last_snapshot:
                    # A clean stop (every journaled command has run) leaves a snapshot of
                    # the state it stopped at: the next start, perhaps of a newer carbonx,
                    # replays no command under other rules.
                    try:
                        writer.snapshot(started.engine)
                    except (JournalError, OSError) as exc:
                        log.warning("no snapshot at the stop (%s): the journal is whole", exc)
            finally:
                # Whatever failed: a snapshot's writer waited for (its unfinished file
                # removed) and the directory given back; a failed commit is said again.
                try:
                    writer.close()
                finally:
                    for warning in writer.warnings:
                        log.warning("%s", warning)
    core, engine = started.core, started.engine
    if core is None or engine is None:
        return 0
    stats = core.stats
    trades = engine.trades - started.trades_before
    print(f"stopped: {stats.messages} messages, {stats.commands} commands, "
          f"{stats.turned_away} turned away, {trades} trades this run"
          + (f" ({engine.trades} with the journal's before it)" if started.trades_before else ""),
          file=sys.stderr)
    return 0
