"""The web portal's logins and its view of the market's recent history: HTTP Basic with
the exchange's passwords (the gateway's own login refused, unknown users and bad headers
refused alike), and the view kept from a gateway's events (trades with their times, fills
by account, candles held equal to a plain reference, public blocks and auctions open)."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from markets import open_market

from exchange import Deposit, Engine, IssueAllowances
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.web.auth import Credentials
from gateway.web.view import Candle, MarketView, TradeRow


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_logins_are_the_exchanges_passwords_and_the_gateway_never_logs_in():
    logins = {"alice": "pw-a", "operator": "pw-op", "gateway": "pw-gw"}
    credentials = Credentials(logins)
    assert credentials.user(basic("alice", "pw-a")) == "alice"
    assert credentials.user(basic("operator", "pw-op")) == "operator"
    for header in (None, "", basic("alice", "pw-b"), basic("mallory", "pw-a"),
                   basic("gateway", "pw-gw"), "Basic !!!", "Bearer x", "Basic " +
                   base64.b64encode(b"no-colon").decode()):
        assert credentials.user(header) is None, header
    logins["carol"] = "pw-c"  # an account opened live got its login
    assert credentials.user(basic("carol", "pw-c")) == "carol"
    assert Credentials.may_see("operator", "alice") and Credentials.may_see("alice", "alice")
    assert not Credentials.may_see("bob", "alice")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["alice", "mallory", "gateway", "é", ""]), st.text(max_size=20))
def test_any_login_text_is_an_answer_never_an_error(user, password):
    """Any user and password, beyond ASCII too (an unknown user's was compared as text,
    which ``hmac.compare_digest`` refuses: the pages answered 500)."""
    credentials = Credentials({"alice": "pw-a", "é": "pässwort", "gateway": "pw-gw"})
    expected = user if (user, password) in (("alice", "pw-a"), ("é", "pässwort")) else None
    assert credentials.user(basic(user, password)) == expected


def naive_candles(rows: list[TradeRow], interval_s: int) -> list[Candle]:
    """Group the listing trades by interval, then take each group's first, highest,
    lowest and last price and its volume."""
    width = interval_s * 10**9
    groups: dict[int, list[TradeRow]] = {}
    for row in rows:
        if row.mode == "listing":
            groups.setdefault(row.ts // width * width, []).append(row)
    return [Candle(start, g[0].price, max(r.price for r in g), min(r.price for r in g),
                   g[-1].price, sum(r.qty for r in g)) for start, g in sorted(groups.items())]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(5_000, 7_000), st.integers(1, 50),
                          st.sampled_from(["listing", "listing", "block"])), max_size=60),
       st.sampled_from([1, 60, 3600]))
def test_candles_are_the_plain_grouping_of_the_trades(trades, interval_s):
    view = MarketView(Engine(open_market()))
    clock = 0
    for n, (step, price, qty, mode) in enumerate(trades, 1):
        clock += step
        view.trades["CEA25"].append(
            TradeRow(n, n, clock, "CEA25", price, qty, "buy", mode, "a", "b", "x", "y"))
    assert view.candles("CEA25", interval_s, limit=10_000) == naive_candles(
        list(view.trades["CEA25"]), interval_s)


def funded_gateway() -> tuple[GatewayCore, MarketView]:
    """A gateway's core over a ledger where bob has cash and alice allowances, with a
    view following its flushes."""
    engine = Engine(open_market(), ledger=True)
    engine.execute(Deposit(account="bob", currency="CNY", amount="10000000.00"))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=300_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    view = MarketView(engine)
    core.watchers.append(view.on_events)
    return core, view


def test_the_view_follows_the_gateways_flushes():
    core, view = funded_gateway()
    woken: list[int] = []
    stop = view.subscribe(lambda: woken.append(view.version))

    def send(account: str, command: dict) -> None:
        core.receive(f"cx/v1/orders/{account}", json.dumps(command).encode(), now=0.0)

    send("alice", {"action": "new", "order_id": "s1", "instrument": "CEA25", "side": "sell",
                   "price": "60.00", "qty": 100})
    send("bob", {"action": "new", "order_id": "b1", "instrument": "CEA25", "side": "buy",
                 "price": "60.00", "qty": 40})
    send("alice", {"action": "block", "order_id": "p1", "instrument": "CEA25", "side": "sell",
                   "price": "61.00", "qty": 100_000})
    core.flush(now=0.0)
    assert woken == [1]
    [trade] = view.recent_trades("CEA25")
    assert (trade.price, trade.qty, trade.buy_account, trade.mode) == (6000, 40, "bob", "listing")
    assert trade.ts > 0 and view.recent_fills("alice") == [trade] == view.recent_fills("bob")
    assert list(view.blocks) == ["alice/p1"]
    send("bob", {"action": "block_accept", "order_id": "p1", "to_account": "alice"})
    core.flush(now=0.0)
    assert view.blocks == {} and [t.mode for t in view.recent_trades("CEA25")] == ["block",
                                                                                  "listing"]
    assert view.candles("CEA25")[0].volume == 40  # blocks are not the listing's candles
    stop()
    send("bob", {"action": "cancel", "order_id": "nothing"})
    core.flush(now=0.0)
    assert woken == [1, 2] and view.version == 3


def test_a_trade_with_itself_is_two_fills_of_the_account_as_on_mqtt():
    """With stp none an account may trade with itself: the API and the account page showed
    only its buy."""
    from gateway.web import queries

    core, view = funded_gateway()
    core.engine.execute(Deposit(account="alice", currency="CNY", amount="10000.00"))
    for command in ({"action": "new", "order_id": "a-sell", "instrument": "CEA25", "side": "sell",
                     "price": "61.40", "qty": 200},
                    {"action": "new", "order_id": "self1", "instrument": "CEA25", "side": "buy",
                     "price": "61.40", "qty": 50, "stp": "none"},
                    {"action": "new", "order_id": "b2", "instrument": "CEA25", "side": "buy",
                     "price": "61.40", "qty": 5}):
        core.receive(f"cx/v1/orders/{'bob' if command['order_id'] == 'b2' else 'alice'}",
                     json.dumps(command).encode(), now=0.0)
        core.flush(now=0.0)
    fills = [(f["trade_id"], f["side"], f["order_id"], f["liquidity"], f["qty"])
             for f in queries.fills(view, "alice")]
    assert fills == [(2, "sell", "a-sell", "maker", 5), (1, "buy", "self1", "taker", 50),
                     (1, "sell", "a-sell", "maker", 50)]
    assert [f["side"] for f in queries.fills(view, "bob")] == ["buy"]
    assert len(queries.fills(view, "alice", limit=2)) == 2


def test_the_market_is_busy_once_a_window_holds_the_busy_rate_and_calm_after():
    from gateway.web.view import BUSY_EVENTS, BUSY_WINDOW_NS

    view = MarketView(Engine(open_market()))
    at_rate = BUSY_EVENTS * BUSY_WINDOW_NS // 10**9  # events in a window at the busy rate
    start = 10**9
    view.on_events([], start)  # opens a window
    view.on_events([object()] * (at_rate - 1), start + 1)
    assert not view.busy  # one short of the rate
    view.on_events([], start + BUSY_WINDOW_NS)  # the window ends one short: calm
    assert not view.busy
    view.on_events([object()] * (at_rate - 1), start + BUSY_WINDOW_NS + 1)
    assert not view.busy
    view.on_events([object()], start + BUSY_WINDOW_NS + 2)
    assert view.busy  # at once, before its window has ended
    view.on_events([], start + 2 * BUSY_WINDOW_NS)
    assert view.busy  # the window just ended held the rate
    view.on_events([object()] * (10 * at_rate), start + 2 * BUSY_WINDOW_NS + 1)
    # No flush for more than a window after that one: the market has calmed down,
    # however busy its last window was.
    view.on_events([], start + 5 * BUSY_WINDOW_NS)
    assert not view.busy


def test_the_plain_tables_cells_are_escaped_and_whole_numbers_grouped():
    from gateway.web.pages import _cell

    assert _cell(1234567) == "1,234,567"
    assert _cell("60.00") == "60.00"
    assert _cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert _cell(None) == ""


def test_pages_of_one_instrument_share_a_frame_until_the_exchange_moves_on():
    from types import SimpleNamespace

    from gateway.web.pages import LADDER_COLUMNS, _Frames, table_html

    core, view = funded_gateway()
    frames = _Frames(SimpleNamespace(core=core, view=view))  # type: ignore[arg-type]

    def send(account: str, command: dict) -> None:
        core.receive(f"cx/v1/orders/{account}", json.dumps(command).encode(), now=0.0)
        core.flush(now=0.0)

    empty = frames.get("CEA25", 60)
    assert frames.get("CEA25", 60) is empty  # a second page: nothing made again
    assert empty.ladder == table_html(LADDER_COLUMNS, []) and empty.spread == "no orders"
    send("alice", {"action": "new", "order_id": "s1", "instrument": "CEA25", "side": "sell",
                   "price": "60.00", "qty": 100})
    rested = frames.get("CEA25", 60)
    assert rested is not empty and "60.00" in rested.ladder and rested.spread == "one side empty"
    assert frames.get("CEA25", 1) is not rested  # another interval, its own candles
    send("bob", {"action": "new", "order_id": "b1", "instrument": "CEA25", "side": "buy",
                 "price": "60.00", "qty": 40})
    traded = frames.get("CEA25", 60)
    assert traded.stats["last"] == "60.00" and traded.stats["volume"].startswith("40 ")
    assert traded.bars == [["60.00", "60.00", "60.00", "60.00"]] and "60.00" in traded.tape
    assert "<img" not in table_html(LADDER_COLUMNS, [{"price": "<img>"}])  # escaped


def test_a_page_draws_a_quiet_markets_news_soon_and_a_busy_markets_when_it_pauses():
    from gateway.web.pages import (BUSY_QUIET_S, BUSY_REFRESH_S, GATHER_S, REFRESH_S,
                                   next_drawing)

    # Quiet: the news is drawn GATHER_S after it came, at most every REFRESH_S.
    assert next_drawing(10.0, False, 10.0, 0.0, REFRESH_S) == 10.0 + GATHER_S
    assert next_drawing(10.0, False, 10.0, 9.99, REFRESH_S) == 9.99 + REFRESH_S
    # Busy, news every 10 ms from t = 10 s: each news moves the drawing on, until the
    # oldest news not drawn is BUSY_REFRESH_S old.
    dues = [next_drawing(10.0 + k / 100, True, 10.0, 0.0, REFRESH_S) for k in range(150)]
    assert dues[0] == 10.0 + BUSY_QUIET_S and dues[10] == 10.1 + BUSY_QUIET_S
    assert all(due <= 10.0 + BUSY_REFRESH_S for due in dues)
    assert dues[-1] == 10.0 + BUSY_REFRESH_S  # news all through: drawn once a second
    # The flood's last news at 10.3 s: drawn BUSY_QUIET_S after it, in the pause.
    assert next_drawing(10.3, True, 10.0, 0.0, REFRESH_S) == 10.3 + BUSY_QUIET_S
    # Never more often than every REFRESH_S, busy or not.
    assert next_drawing(10.3, True, 10.3, 10.28, REFRESH_S) == 10.28 + REFRESH_S


def test_an_auctions_bids_leave_the_view_when_it_clears():
    """Filled bids as unfilled ones: once their auction has cleared, the view keeps none
    of them (a long-lived portal's memory stays the size of what is open)."""
    core, view = funded_gateway()

    def send(topic: str, command: dict) -> None:
        core.receive(topic, json.dumps(command).encode(), now=0.0)
        core.flush(now=0.0)

    send("cx/v1/orders/alice", {"action": "auction_open", "auction": "A1",
                                "instrument": "CEA25", "side": "sell", "qty": 100_000,
                                "price": "59.00"})
    for n, price in enumerate(("59.50", "59.10", "58.00")):  # the last below the reserve
        send("cx/v1/orders/bob", {"action": "auction_bid", "auction": "A1", "order_id": f"x{n}",
                                  "price": price, "qty": 50_000})
    assert len(view.bid_of) == 2 and view.auction_bids == {"A1": 2}
    send("cx/v1/ops/commands", {"action": "auction_close", "auction": "A1"})
    [cleared] = view.cleared
    assert (cleared.auction, cleared.status, cleared.qty, cleared.filled_bids) == (
        "A1", "cleared", 100_000, 2)
    assert view.bid_of == {} and view.auctions == {} and view.auction_bids == {}
