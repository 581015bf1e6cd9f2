"""What the web pages and the REST API read, as JSON-ready dicts: pure functions over the
engine (its present state) and the ``MarketView`` (the history it keeps).

Vocabulary as on the wire (docs/mqtt.md): prices are decimal strings on the instrument's
tick, cash decimal strings in the currency's minor units, quantities whole units (lots
for futures and options), times nanoseconds since 1970-01-01 (the gateway's clock),
dates ``YYYY-MM-DD``, order ids the bot's own (``c1``, not the gateway's ``alice/c1``).

Nothing here changes the engine or the view. An unknown symbol or account is the
caller's to refuse: the functions that take a symbol raise ``KeyError`` for one the
market does not list; those that take an account give empty rows for one without any.
"""

from __future__ import annotations

from typing import Any

from exchange import Engine
from exchange.book.fast import KIND_NAMES, MARKET, STOP, TIF_NAMES, Order
from exchange.calendar import format_date
from exchange.compliance.registry import Allocation, Obligation
from exchange.events import AuctionCleared, AuctionOpened, BlockPosted
from exchange.market import Instrument, format_cash
from gateway.mqtt.wire import client_id, daily_record
from gateway.tools.replay import holding_rows, margin_rows, pledge_rows, position_rows
from gateway.web.view import MarketView, TradeRow

__all__ = [
    "instruments", "book", "holdings", "pledges", "open_orders", "away_orders", "positions",
    "margin",
    "compliance", "compliance_years", "registry_year", "accounts", "halts", "fills", "trades",
    "candles", "daily", "open_blocks", "open_auctions", "cleared_auctions", "deadline_date",
    "has_account"
]

Row = dict[str, Any]


# --- the engine ------------------------------------------------------------------------------
def instruments(engine: Engine) -> list[Row]:
    """Every instrument with its trading rules and its state now: the reference price,
    the band's current edges (``null`` without a band or a reference) and whether it is
    halted. ``band`` is the band's fraction (``"0.10"``: 10% either side), ``strike`` an
    option's on its underlying's tick."""
    market = engine.market
    rows = []
    for symbol, inst in market.instruments.items():
        band = engine.price_band(symbol)
        strike = None
        if inst.strike is not None:
            strike = market[inst.underlying].format_price(inst.strike) if (
                inst.underlying in market) else inst.format_price(inst.strike)
        rows.append({
            "symbol": symbol,
            "kind": inst.kind,
            "currency": inst.currency,
            "tick": inst.tick.text,
            "qty_step": inst.qty_step,
            "min_qty": inst.min_qty,
            "max_qty": inst.max_qty,
            "band": None if inst.band is None else str(inst.band),
            "reference_price": inst.format_price(engine.reference_price(symbol)),
            "band_low": None if band is None else inst.format_price(band[0]),
            "band_high": None if band is None else inst.format_price(band[1]),
            "vintage": inst.vintage,
            "offset": inst.offset,
            "contract_size": inst.contract_size,
            "underlying": inst.underlying,
            "contract_month": inst.contract_month,
            "last_trading_day": _date(inst.last_trading_day),
            "strike": strike,
            "option_type": inst.option_type,
            "halted": engine.halted(symbol)
        })
    return rows


def book(engine: Engine, symbol: str, levels: int = 10) -> Row:
    """The depth of *symbol*, *levels* a side, best first, each level ``[price, qty,
    orders]`` (the displayed quantity: an iceberg's hidden part is not shown); ``seq`` the
    engine's last event."""
    inst = engine.market[symbol]
    bids, asks = engine.book(symbol).depth(levels)
    price = inst.tick.format
    return {
        "instrument": symbol,
        "seq": engine.seq,
        "bids": [[price(p), q, n] for p, q, n in bids],
        "asks": [[price(p), q, n] for p, q, n in asks]
    }


def has_account(engine: Engine, account: str) -> bool:
    """Does the ledger know *account* (a participant's or a system account)?"""
    ledger = engine.ledger
    return ledger is not None and account in ledger.accounts


def holdings(engine: Engine, account: str) -> list[Row]:
    """*account*'s holdings: its rows of ``holdings --json`` (``account``, ``asset``,
    ``available``, ``held``, ``locked``, ``pledged``; cash as decimal strings), by asset."""
    return [row for row in holding_rows(engine) if row["account"] == account]


def open_orders(engine: Engine, account: str) -> list[Row]:
    """*account*'s live orders (resting, or stops not yet triggered), oldest first: the
    open quantity ``qty`` and the displayed ``shown`` (less for an iceberg); ``price``
    ``null`` for a stop market order, ``stop_price`` ``null`` but for stops."""
    market = engine.market
    rows = []
    for order in engine.live_orders():
        if order.account != account:
            continue
        inst = market[order.instrument]
        stop = order.kind >= STOP
        rows.append({
            "order_id": client_id(order.order_id),
            "instrument": order.instrument,
            "side": order.side,
            "type": KIND_NAMES[order.kind],
            "tif": TIF_NAMES[order.tif],
            "price": None if order.kind in (MARKET, STOP) else inst.format_price(order.price),
            "stop_price": inst.format_price(order.stop_price) if stop else None,
            "qty": order.qty,
            "shown": order.visible,
            "seq": order.accept_seq
        })
    return rows


def pledges(engine: Engine, account: str) -> list[Row]:
    """The pledges in force that *account* made (``role`` ``pledgor``) or that were made
    to it (``pledgee``), in the order they were registered: ``pledge_id``, ``account``
    (the pledgor), ``to_account`` (the pledgee), ``instrument`` and the ``qty`` still
    pledged."""
    return [{**row, "role": "pledgor" if row["account"] == account else "pledgee"}
            for row in pledge_rows(engine) if account in (row["account"], row["to_account"])]


def away_orders(engine: Engine, account: str) -> list[Row]:
    """What *account* has open away from the book, each holding its cash or allowances
    as an order does: the blocks it posted and no one has accepted (``to_account`` the
    counterparty it named, ``null`` for a public quote), the auctions it opened that have
    not cleared (``price`` the reserve, ``qty`` what is offered) and its bids in open
    auctions (``auction`` their auction). Oldest first, by the account's own ids."""
    market = engine.market
    found: list[tuple[int, Row]] = []

    def row(mode: str, order: Order, to_account: str | None, auction: str | None) -> None:
        found.append((order.accept_seq, {
            "mode": mode,
            "order_id": client_id(order.order_id),
            "instrument": order.instrument,
            "side": order.side,
            "price": market[order.instrument].format_price(order.price),
            "qty": order.qty,
            "to_account": to_account,
            "auction": auction,
            "seq": order.accept_seq
        }))

    for order, to_account in engine.open_blocks():
        if order.account == account:
            row("block", order, to_account, None)
    auctions = engine.auctions
    for name, auction in auctions.auctions.items():
        if auction.open and auction.initiator.account == account:
            row("auction", auction.initiator, None, name)
    for bid in auctions.open_bids():
        if bid.account == account:
            row("bid", bid, None, auctions.bid_of[bid.order_id])
    return [r for _, r in sorted(found, key=lambda pair: pair[0])]


def positions(engine: Engine, account: str) -> list[Row]:
    """*account*'s open futures and options positions: its rows of ``holdings --json``'s
    positions (``qty`` net lots, ``avg_price``, ``margin``, ``settlement``)."""
    return [row for row in position_rows(engine) if row["account"] == account]


def margin(engine: Engine, account: str) -> Row:
    """*account*'s margin (``margin``, ``equity``, ``initial``, ``maintenance``,
    ``margin_call``), or ``{}`` when it has no futures or options position."""
    return next((row for row in margin_rows(engine) if row["account"] == account), {})


def _fine_currency(engine: Engine) -> str:
    """The currency of fines: the allowances' (as the ledger prices a deadline)."""
    ledger = engine.ledger
    assert ledger is not None
    registry = ledger.registry
    return next((inst.currency for symbol, inst in ledger.instruments.items()
                 if registry.counts_trades(symbol)), ledger.currencies[0])


def deadline_date(year: int) -> str:
    """The last day to surrender for compliance *year*: 31 December of the next year (in
    the market's time zone)."""
    return f"{year + 1:04d}-12-31"


def _year_row(year: int, ob: Obligation | None, allocation: Allocation | None,
              currency: str, owed: int = 0) -> Row:
    """One compliance year's row; *owed*: last year's shortfall to deduct from this
    year's allocation (the registry's ``deductions``)."""
    assessed = ob is not None and ob.status is not None
    deducted = 0 if allocation is None else allocation.deducted
    return {
        "year": year,
        "deadline": deadline_date(year),
        "obligation": None if ob is None else ob.emissions,
        "quality": None if ob is None else ob.quality,
        "verifier": None if ob is None else ob.verifier,
        "allocated": 0 if allocation is None else allocation.issued,
        "deducted": deducted,
        # A shortfall assessed after this year's allocation: the next allocate row for the
        # year deducts it (until then it shows here, not as nothing).
        "to_deduct": max(0, owed - deducted),
        "surrendered": 0 if ob is None else ob.allowances,
        "ccer": 0 if ob is None else ob.offsets,
        # still to surrender (allowances and the CCER that count), until assessed
        "outstanding": 0 if ob is None else max(
            0, ob.emissions - ob.allowances - ob.counted_offsets()),
        "shortfall": ob.shortfall if ob is not None and assessed else None,
        "fine": format_cash(currency, ob.fine) if ob is not None and assessed else None,
        "status": ob.status if ob is not None else None
    }


def compliance(engine: Engine, account: str) -> list[Row]:
    """*account*'s compliance years, oldest first: its obligation (verified emissions,
    ``null`` before they are recorded), the free allocation issued for the year (net of
    the last year's shortfall, ``deducted``; what of it is still to deduct,
    ``to_deduct``), the allowances and CCER surrendered for it,
    what is ``outstanding``; once the year is assessed its ``shortfall``, ``fine`` (cash)
    and ``status`` (``compliant`` or ``short``), else ``null``; the ``deadline`` date."""
    ledger = engine.ledger
    if ledger is None:
        return []
    registry = ledger.registry
    years = sorted({y for (a, y) in registry.obligations if a == account}
                   | {y for (a, y) in registry.allocations if a == account})
    currency = _fine_currency(engine)
    return [_year_row(year, registry.obligations.get((account, year)),
                      registry.allocations.get((account, year)), currency,
                      registry.deductions.get((account, year), 0)) for year in years]


def compliance_years(engine: Engine) -> list[int]:
    """The compliance years the registry knows: with an obligation, an allocation, or
    assessed."""
    ledger = engine.ledger
    if ledger is None:
        return []
    registry = ledger.registry
    return sorted({y for _, y in registry.obligations} | {y for _, y in registry.allocations}
                  | registry.closed)


def registry_year(engine: Engine, year: int) -> Row:
    """The registry's compliance *year*: one row per entity with an obligation or an
    allocation for it (``account``, ``sector``: ``null``, the engine does not know
    sectors; the rest as in ``compliance``), whether it is ``assessed`` and the totals.
    ``KeyError`` for a year the registry does not know (``compliance_years``)."""
    if year not in compliance_years(engine):
        raise KeyError(year)
    ledger = engine.ledger
    assert ledger is not None
    registry = ledger.registry
    currency = _fine_currency(engine)
    names = sorted({a for (a, y) in registry.obligations if y == year}
                   | {a for (a, y) in registry.allocations if y == year})
    entities = []
    for name in names:
        row = _year_row(year, registry.obligations.get((name, year)),
                        registry.allocations.get((name, year)), currency,
                        registry.deductions.get((name, year), 0))
        del row["year"], row["deadline"]
        entities.append({"account": name, "sector": None, **row})
    fines = sum(ob.fine for (_, y), ob in registry.obligations.items() if y == year)
    assessed = year in registry.closed
    return {
        "year": year,
        "deadline": deadline_date(year),
        "assessed": assessed,
        "currency": currency,
        "entities": entities,
        "totals": {
            "entities": len(entities),
            "short": sum(1 for e in entities if e["status"] == "short"),
            "obligation": sum(e["obligation"] or 0 for e in entities),
            "allocated": sum(e["allocated"] for e in entities),
            "surrendered": sum(e["surrendered"] for e in entities),
            "ccer": sum(e["ccer"] for e in entities),
            "outstanding": sum(e["outstanding"] for e in entities),
            "shortfall": sum(e["shortfall"] or 0 for e in entities) if assessed else None,
            "fine": format_cash(currency, fines) if assessed else None
        }
    }


def accounts(engine: Engine) -> list[Row]:
    """Every account, by name (the system accounts ``@...`` too): its ``kind``,
    ``status``, the position limit across vintages (``null``: none) and its
    ``exposure`` toward it."""
    ledger = engine.ledger
    if ledger is None:
        return []
    return [{
        "account": name,
        "kind": acct.kind,
        "status": acct.status,
        "position_limit": ledger.position_limit(acct),
        "exposure": ledger.exposure(acct)
    } for name, acct in sorted(ledger.accounts.items())]


def halts(engine: Engine) -> list[str]:
    """The instruments the operator has halted, in the market's order."""
    return [symbol for symbol in engine.market.instruments if engine.halted(symbol)]


def _date(day: int | None) -> str | None:
    return None if day is None else format_date(day)


# --- the view's history ------------------------------------------------------------------------
def fills(view: MarketView, account: str, limit: int = 100) -> list[Row]:
    """*account*'s newest *limit* fills, newest first: its ``side`` and own ``order_id``,
    ``liquidity`` (``maker``/``taker``) and ``mode`` (``listing``, ``block``, ``auction``);
    ``ts`` the gateway's clock when it ran."""
    market = view.market
    rows: list[Row] = []
    for row in view.recent_fills(account, limit):
        # A trade with itself (stp none) is two fills of the account, as on MQTT: the
        # aggressor's side first.
        for side in (row.aggressor, "sell" if row.aggressor == "buy" else "buy"):
            buy = side == "buy"
            if (row.buy_account if buy else row.sell_account) != account:
                continue
            rows.append({
                "seq": row.seq,
                "trade_id": row.trade_id,
                "ts": row.ts,
                "instrument": row.instrument,
                "side": side,
                "price": market[row.instrument].tick.format(row.price),
                "qty": row.qty,
                "order_id": client_id(row.buy_order_id if buy else row.sell_order_id),
                "liquidity": "taker" if row.aggressor == side else "maker",
                "mode": row.mode
            })
    return rows[:limit]


def _trade(row: TradeRow, inst: Instrument) -> Row:
    return {
        "seq": row.seq,
        "trade_id": row.trade_id,
        "ts": row.ts,
        "instrument": row.instrument,
        "price": inst.tick.format(row.price),
        "qty": row.qty,
        "aggressor": row.aggressor,
        "mode": row.mode
    }


def trades(view: MarketView, symbol: str, limit: int = 100) -> list[Row]:
    """The newest *limit* public trades of *symbol*, newest first (no accounts, no order
    ids, as on ``cx/v1/md/{instrument}/trades``)."""
    inst = view.market[symbol]
    return [_trade(row, inst) for row in view.recent_trades(symbol, limit)]


def candles(view: MarketView, symbol: str, interval_s: int = 60, limit: int = 200) -> list[Row]:
    """Candles of *symbol*'s listing trades kept, oldest first, *interval_s* seconds each:
    ``start`` (ns), ``open``, ``high``, ``low``, ``close``, ``volume``."""
    price = view.market[symbol].tick.format
    return [{
        "start": c.start,
        "open": price(c.open),
        "high": price(c.high),
        "low": price(c.low),
        "close": price(c.close),
        "volume": c.volume
    } for c in view.candles(symbol, interval_s, limit)]


def daily(view: MarketView, symbol: str) -> list[Row]:
    """*symbol*'s days' statistics kept, oldest first, as on
    ``cx/v1/md/{instrument}/daily``: ``seq``, ``day`` and the ``replay --daily`` columns."""
    market = view.market
    if symbol not in market:
        raise KeyError(symbol)
    return [{"seq": e.seq, "day": e.day, **daily_record(e, market)} for e in view.daily[symbol]]


def _block(event: BlockPosted, view: MarketView) -> Row:
    return {
        "seq": event.seq,
        "order_id": client_id(event.order_id),
        "account": event.account,
        "instrument": event.instrument,
        "side": event.side,
        "price": view.market[event.instrument].tick.format(event.price),
        "qty": event.qty,
        "status": "open"
    }


def open_blocks(view: MarketView) -> list[Row]:
    """The public block quotes open now, oldest first, as on
    ``cx/v1/md/{instrument}/blocks``: ``account`` and ``order_id`` are what it takes to
    accept one."""
    return [_block(event, view) for event in sorted(view.blocks.values(), key=_seq)]


def _auction(event: AuctionOpened, view: MarketView) -> Row:
    return {
        "seq": event.seq,
        "auction": event.auction,
        "account": event.account,
        "instrument": event.instrument,
        "side": event.side,
        "qty": event.qty,
        "reserve": view.market[event.instrument].tick.format(event.reserve),
        "pricing": event.pricing,
        "primary": event.primary,
        "status": "open",
        "bids": view.auction_bids.get(event.auction, 0)
    }


def open_auctions(view: MarketView) -> list[Row]:
    """The auctions open now, oldest first, as on ``cx/v1/md/{instrument}/auctions``:
    their terms and the number of ``bids`` (bids are sealed: never their prices)."""
    return [_auction(event, view) for event in sorted(view.auctions.values(), key=_seq)]


def cleared_auctions(view: MarketView, limit: int = 100) -> list[Row]:
    """The newest *limit* auctions that ended, newest first: ``status`` (``cleared``,
    ``no_valid_bid``, ``undersubscribed``, ``below_market``), ``price`` (``null`` unless
    cleared), ``qty`` traded, ``unsold``, ``bids`` and ``filled_bids``."""
    market = view.market
    rows = []
    for event in list(view.cleared)[::-1][:limit]:
        rows.append({
            "seq": event.seq,
            "auction": event.auction,
            "account": event.account,
            "instrument": event.instrument,
            "status": event.status,
            "price": market[event.instrument].format_price(event.price),
            "qty": event.qty,
            "unsold": event.unsold,
            "bids": event.bids,
            "filled_bids": event.filled_bids,
            "pricing": event.pricing
        })
    return rows


def _seq(event: BlockPosted | AuctionOpened | AuctionCleared) -> int:
    return event.seq
