"""The web portal's live pages (NiceGUI): the market, an account, the registry.

Every page is behind HTTP Basic with the exchange's passwords (``gateway.web.auth``): no
login or a wrong one is answered 401 with the challenge, so the browser asks for one.

Each page reads the exchange through ``gateway.web.queries`` (the engine's present state,
the ``MarketView``'s history), builds its elements once and then updates them in place:
it subscribes to the view, which calls it after every flush that brought events, and
re-renders ``GATHER_S`` after the news (so the news of flushes close together is drawn
once), at most once every ``REFRESH_S`` seconds (``ACCOUNT_REFRESH_S`` for an account
page, whose queries scan more), after the flush has returned, never inside it. While
the market is busy a page is drawn in its quiet moments (``BUSY_QUIET_S`` without news),
and at the latest ``BUSY_REFRESH_S`` after the oldest news it has not drawn; NiceGUI
pushes what changed to the browser over its websocket, so nothing reloads. A page stops
listening when its client is gone, and a page without its websocket is rendered again
only once it connects. Tables show at most a few dozen rows (``*_ROWS``).

Who sees what: the market page, any login; ``/account`` an account's own page (the
operator's: a picker), ``/account/{account}`` that account's and the operator's (403 for
another, whether or not it exists); ``/registry`` a covered entity's own compliance years
and, for the operator, one year of every entity (``/registry/{year}``, the operator's
only), the short first, with the year's totals (docs/web.md).

NiceGUI is one app per process: ``register_pages`` defines the pages for *portal* and
mounts NiceGUI on *app* at ``/``, leaving ``/api/`` to the REST API; a later call (another
portal in the same process, as the tests make) takes the pages over for its portal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from nicegui import __version__ as nicegui_version
from nicegui import core, ui
from nicegui.client import Client
from starlette.routing import Match, Mount
from starlette.types import Scope

from exchange.compliance.registry import deadline_ns
from exchange.market import format_cash
from gateway.web import queries
from gateway.web.auth import OPERATOR
from gateway.web.view import Portal

__all__ = ["register_pages"]

log = logging.getLogger("carbonx.web")

REFRESH_S = 0.1  # a market or registry page re-renders at most this often
ACCOUNT_REFRESH_S = 0.5  # an account page: its queries scan all holdings and live orders
# While the market is busy (MarketView.busy), a page's news waits at most this long: a
# page's drawing costs the browser and the gateway as much at 4,000 orders a second as
# at 40,000 (benchmarks/web.py: 20 pages at 0.25 s took more than a core and 56% of the
# gateway's throughput during a flood) ...
BUSY_REFRESH_S = 1.0
BUSY_QUIET_S = 0.05  # ... and is drawn sooner once this long has passed without news
CHART_REFRESH_S = 1.0  # the candle chart is redrawn at most this often
CHART_AFTER_S = 0.05  # ... and this long after the tape showed a new trade
GATHER_S = 0.025  # a page waits this long after news before it redraws
LADDER_LEVELS = 10  # depth levels a side
TAPE_ROWS = 30
CANDLES = 120
FILL_ROWS = 30
ORDER_ROWS = 50
REGISTRY_ROWS = 200
AWAY_ROWS = 20  # open public blocks, open auctions
INTERVALS = {1: "1 s", 10: "10 s", 60: "1 min", 300: "5 min", 3600: "1 h"}  # candles
REALM = 'Basic realm="carbonx"'
# Open pages, each a NiceGUI client the gateway's loop keeps live (one that never opens its
# websocket stays 60 s): at most this many a login, and in all, so that one viewer's
# page loads cannot hold the loop and its memory (2,000 loads by one login: orders waited
# up to 4.7 s, 96 -> 724 MB).
PAGES_PER_LOGIN = 32
PAGES_IN_ALL = 256
UP, DOWN = "#dc2626", "#16a34a"  # a rising candle red, a falling one green, as in China
API_PREFIX = "/api/"  # the REST API's (gateway.web.api), left to it

Row = dict[str, Any]


def _unauthorized() -> Response:
    return Response(status_code=401, headers={"WWW-Authenticate": REALM})


def _forbidden(why: str) -> Response:
    return PlainTextResponse(why, status_code=403)


def next_drawing(now: float, busy: bool, news_since: float, last: float, every: float) -> float:
    """When a page that has had news since *news_since*, and drew last at *last*, draws
    next (all in the event loop's time), at most once every *every* seconds.

    A quiet market's news is drawn GATHER_S after it came, so that the news that comes
    together (an order and the order that meets it, each its own flush) is drawn once
    (benchmarks/web.py, pairs). A busy market is drawn in its quiet moments: once
    BUSY_QUIET_S has passed without news, or when the oldest news not drawn is
    BUSY_REFRESH_S old, so that the page's drawing, here and in its browser, waits for the
    orders (benchmarks/web.py: drawn in the middle of a flood, twenty pages cost the
    gateway a tenth to a third of its throughput); each news moves it on."""
    if busy:
        return max(min(now + BUSY_QUIET_S, news_since + BUSY_REFRESH_S), last + every)
    return max(now + GATHER_S, last + every)


class _Live:
    """Re-render one client's page after the flushes that brought events: at most once
    every *every* seconds, from the event loop after the flush (the view calls its
    listeners inside the flush, on the gateway's loop), until the client is deleted. A
    page without its websocket (not yet connected, or gone and perhaps coming back) is
    not rendered until it connects. A render may return the seconds after which it wants
    to run again without news (a part of the page it held back)."""

    def __init__(self, portal: Portal, render: Callable[[], float | None], every: float) -> None:
        self.render = render
        self.every = every
        self.view = portal.view
        self.loop = asyncio.get_running_loop()
        self.handle: asyncio.TimerHandle | None = None
        self.last = 0.0
        self.news_since: float | None = None  # loop time of the oldest news not drawn
        self.news_last = 0.0  # ... and of the newest
        self.stale = False  # news came while the page had no websocket
        self.client: Client = ui.context.client
        stop = portal.view.subscribe(self.wake)
        self.client.on_connect(self.connected)
        self.client.on_delete(lambda: self.close(stop))

    def wake(self) -> None:
        now = self.news_last = self.loop.time()
        if self.news_since is None:
            self.news_since = now
        busy = self.view.busy
        due = next_drawing(now, busy, self.news_since, self.last, self.every)
        if self.handle is not None:
            if busy or self.handle.when() <= due:
                return  # (busy: the run moves itself on if news came meanwhile)
            self.handle.cancel()  # a held-back part's later run: the news goes first
        self.handle = self.loop.call_at(due, self.run)

    def connected(self) -> None:
        if self.stale:
            self.stale = False
            self.wake()

    def run(self) -> None:
        self.handle = None
        if self.view.busy and self.news_since is not None:
            due = next_drawing(self.news_last, True, self.news_since, self.last, self.every)
            if due > self.loop.time():  # news came since this run was set: not yet
                self.handle = self.loop.call_at(due, self.run)
                return
        if not self.client.has_socket_connection:
            self.stale = True
            return
        self.last = self.loop.time()
        self.news_since = None
        try:
            again = self.render()
        except Exception:
            log.exception("a live page could not be updated")
            return
        if again is not None and self.handle is None:
            self.handle = self.loop.call_later(again, self.run)

    def close(self, stop: Callable[[], None]) -> None:
        stop()
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


# --- layout helpers ------------------------------------------------------------------------------
def _header(user: str, title: str) -> None:
    with ui.header().classes("items-center bg-slate-800 text-white px-4 py-2 gap-6"):
        ui.label("carbonx").classes("text-lg font-bold")
        ui.link("Market", "/").classes("text-white")
        ui.link("Account", "/account").classes("text-white")
        ui.link("Registry", "/registry").classes("text-white")
        ui.label(title).classes("text-base ml-4")
        ui.space()
        ui.label(f"logged in as {user}").classes("text-sm opacity-80")


def _columns(*names: str) -> list[Row]:
    """Table columns: each ``"field"`` or ``"field:label"``; numbers aligned right, whole
    numbers (quantities) shown with thousands separators in the browser."""
    columns = []
    for name in names:
        field, _, label = name.partition(":")
        column = {"name": field, "field": field, "label": label or field}
        if field in _LEFT:
            column["align"] = "left"
        else:
            column.update({"align": "right", ":format": _THOUSANDS})
        columns.append(column)
    return columns


_LEFT = {"time", "instrument", "asset", "side", "aggressor", "mode", "order_id", "type", "tif",
         "account", "status", "liquidity", "auction", "pricing", "left", "year", "deadline",
         "pledge_id", "role", "to_account"}
_THOUSANDS = "v => Number.isInteger(v) ? v.toLocaleString('en-US') : v"


def _table(columns: list[Row], key: str, marker: str) -> ui.table:
    table = ui.table(columns=columns, rows=[], row_key=key).props("dense flat bordered")
    return table.classes("w-full").props(f"data-testid={marker}")


class _PlainTable:
    """A table drawn as plain HTML, for the market page's ladder and tape, which change
    with nearly every flush: a Quasar table cost the browser about 13 ms an update
    (benchmarks/web.py: 20 pages watching a flood took more than a core). The same
    columns as ``_columns``; the HTML comes from ``table_html``, once for every page that
    shows the same rows (``_MarketFrame``)."""

    def __init__(self, columns: list[Row], marker: str) -> None:
        self.content: str | None = None
        self.element = ui.html("", sanitize=False).classes("w-full cx-live").props(
            f"data-testid={marker}")
        self.set_html(table_html(columns, []))

    def set_html(self, content: str) -> bool:
        """Show *content*; return whether it changed what the table showed."""
        if content == self.content:
            return False
        self.content = content
        self.element.set_content(content)
        return True


def table_html(columns: list[Row], rows: list[Row]) -> str:
    """*rows* as an HTML table of *columns* (``_columns``); every cell is escaped here, so
    the HTML needs no sanitizer. The rows carry no classes: the page's stylesheet
    (``_STYLE``) lays them out, so the browser parses less for each update."""
    head = "".join(f'<th class="px-2 py-1 text-{c["align"]}">{escape(c["label"])}</th>'
                   for c in columns)
    cells = [(f'<td class="{c["align"][0]}">', c["field"]) for c in columns]
    body = "".join("<tr>" + "".join(f"{td}{_cell(row.get(field))}</td>" for td, field in cells)
                   + "</tr>" for row in rows)
    empty = "" if rows else '<div class="text-sm text-slate-500 p-2">No data available</div>'
    return (f'<table class="cx-table w-full text-sm border-collapse"><thead '
            f'class="text-xs text-slate-500 border-b"><tr>{head}</tr></thead><tbody>{body}'
            f"</tbody></table>{empty}")


# The live tables' rows, and containment: an update of the ladder or the tape lays out and
# paints that card alone, not the page (benchmarks/web.py, the renderers' layout time).
_STYLE = """
.cx-live { contain: content; }
.cx-table td { padding: 0.125rem 0.5rem; font-family: ui-monospace, monospace; }
.cx-table td.r { text-align: right; } .cx-table td.l { text-align: left; }
.cx-table tbody tr { border-bottom: 1px solid #f1f5f9; }
"""


def _cell(value: Any) -> str:
    """A cell's text: whole numbers with thousands separators, as the Quasar tables show
    them; nothing for a missing value; everything escaped."""
    if value is None:
        return ""
    if type(value) is int:
        return f"{value:,}"
    return escape(str(value))


def _set_rows(table: ui.table, rows: list[Row]) -> None:
    if table.rows != rows:
        table.rows = rows
        table.update()


def _card(title: str) -> ui.card:
    card = ui.card().classes("w-full p-3 gap-1")
    with card:
        ui.label(title).classes("text-sm font-bold text-slate-600")
    return card


def _clock(portal: Portal, ts: int, seconds: bool = True) -> str:
    """*ts* (ns) as the market's local time of day."""
    schedule = portal.core.engine.market.schedule
    local = ts // 10**9 + (0 if schedule is None else schedule.offset(ts))
    hours, rest = divmod(local % 86_400, 3600)
    text = f"{hours:02d}:{rest // 60:02d}"
    return f"{text}:{rest % 60:02d}" if seconds else text


def _zone(portal: Portal) -> str:
    schedule = portal.core.engine.market.schedule
    if schedule is None:
        return "UTC"
    offset = schedule.offset(time.time_ns())
    hours, seconds = divmod(abs(offset), 3600)
    return f"UTC{'+' if offset >= 0 else '-'}{hours:02d}:{seconds // 60:02d}"


def _default_symbol(portal: Portal) -> str:
    """The newest vintage of allowances (the market's first instrument without one)."""
    market = portal.core.engine.market
    vintages = [(inst.vintage, symbol) for symbol, inst in market.instruments.items()
                if inst.kind == "spot" and not inst.offset and inst.vintage is not None]
    return max(vintages)[1] if vintages else next(iter(market.instruments))


# --- the market page -----------------------------------------------------------------------------
def _candle_options() -> Row:
    axis = {"type": "category", "data": [], "boundaryGap": True,
            "axisLine": {"onZero": False}}
    return {
        "animation": False,
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "cross"}},
        "axisPointer": {"link": [{"xAxisIndex": "all"}]},
        "grid": [{"left": 56, "right": 16, "top": 16, "height": "58%"},
                 {"left": 56, "right": 16, "top": "78%", "height": "14%"}],
        "xAxis": [axis, {**axis, "gridIndex": 1, "axisLabel": {"show": False}}],
        "yAxis": [{"scale": True},
                  {"gridIndex": 1, "min": 0, "splitNumber": 2, "axisLabel": {"fontSize": 10}}],
        "series": [
            {"name": "price", "type": "candlestick", "data": [],
             "itemStyle": {"color": UP, "color0": DOWN, "borderColor": UP, "borderColor0": DOWN}},
            {"name": "volume", "type": "bar", "xAxisIndex": 1, "yAxisIndex": 1, "data": []},
        ],
    }


def _colours(candles: list[Row]) -> list[str]:
    """Each candle's colour as ECharts draws it: rising or falling from its open, or, when
    it closed at its open, from the close before."""
    colours, before = [], None
    for candle in candles:
        close, against = Decimal(candle["close"]), Decimal(candle["open"])
        if close == against and before is not None:
            against = before
        colours.append(DOWN if close < against else UP)
        before = close
    return colours


@dataclass(frozen=True, slots=True)
class _MarketFrame:
    """What every market page of one instrument (and candle interval) draws after one
    flush: computed once, however many pages watch (``_Frames``)."""

    ladder: str  # HTML
    spread: str
    tape: str  # HTML
    times: list[str]  # the candles' x axis
    bars: list[list[str]]  # open, close, low, high
    volumes: list[Row]
    stats: dict[str, str]
    status: str
    halted: str
    halts: bool
    blocks: list[Row]
    auctions: list[Row]


LADDER_COLUMNS = _columns("bid_orders:orders", "bid:bid qty", "price", "ask:ask qty",
                          "ask_orders:orders")
TAPE_COLUMNS = _columns("time", "price", "qty", "aggressor", "mode")


class _Frames:
    """The newest ``_MarketFrame`` of each instrument and interval, made again only when
    the exchange has moved on (the view's flushes, the engine's sequence): twenty pages
    watching one instrument query the book and build its HTML once a flush, not twenty
    times (benchmarks/web.py: the depth's sums were a third of a page's drawing)."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self._frames: dict[tuple[str, int], tuple[tuple[int, int], _MarketFrame]] = {}

    def get(self, symbol: str, interval: int) -> _MarketFrame:
        engine, view = self.portal.core.engine, self.portal.view
        stamp = (view.version, engine.seq)
        kept = self._frames.get((symbol, interval))
        if kept is not None and kept[0] == stamp:
            return kept[1]
        frame = self._make(symbol, interval)
        self._frames[(symbol, interval)] = (stamp, frame)
        return frame

    def _make(self, symbol: str, interval: int) -> _MarketFrame:
        portal = self.portal
        engine, view = portal.core.engine, portal.view
        inst = engine.market[symbol]
        depth = queries.book(engine, symbol, LADDER_LEVELS)
        rows = [{"price": p, "ask": q, "ask_orders": n} for p, q, n in depth["asks"][::-1]]
        rows += [{"price": p, "bid": q, "bid_orders": n} for p, q, n in depth["bids"]]
        if depth["bids"] and depth["asks"]:
            spread = f"spread {Decimal(depth['asks'][0][0]) - Decimal(depth['bids'][0][0])}"
        else:
            spread = "one side empty" if depth["bids"] or depth["asks"] else "no orders"
        tape = [{**t, "time": _clock(portal, t["ts"])}
                for t in queries.trades(view, symbol, TAPE_ROWS)]
        candles = queries.candles(view, symbol, interval, CANDLES)
        short = interval < 60
        book = engine.book(symbol)
        traded = book.day_volume > 0
        price = inst.tick.format
        stats = {name: price(value) if traded else "-"
                 for name, value in (("open", book.day_open), ("high", book.day_high),
                                     ("low", book.day_low))}
        # The book's own last price: recovered with the engine (the gateway's count of
        # trades starts empty at each start, and showed "-" after a restart).
        stats["last"] = "-" if book.last_price is None else price(book.last_price)
        stats["volume"] = f"{book.day_volume:,} {inst.unit}"
        reference = engine.reference_price(symbol)
        stats["reference"] = "-" if reference is None else price(reference)
        band = engine.price_band(symbol)
        stats["band"] = "none" if band is None else f"{price(band[0])} - {price(band[1])}"
        stopped = queries.halts(engine)
        return _MarketFrame(
            ladder=table_html(LADDER_COLUMNS, rows),
            spread=spread,
            tape=table_html(TAPE_COLUMNS, tape),
            times=[_clock(portal, c["start"], seconds=short) for c in candles],
            # Decimal strings, as everywhere at the edge: ECharts reads a numeric string as
            # its number.
            bars=[[c[k] for k in ("open", "close", "low", "high")] for c in candles],
            volumes=[{"value": c["volume"], "itemStyle": {"color": colour}}
                     for c, colour in zip(candles, _colours(candles))],
            stats=stats,
            status=f"{symbol}: {'halted' if symbol in stopped else 'trading'}",
            halted=f"halted: {', '.join(stopped)}" if stopped else "no instrument halted",
            halts=bool(stopped),
            blocks=queries.open_blocks(view)[:AWAY_ROWS],
            auctions=queries.open_auctions(view)[:AWAY_ROWS])


def _market_page(portal: Portal, frames: _Frames, user: str, symbol: str) -> None:
    market = portal.core.engine.market
    ui.add_css(_STYLE)
    ui.page_title(f"carbonx: {symbol}")
    _header(user, f"Market: {symbol}")
    state = {"interval": 60}
    drawn = {"at": -CHART_REFRESH_S}  # time.monotonic() of the chart's last update
    with ui.row().classes("w-full items-center gap-4"):
        ui.select(list(market.instruments), value=symbol, label="instrument",
                  on_change=lambda e: ui.navigate.to(f"/market/{quote(e.value, safe='')}")
                  ).classes("w-48").props("data-testid=instrument")
        status = ui.label().classes("text-base font-bold").props("data-testid=status")
        halted = ui.label().classes("text-sm").props("data-testid=halts")
    stats: dict[str, ui.label] = {}
    with ui.row().classes("w-full gap-6 text-sm").props("data-testid=stats"):
        for name in ("open", "high", "low", "last", "volume", "reference", "band"):
            with ui.column().classes("gap-0"):
                ui.label(name).classes("text-xs text-slate-500")
                stats[name] = ui.label("-").classes("font-mono").props(f"data-testid=stat-{name}")
    with ui.row().classes("w-full flex-nowrap items-start gap-4"):
        with _card("Depth").classes("w-1/3"):
            ladder = _PlainTable(LADDER_COLUMNS, "ladder")
            spread = ui.label().classes("text-xs text-slate-500")
        with _card("Candles").classes("w-2/3"):
            ui.toggle(INTERVALS, value=60, on_change=lambda e: pick(e.value)
                      ).props("dense size=sm")
            chart = ui.echart(_candle_options()).classes("w-full h-80").props("data-testid=candles")
    with ui.row().classes("w-full flex-nowrap items-start gap-4"):
        with _card(f"Trades (times {_zone(portal)})").classes("w-1/3"):
            tape = _PlainTable(TAPE_COLUMNS, "tape")
        with _card("Open public blocks").classes("w-1/3"):
            blocks = _table(_columns("instrument", "side", "price", "qty", "account",
                                     "order_id"), "seq", "blocks")
        with _card("Open auctions").classes("w-1/3"):
            auctions = _table(_columns("auction", "instrument", "side", "qty", "reserve",
                                       "pricing", "bids"), "seq", "auctions")

    def render() -> float | None:
        frame = frames.get(symbol, state["interval"])
        ladder.set_html(frame.ladder)
        spread.set_text(frame.spread)
        traded = tape.set_html(frame.tape)
        options = chart.options
        again = None
        if (options["xAxis"][0]["data"] != frame.times or options["series"][0]["data"] != frame.bars
                or options["series"][1]["data"] != frame.volumes):
            # Only a changed chart is sent and redrawn (resting orders change the ladder,
            # not the candles), and at most every CHART_REFRESH_S: a browser redraws a
            # chart more slowly than all the rest of the page (benchmarks/web.py).
            since = time.monotonic() - drawn["at"]
            if traded and since < 2 * CHART_REFRESH_S:
                # The new trade first: the browser draws the chart in the same task as
                # the tape, so a chart sent with it holds the trade's row back
                # (benchmarks/web.py, pairs). A market trading all the time still gets
                # its chart every two seconds.
                again = max(CHART_AFTER_S, CHART_REFRESH_S - since)
            elif since >= CHART_REFRESH_S:
                options["xAxis"][0]["data"] = options["xAxis"][1]["data"] = frame.times
                options["series"][0]["data"] = frame.bars
                options["series"][1]["data"] = frame.volumes
                chart.update()
                drawn["at"] = time.monotonic()
            else:
                again = CHART_REFRESH_S - since
        for name, text in frame.stats.items():
            stats[name].set_text(text)
        status.set_text(frame.status)
        halted.set_text(frame.halted)
        halted.classes(replace="text-sm " + ("text-red-700" if frame.halts else "text-slate-500"))
        _set_rows(blocks, frame.blocks)
        _set_rows(auctions, frame.auctions)
        return again

    def pick(interval: int) -> None:
        state["interval"] = interval
        drawn["at"] = -CHART_REFRESH_S  # a new interval's candles at once
        render()

    render()
    _Live(portal, render, REFRESH_S)


# --- the account page ----------------------------------------------------------------------------
def _marked(portal: Portal, account: str) -> tuple[list[Row], list[str]]:
    """*account*'s holdings (``queries.holdings``) with, per asset, its total and, for an
    instrument, the marked value: units x the last listing price (the reference price
    before any trade); and per currency the cash plus the marked values."""
    engine = portal.core.engine
    ledger = engine.ledger
    acct = None if ledger is None else ledger.accounts.get(account)
    if ledger is None or acct is None:
        return [], []
    market = engine.market
    totals: dict[str, int] = {}
    rows = []
    for row in queries.holdings(engine, account):
        asset = row["asset"]
        total = acct.holdings[asset].total
        if asset in ledger.currencies:
            totals[asset] = totals.get(asset, 0) + total
            rows.append({**row, "total": format_cash(asset, total), "value": "", "mark": ""})
            continue
        inst = market.instruments.get(asset)
        ticks = None if inst is None else engine.book(asset).last_price
        source = "last"
        if inst is not None and ticks is None:
            ticks, source = engine.reference_price(asset), "reference"
        if inst is None or ticks is None:
            rows.append({**row, "total": total, "mark": "none", "value": "-"})
            continue
        value = ticks * total * inst.tick_value
        totals[inst.currency] = totals.get(inst.currency, 0) + value
        rows.append({**row, "total": total, "mark": f"{inst.tick.format(ticks)} ({source})",
                     "value": format_cash(inst.currency, value)})
    return rows, [f"{format_cash(c, n)} {c}" for c, n in sorted(totals.items())]


def _account_picker(portal: Portal, user: str) -> None:
    ui.page_title("carbonx: accounts")
    _header(user, "Accounts")
    ledger = portal.core.engine.ledger
    names = [] if ledger is None else sorted(n for n in ledger.accounts if not n.startswith("@"))
    ui.select(names, label="account",
              on_change=lambda e: ui.navigate.to(f"/account/{quote(e.value, safe='')}")
              ).classes("w-64").props("data-testid=account")
    ui.label(f"{len(names)} accounts: pick one to see its page").classes("text-sm")


def _account_page(portal: Portal, user: str, account: str) -> None:
    engine = portal.core.engine
    view = portal.view
    ui.page_title(f"carbonx: {account}")
    _header(user, f"Account: {account}")
    with ui.row().classes("w-full items-center gap-6 text-sm"):
        kind = ui.label().props("data-testid=kind")
        limit = ui.label().props("data-testid=limit")
        value = ui.label().classes("font-bold").props("data-testid=marked")
    with ui.row().classes("w-full flex-nowrap items-start gap-4"):
        with _card("Holdings").classes("w-1/2"):
            holdings = _table(_columns("asset", "available", "held", "locked", "pledged",
                                       "total", "mark:marked at", "value:marked value"),
                              "asset", "holdings")
            ui.label("P&L: cash changes are not known here, so the page shows the marked "
                     "value: units x the last listing price (the reference price before any "
                     "trade), and cash.").classes("text-xs text-slate-500")
            ui.label("Pledges in force").classes("text-sm font-bold")
            pledges = _table(_columns("pledge_id", "role", "account:pledgor", "to_account:pledgee",
                                      "instrument", "qty"), "pledge_id", "pledges")
        with _card("Open orders").classes("w-1/2"):
            orders = _table(_columns("order_id", "instrument", "side", "type", "tif", "price",
                                     "stop_price:stop", "qty", "shown"), "order_id", "orders")
            more = ui.label().classes("text-xs text-slate-500")
            ui.label("Blocks, auctions and bids open").classes("text-sm font-bold")
            away = _table(_columns("mode", "order_id", "instrument", "side", "price", "qty",
                                   "to_account:to", "auction"), "seq", "away")
    with ui.row().classes("w-full flex-nowrap items-start gap-4"):
        with _card(f"Recent fills (times {_zone(portal)})").classes("w-1/2"):
            fills = _table(_columns("time", "instrument", "side", "price", "qty", "order_id",
                                    "liquidity", "mode"), "seq", "fills")
        with _card("Futures and options").classes("w-1/2"):
            positions = _table(_columns("instrument", "qty:net lots", "avg_price:average",
                                        "settlement", "margin"), "instrument", "positions")
            margin = ui.label().classes("text-sm").props("data-testid=margin")
            call = ui.label().classes("text-sm font-bold text-red-700")
            call.props("data-testid=margin-call")

    def render() -> None:
        ledger = engine.ledger
        acct = None if ledger is None else ledger.accounts.get(account)
        if ledger is None or acct is None:
            kind.set_text("no holdings yet")
            limit.set_text("")
        else:
            kind.set_text(f"kind {acct.kind}, {acct.status}")
            cap = ledger.position_limit(acct)
            limit.set_text(f"position limit {'none' if cap is None else f'{cap:,} t'}, "
                           f"exposure {ledger.exposure(acct):,} t (all vintages)")
        rows, totals = _marked(portal, account)
        _set_rows(holdings, rows)
        value.set_text(f"marked value with cash: {', '.join(totals) or '0'}")
        live = queries.open_orders(engine, account)
        _set_rows(orders, live[-ORDER_ROWS:][::-1])
        more.set_text(f"{len(live)} open, the newest {ORDER_ROWS} shown"
                      if len(live) > ORDER_ROWS else f"{len(live)} open")
        _set_rows(away, queries.away_orders(engine, account))
        _set_rows(pledges, queries.pledges(engine, account))
        _set_rows(fills, [{**f, "time": _clock(portal, f["ts"])}
                          for f in queries.fills(view, account, FILL_ROWS)])
        _set_rows(positions, queries.positions(engine, account))
        held = queries.margin(engine, account)
        if held:
            margin.set_text(f"margin {held['margin']}, equity {held['equity']}, initial "
                            f"{held['initial']}, maintenance {held['maintenance']} "
                            f"{held['currency']}")
            call.set_text("margin call" if held["margin_call"] else "")
        else:
            margin.set_text("no futures or options position")
            call.set_text("")

    render()
    _Live(portal, render, ACCOUNT_REFRESH_S)


# --- the registry page ---------------------------------------------------------------------------
def _time_left(portal: Portal, year: int, assessed: bool) -> str:
    """The time left to surrender for *year*: until the end of 31 December of the next
    year in the market's time zone, from the later of the engine's clock and now."""
    if assessed:
        return "assessed"
    engine = portal.core.engine
    ledger = engine.ledger
    schedule = None if ledger is None else ledger.registry.schedule
    left = (deadline_ns(year, schedule) - max(engine.clock, time.time_ns())) // 10**9
    if left <= 0:
        return "deadline passed, not assessed yet"
    days, rest = divmod(left, 86_400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    return f"{days} d {hours} h left" if days else f"{hours} h {minutes} min left"


_REGISTRY_COLUMNS = ("obligation", "allocated", "to_deduct:to deduct", "surrendered",
                     "ccer:CCER used", "outstanding", "shortfall", "fine", "status")


def _status(row: Row) -> str:
    """An entity's standing: assessed, or not yet; an entity with no verified emissions
    (an allocation alone, or an account closed before they were recorded) is never
    assessed, so it says so rather than "not assessed" in an assessed year."""
    if row["status"]:
        return str(row["status"])
    return "no emissions recorded" if row["obligation"] is None else "not assessed"


def _registry_page(portal: Portal, user: str, year: int | None) -> None:
    """The operator's: one compliance year (*year*, else the latest), every entity, the
    short ones first, and the year's totals. An entity's: its own years, newest first."""
    engine = portal.core.engine
    ui.page_title("carbonx: registry")
    _header(user, "Registry")
    if user != OPERATOR:
        heading = ui.label().classes("text-base font-bold").props("data-testid=heading")
        table = _table(_columns("year", "deadline", *_REGISTRY_COLUMNS, "left:time left"),
                       "year", "registry")

        def render_own() -> None:
            rows = queries.compliance(engine, user)
            _set_rows(table, [{**r, "status": _status(r), "left": _time_left(
                portal, r["year"], r["status"] is not None)} for r in rows[::-1]])
            heading.set_text(f"{user}'s compliance years" if rows else
                             f"{user} has no compliance obligation")

        render_own()
        _Live(portal, render_own, REFRESH_S)
        return
    years = queries.compliance_years(engine)
    chosen = year if year is not None else years[-1] if years else None
    with ui.row().classes("items-center gap-4"):
        ui.select(years, value=chosen, label="compliance year",
                  on_change=lambda e: ui.navigate.to(f"/registry/{quote(str(e.value), safe='')}")
                  ).classes("w-40").props("data-testid=year")
        heading = ui.label().classes("text-base font-bold").props("data-testid=heading")
    totals = ui.label().classes("text-sm").props("data-testid=totals")
    table = _table(_columns("account", *_REGISTRY_COLUMNS), "account", "registry")
    more = ui.label().classes("text-xs text-slate-500")
    ui.label("Sectors: the engine does not know them, so there are no totals by sector."
             ).classes("text-xs text-slate-500")

    def render() -> None:
        if chosen is None:
            heading.set_text("no compliance year yet")
            return
        data = queries.registry_year(engine, chosen)
        entities = sorted(data["entities"], key=lambda e: (
            e["status"] != "short", -(e["shortfall"] or 0), -e["outstanding"], e["account"]))
        _set_rows(table, [{**e, "status": _status(e)} for e in entities[:REGISTRY_ROWS]])
        more.set_text(f"the first {REGISTRY_ROWS} of {len(entities)} shown, the short first"
                      if len(entities) > REGISTRY_ROWS else "the short first")
        heading.set_text(f"{chosen}: deadline {data['deadline']}, "
                         f"{_time_left(portal, chosen, data['assessed'])}")
        sums = data["totals"]
        text = (f"{sums['entities']} entities, {sums['short']} short; obligation "
                f"{sums['obligation']:,} t, allocated {sums['allocated']:,} t, surrendered "
                f"{sums['surrendered']:,} t, CCER {sums['ccer']:,} t, outstanding "
                f"{sums['outstanding']:,} t")
        if data["assessed"]:
            text += f"; shortfall {sums['shortfall']:,} t, fines {sums['fine']} {data['currency']}"
        totals.set_text(text)

    render()
    _Live(portal, render, REFRESH_S)


# --- registration --------------------------------------------------------------------------------
class _OpenPages:
    """The pages open now, by login: a page is counted from its load until NiceGUI deletes
    its client (closed, or never connected for 60 s)."""

    def __init__(self, per_login: int = PAGES_PER_LOGIN, in_all: int = PAGES_IN_ALL) -> None:
        self.per_login = per_login
        self.in_all = in_all
        self.by_login: dict[str, set[str]] = {}
        self.count = 0

    def refusal(self, user: str) -> Response | None:
        """The answer to one more page for *user* when it would pass a limit, else None."""
        if len(self.by_login.get(user, ())) >= self.per_login:
            return PlainTextResponse(
                f"{user} has {self.per_login} pages open, the most a login may: close some, "
                "or wait a minute for pages that never finished loading", status_code=429,
                headers={"Retry-After": "60"})
        if self.count >= self.in_all:
            return PlainTextResponse(f"the portal has {self.in_all} pages open, the most it "
                                     "serves: try again in a minute", status_code=503,
                                     headers={"Retry-After": "60"})
        return None

    def opened(self, user: str) -> None:
        """Count the page being built for *user* until its client is deleted."""
        client = ui.context.client
        pages = self.by_login.setdefault(user, set())
        pages.add(client.id)
        self.count += 1

        def closed() -> None:
            if client.id in pages:
                pages.discard(client.id)
                self.count -= 1
                if not pages and self.by_login.get(user) is pages:
                    del self.by_login[user]

        client.on_delete(closed)


def register_pages(app: FastAPI, portal: Portal) -> None:
    """Define the pages for *portal* and mount NiceGUI on *app*."""
    engine = portal.core.engine
    frames = _Frames(portal)
    pages = _OpenPages()

    def login(request: Request) -> str | Response:
        """The login of *request*, or the answer that refuses it: 401 without one, 429 or
        503 past the open pages' limits."""
        address = request.client.host if request.client is not None else ""
        wait = portal.credentials.wait(address)
        if wait:
            return PlainTextResponse(
                f"too many failed logins from this address: try again in {math.ceil(wait)} s",
                status_code=429, headers={"Retry-After": str(math.ceil(wait))})
        user = portal.credentials.user(request.headers.get("authorization"), address)
        if user is None:
            return _unauthorized()
        return pages.refusal(user) or user

    def answer(response: Response) -> Response:
        """*response* in place of a page: the client NiceGUI made for it goes at once
        (else it would stay a minute, a request's memory held for anyone to multiply)."""
        ui.context.client.delete()
        return response

    def build(user: str, page: Callable[[], None]) -> None:
        pages.opened(user)
        page()

    @ui.page("/")
    def home(request: Request) -> Response | None:
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        build(user, lambda: _market_page(portal, frames, user, _default_symbol(portal)))
        return None

    @ui.page("/market/{instrument}")
    def market(request: Request, instrument: str) -> Response | None:
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        if instrument not in engine.market.instruments:
            return answer(PlainTextResponse(f"no instrument {instrument!r}", status_code=404))
        build(user, lambda: _market_page(portal, frames, user, instrument))
        return None

    @ui.page("/account")
    def own_account(request: Request) -> Response | None:
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        if user == OPERATOR:
            build(user, lambda: _account_picker(portal, user))
        else:
            build(user, lambda: _account_page(portal, user, user))
        return None

    @ui.page("/account/{account}")
    def account_page(request: Request, account: str) -> Response | None:
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        if not portal.credentials.may_see(user, account):
            return answer(_forbidden(f"{user} may not see {account}'s page: an account sees "
                                     "its own, the operator every account's"))
        if user == OPERATOR and not queries.has_account(engine, account):
            return answer(PlainTextResponse(f"no account {account!r}", status_code=404))
        build(user, lambda: _account_page(portal, user, account))
        return None

    @ui.page("/registry")
    def registry(request: Request) -> Response | None:
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        build(user, lambda: _registry_page(portal, user, None))
        return None

    @ui.page("/registry/{year}")
    def registry_year(request: Request, year: str) -> Response | None:
        # The year is read here, not by FastAPI: a request without a login is 401 first.
        user = login(request)
        if isinstance(user, Response):
            return answer(user)
        if user != OPERATOR:
            return answer(_forbidden(f"{user} sees its own compliance years at /registry; "
                                     "the operator every entity's, by year"))
        number = int(year) if year.isascii() and year.isdigit() and len(year) <= 4 else None
        if number is None or number not in queries.compliance_years(engine):
            return answer(PlainTextResponse(f"no compliance year {year!r}", status_code=404))
        build(user, lambda: _registry_page(portal, user, number))
        return None

    # One NiceGUI per process: a second app takes its middleware as the first one did
    # (NiceGUI's own app may have started, and takes no middleware once it has).
    middleware = list(core.app.user_middleware)
    core.app.middleware_stack = None
    ui.run_with(app, title="carbonx", storage_secret=secrets.token_hex(16),
                show_welcome_message=False)
    if middleware:
        core.app.user_middleware[:] = middleware
    # Mounted at "/", NiceGUI would answer every path the API does not: the API's own
    # answers stay its own (405 for a method it lacks, its JSON 404), never a page.
    for i, route in enumerate(app.router.routes):
        if isinstance(route, Mount) and route.app is core.app:
            app.router.routes[i] = _PagesMount(route.path, app=core.app)


# The paths NiceGUI answers: the pages, and its own assets and websocket. Any other is the
# outer app's plain 404: NiceGUI's own would log a warning with the whole address and keep
# a client for a minute, for anyone, logged in or not, to multiply.
_PAGE_PATHS = re.compile(
    r"/(market/[^/]+|account(/[^/]+)?|registry(/[^/]+)?)?|/favicon\.ico|/_nicegui_ws/.*"
    rf"|/_nicegui/{re.escape(nicegui_version)}/(static|libraries|components|resources"
    r"|dynamic_resources|esm)/.*")


class _PagesMount(Mount):
    """NiceGUI's mount, for the pages' paths alone (not the API's, nor unknown ones)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (scope["path"].startswith(API_PREFIX)
                                        or not _PAGE_PATHS.fullmatch(scope["path"])):
            return Match.NONE, {}
        return super().matches(scope)
