"""Market configuration: the instruments an engine trades and their rules.

A market is read from TOML (``tomllib``, floats parsed as exact decimals). A
``[defaults]`` table gives any instrument key a market-wide default; a
``[series.NAME]`` table lists a monthly, quarterly or December series of futures
(``NAME-DEC26``...); ``[clearing]`` holds the clearing house's terms. Every
instrument has a kind (spot, future, option), a currency, a price tick, a quantity
step, minimum and maximum order quantity, and optionally a price band (a fraction of
the reference price) and a reference price. Allowances carry a vintage; futures a
contract size. The default market ships as ``exchange/markets/default.toml``.

Invariants: ticks and steps are positive; ``min_qty <= max_qty``; both are multiples
of the step; a configured reference price lies on the tick; a cleared future has its
margins, an allowance to deliver and its last trading and delivery days; an option its
strike on the tick and a cleared future with the same lot and tick.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypedDict

from exchange.calendar import (Calendar, CalendarError, contract_months, days_from_civil,
                               parse_date, parse_month)
from exchange.schedule import MODES, WEEKDAYS, Schedule
from exchange.units import Scale, parse_decimal

__all__ = [
    "Instrument", "Market", "format_cash", "Clearing", "MarketConfigError", "load_market",
    "default_market", "BlockRules", "AuctionRules", "Limits", "QuotingObligation",
    "cash_needed"
]

KINDS = ("spot", "future", "option")

_KEYS = {
    "kind", "currency", "tick", "qty_step", "min_qty", "max_qty", "band", "reference_price",
    "vintage", "vintage_from", "contract_size", "underlying", "contract_month", "strike",
    "option_type", "unit", "maker_fee_bps", "taker_fee_bps", "settlement_days",
    "position_limit", "offset", "initial_margin", "maintenance_margin", "registered",
    "in_scheme"
}
_CLEARING_KEYS = {
    "holidays", "settlement_window", "utc_offset", "delivery_days", "delivery_penalty",
    "option_expiry_days", "mid_max_spread"
}
# Minor units per currency (cash is held in integer minor units: fen for CNY).
MINOR_UNITS = {"CNY": 2, "EUR": 2, "USD": 2, "JPY": 0}
FEE_SCALE = 1_000_000  # fee rates are held in millionths: 1 bp = 100


def cash_needed(price: int, qty: int, unit: int, fee: int, accrued: int = 0) -> int:
    """Return what a buy of *qty* at *price* may cost with fees, in minor units, for an
    order whose fills so far accrued *accrued* (notional x fee rate, in millionths).

    >>> cash_needed(6000, 100, 1, 150)    # 100 t at 60.00 CNY, fee 1.5 bp
    600090
    >>> cash_needed(6000, 1, 1, 150, 6000 * 150 * 9)  # the last of ten 1 t fills: 0.01 due
    6001
    """
    notional = price * qty * unit
    return notional + (accrued + notional * fee) // FEE_SCALE - accrued // FEE_SCALE


class MarketConfigError(ValueError):
    """A market file that cannot be used: the message names the instrument and key."""


# The optional keys ``_instrument`` passes to ``Instrument`` only when the file gives them.
class _Margins(TypedDict, total=False):
    initial_margin: int
    maintenance_margin: int


class _Option(TypedDict, total=False):
    strike: int
    option_type: str


class _Credit(TypedDict, total=False):
    registered: int
    in_scheme: bool


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument and its trading rules, in integer units.

    ``band_num / band_den`` is the band as an exact fraction; ``reference_price`` is in
    ticks. ``price_band(reference)`` gives the inclusive ``(low, high)`` tick range.
    """

    symbol: str
    kind: str
    currency: str
    tick: Scale
    qty_step: int = 1
    min_qty: int = 1
    max_qty: int = 99_999
    band: Decimal | None = None
    reference_price: int | None = None
    vintage: int | None = None
    contract_size: int = 1
    unit: str = "t"
    underlying: str | None = None
    contract_month: str | None = None
    band_num: int = field(default=0, repr=False)
    band_den: int = field(default=1, repr=False)
    # Ledger terms: cash in minor units per tick per unit of quantity (contract size
    # included); fees in millionths of the notional; T+n lock on bought units (0 or 1);
    # the most a financial institution may hold or bid for (None = no limit).
    tick_value: int = 1
    maker_fee: int = 0
    taker_fee: int = 0
    settlement_days: int = 1
    position_limit: int | None = None
    # An offset credit (CCER): surrendered within the offset cap, not as allowances; the
    # day its project was registered (day number), and whether the project lies inside
    # the trading scheme (then it never counts).
    offset: bool = False
    registered: int | None = None
    in_scheme: bool = False
    # Futures: margins in minor units per lot; the last trading day and the delivery
    # day (day numbers since 1970-01-01, from the contract month and the calendar).
    initial_margin: int = 0
    maintenance_margin: int = 0
    last_trading_day: int | None = None
    delivery_day: int | None = None
    # Options: the strike in ticks and call or put; ``last_trading_day`` is the expiry.
    strike: int | None = None
    option_type: str | None = None
    # Allowances of a compliance period of several years (CEA19-20: 2019 and 2020): its
    # first year; ``vintage`` is its last. None: the one year ``vintage``.
    vintage_from: int | None = None

    @property
    def first_year(self) -> int | None:
        """The first compliance year the allowances are of (``vintage`` unless a period)."""
        return self.vintage if self.vintage_from is None else self.vintage_from

    def of_year(self, year: int) -> bool:
        """Are these allowances of compliance *year* (allocated in them)?"""
        first, last = self.first_year, self.vintage
        return first is not None and last is not None and first <= year <= last

    def price_band(self, reference: int | None) -> tuple[int, int] | None:
        """Return the inclusive tick range allowed around *reference*, or ``None`` for no band.

        The low edge rounds up and the high edge down, so the band never widens.

        >>> from exchange.units import Scale
        >>> inst = Instrument("X", "spot", "CNY", Scale("0.01"), band=Decimal("0.10"),
        ...                   band_num=1, band_den=10)
        >>> inst.price_band(6001)
        (5401, 6601)
        """
        if reference is None or self.band is None:
            return None
        num, den = self.band_num, self.band_den
        low = -((-reference * (den - num)) // den)
        high = (reference * (den + num)) // den
        return max(low, 1), high

    def format_price(self, ticks: int | None) -> str | None:
        """Return *ticks* as a decimal price string."""
        return None if ticks is None else self.tick.format(ticks)


@dataclass(frozen=True, slots=True)
class Clearing:
    """The clearing house's terms (``[clearing]``): the holidays of the trading calendar,
    the closing window whose trades set each day's settlement price (seconds of the day,
    UTC, from ``settlement_window`` in local time and ``utc_offset``), the business days
    from the last trading day to delivery, the penalty on a failed delivery (a
    fraction of the final settlement price per undelivered tonne), and the widest spread
    (a fraction of the mid) whose mid may set a settlement price."""

    holidays: frozenset[int] = frozenset()
    window_start_s: int = (14 * 60 + 45) * 60 - 8 * 3600  # 14:45 in UTC+08:00
    window_end_s: int = 15 * 3600 - 8 * 3600  # 15:00
    delivery_days: int = 3
    penalty_num: int = 1
    penalty_den: int = 10
    option_expiry_days: int = 3  # options expire this many business days before the future
    spread_num: int = 1  # mid_max_spread: 2% of the mid
    spread_den: int = 50

    def mid_counts(self, bid: int, ask: int) -> bool:
        """May the mid of *bid* and *ask* set a settlement price? Only if the spread is
        at most ``mid_max_spread`` of the mid: a quote far from the other is no price."""
        return (ask - bid) * 2 * self.spread_den <= self.spread_num * (bid + ask)

    def in_window(self, ts: int) -> bool:
        """Is the engine time *ts* (ns, UTC) inside the closing window? (It may wrap
        past midnight UTC.)"""
        second = ts // 10**9 % 86_400
        start, end = self.window_start_s, self.window_end_s
        return start <= second < end if start < end else (second >= start or second < end)


@dataclass(frozen=True, slots=True)
class BlockRules:
    """``[blocks]``: block agreements trade at least ``min_qty`` units, priced within
    ``band`` (a fraction) of the reference price (no band without a reference)."""

    min_qty: int = 100_000
    band_num: int = 3
    band_den: int = 10


@dataclass(frozen=True, slots=True)
class AuctionRules:
    """``[auctions]``: one-way auctions offer at least ``min_qty``; the reserve lies
    between the reference and ``band`` (a fraction) below it for a sale (above, for a
    purchase) and bids at most ``band`` beyond it. A primary auction (the registry
    selling) is cancelled when its bids cover less than its quantity, or when it would
    clear more than ``primary_cancel_below`` (a fraction) under the reference price."""

    min_qty: int = 100_000
    band_num: int = 1
    band_den: int = 10
    cancel_num: int = 1
    cancel_den: int = 10


@dataclass(frozen=True, slots=True)
class Limits:
    """``[limits]``: the most allowances (all vintages of non-offset spot instruments
    with a vintage together, plus futures' net long lots times the lot size, counting
    open buys, bids and blocks) an account of each kind may have; a covered entity's is
    its latest allocation plus ``covered``. A kind not given has no limit."""

    by_kind: tuple[tuple[str, int], ...] = ()

    def of(self, kind: str) -> int | None:
        for name, limit in self.by_kind:
            if name == kind:
                return limit
        return None


@dataclass(frozen=True, slots=True)
class QuotingObligation:
    """``[market_makers.SYMBOL]``: a market maker quotes both sides, each at least
    ``min_qty``, at most ``max_spread`` ticks apart, for at least ``min_presence`` (a
    fraction, num/den) of the listing sessions; one that meets it gets back
    ``rebate`` (num/den) of the maker fees it paid in the instrument that day."""

    symbol: str
    max_spread: int
    min_qty: int
    presence_num: int
    presence_den: int
    rebate_num: int = 0
    rebate_den: int = 1


@dataclass(frozen=True, slots=True)
class Market:
    """The instruments of one market, by symbol."""

    instruments: dict[str, Instrument]
    source: str = "<default>"
    text: str = field(default="", repr=False)  # the TOML it was read from (for journals)
    clearing: Clearing = Clearing()
    schedule: Schedule | None = None  # None: always open
    always_open: bool = False  # [operation] always_open: the schedule set aside
    blocks: BlockRules = BlockRules()
    auctions: AuctionRules = AuctionRules()
    limits: Limits = Limits()
    quoting: tuple[QuotingObligation, ...] = ()

    def open_all_hours(self) -> Market:
        """This market with its schedule set aside (a test or demonstration exchange that
        trades at any hour): its text gains ``[operation] always_open = true``, so a
        journal or snapshot of it reads back the same."""
        if self.always_open:
            return self
        return parse_market(_operated(self.text, "always_open", True), self.source)

    def without_limits(self) -> Market:
        """This market with its position limits set aside (a synthetic order file whose
        accounts hold more than any limit allows): its text gains ``[operation]
        position_limits = false``, so a journal or snapshot of it reads back the same."""
        if not self.limits.by_kind:
            return self
        return parse_market(_operated(self.text, "position_limits", False), self.source)

    def __getitem__(self, symbol: str) -> Instrument:
        return self.instruments[symbol]

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.instruments


def _exact(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise MarketConfigError(f"{where}: expected a decimal number, got {value!r}")
    try:
        return parse_decimal(str(value))
    except ValueError as exc:
        raise MarketConfigError(f"{where}: {exc}") from None


def _whole(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MarketConfigError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _instrument(symbol: str, spec: Any, defaults: dict[str, Any]) -> Instrument:
    where = f"instrument {symbol!r}"
    if not isinstance(spec, dict):
        raise MarketConfigError(f"{where}: expected a table")
    spec = {**defaults, **spec}
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise MarketConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = spec.get("kind", "spot")
    if kind not in KINDS:
        raise MarketConfigError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if "tick" not in spec:
        raise MarketConfigError(f"{where}: tick is required")
    tick_value = _exact(spec["tick"], f"{where}.tick")
    exponent = tick_value.as_tuple().exponent
    assert isinstance(exponent, int)  # parse_decimal gives finite numbers only
    if tick_value <= 0 or exponent < -12:
        raise MarketConfigError(f"{where}.tick: must be positive, at most 12 decimal places")
    tick = Scale(str(tick_value))
    step = _whole(spec.get("qty_step", 1), f"{where}.qty_step")
    min_qty = _whole(spec.get("min_qty", step), f"{where}.min_qty")
    max_qty = _whole(spec.get("max_qty", 99_999 if kind == "spot" else 10_000), f"{where}.max_qty")
    if min_qty > max_qty:
        raise MarketConfigError(f"{where}: min_qty {min_qty} is above max_qty {max_qty}")
    if min_qty % step or max_qty % step:
        raise MarketConfigError(
            f"{where}: min_qty and max_qty must be multiples of qty_step {step}")
    band = None
    band_num, band_den = 0, 1
    if spec.get("band") is not None:
        band = _exact(spec["band"], f"{where}.band")
        if not 0 < band < 1:
            raise MarketConfigError(f"{where}.band: a fraction between 0 and 1, got {band}")
        band_num, band_den = band.as_integer_ratio()
    reference = None
    if spec.get("reference_price") is not None:
        ref_value = _exact(spec["reference_price"], f"{where}.reference_price")
        reference = tick.units_of(ref_value)
        if reference is None or reference <= 0:
            raise MarketConfigError(
                f"{where}.reference_price: {ref_value} is not a positive multiple of the "
                f"tick {tick.text}")
    vintage = spec.get("vintage")
    if vintage is not None:
        vintage = _whole(vintage, f"{where}.vintage", 1900)
    vintage_from = spec.get("vintage_from")
    if vintage_from is not None:
        if vintage is None:
            raise MarketConfigError(f"{where}.vintage_from: needs the vintage (the last year)")
        vintage_from = _whole(vintage_from, f"{where}.vintage_from", 1900)
        if vintage_from > vintage:
            raise MarketConfigError(
                f"{where}.vintage_from: {vintage_from} is after the vintage {vintage}")
    contract_size = _whole(spec.get("contract_size", 1), f"{where}.contract_size")
    currency = spec.get("currency", "CNY")
    if not isinstance(currency, str) or not currency:
        raise MarketConfigError(f"{where}.currency: expected a currency code")
    for key in ("unit", "underlying", "contract_month"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise MarketConfigError(f"{where}.{key}: expected a string, got {spec[key]!r}")
    if max_qty > 10**9:
        raise MarketConfigError(f"{where}.max_qty: {max_qty} is beyond any sensible order")
    minor = MINOR_UNITS.get(currency, 2)
    tick_value = tick_value * contract_size * 10**minor
    if tick_value != tick_value.to_integral_value():
        raise MarketConfigError(
            f"{where}.tick: one tick ({tick.text} {currency} x {contract_size}) is not a whole "
            f"number of the currency's minor units")
    maker_fee = _fee(spec.get("maker_fee_bps", 0), f"{where}.maker_fee_bps")
    taker_fee = _fee(spec.get("taker_fee_bps", 0), f"{where}.taker_fee_bps")
    settlement_days = spec.get("settlement_days", 1)
    if settlement_days not in (0, 1) or isinstance(settlement_days, bool):
        raise MarketConfigError(
            f"{where}.settlement_days: 0 (same day) or 1 (T+1), got {settlement_days!r}")
    offset = spec.get("offset", False)
    if not isinstance(offset, bool) or (offset and kind != "spot"):
        raise MarketConfigError(f"{where}.offset: true or false, on a spot instrument only")
    position_limit = spec.get("position_limit")
    if position_limit is not None:
        position_limit = _whole(position_limit, f"{where}.position_limit")
    credit: _Credit = {}
    if spec.get("registered") is not None or spec.get("in_scheme") is not None:
        if not offset:
            raise MarketConfigError(f"{where}: registered and in_scheme are for offsets")
        if spec.get("registered") is not None:
            try:
                credit["registered"] = parse_date(spec["registered"])
            except (CalendarError, TypeError) as exc:
                raise MarketConfigError(f"{where}.registered: {exc}") from None
        if not isinstance(spec.get("in_scheme", False), bool):
            raise MarketConfigError(f"{where}.in_scheme: true or false")
        credit["in_scheme"] = spec.get("in_scheme", False)
    margins: _Margins = {}
    margin: Literal["initial_margin", "maintenance_margin"]
    for margin in ("initial_margin", "maintenance_margin"):
        if spec.get(margin) is None:
            continue
        if kind != "future":
            raise MarketConfigError(f"{where}.{margin}: futures only")
        amount = _exact(spec[margin], f"{where}.{margin}") * 10**minor
        if amount < 0 or amount != amount.to_integral_value():
            raise MarketConfigError(f"{where}.{margin}: a non-negative amount of {currency} "
                                    f"in whole minor units, got {spec[margin]}")
        margins[margin] = int(amount)
    option: _Option = {}
    if kind == "option" and spec.get("strike") is not None:
        strike = tick.units_of(_exact(spec["strike"], f"{where}.strike"))
        if strike is None or strike <= 0:
            raise MarketConfigError(f"{where}.strike: a positive price on the tick {tick.text}")
        if spec.get("option_type") not in ("call", "put"):
            raise MarketConfigError(f"{where}.option_type: call or put")
        if not spec.get("underlying"):
            raise MarketConfigError(f"{where}: an option needs its underlying future")
        option = {"strike": strike, "option_type": spec["option_type"]}
    if margins:  # a cleared future (without margins a future is traded, not cleared)
        if "initial_margin" not in margins:
            raise MarketConfigError(f"{where}: a cleared future needs its initial_margin")
        # Maintenance defaults to three quarters of the initial margin, rounded down.
        margins.setdefault("maintenance_margin", margins["initial_margin"] * 3 // 4)
        if margins["maintenance_margin"] > margins["initial_margin"]:
            raise MarketConfigError(f"{where}.maintenance_margin: above the initial margin")
        if not spec.get("contract_month") or not spec.get("underlying"):
            raise MarketConfigError(f"{where}: a future needs its contract_month and underlying")
    return Instrument(symbol=symbol, kind=kind, currency=currency, tick=tick, qty_step=step,
                      min_qty=min_qty, max_qty=max_qty, band=band, reference_price=reference,
                      vintage=vintage, vintage_from=vintage_from, contract_size=contract_size,
                      unit=spec.get("unit", "lot" if kind != "spot" else "t"),
                      underlying=spec.get("underlying"), contract_month=spec.get("contract_month"),
                      band_num=band_num, band_den=band_den, tick_value=int(tick_value),
                      maker_fee=maker_fee, taker_fee=taker_fee, settlement_days=settlement_days,
                      position_limit=position_limit, offset=offset, **margins, **option, **credit)


def _fee(value: Any, where: str) -> int:
    """A fee in basis points (up to two decimals, 0 to 1,000) as millionths."""
    bps = _exact(value, where)
    rate = bps * 100
    if not 0 <= bps <= 1000 or rate != rate.to_integral_value():
        raise MarketConfigError(
            f"{where}: basis points from 0 to 1000 with at most two decimals, got {bps}")
    return int(rate)


def parse_market(text: str, source: str = "<string>") -> Market:
    """Build a ``Market`` from TOML *text*; raise ``MarketConfigError`` with a clear message."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise MarketConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(
        set(data) - {"defaults", "instruments", "clearing", "series", "schedule", "operation",
                     "blocks", "auctions", "limits", "market_makers"})
    if unknown:
        raise MarketConfigError(f"{source}: unknown section(s) {', '.join(unknown)}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise MarketConfigError(f"{source}: [defaults] must be a table")
    unknown = sorted(set(defaults) - _KEYS)
    if unknown:
        raise MarketConfigError(f"{source}: [defaults]: unknown key(s) {', '.join(unknown)}")
    specs = data.get("instruments")
    if not isinstance(specs, dict) or not specs:
        raise MarketConfigError(f"{source}: no [instruments.SYMBOL] tables")
    instruments: dict[str, Instrument] = {}
    for symbol, spec in [*specs.items(), *_series(data.get("series", {}), source)]:
        if symbol in instruments:
            raise MarketConfigError(f"{source}: instrument {symbol!r} is listed twice")
        try:
            instruments[symbol] = _instrument(symbol, spec, defaults)
        except MarketConfigError as exc:
            raise MarketConfigError(f"{source}: {exc}") from None
    for inst in instruments.values():
        if inst.underlying is not None and inst.underlying not in instruments:
            raise MarketConfigError(
                f"{source}: instrument {inst.symbol!r}: underlying {inst.underlying!r} is not "
                "in the market")
    clearing = _clearing(data.get("clearing", {}), source)
    schedule = _schedule(data["schedule"], source) if "schedule" in data else None
    always_open, limited = _operation(data.get("operation", {}), source)
    if schedule is not None:
        # One calendar: the schedule's holidays are the clearing house's too.
        clearing = replace(clearing, holidays=clearing.holidays | schedule.holidays)
    calendar = Calendar(clearing.holidays)
    for symbol, inst in list(instruments.items()):
        if inst.kind != "future" or not inst.initial_margin:
            continue
        where = f"{source}: instrument {symbol!r}"
        # _instrument refuses a future with margins but without these two
        assert inst.underlying is not None and inst.contract_month is not None
        underlying = instruments[inst.underlying]
        if underlying.kind != "spot" or underlying.vintage is None or underlying.offset:
            raise MarketConfigError(f"{where}: the underlying must be an allowance (a spot "
                                    f"instrument with a vintage) to deliver")
        try:
            last = calendar.last_trading_day(*parse_month(inst.contract_month))
        except CalendarError as exc:
            raise MarketConfigError(f"{where}.contract_month: {exc}") from None
        instruments[symbol] = replace(
            inst, last_trading_day=last,
            delivery_day=calendar.delivery_day(last, clearing.delivery_days))
    for symbol, inst in list(instruments.items()):
        if inst.kind != "option" or inst.strike is None:
            continue
        where = f"{source}: instrument {symbol!r}"
        assert inst.underlying is not None  # _instrument refuses an option without one
        future = instruments[inst.underlying]
        if future.kind != "future" or future.last_trading_day is None:
            raise MarketConfigError(f"{where}: the underlying must be a cleared future")
        if (inst.contract_size, inst.tick_value,
                inst.currency) != (future.contract_size, future.tick_value, future.currency):
            raise MarketConfigError(
                f"{where}: contract size, tick and currency must be the underlying future's")
        expiry = future.last_trading_day
        for _ in range(clearing.option_expiry_days):
            expiry = calendar.previous_business_day(expiry - 1)
        instruments[symbol] = replace(inst, last_trading_day=expiry)
    cleared = {
        i.currency
        for i in instruments.values()
        if i.last_trading_day is not None and i.kind in ("future", "option")
    }
    if len(cleared) > 1:
        raise MarketConfigError(f"{source}: cleared futures and options must share one "
                                f"currency (found {', '.join(sorted(cleared))})")
    blocks, auctions, limits = _modes(data, source)
    if not limited:
        limits = Limits()
    quoting = _quoting(data.get("market_makers", {}), instruments, source)
    return Market(instruments=instruments, source=source, text=text, clearing=clearing,
                  schedule=None if always_open else schedule, always_open=always_open,
                  blocks=blocks, auctions=auctions, limits=limits, quoting=quoting)


def _table(spec: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise MarketConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise MarketConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                                f"{', '.join(sorted(keys))})")
    return spec


def _fraction(value: Any, where: str) -> tuple[int, int]:
    """A fraction between 0 and 1 as (numerator, denominator)."""
    number = _exact(value, where)
    if not 0 <= number <= 1:
        raise MarketConfigError(f"{where}: a fraction from 0 to 1, got {value!r}")
    num, den = number.as_integer_ratio()
    return num, den


def _modes(data: dict[str, Any], source: str) -> tuple[BlockRules, AuctionRules, Limits]:
    """``[blocks]``, ``[auctions]`` and ``[limits]`` (each optional: the national rules)."""
    spec = _table(data.get("blocks", {}), f"{source}: [blocks]", {"min_qty", "band"})
    blocks = BlockRules()
    if "min_qty" in spec:
        blocks = replace(blocks, min_qty=_whole(spec["min_qty"], f"{source}: [blocks].min_qty"))
    if "band" in spec:
        num, den = _fraction(spec["band"], f"{source}: [blocks].band")
        blocks = replace(blocks, band_num=num, band_den=den)
    spec = _table(data.get("auctions", {}), f"{source}: [auctions]",
                  {"min_qty", "band", "primary_cancel_below"})
    auctions = AuctionRules()
    if "min_qty" in spec:
        auctions = replace(auctions,
                           min_qty=_whole(spec["min_qty"], f"{source}: [auctions].min_qty"))
    if "band" in spec:
        num, den = _fraction(spec["band"], f"{source}: [auctions].band")
        auctions = replace(auctions, band_num=num, band_den=den)
    if "primary_cancel_below" in spec:
        num, den = _fraction(spec["primary_cancel_below"],
                             f"{source}: [auctions].primary_cancel_below")
        auctions = replace(auctions, cancel_num=num, cancel_den=den)
    spec = _table(data.get("limits", {}), f"{source}: [limits]",
                  {"covered", "financial", "market_maker"})
    limits = Limits(tuple((kind, _whole(spec[kind], f"{source}: [limits].{kind}", 0))
                          for kind in ("covered", "financial", "market_maker") if kind in spec))
    return blocks, auctions, limits


def _quoting(spec: Any, instruments: dict[str, Instrument],
             source: str) -> tuple[QuotingObligation, ...]:
    """``[market_makers.SYMBOL]`` tables: ``max_spread`` (a price), ``min_qty``,
    ``min_presence`` and ``rebate`` (fractions)."""
    tables = _table(spec, f"{source}: [market_makers]", set(spec) if isinstance(spec, dict)
                    else set())
    obligations: list[QuotingObligation] = []
    for symbol, table in sorted(tables.items()):
        where = f"{source}: [market_makers.{symbol}]"
        inst = instruments.get(symbol)
        if inst is None:
            raise MarketConfigError(f"{where}: {symbol!r} is not an instrument of the market")
        table = _table(table, where, {"max_spread", "min_qty", "min_presence", "rebate"})
        for key in ("max_spread", "min_qty", "min_presence"):
            if key not in table:
                raise MarketConfigError(f"{where}: {key} is required")
        try:
            spread = inst.tick.to_units(str(_exact(table["max_spread"], f"{where}.max_spread")))
        except ValueError as exc:
            raise MarketConfigError(f"{where}.max_spread: {exc}") from None
        if spread is None or spread <= 0:
            raise MarketConfigError(f"{where}.max_spread: a positive price on the tick")
        presence = _fraction(table["min_presence"], f"{where}.min_presence")
        rebate = _fraction(table.get("rebate", 0), f"{where}.rebate")
        obligations.append(
            QuotingObligation(symbol, spread, _whole(table["min_qty"], f"{where}.min_qty"),
                              *presence, *rebate))
    return tuple(obligations)


def _operation(spec: Any, source: str) -> tuple[bool, bool]:
    """``[operation]``: ``always_open = true`` sets the schedule aside (sessions,
    weekdays and holidays are not checked; the holidays still make the clearing
    calendar); ``position_limits = false`` sets ``[limits]`` aside. Returns both."""
    where = f"{source}: [operation]"
    if not isinstance(spec, dict):
        raise MarketConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - {"always_open", "position_limits"})
    if unknown:
        raise MarketConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    flags = (spec.get("always_open", False), spec.get("position_limits", True))
    for key, value in zip(("always_open", "position_limits"), flags):
        if not isinstance(value, bool):
            raise MarketConfigError(f"{where}.{key}: true or false, got {value!r}")
    return flags


def _operated(text: str, key: str, value: bool) -> str:
    """*text* with ``[operation]`` *key* set to *value*: the table, rewritten with the keys
    it had, goes last (a TOML table is defined once)."""
    data = tomllib.loads(text, parse_float=Decimal)
    flags = dict(data.pop("operation", {}))
    flags[key] = value
    kept = re.sub(r"(?m)^\[operation\][^\n]*\n(?:(?!\s*\[)[^\n]*(?:\n|$))*", "", text)
    table = "[operation]\n" + "".join(f"{k} = {'true' if v else 'false'}\n"
                                       for k, v in flags.items())
    rewritten = kept.rstrip("\n") + "\n\n" + table
    try:
        again = tomllib.loads(rewritten, parse_float=Decimal)
    except tomllib.TOMLDecodeError:
        again = None
    if again is None or again.pop("operation", None) != flags or again != data:
        # the file writes [operation] some other way: never drop or change anything else
        raise MarketConfigError(f"cannot set [operation] {key} in this market file's text: "
                                f"write it in the file's own [operation] table")
    return rewritten


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _series(tables: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    """The futures of each ``[series.NAME]``: ``series`` (monthly, quarterly or
    december), ``start`` (the first contract month, ``YYYY-MM``) and ``count`` contracts,
    named ``NAME-MONYY`` (``CEA-DEC26``); every other key is an instrument key they share."""
    if not isinstance(tables, dict):
        raise MarketConfigError(f"{source}: [series] must hold [series.NAME] tables")
    found = []
    for name, spec in tables.items():
        where = f"{source}: [series.{name}]"
        if not isinstance(spec, dict):
            raise MarketConfigError(f"{where} must be a table")
        spec = dict(spec)
        kind, start, count = (spec.pop("series", None), spec.pop("start",
                                                                 None), spec.pop("count", None))
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 120:
            raise MarketConfigError(f"{where}.count: a whole number of contracts, 1 to 120")
        if spec.get("kind", "future") != "future" or "contract_month" in spec:
            raise MarketConfigError(
                f"{where}: a series lists futures; their months come from series, start and count")
        if not isinstance(start, str):
            raise MarketConfigError(f"{where}.start: expected YYYY-MM, got {start!r}")
        try:
            months = contract_months(*parse_month(start), count, kind)
        except CalendarError as exc:
            raise MarketConfigError(f"{where}: {exc}") from None
        for y, m in months:
            found.append((f"{name}-{_MONTHS[m - 1]}{y % 100:02d}", {
                **spec, "kind": "future",
                "contract_month": f"{y:04d}-{m:02d}"
            }))
    return found


def _clearing(spec: Any, source: str) -> Clearing:
    where = f"{source}: [clearing]"
    if not isinstance(spec, dict):
        raise MarketConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - _CLEARING_KEYS)
    if unknown:
        raise MarketConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    holidays = spec.get("holidays", [])
    if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
        raise MarketConfigError(f'{where}.holidays: a list of "YYYY-MM-DD" dates')
    try:
        days = frozenset(parse_date(d) for d in holidays)
    except CalendarError as exc:
        raise MarketConfigError(f"{where}.holidays: {exc}") from None
    offset = _clock(spec.get("utc_offset", "+08:00"), f"{where}.utc_offset", signed=True)
    window = spec.get("settlement_window", "14:45-15:00")
    if not isinstance(window, str) or window.count("-") != 1:
        raise MarketConfigError(f'{where}.settlement_window: "HH:MM-HH:MM", got {window!r}')
    start, end = (_clock(part, f"{where}.settlement_window") for part in window.split("-"))
    if start >= end:
        raise MarketConfigError(f"{where}.settlement_window: {window} ends before it starts")
    delivery_days = _whole(spec.get("delivery_days", 3), f"{where}.delivery_days", 0)
    penalty = _exact(spec.get("delivery_penalty", "0.10"), f"{where}.delivery_penalty")
    if not 0 <= penalty <= 10:
        raise MarketConfigError(f"{where}.delivery_penalty: a fraction from 0 to 10")
    num, den = penalty.as_integer_ratio()
    option_days = _whole(spec.get("option_expiry_days", 3), f"{where}.option_expiry_days", 0)
    spread = _exact(spec.get("mid_max_spread", "0.02"), f"{where}.mid_max_spread")
    if not 0 <= spread <= 1:
        raise MarketConfigError(f"{where}.mid_max_spread: a fraction from 0 to 1")
    spread_num, spread_den = spread.as_integer_ratio()
    day = 86_400
    return Clearing(days, (start - offset) % day, (end - offset) % day, delivery_days, num, den,
                    option_days, spread_num, spread_den)


_SCHEDULE_KEYS = {"timezone", "weekdays", "holidays", *MODES}


def _schedule(spec: Any, source: str) -> Schedule:
    """``[schedule]``: ``timezone`` (a time zone database name such as ``Asia/Shanghai``,
    or a fixed ``+HH:MM``), one key per trading mode listing its sessions
    (``listing = ["09:30-11:30", "13:00-15:00"]``, local time, each ``[start, end)``),
    ``weekdays`` (default Monday to Friday) and ``holidays`` (``YYYY-MM-DD``)."""
    where = f"{source}: [schedule]"
    if not isinstance(spec, dict):
        raise MarketConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - _SCHEDULE_KEYS)
    if unknown:
        raise MarketConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                                f"{', '.join(sorted(_SCHEDULE_KEYS))})")
    zone = spec.get("timezone", "UTC")
    if not isinstance(zone, str) or not zone:
        raise MarketConfigError(f"{where}.timezone: a time zone name, got {zone!r}")
    offsets = _zone_offsets(zone)
    if offsets is None:
        raise MarketConfigError(f"{where}.timezone: unknown time zone {zone!r} (a name such as "
                                f'"Asia/Shanghai", or "+08:00")')
    sessions: dict[str, tuple[tuple[int, int], ...]] = {}
    for mode in MODES:
        if mode not in spec:
            continue
        spans = spec[mode]
        key = f"{where}.{mode}"
        if not isinstance(spans, list) or not all(isinstance(p, str) for p in spans):
            raise MarketConfigError(f'{key}: a list of sessions "HH:MM-HH:MM", got {spans!r}')
        found = []
        for text in spans:
            if text.count("-") != 1:
                raise MarketConfigError(f'{key}: "HH:MM-HH:MM", got {text!r}')
            start, end = (_clock(part, key, end=True) for part in text.split("-"))
            if start >= end:
                raise MarketConfigError(f"{key}: session {text} ends before it starts")
            found.append((start, end))
        found.sort()
        for (_, end), (start, _) in zip(found, found[1:]):
            if start < end:
                raise MarketConfigError(f"{key}: sessions {', '.join(spans)} overlap")
        sessions[mode] = tuple(found)
    if "listing" not in sessions:
        raise MarketConfigError(f"{where}.listing: the listing sessions are required")
    weekdays = spec.get("weekdays", list(WEEKDAYS[:5]))
    if (not isinstance(weekdays, list) or not weekdays
            or not all(isinstance(d, str) and d.lower() in WEEKDAYS for d in weekdays)):
        raise MarketConfigError(f"{where}.weekdays: a list of {', '.join(WEEKDAYS)}, "
                                f"got {weekdays!r}")
    holidays = spec.get("holidays", [])
    if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
        raise MarketConfigError(f'{where}.holidays: a list of "YYYY-MM-DD" dates')
    try:
        days = frozenset(parse_date(d) for d in holidays)
    except CalendarError as exc:
        raise MarketConfigError(f"{where}.holidays: {exc}") from None
    return Schedule(zone=zone, offsets=offsets, sessions=sessions,
                    weekdays=frozenset(WEEKDAYS.index(d.lower()) for d in weekdays),
                    holidays=days)


@lru_cache(maxsize=32)
def _zone_offsets(zone: str) -> tuple[tuple[int, int], ...] | None:
    """The UTC offsets of *zone* as ``(from_utc_second, offset)``, the first from the
    beginning of time, worked out once from the time zone database for 1970-2100 (the
    offsets at either end hold beyond it); ``None`` for an unknown zone."""
    if zone[:1] in "+-":
        try:
            return ((0, _clock(zone, "timezone", signed=True)), )
        except MarketConfigError:
            return None
    try:
        info = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    from datetime import UTC, datetime  # the edge: reading the time zone database

    def offset_at(second: int) -> int:
        moment = datetime.fromtimestamp(second, UTC).astimezone(info)
        delta = moment.utcoffset()
        return 0 if delta is None else int(delta.total_seconds())

    first, last = days_from_civil(1970, 1, 1) * 86_400, days_from_civil(2100, 1, 1) * 86_400
    offsets = [(0, offset_at(first))]
    # Sampled weekly, each change then found to the second: no zone in the database changes
    # its offset twice within a week in these years.
    step = 7 * 86_400
    for second in range(first + step, last, step):
        now = offset_at(second)
        if now == offsets[-1][1]:
            continue
        low, high = second - step, second  # the change lies in (low, high]
        while high - low > 1:
            middle = (low + high) // 2
            if offset_at(middle) == now:
                high = middle
            else:
                low = middle
        offsets.append((high, now))
    return tuple(offsets)


def _clock(text: Any, where: str, signed: bool = False, end: bool = False) -> int:
    """``HH:MM`` (or ``+HH:MM`` with *signed*) as seconds."""
    sign = 1
    if signed and isinstance(text, str) and text[:1] in "+-":
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    parts = text.strip().split(":") if isinstance(text, str) else []
    if end and parts == ["24", "00"]:  # a session may run to midnight
        return 86_400
    if (len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts) or int(parts[0]) > 23
            or int(parts[1]) > 59):
        raise MarketConfigError(f"{where}: expected HH:MM, got {text!r}")
    return sign * (int(parts[0]) * 3600 + int(parts[1]) * 60)


def load_market(path: str | Path | None = None) -> Market:
    """Read the market at *path*, or the shipped default market when *path* is ``None``."""
    if path is None:
        return default_market()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MarketConfigError(f"cannot read market file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise MarketConfigError(f"market file {str(path)!r} is not UTF-8 text (byte {exc.start})"
                                ) from None
    return parse_market(text, str(path))


def default_market() -> Market:
    """Return the default market shipped with the package."""
    text = resources.files("exchange").joinpath("markets/default.toml").read_text(encoding="utf-8")
    return parse_market(text, "<default market>")


def format_cash(currency: str, minor_units: int) -> str:
    """Return an amount in minor units as a decimal string: ``format_cash("CNY", 150)`` is
    ``"1.50"``."""
    digits = MINOR_UNITS.get(currency, 2)
    sign = "-" if minor_units < 0 else ""
    whole, part = divmod(abs(minor_units), 10**digits)
    return f"{sign}{whole}.{part:0{digits}d}" if digits else f"{sign}{whole}"
