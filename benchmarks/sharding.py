"""``python -m benchmarks.sharding [--quick] [--out DIR]``: instruments split across engine
processes (shards), modelled with the real engine and ledger, and what moving cash
between shards costs (docs/sharding.md is the design this measures).

Each shard is an OS process with its own ``exchange.Engine`` (ledger on, as ``carbonx
replay --ledger`` runs it) over a market of only its instruments: the default market's
``CEA23``, ``CEA24``, ``CEA25`` and ``CCER`` with their own terms (tick, band, fees,
T+1), open at all hours, without position limits. Instrument *i* of that list lives on
shard ``i mod S``; each shard gets its own command stream (msgpack-encoded, as a journal
frame or a JetStream message carries it, decoded before the clock starts).

One seeded stream per share of cross-shard orders (0%, 1%, 10%) is split across 1, 2
and 4 shards: 40 trading accounts place limit orders around 60.00 on all four
instruments (a quarter of them marketable, a third of those ioc), and a fifth of the
rows cancel one of their live orders; the stream has a few trading days, each ended by
an ``eod`` on every shard.

Risk per shard, cash allocated to shards: every trading account's cash is split evenly
across the shards (and it never runs short on any of them); 16 buyer accounts keep all
their cash on the shard of a home instrument, and the flagged share of the stream is
their buys of an instrument on another shard. Before any buy the shard compares what the
order will hold (``exchange.market.cash_needed``) with the account's available cash
there; when that is short it asks a lender shard over a pipe for exactly the shortfall:
the lender runs a ``Withdraw`` and answers, the requester runs a ``Deposit`` of what was
lent (both legs with the transfer's ``command_id``) and only then submits the order. A
shard serves lending requests every 32 commands (4 and 256 are measured too), while it
waits for an answer of its own, and while it waits at a barrier. The end of a day is a
barrier: every shard stops at its ``eod``, the parent sums the cash statements of all
shards while nothing moves, then all go on.

Measured: aggregate throughput (orders: new orders and cancels, over all shards; wall
clock from the start signal to the last shard's end, barriers included) per shard count
and share, rounds taking turns; each top-up's round trip (request to deposit done) with
the lender busy on its stream; the same with an idle lender (a shard with no stream of
its own), and a bare pipe round trip between two processes beside it.

Checked, exactly, in integers: every shard count gives the 1-shard run's trades, volume,
resting books and rejections per instrument, and each account's cash and allowances
summed over the shards; the cash of all shards equals what was deposited (participants'
cash plus the fees ``@exchange`` took), at every end of day and at the end; each shard's
``engine.check()`` passes; the cross-shard path ran when its share is over 0. A broken
check exits with status 1. Writes ``results/sharding.json`` (``sharding-quick.json``
with ``--quick``) and a ``BENCHMARK-RESULT`` line.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import select
import statistics
import sys
import time
import tomllib
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import msgspec

from exchange import Engine, default_market
from exchange.accounts import SYSTEM_ACCOUNTS
from exchange.commands import (AnyCommand, CancelOrder, Deposit, EndOfDay, IssueAllowances,
                               PlaceOrder, Withdraw)
from exchange.events import CashWithdrawn, CommandRejected, Event
from exchange.ledger import FEES
from exchange.market import Market, cash_needed, format_cash, parse_market

from .stats import emit, spread

__all__ = [
    "FULL", "QUICK", "INSTRUMENTS", "SHARD_COUNTS", "PATH_PCTS", "Stream", "shard_market",
    "generate", "idle_stream", "partition", "run_config", "compare", "run_model", "render",
    "main"
]

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
INSTRUMENTS = ("CEA23", "CEA24", "CEA25", "CCER")  # instrument i lives on shard i mod S
SHARD_COUNTS = (1, 2, 4)
PATH_PCTS = (0, 1, 10)  # share of the stream's orders that need cash from another shard
CURRENCY = "CNY"
MID = 6000  # ticks: 60.00 CNY a tonne
TRADER_CASH = 40_000_000_000  # fen a trading account (400,000,000.00 CNY), split over shards
BUYER_CASH = 40_000_000_000  # fen a buyer account, all on its home instrument's shard
ISSUED = 10_000_000  # tonnes of each instrument a trading account is issued
POLL_EVERY = 32  # a shard looks for lending requests every 32 commands (a power of two)
POLL_SWEEP = (4, 256)  # other intervals, measured at 1% on 2 shards
SWEEP_PCT = 1
FULL = {"orders": 300_000, "rounds": 3, "days": 4, "traders": 40, "buyers": 16,
        "idle_round_trips": 2_000, "seed": 1}
QUICK = {"orders": 60_000, "rounds": 1, "days": 2, "traders": 40, "buyers": 16,
         "idle_round_trips": 300, "seed": 1}

_DAYS = msgspec.msgpack.Decoder(list[list[AnyCommand]])
_FUNDING = msgspec.msgpack.Decoder(list[AnyCommand])
_NEEDS = msgspec.msgpack.Decoder(list[list[int]])
# Messages between shards: (LEND, account, amount, transfer) asks; (LENT, transfer,
# amount) answers, 0 when the lender could not.
LEND, LENT = "lend", "lent"

# One row of a stream: (index of the instrument in INSTRUMENTS, the command, the cash
# the command will hold if it is a buy, in fen; else 0).
Row = tuple[int, AnyCommand, int]


# --- the markets --------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    """*value* (str, int or bool, as the default market's instrument tables hold) in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML for {value!r}")


@functools.cache
def shard_market(symbols: tuple[str, ...]) -> Market:
    """A market of only *symbols*, each with the default market's own terms (its
    ``[defaults]`` and instrument tables), open at all hours (no ``[schedule]``) and
    without position limits (no ``[limits]``).

    >>> market = shard_market(("CEA25", ))
    >>> sorted(market.instruments), market["CEA25"] == default_market()["CEA25"]
    (['CEA25'], True)
    """
    source = tomllib.loads(default_market().text)
    lines = ["[defaults]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in source["defaults"].items()]
    for symbol in symbols:
        lines.append(f"[instruments.{json.dumps(symbol)}]")
        lines += [f"{key} = {_toml_value(value)}"
                  for key, value in source["instruments"][symbol].items()]
    market = parse_market("\n".join(lines) + "\n", f"<shard of {', '.join(symbols)}>")
    full = default_market()
    for symbol in market.instruments:
        if market[symbol] != full[symbol]:
            raise AssertionError(f"{symbol}: the shard's terms differ from the default market's")
    return market


def _symbols_of(index: int, shards: int) -> tuple[str, ...]:
    """The instruments shard *index* of *shards* holds."""
    return tuple(s for i, s in enumerate(INSTRUMENTS) if i % shards == index)


# --- the streams --------------------------------------------------------------------------


@dataclass
class Stream:
    """A seeded command stream over all instruments, before it is split into shards."""

    pct: int  # the share of orders flagged as buyer orders on another shard (percent)
    days: list[list[Row]]  # each day's rows; an eod ends every day
    traders: list[str]  # accounts whose cash is split evenly across the shards
    buyers: dict[str, int]  # account -> index of its home instrument (all its cash there)
    flagged: int  # buyer orders in the stream

    @property
    def orders(self) -> int:
        """New orders and cancels in the stream."""
        return sum(len(day) for day in self.days)

    @property
    def deposited(self) -> int:
        """Cash deposited in all, in fen, however the stream is split."""
        return len(self.traders) * TRADER_CASH + len(self.buyers) * BUYER_CASH


def _price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


@functools.cache
def _buy_terms() -> dict[str, tuple[int, int]]:
    """Per instrument, what sizes a buy's hold (``exchange.market.cash_needed``): the tick
    value and the larger of the maker and taker fee rates."""
    market = default_market()
    return {s: (market[s].tick_value, max(market[s].maker_fee, market[s].taker_fee))
            for s in INSTRUMENTS}


def generate(settings: dict, pct: int) -> Stream:
    """The stream of *settings* (orders, days, traders, buyers, seed) with *pct* percent
    of its orders buyer orders that need cash from another shard when split.

    >>> stream = generate({"orders": 200, "days": 2, "traders": 4, "buyers": 4, "seed": 1}, 10)
    >>> stream.orders, stream.flagged, len(stream.days)
    (200, 20, 2)
    """
    rng = random.Random(f"{settings['seed']}-{pct}")
    total, days = settings["orders"], settings["days"]
    traders = [f"trader{n:02d}" for n in range(settings["traders"])]
    buyers = {f"buyer{n:02d}": n % len(INSTRUMENTS) for n in range(settings["buyers"])}
    buyer_names = list(buyers)
    flagged = set(rng.sample(range(total), total * pct // 100))
    terms = _buy_terms()
    needs: dict[tuple[str, int, int], int] = {}  # (symbol, ticks, qty) -> what a buy holds
    live: list[tuple[str, str, int]] = []  # (order id, account, instrument) that may rest
    rows: list[Row] = []
    for n in range(total):
        if n in flagged:
            account = rng.choice(buyer_names)
            # an instrument an odd number of places from home: another shard at 2 or 4
            index = (buyers[account] + rng.choice((1, 3))) % len(INSTRUMENTS)
            side, ticks = "buy", MID + rng.randint(-15, 10)
        elif live and rng.random() < 0.2:
            order_id, owner, index = live.pop(rng.randrange(len(live)))
            rows.append((index, CancelOrder(order_id=order_id, account=owner,
                                            instrument=INSTRUMENTS[index]), 0))
            continue
        else:
            account = rng.choice(traders)
            index = rng.randrange(len(INSTRUMENTS))
            side = rng.choice(("buy", "sell"))
            marketable = rng.random() < 0.25  # priced through the mid, else resting near it
            away = rng.randint(1, 20) if marketable else -rng.randint(0, 30)
            ticks = MID + away if side == "buy" else MID - away
            tif = "ioc" if marketable and rng.random() < 1 / 3 else "gtc"
        symbol, qty = INSTRUMENTS[index], rng.randint(1, 1000)
        order_id = f"o{n}"
        if n in flagged:
            tif = "gtc"  # a buyer's order is never cancelled
        elif tif == "gtc":
            live.append((order_id, account, index))
        need = 0
        if side == "buy":
            key = (symbol, ticks, qty)
            need = needs.get(key, 0)
            if not need:
                need = needs[key] = cash_needed(ticks, qty, *terms[symbol])
        rows.append((index, PlaceOrder(order_id=order_id, account=account, instrument=symbol,
                                       side=side, price=_price(ticks), qty=qty, tif=tif), need))
    size = -(-total // days)
    return Stream(pct=pct, days=[rows[d * size:(d + 1) * size] for d in range(days)],
                  traders=traders, buyers=buyers, flagged=len(flagged))


def idle_stream(round_trips: int) -> Stream:
    """A stream for the idle lender: *round_trips* resting buys on ``INSTRUMENTS[0]`` by
    buyers whose cash is on ``INSTRUMENTS[1]``'s shard, nothing else; split in two, the
    lender's shard has no stream of its own and waits for requests."""
    buyers = {f"idle{n}": 1 for n in range(4)}
    names = list(buyers)
    symbol, ticks, qty = INSTRUMENTS[0], MID - 100, 100
    need = cash_needed(ticks, qty, *_buy_terms()[symbol])
    rows: list[Row] = [(0, PlaceOrder(order_id=f"i{n}", account=names[n % 4], instrument=symbol,
                                      side="buy", price=_price(ticks), qty=qty), need)
                       for n in range(round_trips)]
    return Stream(pct=100, days=[rows], traders=[], buyers=buyers, flagged=round_trips)


def _funding(stream: Stream, index: int, shards: int) -> list[AnyCommand]:
    """What shard *index* of *shards* holds before the stream: its share of every
    trading account's cash and its instruments' allowances; the cash of the buyers whose
    home instrument it holds."""
    commands: list[AnyCommand] = []
    share = TRADER_CASH // shards + (TRADER_CASH % shards if index == 0 else 0)
    for account in stream.traders:
        commands.append(Deposit(account=account, currency=CURRENCY,
                                amount=format_cash(CURRENCY, share)))
        commands += [IssueAllowances(account=account, instrument=symbol, qty=ISSUED)
                     for symbol in _symbols_of(index, shards)]
    commands += [Deposit(account=account, currency=CURRENCY,
                         amount=format_cash(CURRENCY, BUYER_CASH))
                 for account, home in stream.buyers.items() if home % shards == index]
    return commands


def partition(stream: Stream, shards: int) -> list[list[list[Row]]]:
    """Each shard's days: the rows of its instruments, in stream order.

    >>> stream = generate({"orders": 400, "days": 2, "traders": 4, "buyers": 4, "seed": 1}, 1)
    >>> parts = partition(stream, 4)
    >>> sum(len(day) for part in parts for day in part) == stream.orders
    True
    >>> all(row[0] % 4 == shard for shard, part in enumerate(parts) for day in part
    ...     for row in day)
    True
    """
    parts: list[list[list[Row]]] = [[[] for _ in stream.days] for _ in range(shards)]
    for day, rows in enumerate(stream.days):
        for row in rows:
            parts[row[0] % shards][day].append(row)
    return parts


# --- a shard process --------------------------------------------------------------------


class _Shard:
    """One shard: its engine, its links to the other shards and the parent, what it
    measured. Runs in its own process."""

    def __init__(self, index: int, shards: int, engine: Engine, control: Connection,
                 peers: dict[int, Connection], homes: dict[str, int], poll_every: int) -> None:
        self.index, self.shards, self.engine = index, shards, engine
        self.mask = poll_every - 1
        ledger = engine.ledger
        assert ledger is not None
        self.ledger = ledger
        self.control, self.peers, self.homes = control, peers, homes
        self.out: list[Event] = []
        self.by_fd = {conn.fileno(): conn for conn in peers.values()}
        # poll objects kept for the shard's life: multiprocessing's wait() makes a selector
        # a call, several times the cost of the system call itself
        self.peer_poll = select.poll()
        self.all_poll = select.poll()
        for fd in self.by_fd:
            self.peer_poll.register(fd, select.POLLIN)
            self.all_poll.register(fd, select.POLLIN)
        self.all_poll.register(control.fileno(), select.POLLIN)
        self.topup_ns: list[int] = []
        self.topup_fen = 0
        self.lent = 0
        self.lent_fen = 0
        self.refused = 0
        self.barrier_ns = 0
        self.eod_ns = 0
        self.serial = 0

    # lending ---------------------------------------------------------------------------
    def _lend(self, conn: Connection, account: str, amount: int, transfer: str) -> None:
        """Withdraw *amount* of *account*'s cash here, if it has it, and answer."""
        out = self.out
        self.engine.submit(Withdraw(account=account, currency=CURRENCY,
                                    amount=format_cash(CURRENCY, amount),
                                    command_id=transfer), out)
        lent = amount if type(out[-1]) is CashWithdrawn else 0
        if lent:
            self.lent += 1
            self.lent_fen += lent
        conn.send((LENT, transfer, lent))

    def _serve(self, fds: Iterable[int]) -> None:
        """Answer the lending requests waiting on the peer links *fds*; forget a link
        whose shard has ended (they end only once all are done)."""
        for fd in fds:
            conn = self.by_fd[fd]
            try:
                message = conn.recv()
            except EOFError:
                self.peer_poll.unregister(fd)
                self.all_poll.unregister(fd)
                continue
            if message[0] != LEND:
                raise RuntimeError(f"shard {self.index}: unexpected {message!r}")
            self._lend(conn, message[1], message[2], message[3])

    def _answer(self, lender: Connection, transfer: str) -> int:
        """Wait for *lender*'s answer to *transfer*, serving other requests meanwhile."""
        while True:
            for fd, _ in self.peer_poll.poll():
                conn = self.by_fd[fd]
                message = conn.recv()
                if message[0] == LEND:
                    self._lend(conn, message[1], message[2], message[3])
                elif conn is lender and message[1] == transfer:
                    return message[2]
                else:
                    raise RuntimeError(f"shard {self.index}: unexpected {message!r}")

    def top_up(self, account: str, amount: int) -> None:
        """Bring *amount* of *account*'s cash here from another shard: its home shard if
        it has one, else each other shard in turn until one can lend."""
        started = time.perf_counter_ns()
        self.serial += 1
        transfer = f"t{self.index}.{self.serial}"
        home = self.homes.get(account)
        lenders = ([home % self.shards] if home is not None else
                   [(self.index + k) % self.shards for k in range(1, self.shards)])
        for lender in lenders:
            if lender == self.index:
                continue
            conn = self.peers[lender]
            conn.send((LEND, account, amount, transfer))
            if self._answer(conn, transfer):
                break
            self.refused += 1
        else:
            return  # nobody could lend: the order is refused, and the checks say so
        self.engine.submit(Deposit(account=account, currency=CURRENCY,
                                   amount=format_cash(CURRENCY, amount), command_id=transfer),
                           self.out)
        self.topup_ns.append(time.perf_counter_ns() - started)
        self.topup_fen += amount

    # the stream ------------------------------------------------------------------------
    def run_day(self, commands: list[AnyCommand], needs: list[int]) -> None:
        """Run one day's commands: a buy short of cash here is topped up first."""
        submit = self.engine.submit
        holding = self.ledger.holding
        out = self.out
        peers = bool(self.by_fd)
        poll = self.peer_poll.poll
        mask = self.mask
        for n, (command, need) in enumerate(zip(commands, needs)):
            if need:
                account = command.account  # type: ignore[union-attr]  # a buy: PlaceOrder
                cash = holding(account, CURRENCY)
                short = need - (0 if cash is None else cash.available)
                if short > 0:
                    self.top_up(account, short)
            submit(command, out)
            if not n & mask:
                out.clear()
                if peers:
                    ready = poll(0)
                    if ready:
                        self._serve(fd for fd, _ in ready)
        out.clear()

    def until(self, kind: str) -> tuple:
        """Serve lending requests until the parent sends a message of *kind*."""
        control = self.control.fileno()
        while True:
            for fd, _ in self.all_poll.poll():
                if fd != control:
                    self._serve((fd, ))
                    continue
                message = self.control.recv()
                if message[0] != kind:
                    raise RuntimeError(f"shard {self.index}: {message!r}, waiting for {kind}")
                return message

    def end_of_day(self, day: int) -> None:
        """The barrier: arrive, run the eod and state the cash when all have arrived,
        go on when every statement is in. ``barrier_ns`` counts the waiting (lending
        meanwhile), ``eod_ns`` the eod's own work."""
        clock = time.perf_counter_ns
        started = clock()
        self.control.send(("arrived", day))
        self.until("eod")
        ended = clock()
        self.engine.submit(EndOfDay(), self.out)
        self.out.clear()
        stated = clock()
        self.eod_ns += stated - ended
        self.control.send(("statement", day, self.statement()))
        self.until("go")
        self.barrier_ns += ended - started + clock() - stated

    def statement(self) -> dict[str, int]:
        """The cash on this shard, in fen: all of it, the fees', and the ledger's supply."""
        total = fees = 0
        for name, account in self.ledger.accounts.items():
            cash = account.holdings.get(CURRENCY)
            if cash is not None:
                total += cash.total
                if name == FEES:
                    fees += cash.total
        return {"total": total, "fees": fees, "supply": self.ledger.supply.get(CURRENCY, 0)}

    def summary(self) -> dict[str, Any]:
        """The shard's end state for the parent's checks (after the clock stopped)."""
        engine, ledger = self.engine, self.ledger
        try:
            engine.check()
            problem = None
        except AssertionError as broken:
            problem = f"shard {self.index}: engine.check() failed: {broken!r}"
        live: dict[str, list[tuple[str, bool, int, int, int]]] = {
            s: [] for s in engine.market.instruments}
        for order in engine.live_orders():
            live[order.instrument].append(
                (order.order_id, order.is_buy, order.price, order.qty, order.visible))
        books = {}
        for symbol, orders in live.items():
            book = engine.book(symbol)
            digest = hashlib.blake2b(repr(sorted(orders)).encode(), digest_size=8).hexdigest()
            books[symbol] = {"trades": book.trade_count, "volume": book.volume,
                             "last_price": book.last_price, "resting": len(orders),
                             "book": digest}
        holdings = {f"{account}/{asset}": available + held + locked + pledged
                    for account, asset, available, held, locked, pledged in ledger.holdings()}
        return {"check": problem, "books": books, "holdings": holdings,
                "rejects": dict(engine.rejects), "cash": self.statement()}


def _shard_main(index: int, shards: int, market_text: str, funding: bytes, days: bytes,
                needs: bytes, homes: dict[str, int], poll_every: int, control: Connection,
                peers: dict[int, Connection]) -> None:
    """A shard process: set up, wait for the start, run the days with their barriers,
    say when done, serve until stopped, then send the end state."""
    gc.disable()  # as carbonx replay does while it runs
    try:
        engine = Engine(parse_market(market_text, f"<shard {index}>"), ledger=True)
        out: list[Event] = []
        for command in _FUNDING.decode(funding):
            engine.submit(command, out)
        refused = [e for e in out if type(e) is CommandRejected]
        if refused:
            raise RuntimeError(f"shard {index}: funding refused: {refused[0]!r}")
        day_commands, day_needs = _DAYS.decode(days), _NEEDS.decode(needs)
        shard = _Shard(index, shards, engine, control, peers, homes, poll_every)
        control.send(("ready", ))
        shard.until("start")
        started = time.perf_counter_ns()
        for day, (commands, day_need) in enumerate(zip(day_commands, day_needs)):
            shard.run_day(commands, day_need)
            shard.end_of_day(day)
        elapsed = time.perf_counter_ns() - started
        control.send(("done", {
            "orders": sum(len(c) for c in day_commands), "elapsed_ns": elapsed,
            "barrier_ns": shard.barrier_ns, "eod_ns": shard.eod_ns, "topup_ns": shard.topup_ns,
            "topup_fen": shard.topup_fen, "lent": shard.lent, "lent_fen": shard.lent_fen,
            "refused": shard.refused}))
        shard.until("stop")
        control.send(("summary", shard.summary()))
    except BaseException:
        control.send(("error", traceback.format_exc()))
        raise


# --- the parent: start, barriers, stop ----------------------------------------------------


def _context() -> Any:
    """forkserver where there is one, else spawn: a shard starts from a clean process
    that holds none of the parent's streams. Measured: forked straight from the parent,
    whose heap holds every stream, a shard ran its orders 15-40% slower (most likely its
    allocations writing to pages it still shared with the parent)."""
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        # the engine's modules; this one is imported by each shard (preloaded, it would be
        # imported twice when it is the main module, ``python -m``)
        context.set_forkserver_preload(["exchange.engine", "msgspec"])
        return context
    return mp.get_context("spawn")


def _gather(controls: Sequence[Connection], kind: str, processes: Sequence[Any],
            timeout: float = 600.0) -> list[tuple[Any, ...]]:
    """One message of *kind* from every shard, in shard order; raise if a shard failed."""
    got: dict[int, tuple[Any, ...]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(controls):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"shards {sorted(set(range(len(controls))) - set(got))} sent "
                               f"no {kind!r} in {timeout:.0f} s")
        ready = wait([c for i, c in enumerate(controls) if i not in got], min(left, 1.0))
        for index, conn in enumerate(controls):
            if conn not in ready:
                continue
            try:
                message = conn.recv()
            except EOFError:
                raise RuntimeError(f"shard {index} ended without a {kind!r}") from None
            if message[0] == "error":
                raise RuntimeError(f"shard {index} failed:\n{message[1]}")
            if message[0] != kind:
                raise RuntimeError(f"shard {index}: {message[0]!r}, expected {kind!r}")
            got[index] = message
        for index, process in enumerate(processes):
            if index not in got and not process.is_alive() and not controls[index].poll():
                raise RuntimeError(f"shard {index} exited ({process.exitcode}) before {kind!r}")
    return [got[i] for i in range(len(controls))]


def _percentiles(values_ns: list[int]) -> dict[str, float | int]:
    """p50, p90, p99 and max (nearest rank) of *values_ns*, in microseconds."""
    if not values_ns:
        return {"n": 0}
    ordered = sorted(values_ns)

    def rank(percent: int) -> float:
        return round(ordered[max(0, -(-len(ordered) * percent // 100) - 1)] / 1000, 1)

    return {"n": len(ordered), "p50_us": rank(50), "p90_us": rank(90), "p99_us": rank(99),
            "max_us": round(ordered[-1] / 1000, 1)}


def run_config(stream: Stream, shards: int, *, poll_every: int = POLL_EVERY) -> dict[str, Any]:
    """Run *stream* split across *shards* processes, each looking for lending requests
    every *poll_every* commands (a power of two); return what was measured and the
    combined end state (``compare`` checks it)."""
    if poll_every < 1 or poll_every & (poll_every - 1):
        raise ValueError(f"poll_every {poll_every}: a power of two")
    context = _context()
    parts = partition(stream, shards)
    links: dict[tuple[int, int], tuple[Connection, Connection]] = {
        (a, b): context.Pipe() for a in range(shards) for b in range(a + 1, shards)}
    controls: list[Connection] = []
    children: list[Connection] = [end for pair in links.values() for end in pair]
    processes = []
    for index in range(shards):
        peers = {}
        for (a, b), (end_a, end_b) in links.items():
            if a == index:
                peers[b] = end_a
            elif b == index:
                peers[a] = end_b
        mine, theirs = context.Pipe()
        days = [[command for _, command, _ in day] for day in parts[index]]
        needs = [[need for _, _, need in day] for day in parts[index]]
        market = shard_market(_symbols_of(index, shards))
        process = context.Process(
            target=_shard_main, name=f"shard-{index}",
            args=(index, shards, market.text, msgspec.msgpack.encode(_funding(stream, index,
                                                                               shards)),
                  msgspec.msgpack.encode(days), msgspec.msgpack.encode(needs), stream.buyers,
                  poll_every, theirs, peers), daemon=True)
        controls.append(mine)
        children.append(theirs)
        processes.append(process)
    try:
        for process in processes:
            process.start()
        for end in children:  # each shard has its own copies now
            end.close()
        _gather(controls, "ready", processes)
        started = time.perf_counter()
        for conn in controls:
            conn.send(("start", ))
        statements: list[dict[str, int]] = []
        for day in range(len(stream.days)):
            _gather(controls, "arrived", processes)
            for conn in controls:
                conn.send(("eod", day))
            said = [m[2] for m in _gather(controls, "statement", processes)]
            statements.append({key: sum(s[key] for s in said) for key in said[0]})
            for conn in controls:
                conn.send(("go", day))
        done = [m[1] for m in _gather(controls, "done", processes)]
        wall = time.perf_counter() - started
        for conn in controls:
            conn.send(("stop", ))
        ends = [m[1] for m in _gather(controls, "summary", processes)]
        for process in processes:
            process.join(60)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
        for end in (*children, *controls):
            end.close()
    return _combined(stream, shards, wall, done, ends, statements)


def _combined(stream: Stream, shards: int, wall: float, done: list[dict], ends: list[dict],
              statements: list[dict[str, int]]) -> dict[str, Any]:
    """One run's figures and end state, summed over its shards."""
    holdings: dict[str, int] = {}
    rejects: dict[str, int] = {}
    books: dict[str, dict] = {}
    for end in ends:
        for key, total in end["holdings"].items():
            holdings[key] = holdings.get(key, 0) + total
        for reason, count in end["rejects"].items():
            rejects[reason] = rejects.get(reason, 0) + count
        books.update(end["books"])
    cash = {key: sum(end["cash"][key] for end in ends) for key in ("total", "fees", "supply")}
    system = sum(total for key, total in holdings.items()
                 if key.split("/")[0] in SYSTEM_ACCOUNTS and key.endswith("/" + CURRENCY))
    topups = [ns for d in done for ns in d["topup_ns"]]
    orders = sum(d["orders"] for d in done)
    return {
        "shards": shards, "pct": stream.pct, "orders": orders, "flagged": stream.flagged,
        "wall_s": round(wall, 4), "orders_per_s": round(orders / wall),
        "shard_orders": [d["orders"] for d in done],
        "shard_busy_s": [round((d["elapsed_ns"] - d["barrier_ns"]) / 1e9, 4) for d in done],
        "shard_barrier_s": [round(d["barrier_ns"] / 1e9, 4) for d in done],
        "shard_eod_s": [round(d["eod_ns"] / 1e9, 4) for d in done],
        "trades": sum(b["trades"] for b in books.values()),
        "volume": sum(b["volume"] for b in books.values()),
        "books": dict(sorted(books.items())), "rejects": dict(sorted(rejects.items())),
        "topups": len(topups), "topup_fen": sum(d["topup_fen"] for d in done),
        "lent": sum(d["lent"] for d in done), "lent_fen": sum(d["lent_fen"] for d in done),
        "refused": sum(d["refused"] for d in done), "round_trip": _percentiles(topups),
        "round_trip_ns": topups,
        "cash": {"deposited": stream.deposited, "total": cash["total"],
                 "participants": cash["total"] - system, "fees": cash["fees"],
                 "supply": cash["supply"]},
        "eod_cash": statements,
        "checks": [end["check"] for end in ends if end["check"]],
        "holdings": holdings,
    }


# --- checks -------------------------------------------------------------------------------


def compare(reference: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """What is wrong with *run* against the 1-shard *reference* of the same stream:
    matching, rejections, every account's cash and allowances, cash conservation (at
    every end of day and at the end), the engines' own checks, the top-ups' books."""
    name = f"{run['pct']}% on {run['shards']} shard(s)"
    found = [f"{name}: {problem}" for problem in run["checks"]]
    if run["books"] != reference["books"]:
        differ = sorted(s for s in reference["books"]
                        if run["books"].get(s) != reference["books"][s])
        found.append(f"{name}: trades, volume or books differ from 1 shard on {differ}")
    if (run["trades"], run["volume"]) != (reference["trades"], reference["volume"]):
        found.append(f"{name}: {run['trades']} trades, {run['volume']} t; 1 shard: "
                     f"{reference['trades']}, {reference['volume']} t")
    if run["rejects"] != reference["rejects"]:
        found.append(f"{name}: rejections {run['rejects']}; 1 shard: {reference['rejects']}")
    mine = {k: v for k, v in run["holdings"].items() if v}
    theirs = {k: v for k, v in reference["holdings"].items() if v}
    if mine != theirs:
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        found.append(f"{name}: holdings differ from 1 shard: {differ[:5]}")
    cash = run["cash"]
    if not cash["total"] == cash["supply"] == cash["deposited"]:
        found.append(f"{name}: cash over all shards {cash['total']} (supply {cash['supply']}), "
                     f"deposited {cash['deposited']}")
    if cash["participants"] + cash["fees"] != cash["deposited"]:
        found.append(f"{name}: participants' cash {cash['participants']} + fees "
                     f"{cash['fees']} != deposited {cash['deposited']}")
    if cash["fees"] != reference["cash"]["fees"]:
        found.append(f"{name}: fees {cash['fees']}; 1 shard: {reference['cash']['fees']}")
    for day, statement in enumerate(run["eod_cash"]):
        if not statement["total"] == statement["supply"] == cash["deposited"]:
            found.append(f"{name}: cash at end of day {day}: {statement}")
    if run["topup_fen"] != run["lent_fen"] or run["topups"] != run["lent"]:
        found.append(f"{name}: {run['topups']} top-ups of {run['topup_fen']} fen, "
                     f"{run['lent']} loans of {run['lent_fen']} fen")
    if run["refused"]:
        found.append(f"{name}: {run['refused']} top-ups refused by their lender")
    if run["pct"] and run["shards"] > 1 and not run["topups"]:
        found.append(f"{name}: the cross-shard path never ran")
    if run["shards"] == 1 and run["topups"]:
        found.append(f"{name}: a single shard topped up cash")
    return found


# --- the model ----------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"cpus": usable, "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "start_method": _context().get_start_method()}


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_model(settings: dict, *, log: bool = True) -> dict[str, Any]:
    """Generate the streams; run every share on every shard count, and the lender's
    other polling intervals, for the rounds (the configurations taking turns); then the
    idle lender and the bare costs (a pipe round trip, a leg, a look); check everything."""
    began = time.perf_counter()
    streams = {pct: generate(settings, pct) for pct in PATH_PCTS}
    runs: dict[tuple[int, int], list[dict]] = {(p, s): [] for p in PATH_PCTS for s in SHARD_COUNTS}
    sweep: dict[int, list[dict]] = {every: [] for every in POLL_SWEEP}
    for number in range(settings["rounds"]):
        for pct in PATH_PCTS:
            for shards in SHARD_COUNTS:
                run = run_config(streams[pct], shards)
                runs[(pct, shards)].append(run)
                if log:
                    _log(f"round {number + 1}/{settings['rounds']}: {pct:>2}% on {shards} "
                         f"shard(s): {run['orders_per_s']:>9,} orders/s, {run['topups']:,} "
                         f"top-ups")
        for every in POLL_SWEEP:
            run = run_config(streams[SWEEP_PCT], 2, poll_every=every)
            sweep[every].append(run)
            if log:
                _log(f"round {number + 1}/{settings['rounds']}: {SWEEP_PCT}% on 2 shard(s), "
                     f"looking every {every}: {run['orders_per_s']:>9,} orders/s")
    idle = run_config(idle_stream(settings["idle_round_trips"]), 2)
    failures: list[str] = []
    for (pct, _), config_runs in runs.items():
        reference = runs[(pct, 1)][0]
        for run in config_runs:
            failures += compare(reference, run)
    for every_runs in sweep.values():
        failures += [p for run in every_runs for p in compare(runs[(SWEEP_PCT, 1)][0], run)]
    sweep[POLL_EVERY] = runs[(SWEEP_PCT, 2)]
    look_ns = _look_cost_ns()
    leg_us = _leg_cost_us()
    pipe = _pipe_round_trips(settings["idle_round_trips"])
    if idle["topups"] != settings["idle_round_trips"] or idle["refused"] or idle["checks"]:
        failures.append(f"idle lender: {idle['topups']} top-ups of "
                        f"{settings['idle_round_trips']}, {idle['refused']} refused, "
                        f"{idle['checks']}")
    machine = _machine()
    result = {
        "benchmark": "sharding",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine, "settings": settings, "instruments": list(INSTRUMENTS),
        "placement": {str(s): [_symbols_of(i, s) for i in range(s)] for s in SHARD_COUNTS},
        "poll_every": POLL_EVERY,
        "streams": {str(p): {"orders": s.orders, "flagged": s.flagged, "days": len(s.days),
                             "traders": len(s.traders), "buyers": len(s.buyers),
                             "deposited_fen": s.deposited} for p, s in streams.items()},
        "throughput": [_row(runs, 0, shards) for shards in SHARD_COUNTS],
        "cross_shard": [_row(runs, pct, shards) for pct in PATH_PCTS for shards in SHARD_COUNTS],
        "idle_round_trip": {"round_trips": idle["topups"], **idle["round_trip"]},
        "pipe_round_trip": pipe,
        "leg_us": leg_us,
        "look_ns": look_ns,
        "polling": [{
            "poll_every": every, "pct": SWEEP_PCT, "shards": 2,
            "orders_per_s": spread([r["orders_per_s"] for r in sweep[every]], 0),
            "round_trip": _percentiles([ns for r in sweep[every] for ns in r["round_trip_ns"]]),
            "look_ns_per_command": round(look_ns / every, 2),
        } for every in sorted(sweep)],
        "notes": _notes(machine["cpus"]),
        "failures": failures,
        "elapsed_s": round(time.perf_counter() - began, 1),
    }
    return result


def _echo(conn: Connection) -> None:
    """Send back every message until ``None``: the other end of a bare pipe round trip."""
    while (message := conn.recv()) is not None:
        conn.send(message)


def _pipe_round_trips(count: int) -> dict[str, float | int]:
    """*count* bare round trips (a small message there and back) between this process and
    an echoing one that waits in ``recv``: the floor under a top-up with an idle lender."""
    context = _context()
    mine, theirs = context.Pipe()
    process = context.Process(target=_echo, args=(theirs, ), daemon=True)
    process.start()
    theirs.close()
    trips = []
    try:
        for n in range(count + 10):
            started = time.perf_counter_ns()
            mine.send((LEND, "account", n, "transfer"))
            mine.recv()
            if n >= 10:  # the first few warm the pipe and the echo up
                trips.append(time.perf_counter_ns() - started)
        mine.send(None)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
        mine.close()
    return _percentiles(trips)


def _leg_cost_us(pairs: int = 20_000) -> float:
    """What one leg of a top-up costs the engine: a ``Withdraw`` or a ``Deposit`` with its
    transfer's ``command_id``, through ``Engine.submit`` with the ledger, in µs."""
    engine = Engine(shard_market(INSTRUMENTS[:1]), ledger=True)
    out: list[Event] = []
    engine.submit(Deposit(account="lender", currency=CURRENCY,
                          amount=format_cash(CURRENCY, TRADER_CASH)), out)
    amount = format_cash(CURRENCY, 123_456)
    submit = engine.submit
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for n in range(pairs):
            submit(Withdraw(account="lender", currency=CURRENCY, amount=amount,
                            command_id=f"w{n}"), out)
            submit(Deposit(account="lender", currency=CURRENCY, amount=amount,
                           command_id=f"d{n}"), out)
            if not n & POLL_EVERY - 1:
                out.clear()
        cost = (time.perf_counter_ns() - started) / (2 * pairs) / 1000
    finally:
        if collecting:
            gc.enable()
    if engine.rejected:
        raise AssertionError(f"a leg was refused: {engine.rejects}")
    return round(cost, 2)


def _look_cost_ns(calls: int = 100_000) -> float:
    """What one look for lending requests costs a shard: a ``poll`` system call on a
    pipe with nothing in it, in nanoseconds."""
    reader, writer = mp.Pipe(duplex=False)
    poller = select.poll()
    poller.register(reader.fileno(), select.POLLIN)
    poll = poller.poll
    started = time.perf_counter_ns()
    for _ in range(calls):
        poll(0)
    cost = (time.perf_counter_ns() - started) / calls
    reader.close()
    writer.close()
    return round(cost, 1)


def _row(runs: dict[tuple[int, int], list[dict]], pct: int, shards: int) -> dict[str, Any]:
    """One configuration's figures over its rounds."""
    mine, one, zero = runs[(pct, shards)], runs[(pct, 1)], runs[(0, shards)]
    first = mine[0]
    rates = [r["orders_per_s"] for r in mine]
    row: dict[str, Any] = {
        "shards": shards, "pct": pct, "orders": first["orders"], "flagged": first["flagged"],
        "orders_per_s": spread(rates, 0),
        "speedup_over_1_shard": round(statistics.median(
            r["orders_per_s"] / o["orders_per_s"] for r, o in zip(mine, one)), 3),
        "over_0_pct": round(statistics.median(
            r["orders_per_s"] / z["orders_per_s"] for r, z in zip(mine, zero)), 3),
        "trades": first["trades"], "volume": first["volume"],
        "shard_orders": first["shard_orders"],
        "shard_busy_s": [spread([r["shard_busy_s"][i] for r in mine], 4)["median"]
                         for i in range(shards)],
        "shard_barrier_s": [spread([r["shard_barrier_s"][i] for r in mine], 4)["median"]
                            for i in range(shards)],
        "shard_eod_s": [spread([r["shard_eod_s"][i] for r in mine], 4)["median"]
                        for i in range(shards)],
        "topups": first["topups"], "path_share_pct": round(100 * first["topups"] /
                                                           first["orders"], 3),
        "topup_fen": first["topup_fen"],
        "round_trip": _percentiles([ns for r in mine for ns in r["round_trip_ns"]]),
        "cash": first["cash"],
        "agrees_with_1_shard": all(not compare(one[0], r) for r in mine),
    }
    busy = statistics.median(
        sum(r["shard_busy_s"]) / r["orders"] for r in zero) * 1e6  # one shard-second an order
    row["us_per_order_no_path"] = round(busy, 2)
    if first["topups"] and shards > 1:
        # the wall time the path orders added, over the 0% stream's wall time per order
        extra = [(r["wall_s"] - z["wall_s"] * r["orders"] / z["orders"]) / r["topups"]
                 for r, z in zip(mine, zero)]
        row["extra_wall_us_per_path_order"] = round(statistics.median(extra) * 1e6, 1)
    return row


def _notes(cpus: int) -> list[str]:
    notes = [
        "orders are new orders and cancels; the wall clock runs from the start signal to the "
        "last shard's end, ends of day (barriers) included",
        "risk per shard with cash allocated to shards: a buy short of cash on its shard waits "
        "for one top-up round trip (a Withdraw on the lender, a Deposit here) before it runs",
    ]
    if cpus < 4:
        notes.append(f"this machine has {cpus} CPU(s): 4 shard processes share them, so 4 "
                     f"shards cannot be faster than {min(cpus, 2)}; the 4-shard figures show "
                     f"the cost of more processes than cores, not what 4 cores would give")
    return notes


# --- output ---------------------------------------------------------------------------------


def _trip(trip: dict[str, Any]) -> str:
    """Round-trip percentiles as ``p50 / p99 / max``, or ``-`` when none ran."""
    return f"{trip['p50_us']} / {trip['p99_us']} / {trip['max_us']}" if trip["n"] else "-"


def render(result: dict[str, Any]) -> str:
    """The result as a readable table."""
    machine, settings = result["machine"], result["settings"]
    stream = result["streams"]["0"]
    lines = [
        f"sharding model, {result['date']}: {machine['cpus']} CPU(s) ({machine['cpu']}), "
        f"Python {machine['python']}, shards started by {machine['start_method']}",
        f"{stream['orders']:,} orders a stream over {', '.join(result['instruments'])}, "
        f"{stream['traders']} trading and {stream['buyers']} buyer accounts, {stream['days']} "
        f"days; {settings['rounds']} round(s), configurations taking turns",
        "",
        "(a) throughput, no cross-shard cash: orders/s median [min .. max] over the rounds",
        f"{'shards':>6}  {'orders/s':<30}  {'x 1 shard':>9}  {'busy s a shard':<24}  "
        f"{'trades':>8}  agrees",
    ]
    for row in result["throughput"]:
        rate = row["orders_per_s"]
        spread_text = f"{rate['median']:,} [{rate['min']:,} .. {rate['max']:,}]"
        busy = " ".join(f"{b:.2f}" for b in row["shard_busy_s"])
        lines.append(
            f"{row['shards']:>6}  {spread_text:<30}  {row['speedup_over_1_shard']:>8.2f}x  "
            f"{busy:<24}  {row['trades']:>8,}  {'yes' if row['agrees_with_1_shard'] else 'NO'}")
    idle = result["idle_round_trip"]
    lines += [
        "",
        "(b) cross-shard cash top-ups (risk per shard, cash allocated to shards)",
        f"round trip with an idle lender: {idle['n']:,} top-ups, p50 / p99 / max "
        f"{_trip(idle)} us; a bare pipe round trip between two processes: "
        f"{_trip(result['pipe_round_trip'])} us; one leg (Withdraw or Deposit) in the "
        f"engine: {result['leg_us']} us",
        f"{'shards':>6}  {'path':>4}  {'top-ups':>8}  {'orders/s':>9}  {'x 0%':>6}  "
        f"{'round trip p50 / p99 / max us':<30}  {'extra us a path order':>21}  agrees",
    ]
    for row in result["cross_shard"]:
        extra = row.get("extra_wall_us_per_path_order", "-")
        lines.append(
            f"{row['shards']:>6}  {row['pct']:>3}%  {row['topups']:>8,}  "
            f"{row['orders_per_s']['median']:>9,}  {row['over_0_pct']:>5.2f}x  "
            f"{_trip(row['round_trip']):<30}  {extra:>21}  "
            f"{'yes' if row['agrees_with_1_shard'] else 'NO'}")
    lines += [
        "",
        f"the lender looking for requests every N commands ({SWEEP_PCT}%, 2 shards; one "
        f"look, a poll system call, costs {result['look_ns']} ns):",
        f"{'N':>6}  {'orders/s':>9}  {'round trip p50 / p99 / max us':<30}  look ns a command",
    ]
    for row in result["polling"]:
        lines.append(f"{row['poll_every']:>6}  {row['orders_per_s']['median']:>9,}  "
                     f"{_trip(row['round_trip']):<30}  {row['look_ns_per_command']}")
    cash = result["cross_shard"][-1]["cash"]
    lines += [
        "",
        f"cash (10%, 4 shards), CNY: deposited {format_cash(CURRENCY, cash['deposited'])}; "
        f"over all shards {format_cash(CURRENCY, cash['total'])} = participants "
        f"{format_cash(CURRENCY, cash['participants'])} + fees "
        f"{format_cash(CURRENCY, cash['fees'])}",
    ]
    lines += [f"note: {note}" for note in result["notes"]]
    lines += [f"FAILED: {failure}" for failure in result["failures"]]
    if not result["failures"]:
        lines.append("checks: every shard count trades, rejects and holds exactly as 1 shard; "
                     "cash conserved at every end of day and at the end; engine.check() passes")
    lines.append(f"model run in {result['elapsed_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the model, print the table, write the JSON; 1 if a check broke."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharding",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where to write the JSON")
    parser.add_argument("--orders", type=int, help="orders a stream (default: 300,000; "
                        "60,000 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3; 1 with --quick)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.orders is not None:
        if args.orders < 100:
            parser.error("--orders: at least 100")
        settings["orders"] = args.orders
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds: at least 1")
        settings["rounds"] = args.rounds
    result = run_model(settings)
    print(render(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("sharding-quick.json" if args.quick else "sharding.json")).write_text(
        json.dumps(result, indent=1) + "\n")
    emit({"benchmark": "sharding", "quick": args.quick,
          "orders_per_s": {str(r["shards"]): r["orders_per_s"]["median"]
                           for r in result["throughput"]},
          "cross_shard_orders_per_s": {f"{r['pct']}%/{r['shards']}": r["orders_per_s"]["median"]
                                       for r in result["cross_shard"]},
          "idle_round_trip_p50_us": result["idle_round_trip"].get("p50_us"),
          "failures": len(result["failures"])})
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
