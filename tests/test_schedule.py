"""The trading day: the market file's [schedule], the engine's session shortcut held equal
to ``Schedule.is_open``, time zones against the time zone database, and the command
line's ``--daily`` and ``--always-open``."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import Engine, PlaceOrder, default_market
from exchange.calendar import days_from_civil
from exchange.commands import EndOfDay
from exchange.events import CommandRejected, DailyStatistics
from exchange.market import MarketConfigError, parse_market
from exchange.reasons import Reason

SCENARIOS = Path(__file__).parent / "scenarios"
MARKET = """
[instruments.CEA25]
tick = "0.01"
"""


def beijing(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
    return ((days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) -
            8 * 3600) * 10**9


def schedule_market(body: str) -> str:
    return MARKET + "[schedule]\n" + body


@pytest.mark.parametrize("body, words", [
    ('timezone = "Mars/Olympus"\nlisting = ["09:30-11:30"]', "unknown time zone"),
    ('listing = ["09:30-11:70"]', "[schedule].listing: expected HH:MM"),
    ('listing = ["9:30-11:30"]', "[schedule].listing: expected HH:MM"),
    ('listing = ["11:30-09:30"]', "ends before it starts"),
    ('listing = ["09:30-11:30", "11:00-13:00"]', "overlap"),
    ('listing = "09:30-11:30"', "a list of sessions"),
    ('block = ["13:00-15:00"]', "listing sessions are required"),
    ('listing = ["09:30-11:30"]\nweekdays = ["mon", "funday"]', "[schedule].weekdays"),
    ('listing = ["09:30-11:30"]\nholidays = ["2026-13-01"]', "[schedule].holidays"),
    ('listing = ["09:30-11:30"]\nlunch = ["11:30-13:00"]', "unknown key(s) lunch"),
])
def test_a_schedule_that_does_not_parse_is_refused_naming_file_and_key(body, words):
    with pytest.raises(MarketConfigError) as caught:
        parse_market(schedule_market(body), "m.toml")
    assert "m.toml: [schedule]" in str(caught.value) and words in str(caught.value)


def test_a_bad_schedule_stops_serve_and_replay_with_one_line(tmp_path):
    market = tmp_path / "m.toml"
    market.write_text(schedule_market('timezone = "Nowhere/City"\nlisting = ["09:30-11:30"]'))
    orders = tmp_path / "o.csv"
    orders.write_text("action,order_id,account,instrument,side,price,qty\n")
    for argv in (["replay", str(orders), "--market", str(market)],
                 ["serve", "--market", str(market), "--port", "1"]):
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Nowhere/City" in done.stderr and str(market) in done.stderr
        assert "Traceback" not in done.stderr


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 14 * 86_400 * 10**9 - 1), min_size=1, max_size=40))
def test_the_engines_session_shortcut_agrees_with_the_schedule(offsets):
    # Orders at random instants of two weeks (ts only moves forward in the engine's clock,
    # but the session check takes each order's own ts): accepted exactly when open.
    market = default_market()
    schedule = market.schedule
    assert schedule is not None
    engine = Engine(market)
    start = beijing(2026, 9, 28, 0, 0)
    for number, offset in enumerate(offsets):
        ts = start + offset
        out = engine.execute(
            PlaceOrder(order_id=f"o{number}", account="a", instrument="CEA25", side="buy",
                       price="60.00", qty=1, ts=ts))
        closed = isinstance(out[0], CommandRejected) and out[0].reason == Reason.MARKET_CLOSED
        assert closed != schedule.is_open("listing", ts), ts


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Europe/Berlin", "America/New_York",
                                  "Australia/Lord_Howe"])
@settings(max_examples=200, deadline=None)
@given(second=st.integers(0, 4_102_444_799))
def test_a_zones_offsets_agree_with_the_time_zone_database(zone, second):
    market = parse_market(schedule_market(f'timezone = "{zone}"\nlisting = ["09:30-11:30"]'))
    assert market.schedule is not None
    moment = datetime.fromtimestamp(second, UTC).astimezone(zoneinfo.ZoneInfo(zone))
    offset = moment.utcoffset()
    assert offset is not None
    assert market.schedule.offset(second * 10**9) == int(offset.total_seconds())
    assert market.schedule.local(second * 10**9)[1] == (moment.hour * 3600 + moment.minute * 60 +
                                                        moment.second)


def test_a_market_without_schedule_is_always_open_and_always_open_travels_in_its_text():
    engine = Engine(parse_market(MARKET))
    saturday_night = beijing(2026, 12, 5, 23, 0)
    out = engine.execute(
        PlaceOrder(order_id="o", account="a", instrument="CEA25", side="buy", price="60.00",
                   qty=1, ts=saturday_night))
    assert not isinstance(out[0], CommandRejected)
    opened = default_market().open_all_hours()
    assert opened.schedule is None and opened.always_open
    again = parse_market(opened.text)  # what a journal or snapshot reads back
    assert again.schedule is None and again.always_open
    # the holidays still make the clearing calendar
    assert again.clearing.holidays == default_market().clearing.holidays


def test_an_eod_without_ts_is_not_checked_and_its_statistics_count_days():
    engine = Engine(default_market())
    engine.execute(PlaceOrder(order_id="s", account="a", instrument="CEA25", side="sell",
                              price="60.00", qty=3))
    engine.execute(PlaceOrder(order_id="b", account="b", instrument="CEA25", side="buy",
                              price="60.00", qty=3))
    daily = [e for e in engine.execute(EndOfDay()) if isinstance(e, DailyStatistics)]
    assert [(e.instrument, e.day, e.date, e.close, e.volume) for e in daily] == [("CEA25", 1, None,
                                                                                 6000, 3)]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True,
                          text=True, timeout=120)


def test_replay_daily_writes_the_statistics_of_each_day(tmp_path):
    # The orders of the daily_statistics scenario, as a plain order file.
    rows = [
        line for line in (SCENARIOS / "daily_statistics.txt").read_text().split("--- orders")[1]
        .split("--- book")[0].splitlines()
        if line.strip() and not line.startswith((">", "#"))
    ]
    orders = tmp_path / "orders.csv"
    orders.write_text("\n".join(rows) + "\n")
    out = tmp_path / "daily.csv"
    done = _run("replay", str(orders), "--daily", str(out), "--json")
    assert done.returncode == 0, done.stderr
    # the scenario's second end of Friday, Thursday's again, and an order once Friday ended
    assert json.loads(done.stdout)["rejects"] == {"day_ended": 2, "market_closed": 1}
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert table == [
        [
            "date", "instrument", "open", "high", "low", "close", "volume", "turnover",
            "block_volume", "auction_volume"
        ],
        ["2026-12-03", "CEA25", "60.00", "61.00", "59.50", "60.33", "60", "3620.00", "0", "0"],
        ["2026-12-04", "CEA25", "", "", "", "60.33", "0", "0.00", "0", "0"],
        ["2026-12-07", "CEA25", "60.40", "60.50", "60.00", "60.38", "12", "724.50", "0", "0"],
    ]


def test_replay_always_open_takes_orders_the_schedule_would_refuse(tmp_path):
    orders = tmp_path / "o.csv"
    sunday = beijing(2026, 12, 6, 3, 0)
    orders.write_text("action,order_id,account,instrument,side,price,qty,ts\n"
                      f"new,s,a,CEA25,sell,60.00,5,{sunday}\n"
                      f"new,b,b,CEA25,buy,60.00,5,{sunday}\n")
    closed = json.loads(_run("replay", str(orders), "--json").stdout)
    assert (closed["rejected"], closed["trades"]) == (2, 0)
    assert closed["rejects"] == {"market_closed": 2}
    opened = json.loads(_run("replay", str(orders), "--json", "--always-open").stdout)
    assert (opened["rejected"], opened["trades"]) == (0, 1)


def test_a_timeless_file_replays_as_before():
    # The golden files carry no ts: the schedule never sees them.
    golden = Path(__file__).parent / "golden" / "rich.csv"
    done = _run("replay", str(golden), "--stp", "none", "--json")
    summary = json.loads(done.stdout)
    assert "market_closed" not in summary.get("rejects", {})
    assert summary["trades"] > 0


def test_with_a_schedule_a_day_ends_once_and_open_at_all_hours_at_each_eod():
    """One end of day a business day with the schedule (a second, or one for an earlier
    date, is day_ended, and the ended day takes no order); a market open at all hours
    (the demo's, a test exchange's) ends a trading day at each eod, whatever its date."""
    friday_close = 1796369400000000000  # Friday 2026-12-04 15:30 Beijing
    scheduled = Engine(default_market())
    assert type(scheduled.execute(EndOfDay(ts=friday_close))[0]) is not CommandRejected
    before = scheduled.state_hash()
    for again in (friday_close + 60 * 10**9, friday_close - 86_400 * 10**9):
        (refused, ) = scheduled.execute(EndOfDay(ts=again))
        assert (type(refused), refused.reason) == (CommandRejected, Reason.DAY_ENDED)
    late = PlaceOrder(order_id="late", account="a", instrument="CEA25", side="buy",
                      price="60.00", qty=1, ts=friday_close - 5400 * 10**9)  # Friday 14:00
    assert scheduled.execute(late)[0].reason == Reason.MARKET_CLOSED
    assert scheduled.day == 2
    restored = Engine.from_state(scheduled.to_state())  # the ended date is in the state
    assert restored.execute(EndOfDay(ts=friday_close))[0].reason == Reason.DAY_ENDED
    assert before != scheduled.state_hash()  # the rejections count
    always = Engine(default_market().open_all_hours())
    for minute in range(3):
        (ended, *_) = always.execute(EndOfDay(ts=friday_close + minute * 60 * 10**9))
        assert type(ended) is not CommandRejected
    assert always.day == 4
    assert type(always.execute(late)[0]).__name__ == "OrderAccepted"


def _listing_holidays(*dates: str):
    text = schedule_market('timezone = "Asia/Shanghai"\nlisting = ["09:30-11:30"]\n'
                         f"holidays = {json.dumps(list(dates))}")
    schedule = parse_market(text, "m.toml").schedule
    assert schedule is not None
    return schedule


def test_the_operator_is_warned_a_month_before_the_listed_holidays_run_out():
    schedule = _listing_holidays("2026-10-01", "2025-01-01")
    assert schedule.holidays_through() == days_from_civil(2026, 12, 31)
    assert schedule.holidays_warning(beijing(2026, 12, 1, 12, 0)) is None  # 30 days before
    warned = schedule.holidays_warning(beijing(2026, 12, 2, 12, 0))
    assert warned is not None and "through 2026 only" in warned and "2027-01-01" in warned
    assert schedule.holidays_warning(beijing(2027, 3, 2, 12, 0)) == warned  # and while it holds
    # A year left out between listed ones is named, a month ahead and while it lasts.
    gap = _listing_holidays("2025-10-01", "2027-10-01")
    assert gap.holidays_warning(beijing(2025, 12, 1, 12, 0)) is None
    for when in (beijing(2025, 12, 2, 12, 0), beijing(2026, 7, 1, 12, 0)):
        said = gap.holidays_warning(when)
        assert said is not None and said.startswith("the market lists no holidays for 2026:")
    assert gap.holidays_warning(beijing(2027, 1, 4, 12, 0)) is None
    # A market that keeps no holidays at all is never told to list any.
    assert _listing_holidays().holidays_warning(beijing(2027, 3, 2, 12, 0)) is None
    assert _listing_holidays().holidays_through() is None


def test_serve_warns_when_its_markets_holidays_run_out(caplog):
    from gateway.mqtt.service import GatewayCore, warn_of_holidays

    def core_of(schedule) -> GatewayCore:
        return GatewayCore(Engine(dataclasses.replace(default_market(), schedule=schedule)))

    with caplog.at_level("WARNING", logger="carbonx.gateway"):
        warn_of_holidays(core_of(_listing_holidays("2000-10-01")))  # long past
        every_year = [f"{year}-10-01" for year in range(2000, 3000)]
        warn_of_holidays(core_of(_listing_holidays(*every_year)))  # listed for ages
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the market lists holidays through 2000 only: from 2001-01-01 every "
                    "weekday is a business day; add 2001's public holidays to the market's "
                    "[schedule] holidays"]


def test_each_end_of_day_the_gateway_runs_warns_again(caplog):
    """The warning comes with the day's end itself (its event), whoever sent it: the
    operator's eod row or --eod (here as --eod queues one, at a day's time)."""
    from gateway.mqtt.service import GatewayCore, GatewaySettings

    def core_of(*holidays: str) -> GatewayCore:
        market = dataclasses.replace(default_market(), schedule=_listing_holidays(*holidays))
        return GatewayCore(Engine(market), settings=GatewaySettings(book_interval=0))

    with caplog.at_level("WARNING", logger="carbonx.gateway"):
        every_year = [f"{year}-10-01" for year in range(2000, 3000)]
        for core in (core_of("2000-10-01"), core_of(*every_year)):
            for day in (4, 5):  # a Monday and a Tuesday
                core.end_of_day(beijing(2030, 3, day, 16, 0))
                core.flush(now=0.0)
            assert core.engine.last_day_ended is not None
    said = [r.getMessage() for r in caplog.records if "holidays" in r.getMessage()]
    assert len(said) == 2 and all("through 2000 only" in line for line in said)
