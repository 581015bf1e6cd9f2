"""One-way bidding: auctions of one seller (or one buyer), away from the order book.

``auction_open`` (the initiator's account, ``side`` ``sell``: a one-way sale, buyers bid;
``buy``: a one-way purchase, sellers offer), ``auction_bid`` (held like an order; the
bidder may ``cancel`` it until the auction clears) and ``auction_close`` (the
operator's; an auction still open at ``eod`` clears then). The defaults are the national
market's rules (``[auctions]`` in the market file):

- the initiator offers at least 100,000 t; its allowances (a sale) or cash at the
  reserve price (a purchase) are held;
- the reserve of a sale lies between the reference price less 10% and the reference;
  of a purchase between the reference and plus 10% (no reference: no range);
- a bid on a sale is at or above the reserve (else ``below_reserve``) and at most the
  reference plus 10% (else ``above_bid_cap``); an offer on a purchase is at or below the
  reserve and at least the reference less 10%, with the same reason codes;
- clearing ranks bids by price (best for the initiator first), then time; they fill in
  that order up to the quantity, the last one possibly in part. ``uniform``: every fill
  at the price of the last bid filled; ``pay_as_bid``: each at its own price. What is not
  sold (bought) stays with the initiator; the unfilled part of each bid is cancelled
  (``auction_unfilled``) and gives back its hold. No valid bid: no trade.

A primary auction is opened for the registry's account ``@registry`` as seller: new
allowances, issued as they are sold, in sealed bids (only their count is published).
It is cancelled (every bid ``auction_cancelled``) when the bids cover less than its
quantity (``undersubscribed``), or when it would clear more than the market's
``primary_cancel_below`` under the reference price (``below_market``), as the EU's
primary auctions are.

Trades carry ``mode`` ``auction``; the bidder pays the taker fee and the initiator the
maker fee; they settle with T+1 as listing trades do. An auction's id shares the day's
order ids: no order, block or auction may reuse it that day.
"""

from __future__ import annotations

import msgspec

from exchange.accounts import REGISTRY
from exchange.blocks import ModeHost, in_band, size_reason, spot_for
from exchange.book.fast import DAY, LIMIT, STP_NONE, Order
from exchange.commands import BidAuction, CloseAuction, OpenAuction
from exchange.events import (AuctionBidAccepted, AuctionCleared, AuctionOpened, Event,
                             TradeExecuted)
from exchange.reasons import Reason

__all__ = ["Auction", "Auctions", "allocate"]


class Auction(msgspec.Struct, kw_only=True):
    """One auction: the initiator's side as an ``Order`` whose id is the auction's
    (its price the reserve, its qty what is still offered) and the bids, in time order."""

    initiator: Order
    pricing: str
    primary: bool
    bids: list[Order] = []
    open: bool = True


def allocate(is_sale: bool, qty: int, bids: list[Order]) -> list[tuple[Order, int]]:
    """Rank *bids* by price, best for the initiator first (highest in a sale, lowest in
    a purchase), then time (``accept_seq``), and fill them in turn up to *qty*: the
    ``(bid, filled)`` pairs, the last perhaps in part.

    >>> from exchange.book.fast import Order
    >>> bid = lambda i, p, q: Order(f"b{i}", "x", "CEA25", True, p, q, q, 0, 0, 1, 0, False, 0,
    ...                             0, i)
    >>> [(b.order_id, n) for b, n in allocate(True, 250, [bid(1, 60, 100), bid(2, 62, 100),
    ...                                                 bid(3, 61, 100)])]
    [('b2', 100), ('b3', 100), ('b1', 50)]
    """
    ranked = sorted(bids, key=(lambda b: (-b.price, b.accept_seq)) if is_sale else
                    (lambda b: (b.price, b.accept_seq)))
    fills: list[tuple[Order, int]] = []
    left = qty
    for bid in ranked:
        if not left:
            break
        take = min(bid.qty, left)
        fills.append((bid, take))
        left -= take
    return fills


class Auctions:
    """The day's auctions of one engine, by id (open and cleared)."""

    def __init__(self, engine: ModeHost) -> None:
        self._engine = engine
        self.auctions: dict[str, Auction] = {}
        self.bid_of: dict[str, str] = {}  # an open bid's order id -> its auction

    # --- auction_open --------------------------------------------------------------------
    def promised(self, symbol: str) -> int:
        """The units of *symbol* the open primary auctions offer: what they will issue
        at most when they clear."""
        return sum(a.initiator.qty for a in self.auctions.values()
                   if a.primary and a.open and a.initiator.instrument == symbol)

    def open(self, cmd: OpenAuction, out: list[Event]) -> None:
        engine = self._engine
        rules = engine.market.auctions

        def reject(reason: str) -> None:
            engine._reject("auction_open", reason, out, None, cmd.account, cmd.instrument, cmd.ts)

        inst = spot_for(engine, "auction", cmd.instrument, cmd.ts)
        if isinstance(inst, str):
            return reject(inst)
        if not cmd.auction or not cmd.account:
            return reject(Reason.MISSING_FIELD)
        if cmd.auction in self.auctions or cmd.auction in engine._ids:
            return reject(Reason.DUPLICATE_AUCTION)
        is_sale = cmd.side == "sell"
        primary = cmd.account == REGISTRY
        if primary and not is_sale:
            return reject(Reason.RESERVED_ACCOUNT)
        reserve = engine._ticks(inst, cmd.price)
        if not isinstance(reserve, int):
            return reject(reserve)
        reference = engine._reference[cmd.instrument]
        num, den = rules.band_num, rules.band_den
        if reference is not None and not (
                reference * (den - num) <= reserve * den <= reference * den if is_sale else
                reference * den <= reserve * den <= reference * (den + num)):
            return reject(Reason.RESERVE_OUT_OF_RANGE)
        qty = cmd.qty
        reason = size_reason(inst, qty, rules.min_qty, Reason.BELOW_BLOCK_MINIMUM)
        if reason is not None:
            return reject(reason)
        if not primary:  # the registry issues what a primary auction sells, when it sells
            held = engine._ledger.reserve(cmd.auction, cmd.account, cmd.instrument, not is_sale,
                                          reserve, qty)
            if held is not None:
                return reject(held)  # type: ignore[arg-type]  # a limit hold: a reason or None
        elif (unissuable := engine._ledger.mintable(cmd.instrument, qty)) is not None:
            return reject(unissuable)
        engine.accepted += 1
        ctr = engine._ctr
        ctr.seq += 1
        out.append(
            AuctionOpened(seq=ctr.seq, auction=cmd.auction, account=cmd.account,
                          instrument=cmd.instrument, side=cmd.side, qty=qty, reserve=reserve,
                          pricing=cmd.pricing, primary=primary, ts=cmd.ts))
        initiator = Order(cmd.auction, cmd.account, cmd.instrument, not is_sale, reserve, qty, qty,
                          0, LIMIT, DAY, STP_NONE, False, 0, 0, ctr.seq)
        self.auctions[cmd.auction] = Auction(initiator=initiator, pricing=cmd.pricing,
                                             primary=primary)
        engine._ids.retire(cmd.auction)  # the id is used for the day
        return None

    # --- auction_bid ---------------------------------------------------------------------
    def bid(self, cmd: BidAuction, out: list[Event]) -> None:
        engine = self._engine
        rules = engine.market.auctions
        auction = self.auctions.get(cmd.auction)
        symbol = None if auction is None else auction.initiator.instrument

        def reject(reason: str) -> None:
            engine._reject("auction_bid", reason, out, cmd.order_id, cmd.account, symbol, cmd.ts)

        if auction is None:
            return reject(Reason.UNKNOWN_AUCTION)
        if not auction.open:
            return reject(Reason.AUCTION_CLOSED)
        initiator = auction.initiator
        symbol = initiator.instrument
        reason = engine._session_reason("auction", cmd.ts, symbol)
        if reason is not None:
            return reject(reason)
        if not cmd.order_id or not cmd.account:
            return reject(Reason.MISSING_FIELD)
        if cmd.account == initiator.account:
            return reject(Reason.OWN_AUCTION)
        if cmd.order_id in engine._ids:
            return reject(Reason.DUPLICATE_ORDER_ID)
        inst = engine._specs[symbol].inst
        price = engine._ticks(inst, cmd.price)
        if not isinstance(price, int):
            return reject(price)
        is_sale = not initiator.is_buy
        if price < initiator.price if is_sale else price > initiator.price:
            return reject(Reason.BELOW_RESERVE)
        reference = engine._reference[symbol]
        if not in_band(price, reference, rules.band_num, rules.band_den):
            return reject(Reason.ABOVE_BID_CAP)
        qty = cmd.qty
        reason = size_reason(inst, qty, inst.min_qty, Reason.QUANTITY_BELOW_MINIMUM)
        if reason is not None:
            return reject(reason)
        if qty > initiator.qty:
            return reject(Reason.QUANTITY_ABOVE_MAXIMUM)
        held = engine._ledger.reserve(cmd.order_id, cmd.account, symbol, is_sale, price, qty)
        if held is not None:
            return reject(held)  # type: ignore[arg-type]  # a limit hold gives a reason or None
        engine.accepted += 1
        ctr = engine._ctr
        ctr.seq += 1
        side = "buy" if is_sale else "sell"
        out.append(
            AuctionBidAccepted(seq=ctr.seq, auction=cmd.auction, order_id=cmd.order_id,
                               account=cmd.account, instrument=symbol, side=side, price=price,
                               qty=qty, ts=cmd.ts))
        auction.bids.append(
            Order(cmd.order_id, cmd.account, symbol, is_sale, price, qty, qty, 0, LIMIT, DAY,
                  STP_NONE, False, 0, 0, ctr.seq))
        self.bid_of[cmd.order_id] = cmd.auction
        engine._ids.retire(cmd.order_id)
        return None

    def find(self, order_id: str) -> Order | None:
        """The open bid *order_id*, or ``None``."""
        name = self.bid_of.get(order_id)
        if name is None:
            return None
        return next(b for b in self.auctions[name].bids if b.order_id == order_id)

    def cancel(self, order_id: str, account: str, out: list[Event],
               reason: str = Reason.CANCELLED_BY_OWNER) -> bool:
        """Withdraw the open bid *order_id* of *account*; False if there is none."""
        name = self.bid_of.get(order_id)
        if name is None:
            return False
        auction = self.auctions[name]
        bid = next(b for b in auction.bids if b.order_id == order_id)
        if bid.account != account:
            return False
        auction.bids.remove(bid)
        del self.bid_of[order_id]
        self._engine._end_away(bid, reason, out)
        return True

    def open_bids(self) -> list[Order]:
        """The bids in open auctions: auction by auction (in the order of their first bid),
        each's in the order they were placed."""
        return [bid for name in dict.fromkeys(self.bid_of.values())
                for bid in self.auctions[name].bids if bid.order_id in self.bid_of]

    # --- auction_close -------------------------------------------------------------------
    def close(self, cmd: CloseAuction, out: list[Event]) -> bool | None:
        """Clear an auction; True once cleared (its trades are settled here)."""
        engine = self._engine
        auction = self.auctions.get(cmd.auction)
        if auction is None:
            engine._reject("auction_close", Reason.UNKNOWN_AUCTION, out, ts=cmd.ts)
            return None
        if not auction.open:
            engine._reject("auction_close", Reason.AUCTION_CLOSED, out,
                           instrument=auction.initiator.instrument, ts=cmd.ts)
            return None
        engine.accepted += 1
        self.clear(auction, out, cmd.ts)
        return True

    def clear(self, auction: Auction, out: list[Event], ts: int | None) -> None:
        """Clear *auction*: its result event, the trades, then the ends of the bids."""
        engine = self._engine
        ledger = engine._ledger
        ctr = engine._ctr
        initiator = auction.initiator
        symbol = initiator.instrument
        is_sale = not initiator.is_buy
        auction.open = False
        bids = auction.bids
        fills = allocate(is_sale, initiator.qty, bids)
        status = "cleared" if fills else "no_valid_bid"
        last = fills[-1][0].price if fills else None
        if auction.primary and fills:
            rules = engine.market.auctions
            reference = engine._reference[symbol]
            lowest = min(b.price for b, _ in fills)
            if sum(b.qty for b in bids) < initiator.qty:
                status = "undersubscribed"
            elif reference is not None and lowest * rules.cancel_den < reference * (
                    rules.cancel_den - rules.cancel_num):
                status = "below_market"
        if status != "cleared":
            fills = []
        sold = sum(n for _, n in fills)
        ctr.seq += 1
        out.append(
            AuctionCleared(seq=ctr.seq, auction=initiator.order_id, instrument=symbol,
                           status=status, price=last if fills else None, qty=sold,
                           unsold=initiator.qty - sold, bids=len(bids), filled_bids=len(fills),
                           pricing=auction.pricing, ts=ts, account=initiator.account))
        if auction.primary and sold:
            ledger.issue_for_sale(initiator.order_id, symbol, sold, out)
        left = sold if auction.primary else initiator.qty  # the initiator's open quantity
        for bid, qty in fills:
            price = last if auction.pricing == "uniform" else bid.price
            assert price is not None
            left -= qty
            bid.qty -= qty
            if is_sale:
                buy, sell, buy_leaves, sell_leaves = bid, initiator, bid.qty, left
            else:
                buy, sell, buy_leaves, sell_leaves = initiator, bid, left, bid.qty
            ctr.trade += 1
            ctr.seq += 1
            trade = TradeExecuted(seq=ctr.seq, trade_id=ctr.trade, instrument=symbol, price=price,
                                  qty=qty, buy_order_id=buy.order_id, sell_order_id=sell.order_id,
                                  buy_account=buy.account, sell_account=sell.account,
                                  aggressor="buy" if is_sale else "sell",
                                  buy_leaves_qty=buy_leaves, sell_leaves_qty=sell_leaves,
                                  mode="auction")
            out.append(trade)
            engine._traded_away(symbol, qty, block=False)
            ledger.settle_away(trade, buy.order_id, sell.order_id, out)
        for bid in bids:
            del self.bid_of[bid.order_id]
            if bid.qty:
                engine._end_away(
                    bid, Reason.AUCTION_UNFILLED if status == "cleared" else
                    Reason.AUCTION_CANCELLED, out)
        if left:
            ledger.release(initiator.order_id)  # the unsold part goes back to the initiator
        initiator.qty = initiator.visible = 0
        auction.bids = []

    def clear_all(self, out: list[Event], ts: int | None) -> None:
        """The end of the day: every auction still open clears, in the order opened; then
        the day's auctions are forgotten (their ids with the day's order ids)."""
        for auction in list(self.auctions.values()):
            if auction.open:
                self.clear(auction, out, ts)
        self.auctions.clear()

    def orders(self) -> list[Order]:
        """The holds the open auctions keep: initiators (not a primary's) and bids."""
        found: list[Order] = []
        for auction in self.auctions.values():
            if auction.open:
                if not auction.primary:
                    found.append(auction.initiator)
                found += auction.bids
        return found
