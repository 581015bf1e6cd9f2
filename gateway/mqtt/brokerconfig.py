"""Configuration for a local mosquitto broker that carries the gateway's MQTT traffic.

``write_broker_config(out_dir, port, accounts)`` writes four files into *out_dir*, and
refuses (``ConfigExistsError``) to write over any of them unless ``force=True``:

- ``mosquitto.conf``: one listener on ``127.0.0.1:PORT`` only, no anonymous access,
  the password and ACL files by absolute path, limits that let a fast gateway stream
  (``max_packet_size`` 1 MiB: a larger packet gets its client disconnected), and
  ``use_username_as_clientid`` on the listener, so a client's identifier is its user name
  and one account cannot disconnect another's session by reusing its identifier (an
  account's second connection takes over from its first);
- ``passwd``: one ``user:hash`` line per account and for each of the two system users,
  ``gateway`` (the engine's connection) and ``operator`` (the operator console), hashed
  here (no ``mosquitto_passwd`` binary needed) in mosquitto's ``$7$`` format (mode 0600);
- ``acl``: each account may write only ``cx/v1/orders/ACCOUNT`` and read only
  ``cx/v1/exec/ACCOUNT``, ``cx/v1/md/#`` and ``cx/v1/status`` (nothing under
  ``cx/v1/ops/``); the gateway reads ``cx/v1/orders/+`` (and writes there only to clear
  a retained copy) and ``cx/v1/ops/commands``, and writes ``cx/v1/exec/+``,
  ``cx/v1/md/#``, ``cx/v1/ops/reports`` and ``cx/v1/status`` (whether it serves); the
  operator writes only ``cx/v1/ops/commands`` and reads only ``cx/v1/ops/reports``,
  ``cx/v1/md/#`` and ``cx/v1/status`` (it places no orders);
- ``credentials.json``: ``{"ACCOUNT": "PASSWORD", ..., "gateway": "...", "operator":
  "..."}`` (mode 0600);
- ``gateway.password`` and ``operator.password``: each system user's password on one
  line (mode 0600), for ``carbonx serve --password-file`` and ``carbonx admin
  --password-file``;
- ``carbonx_limit.so``: each account's publishing limit (``ACCOUNT_MESSAGE_RATE``
  messages and ``ACCOUNT_BYTE_RATE`` bytes a second, with bursts; the gateway exempt, the
  operator, which sends few messages, limited as an account is),
  a mosquitto plugin built here with the C compiler from ``mosquitto_limit.c`` beside
  this file (mosquitto 2.0 has no such limit of its own). It needs ``cc`` and the
  headers of Debian's ``mosquitto-dev`` and ``libmosquitto-dev``; without them
  ``PluginBuildError`` says so before anything is written, and ``limits=None`` writes
  a configuration without the limit.

The ``user`` line: mosquitto started as root drops to that user (to ``mosquitto`` when
there is none). Written by a non-root user, the config names that user, who owns the
0600 files and so can read them. Written by root, it has no ``user`` line (never
``user root``: a broker facing the network should not keep root), and ``passwd`` and
``acl`` are given to the ``mosquitto`` user when there is one (mosquitto drops to it);
the directory must let that user in.

Neither system user's name may be an account's, nor a name starting with ``@`` (the
engine's system accounts, ``@exchange`` and the like). Passwords not given (and always the
system users') are generated with :mod:`secrets`. The hash format, as mosquitto 2.0
reads it: ``$7$ITERATIONS$base64(salt)$base64(PBKDF2-HMAC-SHA512(password, salt))``
(``$6$base64(salt)$base64(SHA-512(password + salt))`` is also read, for checking only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.protocol import (GATEWAY, GATEWAY_STATUS, OPERATOR, OPS_COMMANDS, OPS_REPORTS,
                              account_name_problem)

__all__ = [
    "GATEWAY_USER", "OPERATOR_USER", "SYSTEM_USERS", "TOPIC_ROOT", "PBKDF2_ITERATIONS",
    "MAX_PACKET_SIZE", "CONFIG_FILES", "AccountLimits", "DEFAULT_LIMITS", "EMBEDDED_LIMITS",
    "ConfigExistsError",
    "PluginBuildError", "build_limit_plugin", "existing_config", "write_broker_config",
    "parse_account_args", "validate_account_name", "hash_password", "verify_password",
    "generate_password", "render_config", "render_acl"
]

GATEWAY_USER = GATEWAY  # the engine's connection
OPERATOR_USER = OPERATOR  # the operator console
SYSTEM_USERS = (GATEWAY_USER, OPERATOR_USER)  # the broker's users besides the accounts
TOPIC_ROOT = "cx/v1"
PBKDF2_ITERATIONS = 1000
SALT_BYTES = 12
FORBIDDEN_NAME_CHARS = frozenset("/+#:")
# The engine's system accounts (``@exchange``, ``@registry``, ``@clearing``): no trader's.
SYSTEM_ACCOUNT_PREFIX = "@"

CONF_NAME, PASSWD_NAME, ACL_NAME, CREDENTIALS_NAME, LIMIT_NAME = ("mosquitto.conf", "passwd", "acl",
                                                                  "credentials.json",
                                                                  "carbonx_limit.so")
PASSWORD_FILES = (f"{GATEWAY_USER}.password", f"{OPERATOR_USER}.password")
CONFIG_FILES = (CONF_NAME, PASSWD_NAME, ACL_NAME, CREDENTIALS_NAME, LIMIT_NAME, *PASSWORD_FILES)
LIMIT_SOURCE = Path(__file__).with_name("mosquitto_limit.c")

MAX_PACKET_SIZE = 1024 * 1024  # bytes, a whole packet (the embedded broker's limit too)
MAX_INFLIGHT_MESSAGES = 1000
# What one account may publish, sustained (and in a burst), on either broker: a flood is
# held back at the broker, before it reaches the one stream every account's orders share
# on their way to the gateway (where another account's order would wait behind it).
ACCOUNT_MESSAGE_RATE = 1_000  # messages a second
ACCOUNT_MESSAGE_BURST = 200
ACCOUNT_BYTE_RATE = 4 * 1024 * 1024  # bytes a second
ACCOUNT_BYTE_BURST = 2 * MAX_PACKET_SIZE


@dataclass(frozen=True)
class AccountLimits:
    """What one account may publish: messages and bytes a second, and the bursts."""

    message_rate: int = ACCOUNT_MESSAGE_RATE
    message_burst: int = ACCOUNT_MESSAGE_BURST
    byte_rate: int = ACCOUNT_BYTE_RATE
    byte_burst: int = ACCOUNT_BYTE_BURST

    def __post_init__(self) -> None:
        for name in ("message_rate", "message_burst", "byte_rate", "byte_burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
        if self.byte_burst < MAX_PACKET_SIZE:
            raise ValueError(f"byte_burst {self.byte_burst} is under the largest packet "
                             f"({MAX_PACKET_SIZE} bytes), which would never get through")

    @classmethod
    def scaled(cls, message_rate: int = ACCOUNT_MESSAGE_RATE,
               byte_rate: int = ACCOUNT_BYTE_RATE) -> AccountLimits:
        """Limits for the given rates, with bursts in the defaults' proportion."""
        return cls(message_rate, max(message_rate // 5, 1), byte_rate,
                   max(byte_rate // 2, ACCOUNT_BYTE_BURST))


DEFAULT_LIMITS = AccountLimits()
# The embedded broker runs in the exchange's own process, on its event loop, and amqtt
# is Python: an account at mosquitto's rates (1,000 messages, or 40,000 orders in
# batches, a second) takes all of that process on a small machine, and every other
# account's answers wait behind it (benchmarks/fairness.py: quiet p99 30-65 ms). So it
# holds each account to a quarter of them.
EMBEDDED_MESSAGE_RATE = ACCOUNT_MESSAGE_RATE // 4
EMBEDDED_BYTE_RATE = ACCOUNT_BYTE_RATE // 4
EMBEDDED_LIMITS = AccountLimits.scaled(EMBEDDED_MESSAGE_RATE, EMBEDDED_BYTE_RATE)
MAX_QUEUED_MESSAGES = 100_000


class PluginBuildError(ValueError):
    """The publishing-limit plugin could not be built; the message says what is missing."""


class ConfigExistsError(ValueError):
    """The output directory already holds a broker configuration (pass ``force``)."""


def validate_account_name(name: str) -> str:
    """Return *name* if it may be an account (an MQTT user and a topic level), else raise.

    A name is non-empty, is neither system user (``gateway``, ``operator``), does not
    start with ``@`` (the engine's system accounts, such as ``@exchange``, whose orders
    it rejects ``reserved_account``), and has none of ``/ + # :``, whitespace, or
    control/format/unassigned characters.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("account name must be a non-empty string")
    if name.startswith(SYSTEM_ACCOUNT_PREFIX):
        raise ValueError(f"account name {name!r} is reserved for the exchange's system accounts "
                         f"(names starting with {SYSTEM_ACCOUNT_PREFIX!r})")
    for char in name:  # the operator's rows are told the same (gateway.protocol)
        if char in FORBIDDEN_NAME_CHARS:
            raise ValueError(
                f"account name {name!r} must not contain {char!r} (none of / + # : are allowed)")
    problem = account_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def _validate_password(account: str, password: str) -> str:
    if not isinstance(password, str) or not password:
        raise ValueError(f"password for account {account!r} must be a non-empty string")
    if "\x00" in password:
        raise ValueError(f"password for account {account!r} must not contain NUL")
    return password


def parse_account_args(args: list[str]) -> dict[str, str | None]:
    """Parse ``ACCOUNT[:PASSWORD]`` items into ``{account: password or None}``.

    The password is everything after the first ``:`` (it may contain ``:`` itself).
    Raises ``ValueError`` on a bad name, an empty ``ACCOUNT:`` password or a duplicate.
    """
    accounts: dict[str, str | None] = {}
    for item in args:
        name, sep, password = item.partition(":")
        validate_account_name(name)
        if name in accounts:
            raise ValueError(f"account {name!r} is given more than once")
        accounts[name] = _validate_password(name, password) if sep else None
    return accounts


def generate_password(nbytes: int = 18) -> str:
    """A fresh random password: *nbytes* random bytes, URL-safe base64 (24 characters
    for 18), never starting with ``-`` (which a command line such as ``mosquitto_pub -P``
    would take for an option)."""
    while True:
        password = secrets.token_urlsafe(nbytes)
        if not password.startswith("-"):
            return password


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """Hash *password* the way ``mosquitto_passwd -H sha512-pbkdf2`` does (``$7$``)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Check *password* against a mosquitto ``$7$`` or ``$6$`` hash; False if malformed."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            iterations, salt, expected = int(parts[2]), _unb64(parts[3]), _unb64(parts[4])
            if iterations < 1:
                return False
            actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
        elif len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, expected = _unb64(parts[2]), _unb64(parts[3])
            actual = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _acl_block(user: str, rules: list[tuple[str, str]]) -> str:
    lines = [f"user {user}", *(f"topic {access} {topic}" for access, topic in rules)]
    return "\n".join(lines) + "\n"


def render_acl(accounts: list[str]) -> str:
    """The ACL file text for the two system users and *accounts* (raises ``ValueError``
    for a name that may not be an account's)."""
    root = TOPIC_ROOT
    for name in accounts:
        validate_account_name(name)
    blocks = [
        "# carbonx broker ACL: written by 'carbonx broker-config'; no rules for anonymous.\n",
        _acl_block(
            GATEWAY_USER,
            [
                # readwrite: the gateway clears a retained copy left on an orders topic
                ("readwrite", f"{root}/orders/+"),
                ("write", f"{root}/exec/+"),
                ("write", f"{root}/md/#"),
                ("read", OPS_COMMANDS),
                ("write", OPS_REPORTS),
                ("write", GATEWAY_STATUS)
            ]),
        # The operator console: commands out, their reports and market data in; no orders.
        _acl_block(OPERATOR_USER, [("write", OPS_COMMANDS), ("read", OPS_REPORTS),
                                   ("read", f"{root}/md/#"), ("read", GATEWAY_STATUS)])
    ]
    for name in accounts:
        blocks.append(
            _acl_block(name, [("write", f"{root}/orders/{name}"), ("read", f"{root}/exec/{name}"),
                              ("read", f"{root}/md/#"), ("read", GATEWAY_STATUS)]))
    return "\n".join(blocks)


def _run_as_user() -> str | None:
    """The user a broker started as root should drop to: the one writing the 0600 files,
    who can read them; None for root (no ``user root``) or a uid without a name."""
    uid = os.geteuid()
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def build_limit_plugin(target: Path) -> None:
    """Compile the publishing-limit plugin into *target* (via a temporary file beside it);
    raise ``PluginBuildError`` naming what is missing."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise PluginBuildError(
            "building the per-account publishing limit (a mosquitto plugin) needs a C "
            "compiler: install one (Debian: apt-get install gcc mosquitto-dev "
            "libmosquitto-dev), or go without the limit (--no-limit)")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            done = subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o",
                 str(tmp), str(LIMIT_SOURCE)], capture_output=True, text=True, timeout=120,
                check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PluginBuildError(
                f"building the per-account publishing limit (a mosquitto plugin) with "
                f"{compiler!r} failed: {exc}; or go without the limit (--no-limit)") from None
        if done.returncode != 0:
            missing = "mosquitto" in done.stderr and "No such file" in done.stderr
            raise PluginBuildError(
                "building the per-account publishing limit (a mosquitto plugin) failed" +
                (": mosquitto's plugin headers are missing (Debian: apt-get install "
                 "mosquitto-dev libmosquitto-dev)"
                 if missing else f": {_last_line(done.stderr) or done.returncode}") +
                "; or go without the limit (--no-limit)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def render_config(port: int, passwd_path: Path, acl_path: Path, run_as: str | None = None,
                  limit_path: Path | None = None, limits: AccountLimits = DEFAULT_LIMITS) -> str:
    """The ``mosquitto.conf`` text: one listener on 127.0.0.1:*port*, files by absolute path."""
    lines = [
        "# carbonx broker configuration: written by 'carbonx broker-config'.",
        "# Start with: mosquitto -c <this file>", "per_listener_settings false",
        "allow_anonymous false", f"password_file {passwd_path}", f"acl_file {acl_path}",
        "persistence false", f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}", f"max_packet_size {MAX_PACKET_SIZE}",
        "set_tcp_nodelay true", "log_dest stderr", "log_type error", "log_type warning",
        "log_type notice", "log_type information", "connection_messages true"
    ]
    if run_as and run_as != "root":
        lines += [
            "# Started as root, mosquitto drops to this user, who owns the files here.",
            f"user {run_as}"
        ]
    else:
        lines += [
            "# No 'user' line: started as root, mosquitto drops to the 'mosquitto' user,",
            "# which owns passwd and acl (given to it when there is one) and must be able",
            "# to reach this directory; or start mosquitto as a user who can read them."
        ]
    if limit_path is not None:
        lines += [
            "# Each account's publishing limit, and the operator's (the gateway exempt): past it",
            "# the broker drops the account's messages and tells it so on cx/v1/exec/ACCOUNT.",
            f"plugin {limit_path}", f"plugin_opt_message_rate {limits.message_rate}",
            f"plugin_opt_message_burst {limits.message_burst}",
            f"plugin_opt_byte_rate {limits.byte_rate}",
            f"plugin_opt_byte_burst {limits.byte_burst}", f"plugin_opt_exempt {GATEWAY_USER}",
            f"plugin_opt_notice_prefix {TOPIC_ROOT}/exec/"
        ]
    else:
        lines += ["# No per-account publishing limit (written with --no-limit)."]
    lines += [
        "", f"listener {port} 127.0.0.1",
        "# A client's identifier is its user name: no account can take another's session.",
        "use_username_as_clientid true", ""
    ]
    return "\n".join(lines)


def _write_file(path: Path, text: str, mode: int) -> None:
    """Write *text* to *path* atomically (temp file + rename), with permission *mode*."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_writable(directory: Path) -> None:
    """Create and remove a file in *directory*; raise the ``OSError`` if it cannot be
    written (permissions, an immutable directory, a read-only mount: ``os.access`` would
    miss some of these)."""
    probe = directory / f".carbonx-write-check.{secrets.token_hex(4)}.tmp"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    probe.unlink()


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    return port


def existing_config(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the configuration files *directory* already holds."""
    return [name for name in CONFIG_FILES if os.path.lexists(Path(directory) / name)]


def write_broker_config(out_dir: str | os.PathLike[str], port: int,
                        accounts: Mapping[str, str | None], *, force: bool = False,
                        limits: AccountLimits | None = DEFAULT_LIMITS) -> dict[str, str]:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials.json`` into *out_dir*.

    *accounts* maps each account to its password, or to None for a generated one (a new
    one on every call, as are the system users': rewriting a directory changes them).
    Returns the credentials written to ``credentials.json``: every account, then
    ``gateway`` and ``operator``.
    Raises ``ValueError`` for a bad port, account name or password, and
    ``ConfigExistsError`` (a ``ValueError``) if *out_dir* holds any of the files, unless
    *force*, and ``PluginBuildError`` (a ``ValueError``) if the limit plugin cannot be
    built (unless *limits* is None: no limit); nothing is written then. An *out_dir* that
    cannot be created or written raises its ``OSError`` before anything is built.
    """
    _check_port(port)
    credentials: dict[str, str] = {}
    for name, password in accounts.items():
        validate_account_name(name)
        credentials[name] = (generate_password() if password is None else _validate_password(
            name, password))
    for user in (GATEWAY_USER, OPERATOR_USER):  # in this order in the files
        credentials[user] = generate_password()

    directory = Path(out_dir).resolve()
    if any(char in str(directory) for char in "\r\n"):
        raise ValueError(f"output directory {str(directory)!r} must not contain a line break "
                         f"(mosquitto.conf names files by path, one per line)")
    found = existing_config(directory)
    if found and not force:
        raise ConfigExistsError(
            f"{directory} already holds a broker configuration ({', '.join(found)}); "
            f"writing it again would change the passwords: use --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    _check_writable(directory)  # before the compiler, whose linker would only say it failed
    limit_path = directory / LIMIT_NAME
    if limits is not None:
        build_limit_plugin(limit_path)  # first: a missing compiler leaves nothing behind
    else:
        limit_path.unlink(missing_ok=True)
    passwd_path, acl_path = directory / PASSWD_NAME, directory / ACL_NAME
    passwd = "".join(f"{user}:{hash_password(pw)}\n" for user, pw in credentials.items())
    _write_file(passwd_path, passwd, 0o600)
    _write_file(directory / CREDENTIALS_NAME, json.dumps(credentials, indent=2) + "\n", 0o600)
    # For --password-file: the gateway's (carbonx serve) and the operator's (carbonx admin).
    for user in (GATEWAY_USER, OPERATOR_USER):
        _write_file(directory / f"{user}.password", credentials[user] + "\n", 0o600)
    _write_file(acl_path, render_acl([n for n in credentials if n not in SYSTEM_USERS]), 0o644)
    _write_file(
        directory / CONF_NAME,
        render_config(port, passwd_path, acl_path, _run_as_user(),
                      None if limits is None else limit_path, limits or DEFAULT_LIMITS), 0o644)
    _give_to_broker_user(passwd_path, acl_path)
    return credentials


def _give_to_broker_user(*paths: Path) -> bool:
    """Written by root: hand *paths* to the ``mosquitto`` user, which a broker started as
    root drops to (their mode stays). Returns whether it did."""
    if os.geteuid() != 0:
        return False
    try:
        broker_user = pwd.getpwnam("mosquitto")
    except KeyError:
        return False
    for path in paths:
        os.chown(path, broker_user.pw_uid, broker_user.pw_gid)
    return True
