"""The clearing house: futures positions, margin, daily settlement, close-out, delivery.

Owned by the ledger and run inside the engine's one sequenced pipeline, so every step is
journaled, replayed and hashed like a trade. Per account and futures contract it keeps a
``Position``: the net signed lots, the lots its open orders still want on each side,
what the position was marked at, today's trade flow, and the cash held as its margin.

Rules (docs/derivatives.md; the numbers are the market file's):

- **Initial margin** is held in cash (the account's ``held`` bucket) for the worst case
  of a position and its open orders: ``initial_margin x max(|net + open buys|,
  |net - open sells|)`` lots. A new order (or a larger amend) that raises it is accepted
  only if the account's available cash covers the rise (``insufficient_margin``); an
  order that does not raise it (it reduces the position) needs none. Besides, the loss
  the day's trades have realised (``Position.realised_loss``: lots closed today below
  their basis, which is the last settlement price for lots open then) stays held until
  the day's settlement pays it, so that cash can be neither withdrawn nor spent. What is
  no longer needed goes back to available.
- **Daily settlement** at ``eod``: each contract's settlement price is the
  volume-weighted price (to the nearest tick, halves up) of its trades in the closing
  window (``[clearing] settlement_window``, local time), else the mid of the best bid
  and offer (halves up) if their spread is at most ``mid_max_spread`` of it (2%),
  moved at most one lot's initial margin from the previous settlement (on the first,
  from the day's volume-weighted price; with neither, quotes set no price), else the
  previous settlement, else the day's volume-weighted price. Each position's variation
  margin is ``(net x S - marked - flow) x tick value`` where ``marked`` is its net at the
  last settlement times that price and ``flow`` the day's signed lots x trade prices:
  the day's amounts of a contract sum to zero exactly.
  Gains are paid from the clearing account (``@clearing``); losses are taken from the
  account's available cash, then from its margin; what is still owed is a default,
  recorded against the default fund: the clearing account's cash is exactly what its
  own positions made, less the recorded defaults (it may go below zero by them).
- **Margin calls**: after settlement the margins are topped up from available cash;
  equity (available cash plus margin) below the maintenance margin of the positions
  (``maintenance_margin x |net|``) calls the account: it may only reduce its exposure
  (orders that would raise its worst case, the larger of its long and short side with
  its open orders, are rejected ``reduce_only``; turning a position round no larger is
  not). At a later ``eod``, equity back
  to the initial margin of its positions lifts the call; otherwise its open futures
  orders are cancelled and its positions closed out (a suspension does not stop it):
  through the book (the engine sends ioc orders for it, at most one lot's initial
  margin from the settlement price), and what the book cannot take there is taken over
  by the clearing account at the settlement price. A contract at or
  past its last trading day is not closed out: its positions go to delivery.
- **Expiry and delivery**: after a contract's last trading day (the last Monday of the
  contract month, or the penultimate Monday when a holiday falls on the last or in the
  four days after it, as ICE Endex's EUA futures: ``exchange.calendar``) its orders are
  refused (``contract_expired``); at the first ``eod`` on or after that day its open
  orders are cancelled and the day's settlement is the final price. At the first ``eod``
  on or after the delivery day, positions opened since the last settlement (an option
  exercised at the strike) are marked to the final price; then every short delivers
  ``lots x contract size`` allowances of the underlying vintage from its available
  holdings and is paid the final price; every long pays and receives them, into its
  registry holdings. A short without the allowances pays a penalty (``delivery_penalty``
  x the final price per tonne not delivered); the longs not delivered to (in account
  order) keep their cash and receive that penalty instead of the allowances. These days
  are the market's own (``Schedule.local_day``, ``Clearing.today``): in Beijing the day
  after the last trading day begins at 00:00 Beijing time (16:00 UTC); a market without
  a schedule, or with it set aside, counts UTC days.
- **Options** (European, on a cleared future; premium paid up front): a buy holds its
  premium at its limit price and the larger fee on it (market and stop orders on options
  are refused ``limit_only``) and pays the trade price to the writer when it trades. A writer is
  margined per lot written (for its position and open sells, as futures are): the
  underlying's initial margin plus what the option is in the money (less what it is out
  of the money) at the underlying's last settlement, never below a quarter of that
  initial margin; it is recomputed at each settlement. At the ``eod`` of its expiry day
  (``option_expiry_days`` business days before the future's last trading day) an option
  in the money at that day's settlement is exercised: each position becomes futures lots
  at the strike (long call and short put: long futures), marked to that settlement with
  the day's other positions, so the difference is paid as that eod's variation margin,
  before its margin calls; out of the money it ends.

System accounts never trade (``reserved_account``); an account with a position or an open
derivatives order cannot be closed; cleared derivatives share one currency.

Fees: each side of a futures or options trade pays the instrument's maker or taker rate
on the notional (rounded down) to the exchange's fee account when it trades, from its
available cash, then its margin; the clearing house fronts what it cannot pay, a default.

Limits: options are not marked to market (their premium is paid once), and a
defaulter's option positions are not closed out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import takewhile
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from exchange.reasons import Reason
from exchange.calendar import day_of_ns
from exchange.events import (ContractExpired, DefaultRecorded, DeliveryFailed, DeliverySettled,
                             Event, MarginCalled, MarginCallMet, OptionExercised, PositionClosedOut,
                             SettlementPriceSet, TradeCleared, TradeExecuted, VariationMargin)
from exchange.accounts import CLEARING, FEES, Account
from exchange.market import FEE_SCALE, Instrument, Market, cash_needed
from exchange.state import ClearingOrderState, ClearingState, PositionState

if TYPE_CHECKING:
    from exchange.book.fast import Counters, Order

__all__ = ["Clearing", "Position", "CLEARING"]


# An open order on a cleared contract: [account, symbol, is_buy, open lots, limit price
# (ticks, 0: none), the fee rate an option buy holds for (0 otherwise)], changed in place
# as it fills.
_OrderRecord: TypeAlias = list[Any]


class _Quotes(Protocol):
    """What the settlement price reads from a book (``FastBook`` or ``NaiveBook``)."""

    def best_bid(self) -> int | None:
        ...

    def best_ask(self) -> int | None:
        ...

    def orders(self, is_buy: bool) -> Iterator[Any]:  # live orders, best first
        ...


def _one_quoter(book: _Quotes, bid: int, ask: int) -> bool:
    """Are the orders at the best bid and at the best offer all one account's? A mid of
    one account's own quotes, which no one traded, is no price: it could mark everyone
    else's positions where it liked."""
    owners = {o.account for o in takewhile(lambda o: o.price == bid, book.orders(True))}
    owners.update(o.account for o in takewhile(lambda o: o.price == ask, book.orders(False)))
    return len(owners) == 1


_T = TypeVar("_T")
CLOSE_OUT_PREFIX = "@close-"  # the engine's close-out orders' ids begin so


def margin_reach(inst: Instrument) -> int:
    """How far, in ticks, a price moves one lot's value by its initial margin: the most
    quotes move a settlement price in a day, and the furthest a close-out trades from it."""
    return inst.initial_margin // max(inst.tick_value, 1)


def _given(term: _T | None) -> _T:
    """*term*, which the market sets on every contract the clearing house keeps (see
    ``Clearing.__init__``): a future's last trading day, delivery day and underlying; an
    option's last trading day, underlying and strike."""
    assert term is not None, "a cleared contract without its terms"
    return term


def _held_for(inst: Instrument, record: _OrderRecord, lots: int) -> int:
    """What an option buy's hold gives back as *lots* of its open lots trade or end: the
    difference of what it held before and after, so that all its parts add up to what
    it held, and each part covers its premium and its fee."""
    _, _, _, open_lots, price, rate = record
    unit = inst.tick_value
    return (cash_needed(price, open_lots, unit, rate)
            - cash_needed(price, open_lots - lots, unit, rate))


class Position:
    """One account's position in one futures contract (see the module docstring)."""

    __slots__ = ("net", "open_buy", "open_sell", "marked", "flow", "margin", "premium", "cost",
                 "day_cost")

    def __init__(self) -> None:
        self.net = 0  # signed lots
        self.open_buy = 0  # lots open buy orders still want
        self.open_sell = 0
        self.marked = 0  # net x settlement price at the last settlement (ticks x lots)
        self.flow = 0  # today's signed lots x trade prices
        self.margin = 0  # cash held as margin, minor units
        self.premium = 0  # options: cash held for open buy orders' premium
        self.cost = 0  # ticks x lots paid for the open lots (average cost)
        # Futures: the open net's signed basis in today's terms (the last settlement's
        # price for what was open then, trade prices since, averaged as lots close). The
        # day's realised result is day_cost - marked - flow, whatever the price: a loss
        # is held in the margin until the day's settlement pays it (``Clearing._need``).
        self.day_cost = 0

    def move(self, lots: int, price: int, future: bool) -> None:
        """Add *lots* (signed) traded at *price*: the net, the day's flow and basis
        (futures) and the average cost of what stays open (a reduction keeps the average;
        crossing through zero starts again at *price*)."""
        net = self.net
        if future:
            self.flow += lots * price
        if net == 0 or (net > 0) == (lots > 0):  # opens or adds
            self.cost += abs(lots) * price
            if future:
                self.day_cost += lots * price
        elif abs(lots) <= abs(net):  # reduces
            self.cost -= self.cost * abs(lots) // abs(net)
            if future:
                # floored: a long's basis rounds down, a short's more negative, so the
                # realised loss is never understated
                self.day_cost = self.day_cost * (net + lots) // net
        else:  # crosses through zero
            self.cost = (abs(lots) - abs(net)) * price
            if future:
                self.day_cost = (net + lots) * price
        self.net = net + lots
        if not self.net:
            self.cost = 0

    def worst(self) -> int:
        """The most lots the position can come to if its orders on one side all fill."""
        return max(abs(self.net + self.open_buy), abs(self.net - self.open_sell))

    def short_worst(self) -> int:
        """Options: the most lots written (short) if its open sells all fill."""
        return max(0, self.open_sell - self.net)

    def realised_loss(self) -> int:
        """The loss (ticks x lots, never negative) the day's trades have realised and the
        day's settlement has not yet paid: what closing lots today fixed, whatever the
        settlement price comes to."""
        return max(0, self.marked + self.flow - self.day_cost)

    def row(self) -> list[int]:
        return [
            self.net, self.open_buy, self.open_sell, self.marked, self.flow, self.margin,
            self.premium, self.cost, self.day_cost
        ]


class Clearing:
    """Futures positions and margin of one market's accounts, kept by the ledger."""

    def __init__(self, market: Market, accounts: dict[str, Account], counters: Counters) -> None:
        self._ctr = counters
        self.accounts = accounts  # the ledger's accounts, by name
        self.terms = market.clearing
        # Futures with margin terms clear here; others trade, but not with a ledger.
        self.contracts = {
            s: i
            for s, i in market.instruments.items()
            if i.kind == "future" and i.last_trading_day is not None
        }
        self.options = {
            s: i
            for s, i in market.instruments.items() if i.kind == "option" and i.strike is not None
        }
        self.cleared = {**self.contracts, **self.options}
        # one currency for all (the market file refuses more)
        self.currency = next((i.currency for i in self.cleared.values()), "CNY")
        self.positions: dict[str, dict[str, Position]] = {s: {} for s in self.cleared}
        # order id -> [account, symbol, is_buy, open lots, limit price (ticks, 0: none)]
        self.orders: dict[str, _OrderRecord] = {}
        self.settlement: dict[str, int] = {}  # symbol -> last settlement price, ticks
        self.window: dict[str, list[int]] = {}  # symbol -> [ticks x lots, lots] in the window
        self.day_trades: dict[str, list[int]] = {}
        self.calls: dict[str, int] = {}  # account -> engine day of its margin call
        self.defaults: dict[str, int] = {}  # currency -> losses on the default fund
        self.own_cash: dict[str, int] = {}  # currency -> what its own positions made
        self.expired: set[str] = set()
        self.delivered: set[str] = set()
        self.clock = 0
        self.schedule = market.schedule  # its time zone makes the days of expiry
        # Set by the engine while it closes out called accounts: the trades of its
        # close-out orders (ids beginning CLOSE_OUT_PREFIX), like an account's trades with
        # itself, set no settlement price (``trade``).
        self.closing_out = False

    def today(self) -> int:
        """The day (a day number) of the clock in the market's time zone, UTC without a
        schedule: expiry, the last trading day and delivery go by it."""
        schedule = self.schedule
        return day_of_ns(self.clock) if schedule is None else schedule.local_day(self.clock)

    # --- orders ---------------------------------------------------------------------------
    def reserve(self, order_id: str, acct: Account, symbol: str, is_buy: bool, qty: int,
                price: int = 0) -> str | None:
        """Hold the margin (or an option buy's premium at its limit *price*) a new order on
        *symbol* needs, or return why it cannot trade."""
        inst = self.cleared[symbol]
        last = inst.last_trading_day
        assert last is not None  # every cleared contract has one (see __init__)
        if symbol in self.expired or self.today() > last:
            return Reason.CONTRACT_EXPIRED
        option = inst.kind == "option"
        if option and not price:
            return Reason.LIMIT_ONLY  # a premium is held at a limit price
        pos = self.positions[symbol].get(acct.name) or Position()
        # an option buy holds its premium and the larger fee on it, as a spot buy does
        rate = max(inst.maker_fee, inst.taker_fee) if option and is_buy else 0
        # (its premium and the larger fee rate on it, as a spot buy holds)
        premium = cash_needed(price, qty, inst.tick_value, rate) if option and is_buy else 0
        problem = self._admit(acct, pos, inst, is_buy, qty, premium)
        if problem is not None:
            return problem
        self.positions[symbol][acct.name] = pos
        self.orders[order_id] = [acct.name, symbol, is_buy, qty, price, rate]
        self._remargin(acct, pos, inst)
        return None

    def amend(self, order_id: str, acct: Account, price: int, qty: int) -> str | None:
        """Resize an open order's margin (or premium) for its new price and open
        quantity, or refuse with nothing changed."""
        record = self.orders[order_id]
        _, symbol, is_buy, open_qty, old_price, rate = record
        inst = self.cleared[symbol]
        last = inst.last_trading_day
        assert last is not None  # every cleared contract has one (see __init__)
        if symbol in self.expired or self.today() > last:
            return Reason.CONTRACT_EXPIRED
        pos = self.positions[symbol][acct.name]
        premium = 0
        if is_buy and inst.kind == "option":
            premium = (cash_needed(price, qty, inst.tick_value, rate)
                       - cash_needed(old_price, open_qty, inst.tick_value, rate))
        problem = self._admit(acct, pos, inst, is_buy, qty - open_qty, premium)
        if problem is not None:
            return problem
        record[3], record[4] = qty, price
        self._remargin(acct, pos, inst)
        return None

    def _admit(self, acct: Account, pos: Position, inst: Instrument, is_buy: bool, lots: int,
               premium: int) -> str | None:
        """Add *lots* (fewer, if negative) to the position's open orders on one side and
        hold *premium* more cash; or return why not, with nothing changed: a premium
        beyond the available cash, or a rise in exposure (a future's worst case, the lots
        an option writer may write) under a call or beyond what the cash can margin."""
        cash = acct.holdings.get(inst.currency)
        available = cash.available if cash is not None else 0
        if premium > available:
            return Reason.INSUFFICIENT_CASH
        exposure = Position.worst if inst.kind == "future" else Position.short_worst
        before = exposure(pos)
        side = "open_buy" if is_buy else "open_sell"
        setattr(pos, side, getattr(pos, side) + lots)
        if exposure(pos) > before:
            rise = self._need(pos, inst) - pos.margin
            problem = (Reason.REDUCE_ONLY if acct.name in self.calls else
                       Reason.INSUFFICIENT_MARGIN if rise > available - premium else None)
            if problem is not None:
                setattr(pos, side, getattr(pos, side) - lots)
                return problem
        if premium:
            assert cash is not None  # premium <= available: the account holds the cash
            cash.available -= premium
            cash.held += premium
            pos.premium += premium
        return None

    def release(self, order_id: str) -> None:
        """An order ended: its open lots no longer count toward the margin."""
        record = self.orders.pop(order_id, None)
        if record is not None:
            self._shrink(record, record[3])

    def _shrink(self, record: _OrderRecord, lots: int) -> None:
        account, symbol, is_buy, _, _, _ = record
        pos = self.positions[symbol][account]
        inst = self.cleared[symbol]
        if is_buy and inst.kind == "option":  # give back the premium held for those lots
            self._unhold_premium(account, pos, _held_for(inst, record, lots), inst)
        record[3] -= lots
        if is_buy:
            pos.open_buy -= lots
        else:
            pos.open_sell -= lots
        self._remargin(self.accounts[account], pos, inst)
        self._forget(symbol, account, pos)

    def _unhold_premium(self, account: str, pos: Position, amount: int, inst: Instrument) -> None:
        cash = self.accounts[account].holding(inst.currency)
        cash.held -= amount
        cash.available += amount
        pos.premium -= amount

    def _forget(self, symbol: str, account: str, pos: Position) -> None:
        if not (pos.net or pos.open_buy or pos.open_sell or pos.marked or pos.flow or pos.margin
                or pos.premium or pos.cost):
            del self.positions[symbol][account]

    def _remargin(self, acct: Account, pos: Position, inst: Instrument) -> None:
        """Hold what the position needs now: give back any excess; take a shortfall from
        available cash as far as it goes (after settlement losses ate into the margin)."""
        if acct.name == CLEARING:
            return
        delta = self._need(pos, inst) - pos.margin
        if delta == 0:
            return
        cash = acct.holding(inst.currency)
        if delta > 0:
            delta = min(delta, cash.available)
        cash.available -= delta
        cash.held += delta
        pos.margin += delta

    def _need(self, pos: Position, inst: Instrument) -> int:
        """The margin a position and its open orders need: a future's initial margin for
        its worst case, and the loss its trades realised today until the day's settlement
        pays it (closing a position gives back its initial margin, not the loss: neither
        a withdrawal nor another order can spend that); an option writer's margin per lot
        for the lots it may write."""
        if inst.kind == "future":
            return inst.initial_margin * pos.worst() + pos.realised_loss() * inst.tick_value
        return self.option_margin(inst) * pos.short_worst()

    def option_margin(self, inst: Instrument) -> int:
        """An option writer's margin per lot: the underlying's initial margin, plus the
        amount in the money (or less the amount out of the money) at the underlying's
        last settlement, never below a quarter of that initial margin."""
        underlying, strike = inst.underlying, inst.strike
        assert underlying is not None and strike is not None  # a cleared option's (__init__)
        future = self.contracts[underlying]
        initial = future.initial_margin
        price = self.settlement.get(underlying)
        if price is None:
            return initial
        money = price - strike if inst.option_type == "call" else strike - price
        return max(initial // 4, initial + money * future.tick_value)

    # --- trades ---------------------------------------------------------------------------
    def trade(self, trade: TradeExecuted, out: list[Event]) -> None:
        """Move a futures trade into both sides' positions."""
        symbol, qty, price = trade.instrument, trade.qty, trade.price
        inst = self.cleared[symbol]
        positions = self.positions[symbol]
        if inst.kind == "option":  # the premium is paid now, from the buy's hold
            record = self.orders[trade.buy_order_id]
            paid = price * qty * inst.tick_value
            buyer = positions[trade.buy_account]
            self._unhold_premium(trade.buy_account, buyer, _held_for(inst, record, qty), inst)
            self.accounts[trade.buy_account].holding(inst.currency).available -= paid
            self.accounts[trade.sell_account].holding(inst.currency).available += paid
        for order_id, account, leaves, sign in ((trade.buy_order_id, trade.buy_account,
                                                 trade.buy_leaves_qty, 1),
                                                (trade.sell_order_id, trade.sell_account,
                                                 trade.sell_leaves_qty, -1)):
            record = self.orders[order_id]
            record[3] -= qty
            pos = positions[account]
            if sign > 0:
                pos.open_buy -= qty
            else:
                pos.open_sell -= qty
            pos.move(sign * qty, price, inst.kind == "future")
            if not leaves:
                del self.orders[order_id]
                if record[3]:  # a market order's unfilled rest ends with it
                    self._shrink(record, record[3])
            self._remargin(self.accounts[account], pos, inst)
            self._forget(symbol, account, pos)
        buy_fee = sell_fee = 0
        if inst.maker_fee or inst.taker_fee:  # on the notional, rounded down, each side
            notional = price * qty * inst.tick_value
            buyer_took = trade.aggressor == "buy"
            buy_fee = notional * (inst.taker_fee if buyer_took else inst.maker_fee) // FEE_SCALE
            sell_fee = notional * (inst.maker_fee if buyer_took else inst.taker_fee) // FEE_SCALE
        self._event(TradeCleared, out, trade_id=trade.trade_id, instrument=symbol,
                    buy_account=trade.buy_account, sell_account=trade.sell_account, qty=qty,
                    price=price, buy_position=self._net(symbol, trade.buy_account),
                    sell_position=self._net(symbol,
                                            trade.sell_account), buy_fee=buy_fee, sell_fee=sell_fee)
        for account, charged in ((trade.buy_account, buy_fee), (trade.sell_account, sell_fee)):
            if charged:
                self._pay(account, -charged, inst.currency, out, "fee", fee=True)
        if inst.kind == "option":
            return
        if trade.buy_account == trade.sell_account or self.closing_out and (
                trade.buy_order_id.startswith(CLOSE_OUT_PREFIX)
                or trade.sell_order_id.startswith(CLOSE_OUT_PREFIX)):
            # A trade with itself (stp none) moves no money between accounts, and a
            # close-out's is forced: neither may set the price everyone is marked to.
            # (A stop that a close-out triggers trades as any order does.)
            return
        day = self.day_trades.setdefault(symbol, [0, 0])
        day[0] += price * qty
        day[1] += qty
        if self.terms.in_window(self.clock):
            window = self.window.setdefault(symbol, [0, 0])
            window[0] += price * qty
            window[1] += qty

    def _net(self, symbol: str, account: str) -> int:
        pos = self.positions[symbol].get(account)
        return 0 if pos is None else pos.net

    # --- the end of the day -----------------------------------------------------------------
    def end_of_day(self, out: list[Event], books: Mapping[str, _Quotes],
                   day: int) -> tuple[list[tuple[str, str, int]], list[str]]:
        """Settle the day: prices, variation margin, calls; expiry and delivery.

        Return ``(close_outs, expiring)``: ``(account, symbol, lots)`` positions the engine
        must close through the book, and the contracts whose open orders it must cancel.
        """
        today = self.today()
        prices: dict[str, int] = {}
        for symbol in sorted(self.contracts):
            if symbol in self.expired:
                continue  # marked at its final price already; no more trading
            price = self._settlement_price(symbol, books[symbol], out)
            if price is not None:
                prices[symbol] = price
        self.window.clear()
        self.day_trades.clear()
        expiring = [
            s for s in sorted(self.cleared)
            if s not in self.expired and today >= _given(self.cleared[s].last_trading_day)
        ]
        # Options expiring today are exercised at today's settlement before it is paid: the
        # futures lots they become at the strike are marked with the rest, so the margin
        # calls below see what exercise gave or took.
        for symbol in expiring:
            if symbol in self.options:
                self._exercise(symbol, out)
        owed: dict[str, int] = {}
        for symbol, price in prices.items():
            for account in sorted(self.positions[symbol]):
                amount = self._mark(symbol, account, price, out)
                owed[account] = owed.get(account, 0) + amount
        currency = self.currency
        for account in sorted(owed):
            self._pay(account, owed[account], currency, out, "variation_margin")
        for symbol in sorted(self.options):  # writers' margin at today's prices
            for account, pos in list(self.positions[symbol].items()):
                self._remargin(self.accounts[account], pos, self.options[symbol])
        close_outs = self._margin_calls(out, day, currency, today)
        # A position closed and now settled (its loss paid, its margin given back) is gone:
        # its account holds nothing here any more (and may be closed).
        for symbol in prices:
            for account, pos in list(self.positions[symbol].items()):
                self._forget(symbol, account, pos)
        for symbol in expiring:
            if symbol in self.contracts:
                self.expired.add(symbol)
                self._event(ContractExpired, out, instrument=symbol,
                            final_price=self.settlement.get(symbol))
        for symbol in sorted(self.expired - self.delivered):
            if symbol in self.contracts and today >= _given(self.contracts[symbol].delivery_day):
                self._deliver(symbol, out)
        return close_outs, expiring

    def _exercise(self, symbol: str, out: list[Event]) -> None:
        """Expire an option at its underlying's settlement today: in the money, each
        position becomes a futures position at the strike (a long call or a short put
        long futures); out of the money it ends, its premium long paid."""
        inst = self.options[symbol]
        underlying, strike = _given(inst.underlying), _given(inst.strike)
        price = self.settlement.get(underlying)
        self.expired.add(symbol)
        self._event(ContractExpired, out, instrument=symbol, final_price=price)
        money = (0 if price is None else
                 (price - strike if inst.option_type == "call" else strike - price))
        future = self.contracts[underlying]
        futures = self.positions[underlying]
        positions = self.positions[symbol]
        for account in sorted(positions):
            pos = positions[account]
            if pos.net and money > 0:
                lots = pos.net if inst.option_type == "call" else -pos.net
                held = futures.setdefault(account, Position())
                held.move(lots, strike, True)  # as if traded at the strike
                self._remargin(self.accounts[account], held, future)
                self._event(OptionExercised, out, account=account, instrument=symbol,
                            underlying=underlying, lots=lots, strike=strike)
            pos.net = pos.cost = 0
            self._remargin(self.accounts[account], pos, inst)
            self._forget(symbol, account, pos)

    def _requirement(self, symbol: str, pos: Position) -> tuple[int, int]:
        """``(initial, maintenance)`` margin of a position (its orders aside)."""
        inst = self.cleared[symbol]
        if inst.kind == "future":
            return (inst.initial_margin * abs(pos.net), inst.maintenance_margin * abs(pos.net))
        future = self.contracts[_given(inst.underlying)]
        initial = self.option_margin(inst) * max(0, -pos.net)
        return initial, initial * future.maintenance_margin // max(future.initial_margin, 1)

    def _settlement_price(self, symbol: str, book: _Quotes, out: list[Event]) -> int | None:
        window = self.window.get(symbol)
        bid, ask = book.best_bid(), book.best_ask()
        traded = self.day_trades.get(symbol)
        day = (2 * traded[0] + traded[1]) // (2 * traded[1]) if traded else None  # the VWAP
        previous = self.settlement.get(symbol)
        if window:
            price, source = (2 * window[0] + window[1]) // (2 * window[1]), "window"
        elif (bid is not None and ask is not None and self.terms.mid_counts(bid, ask)
              and (previous is not None or day is not None)
              and not _one_quoter(book, bid, ask)):
            # Quotes that no one traded cost nothing to post: a mid moves the price at
            # most one lot's initial margin from the last settlement (on a contract's
            # first, from the day's volume-weighted price), so a day's variation margin
            # from quotes alone never passes the margin held. With neither, quotes set no
            # price (an option on a future that never traded would be exercised at it).
            anchor = previous if previous is not None else day
            assert anchor is not None
            inst = self.contracts[symbol]
            reach = margin_reach(inst)
            price = min(max((bid + ask + 1) // 2, anchor - reach), anchor + reach)
            source = "mid"
        elif previous is not None:
            price, source = previous, "previous"
        elif day is not None:
            price, source = day, "day"
        else:
            return None
        self.settlement[symbol] = price
        self._event(SettlementPriceSet, out, instrument=symbol, price=price, source=source)
        return price

    def _mark(self, symbol: str, account: str, price: int, out: list[Event],
              flat: bool = True) -> int:
        """Mark *account*'s position in future *symbol* to *price*; return its variation
        margin in minor units, announced unless it is zero (and, without *flat*, even
        for an open position)."""
        pos = self.positions[symbol][account]
        inst = self.contracts[symbol]
        amount = (pos.net * price - pos.marked - pos.flow) * inst.tick_value
        pos.marked, pos.flow = pos.net * price, 0
        pos.day_cost = pos.marked
        if amount or (flat and pos.net):
            self._event(VariationMargin, out, account=account, instrument=symbol, position=pos.net,
                        amount=amount, currency=inst.currency)
        return amount

    def _pay(self, account: str, amount: int, currency: str, out: list[Event], why: str,
             fee: bool = False) -> None:
        """Move *amount* from the clearing account to *account* (negative: the other way:
        available cash first, then margin; what is still owed is a default). With *fee*,
        what the account owes goes to the exchange's fee account, which the clearing
        house pays in full, fronting any default."""
        clearing = self.accounts[CLEARING].holding(currency)
        if account == CLEARING:  # its own position: nothing moves, but it is counted
            self.own_cash[currency] = self.own_cash.get(currency, 0) + amount
            return
        acct = self.accounts[account]
        cash = acct.holding(currency)
        if amount >= 0:
            cash.available += amount
            clearing.available -= amount
            return
        due = -amount
        take = min(due, cash.available)
        cash.available -= take
        due -= take
        for symbol in sorted(self.positions):
            pos = self.positions[symbol].get(account)
            if due and pos is not None and pos.margin:
                take_margin = min(due, pos.margin)
                pos.margin -= take_margin
                cash.held -= take_margin
                due -= take_margin
        if fee:
            self.accounts[FEES].holding(currency).available += -amount
            clearing.available -= due
        else:
            clearing.available += -amount - due
        if due:
            self.defaults[currency] = self.defaults.get(currency, 0) + due
            self._event(DefaultRecorded, out, account=account, amount=due, currency=currency,
                        reason=why)

    def _margin_calls(self, out: list[Event], day: int, currency: str,
                      today: int) -> list[tuple[str, str, int]]:
        """Top up margins; call, lift calls, or close out (see the module docstring)."""
        by_account: dict[str, list[tuple[str, Position]]] = {}
        for symbol in sorted(self.positions):
            for account, pos in self.positions[symbol].items():
                by_account.setdefault(account, []).append((symbol, pos))
        close_outs: list[tuple[str, str, int]] = []
        # a called account whose positions all ended (delivered, exercised) is visited
        # too: with nothing left to margin, its call is met
        for account in sorted(set(by_account) | set(self.calls)):
            if account == CLEARING:
                continue
            acct = self.accounts[account]
            held = by_account.get(account, [])
            for symbol, pos in held:
                self._remargin(acct, pos, self.cleared[symbol])
            cash = acct.holding(currency)
            equity = cash.available + sum(pos.margin for _, pos in held)
            needs = [self._requirement(s, p) for s, p in held]
            initial = sum(n[0] for n in needs)
            maintenance = sum(n[1] for n in needs)
            if account in self.calls and self.calls[account] < day:
                if equity >= initial:
                    del self.calls[account]
                    self._event(MarginCallMet, out, account=account, equity=equity,
                                currency=currency)
                else:
                    # a contract on or past its last trading day goes to delivery
                    close_outs += [(account, s, p.net) for s, p in held
                                   if p.net and s in self.contracts
                                   and today < _given(self.contracts[s].last_trading_day)]
            elif account not in self.calls and equity < maintenance:
                self.calls[account] = day
                self._event(MarginCalled, out, account=account, equity=equity,
                            maintenance=maintenance, initial=initial, currency=currency)
        return close_outs

    def take_over(self, account: str, symbol: str, lots: int, out: list[Event]) -> None:
        """After a close-out through the book of *account*'s *lots* (signed): record what
        the book took, and what is left goes to the clearing account at the settlement
        price."""
        positions = self.positions[symbol]
        pos = positions.get(account)
        closed = lots - (pos.net if pos is not None else 0)
        if closed:
            self._event(PositionClosedOut, out, account=account, instrument=symbol, qty=-closed,
                        price=None, via="book")
        price = self.settlement[symbol]
        if pos is not None and pos.net:
            lots = pos.net
            mine = positions.setdefault(CLEARING, Position())
            for p, sign in ((pos, -1), (mine, 1)):
                p.move(sign * lots, price, True)
            self._remargin(self.accounts[account], pos, self.contracts[symbol])
            self._event(PositionClosedOut, out, account=account, instrument=symbol, qty=-lots,
                        price=price, via="clearing")

    def holds(self, account: str) -> bool:
        """Does *account* have a position, margin or an open order in the clearing?"""
        return any(account in positions for positions in self.positions.values())

    def close_out_done(self, account: str) -> None:
        if not any(account in p and p[account].net for p in self.positions.values()):
            self.calls.pop(account, None)

    def lift_flat_calls(self, out: list[Event]) -> None:
        """After the close-outs: a called account that their trades left with no position
        (a counterparty called at this end of day) has nothing left to margin, so its
        call is met now, not at the next end of day."""
        for account in sorted(self.calls):
            held = [p[account] for p in self.positions.values() if account in p]
            if any(pos.net for pos in held):
                continue
            del self.calls[account]
            cash = self.accounts[account].holding(self.currency)
            self._event(MarginCallMet, out, account=account,
                        equity=cash.available + sum(pos.margin for pos in held),
                        currency=self.currency)

    # --- delivery -------------------------------------------------------------------------
    def _deliver(self, symbol: str, out: list[Event]) -> None:
        inst = self.contracts[symbol]
        underlying, size, currency = _given(inst.underlying), inst.contract_size, inst.currency
        final = self.settlement.get(symbol)
        self.delivered.add(symbol)
        positions = self.positions[symbol]
        if final is None:
            return
        # positions opened since the last settlement (an option exercised at the strike)
        # are first marked to the final price
        for account in sorted(positions):
            amount = self._mark(symbol, account, final, out, flat=False)
            if amount:
                self._pay(account, amount, currency, out, "variation_margin")
        per_tonne = final * inst.tick_value // size
        penalty = per_tonne * self.terms.penalty_num // self.terms.penalty_den
        pool = 0  # tonnes the shorts delivered, handed on to the longs in account order
        for account in sorted(positions):
            pos = positions[account]
            if pos.net >= 0:
                continue
            owed = -pos.net * size
            units = self.accounts[account].holding(underlying)
            given = min(owed, units.available)
            units.available -= given
            pool += given
            if given:
                self._pay(account, given * per_tonne, currency, out, "delivery")
                self._event(DeliverySettled, out, account=account, instrument=symbol,
                            underlying=underlying, side="sell", tonnes=given,
                            cash=given * per_tonne)
            if owed > given:
                self._pay(account, -(owed - given) * penalty, currency, out, "failed_delivery")
                self._event(DeliveryFailed, out, account=account, instrument=symbol,
                            tonnes=owed - given, penalty=(owed - given) * penalty)
        # the clients first, in account name order; the clearing house's own long (a
        # defaulter's it took over) last
        for account in sorted(positions, key=lambda name: (name == CLEARING, name)):
            pos = positions[account]
            if pos.net <= 0:
                continue
            owed = pos.net * size
            got = min(owed, pool)
            pool -= got
            # The penalty it is owed is paid first: it pays for what it got from all it
            # has, and defaults only on what that cannot cover.
            if owed > got:
                self._pay(account, (owed - got) * penalty, currency, out, "failed_delivery")
            if got:
                self.accounts[account].holding(underlying).available += got
                self._pay(account, -got * per_tonne, currency, out, "delivery")
                self._event(DeliverySettled, out, account=account, instrument=symbol,
                            underlying=underlying, side="buy", tonnes=got, cash=got * per_tonne)
            if owed > got:
                self._event(DeliveryFailed, out, account=account, instrument=symbol,
                            tonnes=owed - got, penalty=-(owed - got) * penalty)
        for account in sorted(positions):
            pos = positions[account]
            pos.net = pos.marked = pos.flow = pos.cost = pos.day_cost = 0
            self._remargin(self.accounts[account], pos, inst)
            self._forget(symbol, account, pos)

    # --- reports ----------------------------------------------------------------------------
    def position_rows(self) -> list[tuple[str, str, int, int, int, int | None]]:
        """``(account, instrument, net lots, average price in ticks as a Fraction-free
        (cost, lots) pair, margin held, last settlement)`` for every open position."""
        rows = []
        for symbol in sorted(self.positions):
            inst = self.cleared[symbol]
            settle = self.settlement.get(
                _given(inst.underlying) if inst.kind == "option" else symbol)
            for account, pos in sorted(self.positions[symbol].items()):
                if pos.net:
                    rows.append((account, symbol, pos.net, pos.cost, pos.margin, settle))
        return rows

    def account_rows(self) -> list[tuple[str, str, int, int, int, int, bool]]:
        """``(account, currency, margin, equity, initial, maintenance, called)`` for every
        account with a position: equity is its available cash plus its margin."""
        by_account: dict[str, list[tuple[str, Position]]] = {}
        for symbol in sorted(self.positions):
            for account, pos in self.positions[symbol].items():
                if pos.net or pos.margin:
                    by_account.setdefault(account, []).append((symbol, pos))
        currency = self.currency
        rows = []
        for account in sorted(by_account):
            held = by_account[account]
            margin = sum(p.margin for _, p in held)
            cash = self.accounts[account].holdings.get(currency)
            needs = [self._requirement(s, p) for s, p in held]
            rows.append(
                (account, currency, margin, (cash.available if cash is not None else 0) + margin,
                 sum(n[0] for n in needs), sum(n[1] for n in needs), account in self.calls))
        return rows

    # --- events and checks ------------------------------------------------------------------
    def _event(self, cls: type[Event], out: list[Event], **fields: Any) -> None:
        ctr = self._ctr
        ctr.seq += 1
        out.append(cls(seq=ctr.seq, **fields))

    def margin_held(self) -> dict[tuple[str, str], int]:
        """Cash held as margin, by (account, currency)."""
        held: dict[tuple[str, str], int] = {}
        for symbol, positions in self.positions.items():
            currency = self.cleared[symbol].currency
            for account, pos in positions.items():
                key = (account, currency)
                held[key] = held.get(key, 0) + pos.margin + pos.premium
        return held

    def check(self, live_orders: Sequence[Order]) -> None:
        """Raise ``AssertionError`` if a clearing invariant is broken. *live_orders* are
        the engine's open orders on futures."""
        wanted: dict[tuple[str, str], list[int]] = {}
        assert {o.order_id for o in live_orders} == set(self.orders), "orders differ"
        for order in live_orders:
            record = self.orders[order.order_id]
            assert record[3] == order.qty, (order.order_id, "open lots")
            sides = wanted.setdefault((order.instrument, order.account), [0, 0])
            sides[0 if order.is_buy else 1] += order.qty
        premiums: dict[tuple[str, str], int] = {}
        for order in live_orders:
            inst = self.cleared[order.instrument]
            if inst.kind == "option" and order.is_buy:
                key = (order.instrument, order.account)
                record = self.orders[order.order_id]
                premiums[key] = premiums.get(key, 0) + cash_needed(
                    record[4], order.qty, inst.tick_value, record[5])
        for symbol, positions in self.positions.items():
            inst = self.cleared[symbol]
            assert sum(p.net for p in positions.values()) == 0, f"{symbol}: lots do not net out"
            for account, pos in positions.items():
                assert [pos.open_buy, pos.open_sell] == wanted.get(
                    (symbol, account), [0, 0]), (symbol, account, "open lots")
                assert 0 <= pos.margin <= self._need(pos, inst), (symbol, account, "margin")
                assert pos.premium == premiums.get((symbol, account), 0), (symbol, account)
                if inst.kind == "option":
                    assert pos.marked == pos.flow == pos.day_cost == 0, (symbol, account)
                elif not pos.net:
                    assert pos.day_cost == 0, (symbol, account, "a flat position's basis")
                if account == CLEARING:
                    assert pos.margin == 0

    # --- state (exchange.state) -------------------------------------------------------------
    def to_state(self) -> ClearingState:
        """Return the clearing house's state as data (its terms come from the market)."""
        return ClearingState(
            positions=[
                PositionState(symbol=s, account=a, net=p.net, open_buy=p.open_buy,
                              open_sell=p.open_sell, marked=p.marked, flow=p.flow, margin=p.margin,
                              premium=p.premium, cost=p.cost, day_cost=p.day_cost)
                for s, positions in self.positions.items() for a, p in positions.items()
            ], orders=[
                ClearingOrderState(order_id=oid, account=r[0], symbol=r[1], is_buy=r[2], lots=r[3],
                                   price=r[4], fee=r[5]) for oid, r in self.orders.items()
            ], settlement=dict(self.settlement), window={
                s: (v[0], v[1])
                for s, v in self.window.items()
            }, day_trades={
                s: (v[0], v[1])
                for s, v in self.day_trades.items()
            }, calls=dict(self.calls), defaults=dict(self.defaults), own_cash=dict(self.own_cash),
            expired=sorted(self.expired), delivered=sorted(self.delivered), clock=self.clock)

    def load_state(self, state: ClearingState) -> None:
        """Take *state* (``to_state``) into this new clearing house, whose accounts (the
        ledger's) are loaded already. Raise ``ValueError`` on an unknown contract or
        account, or a repeated entry."""

        def known(symbol: str, account: str | None = None) -> None:
            if symbol not in self.cleared:
                raise ValueError(f"clearing: {symbol!r} is not a cleared contract")
            if account is not None and account not in self.accounts:
                raise ValueError(f"clearing: unknown account {account!r}")

        for p in state.positions:
            known(p.symbol, p.account)
            positions = self.positions[p.symbol]
            if p.account in positions:
                raise ValueError(f"clearing: position {p.symbol} {p.account} given twice")
            pos = positions[p.account] = Position()
            (pos.net, pos.open_buy, pos.open_sell, pos.marked, pos.flow, pos.margin, pos.premium,
             pos.cost) = (p.net, p.open_buy, p.open_sell, p.marked, p.flow, p.margin, p.premium,
                          p.cost)
            # A state from before the day's basis was kept: an open position's loss realised
            # today counts only once it closes; a flat one's is all realised.
            if p.day_cost is None:
                pos.day_cost = p.marked + p.flow if p.net else 0
            else:
                pos.day_cost = p.day_cost
        for o in state.orders:
            known(o.symbol, o.account)
            if o.order_id in self.orders:
                raise ValueError(f"clearing: order {o.order_id!r} given twice")
            self.orders[o.order_id] = [o.account, o.symbol, o.is_buy, o.lots, o.price, o.fee]
        for table in (state.settlement, state.window, state.day_trades):
            for symbol in table:
                known(symbol)
        for account in state.calls:
            if account not in self.accounts:
                raise ValueError(f"clearing: unknown account {account!r} called")
        for symbol in (*state.expired, *state.delivered):
            known(symbol)
        self.settlement = dict(state.settlement)
        self.window = {s: [v[0], v[1]] for s, v in state.window.items()}
        self.day_trades = {s: [v[0], v[1]] for s, v in state.day_trades.items()}
        self.calls = dict(state.calls)
        self.defaults = dict(state.defaults)
        self.own_cash = dict(state.own_cash)
        self.expired = set(state.expired)
        self.delivered = set(state.delivered)
        self.clock = state.clock

    # --- verification (continued) -------------------------------------------------------------
    def snapshot(self) -> list[object]:
        return [[[s, a, p.row()] for s in sorted(self.positions)
                 for a, p in sorted(self.positions[s].items())],
                sorted([k, *v] for k, v in self.orders.items()),
                sorted(self.settlement.items()),
                sorted([s, *v] for s, v in self.window.items()),
                sorted([s, *v] for s, v in self.day_trades.items()),
                sorted(self.calls.items()),
                sorted(self.defaults.items()),
                sorted(self.own_cash.items()),
                sorted(self.expired),
                sorted(self.delivered)]
