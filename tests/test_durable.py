"""A batch's fsync goes on beside the engine: nothing the batch did is seen (reports,
depth, a new account's password) before that fsync has returned, and a failed fsync is
never lost, however the wait for it ends."""

from __future__ import annotations

import json
import threading

import pytest

import exchange.journal as journal_module
from exchange import Deposit, Engine, IssueAllowances, PlaceOrder, default_market
from exchange.journal import JournalError, create_journal, recover
from exchange.sequencer import Sequencer
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import OPS_COMMANDS


def _orders(n: int, start: int = 0) -> list:
    return [PlaceOrder(order_id=f"o{i}", account="a", instrument="CEA25", side="sell",
                       price="60.00", qty=1) for i in range(start, start + n)]


def _core(tmp_path, writer):
    market = default_market().open_all_hours()
    engine = Engine(market, ledger=True)
    engine.execute(Deposit(account="alice", currency="CNY", amount="1000000"))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=1_000))
    return GatewayCore(engine, journal=writer, settings=GatewaySettings(book_interval=0))


def test_an_opened_account_is_told_only_once_its_open_is_durable(tmp_path):
    """``on_account_opened`` (serve: a password generated, written to the credentials
    file, given to the broker, and 'account X opened' said to the operator) is the
    gateway telling the world of an event: it must come after the batch's fsync."""
    market = default_market().open_all_hours()
    with create_journal(tmp_path / "j", market.text, ledger=True) as writer:
        core = _core(tmp_path, writer)
        seen: list[tuple[str, int, int]] = []
        core.on_account_opened = lambda account: seen.append(
            (account, writer.committed, writer.seq))
        core.receive(OPS_COMMANDS, json.dumps([{"action": "open_account", "account": "bob"}]
                                              ).encode(), now=0.0)
        core.flush(now=0.0)
        assert seen == [("bob", 1, 1)]  # told with command 1 on disk, not before


def test_a_batch_whose_fsync_failed_is_never_published_afterwards(tmp_path, monkeypatch):
    """The batch has run when its fsync fails (it runs beside it): the gateway must not
    publish its book depth later (the depth timer, a flush with nothing pending)."""
    market = default_market().open_all_hours()
    writer = create_journal(tmp_path / "j", market.text, ledger=True)
    core = _core(tmp_path, writer)

    def fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    order = {"action": "new", "order_id": "s1", "instrument": "CEA25", "side": "sell",
             "price": "60.00", "qty": 10}
    core.receive("cx/v1/orders/alice", json.dumps(order).encode(), now=0.0)
    with pytest.raises(JournalError, match="Input/output error"):
        core.flush(now=0.0)
    assert not core.books_waiting()
    assert core.depth_now(now=100.0) == []
    assert core.flush(now=200.0) == []
    monkeypatch.undo()
    with pytest.raises(JournalError):
        writer.close()


def test_a_sync_interrupted_while_it_waits_does_not_lose_a_failed_fsync(tmp_path, monkeypatch):
    """A KeyboardInterrupt while ``sync`` waits for the thread must not drop the fsync's
    outcome: an EIO it then reports is said by the next sync (or close), never lost (a
    second fsync of the same file would return 0 and close would seal the segment)."""
    market = default_market()
    writer = create_journal(tmp_path / "j", market.text, ledger=False)
    real_fsync = journal_module.os.fsync
    go = threading.Event()

    def failing(fd: int) -> None:
        go.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module.os, "fsync", failing)
    writer.append_many(_orders(3))
    writer.commit(wait=False)
    future = writer._syncing[0]  # type: ignore[index]
    interrupted = [False]
    real_result = future.result

    def result(timeout=None):
        if not interrupted[0]:
            interrupted[0] = True
            raise KeyboardInterrupt
        return real_result(timeout)

    future.result = result  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        writer.sync()
    go.set()
    future.exception(10)  # the thread's fsync has failed by now
    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    with pytest.raises(JournalError, match="Input/output error; commands 1 to 3"):
        writer.close()


def test_a_background_snapshot_forks_with_no_fsync_thread_alive(tmp_path, monkeypatch):
    """The snapshot's child is forked from a process the writer made multi-threaded; the
    writer's own fsync thread is ended before the fork (Python 3.12+ warns of a fork with
    threads, and a -W error run fails there with the child left behind unwaited)."""
    market = default_market()
    engine = Engine(market)
    threads_at_fork: list[list[str]] = []
    real_fork = journal_module.os.fork

    def fork() -> int:
        threads_at_fork.append([t.name for t in threading.enumerate()
                                if t.name.startswith("carbonx-fsync")])
        return real_fork()

    monkeypatch.setattr(journal_module.os, "fork", fork)
    with create_journal(tmp_path / "j", market.text, ledger=False) as writer:
        sequencer = Sequencer(engine, writer, snapshot_every=5)
        sequencer.run(_orders(5), [])
        sequencer.run(_orders(5, 5), [])  # snapshots first, in a forked child
        sequencer.run(_orders(5, 10), [])  # and again
    assert threads_at_fork == [[], []]
    assert recover(tmp_path / "j").engine.state_hash() == engine.state_hash()


def test_with_no_thread_to_be_had_the_fsync_is_done_in_place(tmp_path, monkeypatch):
    """A thread limit (or the interpreter ending) refuses the fsync's thread: the group
    is written already, so it is fsynced at once rather than left half-committed."""
    market = default_market()
    fsyncs: list[int] = []
    real_fsync = journal_module.os.fsync

    class NoThreads:
        def __init__(self, *args: object) -> None:
            raise RuntimeError("can't start new thread")

    def fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    with create_journal(tmp_path / "j", market.text, ledger=False) as writer:
        monkeypatch.setattr(journal_module, "ThreadPoolExecutor", NoThreads)
        monkeypatch.setattr(journal_module.os, "fsync", fsync)
        writer.append_many(_orders(3))
        assert writer.commit(wait=False) == 3 and writer.committed == 3 and fsyncs
        monkeypatch.undo()
    assert recover(tmp_path / "j").seq == 3
