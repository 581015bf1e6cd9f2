"""The trading modes away from the book: replay throughput of a file with 10% block and
auction rows (issue 19).

A seeded file: first a deposit and an issue row per account (50 accounts), then rows of
which about 90% are the order book's (limit orders around 60.00, a fifth of them cancels
of live orders) and 10% are block agreements and auctions (public and directed blocks
posted and accepted, sale auctions opened, bid for and cleared), all valid. It is
replayed with ``carbonx replay --ledger --json`` on the default market without position
limits (every account holds more than a limit allows), each run in a fresh process, and
beside it the same file with the block and auction rows left out, so the cost of the
modes shows as the difference in messages per second.

Checks: nothing is rejected; block and auction trades happen (their counts from
``--fills``, by ``mode``).

``python -m benchmarks.modes [--messages N] [--repeat R] [--json]``; results in
``benchmarks/results/modes.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from .data import unlimited_market
from .endtoend import run_once

__all__ = ["generate", "measure"]

HEADER = "action,order_id,account,instrument,side,price,qty,to_account,auction"
RESULTS = Path(__file__).parent / "results" / "modes.json"
ACCOUNTS = [f"acc{n:02d}" for n in range(50)]
MODE_SHARE = 0.10


def generate(messages: int, *, seed: int = 1, modes: bool = True) -> list[str]:
    """The rows of the file (*messages* data rows after the funding rows); without
    *modes*, the block and auction rows are left out (the rest is the same)."""
    rng = random.Random(seed)
    rows = []
    for account in ACCOUNTS:
        rows.append(f"deposit,,{account},CNY,,,10000000000.00,,")
        rows.append(f"issue,,{account},CEA25,,,50000000,,")
    live: list[tuple[str, str]] = []  # (order id, account) of resting-maybe orders
    blocks: list[tuple[str, str]] = []  # (block id, poster) posted and not yet accepted
    auction: list = []  # [id, initiator, bids]
    serial = 0
    for _ in range(messages):
        serial += 1
        if rng.random() < MODE_SHARE:
            row = _mode_row(rng, serial, blocks, auction)
            if modes:
                rows.append(row)
            continue
        account = rng.choice(ACCOUNTS)
        if live and rng.random() < 0.2:
            order_id, owner = live.pop(rng.randrange(len(live)))
            rows.append(f"cancel,{order_id},{owner},,,,,,")
            continue
        side = rng.choice(("buy", "sell"))
        cents = 6000 + rng.randint(-50, 50)
        order_id = f"o{serial}"
        live.append((order_id, account))
        rows.append(f"new,{order_id},{account},CEA25,{side},{cents // 100}.{cents % 100:02d},"
                    f"{rng.randint(1, 1000)},,")
    if auction and modes:
        rows.append(f"auction_close,,,,,,,,{auction[0]}")
    return rows


def _mode_row(rng: random.Random, serial: int, blocks: list, auction: list) -> str:
    """One block or auction row, valid where it falls."""
    if auction and auction[2] >= 4:
        name = auction[0]
        auction.clear()
        return f"auction_close,,,,,,,,{name}"
    draw = rng.random()
    if auction and draw < 0.45:
        bidder = rng.choice([a for a in ACCOUNTS if a != auction[1]])
        auction[2] += 1
        cents = 5900 + rng.randint(0, 200)
        return (f"auction_bid,x{serial},{bidder},,,{cents // 100}.{cents % 100:02d},"
                f"{rng.randint(10, 100) * 1000},,{auction[0]}")
    if not auction and draw < 0.2:
        initiator = rng.choice(ACCOUNTS)
        auction[:] = [f"A{serial}", initiator, 0]
        qty = rng.randint(2, 4) * 100_000
        return f"auction_open,,{initiator},CEA25,sell,59.00,{qty},,A{serial}"
    if blocks and draw < 0.7:
        block_id, poster = blocks.pop(0)
        taker = rng.choice([a for a in ACCOUNTS if a != poster])
        return f"block_accept,{block_id},{taker},,,,,{poster},"
    poster = rng.choice(ACCOUNTS)
    blocks.append((f"B{serial}", poster))
    cents = 5800 + rng.randint(0, 400)
    side = rng.choice(("buy", "sell"))
    return (f"block,B{serial},{poster},CEA25,{side},{cents // 100}.{cents % 100:02d},"
            f"{rng.randint(100, 200) * 1000},,")


def measure(messages: int = 200_000, *, repeat: int = 3, seed: int = 1) -> dict:
    """Replay the file with and without its block and auction rows, *repeat* rounds."""
    with tempfile.TemporaryDirectory(prefix="carbonx-bench-modes-") as scratch:
        folder = Path(scratch)
        market = folder / "unlimited.toml"
        market.write_text(unlimited_market())
        paths = {}
        for label, modes in (("with_modes", True), ("listing_only", False)):
            path = paths[label] = folder / f"{label}.csv"
            path.write_text(HEADER + "\n" + "\n".join(generate(messages, seed=seed,
                                                                modes=modes)) + "\n")
        runs: dict[str, list[dict]] = {label: [] for label in paths}
        fills = folder / "fills.ndjson"
        for _ in range(repeat):
            for label, path in paths.items():
                extra = ["--fills", str(fills)] if label == "with_modes" else []
                runs[label].append(run_once(path, "--ledger", "--market", str(market), *extra))
        by_mode = Counter(json.loads(line)["mode"] for line in fills.read_text().splitlines())
    # A cancel may name an order that has traded away since: unknown_order, in both files
    # alike. Nothing else is refused.
    failures = [f"{label}: {run['rejects']} rejected" for label, label_runs in runs.items()
                for run in label_runs if set(run["rejects"]) - {"unknown_order"}]
    if runs["with_modes"][0]["rejects"] != runs["listing_only"][0]["rejects"]:
        failures.append("the two files' rejections differ")
    with_modes = runs["with_modes"]
    if with_modes and (not by_mode.get("block") or not by_mode.get("auction")):
        failures.append(f"no block or auction trades: {dict(by_mode)}")

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    return {
        "messages": {label: label_runs[0]["messages"] for label, label_runs in runs.items()},
        "mode_rows_share": MODE_SHARE,
        "msgs_per_s": {label: round(median(label, "msgs_per_s")) for label in runs},
        "engine_msgs_per_s": {label: round(median(label, "engine_msgs_per_s")) for label in runs},
        "trades_by_mode": dict(sorted(by_mode.items())),
        "repeat": repeat,
        "failures": failures
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.modes", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    result = measure(args.messages, repeat=args.repeat)
    if not args.no_save:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for label in ("with_modes", "listing_only"):
            print(f"{label:>13}: {result['messages'][label]:>9,} rows  "
                  f"{result['msgs_per_s'][label]:>9,} msgs/s end to end  "
                  f"{result['engine_msgs_per_s'][label]:>9,} msgs/s engine")
        print(f"trades by mode: {result['trades_by_mode']}")
        for failure in result["failures"]:
            print(f"FAILED: {failure}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
