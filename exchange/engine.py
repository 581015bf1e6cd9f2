"""The matching engine: one ordered stream of commands in, events out.

Pipeline for every command, in this order:

  1. sequence  - the command's ``ts`` (if any) moves the clock forward; gtd orders whose
                 time has come expire first (``OrderExpired``);
  2. validate  - instrument, ids, ownership, price on the tick and inside the band,
                 quantity on the step and inside [min, max], field combinations;
                 a failure gives ``CommandRejected`` and changes nothing;
  3. risk hold - with a ledger, the order's cash or allowances are held before it is
                 accepted (``exchange.ledger``); a shortfall is a rejection;
  4. match     - the instrument's book matches, rests or cancels the order;
  5. stops     - trades move the last price; stop orders it triggers act in trigger order;
  6. settle    - with a ledger, each trade settles (``TradeSettled``) and each ended
                 order gives back what it held;
  7. publish   - events carry a global, strictly increasing ``seq``.

A command with a ``command_id`` already seen from the same account (among the last
``command_window`` such ids of all accounts, or the last ``account_window`` of its own) is
rejected as ``duplicate_command`` before anything else: resends are never applied twice,
and ``answer`` gives back the first answer's events.

Every command gives exactly one result event (see ``exchange.events``), preceded only by
clock expiries and followed by its consequences.

Determinism: no clock, randomness, I/O or hash-order dependence. The same commands in
the same order give the same events and the same ``state_hash()``; the engine runs the
same with ``FastBook`` or the reference ``NaiveBook``.

Known limits: client order ids are unique per trading day across the whole market (a
live order keeps its id reserved across days), as far as the newest ``DONE_IDS`` (200,000)
ids of done orders go: older ones are forgotten so that memory follows what rests, not
history; mass cancel scans all live orders, O(n).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable, Mapping
from itertools import takewhile
from typing import Any, Literal, TypeAlias, TypeVar, cast, overload

import msgspec
from sortedcontainers import SortedList

from exchange.reasons import Reason
from exchange.book.fast import (DAY, FOK, GTC, GTD, IOC, KIND_CODES, LIMIT, MARKET, NO_LIMIT,
                                PRICED, STOP, STOP_LIMIT, STP_CODES, STP_NAMES, TIF_CODES, Counters,
                                FastBook, Order, OrderIds, visible_of)
from exchange.calendar import day_of_ns
from exchange.auctions import Auction, Auctions
from exchange.blocks import Blocks
from exchange.commands import (ADMIN_COMMANDS, PRICINGS, AcceptBlock, AdvanceClock, AmendOrder,
                               AnyCommand, BidAuction, CancelOrder, CloseAuction, EndOfDay,
                               HaltInstrument, MassCancel, OpenAuction, PlaceOrder, PostBlock,
                               ResumeInstrument)
from exchange.events import (ClockAdvanced, CommandRejected, DailyStatistics, Event,
                             MassCancelAccepted,
                             OrderAccepted, OrderAmended, OrderCancelled, OrderExpired,
                             OrderTriggered, ReferencePriceSet, TradeExecuted, TradingDayEnded,
                             TradingStatusChanged)
from exchange.book.interface import OrderBook
from exchange.derivatives.clearing import CLOSE_OUT_PREFIX, margin_reach
from exchange.ledger import AdminCommand, CloseOut, Ledger, NoLedger
from exchange.makers import QuotingMonitor
from exchange.market import Instrument, Market, parse_market
from exchange.state import (FORMAT, STATE_VERSION, AuctionState, BlockState, CommandAnswer,
                            EngineState, GtdEntry, InstrumentState, OrderState, StateError)
from exchange.units import Scale

__all__ = ["Engine"]

# Bound once for the cancel shortcut (benchmarks/contenders.py): an enum member costs three
# times a module global to look up.
_BY_OWNER = Reason.CANCELLED_BY_OWNER
_PRICE_CACHE = 1 << 16
DONE_IDS = 200_000  # ids of done orders remembered at least, per day (see _forget_done)
# Engine times beyond any command's (int64 nanoseconds): the listing session of a market
# without a schedule never ends.
_ALWAYS = (-(1 << 64), 1 << 64)
# No price in this market comes near: larger is a typo, refused as an invalid price.
MAX_PRICE_TICKS = 10**12  # distinct price strings remembered per instrument

# A side of a book's depth: (price, displayed qty, orders) per level, best first.
# Makes the book of an instrument: (symbol, the engine's counters, the day's order ids).
_BookFactory: TypeAlias = Callable[[str, Counters, OrderIds], OrderBook]
# A command's handler, keyed by the command's type (each takes that type); True: it
# settled its own events.
_Handler: TypeAlias = Callable[[Any, list[Event]], bool | None]
# A command window key: (account, or "" for commands without one, command_id).
_CommandKey: TypeAlias = tuple[str, str]


class _AccountWindow:
    """One account's remembered command ids, oldest first; the first ``outside`` of them
    are past the global window (kept as the account's own newest)."""

    __slots__ = ("keys", "outside")

    def __init__(self) -> None:
        self.keys: deque[_CommandKey] = deque()
        self.outside = 0
# A gtd expiry heap entry: (expire_ts, seq breaking ties, order).
_Expiry: TypeAlias = tuple[int, int, Order]
# The order record of a state (see exchange.state): OrderState, or the engine's Order.
_R = TypeVar("_R", OrderState, Order)


class _Stops:
    """Untriggered stop orders of one instrument, in trigger priority.

    Buys trigger when last >= stop, nearest stop first; sells when last <= stop. Ties go
    to the earlier order (its accept ``seq``).
    """

    __slots__ = ("buys", "sells")

    def __init__(self) -> None:
        self.buys = SortedList()  # (stop_price, accept_seq, order)
        self.sells = SortedList()  # (-stop_price, accept_seq, order)

    def add(self, order: Order) -> None:
        if order.is_buy:
            self.buys.add((order.stop_price, order.accept_seq, order))
        else:
            self.sells.add((-order.stop_price, order.accept_seq, order))

    def discard(self, order: Order) -> None:
        if order.is_buy:
            self.buys.remove((order.stop_price, order.accept_seq, order))
        else:
            self.sells.remove((-order.stop_price, order.accept_seq, order))

    def next_triggered(self, last: int) -> Order | None:
        """Return the first stop whose condition holds at *last*, or ``None``. O(1)."""
        buy: Order | None = self.buys[0][2] if self.buys and self.buys[0][0] <= last else None
        sell: Order | None = self.sells[0][2] if self.sells and -self.sells[0][0] >= last else None
        if buy is None or sell is None:
            return buy or sell
        return buy if buy.accept_seq < sell.accept_seq else sell

    def __len__(self) -> int:
        return len(self.buys) + len(self.sells)


class _Spec:
    """Per-instrument data the hot path needs, gathered in one place."""

    __slots__ = ("inst", "book", "prices", "quantities", "_band", "banded", "stops", "halted",
                 "away", "quoted", "direct")

    def __init__(self, inst: Instrument, book: OrderBook, band: tuple[int, int] | None) -> None:
        self.inst = inst
        self.book = book
        # Profiled (benchmarks/contenders.py): the price strings seen inside the current band ->
        # ticks, so that a limit price takes one look-up, not a parse and a band check; emptied
        # whenever the band moves (bounded by use).
        self.banded: dict[str | None, int] = {}
        self.band = band  # around the current reference price; None = no band
        self.stops: _Stops | None = None
        self.halted = False  # by the operator: no new orders or amends
        self.away = [0, 0]  # the day's block and auction volume
        self.quoted = False  # market makers have quoting obligations on it
        # Neither quoted nor ever given a stop order: a plain limit order goes straight to the
        # book (Engine._place). One test where there were two (benchmarks/contenders.py).
        self.direct = True
        self.prices: dict[str, int] = {}  # valid price strings -> ticks (bounded by use)
        # Profiled (benchmarks/contenders.py): one set lookup instead of four rules for each order's
        # quantity.
        self.quantities: set[int] = set()  # valid order quantities (bounded by use)

    @property
    def band(self) -> tuple[int, int] | None:
        return self._band

    @band.setter
    def band(self, band: tuple[int, int] | None) -> None:
        self._band = band
        self.banded.clear()

    def new_stops(self) -> _Stops:
        """The instrument's stop book, made for its first stop order: plain orders no
        longer go straight to the book (``direct``)."""
        self.stops = _Stops()
        self.direct = False
        return self.stops


class Engine:
    """Deterministic in-memory continuous double auction over all instruments of a market.

    >>> from exchange import Engine, PlaceOrder, default_market
    >>> engine = Engine(default_market())
    >>> events = engine.execute(PlaceOrder(order_id="s1", account="a", instrument="CEA25",
    ...                                    side="sell", price="60.00", qty=100))
    >>> events = engine.execute(PlaceOrder(order_id="b1", account="b", instrument="CEA25",
    ...                                    side="buy", price="60.10", qty=40))
    >>> [type(e).__name__ for e in events], events[1].price, events[1].qty
    (['OrderAccepted', 'TradeExecuted'], 6000, 40)

    Command window: the engine remembers ``(account, command_id)`` pairs, each with the
    events its command gave (its result event and the consequences after it; ``answer``):
    the ``command_window`` (W, default 100,000) most recent of all accounts, and besides
    them each account's own ``account_window`` (P, default 1,000) most recent, so that
    one account's flood cannot push another's ids out. A resend of a remembered id is
    rejected ``duplicate_command`` and changes nothing; an id is forgotten once W newer
    ids have come *and* P newer ids of its own account, and a resend of it then acts as a
    new command. At most W + P x (accounts) ids are remembered. The window is part of the
    state (``state_hash``, ``to_state``). Cost per remembered id:
    about 70 B of table (a dict entry and two deque slots), the key tuple (56 B), the id
    string, the tuple of events (48 B + 8 per event) and the events, which would
    otherwise be freed (some 140 B each, their strings shared): about 290 B for an order
    that rests, one event (tests/test_state.py measures it), so 29 MB at the default W,
    and at most 0.29 MB more for each account that sends ids (P = 1,000: the last full
    message of 1,000 commands a bot may resend);
    in time, two dict look-ups, an insert and an eviction per command that has an id.
    Commands without a ``command_id`` pay nothing.
    """

    # Profiled (benchmarks/contenders.py): declared slots, so that every ``self.`` read on the
    # hot paths is a fixed-offset load; as a plain instance (35 attributes) each took a
    # look-up in the instance dict.
    __slots__ = (
        "market", "_instruments", "_ctr", "_shortcuts", "_ids", "_live", "_done", "_done_order",
        "_books", "_reference", "_specs", "_gtd", "_schedule", "_listing", "clock",
        "clock_events", "day", "_ended", "accepted", "rejected", "rejects", "command_window",
        "account_window", "_sweep_at", "_sweep_seq", "_answers", "_answer_order",
        "_account_answers", "_ledger", "_holds", "_handlers", "_blocks", "_auctions", "away_trades",
        "away_volume", "_quoting"
    )

    # The measured shortcuts of _place for a plain order: a test turns them off and holds
    # the general path's events and state equal.
    shortcuts = True

    def __init__(self, market: Market, *, book: _BookFactory = FastBook, ledger: bool = False,
                 command_window: int = 100_000, account_window: int = 1_000) -> None:
        if command_window < 0:
            raise ValueError(f"command_window {command_window}: must be 0 or more")
        if account_window < 0:
            raise ValueError(f"account_window {account_window}: must be 0 or more")
        self.market = market
        self._instruments: dict[str, Instrument] = dict(market.instruments)
        self._ctr = Counters()
        # Read per order: an instance attribute is one specialised load, a class attribute read
        # through the instance a full look-up (benchmarks/contenders.py).
        self._shortcuts = self.shortcuts
        # The day's order ids, shared with the books (OrderIds): the live orders by id, and the
        # ids of done orders. Ids are unique per trading day; the end of the day clears done ids.
        # Its tables are bound here once: they are emptied and refilled in place, never replaced.
        self._ids = OrderIds()
        self._live = self._ids.live
        self._done = self._ids.done
        self._done_order = self._ids.done_order
        self._books: dict[str, OrderBook] = {
            sym: book(sym, self._ctr, self._ids)
            for sym in self._instruments
        }
        self._reference: dict[str, int | None] = {
            sym: inst.reference_price
            for sym, inst in self._instruments.items()
        }
        self._specs = {
            sym: _Spec(inst, self._books[sym], inst.price_band(self._reference[sym]))
            for sym, inst in self._instruments.items()
        }
        # Profiled (benchmarks/scaling.py): one price cache per tick size, not per
        # instrument, so a thousand instruments do not parse the same prices a thousand
        # times (price text to ticks depends on the tick alone).
        caches: dict[Scale, dict[str, int]] = {}
        for spec in self._specs.values():
            spec.prices = caches.setdefault(spec.inst.tick, spec.prices)
        self._gtd: list[_Expiry] = []
        # The trading day (exchange.schedule): the listing session that held the last order's
        # time, [from, until) in engine time, so an order in the same session is checked with
        # two comparisons; tests/test_schedule.py holds it equal to Schedule.is_open.
        self._schedule = market.schedule
        self._listing = _ALWAYS if market.schedule is None else (0, 0)
        self.clock = 0
        # Events the last move of the clock gave before its command's own (gtd expiries
        # and their settlement): a command that moved the clock answers with out[this].
        self.clock_events = 0
        self.day = 1
        # With a schedule, the local date (days from 1970-01-01) of the last end of day
        # that had a time: no second end of day that date or before, no trading on it.
        self._ended: int | None = None
        self.accepted = 0
        self.rejected = 0
        self.rejects: dict[str, int] = {}  # rejected commands by reason
        # (account, command_id) -> the events of its command, oldest first; the keys of the
        # W newest, oldest first; each account's remembered keys. Measured: a dict alone,
        # emptied from the front, makes each eviction scan the dead entries before the
        # first live one (90 us an id at W = 100,000).
        self.command_window = command_window
        self.account_window = account_window
        # Ids of done orders are kept for the day (an id is unique per day), but at most
        # the newest DONE_IDS of them: once _sweep_at ids are done the oldest are forgotten
        # (then _sweep_at is the number kept plus DONE_IDS), so memory follows what rests,
        # not the day's history; O(done ids) a sweep, amortised O(1) an order. An id
        # forgotten that way may be used again the same day.
        self._sweep_at = 2 * DONE_IDS
        # Before this seq the sweep cannot be due (_sweep_due).
        self._sweep_seq = 0
        self._answers: dict[_CommandKey, tuple[Event, ...]] = {}
        self._answer_order: deque[_CommandKey] = deque()
        self._account_answers: dict[str, _AccountWindow] = {}
        # Without a ledger, one that holds and settles nothing: the pipeline is the same.
        self._ledger: Ledger | NoLedger = (Ledger(market, self._ctr)
                                           if ledger else NoLedger(self._ctr))
        # Profiled (benchmarks/contenders.py, 6.8%): matching only, the null ledger's reserve,
        # settle and release, which do nothing, are not called (PlainPaths calls them).
        self._holds = ledger
        self._handlers: dict[type[AnyCommand], _Handler] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            AmendOrder: self._amend,
            MassCancel: self._mass_cancel,
            EndOfDay: self._end_of_day,
            AdvanceClock: self._clock_moved,
            HaltInstrument: self._halt,
            ResumeInstrument: self._halt
        }
        # The trading modes away from the book (exchange.blocks, exchange.auctions): their
        # trades, and those totals, count in ``trades`` and ``volume``.
        self._blocks = Blocks(self)
        self._auctions = Auctions(self)
        if isinstance(self._ledger, Ledger):
            self._ledger.promised = self._auctions.promised
        self.away_trades = 0
        self.away_volume = 0
        # The market-maker programme (exchange.makers): market makers' quoting measured on
        # the instruments that oblige them, from the book and the command clock.
        self._quoting: QuotingMonitor | None = None
        if market.quoting:
            self._quoting = QuotingMonitor(market.quoting, market.schedule, self._is_maker)
            for symbol in self._quoting.symbols:
                self._specs[symbol].quoted = True
                self._specs[symbol].direct = False
        self._handlers.update({
            PostBlock: self._blocks.post,
            AcceptBlock: self._blocks.accept,
            OpenAuction: self._auctions.open,
            BidAuction: self._auctions.bid,
            CloseAuction: self._auctions.close
        })
        for command_type in ADMIN_COMMANDS:
            self._handlers[command_type] = self._admin

    # --- entry points ------------------------------------------------------------------
    def submit(self, command: AnyCommand, out: list[Event]) -> None:
        """Process one command, appending its events to *out*. The hot entry point.

        The pipeline of the module docstring, in order: 1. sequence (a resend is answered
        from the command window; the clock moves and expires gtd orders), then the
        command's own handler (2. validate, 3. hold, 4. match, 5. stops), then 6. settle
        (the trades it made and the holds of the orders it ended), then the command window
        remembers its events. A handler that settles as it goes (the end of the day) says
        so by returning ``True``.
        """
        # 1. sequence
        key: _CommandKey | None = None
        if command.command_id is not None:
            key = (getattr(command, "account", None) or "", command.command_id)
            if key in self._answers:
                return self._reject_resend(command, key, out)
        ts = command.ts
        if ts is not None and ts > self.clock:
            self._advance_clock(ts, out)
        # 2. validate, 3. hold, 4. match, 5. stops. Where the command's events start, for
        # settling and the command window; matching only, without an id, nothing looks
        # (benchmarks/contenders.py: len() of a long list makes an int each command).
        first = len(out) if self._holds or key is not None else 0
        settled: bool | None
        if type(command) is PlaceOrder:  # the commonest, called directly (benchmarks/contenders.py)
            self._place(command, out)
            settled = None
        else:
            settled = self._handlers[type(command)](command, out)
        # 6. settle. Profiled (benchmarks/ledger.py): most commands give one event that moves
        # nothing (an order that rests, a rejection), so settlement looks only where there is more;
        # a cancel, the one command whose single event frees a hold, releases it itself.
        # Matching only, there is nothing to settle (benchmarks/contenders.py).
        if self._holds and not settled and len(out) - first > 1:
            self._ledger.settle(out, first)
        if key is not None:  # the command window keeps its events (its result on) for answer
            self._answers[key] = tuple(out[first:])
            self._window_add(key)
        return None

    def _reject_resend(self, command: AnyCommand, key: _CommandKey, out: list[Event]) -> None:
        """A command whose id is in the window was seen: reject it, change nothing."""
        self._reject(
            type(command).__struct_config__.tag,  # type: ignore[arg-type]  # tags are strs
            Reason.DUPLICATE_COMMAND, out, getattr(command, "order_id", None), key[0] or None,
            getattr(command, "instrument", None), command.ts)

    def _window_add(self, key: _CommandKey) -> None:
        """Take *key*, the newest remembered id, into the windows, and forget the id it
        pushes past both the global window and its own account's, if any.

        At most one id leaves the W newest: it is forgotten if none of its account's ids
        is outside yet and the account has more than P; otherwise it is kept, outside.
        The new id forgets its account's oldest if that is outside and the account now
        has more than P. So an account with an id outside has at most P (``check``)."""
        order = self._answer_order
        order.append(key)
        own = self._account_answers.get(key[0])
        if own is None:
            own = self._account_answers[key[0]] = _AccountWindow()
        own.keys.append(key)
        limit = self.account_window
        if len(order) > self.command_window:
            left = order.popleft()
            theirs = self._account_answers[left[0]]
            if not theirs.outside and len(theirs.keys) > limit:
                # _forget_answer(theirs), inlined: the common step once the window is full
                # (benchmarks/gateway.py, batched); its oldest is *left*
                theirs.keys.popleft()
                del self._answers[left]
                if not theirs.keys:
                    del self._account_answers[left[0]]
            else:
                theirs.outside += 1
        if own.outside and len(own.keys) > limit:
            own.outside -= 1
            self._forget_answer(own)

    def _forget_answer(self, own: _AccountWindow) -> None:
        """Forget the oldest remembered id of the account whose window is *own*."""
        key = own.keys.popleft()
        del self._answers[key]
        if not own.keys:
            del self._account_answers[key[0]]

    def answer(self, account: str | None, command_id: str) -> tuple[Event, ...] | None:
        """Return the events that the command *command_id* of *account* gave (its result
        event first, then its consequences, as ``submit`` appended them), while it is in
        the command window; else ``None``. For commands without an account, ``""``."""
        return self._answers.get((account or "", command_id))

    @property
    def answered(self) -> Mapping[tuple[str, str], tuple[Event, ...]]:
        """The command window, read-only: ``(account or "", command_id)`` to the events
        that command gave, as ``answer`` returns them."""
        return self._answers

    @property
    def last_day_ended(self) -> int | None:
        """The last local day (a day number) an end of day ended, with the market's
        schedule; ``None`` before the first, or without a schedule."""
        return self._ended

    def id_used(self, order_id: str) -> bool:
        """Is *order_id* used today, by an order, a block, a bid or an auction?"""
        return order_id in self._ids or order_id in self._auctions.auctions

    def execute(self, command: AnyCommand) -> list[Event]:
        """Process one command and return its events."""
        out: list[Event] = []
        self.submit(command, out)
        return out

    # --- queries -----------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger | None:
        """The ledger, or ``None`` for a matching-only engine."""
        ledger = self._ledger
        return ledger if isinstance(ledger, Ledger) else None

    @property
    def seq(self) -> int:
        """The ``seq`` of the last event."""
        return self._ctr.seq

    def book(self, symbol: str) -> OrderBook:
        """Return the order book of *symbol*."""
        return self._books[symbol]

    def live_orders(self) -> list[Order]:
        """Return every live order (resting, or a stop not yet triggered), in the order
        they were accepted. O(live orders)."""
        return [o for o in self._live.values() if o.qty]

    def order(self, order_id: str) -> Order | None:
        """Return the live order *order_id* (resting or untriggered stop), or ``None``."""
        order = self._live.get(order_id)
        return order if order is not None and order.qty else None

    def reference_price(self, symbol: str) -> int | None:
        return self._reference[symbol]

    def price_band(self, symbol: str) -> tuple[int, int] | None:
        return self._specs[symbol].band

    @property
    def trades(self) -> int:
        return sum(b.trade_count for b in self._books.values()) + self.away_trades

    @property
    def volume(self) -> int:
        return sum(b.volume for b in self._books.values()) + self.away_volume

    def open_blocks(self) -> list[tuple[Order, str | None]]:
        """The blocks posted and not yet accepted: (the block, its named counterparty)."""
        return list(self._blocks.open.values())

    @property
    def auctions(self) -> Auctions:
        """The day's auctions (``exchange.auctions``)."""
        return self._auctions

    # --- the trading modes away from the book ---------------------------------------------
    def _session_reason(self, mode: str, ts: int | None, symbol: str) -> str | None:
        """Why a command of trading *mode* at *ts* on *symbol* cannot act now, or ``None``:
        outside the mode's session or off a business day, or the instrument halted."""
        schedule = self._schedule
        if ts is not None and schedule is not None and (schedule.open_span(mode, ts) is None
                                                        or self._day_ended(ts)):
            return Reason.MARKET_CLOSED
        if self._specs[symbol].halted:
            return Reason.INSTRUMENT_HALTED
        return None

    def _traded_away(self, symbol: str, qty: int, block: bool) -> None:
        """Count a block or auction trade in the totals and the day's statistics."""
        self.away_trades += 1
        self.away_volume += qty
        self._specs[symbol].away[0 if block else 1] += qty

    def _end_away(self, order: Order, reason: str | None, out: list[Event]) -> None:
        """End a block or an auction bid: cancelled for *reason*, or expired (no reason);
        its hold is given back."""
        ctr = self._ctr
        ctr.seq += 1
        if reason is None:
            out.append(
                OrderExpired(seq=ctr.seq, order_id=order.order_id, account=order.account,
                             instrument=order.instrument, side=order.side, expired_qty=order.qty))
        else:
            out.append(
                OrderCancelled(seq=ctr.seq, order_id=order.order_id, account=order.account,
                               instrument=order.instrument, side=order.side,
                               cancelled_qty=order.qty, reason=reason))
        self._ledger.release(order.order_id)
        order.qty = order.visible = 0

    # --- rejections ----------------------------------------------------------------------
    def _reject(self, action: str, reason: str, out: list[Event], order_id: str | None = None,
                account: str | None = None, instrument: str | None = None,
                ts: int | None = None) -> None:
        ctr = self._ctr
        ctr.seq += 1
        self.rejected += 1
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        out.append(
            CommandRejected(seq=ctr.seq, action=action, reason=reason, order_id=order_id,
                            account=account, instrument=instrument, ts=ts))

    def _reject_order(self, cmd: PlaceOrder, reason: str, out: list[Event]) -> None:
        self._reject("new", reason, out, cmd.order_id, cmd.account, cmd.instrument, cmd.ts)

    # --- new order ---------------------------------------------------------------------
    def _place(self, cmd: PlaceOrder, out: list[Event]) -> None:
        # Profiled hot path (benchmarks/contenders.py): the common limit order takes the fewest
        # branches; the rarer features (stops, icebergs, post-only, gtd) are checked in
        # _check_features.
        # 2. validate. The first rule broken is the reason.
        symbol = cmd.instrument
        # Subscripts, not dict.get, on the hot path (benchmarks/contenders.py): a method call
        # costs more than the look-up; the misses (KeyError) are rare.
        try:
            spec = self._specs[symbol]
        except KeyError:
            return self._reject_order(cmd, Reason.UNKNOWN_INSTRUMENT, out)
        ts = cmd.ts
        if ts is not None:
            listing = self._listing
            if not listing[0] <= ts < listing[1] and not self._in_session(ts):
                return self._reject_order(cmd, Reason.MARKET_CLOSED, out)
        if spec.halted:
            return self._reject_order(cmd, Reason.INSTRUMENT_HALTED, out)
        order_id = cmd.order_id
        account = cmd.account
        if not order_id or not account:
            return self._reject_order(cmd, Reason.MISSING_FIELD, out)
        if order_id in self._live or order_id in self._done:
            return self._reject_order(cmd, Reason.DUPLICATE_ORDER_ID, out)
        ctr = self._ctr
        # Profiled (benchmarks/contenders.py): a seq compared, not the done ids counted (len makes
        # an int object), on all but the first order of a stretch (_sweep_due).
        if ctr.seq >= self._sweep_seq and self._sweep_due():
            self._forget_done()
        # The commonest by a string compare, the others by a look-up (benchmarks/contenders.py).
        kind = LIMIT if cmd.type == "limit" else KIND_CODES[cmd.type]
        tif = GTC if cmd.tif == "gtc" else TIF_CODES[cmd.tif]
        text = cmd.price
        price: int | Reason  # a Reason only on the way to a rejection
        if kind == LIMIT or kind in PRICED:  # the commonest first (benchmarks/contenders.py)
            try:
                price = spec.banded[text]
            except KeyError:
                price = self._limit_price(spec, text)  # not seen inside this band yet
                if isinstance(price, Reason):
                    return self._reject_order(cmd, price, out)
        elif text is not None:
            return self._reject_order(cmd, Reason.PRICE_NOT_ALLOWED, out)
        else:
            price = 0
        qty = cmd.qty
        if qty not in spec.quantities and self._refused_quantity(cmd, spec, out):
            return None
        stp_name = cmd.stp or "cancel_resting"
        # A plain order (no stop, iceberg, post-only or gtd) takes the shortcuts below;
        # tests/test_properties.py holds them equal to the general path (``shortcuts``).
        # Tested in an if, not kept as a value (benchmarks/contenders.py): each test is then one
        # specialised compare-and-jump.
        if (self._shortcuts and kind < STOP and cmd.stop_price is None
                and cmd.display_qty is None and not cmd.post_only and tif != GTD
                and cmd.expire_ts is None):
            plain = True
        else:
            plain = False
            checked = self._check_features(cmd, spec, kind, tif, qty)
            if type(checked) is not tuple:
                return self._reject_order(cmd, checked, out)  # type: ignore[arg-type]  # a str
            stop_price, display = checked
        is_buy = cmd.side == "buy"
        # 3. risk hold (with a ledger). A market buy with no band may be cut to what
        # the account can pay for; the rest is cancelled once it has traded.
        affordable: int | None = None
        if self._holds:  # matching only, every order is affordable (benchmarks/contenders.py)
            if kind == LIMIT or kind in PRICED:  # the commonest first (benchmarks/ledger.py)
                held = self._ledger.reserve(order_id, account, symbol, is_buy, price, qty)
            else:
                held = self._ledger.reserve(order_id, account, symbol, is_buy, price, qty, kind,
                                            False, STP_CODES[stp_name], spec.band, spec.book)
            if held is not None:
                if type(held) is not int:  # a Reason
                    return self._reject_order(cmd, held, out)  # type: ignore[arg-type]
                affordable = held
        # Accepted: the result event, then the order acts.
        ctr.seq = seq = ctr.seq + 1
        self.accepted += 1
        if plain:
            # Profiled (benchmarks/contenders.py): the fields by position, in the event's order
            # (order_id, account, instrument, side, type, tif, price, qty, stop_price,
            # display_qty, post_only, stp, expire_ts, ts); only seq, keyword-only, by name.
            out.append(
                OrderAccepted(order_id, account, symbol, cmd.side, cmd.type, cmd.tif,
                              price or None, qty, None, 0, False, stp_name, None, cmd.ts,
                              seq=seq))
            order = Order(order_id, account, symbol, is_buy, price, qty, qty, 0, kind, tif,
                          STP_CODES[stp_name], False, 0, 0, seq)
            if kind == LIMIT and spec.direct:
                # Profiled (benchmarks/contenders.py): the commonest order goes straight to its book
                # (4. match).
                spec.book.submit(order, out)
                if not order.qty:  # it did not rest: its id is done (OrderIds.retire, inlined)
                    self._done.add(order_id)
                    self._done_order.append(order_id)
                return None
        else:
            out.append(
                OrderAccepted(order_id=order_id, account=account, instrument=symbol, side=cmd.side,
                              type=cmd.type, tif=cmd.tif, price=price or None, qty=qty,
                              stop_price=stop_price or None, display_qty=display,
                              post_only=cmd.post_only, stp=stp_name, expire_ts=cmd.expire_ts,
                              ts=cmd.ts, seq=seq))
            order = Order(order_id, account, symbol, is_buy, price, qty, display or qty, display,
                          kind, tif, STP_CODES[stp_name], cmd.post_only, stop_price, cmd.expire_ts
                          or 0, seq)
            if tif == GTD:
                heapq.heappush(self._gtd, (order.expire_ts, seq, order))
        if spec.quoted:
            self._quoting.watch(order)  # type: ignore[union-attr]  # set with quoted
        return self._act(order, spec, affordable, out)

    def _act(self, order: Order, spec: _Spec, affordable: int | None, out: list[Event]) -> None:
        """The accepted *order* acts, off the shortcut of ``_place``: a stop waits for its
        trigger; otherwise 4. match, then 5. stops the trades trigger. *affordable*: what a
        market buy's account can pay for, if the ledger cut it."""
        # Apart from _place (benchmarks/contenders.py): each local of a function costs every call
        # of it, and the commonest order never comes here.
        symbol = order.instrument
        order_id = order.order_id
        book = spec.book
        stops = spec.stops
        if order.kind >= STOP:
            if stops is None:
                stops = spec.new_stops()
            stops.add(order)
            self._live[order_id] = order
            if book.last_price is not None:
                self._run_stops(symbol, book, stops, out)
            return None
        # The book enters the order in the live ids if it rests; an order that does not rest leaves
        # its id done for the day.
        if order.kind == MARKET:
            self._ids.retire(order_id)
            order.price = self._market_limit(symbol, order.is_buy)
            if affordable is not None:
                return self._submit_affordable(order, affordable, spec, out)
        # 4. match, then 5. stops the trades trigger
        trades_before = book.trade_count
        book.submit(order, out)
        if not order.qty:
            self._ids.retire(order_id)
        if stops and book.trade_count != trades_before:
            self._run_stops(symbol, book, stops, out)
        return None

    def _in_session(self, ts: int) -> bool:
        """Is the listing session open at *ts*? Remembers the session that holds it."""
        schedule = self._schedule
        if schedule is None:
            return True
        span = schedule.open_span("listing", ts)
        if span is None or self._day_ended(ts):
            return False
        self._listing = span
        return True

    def _day_ended(self, ts: int) -> bool:
        """Is *ts* on a business day that an end of day has already ended (with a
        schedule)? Its sessions are then over, whatever their hours said."""
        assert self._schedule is not None
        return self._ended is not None and self._schedule.local_day(ts) <= self._ended

    def _submit_affordable(self, order: Order, affordable: int, spec: _Spec,
                           out: list[Event]) -> None:
        """Match a market buy cut to what its account can pay; cancel the rest."""
        short = order.qty - affordable
        order.qty = order.visible = affordable
        book = spec.book
        trades_before = book.trade_count
        start = len(out)
        book.submit(order, out)
        # The book saw only the affordable part: report leaves against the whole order.
        for index in range(start, len(out)):
            trade = out[index]
            if type(trade) is TradeExecuted and trade.buy_order_id == order.order_id:
                out[index] = msgspec.structs.replace(trade,
                                                     buy_leaves_qty=trade.buy_leaves_qty + short)
        order.qty = short
        book.cancel_remainder(order, Reason.INSUFFICIENT_CASH, out)
        if spec.stops and book.trade_count != trades_before:
            self._run_stops(order.instrument, book, spec.stops, out)

    def _check_features(self, cmd: PlaceOrder, spec: _Spec, kind: int, tif: int,
                        qty: int) -> str | tuple[int, int]:
        """Check stop price, iceberg, post-only and gtd rules.

        Return a reject reason, or ``(stop_price, display_qty)`` in units.
        """
        inst = spec.inst
        stop_price = 0
        if kind >= STOP:
            if cmd.stop_price is None:
                return Reason.MISSING_STOP_PRICE
            stop = self._ticks(inst, cmd.stop_price)
            if not isinstance(stop, int):
                return stop
            stop_price = stop
        elif cmd.stop_price is not None:
            return Reason.STOP_PRICE_NOT_ALLOWED
        rests = kind != MARKET and kind != STOP and tif != IOC and tif != FOK
        display = 0
        if cmd.display_qty is not None:
            display = cmd.display_qty
            if (not rests or display <= 0 or display > qty or display % inst.qty_step
                    or display < inst.min_qty):
                return Reason.INVALID_DISPLAY_QTY
            if display == qty:
                display = 0
        if cmd.post_only and (not rests or kind != LIMIT):
            return Reason.POST_ONLY_NOT_ALLOWED
        if tif == GTD:
            if cmd.expire_ts is None:
                return Reason.MISSING_EXPIRE_TS
            if cmd.expire_ts <= self.clock:
                return Reason.EXPIRE_TS_IN_PAST
        elif cmd.expire_ts is not None:
            return Reason.EXPIRE_TS_NOT_ALLOWED
        return stop_price, display

    def _limit_price(self, spec: _Spec, text: str | None) -> int | Reason:
        """The limit price *text* in ticks of *spec*'s instrument, or why it is none: missing,
        not a valid price (``_ticks``) or outside the band. A valid price inside the band is
        remembered in ``spec.banded``."""
        if text is None:
            return Reason.MISSING_PRICE
        try:
            price = spec.prices[text]
        except KeyError:
            ticks = self._ticks(spec.inst, text)  # a price not seen yet: the rare path
            if not isinstance(ticks, int):
                return ticks
            price = ticks
            if len(spec.prices) < _PRICE_CACHE:
                spec.prices[text] = price
        band = spec.band
        if band is not None and not band[0] <= price <= band[1]:
            return Reason.PRICE_OUT_OF_BAND
        if len(spec.banded) < _PRICE_CACHE:
            spec.banded[text] = price
        return price

    @staticmethod
    def _ticks(inst: Instrument, text: str) -> int | Reason:
        """The price *text* in ticks of *inst*, or why it is none: off the tick, or not a
        positive price within reach (not a number at all, zero, negative, too large)."""
        try:
            ticks = inst.tick.to_units(text)
        except ValueError:
            return Reason.INVALID_PRICE
        if ticks is None:
            return Reason.OFF_TICK
        if ticks <= 0 or ticks > MAX_PRICE_TICKS:
            return Reason.INVALID_PRICE
        return ticks

    def _refused_quantity(self, cmd: PlaceOrder, spec: _Spec, out: list[Event]) -> bool:
        """Reject *cmd* if its quantity breaks a rule of *spec*'s instrument (``True``);
        otherwise remember the quantity as valid (``False``)."""
        reason = self._quantity_rule(spec.inst, cmd.qty)
        if reason is not None:
            self._reject_order(cmd, reason, out)
            return True
        if len(spec.quantities) < _PRICE_CACHE:
            spec.quantities.add(cmd.qty)
        return False

    @staticmethod
    def _quantity_rule(inst: Instrument, qty: int) -> str | None:
        if qty <= 0:
            return Reason.INVALID_QUANTITY
        if qty % inst.qty_step:
            return Reason.OFF_STEP
        if qty > inst.max_qty:
            return Reason.QUANTITY_ABOVE_MAXIMUM
        if qty < inst.min_qty:
            return Reason.QUANTITY_BELOW_MINIMUM
        return None

    def _market_limit(self, symbol: str, is_buy: bool) -> int:
        band = self._specs[symbol].band
        if is_buy:
            return band[1] if band is not None else NO_LIMIT
        return band[0] if band is not None else 0

    # --- stops -------------------------------------------------------------------------
    def _run_stops(self, symbol: str, book: OrderBook, stops: _Stops, out: list[Event]) -> None:
        """Trigger stops on the last price, one at a time, until none qualifies."""
        ctr = self._ctr
        while stops:
            # Called once the book has a last price (it traded): never None here.
            last: int = book.last_price  # type: ignore[assignment]  # not None
            order = stops.next_triggered(last)
            if order is None:
                return
            stops.discard(order)  # it stays live by its id: resting, it keeps its place there
            ctr.seq += 1
            out.append(
                OrderTriggered(seq=ctr.seq, order_id=order.order_id, account=order.account,
                               instrument=symbol, side=order.side, stop_price=order.stop_price,
                               last_price=last))
            capped = False
            if order.kind == STOP:
                order.kind = MARKET
                order.price = self._market_limit(symbol, order.is_buy)
                if order.is_buy:
                    # Its hold was sized at the band's top when it was placed; a later day's
                    # band may reach higher. The hold follows if the account's cash covers
                    # it; else the order buys no higher than its hold was sized at.
                    held = self._ledger.hold_price(order.order_id)
                    if held < order.price and not self._ledger.reprice(order.order_id,
                                                                       order.price):
                        order.price = held
                        capped = True
            else:
                order.kind = LIMIT
                band = self._specs[symbol].band
                if band is not None and not band[0] <= order.price <= band[1]:
                    book.cancel_remainder(order, Reason.STOP_LIMIT_OUT_OF_BAND, out)
                    self._ids.retire(order.order_id)
                    continue
            book.submit(order, out)
            if capped:
                # Offers it could not pay for were left: its rest went for want of cash.
                ended = out[-1]
                ask = book.best_ask()
                if (type(ended) is OrderCancelled and ended.order_id == order.order_id
                        and ask is not None and ask > order.price):
                    out[-1] = msgspec.structs.replace(ended, reason=Reason.INSUFFICIENT_CASH)
            if not order.qty:
                self._ids.retire(order.order_id)

    # --- cancel ------------------------------------------------------------------------
    def _cancel(self, cmd: CancelOrder, out: list[Event]) -> None:
        try:  # a subscript, not dict.get (benchmarks/contenders.py): a miss is rare
            order = self._live[cmd.order_id]
        except KeyError:
            return self._cancel_plain(cmd, out)  # rejects, or finds a block or an auction bid
        if (not order.qty or order.account != cmd.account or order.kind >= STOP
                or (cmd.instrument and cmd.instrument != order.instrument)):
            return self._cancel_plain(cmd, out)  # rejects, or finds a pending stop
        # Profiled hot path (benchmarks/contenders.py: 0.62x -> 0.67x the plain matcher): a
        # resting order cancelled by its owner skips the general _owned/_take_out calls.
        # tests/test_properties.py holds it equal to _cancel_plain.
        qty = order.qty
        self._books[order.instrument].remove(order)
        order_id = order.order_id
        del self._live[order_id]  # OrderIds.retire, inlined
        self._done.add(order_id)
        self._done_order.append(order_id)
        self.accepted += 1
        ctr = self._ctr
        ctr.seq = seq = ctr.seq + 1
        # By position: order_id, account, instrument, side, cancelled_qty, reason.
        out.append(OrderCancelled(order_id, order.account, order.instrument,
                                  "buy" if order.is_buy else "sell", qty, _BY_OWNER, seq=seq))
        if self._holds:  # matching only, nothing was held (benchmarks/contenders.py)
            self._ledger.release(order_id)
        return None

    def _cancel_plain(self, cmd: CancelOrder, out: list[Event]) -> None:
        """Cancel any live order of the command's account (resting, or a stop not yet
        triggered), an open block or an auction bid, or reject the command: the general
        path of ``_cancel``."""
        if cmd.order_id not in self._live:
            away = self._blocks.find(cmd.order_id) or self._auctions.find(cmd.order_id)
            if away is not None and cmd.instrument and cmd.instrument != away.instrument:
                # on another instrument than the command names: as for an order
                return self._reject("cancel", Reason.UNKNOWN_ORDER, out, cmd.order_id,
                                    cmd.account, cmd.instrument, cmd.ts)
            if away is not None and away.account != cmd.account:
                return self._reject("cancel", Reason.NOT_OWNER, out, cmd.order_id, cmd.account,
                                    cmd.instrument, cmd.ts)
            if away is not None and (self._blocks.cancel(cmd.order_id, cmd.account, out)
                                     or self._auctions.cancel(cmd.order_id, cmd.account, out)):
                self.accepted += 1
                return None
        order = self._owned(cmd, "cancel", out)
        if order is None:
            return None
        self.accepted += 1
        self._take_out(order, Reason.CANCELLED_BY_OWNER, out)
        self._ledger.release(order.order_id)
        return None

    def _owned(self, cmd: CancelOrder | AmendOrder, action: str, out: list[Event]) -> Order | None:
        """Return the live order a cancel/amend targets, or reject the command."""
        order = self._live.get(cmd.order_id)
        if (order is None or not order.qty
                or (cmd.instrument and cmd.instrument != order.instrument)):
            self._reject(action, Reason.UNKNOWN_ORDER, out, cmd.order_id, cmd.account,
                         cmd.instrument, cmd.ts)
            return None
        if order.account != cmd.account:
            self._reject(action, Reason.NOT_OWNER, out, cmd.order_id, cmd.account, cmd.instrument,
                         cmd.ts)
            return None
        return order

    def _take_out(self, order: Order, reason: str | None, out: list[Event]) -> None:
        """Remove a live order; emit ``OrderCancelled`` (or ``OrderExpired`` if no reason)."""
        qty = order.qty
        if order.kind >= STOP:
            # A live stop's instrument has its _Stops (made with its first stop).
            self._specs[order.instrument].stops.discard(order)  # type: ignore[union-attr]  # set
            order.qty = order.visible = 0
        else:
            self._books[order.instrument].remove(order)
        self._ids.retire(order.order_id)
        ctr = self._ctr
        ctr.seq += 1
        if reason is None:
            out.append(
                OrderExpired(seq=ctr.seq, order_id=order.order_id, account=order.account,
                             instrument=order.instrument, side=order.side, expired_qty=qty))
        else:
            out.append(
                OrderCancelled(seq=ctr.seq, order_id=order.order_id, account=order.account,
                               instrument=order.instrument, side=order.side, cancelled_qty=qty,
                               reason=reason))

    # --- amend -------------------------------------------------------------------------
    def _amend(self, cmd: AmendOrder, out: list[Event]) -> None:
        order = self._owned(cmd, "amend", out)
        if order is None:
            return None
        inst = self._instruments[order.instrument]

        def reject(reason: str) -> None:
            self._reject("amend", reason, out, cmd.order_id, cmd.account, cmd.instrument, cmd.ts)

        ts = cmd.ts
        listing = self._listing
        if ts is not None and not listing[0] <= ts < listing[1] and not self._in_session(ts):
            return reject(Reason.MARKET_CLOSED)
        if self._specs[order.instrument].halted:
            return reject(Reason.INSTRUMENT_HALTED)
        price = order.price
        if cmd.price is not None:
            if order.kind == STOP:
                return reject(Reason.PRICE_NOT_ALLOWED)
            ticks = self._ticks(inst, cmd.price)
            if not isinstance(ticks, int):
                return reject(ticks)
            price = ticks
            band = self._specs[order.instrument].band
            if price != order.price and band is not None and not band[0] <= price <= band[1]:
                return reject(Reason.PRICE_OUT_OF_BAND)
        qty = order.qty
        if cmd.qty is not None:
            qty = cmd.qty
            reason = self._quantity_rule(inst, qty)
            if reason is not None:
                return reject(reason)
        book = self._books[order.instrument]
        resting = order.kind < STOP
        keeps = price == order.price and qty <= order.qty
        if resting and not keeps and order.post_only and book.would_cross(order.is_buy, price):
            return reject(Reason.POST_ONLY_WOULD_TRADE)
        refused = self._ledger.amend(order.order_id, order.account, order.instrument, price, qty)
        if refused is not None:
            return reject(refused)

        self.accepted += 1
        ctr = self._ctr
        ctr.seq += 1
        old_price, old_qty = order.price, order.qty
        out.append(
            OrderAmended(seq=ctr.seq, order_id=order.order_id, account=order.account,
                         instrument=order.instrument, side=order.side,
                         price=price if order.kind != STOP else None, qty=qty,
                         old_price=old_price if order.kind != STOP else None, old_qty=old_qty,
                         priority_kept=keeps or not resting))
        if not resting:  # an untriggered stop keeps its trigger place
            order.price = price
            order.qty = qty
            order.visible = visible_of(order.display, qty)
            return None
        if keeps:
            book.reduce(order, qty)
            return None
        # Loses priority: a fresh order object goes to the back of its (new) level and
        # may trade at once, under the same id (it keeps its place among the live ids). The
        # old object stays dead for the lazy deleters.
        book.remove(order)
        renewed = msgspec.structs.replace(order, price=price, qty=qty,
                                          visible=visible_of(order.display, qty))
        if renewed.tif == GTD:
            # The amend's seq breaks ties: the old entry (now dead) has the accept seq.
            heapq.heappush(self._gtd, (renewed.expire_ts, ctr.seq, renewed))
        if self._quoting is not None and self._specs[renewed.instrument].quoted:
            self._quoting.watch(renewed)
        trades_before = book.trade_count
        book.submit(renewed, out)
        if not renewed.qty:
            self._ids.retire(renewed.order_id)
        if book.trade_count != trades_before:
            stops = self._specs[renewed.instrument].stops
            if stops:
                self._run_stops(renewed.instrument, book, stops, out)
        return None

    # --- mass cancel ---------------------------------------------------------------------
    def _mass_cancel(self, cmd: MassCancel, out: list[Event]) -> None:
        if not cmd.account:
            return self._reject("mass_cancel", Reason.MISSING_FIELD, out, None, cmd.account,
                                cmd.instrument, cmd.ts)
        if cmd.instrument is not None and cmd.instrument not in self._instruments:
            return self._reject("mass_cancel", Reason.UNKNOWN_INSTRUMENT, out, None, cmd.account,
                                cmd.instrument, cmd.ts)
        is_buy = None if cmd.side is None else cmd.side == "buy"

        def named(order: Order) -> bool:
            return order.account == cmd.account and (
                cmd.instrument is None or order.instrument == cmd.instrument) and (
                    is_buy is None or order.is_buy == is_buy)

        # The account's live orders, then its open blocks and its bids in open auctions:
        # a member's kill switch leaves nothing of its own that could still trade.
        targets = [o for o in self.live_orders() if named(o)]
        blocks = [o for o in self._blocks.orders() if named(o)]
        bids = [o for o in self._auctions.open_bids() if named(o)]
        self.accepted += 1
        ctr = self._ctr
        ctr.seq += 1
        out.append(
            MassCancelAccepted(seq=ctr.seq, account=cmd.account, instrument=cmd.instrument,
                               side=cmd.side, count=len(targets) + len(blocks) + len(bids)))
        for order in targets:
            self._take_out(order, Reason.MASS_CANCEL, out)
        for order in blocks:
            self._blocks.cancel(order.order_id, cmd.account, out, Reason.MASS_CANCEL)
        for order in bids:
            self._auctions.cancel(order.order_id, cmd.account, out, Reason.MASS_CANCEL)

    # --- time ----------------------------------------------------------------------------
    def next_expiry(self) -> int | None:
        """The time of the earliest expiry of a live gtd order, or None.

        Entries of orders gone since (filled, cancelled, amended to a new expiry) are
        dropped from the front of the queue on the way: moving the clock past them would
        expire nothing, so the gateway would journal a move of the clock for nothing. The
        state and its hash never held them (``_state`` lists live orders' entries only)."""
        gtd = self._gtd
        live = self._live
        while gtd:
            expire_ts, _, order = gtd[0]
            if order.qty and live.get(order.order_id) is order:
                return expire_ts
            heapq.heappop(gtd)
        return None

    def _clock_moved(self, cmd: AdvanceClock, out: list[Event]) -> None:
        """``AdvanceClock``: ``submit`` has moved the clock (and expired what it passed)."""
        if cmd.ts is None:
            return self._reject("clock", Reason.MISSING_FIELD, out)
        ctr = self._ctr
        ctr.seq += 1
        self.accepted += 1
        out.append(ClockAdvanced(seq=ctr.seq, ts=self.clock))
        return None

    def _advance_clock(self, ts: int, out: list[Event]) -> None:
        """Move the clock to *ts*, expiring the gtd orders whose time it passes. A market
        maker's quotes count as they stood: a gtd order until its own expire_ts."""
        quoting = self._quoting
        self.clock = ts
        self._ledger.set_clock(ts)
        gtd = self._gtd
        start = len(out)
        while gtd and gtd[0][0] <= ts:
            expire_ts, _, order = heapq.heappop(gtd)
            if order.qty and self._live.get(order.order_id) is order:
                if quoting is not None:
                    quoting.advance(expire_ts)  # the book as it stood until the expiry
                self._take_out(order, None, out)
        if quoting is not None:
            quoting.advance(ts)  # ... and after it, until now
        if len(out) > start:
            self._ledger.settle(out, start)  # expired gtd orders give back their holds
        self.clock_events = len(out) - start

    def _end_of_day(self, cmd: EndOfDay, out: list[Event]) -> bool:
        """End the day: expire day orders, set reference prices from the day's close;
        with a ledger, settle the day (T+1 locks, futures settlement, margin calls,
        close-outs, expiry, delivery). Return whether it settled its own events."""
        ts = cmd.ts
        schedule = self._schedule
        if ts is not None and schedule is not None and not schedule.day_over(ts):
            # An end of day comes on a business day, after its last session.
            reason = (Reason.MARKET_OPEN
                      if schedule.is_business_day(schedule.local_day(ts)) else Reason.MARKET_CLOSED)
            self._reject("eod", reason, out, ts=ts)
            return True
        date = (None if ts is None else
                schedule.local_day(ts) if schedule is not None else day_of_ns(ts))
        if schedule is not None and date is not None:
            # With a schedule, one end of day a business day, and never one for a day
            # before one already ended. (Open at all hours, each eod ends a trading day.)
            if self._ended is not None and date <= self._ended:
                self._reject("eod", Reason.DAY_ENDED, out, ts=ts)
                return True
            self._ended = date
            self._listing = (0, 0)  # the session of that day is over
        start = len(out)
        self.accepted += 1
        ctr = self._ctr
        ctr.seq += 1
        out.append(TradingDayEnded(seq=ctr.seq, day=self.day, ts=ts))
        if self._quoting is not None and ts is None:
            # An end of day without a time: the rest of the day's sessions count with the
            # orders as they stood, so before anything of the day's end takes one out
            # (day orders expiring, the new band's cancels). The gtd orders still live, in
            # time order: close_day stops at the day's end.
            live = self._live
            self._quoting.close_day([(expire_ts, order) for expire_ts, _, order
                                     in sorted(self._gtd)
                                     if order.qty and live.get(order.order_id) is order])
        for order in [o for o in self.live_orders() if o.tif == DAY]:
            self._take_out(order, None, out)
        ledger = self._ledger
        ledger.settle(out, start)  # day orders that expired give back their holds
        # Auctions still open clear before the close is computed; blocks not accepted expire
        # (each settles as it goes).
        self._auctions.clear_all(out, ts)
        self._blocks.expire(out)
        for symbol, book in self._books.items():
            volume = book.day_volume
            # The close is of the trades between two accounts: an account's trades with
            # itself (stp none) move nothing, and would move the band where it liked.
            closing = volume - book.day_self_volume
            previous = self._reference[symbol]
            away = self._specs[symbol].away
            if not volume and previous is None and not any(away):
                continue  # never traded, no reference: no statistics
            inst = self._instruments[symbol]
            close = previous
            if closing:
                # Close = volume-weighted average price of the day, to the nearest tick,
                # halves rounded up.
                notional = book.day_notional - book.day_self_notional
                close = (2 * notional + closing) // (2 * closing)
                self._reference[symbol] = close
                self._specs[symbol].band = inst.price_band(close)
                ctr.seq += 1
                out.append(
                    ReferencePriceSet(seq=ctr.seq, instrument=symbol, price=close,
                                      close_volume=closing))
            ctr.seq += 1
            out.append(
                DailyStatistics(seq=ctr.seq, instrument=symbol, day=self.day, date=date,
                                open=book.day_open if volume else None,
                                high=book.day_high if volume else None,
                                low=book.day_low if volume else None, close=close, volume=volume,
                                turnover=book.day_notional * inst.tick_value,
                                block_volume=away[0], auction_volume=away[1]))
            if closing:
                self._cancel_out_of_band(symbol, out)
            book.day_volume = book.day_notional = book.day_self_volume = 0
            book.day_self_notional = 0
            away[0] = away[1] = 0
        if self._quoting is not None:
            self._assess_quoting(out)
        close_outs, expiring = ledger.end_of_day(out, self._books, self.day)
        for order in [o for o in self.live_orders() if o.instrument in expiring]:
            mark = len(out)
            self._take_out(order, Reason.CONTRACT_EXPIRED, out)
            ledger.settle(out, mark)
        if close_outs:
            self._close_out(close_outs, out)
        self.day += 1
        # A new day: ids of done orders may be used again; live orders keep theirs.
        self._ids.clear_done()
        return True

    def _cancel_out_of_band(self, symbol: str, out: list[Event]) -> None:
        """Cancel the resting limit orders of *symbol* that the band the end of the day
        set has left on its near side, a sell under the low edge or a buy over the high
        edge: any order inside the band would trade with them, at their price, outside
        it. Those beyond the far edge (a sell over the high edge, a buy under the low)
        stay: nothing inside the band reaches them. Untriggered stop limits wait for their
        trigger (``stop_limit_out_of_band``)."""
        spec = self._specs[symbol]
        if spec.band is None:
            return
        low, high = spec.band
        book = spec.book
        mark = len(out)
        # each side best first: the near side's out-of-band orders lead it
        for order in [*takewhile(lambda o: o.price > high, book.orders(True)),
                      *takewhile(lambda o: o.price < low, book.orders(False))]:
            self._take_out(order, Reason.PRICE_OUT_OF_BAND, out)
        if len(out) > mark:
            self._ledger.settle(out, mark)  # their holds given back

    def _sweep_due(self) -> bool:
        """Are the ids of done orders due to be swept (``_sweep_at`` of them or more)? If
        not, remember the seq before which they cannot be: each id that is done comes with
        an event of its own (its order's acceptance, cancellation, trade or expiry, a
        block's or an auction's or a bid's acceptance), so they grow by one a seq at most."""
        room = self._sweep_at - len(self._done_order)
        if room > 0:
            self._sweep_seq = self._ctr.seq + room
            return False
        return True

    def _forget_done(self) -> None:
        """Forget the oldest ids of done orders, keeping the newest ``DONE_IDS`` and the
        ids that open blocks, auctions and bids keep in use."""
        order = self._done_order
        cut = max(len(order) - DONE_IDS, 0)
        away = self._away_ids()
        kept = [i for i in order[:cut] if i in away] if away else []
        kept += order[cut:]
        # Rebuilt rather than deleted from: one pass over the kept ids, whose hashes the strings
        # keep (benchmarks/contenders.py).
        order[:] = kept
        self._done.clear()
        self._done.update(kept)
        self._sweep_at = len(kept) + DONE_IDS

    def _is_maker(self, account: str) -> bool:
        """Is *account* a market maker? (The ledger knows accounts' kinds: a matching-only
        engine has none.)"""
        ledger = self.ledger
        acct = None if ledger is None else ledger.accounts.get(account)
        return acct is not None and acct.kind == "market_maker"

    def _assess_quoting(self, out: list[Event]) -> None:
        """The end of the day's quoting assessments, each market maker's rebate paid."""
        monitor = self._quoting
        assert monitor is not None
        ctr = self._ctr

        def next_seq() -> int:
            ctr.seq += 1
            return ctr.seq

        ledger = self._ledger
        instruments = self._instruments
        assessed = monitor.end_of_day(self.day, ledger.maker_fees(),
                                      lambda symbol: instruments[symbol].currency, next_seq)
        for event in assessed:
            out.append(event)
            if event.rebate:
                ledger.rebate(event.account, event.currency, event.rebate)
        ledger.new_fee_day()

    def _away_ids(self) -> set[str]:
        """The ids open blocks, auctions and bids keep in use (never forgotten early)."""
        return {*self._blocks.open, *self._auctions.auctions, *self._auctions.bid_of}

    def _close_out(self, close_outs: list[CloseOut], out: list[Event]) -> None:
        """Close out called accounts' futures positions through the book (ioc orders sent
        for them, at most one lot's initial margin from the settlement price), after
        cancelling their open futures orders; what the book cannot take there goes to the
        clearing account at the settlement price."""
        ledger = self.ledger
        assert ledger is not None  # close-outs come from a ledger's clearing house
        clearing = ledger.clearing
        ledger.closing_out = True  # a suspended account is closed out all the same
        clearing.closing_out = True  # its trades set no settlement price
        try:
            self._close_out_orders(close_outs, out)
        finally:
            ledger.closing_out = clearing.closing_out = False
        for account in sorted({a for a, _, _ in close_outs}):
            clearing.close_out_done(account)
        clearing.lift_flat_calls(out)

    def _close_out_orders(self, close_outs: list[CloseOut], out: list[Event]) -> None:
        ledger = self.ledger
        assert ledger is not None
        clearing = ledger.clearing
        for account in sorted({a for a, _, _ in close_outs}):
            for order in [
                    o for o in self.live_orders()
                    if o.account == account and o.instrument in clearing.contracts
            ]:
                mark = len(out)
                self._take_out(order, Reason.MARGIN_CLOSE_OUT, out)
                ledger.settle(out, mark)
        # The engine's own orders are not commands: ``accepted`` and ``rejected`` count the
        # commands that came in, so they add up to them.
        counts = self.accepted, self.rejected, dict(self.rejects)
        for number, (account, symbol, lots) in enumerate(close_outs, 1):
            inst = self._instruments[symbol]
            spec = self._specs[symbol]
            limit = inst.max_qty
            # A halted contract's book does not trade: the clearing house takes it all.
            left, part = (0 if spec.halted else abs(lots)), 0
            # Through the book no further from the settlement price than one lot's initial
            # margin (and within the band, if any): what the book cannot take there goes to
            # the clearing house at the settlement price, never to a stray far order.
            settle = clearing.settlement[symbol]
            reach = margin_reach(inst)
            worst = settle - reach if lots > 0 else settle + reach
            if spec.band is not None:
                low, high = spec.band
                if (worst > high) if lots > 0 else (worst < low):
                    left = 0  # no price in the band is within reach: the clearing house's
                worst = min(max(worst, low), high)
            worst = max(worst, 1)
            while left:
                part += 1
                qty = min(left, limit)
                left -= qty
                mark = len(out)
                self._place(
                    PlaceOrder(order_id=f"{CLOSE_OUT_PREFIX}{self.day}-{number}-{part}",
                               account=account,
                               instrument=symbol, side="sell" if lots > 0 else "buy", type="limit",
                               tif="ioc", price=inst.format_price(worst), qty=qty, stp="none"),
                    out)
                ledger.settle(out, mark)
            clearing.take_over(account, symbol, lots, out)
        self.accepted, self.rejected = counts[0], counts[1]
        self.rejects.clear()
        self.rejects.update(counts[2])

    def _halt(self, cmd: HaltInstrument | ResumeInstrument, out: list[Event]) -> None:
        """Halt or resume an instrument (the operator's)."""
        halt = type(cmd) is HaltInstrument
        action = "halt" if halt else "resume"
        spec = self._specs.get(cmd.instrument)
        if spec is None:
            return self._reject(action, Reason.UNKNOWN_INSTRUMENT, out, instrument=cmd.instrument,
                                ts=cmd.ts)
        if spec.halted == halt:
            return self._reject(action, Reason.ALREADY_HALTED if halt else Reason.NOT_HALTED, out,
                                instrument=cmd.instrument, ts=cmd.ts)
        spec.halted = halt
        if self._quoting is not None:
            self._quoting.halt(cmd.instrument, halt)  # its time halted is excused
        self.accepted += 1
        ctr = self._ctr
        ctr.seq += 1
        out.append(
            TradingStatusChanged(seq=ctr.seq, instrument=cmd.instrument, halted=halt, ts=cmd.ts))
        return None

    def halted(self, symbol: str) -> bool:
        """Has the operator halted *symbol*?"""
        return self._specs[symbol].halted

    def _admin(self, cmd: AdminCommand, out: list[Event]) -> None:
        """An account or registry command, run by the ledger (a matching-only engine's
        accepts it with no effect)."""
        reason = self._ledger.apply(cmd, out)
        if reason is not None:
            return self._reject(
                type(cmd).__struct_config__.tag,  # type: ignore[arg-type]  # tags are strs
                reason, out, getattr(cmd, "pledge_id", None), getattr(cmd, "account", None),
                getattr(cmd, "instrument", None) or getattr(cmd, "currency", None), cmd.ts)
        self.accepted += 1
        return None

    # --- verification --------------------------------------------------------------------
    def snapshot(self) -> list[object]:
        """Return the whole engine state as plain data, deterministic in order."""
        instruments: list[list[object]] = []
        for symbol, book in self._books.items():
            stops = self._specs[symbol].stops
            stop_rows = ([] if stops is None else [[
                o.order_id, o.account, o.is_buy, o.kind, o.stop_price, o.price, o.qty, o.tif, o.stp,
                o.accept_seq
            ] for _, _, o in list(stops.buys) + list(stops.sells)])
            day = [book.day_open, book.day_high, book.day_low] if book.day_volume else None
            instruments.append([
                symbol, self._reference[symbol], book.last_price, book.trade_count, book.volume,
                book.day_volume,
                str(book.day_notional),
                book.snapshot(), stop_rows, day, self._specs[symbol].halted,
                list(self._specs[symbol].away), book.day_self_volume, str(book.day_self_notional)
            ])
        ledger = self._ledger.snapshot()
        # The instruments list stays last: tools read it as snapshot()[-1].
        # The command window: ids oldest first, each with its answer's first seq and size.
        window = [[account, command_id, events[0].seq if events else None,
                   len(events)] for (account, command_id), events in self._answers.items()]
        return [
            self._ctr.seq, self._ctr.trade, self.clock, [self.day, self._ended], self.accepted,
            self.rejected,
            sorted(self.rejects.items()),
            sorted([*self._live, *self._done]), window, ledger, self._away_snapshot(), instruments
        ]

    def _quoting_state(self) -> list[Any]:
        """The market-maker programme's day as data (``EngineState.quoting``)."""
        if self._quoting is None:
            return []
        fees = self._ledger.maker_fees()
        return [self._quoting.to_state(), [[a, s, fees[(a, s)]] for a, s in sorted(fees)]]

    def _away_snapshot(self) -> list[object]:
        """Open blocks, the day's auctions and the away totals, as plain data."""

        def row(o: Order) -> list[object]:
            return [o.order_id, o.account, o.instrument, o.is_buy, o.price, o.qty, o.accept_seq]

        return [
            self.away_trades, self.away_volume, self._quoting_state(),
            [[*row(order), to] for order, to in self._blocks.open.values()],
            [[*row(a.initiator), a.pricing, a.primary, a.open, [row(b) for b in a.bids]]
             for a in self._auctions.auctions.values()]
        ]

    def state_hash(self) -> str:
        """Return a hex digest of the whole state; equal states give equal hashes."""
        return hashlib.blake2b(msgspec.msgpack.encode(self.snapshot()), digest_size=16).hexdigest()

    def check(self) -> None:
        """Raise ``AssertionError`` if an invariant of the engine or a book is broken."""
        resting = 0
        for book in self._books.values():
            book.check()
            for is_buy in (True, False):
                resting += sum(1 for _ in book.orders(is_buy))
        pending = sum(len(spec.stops) for spec in self._specs.values() if spec.stops)
        assert all(spec.direct == (not spec.quoted and spec.stops is None)
                   for spec in self._specs.values()), "an instrument's direct flag is stale"
        live = self.live_orders()
        assert resting + pending == len(live) == len(self._live), (
            "the live ids differ from the books and stops")
        for order in live:
            assert order.qty > 0
        assert len(self._done) == len(self._done_order), "a done id is listed twice"
        assert self._done.isdisjoint(self._live), "an id is both live and done"
        assert self._done == set(self._done_order), "done ids and their list differ"
        assert len(self._done_order) < self._sweep_at or self._ctr.seq >= self._sweep_seq, (
            "more ids done than events since _sweep_due: the sweep was put off")
        self._check_window()
        for order in self._blocks.orders() + self._auctions.orders():
            assert order.qty > 0 and order.order_id in self._done, order.order_id
        self._ledger.check(live + self._blocks.orders() + self._auctions.orders())

    def _check_window(self) -> None:
        """The command window's invariants (``_window_add``)."""
        answers = list(self._answers)
        order = list(self._answer_order)
        inside = set(order)
        assert len(order) <= self.command_window, "window size"
        assert answers[len(answers) - len(order):] == order, "the global window is not the newest"
        by_account: dict[str, list[_CommandKey]] = {}
        for key in answers:
            by_account.setdefault(key[0], []).append(key)
        assert by_account.keys() == self._account_answers.keys(), "the accounts differ"
        for account, own in self._account_answers.items():
            keys = list(own.keys)
            assert by_account.get(account) == keys, f"{account!r}'s window is not its ids in order"
            assert 0 <= own.outside <= len(keys), f"{account!r}'s outside count"
            assert not own.outside or len(keys) <= self.account_window, "a forgotten id is kept"
            assert (inside.isdisjoint(keys[:own.outside])
                    and inside.issuperset(keys[own.outside:])), f"{account!r}'s outside ids"
        if len(order) < self.command_window:  # no id has left the global window yet
            assert len(order) == len(answers), "an id is outside a window not yet full"

    # --- state (exchange.state) ----------------------------------------------------------
    @overload
    def to_state(self, *, copy: Literal[True] = True) -> EngineState[OrderState]:
        ...

    @overload
    def to_state(self, *, copy: Literal[False]) -> EngineState[Order]:
        ...

    @overload
    def to_state(self, *, copy: bool) -> EngineState[OrderState] | EngineState[Order]:
        ...

    def to_state(self, *, copy: bool = True) -> EngineState[OrderState] | EngineState[Order]:
        """Return the engine's whole state as data (``exchange.state.EngineState``), from
        which ``from_state`` builds an engine indistinguishable from this one.

        Its orders are ``OrderState`` copies; with ``copy=False`` they are the engine's
        own ``Order`` objects (the same when encoded, and what ``encode_state`` does),
        good only until the engine acts again.
        """
        if copy:
            return self._state(_order_states)
        return self._state(_same_orders)

    def _state(self, rows: Callable[[list[Order]], list[_R]]) -> EngineState[_R]:
        """The state ``to_state`` returns, each list of orders given as *rows* makes it
        (``OrderState`` copies, or the orders themselves)."""
        text = self.market.text
        if not text:
            raise ValueError("the market has no TOML text (build it with parse_market or "
                             "load_market): its state cannot be written")
        place: dict[str, int] = {}  # live order id -> its place in the listing
        instruments: list[InstrumentState[_R]] = []
        for symbol, book in self._books.items():
            stops = self._specs[symbol].stops
            lists: list[list[Order]] = [
                list(book.orders(True)),
                list(book.orders(False)), [o for _, _, o in stops.buys] if stops else [],
                [o for _, _, o in stops.sells] if stops else []
            ]
            for orders in lists:
                place.update(zip([o.order_id for o in orders], range(len(place), 1 << 62)))
            listed = [rows(orders) for orders in lists]
            instruments.append(
                InstrumentState(symbol=symbol, reference_price=self._reference[symbol],
                                last_price=book.last_price, trade_count=book.trade_count,
                                volume=book.volume, day_volume=book.day_volume,
                                day_notional=str(book.day_notional),
                                day_self_volume=book.day_self_volume,
                                day_self_notional=str(book.day_self_notional), bids=listed[0],
                                asks=listed[1], stop_buys=listed[2], stop_sells=listed[3],
                                day_prices=([book.day_open, book.day_high, book.day_low]
                                            if book.day_volume else None),
                                halted=self._specs[symbol].halted,
                                away_volume=(list(self._specs[symbol].away)
                                             if any(self._specs[symbol].away) else [])))
        # Every live order is listed above, under its id; then the ids done today, oldest first.
        # Profiled (benchmarks/snapshot.py): looking up the id, not the order, spares a cache
        # miss per order.
        live = self._live
        registry: list[int | str] = [place[order_id] for order_id in live]
        registry += self._done_order
        gtd = [
            GtdEntry(expire_ts=expire_ts, seq=seq, order_id=order.order_id)
            for expire_ts, seq, order in sorted(self._gtd, key=lambda e: (e[0], e[1]))
            if order.qty and live.get(order.order_id) is order
        ]
        return EngineState(
            format=FORMAT, version=STATE_VERSION, market=text, market_source=self.market.source,
            seq=self._ctr.seq, trade=self._ctr.trade, clock=self.clock, day=self.day,
            ended=self._ended,
            accepted=self.accepted, rejected=self.rejected, rejects=dict(self.rejects),
            registry=registry, instruments=instruments, gtd=gtd, command_window=self.command_window,
            account_window=self.account_window,
            commands=[
                CommandAnswer(account=account, command_id=command_id,
                              events=events)  # type: ignore[arg-type]  # each is an AnyEvent
                for (account, command_id), events in self._answers.items()
            ], ledger=self._ledger.to_state(), done_sweep_at=self._sweep_at,
            blocks=[BlockState(block=_copied(order, OrderState), to_account=to)
                    for order, to in self._blocks.open.values()],
            auctions=[
                AuctionState(initiator=_copied(a.initiator, OrderState), pricing=a.pricing,
                             primary=a.primary, open=a.open,
                             bids=[_copied(b, OrderState) for b in a.bids])
                for a in self._auctions.auctions.values()
            ], away=[self.away_trades, self.away_volume] if self.away_trades else [],
            quoting=self._quoting_state())

    @classmethod
    def from_state(cls, state: EngineState[OrderState] | EngineState[Order], *,
                   book: _BookFactory = FastBook,
                   command_window: int | None = None, account_window: int | None = None,
                   adopt: bool = False) -> Engine:
        """Build an engine from *state* (``to_state``) on books made by *book*; the market
        is parsed again from its text. *command_window* and *account_window*, if given,
        replace the stored sizes (forgetting what smaller windows would have). With
        *adopt* the state's orders, which must be ``Order`` objects no one else holds
        (``decode_state``'s), become the engine's; otherwise they are copied. Raise
        ``exchange.state.StateError`` if the state does not make a consistent engine
        (``check()`` finds what this does not)."""
        if state.format != FORMAT or state.version != STATE_VERSION:
            raise StateError(f"engine state {state.format!r} version {state.version}: this "
                             f"build reads {FORMAT!r} version {STATE_VERSION}")
        try:
            market = parse_market(state.market, state.market_source)
        except Exception as exc:
            raise StateError(f"the state's market does not parse: {exc}") from None
        window = state.command_window if command_window is None else command_window
        if window < 0:
            raise StateError(f"command window {window}: must be 0 or more")
        own = state.account_window if account_window is None else account_window
        if own < 0:
            raise StateError(f"account window {own}: must be 0 or more")
        engine = cls(market, book=book, ledger=state.ledger is not None, command_window=window,
                     account_window=own)
        if state.done_sweep_at > 0:
            engine._sweep_at = state.done_sweep_at
        try:
            engine._load_state(state, adopt)
        except StateError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StateError(f"engine state is inconsistent: {exc}") from None
        return engine

    def _load_state(self, state: EngineState[OrderState] | EngineState[Order],
                    adopt: bool) -> None:
        """Fill this new engine (built on the state's market) from *state*."""
        ctr = self._ctr
        ctr.seq, ctr.trade = state.seq, state.trade
        self.clock, self.day, self._ended = state.clock, state.day, state.ended
        self.accepted, self.rejected = state.accepted, state.rejected
        self.rejects = dict(state.rejects)
        symbols = [i.symbol for i in state.instruments]
        for symbol in symbols:
            if symbol not in self._instruments:
                raise StateError(f"engine state names an unknown instrument {symbol!r}")
        if len(set(symbols)) != len(symbols) or len(symbols) != len(self._instruments):
            missing = sorted(set(self._instruments) - set(symbols))
            raise StateError(f"engine state lists instruments twice or leaves some out "
                             f"({', '.join(missing) or 'repeated'})")
        accounts: dict[str, str] = {}  # one string per account name, as the books had
        listed: list[Order] = []  # the live orders, in the registry's numbering
        for inst in state.instruments:
            symbol = self._instruments[inst.symbol].symbol
            spec = self._specs[symbol]
            sides: list[list[Order]] = []
            for rows, is_buy, stop in ((inst.bids, True, False), (inst.asks, False, False),
                                       (inst.stop_buys, True, True), (inst.stop_sells, False,
                                                                      True)):
                if adopt and rows and type(rows[0]) is not Order:
                    raise TypeError("from_state(adopt=True) takes engine orders (decode_state)")
                # adopt: the rows are Order objects (the first is checked above)
                orders = cast("list[Order]", rows) if adopt else [_copied(r, Order) for r in rows]
                _take_orders(orders, symbol, is_buy, stop, accounts)
                listed += orders
                sides.append(orders)
            book = self._books[symbol]
            book.restore(sides[0], sides[1])
            book.last_price, book.trade_count, book.volume = (inst.last_price, inst.trade_count,
                                                              inst.volume)
            if not inst.day_notional.isdigit() or not inst.day_notional.isascii():
                raise StateError(f"{symbol}: day notional {inst.day_notional!r}")
            book.day_volume, book.day_notional = inst.day_volume, int(inst.day_notional)
            own = inst.day_self_notional
            if (not own.isdigit() or not own.isascii() or not 0 <= inst.day_self_volume
                    <= inst.day_volume or int(own) > book.day_notional):
                raise StateError(f"{symbol}: the day's trades with themselves "
                                 f"{inst.day_self_volume!r}, {own!r}")
            book.day_self_volume, book.day_self_notional = inst.day_self_volume, int(own)
            if inst.day_volume:
                prices = inst.day_prices
                if prices is None or len(prices) != 3 or not 0 < prices[2] <= prices[1]:
                    raise StateError(f"{symbol}: the day's open, high and low {prices!r}")
                book.day_open, book.day_high, book.day_low = prices
            spec.halted = inst.halted
            if inst.away_volume:
                if len(inst.away_volume) != 2 or min(inst.away_volume) < 0:
                    raise StateError(f"{symbol}: block and auction volume {inst.away_volume!r}")
                spec.away = list(inst.away_volume)
            reference = inst.reference_price
            if reference is not None and reference <= 0:
                raise StateError(f"{symbol}: reference price {reference}")
            self._reference[symbol] = reference
            spec.band = spec.inst.price_band(reference)
            if sides[2] or sides[3]:
                stops = spec.new_stops()
                for order in sides[2] + sides[3]:
                    stops.add(order)
                if [o for _, _, o in stops.buys] != sides[2] or [o for _, _, o in stops.sells
                                                                 ] != sides[3]:
                    raise StateError(f"{symbol}: stop orders out of trigger order")
        # The registry, in its order: each live order once, each other id of the day once.
        live = self._live
        done, done_order = self._done, self._done_order
        used = bytearray(len(listed))
        for item in state.registry:
            if isinstance(item, int):
                if not 0 <= item < len(listed) or used[item]:
                    raise StateError(
                        f"the registry names live order {item}, which is not listed or named twice")
                used[item] = 1
                order = listed[item]
                live[order.order_id] = order
            else:
                done.add(item)
                done_order.append(item)
        if len(live) + len(done) != len(state.registry) or not done.isdisjoint(live):
            raise StateError("the registry names an order id twice")
        if len(listed) != sum(used):
            unnamed = next(o for o, u in zip(listed, used) if not u)
            raise StateError(
                f"order {unnamed.order_id!r} of {unnamed.instrument} is not in the registry")
        # The gtd expiry heap: each live gtd order has its one entry.
        heap: list[_Expiry] = []
        seqs: set[int] = set()
        for entry in state.gtd:
            expiring = live.get(entry.order_id)
            if (expiring is None or expiring.tif != GTD or expiring.expire_ts != entry.expire_ts
                    or entry.seq in seqs):
                raise StateError(f"gtd entry of {entry.order_id!r}: not a live gtd order "
                                 f"expiring then, or its seq {entry.seq} given twice")
            seqs.add(entry.seq)
            heap.append((entry.expire_ts, entry.seq, expiring))
        if len(heap) != sum(1 for o in listed if o.tif == GTD):
            raise StateError("a live gtd order has no expiry entry, or more than one")
        heapq.heapify(heap)
        self._gtd = heap
        # The command window, oldest first, taken in again as if its ids came in that
        # order: with the windows it was saved with, nothing is forgotten (the newest W are
        # the global window, the rest within their account's newest P); smaller windows
        # forget what they would have.
        answers = self._answers
        for remembered in state.commands:
            key = (remembered.account, remembered.command_id)
            if key in answers:
                raise StateError(f"command {key} is remembered twice")
            answers[key] = remembered.events
            self._window_add(key)
        self._load_away(state)
        monitor = self._quoting
        if monitor is not None and state.quoting:
            if len(state.quoting) != 2:
                raise StateError(f"quoting state {state.quoting!r}")
            monitor.load_state(state.quoting[0])
        if monitor is not None:
            for symbol in monitor.symbols:
                monitor.halt(symbol, self._specs[symbol].halted)
        if state.ledger is not None:
            ledger = self.ledger
            assert ledger is not None  # built with one: from_state passes ledger=True
            ledger.load_state(state.ledger)
            if monitor is not None and state.quoting:
                ledger.load_maker_fees(state.quoting[1])
        if monitor is not None:  # it watches what it measures: the live orders (kinds known)
            for order in listed:
                if order.instrument in monitor.symbols:
                    monitor.watch(order)

    def _load_away(self, state: EngineState[OrderState] | EngineState[Order]) -> None:
        """Open blocks and the day's auctions from *state*; their ids are the registry's."""
        done = self._done

        def taken(row: OrderState) -> Order:
            order = _copied(row, Order)
            if order.instrument not in self._instruments or order.qty < 0:
                raise StateError(f"{order.order_id!r}: instrument {order.instrument!r}, "
                                 f"qty {order.qty}")
            if order.order_id not in done:
                raise StateError(f"{order.order_id!r} is not a used id of the registry")
            return order

        if state.away:
            if len(state.away) != 2 or min(state.away) < 0:
                raise StateError(f"block and auction totals {state.away!r}")
            self.away_trades, self.away_volume = state.away
        for entry in state.blocks:
            block = taken(entry.block)
            if block.order_id in self._blocks.open:
                raise StateError(f"block {block.order_id!r} listed twice")
            self._blocks.open[block.order_id] = (block, entry.to_account)
        auctions = self._auctions
        for item in state.auctions:
            initiator = taken(item.initiator)
            if initiator.order_id in auctions.auctions or item.pricing not in PRICINGS:
                raise StateError(f"auction {initiator.order_id!r}: listed twice, or pricing "
                                 f"{item.pricing!r}")
            bids = [taken(b) for b in item.bids]
            auctions.auctions[initiator.order_id] = Auction(
                initiator=initiator, pricing=item.pricing, primary=item.primary,
                open=item.open, bids=bids)
            for bid in bids:
                if bid.order_id in auctions.bid_of:
                    raise StateError(f"bid {bid.order_id!r} listed twice")
                auctions.bid_of[bid.order_id] = initiator.order_id


def _copied(record: Order | OrderState, into: type[_R]) -> _R:
    """A new *into* (``Order`` or ``OrderState``) with *record*'s fields."""
    return into(order_id=record.order_id, account=record.account, instrument=record.instrument,
                is_buy=record.is_buy, price=record.price, qty=record.qty, visible=record.visible,
                display=record.display, kind=record.kind, tif=record.tif, stp=record.stp,
                post_only=record.post_only, stop_price=record.stop_price,
                expire_ts=record.expire_ts, accept_seq=record.accept_seq)


def _order_states(orders: list[Order]) -> list[OrderState]:
    """*orders* as ``OrderState`` copies (``to_state``)."""
    return [_copied(o, OrderState) for o in orders]


def _same_orders(orders: list[Order]) -> list[Order]:
    """*orders* themselves (``to_state(copy=False)``)."""
    return orders


def _take_orders(orders: list[Order], symbol: str, is_buy: bool, stop: bool,
                 accounts: dict[str, str]) -> None:
    """Check that *orders* are what one side of *symbol* can hold: resting orders (a
    limit order of a tif that rests) or, with *stop*, untriggered stops; share their
    symbol and account strings. Raise ``StateError`` otherwise."""
    # Profiled (benchmarks/snapshot.py): one pass, locals, no call per order.
    kinds = (STOP, STOP_LIMIT) if stop else (LIMIT, )
    tifs = (GTC, DAY, GTD, IOC, FOK) if stop else (GTC, DAY, GTD)
    intern = accounts.setdefault
    for o in orders:
        qty = o.qty
        if (o.instrument != symbol or o.is_buy != is_buy or o.kind not in kinds or o.tif not in tifs
                or not 0 < o.visible <= qty or o.stp not in STP_NAMES or o.display < 0
                or (o.tif == GTD) != (o.expire_ts > 0)
                or (o.price <= 0 if o.kind != STOP else o.price < 0)
                or (o.stop_price <= 0 if stop else o.stop_price < 0)  # a triggered one
                or not (stop or o.display or o.visible == qty)):
            raise StateError(f"{symbol}: order {o.order_id!r} is not a "
                             f"{'stop' if stop else 'resting order'} the "
                             f"{'buy' if is_buy else 'sell'} side could hold")
        o.instrument = symbol
        o.account = intern(o.account, o.account)
