"""Engine against the plain matcher, in one process, on the same decoded commands.

Run as a worker (``python -m benchmarks.throughput FILE``) so that nothing the parent
holds (generated rows, earlier results) weighs on the timings. The worker

1. decodes the file once (``read_order_file``, default self-trade prevention);
2. checks agreement: the engine with stp ``none`` (decoded again with
   ``default_stp="none"``) must produce exactly the plain matcher's trades, in order,
   as ``(aggressor id, resting id, price in ticks, qty)``;
3. times ``repeat`` rounds of the plain matcher and the full engine (default stp,
   ``cancel_resting``) on the same command list, alternating which goes first, with the
   garbage collector paused as ``gateway.replay`` does; every run is checked against the
   first (same trades, same state hash), so a fast wrong answer cannot count;
4. runs the reference ``NaiveBook`` on a prefix of the commands (it is O(n log n) per
   command) and checks that its events and state hash equal ``FastBook``'s.

The ratio is engine speed over plain speed (``plain_s / engine_s``), per round, so both
sides of each ratio share the same moment of a noisy machine.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from exchange import Engine, FastBook, NaiveBook, default_market
from exchange.events import TradeExecuted
from exchange.orderfile import read_order_file

from .plain import PlainMatcher
from .stats import emit, spread

__all__ = ["engine_trades", "first_difference", "run_plain", "run_engine", "check_agreement",
           "check_naive", "measure"]

_CHUNK = 1 << 16  # the chunk size of gateway.replay: events are dropped per chunk


def engine_trades(events: list) -> list[tuple]:
    """Return the trades among *events* as the plain matcher records them.

    Each is ``(aggressor order id, resting order id, price in ticks, qty)``.
    """
    return [(e.buy_order_id, e.sell_order_id, e.price, e.qty) if e.aggressor == "buy"
            else (e.sell_order_id, e.buy_order_id, e.price, e.qty)
            for e in events if type(e) is TradeExecuted]


def first_difference(left: list, right: list) -> int | None:
    """Return the first index where *left* and *right* differ (length included), or ``None``.

    >>> first_difference([1, 2, 3], [1, 2, 3]), first_difference([1, 2], [1, 5]), first_difference([1], [1, 2])
    (None, 1, 1)
    """
    if left == right:
        return None
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return index
    return min(len(left), len(right))


def run_plain(commands: list) -> tuple[float, PlainMatcher]:
    """Run the plain matcher over *commands*; return ``(seconds, matcher)``."""
    matcher = PlainMatcher()
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        matcher.run(commands)
        return time.perf_counter() - started, matcher
    finally:
        gc.enable()


def run_engine(commands: list, *, book=FastBook, keep: str | None = None
               ) -> tuple[float, Engine, list]:
    """Run a fresh engine over *commands* the way ``gateway.replay`` does.

    Events go to a list that is emptied every 65,536 commands. *keep* ``"trades"`` keeps
    the trades (as ``engine_trades`` tuples), ``"all"`` every event; the keeping happens
    per chunk, outside the per-command loop. Return ``(seconds, engine, kept)``.
    """
    engine = Engine(default_market(), book=book)
    submit = engine.submit
    out: list = []
    kept: list = []
    total = len(commands)
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for start in range(0, total, _CHUNK):
            for command in commands[start:start + _CHUNK]:
                submit(command, out)
            if keep == "trades":
                kept.extend(engine_trades(out))
            elif keep == "all":
                kept.extend(out)
            out.clear()
        return time.perf_counter() - started, engine, kept
    finally:
        gc.enable()


def _resting(engine: Engine) -> int:
    return sum(1 for symbol in engine.market.instruments for is_buy in (True, False)
               for _ in engine.book(symbol).orders(is_buy))


def _engine_facts(engine: Engine) -> dict:
    return {"accepted": engine.accepted, "rejected": engine.rejected, "trades": engine.trades,
            "volume": engine.volume, "resting": _resting(engine),
            "state_hash": engine.state_hash()}


def check_agreement(commands_none: list, plain_trades: list[tuple]) -> dict:
    """Run the engine with stp ``none`` and compare its trades with *plain_trades*.

    Return a record with ``ok``; when they differ, ``first_difference`` and both
    sides' trade there.
    """
    seconds, engine, trades = run_engine(commands_none, keep="trades")
    index = first_difference(trades, plain_trades)
    record = {"ok": index is None and bool(plain_trades), "stp": "none",
              "engine_trades": len(trades), "plain_trades": len(plain_trades),
              "volume": sum(t[3] for t in trades), "engine_s": round(seconds, 6)}
    if index is not None:
        record["first_difference"] = index
        record["engine_trade"] = list(trades[index]) if index < len(trades) else None
        record["plain_trade"] = list(plain_trades[index]) if index < len(plain_trades) else None
    elif not plain_trades:
        record["problem"] = "no trades at all: the agreement check would prove nothing"
    return record


def check_naive(commands: list, prefix: int) -> dict:
    """Run the engine with ``NaiveBook`` and with ``FastBook`` on the first *prefix* commands.

    Both must give equal events and state hashes. Return timings and the verdict.
    """
    head = commands[:prefix]
    naive_s, naive, naive_events = run_engine(head, book=NaiveBook, keep="all")
    fast_s, fast, fast_events = run_engine(head, keep="all")
    index = first_difference(naive_events, fast_events)
    same_hash = naive.state_hash() == fast.state_hash()
    record = {"ok": index is None and same_hash, "messages": len(head),
              "naive_s": round(naive_s, 6), "fast_s": round(fast_s, 6),
              "naive_msgs_per_s": round(len(head) / naive_s) if naive_s else 0,
              "fast_msgs_per_s": round(len(head) / fast_s) if fast_s else 0,
              "events": len(fast_events), "events_equal": index is None,
              "state_hash_equal": same_hash}
    if index is not None:
        record["first_difference"] = index
    return record


def measure(path: str | Path, *, repeat: int = 3, naive_prefix: int = 20_000) -> dict:
    """Run the whole comparison on the order file at *path* (see the module docstring)."""
    failures: list[str] = []
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    commands = read_order_file(path)
    decode_s = time.perf_counter() - started
    gc.enable()
    messages = len(commands)

    plain_trades: list[tuple] | None = None  # the first plain run's: every run must equal it
    plain_runs: list[float] = []
    engine_runs: list[float] = []
    ratios: list[float] = []
    engine_facts: dict | None = None
    plain_facts: dict | None = None
    for round_no in range(repeat):
        order = ("plain", "engine") if round_no % 2 == 0 else ("engine", "plain")
        times = {}
        for contender in order:
            if contender == "plain":
                seconds, matcher = run_plain(commands)
                facts = {"trades": len(matcher.trades),
                         "volume": sum(t[3] for t in matcher.trades),
                         "resting": len(matcher.orders)}
                if plain_trades is None:
                    plain_trades = matcher.trades
                elif matcher.trades != plain_trades:
                    failures.append(f"plain run {round_no + 1}: trades differ from its first run")
                plain_facts = plain_facts or facts
                del matcher
            else:
                seconds, engine, _ = run_engine(commands)
                facts = _engine_facts(engine)
                if facts["accepted"] + facts["rejected"] != messages:
                    failures.append(f"engine run {round_no + 1}: accepted + rejected != messages")
                if engine_facts is not None and facts != engine_facts:
                    failures.append(f"engine run {round_no + 1}: result differs from run 1 "
                                    f"({facts['state_hash']} != {engine_facts['state_hash']})")
                engine_facts = engine_facts or facts
                del engine
            times[contender] = seconds
        plain_runs.append(times["plain"])
        engine_runs.append(times["engine"])
        ratios.append(times["plain"] / times["engine"])

    commands_none = read_order_file(path, default_stp="none")
    agreement = check_agreement(commands_none, plain_trades or [])
    del commands_none
    if not agreement["ok"]:
        failures.append(
            "agreement: engine (stp none) trades differ from the plain matcher's: "
            + (agreement.get("problem") or
               f"{agreement['engine_trades']} vs {agreement['plain_trades']} trades, first "
               f"difference at #{agreement['first_difference']}: engine "
               f"{agreement['engine_trade']} != plain {agreement['plain_trade']}"))

    naive = check_naive(commands, min(naive_prefix, messages)) if naive_prefix > 0 else None
    if naive is not None and not naive["ok"]:
        failures.append(f"naive: NaiveBook and FastBook differ on the first {naive['messages']} "
                        f"commands (events equal: {naive['events_equal']}, "
                        f"state hash equal: {naive['state_hash_equal']})")

    def contender(runs: list[float], facts: dict | None) -> dict:
        return {"seconds": spread(runs), "msgs_per_s": spread([messages / s for s in runs], 0),
                "runs_s": [round(s, 6) for s in runs], **(facts or {})}

    return {
        "file": str(path), "messages": messages, "repeat": repeat,
        "decode_s": round(decode_s, 6), "decode_msgs_per_s": round(messages / decode_s),
        "plain": contender(plain_runs, plain_facts),
        "engine": {**contender(engine_runs, engine_facts), "stp": "cancel_resting"},
        "ratio": {**spread(ratios, 4), "runs": [round(r, 4) for r in ratios],
                  "of_medians": round(spread(plain_runs)["median"] / spread(engine_runs)["median"], 4)},
        "agreement": agreement, "naive": naive, "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description="Engine vs plain matcher on one order file.")
    parser.add_argument("file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive-prefix", type=int, default=20_000)
    args = parser.parse_args(argv)
    emit(measure(args.file, repeat=args.repeat, naive_prefix=args.naive_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
