"""The REST API under ``/api/v1``: read-only views of the exchange for accounts (their own
data) and the operator (everyone's), behind HTTP Basic with the exchange's passwords.

Every endpoint answers JSON described by its response model in the OpenAPI document
(``/api/v1/openapi.json``): prices and cash as exact decimal strings, quantities as
integers, times as nanoseconds (docs/web.md). No credentials, or wrong ones: 401 with
``WWW-Authenticate: Basic realm="carbonx"``; another account's data, or the operator's
endpoints for an account: 403; an unknown instrument, account or year: 404; a query value
out of its bounds: 422 (FastAPI's validation); an address past its failed logins (see
``Credentials``): 429 with ``Retry-After``. Nothing here changes state.

The handlers are coroutines: they run on the event loop that runs the gateway's flushes,
so each reads the engine between two flushes, never during one. (No ``from __future__
import annotations``: FastAPI reads the handlers' annotations, some local to ``make_router``.)
"""

import math
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic
from pydantic import BaseModel, BeforeValidator, Field
from starlette.types import Receive, Scope, Send

from gateway.web import queries
from gateway.web.auth import OPERATOR, Credentials
from gateway.web.view import Portal

if TYPE_CHECKING:
    from exchange import Engine

__all__ = ["make_router", "REALM"]

REALM = "carbonx"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}"'}


# --- response models ---------------------------------------------------------------------------
class Message(BaseModel):
    """Why a request was refused."""

    detail: str


class InstrumentOut(BaseModel):
    symbol: str
    kind: str = Field(description="spot, future or option")
    currency: str
    tick: str = Field(description="the price tick, a decimal string")
    qty_step: int
    min_qty: int
    max_qty: int
    band: str | None = Field(description="the price band's fraction either side of the "
                                         "reference (\"0.10\": 10%), null: no band")
    reference_price: str | None
    band_low: str | None = Field(description="the lowest price allowed now, null: no band")
    band_high: str | None = Field(description="the highest price allowed now, null: no band")
    vintage: int | None
    offset: bool = Field(description="an offset credit (CCER)")
    contract_size: int
    underlying: str | None
    contract_month: str | None
    last_trading_day: str | None = Field(description="YYYY-MM-DD")
    strike: str | None = Field(description="an option's strike, on its underlying's tick")
    option_type: str | None
    halted: bool


Level = tuple[str, int, int]


class BookOut(BaseModel):
    instrument: str
    seq: int = Field(description="the engine's last event when read")
    bids: list[Level] = Field(description="[price, qty, orders], best first")
    asks: list[Level] = Field(description="[price, qty, orders], best first")


class TradeOut(BaseModel):
    seq: int
    trade_id: int
    ts: int = Field(description="the gateway's clock when it ran, ns since 1970")
    instrument: str
    price: str
    qty: int
    aggressor: str
    mode: str = Field(description="listing, block or auction")


class CandleOut(BaseModel):
    start: int = Field(description="the interval's start, ns since 1970")
    open: str
    high: str
    low: str
    close: str
    volume: int


class DailyOut(BaseModel):
    seq: int
    day: int
    date: str = Field(description="YYYY-MM-DD in the market's time zone")
    instrument: str
    open: str = Field(description="\"\" on a day without a listing trade")
    high: str
    low: str
    close: str
    volume: int
    turnover: str
    block_volume: int
    auction_volume: int


class BlockOut(BaseModel):
    seq: int
    order_id: str = Field(description="the poster's id of the block (to accept it)")
    account: str = Field(description="the poster")
    instrument: str
    side: str
    price: str
    qty: int
    status: str


class AuctionOut(BaseModel):
    seq: int
    auction: str
    account: str = Field(description="the initiator (@registry: a primary auction)")
    instrument: str
    side: str
    qty: int
    reserve: str
    pricing: str
    primary: bool
    status: str
    bids: int = Field(description="bids so far (sealed: never their prices)")


class ClearedAuctionOut(BaseModel):
    seq: int
    auction: str
    account: str
    instrument: str
    status: str = Field(description="cleared, no_valid_bid, undersubscribed or below_market")
    price: str | None
    qty: int
    unsold: int
    bids: int
    filled_bids: int
    pricing: str


class AuctionsOut(BaseModel):
    open: list[AuctionOut]
    cleared: list[ClearedAuctionOut] = Field(description="the latest ended, newest first")


class HoldingOut(BaseModel):
    account: str
    asset: str
    available: int | str = Field(description="units, or cash as a decimal string")
    held: int | str
    locked: int | str
    pledged: int = Field(0, description="allowances pledged to a lender (never cash)")


class PledgeOut(BaseModel):
    pledge_id: str
    role: str = Field(description="pledgor (the account pledged them) or pledgee (to it)")
    account: str = Field(description="the pledgor, whose holdings the units stay in")
    to_account: str = Field(description="the pledgee, who may release or enforce them")
    instrument: str
    qty: int = Field(description="the units still pledged")


class OrderOut(BaseModel):
    order_id: str = Field(description="the account's own id")
    instrument: str
    side: str
    type: str
    tif: str
    price: str | None
    stop_price: str | None
    qty: int = Field(description="the open quantity")
    shown: int = Field(description="the displayed part (less for an iceberg)")
    seq: int = Field(description="the event that accepted it")


class AwayOut(BaseModel):
    mode: str = Field(description="block, auction (one the account opened) or bid")
    order_id: str = Field(description="the account's own id (an auction's: the auction's)")
    instrument: str
    side: str
    price: str = Field(description="the block's price, the auction's reserve, the bid's price")
    qty: int = Field(description="what is open: offered, or bid for")
    to_account: str | None = Field(description="a block's named counterparty; null for a "
                                   "public quote")
    auction: str | None = Field(description="the auction an auction or a bid is of")
    seq: int = Field(description="the event that accepted it")


class FillOut(BaseModel):
    seq: int
    trade_id: int
    ts: int = Field(description="the gateway's clock when it ran, ns since 1970")
    instrument: str
    side: str
    price: str
    qty: int
    order_id: str
    liquidity: str = Field(description="maker or taker")
    mode: str = Field(description="listing, block or auction")


class PositionOut(BaseModel):
    account: str
    instrument: str
    qty: int = Field(description="net lots, negative: short")
    avg_price: str
    margin: str
    settlement: str | None = Field(
        description="the last settlement price: the future's, or for an option its underlying's")


class MarginOut(BaseModel):
    account: str
    currency: str
    margin: str
    equity: str
    initial: str
    maintenance: str
    margin_call: bool


class ComplianceYearOut(BaseModel):
    year: int
    deadline: str = Field(description="the last day to surrender, YYYY-MM-DD")
    obligation: int | None = Field(description="verified emissions, t; null: none recorded")
    quality: str | None
    verifier: str | None
    allocated: int = Field(description="free allocation issued for the year")
    deducted: int = Field(description="last year's shortfall deducted from the allocation")
    to_deduct: int = Field(description="last year's shortfall still to deduct: assessed after "
                           "the year's allocation, the next allocate row for the year takes it")
    surrendered: int = Field(description="allowances surrendered for the year")
    ccer: int = Field(description="CCER surrendered for the year")
    outstanding: int = Field(description="still to surrender")
    shortfall: int | None = Field(description="once assessed")
    fine: str | None = Field(description="once assessed, cash")
    status: str | None = Field(description="once assessed: compliant or short")


class RegistryEntityOut(BaseModel):
    account: str
    sector: str | None
    obligation: int | None
    quality: str | None
    verifier: str | None
    allocated: int
    deducted: int
    to_deduct: int
    surrendered: int
    ccer: int
    outstanding: int
    shortfall: int | None
    fine: str | None
    status: str | None


class RegistryTotalsOut(BaseModel):
    entities: int
    short: int
    obligation: int
    allocated: int
    surrendered: int
    ccer: int
    outstanding: int
    shortfall: int | None
    fine: str | None


class RegistryYearOut(BaseModel):
    year: int
    deadline: str
    assessed: bool
    currency: str = Field(description="the currency of fines")
    entities: list[RegistryEntityOut]
    totals: RegistryTotalsOut


class AccountOut(BaseModel):
    account: str
    kind: str
    status: str
    position_limit: int | None = Field(description="allowances it may have, null: no limit")
    exposure: int = Field(description="what counts toward the limit")


# --- the router --------------------------------------------------------------------------------
class _Basic(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI document; the check itself is ``Credentials``'
    (the exchange's passwords, UTF-8), in ``make_router``'s ``user``."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


_basic = _Basic(realm=REALM, auto_error=False, description="the exchange's passwords")

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "no credentials, or wrong ones"},
    429: {"model": Message, "description": "too many failed logins from this address: "
          "wait Retry-After seconds"},
}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Message, "description": "not this user's to see"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "unknown instrument, account or year"}
}
_PRIVATE = {**_FORBIDDEN, **_NOT_FOUND}  # an account's own, or the operator's



def _decimal_digits(value: object) -> object:
    """An integer in a path or query is written in decimal digits, with an optional minus:
    left to itself, pydantic also reads ``2025.0``, ``+2025``, `` 2025`` and ``2_025`` as
    2025."""
    if isinstance(value, str) and not (value.removeprefix("-").isascii()
                                       and value.removeprefix("-").isdigit()):
        raise ValueError("an integer is written in decimal digits")
    return value


Digits = BeforeValidator(_decimal_digits)
# (Query or Path first: before it, the validator turns the schema's minimum into "ge".)
Levels = Annotated[int, Query(ge=1, le=50, description="depth levels a side"), Digits]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows at most"), Digits]
Interval = Annotated[int, Query(ge=1, le=86400, description="candle width, seconds"), Digits]
Year = Annotated[int, Path(description="a compliance year"), Digits]
Symbol = Annotated[str, Path(description="an instrument's symbol")]
AccountName = Annotated[str, Path(description="an account's name")]


def _not_found(what: str) -> NoReturn:
    raise HTTPException(404, detail=what)


def make_router(portal: Portal) -> APIRouter:
    """The API's routes over *portal* (what they read: its ``core``'s engine, its
    ``view`` and its ``credentials``)."""
    credentials: Credentials = portal.credentials

    def user(request: Request) -> str:
        address = request.client.host if request.client is not None else ""
        wait = credentials.wait(address)
        if wait:
            raise HTTPException(429, detail="too many failed logins from this address: try "
                                f"again in {math.ceil(wait)} s",
                                headers={"Retry-After": str(math.ceil(wait))})
        name = credentials.user(request.headers.get("authorization"), address)
        if name is None:
            raise HTTPException(401, detail="log in with the exchange's password",
                                headers=_CHALLENGE)
        return name

    User = Annotated[str, Depends(user)]
    router = APIRouter(prefix="/api/v1", tags=["carbonx"], dependencies=[Depends(_basic)],
                       responses={**_REFUSALS})

    def engine() -> "Engine":
        return portal.core.engine

    def symbol_of(symbol: str) -> str:
        if symbol not in engine().market:
            _not_found(f"unknown instrument {symbol!r}")
        return symbol

    def account_of(name: str, account: str) -> str:
        """*account*, if *name* may see it (403) and it exists (404); a user's own account
        without any holdings yet has empty rows."""
        if not Credentials.may_see(name, account):
            raise HTTPException(403, detail=f"{name} may not see {account}'s data")
        if name == OPERATOR and not queries.has_account(engine(), account):
            _not_found(f"unknown account {account!r}")
        return account

    def operator(name: User) -> str:
        """The operator, or 403: a dependency, so it answers before a path or query value
        is checked (an account asking for /registry/abc is refused, not told of a 422)."""
        if name != OPERATOR:
            raise HTTPException(403, detail="the operator's only")
        return name

    Operator = Annotated[str, Depends(operator)]

    def visible(name: User, account: AccountName) -> str:
        """The path's *account*, if the user may see it (403) and it exists (404): a
        dependency, so it answers before a query value is checked (an account asking for
        another's /fills?limit=0 is refused, not told of a 422)."""
        return account_of(name, account)

    Visible = Annotated[str, Depends(visible)]

    # --- market ----------------------------------------------------------------------------
    @router.get("/instruments", response_model=list[InstrumentOut],
                summary="Every instrument, its rules and its state")
    async def get_instruments(name: User) -> list[dict]:
        """Every instrument the market lists: tick, quantity rules, the price band and its
        edges now, the reference price, futures' and options' terms, whether halted."""
        return queries.instruments(engine())

    @router.get("/market/{instrument}/book", response_model=BookOut, responses=_NOT_FOUND,
                summary="An instrument's order book")
    async def get_book(name: User, instrument: Symbol, levels: Levels = 10) -> dict:
        """The depth of the order book, ``levels`` a side, each level ``[price, qty,
        orders]``, best first (displayed quantities: icebergs' hidden parts are not
        shown)."""
        return queries.book(engine(), symbol_of(instrument), levels)

    @router.get("/market/{instrument}/trades", response_model=list[TradeOut],
                responses=_NOT_FOUND, summary="An instrument's latest trades")
    async def get_trades(name: User, instrument: Symbol, limit: Limit = 100) -> list[dict]:
        """The latest public trades, newest first, of every trading mode (no accounts or
        order ids); as many as the portal keeps (1,000 an instrument)."""
        return queries.trades(portal.view, symbol_of(instrument), limit)

    @router.get("/market/{instrument}/daily", response_model=list[DailyOut],
                responses=_NOT_FOUND, summary="An instrument's daily statistics")
    async def get_daily(name: User, instrument: Symbol) -> list[dict]:
        """Each end of day's statistics since the portal started, oldest first, as
        ``replay --daily`` writes them."""
        return queries.daily(portal.view, symbol_of(instrument))

    @router.get("/market/{instrument}/candles", response_model=list[CandleOut],
                responses=_NOT_FOUND, summary="An instrument's candles")
    async def get_candles(name: User, instrument: Symbol, interval: Interval = 60,
                          limit: Limit = 200) -> list[dict]:
        """Open, high, low, close and volume of the listing trades kept, ``interval``
        seconds each, oldest first, the latest ``limit``."""
        return queries.candles(portal.view, symbol_of(instrument), interval, limit)

    @router.get("/blocks", response_model=list[BlockOut], summary="Public block quotes open")
    async def get_blocks(name: User) -> list[dict]:
        """The public block quotes open now (directed blocks are never shown), oldest
        first: ``account`` and ``order_id`` are what it takes to accept one."""
        return queries.open_blocks(portal.view)

    @router.get("/auctions", response_model=AuctionsOut, summary="Auctions open and ended")
    async def get_auctions(name: User) -> dict:
        """The auctions open now (their terms and how many bids: bids are sealed) and the
        latest that ended, with their results."""
        view = portal.view
        return {"open": queries.open_auctions(view), "cleared": queries.cleared_auctions(view)}

    # --- an account's ----------------------------------------------------------------------
    @router.get("/accounts/{account}/holdings", response_model=list[HoldingOut],
                responses=_PRIVATE, summary="An account's holdings")
    async def get_holdings(account: Visible) -> list[dict]:
        """The account's rows of ``holdings --json``: each asset's ``available``,
        ``held`` (by open orders) and ``locked`` (bought, not yet settled) units, cash
        as decimal strings."""
        return queries.holdings(engine(), account)

    @router.get("/accounts/{account}/pledges", response_model=list[PledgeOut],
                responses=_PRIVATE, summary="Pledges in force by or to an account")
    async def get_pledges(account: Visible) -> list[dict]:
        """The pledges in force that the account made (its ``pledged`` units) or that
        were made to it as pledgee, in the order they were registered."""
        return queries.pledges(engine(), account)

    @router.get("/accounts/{account}/orders", response_model=list[OrderOut],
                responses=_PRIVATE, summary="An account's open orders")
    async def get_orders(account: Visible) -> list[dict]:
        """The account's live orders (resting, or stops not yet triggered), oldest first,
        by its own order ids."""
        return queries.open_orders(engine(), account)

    @router.get("/accounts/{account}/away", response_model=list[AwayOut],
                responses=_PRIVATE, summary="An account's open blocks, auctions and bids")
    async def get_away(account: Visible) -> list[dict]:
        """What the account has open away from the book, oldest first: the blocks it
        posted and no one accepted, the auctions it opened and its bids in open auctions.
        Each holds cash or allowances as an order does: with ``/orders``, this is what
        its ``held`` is for."""
        return queries.away_orders(engine(), account)

    @router.get("/accounts/{account}/fills", response_model=list[FillOut],
                responses=_PRIVATE, summary="An account's latest fills")
    async def get_fills(account: Visible, limit: Limit = 100) -> list[dict]:
        """The account's latest fills, newest first (as many as the portal keeps: 1,000 an
        account)."""
        return queries.fills(portal.view, account, limit)

    @router.get("/accounts/{account}/positions", response_model=list[PositionOut],
                responses=_PRIVATE, summary="An account's futures and options positions")
    async def get_positions(account: Visible) -> list[dict]:
        """The account's open futures and options positions: net lots, average price,
        margin held and the last settlement price."""
        return queries.positions(engine(), account)

    @router.get("/accounts/{account}/margin", response_model=MarginOut | None,
                responses=_PRIVATE, summary="An account's margin")
    async def get_margin(account: Visible) -> dict | None:
        """The margin the account holds, its equity, the initial and maintenance margin of
        its positions and whether it is under a margin call; ``null`` without futures or
        options positions."""
        return queries.margin(engine(), account) or None

    @router.get("/accounts/{account}/compliance", response_model=list[ComplianceYearOut],
                responses=_PRIVATE, summary="An account's compliance years")
    async def get_compliance(account: Visible) -> list[dict]:
        """Per compliance year, oldest first: the obligation (verified emissions), the
        free allocation, what was surrendered (allowances and CCER), what is
        outstanding, the deadline and, once assessed, the shortfall, fine and status."""
        return queries.compliance(engine(), account)

    # --- the operator's ------------------------------------------------------------------
    @router.get("/accounts", response_model=list[AccountOut], responses=_FORBIDDEN,
                summary="Every account")
    async def get_accounts(name: Operator) -> list[dict]:
        """Every account (the system accounts ``@...`` too): kind, status, position limit
        and exposure. The operator's only."""
        return queries.accounts(engine())

    @router.get("/registry/{year}", response_model=RegistryYearOut, responses=_PRIVATE,
                summary="A compliance year across entities")
    async def get_registry(name: Operator, year: Year) -> dict:
        """Every entity's obligation, allocation, surrender and, once assessed, shortfall,
        fine and status for the year, and the totals. The operator's only."""
        try:
            return queries.registry_year(engine(), year)
        except KeyError:
            _not_found(f"no compliance year {year}")

    @router.get("/halts", response_model=list[str], responses=_FORBIDDEN,
                summary="Instruments halted")
    async def get_halts(name: Operator) -> list[str]:
        """The instruments the operator has halted. The operator's only."""
        return queries.halts(engine())

    # Read-only: any other method on these paths is 405 (else the pages' catch-all's 404).
    for path in dict.fromkeys(route.path for route in list(router.routes)):
        router.add_route(path, _NotAllowed(), include_in_schema=False)
    return router


class _NotAllowed:
    """405 for any method (an ASGI app, not a function: a route to it takes every method;
    the paths' GET routes come first)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"{scope['method']} not allowed: read-only"}, 405,
                                headers={"Allow": "GET"})
        await response(scope, receive, send)
