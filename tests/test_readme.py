"""The README's commands and Python example must keep working (they are run here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quick_start_main_job_runs_the_demo():
    main_job = _blocks("sh")[0].strip()
    assert main_job.endswith("carbonx demo")
    demo = main_job.split("&&")[-1].split()
    result = subprocess.run([sys.executable, "-m", "gateway.cli", *demo[1:], "--seconds", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "VWAP" in result.stdout and "P&L" in result.stdout
    assert "Traceback" not in result.stderr


def test_shipped_example_replays():
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay", "examples/orders-mixed.csv", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["messages"] == 20_000
    assert summary["accepted"] + summary["rejected"] == summary["messages"]
    assert summary["trades"] > 0


def test_quick_start_test_command_is_what_ci_runs():
    test_command = _blocks("sh")[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci


def test_first_trade_walkthrough_gives_the_fills_and_holdings_it_shows(tmp_path):
    """The walkthrough's shell block runs as written (its here-document, then its carbonx
    commands), and the fills line and holdings file the README shows are what it writes."""
    block = next(b for b in _blocks("sh") if "first-trade.csv" in b)
    lines = block.strip().splitlines()
    opener = next(i for i, line in enumerate(lines) if "<<'EOF'" in line)
    name = lines[opener].split(">")[1].split("<<")[0].strip()
    closer = lines.index("EOF", opener)
    (tmp_path / name).write_text("\n".join(lines[opener + 1:closer]) + "\n")
    commands = [line.split() for line in lines[closer + 1:]]
    assert commands and all(words[0] == "carbonx" for words in commands), commands
    for words in commands:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *words[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "accepted 4, rejected 0" in done.stdout and "trades" in done.stdout
    (shown_fill, ) = [b for b in _blocks("json") if '"trade_id"' in b]
    assert (tmp_path / "fills.ndjson").read_text() == shown_fill
    (shown_holdings, ) = [b for b in _blocks("csv") if b.startswith("account,asset,")]
    assert (tmp_path / "holdings.csv").read_text() == shown_holdings


def test_python_example_runs_and_trades():
    namespace: dict = {}
    code = next(b for b in _blocks("python") if "Engine(" in b)
    exec(compile(code, "README.md", "exec"), namespace)
    events = namespace["events"]
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "TradeExecuted"]
    assert events[1].price == 6000 and events[1].qty == 200


def test_ledger_commands_run_and_recover_the_same_holdings(tmp_path):
    block = next(b for b in _blocks("sh") if "examples/orders-funded.csv --ledger" in b)
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert [c[:2] for c in commands] == [["carbonx", "replay"], ["carbonx", "holdings"],
                                         ["carbonx", "holdings"]]
    example = ROOT / commands[0][2]
    outputs = []
    for words in commands:
        args = [str(example) if w == commands[0][2] else w for w in words[1:]]
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    recovered = json.loads(outputs[2])
    rows = (tmp_path / "holdings.csv").read_text().splitlines()
    assert rows[0] == "account,asset,available,held,locked"
    assert len(rows) - 1 == len(recovered["holdings"]) > 3
    assert recovered["seq"] == 20_000
    first = recovered["holdings"][0]
    assert rows[1] == ",".join(
        str(first[k]) for k in ("account", "asset", "available", "held", "locked"))


def test_bot_client_example_places_and_amends_over_the_embedded_broker():
    import asyncio
    import contextlib

    from exchange import Engine, default_market
    from gateway.mqtt.embedded import EmbeddedBroker
    from gateway.mqtt.service import GatewayCore, run_gateway

    code = next(b for b in _blocks("python") if "ExchangeClient" in b)
    # The gateway stamps orders with the wall clock: a market open at all hours.
    core = GatewayCore(Engine(default_market().open_all_hours()))

    async def scenario():
        credentials = {"gateway": "g-secret", "alice": "a-secret"}
        async with EmbeddedBroker(credentials) as broker:
            namespace: dict = {}
            exec(compile(code.replace("1883", str(broker.port)), "README.md", "exec"), namespace)
            stop, ready = asyncio.Event(), asyncio.Event()
            gateway = asyncio.ensure_future(
                run_gateway(core, host=broker.host, port=broker.port, username="gateway",
                            password="g-secret", stop=stop, ready=ready))
            await asyncio.wait_for(ready.wait(), 10)
            with contextlib.suppress(asyncio.TimeoutError):  # it reads reports forever
                await asyncio.wait_for(namespace["trade"]("a-secret"), 2)
            stop.set()
            await gateway

    asyncio.run(scenario())
    (order, ) = core.engine.live_orders()
    assert order.account == "alice" and order.price == 6125  # placed, then amended


def test_readme_shows_the_latest_benchmark_results():
    # The block is written from benchmarks/results/latest.json by
    # `python -m benchmarks.report ... --readme README.md`: it cannot go stale silently.
    from benchmarks.report import readme_block

    latest = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    block = readme_block(latest)
    assert block in README
    assert "| pyorderbook" in block and "| lightmatchingengine" in block
    chart = re.search(r"!\[[^]]*\]\(([^)]+)\)", block).group(1)
    assert (ROOT / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def layout_names(block: str) -> dict[str, set[str]]:
    """The files the README's layout block names, by folder: a line that starts at the
    margin opens a top folder, an indented line that starts with ``name/`` a folder in
    it, and a deeper line goes on with the folder above it."""
    named: dict[str, set[str]] = {}
    top = context = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first = line.split()[0]
        if indent == 0:
            top = context = first
        elif indent == 2:
            context = top + first if first.endswith("/") else top
        # a deeper line keeps the context of the line above it
        for token in re.findall(r"(?<![\w/.(+])([\w]+\.(?:py|c))\b", line):
            named.setdefault(context, set()).add(token)
    return named


def test_the_layout_block_names_the_real_modules():
    block = re.search(r"## Layout\n\n```\n(.*?)```", README, flags=re.S).group(1)
    named = layout_names(block)
    for folder, files in named.items():
        for name in files:
            assert (ROOT / folder / name).is_file(), f"the layout names {folder}{name}"
    # The core and the edge are named whole: every module, in the folder it is in.
    for package in ("exchange", "gateway"):
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".c") and path.name != "__init__.py":
                folder = path.parent.relative_to(ROOT).as_posix() + "/"
                assert path.name in named.get(folder, set()), f"the layout misses {path}"


def test_the_layout_reader_follows_folders():
    block = "top/   a.py\n  sub/  b.py  c.c\n        d.py\n  e.py (F.py is not a file)\n"
    assert layout_names(block) == {"top/": {"a.py", "e.py"}, "top/sub/": {"b.py", "c.c", "d.py"}}
