"""Configuration for a local mosquitto broker that carries the gateway's MQTT traffic.

``write_broker_config(out_dir, port, accounts)`` writes four files into *out_dir*, and
refuses (``ConfigExistsError``) to write over any of them unless ``force=True``:

- ``mosquitto.conf``: one listener on ``127.0.0.1:PORT`` only, no anonymous access,
  the password and ACL files by absolute path, limits that let a fast gateway stream
  (``max_packet_size`` 1 MiB: a larger packet gets its client disconnected), and
  ``use_username_as_clientid`` on the listener, so a client's identifier is its user name
  and one account cannot disconnect another's session by reusing its identifier (an
  account's second connection takes over from its first);
- ``passwd``: one ``user:hash`` line per account and for the gateway user, hashed here
  (no ``mosquitto_passwd`` binary needed) in mosquitto's ``$7$`` format (mode 0600);
- ``acl``: each account may write only ``cx/v1/orders/ACCOUNT`` and read only
  ``cx/v1/exec/ACCOUNT`` and ``cx/v1/md/#``; the gateway reads ``cx/v1/orders/+`` (and
  writes there only to clear a retained copy) and writes ``cx/v1/exec/+`` and
  ``cx/v1/md/#``;
- ``credentials.json``: ``{"ACCOUNT": "PASSWORD", ..., "gateway": "..."}`` (mode 0600).

The ``user`` line: mosquitto started as root drops to that user (to ``mosquitto`` when
there is none). Written by a non-root user, the config names that user, who owns the
0600 files and so can read them. Written by root, it has no ``user`` line (never
``user root``: a broker facing the network should not keep root): give ``passwd`` and
``acl`` to the ``mosquitto`` user (``chown mosquitto passwd acl``), or start mosquitto as
a non-root user who can read them.

Passwords not given are generated with :mod:`secrets`. The hash format, as mosquitto 2.0
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
import unicodedata
from pathlib import Path
from typing import Mapping

__all__ = [
    "GATEWAY_USER", "TOPIC_ROOT", "PBKDF2_ITERATIONS", "MAX_PACKET_SIZE", "CONFIG_FILES",
    "ConfigExistsError", "existing_config", "write_broker_config", "parse_account_args",
    "validate_account_name", "hash_password", "verify_password", "generate_password",
    "render_config", "render_acl",
]

GATEWAY_USER = "gateway"
TOPIC_ROOT = "cx/v1"
PBKDF2_ITERATIONS = 1000
SALT_BYTES = 12
FORBIDDEN_NAME_CHARS = frozenset("/+#:")

CONF_NAME, PASSWD_NAME, ACL_NAME, CREDENTIALS_NAME = (
    "mosquitto.conf", "passwd", "acl", "credentials.json")
CONFIG_FILES = (CONF_NAME, PASSWD_NAME, ACL_NAME, CREDENTIALS_NAME)

MAX_PACKET_SIZE = 1024 * 1024  # bytes, a whole packet (the embedded broker's limit too)
MAX_INFLIGHT_MESSAGES = 1000
MAX_QUEUED_MESSAGES = 100_000


class ConfigExistsError(ValueError):
    """The output directory already holds a broker configuration (pass ``force``)."""


def validate_account_name(name: str) -> str:
    """Return *name* if it may be an account (an MQTT user and a topic level), else raise.

    A name is non-empty, is not the gateway's own user, and has none of ``/ + # :``,
    whitespace, or control/format/unassigned characters.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("account name must be a non-empty string")
    if name == GATEWAY_USER:
        raise ValueError(f"account name {name!r} is reserved for the gateway's own MQTT user")
    for char in name:
        if char in FORBIDDEN_NAME_CHARS:
            raise ValueError(f"account name {name!r} must not contain {char!r} "
                             f"(none of / + # : are allowed)")
        if char.isspace():
            raise ValueError(f"account name {name!r} must not contain whitespace")
        if unicodedata.category(char).startswith("C"):
            raise ValueError(f"account name {name!r} must not contain control characters "
                             f"(found U+{ord(char):04X})")
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


def generate_password() -> str:
    """A fresh random password: 18 random bytes, URL-safe base64 (24 characters)."""
    return secrets.token_urlsafe(18)


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
    """The ACL file text for the gateway user and *accounts* (validated names)."""
    root = TOPIC_ROOT
    blocks = [
        "# carbonx broker ACL: written by 'carbonx broker-config'; no rules for anonymous.\n",
        _acl_block(GATEWAY_USER, [
            # readwrite: the gateway clears a retained copy left on an orders topic
            ("readwrite", f"{root}/orders/+"),
            ("write", f"{root}/exec/+"),
            ("write", f"{root}/md/#"),
        ]),
    ]
    for name in accounts:
        blocks.append(_acl_block(name, [
            ("write", f"{root}/orders/{name}"),
            ("read", f"{root}/exec/{name}"),
            ("read", f"{root}/md/#"),
        ]))
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


def render_config(port: int, passwd_path: Path, acl_path: Path,
                  run_as: str | None = None) -> str:
    """The ``mosquitto.conf`` text: one listener on 127.0.0.1:*port*, files by absolute path."""
    lines = [
        "# carbonx broker configuration: written by 'carbonx broker-config'.",
        "# Start with: mosquitto -c <this file>",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd_path}",
        f"acl_file {acl_path}",
        "persistence false",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_packet_size {MAX_PACKET_SIZE}",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if run_as and run_as != "root":
        lines += ["# Started as root, mosquitto drops to this user, who owns the files here.",
                  f"user {run_as}"]
    else:
        lines += ["# No 'user' line: started as root, mosquitto drops to the 'mosquitto' user,",
                  "# which must be able to read passwd and acl (chown mosquitto passwd acl);",
                  "# or start mosquitto as a non-root user who can read them."]
    lines += [
        "",
        f"listener {port} 127.0.0.1",
        "# A client's identifier is its user name: no account can take another's session.",
        "use_username_as_clientid true",
        "",
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


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    return port


def existing_config(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the configuration files *directory* already holds."""
    return [name for name in CONFIG_FILES if os.path.lexists(Path(directory) / name)]


def write_broker_config(out_dir: str | os.PathLike[str], port: int,
                        accounts: Mapping[str, str | None], *,
                        force: bool = False) -> dict[str, str]:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials.json`` into *out_dir*.

    *accounts* maps each account to its password, or to None for a generated one (a new
    one on every call, as is the gateway's: rewriting a directory changes them). Returns
    the credentials written to ``credentials.json``: every account plus ``gateway``.
    Raises ``ValueError`` for a bad port, account name or password, and
    ``ConfigExistsError`` (a ``ValueError``) if *out_dir* holds any of the four files,
    unless *force*; nothing is written then.
    """
    _check_port(port)
    credentials: dict[str, str] = {}
    for name, password in accounts.items():
        validate_account_name(name)
        credentials[name] = (generate_password() if password is None
                             else _validate_password(name, password))
    credentials[GATEWAY_USER] = generate_password()

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
    passwd_path, acl_path = directory / PASSWD_NAME, directory / ACL_NAME
    passwd = "".join(f"{user}:{hash_password(pw)}\n" for user, pw in credentials.items())
    _write_file(passwd_path, passwd, 0o600)
    _write_file(directory / CREDENTIALS_NAME,
                json.dumps(credentials, indent=2) + "\n", 0o600)
    _write_file(acl_path, render_acl([n for n in credentials if n != GATEWAY_USER]), 0o644)
    _write_file(directory / CONF_NAME,
                render_config(port, passwd_path, acl_path, _run_as_user()), 0o644)
    return credentials
