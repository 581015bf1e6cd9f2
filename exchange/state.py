"""The engine's whole state as versioned data: msgpack written and read by explicit code.

``EngineState`` holds an ``Engine``'s whole state (books, stops, the order-id registry,
the command window, the ledger with its compliance registry and clearing house);
``exchange.persist`` turns an engine into these bytes and back. Decoding reads only the
Structs below (plain strings, integers, booleans and the event Structs of
``exchange.events``); it never runs code, imports anything by name or unpickles: a
payload that does not decode, has another version or contradicts itself raises
``StateError``. The market goes in as its TOML text and is parsed again.

Schema (version 1), top down; "in order" means the order the engine keeps, which its
events depend on, so it is kept exactly:

``EngineState``
    ``format`` ("carbonx-state"), ``version``, ``market`` (TOML text) and its
    ``market_source``; ``seq`` and ``trade`` (the global counters); ``clock``, ``day``,
    ``accepted``, ``rejected``, ``rejects`` (reason -> count, in order); ``ended``: the
    local date (days from 1970-01-01) of the last end of day that had a time, or nil;
    ``registry``: every order id in use today (an int: the live order at that place in
    the instruments' orders listed bids, asks, stop buys, stop sells, instrument by
    instrument, the live orders in the order their ids were entered; a str: an id whose
    order is done today, or a block's, auction's or bid's, oldest first; states of
    earlier versions interleave the two, which reads the same);
    ``instruments`` (``InstrumentState``, one per instrument of the market);
    ``gtd``: the expiry heap's live entries ``(expire_ts, seq, order_id)``;
    ``command_window`` (W), ``account_window`` (P) and ``commands``: the remembered
    command ids, oldest first, each with the events its command gave (``CommandAnswer``);
    ``ledger`` or nil.
``InstrumentState``
    ``symbol``, ``reference_price`` (the band follows from it), ``last_price``,
    ``trade_count``, ``volume``, ``day_volume``, ``day_notional`` (decimal text: it
    may pass 64 bits), and of those ``day_self_volume`` and ``day_self_notional``, an
    account's trades with itself, which set no close; ``bids`` and ``asks`` in
    priority order (best price first, then time); ``stop_buys`` and ``stop_sells`` in
    trigger order (``OrderState``); ``day_prices`` (the day's open, high and low, once it
    has traded) and ``halted``.
``OrderState`` (an array)
    ``order_id, account, instrument, is_buy, price, qty, visible, display, kind, tif,
    stp, post_only, stop_price, expire_ts, accept_seq``: ``exchange.book.fast.Order``'s
    fields in its order, so an ``Order`` (``array_like`` too) encodes to the same
    array and decodes from it (``encode_state`` and ``decode_state`` take that path:
    no order is copied twice). Codes as in ``exchange.book.fast``: kind limit 0, market 1,
    stop 2, stop_limit 3; tif gtc 0, day 1, gtd 2, ioc 3, fok 4; stp cancel_resting 0,
    cancel_aggressor 1, cancel_both 2, none 3. The instrument and side must be those of
    the list the order is in.
``LedgerState``
    ``accounts`` (name, kind, status, holdings ``[asset, available, held, locked,
    pending_buy, pledged]`` in order), ``supply``, ``holds`` (per open order: the account, the
    held asset and the other leg's asset, amount, side, price, tick value, fee, open
    qty, whether it rests), ``locked`` (the ``(account, asset)`` T+1 index, in order),
    ``registry`` (``RegistryState``: obligations, closed years, deductions, monthly
    tallies, allocations, net sales, conversions, clock), ``clearing``
    (``ClearingState``: positions, open orders, settlement prices, closing-window and
    day tallies, calls, defaults, own cash, expired, delivered, clock) and ``pledges`` (the
    pledges in force, ``[pledge_id, account, to_account, instrument, qty]`` in the order they
    were registered).

Not stored, as they are rebuilt from the above: price and quantity caches, price bands,
per-account spot terms, the registry's month cache, the naive book's arrival numbers,
dead (lazily deleted) book entries and dead expiry-heap entries.

Schema evolution: a new field needs a default (and, in an array Struct, goes at the
end: for ``OrderState`` at the end of ``Order`` too), so an older payload still decodes
and an older reader skips it; field names never change meaning. Anything else (a field
removed, renamed, re-typed or meaning something new, a code renumbered, ``Order``'s
fields reordered) takes a new ``STATE_VERSION``, and a payload of a different version is
not read (``StateError``): its reader replays the journal instead. tests/test_state.py
pins ``Order``'s fields to ``OrderState``'s.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from exchange.book.fast import Order
from exchange.events import AnyEvent

__all__ = [
    "FORMAT", "STATE_VERSION", "AccountState", "AllocationState", "ClearingOrderState",
    "ClearingState", "CommandAnswer", "DeductionState", "EngineState", "GtdEntry", "HoldState",
    "HoldingState", "InstrumentState", "LedgerState", "MonthState", "ObligationState", "OrderState",
    "PledgeState", "PositionState", "RegistryState", "StateError", "read_live_state", "read_state"
]

STATE_VERSION = 1
# The rules by which commands act, named by the date of their last change that can change
# what a command does (a refusal, a price, a fee), and a count after it for a later change
# the same day. A journal records it with each segment,
# and recovery warns when it replays commands journaled under other rules: they act under
# the rules of the carbonx that reads them.
RULES = "2026-12-05.2"
FORMAT = "carbonx-state"


class StateError(ValueError):
    """A state payload that cannot be used: the message says why."""


# --- the matching engine -------------------------------------------------------------------


class OrderState(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """One live order (resting, or a stop not yet triggered): ``exchange.book.fast.Order``'s
    fields, in its order (see the module docstring)."""

    order_id: str
    account: str
    instrument: str
    is_buy: bool
    price: int
    qty: int
    visible: int
    display: int
    kind: int
    tif: int
    stp: int
    post_only: bool = False
    stop_price: int = 0
    expire_ts: int = 0
    accept_seq: int = 0


# The order record of a state: OrderState, or (encode_state, decode_state) the engine's
# own Order, whose array is the same.
R = TypeVar("R", OrderState, Order)


class InstrumentState(msgspec.Struct, Generic[R], frozen=True, kw_only=True):
    """One instrument's book, stops and statistics."""

    symbol: str
    reference_price: int | None = None
    last_price: int | None = None
    trade_count: int = 0
    volume: int = 0
    day_volume: int = 0
    day_notional: str = "0"
    day_self_volume: int = 0
    day_self_notional: str = "0"
    bids: list[R] = []
    asks: list[R] = []
    stop_buys: list[R] = []
    stop_sells: list[R] = []
    day_prices: list[int] | None = None  # the day's open, high and low, once it traded
    halted: bool = False
    away_volume: list[int] = []  # the day's block and auction volume (empty: none)


class BlockState(msgspec.Struct, frozen=True, kw_only=True):
    """An open block agreement (``exchange.blocks``): the block as an order, and the
    account it names (``None``: a public block quote)."""

    block: OrderState
    to_account: str | None = None


class AuctionState(msgspec.Struct, frozen=True, kw_only=True):
    """One of the day's auctions (``exchange.auctions``): the initiator's side as an
    order (id the auction's, price the reserve), its open bids in time order."""

    initiator: OrderState
    pricing: str
    primary: bool = False
    open: bool = True
    bids: list[OrderState] = []


class GtdEntry(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A live entry of the gtd expiry heap: the order *order_id* expires at *expire_ts*;
    *seq* breaks ties (the accept seq, or that of the amend that re-queued it)."""

    expire_ts: int
    seq: int
    order_id: str


class CommandAnswer(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A remembered command id and the events its command gave (its result first)."""

    account: str
    command_id: str
    events: tuple[AnyEvent, ...]


# --- the compliance registry ---------------------------------------------------------------


class ObligationState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    account: str
    year: int
    emissions: int
    quality: str
    verifier: str | None
    months: int = 12
    allowances: int = 0
    offsets: int = 0
    status: str | None = None
    shortfall: int = 0
    fine: int = 0


class AllocationState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    account: str
    year: int
    stage: str
    allocation: int
    deducted: int
    issued: int


class DeductionState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    account: str
    year: int
    units: int


class MonthState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Allowance trades of one calendar month: notional (minor units) and volume."""

    year: int
    month: int
    notional: int
    volume: int


class RegistryState(msgspec.Struct, frozen=True, kw_only=True):
    obligations: list[ObligationState] = []
    closed: list[int] = []
    deductions: list[DeductionState] = []
    months: list[MonthState] = []
    allocations: list[AllocationState] = []
    net_sales: dict[str, int] = {}
    converted: dict[str, int] = {}
    clock: int = 0
    # banking: old-vintage holdings at the cut-off (None: the clock has not passed it)
    cutoff_holdings: dict[str, int] | None = None


# --- the clearing house --------------------------------------------------------------------


class PositionState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    symbol: str
    account: str
    net: int = 0
    open_buy: int = 0
    open_sell: int = 0
    marked: int = 0
    flow: int = 0
    margin: int = 0
    premium: int = 0
    cost: int = 0
    # The open net's basis in today's terms (exchange.derivatives.clearing.Position);
    # None in a state written before it was kept.
    day_cost: int | None = None


class ClearingOrderState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """An open order on a cleared contract: its open lots and limit price (0: none), and
    the fee rate an option buy holds for (millionths; 0 in a state from before)."""

    order_id: str
    account: str
    symbol: str
    is_buy: bool
    lots: int
    price: int
    fee: int = 0


class ClearingState(msgspec.Struct, frozen=True, kw_only=True):
    positions: list[PositionState] = []
    orders: list[ClearingOrderState] = []
    settlement: dict[str, int] = {}
    window: dict[str, tuple[int, int]] = {}
    day_trades: dict[str, tuple[int, int]] = {}
    calls: dict[str, int] = {}
    defaults: dict[str, int] = {}
    own_cash: dict[str, int] = {}
    expired: list[str] = []
    delivered: list[str] = []
    clock: int = 0


# --- the ledger ----------------------------------------------------------------------------


class HoldingState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    asset: str
    available: int = 0
    held: int = 0
    locked: int = 0
    pending_buy: int = 0
    pledged: int = 0


class PledgeState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A pledge in force: ``qty`` of the pledgor *account*'s ``instrument``, pledged to
    *to_account* (the units are in the pledgor's ``pledged`` bucket)."""

    pledge_id: str
    account: str
    to_account: str
    instrument: str
    qty: int


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    status: str
    holdings: list[HoldingState] = []


class HoldState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What an open order holds: ``amount`` of *account*'s *asset* (its ``held``);
    *other* is the asset the other leg of each fill goes to."""

    order_id: str
    account: str
    asset: str
    other: str
    amount: int
    is_buy: bool
    price: int
    unit: int
    fee: int
    qty: int
    rests: bool
    accrued: int = 0  # fills' notional x fee rate, in millionths, below one minor unit


class LedgerState(msgspec.Struct, frozen=True, kw_only=True):
    accounts: list[AccountState]
    supply: dict[str, int] = {}
    holds: list[HoldState] = []
    locked: list[tuple[str, str]] = []
    registry: RegistryState = RegistryState()
    clearing: ClearingState = ClearingState()
    pledges: list[PledgeState] = []


class EngineState(msgspec.Struct, Generic[R], frozen=True, kw_only=True):
    """The whole engine (see the module docstring). ``EngineState[OrderState]`` is what
    ``Engine.to_state`` gives; ``EngineState[Order]`` is the same data holding engine
    orders (what ``encode_state`` writes and ``decode_state`` reads)."""

    format: str
    version: int
    market: str
    market_source: str = "<state>"
    seq: int = 0
    trade: int = 0
    clock: int = 0
    day: int = 1
    ended: int | None = None  # with a schedule: the local date of the last timed end of day
    accepted: int = 0
    rejected: int = 0
    rejects: dict[str, int] = {}
    registry: list[int | str] = []
    instruments: list[InstrumentState[R]] = []
    gtd: list[GtdEntry] = []
    command_window: int = 100_000
    account_window: int = 1_000  # states of earlier versions: the default
    commands: list[CommandAnswer] = []
    ledger: LedgerState | None = None
    # The number of done ids at which the oldest are next forgotten (0: none; states of
    # earlier versions counted the live ids too, which only delays that).
    done_sweep_at: int = 0
    blocks: list[BlockState] = []  # open blocks, in the order posted
    auctions: list[AuctionState] = []  # the day's auctions, in the order opened
    away: list[int] = []  # block and auction trades and volume, all days (empty: none)
    # The market-maker programme's day (exchange.makers): [the monitor's state (its
    # ``to_state``), [[account, symbol, maker fees paid today], ...]]; empty: none.
    quoting: list[Any] = []


class _Header(msgspec.Struct):
    """What is read first: a payload of another format or version is not read further."""

    format: str
    version: int


_header = msgspec.msgpack.Decoder(_Header)
_decoder = msgspec.msgpack.Decoder(EngineState[OrderState])
_fast_decoder = msgspec.msgpack.Decoder(EngineState[Order])


def read_state(data: bytes | bytearray | memoryview) -> EngineState[OrderState]:
    """Decode *data* into an ``EngineState``; raise ``StateError`` if it is not one of
    this version. Nothing is checked against a market yet (``Engine.from_state`` does)."""
    return _read(data, _decoder)


def _read(data: bytes | bytearray | memoryview,
          decoder: msgspec.msgpack.Decoder[EngineState[R]]) -> EngineState[R]:
    try:
        header = _header.decode(data)
    except (msgspec.DecodeError, TypeError) as exc:
        raise StateError(f"not an engine state: {exc}") from None
    if header.format != FORMAT:
        raise StateError(f"not an engine state: format {header.format!r}, expected {FORMAT!r}")
    if header.version != STATE_VERSION:
        raise StateError(f"engine state version {header.version} is not read here "
                         f"(this build reads version {STATE_VERSION})")
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StateError(f"engine state version {STATE_VERSION} does not decode: {exc}") from None


def read_live_state(data: bytes | bytearray | memoryview) -> EngineState[Order]:
    """Decode *data* as ``read_state`` does, with the orders as the book's own ``Order``
    records, new and ready to be adopted by an engine."""
    return _read(data, _fast_decoder)
