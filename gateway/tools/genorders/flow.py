"""The message maker shared by ``generate_kinds`` and ``generate_carbon``: ``_Flow``
decides each message from the engine's current state and submits it, so cancels and
amends name live orders, prices stay on the tick and inside the band, and quantities
inside the instrument's limits; ``_aggress`` places one new order of a kind."""

from __future__ import annotations

import random
from bisect import bisect

from exchange import AmendOrder, CancelOrder, Engine, PlaceOrder

from .mix import _IOC, _LIMIT, _MARKET, _MARKETABLE, _STOP

# The deepest a passive order may go from the mid (--depth-ticks), in ticks: 30.00, about
# half of the lowest starting mid (the mixed profile's 60.00, CCER's 52.00), so that even
# the deepest buy keeps a positive price with room for the mid's walk. Deeper, buys could
# be priced at zero or below: the mixed profile's mid would stop walking down to keep them
# positive, the others would pile them up at 0.01 or at the price band's edge.
MAX_DEPTH_TICKS = 3000


class _Flow:
    """The message maker behind ``generate_kinds`` and ``generate_carbon``.

    Each method decides one message from the engine's current state, submits it to the
    engine and appends its row (``CARBON_HEADER`` order; callers drop columns they do
    not write). Pools hold ids of orders that were live when placed; a pick checks the
    engine and drops the dead ones it meets (swap-remove: amortised O(1) a message).
    It also adds up what each account could need (``notional`` fen without fees,
    ``units`` per instrument), for the carbon profile's funding rows.
    """

    def __init__(self, engine: Engine, rng: random.Random, instruments, depth_ticks: int,
                 depth_shape: str) -> None:
        self.engine = engine
        self.rng = rng
        self.rows: list[tuple] = []
        self.out: list = []
        self.serial = 0
        self.insts = {sym: engine.market[sym] for sym in instruments}
        self.books = {sym: engine.book(sym) for sym in instruments}
        self.texts: dict[str, dict[int, str]] = {sym: {} for sym in instruments}
        self.top_ask = dict.fromkeys(instruments, 0)  # highest sell price ever placed
        self.notional: dict[str, int] = {}
        self.units: dict[tuple[str, str], int] = {}
        self.depth = depth_ticks
        self.geometric = None
        if depth_shape == "geometric":
            # Each tick further out is (1 - 3/N) times as likely as the one before it.
            ratio = min(0.99, max(0.3, 1.0 - 3.0 / depth_ticks))
            weight, total, cumulative = 1.0, 0.0, []
            for _ in range(depth_ticks):
                total += weight
                cumulative.append(total)
                weight *= ratio
            self.geometric = (cumulative, total)

    # --- helpers -------------------------------------------------------------------------
    def offset(self) -> int:
        """Return how many ticks from the mid a passive order goes (1..depth)."""
        if self.geometric is None:
            return self.rng.randint(1, self.depth)
        cumulative, total = self.geometric
        return min(bisect(cumulative, self.rng.random() * total), self.depth - 1) + 1

    def clamp(self, sym: str, ticks: int) -> int:
        """Return *ticks* moved inside the instrument's price band (and above zero)."""
        band = self.engine.price_band(sym)
        if band is not None:
            low, high = band
            return low if ticks < low else high if ticks > high else ticks
        return ticks if ticks > 0 else 1

    def qty(self, sym: str, qty: int) -> int:
        """Return *qty* moved onto the instrument's step and inside [min, max]."""
        inst = self.insts[sym]
        qty -= qty % inst.qty_step
        return inst.min_qty if qty < inst.min_qty else inst.max_qty if qty > inst.max_qty else qty

    def text(self, sym: str, ticks: int) -> str:
        texts = self.texts[sym]
        found = texts.get(ticks)
        if found is None:
            found = texts[ticks] = self.insts[sym].tick.format(ticks)
        return found

    def passive_price(self, sym: str, is_buy: bool, mid: int, offset: int) -> int:
        """Return a price *offset* ticks from *mid* that does not cross the book."""
        book = self.books[sym]
        if is_buy:
            price = mid - offset
            ask = book.best_ask()
            if ask is not None and price >= ask:
                price = ask - 1
        else:
            price = mid + offset
            bid = book.best_bid()
            if bid is not None and price <= bid:
                price = bid + 1
        return self.clamp(sym, price)

    def through_price(self, sym: str, is_buy: bool, mid: int) -> int:
        """Return a price 0-3 ticks through the opposite touch (or the mid)."""
        book = self.books[sym]
        touch = book.best_ask() if is_buy else book.best_bid()
        if touch is None:
            touch = mid
        extra = self.rng.randint(0, 3)
        return self.clamp(sym, touch + extra if is_buy else touch - extra)

    def _need(self, account: str, sym: str, is_buy: bool, price: int, qty: int) -> None:
        if is_buy:
            self.notional[account] = (self.notional.get(account, 0) +
                                      price * qty * self.insts[sym].tick_value)
        else:
            key = (account, sym)
            self.units[key] = self.units.get(key, 0) + qty
            if price > self.top_ask[sym]:
                self.top_ask[sym] = price

    # --- messages --------------------------------------------------------------------------
    def new(self, sym: str, account: str, is_buy: bool, qty: int, ts, *, kind: str = "limit",
            tif: str = "gtc", price: int | None = None, stop: int | None = None,
            pool: list | None = None) -> None:
        """Place a new order; add its id to *pool* if it is live afterwards."""
        self.serial += 1
        order_id = f"o{self.serial}"
        side = "buy" if is_buy else "sell"
        price_text = None if price is None else self.text(sym, price)
        stop_text = None if stop is None else self.text(sym, stop)
        if price is not None:
            self._need(account, sym, is_buy, price, qty)
        elif is_buy:  # market or stop: held at the band's top, or what the asks cost
            band = self.engine.price_band(sym)
            self._need(account, sym, True, band[1] if band else self.top_ask[sym], qty)
        else:
            self._need(account, sym, False, 0, qty)
        if stop_text is None:
            command = PlaceOrder(order_id=order_id, account=account, instrument=sym, side=side,
                                 type=kind, tif=tif, price=price_text, qty=qty, ts=ts)
        else:
            command = PlaceOrder(order_id=order_id, account=account, instrument=sym, side=side,
                                 type=kind, tif=tif, price=price_text, qty=qty,
                                 stop_price=stop_text, ts=ts)
        out = self.out
        self.engine.submit(command, out)
        out.clear()
        if pool is not None and self.engine.order(order_id) is not None:
            pool.append(order_id)
        self.rows.append(("new", order_id, account, sym, side, "limit" if kind == "limit" else kind,
                          "" if tif == "gtc" else tif, price_text or "", str(qty), stop_text
                          or "", "" if ts is None else str(ts)))

    def pick(self, pool: list, remove: bool):
        """Return a live order of *pool* (removed from it if *remove*), or ``None``."""
        rng, live = self.rng, self.engine.order
        while pool:
            index = rng.randrange(len(pool))
            pool[index], pool[-1] = pool[-1], pool[index]
            order = live(pool[-1])
            if order is None or remove:
                pool.pop()
            if order is not None:
                return order
        return None

    def cancel(self, pool: list, ts) -> bool:
        """Cancel a live order of *pool*; return ``False`` if it has none."""
        order = self.pick(pool, True)
        if order is None:
            return False
        self.engine.submit(CancelOrder(order_id=order.order_id, account=order.account, ts=ts),
                           self.out)
        self.out.clear()
        self.rows.append(("cancel", order.order_id, order.account, "", "", "", "", "", "", "",
                          "" if ts is None else str(ts)))
        return True

    def amend(self, order, ts, price: int | None, qty: int | None) -> None:
        """Amend live *order* to *price* and/or *qty* (``None`` = unchanged)."""
        sym = order.instrument
        price_text = None if price is None else self.text(sym, price)
        self._need(order.account, sym, order.is_buy, order.price if price is None else price,
                   order.qty if qty is None else qty)
        self.engine.submit(
            AmendOrder(order_id=order.order_id, account=order.account, price=price_text, qty=qty,
                       ts=ts), self.out)
        self.out.clear()
        self.rows.append(
            ("amend", order.order_id, order.account, "", "", "", "", price_text
             or "", "" if qty is None else str(qty), "", "" if ts is None else str(ts)))

    def stop(self, sym: str, account: str, is_buy: bool, qty: int, ts, mid: int,
             pool: list) -> None:
        """Place a day stop (market) or stop-limit, its stop 5-40 ticks beyond the last.

        A plain stop only where the instrument has a band: a ledger sizes a market
        stop's hold by the band (it refuses one without).
        """
        rng = self.rng
        last = self.books[sym].last_price or mid
        distance = rng.randint(5, 40)
        stop = self.clamp(sym, last + distance if is_buy else last - distance)
        if self.engine.price_band(sym) is not None and rng.random() < 0.5:
            self.new(sym, account, is_buy, qty, ts, kind="stop", tif="day", stop=stop, pool=pool)
            return
        slack = rng.randint(0, 5)
        price = self.clamp(sym, stop + slack if is_buy else stop - slack)
        self.new(sym, account, is_buy, qty, ts, kind="stop_limit", tif="day", price=price,
                 stop=stop, pool=pool)


def _aggress(flow: _Flow, kind: int, symbol: str, account: str, is_buy: bool, qty: int, ts,
             mid: int, pool: list, stops: list, tif: str) -> None:
    """Place one new order of *kind* (any kind but cancel and amend)."""
    if kind == _LIMIT:
        flow.new(symbol, account, is_buy, qty, ts, tif=tif, pool=pool,
                 price=flow.passive_price(symbol, is_buy, mid, flow.offset()))
    elif kind == _MARKETABLE:
        flow.new(symbol, account, is_buy, qty, ts, tif=tif, pool=pool,
                 price=flow.through_price(symbol, is_buy, mid))
    elif kind == _MARKET:
        flow.new(symbol, account, is_buy, qty, ts, kind="market")
    elif kind == _STOP:
        flow.stop(symbol, account, is_buy, qty, ts, mid, stops)
    else:
        flow.new(symbol, account, is_buy, qty, ts, tif="ioc" if kind == _IOC else "fok",
                 price=flow.through_price(symbol, is_buy, mid))
