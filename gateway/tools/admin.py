"""``carbonx admin``: the operator's console, an order file sent to a running exchange.

``carbonx admin --broker mqtt://operator@HOST:PORT [--password-file F] FILE`` reads an
order file (CSV with a header row, or NDJSON with the same keys; ``-`` reads standard
input) with the reader ``carbonx replay`` uses, so a row that cannot be read stops it
before anything is sent, with the file and line named. Then it logs in to the broker as
the operator, subscribes to the operator's answers (``cx/v1/ops/reports``) and sends the
rows one at a time, in file order, to ``cx/v1/ops/commands`` (QoS 1, one JSON object a
row, keyed like the order file), waiting for each row's answer before it sends the next.
Each row carries a ``command_id`` (``admin-<8 hex>-<row>`` when the file gives none, the
hex digits ``--session``'s if given), by which its answer is found; answers to other ids
are ignored, and an answer the exchange gives again from its memory (``"duplicate":
true``, a command id it has seen) counts as that row's answer. A row not answered within
``RESEND_AFTER`` is published again with its id (one published while no gateway reads,
as in a cluster's failover, is lost). One line a row is printed as its answer comes
(``--json``: the answer itself, one JSON object a line, with the row's file ``line``
added); a summary goes to standard error.

The password: ``--password-file FILE`` (one line), else one in the URL
(``mqtt://operator:PASS@HOST:PORT``, which other users' ``ps`` can see), else
``$CARBONX_PASSWORD``; a password both in the URL and by file is an error.

Exit status: 0 when every row was accepted; 1 when any was rejected (the rows after a
rejected one are still sent); 2 when nothing could be done or the run could not finish:
the file cannot be read (its name and line said), the broker cannot be reached or refuses
the login or the subscription, or the exchange does not answer a row within
``--timeout`` seconds (the rows after it are not sent). Those print one line on standard
error. 130 when interrupted.

``AdminClient`` is the same console for a program: ``async with AdminClient(broker) as
admin: answer = await admin.send(command)`` (see ``benchmarks/admin.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from exchange.orderfile import OrderFileError, detect_format, parse_order_text
from gateway.errors import UsageError
from gateway.protocol import (GATEWAY_STATUS, OPS_COMMANDS, OPS_REPORTS, SOCKET_OPTIONS,
                              gateway_status)

if TYPE_CHECKING:
    from exchange.commands import AnyCommand
    from gateway.mqtt.serve import BrokerAddress

__all__ = [
    "AdminClient", "AdminError", "Row", "DESCRIPTION", "EXIT_OK", "EXIT_REJECTED", "EXIT_FAILED",
    "add_parser", "describe", "read_rows", "run"
]

EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2
DEFAULT_TIMEOUT = 10.0  # seconds to log in, and to wait for each row's answer
RESEND_AFTER = 1.0  # seconds without an answer before a row is sent again, same command id
_SESSION = re.compile(r"[0-9a-f]{1,32}")
STDIN = "-"

DESCRIPTION = (
    "The operator's console: send an order file's rows (CSV with a header row, or NDJSON "
    "with the same keys, as 'carbonx replay' reads them; - reads standard input) to a running "
    "exchange, in file order, each as a command on cx/v1/ops/commands, waiting for each row's "
    "answer on cx/v1/ops/reports before sending the next, and print one line a row: the file "
    "line, the action, the account and instrument, accepted (with the sequence number) or "
    "rejected and why. Each row gets a command_id (admin-<session>-<row>) unless it has one; "
    "a row not answered within a second is sent again with the same id (as through a "
    "cluster's failover), and an answer repeated by the exchange for a command id it has seen "
    "counts. --session HEX sends a file again with the ids of an earlier run (its error says "
    "which), so that rows that went through are not applied twice. The password: "
    "--password-file FILE (not with a password in the URL), else the URL's, else "
    "$CARBONX_PASSWORD. Exit status: 0 every row "
    "accepted; 1 some row rejected (the rows after it are still sent); 2 the file cannot be "
    "read (file and line named, nothing sent), the broker cannot be reached or refuses the "
    "login, or the exchange does not answer a row within --timeout seconds (the rows after it "
    "are not sent): one line on standard error.")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class AdminError(Exception):
    """The console cannot go on: no broker, a refused login, no answer. The message is
    the one line to show; ``published``: whether any row had been sent by then."""

    published = False


@dataclass(frozen=True)
class Row:
    """One row of the order file: its file line (``None`` if unknown) and its command."""

    line: int | None
    command: AnyCommand
    number: int  # 1-based, among the file's rows

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else f"row {self.number}"


# --- the file --------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    """Standard input's format: NDJSON if its first non-blank character opens an object."""
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "ndjson" if text.startswith(b"{") else "csv"


def _row_lines(data: bytes, fmt: str) -> list[int]:
    """The file line of each data row, counted as the order-file reader counts them (the
    CSV header is line 1, blank lines hold no row; NDJSON from its first line)."""
    if fmt == "ndjson":
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        return [number for number, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    rows = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    width = len(next(rows))
    lines, last = [], rows.line_num
    for row in rows:
        first, last = last + 1, rows.line_num
        if len(row) != width and (not row or (len(row) == 1 and not row[0].strip())):
            continue  # a blank line, which the reader skips too
        lines.append(first)
    return lines


def read_rows(path: str, fmt: str | None = None, *,
              stdin: Callable[[], bytes] | None = None) -> list[Row]:
    """The rows of order file *path* (``-``: standard input) as commands with their file
    lines; raise ``OrderFileError`` naming the file and line of a row that cannot be read."""
    if path == STDIN:
        name = "<stdin>"
        data = stdin() if stdin is not None else sys.stdin.buffer.read()
        fmt = fmt or _sniff(data)
    else:
        name = path
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise OrderFileError(name, None, f"cannot read: {exc.strerror or exc}") from None
        fmt = fmt or detect_format(path)
    commands = parse_order_text(data, fmt, name=name)
    try:
        lines: Sequence[int | None] = _row_lines(data, fmt)
    except (csv.Error, UnicodeDecodeError, StopIteration):
        lines = []
    if len(lines) != len(commands):  # never expected: then say the row's number instead
        lines = [None] * len(commands)
    return [
        Row(line, command, number)
        for number, (line, command) in enumerate(zip(lines, commands), 1)
    ]


def with_command_ids(rows: list[Row], session: str | None = None) -> list[Row]:
    """*rows*, each command given ``admin-<session>-<row number>`` unless it has an id."""
    session = session or secrets.token_hex(4)
    return [
        row if row.command.command_id else Row(
            row.line,
            msgspec.structs.replace(row.command, command_id=f"admin-{session}-{row.number}"),
            row.number) for row in rows
    ]


def describe(command: AnyCommand) -> str:
    """``deposit alice CNY``, ``transfer alice -> bob CEA25``: the action and whom and
    what it is about."""
    parts = [type(command).__struct_config__.tag]
    get = command.__getattribute__
    fields = set(command.__struct_fields__)
    if "account" in fields and get("account"):
        parts.append(get("account"))
    if "to_account" in fields and get("to_account"):
        parts += ["->", get("to_account")]
    for name in ("instrument", "currency"):
        if name in fields and get(name):
            parts.append(get(name))
    if "to_instrument" in fields and get("to_instrument"):
        parts += ["->", get("to_instrument")]
    if "year" in fields and get("year") is not None:
        parts.append(f"year {get('year')}")
    if "pledge_id" in fields:
        parts.append(f"pledge {get('pledge_id')}")
    return " ".join(str(p) for p in parts)


# --- the broker ------------------------------------------------------------------------

_LOGIN_REFUSED = {4, 5, 134, 135}  # bad user name or password; not authorised


def _phrase(exc: BaseException) -> str:
    """``[Errno 111] Connection refused`` -> ``connection refused``."""
    text = re.sub(r"^\[(Errno|code:)\s*-?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _failed(code: Any) -> bool:
    """Whether a SUBACK's granted QoS is the failure code 0x80."""
    if getattr(code, "is_failure", False):
        return True
    return getattr(code, "value", code) == 0x80


class AdminClient:
    """The operator's connection: ``send(command)`` publishes it and returns its answer.

    Subscribed to the answers before anything is sent; answers are matched by
    ``command_id`` (a command sent without one is given one), others ignored.
    """

    def __init__(self, broker: BrokerAddress, *, timeout: float = DEFAULT_TIMEOUT,
                 resend_after: float = RESEND_AFTER) -> None:
        self.broker = broker
        self.timeout = timeout
        self.resend_after = resend_after
        self.where = f"{broker.host}:{broker.port}"
        self._session = secrets.token_hex(4)
        self._sent = 0
        self.published = 0  # rows published (again or not): the exchange may have them
        self._mqtt: Any = None
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._lost: str | None = None
        # The gateway's last word on cx/v1/status ("up", or "down" and why), if any: a
        # row left unanswered is then said to be so because the gateway is down.
        self.gateway: dict | None = None

    async def __aenter__(self) -> AdminClient:
        import aiomqtt

        broker = self.broker
        client = aiomqtt.Client(broker.host, broker.port, username=broker.username,
                                password=broker.password,
                                identifier=f"carbonx-admin-{self._session}", clean_session=True,
                                timeout=self.timeout, keepalive=30, socket_options=SOCKET_OPTIONS)
        try:
            await asyncio.wait_for(client.__aenter__(), self.timeout + 1)
        except aiomqtt.MqttCodeError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if code in _LOGIN_REFUSED:
                raise AdminError(f"the broker at {self.where} refused the login for user "
                                 f"{broker.username}: {_phrase(exc)}") from None
            raise AdminError(
                f"the broker at {self.where} refused the connection: {_phrase(exc)}") from None
        except aiomqtt.MqttError as exc:
            raise AdminError(f"cannot connect to broker {self.where}: {_phrase(exc)}") from None
        except TimeoutError:
            raise AdminError(f"cannot connect to broker {self.where}: no answer within "
                             f"{self.timeout:g} s") from None
        self._mqtt = client
        try:
            granted = await client.subscribe(OPS_REPORTS, qos=1)
            if any(_failed(code) for code in granted or ()):
                raise AdminError(
                    f"the broker at {self.where} refused user {broker.username} the "
                    f"operator's answers ({OPS_REPORTS}): log in as the operator") from None
        except aiomqtt.MqttError as exc:
            await self._close()
            raise AdminError(f"the broker at {self.where}: cannot subscribe to {OPS_REPORTS}: "
                             f"{_phrase(exc)}") from None
        except BaseException:
            await self._close()
            raise
        with contextlib.suppress(aiomqtt.MqttError):  # (a broker set up before the topic)
            await client.subscribe(GATEWAY_STATUS, qos=1)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._mqtt is not None:
            client, self._mqtt = self._mqtt, None
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def _read(self) -> None:
        import aiomqtt

        try:
            async for message in self._mqtt.messages:
                if message.topic.value == GATEWAY_STATUS:
                    self._status(message.payload)
                else:
                    self._take(message.payload)
        except aiomqtt.MqttError as exc:
            self._lost = f"lost the connection to the broker {self.where}: {_phrase(exc)}"
        else:
            self._lost = f"lost the connection to the broker {self.where}"
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AdminError(self._lost))

    def _status(self, payload: Any) -> None:
        try:
            decoded = _decode(payload) if payload else None
        except (msgspec.DecodeError, TypeError):
            decoded = None
        self.gateway = decoded if gateway_status(decoded) is not None else None

    def _take(self, payload: Any) -> None:
        """Hand each answer in *payload* (one object or a list) to the row awaiting it."""
        try:
            decoded = _decode(payload)
        except (msgspec.DecodeError, TypeError):
            return  # not JSON: not an answer of the exchange's
        for answer in decoded if isinstance(decoded, list) else (decoded, ):
            key = answer.get("command_id") if isinstance(answer, dict) else None
            if not isinstance(key, str):
                continue
            future = self._pending.get(key)
            if future is not None and not future.done():
                future.set_result(answer)

    def command_id(self, command: AnyCommand) -> AnyCommand:
        """*command* with a ``command_id`` of this session's when it has none."""
        self._sent += 1
        if command.command_id:
            return command
        return msgspec.structs.replace(command,
                                       command_id=f"admin-{self._session}-{self._sent}")

    async def send(self, command: AnyCommand, what: str | None = None) -> dict:
        """Publish *command* (given a ``command_id`` if it has none) and return its answer;
        raise ``AdminError`` if none comes within the timeout. *what* names it in that
        message."""
        if self._lost is not None:
            raise AdminError(self._lost)
        if not command.command_id:
            command = self.command_id(command)
        key = command.command_id
        assert key is not None
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            await asyncio.wait_for(self._send_and_wait(command, future), self.timeout)
        except TimeoutError:
            what = what or describe(command)
            raise AdminError(f"no answer from the exchange to {what} within {self.timeout:g} s "
                             f"({self._why_unanswered()})") from None
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
        return future.result()

    def _why_unanswered(self) -> str:
        """What the gateway last said of itself, as the likely reason for no answer."""
        said = self.gateway or {}
        if said.get("status") == "down":
            how = {"stopped": "it was stopped", "failed": "it stopped on an error",
                   "lost": "its connection was lost"}.get(said.get("reason"), "")
            return (f"the exchange's gateway on the broker {self.where} is down"
                    + (f": {how}" if how else ""))
        if said.get("status") == "up":
            return f"the exchange's gateway on the broker {self.where} says it is up"
        return f"is carbonx serve running on the broker {self.where}?"

    async def _send_and_wait(self, command: AnyCommand, future: asyncio.Future) -> None:
        """Publish *command* until it is answered: again, with its command id, each
        ``resend_after`` without an answer. A command published while no gateway reads
        (a cluster's leader changing) is lost; its copy reaches the next, and one that
        did act is answered as it was the first time (the exchange's command window)."""
        import aiomqtt

        payload = _encode(command)
        while True:
            self.published += 1
            # The publish races the answer: a connection lost meanwhile (the reader sets
            # it on *future*) left a QoS 1 publish waiting for good, and the row was
            # reported unanswered after the whole timeout, the loss said nowhere.
            publish = asyncio.ensure_future(self._mqtt.publish(OPS_COMMANDS, payload, qos=1))
            try:
                await asyncio.wait((publish, future), return_when=asyncio.FIRST_COMPLETED)
            finally:  # answered, lost, or the row's time up (this task cancelled)
                if not publish.done():
                    publish.cancel()
                    publish.add_done_callback(_retrieve)
            if future.done():
                future.result()  # the answer, or the connection's loss (AdminError)
                return
            try:
                publish.result()
            except aiomqtt.MqttError as exc:
                raise AdminError(
                    f"cannot send to the broker {self.where}: {_phrase(exc)}") from None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), self.resend_after)
                return


# --- the command -----------------------------------------------------------------------


def _retrieve(task: asyncio.Future) -> None:
    """Take the outcome of a publish no one waits for any more (so that asyncio does not
    report an exception never retrieved)."""
    if not task.cancelled():
        task.exception()


def answer_line(row: Row, answer: dict) -> str:
    """The human line of *row*'s *answer*: ``line 2 deposit alice CNY: accepted (seq 12)``."""
    head = f"{row.where} {describe(row.command)}"
    kind = answer.get("report")
    seq = answer.get("seq")
    again = answer.get("duplicate") is True
    if kind == "rejected":
        text = f"{head}: rejected {answer.get('reason') or 'without a reason'}"
        if answer.get("message"):
            text += f": {answer['message']}"
        notes = [f"seq {seq}"] if seq is not None else []
    else:
        text = f"{head}: {kind or 'answered'}"
        notes = [f"seq {seq}"] if seq is not None else []
        detail = answer.get("detail")
        if detail not in (None, "", {}, []):
            text += f": {detail if isinstance(detail, str) else json.dumps(detail)}"
    if again:
        notes.append("answered before: a duplicate command id")
    return text + (f" ({', '.join(notes)})" if notes else "")


async def send_rows(broker: BrokerAddress, rows: list[Row], *, timeout: float,
                    out: Callable[[Row, dict], None]) -> tuple[int, int]:
    """Send *rows* in order, each once the one before is answered; call *out* with each
    answer. Returns (accepted, rejected)."""
    accepted = rejected = 0
    async with AdminClient(broker, timeout=timeout) as admin:
        try:
            for row in rows:
                answer = await admin.send(row.command, f"{row.where} ({describe(row.command)})")
                if answer.get("report") == "rejected":
                    rejected += 1
                else:
                    accepted += 1
                out(row, answer)
        except AdminError as exc:
            exc.published = admin.published > 0
            raise
    return accepted, rejected


def _broker(args: argparse.Namespace) -> BrokerAddress:
    from urllib.parse import urlsplit

    from gateway.mqtt.serve import PASSWORD_ENV, ServeError, resolve_broker

    try:
        parts = urlsplit(args.broker)
    except ValueError:
        parts = None  # resolve_broker says what is wrong with it
    try:
        if parts is not None and not parts.username:
            raise UsageError(f"--broker: expected mqtt://operator@HOST:PORT, with the operator's "
                             f"password in --password-file FILE or ${PASSWORD_ENV}")
        return resolve_broker(args.broker, password_file=args.password_file)
    except (ServeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """``carbonx admin``: the exit status (0, 1, or 2 raised as ``UsageError`` /
    ``OrderFileError`` for ``gateway.cli`` to say)."""
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise UsageError(f"--timeout {args.timeout:g}: must be a number of seconds above 0")
    broker = _broker(args)
    session = args.session or secrets.token_hex(4)
    if not _SESSION.fullmatch(session):
        raise UsageError(f"--session {session!r}: the hex digits of an earlier run's command "
                         "ids (admin-HEX-ROW)")
    rows = with_command_ids(read_rows(args.file, args.format), session)

    def out(row: Row, answer: dict) -> None:
        if args.json:
            line = _encode({**answer, "line": row.line} if "line" not in answer else answer)
            sys.stdout.write(line.decode() + "\n")
        else:
            sys.stdout.write(answer_line(row, answer) + "\n")
        sys.stdout.flush()

    from gateway.mqtt.serve import run_async

    counts: list[tuple[int, int]] = []

    async def main() -> None:
        counts.append(await send_rows(broker, rows, timeout=args.timeout, out=out))

    try:
        run_async(main())
    except AdminError as exc:
        if not exc.published:  # nothing sent: nothing to say of ids
            raise UsageError(str(exc)) from None
        # Rows that went through keep their ids: sent again with them, they are answered
        # as they were, not applied twice (while the exchange remembers them).
        raise UsageError(f"{exc}; the rows carry command ids admin-{session}-ROW: "
                         f"'--session {session}' sends the file again without applying twice "
                         "the rows that went through") from None
    accepted, rejected = counts[0]
    print(f"carbonx admin: {len(rows)} row(s) sent: {accepted} accepted, {rejected} rejected",
          file=sys.stderr)
    return EXIT_REJECTED if rejected else EXIT_OK


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``admin`` to *subparsers* (``carbonx``'s), its ``run`` set."""
    parser = subparsers.add_parser("admin", help="send an order file's rows to a running exchange "
                                   "as the operator", description=DESCRIPTION)
    parser.add_argument("file", metavar="FILE|-", help="the order file (- reads standard input)")
    parser.add_argument(
        "--broker", metavar="URL", required=True,
        help="mqtt://operator@HOST:PORT of the exchange's broker (mqtt://operator:PASS@... "
        "also works, but other users can see a command line)")
    parser.add_argument(
        "--password-file", metavar="FILE",
        help="a file holding the operator's password on one line (else the URL's, else "
        "$CARBONX_PASSWORD; not with a password in the URL)")
    parser.add_argument("--json", action="store_true",
                        help="print each answer as one JSON object a line, its file 'line' added")
    parser.add_argument(
        "--session", metavar="HEX",
        help="give the rows the command ids of an earlier run (admin-HEX-ROW, as its error "
        "said): rows that went through then are answered as they were, not applied twice")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="how long to wait for the login and for each row's answer "
        "(default %(default)g)")
    parser.add_argument(
        "--format", choices=("csv", "ndjson"),
        help="file format (default: from the extension, .ndjson/.jsonl/.json = ndjson; "
        "standard input: ndjson if it starts with '{')")
    parser.set_defaults(run=run)
    return parser
