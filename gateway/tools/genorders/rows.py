"""Rows of an order file: the column headers of each profile, reading one row back as
a replay would, and writing rows as CSV or NDJSON."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HEADER = ("action", "order_id", "account", "instrument", "side", "type", "tif", "price", "qty")
KINDS_HEADER = HEADER + ("stop_price", )  # generate_kinds
CARBON_HEADER = HEADER + ("stop_price", "ts")  # generate_carbon


def read_row(row: tuple):
    """Return the command of one generated row, read as a replay would read it."""
    from exchange.orderfile import parse_order_text

    text = ",".join(HEADER) + "\n" + ",".join(row) + "\n"
    return parse_order_text(text.encode())[0]


def write_rows(path: str | Path | None, rows: list[tuple], fmt: str,
               header: tuple[str, ...] = HEADER) -> None:
    """Write *rows* as CSV (with *header*) or NDJSON (empty fields left out; ``qty`` and
    ``ts`` as JSON integers, except the decimal amount of a deposit or withdrawal)."""
    # stdout or a file, closed below
    out = sys.stdout if path in (None, "-") else open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        else:
            import json

            dumps = json.JSONEncoder(separators=(",", ":")).encode
            for row in rows:
                record = {k: v for k, v in zip(header, row) if v != ""}
                if "qty" in record and record["action"] not in ("deposit", "withdraw"):
                    record["qty"] = int(record["qty"])
                if "ts" in record:
                    record["ts"] = int(record["ts"])
                out.write(dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
