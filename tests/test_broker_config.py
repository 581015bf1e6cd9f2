"""``gateway.mqtt.brokerconfig`` against a real mosquitto: files, logins, and the topic ACL.

Each broker test starts its own mosquitto (``tests/mosquitto.py``) on a free loopback
port with a config from ``write_broker_config``; MQTT clients are aiomqtt ones driven by
``asyncio.run`` with a timeout, so a broken broker fails the test instead of hanging it.

Mosquitto 2.0 grants every SUBSCRIBE (the ACL is applied when a message is delivered) and
drops a denied PUBLISH quietly (MQTT 3.1.1) or with PUBACK reason 135 (MQTT 5, QoS > 0).
So "not delivered" is shown by publishing the forbidden message first and a marker after
it on the same connection: the subscriber must see the marker and nothing before it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mosquitto as helper
import pytest
from mosquitto import (Broker, Mosquitto, MosquittoStartError, listening_sockets, require_clients,
                       require_module, require_tool)

from gateway.mqtt.brokerconfig import (GATEWAY_USER, MAX_PACKET_SIZE, OPERATOR_USER,
                                       ConfigExistsError, hash_password, parse_account_args,
                                       render_acl, verify_password, write_broker_config)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0
QUIET = 0.3  # how long a subscriber waits to show that nothing (more) arrives

Received = list[tuple[str, bytes]]


def run(coro: Coroutine[Any, Any, Any], timeout: float = TIMEOUT) -> Any:
    """Run *coro* in a fresh event loop; fail with TimeoutError after *timeout* seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(broker: Broker, user: str) -> Any:
    """An aiomqtt client (MQTT 3.1.1) for *user* with its password; use with ``async with``."""
    aiomqtt = require_module("aiomqtt")
    return aiomqtt.Client(**broker.login(user), identifier=f"{user}-{secrets.token_hex(4)}",
                          timeout=5)


@contextlib.asynccontextmanager
async def clients(broker: Broker, *users: str) -> AsyncIterator[list[Any]]:
    """One connected ``client`` for each of *users*, in order, for the block."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(broker, user)) for user in users]


async def receive_until(mqtt: Any, marker: bytes) -> Received:
    """Every message up to and including the first with payload *marker*."""
    received: Received = []
    async for message in mqtt.messages:
        received.append((str(message.topic), bytes(message.payload)))
        if message.payload == marker:
            return received
    raise AssertionError("message stream ended")


async def receive_for(mqtt: Any, seconds: float) -> Received:
    """Every message that arrives within *seconds*."""
    received: Received = []
    try:
        async with asyncio.timeout(seconds):
            async for message in mqtt.messages:
                received.append((str(message.topic), bytes(message.payload)))
    except TimeoutError:
        pass
    return received


# (a) the files --------------------------------------------------------------------------


def test_files_modes_and_credentials(tmp_path: Path) -> None:
    out = tmp_path / "new" / "conf"
    creds = write_broker_config(out, 18830, {"alice": "alice-pw:x", "bob": None})
    assert sorted(p.name for p in out.iterdir()) == [
        "acl", "carbonx_limit.so", "credentials.json", "gateway.password", "mosquitto.conf",
        "operator.password", "passwd"
    ]
    for name in ("passwd", "credentials.json", "gateway.password", "operator.password"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    on_disk = json.loads((out / "credentials.json").read_text())
    assert on_disk == creds
    assert list(on_disk) == ["alice", "bob", GATEWAY_USER, OPERATOR_USER]
    assert on_disk["alice"] == "alice-pw:x"
    assert all(len(on_disk[user]) >= 20 for user in ("bob", GATEWAY_USER, OPERATOR_USER))
    assert len({on_disk["bob"], on_disk[GATEWAY_USER], on_disk[OPERATOR_USER]}) == 3

    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert list(hashes) == ["alice", "bob", GATEWAY_USER, OPERATOR_USER]
    for user, encoded in hashes.items():
        assert encoded.startswith("$7$")
        assert verify_password(creds[user], encoded)
        assert not verify_password(creds[user] + "x", encoded)

    conf = (out / "mosquitto.conf").read_text()
    directives = [
        line.split() for line in conf.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["listener", "18830", "127.0.0.1"] in directives
    assert [d for d in directives
            if d[0] in ("listener", "port", "bind_address")] == [["listener", "18830", "127.0.0.1"]]
    assert ["allow_anonymous", "false"] in directives
    assert ["per_listener_settings", "false"] in directives
    assert f"password_file {out.resolve() / 'passwd'}" in conf.splitlines()
    assert f"acl_file {out.resolve() / 'acl'}" in conf.splitlines()


def test_rewrite_keeps_secret_modes(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None})
    (tmp_path / "passwd").chmod(0o644)
    write_broker_config(tmp_path, 18831, {"alice": None}, force=True)
    assert stat.S_IMODE((tmp_path / "passwd").stat().st_mode) == 0o600
    assert "listener 18831 127.0.0.1" in (tmp_path / "mosquitto.conf").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("present", ["mosquitto.conf", "passwd", "acl", "credentials.json"])
def test_an_existing_config_is_not_overwritten_without_force(tmp_path: Path, present: str) -> None:
    (tmp_path / present).write_text("keep me\n")
    (tmp_path / "mosquitto.log").write_text("not a config file\n")
    with pytest.raises(ConfigExistsError, match=f"{present}.*--force"):
        write_broker_config(tmp_path, 18830, {"alice": None})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([present, "mosquitto.log"])
    assert (tmp_path / present).read_text() == "keep me\n"
    write_broker_config(tmp_path, 18830, {"alice": None}, force=True)
    assert (tmp_path / present).read_text() != "keep me\n"


def test_broker_config_cli_refuses_an_existing_config_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "conf"

    def broker_config(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([
            sys.executable, "-m", "gateway.cli", "broker-config", "--out",
            str(out), "--port", "18830", "alice", *extra
        ], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)

    assert broker_config().returncode == 0
    first = json.loads((out / "credentials.json").read_text())
    again = broker_config()
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert again.stderr.startswith("carbonx broker-config: error: ")
    assert "already holds a broker configuration" in again.stderr and "--force" in again.stderr
    assert json.loads((out / "credentials.json").read_text()) == first  # untouched
    forced = broker_config("--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "credentials.json").read_text()) != first


def _broker_config_cli(out: Path, *accounts: str) -> subprocess.CompletedProcess[str]:
    """``carbonx broker-config --out OUT --port 18830 ACCOUNTS`` as the console script runs it."""
    return subprocess.run([
        sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())",
        "broker-config", "--out", str(out), "--port", "18830", *accounts
    ], capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def _assert_one_line_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"carbonx broker-config: error: {message}"), done.stderr


@pytest.mark.parametrize("account", ["@exchange", "@registry", "@clearing:pw", "@x"])
def test_broker_config_cli_refuses_the_engines_system_accounts(tmp_path: Path,
                                                              account: str) -> None:
    """``@`` names are the engine's (fees, surrendered allowances, clearing): an order
    from such an account would be rejected ``reserved_account``, so none gets a login."""
    out = tmp_path / "conf"
    name = account.partition(":")[0]
    _assert_one_line_error(_broker_config_cli(out, "alice", account),
                           f"account name '{name}' is reserved for the exchange's system accounts")
    assert not out.exists()


@contextlib.contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    """Make *directory* unwritable for the duration: immutable for root (whom no mode
    stops; skipped where ``chattr +i`` is not allowed), mode 0555 for anyone else."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a directory unwritable")
    made = subprocess.run([chattr, "+i", str(directory)], capture_output=True, text=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_broker_config_cli_says_when_the_directory_cannot_be_written(tmp_path: Path) -> None:
    """Found before the plugin is built: not a linker's complaint, but what is wrong."""
    out = tmp_path / "conf"
    out.mkdir()
    with _unwritable(out):
        done = _broker_config_cli(out, "alice")
    _assert_one_line_error(done, f"cannot write {out}: ")
    assert "ld returned" not in done.stderr and "plugin" not in done.stderr
    assert list(out.iterdir()) == []


def _directives(conf: str) -> list[list[str]]:
    return [
        line.split() for line in conf.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_never_user_root_and_a_non_root_writer_is_named(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.mqtt import brokerconfig

    monkeypatch.setattr(brokerconfig.os, "geteuid", lambda: 0)
    write_broker_config(tmp_path / "root", 18830, {"alice": None})
    conf = (tmp_path / "root" / "mosquitto.conf").read_text()
    assert not [d for d in _directives(conf) if d[0] == "user"]
    monkeypatch.setattr(brokerconfig.os, "geteuid", lambda: 4321)
    monkeypatch.setattr(brokerconfig.pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="carbon"))
    write_broker_config(tmp_path / "user", 18830, {"alice": None})
    conf = (tmp_path / "user" / "mosquitto.conf").read_text()
    assert [d for d in _directives(conf) if d[0] == "user"] == [["user", "carbon"]]
    # Even a user named root by some other uid is not written as "user root".
    monkeypatch.setattr(brokerconfig.pwd, "getpwuid", lambda uid: SimpleNamespace(pw_name="root"))
    write_broker_config(tmp_path / "odd", 18830, {"alice": None})
    assert "user root" not in (tmp_path / "odd" / "mosquitto.conf").read_text()


def test_listener_ties_client_ids_to_user_names_and_limits_packets(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None})
    directives = _directives((tmp_path / "mosquitto.conf").read_text())
    listener = directives.index(["listener", "18830", "127.0.0.1"])
    # A listener option: it must come after the listener line it applies to.
    assert ["use_username_as_clientid", "true"] in directives[listener + 1:]
    assert ["max_packet_size", str(MAX_PACKET_SIZE)] in directives


def _acl_rules(acl: str) -> dict[str, set[tuple[str, str]]]:
    """``{user: {(access, topic), ...}}`` from an ACL file's text."""
    rules: dict[str, set[tuple[str, str]]] = {}
    user = None
    for line in acl.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            assert user not in rules, f"a second block for {user}"
            rules[user] = set()
        else:
            assert words[0] == "topic" and user is not None and len(words) == 3, line
            rules[user].add((words[1], words[2]))
    return rules


def test_acl_gives_the_ops_topics_to_the_operator_and_the_gateway_only(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None, "bob": None})
    rules = _acl_rules((tmp_path / "acl").read_text())
    assert set(rules) == {GATEWAY_USER, OPERATOR_USER, "alice", "bob"}
    assert rules[OPERATOR_USER] == {("write", "cx/v1/ops/commands"),
                                    ("read", "cx/v1/ops/reports"), ("read", "cx/v1/md/#"),
                                    ("read", "cx/v1/status")}
    assert rules[GATEWAY_USER] == {("readwrite", "cx/v1/orders/+"), ("write", "cx/v1/exec/+"),
                                   ("write", "cx/v1/md/#"), ("read", "cx/v1/ops/commands"),
                                   ("write", "cx/v1/ops/reports"), ("write", "cx/v1/status")}
    for account in ("alice", "bob"):
        assert rules[account] == {("write", f"cx/v1/orders/{account}"),
                                  ("read", f"cx/v1/exec/{account}"), ("read", "cx/v1/md/#"),
                                  ("read", "cx/v1/status")}
    # A system user's name is never given an account's rules (a second block would add them).
    for name in (GATEWAY_USER, OPERATOR_USER):
        with pytest.raises(ValueError, match="reserved"):
            render_acl(["alice", name])


def test_the_publishing_limit_exempts_the_gateway_only(tmp_path: Path) -> None:
    write_broker_config(tmp_path, 18830, {"alice": None})
    options = [d for d in _directives((tmp_path / "mosquitto.conf").read_text())
               if d[0].startswith("plugin")]
    assert [d for d in options if d[0] == "plugin_opt_exempt"] == [["plugin_opt_exempt", "gateway"]]
    assert all(len(d) == 2 for d in options), options  # one value each: a valid directive


# Made by mosquitto_passwd 2.0.11 (-H sha512-pbkdf2, then -H sha512) for "secret".
MOSQUITTO_PASSWD_PBKDF2 = (
    "$7$101$ZMxIgcX0cTixMeAa$72/H3HUPyepazq762Il89V57OIiWbjqT8pZst3Lq9FQuwzycWgnyL3mu8bA1h"
    "Xa9GaJvAlUw6ayR6dAfmciqZg==")
MOSQUITTO_PASSWD_SHA512 = (
    "$6$iN4urkRpQHUSB6Ys$Wy0iCnmNODYFSm4wg5rGFk4OK0IBp0Ytyhn6dcUDlxKKzmPQSo/OXOmSAAsk9ZHE1L"
    "/8kaPBvdiKYoTINVmIwA==")


def test_hash_format_matches_mosquitto_passwd(tmp_path: Path) -> None:
    salt = base64.b64decode("ZMxIgcX0cTixMeAa")
    assert hash_password("secret", salt=salt, iterations=101) == MOSQUITTO_PASSWD_PBKDF2
    assert verify_password("secret", MOSQUITTO_PASSWD_SHA512)
    assert not verify_password("secreT", MOSQUITTO_PASSWD_SHA512)
    assert not verify_password("secret", "$7$101$not base64!$x")
    tool = require_tool("mosquitto_passwd")
    passwd = tmp_path / "passwd"
    passwd.touch()
    for algorithm in ("sha512-pbkdf2", "sha512"):
        subprocess.run([tool, "-H", algorithm, "-b",
                        str(passwd), algorithm, "s3:cret"], check=True, timeout=10,
                       capture_output=True)
    hashes = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert hashes["sha512-pbkdf2"].startswith("$7$") and hashes["sha512"].startswith("$6$")
    for encoded in hashes.values():
        assert verify_password("s3:cret", encoded)
        assert not verify_password("s3:cre", encoded)


def test_listens_on_loopback_only(mosquitto_broker: Broker) -> None:
    pid, port = mosquitto_broker.mosquitto.pid, mosquitto_broker.port
    assert listening_sockets(pid) == [("127.0.0.1", port)]


# (b) logins -----------------------------------------------------------------------------


def test_wrong_password_unknown_user_and_anonymous_are_refused(mosquitto_broker: Broker) -> None:
    aiomqtt = require_module("aiomqtt")

    async def refused(**login: Any) -> None:
        with pytest.raises(aiomqtt.MqttError, match="[Nn]ot authori[sz]ed"):
            async with aiomqtt.Client(mosquitto_broker.host, mosquitto_broker.port, timeout=5,
                                      **login):
                pass

    async def scenario() -> None:
        async with client(mosquitto_broker, "alice"):  # the right password works
            pass
        await refused(username="alice", password="wrong")
        await refused(username="alice", password=mosquitto_broker.credentials["bob"])
        await refused(username="mallory", password="x")
        await refused(username=GATEWAY_USER, password="")
        await refused(username=OPERATOR_USER, password=mosquitto_broker.gateway_password)
        await refused()

    run(scenario())


# (c) orders: each account writes only its own topic ------------------------------------


def test_orders_reach_the_gateway_only_from_their_own_account(mosquitto_broker: Broker) -> None:

    async def scenario() -> tuple[Received, Received]:
        async with clients(mosquitto_broker, GATEWAY_USER, "alice", "bob") as (gateway, alice, bob):
            await gateway.subscribe("cx/v1/orders/+", qos=1)
            await bob.publish("cx/v1/orders/bob", b"bob-order", qos=1)
            bob_seen = await receive_until(gateway, b"bob-order")
            await alice.publish("cx/v1/orders/bob", b"alice-as-bob", qos=1)
            await alice.publish("cx/v1/exec/alice", b"alice-fake-exec", qos=1)
            await alice.publish("cx/v1/orders/alice", b"alice-order", qos=1)
            alice_seen = await receive_until(gateway, b"alice-order")
            return bob_seen, alice_seen + await receive_for(gateway, QUIET)

    bob_seen, alice_seen = run(scenario())
    assert bob_seen == [("cx/v1/orders/bob", b"bob-order")]
    assert alice_seen == [("cx/v1/orders/alice", b"alice-order")]


# (d) reports and market data: each account reads only its own ----------------------------


def test_accounts_read_only_their_reports_and_market_data(mosquitto_broker: Broker) -> None:

    async def scenario() -> tuple[Received, Received]:
        async with clients(mosquitto_broker, GATEWAY_USER, "alice", "bob") as (gateway, alice, bob):
            await bob.subscribe("cx/v1/exec/bob", qos=1)
            for topic in ("cx/v1/exec/alice", "cx/v1/md/#"):
                await alice.subscribe(topic, qos=1)
            # Granted by mosquitto 2.0, but filtered by the ACL on delivery:
            for topic in ("cx/v1/exec/bob", "cx/v1/orders/+"):
                await alice.subscribe(topic, qos=1)
            await bob.publish("cx/v1/orders/bob", b"bob-order", qos=1)
            await gateway.publish("cx/v1/exec/bob", b"bob-report", qos=1)
            await gateway.publish("cx/v1/md/EUA/book", b"md-1", qos=1)
            await alice.publish("cx/v1/md/EUA/book", b"alice-fake-md", qos=1)
            await gateway.publish("cx/v1/exec/alice", b"alice-report", qos=1)
            alice_seen = await receive_until(alice, b"alice-report")
            alice_seen += await receive_for(alice, QUIET)
            bob_seen = await receive_until(bob, b"bob-report")
            return alice_seen, bob_seen

    alice_seen, bob_seen = run(scenario())
    assert bob_seen == [("cx/v1/exec/bob", b"bob-report")]  # it was really published
    assert alice_seen == [("cx/v1/md/EUA/book", b"md-1"), ("cx/v1/exec/alice", b"alice-report")]


def test_wildcard_subscription_sees_nothing_of_other_accounts(mosquitto_broker: Broker) -> None:

    async def scenario() -> Received:
        async with clients(mosquitto_broker, GATEWAY_USER, "alice") as (gateway, alice):
            await alice.subscribe("#", qos=1)
            await gateway.publish("cx/v1/exec/bob", b"bob-report", qos=1)
            await gateway.publish("cx/v1/exec/alice", b"marker", qos=1)
            return await receive_until(alice, b"marker")

    assert run(scenario()) == [("cx/v1/exec/alice", b"marker")]


def test_one_account_cannot_disconnect_another_by_reusing_its_client_id(
        mosquitto_broker: Broker) -> None:
    aiomqtt = require_module("aiomqtt")

    def named(user: str, password: str | None = None) -> Any:
        return aiomqtt.Client(mosquitto_broker.host, mosquitto_broker.port, username=user,
                              password=password or mosquitto_broker.credentials[user],
                              identifier="shared-id", timeout=5)

    async def scenario() -> tuple[Received, Received]:
        async with client(mosquitto_broker, GATEWAY_USER) as gateway, named("alice") as alice:
            await alice.subscribe("cx/v1/exec/alice", qos=1)
            async with named("bob") as bob:  # alice's identifier, bob's login
                await bob.subscribe("cx/v1/exec/bob", qos=1)
                await gateway.publish("cx/v1/exec/bob", b"bob-report", qos=1)
                bob_seen = await receive_until(bob, b"bob-report")
            with pytest.raises(aiomqtt.MqttError):
                async with named("alice", "wrong"):
                    pass
            await gateway.publish("cx/v1/exec/alice", b"alice-report", qos=1)
            return bob_seen, await receive_until(alice, b"alice-report")  # still connected

    bob_seen, alice_seen = run(scenario())
    assert bob_seen == [("cx/v1/exec/bob", b"bob-report")]
    assert alice_seen == [("cx/v1/exec/alice", b"alice-report")]


# (e) bad names ------------------------------------------------------------------------


def test_parse_account_args() -> None:
    assert parse_account_args([]) == {}
    assert parse_account_args(["alice", "bob:pa:ss", "Émile"]) == {
        "alice": None,
        "bob": "pa:ss",
        "Émile": None
    }


@pytest.mark.parametrize("items, message", [(["alice", "alice:pw"], "more than once"),
                                            ([""], "non-empty"), ([":pw"], "non-empty"),
                                            (["gateway"], "reserved"), (["gateway:pw"], "reserved"),
                                            (["operator"], "reserved for the operator console"),
                                            (["operator:pw"], "reserved"),
                                            (["a/b"], "'/'"), (["a+b"], "'\\+'"), (["a#"], "'#'"),
                                            (["a b"], "whitespace"), (["a\tb"], "whitespace"),
                                            (["a\u00a0b"], "whitespace"), (["a\x00b"], "control"),
                                            (["a\x7f"], "control"), (["a\u200b"], "control"),
                                            (["alice:"], "password"),
                                            (["@exchange"], "reserved for the exchange's system"),
                                            (["@registry:pw"], "reserved"), (["@"], "reserved")])
def test_parse_account_args_rejects(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_account_args(items)


@pytest.mark.parametrize("accounts, port", [({
    "a:b": None
}, 1883), ({
    "gateway": "pw"
}, 1883), ({
    "operator": None
}, 1883), ({
    "": None
}, 1883), ({
    "a\nb": None
}, 1883), ({
    "@exchange": None
}, 1883), ({
    "alice": ""
}, 1883), ({
    "alice": None
}, 0), ({
    "alice": None
}, 70000), ({
    "alice": None
}, True)])
def test_write_broker_config_rejects(tmp_path: Path, accounts: dict[str, str | None],
                                     port: int) -> None:
    with pytest.raises(ValueError):
        write_broker_config(tmp_path / "out", port, accounts)
    assert not (tmp_path / "out").exists()


# (f) the stock mosquitto clients ----------------------------------------------------------


def _client_args(broker: Broker, user: str) -> list[str]:
    return [
        "-h", broker.host, "-p",
        str(broker.port), "-u", user, "-P", broker.credentials[user], "-q", "1"
    ]


def test_mosquitto_pub_to_mosquitto_sub(mosquitto_broker: Broker) -> None:
    pub, sub = require_clients()
    publish = [
        pub, *_client_args(mosquitto_broker, "alice"), "-t", "cx/v1/orders/alice", "-m",
        "buy 10 EUA"
    ]
    with subprocess.Popen([
            sub, *_client_args(mosquitto_broker, GATEWAY_USER), "-t", "cx/v1/orders/+", "-C", "1",
            "-W", "5", "-F", "MSG %t %p"
    ], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as listener:
        try:
            # mosquitto_sub's output is block-buffered in a pipe, so there is no telling
            # when it has subscribed: publish until it has its one message (-C 1) or
            # gives up (-W 5 s).
            while listener.poll() is None:
                sent = subprocess.run(publish, capture_output=True, text=True, timeout=10)
                assert sent.returncode == 0, sent.stderr
                try:
                    listener.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            output, _ = listener.communicate(timeout=10)
        finally:
            if listener.poll() is None:
                listener.kill()
    assert listener.returncode == 0, output
    assert output.splitlines() == ["MSG cx/v1/orders/alice buy 10 EUA"]


def test_mosquitto_pub_denied_publish(mosquitto_broker: Broker) -> None:
    pub, _ = require_clients()
    base = [pub, *_client_args(mosquitto_broker, "alice"), "-t", "cx/v1/orders/bob", "-m", "x"]
    v311 = subprocess.run(base, capture_output=True, text=True, timeout=10)
    v5 = subprocess.run([*base, "-V", "mqttv5"], capture_output=True, text=True, timeout=10)
    # Exit status 0 either way: MQTT 3.1.1 has no way to say no; MQTT 5 says it in PUBACK.
    assert (v311.returncode, v5.returncode) == (0, 0)
    assert "Not authorized" not in v311.stderr
    assert "Not authorized" in v5.stderr
    wrong = subprocess.run([
        pub, *_client_args(mosquitto_broker, "alice")[:-4], "-P", "no", "-t", "cx/v1/orders/alice",
        "-m", "x"
    ], capture_output=True, text=True, timeout=10)
    assert wrong.returncode != 0 and "not authorised" in wrong.stderr.lower()


# the helper itself ----------------------------------------------------------------------


def test_restart_keeps_the_port(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    old_pid, port = broker.mosquitto.pid, broker.port

    async def round_trip() -> Received:
        async with clients(broker, GATEWAY_USER, "alice") as (gateway, alice):
            await gateway.subscribe("cx/v1/orders/alice", qos=1)
            await alice.publish("cx/v1/orders/alice", b"ping", qos=1)
            return await receive_until(gateway, b"ping")

    assert run(round_trip()) == [("cx/v1/orders/alice", b"ping")]
    broker.mosquitto.restart()
    assert broker.mosquitto.pid != old_pid and broker.port == port
    assert listening_sockets(broker.mosquitto.pid) == [("127.0.0.1", port)]
    assert run(round_trip()) == [("cx/v1/orders/alice", b"ping")]
    broker.mosquitto.stop()
    broker.mosquitto.stop()  # idempotent
    assert not broker.mosquitto.running
    assert broker.mosquitto.log_text().count("starting") >= 2


def test_start_fails_clearly_when_the_port_is_taken(tmp_path: Path) -> None:
    helper.require_mosquitto()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        write_broker_config(tmp_path, squatter.getsockname()[1], {"alice": None})
        broker = Mosquitto(tmp_path, start_timeout=0.5)
        with pytest.raises(MosquittoStartError, match="Address already in use") as caught:
            broker.start()
    assert caught.value.address_in_use and not broker.running


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception),
                                         ("true", pytest.fail.Exception)])
def test_missing_mosquitto_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                                    outcome: type[BaseException]) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(helper, "MOSQUITTO", None)
    with pytest.raises(outcome, match="mosquitto is not installed"):
        helper.require_mosquitto()
    with pytest.raises(outcome, match="no_such_module_xyz"):
        helper.require_module("no_such_module_xyz")
