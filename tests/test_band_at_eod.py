"""The band the end of the day sets is the band trades print within: a resting order
priced outside it is cancelled then, never traded outside it the next day."""

from __future__ import annotations

from exchange import Deposit, EndOfDay, Engine, IssueAllowances, PlaceOrder, default_market
from exchange.events import OrderCancelled, TradeExecuted


def _traded_at_60(engine: Engine, cash: str, units: int) -> Engine:
    """*engine* with A and B funded, after A sold B 100 t at 60.00 (no band yet)."""
    for account in ("A", "B"):
        engine.execute(Deposit(account=account, currency="CNY", amount=cash))
        engine.execute(IssueAllowances(account=account, instrument="CEA25", qty=units))
    engine.execute(PlaceOrder(order_id="s1", account="A", instrument="CEA25", side="sell",
                              price="60.00", qty=100))
    engine.execute(PlaceOrder(order_id="b1", account="B", instrument="CEA25", side="buy",
                              price="60.00", qty=100))
    return engine


def test_a_resting_order_outside_the_new_band_is_cancelled_at_eod_and_never_trades() -> None:
    # Day 1 (no band yet): a trade at 60.00, then an offer at 50.00 left resting.
    engine = _traded_at_60(Engine(default_market(), ledger=True), "1000000.00", 10_000)
    engine.execute(PlaceOrder(order_id="lo", account="A", instrument="CEA25", side="sell",
                              price="50.00", qty=100))
    events = engine.execute(EndOfDay())
    assert engine.price_band("CEA25") == (5400, 6600)
    cancelled = [e for e in events if isinstance(e, OrderCancelled)]
    assert [(e.order_id, e.reason) for e in cancelled] == [("lo", "price_out_of_band")]
    # Day 2: a bid at the band's low edge trades nothing below it.
    events = engine.execute(PlaceOrder(order_id="b2", account="B", instrument="CEA25",
                                       side="buy", price="54.00", qty=100))
    assert not [e for e in events if isinstance(e, TradeExecuted)]
    assert engine.ledger.accounts["A"].holding("CEA25").held == 0  # the offer's hold given back
    engine.check()


def test_an_accounts_trades_with_itself_set_no_close() -> None:
    """A wash trade of 99,999 t at 66.00 (stp none) beside 100 t at 60.00 between two
    accounts made the close 65.99 and moved the next day's band by a tenth: the close is
    of trades between two accounts; the day's volume and high still show the wash."""
    from exchange.events import DailyStatistics, ReferencePriceSet

    engine = _traded_at_60(Engine(default_market().without_limits(), ledger=True),
                           "100000000.00", 200_000)
    engine.execute(PlaceOrder(order_id="w1", account="A", instrument="CEA25", side="sell",
                              price="66.00", qty=99_999, stp="none"))
    wash = engine.execute(PlaceOrder(order_id="w2", account="A", instrument="CEA25",
                                     side="buy", price="66.00", qty=99_999, stp="none"))
    assert [e.qty for e in wash if isinstance(e, TradeExecuted)] == [99_999]
    events = engine.execute(EndOfDay())
    (reference, ) = [e for e in events if isinstance(e, ReferencePriceSet)]
    (daily, ) = [e for e in events if isinstance(e, DailyStatistics)]
    assert (reference.price, reference.close_volume) == (6000, 100)
    assert (daily.close, daily.volume, daily.high) == (6000, 100_099, 6600)
    assert engine.price_band("CEA25") == (5400, 6600)
    # a day of nothing but a wash keeps the close it had
    engine.execute(PlaceOrder(order_id="w3", account="B", instrument="CEA25", side="sell",
                              price="65.00", qty=10, stp="none"))
    engine.execute(PlaceOrder(order_id="w4", account="B", instrument="CEA25", side="buy",
                              price="65.00", qty=10, stp="none"))
    events = engine.execute(EndOfDay())
    assert not [e for e in events if isinstance(e, ReferencePriceSet)]
    assert [(e.close, e.volume) for e in events if isinstance(e, DailyStatistics)] == [(6000, 10)]
    engine.check()
