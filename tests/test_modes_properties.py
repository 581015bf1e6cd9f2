"""Property-based tests of the trading modes away from the book, mixed with the book.

A hypothesis state machine drives two engines with the ledger on, one on the fast book and
one on the naive reference book, with random streams that mix listing orders (limit and
market, cancels, amends), block agreements (directed and public posts, accepts by the
named account, a stranger or the poster, cancels; prices and sizes inside and outside the
rules), one-way auctions (sales and purchases, uniform and pay-as-bid, primary sales by
``@registry``; bids, cancels, closes), deposits, withdrawals, issuance, transfers,
surrenders, suspensions, mass cancels, halts, ``eod`` and state round trips, on a small
market (two spot vintages around 60.00, fees 1 / 1.5 bp, T+1, block and auction minimum
100 t, position limits across vintages). After every command it checks, against models
built here from the events:

* the engines agree event for event (their JSON) and state hash for state hash, and
  ``check()`` holds on both;
* per asset, the sum over all accounts equals deposits less withdrawals (cash) or issuance
  (primary auctions' too) less claw-backs (allowances); every account's total per asset is
  what its events explain, its locked units today's purchases, no bucket is negative;
* held cash and allowances are what the open orders, blocks, auction initiators and bids
  need (a buy: price x qty plus the 1.5 bp fee on what it has not yet accrued);
* a block trades whole, at least the minimum, within 30% of the reference, only with the
  account it names; an auction clears as ranking the model's bids by price then time
  says (status, fills, prices, leaves, the unfilled cancelled), each fill at or beyond
  the reserve; fees accrue per order at the maker / taker rate;
* a rejected command changes nothing (holdings, and the snapshot but for its counters);
  an accepted buy (order, block, accept, bid, purchase, transfer in) stays within the
  account's position limit, and a ``position_limit`` rejection is one that would not;
* ``Engine.from_state(engine.to_state())`` (or the msgpack bytes) gives the same state
  hash and, swapped in for one engine, goes on in lockstep with the other;
* each day's statistics count the block and auction volume traded that day.
"""

from __future__ import annotations

from collections import Counter, deque

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from test_properties import PlainPaths
from exchange import (AmendOrder, CancelOrder, Deposit, EndOfDay, Engine, FastBook,
                      IssueAllowances, MassCancel, NaiveBook, PlaceOrder, SurrenderAllowances,
                      Withdraw)
from exchange.commands import (AcceptBlock, BidAuction, CloseAuction, HaltInstrument,
                               OpenAccount, OpenAuction, PostBlock, ResumeAccount,
                               ResumeInstrument, SuspendAccount, TransferAllowances)
from exchange.events import (AccountOpened, AllowancesClawedBack, AllowancesIssued,
                             AllowancesSurrendered, AllowancesTransferred, AuctionBidAccepted,
                             AuctionCleared, AuctionOpened, BlockAccepted, BlockPosted,
                             CashDeposited, CashWithdrawn, CommandRejected, DailyStatistics,
                             HoldingsUnlocked, MassCancelAccepted, OrderCancelled, OrderExpired,
                             TradeExecuted, TradeSettled)
from exchange.market import parse_market
from exchange.persist import decode_state, encode_state

MARKET_TOML = """\
[defaults]
currency = "CNY"
maker_fee_bps = "1"
taker_fee_bps = "1.5"
settlement_days = 1

[instruments.CEA24]
kind = "spot"
vintage = 2024
tick = "0.01"
band = "0.10"
reference_price = "60.00"

[instruments.CEA25]
kind = "spot"
vintage = 2025
tick = "0.01"
band = "0.10"
reference_price = "60.00"

[blocks]
min_qty = 100

[auctions]
min_qty = 100
primary_cancel_below = "0.05"

[limits]
covered = 1500
financial = 1200
"""
MARKET = parse_market(MARKET_TOML, "modes.toml")
SYMBOLS = ("CEA24", "CEA25")
ACCOUNTS = ("a", "b", "c", "f", "d")  # "f" a financial institution, "d" starts with nothing
REGISTRY = "@registry"
MAKER, TAKER, SCALE = 100, 150, 10**6  # fee rates in millionths
BLOCK_MIN = AUCTION_MIN = 100
LIMITS = {"covered": 1500, "financial": 1200}
CANCEL_NUM, CANCEL_DEN = 1, 20  # a primary auction clearing 5% under the reference: cancelled


def price_text(ticks: int) -> str:
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    return f"{sign}{ticks // 100}.{ticks % 100:02d}"


def in_band(price: int, reference: int, num: int, den: int) -> bool:
    return reference * (den - num) <= price * den <= reference * (den + num)


def fee_due(accrued: int, cash: int, rate: int) -> tuple[int, int]:
    """The fee a fill of *cash* pays for an order that accrued *accrued*, and the new
    accrual (fees accrue per order; each fill rounds the total down to the fen)."""
    after = accrued + cash * rate
    return after // SCALE - accrued // SCALE, after


class Modes(RuleBasedStateMachine):
    """The fast and naive engines with the ledger on, in lockstep, and the models."""

    @initialize()
    def start(self) -> None:
        self.fast = Engine(MARKET, book=FastBook, ledger=True)
        # the plain paths beside the fast ones (test_properties.PlainPaths), the ledger on
        self.naive = PlainPaths(MARKET, book=NaiveBook, ledger=True)
        self.supply: Counter = Counter()  # asset -> units that should exist
        self.totals: Counter = Counter()  # (account, asset) -> what events explain
        self.locked: Counter = Counter()  # (account, asset) -> bought today
        self.kinds: dict[str, str] = {}  # account -> kind
        self.accrued: dict[tuple[str, str], int] = {}  # (order id, side) -> notional x rate
        self.blocks: dict[str, dict] = {}  # open block id -> its terms
        self.auctions: dict[str, dict] = {}  # today's auction id -> its terms and open bids
        self.day_away: Counter = Counter()  # (symbol, mode) -> volume traded today
        self.next_id = 0
        self.orders: list[tuple[str, str]] = []  # listing (order id, account) accepted
        self.block_ids: list[tuple[str, str, str | None]] = []  # (id, poster, named) posted
        self.auction_ids: list[str] = []  # every auction opened
        self.opened: list[tuple[str, str]] = []  # (auction id, initiator) opened
        self.bid_ids: list[tuple[str, str]] = []  # (bid id, bidder) accepted
        self.seen: Counter = Counter()  # what the stream reached (trades by mode, rejects)
        self.run(OpenAccount(account="f", kind="financial"))
        for account in ACCOUNTS[:4]:
            self.run(Deposit(account=account, currency="CNY", amount="50000.00"))
            for symbol in SYMBOLS:
                self.run(IssueAllowances(account=account, instrument=symbol,
                                         qty=150 if account == "f" else 400))

    # --- the stream ------------------------------------------------------------------------
    ACTIONS = (("place", ) * 6 + ("cancel_or_amend", ) * 3 + ("block_post", ) * 4 +
               ("block_accept", ) * 4 + ("cancel_away", ) * 2 + ("auction_open", ) * 3 +
               ("auction_bid", ) * 9 + ("auction_close", ) * 2 +
               ("deposit", "withdraw", "issue", "move", "status", "eod", "round_trip"))

    @rule(data=st.data())
    def step(self, data) -> None:
        """One command: hypothesis picks rules evenly, so the weights are here."""
        getattr(self, data.draw(st.sampled_from(self.ACTIONS), label="action"))(data)

    @staticmethod
    def rarely(data, n: int) -> bool:
        """True once in *n* draws. Not on the draw of 0: hypothesis tries streams of
        simplest choices (all zeros), which should stay mostly valid."""
        return data.draw(st.integers(0, n - 1)) == n // 2

    def fresh(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    def some_id(self, data, prefix: str) -> str:
        """A new id, or now and then one already used (a duplicate to reject)."""
        used = ([i for i, _ in self.orders] + [i for i, _, _ in self.block_ids] +
                self.auction_ids + [i for i, _ in self.bid_ids])
        if used and self.rarely(data, 12):
            return data.draw(st.sampled_from(used))
        return self.fresh(prefix)

    def reference(self, symbol: str) -> int:
        ref = self.fast.reference_price(symbol)
        assert ref is not None  # the market gives both a reference, and only trades move it
        return ref

    def place(self, data) -> None:
        draw = data.draw
        account = draw(st.sampled_from(ACCOUNTS))
        symbol = draw(st.sampled_from(SYMBOLS))
        kind = draw(st.sampled_from(("limit", ) * 5 + ("market", )))
        ref = self.reference(symbol)
        order_id = self.some_id(data, "o")
        events = self.run(
            PlaceOrder(order_id=order_id, account=account, instrument=symbol,
                       side=draw(st.sampled_from(("buy", "sell"))), type=kind,
                       tif=draw(st.sampled_from(("gtc", "gtc", "day", "ioc", "fok"))),
                       price=(price_text(draw(st.integers(ref - 15, ref + 15)))
                              if kind == "limit" else None), qty=draw(st.integers(1, 250))))
        if type(events[0]).__name__ == "OrderAccepted":
            self.orders.append((order_id, account))

    def cancel_or_amend(self, data) -> None:
        if not self.orders:
            return
        order_id, account = data.draw(st.sampled_from(self.orders))
        if self.rarely(data, 3):
            self.run(CancelOrder(order_id=order_id, account=account))
            return
        order = self.fast.order(order_id)
        ref = self.reference(order.instrument if order is not None else SYMBOLS[0])
        price = data.draw(st.one_of(st.none(), st.integers(ref - 15, ref + 15).map(price_text)))
        qty = data.draw(st.one_of(st.none(), st.integers(1, 400)))
        self.run(AmendOrder(order_id=order_id, account=account, price=price, qty=qty))

    def block_post(self, data) -> None:
        draw = data.draw
        symbol = draw(st.sampled_from(SYMBOLS))
        ref = self.reference(symbol)
        low, high = -(-ref * 7 // 10), ref * 13 // 10  # the block band, edges included
        prices = ((st.integers(ref - 300, ref + 300), ) * 4 +
                  (st.sampled_from((low - 1, low, high, high + 1)), st.integers(ref // 2, ref * 2)))
        price = draw(prices[draw(st.integers(0, 5))], label="block price")
        text = price_text(price) + ("5" if self.rarely(data, 20) else "")
        account = draw(st.sampled_from(ACCOUNTS * 6 + (REGISTRY, )))
        order_id = self.some_id(data, "B")
        named = draw(st.sampled_from((None, None, None) + ACCOUNTS))
        if named == account and not self.rarely(data, 4):
            named = None
        events = self.run(
            PostBlock(order_id=order_id, account=account, instrument=symbol,
                      side=draw(st.sampled_from(("buy", "sell"))), price=text,
                      qty=draw(st.sampled_from((0, -100, 99, 100, 101)) if self.rarely(data, 4)
                               else st.integers(100, 700)), to_account=named))
        if type(events[0]) is BlockPosted:
            self.block_ids.append((order_id, account, named))

    def block_accept(self, data) -> None:
        draw = data.draw
        open_ = [b for b in self.block_ids if b[0] in self.blocks]
        if not open_ and not self.rarely(data, 4) or not self.block_ids:
            return self.block_post(data)  # nothing to accept: post one
        order_id, poster, named = draw(
            st.sampled_from(open_ if open_ and not self.rarely(data, 5) else self.block_ids))
        account = named if named is not None and not self.rarely(data, 3) else draw(
            st.sampled_from(ACCOUNTS))
        to = draw(st.sampled_from(ACCOUNTS)) if self.rarely(data, 8) else poster
        instrument = draw(st.sampled_from(SYMBOLS)) if self.rarely(data, 6) else None
        self.run(AcceptBlock(order_id=order_id, account=account, to_account=to,
                             instrument=instrument))

    def cancel_away(self, data) -> None:
        """Withdraw a block (its poster) or an auction bid (its bidder), or try another's, or
        try to withdraw an auction (its initiator may not)."""
        draw = data.draw
        choices = [(i, a) for i, a, _ in self.block_ids] + self.bid_ids
        if self.opened and self.rarely(data, 8):
            choices = self.opened
        if not choices:
            return
        order_id, account = draw(st.sampled_from(choices))
        if self.rarely(data, 6):
            account = draw(st.sampled_from(ACCOUNTS))
        if self.rarely(data, 6):  # blocks and bids cannot be amended
            self.run(AmendOrder(order_id=order_id, account=account, qty=100))
        else:
            self.run(CancelOrder(order_id=order_id, account=account))

    def auction_open(self, data) -> None:
        draw = data.draw
        symbol = draw(st.sampled_from(SYMBOLS))
        ref = self.reference(symbol)
        account = draw(st.sampled_from(ACCOUNTS * 2 + (REGISTRY, ) * 3))
        side = draw(st.sampled_from(("sell", "sell", "buy") if account == REGISTRY else
                                    ("sell", "buy")))
        if side == "sell":  # the reserve of a sale: from the reference less 10% to it
            low, high = -(-ref * 9 // 10), ref
        else:  # of a purchase: from the reference to it plus 10%
            low, high = ref, ref * 11 // 10
        reserve = draw(st.sampled_from((low - 1, low, high, high + 1))
                       if self.rarely(data, 5) else st.integers(low, high), label="reserve")
        auction = self.some_id(data, "A")
        events = self.run(
            OpenAuction(auction=auction, account=account, instrument=symbol, side=side,
                        qty=draw(st.sampled_from((0, 99, 100)) if self.rarely(data, 5) else
                                 st.integers(100, 250 if account == REGISTRY else 400)),
                        price=price_text(reserve),
                        pricing=draw(st.sampled_from(("uniform", "pay_as_bid")))))
        if type(events[0]) is AuctionOpened:
            self.auction_ids.append(auction)
            self.opened.append((auction, account))

    def auction_bid(self, data) -> None:
        draw = data.draw
        open_ = [a for a in self.auction_ids if self.auctions.get(a, {}).get("open")]
        if not open_ and not self.rarely(data, 4) or not self.auction_ids:
            return self.auction_open(data)  # nothing to bid in: open one
        auction = draw(st.sampled_from(open_ if open_ and not self.rarely(data, 6) else
                                       self.auction_ids))
        terms = self.auctions.get(auction)
        if terms is not None:
            ref = self.reference(terms["symbol"])
            reserve = terms["reserve"]
            low, high = sorted((reserve, ref * 11 // 10 if terms["is_sale"] else
                                -(-ref * 9 // 10)))  # where a bid may lie
            step = 10 if terms["is_sale"] else -10  # better for the initiator
            prices = ((st.integers(low, high), ) * 3 +
                      (st.sampled_from((reserve, reserve + step, reserve + 2 * step)), ) * 3 +
                      (st.integers(ref * 88 // 100, ref * 112 // 100),
                       st.sampled_from((reserve - 1, reserve, reserve + 1, low - 1, high + 1))))
            price = draw(prices[draw(st.integers(0, 7))], label="bid price")  # ties: time
        else:
            price = draw(st.integers(5000, 7000))
        order_id = self.some_id(data, "x")
        others = tuple(a for a in ACCOUNTS if terms is None or a != terms["account"])
        account = draw(st.sampled_from(ACCOUNTS + (REGISTRY, ) if self.rarely(data, 6) else
                                       others))
        events = self.run(
            BidAuction(auction=auction, order_id=order_id, account=account,
                       price=price_text(price),
                       qty=draw(st.integers(0, 700) if self.rarely(data, 4) else
                                st.integers(1, terms["qty"] if terms else 300))))
        if type(events[0]) is AuctionBidAccepted:
            self.bid_ids.append((order_id, account))

    def auction_close(self, data) -> None:
        open_ = [a for a in self.auction_ids if self.auctions.get(a, {}).get("open")]
        if not open_ and not self.rarely(data, 4):
            return self.auction_bid(data)
        if not self.auction_ids or self.rarely(data, 10):
            self.run(CloseAuction(auction="nope"))
            return
        self.run(CloseAuction(auction=data.draw(st.sampled_from(
            open_ if open_ and not self.rarely(data, 5) else self.auction_ids))))

    def deposit(self, data) -> None:
        fen = data.draw(st.integers(-100, 5_000_000))
        self.run(Deposit(account=data.draw(st.sampled_from(ACCOUNTS)), currency="CNY",
                         amount=price_text(fen)))

    def withdraw(self, data) -> None:
        self.run(Withdraw(account=data.draw(st.sampled_from(ACCOUNTS)), currency="CNY",
                          amount=price_text(data.draw(st.integers(1, 4_000_000)))))

    def issue(self, data) -> None:
        self.run(IssueAllowances(account=data.draw(st.sampled_from(ACCOUNTS)),
                                 instrument=data.draw(st.sampled_from(SYMBOLS)),
                                 qty=data.draw(st.integers(1, 500))))

    def move(self, data) -> None:
        account = data.draw(st.sampled_from(ACCOUNTS))
        symbol = data.draw(st.sampled_from(SYMBOLS))
        qty = data.draw(st.integers(1, 700))
        if not self.rarely(data, 4):
            self.run(TransferAllowances(account=account,
                                        to_account=data.draw(st.sampled_from(ACCOUNTS)),
                                        instrument=symbol, qty=qty))
        else:
            self.run(SurrenderAllowances(account=account, instrument=symbol, qty=qty))

    def status(self, data) -> None:
        """Suspend or resume an account, mass-cancel its orders, halt or resume a symbol."""
        account = data.draw(st.sampled_from(ACCOUNTS))
        symbol = data.draw(st.sampled_from(SYMBOLS))
        self.run(data.draw(st.sampled_from((
            ResumeAccount(account=account), SuspendAccount(account=account),
            MassCancel(account=account), ResumeInstrument(instrument=symbol),
            ResumeInstrument(instrument=symbol), HaltInstrument(instrument=symbol)))))

    def eod(self, data) -> None:
        self.run(EndOfDay())
        assert not self.locked, "T+1 locks outlived the day"
        assert not self.blocks, "a block outlived the day"
        assert not any(a["open"] for a in self.auctions.values()), "an auction outlived the day"
        self.auctions.clear()  # the day's auction ids are forgotten with the day's order ids

    def round_trip(self, data) -> None:
        """Rebuild one engine from its state; the other, untouched, keeps it honest."""
        self.restore(data.draw(st.sampled_from(("fast", "naive"))), data.draw(st.booleans()))

    def restore(self, which: str, via_bytes: bool) -> None:
        engine = getattr(self, which)
        book = FastBook if which == "fast" else NaiveBook
        if via_bytes:
            restored = decode_state(encode_state(engine), book=book)
        else:
            restored = Engine.from_state(engine.to_state(), book=book)
        restored.check()
        assert restored.state_hash() == engine.state_hash(), "the round trip changed the state"
        assert restored.ledger.holdings() == engine.ledger.holdings()
        assert ([(o.order_id, o.qty, to) for o, to in restored.open_blocks()] ==
                [(o.order_id, o.qty, to) for o, to in engine.open_blocks()])
        setattr(self, which, restored)
        self.seen["round_trip"] += 1

    # --- driving ---------------------------------------------------------------------------
    def run(self, cmd) -> list:
        fast, naive = self.fast, self.naive
        before = fast.ledger.holdings()
        snapshot = fast.snapshot()[7:]  # all but the counters (seq, trades, accepted...)
        references = {symbol: fast.reference_price(symbol) for symbol in SYMBOLS}
        claim = self.limit_claim(cmd)
        events = fast.execute(cmd)
        twin = naive.execute(cmd)
        assert msgspec.json.encode(events) == msgspec.json.encode(twin), (
            f"fast and naive engines differ on {cmd}")
        fast.check()
        naive.check()
        assert fast.state_hash() == naive.state_hash(), f"state hashes differ after {cmd}"
        rejected = [e for e in events if type(e) is CommandRejected]
        if rejected:
            assert len(events) == 1, f"a rejection with consequences: {events}"
            self.seen[rejected[0].reason] += 1
            self.seen[f"{rejected[0].action}:{rejected[0].reason}"] += 1
            assert fast.ledger.holdings() == before, f"rejected {cmd} moved holdings"
            assert fast.snapshot()[7:] == snapshot, f"rejected {cmd} changed the state"
        if claim is not None:
            account, qty, exposure, limit = claim
            if rejected and rejected[0].reason == "position_limit":
                assert limit is not None and exposure + qty > limit, (cmd, exposure, limit)
            elif not rejected:
                assert limit is None or exposure + qty <= limit, (cmd, exposure, limit)
        self.account_for(events, references)
        return events

    # --- position limits -------------------------------------------------------------------
    def limit_claim(self, cmd) -> tuple[str, int, int, int | None] | None:
        """(account, units it would add, its exposure now, its limit) for a command that
        would add allowances an account has or wants; ``None`` for others."""
        kind = type(cmd)
        found: tuple[str, int] | None = None
        if kind in (PlaceOrder, PostBlock) and cmd.side == "buy":
            found = (cmd.account, cmd.qty)
        elif kind is AcceptBlock:
            block = self.blocks.get(cmd.order_id)
            if block is not None and not block["is_buy"]:
                found = (cmd.account, block["qty"])
        elif kind is OpenAuction and cmd.side == "buy":
            found = (cmd.account, cmd.qty)
        elif kind is BidAuction:
            auction = self.auctions.get(cmd.auction)
            if auction is not None and auction["is_sale"]:
                found = (cmd.account, cmd.qty)
        elif kind is TransferAllowances:
            found = (cmd.to_account, cmd.qty)
        elif kind is AmendOrder and cmd.qty is not None:
            order = self.fast.order(cmd.order_id)
            if order is not None and order.is_buy and cmd.qty > order.qty:
                found = (cmd.account, cmd.qty - order.qty)
        if found is None or found[0].startswith("@"):
            return None
        account, qty = found
        known = account in self.fast.ledger.accounts
        limit = LIMITS.get(self.kinds.get(account, "covered"))
        return account, qty, self.exposure(account) if known else 0, limit

    def exposure(self, account: str) -> int:
        """What counts toward *account*'s limit, from its holdings and the models: its
        allowances of both vintages and what its open buys, bids, blocks and purchases
        would add."""
        total = sum(available + held + locked + pledged
                    for name, asset, available, held, locked, pledged in self.fast.ledger.holdings()
                    if name == account and asset in SYMBOLS)
        for symbol in SYMBOLS:
            total += sum(o.qty for o in self.fast.book(symbol).orders(True)
                         if o.account == account)
        total += sum(b["qty"] for b in self.blocks.values()
                     if b["is_buy"] and b["account"] == account)
        for auction in self.auctions.values():
            if not auction["open"]:
                continue
            if not auction["is_sale"] and auction["account"] == account:
                total += auction["qty"]
            if auction["is_sale"]:
                total += sum(b["qty"] for b in auction["bids"] if b["account"] == account)
        return total

    # --- the models ------------------------------------------------------------------------
    def account_for(self, events: list, references: dict[str, int | None]) -> None:
        trades: dict[int, TradeExecuted] = {}
        fills: deque = deque()  # the auction fills expected next: (bid id, qty, price)
        expect_block: BlockAccepted | None = None
        unfilled: dict[str, tuple[int, str]] = {}  # bid id -> (qty, reason) to be cancelled
        done: list[tuple[str, str]] = []  # (order id, side) of orders that ended
        # A mass cancel withdraws the account's blocks and bids too: why they end, and whose.
        mass: MassCancelAccepted | None = None
        for e in events:
            kind = type(e)
            self.seen[kind.__name__] += 1
            if kind is MassCancelAccepted:
                mass = e
            elif kind is AccountOpened:
                self.kinds[e.account] = e.kind
            elif kind is CashDeposited:
                self.supply["CNY"] += e.amount
                self.totals[(e.account, "CNY")] += e.amount
            elif kind is CashWithdrawn:
                self.supply["CNY"] -= e.amount
                self.totals[(e.account, "CNY")] -= e.amount
            elif kind is AllowancesIssued:
                self.supply[e.instrument] += e.qty
                self.totals[(e.account, e.instrument)] += e.qty
            elif kind is AllowancesClawedBack:
                self.supply[e.instrument] -= e.qty
                self.totals[(e.account, e.instrument)] -= e.qty
            elif kind is AllowancesTransferred:
                self.totals[(e.account, e.instrument)] -= e.qty
                self.totals[(e.to_account, e.instrument)] += e.qty
            elif kind is AllowancesSurrendered:
                self.totals[(e.account, e.instrument)] -= e.qty
                self.totals[(REGISTRY, e.instrument)] += e.qty
            elif kind is BlockPosted:
                self.block_posted(e, references[e.instrument])
            elif kind is BlockAccepted:
                assert expect_block is None
                expect_block = self.block_accepted(e)
            elif kind is AuctionOpened:
                self.auction_opened(e, references[e.instrument])
            elif kind is AuctionBidAccepted:
                self.bid_accepted(e, references[e.instrument])
            elif kind is AuctionCleared:
                assert not fills, "an auction's fills are missing"
                fills.extend(self.auction_cleared(e, references[e.instrument], unfilled))
                done += [(e.auction, "buy"), (e.auction, "sell")]
            elif kind is TradeExecuted:
                trades[e.trade_id] = e
                if e.mode == "block":
                    self.block_trade(e, expect_block, references[e.instrument])
                    expect_block = None
                elif e.mode == "auction":
                    assert fills, f"an auction trade no bid explains: {e}"
                    self.auction_trade(e, fills.popleft())
                else:
                    assert e.mode == "listing", e.mode
                self.seen[e.mode] += 1
                self.day_away[(e.instrument, e.mode)] += e.qty
            elif kind is TradeSettled:
                self.settled(e, trades.pop(e.trade_id))
            elif kind is HoldingsUnlocked:
                assert self.locked.pop((e.account, e.asset)) == e.qty
            elif kind is OrderCancelled or kind is OrderExpired:
                self.ended(e, unfilled, "mass_cancel" if mass is not None else
                           "cancelled_by_owner")
                done.append((e.order_id, e.side))
            elif kind is DailyStatistics:
                assert (e.block_volume, e.auction_volume) == (
                    self.day_away.pop((e.instrument, "block"), 0),
                    self.day_away.pop((e.instrument, "auction"), 0)), e
                self.day_away.pop((e.instrument, "listing"), None)
        assert not trades, "a trade was not settled"
        assert not fills, f"auction fills that did not happen: {list(fills)}"
        assert expect_block is None, "a block accepted without its trade"
        assert not unfilled, f"unfilled bids not cancelled: {unfilled}"
        if mass is not None:  # nothing of the account's is left that could still trade
            assert not [b for b in self.blocks.values() if b["account"] == mass.account], mass
            assert not [b for a in self.auctions.values() if a["open"] for b in a["bids"]
                        if b["account"] == mass.account], mass
        for key in done:  # orders that ended: their fees accrue no more (a listing order's
            self.accrued.pop(key, None)  # trades settle after the command, so after its end)

    def block_posted(self, e: BlockPosted, reference: int | None) -> None:
        assert e.qty >= BLOCK_MIN, e
        assert reference is None or in_band(e.price, reference, 3, 10), e
        assert e.account != e.to_account and not e.account.startswith("@"), e
        self.blocks[e.order_id] = dict(account=e.account, symbol=e.instrument,
                                       is_buy=e.side == "buy", price=e.price, qty=e.qty,
                                       to=e.to_account)

    def block_accepted(self, e: BlockAccepted) -> BlockAccepted:
        block = self.blocks.pop(e.order_id)
        assert e.to_account == block["account"] != e.account, e
        assert block["to"] in (None, e.account), f"{e.account} took a block named {block['to']}"
        assert (e.instrument, e.price, e.qty) == (block["symbol"], block["price"], block["qty"])
        assert (e.side == "buy") != block["is_buy"], e
        return e

    def block_trade(self, e: TradeExecuted, accepted: BlockAccepted | None,
                    reference: int | None) -> None:
        assert accepted is not None, f"a block trade without an accept: {e}"
        assert e.qty >= BLOCK_MIN, f"a block trade under the minimum: {e}"
        assert reference is None or in_band(e.price, reference, 3, 10), (
            f"a block trade outside the band of {reference}: {e}")
        buyer, seller = ((accepted.account, accepted.to_account) if accepted.side == "buy" else
                         (accepted.to_account, accepted.account))
        assert (e.buy_account, e.sell_account, e.price, e.qty, e.aggressor) == (
            buyer, seller, accepted.price, accepted.qty, accepted.side), e
        assert e.buy_order_id == e.sell_order_id == accepted.order_id
        assert e.buy_leaves_qty == e.sell_leaves_qty == 0

    def auction_opened(self, e: AuctionOpened, reference: int | None) -> None:
        assert e.qty >= AUCTION_MIN, e
        assert e.primary == (e.account == REGISTRY) and (e.side == "sell" or not e.primary), e
        if reference is not None:
            assert (reference * 9 <= e.reserve * 10 <= reference * 10 if e.side == "sell" else
                    reference * 10 <= e.reserve * 10 <= reference * 11), e
        assert e.auction not in self.auctions, e
        self.auctions[e.auction] = dict(name=e.auction, account=e.account, symbol=e.instrument,
                                        is_sale=e.side == "sell", qty=e.qty, reserve=e.reserve,
                                        pricing=e.pricing, primary=e.primary, open=True, bids=[])

    def bid_accepted(self, e: AuctionBidAccepted, reference: int | None) -> None:
        auction = self.auctions[e.auction]
        assert auction["open"] and e.account != auction["account"], e
        assert (e.side == "buy") == auction["is_sale"], e
        assert (e.price >= auction["reserve"] if auction["is_sale"] else
                e.price <= auction["reserve"]), f"a bid beyond the reserve: {e}"
        assert reference is None or in_band(e.price, reference, 1, 10), e
        assert 0 < e.qty <= auction["qty"], e
        auction["bids"].append(dict(order_id=e.order_id, account=e.account, price=e.price,
                                    qty=e.qty, seq=e.seq))

    def auction_cleared(self, e: AuctionCleared, reference: int | None,
                        unfilled: dict[str, tuple[int, str]]) -> list[tuple]:
        """Check the result against the model's clearing; return the fills to expect:
        (bid id, qty, price, the initiator's quantity left after it, the auction)."""
        auction = self.auctions[e.auction]
        assert auction["open"], e
        auction["open"] = False
        is_sale, bids = auction["is_sale"], auction["bids"]
        ranked = sorted(bids, key=lambda b: ((-b["price"] if is_sale else b["price"]), b["seq"]))
        plan, left = [], auction["qty"]
        for bid in ranked:
            if not left:
                break
            take = min(bid["qty"], left)
            plan.append((bid, take))
            left -= take
        status = "cleared" if plan else "no_valid_bid"
        if auction["primary"] and plan:
            lowest = min(b["price"] for b, _ in plan)
            if sum(b["qty"] for b in bids) < auction["qty"]:
                status = "undersubscribed"
            elif reference is not None and lowest * CANCEL_DEN < reference * (CANCEL_DEN -
                                                                              CANCEL_NUM):
                status = "below_market"
        if status != "cleared":
            plan = []
        sold = sum(n for _, n in plan)
        last = plan[-1][0]["price"] if plan else None
        assert (e.status, e.qty, e.unsold, e.price, e.bids, e.filled_bids, e.account,
                e.pricing) == (status, sold, auction["qty"] - sold, last, len(bids), len(plan),
                               auction["account"], auction["pricing"]), (e, auction)
        self.seen[f"{'primary' if auction['primary'] else 'auction'}_{status}"] += 1
        expected = []
        remaining = sold if auction["primary"] else auction["qty"]
        for bid, qty in plan:
            remaining -= qty
            price = last if auction["pricing"] == "uniform" else bid["price"]
            expected.append((bid, qty, price, remaining))
            bid["qty"] -= qty
        if any(b["qty"] and b["price"] == last for b in bids):
            self.seen["time_priority"] += 1  # a bid at the last price left out: time decided
        for bid in bids:
            if bid["qty"]:
                unfilled[bid["order_id"]] = (bid["qty"], "auction_unfilled"
                                             if status == "cleared" else "auction_cancelled")
        auction["bids"] = []
        return [(b["order_id"], qty, price, left, auction) for b, qty, price, left in expected]

    def auction_trade(self, e: TradeExecuted, fill: tuple) -> None:
        bid_id, qty, price, left, auction = fill
        reserve = auction["reserve"]
        if auction["is_sale"]:
            assert e.price >= reserve, f"a sale filled under its reserve {reserve}: {e}"
            assert (e.buy_order_id, e.sell_order_id, e.sell_account, e.aggressor,
                    e.sell_leaves_qty) == (bid_id, auction["name"], auction["account"], "buy",
                                           left), (e, fill)
        else:
            assert e.price <= reserve, f"a purchase filled over its reserve {reserve}: {e}"
            assert (e.sell_order_id, e.buy_order_id, e.buy_account, e.aggressor,
                    e.buy_leaves_qty) == (bid_id, auction["name"], auction["account"], "sell",
                                          left), (e, fill)
        assert (e.qty, e.price, e.instrument) == (qty, price, auction["symbol"]), (e, fill)

    def settled(self, e: TradeSettled, trade: TradeExecuted) -> None:
        assert (e.buy_account, e.sell_account, e.qty, e.instrument) == (
            trade.buy_account, trade.sell_account, trade.qty, trade.instrument)
        cash = trade.price * trade.qty  # tick 0.01 CNY = 1 fen a tonne
        buyer_rate, seller_rate = ((TAKER, MAKER) if trade.aggressor == "buy" else
                                   (MAKER, TAKER))
        buy_key, sell_key = (trade.buy_order_id, "buy"), (trade.sell_order_id, "sell")
        buy_fee, self.accrued[buy_key] = fee_due(self.accrued.get(buy_key, 0), cash, buyer_rate)
        sell_fee, self.accrued[sell_key] = fee_due(self.accrued.get(sell_key, 0), cash,
                                                   seller_rate)
        assert (e.cash, e.buy_fee, e.sell_fee) == (cash, buy_fee, sell_fee), (e, trade)
        if not trade.buy_leaves_qty:
            del self.accrued[buy_key]
        if not trade.sell_leaves_qty:
            del self.accrued[sell_key]
        self.totals[(e.buy_account, "CNY")] -= cash + e.buy_fee
        self.totals[(e.sell_account, "CNY")] += cash - e.sell_fee
        self.totals[("@exchange", "CNY")] += e.buy_fee + e.sell_fee
        self.totals[(e.buy_account, e.instrument)] += e.qty
        self.totals[(e.sell_account, e.instrument)] -= e.qty
        self.locked[(e.buy_account, e.instrument)] += e.qty  # settlement_days = 1

    def ended(self, e: OrderCancelled | OrderExpired, unfilled: dict[str, tuple[int, str]],
              withdrawn: str) -> None:
        """An order, block or bid ended: cancelled (a block or bid for *withdrawn*, its
        owner's cancel or a mass cancel), expired, or an auction's unfilled bid."""
        qty = e.cancelled_qty if type(e) is OrderCancelled else e.expired_qty
        reason = e.reason if type(e) is OrderCancelled else None
        if e.order_id in unfilled:
            assert unfilled.pop(e.order_id) == (qty, reason), e
            return
        block = self.blocks.get(e.order_id)
        if block is not None and block["account"] == e.account:
            assert qty == block["qty"] and reason in (None, withdrawn), e
            del self.blocks[e.order_id]
            return
        for auction in self.auctions.values():
            bid = next((b for b in auction["bids"] if b["order_id"] == e.order_id), None)
            if bid is not None:
                assert auction["open"] and (qty, reason) == (bid["qty"], withdrawn), e
                auction["bids"].remove(bid)
                return

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def conserved_and_explained(self) -> None:
        sums: Counter = Counter()
        seen = set()
        for account, asset, available, held, locked, pledged in self.fast.ledger.holdings():
            assert min(available, held, locked) >= 0 and pledged == 0, (account, asset)
            sums[asset] += available + held + locked
            assert available + held + locked == self.totals[(account, asset)], (account, asset)
            assert locked == self.locked[(account, asset)], (account, asset, "locked")
            seen.add((account, asset))
        assert +sums == +self.supply, "an asset was created or destroyed"
        assert not {k for k, v in self.totals.items() if v} - seen

    @invariant()
    def holds_are_what_open_orders_blocks_and_bids_need(self) -> None:
        need: Counter = Counter()

        def hold(account: str, symbol: str, is_buy: bool, price: int, qty: int,
                 key: tuple[str, str]) -> None:
            if not is_buy:
                need[(account, symbol)] += qty
                return
            notional = price * qty
            accrued = self.accrued.get(key, 0)
            need[(account, "CNY")] += notional + (accrued + notional * TAKER) // SCALE - (
                accrued // SCALE)

        for symbol in SYMBOLS:
            for is_buy in (True, False):
                for o in self.fast.book(symbol).orders(is_buy):
                    hold(o.account, symbol, is_buy, o.price, o.qty,
                         (o.order_id, "buy" if is_buy else "sell"))
        for order_id, b in self.blocks.items():
            hold(b["account"], b["symbol"], b["is_buy"], b["price"], b["qty"], (order_id, ""))
        for name, a in self.auctions.items():
            if not a["open"]:
                continue
            if not a["primary"]:
                hold(a["account"], a["symbol"], not a["is_sale"], a["reserve"], a["qty"],
                     (name, ""))
            for b in a["bids"]:
                hold(b["account"], a["symbol"], a["is_sale"], b["price"], b["qty"],
                     (b["order_id"], ""))
        held = {(account, asset): h
                for account, asset, _, h, _, _ in self.fast.ledger.holdings() if h}
        assert held == +need
        assert sorted(self.blocks) == sorted(o.order_id for o, _ in self.fast.open_blocks())


# About 19 s here (250 streams of up to 60 commands, each on both engines); the guard below
# checks that a fixed stream reaches what the random ones should (trades of each mode,
# primary sales cleared and cancelled, a position limit, round trips).
Modes.TestCase.settings = settings(max_examples=250, stateful_step_count=60, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
TestModes = Modes.TestCase


def test_a_fixed_stream_reaches_every_mode() -> None:
    """Guard against generators that never get there: one fixed stream through the machine
    trades a directed and a public block, clears a uniform sale in part, a pay-as-bid
    purchase and (at the end of the day) a primary sale, cancels a primary below the
    market, meets a position limit, and round-trips the state with all of them open."""
    machine = Modes()
    machine.start()

    def run(*commands) -> None:
        for cmd in commands:
            machine.run(cmd)
            machine.conserved_and_explained()
            machine.holds_are_what_open_orders_blocks_and_bids_need()

    run(PostBlock(order_id="B1", account="a", instrument="CEA25", side="sell", price="70.00",
                  qty=200, to_account="b"),
        AcceptBlock(order_id="B1", account="c", to_account="a"),  # not_counterparty
        AcceptBlock(order_id="B1", account="b", to_account="a"),
        PostBlock(order_id="B2", account="c", instrument="CEA24", side="buy", price="45.00",
                  qty=100),
        OpenAuction(auction="A1", account="b", instrument="CEA24", side="sell", qty=300,
                    price="57.00"),
        BidAuction(auction="A1", order_id="x1", account="a", price="58.00", qty=200),
        BidAuction(auction="A1", order_id="x2", account="c", price="59.00", qty=150),
        OpenAuction(auction="A2", account="c", instrument="CEA25", side="buy", qty=200,
                    price="62.00", pricing="pay_as_bid"),
        BidAuction(auction="A2", order_id="y1", account="a", price="61.00", qty=150),
        BidAuction(auction="A2", order_id="y2", account="b", price="60.50", qty=100),
        OpenAuction(auction="P1", account=REGISTRY, instrument="CEA25", side="sell", qty=200,
                    price="58.00"),
        BidAuction(auction="P1", order_id="z1", account="a", price="59.00", qty=120),
        BidAuction(auction="P1", order_id="z2", account="c", price="58.50", qty=100),
        PlaceOrder(order_id="o1", account="f", instrument="CEA24", side="buy", price="60.00",
                   qty=1100),  # position_limit: f has 300, a financial institution 1,200
        PlaceOrder(order_id="o2", account="f", instrument="CEA24", side="buy", price="60.00",
                   qty=50),
        PlaceOrder(order_id="o3", account="a", instrument="CEA24", side="sell", price="60.00",
                   qty=20))
    machine.restore("fast", via_bytes=False)
    machine.restore("naive", via_bytes=True)
    run(CloseAuction(auction="A1"),
        AcceptBlock(order_id="B2", account="b", to_account="c"),
        CloseAuction(auction="A2"),
        EndOfDay(),  # P1 clears
        OpenAuction(auction="P2", account=REGISTRY, instrument="CEA25", side="sell", qty=100,
                    price="54.00"),
        BidAuction(auction="P2", order_id="w1", account="b", price="55.00", qty=100),
        CloseAuction(auction="P2"))  # 55.00 is more than 5% under 60.00
    seen = machine.seen
    assert (seen["block"], seen["auction"], seen["listing"]) == (2, 6, 1), seen
    assert (seen["auction_cleared"], seen["primary_cleared"],
            seen["primary_below_market"]) == (2, 1, 1), seen
    assert (seen["position_limit"], seen["not_counterparty"], seen["round_trip"]) == (1, 1, 2)
