"""The replay's progress bar: drawn on a terminal only, and cleared when done."""

from __future__ import annotations

import io

from gateway.tools.progress import ProgressBar
from gateway.tools.replay import run_replay


class _Terminal(io.StringIO):

    def isatty(self) -> bool:
        return True


def test_no_bar_when_stderr_is_not_a_terminal():
    assert ProgressBar.for_terminal(io.StringIO()) is None


def test_bar_draws_progress_and_clears_the_line():
    screen = _Terminal()
    bar = ProgressBar.for_terminal(screen)
    bar.update("reading", 50, 200)
    assert "reading" in screen.getvalue() and " 25% 50/200" in screen.getvalue()
    bar.update("matching", 200, 200)  # completion always draws, however soon
    assert "100% 200/200" in screen.getvalue()
    bar.close()
    assert screen.getvalue().endswith("\r\x1b[2K")


def test_replay_reports_both_phases_on_a_terminal(tmp_path):
    orders = tmp_path / "orders.csv"
    rows = ["action,order_id,account,instrument,side,price,qty"]
    rows += [f"new,o{i},a{i % 3},CEA25,{'buy' if i % 2 else 'sell'},60.00,1" for i in range(300)]
    orders.write_text("\n".join(rows) + "\n")
    screen = _Terminal()
    result = run_replay(orders, progress=ProgressBar(screen))
    assert result.messages == 300
    drawn = screen.getvalue()
    assert "reading" in drawn and "matching" in drawn and "300/300" in drawn
