"""The live walkthrough of docs/mqtt.md (the README points to it), run command for
command: broker-config, a real mosquitto, serve, the operator's accounts through
``carbonx admin``, a crossing sell and buy with plain ``mosquitto_pub``, and the reports
and public trade ``mosquitto_sub`` prints.

Only the port changes (a free one instead of 1884), and the test waits where a person
typing would: for serve to say it is ready, and for the subscriber to subscribe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
SECTION = GUIDE.split("## A live exchange, from nothing to a trade")[1]
BLOCK = re.search(r"```sh\n(.*?)```", SECTION, flags=re.S)

# Under CI (.ci/run sets it) a missing mosquitto is a failure, not a quiet skip.
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and (
        shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_rr") is None or
        (shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists())),
    reason="needs mosquitto and its clients (.ci/run installs them)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _commands(port: int) -> list[tuple[str, str | None]]:
    """The block's commands as (command line, here-document text or None), port swapped."""
    assert BLOCK is not None, "docs/mqtt.md lost its live walkthrough"
    lines = BLOCK.group(1).replace("1884", str(port)).splitlines()
    found: list[tuple[str, str | None]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<'EOF'" in line:
            end = lines.index("EOF", i)
            found.append((line.split("<<")[0].strip(), "\n".join(lines[i + 1:end]) + "\n"))
            i = end + 1
            continue
        found.append((line, None))
        i += 1
    return found


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float, seen: list[str]) -> bool:
    """Read *proc*'s stdout lines into *seen* until one matches *pattern*."""
    import selectors

    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            continue
        line = proc.stdout.readline()
        if not line:
            return False
        seen.append(line)
        if re.search(pattern, line):
            return True
    return False


def test_the_readme_walkthrough_runs_from_nothing_to_a_trade(tmp_path):
    # mosquitto started as root drops to its own user, which must be able to enter the
    # directory (pytest's are the tester's alone): a world-enterable one of our own.
    tmp_path = Path(tempfile.mkdtemp(prefix="carbonx-walkthrough-"))
    tmp_path.chmod(0o755)
    try:
        _walk(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _walk(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/sbin",
                                   env.get("PATH", "")])
    background: list[subprocess.Popen] = []
    subscriber: subprocess.Popen | None = None
    answer = ""
    try:
        for line, here in _commands(port):
            if here is not None:  # cat > FILE <<'EOF'
                assert line.startswith("cat > "), line
                (tmp_path / line.split(">")[1].strip()).write_text(here)
                continue
            program = line.split()[0]
            if line.endswith("&"):
                # its own process group, so the shell and what it started stop together
                proc = subprocess.Popen(
                    ["bash", "-c", "exec " + line.rstrip("&").strip()], cwd=tmp_path, env=env,
                    stdout=subprocess.PIPE if program == "mosquitto_sub" else subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True, start_new_session=True)
                background.append(proc)
                if program == "mosquitto_sub":
                    subscriber = proc
                    time.sleep(1.0)  # let it subscribe, as a person would
                elif program == "carbonx":  # serve: ready when it says so
                    _wait_for_stderr(proc, "gateway ready", 30)
                else:
                    _wait_for_port(port, 10)
                continue
            done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            if line.startswith("carbonx admin"):
                answers = [a for a in done.stdout.splitlines() if a.strip()]
                assert len(answers) == 4 and all("accepted" in a for a in answers), done.stdout
            if program == "mosquitto_rr":
                answer = done.stdout.strip()
        assert subscriber is not None
        seen: list[str] = []
        assert _read_until(subscriber, r"cx/v1/md/CEA25/trades ", 15, seen), seen
        # What the guide shows is what came: Alice's reports, then the public trade.
        shown = re.search(r"```text\n(.*?)```", SECTION, flags=re.S)
        assert shown is not None
        expected_answer, expected_trade = shown.group(1).strip().splitlines()
        assert json.loads(answer) == json.loads(expected_answer)
        # (the feed's session is a token of its own each run)
        session = re.compile(r'"feed":"[0-9a-f]{8}"')
        assert session.sub('"feed":-', seen[-1].strip()) == session.sub('"feed":-', expected_trade)
        assert session.search(seen[-1])
    finally:
        for proc in reversed(background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_stderr(proc: subprocess.Popen, text: str, timeout: float) -> None:
    import selectors

    assert proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    said = []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {''.join(said)}{proc.stderr.read()}")
        if selector.select(timeout=0.2):
            line = proc.stderr.readline()
            said.append(line)
            if text in line:
                return
    raise AssertionError(f"no {text!r} within {timeout} s: {''.join(said)}")


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")
