"""Replay an order file through the engine, timed, with optional fills/events output.

Timing (pinned, docs/formats.md): ``elapsed_s`` covers reading, decoding and
processing; ``engine_s`` the engine alone on already-decoded commands. Output writing
and interpreter start-up are outside both. The whole file is decoded before the engine
starts, so a file that cannot be read changes nothing (memory: about 250 bytes a row).
"""

from __future__ import annotations

import csv
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from exchange import Engine, FastBook, Market, default_market
from exchange.events import (ComplianceAssessed, DailyStatistics, DeadlinePassed, OptionExercised,
                             QuotingAssessed, TradeExecuted)
from exchange.journal import JournalError, create_journal, remove_journal
from exchange.market import format_cash
from exchange.orderfile import read_order_file
from exchange.sequencer import SNAPSHOT_EVERY, Sequencer
from gateway.mqtt.wire import daily_record
from gateway.tools.progress import ProgressBar

__all__ = [
    "ReplayResult", "run_replay", "write_fills", "write_events", "event_record", "write_holdings",
    "holding_rows", "pledge_rows", "position_rows", "margin_rows"
]

# Profiled (benchmarks/): events dropped every 1,024 commands reuse memory still in
# cache; dropping them every 65,536 made the engine about 12% slower.
_CHUNK = 1 << 10
GROUP_SIZE = 4096  # commands per journal group commit (one write + one fsync)


@dataclass
class ReplayResult:
    """What a replay did; ``summary()`` is the pinned ``--json`` object (extended)."""

    messages: int
    accepted: int
    rejected: int
    trades: int
    volume: int
    elapsed_s: float
    engine_s: float
    state_hash: str
    rejects: dict[str, int] = field(default_factory=dict)
    events: list | None = None
    engine: Engine | None = None
    warnings: list[str] = field(default_factory=list)  # snapshots not written, and why

    def summary(self) -> dict:
        return {
            "messages": self.messages,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "trades": self.trades,
            "volume": self.volume,
            "elapsed_s": round(self.elapsed_s, 6),
            "msgs_per_s": round(self.messages / self.elapsed_s) if self.elapsed_s else 0,
            "engine_s": round(self.engine_s, 6),
            "engine_msgs_per_s": round(self.messages / self.engine_s) if self.engine_s else 0,
            "rejects": dict(sorted(self.rejects.items())),
            "state_hash": self.state_hash
        }


def run_replay(path: str | Path, *, fmt: str | None = None, market: Market | None = None,
               stp: str | None = None, keep_events: bool = False,
               progress: ProgressBar | None = None, book=FastBook, ledger: bool = False,
               journal: str | Path | None = None, fsync: str = "group",
               snapshot_every: int = SNAPSHOT_EVERY) -> ReplayResult:
    """Replay the order file at *path*; raise ``OrderFileError`` if it cannot be read.

    With *ledger*, accounts, risk and settlement are on. With *journal* (a directory),
    every command is journaled in groups of ``GROUP_SIZE`` before the group acts, and
    the engine is snapshotted every *snapshot_every* commands; journal time counts in
    ``engine_s`` (it is part of processing).
    """
    market = market if market is not None else default_market()
    engine = Engine(market, book=book, ledger=ledger)
    decode_progress = ((lambda done, total: progress.update("reading", done, total))
                       if progress else None)

    # Profiled (benchmarks/endtoend.py): with a million live objects the cyclic collector cost more
    # than the decoding itself. Nothing here makes cycles that need it, so pause it meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        commands = read_order_file(path, fmt, default_stp=stp, progress=decode_progress)
        if journal is None:
            decoded = time.perf_counter()
            return _run(Sequencer(engine), _CHUNK, commands, started, decoded, keep_events,
                        progress)
        directory = Path(journal)
        blank = not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))
        try:
            with create_journal(journal, market.text, ledger=ledger, fsync=fsync) as writer:
                decoded = time.perf_counter()
                sequencer = Sequencer(engine, writer, snapshot_every=snapshot_every)
                result = _run(sequencer, GROUP_SIZE, commands, started, decoded, keep_events,
                              progress)
        except (JournalError, OSError):
            if blank:  # a replay that stops has written nothing: not half a journal
                remove_journal(directory)
            raise
        result.warnings = writer.warnings
        return result
    finally:
        if collecting:
            gc.enable()


def _run(sequencer: Sequencer, batch: int, commands: list, started: float, decoded: float,
         keep_events: bool, progress: ProgressBar | None) -> ReplayResult:
    """Run *commands* through *sequencer* in batches of *batch* (a journal group commit
    each, with a journal), dropping or keeping the events after each batch."""
    run = sequencer.run
    out: list = []
    kept: list = []
    total = len(commands)
    for start in range(0, total, batch):
        run(commands[start:start + batch], out)
        if keep_events:
            kept.extend(out)
        out.clear()
        if progress is not None and not (start // batch) % 16:
            progress.update("matching", min(start + batch, total), total)
    engine = sequencer.engine
    return _result(engine, total, started, decoded, kept if keep_events else None, progress)


def _result(engine: Engine, total: int, started: float, decoded: float, kept: list | None,
            progress: ProgressBar | None) -> ReplayResult:
    finished = time.perf_counter()
    if progress is not None:
        progress.close()

    return ReplayResult(messages=total, accepted=engine.accepted, rejected=engine.rejected,
                        trades=engine.trades, volume=engine.volume, elapsed_s=finished - started,
                        engine_s=finished - decoded, state_hash=engine.state_hash(),
                        rejects=dict(engine.rejects), events=kept, engine=engine)


# The pinned fills file: these keys of each TradeExecuted, in this order; ``mode`` is the
# trading mode that made it: ``listing`` (the order book), ``block`` or ``auction``.
FILL_KEYS = ("seq", "trade_id", "instrument", "price", "qty", "buy_order_id", "sell_order_id",
             "buy_account", "sell_account", "aggressor", "mode")

# Prices, on the tick of the event's instrument, and cash, in its currency (the event's
# own ``currency``, else its instrument's), that events carry as integers.
_PRICE_FIELDS = ("price", "old_price", "stop_price", "last_price", "reserve", "average_spread",
                 "final_price")
_CASH_FIELDS = ("cash", "buy_fee", "sell_fee", "amount", "rebate", "equity", "maintenance",
                "initial", "penalty", "fine")


def _registry_currency(market: Market) -> str:
    """The currency fines are in: that of the allowances (the market's first spot
    instrument)."""
    spot = [inst for inst in market.instruments.values() if inst.kind == "spot"]
    return (spot or list(market.instruments.values()))[0].currency


def event_record(event, market: Market) -> dict:
    """Return *event* as a JSON-ready dict with prices and cash as decimal strings (a
    day's statistics as ``--daily`` writes them), as the gateway's reports show them."""
    kind = type(event)
    if kind is DailyStatistics:
        return {"event": "daily_statistics", "seq": event.seq, "day": event.day,
                **daily_record(event, market)}
    record = msgspec.to_builtins(event)
    if kind is DeadlinePassed:  # cash per tonne, of no one instrument
        currency = _registry_currency(market)
        for key in ("price", "average_price"):
            if record.get(key) is not None:
                record[key] = format_cash(currency, record[key])
        return record
    symbol = record.get("instrument")
    currency = record.get("currency")
    if symbol in market:
        tick = market[symbol].tick
        for key in _PRICE_FIELDS:
            if record.get(key) is not None:
                record[key] = tick.format(record[key])
        if currency is None:
            currency = market[symbol].currency
    if kind is OptionExercised and event.underlying in market:  # on the underlying's tick
        record["strike"] = market[event.underlying].tick.format(event.strike)
    if kind is ComplianceAssessed:
        currency = _registry_currency(market)
    if currency is not None:
        for key in _CASH_FIELDS:
            if record.get(key) is not None:
                record[key] = format_cash(currency, record[key])
    return record


def write_fills(path: str | Path, events: list, market: Market) -> int:
    """Write the pinned fills file (one trade per line, in execution order)."""
    encoder = msgspec.json.Encoder()
    count = 0
    with open(path, "wb") as fh:
        for e in events:
            if type(e) is TradeExecuted:
                record = {key: getattr(e, key) for key in FILL_KEYS}
                record["price"] = market[e.instrument].tick.format(e.price)
                fh.write(encoder.encode(record))
                fh.write(b"\n")
                count += 1
    return count


MM_HEADER = ("day", "account", "instrument", "quoted_s", "session_s", "presence_pct",
             "average_spread", "met", "rebate", "currency")


def write_mm_report(path: str | Path, events: list, market: Market) -> int:
    """Write each end of day's market-maker assessments as CSV (``MM_HEADER``): the time
    quoted within the obligation and the session's, in seconds to the nanosecond, the
    presence as a percentage to two places (rounded down), the time-weighted spread as a
    price, whether the obligation was met and the rebate as cash."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MM_HEADER)
        for e in events:
            if type(e) is QuotingAssessed:
                inst = market[e.instrument]
                writer.writerow([
                    e.day, e.account, e.instrument, _seconds(e.quoted_ns),
                    _seconds(e.session_ns), f"{e.presence_bps // 100}.{e.presence_bps % 100:02d}",
                    "" if e.average_spread is None else inst.tick.format(e.average_spread),
                    "yes" if e.met else "no", format_cash(e.currency, e.rebate), e.currency
                ])
                count += 1
    return count


def _seconds(ns: int) -> str:
    """Nanoseconds as exact decimal seconds."""
    whole, part = divmod(ns, 10**9)
    return f"{whole}.{part:09d}".rstrip("0").rstrip(".")


DAILY_HEADER = ("date", "instrument", "open", "high", "low", "close", "volume", "turnover",
                "block_volume", "auction_volume")


def write_daily(path: str | Path, events: list, market: Market) -> int:
    """Write each end of day's statistics per instrument as CSV (``DAILY_HEADER``)."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=DAILY_HEADER, lineterminator="\n")
        writer.writeheader()
        for e in events:
            if type(e) is DailyStatistics:
                writer.writerow(daily_record(e, market))
                count += 1
    return count


def write_events(path: str | Path, events: list, market: Market) -> int:
    """Write every event as NDJSON, tagged by ``event``, prices as decimal strings."""
    encoder = msgspec.json.Encoder()
    with open(path, "wb") as fh:
        for e in events:
            fh.write(encoder.encode(event_record(e, market)))
            fh.write(b"\n")
    return len(events)


def holding_rows(engine: Engine) -> list[dict]:
    """Every account's holdings as the pinned records, cash as decimal strings."""
    ledger = engine.ledger
    if ledger is None:
        return []
    currencies = set(ledger.currencies)
    rows = []
    for account, asset, available, held, locked, pledged in ledger.holdings():
        if asset in currencies:
            available, held, locked = (format_cash(asset, n) for n in (available, held, locked))
        rows.append({
            "account": account,
            "asset": asset,
            "available": available,
            "held": held,
            "locked": locked,
            "pledged": pledged  # allowances only: cash is never pledged
        })
    return rows


def pledge_rows(engine: Engine) -> list[dict]:
    """Every pledge in force, in the order they were registered: ``pledge_id``,
    ``account`` (the pledgor), ``to_account`` (the pledgee), ``instrument``, ``qty``."""
    ledger = engine.ledger
    if ledger is None:
        return []
    return [{"pledge_id": p.pledge_id, "account": p.account, "to_account": p.to_account,
             "instrument": p.instrument, "qty": p.qty} for p in ledger.pledges.values()]


def position_rows(engine: Engine) -> list[dict]:
    """Every open futures and options position: the pinned ``account, instrument, qty,
    avg_price``, then the margin it holds and the last settlement price (of the future;
    of an option's underlying)."""
    ledger = engine.ledger
    if ledger is None:
        return []
    market = engine.market
    rows = []
    for account, symbol, net, cost, margin, settlement in ledger.clearing.position_rows():
        inst = market[symbol]
        # the average cost per lot, to the nearest tick (halves up)
        average = (2 * cost + abs(net)) // (2 * abs(net))
        underlying = market[inst.underlying] if inst.kind == "option" else inst
        rows.append({
            "account": account,
            "instrument": symbol,
            "qty": net,
            "avg_price": inst.format_price(average),
            "margin": format_cash(inst.currency, margin),
            "settlement": underlying.format_price(settlement)
        })
    return rows


def margin_rows(engine: Engine) -> list[dict]:
    """Per account with positions: margin held, equity (available cash plus margin), the
    initial and maintenance margin of its positions, and whether it is under a call."""
    ledger = engine.ledger
    if ledger is None:
        return []
    return [{
        "account": account,
        "currency": currency,
        "margin": format_cash(currency, margin),
        "equity": format_cash(currency, equity),
        "initial": format_cash(currency, initial),
        "maintenance": format_cash(currency, maintenance),
        "margin_call": called
    } for account, currency, margin, equity, initial, maintenance, called in (
        ledger.clearing.account_rows())]


HOLDING_KEYS = ("account", "asset", "available", "held", "locked")


def write_holdings(path: str | Path, engine: Engine) -> int:
    """Write the pinned holdings CSV (``account,asset,available,held,locked``), with a
    ``pledged`` column after them when any account has allowances pledged."""
    rows = holding_rows(engine)
    keys = HOLDING_KEYS + ("pledged",) if any(row["pledged"] for row in rows) else HOLDING_KEYS
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, keys, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
