"""``carbonx``: the command line that joins the core and the edge.

Exit status: 0 on success; 2 for bad input (a file that cannot be read, a bad option,
a market file that does not parse), with one clear message on stderr and no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from exchange.commands import STP_MODES
from exchange.journal import JournalError
from exchange.market import MarketConfigError, load_market
from exchange.orderfile import OrderFileError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_BAD_INPUT = 0, 2


class UsageError(Exception):
    """Bad input from the user: reported as ``carbonx CMD: error: ...``, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonx",
        description="carbonx: an exchange engine for carbon emission allowances.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    replay = sub.add_parser(
        "replay", help="replay an order file through the matching engine",
        description=(
            "Replay an order file (CSV with a header row, or NDJSON with the same keys) "
            "through the engine and report what happened. Rows that break a market rule "
            "are rejected and the replay goes on; a row that cannot be read stops it "
            "with exit status 2."))
    replay.add_argument("file", metavar="FILE", help="the order file")
    replay.add_argument("--format", choices=("csv", "ndjson"),
                        help="file format (default: from the extension; .ndjson/.jsonl = ndjson)")
    replay.add_argument("--market", metavar="TOML",
                        help="market configuration (default: the shipped default market)")
    replay.add_argument("--ledger", action="store_true",
                        help="run with accounts, pre-trade risk and settlement")
    replay.add_argument("--stp", choices=STP_MODES, metavar="MODE",
                        help=f"self-trade prevention for rows whose stp is empty: "
                             f"{', '.join(STP_MODES)} (default: cancel_resting)")
    replay.add_argument("--fills", metavar="OUT.ndjson", help="write every trade as NDJSON")
    replay.add_argument("--events", metavar="OUT.ndjson", help="write every event as NDJSON")
    replay.add_argument("--json", action="store_true",
                        help="print one JSON summary object on stdout")
    replay.add_argument("--journal", metavar="DIR",
                        help="with --ledger: journal every input command in DIR (a new or "
                             "empty directory), group-committed with fsync, with snapshots; "
                             "'carbonx holdings DIR' recovers from it")
    replay.add_argument("--holdings", metavar="OUT.csv",
                        help="with --ledger: write the final holdings as CSV "
                             "(account,asset,available,held,locked)")
    replay.set_defaults(run=_cmd_replay)

    holdings = sub.add_parser(
        "holdings", help="recover the state from a journal directory and show holdings",
        description=(
            "Recover the exchange's state from a journal directory (latest snapshot, then "
            "the journaled commands after it; a torn last frame is ignored) and print each "
            "account's holdings. --json prints {\"seq\": N, \"holdings\": [...], "
            "\"positions\": [...]}, N being the number of input commands recovered."))
    holdings.add_argument("directory", metavar="DIR", help="the journal directory")
    holdings.add_argument("--json", action="store_true", help="print one JSON object")
    holdings.set_defaults(run=_cmd_holdings)

    from . import genorders
    gen = sub.add_parser("gen-orders", help="write a seeded order file",
                         description=genorders.DESCRIPTION)
    genorders.add_arguments(gen)
    gen.set_defaults(run=genorders.run)
    return parser


def _cmd_replay(args: argparse.Namespace) -> int:
    from .progress import ProgressBar
    from .replay import run_replay, write_events, write_fills, write_holdings

    for option in ("journal", "holdings"):
        if getattr(args, option) and not args.ledger:
            raise UsageError(f"--{option} needs --ledger (there are no holdings to keep "
                             f"without accounts)")
    market = load_market(args.market)
    progress = ProgressBar.for_terminal()
    result = run_replay(args.file, fmt=args.format, market=market, stp=args.stp,
                        keep_events=bool(args.fills or args.events), progress=progress,
                        ledger=args.ledger, journal=args.journal)
    try:
        if args.holdings:
            write_holdings(args.holdings, result.engine)
        if args.fills:
            write_fills(args.fills, result.events or [], market)
        if args.events:
            write_events(args.events, result.events or [], market)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"replayed {args.file}")
        print(f"  messages  {summary['messages']:>12,}   accepted {summary['accepted']:,}, "
              f"rejected {summary['rejected']:,}")
        print(f"  trades    {summary['trades']:>12,}   volume {summary['volume']:,}")
        print(f"  elapsed   {summary['elapsed_s']:>12.3f} s  {summary['msgs_per_s']:,} msgs/s "
              f"(read + decode + match)")
        print(f"  engine    {summary['engine_s']:>12.3f} s  {summary['engine_msgs_per_s']:,} msgs/s")
        for reason, count in summary["rejects"].items():
            print(f"  rejected  {count:>12,}   {reason}")
        print(f"  state     {summary['state_hash']}")
    return EXIT_OK


def _cmd_holdings(args: argparse.Namespace) -> int:
    from exchange.journal import recover

    from .replay import holding_rows

    recovered = recover(args.directory)
    rows = holding_rows(recovered.engine)
    if recovered.torn_bytes:
        print(f"carbonx holdings: note: ignored a torn last frame ({recovered.torn_bytes} "
              f"bytes) in {recovered.segment}", file=sys.stderr)
    if args.json:
        print(json.dumps({"seq": recovered.seq, "holdings": rows, "positions": []}))
        return EXIT_OK
    print(f"recovered {recovered.seq:,} commands from {args.directory}"
          f" (snapshot at {recovered.snapshot_seq:,}, {recovered.replayed:,} replayed)")
    if recovered.engine.ledger is None:
        print("  (journal of a matching-only replay: no accounts)")
        return EXIT_OK
    widths = [max([len(h)] + [len(str(r[h])) for r in rows]) for h in
              ("account", "asset", "available", "held", "locked")]
    header = ("account", "asset", "available", "held", "locked")
    print("  " + "  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                          for i, (h, w) in enumerate(zip(header, widths))))
    for r in rows:
        print("  " + "  ".join(str(r[h]).ljust(w) if i < 2 else str(r[h]).rjust(w)
                              for i, (h, w) in enumerate(zip(header, widths))))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, OrderFileError, MarketConfigError, JournalError) as exc:
        print(f"carbonx {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"carbonx {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
