"""The sequencer: every batch is journaled and committed before any of it acts, and the
engine is snapshotted at batch boundaries, holding exactly the commands journaled."""

from __future__ import annotations

import pytest

from exchange import Engine, PlaceOrder, default_market
from exchange.journal import create_journal, recover
from exchange.sequencer import Sequencer


def _orders(count: int, start: int = 0) -> list[PlaceOrder]:
    return [
        PlaceOrder(order_id=f"o{n}", account=f"a{n % 3}", instrument="CEA25",
                   side="buy" if n % 2 else "sell", price=f"{60 + n % 5}.00", qty=10)
        for n in range(start, start + count)
    ]


class _Writer:
    """A journal writer that records what it was asked, and what the engine had done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[tuple[str, int, int]] = []  # (call, commands given, engine seq)

    def append_many(self, commands: list) -> int:
        self.calls.append(("append", len(commands), self.engine.seq))
        return len(commands)

    def commit(self, *, wait: bool = True) -> int:
        self.calls.append(("commit" if wait else "write", 0, self.engine.seq))
        return 0

    def sync(self) -> int:
        self.calls.append(("sync", 0, self.engine.seq))
        return 0

    def snapshot(self, engine: Engine, *, background: bool = False) -> None:
        self.calls.append(("snapshot", 0, engine.seq))


def test_a_batch_is_written_before_any_of_it_acts_and_durable_before_it_is_seen():
    engine = Engine(default_market())
    writer = _Writer(engine)
    sequencer = Sequencer(engine, writer)  # type: ignore[arg-type]
    out: list = []
    sequencer.run(_orders(4), out)
    # Written before the first acts; its fsync waited for once all have run, before run
    # returns (and its caller publishes).
    assert writer.calls == [("append", 4, 0), ("write", 0, 0), ("sync", 0, engine.seq)]
    assert len(out) >= 4 and engine.accepted == 4 and engine.seq > 0
    before = engine.seq
    steps = sequencer.each(_orders(3, 4))
    assert len(writer.calls) == 3  # nothing yet: the journal is written as the first runs
    command, events = next(steps)
    assert writer.calls[3:] == [("append", 3, before), ("write", 0, before)]
    assert command.order_id == "o4" and events[0].order_id == "o4"
    assert [c.order_id for c, _ in steps] == ["o5", "o6"]
    assert writer.calls[5:] == [("sync", 0, engine.seq)]  # past the last, before the caller
    sequencer.durable()  # as the gateway calls it, without running past the last
    assert writer.calls[6:] == [("sync", 0, engine.seq)]


def test_without_a_journal_it_only_runs():
    engine, plain = Engine(default_market()), Engine(default_market())
    out: list = []
    Sequencer(engine).run(_orders(50), out)
    expected: list = []
    for command in _orders(50):
        plain.submit(command, expected)
    assert out == expected and engine.state_hash() == plain.state_hash()


def test_snapshots_come_at_batch_boundaries():
    engine = Engine(default_market())
    writer = _Writer(engine)
    sequencer = Sequencer(engine, writer, snapshot_every=5)  # type: ignore[arg-type]
    seqs = []
    for start in range(0, 12, 3):
        sequencer.run(_orders(3, start), [])
        seqs.append(engine.seq)
    # After two batches 6 >= 5 commands are journaled: the third batch snapshots first;
    # the fourth finds only 3 since that snapshot.
    kinds = [call for call, _, _ in writer.calls]
    assert kinds == ["append", "write", "sync", "append", "write", "sync", "snapshot", "append",
                     "write", "sync", "append", "write", "sync"]
    assert writer.calls[6][2] == seqs[1]  # the state after exactly the two batches


def test_a_real_journal_recovers_what_the_sequencer_ran(tmp_path):
    market = default_market()
    engine = Engine(market, ledger=False)
    with create_journal(tmp_path / "j", market.text, ledger=False) as writer:
        sequencer = Sequencer(engine, writer, snapshot_every=40)
        for start in range(0, 200, 25):
            sequencer.run(_orders(25, start), [])
        writer.wait_snapshot()
    recovered = recover(tmp_path / "j")
    assert recovered.seq == 200
    assert recovered.engine.state_hash() == engine.state_hash()


def test_snapshot_every_must_be_positive():
    with pytest.raises(ValueError, match="snapshot_every"):
        Sequencer(Engine(default_market()), snapshot_every=0)


def test_the_fsync_goes_on_while_the_batch_runs_and_is_done_before_run_returns(
        tmp_path, monkeypatch):
    """The fsync waits (up to 10 s) for the engine to have run the whole batch: had the
    sequencer waited for it before running, it would time out and say so."""
    import time

    import exchange.journal as journal_module

    market = default_market()
    engine = Engine(market)
    batch = _orders(20)
    done: list[bool] = []  # per fsync: had the batch run meanwhile
    real_fsync = journal_module.os.fsync

    def fsync(fd: int) -> None:
        deadline = time.monotonic() + 10.0
        while engine.accepted < len(batch) and time.monotonic() < deadline:
            time.sleep(0.001)
        real_fsync(fd)
        done.append(engine.accepted == len(batch))

    with create_journal(tmp_path / "j", market.text, ledger=False) as writer:
        monkeypatch.setattr(journal_module.os, "fsync", fsync)
        Sequencer(engine, writer).run(batch, [])
        assert done == [True]  # beside the batch, and finished before run returned
        assert writer.committed == writer.seq == 20
        monkeypatch.undo()
    assert recover(tmp_path / "j").engine.state_hash() == engine.state_hash()


def test_a_failed_fsync_beside_the_batch_stops_the_run_before_it_is_seen(tmp_path, monkeypatch):
    from exchange.journal import JournalError

    import exchange.journal as journal_module

    market = default_market()
    engine = Engine(market)
    writer = create_journal(tmp_path / "j", market.text, ledger=False)
    sequencer = Sequencer(engine, writer)
    sequencer.run(_orders(10), [])

    def fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    out: list = []
    with pytest.raises(JournalError, match="Input/output error; commands 11 to 20"):
        sequencer.run(_orders(10, 10), out)
    assert writer.committed == 10  # the batch ran, but run raised: its caller shows nothing
    with pytest.raises(JournalError, match="commands 11 to 20 are not journaled"):
        sequencer.run(_orders(5, 20), [])
    assert engine.accepted == 20  # the next batch did not act
    monkeypatch.undo()
    with pytest.raises(JournalError):
        writer.close()
    recovered = recover(tmp_path / "j")  # the failed group is there once, or not at all
    assert recovered.seq in (10, 20)


def test_the_gateway_sends_nothing_of_a_flush_before_its_fsync_is_done(tmp_path):
    """GatewayCore takes its commands one at a time (``each``) and stops at the last
    without going past it: it must wait for the fsync itself before returning what to
    publish."""
    import json

    from exchange import Deposit, IssueAllowances
    from gateway.mqtt.service import GatewayCore, GatewaySettings

    market = default_market().open_all_hours()
    engine = Engine(market, ledger=True)
    engine.execute(Deposit(account="alice", currency="CNY", amount="1000000"))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=1_000))
    with create_journal(tmp_path / "j", market.text, ledger=True) as writer:
        core = GatewayCore(engine, journal=writer, settings=GatewaySettings(book_interval=0))
        order = {"action": "new", "order_id": "s1", "instrument": "CEA25", "side": "sell",
                 "price": "60.00", "qty": 10}
        core.receive("cx/v1/orders/alice", json.dumps(order).encode(), now=0.0)
        outgoing = core.flush(now=0.0)
        assert any(topic == "cx/v1/exec/alice" for topic, *_ in outgoing)
        assert writer.committed == writer.seq == 1
