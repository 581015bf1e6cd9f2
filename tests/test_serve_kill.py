"""``carbonx serve`` killed (SIGKILL) again and again while bots trade, and restarted on
its journal: every acknowledged order is there afterwards, nothing is applied twice,
and every resend is answered with the command's first answer and its fills."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import serving
from mosquitto import free_port

from exchange.events import OrderAccepted, TradeExecuted
from exchange.journal import recover
from gateway.bots.client import ExchangeClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
BOTS = ("bot0", "bot1", "bot2")
KILLS = 20


def start_serve(directory: Path, port: int) -> subprocess.Popen:
    """Start ``carbonx serve`` on *directory*'s journal and wait until it is ready."""
    args = ["--journal", str(directory / "journal"), "--credentials",
            str(directory / "credentials.json"), "--port", str(port), "--log-level", "ERROR",
            "--book-interval", "0", "--always-open"]
    if not (directory / "journal").exists():
        args += ["--init", str(directory / "funding.csv")]
    return serving.start_serve(args, cwd=REPO)[0]


def test_sigkill_at_20_points_loses_nothing_doubles_nothing_and_answers_resends(tmp_path):
    rng = random.Random(2026)
    (tmp_path /
     "funding.csv").write_text("action,account,instrument,qty\n" +
                               "".join(f"deposit,{bot},CNY,100000000\nissue,{bot},CEA25,1000000\n"
                                       for bot in BOTS))
    port = free_port()
    serve = start_serve(tmp_path, port)
    import json

    credentials = json.loads((tmp_path / "credentials.json").read_text())
    answers: dict[tuple[str, str], list[dict]] = {}  # (bot, command id) -> its answers
    received: dict[str, list[dict]] = {bot: [] for bot in BOTS}

    async def trade(client: ExchangeClient, index: int, stop: asyncio.Event) -> None:
        n = 0
        futures: list = []
        while not stop.is_set():
            n += 1
            side = "sell" if (n + index) % 2 else "buy"
            command = {
                "action": "new",
                "order_id": f"{client.account}-{n}",
                "instrument": "CEA25",
                "side": side,
                "type": "limit",
                "price": "60.00" if side == "buy" else "59.99",
                "qty": 1 + n % 3,
                "command_id": f"{client.account}-c{n}"
            }
            future = client.submit(command)
            future.add_done_callback(lambda f, key=(client.account, command["command_id"]): (
                answers.setdefault(key, []).append(f.result()) if not f.cancelled() else None))
            futures.append(future)
            await asyncio.sleep(0.004)
            received[client.account] += client.reports_waiting()
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        received[client.account] += client.reports_waiting()

    async def scenario() -> None:
        nonlocal serve
        clients = [
            ExchangeClient(bot, credentials[bot], "127.0.0.1", port, timeout=30, retry_delay=0.05,
                           resend_after=0.5) for bot in BOTS
        ]
        for client in clients:
            await client.__aenter__()
        stop = asyncio.Event()
        traders = [asyncio.ensure_future(trade(c, i, stop)) for i, c in enumerate(clients)]
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            os.kill(serve.pid, signal.SIGKILL)
            await asyncio.to_thread(serve.wait)
            serve = await asyncio.to_thread(start_serve, tmp_path, port)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*traders), 60)
        for client in clients:
            await client.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(20)
    engine = recover(tmp_path / "journal").engine
    accepted = 0
    for (bot, command_id), got in answers.items():
        assert len(got) == 1
        answer = got[0]
        first = engine.answer(bot, command_id)
        assert first is not None, (bot, command_id)  # journaled
        # the bot holds the command's first answer (same event), never a second one
        assert answer["seq"] == first[0].seq, (bot, command_id, answer)
        if type(first[0]) is OrderAccepted:
            accepted += 1
            assert answer["report"] == "accepted"
            own_fills = {e.seq for e in first if type(e) is TradeExecuted}
            fills = {
                r["seq"]
                for r in received[bot]
                if r["report"] == "fill" and r["order_id"] == first[0].order_id.partition("/")[2]
            }
            assert own_fills <= fills, (bot, command_id)  # its fills were delivered
    # each order applied once: the engine accepted exactly the orders answered accepted
    assert accepted > 100
    resent = sum(1 for got in answers.values() if got[0].get("duplicate"))
    print(f"{len(answers)} commands, {accepted} accepted, {resent} answered after a resend")
    assert resent >= 1  # some answers were lost to a kill and came back on a resend
    assert engine.accepted == accepted + 2 * len(BOTS)  # + the funding rows
    engine.check()
