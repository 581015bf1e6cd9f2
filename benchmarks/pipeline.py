"""``python -m benchmarks.pipeline FILE``: the plain pipeline that ``carbonx replay`` is
held against end to end: the standard library's ``csv`` reader and the plain matcher
(``benchmarks.plain``), from the file's bytes to the last trade.

Each row becomes a ``PlaceOrder`` or ``CancelOrder`` (the plain matcher's input) with
no checks beyond ``int()``; other rows (deposits, issuance) are skipped, as the plain
matcher has no ledger. Emits one result: messages, seconds, msgs/s, trades.
"""

from __future__ import annotations

import csv
import gc
import sys
import time

from exchange.commands import CancelOrder, PlaceOrder

from .plain import PlainMatcher
from .stats import emit

__all__ = ["run"]


def run(path: str) -> dict:
    """Read, decode and match *path* once; return the figures."""
    gc.disable()  # as carbonx replay does
    started = time.perf_counter()
    matcher = PlainMatcher()
    new, cancel = matcher.new, matcher.cancel
    messages = 0
    with open(path, newline="", encoding="utf-8") as file:
        rows = csv.reader(file)
        header = next(rows)
        at = {name: index for index, name in enumerate(header)}
        action, order_id, account, instrument = (at["action"], at["order_id"], at["account"],
                                                 at["instrument"])
        side, tif, price, qty = at["side"], at["tif"], at["price"], at["qty"]
        for row in rows:
            messages += 1
            kind = row[action]
            if kind == "new":
                new(PlaceOrder(order_id=row[order_id], account=row[account],
                               instrument=row[instrument], side=row[side],  # type: ignore[arg-type]
                               tif=row[tif] or "gtc", price=row[price] or None, qty=int(row[qty])))
            elif kind == "cancel":
                cancel(CancelOrder(order_id=row[order_id], account=row[account]))
    seconds = time.perf_counter() - started
    gc.enable()
    return {"messages": messages, "seconds": round(seconds, 6),
            "msgs_per_s": round(messages / seconds), "trades": len(matcher.trades)}


if __name__ == "__main__":
    emit(run(sys.argv[1]))
