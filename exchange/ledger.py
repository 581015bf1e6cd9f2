"""The ledger: accounts, holdings, pre-trade risk holds and settlement of every trade.

Every account holds, per asset (a currency code such as ``CNY``, or an instrument
symbol such as ``CEA25``), three integer buckets:

  available - free to trade, withdraw, transfer or surrender;
  held      - reserved for the account's open orders (buys hold cash, sells units);
  locked    - bought today, sellable from the next trading day (T+1, per instrument).

Cash is in the currency's minor units (fen); allowances in whole units.

Invariants (``check``):

- per asset, the sum of every account's three buckets equals the asset's supply:
  deposits minus withdrawals for cash, issuance for allowances (surrendered units
  stay, in the registry's account); trading only moves value between accounts;
- no bucket is ever negative;
- each open order has exactly one hold, equal to what the order still needs, and each
  account's ``held`` is the sum of its orders' holds. A buy needs
  ``price x open qty x tick value`` plus the larger of the maker and taker fee on that;
  a sell needs its open quantity. A market buy (or a triggered stop) never rests, so
  its hold is whatever the command's fills leave, released when it ends.

Fees: each side pays ``floor(notional x rate)`` per fill (rate in millionths of the
notional: 1 bp = 100), to the exchange's fee account ``@exchange``. Rounding down per
fill keeps every fill's fee within the hold, since ``floor(a) + floor(b) <= floor(a+b)``.

System accounts, named with a leading ``@`` so no participant can take the name:
``@exchange`` (fees), ``@registry`` (surrendered allowances, which never trade again),
``@clearing`` (the clearing house's account, used by derivatives). Commands naming
them are rejected ``reserved_account``.

Futures and options clear through ``exchange.derivatives.clearing`` (positions; margin and option
premiums held in ``held``; daily settlement at ``eod``). Known limits: derivatives
without margin terms are not cleared (orders rejected ``not_cleared``); a market buy with
no price band walks the book to size itself, O(n).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import msgspec

from exchange.reasons import Reason
from exchange.reasons import Rejected
from exchange.accounts import (CLEARING, CLOSED, FEES, OPEN, REGISTRY, SUSPENDED, SYSTEM,
                               SYSTEM_ACCOUNTS, Account, Holding, Pledge)
from exchange.book.fast import (LIMIT, NO_LIMIT, PRICED, STOP, STP_NONE,
                                STP_RESTING, Counters, Order)
from exchange.commands import (AllocateAllowances, ClawBackAllowances, CloseAccount,
                               ComplianceDeadline, ConvertAllowances, Deposit, IssueAllowances,
                               EnforcePledge, OpenAccount, PledgeAllowances, RecordEmissions,
                               ReleasePledge, ResumeAccount, SurrenderAllowances, SuspendAccount,
                               TransferAllowances, Withdraw)
from exchange.compliance.allocation import average_price
from exchange.compliance.registry import Registry
from exchange.derivatives.clearing import Clearing
from exchange.events import (AccountOpened, AccountStatusChanged, AllowancesAllocated,
                             AllowancesClawedBack, AllowancesConverted, AllowancesIssued,
                             AllowancesPledged, PledgeEnforced, PledgeReleased,
                             AllowancesSurrendered, AllowancesTransferred, CashDeposited,
                             CashWithdrawn, ComplianceAssessed, DeadlinePassed, EmissionsVerified,
                             Event, HoldingsUnlocked, LedgerCommandIgnored, OrderCancelled,
                             OrderExpired, TradeExecuted, TradeSettled)
from exchange.market import FEE_SCALE, MINOR_UNITS, Instrument, Market, cash_needed
from exchange.state import AccountState, HoldingState, HoldState, LedgerState, PledgeState
from exchange.units import Scale

if TYPE_CHECKING:
    from exchange.book.interface import OrderBook

__all__ = [
    "Ledger", "NoLedger", "Holding", "Account", "FEES", "REGISTRY", "CLEARING", "SYSTEM_ACCOUNTS",
    "AdminCommand", "CloseOut"
]

# The account and registry commands the ledger runs (``apply``).
AdminCommand: TypeAlias = (Deposit | Withdraw | IssueAllowances | SurrenderAllowances
                           | TransferAllowances | OpenAccount | SuspendAccount | ResumeAccount
                           | CloseAccount | RecordEmissions | ComplianceDeadline
                           | ClawBackAllowances | AllocateAllowances | ConvertAllowances
                           | PledgeAllowances | ReleasePledge | EnforcePledge)
# A futures position the engine closes out through the book: (account, symbol, lots).
CloseOut: TypeAlias = tuple[str, str, int]
# An instrument's terms for reserve: (currency, spot, tick value, fee rate held for (the
# larger of maker and taker), position limit or None).
_Terms: TypeAlias = tuple[str, bool, int, int, int | None]
# A spot instrument's terms for settle: (tick value, maker fee, taker fee, settlement
# days, the fee account's holding of its currency, currency, whether the registry
# counts its trades (0, _COUNTED, or _BANKED: an old vintage, whose trades count as
# net sales too), whether market makers' maker fees on it are counted).
_SettleTerms: TypeAlias = tuple[int, int, int, int, Holding, str, int, bool]
_COUNTED = 1
_BANKED = 2
# What a hold is kept under: an order's (or a block's, a bid's, an auction's) id; a
# block's acceptor holds for the one command that accepts it, under a tuple no id can be.
_HoldKey: TypeAlias = str | tuple[str, str]
# An admin command's handler, keyed by the command's type (each takes that type).
_AdminHandler: TypeAlias = Callable[[Any, list[Event]], None]


class _Hold(msgspec.Struct, gc=False):
    """What one open order has reserved: ``amount`` of ``holding.held``.

    ``other`` is the holding that receives the other leg of each fill (a buy's units, a
    sell's cash). For buys ``price`` is the price the hold was sized at, ``unit`` the
    tick value and ``fee`` the fee rate held for; ``qty`` is the open quantity.
    ``rests``: the order has a limit price (limit, stop-limit), so its hold follows its
    price and open quantity exactly; otherwise (market, stop) it never rests and its
    hold just shrinks with each fill until the order ends.
    """

    # Profiled (benchmarks/ledger.py): a Struct is built in C, markedly cheaper than a Python
    # __init__; gc=False as holds reference holdings only, never themselves.
    holding: Holding
    other: Holding
    amount: int
    is_buy: bool
    price: int
    unit: int
    fee: int
    qty: int
    rests: bool
    # The order's fills so far, notional x fee rate in millionths of a minor unit, less the
    # whole minor units already charged: always under FEE_SCALE.
    accrued: int = 0


class Ledger:
    """Accounts and holdings of one market, kept by the engine's sequenced pipeline.

    The engine calls ``reserve`` before an order is accepted, ``settle`` after each
    command with the events it produced, ``amend`` before an amend acts and
    ``end_of_day`` at ``eod``; ``apply`` runs the admin commands.
    """

    def __init__(self, market: Market, counters: Counters) -> None:
        self._ctr = counters
        self.instruments = dict(market.instruments)
        self.currencies = sorted({inst.currency for inst in self.instruments.values()})
        self._cash_scale = {c: Scale(_minor_step(c)) for c in self.currencies}
        self.accounts: dict[str, Account] = {}
        self.supply: dict[str, int] = {}  # asset -> units in existence
        # Units that open primary auctions will issue when they clear (the engine sets it:
        # the auctions are its), counted against the supply's limit from their opening.
        self.promised: Callable[[str], int] = lambda asset: 0
        self._holds: dict[_HoldKey, _Hold] = {}
        self.pledges: dict[str, Pledge] = {}  # the registered pledges in force, by id
        self._locked: dict[tuple[str, str], Holding] = {}  # holdings with locked units
        for name in SYSTEM_ACCOUNTS:
            account = self.accounts[name] = Account(name, name[1:])
            account.status = SYSTEM
            for currency in self.currencies:
                account.holding(currency)
        fees = {c: self.accounts[FEES].holding(c) for c in self.currencies}
        # Per-instrument terms the hot paths unpack in one step.
        self._terms: dict[str, _Terms] = {
            sym: (inst.currency, inst.kind == "spot", inst.tick_value,
                  max(inst.maker_fee, inst.taker_fee), inst.position_limit)
            for sym, inst in self.instruments.items()
        }
        self.registry = Registry(self.instruments, market.schedule, self.accounts)
        self._quoted = frozenset(o.symbol for o in market.quoting)
        self._settle_terms: dict[str, _SettleTerms | None] = {
            sym: (inst.tick_value, inst.maker_fee, inst.taker_fee,
                  inst.settlement_days, fees[inst.currency], inst.currency,
                  (_BANKED if self.registry.old_vintage(sym) else _COUNTED)
                  if self.registry.counts_trades(sym) else 0, sym in self._quoted)
            if inst.kind == "spot" else None
            for sym, inst in self.instruments.items()
        }
        self._admin: dict[type[AdminCommand], _AdminHandler] = {
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            IssueAllowances: self._issue,
            SurrenderAllowances: self._surrender,
            TransferAllowances: self._transfer,
            OpenAccount: self._open,
            SuspendAccount: self._suspend,
            ResumeAccount: self._resume,
            CloseAccount: self._close,
            RecordEmissions: self._emissions,
            ComplianceDeadline: self._deadline,
            ClawBackAllowances: self._claw_back,
            AllocateAllowances: self._allocate,
            ConvertAllowances: self._convert,
            PledgeAllowances: self._pledge,
            ReleasePledge: self._release_pledge,
            EnforcePledge: self._enforce_pledge
        }
        self.clearing = Clearing(market, self.accounts, counters)
        self.closing_out = False  # the engine's close-out orders pass a suspension
        # Position limits across vintages (``[limits]``): the allowances that count (spot
        # instruments with a vintage, not offsets) and the futures delivering them.
        self.limits = market.limits
        # kind -> its limit, the first given of a kind as Limits.of reads it
        self._limits = dict(reversed(self.limits.by_kind))
        self._counted = frozenset(sym for sym, inst in self.instruments.items()
                                  if inst.kind == "spot" and inst.vintage is not None
                                  and not inst.offset)
        self._counted_futures = tuple(
            (sym, inst.contract_size) for sym, inst in self.instruments.items()
            if inst.kind == "future" and inst.underlying in self._counted
            and sym in self.clearing.contracts)
        self._limited_futures = frozenset(sym for sym, _ in self._counted_futures)
        self._allocated: dict[str, int] | None = None  # entity -> its latest allocation
        # The market-maker programme (exchange.makers): the maker fees market makers paid
        # today on the instruments that oblige them, (account, symbol) -> minor units; None
        # when no instrument does.
        self._maker_fees: dict[tuple[str, str], int] | None = {} if self._quoted else None

    def set_clock(self, ts: int) -> None:
        """Move the registry's and the clearing house's clock: deadlines, monthly prices,
        closing windows and expiries go by it."""
        self.registry.clock = self.clearing.clock = ts

    # --- queries -------------------------------------------------------------------------
    def holding(self, account: str, asset: str) -> Holding | None:
        acct = self.accounts.get(account)
        return None if acct is None else acct.holdings.get(asset)

    def holdings(self) -> list[tuple[str, str, int, int, int, int]]:
        """Return ``(account, asset, available, held, locked, pledged)`` rows, sorted."""
        return [(name, asset, h.available, h.held, h.locked, h.pledged)
                for name in sorted(self.accounts)
                for asset, h in sorted(self.accounts[name].holdings.items())]

    def held_for(self, order_id: str) -> int | None:
        """Return the amount held for an open order, or ``None``."""
        hold = self._holds.get(order_id)
        return None if hold is None else hold.amount

    def hold_price(self, order_id: str) -> int:
        """Return the price an open buy's hold was sized at (no limit for a cleared
        derivative, whose margin does not depend on its price)."""
        hold = self._holds.get(order_id)
        return NO_LIMIT if hold is None else hold.price

    def reprice(self, order_id: str, price: int) -> bool:
        """Size a triggered stop market buy's hold at *price* (the band's top at its
        trigger, above the one it was placed under) if its account's cash covers the
        difference; return whether it does (nothing changes when it does not)."""
        hold = self._holds.get(order_id)
        if hold is None or not hold.is_buy:
            return True  # nothing held by price: a cleared derivative's margin
        need = cash_needed(price, hold.qty, hold.unit, hold.fee, hold.accrued)
        more = need - hold.amount
        if more > hold.holding.available:
            return False
        hold.holding.available -= more
        hold.holding.held += more
        hold.amount = need
        hold.price = price
        return True

    # --- pre-trade risk ------------------------------------------------------------------
    def reserve(self, order_id: _HoldKey, account: str, symbol: str, is_buy: bool, price: int,
                qty: int, kind: int = LIMIT, priced: bool = True, stp: int = 0,
                band: tuple[int, int] | None = None,
                book: OrderBook | None = None) -> str | int | None:
        """Hold what a new order needs before it is accepted.

        A limit or stop-limit order needs only the first six arguments (benchmarks/ledger.py: the
        common call stays short); market and stop orders pass their kind, ``priced``
        False, their self-trade mode, the band and the book.

        Return ``None`` when held, a reject reason, or (a market buy with no band that
        the account can afford only in part) the quantity it can afford, which is held.
        """
        # Profiled (benchmarks/ledger.py): subscripts, not dict.get, here and for the terms
        # below: a method call costs more than the look-up, and a miss is rare.
        try:
            acct = self.accounts[account]
        except KeyError:
            if account.startswith("@"):
                return Reason.RESERVED_ACCOUNT
            return Reason.INSUFFICIENT_CASH if is_buy else Reason.INSUFFICIENT_ALLOWANCES
        if acct.status != OPEN and not (self.closing_out and acct.status == SUSPENDED):
            return _status_reason(acct)
        # Profiled (benchmarks/ledger.py): the terms and both holdings in one lookup, once known.
        try:
            position, cash, unit, fee, limit = acct.spot[symbol]  # neither is _EMPTY
        except KeyError:
            currency, spot, unit, fee, limit = self._terms[symbol]
            if not spot:
                if symbol not in self.clearing.cleared:
                    return Reason.NOT_CLEARED  # no margin terms: traded, not cleared
                if (is_buy and self.limits.by_kind and symbol in self._limited_futures
                        and self._over_limit(acct, symbol, qty)):
                    return Reason.POSITION_LIMIT
                assert isinstance(order_id, str)  # blocks and auctions are spot only
                return self.clearing.reserve(order_id, acct, symbol, is_buy, qty,
                                             price if kind in PRICED else 0)
            # Holdings are looked up, not created, until the order is sure to be
            # accepted: a rejection changes nothing.
            holdings = acct.holdings
            position = holdings.get(symbol) or _EMPTY
            cash = holdings.get(currency) or _EMPTY
            if acct.kind != "financial":
                limit = None
            if position is not _EMPTY and cash is not _EMPTY:
                acct.spot[symbol] = (position, cash, unit, fee, limit)
        if not is_buy:
            if position.available < qty:
                return Reason.INSUFFICIENT_ALLOWANCES
            if cash is _EMPTY:
                cash = acct.holding(currency)
            position.available -= qty
            position.held += qty
            self._holds[order_id] = _Hold(position, cash, qty, False, 0, 0, 0, qty, priced)
            return None
        if limit is not None and position.total + position.pending_buy + qty > limit:
            return Reason.POSITION_LIMIT
        if self.limits.by_kind and symbol in self._counted and self._over_limit(acct, symbol, qty):
            return Reason.POSITION_LIMIT
        result: int | None = None
        # market and stop orders; a limit order by one compare (benchmarks/ledger.py)
        if kind != LIMIT and kind not in PRICED:
            if band is not None:
                price = band[1]
            elif kind == STOP:
                return Reason.STOP_NEEDS_BAND  # nothing to size a hold by: use stop_limit
            else:
                affordable, amount, cash_bound = _walk(
                    book,  # type: ignore[arg-type]  # a market order comes with its book
                    account, stp, cash.available, qty, unit, fee)
                if not affordable:
                    # Nothing it could buy: refused if for want of cash; with an empty
                    # book it is accepted and cancelled as any market order would be.
                    return Reason.INSUFFICIENT_CASH if cash_bound else None
                if cash_bound:
                    result = qty = affordable
                self._take(acct, symbol, cash, position, order_id, amount, NO_LIMIT, unit, fee, qty,
                           False)
                return result
        amount = price * qty * unit
        amount += amount * fee // FEE_SCALE  # cash_needed, inlined (benchmarks/ledger.py)
        if cash.available < amount:
            return Reason.INSUFFICIENT_CASH
        if position is _EMPTY:
            position = acct.holding(symbol)
        cash.available -= amount
        cash.held += amount
        position.pending_buy += qty
        self._holds[order_id] = _Hold(cash, position, amount, True, price, unit, fee, qty, priced)
        return None

    def _take(self, acct: Account, symbol: str, cash: Holding, position: Holding,
              order_id: _HoldKey,
              amount: int, price: int, unit: int, fee: int, qty: int, rests: bool) -> None:
        if position is _EMPTY:
            position = acct.holding(symbol)
        cash.available -= amount
        cash.held += amount
        position.pending_buy += qty
        self._holds[order_id] = _Hold(cash, position, amount, True, price, unit, fee, qty, rests)

    def amend(self, order_id: str, account: str, symbol: str, price: int, qty: int) -> str | None:
        """Resize an open order's hold for a new price and open quantity, or refuse."""
        acct = self.accounts[account]
        if acct.status != OPEN:
            return _status_reason(acct)
        record = self.clearing.orders.get(order_id)
        if record is not None:
            # A futures buy amended up counts toward the position limit as a new one would.
            if (record[2] and qty > record[3] and self.limits.by_kind
                    and symbol in self._limited_futures
                    and self._over_limit(acct, symbol, qty - record[3])):
                return Reason.POSITION_LIMIT
            return self.clearing.amend(order_id, acct, price, qty)
        hold = self._holds[order_id]
        if not hold.is_buy:
            delta = qty - hold.amount
            if delta > hold.holding.available:
                return Reason.INSUFFICIENT_ALLOWANCES
        else:
            # A limit order's hold follows its price; a stop market buy keeps the price
            # its hold was sized at (the band's top when it was placed).
            hold_price = price if hold.rests else hold.price
            delta = cash_needed(hold_price, qty, hold.unit, hold.fee, hold.accrued) - hold.amount
            if delta > hold.holding.available:
                return Reason.INSUFFICIENT_CASH
            position = hold.other
            limit = self.instruments[symbol].position_limit if acct.kind == "financial" else None
            if (limit is not None and qty > hold.qty
                    and position.total + position.pending_buy + qty - hold.qty > limit):
                return Reason.POSITION_LIMIT
            if (qty > hold.qty and self.limits.by_kind and symbol in self._counted
                    and self._over_limit(acct, symbol, qty - hold.qty)):
                return Reason.POSITION_LIMIT
            hold.price = hold_price
            position.pending_buy += qty - hold.qty
        hold.qty = qty
        hold.amount += delta
        hold.holding.available -= delta
        hold.holding.held += delta
        return None

    # --- position limits ---------------------------------------------------------------------
    def position_limit(self, acct: Account) -> int | None:
        """The most allowances *acct* may have across vintages (``[limits]``), or ``None``:
        a covered entity's is its latest allocation plus its kind's figure."""
        limit = self._limits.get(acct.kind)  # (Limits.of: benchmarks/gateway.py, batched)
        if limit is None or acct.status == SYSTEM:
            return None
        if acct.kind == "covered":
            allocated = self._allocated
            if allocated is None:
                latest: dict[str, tuple[int, int]] = {}
                for (name, year), allocation in self.registry.allocations.items():
                    if year >= latest.get(name, (year, 0))[0]:
                        latest[name] = (year, allocation.allocation)
                allocated = self._allocated = {n: a for n, (_, a) in latest.items()}
            limit += allocated.get(acct.name, 0)
        return limit

    def exposure(self, acct: Account) -> int:
        """What counts toward *acct*'s limit: its allowances of every vintage (available,
        held, locked and pledged) and what its open buys still want, plus its futures' net long
        lots and open buy lots times the lot size."""
        counted = self._counted
        total = 0
        # Profiled (benchmarks/gateway.py, batched: every buy asks): the account's few
        # holdings looked through, not every counted vintage looked up.
        for symbol, holding in acct.holdings.items():
            if symbol in counted:  # (Holding.total, added here: benchmarks/gateway.py, batched)
                total += (holding.available + holding.held + holding.locked + holding.pledged
                          + holding.pending_buy)
        positions = self.clearing.positions
        for symbol, size in self._counted_futures:
            pos = positions[symbol].get(acct.name)
            if pos is not None:
                total += max(pos.net + pos.open_buy, 0) * size
        return total

    def _over_limit(self, acct: Account, symbol: str, qty: int) -> bool:
        """Would *qty* more of *symbol* (units, or lots of a future) take *acct* past its
        position limit?"""
        limit = self.position_limit(acct)
        if limit is None:
            return False
        inst = self.instruments[symbol]
        if inst.kind == "future":
            # Its net long lots with its open buys count: a buy that only shortens a short
            # adds nothing (a hedger at its limit, or a close-out, may always unwind).
            pos = self.clearing.positions[symbol].get(acct.name)
            long = 0 if pos is None else pos.net + pos.open_buy
            more = (max(long + qty, 0) - max(long, 0)) * inst.contract_size
            if not more:
                return False
        else:
            more = qty
        return self.exposure(acct) + more > limit

    # --- settlement ------------------------------------------------------------------------
    def settle_away(self, trade: TradeExecuted, buy_key: _HoldKey, sell_key: _HoldKey,
                    out: list[Event]) -> None:
        """Settle one spot trade made away from the book (a block or an auction) between
        the holds *buy_key* and *sell_key*, as ``settle`` settles a listing trade."""
        # The callers append *trade* and settle it at once: it is the last event (checked,
        # not asserted: under ``python -O`` another event would be settled in its place).
        if not out or out[-1] is not trade or self._settle_terms[trade.instrument] is None:
            raise ValueError("settle_away: a spot trade, the last event appended")
        self.settle(out, len(out) - 1, (buy_key, sell_key))

    def settle(self, out: list[Event], start: int,
               keys: tuple[_HoldKey, _HoldKey] | None = None) -> None:
        """Settle the trades and release the holds of the events ``out[start:]``.

        Each spot trade delivers versus payment from the holds of its orders into a
        ``TradeSettled`` event (appended): the buyer pays from its hold and gets the units
        (locked under T+1), the seller delivers its held units and gets the cash, each
        less its fee. A future's trade goes to the clearing house; cancelled and expired
        orders give back what they held. With *keys* (``settle_away``), ``out[start:]``
        is one trade made away from the book, settled from the holds *keys* (buy, sell).
        """
        # Profiled (benchmarks/ledger.py): one loop per command, the per-trade steps (the
        # registry's tally, delivery versus payment) inlined in it, the tally asked once.
        tally: tuple[list[int], dict[str, int] | None] | None = None
        holds = self._holds
        all_terms = self._settle_terms
        ctr = self._ctr
        # What settling appends is not looked at again. Each event is typed as a trade, with
        # no cast nor second name in this profiled loop: *kind* tells the others apart.
        trade: TradeExecuted
        for trade in out[start:]:  # type: ignore[assignment]  # others: see kind
            kind: type[Event] = type(trade)
            if kind is not TradeExecuted:
                if kind is OrderCancelled or kind is OrderExpired:
                    self.release(trade.order_id)  # type: ignore[attr-defined]  # they have one
                continue
            terms = all_terms[trade.instrument]
            if terms is None:  # a future: positions move now, cash at the day's settlement
                self.clearing.trade(trade, out)
                continue
            unit, maker, taker, settlement_days, fees, currency, counted, quoted = terms
            qty = trade.qty
            cash = trade.price * qty * unit
            # The registry counts its trades between two accounts: the month's notional and
            # volume (the fine's price, which an account's trades with itself must not set,
            # as they set no close) and net sales (which they would not change).
            if counted and trade.buy_account != trade.sell_account:
                if tally is None:
                    tally = self.registry.tally()
                month, net = tally
                month[0] += cash
                month[1] += qty
                if net is not None and counted == _BANKED:
                    # an old vintage (2019-2024): each side's net sales, when the year
                    # counts them (the banking plan's annex)
                    net[trade.sell_account] = net.get(trade.sell_account, 0) + qty
                    net[trade.buy_account] = net.get(trade.buy_account, 0) - qty
            if keys is None:
                buy_key: _HoldKey = trade.buy_order_id
                sell_key: _HoldKey = trade.sell_order_id
            else:
                buy_key, sell_key = keys
            buy = holds[buy_key]
            sell = holds[sell_key]
            # Fees accrue per order: each fill pays what brings the order's fees to the floor
            # of its notional so far times the rate, so splitting a fill pays as much. Only
            # the part below one minor unit is kept (it alone decides what the next fill
            # rounds to), so a hold's accrual stays under FEE_SCALE, however large the order.
            if trade.aggressor == "buy":
                buy_rate, sell_rate = taker, maker
            else:
                buy_rate, sell_rate = maker, taker
            # (// and %, not divmod: no call nor tuple; the remainder is kept only by a hold
            # that stays; benchmarks/ledger.py)
            buy_accrued = buy.accrued + cash * buy_rate
            buy_fee = buy_accrued // FEE_SCALE
            sell_accrued = sell.accrued + cash * sell_rate
            sell_fee = sell_accrued // FEE_SCALE
            if quoted:
                self._count_maker_fee(trade, buy_fee, sell_fee)
            # Buyer: pay from the hold; the units arrive (locked until the next day
            # under T+1). Each branch updates the buckets once.
            paid = cash + buy_fee
            cash_holding = buy.holding
            position = buy.other
            leaves = trade.buy_leaves_qty
            if not leaves:  # the order is done: pay, and give back the rest of its hold
                del holds[buy_key]
                cash_holding.held -= buy.amount
                cash_holding.available += buy.amount - paid
                position.pending_buy -= buy.qty
            elif buy.rests:  # it may rest: keep exactly what its open quantity needs
                buy.accrued = accrued = buy_accrued % FEE_SCALE
                need = buy.price * leaves * buy.unit  # cash_needed, inlined
                need += (accrued + need * buy.fee) // FEE_SCALE - accrued // FEE_SCALE
                cash_holding.held -= buy.amount - need
                cash_holding.available += buy.amount - paid - need
                buy.amount = need
                buy.qty = leaves
                position.pending_buy -= qty
            else:  # it will not rest: the hold shrinks by what was paid until it ends
                buy.accrued = buy_accrued % FEE_SCALE
                buy.amount -= paid
                cash_holding.held -= paid
                buy.qty -= qty
                position.pending_buy -= qty
            if settlement_days:
                if not position.locked:
                    self._locked[(trade.buy_account, trade.instrument)] = position
                position.locked += qty
            else:
                position.available += qty
            # Seller: deliver the held units; the cash arrives less the fee.
            if trade.sell_leaves_qty:
                sell.accrued = sell_accrued % FEE_SCALE
                sell.amount -= qty
                sell.qty -= qty
            else:
                del holds[sell_key]
            sell.holding.held -= qty
            sell.other.available += cash - sell_fee
            fees.available += buy_fee + sell_fee
            ctr.seq += 1
            # By position (benchmarks/ledger.py): trade_id, instrument, buy and sell accounts,
            # qty, cash, buy and sell fees, currency.
            out.append(TradeSettled(trade.trade_id, trade.instrument, trade.buy_account,
                                    trade.sell_account, qty, cash, buy_fee, sell_fee, currency,
                                    seq=ctr.seq))

    def issue_for_sale(self, key: str, symbol: str, qty: int, out: list[Event]) -> None:
        """Issue *qty* new units of *symbol* to the registry, held under *key* for the
        primary auction that sold them (its trades deliver them)."""
        registry = self.accounts[REGISTRY]
        units = registry.holding(symbol)
        cash = registry.holding(self.instruments[symbol].currency)
        self._event(AllowancesIssued, out, account=REGISTRY, instrument=symbol, qty=qty)
        self.supply[symbol] = self.supply.get(symbol, 0) + qty
        units.held += qty
        self._holds[key] = _Hold(units, cash, qty, False, 0, 0, 0, qty, True)

    def _count_maker_fee(self, trade: TradeExecuted, buy_fee: int, sell_fee: int) -> None:
        """Count the maker fee of *trade* if a market maker paid it."""
        maker, fee = ((trade.sell_account, sell_fee) if trade.aggressor == "buy" else
                      (trade.buy_account, buy_fee))
        if self.accounts[maker].kind == "market_maker" and self._maker_fees is not None:
            key = (maker, trade.instrument)
            self._maker_fees[key] = self._maker_fees.get(key, 0) + fee

    def maker_fees(self) -> dict[tuple[str, str], int]:
        """The maker fees each market maker paid today, by (account, instrument)."""
        return dict(self._maker_fees or {})

    def rebate(self, account: str, currency: str, amount: int) -> None:
        """Give a market maker back *amount* of the fees the exchange took today."""
        fees = self.accounts[FEES].holding(currency)
        assert fees.available >= amount, "a rebate beyond the fees collected"
        fees.available -= amount
        self.accounts[account].holding(currency).available += amount

    def load_maker_fees(self, rows: list[Any]) -> None:
        """Today's maker fees of market makers from a state's ``[[account, symbol, fees]]``."""
        fees = self._maker_fees
        if fees is None:
            raise ValueError("maker fees in the state of a market without obligations")
        for account, symbol, amount in rows:
            if (account not in self.accounts or symbol not in self._quoted
                    or type(amount) is not int or amount < 0 or (account, symbol) in fees):
                raise ValueError(f"maker fees {account!r} {symbol!r} {amount!r}")
            fees[(account, symbol)] = amount

    def new_fee_day(self) -> None:
        """The day ended: count market makers' fees from nothing."""
        if self._maker_fees is not None:
            self._maker_fees.clear()

    def release(self, order_id: str) -> None:
        """Give back what an ended order held (nothing if it held nothing)."""
        hold = self._holds.pop(order_id, None)
        if hold is None:
            self.clearing.release(order_id)
            return
        # The hold is dropped with the order (nothing else refers to it): only the holdings
        # change.
        amount = hold.amount
        holding = hold.holding
        holding.held -= amount
        holding.available += amount
        if hold.is_buy:
            hold.other.pending_buy -= hold.qty

    def end_of_day(self, out: list[Event], books: Mapping[str, OrderBook] | None = None,
                   day: int = 0) -> tuple[list[CloseOut], list[str]]:
        """Release the T+1 locks: units bought today become available; then the clearing
        house settles the day (``Clearing.end_of_day``, given the books and the engine's
        day number) and its ``(close_outs, expiring)`` are returned."""
        ctr = self._ctr
        for key in sorted(self._locked):
            holding = self._locked[key]
            qty = holding.locked
            holding.available += qty
            holding.locked = 0
            ctr.seq += 1
            out.append(HoldingsUnlocked(seq=ctr.seq, account=key[0], asset=key[1], qty=qty))
        self._locked.clear()
        if books is None or not self.clearing.contracts:
            return [], []
        return self.clearing.end_of_day(out, books, day)

    # --- admin commands --------------------------------------------------------------------
    def apply(self, command: AdminCommand, out: list[Event]) -> str | None:
        """Run an admin command, appending its events; return a reject reason or ``None``.

        Each handler checks everything before it changes anything, and a broken rule
        raises ``Rejected`` where it is found."""
        try:
            self._admin[type(command)](command, out)
        except Rejected as refused:
            return refused.reason
        return None

    def _event(self, cls: type[Event], out: list[Event], **fields: object) -> None:
        ctr = self._ctr
        ctr.seq += 1
        out.append(cls(seq=ctr.seq, **fields))

    @overload
    def _usable(self, name: str, create: Literal[False]) -> Account:
        ...

    @overload
    def _usable(self, name: str, create: bool) -> Account | None:
        ...

    def _usable(self, name: str, create: bool) -> Account | None:
        """Return the open (or suspended) account *name* (``Rejected`` if there is none).

        With *create*, an unknown participant account is ``None``: it comes into being
        (``covered``) when the command acts."""
        if not name:
            raise Rejected(Reason.MISSING_FIELD)
        if name.startswith("@"):
            raise Rejected(Reason.RESERVED_ACCOUNT)
        acct = self.accounts.get(name)
        if acct is None:
            if not create:
                raise Rejected(Reason.UNKNOWN_ACCOUNT)
            return None
        if acct.status == CLOSED:
            raise Rejected(Reason.ACCOUNT_CLOSED)
        return acct

    def _opened(self, name: str, out: list[Event]) -> Account:
        """Return account *name*, opening it (an ``AccountOpened`` event) if new."""
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(name, "covered")
            self._event(AccountOpened, out, account=name, kind="covered")
        return acct

    def _amount(self, currency: str, text: str) -> int:
        if currency not in self._cash_scale:
            raise Rejected(Reason.UNKNOWN_CURRENCY)
        try:
            amount = self._cash_scale[currency].to_units(text)
        except ValueError:
            raise Rejected(Reason.INVALID_AMOUNT) from None
        if amount is None or amount <= 0 or amount >= 1 << 62:
            raise Rejected(Reason.INVALID_AMOUNT)
        return amount

    def _units(self, symbol: str, qty: int, zero: bool = False) -> Instrument:
        """Return the spot instrument *symbol* for a movement of *qty* units (more than
        zero, or with *zero* at least zero); ``Rejected`` otherwise."""
        inst = self.instruments.get(symbol)
        if inst is None:
            raise Rejected(Reason.UNKNOWN_INSTRUMENT)
        if inst.kind != "spot":
            raise Rejected(Reason.NOT_ISSUABLE)
        if qty < (0 if zero else 1) or qty >= 1 << 62:
            raise Rejected(Reason.INVALID_QUANTITY)
        return inst

    @staticmethod
    def _debit(acct: Account, asset: str, qty: int) -> bool:
        """Take *qty* available of *asset* (units, or cash in minor units) from *acct*;
        False (nothing taken) if it has less."""
        holding = acct.holdings.get(asset)
        if holding is None or holding.available < qty:
            return False
        holding.available -= qty
        return True

    def _mintable(self, asset: str, qty: int) -> None:
        """``Rejected`` if *qty* more units of *asset* would take its supply (with what
        open primary auctions will issue) to 2^62 or more: no balance can then pass what
        the ledger records (and a snapshot encodes)."""
        if self.mintable(asset, qty) is not None:
            raise Rejected(Reason.SUPPLY_LIMIT)

    def mintable(self, asset: str, qty: int) -> Reason | None:
        """``supply_limit`` if issuing *qty* more of *asset* would pass the supply's
        limit, counting what open primary auctions will issue (a primary auction's
        quantity is checked as it opens), else None."""
        if self.supply.get(asset, 0) + self.promised(asset) + qty >= 1 << 62:
            return Reason.SUPPLY_LIMIT
        return None

    def _deposit(self, cmd: Deposit, out: list[Event]) -> None:
        self._usable(cmd.account, create=True)
        amount = self._amount(cmd.currency, cmd.amount)
        self._mintable(cmd.currency, amount)
        self._event(CashDeposited, out, account=cmd.account, currency=cmd.currency, amount=amount)
        self._opened(cmd.account, out).holding(cmd.currency).available += amount
        self.supply[cmd.currency] = self.supply.get(cmd.currency, 0) + amount
        return None

    def _withdraw(self, cmd: Withdraw, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        amount = self._amount(cmd.currency, cmd.amount)
        if not self._debit(acct, cmd.currency, amount):
            raise Rejected(Reason.INSUFFICIENT_CASH)
        self.supply[cmd.currency] -= amount
        self._event(CashWithdrawn, out, account=cmd.account, currency=cmd.currency, amount=amount)
        return None

    def _issue(self, cmd: IssueAllowances, out: list[Event]) -> None:
        self._usable(cmd.account, create=True)
        self._units(cmd.instrument, cmd.qty)
        self._mintable(cmd.instrument, cmd.qty)
        self._event(AllowancesIssued, out, account=cmd.account, instrument=cmd.instrument,
                    qty=cmd.qty)
        self._opened(cmd.account, out).holding(cmd.instrument).available += cmd.qty
        self.supply[cmd.instrument] = self.supply.get(cmd.instrument, 0) + cmd.qty
        return None

    def _surrender(self, cmd: SurrenderAllowances, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        self._units(cmd.instrument, cmd.qty)
        if cmd.year is not None:
            self.registry.eligible(cmd.account, cmd.instrument, cmd.qty, cmd.year)
        if not self._debit(acct, cmd.instrument, cmd.qty):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        self.accounts[REGISTRY].holding(cmd.instrument).available += cmd.qty
        if cmd.year is not None:
            self.registry.surrendered(cmd.account, cmd.instrument, cmd.qty, cmd.year)
        self._event(AllowancesSurrendered, out, account=cmd.account, instrument=cmd.instrument,
                    qty=cmd.qty, year=cmd.year)
        return None

    def _claw_back(self, cmd: ClawBackAllowances, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        self._units(cmd.instrument, cmd.qty)
        if not self._debit(acct, cmd.instrument, cmd.qty):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        self.supply[cmd.instrument] -= cmd.qty
        self._event(AllowancesClawedBack, out, account=cmd.account, instrument=cmd.instrument,
                    qty=cmd.qty)
        return None

    def _entity(self, name: str) -> Account:
        """Return the covered entity's account *name* (``Rejected`` if it is not one)."""
        acct = self._usable(name, create=False)
        if acct.kind != "covered":
            raise Rejected(Reason.NOT_COVERED)
        return acct

    def _emissions(self, cmd: RecordEmissions, out: list[Event]) -> None:
        self._entity(cmd.account)
        restated = self.registry.record(cmd.account, cmd.year, cmd.qty, cmd.quality, cmd.months)
        self.registry.apply_record(cmd.account, cmd.year, cmd.qty, cmd.quality, cmd.verifier,
                                   cmd.months)
        self._event(EmissionsVerified, out, account=cmd.account, year=cmd.year, qty=cmd.qty,
                    quality=cmd.quality, verifier=cmd.verifier, restated_from=restated,
                    months=cmd.months)
        return None

    def _allocate(self, cmd: AllocateAllowances, out: list[Event]) -> None:
        acct = self._entity(cmd.account)
        self._units(cmd.instrument, cmd.qty, zero=True)
        deducted, change = self.registry.allocate(cmd.account, cmd.instrument, cmd.year, cmd.qty,
                                                  cmd.stage)
        if change < 0 and not self._debit(acct, cmd.instrument, -change):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        if change > 0:
            self._mintable(cmd.instrument, change)
        if change > 0:
            acct.holding(cmd.instrument).available += change
        self.supply[cmd.instrument] = self.supply.get(cmd.instrument, 0) + change
        self.registry.allocated(cmd.account, cmd.year, cmd.qty, cmd.stage, deducted, change)
        self._allocated = None  # the latest allocations are worked out again when needed
        self._event(AllowancesAllocated, out, account=cmd.account, instrument=cmd.instrument,
                    year=cmd.year, stage=cmd.stage, allocation=cmd.qty, deducted=deducted,
                    issued=max(change, 0), clawed_back=max(-change, 0))
        return None

    def _convert(self, cmd: ConvertAllowances, out: list[Event]) -> None:
        acct = self._entity(cmd.account)
        self._units(cmd.instrument, cmd.qty)
        self._units(cmd.to_instrument, cmd.qty)
        registry = self.registry
        old_vintages = sum(h.total for asset, h in acct.holdings.items()
                           if registry.old_vintage(asset))
        left = registry.conversion_left(cmd.account, cmd.instrument, cmd.to_instrument,
                                        old_vintages)
        if cmd.qty > left:
            raise Rejected(Reason.CONVERSION_CAP_EXCEEDED)
        self._mintable(cmd.to_instrument, cmd.qty)
        if not self._debit(acct, cmd.instrument, cmd.qty):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        acct.holding(cmd.to_instrument).available += cmd.qty
        self.supply[cmd.instrument] -= cmd.qty
        self.supply[cmd.to_instrument] = self.supply.get(cmd.to_instrument, 0) + cmd.qty
        registry.convert(cmd.account, cmd.qty)
        self._event(AllowancesConverted, out, account=cmd.account, instrument=cmd.instrument,
                    to_instrument=cmd.to_instrument, qty=cmd.qty, cap_left=left - cmd.qty)
        return None

    def _deadline(self, cmd: ComplianceDeadline, out: list[Event]) -> None:
        registry = self.registry
        price = None  # the operator's reference price, in minor units per unit
        if cmd.price is not None:
            currency = next((i.currency for s, i in self.instruments.items()
                             if registry.counts_trades(s)), self.currencies[0])
            try:
                price = self._cash_scale[currency].to_units(cmd.price)
            except ValueError:
                raise Rejected(Reason.INVALID_PRICE) from None
            if price is None:
                raise Rejected(Reason.INVALID_PRICE)
        closed = {name for name, acct in self.accounts.items() if acct.status == CLOSED}
        rows = registry.assess(cmd.year, cmd.multiple, price, closed, cmd.ts)
        notional, volume = registry.deadline_month(cmd.year)
        average = average_price(notional, volume) if volume else None  # the fine's price
        self._event(DeadlinePassed, out, year=cmd.year, entities=len(rows),
                    short=sum(1 for _, ob in rows if ob.shortfall), average_price=average,
                    multiple=cmd.multiple, price=average if price is None else price,
                    price_source="operator" if price is not None else "market" if volume else None)
        for account, ob in rows:
            self._event(ComplianceAssessed, out, account=account, year=cmd.year,
                        obligation=ob.emissions, surrendered_allowances=ob.allowances,
                        surrendered_offsets=ob.offsets, shortfall=ob.shortfall, fine=ob.fine,
                        status=ob.status)
        return None

    def _transfer(self, cmd: TransferAllowances, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        self._usable(cmd.to_account, create=True)
        self._units(cmd.instrument, cmd.qty)
        if acct.status != OPEN:
            raise Rejected(_status_reason(acct))
        if cmd.to_account == cmd.account:
            raise Rejected(Reason.SAME_ACCOUNT)  # it would move nothing, and report a move
        if self.limits.by_kind and cmd.instrument in self._counted:
            receiver = self.accounts.get(cmd.to_account)
            limit = self.limits.of("covered")  # what a new account opens as
            if (self._over_limit(receiver, cmd.instrument, cmd.qty) if receiver is not None else
                    limit is not None and cmd.qty > limit):
                raise Rejected(Reason.POSITION_LIMIT)
        if not self._debit(acct, cmd.instrument, cmd.qty):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        self._event(AllowancesTransferred, out, account=cmd.account, to_account=cmd.to_account,
                    instrument=cmd.instrument, qty=cmd.qty)
        self._opened(cmd.to_account, out).holding(cmd.instrument).available += cmd.qty
        return None

    # --- pledges ----------------------------------------------------------------------------
    def _pledge(self, cmd: PledgeAllowances, out: list[Event]) -> None:
        """Register a pledge: available units of the pledgor go to its ``pledged`` bucket."""
        if not cmd.pledge_id:
            raise Rejected(Reason.MISSING_FIELD)
        acct = self._usable(cmd.account, create=False)
        self._usable(cmd.to_account, create=False)  # the pledgee must have an account
        self._units(cmd.instrument, cmd.qty)
        if acct.status != OPEN:
            raise Rejected(_status_reason(acct))
        if cmd.to_account == cmd.account:
            raise Rejected(Reason.SAME_ACCOUNT)
        if cmd.pledge_id in self.pledges:
            raise Rejected(Reason.DUPLICATE_PLEDGE)
        if not self._debit(acct, cmd.instrument, cmd.qty):
            raise Rejected(Reason.INSUFFICIENT_ALLOWANCES)
        acct.holdings[cmd.instrument].pledged += cmd.qty
        self.pledges[cmd.pledge_id] = Pledge(cmd.pledge_id, cmd.account, cmd.to_account,
                                             cmd.instrument, cmd.qty)
        self._event(AllowancesPledged, out, pledge_id=cmd.pledge_id, account=cmd.account,
                    to_account=cmd.to_account, instrument=cmd.instrument, qty=cmd.qty)
        return None

    def _pledged(self, cmd: ReleasePledge | EnforcePledge) -> tuple[Pledge, int]:
        """Return the pledge *cmd* names and the units it releases or enforces (``qty``,
        or all); ``Rejected`` if the pledge is not in force or not the account's."""
        if not cmd.pledge_id or not cmd.account:
            raise Rejected(Reason.MISSING_FIELD)
        pledge = self.pledges.get(cmd.pledge_id)
        if pledge is None:
            raise Rejected(Reason.UNKNOWN_PLEDGE)
        if pledge.account != cmd.account:
            raise Rejected(Reason.NOT_OWNER)
        qty = pledge.qty if cmd.qty is None else cmd.qty
        if type(qty) is not int or not 0 < qty < 1 << 62:  # as every registry quantity
            raise Rejected(Reason.INVALID_QUANTITY)
        if qty > pledge.qty:
            raise Rejected(Reason.EXCEEDS_PLEDGE)
        return pledge, qty

    def _unpledge(self, pledge: Pledge, qty: int) -> Holding:
        """Take *qty* units out of *pledge* (ending it at none); return the pledgor's
        holding they leave."""
        holding = self.accounts[pledge.account].holdings[pledge.instrument]
        holding.pledged -= qty
        pledge.qty -= qty
        if not pledge.qty:
            del self.pledges[pledge.pledge_id]
        return holding

    def _release_pledge(self, cmd: ReleasePledge, out: list[Event]) -> None:
        """The pledgee lets pledged units go: they are the pledgor's to use again."""
        pledge, qty = self._pledged(cmd)
        self._unpledge(pledge, qty).available += qty
        self._event(PledgeReleased, out, pledge_id=pledge.pledge_id, account=pledge.account,
                    to_account=pledge.to_account, instrument=pledge.instrument, qty=qty,
                    remaining=pledge.qty)
        return None

    def _enforce_pledge(self, cmd: EnforcePledge, out: list[Event]) -> None:
        """The pledgee takes pledged units: they pass to its available holdings (with
        the position limits a transfer to it meets)."""
        pledge, qty = self._pledged(cmd)
        pledgee = self._usable(pledge.to_account, create=False)
        if self.limits.by_kind and pledge.instrument in self._counted and self._over_limit(
                pledgee, pledge.instrument, qty):
            raise Rejected(Reason.POSITION_LIMIT)
        self._unpledge(pledge, qty)
        pledgee.holding(pledge.instrument).available += qty
        self._event(PledgeEnforced, out, pledge_id=pledge.pledge_id, account=pledge.account,
                    to_account=pledge.to_account, instrument=pledge.instrument, qty=qty,
                    remaining=pledge.qty)
        return None

    def _may_pledge(self, pledgor: Account, pledgee: Account, symbol: str) -> bool:
        """Could a pledge of *symbol* by *pledgor* to *pledgee* be in force? Only between
        two participants' accounts, neither closed (neither can close while it is), and
        of a spot instrument's units (never cash, a future or an option)."""
        inst = self.instruments.get(symbol)
        return (inst is not None and inst.kind == "spot" and pledgor is not pledgee
                and all(a.status in (OPEN, SUSPENDED) for a in (pledgor, pledgee)))

    def pledged_to(self, account: str) -> bool:
        """Is *account* the pledgee of a pledge in force?"""
        return any(p.to_account == account for p in self.pledges.values())

    def _open(self, cmd: OpenAccount, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=True)
        if acct is not None:
            raise Rejected(Reason.ACCOUNT_EXISTS)
        self.accounts[cmd.account] = Account(cmd.account, cmd.kind)
        self._event(AccountOpened, out, account=cmd.account, kind=cmd.kind)
        return None

    def _set_status(self, cmd: SuspendAccount | ResumeAccount | CloseAccount, status: str,
                    out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        acct.status = status
        self._event(AccountStatusChanged, out, account=cmd.account, status=status)
        return None

    def _suspend(self, cmd: SuspendAccount, out: list[Event]) -> None:
        if self._usable(cmd.account, create=False).status == SUSPENDED:
            raise Rejected(Reason.ALREADY_SUSPENDED)  # as a halt of a halted instrument is
        return self._set_status(cmd, SUSPENDED, out)

    def _resume(self, cmd: ResumeAccount, out: list[Event]) -> None:
        if self._usable(cmd.account, create=False).status != SUSPENDED:
            raise Rejected(Reason.NOT_SUSPENDED)
        return self._set_status(cmd, OPEN, out)

    def _close(self, cmd: CloseAccount, out: list[Event]) -> None:
        acct = self._usable(cmd.account, create=False)
        if (any(h.total for h in acct.holdings.values()) or self.clearing.holds(cmd.account)
                or self.pledged_to(cmd.account)):
            raise Rejected(Reason.ACCOUNT_NOT_EMPTY)
        return self._set_status(cmd, CLOSED, out)

    # --- state (exchange.state) ------------------------------------------------------------
    def to_state(self) -> LedgerState:
        """Return the ledger's whole state as data: accounts and holdings in order, supply,
        holds, the T+1 index, the compliance registry and the clearing house."""
        where: dict[int, tuple[str, str]] = {}  # id(holding) -> (account, asset)
        accounts: list[AccountState] = []
        for name, acct in self.accounts.items():
            rows: list[HoldingState] = []
            for asset, h in acct.holdings.items():
                where[id(h)] = (name, asset)
                rows.append(
                    HoldingState(asset=asset, available=h.available, held=h.held, locked=h.locked,
                                 pending_buy=h.pending_buy, pledged=h.pledged))
            accounts.append(
                AccountState(name=name, kind=acct.kind, status=acct.status, holdings=rows))
        holds: list[HoldState] = []
        for order_id, hold in self._holds.items():
            assert isinstance(order_id, str)  # an acceptor's hold lasts one command
            account, asset = where[id(hold.holding)]
            other_account, other = where[id(hold.other)]
            if other_account != account:
                raise ValueError(f"hold of {order_id}: its two legs are in two accounts")
            holds.append(
                HoldState(order_id=order_id, account=account, asset=asset, other=other,
                          amount=hold.amount, is_buy=hold.is_buy, price=hold.price, unit=hold.unit,
                          fee=hold.fee, qty=hold.qty, rests=hold.rests, accrued=hold.accrued))
        pledges = [PledgeState(pledge_id=p.pledge_id, account=p.account, to_account=p.to_account,
                               instrument=p.instrument, qty=p.qty) for p in self.pledges.values()]
        return LedgerState(accounts=accounts, supply=dict(self.supply), holds=holds,
                           locked=list(self._locked), registry=self.registry.to_state(),
                           clearing=self.clearing.to_state(), pledges=pledges)

    def load_state(self, state: LedgerState) -> None:
        """Take *state* (``to_state``) into this new ledger, in place: the clearing house
        shares its accounts and the fee terms its system holdings, which are kept.
        Raise ``ValueError`` on an unknown asset, account or status, or a repeat."""
        assets = set(self.currencies) | set(self.instruments)
        statuses = (OPEN, SUSPENDED, CLOSED)
        accounts = self.accounts
        system = dict(accounts)  # the system accounts, made by __init__
        accounts.clear()
        for row in state.accounts:
            name = row.name
            if name in accounts:
                raise ValueError(f"ledger: account {name!r} given twice")
            acct = system.pop(name, None)
            if acct is None:
                if name.startswith("@") or not name:
                    raise ValueError(f"ledger: {name!r} is not an account name")
                if row.status not in statuses:
                    raise ValueError(f"ledger: account {name!r} status {row.status!r}")
                acct = Account(name, row.kind)
                acct.status = row.status
            elif row.status != SYSTEM or row.kind != acct.kind:
                raise ValueError(f"ledger: system account {name!r} as {row.kind!r}, {row.status!r}")
            accounts[name] = acct
            seen: set[str] = set()
            for h in row.holdings:
                if h.asset not in assets or h.asset in seen:
                    raise ValueError(f"ledger: {name!r} holds {h.asset!r}, unknown or twice")
                seen.add(h.asset)
                holding = acct.holding(h.asset)
                holding.available, holding.held = h.available, h.held
                holding.locked, holding.pending_buy = h.locked, h.pending_buy
                holding.pledged = h.pledged
        if system:
            raise ValueError(f"ledger: system accounts missing: {', '.join(sorted(system))}")
        for asset in state.supply:
            if asset not in assets:
                raise ValueError(f"ledger: supply of unknown asset {asset!r}")
        self.supply = dict(state.supply)
        holds = self._holds
        for row_hold in state.holds:
            owner = row_hold.account
            holdings = accounts[owner].holdings if owner in accounts else {}
            if (row_hold.asset not in holdings or row_hold.other not in holdings
                    or row_hold.order_id in holds):
                raise ValueError(f"ledger: the hold of {row_hold.order_id!r} names no holding "
                                 f"of {owner!r}, or is given twice")
            holds[row_hold.order_id] = _Hold(holdings[row_hold.asset], holdings[row_hold.other],
                                             row_hold.amount, row_hold.is_buy, row_hold.price,
                                             row_hold.unit, row_hold.fee, row_hold.qty,
                                             row_hold.rests, row_hold.accrued)
        for account, asset in state.locked:
            locked = accounts[account].holdings.get(asset) if account in accounts else None
            if locked is None or (account, asset) in self._locked:
                raise ValueError(f"ledger: locked units of {account!r} {asset!r}: no such "
                                 f"holding, or given twice")
            self._locked[(account, asset)] = locked
        pledged: dict[tuple[str, str], int] = {}
        for row_pledge in state.pledges:
            pid, owner, symbol = row_pledge.pledge_id, row_pledge.account, row_pledge.instrument
            if (not pid or pid in self.pledges or owner not in accounts
                    or row_pledge.to_account not in accounts or owner == row_pledge.to_account
                    or symbol not in accounts[owner].holdings
                    or not 0 < row_pledge.qty < 1 << 62):
                raise ValueError(f"ledger: pledge {pid!r}: no such accounts or holding, "
                                 f"nothing pledged, or given twice")
            if not self._may_pledge(accounts[owner], accounts[row_pledge.to_account], symbol):
                raise ValueError(f"ledger: pledge {pid!r}: of a system or closed account, or "
                                 f"to one, or not of allowances")
            self.pledges[pid] = Pledge(pid, owner, row_pledge.to_account, symbol, row_pledge.qty)
            pledged[(owner, symbol)] = pledged.get((owner, symbol), 0) + row_pledge.qty
        for name, acct in accounts.items():
            for asset, holding in acct.holdings.items():
                if holding.pledged != pledged.get((name, asset), 0):
                    raise ValueError(f"ledger: {name!r} has {holding.pledged} {asset} pledged, "
                                     f"its pledges {pledged.get((name, asset), 0)}")
        self.registry.load_state(state.registry)
        self.clearing.load_state(state.clearing)

    # --- verification ----------------------------------------------------------------------
    def snapshot(self) -> list[object]:
        """Return the ledger's state as plain data, deterministic in order."""
        accounts = [[
            name, a.kind, a.status,
            [[asset, h.available, h.held, h.locked, h.pending_buy, h.pledged]
             for asset, h in sorted(a.holdings.items())]
        ] for name, a in sorted(self.accounts.items())]
        pledges = [[p.pledge_id, p.account, p.to_account, p.instrument, p.qty]
                   for _, p in sorted(self.pledges.items())]
        holds = [[oid, h.amount, h.is_buy, h.price, h.qty, h.rests, h.accrued]
                 for oid, h in sorted(self._holds.items())]
        return [
            accounts,
            sorted(self.supply.items()), holds,
            self.registry.snapshot(),
            self.clearing.snapshot(),
            pledges
        ]

    def check(self, live: Iterable[Order]) -> None:
        """Raise ``AssertionError`` if a ledger invariant is broken.

        *live* are the engine's open orders (resting, or untriggered stops).
        """
        totals: dict[str, int] = {}
        held: dict[int, int] = {}
        clearing = self.clearing
        for name, acct in self.accounts.items():
            for asset, h in acct.holdings.items():
                if name == CLEARING and asset in self._cash_scale:
                    # the clearing account's cash: what its own positions made, less the
                    # defaults it covered (it may be below zero by them)
                    assert h.held == h.locked == 0
                    assert h.available == (clearing.own_cash.get(asset, 0) -
                                           clearing.defaults.get(asset, 0)), "clearing cash"
                    totals[asset] = totals.get(asset, 0) + h.total
                    continue
                assert h.available >= 0 and h.held >= 0 and h.locked >= 0, (name, asset)
                assert h.pledged >= 0, (name, asset, "pledged")
                assert h.pending_buy >= 0, (name, asset, "pending_buy")
                totals[asset] = totals.get(asset, 0) + h.total
        for asset in set(totals) | set(self.supply):
            assert totals.get(asset, 0) == self.supply.get(asset, 0), f"{asset} not conserved"
        live = list(live)
        futures = [o for o in live if o.instrument in clearing.cleared]
        clearing.check(futures)
        live = [o for o in live if o.instrument not in clearing.cleared]
        assert {o.order_id for o in live} == set(self._holds), "holds differ from open orders"
        pending: dict[int, int] = {}
        for order in live:
            hold = self._holds[order.order_id]
            if hold.is_buy:
                price = order.price if order.kind != STOP else hold.price
                assert hold.amount == cash_needed(
                    price, order.qty, hold.unit, hold.fee,
                    hold.accrued), (f"hold of {order.order_id} differs from its need")
                assert hold.qty == order.qty
                pending[id(hold.other)] = pending.get(id(hold.other), 0) + order.qty
            else:
                assert hold.amount == order.qty, f"hold of {order.order_id} differs from its need"
            held[id(hold.holding)] = held.get(id(hold.holding), 0) + hold.amount
        margins = clearing.margin_held()
        for acct in self.accounts.values():
            for asset, h in acct.holdings.items():
                assert h.held == held.get(id(h), 0) + margins.get((acct.name, asset), 0), (
                    f"{acct.name} {asset}: held is not its holds and margin")
                assert h.pending_buy == pending.get(id(h), 0), f"{acct.name} {asset}: pending"
        for key, h in self._locked.items():
            assert h.locked > 0, key
        assert sum(1 for a in self.accounts.values() for h in a.holdings.values()
                   if h.locked) == len(self._locked), "locked index"
        pledged: dict[tuple[str, str], int] = {}
        for pledge_id, pledge in self.pledges.items():
            assert pledge.pledge_id == pledge_id and 0 < pledge.qty < 1 << 62, f"pledge {pledge_id}"
            assert pledge.to_account in self.accounts, f"pledge {pledge_id}: no pledgee"
            assert pledge.account in self.accounts, f"pledge {pledge_id}: no pledgor"
            pledgor = self.accounts[pledge.account]
            assert self._may_pledge(pledgor, self.accounts[pledge.to_account],
                                    pledge.instrument), f"pledge {pledge_id}: its parties or asset"
            assert pledge.instrument in pledgor.holdings, f"pledge {pledge_id}: no holding"
            key = (pledge.account, pledge.instrument)
            pledged[key] = pledged.get(key, 0) + pledge.qty
        for acct in self.accounts.values():
            for asset, h in acct.holdings.items():
                assert h.pledged == pledged.get((acct.name, asset), 0), (
                    f"{acct.name} {asset}: pledged is not its pledges")
        surrendered = self.accounts[REGISTRY].holdings
        self.registry.check({asset: h.total for asset, h in surrendered.items()})


class _Empty(Holding):
    """Stands for a holding an account does not have: nothing available. Read-only: its
    buckets are the class attributes below, which shadow ``Holding``'s slots."""

    __slots__ = ()
    available = total = pledged = pending_buy = 0

    def __init__(self) -> None:
        pass  # nothing to set (``Holding.__init__`` would write the read-only buckets)


_EMPTY = _Empty()


def _status_reason(acct: Account) -> str:
    if acct.status == SYSTEM:
        return Reason.RESERVED_ACCOUNT
    return Reason.ACCOUNT_CLOSED if acct.status == CLOSED else Reason.ACCOUNT_SUSPENDED


def _minor_step(currency: str) -> str:
    digits = MINOR_UNITS.get(currency, 2)
    return "1" if digits == 0 else "0." + "0" * (digits - 1) + "1"


def _walk(book: OrderBook, account: str, stp: int, cash: int, qty: int, unit: int,
          fee: int) -> tuple[int, int, bool]:
    """Size a market buy with no price band by walking the asks in priority order.

    Return ``(units affordable, their cost with fees, whether cash was the limit)``.
    Own orders that self-trade prevention would cancel are skipped; one that would stop
    the order ends the walk. Fees are counted on the notional so far, rounded down, as
    the order's fills will accrue them (at most the larger rate).
    """
    bought = cost = seen = notional = 0
    levels: list[list[int]] = []  # [price, units] in price order
    for resting in book.orders(False):
        if resting.account == account and stp != STP_NONE:
            if stp == STP_RESTING:
                continue
            break
        if not levels or levels[-1][0] != resting.price:
            levels.append([resting.price, 0])
        levels[-1][1] += resting.qty
        seen += resting.qty
        if seen >= qty:
            break
    for price, available in levels:
        want = min(available, qty - bought)
        accrued = notional * fee
        take = _affordable(cash - cost, price * unit, fee, want, accrued)
        cost += cash_needed(price, take, unit, fee, accrued)
        notional += price * take * unit
        bought += take
        if take < want:
            return bought, cost, True
        if bought == qty:
            break
    return bought, cost, False


def _affordable(cash: int, unit_cost: int, fee: int, most: int, accrued: int = 0) -> int:
    """Return the largest q <= *most* with cash_needed for q units (after *accrued*)
    within *cash*."""
    if cash <= 0:
        return 0
    q = min(most, cash * FEE_SCALE // (unit_cost * (FEE_SCALE + fee)) + 1)
    base = accrued // FEE_SCALE
    while q > 0 and unit_cost * q + (accrued + unit_cost * q * fee) // FEE_SCALE - base > cash:
        q -= 1
    return q


class NoLedger:
    """The ledger of a matching-only engine: it holds, settles and keeps nothing.

    The engine's pipeline calls it as it calls ``Ledger``, so the pipeline has one shape
    with a ledger or without; an account or registry command is accepted with no effect
    (``LedgerCommandIgnored``). Its ``reserve``, ``settle`` and ``release``, which do
    nothing, the engine does not call on its hot path (benchmarks/contenders.py: 6.8% of a
    matching-only engine's instructions); tests/test_properties.py holds an engine that
    calls them equal to one that does not.
    """

    __slots__ = ("_ctr", )

    def __init__(self, counters: Counters) -> None:
        self._ctr = counters

    def set_clock(self, ts: int) -> None:
        return None

    def reserve(self, order_id: _HoldKey, account: str, symbol: str, is_buy: bool, price: int,
                qty: int, kind: int = LIMIT, priced: bool = True, stp: int = 0,
                band: tuple[int, int] | None = None, book: OrderBook | None = None) -> None:
        """Hold nothing: every order is affordable. (``Ledger.reserve``'s parameters, not
        ``*args``: a call without a tuple to build; benchmarks/contenders.py.)"""
        return None

    def hold_price(self, order_id: str) -> int:
        return NO_LIMIT

    def mintable(self, asset: str, qty: int) -> Reason | None:
        return None

    def reprice(self, order_id: str, price: int) -> bool:
        return True

    def amend(self, order_id: str, account: str, symbol: str, price: int, qty: int) -> None:
        return None

    def release(self, order_id: str) -> None:
        return None

    def settle_away(self, trade: TradeExecuted, buy_key: _HoldKey, sell_key: _HoldKey,
                    out: list[Event]) -> None:
        return None

    def issue_for_sale(self, key: str, symbol: str, qty: int, out: list[Event]) -> None:
        return None

    def maker_fees(self) -> dict[tuple[str, str], int]:
        return {}

    def rebate(self, account: str, currency: str, amount: int) -> None:
        return None

    def new_fee_day(self) -> None:
        return None

    def settle(self, out: list[Event], start: int) -> None:
        return None

    def end_of_day(self, out: list[Event], books: Mapping[str, OrderBook] | None = None,
                   day: int = 0) -> tuple[list[CloseOut], list[str]]:
        return [], []

    def apply(self, command: AdminCommand, out: list[Event]) -> None:
        """Accept an account or registry command with no effect."""
        ctr = self._ctr
        ctr.seq += 1
        tag = type(command).__struct_config__.tag
        out.append(
            LedgerCommandIgnored(seq=ctr.seq, action=tag,  # type: ignore[arg-type]  # tags are strs
                                 account=getattr(command, "account", "")))

    def snapshot(self) -> None:
        return None

    def to_state(self) -> None:
        return None

    def check(self, live: Iterable[Order]) -> None:
        return None
