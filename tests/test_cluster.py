"""Cluster mode with real processes: three nats-server with JetStream, a mosquitto, and
``carbonx serve --cluster`` nodes; bots trade through the broker while leaders are
killed (SIGKILL), paused (SIGSTOP) and new nodes join from a snapshot.

What each test holds: a follower leads within 5 s of a leader's death (also once a NATS
server of the three is lost, which the leader rides out); every order a bot
had acknowledged is in the state the log gives, once; every node's state hash equals
that of a fresh engine that applied the whole log; a paused leader appends nothing after
its successor's marker and follows again; a node that joins late starts from the
snapshot and reaches the same state hash.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clusterharness import Harness, replayed
from mosquitto import require_mosquitto
from natsserver import require_nats_server

from gateway.cluster.log import ClusterError, ClusterLog

LEAD_WITHIN_S = 5.0


@pytest.fixture
def harness(tmp_path: Path):
    require_nats_server()
    require_mosquitto()
    made = Harness(tmp_path)
    try:
        yield made
    finally:
        made.close()


def wait_agreement(harness: Harness, names: list[str], timeout: float = 20.0) -> dict[str, dict]:
    """Wait until every named node reports the log's end, and a state hash of it (a node
    hashes its state once it is quiet); return their reports."""
    deadline = time.monotonic() + timeout
    while True:
        last = len(harness.entries())
        statuses = harness.statuses()
        if all(statuses.get(n, {}).get("applied") == last and
               statuses[n]["hash_seq"] == statuses[n]["engine_seq"] for n in names):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"the nodes did not reach log sequence {last}: {statuses}")
        time.sleep(0.2)


def moves(harness: Harness) -> dict[str, list[str]]:
    """What each node said about leading and the lease (for a failure's message)."""
    return {name: [line for line in node.output().splitlines() if "lead" in line or
                   "lease" in line] for name, node in harness.nodes.items()}


class Bot:
    """Bob placing resting sells, one at a time through ExchangeClient (which resends
    what stays unanswered); the orders the exchange answered accepted."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.accepted: list[str] = []
        self.answers: list[dict] = []
        self.stop = False

    async def run(self) -> None:
        from gateway.bots.client import ExchangeClient

        h = self.harness
        async with ExchangeClient("bob", h.credentials["bob"], "127.0.0.1", h.port, timeout=30,
                                  resend_after=0.5) as bob:
            n = 0
            while not self.stop:
                n += 1
                order_id = f"s{n}"
                answer = await bob.request({"action": "new", "order_id": order_id,
                                            "instrument": "CEA25", "side": "sell",
                                            "price": f"{70 + n % 50}.00", "qty": 1})
                self.answers.append(answer)
                if answer.get("report") == "accepted":
                    self.accepted.append(order_id)
                await asyncio.sleep(0.01)


def run_bot_while(harness: Harness, action) -> Bot:
    """Run the bot in a thread of its own while *action()* runs here."""
    import threading

    bot = Bot(harness)
    errors: list[BaseException] = []

    def go() -> None:
        try:
            asyncio.run(bot.run())
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        action(bot)
    finally:
        bot.stop = True
        thread.join(60)
    assert not errors, errors
    return bot


def test_a_follower_leads_within_5_s_of_each_of_ten_kills_and_of_two_after_a_nats_server_is_lost(
        harness):
    """Ten leaders killed at random points while the bot trades, each time a follower
    leading within 5 s; then the NATS server leading the log's stream killed: the leader
    rides out JetStream's election (nats-server's own 4-9 s) and keeps leading; then,
    JetStream's groups led again, two more leaders killed on the two servers left. At
    the end every acknowledged order is in the log once, and every node's state hash is
    that of the whole log replayed."""
    names = ["a", "b", "c"]
    harness.node("a")
    first = harness.wait_leader()
    for name in names[1:]:
        harness.node(name)
    time.sleep(1.0)
    took: list[float] = []
    rng = random.Random(21)

    def kill_leader() -> None:
        time.sleep(rng.uniform(0.3, 1.0))
        leader = harness.wait_leader()
        harness.nodes[leader].kill()
        started = time.monotonic()
        harness.wait_leader(other_than=leader, timeout=LEAD_WITHIN_S + 5)
        took.append(time.monotonic() - started)
        harness.nodes[leader].start()  # it comes back, as a follower
        harness.wait_following(leader)

    def kills(bot: Bot) -> None:
        while len(bot.accepted) < 5:
            time.sleep(0.05)
        for _ in range(10):
            kill_leader()
        leader = harness.wait_leader()
        harness.kill_server(harness.log_server())
        count, stalled = len(bot.accepted), time.monotonic()
        while len(bot.accepted) < count + 5:
            assert time.monotonic() - stalled < 20, "the log took no order 20 s after"
            time.sleep(0.05)
        assert harness.wait_leader() == leader  # rode it out: no failover
        assert "no longer leads" not in harness.nodes[leader].output()
        harness.wait_groups_led()  # JetStream's other elections are done too
        for _ in range(2):
            kill_leader()
        count = len(bot.accepted)
        while len(bot.accepted) < count + 5:  # the last leader serves too
            time.sleep(0.05)

    bot = run_bot_while(harness, kills)
    assert first in names and len(took) == 12
    assert max(took) < LEAD_WITHIN_S, (took, moves(harness))
    entries = harness.entries()
    engine = replayed(entries)
    live = sorted(o.order_id for o in engine.live_orders())
    assert live == sorted(f"bob/{i}" for i in bot.accepted)  # each acknowledged order, once
    assert len(set(bot.accepted)) == len(bot.accepted)
    statuses = wait_agreement(harness, names)
    assert {statuses[n]["state_hash"] for n in names} == {engine.state_hash()}
    # A marker for the first leader and one for each kill's successor (and, rarely, one
    # more: two followers taking the lease in the same instant, see ClusterNode); after
    # each marker only its node appended: one writer at a time.
    leaders = [e.node for e in entries if e.kind == "leader"]
    assert 13 <= len(leaders) <= 14 and leaders[0] == first, (leaders, moves(harness))
    assert all(a != b for a, b in zip(leaders, leaders[1:]))
    writer = None
    for entry in entries:
        if entry.kind == "leader":
            writer = entry.node
        assert entry.node == writer, (entry.seq, entry.node, writer)


def test_a_paused_leader_cannot_append_after_its_successor_and_follows(harness):
    harness.node("a")
    assert harness.wait_leader() == "a"
    harness.node("b")
    time.sleep(1.0)

    def pause(bot: Bot) -> None:
        while len(bot.accepted) < 5:
            time.sleep(0.05)
        harness.nodes["a"].signal(signal.SIGSTOP)
        assert harness.wait_leader(other_than="a", timeout=LEAD_WITHIN_S + 5) == "b"
        count = len(bot.accepted)
        while len(bot.accepted) < count + 5:
            time.sleep(0.05)
        harness.nodes["a"].signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while "no longer leads" not in harness.nodes["a"].output():
            assert time.monotonic() < deadline, harness.nodes["a"].output()
            time.sleep(0.1)
        count = len(bot.accepted)
        while len(bot.accepted) < count + 5:
            time.sleep(0.05)

    bot = run_bot_while(harness, pause)
    entries = harness.entries()
    marker = next(e.seq for e in entries if e.kind == "leader" and e.node == "b")
    assert all(e.node == "b" for e in entries if e.seq > marker)  # a appended nothing after
    statuses = wait_agreement(harness, ["a", "b"])
    engine = replayed(entries)
    assert statuses["a"]["role"] == "follower" and statuses["b"]["role"] == "leader"
    assert statuses["a"]["state_hash"] == statuses["b"]["state_hash"] == engine.state_hash()
    assert sorted(o.order_id for o in engine.live_orders()) == sorted(
        f"bob/{i}" for i in bot.accepted)


def test_a_new_node_joins_from_the_snapshot_and_the_log_after_it(harness):
    """A lone leader writes the snapshots itself; once a follower keeps up, the follower
    writes them; a node that joins late starts from the newest."""
    harness.node("a", "--snapshot-every", "20")

    def trade(bot: Bot) -> None:
        harness.wait_leader()
        while len(bot.accepted) < 30:
            time.sleep(0.05)
        harness.node("b", "--snapshot-every", "20")
        harness.wait_following("b")
        written = harness.nodes["a"].output().count("snapshot at log sequence")
        count = len(bot.accepted)
        while len(bot.accepted) < count + 60:
            time.sleep(0.05)
        # b reports as a follower: a leaves the snapshots to it.
        assert harness.nodes["a"].output().count("snapshot at log sequence") <= written + 1

    bot = run_bot_while(harness, trade)
    assert "snapshot at log sequence" in harness.nodes["a"].output()
    assert "snapshot at log sequence" in harness.nodes["b"].output(), harness.nodes["b"].output()
    harness.node("late")
    statuses = wait_agreement(harness, ["a", "b", "late"])
    output = harness.nodes["late"].output()
    assert "loaded the snapshot at log sequence" in output, output
    engine = replayed(harness.entries())
    assert statuses["late"]["state_hash"] == statuses["a"]["state_hash"] == engine.state_hash()
    assert statuses["b"]["state_hash"] == engine.state_hash()
    assert len(bot.accepted) >= 90
    # of the many snapshots written, the bucket keeps the newest and the one before it
    written = sum(harness.nodes[n].output().count("snapshot at log sequence")
                  for n in ("a", "b"))
    kept = harness.snapshot_seqs()
    assert written >= 3 and 1 <= len(kept) <= 2, (written, kept)
    assert harness.thread.call(harness.log.latest_snapshot(), 10)["seq"] in kept

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "cluster-status", "--cluster",
                           harness.cluster_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "leader: a" in done.stdout and "3 replica(s)" in done.stdout
    assert "late" in done.stdout and engine.state_hash()[:16] in done.stdout
    # a follower stopped cleanly says so, as a leader does (it was left "follower", then
    # shown silent)
    harness.nodes["late"].stop()
    assert harness.statuses()["late"]["role"] == "stopped"


def test_a_node_on_another_market_stops_before_it_applies_or_leads(harness):
    """A node started with other rules (here --no-position-limits) finds the leader's
    market fingerprint in the log, or a snapshot of another market, and exits 2 saying
    so, whether the cluster has a snapshot yet or not; the others go on unchanged."""
    harness.node("a", "--snapshot-every", "5")
    harness.wait_leader()

    def other(name: str) -> str:
        node = harness.node(name, "--no-position-limits")
        assert node.process is not None
        assert node.process.wait(60) == 2, node.output()
        return node.output()

    said = other("early")  # the log has the leader's marker and the init batch, no snapshot
    assert "another market" in said and "led from log sequence" in said, said
    assert "same --market" in said and "Traceback" not in said

    def trade(bot: Bot) -> None:
        while "snapshot at log sequence" not in harness.nodes["a"].output():
            time.sleep(0.05)

    bot = run_bot_while(harness, trade)
    said = other("late")
    assert "snapshot at log sequence" in said and "another market" in said, said
    assert "loaded the snapshot" not in said and "Traceback" not in said
    statuses = wait_agreement(harness, ["a"])
    assert statuses["a"]["state_hash"] == replayed(harness.entries()).state_hash()
    assert bot.accepted and harness.nodes["a"].serving()
    assert "late" not in statuses or statuses["late"].get("role") != "leader"


def test_the_cluster_benchmark_runs_and_agrees(tmp_path):
    require_nats_server()
    require_mosquitto()
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.cluster", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    result = json.loads((tmp_path / "cluster-quick.json").read_text())
    failover = result["cluster"]["failover"]
    assert failover["kills"] == len(failover["to_new_leader_s"]) == 2
    assert failover["acknowledged"] == failover["acknowledged_in_log"] > 0
    assert failover["nats_server_lost"]["leader_kept"]
    assert len(failover["after_nats_server_lost"]["to_new_leader_s"]) == 1
    assert result["verdict"]["refused"] == 0 and result["verdict"]["lost"] == 0
    for side in ("local", "cluster"):
        assert result[side]["batched"]["answered"] == result[side]["batched"]["sent"] > 0


@pytest.mark.parametrize("args, message", [
    (("--cluster", "nats://127.0.0.1:1"), "--cluster needs --broker"),
    (("--cluster", "nats://127.0.0.1:1", "--broker", "mqtt://gateway:x@127.0.0.1:1",
      "--journal", "j"), "--journal, --web and --credentials do not go with it"),
    (("--cluster", "http://127.0.0.1:1", "--broker", "mqtt://gateway:x@127.0.0.1:1"),
     "expected nats://HOST:PORT"),
    (("--snapshot-every", "0"), "--snapshot-every must be at least 1"),
])
def test_bad_cluster_options_exit_2_with_one_line(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "j").exists()


def test_a_bad_node_id_or_init_file_stops_the_node_before_it_reaches_nats(tmp_path):
    """A node id with a space led, but could never report its status; an --init file
    that could not be read was found only after the node had taken the lease and
    written its marker. Both now stop it first (NATS on port 1 is never asked)."""
    (tmp_path / "bad.csv").write_text("action,account,instrument,qty\nfly,a,CNY,1\n")
    base = ("serve", "--cluster", "nats://127.0.0.1:1", "--broker",
            "mqtt://gateway:x@127.0.0.1:1")
    for extra, message in ((("--node-id", "x y"), "--node-id 'x y'"),
                           (("--init", "bad.csv"), "bad.csv, line 2")):
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *base, *extra],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert "NATS" not in done.stderr and "nats" not in done.stderr.lower(), done.stderr


def test_cluster_status_shows_a_node_not_heard_from_as_silent():
    from gateway.cluster.serve import SILENT_S, status_text

    def report(role: str, at: float) -> dict:
        return {"role": role, "applied": 9, "engine_seq": 40, "state_hash": "ab" * 16,
                "hash_seq": 40, "at": at}

    now = 1_000.0
    result = {"leader": "b", "stream": {"last_seq": 9, "replicas": 3, "servers": ["n1"]},
              "nodes": {"a": report("follower", now - 0.4), "b": report("leader", now - 120),
                        "c": report("stopped", now - 300), "d": report("follower", now - SILENT_S)}}
    rows = {line.split()[0]: line.split()[1] for line in status_text(result, now).splitlines()[3:]}
    assert rows == {"a": "follower", "b": "silent", "c": "stopped", "d": "follower"}
    as_json = json.loads(status_text(result, now, as_json=True))
    assert {name: (n["role"], n["silent"]) for name, n in as_json["nodes"].items()} == {
        "a": ("follower", False), "b": ("leader", True), "c": ("stopped", False),
        "d": ("follower", False)}


def test_cluster_status_says_what_nats_could_not_answer():
    """With NATS electing or short of a quorum it printed '(none: the lease is free)' and
    no node rows, as if the cluster were idle."""
    from gateway.cluster.serve import status_text

    result = {"leader": None, "stream": None, "nodes": {},
              "unknown": {"leader": "timeout", "stream": "no responders", "nodes": "timeout"}}
    lines = status_text(result, 0.0).splitlines()
    assert lines[0] == "leader: (unknown: the lease does not answer: timeout)"
    assert lines[1] == "stream: (unknown: no responders)"
    assert lines[3] == "(unknown: the nodes' reports do not answer: timeout)"
    assert json.loads(status_text(result, 0.0, as_json=True))["unknown"]["leader"] == "timeout"


def _cluster_status(url: str) -> subprocess.CompletedProcess:
    """``carbonx cluster-status --cluster URL``, its output captured."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "cluster-status", "--cluster",
                           url], capture_output=True, text=True, timeout=60)


def test_cluster_status_without_a_cluster_says_so(tmp_path):
    require_nats_server()
    from natsserver import start_cluster

    (server, ) = start_cluster(tmp_path / "nats", 1)
    try:
        done = _cluster_status(server.url)
    finally:
        server.stop()
    assert done.returncode == 2 and "no carbonx cluster" in done.stderr
    assert "Traceback" not in done.stderr


def test_nats_without_jetstream_or_not_there_is_said_plainly(tmp_path):
    """The operator's two commonest mistakes: a NATS server without JetStream (it said
    'ServiceUnavailableError: code=None'), and none listening (it said 'TimeoutError')."""
    require_nats_server()
    from mosquitto import free_port
    from natsserver import NatsServer

    server = NatsServer(tmp_path / "nojs", "nojs", free_port(), jetstream=False).start()
    try:
        done = _cluster_status(server.url)
    finally:
        server.stop()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "JetStream does not answer: is it enabled on the servers" in done.stderr
    nobody = f"nats://127.0.0.1:{free_port()}"
    done = _cluster_status(nobody)
    assert done.returncode == 2 and f"cannot reach NATS at {nobody}: " in done.stderr
    assert "TimeoutError" not in done.stderr and len(done.stderr.splitlines()) == 1


class _DoubleTakeLog:
    """A lease bucket that answers a node's take with *given* and then names *holder*
    at *last* as the bucket's last word (nats-server 2.9 can let two compare-and-sets
    of one revision both succeed)."""

    def __init__(self, given: int | None, holder: str, last: int) -> None:
        self.given, self.holder, self.last = given, holder, last
        self.reads = 0

    async def take_lease(self, node: str) -> int | None:
        return None  # the key exists

    async def take_stale_lease(self, node: str, revision: int) -> int | None:
        return self.given

    async def lease_state(self) -> tuple[str, int] | None:
        self.reads += 1
        return self.holder, self.last


@pytest.mark.parametrize("given, holder, last, leads", [
    (6, "this run", 6, True),  # the bucket names this node's run at its revision: it leads
    (6, "c", 7, False),  # another took the same revision too, and was stored last
    # another process started with this node's name: its run is not this one (two such
    # processes both led, and one's appends were taken for the other's: orders lost)
    (6, "b#0badc0de", 6, False),
    (None, "c", 7, False),  # the take failed: nothing read back
])
def test_a_taken_lease_is_read_back_before_the_node_leads(given, holder, last, leads):
    from exchange import default_market
    from gateway.cluster.log import LEASE_S, NatsThread
    from gateway.cluster.node import ClusterNode

    thread = NatsThread()
    try:
        stream = _DoubleTakeLog(given, holder, last)
        node = ClusterNode(default_market(), thread, stream, "b",  # type: ignore[arg-type]
                           say=lambda _: None)
        assert node.holder.startswith("b#") and node.holder != "b#0badc0de"
        if holder == "this run":
            stream.holder = node.holder
        seen = (5, time.monotonic() - 2 * LEASE_S)  # revision 5, not renewed for long
        revision = asyncio.run(node._try_lease(seen))
        assert revision == (given if leads else None)
        assert stream.reads == (0 if given is None else 1)
    finally:
        thread.stop()


# --- operations mistakes and outages: a standby whose gateway login the broker refuses,
# and cluster-status while JetStream elects a leader or misses a bucket ---------------
def test_a_standby_whose_login_is_refused_gives_the_lease_up_and_stops(harness):
    """A standby started with a wrong gateway password is not probed (the leader holds
    the broker's one gateway session); when it takes the lease it must not hold it while
    retrying a login the broker refuses (the exchange stayed down with healthy standbys
    waiting): it gives the lease up and exits 2, naming the cause, and another leads."""
    harness.node("a")
    assert harness.wait_leader() == "a"
    bad = harness.node("bad", "--broker", f"mqtt://gateway:wrong@127.0.0.1:{harness.port}")
    harness.wait_following("bad")
    harness.nodes["a"].signal(signal.SIGTERM)
    assert bad.process is not None
    bad.process.wait(30)
    out = bad.output()
    assert bad.process.returncode == 2, out[-2000:]
    assert "refused the gateway's login" in out and "Traceback" not in out
    harness._open()
    assert harness.thread.call(harness.log.lease_state(), 10) is None  # given up, not left
    harness.node("c")
    assert harness.wait_leader(timeout=10) == "c"


class _ElectingJetStream:
    """A JetStream whose stream's group is electing: every request times out."""

    async def stream_info(self, name: str):
        from nats.errors import TimeoutError as NatsTimeout
        raise NatsTimeout

    async def key_value(self, name: str):
        raise AssertionError("not reached")


class _Connection:
    is_closed = False

    def jetstream(self, timeout: float = 5.0):
        return _ElectingJetStream()

    async def close(self) -> None:
        self.is_closed = True


def test_cluster_status_while_jetstream_elects_does_not_say_there_is_no_stream(monkeypatch):
    """During the 4-9 s of an election stream_info times out: that is not 'no stream
    CARBONX' (which could send an operator to delete and make the stream again)."""
    import nats

    async def connect(*args, **kwargs):
        return _Connection()

    monkeypatch.setattr(nats, "connect", connect)
    log = ClusterLog(["nats://127.0.0.1:1"])
    with pytest.raises(ClusterError) as raised:
        asyncio.run(log.open(create=False))
    assert "no stream" not in str(raised.value)
    assert "JetStream does not answer now" in str(raised.value)


class _BucketlessJetStream:
    """A JetStream whose stream is there but not the nodes' bucket."""

    async def stream_info(self, name: str):
        return object()

    async def key_value(self, name: str):
        from nats.js.errors import BucketNotFoundError

        if name == "carbonx_nodes":
            raise BucketNotFoundError
        return object()


def test_cluster_status_names_a_missing_bucket_not_the_stream(monkeypatch):
    """A missing bucket (a not-found too) was told as 'no stream CARBONX', although the
    stream, the log, is there: the message that could send an operator to make it anew."""
    import nats

    class Connection(_Connection):
        def jetstream(self, timeout: float = 5.0):
            return _BucketlessJetStream()

    async def connect(*args, **kwargs):
        return Connection()

    monkeypatch.setattr(nats, "connect", connect)
    with pytest.raises(ClusterError) as raised:
        asyncio.run(ClusterLog(["nats://127.0.0.1:1"]).open(create=False))
    assert "no bucket carbonx_nodes" in str(raised.value)
    assert "stream" not in str(raised.value)
