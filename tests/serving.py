"""``carbonx serve`` started for a test: the process, once it has said it is ready."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def start_serve(args: Sequence[str], *, cwd: Path | str, env: Mapping[str, str] | None = None,
                stdout: int | IO[Any] | None = subprocess.DEVNULL, timeout: float = 30.0,
                ready: Sequence[str] = ("gateway ready", )
                ) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``carbonx serve *args*`` in *cwd* and read its standard error until a line
    holds one of *ready*; return the process and the lines read. A process that ends, or
    says nothing ready within *timeout* seconds, is killed and the test fails with what
    it said."""
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", *args],
                               cwd=cwd, env=dict(env) if env is not None else None,
                               stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if any(word in line for word in ready):
            return process, lines
    process.kill()
    process.wait()
    raise AssertionError("carbonx serve did not start:\n" + "".join(lines))
