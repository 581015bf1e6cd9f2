"""A commit that failed is never written again: a second copy of the group after the bytes
the failed write left would turn a torn tail (never acknowledged, recovered around) into
damage that stops every recovery until the operator cuts the journal."""

from __future__ import annotations

import os

import pytest
from test_journal import MARKET, journal_commands, prefix_hashes

import exchange.journal as journal_module
from exchange.journal import JournalError, recover, reopen_journal
from exchange.orderfile import read_order_file
from gateway.tools.genorders import generate_mixed, write_rows


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> list:
    path = tmp_path_factory.mktemp("orders") / "funded.csv"
    write_rows(path, generate_mixed(400, seed=3, accounts=6, fund=True), "csv")
    return read_order_file(path)


def test_an_fsync_that_fails_is_said_again_and_the_group_never_written_twice(
        tmp_path, commands, monkeypatch):
    directory = tmp_path / "j"
    journal_commands(directory, commands[:100], group=50, crash=True)
    _, writer = reopen_journal(directory)
    real = os.fsync
    failures = [OSError(5, "Input/output error")]

    def fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real(fd)

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    writer.append_many(commands[100:150])
    with pytest.raises(JournalError, match="Input/output error; commands 101 to 150"):
        writer.commit()
    # The disk works again: still nothing is written (the group's bytes are there once).
    with pytest.raises(JournalError, match="commands 101 to 150 are not journaled"):
        writer.commit()
    with pytest.raises(JournalError, match="commands 101 to 150 are not journaled"):
        writer.close()
    recovered = recover(directory)  # no damage: the group is there once, whole
    assert recovered.seq in (100, 150)
    assert recovered.engine.state_hash() == prefix_hashes(commands, [recovered.seq])[recovered.seq]


def test_a_write_cut_short_by_a_full_disk_stays_a_torn_tail(tmp_path, commands):
    directory = tmp_path / "j"
    journal_commands(directory, commands[:100], group=50, crash=True)
    _, writer = reopen_journal(directory)
    real = writer._file

    class FillsUp:
        """Takes 100 bytes, then the disk is full; later it has room again."""

        closed = False
        full = True
        taken = 0

        def write(self, data) -> int:
            if not self.full:
                return real.write(data)
            if self.taken:
                raise OSError(28, "No space left on device")
            self.taken = real.write(data[:100])
            return self.taken

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return real.fileno()

        def close(self) -> None:
            real.close()
            self.closed = True

    writer._file = fills = FillsUp()
    writer.append_many(commands[100:150])
    with pytest.raises(JournalError, match="No space left on device; commands 101 to 150"):
        writer.commit()
    fills.full = False  # room again: the group is not written a second time
    with pytest.raises(JournalError, match="commands 101 to 150 are not journaled"):
        writer.commit()
    with pytest.raises(JournalError):
        writer.close()
    recovered = recover(directory)
    assert (recovered.seq, recovered.torn_bytes) == (100, 100)
    assert recovered.engine.state_hash() == prefix_hashes(commands, [100])[100]
    assert MARKET.text == recovered.engine.market.text


def test_a_snapshot_whose_process_cannot_be_started_is_a_warning_and_trading_goes_on(
        tmp_path, commands, monkeypatch):
    """os.fork failing (no memory, a process limit) came out of the sequencer as a bare
    OSError: serve stopped, saying 'cannot write the output'."""
    from exchange import Engine
    from exchange.sequencer import Sequencer
    from exchange.journal import create_journal

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(journal_module.os, "fork", no_fork)
    engine = Engine(MARKET, ledger=True)
    writer = create_journal(tmp_path / "j", MARKET.text, ledger=True)
    sequencer = Sequencer(engine, writer, snapshot_every=100)
    for start in range(0, 300, 50):
        sequencer.run(commands[start:start + 50], [])
    assert writer.seq == 300
    assert len(writer.warnings) == 2
    assert "no process could be started to write it" in writer.warnings[0]
    writer.close()
    assert not list((tmp_path / "j").glob("snapshot-*"))
    assert recover(tmp_path / "j").engine.state_hash() == engine.state_hash()


def test_a_fifo_named_like_a_journal_file_is_refused_not_waited_on(tmp_path, commands):
    """A FIFO named like a snapshot made recovery (carbonx holdings, serve) wait for ever
    on its read: it is passed over like any snapshot that cannot be read; named like
    the manifest, it is an error that says so."""
    import threading

    directory = tmp_path / "j"
    engine = journal_commands(directory, commands[:300], group=50)
    os.mkfifo(directory / "snapshot-000000000300.cxs", 0o600)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(recover(directory)), daemon=True)
    thread.start()
    thread.join(20)
    assert done, "recovery waited on the FIFO"
    assert done[0].engine.state_hash() == engine.state_hash()
    assert any("not a regular file" in w for w in done[0].warnings)
    (directory / "snapshot-000000000300.cxs").unlink()
    manifest = directory / "manifest.json"
    manifest.rename(directory / "manifest.real")
    os.mkfifo(manifest, 0o600)
    with pytest.raises(JournalError, match="manifest.json cannot be read: not a regular file"):
        recover(directory)


def test_a_directory_named_like_a_journal_file_leaves_no_descriptor_open(tmp_path, commands):
    """open() of a directory's descriptor raises and leaves the descriptor open: each
    recovery leaked one for a directory named like a snapshot."""
    directory = tmp_path / "j"
    engine = journal_commands(directory, commands[:300], group=50)
    (directory / "snapshot-000000000300.cxs").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        recovered = recover(directory)
        assert recovered.engine.state_hash() == engine.state_hash()
        assert any("snapshot-000000000300.cxs" in w for w in recovered.warnings)
    assert len(os.listdir("/proc/self/fd")) == before


def test_journal_cut_refuses_a_fifo_named_like_a_snapshot_it_would_copy_aside(
        tmp_path, commands):
    """journal-cut --yes copies what it removes aside first: a FIFO named like a snapshot
    after the damage made it wait for ever on the copy's read."""
    import threading

    from exchange.journal import cut_journal

    directory = tmp_path / "j"
    journal_commands(directory, commands[:300], group=50)
    segment = sorted(directory.glob("journal-*.cxj"))[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    os.mkfifo(directory / "snapshot-000000000300.cxs", 0o600)
    done: list = []

    def cut() -> None:
        try:
            done.append(cut_journal(directory, apply=True))
        except JournalError as exc:
            done.append(exc)

    thread = threading.Thread(target=cut, daemon=True)
    thread.start()
    thread.join(20)
    assert done, "journal-cut waited on the FIFO"
    assert isinstance(done[0], JournalError) and "not a regular file" in str(done[0])
    assert segment.read_bytes() == bytes(data)  # nothing was cut
