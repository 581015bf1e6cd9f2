"""The journal: every input command on disk before it acts, and recovery after a crash.

This is the core's file edge (the book, engine and ledger never touch a file). The
engine is deterministic, so its state is a function of its input commands: the journal
keeps the commands, not the state, and recovery replays them. It never loses an
acknowledged command quietly: what it cannot read is an error that names the file and
the byte, never a shorter journal.

Directory layout (format ``carbonx-journal/3``; the directory is made 0700, every file
0600)::

    meta.json                     format, market TOML text, ledger on or off, checksum
    manifest.json                 the segments that must exist, in order, and checksum
    journal-000000000001.cxj      a segment: a header, then frames; named by its first seq
    snapshot-000000500000.cxs     the engine's whole state after command 500,000

``meta.json`` and ``manifest.json`` carry ``"checksum": "blake2b-128:<hex>"`` over their
canonical JSON (sorted keys, no spaces, the checksum left out), and are rewritten
atomically (temporary file, fsync, rename, directory fsync). The manifest is rewritten
whenever a segment is created, and when the journal is closed. It may say where the
history begins: ``"base": S`` after ``journal-cut --from-snapshot`` set aside the
segments before snapshot ``S`` (recovery then starts from that snapshot, which must be
whole). Its entries are
``{"name", "first"}`` for the segment being written (the last) and ``{"name", "first",
"last", "end", "size"}`` for a sealed one: its last seq, the byte after its last good
frame, and its size (more than ``end`` when a torn tail was left in it, see below). A
journal closed cleanly has its last segment sealed too, so that a later cut of it, even
at a frame boundary, is damage; reopened, it goes on in a new segment. Only the segment
being written when the process died has no sealed size: a cut of it at a frame boundary
before the next start cannot be told from the end of what was written.

Segment header (24 bytes, little-endian): ``8s magic "CXJSEG\\0\\0" | u32 version (3) |
u64 first seq | u32 crc32`` of the 20 bytes before the CRC. Frame: ``u32 length | u64
seq | u32 crc32 of the payload | u32 crc32 of the 16 header bytes before it | payload``:
the payload is a group of commands as one msgpack array (each command a map with its
``action`` tag), ``seq`` the seq of the group's first command. ``seq`` counts input
commands from 1, rejected ones too, so recovery reproduces the rejections. Frames are
contiguous in seq, within a segment and across segments. A frame holds one
``append_many`` call (at most 8,192 commands a frame): encoding a group in one call
costs a third of encoding its commands one by one.

Snapshot (32-byte header): ``8s magic | u64 seq | u64 payload length | u32 crc32 of the
payload | u32 crc32 of the 28 header bytes before it | payload``; the magic names the
engine's layout, the payload is the engine's state as versioned data
(``exchange.state``), read by explicit code: no file in the directory can run code.

Group commit and fsync policy: ``append`` only encodes into memory; ``commit`` writes
the pending group with one ``write`` and, with ``fsync="group"`` (the default), one
``fsync`` before it returns, or with ``wait=False`` starts that fsync in a thread and
returns at once (``sync`` waits for it). A command counts as journaled (and may be
acknowledged) only once its fsync has returned: ``commit`` has returned, or ``sync``.
With ``fsync="none"`` a commit survives the process dying (the data is in the OS) but
not the machine losing power; a snapshot fsyncs the segment either way, before the
snapshot is written and the segment sealed.

Snapshots: ``snapshot(engine)`` commits, writes the engine's state to a temporary file,
fsyncs, renames it into place, then starts a new segment; a single-threaded caller may
have a forked child write it (``background=True``) and go on at once (the writer ends
its own fsync thread before it forks). Segments are all
kept, so a snapshot is only a shortcut.

A new segment: its header is written to ``NAME.tmp`` and fsynced, the manifest listing
it (and sealing the one before) is written, then ``NAME.tmp`` is renamed to ``NAME``. A
crash between leaves a manifest whose last segment exists only as a header-only
``NAME.tmp``: that is read as an empty segment and the rename is finished on reopening.

Recovery (``recover``) reads ``meta.json`` and ``manifest.json`` and checks their
checksums; reads every frame of every segment, those inside a snapshot too, checking
each header and frame checksum, that the seqs run on without gap or overlap, and that a
sealed segment still ends where the manifest says; then takes the latest snapshot that
is whole and lines up with the frames (a frame starts right after it, or the journal
ends at it) and replays the frames after it. Recovery changes nothing on disk. It is an
error (``JournalDamage``, which names the file and, for a frame, the byte offset):

* a frame whose header or payload fails its CRC, whose seq is not the one due, or that
  does not decode; a frame cut short anywhere but at the very end of the last segment;
  the header CRC covers the length, so a flipped length byte is damage wherever it is;
* a cut-short last frame that is followed by a valid frame later in the file (a scan
  forward for a header whose CRC holds, of any seq from 1 to 2**32 past the one due:
  the lost commands' bytes need not be in the file). In format 2, which has no header
  CRC, this scan is what tells a length made longer by a flipped byte from a torn tail,
  in every frame but the file's last;
* a segment listed in the manifest that is missing, empty (no header), has a header
  that fails its CRC or names another first seq than the file name, or does not start
  where the one before ended; a sealed segment whose size or last seq differs from the
  manifest's; a file named like a segment that the manifest does not list;
* a snapshot whose header is whole (CRC) and whose seq is past the end of the journal:
  the snapshot proves those commands were committed, so the segments have lost them.

A damaged snapshot (a header or payload CRC fails, its header seq differs from its name,
it is of another engine layout, it does not line up with the frames) is passed over
with a warning in ``Recovered.warnings``, and recovery goes to the one before it, or to
the segments from the start.

Torn tail: a crash can leave the last group half written. The last frame of the last
segment, cut short (its header or its payload runs past the end of the file) with no
valid frame after it, is a torn tail: it was never committed, so none of it was
acknowledged; recovery ignores it and reports its size (``torn_bytes``). Nothing
truncates it: ``reopen_journal`` starts a new segment after the last good frame and
records in the manifest where the torn segment's good frames end, so later recoveries
know those bytes and skip them (a torn segment that holds no good frame at all, whose
name the new segment needs, is moved whole into ``torn-NNNNNN/``); without a torn tail
it goes on appending to the last segment. Cutting a journal
back past damage is an operator's explicit step, ``cut_journal`` (``carbonx
journal-cut``), which first copies every file it changes or removes into
``cut-NNNNNN/``.

Older formats: ``carbonx-journal/1`` (one command a frame) and ``/2`` (no segment
headers, no manifest, no meta checksum, frame ``u32 length | u32 crc32 of the payload
seeded with the low 32 bits of seq | u64 seq``) are still read, with the same frame
rules; ``reopen_journal`` converts one in place to format 3 (a manifest listing the old
segments sealed at their exact sizes, a checksummed meta.json, new segments in format
3; no old byte is changed), and its old snapshots are still read.

Limits, stated plainly:

* Whole trailing frames of the segment being written, cut away together by someone with
  write access (or lost by a filesystem that does not keep fsynced data), look like
  commands that were never committed: the journal cannot tell that from a crash before
  ``commit`` returned, unless a snapshot records a seq past them (then it is an error).
  So the loss cannot reach below the latest snapshot, and only the last segment is
  exposed: a sealed segment's size and last seq are in the manifest. Recording the
  committed end on every commit would cost a second fsync a group; an acknowledgement
  kept outside (a bot's own record) is the check.
* Checksums find accidents, not forgery: someone who can write the directory can
  recompute every CRC and the manifest's checksum, and so change state; but nothing in
  the directory is ever run: snapshots and frames are data read by explicit code.
  A snapshot is checked whole and lined up by seq, but its engine is not compared with
  the frames; frames inside the snapshot used are CRC-checked but not decoded.
* A power loss during an uncommitted write on a filesystem that can persist a file's
  new size before its data may leave a tail of zeros or stale bytes that fails its CRC
  as a whole frame: that is reported as damage, not as a torn tail, and needs
  ``journal-cut`` (which shows that only the end of the last segment goes). A
  command's own bytes (a string field) that happen to contain a valid frame header
  would likewise turn a torn tail into damage: loud, never quiet.
* A crash inside ``create_journal``, before its first segment is in place, leaves a
  meta.json without a manifest: an error, with nothing journaled yet (remove the
  directory and start again).
* Read a journal while no process writes it, or accept that a group being written may
  show as a torn tail; ``cut_journal`` must run alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, Self, TypeAlias

import msgspec

from exchange.book.fast import FastBook
from exchange.commands import AnyCommand
from exchange.engine import Engine
from exchange.market import parse_market
from exchange.persist import BookFactory, decode_state, encode_state
from exchange.state import RULES, StateError

if TYPE_CHECKING:
    from exchange.events import Event

__all__ = [
    "FORMAT", "READABLE_FORMATS", "CutPlan", "JournalDamage", "JournalError", "JournalWriter",
    "Recovered", "create_journal", "cut_journal", "recover", "remove_journal", "reopen_journal"
]

FORMAT = "carbonx-journal/3"
LEGACY_FORMATS = ("carbonx-journal/2", "carbonx-journal/1")  # 1: one command a frame
READABLE_FORMATS = (FORMAT, *LEGACY_FORMATS)
_VERSION = 3
_SEGMENT_MAGIC = b"CXJSEG\0\0"
_SEGMENT_HEAD = struct.Struct("<8sIQ")  # magic, version, first seq
_SEGMENT_HEADER = 24  # ... and the crc32 of those 20 bytes
_FRAME = struct.Struct("<IQII")  # length, seq, payload crc32, header crc32
_FRAME_HEAD = struct.Struct("<IQI")  # the 16 bytes the header crc32 covers
_FRAME_HEADER = _FRAME.size
_LEGACY_FRAME = struct.Struct("<IIQ")  # formats 1 and 2: length, seeded crc32, seq
_U32 = struct.Struct("<I")
_LOW32 = 0xFFFFFFFF
_SNAP_HEAD = struct.Struct("<8sQQI")  # magic, seq, payload length, payload crc32
_SNAP_HEADER = _SNAP_HEAD.size + 4  # ... and the crc32 of those 28 bytes
_LEGACY_SNAP_HEADER = struct.Struct("<8sQIQ")  # format 2: magic, seq, payload crc32, length
_MAX_FRAME = 1 << 24  # no group comes near 16 MB: larger is a damaged length
_GROUP_MAX = 8192  # commands in one frame at most
FSYNC_POLICIES = ("group", "none")
_FILE_MODE, _DIR_MODE = 0o600, 0o700
_SEGMENT_NAME = re.compile(r"journal-(\d{12})\.cxj")
_SNAPSHOT_NAME = re.compile(r"snapshot-(\d{12})\.cxs")
_INCOMPLETE = "incomplete frame"
_SEQ_REACH = 1 << 32  # how far past the seq due a frame found by scanning may be
# A JSON object as json.loads gives it: meta.json, manifest.json and a manifest's
# segment entries (checked as they are read).
_Json: TypeAlias = dict[str, Any]

# --- the snapshot payload: swapped in one place ------------------------------------------------
# The engine's layout changes between versions: a snapshot of another layout is passed
# over like a damaged one, and recovery replays the segments (which are all kept).
# 3: the order registry keeps filled orders, done (qty 0), which layout 2 took as live.
# 4: the payload is the engine's state as data (exchange.state), never a pickle.
_SNAP_MAGIC = b"CXSNAP4\0"


def _encode_engine(engine: Engine) -> bytes:
    """The snapshot payload: *engine*'s whole state, as ``exchange.state`` data."""
    return encode_state(engine)


def _decode_engine(payload: bytes, book: BookFactory) -> Engine | None:
    """The engine a snapshot payload holds, or ``None`` if it does not decode (another
    state version, or damage the checksums missed): read by explicit code, so no payload
    can run code. The frame checksums already hold, so the invariant pass is skipped."""
    try:
        return decode_state(payload, book=book, check=False)
    except StateError:
        return None


# --- errors -----------------------------------------------------------------------------------
class JournalError(Exception):
    """A journal directory that cannot be used: the message says why and where."""


class JournalDamage(JournalError):
    """Damage in a journal: ``path`` is the file, ``offset`` the byte (None: the whole
    file). ``cut_journal`` can cut the journal back to the last good frame before it."""

    def __init__(self, path: Path, offset: int | None, reason: str, *, kind: str,
                 index: int | None = None, good_end: int = 0, seq: int = 0,
                 legacy: bool = False) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path}: {reason}{where}: the journal is damaged")
        self.path, self.offset, self.reason = path, offset, reason
        self.kind = kind  # frame, segment, size, stray, ahead
        self.index = index  # the segment's place in the manifest
        self.good_end = good_end  # frame damage: the byte after the last good frame
        self.seq = seq  # the last good command before the damage
        self.legacy = legacy  # in a journal of an older format (journal-cut does not cut it)


# --- small file helpers ----------------------------------------------------------------------
def _segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:012d}.cxj"


KEEP_SNAPSHOTS = 3  # the newest snapshots a journal keeps (older ones are removed)


def _snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:012d}.cxs"


def _segment_header(first: int) -> bytes:
    head = _SEGMENT_HEAD.pack(_SEGMENT_MAGIC, _VERSION, first)
    return head + _U32.pack(zlib.crc32(head))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path, *, append: bool = False) -> int:
    """Open a new file at *path* (mode 0600, replacing a stale one) for writing."""
    try:
        os.unlink(path)  # a leftover keeps its old mode through O_CREAT: start afresh
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_APPEND if append else 0)
    return os.open(path, flags | getattr(os, "O_BINARY", 0), _FILE_MODE)


def _lock(directory: Path) -> int:
    """Hold *directory* for one writer: an exclusive ``flock`` on the directory itself (no
    file of its own, which recovery would take for a stray one), released when the
    returned descriptor closes, or the process ends. A second writer is refused."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"{directory} is being written by another carbonx (serve or "
                           "replay): a journal has one writer at a time") from None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace *path* by *data*: a temporary file, fsync, rename, directory fsync."""
    temporary = path.with_name(path.name + ".tmp")
    fd = _create(temporary)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _checksum(body: _Json) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "blake2b-128:" + hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).hexdigest()


def _write_json(path: Path, body: _Json) -> None:
    document = {**body, "checksum": _checksum(body)}
    _write_atomic(path, (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _open_regular(path: Path) -> BinaryIO:
    """The regular file *path*, open for reading; ``OSError`` for anything else named
    like a journal's file: a FIFO's read would wait for a writer for ever. The
    descriptor is closed on every refusal (``open`` of a directory's descriptor raises
    and leaves it open)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file", str(path))
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_file(path: Path, size: int = -1) -> bytes:
    """The bytes of the regular file *path* (at most *size*): see ``_open_regular``."""
    with _open_regular(path) as fh:
        return fh.read(size)


def _read_json(path: Path, *, checked: bool) -> tuple[_Json, bool]:
    """The JSON object in *path* and whether it had a checksum; the checksum is verified
    (and dropped) when it is there, and must be there when *checked*."""
    try:
        document = json.loads(_read_file(path))
    except FileNotFoundError:
        raise JournalError(f"{path}: missing") from None
    except OSError as exc:
        raise JournalError(f"{path} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise JournalError(f"{path}: not valid JSON (cut short or damaged)") from None
    if not isinstance(document, dict):
        raise JournalError(f"{path}: not a JSON object (damaged)")
    had = "checksum" in document
    if checked or had:
        stated = document.pop("checksum", None)
        if stated != _checksum(document):
            raise JournalError(
                f"{path}: its checksum does not match its content (changed or damaged)")
    return document, had


def _aside(directory: Path, prefix: str) -> Path:
    """A new directory ``PREFIX-NNNNNN`` (mode 0700) in *directory*, the first number free."""
    number = 1
    while True:
        target = directory / f"{prefix}-{number:06d}"
        try:
            target.mkdir(mode=_DIR_MODE)
            return target
        except FileExistsError:
            number += 1


def _copy(source: Path, target: Path) -> None:
    fd = _create(target)
    try:
        with _open_regular(source) as fh:
            while chunk := fh.read(1 << 22):
                _write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the writer -------------------------------------------------------------------------------
def _start_segment(directory: Path, manifest: _Json, first: int,
                   before_rename: Callable[[], None] | None = None) -> int:
    """Create segment *first*: its header in ``NAME.tmp`` (fsynced), the manifest listing
    it written, the file renamed into place. Return its descriptor, open for appending."""
    name = _segment_name(first)
    temporary = directory / (name + ".tmp")
    fd = _create(temporary, append=True)
    try:
        _write_all(fd, _segment_header(first))
        os.fsync(fd)
        manifest["segments"].append({"name": name, "first": first, "rules": RULES})
        _write_json(directory / "manifest.json", manifest)
        if before_rename is not None:
            before_rename()
        os.replace(temporary, directory / name)
        _fsync_dir(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_segment(fd: int) -> Any:
    """The segment's file object: unbuffered, each write straight to *fd*."""
    return os.fdopen(fd, "ab", buffering=0)


class JournalWriter:
    """Appends commands to a journal directory in group-committed frames.

    Made by ``create_journal`` and ``reopen_journal``.
    """

    def __init__(self, directory: Path, seq: int, manifest: _Json, fd: int, size: int, *,
                 fsync: str = "group", last_snapshot: int = 0, lock: int | None = None) -> None:
        self._lock = lock
        if fsync not in FSYNC_POLICIES:
            os.close(fd)
            raise ValueError(f"fsync policy {fsync!r}: one of {', '.join(FSYNC_POLICIES)}")
        self.directory = directory
        self.seq = seq  # last command appended
        self.committed = seq  # last command on disk (per the fsync policy)
        self.last_snapshot = last_snapshot
        self._fsync = fsync == "group"
        self._parts: list[bytes] = []
        self._encode = msgspec.msgpack.Encoder().encode
        self._manifest = manifest
        self._file = _open_segment(fd)
        self._size = size  # bytes in the segment being written
        self._child: tuple[int, int] | None = None  # a background snapshot: (pid, seq)
        # An fsync going on beside the caller (commit(wait=False)) and the last seq it
        # makes durable; its thread, started at the first.
        self._syncing: tuple[Future[None], int] | None = None
        self._syncer: ThreadPoolExecutor | None = None
        # Set once a commit failed: what it said. The failed group may be partly on disk
        # (a torn tail, never acknowledged); writing it again would put a second copy
        # after those bytes, which recovery must take for damage. So nothing more is
        # written: every later commit, snapshot and close raises this again.
        self._failed: str | None = None
        # Snapshots that could not be written, one line each, for the caller to report
        # (and clear): a snapshot is only a shortcut, so its failure stops nothing.
        self.warnings: list[str] = []

    def append(self, command: AnyCommand) -> int:
        """Add *command* to the pending group; return its seq. Nothing is written yet."""
        return self.append_many((command, ))

    def append_many(self, commands: Iterable[AnyCommand]) -> int:
        """Add *commands*, in order, to the pending group as one frame (or more, past
        8,192 commands); return the last seq. Nothing is written yet.

        Raise ``JournalError`` (and append nothing) if a command is too large to frame.
        """
        # Profiled (benchmarks/ledger.py, journal, 1,000,000 commands): one encoder call per group
        # took 0.15 s where a call per command took 0.49 s.
        commands = commands if type(commands) is list else list(commands)
        parts: list[bytes] = []
        first = self.seq + 1
        for start in range(0, len(commands), _GROUP_MAX):
            group = commands[start:start + _GROUP_MAX]
            self._frame(group, first, parts)
            first += len(group)
        self._parts += parts
        self.seq = first - 1
        return self.seq

    def _frame(self, group: list[AnyCommand], first: int, parts: list[bytes]) -> None:
        """Encode *group* (commands from seq *first*) into frames appended to *parts*."""
        payload = self._encode(group)
        if len(payload) > _MAX_FRAME:
            if len(group) == 1:
                raise JournalError(f"command {first} is {len(payload):,} bytes encoded, "
                                   f"more than a journal frame holds ({_MAX_FRAME:,})")
            half = len(group) // 2
            self._frame(group[:half], first, parts)
            self._frame(group[half:], first + half, parts)
            return
        head = _FRAME_HEAD.pack(len(payload), first, zlib.crc32(payload))
        parts.append(head + _U32.pack(zlib.crc32(head)))
        parts.append(payload)

    def commit(self, *, wait: bool = True) -> int:
        """Write the pending group (one write, then fsync per the policy); return the
        last seq that is now journaled.

        With *wait* False the fsync goes on in a thread beside the caller, who must call
        ``sync`` before anything the group did is published (``Sequencer`` runs the group
        meanwhile); the return is then the last seq on disk before it. The group is
        written before either returns, so it is in the journal before it acts.
        """
        self.sync()
        if self._parts:
            data = b"".join(self._parts)
            beside: Future[None] | None = None
            try:
                # Unbuffered (see _open_segment): no buffer keeps a failed write's rest,
                # to be written behind the caller's back when the file is closed.
                view = memoryview(data)
                while view:
                    view = view[self._file.write(view):]
                if self._fsync:
                    if not wait:
                        beside = self._fsync_beside()
                    if beside is None:
                        os.fsync(self._file.fileno())
            except OSError as exc:
                self._fail(exc)
            self._size += len(data)
            self._parts = []
            if beside is not None:
                self._syncing = (beside, self.seq)
                return self.committed
        self.committed = self.seq
        return self.committed

    def _fsync_beside(self) -> Future[None] | None:
        """Start the segment's fsync in the writer's thread; ``None`` if no thread is to
        be had (a limit, the interpreter ending): the caller fsyncs in place then."""
        # Measured (benchmarks/ledger.py, journal): the fsyncs took 0.23 s of 1,000,000
        # commands' 5.4 s; beside the engine, in a thread (it lets go of the GIL).
        try:
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(1, "carbonx-fsync")
            return self._syncer.submit(os.fsync, self._file.fileno())
        except RuntimeError:
            return None

    def sync(self) -> int:
        """Wait for the fsync a ``commit(wait=False)`` started, if one is going on;
        return the last seq on disk. Raise ``JournalError`` if it (or an earlier
        commit) failed: nothing more is written then."""
        if self._failed is not None:
            raise JournalError(self._failed)
        if self._syncing is not None:
            syncing, seq = self._syncing
            try:
                syncing.result()  # (kept until it is in: an interrupted wait loses no EIO)
            except OSError as exc:
                self._syncing = None
                self._fail(exc)
            self._syncing = None
            self.committed = seq
        return self.committed

    def _end_syncer(self) -> None:
        """End the fsync thread (its fsync waited for by ``sync``): before a fork, and
        at ``close``."""
        if self._syncer is not None:
            self._syncer.shutdown()
            self._syncer = None

    def _fail(self, exc: OSError) -> NoReturn:
        """A write or fsync of the segment failed: say which commands are not journaled,
        and write nothing more."""
        self._failed = (
            f"cannot write the journal segment {self._segment_path()}: {exc.strerror}; "
            f"commands {self.committed + 1} to {self.seq} are not journaled")
        self._parts = []
        raise JournalError(self._failed) from None

    def _segment_path(self) -> Path:
        """The segment being written."""
        return self.directory / _segment_name(self._manifest["segments"][-1]["first"])

    def snapshot(self, engine: Engine, *, background: bool = False) -> Path:
        """Commit, save *engine*'s state as of the last command, start a new segment.

        With *background* (for a process with no thread but the writer's own: it forks),
        a child process writes the snapshot from a copy-on-write image of the engine while
        this one goes on; ``wait_snapshot`` (also called by the next snapshot and by
        ``close``) waits for it and raises ``JournalError`` if it failed. Until it is
        written, recovery uses the previous snapshot and replays the segments after it,
        which stay.
        """
        # Measured (benchmarks/ledger.py, journal, 1,000,000 commands): encoding the state in
        # the process stalled the commands behind it (0.4-0.5 s in all, when snapshots were
        # pickles); a fork costs 0.1 s in all.
        self.commit()
        if not self._fsync:  # the frames a snapshot covers are on disk before it
            os.fsync(self._file.fileno())
        self.wait_snapshot()
        final = self.directory / _snapshot_name(self.seq)
        if background and hasattr(os, "fork"):  # where there is no fork, in place
            self._end_syncer()  # no thread of the writer's own in the process it forks
            try:
                pid = os.fork()
            except OSError as exc:  # no process for it (memory, process limit): a warning
                self._snapshot_failed(self.seq, f"no process could be started to write it: "
                                      f"{exc.strerror or exc}")
            else:
                if pid == 0:  # the child: write, and leave without running anything else
                    status = 1
                    try:
                        _write_snapshot(engine, self.seq, final)
                        status = 0
                    finally:
                        os._exit(status)
                self._child = (pid, self.seq)
        else:
            try:
                _write_snapshot(engine, self.seq, final)
            except OSError as exc:
                self._snapshot_failed(self.seq, exc.strerror or str(exc))
            else:
                self._prune_snapshots()
        self._roll()
        self.last_snapshot = self.seq
        return final

    def _sealed_manifest(self) -> _Json:
        """A copy of the manifest with the segment being written sealed: its last seq,
        end and size as written so far."""
        manifest = {**self._manifest,
                    "segments": [dict(entry) for entry in self._manifest["segments"]]}
        manifest["segments"][-1].update(last=self.seq, end=self._size, size=self._size)
        return manifest

    def _roll(self) -> None:
        """Seal the segment being written in the manifest and start the next one."""
        segments = self._manifest["segments"]
        if segments[-1]["first"] == self.seq + 1:
            return  # it holds no frame yet: go on in it
        manifest = self._sealed_manifest()
        try:
            fd = _start_segment(self.directory, manifest, self.seq + 1)
        except OSError as exc:
            raise JournalError(
                f"cannot start a journal segment in {self.directory}: {exc.strerror}") from None
        self._file.close()
        self._file = _open_segment(fd)
        self._size = _SEGMENT_HEADER
        self._manifest = manifest

    def wait_snapshot(self) -> None:
        """Wait for a snapshot being written in the background, if there is one."""
        if self._child is None:
            return
        (pid, seq), self._child = self._child, None
        _, status = os.waitpid(pid, 0)
        if status:
            code = os.waitstatus_to_exitcode(status)
            self._snapshot_failed(seq, f"its writer exited with status {code}" if code >= 0
                                  else f"its writer was killed by signal {-code}")
            return
        self._prune_snapshots()

    def _snapshot_failed(self, seq: int, why: str) -> None:
        """Record that the snapshot after command *seq* was not written, and remove what
        it left: recovery goes on from the snapshot before it (the segments stay)."""
        temporary = (self.directory / _snapshot_name(seq)).with_suffix(".tmp")
        try:
            temporary.unlink()
        except OSError:
            pass
        self.warnings.append(f"the snapshot after command {seq} could not be written in "
                             f"{self.directory} ({why}); the journal itself is whole, and "
                             f"recovery replays from the snapshot before it")

    def _prune_snapshots(self) -> None:
        """Remove all but the newest ``KEEP_SNAPSHOTS`` snapshots, once a new one is whole:
        the segments stay, so recovery can still start from any command, the first too."""
        seqs = sorted(int(match.group(1)) for name in os.listdir(self.directory)
                      if (match := _SNAPSHOT_NAME.fullmatch(name)))
        for seq in seqs[:-KEEP_SNAPSHOTS]:
            try:
                (self.directory / _snapshot_name(seq)).unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Commit what is pending, close the segment, seal it in the manifest (so that a
        later cut at a frame boundary is seen as damage: see the module), and wait for a
        background snapshot."""
        try:
            if not self._file.closed:
                try:
                    self.commit()
                    os.fsync(self._file.fileno())
                except BaseException:
                    with contextlib.suppress(OSError):  # the error said is the first
                        self._file.close()
                    raise
                self._file.close()
                self._seal()
        finally:
            self.wait_snapshot()  # a snapshot's writer is waited for, whatever failed
            self._end_syncer()  # its last fsync was waited for by commit
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def _seal(self) -> None:
        """Record the last segment's last seq, end and size in the manifest (it holds
        frames: an empty one stays open, to be written next)."""
        segments = self._manifest["segments"]
        if segments[-1]["first"] > self.seq or "last" in segments[-1]:
            return
        manifest = self._sealed_manifest()
        try:
            _write_json(self.directory / "manifest.json", manifest)
        except OSError as exc:
            raise JournalError(f"cannot seal the journal in {self.directory}: {exc.strerror}"
                               ) from None
        self._manifest = manifest

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_snapshot(engine: Engine, seq: int, final: Path) -> None:
    """Write *engine*'s state as snapshot *final*: a temporary file, fsync, rename."""
    payload = _encode_engine(engine)
    head = _SNAP_HEAD.pack(_SNAP_MAGIC, seq, len(payload), zlib.crc32(payload))
    temporary = final.with_suffix(".tmp")
    with os.fdopen(_create(temporary), "wb") as fh:
        fh.write(head + _U32.pack(zlib.crc32(head)))
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, final)
    _fsync_dir(final.parent)


def create_journal(directory: str | Path, market_text: str, *, ledger: bool,
                   fsync: str = "group") -> JournalWriter:
    """Start a new journal in *directory* (created if needed; it must hold no journal)."""
    path = Path(directory)
    if fsync not in FSYNC_POLICIES:
        raise ValueError(f"fsync policy {fsync!r}: one of {', '.join(FSYNC_POLICIES)}")
    try:
        fresh = not path.exists()
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        lock = _lock(path)
    except OSError as exc:
        raise JournalError(f"cannot write the journal in {path}: {exc.strerror}") from None
    try:
        if ((path / "meta.json").exists() or (path / "manifest.json").exists()
                or any(path.glob("journal-*.cxj"))):
            raise JournalError(
                f"{path} already holds a journal; recover it, or choose an empty directory")
        if not fresh and any(path.iterdir()):
            # Files of its own beside a journal's would be taken for damage (a stray file)
            # at every recovery, and would keep the directory open to others.
            raise JournalError(f"{path} is not empty and holds no journal: choose a new or "
                               "empty directory")
        os.chmod(path, _DIR_MODE)
        _write_json(path / "meta.json", {"format": FORMAT, "ledger": ledger, "market": market_text})
        manifest = {"format": FORMAT, "segments": []}
        fd = _start_segment(path, manifest, 1)
        return JournalWriter(path, 0, manifest, fd, _SEGMENT_HEADER, fsync=fsync, lock=lock)
    except OSError as exc:
        os.close(lock)
        raise JournalError(f"cannot write the journal in {path}: {exc.strerror}") from None
    except BaseException:
        os.close(lock)
        raise


def remove_journal(directory: str | Path) -> None:
    """Remove a journal begun in *directory* (new or empty before it: its caller knows),
    its files and their temporary ones, and the directory if that is then empty; any
    other file stays. For a run that stopped: it has written nothing, not half a journal."""
    path = Path(directory)
    try:
        for entry in path.iterdir():
            name = entry.name.removesuffix(".tmp")
            if entry.is_file() and (name in ("meta.json", "manifest.json")
                                    or _SEGMENT_NAME.fullmatch(name)
                                    or _SNAPSHOT_NAME.fullmatch(name)
                                    or _SNAPSHOT_NAME.fullmatch(name + ".cxs")):
                entry.unlink()
        path.rmdir()
    except OSError:
        pass  # not empty, or gone: what is left is not half a journal to remove


# --- reading ----------------------------------------------------------------------------------
@dataclass
class Recovered:
    """The state rebuilt from a journal directory."""

    engine: Engine
    seq: int  # input commands recovered (snapshot + replayed frames)
    snapshot_seq: int  # the snapshot it started from (0 = none)
    replayed: int  # commands replayed after the snapshot
    torn_bytes: int  # bytes of torn tail ignored at the end of the last segment
    segment: Path | None  # the last segment
    warnings: list[str] = field(default_factory=list)  # snapshots passed over, and why


def _group_size(data: bytes, start: int, end: int, legacy: bool) -> int | None:
    """The number of commands in the payload ``data[start:end]`` (its msgpack array
    header; a format-1 payload is one command, a map), or None if it is no group."""
    if end <= start:
        return None
    tag = data[start]
    if 0x90 <= tag <= 0x9F:
        count = tag & 0x0F
    elif tag == 0xDC and end - start >= 3:
        count = int.from_bytes(data[start + 1:start + 3], "big")
    elif tag == 0xDD and end - start >= 5:
        count = int.from_bytes(data[start + 1:start + 5], "big")
    elif legacy and (0x80 <= tag <= 0x8F or tag in (0xDE, 0xDF)):
        count = 1
    else:
        return None
    return count or None


def _walk(data: bytes, pos: int, limit: int, expected: int, snaps: set[int], starts: set[int],
          legacy: bool) -> tuple[int, int, int, str | None]:
    """Check the frames of ``data[pos:limit]``, the first of command *expected*.

    Return (byte after the last good frame, the seq due next, good frames, what is wrong
    with the frame there or None). Adds to *starts* each seq in *snaps* that a frame
    follows.
    """
    view = memoryview(data)
    frame = _legacy_frame_at if legacy else _frame_at
    frames = 0
    while pos < limit:
        found = frame(data, view, pos, limit, expected)
        if isinstance(found, str):
            return pos, expected, frames, found
        start, end, seq = found
        count = _group_size(data, start, end, legacy)
        if count is None:
            return pos, expected, frames, "a frame that holds no group of commands"
        if seq - 1 in snaps:
            starts.add(seq - 1)
        expected = seq + count
        frames += 1
        pos = end
    return pos, expected, frames, None


def _frame_at(data: bytes, view: memoryview, pos: int, limit: int,
              expected: int) -> tuple[int, int, int] | str:
    """The frame at *pos*: (payload start, end, seq), or what is wrong with it. Its
    header has its own checksum, read before the length is trusted."""
    if pos + _FRAME_HEADER > limit:
        return _INCOMPLETE
    length, seq, crc, header_crc = _FRAME.unpack_from(data, pos)
    if zlib.crc32(view[pos:pos + 16]) != header_crc:
        return "checksum mismatch in the frame header"
    if seq != expected:
        return f"a frame of command {seq} where {expected} is due"
    if not 0 < length <= _MAX_FRAME:
        return f"a frame length of {length}"
    start = pos + _FRAME_HEADER
    end = start + length
    if end > limit:
        return _INCOMPLETE
    if zlib.crc32(view[start:end]) != crc:
        return "checksum mismatch in the frame"
    return start, end, seq


def _legacy_frame_at(data: bytes, view: memoryview, pos: int, limit: int,
                     expected: int) -> tuple[int, int, int] | str:
    """A frame of formats 1 and 2 at *pos*, as ``_frame_at``: one checksum, seeded with
    the seq, over the payload."""
    if pos + 16 > limit:
        return _INCOMPLETE
    length, crc, seq = _LEGACY_FRAME.unpack_from(data, pos)
    end = pos + 16 + length
    if length > _MAX_FRAME or end > limit:
        return _INCOMPLETE
    if zlib.crc32(view[pos + 16:end], seq & _LOW32) != crc:
        return "checksum mismatch in the frame"
    if seq != expected:
        return f"a frame of command {seq} where {expected} is due"
    return pos + 16, end, seq


def _valid_at(data: bytes, p: int, low: int, high: int, legacy: bool) -> bool:
    """Whether a frame header that validates, of a seq in [low, high], starts at *p*."""
    length: int
    crc: int
    seq: int
    header_crc: int
    if legacy:
        if p + 16 > len(data):
            return False
        length, crc, seq = _LEGACY_FRAME.unpack_from(data, p)
        end = p + 16 + length
        return (low <= seq <= high and 0 < length <= _MAX_FRAME and end <= len(data)
                and zlib.crc32(memoryview(data)[p + 16:end], seq & _LOW32) == crc)
    if p + _FRAME_HEADER > len(data):
        return False
    length, seq, _, header_crc = _FRAME.unpack_from(data, p)
    return (low <= seq <= high and 0 < length <= _MAX_FRAME
            and zlib.crc32(memoryview(data)[p:p + 16]) == header_crc)


def _next_valid(data: bytes, bad: int, expected: int, legacy: bool) -> int | None:
    """The first byte after *bad* where a valid frame header starts, or None.

    Any seq from 1 to 2**32 past *expected* counts: a valid frame of any seq after the
    bad one shows that more was written after it (a lost group's bytes need not be in
    the file, so the seq may be far ahead). The CRC decides; the range only lets the
    scan look at the few places where the seq's high bytes are zero.
    """
    size = len(data)
    seq_at = 8 if legacy else 4
    start = bad + 1
    high = expected + _SEQ_REACH
    zeros = (64 - high.bit_length()) // 8  # high bytes of any such seq: all zero
    candidates: Iterable[int]
    if zeros <= 0:
        candidates = range(start, size)
    else:  # only where those zero bytes are: a search in C, then a few checks a zero run
        candidates = _zero_run_candidates(data, start, zeros, seq_at + 8 - zeros)
    for p in candidates:
        if p >= start and _valid_at(data, p, 1, high, legacy):
            return p
    return None


_NONZERO = re.compile(rb"[^\x00]")


def _zero_run_candidates(data: bytes, start: int, zeros: int, shift: int) -> Iterator[int]:
    """Where a frame could start whose seq's *zeros* high bytes are zero: each run of
    zero bytes from *start* gives at most 8 places (the seq's low bytes are not all
    zero, so its high bytes begin within 8 - zeros bytes of the run's start)."""
    needle = b"\0" * zeros
    size = len(data)
    run = data.find(needle, start)
    while run != -1:
        found = _NONZERO.search(data, run)
        end = found.start() if found is not None else size
        for h in range(run, min(run + 8 - zeros, end - zeros + 1)):
            yield h - shift
        run = data.find(needle, end)


class _Segment:
    __slots__ = ("base", "end", "first", "frames", "last", "legacy", "path", "pending", "rules",
                 "sealed", "size", "torn")

    def __init__(self, path: Path, first: int, legacy: bool, sealed: tuple[int, int, int] | None,
                 pending: bool) -> None:
        self.path, self.first, self.legacy = path, first, legacy
        self.sealed = sealed  # (end, size, last) from the manifest, or None
        self.pending = pending  # only NAME.tmp exists: an interrupted start
        self.base = self.end = self.size = self.torn = self.frames = 0
        self.last = first - 1
        self.rules: str | None = None  # the rules its commands were journaled under (None: older)


def _manifest_segments(path: Path, manifest: _Json) -> list[_Segment]:
    file = path / "manifest.json"
    entries = manifest.get("segments")
    if manifest.get("format") != FORMAT or not isinstance(entries, list) or not entries:
        raise JournalError(f"{file}: not a {FORMAT} manifest (damaged)")
    segments: list[_Segment] = []
    for number, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        match = _SEGMENT_NAME.fullmatch(name) if isinstance(name, str) else None
        keys = ("end", "size", "last")
        sealed = all(type(entry.get(key)) is int for key in keys) if match else False
        if (match is None or entry.get("first") != int(match[1])
                or (not sealed and any(key in entry for key in keys))
                or (segments and segments[-1].first >= entry["first"])):
            raise JournalError(f"{file}: segment entry {number + 1} is not valid (damaged)")
        assert isinstance(name, str)  # it matched
        segment = path / name
        pending = (number == len(entries) - 1 and not sealed and not segment.exists()
                   and segment.with_name(name + ".tmp").exists())
        segments.append(
            _Segment(segment, entry["first"], bool(entry.get("legacy")),
                     tuple(entry[key] for key in keys) if sealed else None, pending))
        rules = entry.get("rules")
        segments[-1].rules = rules if isinstance(rules, str) else None
    return segments


class _Journal:
    """A journal directory being read: what it lists, then what its frames hold."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise JournalError(f"{path}: no such directory" if not path.exists() else
                               f"{path} is not a directory")
        self.path = path
        listed = sorted(p.name for p in path.iterdir())  # before the manifest: see strays
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise JournalError(f"{path} holds no journal (no meta.json)")
        meta, checked = _read_json(meta_file, checked=False)
        if meta.get("format") not in READABLE_FORMATS or not isinstance(meta.get("market"), str):
            raise JournalError(f"{meta_file}: not a journal of a format this version reads "
                               f"({', '.join(READABLE_FORMATS)})")
        if meta["format"] == FORMAT and not checked:
            raise JournalError(f"{meta_file}: no checksum (changed or damaged)")
        self.meta = meta
        self.legacy = meta["format"] != FORMAT
        self.manifest: _Json | None = None
        self.converted = 0  # format 3 after reopening an older journal: its seq then
        # The snapshot the history begins at (journal-cut --from-snapshot): its commands'
        # records were set aside, their state is that snapshot's. 0: from command 1.
        self.base = 0
        if self.legacy:  # no manifest: the segments are the files there are
            self.segments = [
                _Segment(path / name, int(match[1]), True, None, False) for name in listed
                if (match := _SEGMENT_NAME.fullmatch(name))
            ]
            self.strays: list[str] = []
        else:
            if not (path / "manifest.json").exists():
                raise JournalError(
                    f"{path / 'manifest.json'}: missing (it lists the segments that must exist)")
            self.manifest = _read_json(path / "manifest.json", checked=True)[0]
            self.segments = _manifest_segments(path, self.manifest)
            self.converted = self.manifest.get("converted_at", 0)
            if type(self.converted) is not int:
                raise JournalError(f"{path / 'manifest.json'}: converted_at is not a seq (damaged)")
            self.base = self.manifest.get("base", 0)
            if type(self.base) is not int or self.base < 0:
                raise JournalError(f"{path / 'manifest.json'}: base is not a seq (damaged)")
            names = {segment.path.name for segment in self.segments}
            self.strays = [
                name for name in listed
                if name.startswith("journal-") and name.endswith(".cxj") and name not in names
            ]
        self.snapshots: list[tuple[int, Path]] = []
        self.warnings: list[str] = []
        # [rules, first, last]: runs of commands replayed under other rules than journaled
        self._replayed_under: list[list[Any]] = []
        for name in listed:
            if name.startswith("snapshot-") and name.endswith(".cxs"):
                if (match := _SNAPSHOT_NAME.fullmatch(name)) is None:
                    self.warnings.append(f"{path / name}: not a snapshot name; passed over")
                else:
                    self.snapshots.append((int(match[1]), path / name))
        self.end = 0  # the last command the frames hold
        self.torn = 0  # torn tail at the end of the last segment
        self.starts: set[int] = set()  # snapshot seqs a frame follows (or the end is)

    def damage(self, index: int, offset: int | None, reason: str, kind: str, *, good_end: int = 0,
               seq: int = 0) -> JournalDamage:
        return JournalDamage(self.segments[index].path, offset, reason, kind=kind, index=index,
                             good_end=good_end, seq=seq, legacy=self.legacy)

    def scan(self) -> None:
        """Check every frame of every segment; raise ``JournalDamage`` at the first bad."""
        snaps = {seq for seq, _ in self.snapshots}
        expected = self.base + 1
        count = len(self.segments)
        for index, segment in enumerate(self.segments):
            is_last = index == count - 1
            if segment.pending:
                self._scan_pending(index, segment, expected)
                continue
            try:
                data = _read_file(segment.path)
            except FileNotFoundError:
                raise self.damage(index, None, "missing (manifest.json lists it)", "segment",
                                  seq=expected - 1) from None
            except OSError as exc:
                raise JournalError(f"{segment.path} cannot be read: {exc.strerror}") from None
            size = len(data)
            base = 0 if segment.legacy else self._check_header(index, segment, data, expected)
            if segment.first != expected:
                raise self.damage(
                    index, None, f"starts at command {segment.first}, but "
                    f"the segments before it end at command {expected - 1}", "segment",
                    seq=expected - 1)
            limit = size if segment.sealed is None else min(size, segment.sealed[0])
            pos, due, frames, bad = _walk(data, base, limit, expected, snaps, self.starts,
                                          segment.legacy)
            torn = 0
            if bad is not None:
                later = None
                if bad == _INCOMPLETE and segment.sealed is None and is_last:
                    later = _next_valid(data, pos, due, segment.legacy)
                    if later is None:
                        torn = size - pos
                if not torn:
                    if later is not None:
                        bad = f"an incomplete frame with a valid frame after it (at byte {later})"
                    elif bad == _INCOMPLETE and segment.sealed is not None:
                        bad = (f"the file is {size} bytes, manifest.json records frames "
                               f"up to byte {segment.sealed[0]}: a frame cut short"
                               if size < segment.sealed[0] else
                               "a frame running past the end manifest.json records")
                    elif bad == _INCOMPLETE:
                        bad = "a frame cut short in a segment before the last"
                    raise self.damage(index, pos, bad, "frame", good_end=pos, seq=due - 1)
            if segment.sealed is not None:
                end, recorded, last = segment.sealed
                if pos < end:
                    raise self.damage(
                        index, pos, f"the file is {size} bytes, manifest.json "
                        f"records frames up to byte {end}: they end", "frame", good_end=pos,
                        seq=due - 1)
                if due - 1 != last:
                    raise self.damage(
                        index, pos, f"its frames end at command {due - 1}, "
                        f"manifest.json records {last}: they end", "frame", good_end=pos,
                        seq=due - 1)
                if size != recorded:
                    raise self.damage(
                        index, min(size, recorded),
                        f"the file is {size} bytes, manifest.json records {recorded}: they differ",
                        "size", good_end=end, seq=due - 1)
            segment.base, segment.end, segment.size = base, pos, size
            segment.last, segment.frames, segment.torn = due - 1, frames, torn
            expected = due
        self.end = expected - 1
        self.torn = self.segments[-1].torn if self.segments else 0
        self.starts.add(self.end)
        if self.strays:
            stray = self.path / self.strays[0]
            raise JournalDamage(stray, None,
                                "named like a segment, but manifest.json does not list it",
                                kind="stray", legacy=self.legacy)

    def _check_header(self, index: int, segment: _Segment, data: bytes, expected: int) -> int:
        if not data:
            raise self.damage(index, 0, "empty: no segment header", "segment", seq=expected - 1)
        if len(data) < _SEGMENT_HEADER:
            raise self.damage(index, 0, "a segment header cut short", "segment", seq=expected - 1)
        magic, version, first = _SEGMENT_HEAD.unpack_from(data)
        if (zlib.crc32(memoryview(data)[:_SEGMENT_HEAD.size]) != _U32.unpack_from(
                data, _SEGMENT_HEAD.size)[0] or magic != _SEGMENT_MAGIC):
            raise self.damage(index, 0, "checksum mismatch in the segment header", "segment",
                              seq=expected - 1)
        if version != _VERSION:
            raise self.damage(index, 0, f"segment format version {version}", "segment",
                              seq=expected - 1)
        if first != segment.first:
            raise self.damage(
                index, 0, f"its header says it starts at command {first}, "
                f"its name says {segment.first}: the header", "segment", seq=expected - 1)
        return _SEGMENT_HEADER

    def _scan_pending(self, index: int, segment: _Segment, expected: int) -> None:
        temporary = segment.path.with_name(segment.path.name + ".tmp")
        try:
            data = _read_file(temporary)
        except OSError:
            data = b""
        if data != _segment_header(segment.first) or segment.first != expected:
            raise self.damage(
                index, None, "missing (manifest.json lists it; its unfinished start is not whole)",
                "segment", seq=expected - 1)
        segment.base = segment.end = segment.size = _SEGMENT_HEADER
        segment.last = expected - 1

    def pick_snapshot(self, book: BookFactory) -> tuple[int, Engine | None]:
        """The latest snapshot that is whole and lines up with the frames: (seq, engine),
        or (0, None). Raise ``JournalDamage`` if a whole one is past the journal's end."""
        whole = []
        for seq, path in reversed(self.snapshots):
            header = self._snapshot_header(seq, path)
            if header is None:
                continue
            if seq > self.end:
                last = self.segments[-1].path if self.segments else self.path
                raise JournalDamage(
                    path, None, f"a snapshot after command {seq}, but the "
                    f"segments end at command {self.end} (in {last.name}): "
                    f"committed commands are missing from them", kind="ahead", seq=self.end,
                    legacy=self.legacy)
            whole.append((seq, path, header))
        for seq, path, (magic, offset, length, crc) in whole:
            if magic != _SNAP_MAGIC:
                self.warnings.append(f"{path}: written by an engine of another layout; passed over")
                continue
            if seq not in self.starts:
                self.warnings.append(f"{path}: no frame starts at command {seq + 1}; passed over")
                continue
            try:
                data = _read_file(path)
            except OSError as exc:
                self.warnings.append(f"{path}: cannot be read ({exc.strerror}); passed over")
                continue
            payload = data[offset:]
            if len(payload) != length or zlib.crc32(payload) != crc:
                self.warnings.append(f"{path}: checksum mismatch in the snapshot; passed over")
                continue
            engine = _decode_engine(payload, book)
            if engine is None:
                self.warnings.append(f"{path}: holds no engine it can load; passed over")
                continue
            return seq, engine
        if self.base:
            # Nothing before it to replay: without it there is no state to start from.
            raise JournalError(
                f"{self.path / _snapshot_name(self.base)}: the journal's history begins at "
                f"this snapshot (manifest.json, after journal-cut --from-snapshot), and it "
                f"is missing or cannot be read: {'; '.join(self.warnings) or 'no such file'}")
        return 0, None

    def _snapshot_header(self, seq: int, path: Path) -> tuple[bytes, int, int, int] | None:
        """(magic, payload offset, length, crc) of a snapshot whose header is whole and
        names its own seq, else None (with a warning)."""
        try:
            head = _read_file(path, _SNAP_HEADER)
        except OSError as exc:
            self.warnings.append(f"{path}: cannot be read ({exc.strerror}); passed over")
            return None
        if (len(head) == _SNAP_HEADER and zlib.crc32(head[:_SNAP_HEAD.size]) == _U32.unpack_from(
                head, _SNAP_HEAD.size)[0]):
            magic, stated, length, crc = _SNAP_HEAD.unpack_from(head)
            if stated == seq:
                return magic, _SNAP_HEADER, length, crc
            self.warnings.append(
                f"{path}: its header says command {stated}, its name {seq}; passed over")
            return None
        if (self.legacy or seq <= self.converted) and len(head) >= _LEGACY_SNAP_HEADER.size:
            # Written before format 3: the header has no CRC of its own, its seq must
            # match the name, and the payload CRC decides.
            magic, stated, crc, length = _LEGACY_SNAP_HEADER.unpack_from(head)
            if stated == seq:
                return magic, _LEGACY_SNAP_HEADER.size, length, crc
        self.warnings.append(f"{path}: checksum mismatch in the snapshot header; passed over")
        return None

    def _other_rules(self, rules: str | None, first: int, last: int) -> None:
        """Commands *first* to *last*, journaled under *rules*, were replayed under these."""
        runs = self._replayed_under
        if runs and runs[-1][0] == rules and runs[-1][2] == first - 1:
            runs[-1][2] = last
        else:
            runs.append([rules, first, last])

    def rules_warnings(self) -> list[str]:
        """One line per run of commands replayed under rules other than they were
        journaled under."""
        return [f"commands {first} to {last} were journaled under the rules of "
                f"{rules or 'a carbonx before 2026-12-05'} and are replayed under those of "
                f"{RULES}: where the rules changed since, what they do may differ from what "
                f"was acknowledged then" for rules, first, last in self._replayed_under]

    def replay(self, engine: Engine, start: int) -> int:
        """Submit the commands after *start* to *engine*; return how many."""
        decode = msgspec.msgpack.Decoder(list[AnyCommand] | AnyCommand).decode
        submit = engine.submit
        out: list[Event] = []
        replayed = 0
        for index, segment in enumerate(self.segments):
            if segment.last <= start or segment.pending:
                continue  # wholly inside the snapshot (its frames were checked)
            data = _read_file(segment.path)
            view = memoryview(data)
            legacy = segment.legacy
            header = 16 if legacy else _FRAME_HEADER
            pos, expected = segment.base, segment.first
            while pos < segment.end:
                if legacy:
                    length, _, seq = _LEGACY_FRAME.unpack_from(data, pos)
                else:
                    length, seq, _, _ = _FRAME.unpack_from(data, pos)
                begin = pos + header
                end = begin + length
                if seq != expected or end > segment.end:
                    raise JournalError(f"{segment.path} changed while it was being read")
                if seq <= start:  # inside the snapshot: a frame starts at start + 1
                    expected = seq + (_group_size(data, begin, end, legacy) or 1)
                    pos = end
                    continue
                try:
                    group = decode(view[begin:end])
                except msgspec.DecodeError as exc:
                    raise self.damage(index, pos,
                                      f"the frame of command {seq} cannot be decoded ({exc})",
                                      "frame", good_end=pos, seq=seq - 1) from None
                if type(group) is not list:
                    # one command (format 1); mypy does not narrow on type() is not
                    group = [group]  # type: ignore[list-item]
                for command in group:
                    submit(command, out)
                    out.clear()
                if segment.rules != RULES:
                    self._other_rules(segment.rules, seq, seq + len(group) - 1)
                replayed += len(group)
                expected = seq + len(group)
                pos = end
        return replayed


def _new_engine(journal: _Journal, book: BookFactory) -> Engine:
    meta = journal.meta
    try:
        market = parse_market(meta["market"], "journal market")
    except Exception as exc:
        raise JournalError(f"{journal.path / 'meta.json'}: market cannot be read: {exc}") from None
    return Engine(market, book=book, ledger=bool(meta.get("ledger")))


def _recover(journal: _Journal, book: BookFactory) -> Recovered:
    journal.scan()
    start, engine = journal.pick_snapshot(book)
    if engine is None:
        engine = _new_engine(journal, book)
    replayed = journal.replay(engine, start)
    return Recovered(engine, journal.end, start, replayed, journal.torn,
                     journal.segments[-1].path if journal.segments else None,
                     journal.warnings + journal.rules_warnings())


def recover(directory: str | Path, *, book: BookFactory = FastBook) -> Recovered:
    """Rebuild the engine from *directory*: the latest good snapshot, then the frames
    after it. Changes nothing on disk; raises ``JournalError`` (``JournalDamage`` for
    damage, naming the file and byte) rather than recover less than was committed."""
    try:
        return _recover(_Journal(Path(directory)), book)
    except OSError as exc:
        raise _unreadable(directory, exc) from None


def _unreadable(directory: str | Path, exc: OSError) -> JournalError:
    return JournalError(f"{exc.filename or directory}: {exc.strerror or exc}")


# --- going on after recovery --------------------------------------------------------------------
def reopen_journal(directory: str | Path, *, fsync: str = "group",
                   book: BookFactory = FastBook) -> tuple[Recovered, JournalWriter]:
    """Recover *directory* and return a writer that goes on after the last command.

    Nothing is truncated: after a torn tail the writer starts a new segment (the manifest
    records where the torn one's good frames end); a journal of an older format is
    converted to format 3 first (its segments stay as they are).
    """
    path = Path(directory)
    if fsync not in FSYNC_POLICIES:
        raise ValueError(f"fsync policy {fsync!r}: one of {', '.join(FSYNC_POLICIES)}")
    try:
        lock = _lock(path)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        journal = _Journal(path)
        recovered = _recover(journal, book)
    except OSError as exc:
        os.close(lock)
        raise _unreadable(path, exc) from None
    except BaseException:
        os.close(lock)
        raise
    try:
        if journal.legacy:
            manifest, fd, size = _convert(journal, recovered.seq)
        else:
            manifest, fd, size = _go_on(journal, recovered.seq)
    except OSError as exc:
        os.close(lock)
        raise JournalError(f"cannot write the journal in {path}: {exc.strerror}") from None
    except BaseException:  # (any other failure gives the directory back too)
        os.close(lock)
        raise
    writer = JournalWriter(path, recovered.seq, manifest, fd, size, fsync=fsync,
                           last_snapshot=recovered.snapshot_seq, lock=lock)
    return recovered, writer


def _go_on(journal: _Journal, seq: int) -> tuple[_Json, int, int]:
    """The manifest, an open descriptor and its size, to append after command *seq*."""
    path, manifest = journal.path, journal.manifest
    assert manifest is not None  # a format-3 journal has one (_Journal)
    last = journal.segments[-1]
    temporary = last.path.with_name(last.path.name + ".tmp")
    if last.pending:  # finish the interrupted start
        os.replace(temporary, last.path)
        _fsync_dir(path)
    if last.sealed is None and not last.torn:  # go on in it
        fd = os.open(last.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        return manifest, fd, os.fstat(fd).st_size
    if last.first == seq + 1:
        # Torn, and not one good frame: the new segment needs its name. Its header in
        # NAME.tmp first, then the torn file aside, then the rename: a crash between
        # leaves the manifest's last segment as an unfinished start, read as empty.
        fd = _create(temporary, append=True)
        try:
            _write_all(fd, _segment_header(last.first))
            os.fsync(fd)
            aside = _aside(path, "torn")
            os.replace(last.path, aside / last.path.name)
            _fsync_dir(aside)
            os.replace(temporary, last.path)
            _fsync_dir(path)
        except BaseException:
            os.close(fd)
            raise
        return manifest, fd, _SEGMENT_HEADER
    manifest = {**manifest, "segments": [dict(entry) for entry in manifest["segments"]]}
    if last.sealed is None:
        manifest["segments"][-1].update(last=seq, end=last.end, size=last.size)
    return manifest, _start_segment(path, manifest, seq + 1), _SEGMENT_HEADER


def _convert(journal: _Journal, seq: int) -> tuple[_Json, int, int]:
    """Make a format-1 or -2 journal a format-3 one: its segments listed, sealed at their
    sizes, in a manifest; a new segment after command *seq*; then meta.json."""
    path = journal.path
    segments = list(journal.segments)
    if segments and segments[-1].first == seq + 1:  # no good frame: the name is needed
        idle = segments.pop()
        if idle.size:
            aside = _aside(path, "torn")
            os.replace(idle.path, aside / idle.path.name)
            _fsync_dir(aside)
        else:
            idle.path.unlink()
        _fsync_dir(path)
    entries = [{
        "name": s.path.name,
        "first": s.first,
        "legacy": True,
        "last": s.last,
        "end": s.end,
        "size": s.size
    } for s in segments]
    manifest = {
        "format": FORMAT,
        "segments": entries,
        "converted_at": seq,
        "converted_from": journal.meta["format"]
    }
    meta = {
        "format": FORMAT,
        "ledger": bool(journal.meta.get("ledger")),
        "market": journal.meta["market"]
    }
    # Older versions wrote files anyone could read: a converted journal is private too.
    os.chmod(path, _DIR_MODE)
    for entry in path.iterdir():
        if entry.is_file():
            os.chmod(entry, _FILE_MODE)
    fd = _start_segment(path, manifest, seq + 1,
                        before_rename=lambda: _write_json(path / "meta.json", meta))
    return manifest, fd, _SEGMENT_HEADER


# --- cutting back past damage ---------------------------------------------------------------------
@dataclass
class CutPlan:
    """What ``cut_journal`` drops (or dropped) to cut a journal back past its first damage."""

    directory: Path
    problem: str | None  # the first damage; None: nothing to cut
    kind: str | None  # frame, segment, size, stray, ahead (JournalDamage.kind)
    keep: int  # frame and segment damage: commands 1..keep stay
    commands: int  # committed commands dropped, at least (keep+1 ..)
    frames: int  # frames dropped, at least
    bytes: int  # bytes dropped from the journal's files
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, what happens)
    copied: Path | None = None  # where the files went first, once cut


def cut_journal(directory: str | Path, *, apply: bool = False, from_snapshot: bool = False,
                book: BookFactory = FastBook) -> CutPlan:
    """Recover *directory* up to its first damage and say what cutting it back there
    drops; with *apply*, copy every file that changes or goes into ``cut-NNNNNN/``,
    then cut. Raise ``JournalError`` for what cutting cannot mend (meta.json, the
    manifest, an older format). One damage a run: run it again until nothing is cut.

    With *from_snapshot*, for damage before a whole snapshot after which every segment
    reads well: keep that snapshot's state and every command after it, and set aside
    the segments and snapshots before it instead (the history begins at the snapshot:
    ``base`` in the manifest). The commands up to it are kept as its state, not as
    records; none is dropped. ``JournalError`` when no snapshot allows it."""
    path = Path(directory)
    try:
        journal = _Journal(path)
        if journal.legacy:
            raise JournalError(f"{path} is a {journal.meta['format']} journal: journal-cut "
                               f"works on {FORMAT} journals (carbonx serve converts one "
                               f"that recovers)")
        try:
            recovered = _recover(journal, book)
        except JournalDamage as damage:
            if from_snapshot:
                plan, actions, manifest = _plan_from_snapshot(journal, damage, book)
            else:
                plan, actions, manifest = _plan(journal, damage)
        else:
            return CutPlan(path, None, None, recovered.seq, 0, 0, 0)
        if apply:
            lock = _lock(path)  # never while a serve or a replay writes it
            try:
                plan.copied = _apply(path, actions, manifest)
            finally:
                os.close(lock)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return plan


def _salvage(data: bytes, start: int, expected: int, legacy: bool) -> tuple[int, int, bool]:
    """Frames whose header is whole in ``data[start:]``, found by scanning past bad
    bytes: (frames, the highest seq they hold, whether one starts at *start*)."""
    frames, top, pos, at_start = 0, expected - 1, start, False
    while pos < len(data):
        p = _next_valid(data, pos - 1, expected, legacy)
        if p is None:
            break
        at_start = at_start or p == start
        if legacy:
            length, crc, seq = _LEGACY_FRAME.unpack_from(data, p)
            begin = p + 16
        else:
            length, seq, crc, _ = _FRAME.unpack_from(data, p)
            begin = p + _FRAME_HEADER
        end = begin + length
        count = (_group_size(data, begin, end, legacy) or 1) if end <= len(data) else 1
        frames += 1
        top = max(top, seq + count - 1)
        whole = end <= len(data) and (zlib.crc32(
            memoryview(data)[begin:end], seq & _LOW32 if legacy else 0) == crc)
        expected, pos = seq + count, end if whole else p + 1
    return frames, top, at_start


def _plan(journal: _Journal,
          damage: JournalDamage) -> tuple[CutPlan, list[tuple[str, Path, int]], _Json | None]:
    """The plan, the actions ((truncate | remove | create, file, size or first seq)) and
    the new manifest (None: unchanged) that cut *journal* back past *damage*."""
    path, kind = journal.path, damage.kind
    plan = CutPlan(path, str(damage), kind, damage.seq, 0, 0, 0)
    actions: list[tuple[str, Path, int]] = []
    manifest = None
    top = damage.seq  # the highest command known to have been committed

    def read(file: Path) -> bytes:
        try:
            return _read_file(file)
        except FileNotFoundError:
            return b""

    def remove(file: Path, why: str = "") -> None:
        if file.exists() and not any(a == ("remove", file)
                                     for a in (action[:2] for action in actions)):
            size = file.stat().st_size
            actions.append(("remove", file, 0))
            plan.bytes += size
            plan.files.append((file.name, f"removed ({size:,} bytes){why}"))

    if kind in ("frame", "segment"):
        index = damage.index
        # such damage names its segment; cut_journal reads format 3 only, with a manifest
        assert index is not None and journal.manifest is not None
        segment = journal.segments[index]
        entries = [dict(entry) for entry in journal.manifest["segments"][:index]]
        data = read(segment.path)
        if kind == "frame":
            assert damage.offset is not None  # frame damage is at a byte
            plan.frames, top, whole_header = _salvage(data, damage.offset, damage.seq + 1,
                                                      segment.legacy)
            plan.frames += not whole_header  # the damaged one, if not counted
            actions.append(("truncate", segment.path, damage.good_end))
            plan.bytes += len(data) - damage.good_end
            plan.files.append(
                (segment.path.name, f"cut from {len(data):,} to {damage.good_end:,} bytes"))
            if segment.legacy:  # no writer appends to it: sealed, and a new segment after
                entries.append({
                    "name": segment.path.name,
                    "first": segment.first,
                    "legacy": True,
                    "last": damage.seq,
                    "end": damage.good_end,
                    "size": damage.good_end
                })
                fresh = path / _segment_name(damage.seq + 1)
                remove(fresh)
                actions.append(("create", fresh, damage.seq + 1))
                plan.files.append((fresh.name, "made anew: a segment header, no frame"))
                entries.append({"name": fresh.name, "first": damage.seq + 1, "rules": RULES})
            else:
                entries.append({"name": segment.path.name, "first": segment.first,
                                **({"rules": segment.rules} if segment.rules else {})})
        else:
            plan.frames, top, _ = _salvage(data, 0, min(segment.first, damage.seq + 1),
                                           segment.legacy)
            fresh = path / _segment_name(damage.seq + 1)
            made = "made anew: a segment header, no frame"
            if fresh == segment.path and fresh.exists():  # the same file: one line for it
                size = fresh.stat().st_size
                actions.append(("remove", fresh, 0))
                plan.bytes += size
                made = f"made anew (was {size:,} bytes): a segment header, no frame"
            remove(segment.path)
            remove(fresh)
            actions.append(("create", fresh, damage.seq + 1))
            plan.files.append((fresh.name, made))
            entries.append({"name": fresh.name, "first": damage.seq + 1, "rules": RULES})
        if segment.sealed is not None:  # its last command, as manifest.json records it
            top = max(top, segment.sealed[2])
        for later in journal.segments[index + 1:]:
            if later.sealed is not None:
                top = max(top, later.sealed[2])
            frames, high, _ = _salvage(read(later.path), 0, later.first, later.legacy)
            plan.frames, top = plan.frames + frames, max(top, high)
            remove(later.path)
        manifest = {**journal.manifest, "segments": entries}
    elif kind == "size":
        assert damage.index is not None and journal.manifest is not None  # as above
        entries = [dict(entry) for entry in journal.manifest["segments"]]
        entries[damage.index]["size"] = damage.good_end
        size = damage.path.stat().st_size
        actions.append(("truncate", damage.path, damage.good_end))
        plan.bytes += max(0, size - damage.good_end)
        what = f"cut from {size:,} to {damage.good_end:,} bytes, its last good frame's end"
        plan.files.append((damage.path.name, what))
        manifest = {**journal.manifest, "segments": entries}
    elif kind == "stray":
        remove(damage.path, ": not one of the journal's segments")
    if kind in ("frame", "segment", "ahead"):
        for seq, snapshot in journal.snapshots:
            if seq > damage.seq:
                if kind != "ahead":
                    top = max(top, seq)
                remove(snapshot, f": a snapshot after command {damage.seq:,}")
    plan.commands = top - damage.seq
    return plan, actions, manifest


def _plan_from_snapshot(journal: _Journal, damage: JournalDamage, book: BookFactory
                        ) -> tuple[CutPlan, list[tuple[str, Path, int]], _Json | None]:
    """The plan that keeps the earliest whole snapshot past *damage* at which a segment
    starts and from which the journal recovers with no damage, and sets aside every
    segment and snapshot before it (see ``cut_journal``)."""
    manifest = journal.manifest
    assert manifest is not None  # cut_journal reads format 3 only
    path = journal.path
    if damage.kind not in ("frame", "segment", "size"):
        raise JournalError(f"{damage}: --from-snapshot mends damage in a segment; this is "
                           f"not (journal-cut without it says what it drops)")
    for index, segment in enumerate(journal.segments):
        base = segment.first - 1
        if base <= damage.seq or not any(seq == base for seq, _ in journal.snapshots):
            continue
        trial = _Journal(path)
        trial.base = base
        trial.segments = trial.segments[index:]
        # Recovered from that snapshot alone: it is whole, and all after it reads well.
        trial.snapshots = [(seq, file) for seq, file in trial.snapshots if seq == base]
        try:
            _recover(trial, book)
        except JournalError:  # damage after it too, or the snapshot is not whole
            continue
        plan = CutPlan(path, str(damage), "base", base, 0, 0, 0)
        actions: list[tuple[str, Path, int]] = []
        for earlier in journal.segments[:index]:
            if earlier.path.exists():
                size = earlier.path.stat().st_size
                actions.append(("remove", earlier.path, 0))
                plan.bytes += size
                plan.frames += earlier.frames
                plan.files.append((earlier.path.name, f"set aside ({size:,} bytes): records "
                                   f"of commands {earlier.first:,} on"))
        for seq, file in journal.snapshots:
            if seq < base:
                size = file.stat().st_size
                actions.append(("remove", file, 0))
                plan.bytes += size
                plan.files.append((file.name, f"set aside ({size:,} bytes): a state before "
                                   f"command {base:,}"))
        plan.files.append((_snapshot_name(base), f"kept: the state after command {base:,}, "
                           f"where the history now begins"))
        kept = [dict(entry) for entry in manifest["segments"][index:]]
        return plan, actions, {**manifest, "segments": kept, "base": base}
    raise JournalError(
        f"{damage}: no whole snapshot after the damage from which the rest of the journal "
        f"reads well: journal-cut without --from-snapshot says what cutting back drops")


def _apply(path: Path, actions: list[tuple[str, Path, int]], manifest: _Json | None) -> Path:
    """Copy the files *actions* touch (and the manifest) aside, then cut."""
    copies = _aside(path, "cut")
    touched = [file for _, file, _ in actions if file.exists()]
    if manifest is not None:
        touched.append(path / "manifest.json")
    try:
        for file in dict.fromkeys(touched):
            _copy(file, copies / file.name)
        _fsync_dir(copies)
        _fsync_dir(path)
    except OSError as exc:  # nothing is cut yet: no half copy is left to pass for a whole one
        shutil.rmtree(copies, ignore_errors=True)
        raise JournalError(f"could not copy {exc.filename or 'a file'} aside before cutting "
                           f"({exc.strerror or exc}): nothing was cut") from None
    if manifest is not None:  # first: a cut stopped half way is found and cut again
        _write_json(path / "manifest.json", manifest)
    for action, file, size in actions:
        if action == "truncate":
            with open(file, "r+b") as fh:
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())
        elif action == "remove":
            file.unlink()
        elif action == "create":
            temporary = file.with_name(file.name + ".tmp")
            fd = _create(temporary)
            try:
                _write_all(fd, _segment_header(size))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, file)
    _fsync_dir(path)
    return copies
