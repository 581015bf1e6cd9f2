"""Crash-test driver: replay an order file with the ledger and journal, acknowledging
each group only after it is committed (``ack SEQ`` on stdout), the way the gateway acks
bots. The test kills this process with SIGKILL at random points.

Usage: python tests/journal_driver.py ORDERS JOURNAL_DIR GROUP_SIZE SNAPSHOT_EVERY
"""

from __future__ import annotations

import sys

from exchange import Engine, default_market
from exchange.journal import create_journal
from exchange.orderfile import read_order_file


def main(orders: str, directory: str, group_size: int, snapshot_every: int) -> None:
    market = default_market()
    commands = read_order_file(orders)
    engine = Engine(market, ledger=True)
    writer = create_journal(directory, market.text, ledger=True)
    out: list = []
    print("ready", flush=True)
    for start in range(0, len(commands), group_size):
        group = commands[start:start + group_size]
        writer.append_many(group)  # journaled before it acts...
        seq = writer.commit()  # ...and durable before it is acknowledged
        for command in group:
            engine.submit(command, out)
        out.clear()
        print(f"ack {seq}", flush=True)
        if writer.seq - writer.last_snapshot >= snapshot_every:
            writer.snapshot(engine)
    writer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
