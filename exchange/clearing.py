"""The clearing house: futures positions, margin, daily settlement, close-out, delivery.

Owned by the ledger and run inside the engine's one sequenced pipeline, so every step is
journaled, replayed and hashed like a trade. Per account and futures contract it keeps a
``Position``: the net signed lots, the lots its open orders still want on each side,
what the position was marked at, today's trade flow, and the cash held as its margin.

Rules (shared/DOMAIN.md, "Instruments"; the numbers are the market file's):

- **Initial margin** is held in cash (the account's ``held`` bucket) for the worst case
  of a position and its open orders: ``initial_margin x max(|net + open buys|,
  |net - open sells|)`` lots. A new order (or a larger amend) that raises it is accepted
  only if the account's available cash covers the rise (``insufficient_margin``); an
  order that does not raise it (it reduces the position) needs none. Fills and cancels
  only ever lower it; what is no longer needed goes back to available.
- **Daily settlement** at ``eod``: each contract's settlement price is the
  volume-weighted price (to the nearest tick, halves up) of its trades in the closing
  window (``[clearing] settlement_window``, local time), else the mid of the best bid
  and offer (halves up), else the previous settlement, else the day's volume-weighted
  price. Each position's variation margin is ``(net x S - marked - flow) x tick value``
  where ``marked`` is its net at the last settlement times that price and ``flow`` the
  day's signed lots x trade prices: the day's amounts of a contract sum to zero exactly.
  Gains are paid from the clearing account (``@clearing``); losses are taken from the
  account's available cash, then from its margin; what is still owed is a default,
  recorded against the default fund: the clearing account's cash is exactly what its
  own positions made, less the recorded defaults (it may go below zero by them).
- **Margin calls**: after settlement the margins are topped up from available cash;
  equity (available cash plus margin) below the maintenance margin of the positions
  (``maintenance_margin x |net|``) calls the account: it may only reduce (orders that
  would raise its margin are rejected ``reduce_only``). At a later ``eod``, equity back
  to the initial margin of its positions lifts the call; otherwise its open futures
  orders are cancelled and its positions closed out: through the book (the engine sends
  market orders for it), and what the book cannot take is taken over by the clearing
  account at the settlement price.
- **Expiry and delivery**: after a contract's last trading day (the last Monday of the
  contract month, moved back over holidays: ``exchange.calendar``) its orders are
  refused (``contract_expired``); at the first ``eod`` on or after that day its open
  orders are cancelled and the day's settlement is the final price. At the first
  ``eod`` on or after the delivery day, every short delivers ``lots x contract size``
  allowances of the underlying vintage from its available holdings and is paid the final
  price; every long pays and receives them, into its registry holdings. A short without
  the allowances pays a penalty (``delivery_penalty`` x the final price per tonne not
  delivered); the longs not delivered to (in account order) keep their cash and receive
  that penalty instead of the allowances.

Limits: futures fees are not charged; options are not cleared yet (``not_cleared``).
"""
from __future__ import annotations

from . import reasons
from .calendar import day_of_ns
from .events import (ContractExpired, DefaultRecorded, DeliveryFailed, DeliverySettled,
                     MarginCalled, MarginCallMet, PositionClosedOut, SettlementPriceSet,
                     TradeCleared, VariationMargin)
from .market import Market

__all__ = ["Clearing", "Position", "CLEARING"]

CLEARING = "@clearing"


class Position:
    """One account's position in one futures contract (see the module docstring)."""

    __slots__ = ("net", "open_buy", "open_sell", "marked", "flow", "margin")

    def __init__(self) -> None:
        self.net = 0         # signed lots
        self.open_buy = 0    # lots open buy orders still want
        self.open_sell = 0
        self.marked = 0      # net x settlement price at the last settlement (ticks x lots)
        self.flow = 0        # today's signed lots x trade prices
        self.margin = 0      # cash held as margin, minor units

    def worst(self) -> int:
        """The most lots the position can come to if its orders on one side all fill."""
        return max(abs(self.net + self.open_buy), abs(self.net - self.open_sell))

    def row(self) -> list[int]:
        return [self.net, self.open_buy, self.open_sell, self.marked, self.flow, self.margin]


class Clearing:
    """Futures positions and margin of one market's accounts, kept by the ledger."""

    def __init__(self, market: Market, accounts: dict, counters) -> None:
        self._ctr = counters
        self.accounts = accounts          # the ledger's accounts, by name
        self.terms = market.clearing
        # Futures with margin terms clear here; others trade, but not with a ledger.
        self.contracts = {s: i for s, i in market.instruments.items()
                          if i.kind == "future" and i.last_trading_day is not None}
        self.positions: dict[str, dict[str, Position]] = {s: {} for s in self.contracts}
        self.orders: dict[str, list] = {}  # order id -> [account, symbol, is_buy, open lots]
        self.settlement: dict[str, int] = {}   # symbol -> last settlement price, ticks
        self.window: dict[str, list[int]] = {}  # symbol -> [ticks x lots, lots] in the window
        self.day_trades: dict[str, list[int]] = {}
        self.calls: dict[str, int] = {}        # account -> engine day of its margin call
        self.defaults: dict[str, int] = {}     # currency -> losses on the default fund
        self.own_cash: dict[str, int] = {}     # currency -> what its own positions made
        self.expired: set[str] = set()
        self.delivered: set[str] = set()
        self.clock = 0

    # --- orders ---------------------------------------------------------------------------
    def reserve(self, order_id: str, acct, symbol: str, is_buy: bool, qty: int) -> str | None:
        """Hold the margin a new order on *symbol* needs, or return why it cannot trade."""
        inst = self.contracts[symbol]
        if symbol in self.expired or day_of_ns(self.clock) > inst.last_trading_day:
            return reasons.CONTRACT_EXPIRED
        pos = self.positions[symbol].get(acct.name) or Position()
        before = pos.worst()
        if is_buy:
            pos.open_buy += qty
        else:
            pos.open_sell += qty
        rise = inst.initial_margin * pos.worst() - pos.margin
        if pos.worst() > before and acct.name != CLEARING:
            problem = None
            if acct.name in self.calls:
                problem = reasons.REDUCE_ONLY
            elif rise > 0:
                cash = acct.holdings.get(inst.currency)
                if cash is None or cash.available < rise:
                    problem = reasons.INSUFFICIENT_MARGIN
            if problem is not None:
                if is_buy:
                    pos.open_buy -= qty
                else:
                    pos.open_sell -= qty
                return problem
        self.positions[symbol][acct.name] = pos
        self.orders[order_id] = [acct.name, symbol, is_buy, qty]
        self._remargin(acct, pos, inst)
        return None

    def amend(self, order_id: str, acct, qty: int) -> str | None:
        """Resize an open order's margin for its new open quantity, or refuse."""
        record = self.orders[order_id]
        _, symbol, is_buy, open_qty = record
        if qty <= open_qty:
            self._shrink(record, open_qty - qty)
            return None
        del self.orders[order_id]
        self._shrink(record, open_qty)
        problem = self.reserve(order_id, acct, symbol, is_buy, qty)
        if problem is not None:   # put the order back as it was
            self.reserve(order_id, acct, symbol, is_buy, open_qty)
        return problem

    def release(self, order_id: str) -> None:
        """An order ended: its open lots no longer count toward the margin."""
        record = self.orders.pop(order_id, None)
        if record is not None:
            self._shrink(record, record[3])

    def _shrink(self, record: list, lots: int) -> None:
        account, symbol, is_buy, _ = record
        record[3] -= lots
        pos = self.positions[symbol][account]
        if is_buy:
            pos.open_buy -= lots
        else:
            pos.open_sell -= lots
        self._remargin(self.accounts[account], pos, self.contracts[symbol])
        self._forget(symbol, account, pos)

    def _forget(self, symbol: str, account: str, pos: Position) -> None:
        if not (pos.net or pos.open_buy or pos.open_sell or pos.marked or pos.flow
                or pos.margin):
            del self.positions[symbol][account]

    def _remargin(self, acct, pos: Position, inst) -> None:
        """Hold what the position needs now: give back any excess; take a shortfall from
        available cash as far as it goes (after settlement losses ate into the margin)."""
        if acct.name == CLEARING:
            return
        need = inst.initial_margin * pos.worst()
        delta = need - pos.margin
        if delta == 0:
            return
        cash = acct.holding(inst.currency)
        if delta > 0:
            delta = min(delta, cash.available)
        cash.available -= delta
        cash.held += delta
        pos.margin += delta

    # --- trades ---------------------------------------------------------------------------
    def trade(self, trade, out: list) -> None:
        """Move a futures trade into both sides' positions."""
        symbol, qty, price = trade.instrument, trade.qty, trade.price
        inst = self.contracts[symbol]
        positions = self.positions[symbol]
        for order_id, account, leaves, sign in (
                (trade.buy_order_id, trade.buy_account, trade.buy_leaves_qty, 1),
                (trade.sell_order_id, trade.sell_account, trade.sell_leaves_qty, -1)):
            record = self.orders[order_id]
            record[3] -= qty
            pos = positions[account]
            if sign > 0:
                pos.open_buy -= qty
            else:
                pos.open_sell -= qty
            pos.net += sign * qty
            pos.flow += sign * qty * price
            if not leaves:
                del self.orders[order_id]
                if record[3]:   # a market order's unfilled rest ends with it
                    self._shrink(record, record[3])
            self._remargin(self.accounts[account], pos, inst)
        day = self.day_trades.setdefault(symbol, [0, 0])
        day[0] += price * qty
        day[1] += qty
        if self.terms.in_window(self.clock):
            window = self.window.setdefault(symbol, [0, 0])
            window[0] += price * qty
            window[1] += qty
        self._event(TradeCleared, out, trade_id=trade.trade_id, instrument=symbol,
                    buy_account=trade.buy_account, sell_account=trade.sell_account, qty=qty,
                    price=price, buy_position=positions[trade.buy_account].net,
                    sell_position=positions[trade.sell_account].net)

    # --- the end of the day -----------------------------------------------------------------
    def end_of_day(self, out: list, books: dict, day: int) -> tuple[list, list]:
        """Settle the day: prices, variation margin, calls; expiry and delivery.

        Return ``(close_outs, expiring)``: ``(account, symbol, lots)`` positions the engine
        must close through the book, and the contracts whose open orders it must cancel.
        """
        today = day_of_ns(self.clock)
        owed: dict[str, int] = {}
        for symbol in sorted(self.contracts):
            if symbol in self.expired:
                continue   # marked at its final price already; no more trading
            price = self._settlement_price(symbol, books[symbol], out)
            if price is None:
                continue
            inst = self.contracts[symbol]
            for account in sorted(self.positions[symbol]):
                pos = self.positions[symbol][account]
                amount = (pos.net * price - pos.marked - pos.flow) * inst.tick_value
                pos.marked, pos.flow = pos.net * price, 0
                if pos.net or amount:
                    self._event(VariationMargin, out, account=account, instrument=symbol,
                                position=pos.net, amount=amount, currency=inst.currency)
                owed[account] = owed.get(account, 0) + amount
        self.window.clear()
        self.day_trades.clear()
        currency = self._currency()
        for account in sorted(owed):
            self._pay(account, owed[account], currency, out, "variation_margin")
        close_outs = self._margin_calls(out, day, currency)
        expiring = [s for s in sorted(self.contracts) if s not in self.expired
                    and today >= self.contracts[s].last_trading_day]
        for symbol in expiring:
            self.expired.add(symbol)
            self._event(ContractExpired, out, instrument=symbol,
                        final_price=self.settlement.get(symbol))
        for symbol in sorted(self.expired - self.delivered):
            if today >= self.contracts[symbol].delivery_day:
                self._deliver(symbol, out)
        return close_outs, expiring

    def _settlement_price(self, symbol: str, book, out: list) -> int | None:
        window = self.window.get(symbol)
        bid, ask = book.best_bid(), book.best_ask()
        day = self.day_trades.get(symbol)
        if window:
            price, source = (2 * window[0] + window[1]) // (2 * window[1]), "window"
        elif bid is not None and ask is not None:
            price, source = (bid + ask + 1) // 2, "mid"
        elif symbol in self.settlement:
            price, source = self.settlement[symbol], "previous"
        elif day:
            price, source = (2 * day[0] + day[1]) // (2 * day[1]), "day"
        else:
            return None
        self.settlement[symbol] = price
        self._event(SettlementPriceSet, out, instrument=symbol, price=price, source=source)
        return price

    def _currency(self) -> str:
        currencies = {i.currency for i in self.contracts.values()}
        return currencies.pop() if len(currencies) == 1 else "CNY"

    def _pay(self, account: str, amount: int, currency: str, out: list, why: str) -> None:
        """Move *amount* from the clearing account to *account* (negative: the other way:
        available cash first, then margin; what is still owed is a default)."""
        clearing = self.accounts[CLEARING].holding(currency)
        if account == CLEARING:   # its own position: nothing moves, but it is counted
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
        clearing.available += -amount - due
        if due:
            self.defaults[currency] = self.defaults.get(currency, 0) + due
            self._event(DefaultRecorded, out, account=account, amount=due, currency=currency,
                        reason=why)

    def _margin_calls(self, out: list, day: int, currency: str) -> list:
        """Top up margins; call, lift calls, or close out (see the module docstring)."""
        by_account: dict[str, list[tuple[str, Position]]] = {}
        for symbol in sorted(self.positions):
            for account, pos in self.positions[symbol].items():
                by_account.setdefault(account, []).append((symbol, pos))
        close_outs = []
        for account in sorted(by_account):
            if account == CLEARING:
                continue
            acct = self.accounts[account]
            held = by_account[account]
            for symbol, pos in held:
                self._remargin(acct, pos, self.contracts[symbol])
            cash = acct.holding(currency)
            equity = cash.available + sum(pos.margin for _, pos in held)
            maintenance = sum(self.contracts[s].maintenance_margin * abs(p.net) for s, p in held)
            initial = sum(self.contracts[s].initial_margin * abs(p.net) for s, p in held)
            if account in self.calls and self.calls[account] < day:
                if equity >= initial:
                    del self.calls[account]
                    self._event(MarginCallMet, out, account=account, equity=equity,
                                currency=currency)
                else:
                    close_outs += [(account, s, p.net) for s, p in held
                                   if p.net and s not in self.expired]
            elif account not in self.calls and equity < maintenance:
                self.calls[account] = day
                self._event(MarginCalled, out, account=account, equity=equity,
                            maintenance=maintenance, initial=initial, currency=currency)
        return close_outs

    def take_over(self, account: str, symbol: str, out: list) -> None:
        """After a close-out through the book: what is left of *account*'s position goes
        to the clearing account at the settlement price; a closed account's call ends."""
        positions = self.positions[symbol]
        pos = positions.get(account)
        price = self.settlement[symbol]
        if pos is not None and pos.net:
            lots = pos.net
            mine = positions.setdefault(CLEARING, Position())
            for p, sign in ((pos, -1), (mine, 1)):
                p.net += sign * lots
                p.flow += sign * lots * price
            self._remargin(self.accounts[account], pos, self.contracts[symbol])
            self._event(PositionClosedOut, out, account=account, instrument=symbol,
                        qty=-lots, price=price, via="clearing")

    def close_out_done(self, account: str) -> None:
        if not any(account in p and p[account].net for p in self.positions.values()):
            self.calls.pop(account, None)

    # --- delivery -------------------------------------------------------------------------
    def _deliver(self, symbol: str, out: list) -> None:
        inst = self.contracts[symbol]
        underlying, size, currency = inst.underlying, inst.contract_size, inst.currency
        final = self.settlement.get(symbol)
        self.delivered.add(symbol)
        positions = self.positions[symbol]
        if final is None:
            return
        per_tonne = final * inst.tick_value // size
        penalty = per_tonne * self.terms.penalty_num // self.terms.penalty_den
        pool = 0   # tonnes the shorts delivered, handed on to the longs in account order
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
        for account in sorted(positions):
            pos = positions[account]
            if pos.net <= 0:
                continue
            owed = pos.net * size
            got = min(owed, pool)
            pool -= got
            if got:
                self.accounts[account].holding(underlying).available += got
                self._pay(account, -got * per_tonne, currency, out, "delivery")
                self._event(DeliverySettled, out, account=account, instrument=symbol,
                            underlying=underlying, side="buy", tonnes=got,
                            cash=got * per_tonne)
            if owed > got:
                self._pay(account, (owed - got) * penalty, currency, out, "failed_delivery")
                self._event(DeliveryFailed, out, account=account, instrument=symbol,
                            tonnes=owed - got, penalty=-(owed - got) * penalty)
        for account in sorted(positions):
            pos = positions[account]
            pos.net = pos.marked = pos.flow = 0
            self._remargin(self.accounts[account], pos, inst)
            self._forget(symbol, account, pos)

    # --- events and checks ------------------------------------------------------------------
    def _event(self, cls, out: list, **fields) -> None:
        ctr = self._ctr
        ctr.seq += 1
        out.append(cls(seq=ctr.seq, **fields))

    def margin_held(self) -> dict[tuple[str, str], int]:
        """Cash held as margin, by (account, currency)."""
        held: dict[tuple[str, str], int] = {}
        for symbol, positions in self.positions.items():
            currency = self.contracts[symbol].currency
            for account, pos in positions.items():
                key = (account, currency)
                held[key] = held.get(key, 0) + pos.margin
        return held

    def check(self, live_orders: list) -> None:
        """Raise ``AssertionError`` if a clearing invariant is broken. *live_orders* are
        the engine's open orders on futures."""
        wanted: dict[tuple[str, str], list[int]] = {}
        assert {o.order_id for o in live_orders} == set(self.orders), "orders differ"
        for order in live_orders:
            record = self.orders[order.order_id]
            assert record[3] == order.qty, (order.order_id, "open lots")
            sides = wanted.setdefault((order.instrument, order.account), [0, 0])
            sides[0 if order.is_buy else 1] += order.qty
        for symbol, positions in self.positions.items():
            inst = self.contracts[symbol]
            assert sum(p.net for p in positions.values()) == 0, f"{symbol}: lots do not net out"
            for account, pos in positions.items():
                assert [pos.open_buy, pos.open_sell] == wanted.get((symbol, account), [0, 0]), \
                    (symbol, account, "open lots")
                assert 0 <= pos.margin <= inst.initial_margin * pos.worst(), (symbol, account)
                if account == CLEARING:
                    assert pos.margin == 0

    def snapshot(self) -> list:
        return [[[s, a, p.row()] for s in sorted(self.positions)
                 for a, p in sorted(self.positions[s].items())],
                sorted([k, *v] for k, v in self.orders.items()),
                sorted(self.settlement.items()),
                sorted([s, *v] for s, v in self.window.items()),
                sorted([s, *v] for s, v in self.day_trades.items()),
                sorted(self.calls.items()), sorted(self.defaults.items()),
                sorted(self.own_cash.items()), sorted(self.expired), sorted(self.delivered)]
