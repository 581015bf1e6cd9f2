"""Errors the edge reports to a user: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input from the user: reported as ``carbonx CMD: error: ...``, exit 2."""
