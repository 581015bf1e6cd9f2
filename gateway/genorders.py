"""``carbonx gen-orders``: seeded order files in the pinned format.

Profile ``mixed`` (the default): about 70% limit orders resting near the mid, 20%
cancels of live orders, 10% marketable orders (limits through the touch, some ioc).
The generator runs the engine alongside, so every cancel names an order that is live
at that moment. With ``fund``, the file starts with a ``deposit`` and an ``issue`` row
per account, enough that no order of the file is refused for want of cash or
allowances (for ``replay --ledger``). Same arguments and seed, same file, byte for byte.
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

from exchange import CancelOrder, Engine, PlaceOrder, default_market

__all__ = ["DESCRIPTION", "add_arguments", "run", "generate_mixed"]

DESCRIPTION = (
    "Write a seeded order file in the pinned CSV or NDJSON format. The mixed profile: "
    "about 70% limit orders near the mid, 20% cancels of live orders, 10% marketable "
    "orders. Same seed, same file, byte for byte.")

HEADER = ("action", "order_id", "account", "instrument", "side", "type", "tif", "price", "qty")
FUND_CASH = "1000000000.00"  # a billion CNY an account: more than any generated file buys
FUND_UNITS = "10000000"      # ten million units of each instrument an account


def read_row(row: tuple):
    """Return the command of one generated row, read as a replay would read it."""
    from exchange.orderfile import parse_order_text
    text = ",".join(HEADER) + "\n" + ",".join(row) + "\n"
    return parse_order_text(text.encode())[0]


def generate_mixed(messages: int, *, seed: int = 1, instruments: tuple[str, ...] = ("CEA25",),
                   accounts: int = 50, mid_ticks: int = 6000, depth_ticks: int = 20,
                   cancel_share: float = 0.20, marketable_share: float = 0.10,
                   fund: bool = False) -> list[tuple]:
    """Return *messages* rows (tuples in ``HEADER`` order) of the mixed profile.

    Prices are in ticks of 0.01 around ``mid_ticks``; the mid walks one tick at a time.
    With *fund*, the first rows fund every account (they count among *messages*).
    """
    rng = random.Random(seed)
    engine = Engine(default_market(), ledger=fund)
    mids = {sym: mid_ticks for sym in instruments}
    live: list[tuple[str, str]] = []  # (order_id, account), possibly stale; checked below
    rows: list[tuple] = []
    names = [f"acc{i:03d}" for i in range(accounts)]
    if fund:
        for name in names:
            rows.append(("deposit", "", name, "CNY", "", "", "", "", FUND_CASH))
            rows.extend(("issue", "", name, symbol, "", "", "", "", FUND_UNITS)
                        for symbol in instruments)
        del rows[messages:]
        for row in rows:
            engine.submit(read_row(row), [])
    serial = 0
    while len(rows) < messages:
        draw = rng.random()
        if draw < cancel_share and live:
            # Cancel a live order: swap-remove a random candidate until one is live.
            while live:
                index = rng.randrange(len(live))
                live[index], live[-1] = live[-1], live[index]
                order_id, account = live.pop()
                if engine.order(order_id) is not None:
                    break
            else:
                continue
            engine.submit(CancelOrder(order_id=order_id, account=account), [])
            rows.append(("cancel", order_id, account, "", "", "", "", "", ""))
            continue
        symbol = instruments[rng.randrange(len(instruments))]
        if rng.random() < 0.05:
            mids[symbol] += rng.choice((-1, 1))
        mid = mids[symbol]
        is_buy = rng.random() < 0.5
        serial += 1
        order_id = f"o{serial}"
        account = names[rng.randrange(accounts)]
        qty = rng.randint(1, 500)
        tif = ""
        if draw < cancel_share + marketable_share:
            offset = -rng.randint(0, 3)  # through the touch
            if rng.random() < 0.3:
                tif = "ioc"
        else:
            offset = rng.randint(1, depth_ticks)
        ticks = mid - offset if is_buy else mid + offset
        price = f"{ticks // 100}.{ticks % 100:02d}"
        side = "buy" if is_buy else "sell"
        engine.submit(PlaceOrder(order_id=order_id, account=account, instrument=symbol,
                                 side=side, price=price, qty=qty, tif=tif or "gtc"), [])
        if engine.order(order_id) is not None:
            live.append((order_id, account))
        rows.append(("new", order_id, account, symbol, side, "limit", tif, price, str(qty)))
    return rows


def write_rows(path: str | Path | None, rows: list[tuple], fmt: str) -> None:
    """Write *rows* as CSV (with header) or NDJSON (empty fields left out)."""
    out = sys.stdout if path in (None, "-") else open(path, "w", newline="", encoding="utf-8")
    try:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows)
        else:
            import json
            for row in rows:
                record = {k: v for k, v in zip(HEADER, row) if v != ""}
                if "qty" in record:
                    record["qty"] = int(record["qty"])
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=100_000, metavar="N",
                        help="number of data rows (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--instruments", default="CEA25", metavar="SYM,SYM",
                        help="comma-separated instruments of the default market (default CEA25)")
    parser.add_argument("--accounts", type=int, default=50, metavar="N",
                        help="number of accounts (default 50)")
    parser.add_argument("--fund", action="store_true",
                        help="start with a deposit and an issue row per account, enough for "
                             "every order (for replay --ledger)")
    parser.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    parser.add_argument("--out", metavar="FILE", default="-", help="output file (default stdout)")


def run(args: argparse.Namespace) -> int:
    from .cli import UsageError

    if args.messages < 0 or args.accounts < 1:
        raise UsageError("--messages must be >= 0 and --accounts >= 1")
    instruments = tuple(s for s in args.instruments.split(",") if s)
    market = default_market()
    unknown = [s for s in instruments if s not in market]
    if unknown or not instruments:
        raise UsageError(f"unknown instrument(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(market.instruments)}")
    rows = generate_mixed(args.messages, seed=args.seed, instruments=instruments,
                          accounts=args.accounts, fund=args.fund)
    try:
        write_rows(args.out, rows, args.format)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0
