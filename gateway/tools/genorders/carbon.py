"""The carbon profile: ``generate_carbon``, a compliance year of the national carbon
market (covered entities and market makers, CEA vintages and CCER, a heavy last quarter
before the deadline), and the funding rows sized from its own orders."""

from __future__ import annotations

import math
import random
from bisect import bisect
from datetime import date, timedelta

from exchange import EndOfDay, Engine, default_market
from exchange.market import FEE_SCALE

from .flow import _aggress, _Flow
from .mix import _AMEND, _CANCEL, _LIMIT, CARBON_MIX, _mix_table
from .schedule import (_CLOSE, DEADLINE, _day_counts, _day_times, _months_before, deadline_problem,
                       open_ns, trading_days)

CARBON_INSTRUMENTS = ("CEA23", "CEA24", "CEA25", "CCER")
# Starting mids in ticks of 0.01 CNY (older vintages a little dearer, CCER cheaper) and
# relative activity, per spot instrument of the default market.
CARBON_MIDS = {
    "CEA19-20": 7400,
    "CEA21": 7350,
    "CEA22": 7300,
    "CEA23": 7250,
    "CEA24": 7150,
    "CEA25": 7000,
    "CCER": 5200
}
CARBON_ACTIVITY = {"CEA25": 35, "CEA24": 30, "CEA23": 20, "CCER": 15}


def generate_carbon(messages: int, *, seed: int = 1, mix: dict[str, int] | None = None,
                    instruments: tuple[str, ...] = CARBON_INSTRUMENTS, entities: int = 200,
                    market_makers: int = 4, depth_ticks: int = 20, depth_shape: str = "geometric",
                    deadline: date = DEADLINE, last_quarter_share: float = 0.75,
                    fund: bool = False) -> list[tuple]:
    """Return *messages* rows (``CARBON_HEADER`` order) of a compliance year.

    *instruments* are spot instruments of the default market. Per trading day (see
    ``trading_days``) the messages come in time order at random instants of the listing
    hours, 38% of them in a burst over the 30 minutes after 09:30 (most in the first
    15) and 10% over the 20 minutes after 13:00; an ``eod`` row at 15:00 ends the day.
    Messages per day are flat through the year, then rise from 1.5 to 4 times that
    over the last quarter before *deadline*, whose orders are larger too, sized so that
    the quarter carries *last_quarter_share* of the year's traded volume.

    Participants: *entities* covered entities (``ent0001``...; entity k's activity
    falls as 1/(k+4)), trading limits (60% day, 40% gtc) at a geometric or uniform
    depth from the mid, and all marketable, market, ioc, fok and stop orders (in the
    last quarter 54% of them buy); *market_makers* (``mm01``...) quote day orders 1-3 ticks either
    side of the mid (40% of limits, alternating sides) and get half the amends
    (re-quotes to the mid) and 40% of the cancels. Each instrument's mid walks a tick at
    a time, stays within 7% of the last close (the band is 10%) and drifts up 0.1% a
    day in the last quarter. Quantities: mostly 100-2,000 t, some up to 50,000 t, times
    the day's size factor, inside the instrument's [min, max] (listing orders < 100,000 t).

    A cancel or amend with no live order to name becomes a passive limit order.
    O(messages) plus the engine's work: 10-15 s for a million rows. Raises ``ValueError``
    for a *deadline* outside ``FIRST_DEADLINE``..``LAST_DEADLINE`` (see ``deadline_problem``).
    """
    problem = deadline_problem(deadline)
    if problem is not None:
        raise ValueError(f"deadline {deadline}: {problem}")
    mix = CARBON_MIX if mix is None else mix
    rng = random.Random(seed)
    market = default_market()
    engine = Engine(market)
    flow = _Flow(engine, rng, instruments, depth_ticks, depth_shape)
    ents = [f"ent{i:04d}" for i in range(1, entities + 1)]
    mms = [f"mm{i:02d}" for i in range(1, market_makers + 1)]
    accounts = ents + mms
    fund_rows = len(accounts) * (1 + len(instruments)) if fund else 0
    body = messages - min(fund_rows, messages)

    # The calendar: message weight and order size factor per trading day.
    days = trading_days(deadline)
    quarter = _months_before(deadline, 3) + timedelta(days=1)
    late = [day >= quarter for day in days]
    weights, late_days = [], sum(late)
    for i in range(len(days)):
        noise = 0.75 + 0.5 * rng.random()
        if late[i]:
            step = i - (len(days) - late_days)
            ramp = 1.5 + 2.5 * step / max(1, late_days - 1)
            weights.append(ramp * noise)
        else:
            weights.append(noise)
    early_weight = sum(w for w, is_late in zip(weights, late) if not is_late)
    late_weight = sum(w for w, is_late in zip(weights, late) if is_late)
    # Traded volume goes with messages x size: size the quarter's orders to the share.
    # Thin quiet days trade less of what they are sent (day orders expire, so each day
    # opens on a thin book): the quarter's odds run high by about 2.1/sqrt(orders a day).
    if late_weight and early_weight:
        factor = last_quarter_share * early_weight / ((1 - last_quarter_share) * late_weight)
        factor /= 1 + _THIN_BOOK / math.sqrt(max(1.0, body / len(days)))
    else:
        factor = 1.0
    size_pct = [int(factor * 100) if is_late else 100 for is_late in late]
    counts = _day_counts(body, weights)

    cumulative, total = _mix_table(mix)
    instrument_weights = [CARBON_ACTIVITY.get(sym, 10) for sym in instruments]
    inst_cumulative = [sum(instrument_weights[:i + 1]) for i in range(len(instruments))]
    inst_total = inst_cumulative[-1]
    entity_cumulative, running = [], 0.0
    for i in range(entities):
        running += 1.0 / (i + 5)
        entity_cumulative.append(running)
    mids = {sym: CARBON_MIDS.get(sym, 7000) for sym in instruments}
    mm_next_buy = [True] * market_makers
    entity_pool: list[str] = []
    mm_pool: list[str] = []
    stop_pool: list[str] = []
    random_, randrange, randint = rng.random, rng.randrange, rng.randint
    new, qty_of = flow.new, flow.qty

    for i, day in enumerate(days):
        count = counts[i]
        if not count:
            continue
        # 09:30 in Beijing (the default market's schedule): 01:30 UTC (00:30 in summer
        # daylight saving time, 1986-1991).
        day_open = open_ns(day)
        pct = size_pct[i]
        buy_share = 0.54 if late[i] else 0.5
        # Mids: within 7% of the last close, drifting up in the last quarter.
        low, high, step_odds = {}, {}, {}
        for j, sym in enumerate(instruments):
            reference = engine.reference_price(sym)
            mid = mids[sym]
            if late[i]:
                mid += mid // 1000
            if reference is not None:
                low[sym], high[sym] = reference * 93 // 100, reference * 107 // 100
            else:
                low[sym], high[sym] = mid * 93 // 100, mid * 107 // 100
            mids[sym] = min(max(mid, low[sym]), high[sym])
            # About 30 ticks (0.4%) of intraday walk whatever the day's messages.
            expected = count * instrument_weights[j] / inst_total
            step_odds[sym] = min(0.5, 900.0 / expected) if expected else 0.5
        for ts in _day_times(rng, count, day_open):
            kind = bisect(cumulative, random_() * total)
            sym = instruments[bisect(inst_cumulative, random_() * inst_total)]
            if random_() < step_odds[sym]:
                mid = mids[sym] + (1 if random_() < 0.5 else -1)
                mids[sym] = min(max(mid, low[sym]), high[sym])
            if kind == _CANCEL:
                draw = random_()
                pools = ((mm_pool, entity_pool, stop_pool) if draw < 0.4 else
                         (stop_pool, entity_pool, mm_pool) if draw < 0.5 else
                         (entity_pool, mm_pool, stop_pool))
                if any(flow.cancel(pool, ts) for pool in pools if pool):
                    continue
                kind = _LIMIT
            elif kind == _AMEND:
                pools = (mm_pool, entity_pool) if random_() < 0.5 else (entity_pool, mm_pool)
                if _amend(flow, rng, pools, mids, ts, pct):
                    continue
                kind = _LIMIT
            if kind == _LIMIT and mms and random_() < 0.4:
                m = randrange(market_makers)
                is_buy = mm_next_buy[m]
                mm_next_buy[m] = not is_buy
                qty = qty_of(sym, randint(5, 30) * 100 * pct // 100)
                new(sym, mms[m], is_buy, qty, ts, tif="day", pool=mm_pool,
                    price=flow.passive_price(sym, is_buy, mids[sym], randint(1, 3)))
                continue
            account = ents[min(bisect(entity_cumulative, random_() * running), entities - 1)]
            draw = random_()
            base = (randint(1, 20) * 100 if draw < 0.70 else randint(20, 100) *
                    100 if draw < 0.95 else randint(100, 500) * 100)
            qty = qty_of(sym, base * pct // 100)
            if kind == _LIMIT:
                is_buy = random_() < 0.5
                tif = "day" if random_() < 0.6 else "gtc"
            else:
                is_buy = random_() < buy_share
                tif = "gtc"
            _aggress(flow, kind, sym, account, is_buy, qty, ts, mids[sym], entity_pool, stop_pool,
                     tif)
        close = day_open + _CLOSE
        engine.submit(EndOfDay(ts=close), flow.out)
        flow.out.clear()
        flow.rows.append(("eod", "", "", "", "", "", "", "", "", "", str(close)))

    rows = _carbon_funding(flow, market, accounts, instruments) if fund else []
    rows.extend(flow.rows)
    del rows[messages:]
    return rows


# Measured: the last quarter's share of traded volume over seeds 1-5 at 5,000 to
# 1,000,000 rows (odds = share / (1 - share), against the aimed odds).
_THIN_BOOK = 2.1


def _amend(flow: _Flow, rng: random.Random, pools: tuple[list, list], mids: dict, ts,
           pct: int) -> bool:
    """Amend a live order of the first pool (else the second); ``False`` if neither has one.

    A market maker's order is re-quoted 1-3 ticks from the mid (half the time with a
    fresh size); an entity's gets a new size (half), a new price near the mid (a third)
    or both.
    """
    order = flow.pick(pools[0], False) or flow.pick(pools[1], False)
    if order is None:
        return False
    sym = order.instrument
    mid = mids[sym]
    if order.account.startswith("mm"):
        price = flow.passive_price(sym, order.is_buy, mid, rng.randint(1, 3))
        qty = flow.qty(sym, rng.randint(5, 30) * 100 * pct // 100) if rng.random() < 0.5 else None
    else:
        draw = rng.random()
        price = None if draw < 0.5 else flow.passive_price(sym, order.is_buy, mid, flow.offset())
        qty = None if 0.5 <= draw < 0.83 else flow.qty(sym, order.qty * rng.randint(50, 150) // 100)
    flow.amend(order, ts, price, qty)
    return True


def _carbon_funding(flow: _Flow, market, accounts: list[str],
                    instruments: tuple[str, ...]) -> list[tuple]:
    """Return a deposit and an issue row per instrument for each account: what its
    orders could need at most (see the package docstring), rounded up, plus a float of
    10 M CNY and 10,000 units (100 M CNY and 100,000 units for market makers)."""
    fee = max(max(market[s].maker_fee, market[s].taker_fee) for s in instruments)
    rows = []
    for account in accounts:
        maker = account.startswith("mm")
        notional = flow.notional.get(account, 0)
        cash = notional + notional * fee // FEE_SCALE + 1  # fen; fees rounded up
        cash = -(-cash // 100_000_000) * 1_000_000 + (100_000_000 if maker else 10_000_000)
        rows.append(("deposit", "", account, "CNY", "", "", "", "", f"{cash}.00", "", ""))
        for sym in instruments:
            units = -(-flow.units.get((account, sym), 0) // 1000) * 1000
            units += 100_000 if maker else 10_000
            rows.append(("issue", "", account, sym, "", "", "", "", str(units), "", ""))
    return rows
