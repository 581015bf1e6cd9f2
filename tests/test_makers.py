"""The market-maker programme's quoting monitor (``exchange.makers``): presence within size
and spread over the listing sessions only, the rebate, its state, and a naive reference
that samples the quotes second by second beside it."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.book.fast import LIMIT, STOP_LIMIT, Order
from exchange.calendar import days_from_civil
from exchange.events import QuotingAssessed
from exchange.makers import QuotingMonitor, session_ns
from exchange.market import QuotingObligation, default_market, parse_market
from exchange.schedule import NS, Schedule

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = default_market().schedule
assert SCHEDULE is not None
MONDAY = days_from_civil(2026, 3, 2)  # a business day of the default market
HOUR = 3600 * NS
# CEA25: both sides of at least 1,000 t, at most 50 ticks (0.50 CNY) apart, 80% of the
# sessions; half the maker fees back.
CEA25 = QuotingObligation("CEA25", max_spread=50, min_qty=1_000, presence_num=4, presence_den=5,
                          rebate_num=1, rebate_den=2)


MAKER_TABLE = """
[market_makers.CEA25]
max_spread = "0.50"
min_qty = 1_000
min_presence = "0.8"
rebate = "0.5"
"""


def beijing(hour: int, minute: int = 0, second: int = 0, day: int = MONDAY) -> int:
    return ((day * 86_400 + hour * 3600 + minute * 60 + second) - 8 * 3600) * NS


def is_maker(account: str) -> bool:
    return account.startswith("mm")


def monitor(*obligations: QuotingObligation,
            schedule: Schedule | None = SCHEDULE) -> QuotingMonitor:
    return QuotingMonitor(obligations or (CEA25,), schedule, is_maker)


def order(oid: str, account: str, is_buy: bool, price: int, qty: int = 1_000,
          visible: int | None = None, instrument: str = "CEA25", kind: int = LIMIT) -> Order:
    return Order(oid, account, instrument, is_buy, price, qty, qty if visible is None else visible,
                 0, kind, 0, 0)


def assess(mon: QuotingMonitor, fees: dict[tuple[str, str], int] | None = None,
           day: int = MONDAY) -> list[QuotingAssessed]:
    counter = itertools.count(1)
    return mon.end_of_day(day, fees or {}, lambda symbol: "CNY", lambda: next(counter))


def quote(mon: QuotingMonitor, account: str = "mm1", bid: int = 7_000, ask: int = 7_020,
          qty: int = 1_000, bid_visible: int | None = None) -> tuple[Order, Order]:
    buy = order(f"{account}-b{bid}", account, True, bid, qty, bid_visible)
    sell = order(f"{account}-s{ask}", account, False, ask, qty)
    mon.watch(buy)
    mon.watch(sell)
    return buy, sell


# --- presence ---------------------------------------------------------------------------------
def test_a_maker_quoting_the_whole_session_meets_it():
    mon = monitor()
    quote(mon)
    mon.advance(beijing(9))
    mon.advance(beijing(15))
    [row] = assess(mon, {("mm1", "CEA25"): 1_001})
    assert row == QuotingAssessed(seq=1, account="mm1", instrument="CEA25", day=MONDAY,
                                  quoted_ns=4 * HOUR, session_ns=4 * HOUR, presence_bps=10_000,
                                  average_spread=20, met=True, rebate=500, currency="CNY")


def test_a_maker_quoting_half_the_session_misses_at_eighty_percent():
    mon = monitor()
    buy, _ = quote(mon)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(11, 30))
    buy.qty = buy.visible = 0  # cancelled over lunch
    mon.advance(beijing(15))
    [row] = assess(mon, {("mm1", "CEA25"): 1_000})
    assert (row.quoted_ns, row.session_ns, row.presence_bps) == (2 * HOUR, 4 * HOUR, 5_000)
    assert (row.met, row.rebate, row.average_spread) == (False, 0, 20)


def test_presence_at_exactly_the_fraction_meets_it():
    mon = monitor()
    buy, _ = quote(mon)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(14, 12))  # 2h + 1h12 = 3h12 = 80% of 4h
    buy.qty = 0
    mon.advance(beijing(15))
    [row] = assess(mon)
    assert (row.presence_bps, row.met) == (8_000, True)


@pytest.mark.parametrize("bid, ask, bid_visible, why", [
    (7_000, 7_051, None, "51 ticks apart"),
    (7_000, 7_020, 999, "an iceberg showing 999 of its 1,000"),
])
def test_a_wide_spread_or_a_small_side_is_not_quoting(bid, ask, bid_visible, why):
    mon = monitor()
    quote(mon, bid=bid, ask=ask, bid_visible=bid_visible)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(15))
    [row] = assess(mon)
    assert (row.quoted_ns, row.presence_bps, row.met) == (0, 0, False), why
    assert row.average_spread == ask - bid  # still both sides, for the average


def test_the_spread_limit_is_inclusive_and_the_best_sides_at_size_count():
    mon = monitor()
    quote(mon, bid=7_000, ask=7_050)  # exactly 50 ticks
    # A better but small bid does not spoil it, and sets the average spread (any size).
    mon.watch(order("small", "mm1", True, 7_010, 10))
    mon.advance(beijing(9, 30))
    mon.advance(beijing(10, 30))
    [row] = assess(mon)
    assert (row.quoted_ns, row.average_spread) == (HOUR, 40)


def test_one_side_only_gives_no_average_spread():
    mon = monitor()
    mon.watch(order("b", "mm1", True, 7_000))
    mon.advance(beijing(9, 30))
    mon.advance(beijing(15))
    [row] = assess(mon)
    assert (row.quoted_ns, row.session_ns, row.average_spread, row.met) == (0, 4 * HOUR, None,
                                                                            False)


def test_the_average_spread_is_weighted_by_time():
    mon = monitor()
    buy, sell = quote(mon, bid=7_000, ask=7_010)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(10, 30))  # 10 ticks for an hour
    sell.qty = 0
    mon.watch(order("s2", "mm1", False, 7_040))
    mon.advance(beijing(14))  # 40 ticks for two (the lunch break not counted)
    [row] = assess(mon)
    assert row.average_spread == (10 * 1 + 40 * 2) // 3 == 30


def test_an_untriggered_stop_is_not_a_quote_until_it_triggers():
    mon = monitor()
    mon.watch(order("b", "mm1", True, 7_000))
    stop = order("s", "mm1", False, 7_020, kind=STOP_LIMIT)
    mon.watch(stop)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(10, 30))
    stop.kind = LIMIT  # triggered: it rests now
    mon.advance(beijing(11, 30))
    [row] = assess(mon)
    assert row.quoted_ns == HOUR


def test_fills_and_amends_change_the_quote_in_place():
    mon = monitor()
    buy, _ = quote(mon)
    mon.advance(beijing(9, 30))
    buy.qty = buy.visible = 400  # partly filled: too small from here
    mon.advance(beijing(10))
    buy.qty = 0  # amended up: a new order takes its place
    mon.watch(order("b2", "mm1", True, 7_000, 2_000))
    mon.advance(beijing(10, 30))
    mon.advance(beijing(11))
    [row] = assess(mon)
    assert row.quoted_ns == HOUR  # 09:30-10:00, then 10:30-11:00 (10:00-10:30 too small)


# --- session time --------------------------------------------------------------------------
def test_lunch_break_and_night_are_not_session_time():
    mon = monitor()
    quote(mon)
    mon.advance(beijing(11))
    mon.advance(beijing(13, 30))  # 11:00-11:30 and 13:00-13:30
    [row] = assess(mon)
    assert row.session_ns == row.quoted_ns == HOUR
    mon.advance(beijing(10, day=MONDAY + 1))  # 13:30-15:00, the night, 09:30-10:00 Tuesday
    [row] = assess(mon, day=MONDAY + 1)
    assert row.session_ns == row.quoted_ns == 2 * HOUR


def test_a_weekend_and_a_holiday_are_not_session_time():
    friday = days_from_civil(2026, 4, 3)  # Monday 2026-04-06 is a holiday (Qingming)
    tuesday = friday + 4
    assert session_ns(SCHEDULE, beijing(14, day=friday), beijing(10, day=tuesday)) == (
        HOUR + HOUR // 2)
    assert session_ns(SCHEDULE, beijing(9, 29, 59), beijing(9, 30, 1)) == NS
    assert session_ns(SCHEDULE, beijing(15), beijing(9, 30, day=MONDAY + 1)) == 0
    assert session_ns(None, 5, 17) == 12
    # A year at once: 240 or so business days of four hours, walked day by day.
    year = session_ns(SCHEDULE, beijing(0, day=days_from_civil(2026, 1, 1)),
                      beijing(0, day=days_from_civil(2027, 1, 1)))
    assert year % (4 * HOUR) == 0 and 230 <= year // (4 * HOUR) <= 250


def test_the_first_advance_only_sets_the_clock_and_time_never_goes_back():
    mon = monitor()
    quote(mon)
    mon.advance(beijing(10))
    mon.advance(beijing(9, 45))  # not later: ignored
    mon.advance(beijing(10, 30))
    [row] = assess(mon)
    assert row.session_ns == HOUR // 2


def test_without_a_schedule_every_nanosecond_is_session():
    mon = monitor(schedule=None)
    quote(mon)
    mon.advance(1_000)
    mon.advance(1_000 + 86_400 * NS)
    [row] = assess(mon)
    assert row.session_ns == row.quoted_ns == 86_400 * NS


def dst_market() -> Schedule:
    text = ('[instruments.CEA25]\ntick = "0.01"\n[schedule]\ntimezone = "Europe/London"\n'
            'weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
            'listing = ["00:30-02:30", "23:00-24:00"]\n')
    schedule = parse_market(text).schedule
    assert schedule is not None
    return schedule


@pytest.mark.parametrize("day, hours", [((2026, 3, 29), 2), ((2026, 10, 25), 4)],
                         ids=["spring", "autumn"])
def test_session_time_across_a_clock_change_agrees_with_is_open(day, hours):
    schedule = dst_market()
    start = (days_from_civil(*day) - 1) * 86_400 + 22 * 3600  # UTC, the evening before
    seconds = range(start, start + 7 * 3600)
    expected = sum(NS for s in seconds if schedule.is_open("listing", s * NS))
    assert session_ns(schedule, seconds[0] * NS, (seconds[-1] + 1) * NS) == expected
    # 23:00-24:00 the evening before, then 00:30-02:30 local: an hour when 01:00 GMT
    # jumps to 02:00 BST, three when 02:00 BST falls back to 01:00 GMT.
    assert expected == hours * HOUR


def reference_session_ns(schedule: Schedule, start: int, end: int) -> int:
    """Every place where openness may change (each session edge read with each of the
    zone's offsets, each offset change), then ``is_open`` once per piece."""
    edges = {start, end, *(s * NS for s, _ in schedule.offsets)}
    for day in range(start // (86_400 * NS) - 1, end // (86_400 * NS) + 2):
        for first, last in schedule.sessions_of("listing"):
            for _, offset in schedule.offsets:
                edges.update((day * 86_400 + edge - offset) * NS for edge in (first, last))
    cuts = sorted(e for e in edges if start <= e <= end)
    return sum(b - a for a, b in zip(cuts, cuts[1:]) if schedule.is_open("listing", a))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["default", "dst"]), st.integers(0, 40 * 86_400 * NS),
       st.integers(0, 12 * 86_400 * NS))
def test_session_time_agrees_with_a_reference_over_any_span(which, start, length):
    schedule = SCHEDULE if which == "default" else dst_market()
    base = days_from_civil(2026, 3, 1) * 86_400 * NS if which == "default" else (
        days_from_civil(2026, 3, 10) * 86_400 * NS)
    a, b = base + start, base + start + length
    assert session_ns(schedule, a, b) == reference_session_ns(schedule, a, b)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["default", "dst"]),
       st.lists(st.integers(0, 10 * 86_400 * NS) | st.integers(0, 10 * 86_400).map(
           lambda s: s * NS), min_size=2, max_size=60))
def test_the_monitors_clock_adds_up_to_the_session_time_however_it_moves(which, times):
    """Many small moves and a few long ones (the monitor keeps the stretch ahead that is
    all open or all closed): the same total as one walk over the whole span."""
    schedule = SCHEDULE if which == "default" else dst_market()
    base = days_from_civil(2026, 3, 25) * 86_400 * NS
    mon = monitor(schedule=schedule)
    quote(mon)
    times = sorted(base + t for t in times)
    for t in times:
        mon.advance(t)
    [row] = assess(mon)
    assert row.session_ns == row.quoted_ns == session_ns(schedule, times[0], times[-1])


# --- who is assessed, and the rebate ---------------------------------------------------------
def test_non_makers_and_unobligated_instruments_are_ignored():
    mon = monitor()
    assert mon.symbols == frozenset({"CEA25"})
    quote(mon, account="bob")  # not a market maker
    mon.watch(order("x", "mm2", True, 7_000, instrument="CEA24"))  # no obligation
    mon.watch(order("y", "mm3", True, 7_000))  # a maker with one side only
    mon.advance(beijing(9, 30))
    mon.advance(beijing(15))
    rows = assess(mon)
    assert [(r.account, r.instrument, r.seq) for r in rows] == [("mm3", "CEA25", 1)]


def test_the_rebate_follows_the_maker_fees_and_the_fraction_only_when_met():
    third = QuotingObligation("CEA24", max_spread=10, min_qty=1, presence_num=1, presence_den=2,
                              rebate_num=1, rebate_den=3)
    mon = monitor(CEA25, third)
    quote(mon, account="mm1")  # meets CEA25
    quote(mon, account="mm2", ask=7_100)  # too wide on CEA25
    mon.watch(order("a", "mm1", True, 7_000, 5, instrument="CEA24"))
    mon.watch(order("b", "mm1", False, 7_010, 5, instrument="CEA24"))
    mon.advance(beijing(9, 30))
    mon.advance(beijing(15))
    fees = {("mm1", "CEA25"): 999, ("mm2", "CEA25"): 5_000, ("mm1", "CEA24"): 100}
    rows = assess(mon, fees)
    assert [(r.account, r.instrument, r.met, r.rebate, r.seq) for r in rows] == [
        ("mm1", "CEA24", True, 33, 1), ("mm1", "CEA25", True, 499, 2),
        ("mm2", "CEA25", False, 0, 3)]
    no_rebate = QuotingObligation("CEA25", max_spread=50, min_qty=1, presence_num=0,
                                  presence_den=1)
    mon = monitor(no_rebate)
    quote(mon)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(10))
    [row] = assess(mon, {("mm1", "CEA25"): 5_000})
    assert (row.met, row.rebate) == (True, 0)


def test_a_day_without_session_time_is_not_met():
    mon = monitor(QuotingObligation("CEA25", 50, 1, 0, 1, 1, 1))  # even at 0% presence
    quote(mon)
    mon.advance(beijing(15, 30))
    mon.advance(beijing(23))
    [row] = assess(mon, {("mm1", "CEA25"): 10})
    assert (row.session_ns, row.presence_bps, row.met, row.rebate) == (0, 0, False, 0)


def test_the_day_ends_the_accumulators_but_not_the_makers_or_their_orders():
    mon = monitor()
    buy, sell = quote(mon)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(15))
    assert assess(mon)[0].met
    mon.advance(beijing(9, 30, day=MONDAY + 1))
    buy.qty = sell.qty = 0  # the maker withdraws from Tuesday morning
    mon.advance(beijing(15, day=MONDAY + 1))
    [row] = assess(mon, day=MONDAY + 1)
    assert (row.day, row.quoted_ns, row.session_ns, row.met) == (MONDAY + 1, 0, 4 * HOUR, False)
    assert mon.pairs["mm1", "CEA25"].orders == []  # done orders are dropped as they are met


def test_an_end_of_day_without_a_time_counts_the_rest_of_that_days_sessions():
    """An ``eod`` row without a ``ts`` ended the day where the last timed command left
    the clock (10:00): that day's session was 30 minutes, and the next day's assessment
    took the other 3.5 hours of it (a session of 7.5 hours)."""
    from exchange import Engine
    from exchange.commands import Deposit, EndOfDay, IssueAllowances, OpenAccount, PlaceOrder

    market = default_market().text + MAKER_TABLE
    engine = Engine(parse_market(market), ledger=True)
    engine.execute(OpenAccount(account="mm1", kind="market_maker"))
    engine.execute(Deposit(account="mm1", currency="CNY", amount="1000000.00"))
    engine.execute(IssueAllowances(account="mm1", instrument="CEA25", qty=10_000))

    def buy(oid: str, ts: int, side: str = "buy", price: str = "60.00") -> None:
        [result] = engine.execute(PlaceOrder(order_id=oid, account="mm1", instrument="CEA25",
                                             side=side, price=price, qty=1_000, ts=ts))
        assert type(result).__name__ == "OrderAccepted", result

    buy("b", beijing(9, 30), price="70.00")
    buy("s", beijing(9, 30), side="sell", price="70.20")
    buy("x", beijing(10))
    [monday] = [e for e in engine.execute(EndOfDay()) if type(e) is QuotingAssessed]
    assert (monday.quoted_ns, monday.session_ns, monday.met) == (4 * HOUR, 4 * HOUR, True)
    buy("y", beijing(15, day=MONDAY + 1) - 1)
    [tuesday] = [e for e in engine.execute(EndOfDay()) if type(e) is QuotingAssessed]
    assert tuesday.session_ns == 4 * HOUR


def test_time_an_instrument_is_halted_is_neither_session_nor_quoting():
    """A maker was held to quote through the operator's halt, when no order may enter:
    an hour's halt in a 4-hour day took it from 100% to 75%, under an 80% obligation."""
    mon = monitor()
    orders = quote(mon)
    mon.advance(beijing(9, 30))
    mon.advance(beijing(10, 30))
    mon.halt("CEA25", True)
    mon.advance(beijing(11, 30))
    assert mon.to_state()[3:] == [[["CEA25", HOUR]]]  # the halted time is state
    loaded = monitor()
    loaded.load_state(json.loads(json.dumps(mon.to_state())))
    loaded.halt("CEA25", True)  # the engine tells the halts again, and the orders
    for o in orders:
        loaded.watch(o)
    for m in (mon, loaded):
        m.halt("CEA25", False)
        m.advance(beijing(15))
    [row] = assess(mon)
    assert (row.quoted_ns, row.session_ns, row.presence_bps, row.met) == (
        3 * HOUR, 3 * HOUR, 10_000, True)
    assert assess(loaded) == [row]
    mon.advance(beijing(9, 30, day=MONDAY + 1))
    mon.advance(beijing(15, day=MONDAY + 1))
    [tuesday] = assess(mon, day=MONDAY + 1)
    assert tuesday.session_ns == 4 * HOUR  # each day's halts are its own


def test_an_engine_restored_while_halted_excuses_the_halt_as_one_that_ran_on():
    from exchange import Engine
    from exchange.commands import (Deposit, EndOfDay, HaltInstrument, IssueAllowances,
                                   OpenAccount, PlaceOrder, ResumeInstrument)

    engine = Engine(parse_market(default_market().text + MAKER_TABLE), ledger=True)
    for command in (OpenAccount(account="mm1", kind="market_maker"),
                    Deposit(account="mm1", currency="CNY", amount="1000000.00"),
                    IssueAllowances(account="mm1", instrument="CEA25", qty=10_000),
                    PlaceOrder(order_id="b", account="mm1", instrument="CEA25", side="buy",
                               price="70.00", qty=1_000, ts=beijing(9, 30)),
                    PlaceOrder(order_id="s", account="mm1", instrument="CEA25", side="sell",
                               price="70.20", qty=1_000, ts=beijing(9, 30)),
                    HaltInstrument(instrument="CEA25", ts=beijing(10))):
        engine.execute(command)
    restored = Engine.from_state(engine.to_state())
    rows = []
    for e in (engine, restored):
        e.execute(ResumeInstrument(instrument="CEA25", ts=beijing(13)))
        rows.append([x for x in e.execute(EndOfDay(ts=beijing(15, 30)))
                     if type(x) is QuotingAssessed])
    assert rows[0] == rows[1]
    [row] = rows[0]
    assert (row.quoted_ns, row.session_ns) == (2 * HOUR + 30 * 60 * NS, 2 * HOUR + 30 * 60 * NS)
    assert restored.state_hash() == engine.state_hash()


@pytest.mark.parametrize("day, hours", [((2026, 3, 29), 2), ((2026, 10, 25), 4),
                                       ((2026, 6, 1), 3)], ids=["spring", "autumn", "summer"])
def test_an_end_of_day_without_a_time_counts_to_the_local_midnight_on_any_day(day, hours):
    """It took the day for 24 hours: on a day of 23 or 25 hours the session 23:00-24:00
    fell an hour short, or an hour into the next day's."""
    schedule = dst_market()
    mon = monitor(schedule=schedule)
    quote(mon)
    midnight = days_from_civil(*day) * 86_400  # UTC seconds of the local date's start, less
    first = next(s for s in range(midnight - 3 * 3600, midnight + 3 * 3600, 60)
                 if schedule.local_day(s * NS) == days_from_civil(*day))
    mon.advance(first * NS)  # the local day's first minute
    mon.close_day()
    following = days_from_civil(*day) + 1
    end = next(s for s in range(first + 22 * 3600, first + 26 * 3600 + 1, 60)
               if schedule.local_day(s * NS) == following)
    assert mon.clock == end * NS
    expected = session_ns(schedule, first * NS, end * NS)
    [row] = assess(mon)
    assert row.session_ns == expected == hours * HOUR  # (00:30-02:30 as the clocks change)


@pytest.mark.parametrize("zone, day", [("America/Havana", (2026, 3, 7)),
                                       ("America/Havana", (2026, 10, 31)),
                                       ("America/Santiago", (2026, 9, 5))])
def test_the_day_ends_where_its_last_second_does_when_the_clocks_change_at_midnight(zone, day):
    """The local midnight was worked out from two offsets, an hour early where the
    clocks change at midnight itself (Havana: 00:00 becomes 01:00)."""
    text = (f'[instruments.CEA25]\ntick = "0.01"\n[schedule]\ntimezone = "{zone}"\n'
            'weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
            'listing = ["09:00-10:00", "23:00-24:00"]\n')
    schedule = parse_market(text).schedule
    assert schedule is not None
    date = days_from_civil(*day)
    noon = next(s for s in range((date - 1) * 86_400, (date + 2) * 86_400, 60)
                if schedule.local(s * NS) == (date, 12 * 3600))
    mon = monitor(schedule=schedule)
    mon.advance(noon * NS)
    end = mon.day_end()
    assert end is not None
    assert schedule.local_day(end) == date + 1 and schedule.local_day(end - NS) == date
    quote(mon)
    mon.close_day()
    [row] = assess(mon)
    assert row.session_ns == session_ns(schedule, noon * NS, end) == HOUR  # 23:00-24:00


def test_a_gtd_quote_counts_until_its_time_at_an_end_of_day_without_one():
    from exchange import Engine
    from exchange.commands import Deposit, EndOfDay, IssueAllowances, OpenAccount, PlaceOrder

    engine = Engine(parse_market(default_market().text + MAKER_TABLE), ledger=True)
    engine.execute(OpenAccount(account="mm1", kind="market_maker"))
    engine.execute(Deposit(account="mm1", currency="CNY", amount="1000000.00"))
    engine.execute(IssueAllowances(account="mm1", instrument="CEA25", qty=10_000))
    engine.execute(PlaceOrder(order_id="b", account="mm1", instrument="CEA25", side="buy",
                              price="70.00", qty=1_000, ts=beijing(9, 30)))
    engine.execute(PlaceOrder(order_id="s", account="mm1", instrument="CEA25", side="sell",
                              price="70.20", qty=1_000, tif="gtd", expire_ts=beijing(10, 30),
                              ts=beijing(9, 30)))
    engine.execute(PlaceOrder(order_id="x", account="mm1", instrument="CEA25", side="buy",
                              price="60.00", qty=1_000, ts=beijing(10)))
    [row] = [e for e in engine.execute(EndOfDay()) if type(e) is QuotingAssessed]
    assert (row.quoted_ns, row.session_ns, row.met) == (HOUR, 4 * HOUR, False)


@pytest.mark.parametrize("why", ["day orders", "the new band"])
def test_quotes_the_end_of_day_takes_out_count_until_it_at_an_end_of_day_without_one(why):
    """An ``eod`` without a ``ts`` counts the rest of the day's sessions with the orders as
    they stood: quotes that the end of the day itself takes out (``day`` orders expiring,
    a bid the new band leaves on its near side) stood until then, as with a ``ts``."""
    from exchange import Engine
    from exchange.commands import Deposit, EndOfDay, IssueAllowances, OpenAccount, PlaceOrder

    def assessed(eod_ts: int | None) -> QuotingAssessed:
        engine = Engine(parse_market(default_market().text + MAKER_TABLE), ledger=True)
        for name in ("mm1", "x", "y"):
            engine.execute(OpenAccount(account=name,
                                       kind="market_maker" if name == "mm1" else "covered"))
            engine.execute(Deposit(account=name, currency="CNY", amount="1000000.00"))
            engine.execute(IssueAllowances(account=name, instrument="CEA25", qty=10_000))
        tif = "day" if why == "day orders" else "gtc"
        if why == "the new band":  # the day's close, 50.00: a band of 45.00-55.00
            for oid, account, side in (("s", "x", "sell"), ("b", "y", "buy")):
                engine.execute(PlaceOrder(order_id=oid, account=account, instrument="CEA25",
                                          side=side, price="50.00", qty=10, ts=beijing(9, 30)))
        for oid, side, price in (("qb", "buy", "60.00"), ("qs", "sell", "60.20")):
            engine.execute(PlaceOrder(order_id=oid, account="mm1", instrument="CEA25", side=side,
                                      price=price, qty=1_000, tif=tif, ts=beijing(9, 30)))
        events = engine.execute(EndOfDay(ts=eod_ts))
        assert any(type(e).__name__ in ("OrderExpired", "OrderCancelled")
                   and e.order_id == "qb" for e in events)
        [row] = [e for e in events if type(e) is QuotingAssessed]
        return row

    with_ts, without = assessed(beijing(15, 30)), assessed(None)
    assert (with_ts.quoted_ns, with_ts.session_ns, with_ts.met) == (4 * HOUR, 4 * HOUR, True)
    assert (without.quoted_ns, without.session_ns, without.met) == (4 * HOUR, 4 * HOUR, True)


def test_done_orders_do_not_pile_up_outside_sessions():
    mon = monitor()
    mon.advance(beijing(20))
    for n in range(1_000):
        mon.watch(order(f"o{n}", "mm1", n % 2 == 0, 7_000 + n % 2))
        mon.pairs["mm1", "CEA25"].orders[-1].qty = 0
    assert len(mon.pairs["mm1", "CEA25"].orders) <= 16


# --- state ---------------------------------------------------------------------------------
def test_the_state_round_trips_through_json_and_the_engine_rewatches_orders():
    whole, halves = monitor(), monitor()
    orders = quote(whole)
    for mon in (whole, halves):
        mon.advance(beijing(9, 30))
    quote(halves)
    halves.advance(beijing(10, 15))
    state = json.loads(json.dumps(halves.to_state()))
    assert state == [beijing(10, 15), 45 * 60 * NS,
                     [["mm1", "CEA25", 45 * 60 * NS, 45 * 60 * NS, 20 * 45 * 60 * NS]]]
    loaded = monitor()
    loaded.load_state(state)
    assert loaded.snapshot() == halves.snapshot() == state
    for o in orders:
        loaded.watch(o)
    for mon in (whole, loaded):
        mon.advance(beijing(15))
    assert assess(loaded) == assess(whole)


def test_a_maker_that_once_had_an_order_is_assessed_after_a_load():
    mon = monitor()
    buy, sell = quote(mon)
    buy.qty = sell.qty = 0
    loaded = monitor()
    loaded.load_state(mon.to_state())
    loaded.advance(beijing(9))
    loaded.advance(beijing(15))
    [row] = assess(loaded)
    assert (row.account, row.session_ns, row.quoted_ns) == ("mm1", 4 * HOUR, 0)


@pytest.mark.parametrize("rows, message", [
    ([None, 0], "expected"),
    ([-1, 0, []], "whole numbers"),
    ([None, True, []], "whole numbers"),
    ([None, 0, [["mm1", "CEA25", 1, 2]]], "a row is"),
    ([None, 0, [["mm1", "CEA25", 1, 2, -3]]], "a row is"),
    ([None, 0, [["mm1", "CEA99", 1, 2, 3]]], "no quoting obligation"),
    ([None, 0, [["mm1", "CEA25", 1, 2, 3], ["mm1", "CEA25", 0, 0, 0]]], "given twice"),
])
def test_load_state_refuses_what_it_cannot_use(rows, message):
    with pytest.raises(ValueError, match=message):
        monitor().load_state(rows)


# --- the market file -----------------------------------------------------------------------
def test_the_documented_table_parses_to_the_obligation_the_monitor_uses():
    page = (ROOT / "docs" / "market.md").read_text(encoding="utf-8")
    section = page.split("## Market makers", 1)[1].split("\n## ", 1)[0]
    [table] = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    market = parse_market('[instruments.CEA25]\ntick = "0.01"\n' + table)
    assert market.quoting == (CEA25, )
    assert QuotingMonitor(market.quoting, market.schedule, is_maker).symbols == {"CEA25"}


# --- a naive reference beside the monitor ------------------------------------------------------
OBLIGATIONS = (QuotingObligation("CEA25", max_spread=3, min_qty=10, presence_num=1, presence_den=2,
                                 rebate_num=1, rebate_den=3),
               QuotingObligation("CEA24", max_spread=5, min_qty=5, presence_num=1, presence_den=1,
                                 rebate_num=1, rebate_den=1))
# A made-up day of short sessions (UTC, every day a business day) and the default market's
# lunch break and close, each over a two-minute window.
SHORT = Schedule(zone="+00:00", offsets=((0, 0),),
                 sessions={"listing": ((10, 40), (50, 51), (60, 100), (110, 86_400))},
                 weekdays=frozenset(range(7)))
WINDOWS = [(SHORT, 0), (None, 0), (SCHEDULE, beijing(11, 29) // NS),
           (SCHEDULE, beijing(12, 59, 30) // NS), (SCHEDULE, beijing(14, 59, 10) // NS)]
SECONDS = 120

place = st.tuples(st.just("place"), st.sampled_from(["mm1", "mm1", "mm2", "bob"]),
                  st.sampled_from(["CEA25", "CEA25", "CEA24", "CEA23"]), st.booleans(),
                  st.integers(100, 106), st.integers(1, 30), st.integers(4, 30),
                  st.sampled_from([LIMIT, LIMIT, LIMIT, STOP_LIMIT]))
# Both sides at once: a bid, and an ask some ticks above it.
pair = st.tuples(st.just("pair"), st.sampled_from(["mm1", "mm2", "bob"]),
                 st.sampled_from(["CEA25", "CEA24"]), st.integers(100, 103), st.integers(1, 7),
                 st.integers(1, 30), st.integers(4, 30))
change = st.tuples(st.just("change"), st.integers(0, 1_000), st.integers(0, 30))
trigger = st.tuples(st.just("trigger"), st.integers(0, 1_000))
tick = st.tuples(st.just("tick"))
steps = st.lists(st.tuples(st.integers(0, SECONDS - 1),
                           st.one_of(place, pair, pair, change, trigger, tick)), max_size=30)


def apply(action: tuple, orders: list[Order], watch=None) -> None:
    """Do one step of a scenario to *orders* (a placed order is shown to *watch*)."""
    if action[0] == "pair":
        _, account, symbol, bid, width, qty, visible = action
        apply(("place", account, symbol, True, bid, qty, visible, LIMIT), orders, watch)
        apply(("place", account, symbol, False, bid + width, qty, visible, LIMIT), orders, watch)
    elif action[0] == "place":
        _, account, symbol, is_buy, price, qty, visible, kind = action
        placed = Order(f"o{len(orders)}", account, symbol, is_buy, price, qty, min(visible, qty), 0,
                       kind, 0, 0)
        if crosses(placed, orders):
            return  # it would trade: the scenario keeps to orders that rest
        orders.append(placed)
        if watch is not None:
            watch(placed)
    elif action[0] == "change" and orders:  # a fill, a partial fill or a cancel
        target = orders[action[1] % len(orders)]
        target.qty = min(target.qty, action[2])
        target.visible = min(target.visible, target.qty)
    elif action[0] == "trigger" and orders:
        target = orders[action[1] % len(orders)]
        if target.kind == STOP_LIMIT and target.qty:
            target.kind = LIMIT
            if crosses(target, orders):
                target.qty = target.visible = 0  # it would trade: cancelled instead


def crosses(new: Order, orders: list[Order]) -> bool:
    """Would the limit order *new* meet a resting order (the book is never crossed)?"""
    return new.kind == LIMIT and any(
        o.qty and o.kind == LIMIT and o.instrument == new.instrument and o.is_buy != new.is_buy
        and (o.price <= new.price if new.is_buy else o.price >= new.price) for o in orders)


def naive(schedule: Schedule | None, base: int, scenario: list[tuple[int, tuple]],
          fees: dict[tuple[str, str], int]) -> list[tuple[object, ...]]:
    """Sample the orders once a second and count the seconds (the scenario's times are
    whole seconds and so are the sessions' edges)."""
    obligations = {o.symbol: o for o in OBLIGATIONS}
    orders: list[Order] = []
    session = 0
    quoted: dict[tuple[str, str], int] = {}
    both: dict[tuple[str, str], int] = {}
    spread: dict[tuple[str, str], int] = {}
    for second in range(SECONDS):
        for when, action in scenario:
            if when == second:
                apply(action, orders)
        for o in orders:
            if is_maker(o.account) and o.instrument in obligations:
                quoted.setdefault((o.account, o.instrument), 0)
        if schedule is not None and not schedule.is_open("listing", (base + second) * NS):
            continue
        session += NS
        for account, symbol in quoted:
            ob = obligations[symbol]
            mine = [o for o in orders if (o.account, o.instrument) == (account, symbol)
                    and o.qty > 0 and o.kind == LIMIT]
            bids = [o.price for o in mine if o.is_buy]
            asks = [o.price for o in mine if not o.is_buy]
            if bids and asks:
                both[account, symbol] = both.get((account, symbol), 0) + NS
                spread[account, symbol] = spread.get((account, symbol), 0) + (
                    min(asks) - max(bids)) * NS
            good_bids = [o.price for o in mine if o.is_buy and o.visible >= ob.min_qty]
            good_asks = [o.price for o in mine if not o.is_buy and o.visible >= ob.min_qty]
            if good_bids and good_asks and min(good_asks) - max(good_bids) <= ob.max_spread:
                quoted[account, symbol] += NS
    rows = []
    for key in sorted(quoted):
        ob = obligations[key[1]]
        presence = quoted[key] * 10_000 // session if session else 0
        met = session > 0 and quoted[key] * ob.presence_den >= ob.presence_num * session
        rebate = fees.get(key, 0) * ob.rebate_num // ob.rebate_den if met else 0
        average = spread[key] // both[key] if both.get(key) else None
        rows.append((*key, quoted[key], session, presence, average, met, rebate))
    return rows


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(WINDOWS), steps, st.integers(0, SECONDS), st.integers(0, 10_000))
def test_the_monitor_agrees_with_a_naive_reference(window, scenario, reload_at, fee):
    schedule, base = window
    scenario = sorted(scenario, key=lambda step: step[0])
    fees = {("mm1", "CEA25"): fee, ("mm2", "CEA25"): fee + 1, ("mm1", "CEA24"): fee // 2}
    mon = QuotingMonitor(OBLIGATIONS, schedule, is_maker)
    mon.advance(base * NS)
    orders: list[Order] = []
    for when, action in scenario:
        if when >= reload_at:  # the engine stops and starts again from its state
            loaded = QuotingMonitor(OBLIGATIONS, schedule, is_maker)
            loaded.load_state(json.loads(json.dumps(mon.to_state())))
            for o in orders:
                if o.qty:
                    loaded.watch(o)
            mon, reload_at = loaded, SECONDS + 1
        mon.advance((base + when) * NS)
        apply(action, orders, mon.watch)
    mon.advance((base + SECONDS) * NS)
    got = [(r.account, r.instrument, r.quoted_ns, r.session_ns, r.presence_bps, r.average_spread,
            r.met, r.rebate) for r in assess(mon, fees)]
    assert got == naive(schedule, base, scenario, fees)
