"""Each cache of the core beside its plain path: what it gives must be what working the
value out afresh gives, whatever it holds already, and it stays within its bound.

- the engine's price-text cache, shared by the instruments of one tick size;
- the engine's quantity cache and the tick's own text cache, within their limits;
- the registry's month of the clock, kept until the clock moves.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exchange.engine as engine_module
from exchange import Engine, PlaceOrder, default_market
from exchange.commands import Deposit, IssueAllowances
from exchange.events import CommandRejected, OrderAccepted, TradeExecuted
from exchange.market import parse_market
from exchange.units import Scale

# Three tick sizes, two instruments on one of them (which share a cache).
TICKS = {"A": "0.01", "B": "0.05", "C": "0.25", "D": "0.01"}
MARKET = parse_market("".join(f'[instruments.{s}]\ntick = "{t}"\nmax_qty = 1000\n'
                              for s, t in TICKS.items()))
PRICES = st.sampled_from(["60", "60.00", "60.05", "60.25", "60.01", "0.05", "1.2", "60.10",
                          "60.50", "60.75", "60.250", "-1", "0", "abc", "60.2", "1e3"])
ORDERS = st.lists(st.tuples(st.sampled_from(sorted(TICKS)), st.sampled_from(["buy", "sell"]),
                            PRICES, st.integers(min_value=1, max_value=5)),
                  min_size=1, max_size=60)


def _expected(symbol: str, text: str) -> int | None:
    """The price in ticks, worked out from the text with Decimal (None: refused)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        return None
    if not value.is_finite() or value <= 0:
        return None
    ticks = value / Decimal(TICKS[symbol])
    return int(ticks) if ticks == ticks.to_integral_value() else None


def _run(orders: list, *, cache: bool, monkeypatch: pytest.MonkeyPatch) -> list:
    with monkeypatch.context() as patch:
        if not cache:
            patch.setattr(engine_module, "_PRICE_CACHE", 0)
        engine = Engine(MARKET)
        events: list = []
        for n, (symbol, side, price, qty) in enumerate(orders):
            events += engine.execute(PlaceOrder(order_id=f"o{n}", account=f"a{n % 3}",
                                                instrument=symbol, side=side, price=price,
                                                qty=qty, stp="none"))
        if cache:
            for spec in engine._specs.values():
                assert len(spec.prices) <= engine_module._PRICE_CACHE
                assert len(spec.banded) <= engine_module._PRICE_CACHE
        return events


@settings(max_examples=60, deadline=None)
@given(orders=ORDERS)
def test_the_price_cache_gives_each_instrument_its_own_ticks(orders):
    """Shared by tick size: a text read for one instrument is read again for another of
    another tick (60.05 is 6005 ticks of 0.01, 1201 of 0.05, off the tick of 0.25)."""
    monkeypatch = pytest.MonkeyPatch()
    cached = _run(orders, cache=True, monkeypatch=monkeypatch)
    assert cached == _run(orders, cache=False, monkeypatch=monkeypatch)
    results = [e for e in cached if type(e) in (OrderAccepted, CommandRejected)]
    assert len(results) == len(orders)
    for (symbol, _, text, _), result in zip(orders, results):
        expected = _expected(symbol, text)
        if expected is None:
            assert type(result) is CommandRejected, (symbol, text, result)
        else:
            assert type(result) is OrderAccepted and result.price == expected, (symbol, text)


def test_the_price_and_quantity_caches_stay_within_their_limit(monkeypatch):
    monkeypatch.setattr(engine_module, "_PRICE_CACHE", 8)
    engine = Engine(MARKET)
    for n in range(40):
        [result] = engine.execute(PlaceOrder(order_id=f"o{n}", account="a", instrument="A",
                                             side="buy", price=f"{10 + n}.00", qty=1 + n))
        assert type(result) is OrderAccepted and result.price == (10 + n) * 100
    spec = engine._specs["A"]
    assert len(spec.prices) == len(spec.banded) == len(spec.quantities) == 8


def test_the_ticks_own_cache_stays_within_its_limit(monkeypatch):
    scale = Scale("0.01")
    monkeypatch.setattr(Scale, "_CACHE_LIMIT", 4)
    assert [scale.to_units(f"{n}.5") for n in range(10)] == [n * 100 + 50 for n in range(10)]
    assert [scale.to_units(f"{n}.005") for n in range(3)] == [None, None, None]
    assert len(scale._cache) == 4


def test_the_registrys_month_is_the_month_of_each_trade():
    """Worked out again only when the clock moves: trades across months, a move within
    a month and one across a month's end, and the clock standing still, each count in
    their own month (UTC: the schedule set aside)."""
    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(Deposit(account="b", currency="CNY", amount="1000000.00"))
    engine.execute(IssueAllowances(account="s", instrument="CEA25", qty=10_000))
    utc = datetime.UTC
    times = [datetime.datetime(2026, 1, 31, 23, 59, tzinfo=utc),
             datetime.datetime(2026, 2, 1, 0, 1, tzinfo=utc),
             datetime.datetime(2026, 2, 1, 0, 1, tzinfo=utc),  # the clock stands
             datetime.datetime(2026, 2, 27, 10, 0, tzinfo=utc),
             datetime.datetime(2026, 4, 1, 9, 30, tzinfo=utc)]
    expected: dict[tuple[int, int], list[int]] = {}
    for n, when in enumerate(times):
        ts = int(when.timestamp()) * 10**9
        price = f"{60 + n}.00"
        engine.execute(PlaceOrder(order_id=f"s{n}", account="s", instrument="CEA25",
                                  side="sell", price=price, qty=10 + n, ts=ts))
        events = engine.execute(PlaceOrder(order_id=f"b{n}", account="b", instrument="CEA25",
                                           side="buy", price=price, qty=10 + n, ts=ts))
        [trade] = [e for e in events if type(e) is TradeExecuted]
        month = expected.setdefault((when.year, when.month), [0, 0])
        month[0] += trade.price * trade.qty  # fen: ticks of 0.01 CNY
        month[1] += trade.qty
    ledger = engine.ledger
    assert ledger is not None
    assert {k: v for k, v in ledger.registry.months.items() if v[1]} == expected
