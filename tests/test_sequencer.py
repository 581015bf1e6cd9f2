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

    def commit(self) -> int:
        self.calls.append(("commit", 0, self.engine.seq))
        return 0

    def snapshot(self, engine: Engine, *, background: bool = False) -> None:
        self.calls.append(("snapshot", 0, engine.seq))


def test_a_batch_is_committed_before_any_of_it_acts():
    engine = Engine(default_market())
    writer = _Writer(engine)
    sequencer = Sequencer(engine, writer)  # type: ignore[arg-type]
    out: list = []
    sequencer.run(_orders(4), out)
    assert writer.calls == [("append", 4, 0), ("commit", 0, 0)]
    assert len(out) >= 4 and engine.accepted == 4
    before = engine.seq
    steps = sequencer.each(_orders(3, 4))
    assert len(writer.calls) == 2  # nothing yet: the journal is written as the first runs
    command, events = next(steps)
    assert writer.calls[2:] == [("append", 3, before), ("commit", 0, before)]
    assert command.order_id == "o4" and events[0].order_id == "o4"
    assert [c.order_id for c, _ in steps] == ["o5", "o6"]


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
    assert kinds == [
        "append", "commit", "append", "commit", "snapshot", "append", "commit", "append", "commit"
    ]
    assert writer.calls[4][2] == seqs[1]  # the state after exactly the two batches


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
