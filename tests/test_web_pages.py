"""The live pages in a real browser (headless Chromium through Playwright): a trade driven
into the gateway's core the way the gateway does it shows on the market page's tape and
in the buyer's holdings without a reload, within a second of the flush; another account's
page is refused; the operator's registry page shows the short entities of a compliance
year run into the engine. Screenshots go to the test's ``tmp_path``; with
``CARBONX_SCREENSHOTS=1`` the market page's also to ``docs/images/market.png``."""

from __future__ import annotations

import asyncio
import logging
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from markets import open_market
from mosquitto import free_port

from exchange import Deposit, Engine, IssueAllowances
from exchange.commands import (AllocateAllowances, ComplianceDeadline, OpenAccount,
                               RecordEmissions, SurrenderAllowances)
from exchange.events import CommandRejected
from gateway.mqtt.service import GatewayCore, GatewaySettings

CHROMIUM = Path("/usr/bin/chromium")
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
LOGINS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "operator": "pw-op"}
LIVE_MS = 1000  # a flush's news is on the page within this
# Whether the candle chart's last bar (open, close, low, high) closes at the given price.
LAST_CLOSE_JS = """(price) => {
  const bars = getElement(document.querySelector('[data-testid=candles]')).chart
    .getOption().series[0].data;
  return bars.length > 0 && Number(bars[bars.length - 1][1]) === Number(price);
}"""


@dataclass
class Exchange:
    core: GatewayCore
    portal: Any
    url: str
    call: Callable[[Callable[[], Any]], Any]  # run a function on the server's loop

    def send(self, account: str, order: dict) -> None:
        """Queue *order* from *account* and flush, on the server's loop, as the gateway
        does with a message from the broker."""
        def step() -> None:
            self.core.receive(f"cx/v1/orders/{account}", json.dumps(order).encode(), now=0.0)
            self.core.flush(now=0.0)
        self.call(step)


def compliance_years(engine: Engine) -> None:
    """2024: steelco verified 120,000 t, allocated 100,000, surrenders them (short 20,000);
    powerco verified 80,000 t, allocated 90,000, surrenders 80,000; the deadline at the
    operator's price, 98.00 (no December trades to average). 2025, not assessed: steelco
    verified 110,000 t, pre-allocated 70,000 less last year's 20,000 short, surrenders
    40,000. Run before any command with the gateway's clock: the engine's clock is still
    1970's, before either deadline, whatever the day the test runs."""
    for command in (OpenAccount(account="steelco"), OpenAccount(account="powerco"),
                    RecordEmissions(account="steelco", year=2024, qty=120_000, verifier="CQC"),
                    RecordEmissions(account="powerco", year=2024, qty=80_000, verifier="CQC"),
                    AllocateAllowances(account="steelco", instrument="CEA24", year=2024,
                                       qty=100_000),
                    AllocateAllowances(account="powerco", instrument="CEA24", year=2024,
                                       qty=90_000),
                    SurrenderAllowances(account="steelco", instrument="CEA24", qty=100_000,
                                        year=2024),
                    SurrenderAllowances(account="powerco", instrument="CEA24", qty=80_000,
                                        year=2024),
                    ComplianceDeadline(year=2024, price="98.00"),
                    RecordEmissions(account="steelco", year=2025, qty=110_000),
                    AllocateAllowances(account="steelco", instrument="CEA25", year=2025,
                                       qty=70_000, stage="pre"),
                    SurrenderAllowances(account="steelco", instrument="CEA25", qty=40_000,
                                        year=2025)):
        result = engine.execute(command)[0]
        assert type(result) is not CommandRejected, result


@pytest.fixture(scope="module")
def exchange() -> Iterator[Exchange]:
    from gateway.web.server import WebPortal, serve_web

    engine = Engine(open_market(), ledger=True)
    engine.execute(Deposit(account="alice", currency="CNY", amount="1000000.00"))
    engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=10_000))
    engine.execute(Deposit(account=ODD_NAME, currency="CNY", amount="1.00"))  # see the picker
    compliance_years(engine)
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    portal = WebPortal(core, LOGINS)
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    failed: list[BaseException] = []

    async def serve() -> None:
        ready = asyncio.Event()
        ready_wait = asyncio.ensure_future(ready.wait())
        task = asyncio.ensure_future(serve_web(portal, port=port, stop=stop, ready=ready))
        await asyncio.wait([task, ready_wait], return_when=asyncio.FIRST_COMPLETED)
        started.set()
        try:
            await task
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready_wait.cancel()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        rest = asyncio.all_tasks(loop)  # NiceGUI's and socket.io's own
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))

    thread = threading.Thread(target=run, name="web-portal", daemon=True)
    thread.start()
    assert started.wait(20), "the web portal did not start"
    assert not failed, failed

    def call(function: Callable[[], Any]) -> Any:
        async def on_loop() -> Any:
            return function()
        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(10)

    yield Exchange(core, portal, f"http://127.0.0.1:{port}", call)
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
    assert not thread.is_alive(), "the web portal did not stop"
    loop.close()


@pytest.fixture(autouse=True)
def _no_login_budget(exchange) -> Iterator[None]:
    """These tests make more failed logins than the portal lets one address make in a
    minute (tests/test_web_api.py tests the budget): here it is lifted."""
    credentials = exchange.portal.credentials
    credentials._failed.clear()
    credentials._failures = 1 << 30
    yield


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium to run the browser test"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


def login(browser: Any, user: str) -> Any:
    return browser.new_context(http_credentials={"username": user, "password": LOGINS[user]},
                               viewport={"width": 1400, "height": 900})


def open_live(context: Any, url: str) -> Any:
    """Open *url* and wait until its page listens (NiceGUI's websocket handshake)."""
    page = context.new_page()
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    page.wait_for_function("window.did_handshake === true", timeout=10_000)
    return page


def order(order_id: str, side: str, price: str, qty: int) -> dict:
    return {"action": "new", "order_id": order_id, "instrument": "CEA25", "side": side,
            "price": price, "qty": qty}


def test_a_trade_shows_on_the_tape_and_in_the_holdings_without_a_reload(exchange, browser,
                                                                          tmp_path):
    from playwright.sync_api import expect

    context = login(browser, "alice")
    market = open_live(context, f"{exchange.url}/market/CEA25")
    account = open_live(context, f"{exchange.url}/account")
    tape = market.get_by_test_id("tape")
    holdings = account.get_by_test_id("holdings")
    expect(tape).to_contain_text("No data available")
    expect(holdings).to_contain_text("CNY")
    expect(holdings).not_to_contain_text("CEA25")

    # bob offers first, so the ladder shows his ask before alice lifts it
    exchange.send("bob", order("s1", "sell", "60.00", 100))
    expect(market.get_by_test_id("ladder")).to_contain_text("60.00", timeout=LIVE_MS)
    exchange.send("alice", order("b1", "buy", "60.00", 100))
    trade = tape.locator("tbody tr").first
    expect(trade).to_contain_text("60.00", timeout=LIVE_MS)
    expect(trade).to_contain_text("100")
    expect(trade).to_contain_text("buy")
    expect(trade).to_contain_text("listing")
    cea25 = holdings.locator("tbody tr", has_text="CEA25")
    expect(cea25).to_have_count(1, timeout=LIVE_MS)
    expect(cea25).to_contain_text("100")  # bought today: locked until the next day (T+1)
    expect(market.get_by_test_id("stat-last")).to_have_text("60.00", timeout=LIVE_MS)
    expect(market.get_by_test_id("stat-volume")).to_have_text("100 t")
    expect(account.get_by_test_id("fills")).to_contain_text("taker", timeout=LIVE_MS)

    # more trades, a few seconds' candles of them, each seen live; then a book both ways
    prices = ("60.20", "60.10", "60.40", "60.30", "59.90", "60.00", "60.50", "60.20")
    for n, price in enumerate(prices, 2):
        exchange.send("bob", order(f"s{n}", "sell", price, 10 * n))
        exchange.send("alice", order(f"b{n}", "buy", price, 10 * n))
        expect(tape.locator("tbody tr").first).to_contain_text(price, timeout=LIVE_MS)
    # The chart follows the tape (drawn after it, at most once a second): its last candle
    # closes at the last trade's price.
    market.wait_for_function(LAST_CLOSE_JS, arg=prices[-1], timeout=5_000)
    for n, (side, price, qty) in enumerate((("sell", "60.30", 120), ("sell", "60.60", 400),
                                            ("buy", "59.80", 150), ("buy", "59.60", 600))):
        exchange.send("bob" if side == "sell" else "alice", order(f"r{n}", side, price, qty))
    expect(market.get_by_test_id("ladder").locator("tbody tr")).to_have_count(4,
                                                                              timeout=LIVE_MS)
    expect(market.get_by_test_id("stat-high")).to_have_text("60.50")
    expect(account.get_by_test_id("orders")).to_contain_text("59.60", timeout=LIVE_MS)
    market.bring_to_front()  # a page behind another draws (and takes clicks) slowly
    market.get_by_role("button", name="1 s", exact=True).click()  # candles a second each
    expect(market.locator("[data-testid=candles] canvas").first).to_be_visible()
    market.wait_for_timeout(300)  # the chart's last drawing
    market.screenshot(path=str(tmp_path / "market.png"), full_page=True)
    account.bring_to_front()
    account.screenshot(path=str(tmp_path / "account.png"), full_page=True)
    if os.environ.get("CARBONX_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "market.png", IMAGES / "market.png")
    context.close()


def test_an_account_sees_only_its_own_page(exchange, browser):
    context = login(browser, "bob")
    refused = context.new_page().goto(f"{exchange.url}/account/alice")
    assert refused is not None and refused.status == 403
    from playwright.sync_api import expect

    own = open_live(context, f"{exchange.url}/account/bob")
    # no block, auction or bid of bob's is open
    expect(own.get_by_test_id("away")).to_contain_text("No data available")
    context.close()
    for auth, status in ((None, 401), (("alice", "pw-b"), 401), (("bob", "pw-b"), 403)):
        answer = httpx.get(f"{exchange.url}/account/alice", auth=auth, timeout=5)
        assert answer.status_code == status, (auth, answer.status_code)
        assert "pw-" not in answer.text
        if status == 401:
            assert answer.headers["www-authenticate"] == 'Basic realm="carbonx"'
    for path in ("/", "/registry"):
        assert httpx.get(f"{exchange.url}{path}", timeout=5).status_code == 401


def test_the_registry_shows_the_short_entities(exchange, browser, tmp_path):
    from playwright.sync_api import expect

    context = login(browser, "operator")
    page = open_live(context, f"{exchange.url}/registry/2024")
    registry = page.get_by_test_id("registry")
    short = registry.locator("tbody tr").first  # the short ones first
    for text in ("steelco", "120,000", "100,000", "20,000", "9800000.00", "short"):
        expect(short).to_contain_text(text)  # fined 20,000 t x 98.00 x 5
    expect(registry.locator("tbody tr", has_text="powerco")).to_contain_text("compliant")
    expect(page.get_by_test_id("totals")).to_contain_text("2 entities, 1 short")
    expect(page.get_by_test_id("heading")).to_contain_text("2024: deadline 2025-12-31, assessed")
    page.screenshot(path=str(tmp_path / "registry.png"), full_page=True)
    latest = open_live(context, f"{exchange.url}/registry")  # the latest year, open
    expect(latest.get_by_test_id("heading")).to_contain_text("2025: deadline 2026-12-31")
    row = latest.get_by_test_id("registry").locator("tbody tr", has_text="steelco")
    for text in ("110,000", "50,000", "40,000", "70,000", "not assessed"):
        expect(row).to_contain_text(text)  # allocated 70,000 less 2024's 20,000 short
    context.close()

    entity = login(browser, "alice")
    own = open_live(entity, f"{exchange.url}/registry")
    expect(own.get_by_test_id("heading")).to_have_text("alice has no compliance obligation")
    expect(own.get_by_test_id("registry")).not_to_contain_text("steelco")
    assert own.goto(f"{exchange.url}/registry/2024").status == 403
    entity.close()


ODD_NAME = "a?b%41"  # an account name that a page address must quote


def test_the_operators_account_picker_opens_an_account_whatever_its_name(exchange, browser):
    """The picker went to /account/a?b%41 unquoted: the page said "no account 'a'"."""
    from playwright.sync_api import expect

    context = login(browser, "operator")
    page = open_live(context, f"{exchange.url}/account")
    page.get_by_test_id("account").click()
    page.get_by_role("option", name=ODD_NAME, exact=True).click()
    page.wait_for_url(f"{exchange.url}/account/a%3Fb%2541", timeout=10_000)
    expect(page.locator("header")).to_contain_text(f"Account: {ODD_NAME}")
    expect(page.get_by_test_id("holdings")).to_contain_text("1.00")
    context.close()


def test_answers_that_are_not_pages_keep_nothing_and_log_nothing(exchange, caplog):
    """Unknown paths, refusals and errors built a NiceGUI client that stayed a minute, and
    an unknown path logged its whole address: anyone could multiply both."""
    from nicegui.client import Client

    before = exchange.call(lambda: len(Client.instances))
    long = "A" * 8000
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            assert httpx.get(f"{exchange.url}/{long}", timeout=5).status_code == 404
            assert httpx.get(f"{exchange.url}/market/CEA25", timeout=5).status_code == 401
            assert httpx.get(f"{exchange.url}/registry/abc", timeout=5).status_code == 401
            assert httpx.get(f"{exchange.url}/account/alice", auth=("bob", "pw-b"),
                             timeout=5).status_code == 403
            assert httpx.get(f"{exchange.url}/registry/abc", auth=("operator", "pw-op"),
                             timeout=5).status_code == 404
            # NiceGUI's own prefix, but none of its assets: its HTML 404 kept a client
            assert httpx.get(f"{exchange.url}/_nicegui/{long}", timeout=5).status_code == 404
            # a login that is not ASCII: a 500 (and a client) before any password was read
            assert httpx.get(f"{exchange.url}/account", timeout=5, headers={
                "authorization": "Basic \u00e9\u00e9\u00e9".encode("latin-1")}).status_code == 401
    assert exchange.call(lambda: len(Client.instances)) <= before  # (earlier pages may go)
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert not [r for r in server if long[:100] in r.getMessage()]


def test_one_login_has_at_most_its_share_of_open_pages(exchange):
    """2,000 page loads by one login kept 2,000 clients live for a minute: orders waited
    up to 4.7 s and the gateway grew by 600 MB. A login may have 32 pages open."""
    from gateway.web.pages import PAGES_PER_LOGIN

    from nicegui.client import Client

    with httpx.Client(auth=("carol", "pw-c"), timeout=10) as carol:
        codes = [carol.get(f"{exchange.url}/market/CEA25").status_code
                 for _ in range(PAGES_PER_LOGIN + 5)]
        assert codes[:PAGES_PER_LOGIN] == [200] * PAGES_PER_LOGIN
        assert set(codes[PAGES_PER_LOGIN:]) == {429}
        refused = carol.get(f"{exchange.url}/")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        assert f"{PAGES_PER_LOGIN} pages open" in refused.text
        # another login is not held back by carol's pages
        assert httpx.get(f"{exchange.url}/", auth=("alice", "pw-a"),
                         timeout=10).status_code == 200
        # pages that never connected go (NiceGUI prunes them after a minute): room again
        exchange.call(lambda: Client.prune_instances(client_age_threshold=0))
        assert carol.get(f"{exchange.url}/").status_code == 200
    exchange.call(lambda: Client.prune_instances(client_age_threshold=0))


def test_a_page_closed_stops_listening(exchange, browser):
    """A page listens to the view while it is open; once its tab is closed and NiceGUI
    has deleted its client (3 s later, when it has not come back), no more."""
    listeners = exchange.portal.view._listeners
    before = list(listeners)
    context = login(browser, "alice")
    open_live(context, f"{exchange.url}/")
    mine = [listener for listener in listeners if listener not in before]
    assert len(mine) == 1
    context.close()
    deadline = time.monotonic() + 10
    while mine[0] in listeners and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mine[0] not in listeners
