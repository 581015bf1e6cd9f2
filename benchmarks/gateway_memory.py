"""``python -m benchmarks.gateway_memory [--commands N]``: a live gateway's memory over a
long day at a constant book.

The gateway core (engine with ledger, journal on local disk, report making) takes
messages of 100 commands from two bots, each command with its own ``command_id``, as the
bot client sends them. Every order is priced to trade with one resting order of the
other bot, so the book holds the same number of orders (``--resting``) throughout and
no end of day is run: whatever grows with history shows. The process's resident memory
(RSS) is read every million commands. The market is open all hours and has no position
limits, and a run in which any command is refused fails: it would measure refusals.

Target (reported, never enforced): RSS at the end within 10% of RSS at 1,000,000
commands. Writes ``results/gateway-memory.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
TARGET_GROWTH = 0.10
STEP = 1_000_000
BATCH = 100


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(commands: int, resting: int) -> dict:
    from exchange import Engine, default_market
    from exchange.commands import Deposit, IssueAllowances
    from exchange.journal import create_journal
    from gateway.mqtt.service import GatewayCore, GatewaySettings

    # Open all hours: the gateway stamps each command with the wall clock, and outside
    # the default market's trading day every order would be refused market_closed.
    # Without position limits: the taker buys all day, past any limit.
    market = default_market().open_all_hours().without_limits()
    samples = []
    with tempfile.TemporaryDirectory(prefix="carbonx-gwmem-") as scratch:
        writer = create_journal(Path(scratch) / "journal", market.text, ledger=True, fsync="none")
        engine = Engine(market, ledger=True)
        core = GatewayCore(
            engine, journal=writer, settings=GatewaySettings(book_interval=0.0, rate=1e12,
                                                             burst=1e12, snapshot_every=10**12))
        for bot in ("maker", "taker"):
            for command in (Deposit(account=bot, currency="CNY", amount="100000000000"),
                            IssueAllowances(account=bot, instrument="CEA25", qty=10**10)):
                engine.execute(command)
        # The resting side: `resting` sells by the maker at 60.00 .. 60.99.
        n = 0

        def message(bot: str, side: str, price_of) -> bytes:
            nonlocal n
            rows = []
            for _ in range(BATCH):
                n += 1
                price = price_of(n)
                rows.append(f'{{"action":"new","order_id":"o{n}","instrument":"CEA25",'
                            f'"side":"{side}","price":"{price}","qty":1,'
                            f'"command_id":"c{n}"}}')
            return ("[" + ",".join(rows) + "]").encode()

        def sell_price(i: int) -> str:
            return f"60.{i % 100:02d}"

        for _ in range(resting // BATCH):
            core.receive("cx/v1/orders/maker", message("maker", "sell", sell_price), now=0.0)
            while core.pending:
                core.flush(now=0.0)
        # Then, in turn: the taker buys 100 (each takes one resting sell, the book
        # shrinks by 100) and the maker sells 100 again (the book grows back).
        done = 0
        start = time.perf_counter()
        next_sample = STEP
        while done < commands:
            core.receive("cx/v1/orders/taker", message("taker", "buy", lambda i: "61.00"), now=0.0)
            core.receive("cx/v1/orders/maker", message("maker", "sell", sell_price), now=0.0)
            while core.pending:
                core.flush(now=0.0)
            done += 2 * BATCH
            if done >= next_sample:
                gc.collect()
                live = len(engine.live_orders())
                samples.append({
                    "commands": done,
                    "rss_mb": round(rss_bytes() / 2**20, 1),
                    "resting": live,
                    "seconds": round(time.perf_counter() - start, 1)
                })
                print(f"{done:>12,} commands  RSS {samples[-1]['rss_mb']:>8} MB  resting {live:,}",
                      file=sys.stderr, flush=True)
                next_sample += STEP
        writer.close()
        if engine.rejected:
            # Every order should rest or trade: a refusal means the run measured refusals.
            raise RuntimeError(f"{engine.rejected:,} commands were refused: "
                               f"{dict(engine.rejects)}")
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    growth = (last - first) / first
    return {
        "commands": commands,
        "resting": resting,
        "samples": samples,
        "growth": round(growth, 4),
        "target_met": growth <= TARGET_GROWTH
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=10_000_000)
    parser.add_argument("--resting", type=int, default=100_000)
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    if args.commands < STEP:
        parser.error(f"--commands: at least {STEP:,}")
    try:
        result = run(args.commands, args.resting)
    except RuntimeError as exc:
        print(f"gateway memory: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway-memory.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
