"""Expiry in the market's own time zone (exchange.derivatives.clearing, "Expiry and
delivery"): after a future's last trading day its orders and amends are refused
``contract_expired``, and an ``eod`` on or after it expires the contract, on or after the
delivery day delivers it; "day" is the local day of the market's ``[schedule]``
(``Schedule.local_day``), a UTC day only for a market without one.

F is December 2026 (tests/markets.py): last trading day Monday 12-28, delivery Thursday
12-31. In Beijing (UTC+8) the local day begins at 16:00 UTC the day before, so 00:00 to
08:00 Beijing on Tuesday 12-29 is still Monday in UTC: by UTC days those orders were
accepted. In New York (UTC-5 in December) the evening from 19:00 is already the next day
in UTC: by UTC days those orders were refused a day early, and an evening ``eod`` on
Wednesday 12-30 delivered a day early.
"""

from __future__ import annotations

import pytest
from markets import futures_market

from exchange import Engine
from exchange.calendar import day_of_ns, days_from_civil
from exchange.commands import AmendOrder, Deposit, EndOfDay, IssueAllowances, PlaceOrder
from exchange.events import (CommandRejected, ContractExpired, DeliverySettled, OrderAccepted,
                             OrderAmended)
from exchange.market import parse_market

NS = 10**9
LAST = days_from_civil(2026, 12, 28)  # F's last trading day, Monday
BEIJING, NEW_YORK = 8 * 3600, -5 * 3600  # UTC offsets in December, seconds


def local(day: int, hour: int, minute: int = 0, offset: int = BEIJING, ns: int = 0) -> int:
    """Engine time of *hour*:*minute* (plus *ns*) on December *day* 2026, local time at
    UTC *offset*."""
    return (days_from_civil(2026, 12, day) * 86_400 + hour * 3600 + minute * 60 - offset) * NS + ns


def engine(zone: str, sessions: str = '"00:00-24:00"') -> Engine:
    """F's market with a ``[schedule]`` in *zone* (trading round the clock on weekdays
    unless *sessions* says otherwise), the ledger on, a and b funded."""
    text = futures_market() + f'[schedule]\ntimezone = "{zone}"\nlisting = [{sessions}]\n'
    run = Engine(parse_market(text), ledger=True)
    for account in ("a", "b"):
        run.execute(Deposit(account=account, currency="CNY", amount="100000.00"))
    return run


def order(run: Engine, order_id: str, ts: int, side: str = "buy", account: str = "a") -> list:
    events = run.execute(
        PlaceOrder(order_id=order_id, account=account, instrument="F", side=side, qty=1,
                   price="80.00", ts=ts))
    run.check()
    return events


def _cases(*rows: tuple[str, int, int, bool]) -> list:
    return [pytest.param(*row, id=row[0]) for row in rows]


@pytest.mark.parametrize(
    "when,ts,utc_day,expired",
    _cases(
        # Monday 12-28 local, the last trading day: accepted
        ("Mon 07:30 Beijing (Sun 23:30 UTC)", local(28, 7, 30), LAST - 1, False),
        ("Mon 23:30 Beijing (15:30 UTC)", local(28, 23, 30), LAST, False),
        ("Mon 23:59:59.999999999 Beijing", local(28, 23, 59, ns=60 * NS - 1), LAST, False),
        # Tuesday 12-29 local: refused, though UTC still shows Monday (before: accepted)
        ("Tue 00:00 Beijing (Mon 16:00 UTC)", local(29, 0), LAST, True),
        ("Tue 07:30 Beijing (Mon 23:30 UTC)", local(29, 7, 30), LAST, True),
        ("Tue 08:00 Beijing (Tue 00:00 UTC)", local(29, 8), LAST + 1, True),
    ))
def test_orders_in_beijing_expire_at_local_midnight(when, ts, utc_day, expired):
    run = engine("Asia/Shanghai")
    assert day_of_ns(ts) == utc_day, when
    result = order(run, "a1", ts)[0]
    if expired:
        assert type(result) is CommandRejected and result.reason == "contract_expired", when
    else:
        assert type(result) is OrderAccepted, (when, result)


@pytest.mark.parametrize(
    "when,ts,utc_day,expired",
    _cases(
        # Monday 12-28 local: accepted, though UTC already shows Tuesday (before: refused)
        ("Mon 20:00 New York (Tue 01:00 UTC)", local(28, 20, offset=NEW_YORK), LAST + 1, False),
        ("Mon 23:59:59.999999999 New York",
         local(28, 23, 59, offset=NEW_YORK, ns=60 * NS - 1), LAST + 1, False),
        # Tuesday 12-29 local: refused
        ("Tue 00:00 New York (05:00 UTC)", local(29, 0, offset=NEW_YORK), LAST + 1, True),
    ))
def test_orders_in_new_york_expire_at_local_midnight(when, ts, utc_day, expired):
    run = engine("America/New_York")
    assert day_of_ns(ts) == utc_day, when
    result = order(run, "a1", ts)[0]
    if expired:
        assert type(result) is CommandRejected and result.reason == "contract_expired", when
    else:
        assert type(result) is OrderAccepted, (when, result)


def test_an_amend_in_beijing_is_refused_from_local_midnight():
    run = engine("Asia/Shanghai")
    assert type(order(run, "a1", local(28, 23, 0))[0]) is OrderAccepted
    just_before = local(28, 23, 59, ns=60 * NS - 1)  # Monday 23:59:59.999999999 Beijing
    events = run.execute(AmendOrder(order_id="a1", account="a", price="81.00", ts=just_before))
    assert type(events[0]) is OrderAmended, events[0]
    midnight = local(29, 0)  # Tuesday 00:00 Beijing, Monday 16:00 UTC
    events = run.execute(AmendOrder(order_id="a1", account="a", price="82.00", ts=midnight))
    assert type(events[0]) is CommandRejected and events[0].reason == "contract_expired"
    run.check()


def test_an_eod_before_08_00_beijing_expires_on_the_local_day():
    """A session ending before 08:00 Beijing: its eod at 07:30 on Monday 12-28 is on
    the last trading day (Sunday 23:30 UTC), so F expires there (before: a day later)."""
    run = engine("Asia/Shanghai", '"00:00-07:00"')
    assert type(order(run, "a1", local(28, 6, 0))[0]) is OrderAccepted
    events = run.execute(EndOfDay(ts=local(28, 7, 30)))
    run.check()
    assert [e.instrument for e in events if type(e) is ContractExpired] == ["F"]
    assert "F" in run.ledger.clearing.expired


def test_an_evening_eod_in_new_york_delivers_on_the_local_delivery_day():
    """eods at 20:00 New York, 01:00 UTC the next day: F expires at Monday 12-28's and
    delivers at Thursday 12-31's, not at Wednesday's (Thursday in UTC; before: it did)."""
    run = engine("America/New_York", '"09:00-17:00"')
    run.execute(IssueAllowances(account="b", instrument="CEA25", qty=1000))
    assert type(order(run, "a1", local(21, 10, offset=NEW_YORK))[0]) is OrderAccepted
    order(run, "b1", local(21, 10, offset=NEW_YORK), side="sell", account="b")  # trades 80.00
    seen = {}
    for day in (25, 28, 29, 30, 31):
        events = run.execute(EndOfDay(ts=local(day, 20, offset=NEW_YORK)))
        run.check()
        seen[day] = ([type(e).__name__ for e in events if type(e) is ContractExpired] +
                     [f"{e.account} {e.side} {e.tonnes}" for e in events
                      if type(e) is DeliverySettled])
    assert seen == {25: [], 28: ["ContractExpired"], 29: [], 30: [],
                    31: ["b sell 1000", "a buy 1000"]}
    assert run.ledger.holding("a", "CEA25").available == 1000
    assert day_of_ns(local(30, 20, offset=NEW_YORK)) == days_from_civil(2026, 12, 31)
