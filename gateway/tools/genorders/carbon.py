"""``carbonx gen-orders``: seeded order files in the pinned format.

Profiles:

- ``mixed`` (the default), ``generate_mixed``: about 70% limit orders resting near the
  mid, 20% cancels of live orders, 10% marketable orders (limits through the touch, some
  ioc), one price scale (60.00), no timestamps. Its output for given arguments is frozen:
  cached benchmark data and tests depend on it byte for byte. Given ``--mix`` or the
  geometric depth shape, the same market runs through ``generate_kinds`` instead.
- ``carbon``, ``generate_carbon``: a compliance year of the national carbon market.
  Trading days Mon-Fri up to the deadline (31 December by default; the 2025 exchange
  holidays are left out), ``ts`` inside the listing hours 09:30-11:30 and 13:00-15:00, an
  ``eod`` row closing each trading day that has messages; covered entities ``ent0001``...
  of unequal activity and market makers ``mm01``... quoting both sides close to the mid
  and re-quoting by amend and cancel; CEA vintages and CCER (cheaper), each with its own
  mid. A quiet year and a heavy last quarter before the deadline (about 75% of the
  year's traded volume), and bursts after the open (09:30) and the re-open (13:00).

Message kinds (``--mix``, shares normalised): ``limit`` (passive, rests near the mid
without crossing), ``cancel`` and ``amend`` (of a live order), ``marketable`` (a limit
through the touch), ``market``, ``ioc`` and ``fok`` (limits through the touch with that
tif) and ``stop`` (``stop`` or ``stop_limit``, its stop price beyond the last price).

Every generator runs the engine alongside, so each cancel and amend names an order live
at that moment, prices stay on the tick and inside the price band, and quantities
inside the instrument's minimum, maximum and step: a replay rejects nothing.

Timestamps (carbon): integer nanoseconds since the epoch of the exchange's local wall
clock read as UTC (09:30 Beijing time is ``...T09:30:00Z``). An ``eod`` row's ``ts`` is
15:00 of its day.

Funding (``fund``): the file starts with a ``deposit`` row and ``issue`` rows for every
account (they count among the messages), enough that ``replay --ledger`` refuses nothing
for want of cash or allowances. The mixed profiles give every account fixed amounts; the
carbon profile sizes each account's funding from its own orders (every buy held in full
at its limit, or the band's top for market and stop buys, plus fees; every sell and
every amend counted), an upper bound, so no order of the file can run short.

Determinism: one ``random.Random(seed)`` and integer or IEEE-exact arithmetic only
(no libm functions), so the same arguments and seed give the same file, byte for byte,
in CSV and NDJSON. Cost: O(messages) draws plus the engine's own work, 10-15 us a row.

Known limits: the last quarter's volume share is aimed, not exact (its size factor is
calibrated on measured replays; about +-0.03 at 20,000 rows, +-0.01 at a million); the
holiday list covers 2025 only; market makers open as covered accounts (the file has no
``open_account`` rows); the mixed profiles with a future and ``--fund`` give orders a
ledger refuses (futures are not cleared yet).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from bisect import bisect
from calendar import timegm
from datetime import date, timedelta
from pathlib import Path

from exchange import AmendOrder, CancelOrder, EndOfDay, Engine, PlaceOrder, default_market
from exchange.market import FEE_SCALE
from gateway.errors import UsageError

__all__ = [
    "DESCRIPTION",
    "add_arguments",
    "run",
    "generate_mixed",
    "generate_kinds",
    "generate_carbon",
    "parse_mix",
    "trading_days",
    "write_rows",
    "KINDS",
    "HEADER",
    "KINDS_HEADER",
    "CARBON_HEADER",
    "MIXED_MIX",
    "CARBON_MIX",
]

DESCRIPTION = (
    "Write a seeded order file in the pinned CSV or NDJSON format. Profile mixed (the "
    "default): about 70% limit orders near the mid, 20% cancels of live orders, 10% "
    "marketable orders. Profile carbon: a compliance year of trading days with "
    "timestamps in the listing hours (09:30-11:30, 13:00-15:00), an eod row per trading "
    "day, covered entities and market makers, CEA vintages and CCER, about 75% of the "
    "year's traded volume in the last quarter before the deadline and bursts after the "
    "open. --mix sets the share of each message kind for either profile. Cancels and "
    "amends name live orders and prices stay inside the price band, so a replay rejects "
    "nothing. Same arguments and seed, same file, byte for byte."
)

HEADER = ("action", "order_id", "account", "instrument", "side", "type", "tif", "price", "qty")
KINDS_HEADER = HEADER + ("stop_price",)  # generate_kinds
CARBON_HEADER = HEADER + ("stop_price", "ts")  # generate_carbon
FUND_CASH = "1000000000.00"  # a billion CNY an account: more than any generated file buys
FUND_UNITS = "10000000"  # ten million units of each instrument an account

KINDS = ("limit", "cancel", "amend", "marketable", "market", "ioc", "fok", "stop")
(_LIMIT, _CANCEL, _AMEND, _MARKETABLE, _MARKET, _IOC, _FOK, _STOP) = range(len(KINDS))
# What generate_mixed does (its marketable tenth is 70% gtc, 30% ioc).
MIXED_MIX = {"limit": 70, "cancel": 20, "marketable": 7, "ioc": 3}
CARBON_MIX = {
    "limit": 52,
    "cancel": 20,
    "amend": 10,
    "marketable": 7,
    "market": 3,
    "ioc": 4,
    "fok": 1,
    "stop": 3,
}

CARBON_INSTRUMENTS = ("CEA23", "CEA24", "CEA25", "CCER")
# Starting mids in ticks of 0.01 CNY (older vintages a little dearer, CCER cheaper) and
# relative activity, per spot instrument of the default market.
CARBON_MIDS = {
    "CEA19-20": 7400,
    "CEA21": 7350,
    "CEA22": 7300,
    "CEA23": 7250,
    "CEA24": 7150,
    "CEA25": 7000,
    "CCER": 5200,
}
CARBON_ACTIVITY = {"CEA25": 35, "CEA24": 30, "CEA23": 20, "CCER": 15}
DEADLINE = date(2025, 12, 31)
# Weekdays without trading (public holidays of 2025); other years: weekends only.
HOLIDAYS = frozenset(
    date(2025, m, d)
    for m, d in (
        (1, 1),
        (1, 28),
        (1, 29),
        (1, 30),
        (1, 31),
        (2, 3),
        (2, 4),
        (4, 4),
        (5, 1),
        (5, 2),
        (5, 5),
        (6, 2),
        (10, 1),
        (10, 2),
        (10, 3),
        (10, 6),
        (10, 7),
        (10, 8),
    )
)

_NS = 1_000_000_000
_SESSION = 7200 * _NS  # each listing session is two hours
_LUNCH = 5400 * _NS  # 11:30 to 13:00
_AM_BURST = 1800 * _NS  # the open burst: 30 minutes after 09:30
_PM_BURST = 1200 * _NS  # the re-open burst: 20 minutes after 13:00
_CLOSE = 2 * _SESSION + _LUNCH  # 15:00, from 09:30
AM_BURST_SHARE, PM_BURST_SHARE = 0.38, 0.10


def read_row(row: tuple):
    """Return the command of one generated row, read as a replay would read it."""
    from exchange.orderfile import parse_order_text

    text = ",".join(HEADER) + "\n" + ",".join(row) + "\n"
    return parse_order_text(text.encode())[0]


def generate_mixed(
    messages: int,
    *,
    seed: int = 1,
    instruments: tuple[str, ...] = ("CEA25",),
    accounts: int = 50,
    mid_ticks: int = 6000,
    depth_ticks: int = 20,
    cancel_share: float = 0.20,
    marketable_share: float = 0.10,
    fund: bool = False,
) -> list[tuple]:
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
            rows.extend(
                ("issue", "", name, symbol, "", "", "", "", FUND_UNITS) for symbol in instruments
            )
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
        engine.submit(
            PlaceOrder(
                order_id=order_id,
                account=account,
                instrument=symbol,
                side=side,
                price=price,
                qty=qty,
                tif=tif or "gtc",
            ),
            [],
        )
        if engine.order(order_id) is not None:
            live.append((order_id, account))
        rows.append(("new", order_id, account, symbol, side, "limit", tif, price, str(qty)))
    return rows


def parse_mix(text: str) -> dict[str, int]:
    """Return the shares of ``KIND=SHARE,...`` (kinds not named get 0).

    Raise ``ValueError`` naming the problem: not KIND=SHARE, an unknown or repeated
    kind, a share that is not a whole number >= 0, or every share zero.

    >>> parse_mix("limit=60, cancel=40")["cancel"]
    40
    """
    shares = dict.fromkeys(KINDS, 0)
    seen = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kind, equals, number = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"--mix: {item!r} is not KIND=SHARE (e.g. limit=70,cancel=30)")
        if kind not in shares:
            raise ValueError(f"--mix: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if kind in seen:
            raise ValueError(f"--mix: kind {kind!r} is given twice")
        if not number.isascii() or not number.isdigit():
            raise ValueError(
                f"--mix: the share of {kind!r} must be a whole number >= 0, got {number!r}"
            )
        seen.add(kind)
        shares[kind] = int(number)
    if not any(shares.values()):
        raise ValueError(
            "--mix: every share is zero (or none given); at least one kind "
            "needs a positive share, e.g. limit=70,cancel=30"
        )
    return shares


def _mix_table(mix: dict[str, int]) -> tuple[list[int], int]:
    """Return the cumulative integer shares in ``KINDS`` order and their total."""
    cumulative, total = [], 0
    for kind in KINDS:
        total += mix.get(kind, 0)
        cumulative.append(total)
    return cumulative, total


class _Flow:
    """The message maker behind ``generate_kinds`` and ``generate_carbon``.

    Each method decides one message from the engine's current state, submits it to the
    engine and appends its row (``CARBON_HEADER`` order; callers drop columns they do
    not write). Pools hold ids of orders that were live when placed; a pick checks the
    engine and drops the dead ones it meets (swap-remove: amortised O(1) a message).
    It also adds up what each account could need (``notional`` fen without fees,
    ``units`` per instrument), for the carbon profile's funding rows.
    """

    def __init__(
        self, engine: Engine, rng: random.Random, instruments, depth_ticks: int, depth_shape: str
    ) -> None:
        self.engine = engine
        self.rng = rng
        self.rows: list[tuple] = []
        self.out: list = []
        self.serial = 0
        self.insts = {sym: engine.market[sym] for sym in instruments}
        self.books = {sym: engine.book(sym) for sym in instruments}
        self.texts: dict[str, dict[int, str]] = {sym: {} for sym in instruments}
        self.top_ask = dict.fromkeys(instruments, 0)  # highest sell price ever placed
        self.notional: dict[str, int] = {}
        self.units: dict[tuple[str, str], int] = {}
        self.depth = depth_ticks
        self.geometric = None
        if depth_shape == "geometric":
            # Each tick further out is (1 - 3/N) times as likely as the one before it.
            ratio = min(0.99, max(0.3, 1.0 - 3.0 / depth_ticks))
            weight, total, cumulative = 1.0, 0.0, []
            for _ in range(depth_ticks):
                total += weight
                cumulative.append(total)
                weight *= ratio
            self.geometric = (cumulative, total)

    # --- helpers -------------------------------------------------------------------------
    def offset(self) -> int:
        """Return how many ticks from the mid a passive order goes (1..depth)."""
        if self.geometric is None:
            return self.rng.randint(1, self.depth)
        cumulative, total = self.geometric
        return min(bisect(cumulative, self.rng.random() * total), self.depth - 1) + 1

    def clamp(self, sym: str, ticks: int) -> int:
        """Return *ticks* moved inside the instrument's price band (and above zero)."""
        band = self.engine.price_band(sym)
        if band is not None:
            low, high = band
            return low if ticks < low else high if ticks > high else ticks
        return ticks if ticks > 0 else 1

    def qty(self, sym: str, qty: int) -> int:
        """Return *qty* moved onto the instrument's step and inside [min, max]."""
        inst = self.insts[sym]
        qty -= qty % inst.qty_step
        return inst.min_qty if qty < inst.min_qty else inst.max_qty if qty > inst.max_qty else qty

    def text(self, sym: str, ticks: int) -> str:
        texts = self.texts[sym]
        found = texts.get(ticks)
        if found is None:
            found = texts[ticks] = self.insts[sym].tick.format(ticks)
        return found

    def passive_price(self, sym: str, is_buy: bool, mid: int, offset: int) -> int:
        """Return a price *offset* ticks from *mid* that does not cross the book."""
        book = self.books[sym]
        if is_buy:
            price = mid - offset
            ask = book.best_ask()
            if ask is not None and price >= ask:
                price = ask - 1
        else:
            price = mid + offset
            bid = book.best_bid()
            if bid is not None and price <= bid:
                price = bid + 1
        return self.clamp(sym, price)

    def through_price(self, sym: str, is_buy: bool, mid: int) -> int:
        """Return a price 0-3 ticks through the opposite touch (or the mid)."""
        book = self.books[sym]
        touch = book.best_ask() if is_buy else book.best_bid()
        if touch is None:
            touch = mid
        extra = self.rng.randint(0, 3)
        return self.clamp(sym, touch + extra if is_buy else touch - extra)

    def _need(self, account: str, sym: str, is_buy: bool, price: int, qty: int) -> None:
        if is_buy:
            self.notional[account] = (
                self.notional.get(account, 0) + price * qty * self.insts[sym].tick_value
            )
        else:
            key = (account, sym)
            self.units[key] = self.units.get(key, 0) + qty
            if price > self.top_ask[sym]:
                self.top_ask[sym] = price

    # --- messages --------------------------------------------------------------------------
    def new(
        self,
        sym: str,
        account: str,
        is_buy: bool,
        qty: int,
        ts,
        *,
        kind: str = "limit",
        tif: str = "gtc",
        price: int | None = None,
        stop: int | None = None,
        pool: list | None = None,
    ) -> None:
        """Place a new order; add its id to *pool* if it is live afterwards."""
        self.serial += 1
        order_id = f"o{self.serial}"
        side = "buy" if is_buy else "sell"
        price_text = None if price is None else self.text(sym, price)
        stop_text = None if stop is None else self.text(sym, stop)
        if price is not None:
            self._need(account, sym, is_buy, price, qty)
        elif is_buy:  # market or stop: held at the band's top, or what the asks cost
            band = self.engine.price_band(sym)
            self._need(account, sym, True, band[1] if band else self.top_ask[sym], qty)
        else:
            self._need(account, sym, False, 0, qty)
        if stop_text is None:
            command = PlaceOrder(
                order_id=order_id,
                account=account,
                instrument=sym,
                side=side,
                type=kind,
                tif=tif,
                price=price_text,
                qty=qty,
                ts=ts,
            )
        else:
            command = PlaceOrder(
                order_id=order_id,
                account=account,
                instrument=sym,
                side=side,
                type=kind,
                tif=tif,
                price=price_text,
                qty=qty,
                stop_price=stop_text,
                ts=ts,
            )
        out = self.out
        self.engine.submit(command, out)
        out.clear()
        if pool is not None and self.engine.order(order_id) is not None:
            pool.append(order_id)
        self.rows.append(
            (
                "new",
                order_id,
                account,
                sym,
                side,
                "limit" if kind == "limit" else kind,
                "" if tif == "gtc" else tif,
                price_text or "",
                str(qty),
                stop_text or "",
                "" if ts is None else str(ts),
            )
        )

    def pick(self, pool: list, remove: bool):
        """Return a live order of *pool* (removed from it if *remove*), or ``None``."""
        rng, live = self.rng, self.engine.order
        while pool:
            index = rng.randrange(len(pool))
            pool[index], pool[-1] = pool[-1], pool[index]
            order = live(pool[-1])
            if order is None or remove:
                pool.pop()
            if order is not None:
                return order
        return None

    def cancel(self, pool: list, ts) -> bool:
        """Cancel a live order of *pool*; return ``False`` if it has none."""
        order = self.pick(pool, True)
        if order is None:
            return False
        self.engine.submit(
            CancelOrder(order_id=order.order_id, account=order.account, ts=ts), self.out
        )
        self.out.clear()
        self.rows.append(
            (
                "cancel",
                order.order_id,
                order.account,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "" if ts is None else str(ts),
            )
        )
        return True

    def amend(self, order, ts, price: int | None, qty: int | None) -> None:
        """Amend live *order* to *price* and/or *qty* (``None`` = unchanged)."""
        sym = order.instrument
        price_text = None if price is None else self.text(sym, price)
        self._need(
            order.account,
            sym,
            order.is_buy,
            order.price if price is None else price,
            order.qty if qty is None else qty,
        )
        self.engine.submit(
            AmendOrder(
                order_id=order.order_id, account=order.account, price=price_text, qty=qty, ts=ts
            ),
            self.out,
        )
        self.out.clear()
        self.rows.append(
            (
                "amend",
                order.order_id,
                order.account,
                "",
                "",
                "",
                "",
                price_text or "",
                "" if qty is None else str(qty),
                "",
                "" if ts is None else str(ts),
            )
        )

    def stop(
        self, sym: str, account: str, is_buy: bool, qty: int, ts, mid: int, pool: list
    ) -> None:
        """Place a day stop (market) or stop-limit, its stop 5-40 ticks beyond the last.

        A plain stop only where the instrument has a band: a ledger sizes a market
        stop's hold by the band (it refuses one without).
        """
        rng = self.rng
        last = self.books[sym].last_price or mid
        distance = rng.randint(5, 40)
        stop = self.clamp(sym, last + distance if is_buy else last - distance)
        if self.engine.price_band(sym) is not None and rng.random() < 0.5:
            self.new(sym, account, is_buy, qty, ts, kind="stop", tif="day", stop=stop, pool=pool)
            return
        slack = rng.randint(0, 5)
        price = self.clamp(sym, stop + slack if is_buy else stop - slack)
        self.new(
            sym,
            account,
            is_buy,
            qty,
            ts,
            kind="stop_limit",
            tif="day",
            price=price,
            stop=stop,
            pool=pool,
        )


def generate_kinds(
    messages: int,
    *,
    mix: dict[str, int],
    seed: int = 1,
    instruments: tuple[str, ...] = ("CEA25",),
    accounts: int = 50,
    mid_ticks: int = 6000,
    depth_ticks: int = 20,
    depth_shape: str = "uniform",
    fund: bool = False,
) -> list[tuple]:
    """Return *messages* rows (``KINDS_HEADER`` order) of the mixed profile's market
    with the message kinds in the shares of *mix* (see ``KINDS``).

    The market is generate_mixed's: accounts ``acc000``..., every instrument's mid
    starting at *mid_ticks* and walking a tick at a time, quantities 1-500, no
    timestamps and no ``eod`` (so no price band: stops are stop-limits). A tenth of the
    cancels go to pending stops. A cancel or amend with no live order to name becomes a
    passive limit order. With *fund*, the first rows fund every account as
    generate_mixed does. O(messages).
    """
    rng = random.Random(seed)
    engine = Engine(default_market(), ledger=fund)
    flow = _Flow(engine, rng, instruments, depth_ticks, depth_shape)
    rows = flow.rows
    names = [f"acc{i:03d}" for i in range(accounts)]
    if fund:
        for name in names:
            rows.append(("deposit", "", name, "CNY", "", "", "", "", FUND_CASH, "", ""))
            rows.extend(
                ("issue", "", name, symbol, "", "", "", "", FUND_UNITS, "", "")
                for symbol in instruments
            )
        del rows[messages:]
        for row in rows:
            engine.submit(read_row(row[:9]), [])
    cumulative, total = _mix_table(mix)
    mids = dict.fromkeys(instruments, mid_ticks)
    resting: list[str] = []
    stops: list[str] = []
    random_, randrange = rng.random, rng.randrange
    while len(rows) < messages:
        kind = bisect(cumulative, random_() * total)
        if kind == _CANCEL:
            pools = (resting, stops) if random_() < 0.9 else (stops, resting)
            if any(flow.cancel(pool, None) for pool in pools if pool):
                continue
            kind = _LIMIT
        symbol = instruments[randrange(len(instruments))]
        if random_() < 0.05:
            mids[symbol] += 1 if random_() < 0.5 else -1
        mid = mids[symbol]
        if kind == _AMEND:
            order = flow.pick(resting, False)
            if order is not None:
                if random_() < 0.5:
                    qty = flow.qty(order.instrument, rng.randint(1, 500))
                    flow.amend(order, None, None, qty)
                else:
                    price = flow.passive_price(
                        order.instrument, order.is_buy, mids[order.instrument], flow.offset()
                    )
                    flow.amend(order, None, price, None)
                continue
            kind = _LIMIT
        is_buy = random_() < 0.5
        account = names[randrange(accounts)]
        qty = flow.qty(symbol, rng.randint(1, 500))
        _aggress(flow, kind, symbol, account, is_buy, qty, None, mid, resting, stops, "gtc")
    return [row[:10] for row in rows]


def _aggress(
    flow: _Flow,
    kind: int,
    symbol: str,
    account: str,
    is_buy: bool,
    qty: int,
    ts,
    mid: int,
    pool: list,
    stops: list,
    tif: str,
) -> None:
    """Place one new order of *kind* (any kind but cancel and amend)."""
    if kind == _LIMIT:
        flow.new(
            symbol,
            account,
            is_buy,
            qty,
            ts,
            tif=tif,
            pool=pool,
            price=flow.passive_price(symbol, is_buy, mid, flow.offset()),
        )
    elif kind == _MARKETABLE:
        flow.new(
            symbol,
            account,
            is_buy,
            qty,
            ts,
            tif=tif,
            pool=pool,
            price=flow.through_price(symbol, is_buy, mid),
        )
    elif kind == _MARKET:
        flow.new(symbol, account, is_buy, qty, ts, kind="market")
    elif kind == _STOP:
        flow.stop(symbol, account, is_buy, qty, ts, mid, stops)
    else:
        flow.new(
            symbol,
            account,
            is_buy,
            qty,
            ts,
            tif="ioc" if kind == _IOC else "fok",
            price=flow.through_price(symbol, is_buy, mid),
        )


def trading_days(deadline: date = DEADLINE) -> list[date]:
    """Return the trading days of the compliance year ending on *deadline*, in order.

    The year runs from the day after the deadline's date one year earlier; trading days
    are Monday to Friday less ``HOLIDAYS``.

    >>> days = trading_days(date(2025, 12, 31))
    >>> len(days), days[0], days[-1]
    (243, datetime.date(2025, 1, 2), datetime.date(2025, 12, 31))
    """
    start = _months_before(deadline, 12) + timedelta(days=1)
    days, day = [], start
    while day <= deadline:
        if day.weekday() < 5 and day not in HOLIDAYS:
            days.append(day)
        day += timedelta(days=1)
    return days


def _months_before(day: date, months: int) -> date:
    """Return *day* moved back *months* months (the day clamped to the month's length)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    for last in (day.day, 30, 29, 28):
        try:
            return date(year, month + 1, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split *total* into whole parts proportional to *weights* (largest remainder)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    scale = total / sum(weights)
    quotas = [w * scale for w in weights]
    counts = [int(q) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def _day_counts(body: int, weights: list[float]) -> list[int]:
    """Return orders per day such that orders plus one ``eod`` per busy day = *body*.

    A file too small for every day (under two rows a day) uses evenly spaced days. A
    single row cannot hold an order and its eod: the caller cuts the eod.
    """
    days = len(weights)
    counts = [0] * days
    if body <= 0 or not days:
        return counts
    busy = days if body >= 2 * days else max(1, body // 8)
    chosen = [days - 1 - (days * j) // busy for j in range(busy)][::-1]
    parts = _allocate(max(body - busy, 1), [weights[i] for i in chosen])
    for i, part in zip(chosen, parts):
        counts[i] = part
    # Days that drew no order have no eod either: their rows go to the busiest day.
    idle = busy - sum(1 for c in counts if c)
    counts[max(chosen, key=lambda i: (counts[i], -i))] += idle
    return counts


def generate_carbon(
    messages: int,
    *,
    seed: int = 1,
    mix: dict[str, int] | None = None,
    instruments: tuple[str, ...] = CARBON_INSTRUMENTS,
    entities: int = 200,
    market_makers: int = 4,
    depth_ticks: int = 20,
    depth_shape: str = "geometric",
    deadline: date = DEADLINE,
    last_quarter_share: float = 0.75,
    fund: bool = False,
) -> list[tuple]:
    """Return *messages* rows (``CARBON_HEADER`` order) of a compliance year.

    *instruments* are spot instruments of the default market. Per trading day (see
    ``trading_days``) the messages come in time order at random instants of the listing
    hours, 38% of them in a burst over the 30 minutes after 09:30 (most in the first
    15) and 10% over the 20 minutes after 13:00; an ``eod`` row at 15:00 ends the day.
    Messages per day are flat through the year, then rise from 1.5 to 4 times that
    over the last quarter before *deadline*, whose orders are larger too, sized so that
    the quarter carries *last_quarter_share* of the year's traded volume.

    Participants: *entities* covered entities (``ent0001``...; entity k's activity
    falls as 1/(k+4)), trading limits (60% day, 40% gtc) at a geometric or uniform
    depth from the mid, and all marketable, market, ioc, fok and stop orders (in the
    last quarter 54% of them buy); *market_makers* (``mm01``...) quote day orders 1-3 ticks either
    side of the mid (40% of limits, alternating sides) and get half the amends
    (re-quotes to the mid) and 40% of the cancels. Each instrument's mid walks a tick at
    a time, stays within 7% of the last close (the band is 10%) and drifts up 0.1% a
    day in the last quarter. Quantities: mostly 100-2,000 t, some up to 50,000 t, times
    the day's size factor, inside the instrument's [min, max] (listing orders < 100,000 t).

    A cancel or amend with no live order to name becomes a passive limit order.
    O(messages) plus the engine's work: 10-15 s for a million rows.
    """
    mix = CARBON_MIX if mix is None else mix
    rng = random.Random(seed)
    market = default_market()
    engine = Engine(market)
    flow = _Flow(engine, rng, instruments, depth_ticks, depth_shape)
    ents = [f"ent{i:04d}" for i in range(1, entities + 1)]
    mms = [f"mm{i:02d}" for i in range(1, market_makers + 1)]
    accounts = ents + mms
    fund_rows = len(accounts) * (1 + len(instruments)) if fund else 0
    body = messages - min(fund_rows, messages)

    # The calendar: message weight and order size factor per trading day.
    days = trading_days(deadline)
    quarter = _months_before(deadline, 3) + timedelta(days=1)
    late = [day >= quarter for day in days]
    weights, late_days = [], sum(late)
    for i in range(len(days)):
        noise = 0.75 + 0.5 * rng.random()
        if late[i]:
            step = i - (len(days) - late_days)
            ramp = 1.5 + 2.5 * step / max(1, late_days - 1)
            weights.append(ramp * noise)
        else:
            weights.append(noise)
    early_weight = sum(w for w, is_late in zip(weights, late) if not is_late)
    late_weight = sum(w for w, is_late in zip(weights, late) if is_late)
    # Traded volume goes with messages x size: size the quarter's orders to the share.
    # Thin quiet days trade less of what they are sent (day orders expire, so each day
    # opens on a thin book): the quarter's odds run high by about 2.1/sqrt(orders a day).
    if late_weight and early_weight:
        factor = last_quarter_share * early_weight / ((1 - last_quarter_share) * late_weight)
        factor /= 1 + _THIN_BOOK / math.sqrt(max(1.0, body / len(days)))
    else:
        factor = 1.0
    size_pct = [int(factor * 100) if is_late else 100 for is_late in late]
    counts = _day_counts(body, weights)

    cumulative, total = _mix_table(mix)
    instrument_weights = [CARBON_ACTIVITY.get(sym, 10) for sym in instruments]
    inst_cumulative = [sum(instrument_weights[: i + 1]) for i in range(len(instruments))]
    inst_total = inst_cumulative[-1]
    entity_cumulative, running = [], 0.0
    for i in range(entities):
        running += 1.0 / (i + 5)
        entity_cumulative.append(running)
    mids = {sym: CARBON_MIDS.get(sym, 7000) for sym in instruments}
    mm_next_buy = [True] * market_makers
    entity_pool: list[str] = []
    mm_pool: list[str] = []
    stop_pool: list[str] = []
    random_, randrange, randint = rng.random, rng.randrange, rng.randint
    new, qty_of = flow.new, flow.qty

    for i, day in enumerate(days):
        count = counts[i]
        if not count:
            continue
        open_ns = timegm((day.year, day.month, day.day, 9, 30, 0)) * _NS
        pct = size_pct[i]
        buy_share = 0.54 if late[i] else 0.5
        # Mids: within 7% of the last close, drifting up in the last quarter.
        low, high, step_odds = {}, {}, {}
        for j, sym in enumerate(instruments):
            reference = engine.reference_price(sym)
            mid = mids[sym]
            if late[i]:
                mid += mid // 1000
            if reference is not None:
                low[sym], high[sym] = reference * 93 // 100, reference * 107 // 100
            else:
                low[sym], high[sym] = mid * 93 // 100, mid * 107 // 100
            mids[sym] = min(max(mid, low[sym]), high[sym])
            # About 30 ticks (0.4%) of intraday walk whatever the day's messages.
            expected = count * instrument_weights[j] / inst_total
            step_odds[sym] = min(0.5, 900.0 / expected) if expected else 0.5
        for ts in _day_times(rng, count, open_ns):
            kind = bisect(cumulative, random_() * total)
            sym = instruments[bisect(inst_cumulative, random_() * inst_total)]
            if random_() < step_odds[sym]:
                mid = mids[sym] + (1 if random_() < 0.5 else -1)
                mids[sym] = min(max(mid, low[sym]), high[sym])
            if kind == _CANCEL:
                draw = random_()
                pools = (
                    (mm_pool, entity_pool, stop_pool)
                    if draw < 0.4
                    else (stop_pool, entity_pool, mm_pool)
                    if draw < 0.5
                    else (entity_pool, mm_pool, stop_pool)
                )
                if any(flow.cancel(pool, ts) for pool in pools if pool):
                    continue
                kind = _LIMIT
            elif kind == _AMEND:
                pools = (mm_pool, entity_pool) if random_() < 0.5 else (entity_pool, mm_pool)
                if _amend(flow, rng, pools, mids, ts, pct):
                    continue
                kind = _LIMIT
            if kind == _LIMIT and mms and random_() < 0.4:
                m = randrange(market_makers)
                is_buy = mm_next_buy[m]
                mm_next_buy[m] = not is_buy
                qty = qty_of(sym, randint(5, 30) * 100 * pct // 100)
                new(
                    sym,
                    mms[m],
                    is_buy,
                    qty,
                    ts,
                    tif="day",
                    pool=mm_pool,
                    price=flow.passive_price(sym, is_buy, mids[sym], randint(1, 3)),
                )
                continue
            account = ents[min(bisect(entity_cumulative, random_() * running), entities - 1)]
            draw = random_()
            base = (
                randint(1, 20) * 100
                if draw < 0.70
                else randint(20, 100) * 100
                if draw < 0.95
                else randint(100, 500) * 100
            )
            qty = qty_of(sym, base * pct // 100)
            if kind == _LIMIT:
                is_buy = random_() < 0.5
                tif = "day" if random_() < 0.6 else "gtc"
            else:
                is_buy = random_() < buy_share
                tif = "gtc"
            _aggress(
                flow, kind, sym, account, is_buy, qty, ts, mids[sym], entity_pool, stop_pool, tif
            )
        close = open_ns + _CLOSE
        engine.submit(EndOfDay(ts=close), flow.out)
        flow.out.clear()
        flow.rows.append(("eod", "", "", "", "", "", "", "", "", "", str(close)))

    rows = _carbon_funding(flow, market, accounts, instruments) if fund else []
    rows.extend(flow.rows)
    del rows[messages:]
    return rows


# Measured: the last quarter's share of traded volume over seeds 1-5 at 5,000 to
# 1,000,000 rows (odds = share / (1 - share), against the aimed odds).
_THIN_BOOK = 2.1


def _amend(
    flow: _Flow, rng: random.Random, pools: tuple[list, list], mids: dict, ts, pct: int
) -> bool:
    """Amend a live order of the first pool (else the second); ``False`` if neither has one.

    A market maker's order is re-quoted 1-3 ticks from the mid (half the time with a
    fresh size); an entity's gets a new size (half), a new price near the mid (a third)
    or both.
    """
    order = flow.pick(pools[0], False) or flow.pick(pools[1], False)
    if order is None:
        return False
    sym = order.instrument
    mid = mids[sym]
    if order.account.startswith("mm"):
        price = flow.passive_price(sym, order.is_buy, mid, rng.randint(1, 3))
        qty = flow.qty(sym, rng.randint(5, 30) * 100 * pct // 100) if rng.random() < 0.5 else None
    else:
        draw = rng.random()
        price = None if draw < 0.5 else flow.passive_price(sym, order.is_buy, mid, flow.offset())
        qty = None if 0.5 <= draw < 0.83 else flow.qty(sym, order.qty * rng.randint(50, 150) // 100)
    flow.amend(order, ts, price, qty)
    return True


def _day_times(rng: random.Random, count: int, open_ns: int) -> list[int]:
    """Return *count* sorted instants (ns) in one day's listing hours, bursts included.

    Bursts take the earlier of two uniform instants in their window, so their density
    falls linearly from the open to the window's end. Integer draws only.
    """
    randrange, random_ = rng.randrange, rng.random
    times = []
    append = times.append
    pm_open = open_ns + _SESSION + _LUNCH
    for _ in range(count):
        draw = random_()
        if draw < AM_BURST_SHARE:
            append(open_ns + min(randrange(_AM_BURST), randrange(_AM_BURST)))
        elif draw < AM_BURST_SHARE + PM_BURST_SHARE:
            append(pm_open + min(randrange(_PM_BURST), randrange(_PM_BURST)))
        else:
            offset = randrange(2 * _SESSION)
            append(open_ns + offset + (_LUNCH if offset >= _SESSION else 0))
    times.sort()
    return times


def _carbon_funding(
    flow: _Flow, market, accounts: list[str], instruments: tuple[str, ...]
) -> list[tuple]:
    """Return a deposit and an issue row per instrument for each account: what its
    orders could need at most (see the module docstring), rounded up, plus a float of
    10 M CNY and 10,000 units (100 M CNY and 100,000 units for market makers)."""
    fee = max(max(market[s].maker_fee, market[s].taker_fee) for s in instruments)
    rows = []
    for account in accounts:
        maker = account.startswith("mm")
        notional = flow.notional.get(account, 0)
        cash = notional + notional * fee // FEE_SCALE + 1  # fen; fees rounded up
        cash = -(-cash // 100_000_000) * 1_000_000 + (100_000_000 if maker else 10_000_000)
        rows.append(("deposit", "", account, "CNY", "", "", "", "", f"{cash}.00", "", ""))
        for sym in instruments:
            units = -(-flow.units.get((account, sym), 0) // 1000) * 1000
            units += 100_000 if maker else 10_000
            rows.append(("issue", "", account, sym, "", "", "", "", str(units), "", ""))
    return rows


def write_rows(
    path: str | Path | None, rows: list[tuple], fmt: str, header: tuple[str, ...] = HEADER
) -> None:
    """Write *rows* as CSV (with *header*) or NDJSON (empty fields left out; ``qty`` and
    ``ts`` as JSON integers, except the decimal amount of a deposit or withdrawal)."""
    out = sys.stdout if path in (None, "-") else open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (stdout or a file, closed below)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = ", ".join(KINDS)
    parser.add_argument(
        "--profile",
        choices=("mixed", "carbon"),
        default="mixed",
        help="mixed: instruments priced around 60.00, no timestamps (the "
        "original generator, its files unchanged); carbon: a compliance year "
        "of trading days with timestamps and eod rows, covered "
        "entities and market makers, a heavy last quarter and bursts "
        "after the open (default: mixed)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=100_000,
        metavar="N",
        help="number of data rows, funding and eod rows included (default 100000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--instruments",
        metavar="SYM,SYM",
        help="comma-separated instruments of the default market (default: "
        "CEA25 for mixed; CEA23,CEA24,CEA25,CCER for carbon, which "
        "takes spot instruments only)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        metavar="N",
        help="mixed: number of accounts (default 50); carbon: number of "
        "covered entities ent0001... (default 200)",
    )
    parser.add_argument(
        "--market-makers",
        type=int,
        metavar="N",
        help="carbon: number of market makers mm01... quoting both sides "
        "near the mid and re-quoting (default 4)",
    )
    parser.add_argument(
        "--mix",
        metavar="KIND=N,...",
        help=f"shares (whole numbers, normalised) of the message kinds "
        f"{kinds}: limit rests near the mid, cancel and amend name a "
        f"live order, marketable is a limit through the touch, market "
        f"a market order, ioc and fok limits through the touch with "
        f"that tif, stop a stop or stop_limit beyond the last price; "
        f"kinds left out get 0. Default for mixed: limit=70,cancel=20,"
        f"marketable=7,ioc=3 (the original generator, used unless "
        f"--mix or --depth-shape geometric is given); for carbon: "
        + ",".join(f"{k}={v}" for k, v in CARBON_MIX.items()),
    )
    parser.add_argument(
        "--depth-ticks",
        type=int,
        default=20,
        metavar="N",
        help="how far from the mid passive limit orders go, in ticks (default 20)",
    )
    parser.add_argument(
        "--depth-shape",
        choices=("uniform", "geometric"),
        help="how passive orders spread over those ticks: uniform, or "
        "geometric (most near the touch, each tick further out "
        "1-3/N times as likely) (default: uniform for mixed, "
        "geometric for carbon)",
    )
    parser.add_argument(
        "--deadline",
        metavar="YYYY-MM-DD",
        help="carbon: the compliance deadline ending the year of trading "
        "days; the last quarter before it is the heavy one "
        "(default 2025-12-31)",
    )
    parser.add_argument(
        "--fund",
        action="store_true",
        help="start with a deposit and an issue row per account, enough for "
        "every order (for replay --ledger)",
    )
    parser.add_argument(
        "--format",
        choices=("csv", "ndjson"),
        default="csv",
        help="csv (with a header row) or ndjson (default csv)",
    )
    parser.add_argument("--out", metavar="FILE", default="-", help="output file (default stdout)")


def run(args: argparse.Namespace) -> int:

    carbon = args.profile == "carbon"
    accounts = args.accounts if args.accounts is not None else (200 if carbon else 50)
    if args.messages < 0 or accounts < 1:
        raise UsageError("--messages must be >= 0 and --accounts >= 1")
    if args.depth_ticks < 1:
        raise UsageError("--depth-ticks must be >= 1")
    if not carbon:
        for option, value in (
            ("--market-makers", args.market_makers),
            ("--deadline", args.deadline),
        ):
            if value is not None:
                raise UsageError(f"{option} applies to --profile carbon only")
    if args.instruments is None:
        instruments = CARBON_INSTRUMENTS if carbon else ("CEA25",)
    else:
        instruments = tuple(s for s in args.instruments.split(",") if s)
    market = default_market()
    unknown = [s for s in instruments if s not in market]
    if unknown or not instruments:
        raise UsageError(
            f"unknown instrument(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(market.instruments)}"
        )
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
                f"the carbon profile trades spot instruments only, not {', '.join(futures)}"
            )
        makers = 4 if args.market_makers is None else args.market_makers
        if makers < 0:
            raise UsageError("--market-makers must be >= 0")
        deadline = DEADLINE
        if args.deadline is not None:
            try:
                deadline = date.fromisoformat(args.deadline)
            except ValueError:
                raise UsageError(f"--deadline {args.deadline!r} is not a date YYYY-MM-DD") from None
        rows = generate_carbon(
            args.messages,
            seed=args.seed,
            mix=mix,
            instruments=instruments,
            entities=accounts,
            market_makers=makers,
            depth_ticks=args.depth_ticks,
            depth_shape=shape,
            deadline=deadline,
            fund=args.fund,
        )
        header = CARBON_HEADER
    elif mix is None and shape == "uniform":
        rows = generate_mixed(
            args.messages,
            seed=args.seed,
            instruments=instruments,
            accounts=accounts,
            depth_ticks=args.depth_ticks,
            fund=args.fund,
        )
        header = HEADER
    else:
        rows = generate_kinds(
            args.messages,
            mix=mix or MIXED_MIX,
            seed=args.seed,
            instruments=instruments,
            accounts=accounts,
            depth_ticks=args.depth_ticks,
            depth_shape=shape,
            fund=args.fund,
        )
        header = KINDS_HEADER
    try:
        write_rows(args.out, rows, args.format, header)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0
