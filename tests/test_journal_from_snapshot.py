"""journal-cut --from-snapshot: damage before a whole snapshot keeps the state.

One flipped bit in the first frame made journal-cut drop every acknowledged command
after it (3,400 in the helper's run), although a whole snapshot and the segments after
it held the exact state. With --from-snapshot the history begins at that snapshot: the
segments and snapshots before it are set aside (copied, as every cut), the manifest says
where the history begins, and recovery starts there, with every command kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_journal import journal_commands
from test_journal_damage import flip

from exchange.journal import JournalDamage, JournalError, cut_journal, recover, reopen_journal
from exchange.orderfile import read_order_file
from gateway.tools.genorders import generate_mixed, write_rows

SEGMENT_HEADER = 24
FRAME_HEADER = 20


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> list:
    path = tmp_path_factory.mktemp("orders") / "funded.csv"
    write_rows(path, generate_mixed(3_400, seed=5, accounts=8, fund=True), "csv")
    return read_order_file(path)


def _journal(directory: Path, commands: list) -> str:
    """3,400 commands in frames of 50, a snapshot every 1,000 (segments roll there),
    closed; return the state hash."""
    engine = journal_commands(directory, commands, group=50, snapshot_every=1_000)
    return engine.state_hash()


def _carbonx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_damage_in_the_first_frame_keeps_every_command_from_the_next_snapshot(
        tmp_path, commands):
    directory = tmp_path / "j"
    whole = _journal(directory, commands)
    first = directory / "journal-000000000001.cxj"
    flip(first, SEGMENT_HEADER + FRAME_HEADER + 30, 0x04)
    with pytest.raises(JournalDamage):
        recover(directory)
    # Without the option: back to command 0, every command dropped.
    assert cut_journal(directory).commands >= 3_400
    dry = _carbonx("journal-cut", str(directory))
    assert dry.returncode == 1
    assert "or, with --from-snapshot: keep the state after command 1,000" in dry.stdout
    shown = _carbonx("journal-cut", str(directory), "--from-snapshot")
    assert shown.returncode == 1, shown.stderr
    assert "drops no command" in shown.stdout and "Traceback" not in shown.stderr
    before = sorted(p.name for p in directory.iterdir())
    plan = cut_journal(directory, from_snapshot=True)
    assert (plan.kind, plan.keep, plan.commands) == ("base", 1_000, 0)
    assert sorted(p.name for p in directory.iterdir()) == before  # a dry run changes nothing
    done = _carbonx("journal-cut", str(directory), "--from-snapshot", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not first.exists()
    [aside] = directory.glob("cut-*")
    assert (aside / first.name).exists()  # the damaged records are kept aside
    recovered = recover(directory)
    assert (recovered.seq, recovered.snapshot_seq) == (3_400, 3_000)
    assert recovered.engine.state_hash() == whole
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["base"] == 1_000
    # It goes on: more commands, then a recovery from the base's own snapshot alone.
    recovered, writer = reopen_journal(directory)
    more = commands[:50]  # (sent again: their order ids are rejected as used)
    writer.append_many(more)
    writer.commit()
    writer.close()
    out: list = []
    for command in more:
        recovered.engine.submit(command, out)
    for later in (2_000, 3_000):
        (directory / f"snapshot-{later:012d}.cxs").unlink()
    again = recover(directory)
    assert (again.seq, again.snapshot_seq) == (3_450, 1_000)
    assert again.engine.state_hash() == recovered.engine.state_hash()
    held = _carbonx("holdings", str(directory), "--json")
    assert held.returncode == 0 and json.loads(held.stdout)["seq"] == 3_450


def test_the_snapshot_the_history_begins_at_must_be_there(tmp_path, commands):
    directory = tmp_path / "j"
    _journal(directory, commands)
    flip(directory / "journal-000000000001.cxj", SEGMENT_HEADER + FRAME_HEADER + 30, 0x04)
    cut_journal(directory, from_snapshot=True, apply=True)
    for seq in (1_000, 2_000, 3_000):
        (directory / f"snapshot-{seq:012d}.cxs").unlink()
    with pytest.raises(JournalError, match="history begins at this snapshot"):
        recover(directory)


def test_damage_after_the_last_snapshot_has_no_snapshot_to_keep(tmp_path, commands):
    directory = tmp_path / "j"
    _journal(directory, commands)
    last = directory / "journal-000000003001.cxj"
    flip(last, SEGMENT_HEADER + FRAME_HEADER + 30, 0x04)
    with pytest.raises(JournalError, match="no whole snapshot after the damage"):
        cut_journal(directory, from_snapshot=True)
    answer = _carbonx("journal-cut", str(directory), "--from-snapshot")
    assert answer.returncode == 2 and "no whole snapshot after the damage" in answer.stderr
    assert cut_journal(directory).keep == 3_000  # the plain cut still applies
