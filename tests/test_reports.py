"""Execution reports as structs (gateway.mqtt.wire): every report a bot receives keeps
the keys and values the dict-building ReportMaker gave it (kept here as the naive
reference), in JSON and msgpack, and decodes back through the tagged union."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markets import futures_market, open_market
from test_scenarios import load_scenario

from exchange import Engine
from exchange.commands import CancelOrder, Deposit, IssueAllowances
from exchange.events import (AccountStatusChanged, AllowancesAllocated, AllowancesClawedBack,
                             AllowancesConverted, AllowancesIssued, AllowancesPledged,
                             AllowancesTransferred, CashDeposited, CashWithdrawn,
                             HoldingsUnlocked, PledgeEnforced, PledgeReleased)
from exchange.events import (AllowancesSurrendered, AuctionBidAccepted, AuctionCleared,
                             AuctionOpened, BlockAccepted, BlockPosted, QuotingAssessed,
                             CommandRejected, DefaultRecorded,
                             DeliveryFailed, DeliverySettled, MarginCalled, MarginCallMet,
                             MassCancelAccepted, OptionExercised, OrderAccepted, OrderAmended,
                             OrderCancelled, OrderExpired, OrderTriggered, PositionClosedOut,
                             TradeCleared, TradeExecuted, TradeSettled, TradingDayEnded,
                             VariationMargin)
from exchange.market import format_cash, parse_market
from gateway.mqtt import wire
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.mqtt.wire import AnyReport, Report, ReportMaker

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


# --- the naive reference: the dict-building ReportMaker the structs replaced ----------------
def _client_id(order_id):
    if order_id is None:
        return None
    return order_id.partition("/")[2] or order_id


_CLEARING_REPORTS = {
    VariationMargin: "variation_margin",
    MarginCalled: "margin_call",
    MarginCallMet: "margin_call_met",
    PositionClosedOut: "closed_out",
    DefaultRecorded: "default",
    DeliverySettled: "delivery",
    DeliveryFailed: "delivery_failed",
    OptionExercised: "exercised"
}
_CLEARING_PRICES = frozenset({"price", "strike"})
_CLEARING_CASH = frozenset({"amount", "equity", "maintenance", "initial", "cash", "penalty"})


class NaiveReportMaker:
    """Each report a dict, built field by field (the clearing ones from the event's own
    fields): what bots received before reports became structs."""

    def __init__(self, market) -> None:
        self._ticks = {symbol: inst.tick for symbol, inst in market.instruments.items()}
        self._currency = {symbol: inst.currency for symbol, inst in market.instruments.items()}

    def price(self, instrument, ticks):
        return None if ticks is None else self._ticks[instrument].format(ticks)

    def reports(self, event, reports: list) -> None:
        kind = type(event)
        if kind is TradeExecuted:
            price = self.price(event.instrument, event.price)
            buyer_took = event.aggressor == "buy"
            for account, order_id, side, leaves, liquidity in (
                (event.buy_account, event.buy_order_id, "buy", event.buy_leaves_qty,
                 "taker" if buyer_took else "maker"),
                (event.sell_account, event.sell_order_id, "sell", event.sell_leaves_qty,
                 "maker" if buyer_took else "taker")):
                fill = {
                    "report": "fill", "seq": event.seq, "trade_id": event.trade_id,
                    "instrument": event.instrument, "price": price, "qty": event.qty,
                    "order_id": _client_id(order_id), "side": side, "leaves_qty": leaves,
                    "liquidity": liquidity
                }
                if event.mode != "listing":
                    fill["mode"] = event.mode
                reports.append((account, fill))
        elif kind is OrderAccepted:
            reports.append((event.account, {
                "report": "accepted", "seq": event.seq, "order_id": _client_id(event.order_id),
                "instrument": event.instrument, "side": event.side, "type": event.type,
                "tif": event.tif, "price": self.price(event.instrument, event.price),
                "qty": event.qty
            }))
        elif kind is OrderCancelled:
            reports.append((event.account, {
                "report": "cancelled", "seq": event.seq, "order_id": _client_id(event.order_id),
                "instrument": event.instrument, "side": event.side,
                "cancelled_qty": event.cancelled_qty, "reason": event.reason
            }))
        elif kind is CommandRejected:
            if event.account:
                report = {
                    "report": "rejected", "seq": event.seq, "action": event.action,
                    "reason": event.reason
                }
                if event.order_id is not None:
                    report["order_id"] = _client_id(event.order_id)
                reports.append((event.account, report))
        elif kind is OrderAmended:
            reports.append((event.account, {
                "report": "amended", "seq": event.seq, "order_id": _client_id(event.order_id),
                "instrument": event.instrument, "side": event.side,
                "price": self.price(event.instrument, event.price), "qty": event.qty,
                "priority_kept": event.priority_kept
            }))
        elif kind is OrderExpired:
            reports.append((event.account, {
                "report": "expired", "seq": event.seq, "order_id": _client_id(event.order_id),
                "instrument": event.instrument, "side": event.side,
                "expired_qty": event.expired_qty
            }))
        elif kind is OrderTriggered:
            reports.append((event.account, {
                "report": "triggered", "seq": event.seq, "order_id": _client_id(event.order_id),
                "instrument": event.instrument, "side": event.side,
                "stop_price": self.price(event.instrument, event.stop_price),
                "last_price": self.price(event.instrument, event.last_price)
            }))
        elif kind is TradeSettled:
            base = {
                "report": "settled", "seq": event.seq, "trade_id": event.trade_id,
                "instrument": event.instrument, "qty": event.qty,
                "cash": format_cash(event.currency, event.cash), "currency": event.currency
            }
            reports.append((event.buy_account, {
                **base, "side": "buy", "fee": format_cash(event.currency, event.buy_fee)
            }))
            reports.append((event.sell_account, {
                **base, "side": "sell", "fee": format_cash(event.currency, event.sell_fee)
            }))
        elif kind is TradeCleared:
            currency = self._currency[event.instrument]
            base = {
                "report": "cleared", "seq": event.seq, "trade_id": event.trade_id,
                "instrument": event.instrument, "qty": event.qty,
                "price": self.price(event.instrument, event.price)
            }
            reports.append((event.buy_account, {
                **base, "side": "buy", "position": event.buy_position,
                "fee": format_cash(currency, event.buy_fee), "currency": currency
            }))
            reports.append((event.sell_account, {
                **base, "side": "sell", "position": event.sell_position,
                "fee": format_cash(currency, event.sell_fee), "currency": currency
            }))
        elif kind is MassCancelAccepted:
            reports.append((event.account, {
                "report": "mass_cancel_accepted", "seq": event.seq,
                "instrument": event.instrument, "side": event.side, "count": event.count
            }))
        elif kind in _CLEARING_REPORTS:
            report = {"report": _CLEARING_REPORTS[kind], "seq": event.seq}
            for name in event.__struct_fields__:
                if name in ("seq", "account"):
                    continue
                value = getattr(event, name)
                if name in _CLEARING_PRICES and value is not None:
                    value = self.price(event.underlying if name == "strike" else event.instrument,
                                       value)
                elif name in _CLEARING_CASH:
                    currency = (getattr(event, "currency", None)
                                or self._currency[event.instrument])
                    value = format_cash(currency, value)
                report[name] = value
            reports.append((event.account, report))
        elif kind is BlockPosted:
            for account in (event.account, event.to_account):
                if account:
                    reports.append((account, {
                        "report": "block", "seq": event.seq,
                        "order_id": _client_id(event.order_id), "account": event.account,
                        "instrument": event.instrument, "side": event.side,
                        "price": self.price(event.instrument, event.price), "qty": event.qty,
                        "to_account": event.to_account
                    }))
        elif kind is BlockAccepted:
            reports.append((event.account, {
                "report": "block_accepted", "seq": event.seq,
                "order_id": _client_id(event.order_id), "to_account": event.to_account,
                "instrument": event.instrument, "side": event.side,
                "price": self.price(event.instrument, event.price), "qty": event.qty
            }))
        elif kind is AuctionOpened and not event.account.startswith("@"):
            reports.append((event.account, {
                "report": "auction", "seq": event.seq, "auction": event.auction,
                "instrument": event.instrument, "side": event.side, "qty": event.qty,
                "reserve": self.price(event.instrument, event.reserve),
                "pricing": event.pricing, "primary": event.primary
            }))
        elif kind is AuctionBidAccepted:
            reports.append((event.account, {
                "report": "bid_accepted", "seq": event.seq, "auction": event.auction,
                "order_id": _client_id(event.order_id), "instrument": event.instrument,
                "side": event.side, "price": self.price(event.instrument, event.price),
                "qty": event.qty
            }))
        elif kind is AuctionCleared and event.account and not event.account.startswith("@"):
            reports.append((event.account, {
                "report": "auction_cleared", "seq": event.seq, "auction": event.auction,
                "instrument": event.instrument, "status": event.status,
                "price": self.price(event.instrument, event.price), "qty": event.qty,
                "unsold": event.unsold, "bids": event.bids, "filled_bids": event.filled_bids
            }))
        elif kind is QuotingAssessed:
            reports.append((event.account, {
                "report": "quoting", "seq": event.seq, "account": event.account,
                "instrument": event.instrument, "day": event.day, "quoted_ns": event.quoted_ns,
                "session_ns": event.session_ns, "presence_bps": event.presence_bps,
                "average_spread": self.price(event.instrument, event.average_spread),
                "met": event.met, "rebate": format_cash(event.currency, event.rebate),
                "currency": event.currency
            }))
        elif kind is AllowancesSurrendered:
            report = {
                "report": "surrendered", "seq": event.seq, "instrument": event.instrument,
                "qty": event.qty
            }
            if event.year is not None:
                report["year"] = event.year
            reports.append((event.account, report))
        elif kind is AccountStatusChanged:
            reports.append((event.account, {"report": "account", "seq": event.seq,
                                            "status": event.status}))
        else:
            for account, asset, cause, changes in _holding_changes(event):
                if account.startswith("@"):
                    continue  # a system account has no exec topic
                report = {"report": "holding", "seq": event.seq, "asset": asset, "cause": cause}
                report.update((k, v) for k, v in changes.items() if v is not None)
                reports.append((account, report))


def _holding_changes(event) -> list[tuple[str, str, str, dict]]:
    """``(account, asset, cause, {qty, amount, pledged, counterparty, pledge_id})`` for each
    holding an event moves outside a trade; keys in the report's order, None left out."""
    kind = type(event)

    def units(qty=None, pledged=None, counterparty=None, pledge_id=None) -> dict:
        return {"qty": qty, "amount": None, "pledged": pledged, "counterparty": counterparty,
                "pledge_id": pledge_id}

    if kind in (CashDeposited, CashWithdrawn):
        sign = 1 if kind is CashDeposited else -1
        return [(event.account, event.currency,
                 "deposit" if sign > 0 else "withdrawal",
                 {"amount": format_cash(event.currency, sign * event.amount)})]
    if kind is AllowancesIssued:
        return [(event.account, event.instrument, "issue", units(event.qty))]
    if kind is AllowancesClawedBack:
        return [(event.account, event.instrument, "clawback", units(-event.qty))]
    if kind is AllowancesTransferred:
        return [(event.account, event.instrument, "transfer", units(-event.qty, None,
                                                                    event.to_account)),
                (event.to_account, event.instrument, "transfer", units(event.qty, None,
                                                                       event.account))]
    if kind is AllowancesPledged:
        return [(event.account, event.instrument, "pledge",
                 units(-event.qty, event.qty, event.to_account, event.pledge_id))]
    if kind is PledgeReleased:
        return [(event.account, event.instrument, "pledge_release",
                 units(event.qty, -event.qty, event.to_account, event.pledge_id))]
    if kind is PledgeEnforced:
        return [(event.account, event.instrument, "pledge_enforce",
                 units(None, -event.qty, event.to_account, event.pledge_id)),
                (event.to_account, event.instrument, "pledge_enforce",
                 units(event.qty, None, event.account, event.pledge_id))]
    if kind is AllowancesAllocated and event.issued != event.clawed_back:
        return [(event.account, event.instrument, "allocation",
                 units(event.issued - event.clawed_back))]
    if kind is AllowancesConverted:
        return [(event.account, event.instrument, "conversion", units(-event.qty)),
                (event.account, event.to_instrument, "conversion", units(event.qty))]
    if kind is HoldingsUnlocked:
        return [(event.account, event.asset, "unlock", units(event.qty))]
    return []


# --- engine runs ----------------------------------------------------------------------------
def _scenario_events():
    """(name, market, events) of every scenario, the clearing ones included."""
    for path in SCENARIOS:
        scenario = load_scenario(path)
        market = scenario.market()
        engine = Engine(market, ledger=scenario.holdings is not None)
        events = [event for command in scenario.commands() for event in engine.execute(command)]
        yield path.stem, market, events


_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_any_json = msgspec.json.Decoder(AnyReport)
_any_msgpack = msgspec.msgpack.Decoder(AnyReport)


def _same_as_naive(market, events) -> set[str]:
    """Check every report of *events* against the naive reference; the kinds seen."""
    fast, naive = ReportMaker(market), NaiveReportMaker(market)
    kinds = set()
    for event in events:
        made, expected = [], []
        fast.reports(event, made)
        naive.reports(event, expected)
        assert [who for who, _ in made] == [who for who, _ in expected], event
        for (_, report), (_, want) in zip(made, expected):
            assert isinstance(report, Report)
            as_json = _json.encode(report)
            decoded = json.loads(as_json)
            assert decoded == want, event
            assert list(decoded) == list(want), event  # and the keys in the same order
            assert as_json == _json.encode(want)
            assert msgspec.msgpack.decode(_msgpack.encode(report)) == want
            assert _msgpack.encode(report) == _msgpack.encode(want)
            assert _any_json.decode(as_json) == report  # the tagged union reads it back
            assert _any_msgpack.decode(_msgpack.encode(report)) == report
            kinds.add(want["report"])
    return kinds


def test_every_scenarios_reports_are_the_naive_references_byte_for_byte():
    kinds = set()
    for _, market, events in _scenario_events():
        kinds |= _same_as_naive(market, events)
    # The runs are representative: every kind the engine's events give is there.
    engine_kinds = {cls.__struct_config__.tag for cls in AnyReport.__args__} - {"notice"}
    assert kinds == engine_kinds


# --- the gateway's own reports --------------------------------------------------------------
def _order(order_id, instrument, side, price, qty=1, **extra) -> dict:
    return {
        "action": "new", "order_id": order_id, "instrument": instrument, "side": side,
        "price": price, "qty": qty, **extra
    }


def _send(core, account, body, *, packed=False, now=0.0):
    payload = (body if isinstance(body, bytes) else
               msgspec.msgpack.encode(body) if packed else json.dumps(body).encode())
    core.receive(f"cx/v1/orders/{account}", payload, now=now)


def _decode(payload: bytes):
    return json.loads(payload) if payload[:1] in (b"{", b"[") else msgspec.msgpack.decode(payload)


def _reports(outgoing, account) -> list[dict]:
    found = []
    for topic, payload, *_ in outgoing:
        if topic == f"cx/v1/exec/{account}":
            body = _decode(payload)
            found.extend(body if isinstance(body, list) else [body])
    return found


@pytest.fixture
def core():
    engine = Engine(open_market(), ledger=True)
    for account in ("alice", "bob"):
        engine.execute(Deposit(account=account, currency="CNY", amount="100000"))
        engine.execute(IssueAllowances(account=account, instrument="CEA25", qty=1000))
    return GatewayCore(engine, settings=GatewaySettings(book_interval=0))


def _recording(core) -> list:
    """The events *core* turns into reports, in order, as it flushes."""
    events: list = []
    make = core._reports.reports

    def reports(event, out):
        events.append(event)
        make(event, out)

    core._reports.reports = reports
    return events


def _without_answers(reports) -> list[dict]:
    """The engine's reports among *reports*, as the naive reference builds them (no
    ``command_id``): the gateway's own rejections, which carry a ``message``, left out."""
    return [{k: v for k, v in r.items() if k != "command_id"} for r in reports
            if "message" not in r]


def _check_published(core, events, outgoing) -> None:
    naive = NaiveReportMaker(core.engine.market)
    expected: dict[str, list] = {}
    for event in events:
        made: list = []
        naive.reports(event, made)
        for account, report in made:
            expected.setdefault(account, []).append(report)
    for account, want in expected.items():
        got = _without_answers(_reports(outgoing, account))
        assert got == want
        assert [list(r) for r in got] == [list(r) for r in want]


def test_what_the_gateway_publishes_is_the_naive_references_reports(core):
    events = _recording(core)
    _send(core, "alice", _order("a1", "CEA25", "sell", "60.00", 10, command_id="k1"))
    _send(core, "alice", _order("a2", "CEA25", "sell", "61.00", 10, command_id="k2"), packed=True)
    _send(core, "bob", [_order("b1", "CEA25", "buy", "60.00", 5, command_id="kb1"),
                        _order("b2", "CEA25", "buy", "59.00", 5)])
    _send(core, "bob", [_order("s1", "CEA25", "buy", None, 2, type="stop", stop_price="62.00",
                               command_id="kst"),
                        _order("g1", "CEA25", "buy", "50.00", 1, tif="gtd", expire_ts=1),
                        _order("b8", "CEA25", "buy", "60.00", 10**9, command_id="kbig"),
                        _order("m1", "CEA25", "buy", None, 1, type="market", tif="ioc")])
    outgoing = core.flush(now=1.0)
    _send(core, "bob", {"action": "cancel", "order_id": "zz", "command_id": "kz"})
    _send(core, "bob", {"action": "cancel", "order_id": "b2", "command_id": "kc"})
    _send(core, "alice", {"action": "amend", "order_id": "a2", "price": "62.00", "qty": 3,
                          "command_id": "ka"})
    _send(core, "alice", {"action": "surrender", "instrument": "CEA25", "qty": 3,
                          "command_id": "ks"})
    _send(core, "alice", {"action": "surrender", "instrument": "CEA25", "qty": 3, "year": 2025})
    outgoing += core.flush(now=2.0)
    _send(core, "bob", _order("b9", "CEA25", "buy", "62.00", 1, command_id="kx"), packed=True)
    _send(core, "bob", [{"action": "fly"}, _order("p", "ZZZ", "buy", "1.00")])
    outgoing += core.flush(now=3.0)
    _send(core, "alice", {"action": "mass_cancel", "command_id": "km"})
    _send(core, "alice", {"action": "mass_cancel", "instrument": "CEA25", "side": "sell"})
    outgoing += core.flush(now=4.0)
    _check_published(core, events, outgoing)
    kinds = {r["report"] for a in ("alice", "bob") for r in _reports(outgoing, a)}
    # (a stop needs a price band, which the default market has not: the scenarios'
    # stop_*.txt give the triggered reports)
    assert kinds == {"accepted", "fill", "settled", "rejected", "cancelled", "amended",
                     "surrendered", "mass_cancel_accepted"}
    answered = [(r["report"], r["command_id"]) for a in ("alice", "bob")
                for r in _reports(outgoing, a) if "command_id" in r]
    assert answered == [("accepted", "k1"), ("accepted", "k2"), ("amended", "ka"),
                        ("surrendered", "ks"), ("mass_cancel_accepted", "km"),
                        ("accepted", "kb1"), ("rejected", "kst"), ("rejected", "kbig"),
                        ("rejected", "kz"), ("cancelled", "kc"), ("accepted", "kx")]


def test_a_futures_day_over_the_gateway_is_the_naive_references_reports():
    engine = Engine(parse_market(futures_market("2099-12")), ledger=True)
    for account in ("alice", "bob"):
        engine.execute(Deposit(account=account, currency="CNY", amount="10000.00"))
    core = GatewayCore(engine)
    events = _recording(core)
    _send(core, "alice", [_order("a1", "F", "sell", "80.00", 2),
                          _order("a2", "F", "sell", "80.00")])
    _send(core, "bob", _order("b1", "F", "buy", "81.00", command_id="kb"), packed=True)
    outgoing = core.flush(now=1.0)
    core.end_of_day()
    outgoing += core.flush(now=2.0)
    _check_published(core, events, outgoing)
    assert {r["report"] for r in _reports(outgoing, "bob")} == {"accepted", "fill", "cleared",
                                                                "variation_margin"}
    # A futures fill's fee is the bot's to know, as a spot fill's is (settled).
    [cleared] = [r for r in _reports(outgoing, "bob") if r["report"] == "cleared"]
    assert (cleared["side"], cleared["position"], cleared["currency"]) == ("buy", 1, "CNY")
    [trade] = [e for e in events if type(e) is TradeCleared and e.buy_account == "bob"]
    assert cleared["fee"] == format_cash("CNY", trade.buy_fee)  # this market charges none


# Each payload's rejection as it was when reports were dicts (``message`` aside: checked
# present and non-empty); the keys in the struct's order (``action`` before ``reason``).
TURNED_AWAY = [
    ({"action": "cancel", "order_id": "b2", "account": "alice", "command_id": "kw"},
     {"report": "rejected", "action": "cancel", "reason": "wrong_account", "order_id": "b2",
      "command_id": "kw"}),
    ({"action": "deposit", "order_id": "d", "command_id": "kd", "instrument": "CNY", "qty": 1},
     {"report": "rejected", "action": "deposit", "reason": "not_permitted", "order_id": "d",
      "command_id": "kd"}),
    ({"action": "fly", "command_id": "kf"},
     {"report": "rejected", "action": "fly", "reason": "not_permitted", "command_id": "kf"}),
    ({"order_id": "x"}, {"report": "rejected", "reason": "bad_command", "order_id": "x"}),
    ({"action": "new", "order_id": "x" * 65, "command_id": "kl"},
     {"report": "rejected", "action": "new", "reason": "bad_command", "command_id": "kl"}),
    ({"action": "new", "order_id": "x", "command_id": "y" * 65, "qty": 1.5},
     {"report": "rejected", "action": "new", "reason": "bad_command", "order_id": "x"}),
    ({"action": "new", "instrument": "CEA25", "side": "buy", "price": "1", "qty": 1,
      "command_id": "kn"},
     {"report": "rejected", "action": "new", "reason": "bad_command", "command_id": "kn"}),
    (_order("p", "CEA25", "buy", 61.2, command_id="kp"),
     {"report": "rejected", "action": "new", "reason": "bad_command", "order_id": "p",
      "command_id": "kp"}),
    (_order("p", "CEA25", "up", "61.2", command_id="kq"),
     {"report": "rejected", "action": "new", "reason": "bad_command", "order_id": "p",
      "command_id": "kq"}),
    ({"action": "new", "order_id": "", "command_id": ""},
     {"report": "rejected", "action": "new", "reason": "bad_command", "order_id": "",
      "command_id": ""}),
    (b"garbage", {"report": "rejected", "reason": "malformed"}),
    (b"[1]", {"report": "rejected", "reason": "malformed"}),
    (b'[{"action": 3}]', {"report": "rejected", "reason": "bad_command"}),
    (b"[" * 5000, {"report": "rejected", "reason": "malformed"}),
    (b"x" * 300_000, {"report": "rejected", "reason": "too_large"}),
    (json.dumps([1] * 1001).encode(), {"report": "rejected", "reason": "too_many_commands"}),
]


@pytest.mark.parametrize("payload, expected, packed",
                         [(payload, expected, False) for payload, expected in TURNED_AWAY] +
                         [(payload, expected, True) for payload, expected in TURNED_AWAY
                          if not isinstance(payload, bytes)])
def test_the_gateways_own_rejections_keep_their_keys(core, payload, expected, packed):
    seq = core.engine.seq
    _send(core, "bob", payload, packed=packed)
    answers = _reports(core.flush(now=1.0), "bob")
    assert len(answers) == 1
    assert answers[0]["message"] and isinstance(answers[0]["message"], str)
    assert {k: v for k, v in answers[0].items() if k != "message"} == expected
    keys = list(expected)
    keys.insert(keys.index("reason") + 1, "message")
    assert list(answers[0]) == keys
    assert core.engine.seq == seq


def test_rate_limited_and_overloaded_answers_keep_their_keys(core):
    core.settings.rate, core.settings.burst = 10, 1
    _send(core, "alice", _order("r0", "CEA25", "sell", "70.00"))
    _send(core, "alice", [_order("r1", "CEA25", "sell", "70.00", command_id="k1"),
                          {"action": "new"}])
    _send(core, "alice", {"action": "mass_cancel", "command_id": "km"})
    limited = [r for r in _reports(core.flush(now=0.0), "alice") if r["report"] == "rejected"]
    assert [{k: v for k, v in r.items() if k != "message"} for r in limited] == [
        {"report": "rejected", "action": "new", "reason": "rate_limited", "order_id": "r1",
         "command_id": "k1"},
        {"report": "rejected", "action": "new", "reason": "bad_command"},
        {"report": "rejected", "action": "mass_cancel", "reason": "rate_limited",
         "command_id": "km"}]
    assert [list(r)[:4] for r in limited] == [["report", "action", "reason", "message"]] * 3
    core.settings.burst, core.settings.intake = 100, 2
    core._buckets.clear()
    _send(core, "bob", [_order("o1", "CEA25", "buy", "50.00"),
                        _order("o2", "CEA25", "buy", "50.00")])
    _send(core, "bob", [_order("o3", "CEA25", "buy", "50.00", command_id="k3"), {"action": "new"},
                        {"qty": 1}])
    _send(core, "bob", b"{bad")
    answers = _reports(core.flush(now=0.0), "bob")
    overloaded = [r for r in answers if r.get("reason") == "overloaded"]
    assert [[k for k in r if k != "message"] for r in overloaded] == [
        ["report", "action", "reason", "order_id", "command_id"], ["report", "action", "reason"],
        ["report", "reason"], ["report", "reason"]]
    assert (overloaded[0]["order_id"], overloaded[0]["command_id"]) == ("o3", "k3")
    assert [r["report"] for r in answers[:2]] == ["accepted", "accepted"]
    assert core.stats.by_reason == {"rate_limited": 2, "bad_command": 1, "overloaded": 4}


def test_a_duplicates_answer_marks_each_report_and_puts_the_command_id_last(core):
    _send(core, "alice", _order("a1", "CEA25", "sell", "60.00", 10))
    _send(core, "bob", _order("b1", "CEA25", "buy", "60.00", 5, command_id="kb"))
    first = _reports(core.flush(now=1.0), "bob")
    _send(core, "bob", _order("b1", "CEA25", "buy", "60.00", 5, command_id="kb"), packed=True)
    again = _reports(core.flush(now=2.0), "bob")
    assert [r["report"] for r in first] == ["accepted", "fill", "settled"]
    assert again == [{**r, "duplicate": True} for r in first]
    assert list(again[0])[-2:] == ["duplicate", "command_id"]
    assert [list(r)[-1] for r in again[1:]] == ["duplicate", "duplicate"]


def test_an_answer_no_account_heard_of_is_a_bare_rejection(core):
    """A command whose result reached no account's reports is answered all the same."""
    command = CancelOrder(order_id="alice/c9", account="alice", command_id="k9")
    made: list = []
    core._answer(command, TradingDayEnded(seq=41, day=3), made)
    core._answer(command, CommandRejected(seq=42, action="cancel", reason="unknown_order"), made)
    assert [(who, msgspec.to_builtins(r)) for who, r in made] == [
        ("alice", {"report": "rejected", "seq": 41, "reason": "unknown", "command_id": "k9"}),
        ("alice", {"report": "rejected", "seq": 42, "reason": "unknown_order",
                   "command_id": "k9"})]


# --- the structs themselves -----------------------------------------------------------------
_CLEARING_STRUCTS = {
    VariationMargin: wire.VariationMarginReport,
    MarginCalled: wire.MarginCallReport,
    MarginCallMet: wire.MarginCallMetReport,
    PositionClosedOut: wire.ClosedOutReport,
    DefaultRecorded: wire.DefaultReport,
    DeliverySettled: wire.DeliveryReport,
    DeliveryFailed: wire.DeliveryFailedReport,
    OptionExercised: wire.ExercisedReport
}


@pytest.mark.parametrize("event, report", list(_CLEARING_STRUCTS.items()))
def test_a_clearing_report_has_its_events_fields_but_the_account(event, report):
    """The reports used to copy their event's fields: a field added to the event must be
    added to its report too."""
    assert report.__struct_config__.tag == _CLEARING_REPORTS[event]
    assert report.__struct_fields__ == (
        "seq", *(name for name in event.__struct_fields__ if name not in ("seq", "account")),
        "duplicate", "command_id")


def test_every_report_is_a_tagged_struct_answerable_by_command_id():
    tags = [cls.__struct_config__.tag for cls in AnyReport.__args__]
    assert len(set(tags)) == len(tags)
    for cls in AnyReport.__args__:
        assert issubclass(cls, Report) and cls.__struct_config__.tag_field == "report"
        assert not cls.__struct_config__.gc and cls.__struct_config__.omit_defaults
        if cls is not wire.NoticeReport:
            assert cls.__struct_fields__[-2:] == ("duplicate", "command_id")
            assert cls.__struct_defaults__[-2:] == (False, None)
    accepted = wire.AcceptedReport(1, "c1", "CEA25", "buy", "market", "ioc", None, 5)
    assert _json.encode(accepted) == (b'{"report":"accepted","seq":1,"order_id":"c1",'
                                      b'"instrument":"CEA25","side":"buy","type":"market",'
                                      b'"tif":"ioc","price":null,"qty":5}')
    accepted.command_id = "k"
    assert json.loads(_json.encode(accepted))["command_id"] == "k"


def test_the_brokers_notice_reads_as_a_notice_report():
    """mosquitto_limit.c writes this body itself; bots decoding reports read it too."""
    body = (b'{"report":"notice","reason":"rate_limited","dropped":3,"message":"over the '
            b"account's publishing limit of 1000 messages or 4194304 bytes a second: the broker "
            b'dropped 3 message(s); resend what is unanswered"}')
    notice = _any_json.decode(body)
    assert type(notice) is wire.NoticeReport and notice.dropped == 3
    assert _json.encode(notice) == body


def test_the_gateways_reason_codes_are_the_vocabularys():
    """The bot side's protocol spells the gateway's codes itself (it loads no engine):
    each is the Reason of the same name, in the gateway stage, and there are no others."""
    from exchange.reasons import GATEWAY, Reason, Stage
    from gateway import protocol

    names = ("MALFORMED", "BAD_COMMAND", "NOT_PERMITTED", "WRONG_ACCOUNT", "TOO_LARGE",
             "TOO_MANY_COMMANDS", "RATE_LIMITED", "OVERLOADED")
    assert {getattr(protocol, name) for name in names} == set(GATEWAY)
    for name in names:
        assert getattr(protocol, name) == Reason[name] and Reason[name].stage is Stage.GATEWAY


def test_an_empty_command_id_is_refused_and_answered_under_it(core):
    """A bot's command with ``"command_id": ""`` was run as one without an id: its answer
    carried none, so the client that waited for "" never had it and resent the command
    every two seconds, each copy run again (a new order rejected duplicate_order_id,
    an amend or a mass cancel applied again). It is refused, answered under its id."""
    seq = core.engine.seq
    _send(core, "bob", _order("e1", "CEA25", "buy", "60.00", command_id=""))
    [answer] = _reports(core.flush(now=1.0), "bob")
    assert answer["report"] == "rejected" and answer["reason"] == "bad_command"
    assert answer["command_id"] == ""
    assert core.engine.seq == seq


@settings(max_examples=300, deadline=None)
@given(order_id=st.sampled_from(["alice/c1", "alice/", "c1", "a/b/c", "/x", "bob/o-7"]),
       ticks=st.one_of(st.none(), st.integers(0, 10**7), st.sampled_from([6000, 6001])),
       twice=st.booleans())
def test_an_accepted_report_is_made_as_client_id_and_price_make_it(order_id, ticks, twice):
    # benchmarks/gateway.py, batched: ReportMaker.reports reads an accepted order's id and
    # its remembered price itself; the report is the one client_id and price give.
    maker = ReportMaker(open_market())
    event = OrderAccepted(seq=3, order_id=order_id, account="alice", instrument="CEA25",
                          side="buy", type="limit", tif="gtc", price=ticks, qty=5)
    made: list = []
    for _ in range(2 if twice else 1):  # the price remembered, or made the first time
        made.clear()
        maker.reports(event, made)
    assert made == [("alice", wire.AcceptedReport(3, wire.client_id(order_id), "CEA25", "buy",
                                                  "limit", "gtc", maker.price("CEA25", ticks),
                                                  5))]
