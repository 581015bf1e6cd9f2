"""The journal: frames, group commit, snapshots, torn tails, and recovery after SIGKILL.

The crash tests kill a real process with SIGKILL at seeded random points (after a seeded
number of acknowledgements plus a seeded pause, so kills land mid-group, mid-write and
mid-snapshot) and check that each recovery gives the state hash of the same prefix of
commands replayed without a crash, and that nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from exchange import (CancelOrder, Deposit, Engine, PlaceOrder, default_market)
from exchange.events import CommandRejected
from exchange.journal import (JournalDamage, JournalError, create_journal, recover, reopen_journal)
from exchange.orderfile import read_order_file
from gateway.tools.genorders import generate_mixed, write_rows
from gateway.tools.replay import holding_rows

REPO = Path(__file__).resolve().parents[1]
MARKET = default_market()
SEGMENT_HEADER = 24  # magic, version, first seq, CRC
FRAME_HEADER = 20  # length, seq, payload CRC, header CRC


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> Path:
    """A funded mixed order file: 40,000 rows, deposits and issuance first."""
    path = tmp_path_factory.mktemp("orders") / "funded.csv"
    write_rows(path, generate_mixed(40_000, seed=11, accounts=20, fund=True), "csv")
    return path


@pytest.fixture(scope="module")
def commands(orders) -> list:
    return read_order_file(orders)


def prefix_hashes(commands: list, counts) -> dict[int, str]:
    """State hash after the first n commands, for each n in *counts*, in one pass."""
    engine = Engine(MARKET, ledger=True)
    out: list = []
    hashes, done = {}, 0
    for n in sorted(set(counts)):
        for command in commands[done:n]:
            engine.submit(command, out)
        out.clear()
        done = n
        hashes[n] = engine.state_hash()
    return hashes


def journal_commands(directory: Path, commands: list, group: int = 100,
                     snapshot_every: int | None = None, crash: bool = False,
                     background: bool = False) -> Engine:
    """Journal *commands* in groups, as the gateway does (snapshots written by a child with
    *background*), then close the journal (sealed), or with *crash* leave it as a process
    killed after its last commit leaves it: its last segment being written, not sealed (a
    cut of it then reads as a torn tail)."""
    engine = Engine(MARKET, ledger=True)
    writer = create_journal(directory, MARKET.text, ledger=True)
    out: list = []
    for start in range(0, len(commands), group):
        chunk = commands[start:start + group]
        writer.append_many(chunk)
        writer.commit()
        for command in chunk:
            engine.submit(command, out)
        out.clear()
        if snapshot_every and writer.seq - writer.last_snapshot >= snapshot_every:
            writer.snapshot(engine, background=background)
    if not crash:
        writer.close()
    elif writer._lock is not None:  # a killed process's lock goes with it
        os.close(writer._lock)
        writer._lock = None
    return engine


def write_old_journal(directory: Path, version: int, frames: list) -> tuple[Path, list[bytes]]:
    """Write a journal of the old format *version* (1 or 2): ``meta.json`` and one segment
    of frames with the old header (length, payload CRC, first seq), one for each ``(first
    seq, payload object)`` of *frames*. Return the segment and its frames' bytes."""
    directory.mkdir()
    meta = {"format": f"carbonx-journal/{version}", "ledger": True, "market": MARKET.text}
    (directory / "meta.json").write_text(json.dumps(meta))
    framed = []
    for seq, item in frames:
        payload = msgspec.msgpack.encode(item)
        framed.append(struct.pack("<IIQ", len(payload), zlib.crc32(payload, seq), seq) + payload)
    segment = directory / "journal-000000000001.cxj"
    segment.write_bytes(b"".join(framed))
    return segment, framed


# --- recovery without a crash -----------------------------------------------------------------
def test_recovery_gives_the_same_state(tmp_path, commands):
    engine = journal_commands(tmp_path / "j", commands[:5000])
    recovered = recover(tmp_path / "j")
    assert (recovered.seq, recovered.snapshot_seq, recovered.replayed) == (5000, 0, 5000)
    assert recovered.torn_bytes == 0
    assert recovered.engine.state_hash() == engine.state_hash()
    recovered.engine.check()


def test_recovery_from_a_snapshot_replays_only_the_tail(tmp_path, commands):
    engine = journal_commands(tmp_path / "j", commands[:5000], snapshot_every=2000)
    names = sorted(p.name for p in (tmp_path / "j").iterdir())
    assert "snapshot-000000002000.cxs" in names and "snapshot-000000004000.cxs" in names
    recovered = recover(tmp_path / "j")
    assert (recovered.seq, recovered.snapshot_seq, recovered.replayed) == (5000, 4000, 1000)
    assert recovered.engine.state_hash() == engine.state_hash()


@pytest.mark.parametrize("background", [False, True])
def test_a_journal_keeps_its_newest_three_snapshots(tmp_path, commands, background):
    """Snapshots were never removed (47 of them after 2,400 commands at 50 a snapshot):
    once a new one is whole, all but the newest three go; the segments stay, so recovery
    still gives the same state, from the newest or, past damage, from the first command."""
    engine = journal_commands(tmp_path / "j", commands[:6000], group=1000, snapshot_every=1000,
                              background=background)
    snapshots = sorted(p.name for p in (tmp_path / "j").glob("snapshot-*"))
    assert snapshots == [f"snapshot-{seq:012d}.cxs" for seq in (4000, 5000, 6000)]
    assert len(list((tmp_path / "j").glob("journal-*.cxj"))) == 7  # every segment stays
    recovered = recover(tmp_path / "j")
    assert (recovered.seq, recovered.snapshot_seq) == (6000, 6000)
    for name in snapshots:  # every snapshot damaged: the whole log is replayed
        (tmp_path / "j" / name).write_bytes(b"damaged")
    recovered = recover(tmp_path / "j")
    assert (recovered.snapshot_seq, recovered.replayed) == (0, 6000)
    assert recovered.engine.state_hash() == engine.state_hash()


def test_a_damaged_snapshot_is_passed_over(tmp_path, commands):
    engine = journal_commands(tmp_path / "j", commands[:5000], snapshot_every=2000)
    latest = tmp_path / "j" / "snapshot-000000004000.cxs"
    data = bytearray(latest.read_bytes())
    data[-10] ^= 0xFF
    latest.write_bytes(bytes(data))
    recovered = recover(tmp_path / "j")
    assert (recovered.snapshot_seq, recovered.replayed) == (2000, 3000)
    assert recovered.engine.state_hash() == engine.state_hash()
    assert len(recovered.warnings) == 1 and "snapshot-000000004000.cxs" in recovered.warnings[0]


def test_rejected_commands_are_journaled_and_reproduced(tmp_path):
    commands = [
        Deposit(account="a", currency="CNY", amount="100.00"),
        PlaceOrder(order_id="b1", account="a", instrument="CEA25", side="buy", price="60.00",
                   qty=1000),  # insufficient cash
        PlaceOrder(order_id="b2", account="a", instrument="CEA25", side="buy", price="60.00",
                   qty=1),
        CancelOrder(order_id="zz", account="a"),  # unknown order
    ]
    engine = journal_commands(tmp_path / "j", commands, group=2)
    recovered = recover(tmp_path / "j").engine
    assert (recovered.accepted, recovered.rejected) == (engine.accepted, engine.rejected) == (2, 2)
    assert recovered.rejects == {"insufficient_cash": 1, "unknown_order": 1}
    assert recovered.state_hash() == engine.state_hash()


def test_a_resent_command_id_is_not_applied_twice_even_across_recovery(tmp_path):
    deposit = Deposit(account="a", currency="CNY", amount="100.00", command_id="dep-1")
    journal_commands(tmp_path / "j", [deposit], group=1)
    recovered, writer = reopen_journal(tmp_path / "j")
    engine = recovered.engine
    with writer:
        writer.append(deposit)  # the bot resends after reconnecting
        writer.commit()
        events = engine.execute(deposit)
    assert isinstance(events[0], CommandRejected) and events[0].reason == "duplicate_command"
    assert engine.ledger.holding("a", "CNY").available == 10000
    again = recover(tmp_path / "j")
    assert again.seq == 2 and again.engine.state_hash() == engine.state_hash()


def test_a_long_group_is_framed_in_pieces_and_recovers_whole(tmp_path, commands):
    engine = journal_commands(tmp_path / "j", commands[:20_000], group=20_000)
    segment = _single_segment(tmp_path / "j")
    data = segment.read_bytes()
    firsts, pos = [], SEGMENT_HEADER
    while pos < len(data):
        length, first, _, _ = struct.unpack_from("<IQII", data, pos)
        firsts.append(first)
        pos += FRAME_HEADER + length
    assert firsts == [1, 8193, 16385]  # at most 8,192 commands a frame
    recovered = recover(tmp_path / "j")
    assert recovered.seq == 20_000 and recovered.engine.state_hash() == engine.state_hash()


def test_a_format_1_journal_one_command_a_frame_is_still_read(tmp_path, commands):
    directory = tmp_path / "j"
    write_old_journal(directory, 1, list(enumerate(commands[:500], 1)))
    recovered = recover(directory)
    assert recovered.seq == 500
    assert recovered.engine.state_hash() == prefix_hashes(commands, [500])[500]


def test_a_command_too_large_to_frame_is_refused_and_nothing_is_appended(tmp_path):
    writer = create_journal(tmp_path / "j", MARKET.text, ledger=True)
    small = Deposit(account="a", currency="CNY", amount="1.00")
    huge = Deposit(account="a" * (1 << 24), currency="CNY", amount="1.00")
    with writer:
        with pytest.raises(JournalError, match="command 2 is .* bytes"):
            writer.append_many([small, huge])
        assert writer.seq == 0
        writer.append(small)
    assert recover(tmp_path / "j").seq == 1


def test_a_background_snapshot_is_written_by_a_child_and_recovers_the_same_state(
        tmp_path, commands):
    engine = Engine(MARKET, ledger=True)
    writer = create_journal(tmp_path / "j", MARKET.text, ledger=True)
    out: list = []
    with writer:
        for start in range(0, 3000, 500):
            chunk = commands[start:start + 500]
            writer.append_many(chunk)
            writer.commit()
            for command in chunk:
                engine.submit(command, out)
            out.clear()
            if start == 1000:
                writer.snapshot(engine, background=True)  # after command 1,500
                at_snapshot = engine.state_hash()
    names = sorted(p.name for p in (tmp_path / "j").iterdir())
    assert "snapshot-000000001500.cxs" in names and not any(n.endswith(".tmp") for n in names)
    recovered = recover(tmp_path / "j")
    assert (recovered.seq, recovered.snapshot_seq, recovered.replayed) == (3000, 1500, 1500)
    assert recovered.engine.state_hash() == engine.state_hash()
    # The snapshot does not stand in for a lost segment: its loss is an error.
    (tmp_path / "j" / "journal-000000001501.cxj").rename(tmp_path / "later.cxj")
    with pytest.raises(JournalError, match=r"journal-000000001501\.cxj: missing"):
        recover(tmp_path / "j")
    (tmp_path / "later.cxj").rename(tmp_path / "j" / "journal-000000001501.cxj")
    assert recover(tmp_path / "j").engine.state_hash() != at_snapshot


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_snapshot_is_reported_and_the_journal_goes_on_whole(
        tmp_path, commands, monkeypatch, background):
    """A snapshot is only a shortcut: one that cannot be written stopped the live
    exchange (``serve`` exited on the error) and left its temporary file for good. It is
    now a warning for the caller to report, its file is removed, and commands go on."""
    import exchange.journal as journal_module

    def refuse(engine, seq, final):
        final.with_suffix(".tmp").write_bytes(b"half a snapshot")
        raise OSError(28, "No space left on device")

    engine = journal_commands(tmp_path / "j", commands[:1000], group=500)
    recovered, writer = reopen_journal(tmp_path / "j")
    monkeypatch.setattr(journal_module, "_write_snapshot", refuse)  # the child inherits it
    with writer:
        writer.snapshot(recovered.engine, background=background)
        writer.wait_snapshot()
        monkeypatch.undo()
        out: list = []
        for command in commands[1000:1200]:
            writer.append(command)
            writer.commit()
            recovered.engine.submit(command, out)
            engine.submit(command, out)
    [warning] = writer.warnings
    why = "its writer exited with status 1" if background else "No space left on device"
    assert warning.startswith("the snapshot after command 1000 could not be written")
    assert why in warning and "the journal itself is whole" in warning
    assert not list((tmp_path / "j").glob("snapshot-*"))
    again = recover(tmp_path / "j")
    assert (again.seq, again.snapshot_seq) == (1200, 0)
    assert again.engine.state_hash() == engine.state_hash()


def test_a_journal_write_that_fails_is_an_error_naming_the_segment(tmp_path, commands):
    """A failed write came out as a bare OSError: ``serve`` said 'cannot start: File too
    large' after running for a while, and ``replay`` 'cannot write the output'."""

    class Full:
        closed = False

        def write(self, data):
            raise OSError(28, "No space left on device")

    journal_commands(tmp_path / "j", commands[:10], group=10)
    _, writer = reopen_journal(tmp_path / "j")
    writer._file, real = Full(), writer._file
    writer.append_many(commands[10:20])
    with pytest.raises(JournalError, match=r"cannot write the journal segment .*journal-0+11\.cxj: "
                       r"No space left on device; commands 11 to 20 are not journaled"):
        writer.commit()
    real.close()


# --- torn tails and damage ---------------------------------------------------------------------
def _single_segment(directory: Path) -> Path:
    """The last segment that holds a frame."""
    segments = sorted(directory.glob("journal-*.cxj"))
    return [s for s in segments if s.stat().st_size > SEGMENT_HEADER][-1]


def test_every_cut_inside_the_last_frame_is_detected_and_cut(tmp_path, commands):
    # Two groups, two frames: commands 1-297, then 298-300. A cut anywhere in the last
    # frame drops that whole group, which was never committed.
    journal_commands(tmp_path / "j", commands[:300], group=297, crash=True)
    segment = _single_segment(tmp_path / "j")
    whole = segment.read_bytes()
    hashes = prefix_hashes(commands, [297, 300])
    # Find where the last frame starts: recover from a copy cut one byte short.
    segment.write_bytes(whole[:-1])
    torn = recover(tmp_path / "j")
    last_frame = len(whole) - torn.torn_bytes - 1
    assert torn.seq == 297 and torn.engine.state_hash() == hashes[297]
    for cut in range(last_frame, len(whole)):
        segment.write_bytes(whole[:cut])
        result = recover(tmp_path / "j")
        assert result.seq == 297, cut
        assert result.torn_bytes == cut - last_frame
    segment.write_bytes(whole)
    assert recover(tmp_path / "j").engine.state_hash() == hashes[300]


def test_a_flipped_byte_in_the_last_frame_is_damage_not_a_torn_tail(tmp_path, commands):
    # A whole frame that fails its CRC was not torn by a crash: it was committed, and
    # then damaged. Recovery says so rather than drop command 50 quietly.
    journal_commands(tmp_path / "j", commands[:50], group=49)
    segment = _single_segment(tmp_path / "j")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x01  # inside the last frame's payload (command 50): the CRC catches it
    segment.write_bytes(bytes(data))
    with pytest.raises(
            JournalDamage, match=r"journal-000000000001\.cxj: checksum mismatch "
            r"in the frame at byte \d+"):
        recover(tmp_path / "j")


def test_reopening_after_a_torn_tail_keeps_it_and_goes_on_in_a_new_segment(tmp_path, commands):
    journal_commands(tmp_path / "j", commands[:100], group=99, crash=True)
    segment = _single_segment(tmp_path / "j")
    torn = segment.read_bytes()[:-7]  # into the frame of command 100
    segment.write_bytes(torn)
    recovered, writer = reopen_journal(tmp_path / "j")
    assert recovered.seq == 99 and recovered.torn_bytes > 0
    assert segment.read_bytes() == torn  # nothing truncated
    engine = recovered.engine
    with writer:
        for command in commands[99:150]:
            writer.append(command)
            engine.submit(command, [])
    assert (tmp_path / "j" / "journal-000000000100.cxj").exists()
    assert segment.read_bytes() == torn
    final = recover(tmp_path / "j")
    assert final.seq == 150 and final.torn_bytes == 0
    assert final.engine.state_hash() == prefix_hashes(commands, [150])[150]


def test_damage_before_the_last_segment_is_an_error(tmp_path, commands):
    journal_commands(tmp_path / "j", commands[:3000], group=500, snapshot_every=1000)
    first = tmp_path / "j" / "journal-000000000001.cxj"
    for snapshot in (tmp_path / "j").glob("snapshot-*"):
        snapshot.unlink()  # force a full replay through the damaged segment
    data = bytearray(first.read_bytes())
    data[60] ^= 0xFF  # the first frame's payload
    first.write_bytes(bytes(data))
    with pytest.raises(
            JournalDamage, match=r"journal-000000000001\.cxj: checksum mismatch "
            r"in the frame at byte 24: the journal is damaged"):
        recover(tmp_path / "j")


def test_a_directory_that_is_not_a_journal_is_refused(tmp_path):
    with pytest.raises(JournalError, match="no journal"):
        recover(tmp_path)
    create_journal(tmp_path / "j", MARKET.text, ledger=True).close()
    with pytest.raises(JournalError, match="already holds a journal"):
        create_journal(tmp_path / "j", MARKET.text, ledger=True)


# --- SIGKILL at random points ---------------------------------------------------------------------
def _run_and_kill(orders: Path, directory: Path, rng: random.Random) -> tuple[int, bool]:
    """Start the driver, SIGKILL it after a random number of acks plus a random pause.

    Return (last acknowledged seq, whether the driver finished before the kill).
    """
    proc = subprocess.Popen([
        sys.executable,
        str(REPO / "tests" / "journal_driver.py"),
        str(orders),
        str(directory), "97", "5000"
    ], stdout=subprocess.PIPE, text=True, cwd=REPO)
    acked, finished = 0, False
    target = rng.randrange(0, 380)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(target):
            line = proc.stdout.readline().strip()
            if line == "done" or not line:
                finished = True
                break
            acked = int(line.split()[1])
        if not finished:
            time.sleep(rng.random() * 0.01)
            os.kill(proc.pid, signal.SIGKILL)
            # Acks written before the kill count: the driver sent them.
            for line in proc.stdout:
                if line.startswith("ack"):
                    acked = int(line.split()[1])
                elif line.startswith("done"):
                    finished = True
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return acked, finished


def test_sigkill_at_20_seeded_points_recovers_the_same_prefix(tmp_path, orders, commands):
    rng = random.Random(2026)
    results = []
    for point in range(20):
        directory = tmp_path / f"j{point}"
        acked, finished = _run_and_kill(orders, directory, rng)
        recovered = recover(directory)
        assert recovered.seq >= acked, (
            f"kill {point}: acknowledged {acked}, recovered {recovered.seq}")
        assert recovered.seq <= len(commands)
        results.append((point, recovered.seq, recovered.engine.state_hash(), acked, finished,
                        recovered.snapshot_seq))
    hashes = prefix_hashes(commands, [seq for _, seq, *_ in results])
    for point, seq, state, *_ in results:
        assert state == hashes[seq], f"kill {point} at command {seq}: state differs from the prefix"
    # The kills must really land mid-run, and some after a snapshot.
    assert sum(1 for r in results if not r[4]) >= 15
    assert len({r[1] for r in results}) >= 10
    assert any(r[5] for r in results), "no kill landed after a snapshot"


def test_sigkill_of_the_replay_command_then_carbonx_holdings(tmp_path, orders, commands):
    """The real ``carbonx replay --ledger --journal``, killed at seeded times."""
    rng = random.Random(7)
    seen = []
    for point in range(3):
        directory = tmp_path / f"cli{point}"
        proc = subprocess.Popen([
            sys.executable, "-m", "gateway.cli", "replay",
            str(orders), "--ledger", "--journal",
            str(directory)
        ], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not any(directory.glob("journal-*.cxj")) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.15)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        shown = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "holdings",
             str(directory), "--json"], cwd=REPO, capture_output=True, text=True, timeout=60,
            check=False)
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        n = report["seq"]
        engine = Engine(MARKET, ledger=True)
        for command in commands[:n]:
            engine.submit(command, [])
        assert report["holdings"] == holding_rows(engine), f"kill {point} at {n}"
        assert report["positions"] == []
        seen.append(n)
    assert any(0 < n < len(commands) for n in seen), f"no kill landed mid-replay: {seen}"


def test_a_journal_has_one_writer_at_a_time(tmp_path):
    """A second serve on a live serve's directory recovered it, added a segment the first
    did not know of, and holdings then called the journal damaged: a second writer, in
    this process or another, is refused while the first holds the directory."""
    directory = tmp_path / "j"
    first = create_journal(directory, MARKET.text, ledger=True)
    first.append_many([Deposit(account="a", currency="CNY", amount="10.00")])
    first.commit()
    with pytest.raises(JournalError, match="one writer at a time"):
        reopen_journal(directory)
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from exchange.journal import reopen_journal; "
         "reopen_journal(sys.argv[1])", str(directory)], capture_output=True, text=True,
        cwd=REPO, timeout=60)
    assert other.returncode != 0 and "one writer at a time" in other.stderr
    first.close()
    recovered, second = reopen_journal(directory)  # the first gone, the next may write
    second.close()
    assert recovered.seq == 1
