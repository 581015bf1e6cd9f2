"""Operations mistakes and outages in cluster mode: a standby whose gateway login the
broker refuses, and cluster-status while JetStream elects a leader."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from clusterharness import Harness
from mosquitto import require_mosquitto
from natsserver import require_nats_server

from gateway.cluster.log import ClusterError, ClusterLog


@pytest.fixture
def harness(tmp_path: Path):
    require_nats_server()
    require_mosquitto()
    made = Harness(tmp_path)
    try:
        yield made
    finally:
        made.close()


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
