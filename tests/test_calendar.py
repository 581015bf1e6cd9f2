"""The trading calendar: integer dates against Python's ``datetime``, business days, the
futures expiry rule of ICE Endex EUA futures (the last Monday, or the penultimate one
when a holiday falls on it or in the four days after it), delivery, contract series,
strict parsing.

``datetime`` is the reference here only; the core itself may not import it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.calendar import (DAY_NS, SERIES, Calendar, CalendarError, civil_from_days,
                               contract_months, day_of_ns, day_start_ns, days_from_civil,
                               days_in_month, format_date, parse_date, parse_month, weekday)

EPOCH = date(1970, 1, 1)
PLAIN = Calendar()


def _days(text: str) -> int:
    return (date.fromisoformat(text) - EPOCH).days


@st.composite
def civil_dates(draw):
    year, month = draw(st.integers(-1_000_000, 1_000_000)), draw(st.integers(1, 12))
    return year, month, draw(st.integers(1, days_in_month(year, month)))


# --- days <-> civil ---------------------------------------------------------------------


@given(st.integers(-400_000_000, 400_000_000))
def test_days_round_trip_through_civil(days):
    assert days_from_civil(*civil_from_days(days)) == days


@given(civil_dates())
def test_civil_round_trip_through_days_and_next_day_is_one_more(civil):
    days = days_from_civil(*civil)
    assert civil_from_days(days) == civil
    assert days_from_civil(*civil_from_days(days + 1)) == days + 1
    assert civil_from_days(days + 1) != civil


@given(st.dates())
def test_agrees_with_datetime(d):
    days = (d - EPOCH).days
    assert days_from_civil(d.year, d.month, d.day) == days
    assert civil_from_days(days) == (d.year, d.month, d.day)
    assert weekday(days) == d.weekday()
    assert format_date(days) == d.isoformat()
    assert parse_date(d.isoformat()) == days


@given(st.integers(1, 9998), st.integers(1, 12))
def test_days_in_month_agrees_with_datetime(year, month):
    first = date(year, month, 1)
    following = date(year + (month == 12), month % 12 + 1, 1)
    assert days_in_month(year, month) == (following - first).days


def test_century_leap_years():
    assert [days_in_month(y, 2) for y in (1900, 2000, 2024, 2100, 2400)] == [28, 29, 29, 28, 29]
    assert parse_date("2000-02-29") == _days("2000-02-29")


@given(st.integers(-(10**22), 10**22))
def test_a_timestamp_lies_in_the_day_it_maps_to(ts):
    day = day_of_ns(ts)
    assert day_start_ns(day) <= ts < day_start_ns(day + 1)


def test_day_boundaries_floor_before_1970():
    assert day_of_ns(-1) == -1 and day_of_ns(0) == 0 and day_of_ns(DAY_NS) == 1
    midnight = datetime(2026, 12, 28, tzinfo=UTC).timestamp()
    assert day_start_ns(_days("2026-12-28")) == int(midnight) * 10**9
    assert day_of_ns(int(midnight) * 10**9 + DAY_NS - 1) == _days("2026-12-28")


# --- strict input -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2026-02-30", "2026-13-01", "2026-00-10", "2026-12-32", "26-12-01", "", "2026-1-01",
    "2026/12/28", " 2026-12-28", "2026-12-28\n", "0000-01-01", "1900-02-29", "２０２６-12-28", None,
    20815
])
def test_parse_date_rejects(text):
    with pytest.raises(CalendarError):
        parse_date(text)


@pytest.mark.parametrize(
    "text",
    ["2026-13", "2026-00", "26-12", "", "2026-1", "2026-12-01", "2026-12\n", "0000-05", None])
def test_parse_month_rejects(text):
    with pytest.raises(CalendarError):
        parse_month(text)


def test_parse_month_accepts_a_real_month():
    assert parse_month("2026-12") == (2026, 12) and parse_month("0001-01") == (1, 1)


def test_impossible_civil_date_is_refused_with_a_clear_message():
    assert issubclass(CalendarError, ValueError)
    with pytest.raises(CalendarError, match="2026-02-29 is not a date: February 2026 has 28"):
        days_from_civil(2026, 2, 29)
    assert days_from_civil(2024, 2, 29) == _days("2024-02-29")
    for bad in [(2026, 13, 1), (2026, 0, 1), (2026, 4, 31), (2026, 1, 0)]:
        with pytest.raises(CalendarError):
            days_from_civil(*bad)


def test_format_date_refuses_years_it_cannot_write():
    assert format_date(_days("9999-12-31")) == "9999-12-31"
    with pytest.raises(CalendarError):
        format_date(_days("9999-12-31") + 1)
    with pytest.raises(CalendarError):
        format_date(_days("0001-01-01") - 1)


def test_calendar_is_frozen_and_built_from_strings():
    cal = Calendar.from_strings(["2026-12-25", "2026-12-28"])
    assert cal.holidays == frozenset({_days("2026-12-25"), _days("2026-12-28")})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.holidays = frozenset()
    with pytest.raises(CalendarError):
        Calendar.from_strings(["2026-12-28", "2026-02-30"])


# --- business days ----------------------------------------------------------------------


def test_business_days_are_weekdays_that_are_not_holidays():
    cal = Calendar.from_strings(["2026-12-25"])
    assert cal.is_business_day(_days("2026-12-24"))  # Thursday
    assert not cal.is_business_day(_days("2026-12-25"))  # Friday, holiday
    assert not cal.is_business_day(_days("2026-12-26"))  # Saturday
    assert not cal.is_business_day(_days("2026-12-27"))  # Sunday
    assert PLAIN.is_business_day(_days("2026-12-25"))


def test_previous_business_day():
    cal = Calendar.from_strings(["2026-12-25"])
    assert cal.previous_business_day(_days("2026-12-28")) == _days("2026-12-28")
    assert cal.previous_business_day(_days("2026-12-27")) == _days("2026-12-24")
    assert PLAIN.previous_business_day(_days("2026-12-27")) == _days("2026-12-25")


def test_add_business_days_across_a_weekend_and_a_holiday():
    friday = _days("2026-12-18")
    assert PLAIN.add_business_days(friday, 0) == friday
    assert PLAIN.add_business_days(friday, 1) == _days("2026-12-21")
    assert PLAIN.add_business_days(friday, 3) == _days("2026-12-23")
    cal = Calendar.from_strings(["2026-12-21"])  # Monday holiday
    assert cal.add_business_days(friday, 1) == _days("2026-12-22")
    assert cal.add_business_days(friday, 3) == _days("2026-12-24")
    assert cal.add_business_days(_days("2026-12-19"), 1) == _days("2026-12-22")  # from Saturday
    with pytest.raises(CalendarError):
        cal.add_business_days(friday, -1)


@given(st.integers(-100_000, 100_000), st.integers(0, 30),
       st.sets(st.integers(-100_000, 100_100), max_size=30))
def test_add_business_days_counts_exactly_n_business_days(start, n, holidays):
    cal = Calendar(frozenset(holidays))
    end = cal.add_business_days(start, n)
    assert sum(map(cal.is_business_day, range(start + 1, end + 1))) == n
    assert n == 0 and end == start or cal.is_business_day(end)


# --- futures expiry and delivery --------------------------------------------------------


def test_known_last_mondays():
    assert format_date(PLAIN.last_trading_day(2026, 12)) == "2026-12-28"
    assert format_date(PLAIN.last_trading_day(2027, 12)) == "2027-12-27"
    assert format_date(PLAIN.last_trading_day(2026, 3)) == "2026-03-30"


@pytest.mark.parametrize("year", range(2020, 2041))
def test_last_trading_day_is_the_last_monday_by_datetime(year):
    for month in range(1, 13):
        last = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
        monday = last - timedelta(days=last.weekday())
        assert PLAIN.last_trading_day(year, month) == (monday - EPOCH).days, (year, month)


# ICE Endex EUA futures specification, "Last Trading Day": the last Monday of the
# contract month; however, if the last Monday is a non-business day or there is a
# non-business day in the four days following it, the penultimate Monday of the month.
# Ours too when the penultimate Monday is itself a holiday (ICE is silent): the latest
# business day before it, within the month. December 2026: last Monday the 28th (the
# four days after it: the 29th to Friday 1 January 2027), penultimate Monday the 21st.


def test_ice_a_month_without_holidays_near_its_end_expires_on_its_last_monday():
    assert PLAIN.last_trading_day(2026, 12) == _days("2026-12-28")
    # holidays the Friday before, the Tuesday of the week before and the Monday after
    # (seven days on): none on the last Monday or in the four days after it
    other = Calendar.from_strings(["2026-12-25", "2026-12-22", "2027-01-04"])
    assert other.last_trading_day(2026, 12) == _days("2026-12-28")


def test_ice_a_holiday_on_the_last_monday_gives_the_penultimate_monday():
    # before: the previous business day, Friday 2026-12-25
    assert Calendar.from_strings(["2026-12-28"]).last_trading_day(2026, 12) == _days("2026-12-21")
    both = Calendar.from_strings(["2026-12-28", "2026-12-25"])  # the Friday before as well
    assert both.last_trading_day(2026, 12) == _days("2026-12-21")  # before: Thursday 12-24
    # Christmas Day 2023 was the last Monday of December 2023: the 18th
    assert Calendar.from_strings(["2023-12-25", "2023-12-26"]).last_trading_day(
        2023, 12) == _days("2023-12-18")


def test_ice_a_holiday_on_the_thursday_after_the_last_monday_gives_the_penultimate_monday():
    cal = Calendar.from_strings(["2026-12-31"])  # Thursday; before: Monday 12-28 stood
    assert cal.last_trading_day(2026, 12) == _days("2026-12-21")


@pytest.mark.parametrize("holiday", ["2026-12-29", "2026-12-30", "2026-12-31", "2027-01-01"])
def test_ice_a_holiday_in_any_of_the_four_days_after_the_last_monday(holiday):
    """Tuesday to Friday after Monday 12-28, New Year's Day in the next month included."""
    assert Calendar.from_strings([holiday]).last_trading_day(2026, 12) == _days("2026-12-21")


def test_a_holiday_on_the_penultimate_monday_too_takes_the_business_day_before_it():
    cal = Calendar.from_strings(["2026-12-21", "2026-12-29"])  # before: Monday 12-28 stood
    assert cal.last_trading_day(2026, 12) == _days("2026-12-18")  # Friday
    # the Spring Festival of 2026 as the default market's [schedule] lists it: Monday
    # 02-16 to Friday 02-20 and Monday 02-23, the last and the penultimate Mondays
    spring = Calendar.from_strings(
        ["2026-02-16", "2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20", "2026-02-23"])
    assert spring.last_trading_day(2026, 2) == _days("2026-02-13")  # Friday


@given(st.integers(2000, 2100), st.integers(1, 12), st.sets(st.integers(0, 30), max_size=6))
def test_last_trading_day_follows_the_ice_rule_by_datetime(year, month, offsets):
    """The rule in ``datetime`` terms, holidays drawn from the 10th of the month to the
    first days of the next (the days the rule looks at)."""
    holidays = {date(year, month, 10) + timedelta(days=n) for n in offsets}

    def business(d: date) -> bool:
        return d.weekday() < 5 and d not in holidays

    last = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    monday = last - timedelta(days=last.weekday())
    expiry = monday
    if not all(business(monday + timedelta(days=n)) for n in range(5)):
        expiry = monday - timedelta(days=7)
        while not business(expiry):
            expiry -= timedelta(days=1)
    cal = Calendar(frozenset((d - EPOCH).days for d in holidays))
    assert cal.last_trading_day(year, month) == (expiry - EPOCH).days
    assert (expiry.year, expiry.month) == (year, month)


def test_expiry_is_never_moved_into_the_previous_month():
    penultimate = _days("2026-02-16")  # the last Monday, 02-23, is a holiday below
    cal = Calendar(frozenset(range(_days("2026-02-01"), _days("2026-02-23") + 1)))
    with pytest.raises(CalendarError, match="2026-02 has no business day on or before its "
                       "penultimate Monday 2026-02-16"):
        cal.last_trading_day(2026, 2)
    one_left = Calendar(frozenset(range(_days("2026-02-03"), penultimate + 8)))
    assert one_left.last_trading_day(2026, 2) == _days("2026-02-02")


def test_delivery_three_business_days_after_expiry():
    assert PLAIN.delivery_day(_days("2026-12-28")) == _days("2026-12-31")
    assert PLAIN.delivery_day(_days("2026-12-28"), business_days=1) == _days("2026-12-29")
    # New Year's Eve and Day: expiry moves to Monday 12-21 (before: 12-28, delivering
    # 2027-01-04), so delivery is Thursday 12-24
    cal = Calendar.from_strings(["2026-12-31", "2027-01-01"])
    assert cal.delivery_day(cal.last_trading_day(2026, 12)) == _days("2026-12-24")
    skips = Calendar.from_strings(["2026-12-23", "2026-12-31"])  # 12-21, then 22, 24, 25
    assert skips.delivery_day(skips.last_trading_day(2026, 12)) == _days("2026-12-25")


# --- contract series --------------------------------------------------------------------


def test_series_selection():
    assert contract_months(2026, 11, 3, "monthly") == [(2026, 11), (2026, 12), (2027, 1)]
    assert contract_months(2026, 3, 5, "quarterly") == [(2026, 3), (2026, 6), (2026, 9), (2026, 12),
                                                        (2027, 3)]
    assert contract_months(2026, 4, 2, "quarterly") == [(2026, 6), (2026, 9)]
    assert contract_months(2026, 12, 2, "december") == [(2026, 12), (2027, 12)]
    assert contract_months(2027, 1, 2, "december") == [(2027, 12), (2028, 12)]
    assert contract_months(2026, 5, 0, "monthly") == []


@given(st.integers(1900, 2200), st.integers(1, 12), st.integers(0, 40),
       st.sampled_from(sorted(SERIES)))
def test_series_are_the_next_months_in_the_series(year, month, count, series):
    months = contract_months(year, month, count, series)
    expected = [(y, m) for y in range(year, year + 41) for m in range(1, 13)
                if (y, m) >= (year, month) and m in SERIES[series]][:count]
    assert months == expected


@pytest.mark.parametrize("args", [(2026, 1, 3, "weekly"), (2026, 13, 3, "monthly"),
                                  (2026, 0, 3, "monthly"), (2026, 1, -1, "monthly")])
def test_contract_months_rejects(args):
    with pytest.raises(CalendarError):
        contract_months(*args)
