"""The mixed profile: ``generate_mixed`` (the original generator, its output frozen) and
``generate_kinds`` (the same market with the message kinds in the shares of ``--mix``)."""

from __future__ import annotations

import random
from bisect import bisect

from exchange import CancelOrder, Engine, PlaceOrder, default_market

from .flow import _aggress, _Flow
from .mix import _AMEND, _CANCEL, _LIMIT, _mix_table
from .rows import read_row

FUND_CASH = "1000000000.00"  # a billion CNY an account: more than any generated file buys
FUND_UNITS = "10000000"  # ten million units of each instrument an account


def generate_mixed(messages: int, *, seed: int = 1, instruments: tuple[str, ...] = ("CEA25", ),
                   accounts: int = 50, mid_ticks: int = 6000, depth_ticks: int = 20,
                   cancel_share: float = 0.20, marketable_share: float = 0.10,
                   fund: bool = False) -> list[tuple]:
    """Return *messages* rows (tuples in ``HEADER`` order) of the mixed profile.

    Prices are in ticks of 0.01 around ``mid_ticks``; the mid walks one tick at a time,
    but not so low that a price could be zero or less (a replay rejects one): a mid
    that low is never reached from 60.00 in any file of a practical size, so the walk
    and the files are as they always were. With *fund*, the first rows fund every
    account (they count among *messages*). Raises ``ValueError`` unless *depth_ticks* is
    from 1 to *mid_ticks* - 1 and *mid_ticks* at least 4 (else the first orders could be
    priced at zero or below).
    """
    # The lowest price is a passive buy depth_ticks below the mid, or a marketable sell 3.
    lowest_mid = max(depth_ticks, 3) + 1
    if depth_ticks < 1 or mid_ticks < lowest_mid:
        raise ValueError(f"depth_ticks {depth_ticks} with mid_ticks {mid_ticks} could price an "
                         f"order at zero or below: depth_ticks must be from 1 to mid_ticks - 1, "
                         f"and mid_ticks at least 4")
    rng = random.Random(seed)
    # Funded accounts hold more than a position limit allows: the book is followed
    # without limits, as ``replay --no-position-limits`` replays the file.
    engine = Engine(default_market().without_limits(), ledger=fund)
    mids = {sym: mid_ticks for sym in instruments}
    live: list[tuple[str, str]] = []  # (order_id, account), possibly stale; checked below
    rows: list[tuple] = []
    names = [f"acc{i:03d}" for i in range(accounts)]
    if fund:
        for name in names:
            rows.append(("deposit", "", name, "CNY", "", "", "", "", FUND_CASH))
            rows.extend(
                ("issue", "", name, symbol, "", "", "", "", FUND_UNITS) for symbol in instruments)
        del rows[messages:]
        for row in rows:
            engine.submit(read_row(row), [])
    serial = 0
    while len(rows) < messages:
        draw = rng.random()
        if draw < cancel_share and live:
            # Cancel a live order: swap-remove a random candidate until one is live.
            while live:
                index = rng.randrange(len(live))
                live[index], live[-1] = live[-1], live[index]
                order_id, account = live.pop()
                if engine.order(order_id) is not None:
                    break
            else:
                continue
            engine.submit(CancelOrder(order_id=order_id, account=account), [])
            rows.append(("cancel", order_id, account, "", "", "", "", "", ""))
            continue
        symbol = instruments[rng.randrange(len(instruments))]
        if rng.random() < 0.05:
            mids[symbol] = max(mids[symbol] + rng.choice((-1, 1)), lowest_mid)
        mid = mids[symbol]
        is_buy = rng.random() < 0.5
        serial += 1
        order_id = f"o{serial}"
        account = names[rng.randrange(accounts)]
        qty = rng.randint(1, 500)
        tif = ""
        if draw < cancel_share + marketable_share:
            offset = -rng.randint(0, 3)  # through the touch
            if rng.random() < 0.3:
                tif = "ioc"
        else:
            offset = rng.randint(1, depth_ticks)
        ticks = mid - offset if is_buy else mid + offset
        price = f"{ticks // 100}.{ticks % 100:02d}"
        side = "buy" if is_buy else "sell"
        engine.submit(
            PlaceOrder(order_id=order_id, account=account, instrument=symbol, side=side,
                       price=price, qty=qty, tif=tif or "gtc"), [])
        if engine.order(order_id) is not None:
            live.append((order_id, account))
        rows.append(("new", order_id, account, symbol, side, "limit", tif, price, str(qty)))
    return rows


def generate_kinds(messages: int, *, mix: dict[str, int], seed: int = 1,
                   instruments: tuple[str, ...] = ("CEA25", ), accounts: int = 50,
                   mid_ticks: int = 6000, depth_ticks: int = 20, depth_shape: str = "uniform",
                   fund: bool = False) -> list[tuple]:
    """Return *messages* rows (``KINDS_HEADER`` order) of the mixed profile's market
    with the message kinds in the shares of *mix* (see ``KINDS``).

    The market is generate_mixed's: accounts ``acc000``..., every instrument's mid
    starting at *mid_ticks* and walking a tick at a time, quantities 1-500, no
    timestamps and no ``eod`` (so no price band: stops are stop-limits). A tenth of the
    cancels go to pending stops. A cancel or amend with no live order to name becomes a
    passive limit order. With *fund*, the first rows fund every account as
    generate_mixed does. O(messages).
    """
    rng = random.Random(seed)
    # Funded accounts hold more than a position limit allows: the book is followed
    # without limits, as ``replay --no-position-limits`` replays the file.
    engine = Engine(default_market().without_limits(), ledger=fund)
    flow = _Flow(engine, rng, instruments, depth_ticks, depth_shape)
    rows = flow.rows
    names = [f"acc{i:03d}" for i in range(accounts)]
    if fund:
        for name in names:
            rows.append(("deposit", "", name, "CNY", "", "", "", "", FUND_CASH, "", ""))
            rows.extend(("issue", "", name, symbol, "", "", "", "", FUND_UNITS, "", "")
                        for symbol in instruments)
        del rows[messages:]
        for row in rows:
            engine.submit(read_row(row[:9]), [])
    cumulative, total = _mix_table(mix)
    mids = dict.fromkeys(instruments, mid_ticks)
    resting: list[str] = []
    stops: list[str] = []
    random_, randrange = rng.random, rng.randrange
    while len(rows) < messages:
        kind = bisect(cumulative, random_() * total)
        if kind == _CANCEL:
            pools = (resting, stops) if random_() < 0.9 else (stops, resting)
            if any(flow.cancel(pool, None) for pool in pools if pool):
                continue
            kind = _LIMIT
        symbol = instruments[randrange(len(instruments))]
        if random_() < 0.05:
            mids[symbol] += 1 if random_() < 0.5 else -1
        mid = mids[symbol]
        if kind == _AMEND:
            order = flow.pick(resting, False)
            if order is not None:
                if random_() < 0.5:
                    qty = flow.qty(order.instrument, rng.randint(1, 500))
                    flow.amend(order, None, None, qty)
                else:
                    price = flow.passive_price(order.instrument, order.is_buy,
                                               mids[order.instrument], flow.offset())
                    flow.amend(order, None, price, None)
                continue
            kind = _LIMIT
        is_buy = random_() < 0.5
        account = names[randrange(accounts)]
        qty = flow.qty(symbol, rng.randint(1, 500))
        _aggress(flow, kind, symbol, account, is_buy, qty, None, mid, resting, stops, "gtc")
    return [row[:10] for row in rows]
