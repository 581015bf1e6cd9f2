"""The journal never loses acknowledged data quietly: damage on disk, byte by byte.

Each test copies one journal (7,000 commands in frames of 250, four segments, snapshots
after 2,000, 4,000 and 6,000) into its own directory, damages it, and checks that
recovery either names the file and byte of the damage, changing nothing on disk, or
(a damaged snapshot) passes over it with a warning and reaches exactly the state of an
engine that ran the same commands. Never a wrong state, never fewer commands quietly.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import msgspec
import pytest
from test_journal import (FRAME_HEADER, MARKET, SEGMENT_HEADER, journal_commands, prefix_hashes,
                          write_old_journal)

from exchange import Engine, default_market
from exchange.journal import (FORMAT, JournalDamage, JournalError, _write_snapshot, create_journal,
                              cut_journal, recover, reopen_journal)
from exchange.state import RULES
from exchange.orderfile import read_order_file
from gateway.cli import main
from gateway.mqtt.serve import open_engine
from gateway.tools.genorders import generate_mixed, write_rows

REPO = Path(__file__).resolve().parents[1]
TOTAL, GROUP, EVERY = 7000, 250, 2000
SEGMENTS = ("journal-000000000001.cxj", "journal-000000002001.cxj", "journal-000000004001.cxj",
            "journal-000000006001.cxj")
SNAPSHOTS = ("snapshot-000000002000.cxs", "snapshot-000000004000.cxs", "snapshot-000000006000.cxs")


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("orders") / "funded.csv"
    write_rows(path, generate_mixed(TOTAL, seed=5, accounts=12, fund=True), "csv")
    return path


@pytest.fixture(scope="module")
def commands(orders) -> list:
    return read_order_file(orders)


@pytest.fixture(scope="module")
def hashes(commands) -> dict[int, str]:
    return prefix_hashes(commands, range(0, TOTAL + 1, GROUP))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, commands) -> Path:
    # As a gateway killed after its last commit leaves it: the newest segment not sealed.
    directory = tmp_path_factory.mktemp("pristine") / "j"
    journal_commands(directory, commands, group=GROUP, snapshot_every=EVERY, crash=True)
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted([*SEGMENTS, *SNAPSHOTS, "manifest.json", "meta.json"])
    return directory


@pytest.fixture
def journal(tmp_path, pristine) -> Path:
    directory = tmp_path / "j"
    shutil.copytree(pristine, directory)
    return directory


def format_2_journal(directory: Path, commands: list) -> tuple[Path, list[bytes]]:
    """A format-2 journal of the first 1,000 *commands*, in ten frames of 100: its one
    segment and the frames' bytes."""
    return write_old_journal(directory, 2,
                             [(seq, commands[seq - 1:seq + 99]) for seq in range(1, 1001, 100)])


def contents(directory: Path) -> dict[str, bytes]:
    """Every file under *directory*, by relative path."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


def frame_starts(segment: Path) -> list[int]:
    data = segment.read_bytes()
    starts, pos = [], SEGMENT_HEADER
    while pos < len(data):
        starts.append(pos)
        pos += FRAME_HEADER + struct.unpack_from("<I", data, pos)[0]
    assert pos == len(data)
    return starts


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


def expect_damage(directory: Path, name: str, offset: int | None = None) -> JournalDamage:
    """Recovery fails naming *name* (and *offset*), and leaves the directory as it was."""
    before = contents(directory)
    with pytest.raises(JournalDamage) as caught:
        recover(directory)
    message = str(caught.value)
    assert name in message, message
    if offset is not None:
        assert f" at byte {offset}:" in message, message
    assert "\n" not in message
    assert contents(directory) == before
    return caught.value


# --- single flipped bytes ------------------------------------------------------------------------
# (segment, where): "h<n>" byte n of the segment header; "f<k>+<n>" byte n of frame k
# (0 length, 4 seq, 12 payload CRC, 16 header CRC, 20 and on the payload; negative
# counts from the frame's end), k = -1 the last frame.
SEGMENT_FLIPS = [(0, "h0"), (0, "h9"), (0, "h13"), (0, "h22"), (0, "f0+0"), (0, "f0+3"),
                 (0, "f0+5"), (0, "f3+4"), (0, "f3+14"), (0, "f5+18"), (0, "f7+-1"), (0, "f-1+2"),
                 (1, "h1"), (1, "h12"), (1, "f0+1"), (1, "f2+2"), (1, "f4+6"), (1, "f4+40"),
                 (1, "f-1+-5"), (1, "f-1+1"), (2, "h16"), (2, "f1+0"), (2, "f1+11"), (2, "f6+25"),
                 (2, "f-1+17"), (3, "h8"), (3, "h18"), (3, "f0+4"), (3, "f1+2"), (3, "f2+100"),
                 (3, "f-1+0"), (3, "f-1+3"), (3, "f-1+9"), (3, "f-1+21"), (3, "f-1+-1")]


@pytest.mark.parametrize("segment, where", SEGMENT_FLIPS,
                         ids=[f"{SEGMENTS[s][8:20]}-{w}" for s, w in SEGMENT_FLIPS])
def test_a_flipped_byte_in_a_segment_is_damage_naming_file_and_byte(journal, segment, where):
    path = journal / SEGMENTS[segment]
    starts = frame_starts(path)
    if where.startswith("h"):
        position, offset = int(where[1:]), 0
    else:
        frame, byte = (int(x) for x in where[1:].split("+"))
        offset = starts[frame]
        end = starts[frame + 1] if frame + 1 < len(starts) and frame != -1 else path.stat().st_size
        position = offset + byte if byte >= 0 else end + byte
        assert offset <= position < end
    for mask in (0x01, 0x80):
        flip(path, position, mask)
        expect_damage(journal, SEGMENTS[segment], offset)
        flip(path, position, mask)  # back again
    assert recover(journal).seq == TOTAL


SNAPSHOT_FLIPS = [0, 5, 8, 9, 15, 16, 20, 24, 27, 28, 31, 32, 100, -1]


@pytest.mark.parametrize("position", SNAPSHOT_FLIPS)
def test_a_flipped_byte_in_a_snapshot_is_passed_over_and_the_state_is_whole(
        journal, hashes, position):
    flip(journal / SNAPSHOTS[-1], position)
    recovered = recover(journal)
    assert (recovered.seq, recovered.snapshot_seq) == (TOTAL, 4000)
    assert recovered.replayed == TOTAL - 4000
    assert recovered.engine.state_hash() == hashes[TOTAL]
    assert len(recovered.warnings) == 1 and SNAPSHOTS[-1] in recovered.warnings[0]
    assert "passed over" in recovered.warnings[0]


def test_damaged_snapshots_fall_back_one_by_one_to_the_segments(journal, hashes):
    for damaged, (start, warnings) in zip(reversed(SNAPSHOTS), ((4000, 1), (2000, 2), (0, 3))):
        flip(journal / damaged, 12)  # the seq in the header: the header CRC catches it
        recovered = recover(journal)
        assert (recovered.seq, recovered.snapshot_seq) == (TOTAL, start)
        assert len(recovered.warnings) == warnings
        assert recovered.engine.state_hash() == hashes[TOTAL]


def test_a_snapshot_named_for_another_seq_is_passed_over(journal, hashes):
    (journal / SNAPSHOTS[-1]).unlink()
    (journal / SNAPSHOTS[1]).rename(journal / "snapshot-000000005000.cxs")
    recovered = recover(journal)
    assert recovered.snapshot_seq == 2000 and recovered.engine.state_hash() == hashes[TOTAL]
    assert "its header says command 4000, its name 5000" in recovered.warnings[0]


def test_a_snapshot_between_frames_is_passed_over(journal, commands, hashes):
    engine = Engine(MARKET, ledger=True)
    for command in commands[:6100]:
        engine.submit(command, [])
    _write_snapshot(engine, 6100, journal / "snapshot-000000006100.cxs")
    recovered = recover(journal)
    assert recovered.snapshot_seq == 6000 and recovered.engine.state_hash() == hashes[TOTAL]
    assert "no frame starts at command 6101" in recovered.warnings[0]


def test_a_whole_snapshot_past_the_end_of_the_segments_is_an_error(journal, commands):
    # It proves commands up to 7,250 were committed: the segments have lost some.
    engine = Engine(MARKET, ledger=True)
    for command in commands[:TOTAL]:
        engine.submit(command, [])
    _write_snapshot(engine, 7250, journal / "snapshot-000000007250.cxs")
    damage = expect_damage(journal, "snapshot-000000007250.cxs")
    assert "the segments end at command 7000" in str(damage)
    plan = cut_journal(journal, apply=True)
    assert plan.kind == "ahead" and [name
                                     for name, _ in plan.files] == ["snapshot-000000007250.cxs"]
    assert recover(journal).seq == TOTAL


# --- missing, empty, stray, changed ---------------------------------------------------------------
@pytest.mark.parametrize("segment", range(4))
def test_a_deleted_segment_is_an_error_naming_it(journal, segment):
    (journal / SEGMENTS[segment]).unlink()
    expect_damage(journal, f"{SEGMENTS[segment]}: missing")


@pytest.mark.parametrize("segment", range(4))
def test_an_emptied_segment_is_an_error_naming_it(journal, segment):
    (journal / SEGMENTS[segment]).write_bytes(b"")
    expect_damage(journal, f"{SEGMENTS[segment]}: empty: no segment header", 0)


def test_the_newest_segment_cut_to_its_header_is_read_as_torn_at_most_up_to_the_snapshot(journal):
    # Whole trailing frames of the segment being written, cut away, cannot be told from
    # a crash before commit (a stated limit), but never below the latest snapshot.
    newest = journal / SEGMENTS[-1]
    newest.write_bytes(newest.read_bytes()[:SEGMENT_HEADER])
    assert recover(journal).seq == 6000
    (journal / SEGMENTS[2]).write_bytes((journal / SEGMENTS[2]).read_bytes()[:-1])
    expect_damage(journal, SEGMENTS[2])


@pytest.mark.parametrize("frames_left", [0, 1, 3])
def test_a_closed_journal_cut_at_a_frame_boundary_is_damage(tmp_path, commands, frames_left):
    """Closed cleanly, the journal's last segment is sealed: whole frames cut from its
    end (which a crash could not have left) are damage, where the segment a killed
    process was writing can only be read as it is (the limit stated above)."""
    directory = tmp_path / "j"
    journal_commands(directory, commands[:1000], group=100)
    [segment] = sorted(directory.glob("journal-*.cxj"))
    starts = frame_starts(segment)
    cut = starts[frames_left] if frames_left else SEGMENT_HEADER
    segment.write_bytes(segment.read_bytes()[:cut])
    damage = expect_damage(directory, segment.name, cut)
    assert "manifest.json records frames up to byte" in str(damage)
    assert main(["holdings", str(directory)]) == 2


def test_a_closed_journal_reopened_goes_on_in_a_new_segment(tmp_path, commands):
    directory = tmp_path / "j"
    journal_commands(directory, commands[:500], group=100)
    recovered, writer = reopen_journal(directory)
    assert recovered.seq == 500 and recovered.torn_bytes == 0
    writer.append_many(commands[500:600])
    writer.commit()
    writer.close()
    assert sorted(p.name for p in directory.glob("journal-*.cxj")) == [
        "journal-000000000001.cxj", "journal-000000000501.cxj"]
    assert recover(directory).engine.state_hash() == prefix_hashes(commands, [600])[600]


def test_a_segment_whose_header_disagrees_with_its_name_is_an_error(journal):
    path = journal / SEGMENTS[1]
    data = bytearray(path.read_bytes())
    head = struct.pack("<8sIQ", b"CXJSEG\0\0", 3, 2002)
    data[:SEGMENT_HEADER] = head + struct.pack("<I", zlib.crc32(head))
    path.write_bytes(bytes(data))
    damage = expect_damage(journal, SEGMENTS[1], 0)
    assert "header says it starts at command 2002, its name says 2001" in str(damage)


@pytest.mark.parametrize("name",
                         ["journal-000000007001.cxj", "journal-000000000500.cxj", "journal-1.cxj"])
def test_a_stray_file_named_like_a_segment_is_an_error(journal, name):
    shutil.copy(journal / SEGMENTS[1], journal / name)
    expect_damage(journal, f"{name}: named like a segment, but manifest.json does not list it")
    plan = cut_journal(journal, apply=True)
    assert plan.kind == "stray" and plan.commands == 0
    assert not (journal / name).exists() and (plan.copied / name).exists()
    assert recover(journal).seq == TOTAL


@pytest.mark.parametrize("change", ["ledger", "market", "format", "no checksum", "checksum"])
def test_a_changed_meta_json_is_an_error_naming_it(journal, change):
    path = journal / "meta.json"
    meta = json.loads(path.read_text())
    if change == "ledger":
        meta["ledger"] = False
    elif change == "market":
        meta["market"] = meta["market"].replace("0.01", "0.02", 1)
    elif change == "format":
        meta["format"] = "carbonx-journal/2"
    elif change == "no checksum":
        del meta["checksum"]
    else:
        meta["checksum"] = meta["checksum"][:-1] + ("0" if meta["checksum"][-1] != "0" else "1")
    path.write_text(json.dumps(meta, indent=1))
    before = contents(journal)
    with pytest.raises(JournalError, match=r"meta\.json: "):
        recover(journal)
    assert contents(journal) == before


@pytest.mark.parametrize("cut", [0, 1, 40, -2])
def test_a_truncated_manifest_is_an_error_naming_it(journal, cut):
    path = journal / "manifest.json"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(JournalError, match=r"manifest\.json: "):
        recover(journal)


def test_a_missing_or_stale_manifest_is_an_error(journal):
    manifest = json.loads((journal / "manifest.json").read_text())
    (journal / "manifest.json").unlink()
    with pytest.raises(JournalError, match=r"manifest\.json: missing"):
        recover(journal)
    # An older manifest, whole and checksummed, that does not list the newest segment.
    from exchange.journal import _write_json

    del manifest["checksum"]
    manifest["segments"] = manifest["segments"][:-1]
    manifest["segments"][-1] = {"name": SEGMENTS[2], "first": 4001}
    _write_json(journal / "manifest.json", manifest)
    expect_damage(journal,
                  f"{SEGMENTS[3]}: named like a segment, but manifest.json does not list it")


# --- torn tails ---------------------------------------------------------------------------------
def test_an_incomplete_frame_followed_by_a_valid_one_is_damage_not_a_torn_tail(journal):
    path = journal / SEGMENTS[-1]
    data = path.read_bytes()
    starts = frame_starts(path)
    # Half of frame 2, then frame 3 whole: frame 2 now runs past the end of the file.
    torn_then_more = data[:starts[2]] + data[starts[2]:starts[3]][:200] + data[starts[3]:]
    assert len(torn_then_more) < starts[3]
    path.write_bytes(torn_then_more)
    damage = expect_damage(journal, SEGMENTS[-1], starts[2])
    assert "with a valid frame after it" in str(damage)


def test_a_torn_tail_is_recovered_reported_kept_and_the_journal_goes_on(journal, commands, hashes):
    path = journal / SEGMENTS[-1]
    starts = frame_starts(path)
    torn = path.read_bytes()[:starts[-1] + 1234]  # into the last frame (commands 6751-7000)
    path.write_bytes(torn)
    recovered = recover(journal)
    assert (recovered.seq, recovered.torn_bytes) == (6750, 1234)
    assert recovered.engine.state_hash() == hashes[6750]
    assert recovered.segment == path
    again, writer = reopen_journal(journal)
    assert again.engine.state_hash() == hashes[6750]
    assert path.read_bytes() == torn  # nothing truncated
    new = journal / "journal-000000006751.cxj"
    assert new.stat().st_size == SEGMENT_HEADER
    manifest = json.loads((journal / "manifest.json").read_text())
    assert manifest["segments"][-2] == {
        "name": SEGMENTS[-1],
        "first": 6001,
        "rules": RULES,
        "last": 6750,
        "end": starts[-1],
        "size": len(torn)
    }
    second = recover(journal)
    assert (second.seq, second.torn_bytes) == (6750, 0)
    assert second.engine.state_hash() == hashes[6750]
    engine = again.engine
    with writer:
        for start in range(6750, TOTAL, GROUP):
            writer.append_many(commands[start:start + GROUP])
            writer.commit()
            for command in commands[start:start + GROUP]:
                engine.submit(command, [])
    final = recover(journal)
    assert (final.seq, final.torn_bytes) == (TOTAL, 0)
    assert final.engine.state_hash() == engine.state_hash() == hashes[TOTAL]
    assert path.read_bytes() == torn
    # The torn bytes are known: damage to them is no damage to the journal ...
    flip(path, len(torn) - 10)
    assert recover(journal).seq == TOTAL
    # ... but the file must keep its size, and its frames.
    path.write_bytes(torn + b"\0")
    expect_damage(journal, SEGMENTS[-1], len(torn))


def test_a_torn_segment_without_one_good_frame_is_moved_aside_not_truncated(journal, hashes):
    path = journal / SEGMENTS[-1]
    torn = path.read_bytes()[:SEGMENT_HEADER + 15]  # even the first frame header is torn
    path.write_bytes(torn)
    recovered, writer = reopen_journal(journal)
    writer.close()
    assert (recovered.seq, recovered.torn_bytes) == (6000, 15)
    assert (journal / "torn-000001" / SEGMENTS[-1]).read_bytes() == torn
    assert path.read_bytes() == (journal / SEGMENTS[-1]).read_bytes()[:SEGMENT_HEADER]
    final = recover(journal)
    assert (final.seq, final.torn_bytes) == (6000, 0)
    assert final.engine.state_hash() == hashes[6000]
    assert stat.S_IMODE((journal / "torn-000001").stat().st_mode) == 0o700


def test_a_segment_start_interrupted_before_its_rename_is_read_as_empty(journal, commands, hashes):
    # The crash window of a new segment: manifest written, NAME.tmp not yet renamed.
    recovered, writer = reopen_journal(journal)
    writer.snapshot(recovered.engine)  # seals 6001-7000, starts journal-000000007001
    writer.close()
    new = journal / "journal-000000007001.cxj"
    new.rename(journal / "journal-000000007001.cxj.tmp")
    assert recover(journal).seq == TOTAL
    recovered, writer = reopen_journal(journal)
    with writer:
        writer.append_many(commands[:3])  # resent: rejected, and journaled
        writer.commit()
    assert new.exists() and not (journal / "journal-000000007001.cxj.tmp").exists()
    assert recover(journal).seq == TOTAL + 3
    # A header-only NAME.tmp of a segment the manifest does not list yet is ignored.
    (journal / "journal-000000007004.cxj.tmp").write_bytes(b"\0" * SEGMENT_HEADER)
    assert recover(journal).seq == TOTAL + 3


def test_a_format_2_journal_with_a_flipped_length_is_damage_not_a_torn_tail(
        tmp_path, commands, hashes):
    directory = tmp_path / "j"
    segment, frames = format_2_journal(directory, commands)
    assert recover(directory).engine.state_hash() == prefix_hashes(commands, [1000])[1000]
    third = len(frames[0]) + len(frames[1])
    data = bytearray(segment.read_bytes())
    data[third + 2] ^= 0x40  # the third frame's length grows past the end of the file
    segment.write_bytes(bytes(data))
    damage = expect_damage(directory, segment.name, third)
    assert "with a valid frame after it" in str(damage)
    # The same flip in the last frame cannot be told from a torn tail in format 2 (format
    # 3 covers the length with the header CRC).
    data[third + 2] ^= 0x40
    last = len(data) - len(frames[-1])
    data[last + 2] ^= 0x40
    segment.write_bytes(bytes(data))
    assert recover(directory).seq == 900
    # Reopening converts it to format 3 and keeps every byte of it; written by an older
    # version, its files could be anyone's to read: they are private now.
    os.chmod(directory, 0o755)
    os.chmod(segment, 0o644)
    recovered, writer = reopen_journal(directory)
    writer.close()
    assert recovered.seq == 900 and segment.read_bytes() == bytes(data)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in directory.iterdir() if f.is_file()} == {0o600}
    assert json.loads((directory / "meta.json").read_text())["format"] == FORMAT
    converted = recover(directory)
    assert converted.seq == 900 and converted.torn_bytes == 0
    assert converted.engine.state_hash() == prefix_hashes(commands, [900])[900]


def test_commands_journaled_under_other_rules_are_replayed_with_a_warning(tmp_path, commands):
    """Commands act under the rules of the carbonx that reads them: an upgrade replayed
    an older journal's commands under new rules (a surrender refused now, a fee charged
    then) with no word of it. Each segment records its rules; other rules are said."""
    directory = tmp_path / "j"
    format_2_journal(directory, commands)
    old = recover(directory)
    assert old.warnings == [
        "commands 1 to 1000 were journaled under the rules of a carbonx before 2026-12-05 "
        f"and are replayed under those of {RULES}: where the rules changed since, what they "
        "do may differ from what was acknowledged then"]
    recovered, writer = reopen_journal(directory)
    with writer:
        writer.append_many(commands[1000:1100])
    again = recover(directory)
    assert again.seq == 1100 and [w.split(" were ")[0] for w in again.warnings] == [
        "commands 1 to 1000"]  # the new segment's are this carbonx's own


def test_damage_in_an_older_format_says_how_to_cut_it_by_hand(tmp_path, commands, capsys):
    """holdings pointed to journal-cut, which refuses an older format, and serve refuses
    a damaged journal: each message sent the operator to the next. It now says how to cut
    it by hand, and doing so gives a journal serve converts."""
    directory = tmp_path / "j"
    segment, frames = format_2_journal(directory, commands)
    third = len(frames[0]) + len(frames[1])
    flip(segment, third + FRAME_HEADER + 30)  # the third frame's payload
    assert main(["holdings", str(directory)]) == 2
    message = capsys.readouterr().err
    assert "older journal format" in message and "journal-cut" in message
    size = segment.stat().st_size - sum(map(len, frames[2:]))  # to the end of the second
    assert f"cut {segment} to its first {size} bytes" in message
    assert "commands after 200 are dropped" in message
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    with open(copy / segment.name, "r+b") as fh:
        fh.truncate(size)
    recovered, writer = reopen_journal(copy)
    writer.close()
    assert recovered.seq == 200
    assert recover(copy).engine.state_hash() == prefix_hashes(commands, [200])[200]


def test_a_format_2_journal_cut_inside_an_old_segment_stays_readable(tmp_path, commands):
    directory = tmp_path / "j"
    old, frames = format_2_journal(directory, commands)
    _, writer = reopen_journal(directory)  # converted: the old segment sealed as it is
    writer.close()
    flip(old, len(frames[0]) + len(frames[1]) + 30)  # the third frame's payload
    expect_damage(directory, old.name, len(frames[0]) + len(frames[1]))
    plan = cut_journal(directory, apply=True)
    assert (plan.keep, plan.commands) == (200, 800)
    recovered = recover(directory)
    assert recovered.seq == 200
    assert recovered.engine.state_hash() == prefix_hashes(commands, [200])[200]
    _, writer = reopen_journal(directory)
    with writer:
        writer.append_many(commands[200:300])
    assert recover(directory).engine.state_hash() == prefix_hashes(commands, [300])[300]


# --- crash, reopen, crash again -------------------------------------------------------------------
DRIVER = """
import sys
import time
from pathlib import Path
from exchange import Engine, default_market
from exchange.journal import create_journal, reopen_journal
from exchange.orderfile import read_order_file

orders, directory, group = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
commands = read_order_file(orders)
if (directory / "meta.json").exists():
    recovered, writer = reopen_journal(directory)
    engine = recovered.engine
else:
    engine = Engine(default_market(), ledger=True)
    writer = create_journal(directory, default_market().text, ledger=True)
print("ready", writer.seq, flush=True)
out = []
for start in range(writer.seq, len(commands), group):
    chunk = commands[start:start + group]
    writer.append_many(chunk)
    seq = writer.commit()
    for command in chunk:
        engine.submit(command, out)
    out.clear()
    print("ack", seq, flush=True)
    time.sleep(0.002)   # paced, so that the kills land all along the run
    if writer.seq - writer.last_snapshot >= 1500:
        writer.snapshot(engine, background=True)
writer.close()
print("done", flush=True)
"""


def test_sigkill_then_reopen_again_and_again_never_truncates_nor_loses(
        tmp_path, orders, hashes, commands):
    import os
    import random
    import signal
    import time

    rng = random.Random(31)
    directory = tmp_path / "j"
    seen: list[tuple[int, int, int]] = []
    sizes: dict[str, int] = {}
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER,
             str(orders), str(directory), "97"], stdout=subprocess.PIPE, text=True, cwd=REPO)
        acked = 0
        try:
            acked = int(proc.stdout.readline().split()[1])
            for _ in range(rng.randrange(1, 12)):
                line = proc.stdout.readline().split()
                if not line or line[0] != "ack":
                    break
                acked = int(line[1])
            time.sleep(rng.random() * 0.004)
            os.kill(proc.pid, signal.SIGKILL)
            for line in proc.stdout:
                if line.startswith("ack"):
                    acked = int(line.split()[1])
        finally:
            proc.kill()
            proc.wait(timeout=30)
        recovered = recover(directory)
        assert acked <= recovered.seq <= TOTAL
        prefix = prefix_hashes(commands, [recovered.seq])[recovered.seq]
        assert recovered.engine.state_hash() == prefix
        seen.append((acked, recovered.seq, recovered.torn_bytes))
        for name, size in sizes.items():  # nothing ever shrinks (a torn segment without
            kept = [directory / name, *directory.glob(f"torn-*/{name}")]  # a frame moves)
            assert max(p.stat().st_size for p in kept if p.exists()) >= size, (name, seen)
        sizes = {p.name: p.stat().st_size for p in directory.glob("journal-*.cxj")}
    assert len({seq for _, seq, _ in seen if seq < TOTAL}) >= 4, seen


# --- journal-cut ---------------------------------------------------------------------------------
def test_journal_cut_trims_bytes_added_to_a_sealed_segment(journal, hashes):
    path = journal / SEGMENTS[1]
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"more")
    expect_damage(journal, SEGMENTS[1], size)
    plan = cut_journal(journal, apply=True)
    assert (plan.kind, plan.commands, plan.bytes) == ("size", 0, 4)
    assert path.stat().st_size == size
    recovered = recover(journal)
    assert recovered.seq == TOTAL and recovered.engine.state_hash() == hashes[TOTAL]


def test_journal_cut_of_a_healthy_journal_cuts_nothing(journal):
    before = contents(journal)
    plan = cut_journal(journal, apply=True)
    assert plan.problem is None and plan.keep == TOTAL and plan.copied is None
    assert contents(journal) == before


@pytest.mark.parametrize("segment, frame", [(1, 3), (3, 2), (0, 0)])
def test_journal_cut_drops_what_it_says_keeps_a_copy_and_then_recovers(
        journal, hashes, segment, frame):
    path = journal / SEGMENTS[segment]
    offset = frame_starts(path)[frame]
    flip(path, offset + 30)
    before = contents(journal)
    keep = {0: 0, 1: 2000, 2: 4000, 3: 6000}[segment] + frame * GROUP
    plan = cut_journal(journal)
    assert plan.kind == "frame" and plan.copied is None and contents(journal) == before
    assert (plan.keep, plan.commands) == (keep, TOTAL - keep)
    assert plan.frames == (TOTAL - keep) // GROUP
    dropped = [name for name, _ in plan.files]
    assert dropped[0] == SEGMENTS[segment]
    assert set(dropped[1:]) == ({*SEGMENTS[segment + 1:]}
                                | {s
                                   for s in SNAPSHOTS if int(s[9:21]) > keep})
    cut = cut_journal(journal, apply=True)
    assert (cut.keep, cut.commands, cut.files) == (plan.keep, plan.commands, plan.files)
    copies = cut.copied
    assert copies == journal / "cut-000001"
    assert stat.S_IMODE(copies.stat().st_mode) == 0o700
    for name in dropped + ["manifest.json"]:
        assert (copies / name).read_bytes() == before[name], name
        assert stat.S_IMODE((copies / name).stat().st_mode) == 0o600
    recovered = recover(journal)
    assert (recovered.seq, recovered.torn_bytes) == (keep, 0)
    assert recovered.engine.state_hash() == hashes[keep]
    assert cut_journal(journal).problem is None
    assert path.stat().st_size == offset


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_journal_cut_mends_a_lost_segment_with_a_fresh_one(journal, hashes, damage):
    path = journal / SEGMENTS[2]
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")
    plan = cut_journal(journal, apply=True)
    assert plan.kind == "segment" and plan.keep == 4000
    assert plan.commands == TOTAL - 4000  # the sealed entry and the later segment say so
    # each file named once: the lost segment's is made anew (an emptied one listed once)
    names = [name for name, _ in plan.files]
    assert len(names) == len(set(names)) and SEGMENTS[2] in names, plan.files
    made = dict(plan.files)[SEGMENTS[2]]
    assert made.startswith("made anew") and ("was 0 bytes" in made) == (damage == "emptied")
    recovered = recover(journal)
    assert recovered.seq == 4000 and recovered.engine.state_hash() == hashes[4000]
    assert path.stat().st_size == SEGMENT_HEADER
    assert not (journal / SEGMENTS[3]).exists()
    recovered, writer = reopen_journal(journal)
    writer.close()
    assert recover(journal).seq == 4000


def test_journal_cut_will_not_mend_meta_or_the_manifest(journal):
    (journal / "manifest.json").write_text("{}")
    with pytest.raises(JournalError, match=r"manifest\.json"):
        cut_journal(journal, apply=True)


# --- the command line and serve -----------------------------------------------------------------
def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_carbonx_holdings_on_damage_exits_2_with_one_line_and_changes_nothing(journal):
    path = journal / SEGMENTS[1]
    offset = frame_starts(path)[4]
    flip(path, offset + 2)
    before = contents(journal)
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "holdings",
                           str(journal), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("carbonx holdings: error: ")
    assert f"{SEGMENTS[1]}: checksum mismatch in the frame header at byte {offset}" in lines[0]
    assert "journal-cut" in lines[0]
    assert contents(journal) == before


def test_carbonx_holdings_warns_of_a_damaged_snapshot(capsys, journal):
    flip(journal / SNAPSHOTS[-1], 9)
    code, out, err = run_cli(capsys, "holdings", journal, "--json")
    assert code == 0 and json.loads(out)["seq"] == TOTAL
    assert f"warning: {journal / SNAPSHOTS[-1]}" in err


def test_carbonx_journal_cut_dry_run_then_yes(capsys, journal, hashes):
    flip(journal / SEGMENTS[3], frame_starts(journal / SEGMENTS[3])[1] + 60)
    before = contents(journal)
    code, out, err = run_cli(capsys, "journal-cut", journal)
    assert code == 1 and err == "" and contents(journal) == before
    assert "drops at least 750 committed command(s) in 3 frame(s)" in out
    assert "dry run: nothing changed" in out and SEGMENTS[3] in out
    code, out, err = run_cli(capsys, "journal-cut", journal, "--yes")
    assert code == 0 and "cut-000001" in out
    code, out, err = run_cli(capsys, "holdings", journal, "--json")
    assert code == 0 and json.loads(out)["seq"] == 6250
    code, out, _ = run_cli(capsys, "journal-cut", journal)
    assert code == 0 and "nothing to cut" in out


def test_serve_goes_on_after_a_torn_tail_and_refuses_damage(journal, caplog):
    path = journal / SEGMENTS[-1]
    torn = path.read_bytes()[:-50]
    path.write_bytes(torn)
    _, writer, facts = open_engine(MARKET, journal=journal, init=None)
    writer.close()
    assert facts["recovered"] == 6750 and path.read_bytes() == torn
    assert "torn last frame" in caplog.text
    flip(journal / SEGMENTS[1], 100)
    with pytest.raises(JournalDamage, match=SEGMENTS[1]):
        open_engine(MARKET, journal=journal, init=None)


def test_files_are_0600_and_directories_0700(tmp_path, commands):
    directory = tmp_path / "new" / "j"
    journal_commands(directory, commands[:1000], group=GROUP, snapshot_every=500)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert any(n.startswith("snapshot-") for n in names) and "manifest.json" in names
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


class _Payload:
    """A pickle that, if ever loaded, runs code: it records that it ran."""

    def __reduce__(self):
        return (RAN.append, ("ran", ))


RAN: list[str] = []


def test_a_crafted_snapshot_with_good_checksums_runs_no_code_and_changes_nothing(journal, hashes):
    """A snapshot written with valid header and payload checksums but holding a pickle
    (the format before data snapshots) or state that does not decode is passed over:
    recovery reads data with explicit code, and the segments give the right state."""
    import pickle

    import exchange.journal as journal_module

    for crafted in (pickle.dumps(_Payload()),
                    msgspec.msgpack.encode({
                        "format": "carbonx-state",
                        "version": 1,
                        "market": pickle.dumps(_Payload())
                    })):
        target = journal / SNAPSHOTS[-1]
        head = journal_module._SNAP_HEAD.pack(journal_module._SNAP_MAGIC, 6000, len(crafted),
                                              zlib.crc32(crafted))
        target.write_bytes(head + journal_module._U32.pack(zlib.crc32(head)) + crafted)
        recovered = recover(journal)
        assert RAN == []
        assert recovered.snapshot_seq == 4000 and recovered.seq == TOTAL
        assert recovered.engine.state_hash() == hashes[TOTAL]
        assert [w for w in recovered.warnings if SNAPSHOTS[-1] in w and "passed over" in w]


def test_journal_cut_that_cannot_copy_aside_cuts_nothing_and_leaves_no_half_copy(
        journal, monkeypatch):
    import errno

    import exchange.journal as journal_module

    flip(journal / SEGMENTS[1], frame_starts(journal / SEGMENTS[1])[2] + 30)
    before = contents(journal)
    copied: list[str] = []
    real_copy = journal_module._copy

    def copy_until_full(source, target):
        if copied:  # the second file finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        copied.append(source.name)
        real_copy(source, target)

    monkeypatch.setattr(journal_module, "_copy", copy_until_full)
    with pytest.raises(JournalError, match="No space left on device.*nothing was cut"):
        cut_journal(journal, apply=True)
    assert copied and contents(journal) == before
    assert not list(journal.glob("cut-*"))
    monkeypatch.setattr(journal_module, "_copy", real_copy)
    assert cut_journal(journal, apply=True).copied == journal / "cut-000001"


def test_a_journal_cut_back_keeps_its_segments_rules(tmp_path, commands):
    """journal-cut wrote the cut segment's entry anew without its rules stamp: recovery
    then warned that this carbonx's own commands were journaled under older rules."""
    directory = tmp_path / "j"
    writer = create_journal(directory, default_market().text, ledger=True)
    for start in range(0, 300, 10):
        writer.append_many(commands[start:start + 10])
        writer.commit()
    writer.close()
    [segment] = sorted(directory.glob("journal-*.cxj"))
    flip(segment, segment.stat().st_size // 2)
    cut_journal(directory, apply=True)
    entries = json.loads((directory / "manifest.json").read_text())["segments"]
    assert all(entry.get("rules") == RULES for entry in entries)
    _, writer = reopen_journal(directory)
    with writer:
        writer.append_many(commands[300:305])
    assert recover(directory).warnings == []
