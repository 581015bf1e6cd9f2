"""``carbonx gen-orders``: its description, its arguments, and ``run``, which checks
them, calls a profile's generator and writes the file."""

from __future__ import annotations

import argparse
from datetime import date

from exchange import default_market
from gateway.errors import UsageError

from .carbon import CARBON_INSTRUMENTS, generate_carbon
from .flow import MAX_DEPTH_TICKS
from .mix import CARBON_MIX, KINDS, MIXED_MIX, parse_mix
from .mixed import generate_kinds, generate_mixed
from .rows import CARBON_HEADER, HEADER, KINDS_HEADER, write_rows
from .schedule import DEADLINE, FIRST_DEADLINE, LAST_DEADLINE, deadline_problem

DESCRIPTION = ("Write a seeded order file in the pinned CSV or NDJSON format. Profile mixed (the "
               "default): about 70% limit orders near the mid, 20% cancels of live orders, 10% "
               "marketable orders. Profile carbon: a compliance year of trading days with "
               "timestamps in the listing hours (09:30-11:30, 13:00-15:00), an eod row per trading "
               "day, covered entities and market makers, CEA vintages and CCER, about 75% of the "
               "year's traded volume in the last quarter before the deadline and bursts after the "
               "open. --mix sets the share of each message kind for either profile. Cancels and "
               "amends name live orders and prices stay inside the price band, so a replay rejects "
               "nothing. Same arguments and seed, same file, byte for byte.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = ", ".join(KINDS)
    parser.add_argument(
        "--profile", choices=("mixed", "carbon"), default="mixed",
        help="mixed: instruments priced around 60.00, no timestamps (the "
        "original generator, its files unchanged); carbon: a compliance year "
        "of trading days with timestamps and eod rows, covered "
        "entities and market makers, a heavy last quarter and bursts "
        "after the open (default: mixed)")
    parser.add_argument("--messages", type=int, default=100_000, metavar="N",
                        help="number of data rows, funding and eod rows included (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--instruments", metavar="SYM,SYM",
        help="comma-separated instruments of the default market (default: "
        "CEA25 for mixed; CEA23,CEA24,CEA25,CCER for carbon, which "
        "takes spot instruments only)")
    parser.add_argument(
        "--accounts", type=int, metavar="N",
        help="mixed: number of accounts (default 50); carbon: number of "
        "covered entities ent0001... (default 200)")
    parser.add_argument(
        "--market-makers", type=int, metavar="N",
        help="carbon: number of market makers mm01... quoting both sides "
        "near the mid and re-quoting (default 4)")
    parser.add_argument(
        "--mix", metavar="KIND=N,...",
        help=f"shares (whole numbers, normalised) of the message kinds "
        f"{kinds}: limit rests near the mid, cancel and amend name a "
        f"live order, marketable is a limit through the touch, market "
        f"a market order, ioc and fok limits through the touch with "
        f"that tif, stop a stop or stop_limit beyond the last price; "
        f"kinds left out get 0. Default for mixed: limit=70,cancel=20,"
        f"marketable=7,ioc=3 (the original generator, used unless "
        f"--mix or --depth-shape geometric is given); for carbon: " +
        ",".join(f"{k}={v}" for k, v in CARBON_MIX.items()))
    parser.add_argument(
        "--depth-ticks", type=int, default=20, metavar="N",
        help=f"how far from the mid passive limit orders go, in ticks, 1 to {MAX_DEPTH_TICKS} "
        f"(so that prices stay positive) (default 20)")
    parser.add_argument(
        "--depth-shape", choices=("uniform", "geometric"),
        help="how passive orders spread over those ticks: uniform, or "
        "geometric (most near the touch, each tick further out "
        "1-3/N times as likely) (default: uniform for mixed, "
        "geometric for carbon)")
    parser.add_argument(
        "--deadline", metavar="YYYY-MM-DD",
        help=f"carbon: the compliance deadline ending the year of trading "
        f"days; the last quarter before it is the heavy one; from "
        f"{FIRST_DEADLINE} to {LAST_DEADLINE}, so that every ts fits in 64-bit "
        f"nanoseconds since 1970 (default {DEADLINE})")
    parser.add_argument(
        "--fund", action="store_true",
        help="start with a deposit and an issue row per account, enough for "
        "every order (for replay --ledger)")
    parser.add_argument("--format", choices=("csv", "ndjson"), default="csv",
                        help="csv (with a header row) or ndjson (default csv)")
    parser.add_argument("--out", metavar="FILE", default="-", help="output file (default stdout)")


def run(args: argparse.Namespace) -> int:

    carbon = args.profile == "carbon"
    accounts = args.accounts if args.accounts is not None else (200 if carbon else 50)
    if args.messages < 0 or accounts < 1:
        raise UsageError("--messages must be >= 0 and --accounts >= 1")
    if not 1 <= args.depth_ticks <= MAX_DEPTH_TICKS:
        raise UsageError(f"--depth-ticks must be from 1 to {MAX_DEPTH_TICKS} (so that prices "
                         f"stay positive), not {args.depth_ticks}")
    if not carbon:
        for option, value in (("--market-makers", args.market_makers), ("--deadline",
                                                                        args.deadline)):
            if value is not None:
                raise UsageError(f"{option} applies to --profile carbon only")
    if args.instruments is None:
        instruments = CARBON_INSTRUMENTS if carbon else ("CEA25", )
    else:
        instruments = tuple(s for s in args.instruments.split(",") if s)
    market = default_market()
    unknown = [s for s in instruments if s not in market]
    if unknown or not instruments:
        raise UsageError(f"unknown instrument(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(market.instruments)}")
    if len(set(instruments)) != len(instruments):
        raise UsageError("--instruments names an instrument twice")
    try:
        mix = None if args.mix is None else parse_mix(args.mix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    shape = args.depth_shape or ("geometric" if carbon else "uniform")
    if carbon:
        futures = [s for s in instruments if market[s].kind != "spot"]
        if futures:
            raise UsageError(
                f"the carbon profile trades spot instruments only, not {', '.join(futures)}")
        makers = 4 if args.market_makers is None else args.market_makers
        if makers < 0:
            raise UsageError("--market-makers must be >= 0")
        deadline = DEADLINE
        if args.deadline is not None:
            try:
                deadline = date.fromisoformat(args.deadline)
            except ValueError:
                raise UsageError(f"--deadline {args.deadline!r} is not a date YYYY-MM-DD") from None
            problem = deadline_problem(deadline)
            if problem is not None:
                raise UsageError(f"--deadline {args.deadline}: {problem}")
        rows = generate_carbon(args.messages, seed=args.seed, mix=mix, instruments=instruments,
                               entities=accounts, market_makers=makers,
                               depth_ticks=args.depth_ticks, depth_shape=shape, deadline=deadline,
                               fund=args.fund)
        header = CARBON_HEADER
    elif mix is None and shape == "uniform":
        rows = generate_mixed(args.messages, seed=args.seed, instruments=instruments,
                              accounts=accounts, depth_ticks=args.depth_ticks, fund=args.fund)
        header = HEADER
    else:
        rows = generate_kinds(args.messages, mix=mix or MIXED_MIX, seed=args.seed,
                              instruments=instruments, accounts=accounts,
                              depth_ticks=args.depth_ticks, depth_shape=shape, fund=args.fund)
        header = KINDS_HEADER
    try:
        write_rows(args.out, rows, args.format, header)
    except BrokenPipeError:
        raise  # the reader went away (``| head``): output cut short, status 0
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0
