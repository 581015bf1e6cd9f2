"""Block agreement trading: large spot trades agreed away from the order book.

A block is posted by one account (``block``: instrument, side, price, quantity and the
named counterparty, or none for a public block quote) and accepted whole by another
(``block_accept``). The national market's rules are the defaults (``[blocks]`` in the
market file): spot instruments only, at least 100,000 t, a price within 30% of the
reference price (no band without one), inside the block session.

- Posting holds the poster's cash (price x quantity plus the larger fee) or allowances,
  as a limit order would; accepting checks the acceptor's the same way, and a shortfall
  is a rejection: nothing trades.
- The whole quantity trades at the block's price, or nothing does. It settles
  delivery-versus-payment like a listing trade (fees, T+1), the acceptor paying the
  taker fee and the poster the maker fee.
- It never touches the order book, the listing close or the listing band; the day's
  statistics count it as ``block_volume``.
- The poster withdraws it with ``cancel``; an unaccepted block expires at ``eod``.
- A block's id is an order id: unique for the day among the market's order ids.

Events: ``BlockPosted`` (the result of ``block``); ``BlockAccepted``, then a
``TradeExecuted`` with ``mode`` ``block`` and its ``TradeSettled`` (``block_accept``);
``OrderCancelled`` or ``OrderExpired`` when a block ends unaccepted.
"""

from __future__ import annotations

from typing import Any, Protocol

from exchange.book.fast import DAY, LIMIT, STP_NONE, Counters, Order, OrderIds
from exchange.commands import AcceptBlock, PostBlock
from exchange.events import BlockAccepted, BlockPosted, Event, TradeExecuted
from exchange.ledger import Ledger, NoLedger
from exchange.market import Instrument, Market
from exchange.reasons import Reason

__all__ = ["Blocks", "ModeHost", "in_band", "spot_for", "size_reason"]


class ModeHost(Protocol):
    """What the trading modes away from the book use of the engine that holds them (its
    pipeline's parts: rejections, prices, sessions, ids, the ledger and the counters)."""

    market: Market
    accepted: int
    _specs: dict[str, Any]  # symbol -> the engine's per-instrument data (``inst``, ``halted``)
    _ids: OrderIds
    _reference: dict[str, int | None]
    _ledger: Ledger | NoLedger
    _ctr: Counters

    def _reject(self, action: str, reason: str, out: list[Event], order_id: str | None = None,
                account: str | None = None, instrument: str | None = None,
                ts: int | None = None) -> None:
        ...

    @staticmethod
    def _ticks(inst: Instrument, text: str) -> int | Reason:
        ...

    def _session_reason(self, mode: str, ts: int | None, symbol: str) -> str | None:
        ...

    def _traded_away(self, symbol: str, qty: int, block: bool) -> None:
        ...

    def _end_away(self, order: Order, reason: str | None, out: list[Event]) -> None:
        ...


def in_band(price: int, reference: int | None, num: int, den: int) -> bool:
    """Is *price* within *num*/*den* of *reference* (the edges included; no reference:
    no band)?

    >>> in_band(7800, 6000, 3, 10), in_band(7801, 6000, 3, 10), in_band(1, None, 3, 10)
    (True, False, True)
    """
    if reference is None:
        return True
    return reference * (den - num) <= price * den <= reference * (den + num)


def spot_for(engine: ModeHost, mode: str, symbol: str, ts: int | None) -> Instrument | str:
    """The spot instrument *symbol* that a command of trading *mode* at *ts* may act on, or
    why not: unknown, not spot, outside the mode's session, or halted."""
    spec = engine._specs.get(symbol)
    if spec is None:
        return Reason.UNKNOWN_INSTRUMENT
    if spec.inst.kind != "spot":
        return Reason.NOT_SPOT
    inst: Instrument = spec.inst
    return engine._session_reason(mode, ts, symbol) or inst


def size_reason(inst: Instrument, qty: int, minimum: int, below: str) -> str | None:
    """Why *qty* of *inst* is no size for a block, an auction or a bid (at least *minimum*,
    else the reason *below*), or ``None``. No listing maximum: these are the large trades."""
    if qty <= 0 or qty >= 1 << 62:
        return Reason.INVALID_QUANTITY
    if qty % inst.qty_step:
        return Reason.OFF_STEP
    return below if qty < minimum else None


class Blocks:
    """The open blocks of one engine, by id; each an ``Order`` that never rests in a book
    (its hold is the ledger's like any order's) and its named counterparty."""

    def __init__(self, engine: ModeHost) -> None:
        self._engine = engine
        self.open: dict[str, tuple[Order, str | None]] = {}

    def post(self, cmd: PostBlock, out: list[Event]) -> None:
        engine = self._engine
        rules = engine.market.blocks

        def reject(reason: str) -> None:
            engine._reject("block", reason, out, cmd.order_id, cmd.account, cmd.instrument, cmd.ts)

        inst = spot_for(engine, "block", cmd.instrument, cmd.ts)
        if isinstance(inst, str):
            return reject(inst)
        if not cmd.order_id or not cmd.account:
            return reject(Reason.MISSING_FIELD)
        if cmd.to_account == cmd.account:
            return reject(Reason.OWN_BLOCK)
        if cmd.to_account is not None and cmd.to_account.startswith("@"):
            return reject(Reason.RESERVED_ACCOUNT)  # no system account accepts blocks
        if cmd.order_id in engine._ids:
            return reject(Reason.DUPLICATE_ORDER_ID)
        price = engine._ticks(inst, cmd.price)
        if not isinstance(price, int):
            return reject(price)
        if not in_band(price, engine._reference[cmd.instrument], rules.band_num, rules.band_den):
            return reject(Reason.OUTSIDE_BLOCK_BAND)
        qty = cmd.qty
        reason = size_reason(inst, qty, rules.min_qty, Reason.BELOW_BLOCK_MINIMUM)
        if reason is not None:
            return reject(reason)
        is_buy = cmd.side == "buy"
        held = engine._ledger.reserve(cmd.order_id, cmd.account, cmd.instrument, is_buy, price, qty)
        if held is not None:
            return reject(held)  # type: ignore[arg-type]  # a limit hold gives a reason or None
        engine.accepted += 1
        ctr = engine._ctr
        ctr.seq += 1
        out.append(
            BlockPosted(seq=ctr.seq, order_id=cmd.order_id, account=cmd.account,
                        instrument=cmd.instrument, side=cmd.side, price=price, qty=qty,
                        to_account=cmd.to_account, ts=cmd.ts))
        order = Order(cmd.order_id, cmd.account, cmd.instrument, is_buy, price, qty, qty, 0, LIMIT,
                      DAY, STP_NONE, False, 0, 0, ctr.seq)
        engine._ids.retire(cmd.order_id)  # the id is used for the day
        self.open[cmd.order_id] = (order, cmd.to_account)
        return None

    def accept(self, cmd: AcceptBlock, out: list[Event]) -> bool | None:
        """Accept a block; True once it traded (its trade is settled here)."""
        engine = self._engine

        def reject(reason: str) -> bool | None:
            engine._reject("block_accept", reason, out, cmd.order_id, cmd.account,
                           cmd.instrument, cmd.ts)
            return None

        found = self.open.get(cmd.order_id)
        if (found is None or found[0].account != cmd.to_account
                or (cmd.instrument and cmd.instrument != found[0].instrument)):
            return reject(Reason.UNKNOWN_BLOCK)
        block, named = found
        reason = engine._session_reason("block", cmd.ts, block.instrument)
        if reason is not None:
            return reject(reason)
        if not cmd.account:
            return reject(Reason.MISSING_FIELD)
        if cmd.account == block.account:
            return reject(Reason.OWN_BLOCK)
        if named is not None and named != cmd.account:
            return reject(Reason.NOT_COUNTERPARTY)
        ledger = engine._ledger
        key = ("block_accept", block.order_id)  # the acceptor's hold, for this command only
        held = ledger.reserve(key, cmd.account, block.instrument, not block.is_buy, block.price,
                              block.qty)
        if held is not None:
            return reject(held)  # type: ignore[arg-type]  # a limit hold: a reason or None
        del self.open[block.order_id]
        engine.accepted += 1
        ctr = engine._ctr
        ctr.seq += 1
        side = "sell" if block.is_buy else "buy"
        out.append(
            BlockAccepted(seq=ctr.seq, order_id=block.order_id, account=cmd.account,
                          to_account=block.account, instrument=block.instrument, side=side,
                          price=block.price, qty=block.qty, ts=cmd.ts))
        buyer, seller = (block.account, cmd.account) if block.is_buy else (cmd.account,
                                                                           block.account)
        ctr.trade += 1
        ctr.seq += 1
        trade = TradeExecuted(seq=ctr.seq, trade_id=ctr.trade, instrument=block.instrument,
                              price=block.price, qty=block.qty, buy_order_id=block.order_id,
                              sell_order_id=block.order_id, buy_account=buyer,
                              sell_account=seller, aggressor=side, buy_leaves_qty=0,
                              sell_leaves_qty=0, mode="block")
        out.append(trade)
        engine._traded_away(block.instrument, block.qty, block=True)
        buy_key, sell_key = (block.order_id, key) if block.is_buy else (key, block.order_id)
        ledger.settle_away(trade, buy_key, sell_key, out)
        block.qty = block.visible = 0
        return True

    def find(self, order_id: str) -> Order | None:
        """The open block *order_id*, or ``None``."""
        found = self.open.get(order_id)
        return None if found is None else found[0]

    def cancel(self, order_id: str, account: str, out: list[Event],
               reason: str = Reason.CANCELLED_BY_OWNER) -> bool:
        """Withdraw the open block *order_id* of *account*; False if there is none."""
        found = self.open.get(order_id)
        if found is None or found[0].account != account:
            return False
        del self.open[order_id]
        self._engine._end_away(found[0], reason, out)
        return True

    def expire(self, out: list[Event]) -> None:
        """The end of the day: every open block expires, in the order they were posted."""
        for order, _ in list(self.open.values()):
            self._engine._end_away(order, None, out)
        self.open.clear()

    def orders(self) -> list[Order]:
        return [order for order, _ in self.open.values()]
