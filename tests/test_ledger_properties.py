"""Property-based tests of the ledger (issue 3: nothing lost, nothing created).

A hypothesis state machine drives two engines with the ledger on, one on the fast book
and one on the naive reference book, with random orders (every type, tif, stp mode,
icebergs, post-only), cancels, amends, mass cancels, deposits, withdrawals, issuance,
transfers, surrenders, pledges (registered, released, enforced), suspensions and
``eod``. After every step it checks, against
models built here from the events alone:

* the engines agree event for event and state hash for state hash;
* per asset, the sum over all accounts of available + held + locked + pledged equals deposits
  minus withdrawals (cash) or issuance (allowances): trading creates and destroys nothing;
* every account's total per asset equals what its events explain (deposits, withdrawals,
  issuance, transfers, surrenders and settlements with their fees), and its locked units
  are exactly today's purchases, and its pledged units exactly its pledges in force;
* no bucket is negative, and each account's held cash and allowances equal what its open
  orders need, computed here from the book: a buy ``price x qty`` plus the 1.5 bp fee
  on it, less what the order's fills have accrued (rounded down), a sell its open
  quantity;
* every settlement charges the fees the market's rule gives: per order, each fill what
  brings the order's fees to the floor of its accrued notional x rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from test_properties import PlainPaths
from exchange import (AmendOrder, CancelOrder, Deposit, EndOfDay, Engine, FastBook, IssueAllowances,
                      MassCancel, NaiveBook, PlaceOrder, SurrenderAllowances, Withdraw,
                      default_market)
from exchange.accounts import Account
from exchange.book.fast import STOP, STOP_LIMIT
from exchange.commands import (EnforcePledge, PledgeAllowances, ReleasePledge, ResumeAccount,
                               SuspendAccount, TransferAllowances)
from exchange.events import (AllowancesIssued, AllowancesPledged, AllowancesSurrendered,
                             AllowancesTransferred, CashDeposited, CashWithdrawn,
                             HoldingsUnlocked, OrderAccepted, PledgeEnforced, PledgeReleased,
                             TradeExecuted, TradeSettled, TradingDayEnded)
from exchange.market import Limits

MARKET = default_market()
SYMBOLS = ("CEA25", "CEA24")
ACCOUNTS = ("a", "b", "c", "d")
MAKER, TAKER = 100, 150  # the default market's fees, in millionths
PLEDGE_IDS = ("p1", "p2", "p3")  # few, so that ids in force are reused and refused


def price_text(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


class Ledgers(RuleBasedStateMachine):
    """The fast and naive engines with the ledger on, in lockstep, and the models."""

    @initialize()
    def start(self) -> None:
        self.fast = Engine(MARKET, book=FastBook, ledger=True)
        # the plain paths beside the fast ones (test_properties.PlainPaths), the ledger on
        self.naive = PlainPaths(MARKET, book=NaiveBook, ledger=True)
        self.supply: Counter = Counter()  # asset -> units that should exist
        self.totals: Counter = Counter()  # (account, asset) -> what events explain
        self.locked: Counter = Counter()  # (account, asset) -> bought today
        self.pledged: Counter = Counter()  # (account, asset) -> pledged, from the events
        self.pledges: dict[str, list] = {}  # pledge id -> [account, to_account, symbol, qty]
        self.accrued: Counter = Counter()  # order id -> its fills' notional x fee rate
        self.next_id = 0
        self.ids: list[tuple[str, str]] = []  # (order_id, account) ever accepted
        self.trades = 0
        for account in ACCOUNTS[:3]:  # "d" starts with nothing
            self.run(Deposit(account=account, currency="CNY", amount="20000.00"))
            for symbol in SYMBOLS:
                self.run(IssueAllowances(account=account, instrument=symbol, qty=300))

    @rule(data=st.data())
    def step(self, data) -> None:
        """One command, mostly orders: hypothesis picks rules evenly, so weight here."""
        action = data.draw(
            st.sampled_from(("place", ) * 10 + ("cancel_or_amend", ) * 4 +
                            ("deposit", "withdraw", "issue", "move", "account_status", "eod",
                             "pledge", "unpledge")))
        if action == "eod":
            self.end_of_day()
        elif action in ("place", "cancel_or_amend"):
            getattr(self, action)(data)
        elif action == "deposit":
            self.deposit(data.draw(st.sampled_from(ACCOUNTS)),
                         data.draw(st.integers(-100, 3_000_000)))
        elif action == "withdraw":
            self.withdraw(data.draw(st.sampled_from(ACCOUNTS)), data.draw(st.integers(1,
                                                                                      2_000_000)))
        elif action == "issue":
            self.issue(data.draw(st.sampled_from(ACCOUNTS)), data.draw(st.sampled_from(SYMBOLS)),
                       data.draw(st.integers(1, 400)))
        elif action == "move":
            self.move(data.draw(st.sampled_from(ACCOUNTS)), data.draw(st.sampled_from(ACCOUNTS)),
                      data.draw(st.sampled_from(SYMBOLS)), data.draw(st.integers(1, 200)),
                      data.draw(st.booleans()))
        elif action == "pledge":
            self.pledge(data.draw(st.sampled_from(PLEDGE_IDS)),
                        data.draw(st.sampled_from(ACCOUNTS)), data.draw(st.sampled_from(ACCOUNTS)),
                        data.draw(st.sampled_from(SYMBOLS)), data.draw(st.integers(0, 200)))
        elif action == "unpledge":
            self.unpledge(data.draw(st.sampled_from(PLEDGE_IDS)),
                          data.draw(st.sampled_from(ACCOUNTS)),
                          data.draw(st.one_of(st.none(), st.integers(0, 120))),
                          data.draw(st.booleans()))
        else:
            self.account_status(data.draw(st.sampled_from(ACCOUNTS)), data.draw(st.booleans()),
                                data.draw(st.booleans()))

    # --- driving ---------------------------------------------------------------------------
    def run(self, cmd) -> list:
        events = self.fast.execute(cmd)
        twin = self.naive.execute(cmd)
        assert events == twin, f"fast and naive engines differ on {cmd}"
        self.fast.check()
        self.naive.check()
        assert self.fast.state_hash() == self.naive.state_hash()
        self.account_for(events)
        return events

    def account_for(self, events: list) -> None:
        trades = {}
        for e in events:
            kind = type(e)
            if kind is OrderAccepted:
                self.accrued.pop(e.order_id, None)  # an id used again on a new day
            if kind is CashDeposited:
                self.supply["CNY"] += e.amount
                self.totals[(e.account, "CNY")] += e.amount
            elif kind is CashWithdrawn:
                self.supply["CNY"] -= e.amount
                self.totals[(e.account, "CNY")] -= e.amount
            elif kind is AllowancesIssued:
                self.supply[e.instrument] += e.qty
                self.totals[(e.account, e.instrument)] += e.qty
            elif kind is AllowancesTransferred:
                self.totals[(e.account, e.instrument)] -= e.qty
                self.totals[(e.to_account, e.instrument)] += e.qty
            elif kind is AllowancesPledged:
                assert e.pledge_id not in self.pledges, "a pledge id in force registered twice"
                self.pledges[e.pledge_id] = [e.account, e.to_account, e.instrument, e.qty]
                self.pledged[(e.account, e.instrument)] += e.qty
            elif kind is PledgeReleased or kind is PledgeEnforced:
                pledge = self.pledges[e.pledge_id]
                assert pledge[:3] == [e.account, e.to_account, e.instrument]
                pledge[3] -= e.qty
                assert pledge[3] == e.remaining >= 0 and e.qty > 0
                if not e.remaining:
                    del self.pledges[e.pledge_id]
                self.pledged[(e.account, e.instrument)] -= e.qty
                if kind is PledgeEnforced:
                    self.totals[(e.account, e.instrument)] -= e.qty
                    self.totals[(e.to_account, e.instrument)] += e.qty
            elif kind is AllowancesSurrendered:
                self.totals[(e.account, e.instrument)] -= e.qty
                self.totals[("@registry", e.instrument)] += e.qty
            elif kind is TradeExecuted:
                trades[e.trade_id] = e
            elif kind is TradeSettled:
                trade = trades.pop(e.trade_id)
                assert (e.buy_account, e.sell_account, e.qty,
                        e.instrument) == (trade.buy_account, trade.sell_account, trade.qty,
                                          trade.instrument)
                cash = trade.price * trade.qty  # tick 0.01 CNY = 1 fen a tonne
                buyer_rate, seller_rate = ((TAKER, MAKER) if trade.aggressor == "buy" else
                                           (MAKER, TAKER))
                fees = []
                for order_id, rate in ((trade.buy_order_id, buyer_rate),
                                       (trade.sell_order_id, seller_rate)):
                    before = self.accrued[order_id]
                    self.accrued[order_id] = after = before + cash * rate
                    fees.append(after // 10**6 - before // 10**6)
                assert (e.cash, e.buy_fee, e.sell_fee) == (cash, *fees)
                self.totals[(e.buy_account, "CNY")] -= cash + e.buy_fee
                self.totals[(e.sell_account, "CNY")] += cash - e.sell_fee
                self.totals[("@exchange", "CNY")] += e.buy_fee + e.sell_fee
                self.totals[(e.buy_account, e.instrument)] += e.qty
                self.totals[(e.sell_account, e.instrument)] -= e.qty
                self.locked[(e.buy_account, e.instrument)] += e.qty
                self.trades += 1
            elif kind is HoldingsUnlocked:
                assert self.locked.pop((e.account, e.asset)) == e.qty
            elif kind is TradingDayEnded:
                pass
        assert not trades, "a trade was not settled"

    # --- rules -----------------------------------------------------------------------------
    def deposit(self, account, fen) -> None:
        self.run(
            Deposit(account=account, currency="CNY",
                    amount=price_text(fen) if fen >= 0 else "-1.00"))

    def withdraw(self, account, fen) -> None:
        self.run(Withdraw(account=account, currency="CNY", amount=price_text(fen)))

    def issue(self, account, symbol, qty) -> None:
        self.run(IssueAllowances(account=account, instrument=symbol, qty=qty))

    def move(self, account, to, symbol, qty, surrender) -> None:
        if surrender:
            self.run(SurrenderAllowances(account=account, instrument=symbol, qty=qty))
        else:
            self.run(TransferAllowances(account=account, to_account=to, instrument=symbol, qty=qty))

    def pledge(self, pledge_id, account, to, symbol, qty) -> None:
        self.run(PledgeAllowances(pledge_id=pledge_id, account=account, to_account=to,
                                  instrument=symbol, qty=qty))

    def unpledge(self, pledge_id, account, qty, enforce) -> None:
        if pledge_id in self.pledges and account != self.pledges[pledge_id][0]:
            account = self.pledges[pledge_id][0]  # mostly the pledgor's own, to act
        command = EnforcePledge if enforce else ReleasePledge
        self.run(command(pledge_id=pledge_id, account=account, qty=qty))

    def place(self, data) -> None:
        draw = data.draw
        self.next_id += 1
        order_id = f"o{self.next_id}"
        account = draw(st.sampled_from(ACCOUNTS))
        kind = draw(st.sampled_from(("limit", ) * 6 + ("market", "stop", "stop_limit")))
        tif = draw(st.sampled_from(("gtc", "gtc", "day", "ioc", "fok")))
        qty = draw(st.integers(1, 150))
        price = stop = None
        if kind in ("limit", "stop_limit"):
            price = price_text(draw(st.integers(5990, 6010)))
        if kind in ("stop", "stop_limit"):
            stop = price_text(draw(st.integers(5990, 6010)))
        display = None
        if kind == "limit" and tif in ("gtc", "day") and draw(st.integers(0, 6)) == 0:
            display = draw(st.integers(1, qty))
        events = self.run(
            PlaceOrder(
                order_id=order_id, account=account, instrument=draw(st.sampled_from(SYMBOLS)),
                side=draw(st.sampled_from(("buy", "sell"))), type=kind, tif=tif, price=price,
                qty=qty, stop_price=stop, display_qty=display, post_only=kind == "limit"
                and tif == "gtc" and draw(st.integers(0, 8)) == 0, stp=draw(
                    st.sampled_from(
                        ("cancel_resting", "cancel_aggressor", "cancel_both", "none")))))
        if type(events[0]).__name__ == "OrderAccepted":
            self.ids.append((order_id, account))

    def cancel_or_amend(self, data) -> None:
        if not self.ids:
            return
        order_id, account = data.draw(st.sampled_from(self.ids))
        choice = data.draw(st.integers(0, 2))
        if choice == 0:
            self.run(CancelOrder(order_id=order_id, account=account))
        else:
            price = data.draw(st.one_of(st.none(), st.integers(5990, 6010).map(price_text)))
            qty = data.draw(st.one_of(st.none(), st.integers(1, 300)))
            self.run(AmendOrder(order_id=order_id, account=account, price=price, qty=qty))

    def account_status(self, account, suspend, mass) -> None:
        if mass:
            self.run(MassCancel(account=account))
        elif suspend:
            self.run(SuspendAccount(account=account))
        else:
            self.run(ResumeAccount(account=account))

    def end_of_day(self) -> None:
        self.run(EndOfDay())
        assert not self.locked, "T+1 locks outlived the day"

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def conserved_and_explained(self) -> None:
        sums: Counter = Counter()
        seen = set()
        for account, asset, available, held, locked, pledged in self.fast.ledger.holdings():
            assert min(available, held, locked, pledged) >= 0, (account, asset)
            total = available + held + locked + pledged
            sums[asset] += total
            assert total == self.totals[(account, asset)], (account, asset)
            assert locked == self.locked[(account, asset)], (account, asset, "locked")
            assert pledged == self.pledged[(account, asset)], (account, asset, "pledged")
            seen.add((account, asset))
        assert +sums == +self.supply, "an asset was created or destroyed"
        assert not {k for k, v in self.totals.items() if v} - seen

    @invariant()
    def holds_are_what_open_orders_need(self) -> None:
        need: Counter = Counter()
        ledger = self.fast.ledger
        for symbol in SYMBOLS:
            book = self.fast.book(symbol)
            for is_buy in (True, False):
                for order in book.orders(is_buy):
                    need[self._need_key(order)] += self._need(order, order.price)
        for spec in self.fast._specs.values():
            if spec.stops:
                for _, _, order in list(spec.stops.buys) + list(spec.stops.sells):
                    price = (order.price if order.kind == STOP_LIMIT else
                             (ledger.hold_price(order.order_id) if order.is_buy else 0))
                    assert order.kind in (STOP, STOP_LIMIT)
                    need[self._need_key(order)] += self._need(order, price)
        held = {(account, asset): h for account, asset, _, h, _, _ in ledger.holdings() if h}
        assert held == +need

    @staticmethod
    def _need_key(order) -> tuple[str, str]:
        return (order.account, "CNY" if order.is_buy else order.instrument)

    def _need(self, order, price: int) -> int:
        if not order.is_buy:
            return order.qty
        notional = price * order.qty
        accrued = self.accrued[order.order_id]
        return notional + (accrued + notional * TAKER) // 10**6 - accrued // 10**6

    def teardown(self) -> None:
        if hasattr(self, "fast"):
            assert (self.fast.rejected + self.fast.accepted == self.naive.accepted +
                    self.naive.rejected)


# About 15 s here; the trade count is checked below so a dull stream cannot pass unseen.
Ledgers.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
TestLedgers = Ledgers.TestCase


def test_the_state_machine_reaches_trades_and_holds() -> None:
    """Guard against a generator that never trades: run one fixed stream, count trades."""
    machine = Ledgers()
    machine.start()
    machine.deposit("d", 2_000_000)
    machine.issue("d", "CEA25", 300)
    engine = machine.fast
    for n, (account, side, ticks) in enumerate([("a", "sell", 6000), ("b", "buy", 6001),
                                                ("c", "buy", 5999), ("d", "sell", 5999)]):
        machine.run(
            PlaceOrder(order_id=f"x{n}", account=account, instrument="CEA25", side=side,
                       price=price_text(ticks), qty=100))
        machine.conserved_and_explained()
        machine.holds_are_what_open_orders_need()
    assert machine.trades == 2
    assert engine.ledger.holding("b", "CEA25").locked == 100
    machine.end_of_day()
    machine.conserved_and_explained()
    assert engine.ledger.holding("b", "CEA25").available == 400


@settings(max_examples=200, deadline=None)
@given(by_kind=st.lists(st.tuples(st.sampled_from(["financial", "market_maker", "other"]),
                                  st.integers(0, 10**6)), max_size=4),
       kind=st.sampled_from(["financial", "market_maker", "other", "none"]))
def test_an_accounts_position_limit_is_its_kinds_as_limits_reads_it(by_kind, kind):
    # benchmarks/gateway.py, batched: the ledger reads the limits from a table by kind,
    # made once; the figure is Limits.of's (the first given of a kind).
    limits = Limits(tuple(by_kind))
    engine = Engine(replace(MARKET, limits=limits), ledger=True)
    assert engine.ledger.position_limit(Account("x", kind)) == limits.of(kind)
