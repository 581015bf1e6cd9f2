"""The web portal's REST API and the queries under it: the queries on a small exchange
fed through a real gateway core (trades, a day's end, futures, blocks, auctions, a
compliance year), then the API served over HTTP on a free loopback port: logins (401),
other accounts' data (403), unknown names (404), bad query values (422), each endpoint
the same as its query, and schemathesis over every endpoint against the server's own
OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from markets import open_market

from exchange import Deposit, Engine, IssueAllowances
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import OPS_COMMANDS
from gateway.tools.replay import holding_rows, margin_rows, position_rows
from gateway.web import queries
from gateway.web.api import make_router
from gateway.web.auth import Credentials
from gateway.web.server import WebPortal, serve_web
from gateway.web.view import MarketView
from exchange.commands import ComplianceDeadline
from exchange.compliance.registry import deadline_ns

PASSWORDS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "operator": "pw-op"}
OPERATOR = ("operator", "pw-op")
ALICE = ("alice", "pw-a")
BOB = ("bob", "pw-b")
YEAR = time.gmtime().tm_year  # a compliance year whose deadline is always ahead


def make_portal(core: GatewayCore) -> Any:
    """The real ``WebPortal`` once the pages exist; until then one with the API alone."""
    if importlib.util.find_spec("gateway.web.pages") is not None:
        return WebPortal(core, PASSWORDS)
    view = MarketView(core.engine)
    core.watchers.append(view.on_events)
    portal = SimpleNamespace(core=core, view=view, credentials=Credentials(PASSWORDS))
    portal.app = FastAPI(title="carbonx", openapi_url="/api/v1/openapi.json")
    portal.app.include_router(make_router(portal))  # type: ignore[arg-type]
    return portal


class Exchange:
    """A gateway core fed like the real one, with a portal watching it from the start."""

    def __init__(self) -> None:
        engine = Engine(open_market(), ledger=True)
        for account in ("alice", "bob"):
            engine.execute(Deposit(account=account, currency="CNY", amount="100000000.00"))
        engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=900_000))
        engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=1_000))
        self.core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
        self.engine = engine
        self.portal = make_portal(self.core)
        self.view: MarketView = self.portal.view
        self.rejected: list[dict] = []

    def send(self, account: str, *commands: dict) -> None:
        self.core.receive(f"cx/v1/orders/{account}", json.dumps(list(commands)).encode(),
                          now=0.0)
        self.flush()

    def ops(self, *rows: dict) -> None:
        self.core.receive(OPS_COMMANDS, json.dumps(list(rows)).encode(), now=0.0)
        self.flush()

    def flush(self) -> None:
        for _, payload, *_ in self.core.flush(now=0.0):
            body = json.loads(payload)
            for report in body if isinstance(body, list) else [body]:
                if isinstance(report, dict) and report.get("report") == "rejected":
                    self.rejected.append(report)


def new(order_id: str, side: str, price: str, qty: int, instrument: str = "CEA25",
        **extra: Any) -> dict:
    return {"action": "new", "order_id": order_id, "instrument": instrument, "side": side,
            "price": price, "qty": qty, **extra}


def build() -> Exchange:
    """Day one: a listing trade on CEA25 and one on a future, then the end of the day;
    day two: another trade, an iceberg and a stop resting, public and directed blocks,
    an auction cleared and one open, a halt and a compliance year assessed."""
    x = Exchange()
    x.send("alice", new("s1", "sell", "60.00", 100), new("f1", "sell", "62.00", 5, "CEA-DEC27"))
    x.send("bob", new("b1", "buy", "60.00", 40), new("g1", "buy", "62.00", 3, "CEA-DEC27"))
    x.ops({"action": "eod"})
    x.send("alice", new("s2", "sell", "60.50", 200), new("s3", "sell", "61.00", 300,
                                                         display_qty=50))
    x.send("bob", new("b2", "buy", "60.50", 20), new("b3", "buy", "59.00", 70),
           new("b4", "sell", "55.00", 10, type="stop_limit", stop_price="55.50"))
    x.send("alice", {"action": "block", "order_id": "p1", "instrument": "CEA25", "side": "sell",
                     "price": "61.00", "qty": 100_000},
           {"action": "block", "order_id": "p2", "instrument": "CEA25", "side": "sell",
            "price": "60.00", "qty": 100_000, "to_account": "bob"},
           {"action": "block", "order_id": "p3", "instrument": "CEA25", "side": "sell",
            "price": "59.00", "qty": 100_000})
    x.send("bob", {"action": "block_accept", "order_id": "p2", "to_account": "alice"})
    x.send("alice", {"action": "auction_open", "auction": "A1", "instrument": "CEA25",
                     "side": "sell", "qty": 100_000, "price": "59.00"},
           {"action": "auction_open", "auction": "A2", "instrument": "CEA25", "side": "sell",
            "qty": 100_000, "price": "58.00"})
    x.send("bob", {"action": "auction_bid", "auction": "A1", "order_id": "x1", "qty": 100_000,
                   "price": "59.50"},
           {"action": "auction_bid", "auction": "A2", "order_id": "x2", "qty": 100_000,
            "price": "58.20"})
    x.ops({"action": "auction_close", "auction": "A1"}, {"action": "halt", "instrument": "CEA24"},
          {"action": "allocate", "account": "alice", "instrument": "CEA25", "year": 2025,
           "qty": 400, "stage": "pre"},
          {"action": "emissions", "account": "alice", "year": YEAR, "qty": 500,
           "verifier": "CQC"},
          {"action": "emissions", "account": "bob", "year": YEAR, "qty": 100},
          {"action": "emissions", "account": "bob", "year": YEAR + 1, "qty": 80})
    x.send("alice", {"action": "surrender", "instrument": "CEA25", "qty": 300, "year": YEAR})
    x.send("bob", {"action": "surrender", "instrument": "CEA25", "qty": 100, "year": YEAR})
    # The year's deadline is ahead (its surrenders were in time), and the gateway stamps
    # an operator's row with its clock, so a deadline row would be refused
    # deadline_not_passed: the engine assesses the year as at its deadline instead.
    x.engine.execute(ComplianceDeadline(year=YEAR, price="60.00",
                                        ts=deadline_ns(YEAR, x.engine.ledger.registry.schedule)))
    x.flush()
    return x


@pytest.fixture(scope="module")
def exchange() -> Exchange:
    x = build()
    assert x.rejected == []
    return x


# --- the queries ---------------------------------------------------------------------------------
def test_instruments_give_rules_and_state(exchange):
    rows = {row["symbol"]: row for row in queries.instruments(exchange.engine)}
    assert list(rows) == list(exchange.engine.market.instruments)
    cea = rows["CEA25"]
    assert cea | {"reference_price": None} == {
        "symbol": "CEA25", "kind": "spot", "currency": "CNY", "tick": "0.01", "qty_step": 1,
        "min_qty": 1, "max_qty": 99_999, "band": "0.10", "reference_price": None,
        "band_low": "54.00", "band_high": "66.00", "vintage": 2025, "offset": False,
        "contract_size": 1, "underlying": None, "contract_month": None,
        "last_trading_day": None, "strike": None, "option_type": None, "halted": False}
    assert cea["reference_price"] == "60.00"  # the first day's close
    assert rows["CEA24"]["halted"] and rows["CCER"]["offset"]
    assert rows["CEA24"]["band_low"] is None  # no reference yet, no band
    future = rows["CEA-DEC27"]
    assert (future["kind"], future["underlying"], future["contract_month"]) == (
        "future", "CEA25", "2027-12")
    assert future["last_trading_day"].startswith("2027-12-") and future["band"] is None
    assert (rows["CEA-DEC26-C85"]["strike"], rows["CEA-DEC26-C85"]["option_type"]) == (
        "85.00", "call")
    assert queries.halts(exchange.engine) == ["CEA24"]


def test_book_is_best_first_with_displayed_quantities(exchange):
    book = queries.book(exchange.engine, "CEA25", 10)
    assert book["instrument"] == "CEA25" and book["seq"] == exchange.engine.seq
    assert book["bids"] == [["59.00", 70, 1]]
    assert book["asks"] == [["60.00", 40, 1], ["60.50", 200, 1], ["61.00", 50, 1]]
    assert queries.book(exchange.engine, "CEA25", 1)["asks"] == [["60.00", 40, 1]]
    assert queries.book(exchange.engine, "CCER")["bids"] == []
    with pytest.raises(KeyError):
        queries.book(exchange.engine, "NOPE")


def test_holdings_positions_and_margin_are_the_replay_rows(exchange):
    engine = exchange.engine
    for account in ("alice", "bob", "@registry"):
        mine = queries.holdings(engine, account)
        assert mine and mine == [r for r in holding_rows(engine) if r["account"] == account]
        assert queries.positions(engine, account) == [
            r for r in position_rows(engine) if r["account"] == account]
    assert [(r["instrument"], r["qty"]) for r in queries.positions(engine, "bob")] == [
        ("CEA-DEC27", 3)]
    margin = queries.margin(engine, "alice")
    assert margin == next(r for r in margin_rows(engine) if r["account"] == "alice")
    assert margin["initial"] == "24000.00" and margin["margin_call"] is False
    assert queries.margin(engine, "carol") == {} and queries.holdings(engine, "carol") == []
    assert queries.positions(engine, "@registry") == []


def test_what_is_open_away_from_the_book_accounts_for_what_is_held(exchange):
    """A back office could not tell what held an account's allowances beyond its open
    orders: blocks it posted, auctions it opened and its bids were nowhere to be read."""
    engine = exchange.engine
    alice = queries.away_orders(engine, "alice")
    assert [(r["mode"], r["order_id"], r["price"], r["qty"], r["to_account"], r["auction"])
            for r in alice] == [("block", "p1", "61.00", 100_000, None, None),
                                ("block", "p3", "59.00", 100_000, None, None),
                                ("auction", "A2", "58.00", 100_000, None, "A2")]
    assert {r["side"] for r in alice} == {"sell"}
    bob = queries.away_orders(engine, "bob")
    assert [(r["mode"], r["order_id"], r["side"], r["price"], r["qty"], r["auction"])
            for r in bob] == [("bid", "x2", "buy", "58.20", 100_000, "A2")]
    assert queries.away_orders(engine, "carol") == []
    # with the open orders, it is all that holds alice's allowances
    [held] = [r["held"] for r in queries.holdings(engine, "alice") if r["asset"] == "CEA25"]
    selling = [r for r in queries.open_orders(engine, "alice") + alice
               if r["instrument"] == "CEA25" and r["side"] == "sell"]
    assert held == sum(r["qty"] for r in selling) > 300_000


def test_a_pledge_shows_to_both_parties_and_in_the_pledgors_holdings():
    """A lender (the pledgee) and the borrower see the pledge in force, and the borrower's
    holdings show the units pledged, not available; a third account sees none of it."""
    x = Exchange.__new__(Exchange)  # the API alone: a second portal's pages would be global
    x.engine = Engine(open_market(), ledger=True)
    x.engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=900_000))
    x.engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=1_000))
    x.core = GatewayCore(x.engine, settings=GatewaySettings(book_interval=0))
    x.rejected = []
    portal = SimpleNamespace(core=x.core, view=MarketView(x.engine),
                             credentials=Credentials(PASSWORDS), app=FastAPI())
    portal.app.include_router(make_router(portal))  # type: ignore[arg-type]
    x.ops({"action": "pledge", "order_id": "L1", "account": "alice", "to_account": "bob",
           "instrument": "CEA25", "qty": 250_000})
    assert x.rejected == []
    row = {"pledge_id": "L1", "account": "alice", "to_account": "bob", "instrument": "CEA25",
           "qty": 250_000}
    [cea] = [r for r in queries.holdings(x.engine, "alice") if r["asset"] == "CEA25"]
    assert (cea["available"], cea["pledged"]) == (650_000, 250_000)

    async def ask(path: str, login: tuple[str, str]) -> Any:
        transport = httpx.ASGITransport(app=portal.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            answer = await http.get("/api/v1/accounts/" + path, auth=login)
        return answer.json() if answer.status_code == 200 else answer.status_code

    assert asyncio.run(ask("alice/pledges", ALICE)) == [{**row, "role": "pledgor"}]
    assert asyncio.run(ask("bob/pledges", BOB)) == [{**row, "role": "pledgee"}]
    assert asyncio.run(ask("alice/pledges", BOB)) == 403
    assert asyncio.run(ask("carol/pledges", ("carol", "pw-c"))) == []
    [held] = [r for r in asyncio.run(ask("alice/holdings", ALICE)) if r["asset"] == "CEA25"]
    assert (held["available"], held["pledged"]) == (650_000, 250_000)
    x.ops({"action": "pledge_release", "order_id": "L1", "account": "alice"})
    assert x.rejected == []
    assert asyncio.run(ask("bob/pledges", BOB)) == []
    [cea] = [r for r in queries.holdings(x.engine, "alice") if r["asset"] == "CEA25"]
    assert (cea["available"], cea["pledged"]) == (900_000, 0)


def test_open_orders_by_the_accounts_own_ids(exchange):
    alice = queries.open_orders(exchange.engine, "alice")
    assert [(o["order_id"], o["instrument"], o["price"], o["qty"], o["shown"])
            for o in alice] == [("s1", "CEA25", "60.00", 40, 40),
                                ("f1", "CEA-DEC27", "62.00", 2, 2),
                                ("s2", "CEA25", "60.50", 200, 200),
                                ("s3", "CEA25", "61.00", 300, 50)]
    assert alice[0] | {"seq": 0} == {
        "order_id": "s1", "instrument": "CEA25", "side": "sell", "type": "limit", "tif": "gtc",
        "price": "60.00", "stop_price": None, "qty": 40, "shown": 40, "seq": 0}
    bob = {o["order_id"]: o for o in queries.open_orders(exchange.engine, "bob")}
    assert list(bob) == ["b3", "b4"]
    assert (bob["b4"]["type"], bob["b4"]["price"], bob["b4"]["stop_price"]) == (
        "stop_limit", "55.00", "55.50")
    assert queries.open_orders(exchange.engine, "carol") == []


def test_compliance_years_of_an_account(exchange):
    alice = queries.compliance(exchange.engine, "alice")
    assert [row["year"] for row in alice] == sorted({2025, YEAR})
    if YEAR != 2025:  # the allocation's year alone
        assert alice[0] == {
            "year": 2025, "deadline": "2026-12-31", "obligation": None, "quality": None,
            "verifier": None, "allocated": 400, "deducted": 0, "to_deduct": 0, "surrendered": 0,
            "ccer": 0,
            "outstanding": 0, "shortfall": None, "fine": None, "status": None}
    assert alice[-1] == {
        "year": YEAR, "deadline": f"{YEAR + 1}-12-31", "obligation": 500, "quality": "measured",
        "verifier": "CQC", "allocated": 400 if YEAR == 2025 else 0, "deducted": 0,
        "to_deduct": 0, "surrendered": 300, "ccer": 0, "outstanding": 200, "shortfall": 200,
        "fine": "60000.00", "status": "short"}  # 200 t x 60.00 x 5
    bob = queries.compliance(exchange.engine, "bob")
    assert [(r["year"], r["status"], r["fine"], r["outstanding"]) for r in bob] == [
        (YEAR, "compliant", "0.00", 0), (YEAR + 1, None, None, 80)]
    assert queries.compliance(exchange.engine, "carol") == []


def test_a_shortfall_assessed_after_the_next_years_allocation_shows_until_deducted():
    """Last year's shortfall is deducted by the next allocate row for the year; when that
    year's final allocation came before the deadline, it was recorded and shown nowhere
    (deducted 0), while the entity kept the allowances."""
    from exchange import default_market
    from exchange.orderfile import parse_order_text

    rows = """action,account,instrument,qty,year,stage,ts,price
open_account,cement,,,,,,
allocate,cement,CEA24,350000,2024,pre,1717200000000000000,
emissions,cement,,500000,2024,,1717200000000000001,
allocate,cement,CEA24,480000,2024,final,1717200000000000002,
surrender,cement,CEA24,480000,2024,,1717200000000000003,
allocate,cement,CEA25,350000,2025,pre,1740000000000000000,
emissions,cement,,450000,2025,,1740000000000000001,
allocate,cement,CEA25,440000,2025,final,1772323200000000000,
deadline,,,,2024,,1773100800000000000,98.00
"""
    engine = Engine(default_market(), ledger=True)
    for command in parse_order_text(rows.encode()):
        [result, *_] = engine.execute(command)
        assert type(result).__name__ != "CommandRejected", result
    [row] = [r for r in queries.compliance(engine, "cement") if r["year"] == 2025]
    assert (row["allocated"], row["deducted"], row["to_deduct"]) == (440_000, 0, 20_000)
    [entity] = queries.registry_year(engine, 2025)["entities"]
    assert entity["to_deduct"] == 20_000
    # The authority sends the year's allocation again: the shortfall is clawed back.
    [again] = parse_order_text(b"action,account,instrument,qty,year,stage,ts\n"
                               b"allocate,cement,CEA25,440000,2025,final,1773100800000000001\n")
    engine.execute(again)
    [row] = [r for r in queries.compliance(engine, "cement") if r["year"] == 2025]
    assert (row["allocated"], row["deducted"], row["to_deduct"]) == (420_000, 20_000, 0)
    [held] = [r for r in queries.holdings(engine, "cement") if r["asset"] == "CEA25"]
    assert held["available"] == 420_000


def test_registry_year_rows_and_totals(exchange):
    engine = exchange.engine
    assert set(queries.compliance_years(engine)) == {2025, YEAR, YEAR + 1}
    year = queries.registry_year(engine, YEAR)
    assert (year["year"], year["assessed"], year["currency"]) == (YEAR, True, "CNY")
    assert [(e["account"], e["sector"], e["status"], e["shortfall"]) for e in year["entities"]] == [
        ("alice", None, "short", 200), ("bob", None, "compliant", 0)]
    assert year["totals"] == {
        "entities": 2, "short": 1, "obligation": 600, "allocated": 400 if YEAR == 2025 else 0,
        "surrendered": 400, "ccer": 0, "outstanding": 200, "shortfall": 200,
        "fine": "60000.00"}
    later = queries.registry_year(engine, YEAR + 1)
    assert not later["assessed"] and later["totals"]["fine"] is None
    assert later["totals"]["outstanding"] == 80
    with pytest.raises(KeyError):
        queries.registry_year(engine, 1999)


def test_accounts_with_limits_and_exposure(exchange):
    rows = {row["account"]: row for row in queries.accounts(exchange.engine)}
    assert {"alice", "bob", "@registry"} <= set(rows)
    alice = rows["alice"]
    assert (alice["kind"], alice["status"], alice["position_limit"]) == (
        "covered", "open", 1_000_400)  # its latest allocation on top of the covered limit
    ledger = exchange.engine.ledger
    assert alice["exposure"] == ledger.exposure(ledger.accounts["alice"]) > 0
    assert rows["@registry"]["position_limit"] is None


def test_history_from_the_view(exchange):
    view = exchange.view
    trades = queries.trades(view, "CEA25", 100)
    assert [(t["price"], t["qty"], t["mode"]) for t in trades] == [
        ("59.50", 100_000, "auction"), ("60.00", 100_000, "block"), ("60.00", 20, "listing"),
        ("60.00", 40, "listing")]
    assert set(trades[0]) == {"seq", "trade_id", "ts", "instrument", "price", "qty",
                              "aggressor", "mode"}  # no accounts, no order ids
    assert queries.trades(view, "CEA25", 1) == trades[:1]
    fills = queries.fills(view, "bob", 10)
    assert [(f["order_id"], f["side"], f["liquidity"], f["mode"]) for f in fills] == [
        ("x1", "buy", "taker", "auction"), ("p2", "buy", "taker", "block"),
        ("b2", "buy", "taker", "listing"), ("g1", "buy", "taker", "listing"),
        ("b1", "buy", "taker", "listing")]
    assert [f["order_id"] for f in queries.fills(view, "alice", 2)] == ["A1", "p2"]
    assert queries.fills(view, "carol", 10) == []
    candles = queries.candles(view, "CEA25", 86_400, 10)
    assert sum(c["volume"] for c in candles) == 60  # the listing's, not blocks or auctions
    assert {c["high"] for c in candles} == {"60.00"}
    [day] = queries.daily(view, "CEA25")
    assert (day["day"], day["open"], day["close"], day["volume"], day["turnover"]) == (
        1, "60.00", "60.00", 40, "2400.00")
    assert queries.daily(view, "CCER") == []  # nothing traded, no statistics
    assert [(b["order_id"], b["account"], b["price"], b["status"])
            for b in queries.open_blocks(view)] == [("p1", "alice", "61.00", "open"),
                                                    ("p3", "alice", "59.00", "open")]
    [auction] = queries.open_auctions(view)
    assert (auction["auction"], auction["reserve"], auction["bids"], auction["status"]) == (
        "A2", "58.00", 1, "open")
    [cleared] = queries.cleared_auctions(view)
    assert (cleared["auction"], cleared["status"], cleared["price"], cleared["qty"]) == (
        "A1", "cleared", "59.50", 100_000)
    for bad in (lambda: queries.trades(view, "NOPE"), lambda: queries.daily(view, "NOPE"),
                lambda: queries.candles(view, "NOPE")):
        with pytest.raises(KeyError):
            bad()


# --- the API over HTTP ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(exchange) -> Iterator[str]:
    """The portal served by ``serve_web`` on a free loopback port, in a thread with its
    own event loop; its base URL."""
    with serving(exchange.portal, free_port()) as url:
        yield url


@contextlib.contextmanager
def serving(portal: Any, port: int) -> Iterator[str]:
    """*portal* served by ``serve_web`` on *port*, in a thread with its own event loop,
    while the block runs; its base URL."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        ready = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        task = asyncio.ensure_future(serve_web(portal, port=port, stop=stop, ready=ready))
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        started.set()
        waiting.cancel()
        await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # shown by the fixture, not lost in the thread
            state["error"] = error
            started.set()

    thread = threading.Thread(target=run, name="web-api-test", daemon=True)
    thread.start()
    assert started.wait(20), "the server did not start"
    assert "error" not in state, state.get("error")
    yield f"http://127.0.0.1:{port}"
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _no_login_budget(exchange) -> Iterator[None]:
    """The tests that check refusals (schemathesis among them) make more failed logins
    than the portal lets one address make in a minute: here the budget is lifted, but in
    the test of the budget itself."""
    credentials = exchange.portal.credentials
    credentials._failed.clear()
    credentials._failures = 1 << 30
    yield


ACCOUNT_PATHS = ("holdings", "pledges", "orders", "away", "fills", "positions", "margin",
                 "compliance")
MARKET_PATHS = ("/instruments", "/market/CEA25/book", "/market/CEA25/trades",
                "/market/CEA25/daily", "/market/CEA25/candles", "/blocks", "/auctions")
OPERATOR_PATHS = ("/accounts", f"/registry/{YEAR}", "/halts")
EVERY_PATH = (MARKET_PATHS + tuple(f"/accounts/alice/{p}" for p in ACCOUNT_PATHS)
              + OPERATOR_PATHS)


def test_no_or_wrong_credentials_are_401_with_the_challenge(http):
    headers: list[dict[str, str]] = [{}, {"Authorization": "Basic !!!"},
                                     {"Authorization": "Bearer x"}]
    for path in EVERY_PATH:
        for auth in (None, ("alice", "pw-b"), ("mallory", "pw-a"), ("gateway", "x")):
            response = http.get("/api/v1" + path, auth=auth)
            assert response.status_code == 401, (path, auth)
            assert response.headers["www-authenticate"] == 'Basic realm="carbonx"'
            assert response.json()["detail"]
        for header in headers:
            assert http.get("/api/v1" + path, headers=header).status_code == 401
    # the login is checked before anything else: no hint of what exists or is valid
    assert http.get("/api/v1/market/NOPE/book?levels=0").status_code == 401


def test_an_address_past_its_failed_logins_waits(http, exchange):
    """2,000 wrong logins took a second, all 401, none logged: guessing had no bound. Past
    the budget an address is answered 429 with Retry-After, its password unread (a right
    one too), until the window ends; missing credentials (a browser asking) do not count."""
    from gateway.web.auth import FAILURES_ALLOWED

    exchange.portal.credentials._failures = FAILURES_ALLOWED  # the portal's own budget
    for _ in range(FAILURES_ALLOWED + 5):
        assert http.get("/api/v1/instruments").status_code == 401  # no login: not counted
    for _ in range(FAILURES_ALLOWED):
        assert http.get("/api/v1/instruments", auth=("alice", "guess")).status_code == 401
    refused = http.get("/api/v1/instruments", auth=ALICE)
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
    page = http.get("/", auth=ALICE)
    assert page.status_code in (429, 404)  # the pages too, where they are served
    exchange.portal.credentials._failed.clear()  # the window over
    assert http.get("/api/v1/instruments", auth=ALICE).status_code == 200


def test_the_failed_login_window_ends():
    clock = [100.0]
    credentials = Credentials({"alice": "pw-a"}, failures=3, window=60, clock=lambda: clock[0])
    wrong = "Basic " + __import__("base64").b64encode(b"alice:nope").decode()
    for _ in range(3):
        assert credentials.user(wrong, "10.0.0.1") is None
    assert credentials.wait("10.0.0.1") == 60 and credentials.wait("10.0.0.2") == 0
    clock[0] += 59
    assert credentials.wait("10.0.0.1") == 1
    clock[0] += 1
    assert credentials.wait("10.0.0.1") == 0
    assert credentials.user(wrong, "10.0.0.1") is None  # a new window: one failure
    assert credentials.wait("10.0.0.1") == 0


def test_head_is_answered_as_get_without_the_body(http):
    """HEAD was 405 on every endpoint; a server answers HEAD wherever it answers GET,
    with GET's status and headers and no body."""
    for path in EVERY_PATH:
        got = http.get("/api/v1" + path, auth=OPERATOR)
        head = http.head("/api/v1" + path, auth=OPERATOR)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content)), path
    assert http.head("/api/v1/instruments").status_code == 401
    assert http.head("/api/v1/accounts/alice/holdings", auth=BOB).status_code == 403
    assert http.head("/api/v1/market/NOPE/book", auth=ALICE).status_code == 404
    assert http.post("/api/v1/instruments", auth=ALICE).status_code == 405  # still read-only


def test_another_accounts_data_and_the_operators_are_403(http):
    for path in ACCOUNT_PATHS:
        response = http.get(f"/api/v1/accounts/alice/{path}", auth=BOB)
        assert response.status_code == 403 and "bob" in response.json()["detail"]
        # whether the account exists or not: 403 tells nothing
        assert http.get(f"/api/v1/accounts/nobody/{path}", auth=BOB).status_code == 403
    for path in OPERATOR_PATHS:
        assert http.get("/api/v1" + path, auth=ALICE).status_code == 403
    # before its path is checked: an account learns nothing from a 422 either
    assert http.get("/api/v1/registry/twenty", auth=ALICE).status_code == 403


def test_unknown_names_are_404_with_a_message(http):
    for path in ("book", "trades", "daily", "candles"):
        response = http.get(f"/api/v1/market/NOPE/{path}", auth=ALICE)
        assert response.status_code == 404 and "NOPE" in response.json()["detail"]
    for path in ACCOUNT_PATHS:
        response = http.get(f"/api/v1/accounts/nobody/{path}", auth=OPERATOR)
        assert response.status_code == 404 and "nobody" in response.json()["detail"]
    assert http.get("/api/v1/registry/1999", auth=OPERATOR).status_code == 404
    assert http.get("/api/v1/nothing", auth=OPERATOR).status_code == 404
    # an account with a login but nothing in the ledger yet sees its empty rows
    assert http.get("/api/v1/accounts/carol/holdings", auth=("carol", "pw-c")).json() == []
    assert http.get("/api/v1/accounts/carol/margin", auth=("carol", "pw-c")).json() is None


@pytest.mark.parametrize("query", [
    "/market/CEA25/book?levels=0", "/market/CEA25/book?levels=51", "/market/CEA25/book?levels=x",
    "/market/CEA25/trades?limit=0", "/market/CEA25/trades?limit=1001",
    "/market/CEA25/candles?interval=0", "/market/CEA25/candles?interval=86401",
    "/market/CEA25/candles?limit=-1", "/accounts/alice/fills?limit=1e3",
    "/registry/twenty",
    # integers in decimal digits only: pydantic alone reads each of these as 2025 or 10
    "/registry/2025.0", "/registry/+2025", "/registry/2_025", "/registry/%202025",
    "/market/CEA25/book?levels=10.0", "/market/CEA25/trades?limit=1_0"])
def test_bad_query_values_are_422(http, query):
    response = http.get("/api/v1" + query, auth=OPERATOR)
    assert response.status_code == 422 and response.json()["detail"]


def test_each_endpoint_answers_its_query(http, exchange):
    engine, view = exchange.engine, exchange.view

    def get(path: str, auth: tuple[str, str] = ALICE) -> Any:
        response = http.get("/api/v1" + path, auth=auth)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        return response.json()

    assert get("/instruments") == queries.instruments(engine)
    assert get("/market/CEA25/book?levels=2") == queries.book(engine, "CEA25", 2)
    assert get("/market/CEA25/trades?limit=3") == queries.trades(view, "CEA25", 3)
    assert get("/market/CEA25/daily") == queries.daily(view, "CEA25")
    assert get("/market/CEA25/candles?interval=1&limit=5") == queries.candles(view, "CEA25", 1, 5)
    assert get("/blocks") == queries.open_blocks(view)
    assert get("/auctions") == {"open": queries.open_auctions(view),
                                "cleared": queries.cleared_auctions(view)}
    for account, auth in (("alice", ALICE), ("bob", BOB), ("alice", OPERATOR),
                          ("bob", OPERATOR)):
        holdings = get(f"/accounts/{account}/holdings", auth)
        assert holdings and holdings == [
            r for r in holding_rows(engine) if r["account"] == account]
        assert get(f"/accounts/{account}/orders", auth) == queries.open_orders(engine, account)
        assert get(f"/accounts/{account}/away", auth) == queries.away_orders(engine, account)
        assert get(f"/accounts/{account}/fills?limit=3", auth) == queries.fills(view, account, 3)
        assert get(f"/accounts/{account}/positions", auth) == queries.positions(engine, account)
        assert get(f"/accounts/{account}/margin", auth) == queries.margin(engine, account)
        assert get(f"/accounts/{account}/compliance", auth) == queries.compliance(engine,
                                                                                   account)
    # the operator sees every account, the registry and the halts
    assert get("/accounts/@registry/holdings", OPERATOR) == queries.holdings(engine, "@registry")
    every = {row["account"] for row in get("/accounts", OPERATOR)}
    assert every == {row["account"] for row in holding_rows(engine)} | set(engine.ledger.accounts)
    assert get("/accounts", OPERATOR) == queries.accounts(engine)
    assert get(f"/registry/{YEAR}", OPERATOR) == queries.registry_year(engine, YEAR)
    assert get("/halts", OPERATOR) == ["CEA24"]


def test_the_openapi_document_describes_every_endpoint(http):
    document = http.get("/api/v1/openapi.json").json()
    paths = {p for p in document["paths"] if p.startswith("/api/v1/")}
    assert paths == {
        "/api/v1/instruments", "/api/v1/market/{instrument}/book",
        "/api/v1/market/{instrument}/trades", "/api/v1/market/{instrument}/daily",
        "/api/v1/market/{instrument}/candles", "/api/v1/blocks", "/api/v1/auctions",
        "/api/v1/accounts", "/api/v1/registry/{year}", "/api/v1/halts",
        *(f"/api/v1/accounts/{{account}}/{p}" for p in ACCOUNT_PATHS)}
    assert document["components"]["securitySchemes"]["_Basic"]["scheme"] == "basic"
    for path in paths:
        operation = document["paths"][path]["get"]
        assert set(document["paths"][path]) == {"get"}  # read-only
        assert operation["description"] and operation["security"]
        assert {"200", "401"} <= set(operation["responses"]), path
        # 403 where a user may be refused another's data (never for market data)
        market = path.removeprefix("/api/v1") in MARKET_PATHS or "/market/" in path
        assert ("403" in operation["responses"]) is not market, path
        assert "$ref" in json.dumps(operation["responses"]["200"]) or path.endswith("halts")


def test_the_api_reference_page_needs_nothing_from_outside_the_gateway(http):
    """/api/v1/docs loaded Swagger UI from a CDN: without the internet it was blank."""
    import re

    page = http.get("/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"<script|<link|src=|@import|https?://", html), "loads from elsewhere"
    document = http.get("/api/v1/openapi.json").json()
    for path, operations in document["paths"].items():
        assert f'<span class="path">{path}</span>' in html, path
        for parameter in operations["get"].get("parameters", []):
            assert f"<code>{parameter['name']}</code>" in html
    assert "integer (from 1, to 1000)" in html  # a limit's bounds
    assert all(f"<code>{name}</code>" in html for name in document["components"]["schemas"])


# --- schemathesis over every endpoint -------------------------------------------------------------
@pytest.fixture(scope="module")
def api_schema(server):
    """The live server's document, the API's paths, called as the operator (schemathesis
    leaves the login out itself where it checks that a missing one is refused)."""
    return live_schema(server, OPERATOR)


@pytest.fixture(scope="module")
def account_schema(server):
    """The same, called as an account: the operator's endpoints and others' data are 403."""
    return live_schema(server, ALICE)


def live_schema(server: str, login: tuple[str, str]) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server}/api/v1/openapi.json")
    loaded.config.update(basic_auth=login)
    return loaded.include(path_regex=r"^/api/v1/")


schema = schemathesis.pytest.from_fixture("api_schema")
as_account = schemathesis.pytest.from_fixture("account_schema")


@pytest.fixture
def node_id(request):
    """schemathesis 4.32's lazy schema reads ``request.node._nodeid``, which pytest 9 no
    longer has: give it the node's id."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.usefixtures("node_id")
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint_keeps_to_its_schema(case):
    response = case.call_and_validate()
    assert response.status_code < 500


@pytest.mark.usefixtures("node_id")
@as_account.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint_keeps_to_its_schema_for_an_account(case):
    response = case.call_and_validate()
    assert response.status_code < 500


def _raw(server: str, data: bytes, *, pause: float = 0.0) -> bytes:
    """Send *data* on a new connection to *server* (after *pause*, read what comes back
    until the server closes it; a reset ends it too)."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        got = b""
        try:
            for start in range(0, len(data), 65536):
                conn.sendall(data[start:start + 65536])
            time.sleep(pause)
            while chunk := conn.recv(65536):
                got += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return got


def test_a_request_head_too_large_is_refused_at_once(server, http):
    """One header line of 100 MB stalled the exchange's event loop, shared with trading,
    for 14 s; the head is now refused past 64 KiB, and the portal goes on."""
    started = time.monotonic()
    answer = _raw(server, b"GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\nX-Big: "
                  + b"a" * 2_000_000)
    assert answer.startswith(b"HTTP/1.1 431 ") and time.monotonic() - started < 3
    assert http.get("/api/v1/instruments", auth=("alice", "pw-a")).status_code == 200


def test_a_head_that_does_not_come_whole_in_time_is_closed(server, monkeypatch):
    """Slow heads held their sockets for good: 240 of them and no bot could connect."""
    import gateway.web.server as web_server

    monkeypatch.setattr(web_server, "HEAD_TIMEOUT_S", 0.3)
    started = time.monotonic()
    assert _raw(server, b"GET /api/v1/instruments HTTP/1.1\r\nHost:") == b""
    assert time.monotonic() - started < 3


def test_a_path_with_a_slash_too_many_is_404_not_a_redirect(http):
    """Starlette redirected it, before the login, to the Host header's own address."""
    answer = http.get("/api/v1/accounts/alice/holdings/", headers={"host": "evil.example"},
                      follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers


def test_the_portal_starts_again_at_once_on_the_port_it_served(exchange):
    """The portal's own first close of a connection leaves the port in TIME_WAIT, and
    its check that the port was free (a bind without SO_REUSEADDR) refused a restart for
    a minute: 'the web portal cannot listen ... Address already in use'."""
    port = free_port()
    with serving(exchange.portal, port) as url:
        answer = _raw(url, b"GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 ")
    with serving(exchange.portal, port) as url:
        assert httpx.get(f"{url}/api/v1/instruments", auth=ALICE).status_code == 200


# --- found walking the portal as its users would --------------------------------------------

def test_the_last_price_survives_a_restart_of_the_gateway():
    """A restarted exchange (its trades recovered into the engine, none seen by this
    gateway) showed "-" as the last price on the market page and marked holdings at the
    reference price, though the book and the day's open/high/low knew the last trade."""
    from exchange import PlaceOrder
    from gateway.web.pages import _Frames, _marked

    engine = Engine(open_market(), ledger=True)
    engine.execute(Deposit(account="bob", currency="CNY", amount="100000.00"))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=1_000))
    engine.execute(PlaceOrder(order_id="s1", account="alice", instrument="CEA25", side="sell",
                              qty=100, price="61.50"))
    engine.execute(PlaceOrder(order_id="b1", account="bob", instrument="CEA25", side="buy",
                              qty=100, price="61.50"))
    # As after a restart: the engine has the trade, the new gateway core never saw it.
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    portal = WebPortal(core, PASSWORDS)
    frame = _Frames(portal).get("CEA25", 60)
    assert frame.stats["open"] == "61.50"
    assert frame.stats["last"] == "61.50"
    rows, totals = _marked(portal, "bob")
    cea = next(row for row in rows if row["asset"] == "CEA25")
    assert cea["mark"] == "61.50 (last)" and cea["value"] == "6150.00"


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
def test_another_accounts_data_is_403_before_its_query_is_read(http, path):
    """alice asking for bob's fills with a bad limit was told 422, not 403."""
    answer = http.get(f"/api/v1/accounts/bob/{path}?limit=0", auth=ALICE)
    assert answer.status_code == 403
    assert http.get("/api/v1/accounts/alice/fills?limit=0", auth=ALICE).status_code == 422


@pytest.mark.parametrize("size", [70_000, 150_000, 250_000])
def test_a_head_over_the_limit_in_one_read_is_refused(server, size):
    """A head of up to 64 KiB plus one read (256 KiB) went through: a 100 KB header
    was served, a 66 KB URL answered 400, both documented 431."""
    answer = _raw(server, b"GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\nX-Big: "
                  + b"a" * size + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    answer = _raw(server, b"GET /api/v1/instruments?x=" + b"a" * size
                  + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_head_within_the_limit_followed_by_more_is_served(server):
    """A head in time, with the next request in the same read (the two past 64 KiB
    together, each within it): both answered."""
    head = (b"GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000
            + b"\r\n\r\n")
    answer = _raw(server, head + b"GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\nX-Pad: "
                  + b"b" * 40_000 + b"\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 401 ") == 2


def test_the_portal_shows_nothing_once_a_batch_could_not_be_made_durable():
    """A batch's fsync failed after it ran: the engine holds what the journal may not, so
    every page and API answer is 503 while the exchange stops."""
    from exchange import default_market
    from gateway.mqtt.service import GatewayCore

    core = GatewayCore(Engine(default_market()))
    portal = WebPortal(core, {"alice": "pw"})
    with serving(portal, free_port()) as url:
        login = ("alice", "pw")
        assert httpx.get(f"{url}/api/v1/instruments", auth=login, timeout=10).status_code == 200
        core._halted = True  # as flush sets it when the batch's fsync fails
        for path in ("/api/v1/instruments", "/", "/api/v1/market/CEA25/book"):
            answer = httpx.get(f"{url}{path}", auth=login, timeout=10)
            assert answer.status_code == 503 and "journal" in answer.text
