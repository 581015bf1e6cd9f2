"""A minimal progress bar for terminals: drawn on stderr only when it is a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Draw ``label [#####.....] 45% 450,000/1,000,000`` at most ten times a second."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._last = 0.0
        self._drawn = False

    @classmethod
    def for_terminal(cls, stream: TextIO | None = None) -> ProgressBar | None:
        """Return a bar when *stream* (default stderr) is a terminal, else ``None``."""
        stream = stream if stream is not None else sys.stderr
        return cls(stream) if stream.isatty() else None

    def update(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        total = max(total, done, 1)
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(
            f"\r\x1b[2K{label:<10} [{bar}] {100 * done // total:3d}% {done:,}/{total:,}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False
