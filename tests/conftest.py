"""Shared, generic fixtures for the carbonx tests.

- ``golden_dir``: the golden replay files: ``$CARBONX_GOLDEN`` if set, else the copy in
  ``tests/golden`` (kept equal to ``shared/golden`` by ``test_golden_copy.py``).
- ``run_carbonx``: run ``python -m gateway.cli ARGS...`` as a subprocess (in a given
  working directory, default the test's ``tmp_path``) and return the completed process.
- ``mosquitto_broker``, ``mosquitto_factory``: a real mosquitto on a free loopback port
  (``tests/mosquitto.py``).
- ``write_file``: write text (or bytes) to a file under ``tmp_path`` and return its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The real-mosquitto fixtures, for every test module that names them.
from mosquitto import mosquitto_broker, mosquitto_factory  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _golden_candidates() -> list[Path]:
    found = []
    if os.environ.get("CARBONX_GOLDEN"):
        found.append(Path(os.environ["CARBONX_GOLDEN"]))
    found.append(REPO / "tests" / "golden")
    return found


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    for candidate in _golden_candidates():
        if (candidate / "basic.csv").is_file():
            return candidate
    pytest.fail("golden replay files not found in tests/golden")


@pytest.fixture
def run_carbonx(tmp_path):
    """Return ``run(*args, cwd=None, timeout=60, env=None) -> CompletedProcess`` (text mode)."""

    def run(*args, cwd=None, timeout=60, env=None):
        environ = dict(os.environ)
        environ.update(env or {})
        return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)],
                              cwd=str(cwd or tmp_path), capture_output=True, text=True,
                              timeout=timeout, env=environ, stdin=subprocess.DEVNULL)

    return run


@pytest.fixture
def write_file(tmp_path):
    """Return ``write(name, content) -> Path``; *content* is ``str`` (UTF-8) or ``bytes``."""

    def write(name: str, content) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8"))
        return path

    return write
