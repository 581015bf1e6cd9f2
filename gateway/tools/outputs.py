"""Checks on a command's output files, shared by the offline tools: an output that
cannot be written, or that would overwrite an input or another output, is refused
before anything is written."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.errors import UsageError

__all__ = ["check_outputs"]


def check_outputs(inputs: Sequence[tuple[str, str | Path]], outputs: Mapping[str, str]) -> None:
    """Refuse, before anything is written, outputs (``{option: path}``) that could not
    be written (no such directory, not writable) and outputs that would overwrite one of
    the *inputs* (``(what, path)``: "the order file") or each other (standard output,
    pipes and devices may be named more than once)."""

    def same(a: Path, b: Path) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:  # one does not exist (yet): the same path, or not
            return a.resolve() == b.resolve()

    seen: list[tuple[str, Path]] = [(what, Path(path)) for what, path in inputs]
    for option, name in outputs.items():
        path = Path(name)
        flag = f"--{option.replace('_', '-')}"
        try:
            stream = not stat.S_ISREG(path.stat().st_mode)  # a device, a pipe, a directory
        except OSError:
            stream = False  # to be made
        if not stream:
            for other, other_path in seen:
                if same(path, other_path):
                    raise UsageError(f"{flag} {name} would overwrite {other}")
            seen.append((flag, path))
        folder = path.parent
        if path.is_dir():
            raise UsageError(f"cannot write {name}: is a directory")
        if not folder.is_dir():
            raise UsageError(f"cannot write {name}: no directory {folder}")
        if not os.access(path if path.exists() else folder, os.W_OK):
            raise UsageError(f"cannot write {name}: permission denied")
