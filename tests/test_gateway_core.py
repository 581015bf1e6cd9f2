"""The gateway's rules without a network: decoding, bad input, reports, duplicates,
rate limits, journaling before acknowledgement, market data and its throttle."""

from __future__ import annotations

import json

import msgspec
import pytest
from markets import futures_market, open_market, order

from exchange import Engine, default_market
from exchange.commands import Deposit, IssueAllowances
from exchange.journal import JournalWriter, create_journal, recover
from exchange.market import parse_market
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import MAX_COMMANDS, MAX_PAYLOAD, account_of


def decode(payload: bytes):
    return json.loads(payload) if payload[:1] in (b"{", b"[") else msgspec.msgpack.decode(payload)


def reports(outgoing, account):
    """Every report published on *account*'s exec topic, in order."""
    found = []
    for topic, payload, qos, *_ in outgoing:  # (a retained message has a fourth)
        if topic == f"cx/v1/exec/{account}":
            assert qos == 1
            body = decode(payload)
            found.extend(body if isinstance(body, list) else [body])
    return found


def send(core, account, body, *, packed=False):
    payload = (body if isinstance(body, bytes) else
               (msgspec.msgpack.encode(body) if packed else json.dumps(body).encode()))
    core.receive(f"cx/v1/orders/{account}", payload, now=0.0)


@pytest.fixture
def core():
    return GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))


@pytest.mark.parametrize("next_account", ["bob", "alice"])
def test_a_gtd_that_expires_as_a_command_moves_the_clock_leaves_that_commands_answer_alone(
        core, next_account):
    """The engine gives the expiries of the gtd orders a command's time passed before that
    command's result: the expired report took the command's id, and the command's own
    answer (its order accepted and resting) went without one; the bot client, waiting
    for that id, was told 'rejected, unknown'."""
    import time

    soon = time.time_ns() + 300_000_000  # ahead of the gateway's clock, however busy
    send(core, "alice", {**order("g1", "buy", "59.00", 7), "tif": "gtd",
                         "expire_ts": soon, "command_id": "cg"})
    first = reports(core.flush(now=0.0), "alice")
    assert [(r["report"], r.get("command_id")) for r in first] == [("accepted", "cg")]
    time.sleep(max(soon - time.time_ns(), 0) / 1e9 + 0.005)
    send(core, next_account, {**order("n1", "sell", "61.00", 5), "command_id": "cn"})
    out = core.flush(now=0.0)
    alice = reports(out, "alice")
    theirs = alice if next_account == "alice" else reports(out, next_account)
    expired = [r for r in alice if r["report"] == "expired"]
    assert [(r["order_id"], r.get("command_id")) for r in expired] == [("g1", None)]
    answers = [r for r in theirs if r.get("command_id") == "cn"]
    assert [(r["report"], r["order_id"]) for r in answers] == [("accepted", "n1")]
    assert [r["report"] for r in theirs if r["report"] == "rejected"] == []


def test_a_gtd_leaves_the_book_at_its_time_without_another_command(tmp_path):
    """It left only when some command next moved the clock: meanwhile the book and its
    owner showed it. The gateway now moves the clock itself once one is due, journaled."""
    import time

    market = open_market()
    writer = create_journal(tmp_path / "j", market.text, ledger=False)
    core = GatewayCore(Engine(market), journal=writer,
                       settings=GatewaySettings(book_interval=0))
    soon = time.time_ns() + 300_000_000  # ahead of the gateway's clock, however busy
    send(core, "alice", {**order("g1", "buy", "59.00", 7), "tif": "gtd", "expire_ts": soon})
    core.flush(now=0.0)
    assert not core.expire_due() and not core.pending  # not yet due
    time.sleep(max(soon - time.time_ns(), 0) / 1e9 + 0.005)
    assert core.expire_due() and core.pending == 1
    assert not core.expire_due()  # once
    out = core.flush(now=1.0)
    assert [(r["report"], r["order_id"]) for r in reports(out, "alice")] == [("expired", "g1")]
    assert [t for t, _, *_ in out if "/exec/" in t or t.startswith("cx/v1/ops")] == [
        "cx/v1/exec/alice"]  # answered to no one
    assert core.engine.order("alice/g1") is None and core.engine.next_expiry() is None
    assert core.stats.commands == 1  # the order's; the clock's move is not a command of anyone
    recovered = recover(tmp_path / "j")  # journaled: recovery expires it the same
    assert recovered.engine.state_hash() == core.engine.state_hash()
    writer.close()


def test_a_gone_gtd_order_moves_no_clock(core):
    """A gtd order cancelled, filled or amended to a later expiry left its old entry in
    the expiry queue: at that time the gateway journaled a move of the clock that expired
    nothing. The queue's front now holds only live orders' expiries."""
    import time

    soon = time.time_ns() + 1_000_000_000  # ahead of the gateway's clock, however busy
    send(core, "alice", [{**order("g1", "buy", "59.00", 7), "tif": "gtd", "expire_ts": soon},
                         {**order("g2", "buy", "58.00", 7), "tif": "gtd", "expire_ts": soon},
                         {**order("g3", "buy", "57.00", 7), "tif": "gtd", "expire_ts": soon}])
    send(core, "alice", {"action": "cancel", "order_id": "g1"})
    send(core, "bob", order("s1", "sell", "58.00", 7))  # fills g2
    later = soon + 3_600 * 10**9
    send(core, "alice", {"action": "amend", "order_id": "g3", "qty": 5})
    core.flush(now=0.0)
    assert core.engine.order("alice/g3") is not None
    assert core.engine.next_expiry() == soon  # g3 still expires then
    send(core, "alice", {**order("g4", "buy", "56.00", 7), "tif": "gtd", "expire_ts": later})
    send(core, "alice", {"action": "cancel", "order_id": "g3"})
    core.flush(now=0.0)
    assert core.engine.next_expiry() == later  # g1, g2 and g3's entries are gone
    time.sleep(max(soon - time.time_ns(), 0) / 1e9 + 0.005)  # past the old entries' time
    assert not core.expire_due() and not core.pending  # nothing due: nothing journaled
    send(core, "alice", {"action": "cancel", "order_id": "g4"})
    core.flush(now=0.0)
    assert core.engine.next_expiry() is None


def test_orders_in_fills_out_in_order_for_both_sides(core):
    send(core, "alice", order("a1", "sell", "60.00", 100))
    send(core, "bob", [order("b1", "buy", "60.10", 40), order("b2", "buy", "60.00", 70)])
    out = core.flush(now=1.0)
    alice, bob = reports(out, "alice"), reports(out, "bob")
    assert [r["report"] for r in alice] == ["accepted", "fill", "fill"]
    assert [(r["price"], r["qty"], r["leaves_qty"], r["liquidity"])
            for r in alice[1:]] == [("60.00", 40, 60, "maker"), ("60.00", 60, 0, "maker")]
    assert [r["report"] for r in bob] == ["accepted", "fill", "accepted", "fill"]
    assert [r["order_id"] for r in bob] == ["b1", "b1", "b2", "b2"]  # the bot's own ids
    assert bob[-1]["leaves_qty"] == 10 and bob[-1]["liquidity"] == "taker"
    seqs = [r["seq"] for r in alice + bob]
    assert sorted(seqs) == sorted(set(seqs)) or len(set(seqs)) < len(seqs)  # shared trades
    assert [r["seq"] for r in bob] == sorted(r["seq"] for r in bob)
    public = [decode(p) for t, p, *_ in out if t == "cx/v1/md/CEA25/trades"]
    assert public == [[{
        "seq": alice[1]["seq"],
        "trade_id": 1,
        "instrument": "CEA25",
        "price": "60.00",
        "qty": 40,
        "aggressor": "buy",
        "feed_seq": 1,
        "feed": core.feed_session
    }, {
        "seq": alice[2]["seq"],
        "trade_id": 2,
        "instrument": "CEA25",
        "price": "60.00",
        "qty": 60,
        "aggressor": "buy",
        "feed_seq": 2,
        "feed": core.feed_session
    }]]
    assert all("account" not in t for t in public[0])


def test_each_instruments_trades_are_numbered_so_a_lost_message_shows(core):
    """Trades go out at QoS 0 with the engine's seq and trade id, which count every
    instrument together: a subscriber of one instrument could not tell a lost message
    from another instrument's trading. Each instrument's trades are numbered on its
    topic, 1, 2, 3 ..., within the gateway's feed session."""
    market = core.engine.market.instruments
    other = next(s for s in market if s != "CEA25" and market[s].kind == "spot")
    out = []
    for n in range(3):  # a trade on each instrument a flush; two on CEA25 in the last
        send(core, "alice", order(f"a{n}", "sell", "60.00", 10 + 10 * (n == 2)))
        send(core, "alice", {**order(f"o{n}", "sell", "60.00", 10), "instrument": other})
        send(core, "bob", [order(f"b{n}", "buy", "60.00", 10),
                           {**order(f"p{n}", "buy", "60.00", 10), "instrument": other}])
        if n == 2:
            send(core, "bob", order("b2x", "buy", "60.00", 10))
        out += core.flush(now=float(n))
    numbers: dict = {}
    session = core.feed_session
    again = GatewayCore(core.engine, settings=GatewaySettings(book_interval=0))
    send(again, "alice", order("a9", "sell", "60.00", 10))
    send(again, "bob", order("b9", "buy", "60.00", 10))
    later = again.flush(now=9.0)
    for topic, payload, *_ in out + later:
        if topic.endswith("/trades"):
            for trade in decode(payload):
                numbers.setdefault((trade["instrument"], trade["feed"]), []).append(
                    trade["feed_seq"])
    assert numbers[("CEA25", session)] == [1, 2, 3, 4]
    assert numbers[(other, session)] == [1, 2, 3]
    assert numbers[("CEA25", again.feed_session)] == [1]  # a new session starts again
    assert again.feed_session != session


def test_two_accounts_may_use_the_same_order_id(core):
    send(core, "alice", order("c1", "sell", "61.00"))
    send(core, "bob", order("c1", "sell", "62.00"))
    out = core.flush(now=1.0)
    assert reports(out, "alice")[0]["report"] == "accepted"
    assert reports(out, "bob")[0]["report"] == "accepted"
    send(core, "bob", {"action": "cancel", "order_id": "c1"})
    out = core.flush(now=2.0)
    assert reports(out, "bob")[0]["report"] == "cancelled"
    assert reports(out, "alice") == []
    assert core.engine.order("alice/c1") is not None and core.engine.order("bob/c1") is None


def test_depth_is_retained_and_published_as_the_gateway_connects():
    """The depth went out only on a change, not retained and not as the gateway
    connected: a bot that subscribed between two changes, or after a gateway restart,
    had no depth until the book next moved (while the status and auctions were there)."""
    engine = Engine(open_market())
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "alice", order("s1", "sell", "61.00", 5))
    [book] = [m for m in core.flush(now=1.0) if m[0] == "cx/v1/md/CEA25/book"]
    assert book[2:] == (0, True)  # retained
    # A restarted gateway over the same engine publishes every instrument's depth as it is.
    again = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    depths = {t: (decode(p), qos, keep) for t, p, qos, keep in again.retained()
              if t.endswith("/book")}
    assert set(depths) == {f"cx/v1/md/{s}/book" for s in engine.market.instruments}
    body, qos, keep = depths["cx/v1/md/CEA25/book"]
    assert (body["asks"], body["bids"], body["seq"], keep) == ([["61.00", 5, 1]], [],
                                                              engine.seq, True)
    # and not again at the next flush, the book being as published
    send(again, "bob", order("x", "buy", "60.00", 0))  # refused: moves no book
    assert not [m for m in again.flush(now=2.0) if m[0].endswith("/book")]


def test_depth_is_aggregated_and_throttled():
    core = GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=1.0))
    for i in range(12):
        send(core, "alice", order(f"s{i}", "sell", f"{61 + i}.00", 5))
        send(core, "alice", order(f"t{i}", "sell", f"{61 + i}.00", 7))
    send(core, "bob", order("b", "buy", "59.00", 3))
    out = core.flush(now=10.0)
    books = [decode(p) for t, p, *_ in out if t == "cx/v1/md/CEA25/book"]
    assert len(books) == 1
    assert books[0]["bids"] == [["59.00", 3, 1]]
    assert books[0]["asks"][:2] == [["61.00", 12, 2], ["62.00", 12, 2]]
    assert len(books[0]["asks"]) == 10  # ten levels a side
    send(core, "bob", order("b2", "buy", "59.50", 1))
    assert not [t for t, _, *_ in core.flush(now=10.5) if t.endswith("/book")]  # throttled
    assert core.books_waiting()
    later = core.depth_now(now=11.0)
    assert [decode(p)["bids"][0] for _, p, *_ in later] == [["59.50", 1, 1]]
    assert not core.books_waiting()


def test_a_resent_command_is_applied_once_and_answered_as_the_first_time(core):
    send(core, "alice", order("a1", "sell", "60.00", command_id="k-1"))
    first = reports(core.flush(now=1.0), "alice")
    send(core, "alice", order("a1", "sell", "60.00", command_id="k-1"))
    again = reports(core.flush(now=2.0), "alice")
    assert first[0]["command_id"] == "k-1" and first[0]["report"] == "accepted"
    assert again == [{**first[0], "duplicate": True}]
    assert core.engine.accepted == 1


@pytest.mark.parametrize(
    "payload, reason",
    [(b'{"action": "new", "order_id": ', "malformed"), (b"\xc1\xff\x00", "malformed"),
     (b"", "malformed"), (b'"just a string"', "malformed"), (b"[1]", "malformed"),
     (b"[]", "malformed"), (b" [ ] ", "malformed"), (b"\x90", "malformed"),  # no command
     (b"null", "malformed"), (b"123", "malformed"),
     (b'{"action": "fly", "order_id": "x"}', "not_permitted"),
     (b'{"action": "deposit", "instrument": "CNY", "qty": "1000000"}', "not_permitted"),
     (b'{"action": "eod"}', "not_permitted"), (b'{"order_id": "x", "side": "buy"}', "bad_command"),
     (b'{"action": "new", "order_id": "x", "instrument": "CEA25", "side": "buy", '
      b'"price": 61.2, "qty": 1}', "bad_command"),
     (b'{"action": "new", "order_id": "x", "instrument": "CEA25", "side": "buy", '
      b'"price": "61.20", "qty": [1]}', "bad_command"),
     (b'{"action": "new", "order_id": "x", "instrument": "CEA25", "side": "up", '
      b'"price": "61.20", "qty": 1}', "bad_command"),
     (b'{"action": "new", "order_id": "x", "instrument": "CEA25", "side": "buy", '
      b'"price": "61.20"}', "bad_command"),
     (b'{"action": "new", "instrument": "CEA25", "side": "buy", "price": "61.20", "qty": 1}',
      "bad_command"),
     (b'{"action": "new", "order_id": "x", "instrument": "CEA25", "side": "buy", '
      b'"price": "61.20", "qty": 1, "colour": "green"}', "bad_command"),
     (b'{"action": "new", "order_id": "x", "account": "bob", "instrument": "CEA25", '
      b'"side": "buy", "price": "61.20", "qty": 1}', "wrong_account"),
     (b'{"action": "cancel", "order_id": "x", "account": "bob"}', "wrong_account")])
def test_bad_input_is_answered_and_changes_nothing(core, payload, reason):
    before = core.engine.state_hash()
    send(core, "alice", payload)
    out = core.flush(now=1.0)
    answer = reports(out, "alice")
    assert len(answer) == 1 and answer[0]["report"] == "rejected"
    assert answer[0]["reason"] == reason and answer[0]["message"]
    assert core.engine.state_hash() == before and core.engine.seq == 0
    assert reports(out, "bob") == []
    assert core.stats.turned_away == 1 and core.stats.by_reason == {reason: 1}


def test_a_resend_into_a_full_intake_is_not_told_overloaded_for_a_command_that_acts():
    """A bot resends what stays unanswered. With its intake full, a resent copy was
    turned away 'overloaded' under its command id, ahead of the queued first copy that
    then acted: the bot took the order for refused while it rested in the book. A copy
    whose first is waiting now gets no answer of its own; one whose first ran gets that
    first answer again; only a command not seen is told 'overloaded'."""
    core = GatewayCore(Engine(open_market()),
                       settings=GatewaySettings(book_interval=0, intake=4))
    first = [order(f"o{i}", "sell", "61.00", 1, command_id=f"c{i}") for i in range(4)]
    send(core, "alice", first)
    send(core, "alice", first)  # resent while all four wait in the full intake
    send(core, "alice", order("n1", "sell", "61.00", 1, command_id="new"))
    answers = reports(core.flush(now=1.0), "alice")
    assert sorted((r["command_id"], r["report"]) for r in answers) == [
        ("c0", "accepted"), ("c1", "accepted"), ("c2", "accepted"), ("c3", "accepted"),
        ("new", "rejected")]
    assert next(r for r in answers if r["command_id"] == "new")["reason"] == "overloaded"
    assert core.stats.resends_dropped == 4
    # ran since: with the intake full again, a resend of one gets its answer again
    send(core, "alice", [order(f"p{i}", "sell", "62.00", 1) for i in range(4)])
    send(core, "alice", first[:1])
    again = reports(core.flush(now=2.0), "alice")
    assert [(r["command_id"], r["report"], r.get("duplicate")) for r in again
            if r.get("command_id")] == [("c0", "accepted", True)]
    assert len(list(core.engine.book("CEA25").orders(False))) == 8


@pytest.mark.parametrize("bid, message", [
    # a key the bid has no use for is refused, not dropped (the auction sets its pricing)
    ({"auction": "A1", "pricing": "pay_as_bid"}, "pricing is not a key"),
    # the answer names the bot's own order id, not the one the gateway makes of it
    ({"auction": "A/2"}, "an id without '/'")])
def test_a_bad_bid_is_refused_naming_the_bots_own_order_id(core, bid, message):
    send(core, "alice", {"action": "auction_bid", "order_id": "x1", "price": "59.00",
                         "qty": 100_000, **bid})
    answer = reports(core.flush(now=1.0), "alice")
    assert [(r["reason"], r["order_id"]) for r in answer] == [("bad_command", "x1")]
    assert message in answer[0]["message"] and core.engine.seq == 0


@pytest.mark.parametrize("payload", [b"null", b"123", b"true", b'"x"', b"\xef\xbb\xbf{}"])
def test_json_that_is_no_command_is_said_to_be_so_not_bad_msgpack(core, payload):
    send(core, "alice", payload)
    [answer] = reports(core.flush(now=1.0), "alice")
    assert answer["reason"] == "malformed"
    assert answer["message"].startswith("neither JSON commands (an object or a list of objects")


def test_good_commands_beside_a_bad_one_go_through_in_order(core):
    send(core, "alice", [
        order("a1", "sell", "60.00"), {
            "action": "new",
            "qty": "many"
        },
        order("a2", "sell", "60.01")
    ])
    answers = reports(core.flush(now=1.0), "alice")
    assert [(r["report"], r.get("order_id")) for r in answers] == [("accepted", "a1"),
                                                                   ("rejected", None),
                                                                   ("accepted", "a2")]


def test_oversized_and_overlong_messages_are_refused_whole(core):
    big = json.dumps(order("a1", "sell", "60.00", note="x" * MAX_PAYLOAD)).encode()
    send(core, "alice", big)
    send(core, "alice", [order(f"o{i}", "sell", "60.00") for i in range(MAX_COMMANDS + 1)])
    answers = reports(core.flush(now=1.0), "alice")
    assert [r["reason"] for r in answers] == ["too_large", "too_many_commands"]
    assert core.engine.seq == 0


def test_a_flood_is_rate_limited_per_account():
    core = GatewayCore(Engine(open_market()),
                       settings=GatewaySettings(rate=10, burst=20, book_interval=0))
    for i in range(25):
        core.receive("cx/v1/orders/alice",
                     json.dumps(order(f"a{i}", "sell", "70.00")).encode(), now=0.0)
    core.receive("cx/v1/orders/bob", json.dumps(order("b", "sell", "70.00")).encode(), now=0.0)
    out = core.flush(now=0.0)
    alice = reports(out, "alice")
    assert [r["report"] for r in alice].count("accepted") == 20
    assert [(r.get("reason"), r["order_id"]) for r in alice[20:]] == [("rate_limited", f"a{i}")
                                                                      for i in range(20, 25)]
    assert reports(out, "bob")[0]["report"] == "accepted"  # others unaffected
    core.receive("cx/v1/orders/alice",
                 json.dumps(order("late", "sell", "70.00")).encode(),
                 now=1.0)  # a second later the bucket has refilled ten
    assert reports(core.flush(now=1.0), "alice")[0]["report"] == "accepted"


def test_a_resend_over_the_rate_limit_is_not_told_rate_limited_for_a_command_that_acts():
    """As for a full intake: a resent copy over the account's rate was answered
    'rate_limited' under the id of a command that waited, or had already acted."""
    core = GatewayCore(Engine(open_market()),
                       settings=GatewaySettings(rate=10, burst=10, book_interval=0))
    batch = [order(f"r{i}", "sell", "70.00", 1, command_id=f"c{i}") for i in range(10)]
    send(core, "alice", batch)
    send(core, "alice", batch)  # over the rate; the first copies wait
    first = reports(core.flush(now=0.0), "alice")
    assert [(r["command_id"], r["report"]) for r in first] == [
        (f"c{i}", "accepted") for i in range(10)]
    send(core, "alice", batch[:2] + [order("n1", "sell", "70.00", 1, command_id="new")])
    again = reports(core.flush(now=0.0), "alice")
    assert [(r["command_id"], r["report"], r.get("duplicate", False)) for r in again] == [
        ("c0", "accepted", True), ("c1", "accepted", True), ("new", "rejected", False)]
    assert again[-1]["reason"] == "rate_limited"
    assert core.engine.accepted == 10


def test_reports_follow_the_bots_format(core):
    send(core, "alice", order("a1", "sell", "60.00"), packed=True)
    send(core, "bob", order("b1", "buy", "60.00"))
    out = {t: p for t, p, *_ in core.flush(now=1.0)}
    assert msgspec.msgpack.decode(out["cx/v1/exec/alice"])[0]["report"] == "accepted"
    assert json.loads(out["cx/v1/exec/bob"])[0]["report"] == "accepted"


def test_a_bot_cannot_move_the_clock_or_touch_the_ledger():
    engine = Engine(open_market(), ledger=True)
    engine.execute(Deposit(account="alice", currency="CNY", amount="1000"))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=20))
    core = GatewayCore(engine)
    send(core, "alice", order("a1", "sell", "60.00", ts=10**30 // 10**12))
    send(core, "alice", {"action": "surrender", "instrument": "CEA25", "qty": 3})
    out = reports(core.flush(now=1.0), "alice")
    assert [r["report"] for r in out] == ["accepted", "surrendered"]
    assert engine.clock < 10**18 * 4  # the gateway's clock (now, in ns), not the bot's


def test_commands_are_journaled_before_they_are_answered(tmp_path):
    market = open_market()
    writer = create_journal(tmp_path / "j", market.text, ledger=False)
    core = GatewayCore(Engine(market), journal=writer)
    send(core, "alice", [order("a1", "sell", "60.00"), order("a2", "sell", "61.00")])
    send(core, "alice", b"garbage")
    send(core, "bob", order("b1", "buy", "60.00"))
    out = core.flush(now=1.0)
    assert out
    # Everything answered is on disk already: recovery reproduces the same state.
    recovered = recover(tmp_path / "j")
    assert recovered.seq == 3
    assert recovered.engine.state_hash() == core.engine.state_hash()
    writer.close()


def _a_trade_journaled(tmp_path) -> tuple[GatewayCore, JournalWriter, list[dict]]:
    """A gateway journaling to tmp_path/j, where alice's sell (command ka) rests and bob's
    buy (kb) takes it: the gateway, its journal and bob's answer."""
    market = open_market()
    writer = create_journal(tmp_path / "j", market.text, ledger=False)
    core = GatewayCore(Engine(market), journal=writer)
    send(core, "alice", order("a1", "sell", "60.00", 30, command_id="ka"))
    send(core, "bob", order("b1", "buy", "60.00", 50, command_id="kb"))
    return core, writer, reports(core.flush(now=1.0), "bob")


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_resend_after_a_restart_gets_its_first_answer_and_its_fills(tmp_path, snapshot):
    core, writer, first = _a_trade_journaled(tmp_path)
    if snapshot:
        writer.snapshot(core.engine)
    writer.close()
    # The process dies before bob saw his answer; a new gateway recovers the journal.
    recovered = recover(tmp_path / "j")
    assert recovered.snapshot_seq == (2 if snapshot else 0)
    again = GatewayCore(recovered.engine)
    send(again, "bob", order("b1", "buy", "60.00", 50, command_id="kb"))
    answer = reports(again.flush(now=2.0), "bob")
    assert [r["report"] for r in first] == ["accepted", "fill"]
    assert answer == [{**r, "duplicate": True} for r in first]
    assert answer[0]["command_id"] == "kb" and "command_id" not in answer[1]
    assert again.engine.accepted == 2  # applied once


def test_a_resend_of_a_command_that_ran_is_answered_from_the_window_and_not_journaled(tmp_path):
    """Every resent copy went through the journal before the engine answered it
    duplicate_command: bots resending through an outage grew a cluster's log by a copy
    a resend. A copy the window answers is now answered without being journaled, once a
    flush (one answer is all the bot needs: tests/test_hostile.py)."""
    core, writer, first = _a_trade_journaled(tmp_path)
    for _ in range(3):
        send(core, "bob", order("b1", "buy", "60.00", 50, command_id="kb"))
    send(core, "bob", order("b2", "buy", "59.00", 5, command_id="kc"))
    send(core, "bob", order("b2", "buy", "59.00", 5, command_id="kc"))  # it waits: dropped
    send(core, "alice", order("a1", "sell", "60.00", 30, command_id="ka"))
    out = core.flush(now=2.0)
    bob, alice = reports(out, "bob"), reports(out, "alice")
    writer.close()
    assert bob[:2] == [{**r, "duplicate": True} for r in first]
    assert [(r["report"], r.get("command_id")) for r in bob[2:]] == [("accepted", "kc")]
    assert [(r["report"], r["command_id"], r["duplicate"]) for r in alice[:1]] == [
        ("accepted", "ka", True)]
    recovered = recover(tmp_path / "j")
    assert recovered.seq == 3  # a1, b1 and b2, each once
    assert recovered.engine.state_hash() == core.engine.state_hash()
    assert (core.stats.resends_answered, core.stats.resends_dropped) == (2, 3)


@pytest.mark.parametrize("topic, account", [("cx/v1/orders/alice", "alice"),
                                            ("cx/v1/orders/", None), ("cx/v1/orders/a/b", None),
                                            ("cx/v1/exec/alice", None)])
def test_account_of_topic(topic, account):
    assert account_of(topic) == account


def test_a_burst_of_reports_is_split_into_messages_under_the_packet_limit(core):
    from gateway.mqtt.service import REPORTS_PER_MESSAGE

    count = 3 * REPORTS_PER_MESSAGE + 5
    for start in range(0, count, 500):
        send(core, "alice",
             [order(f"o{i}", "sell", "70.00", 1) for i in range(start, min(start + 500, count))])
    out = core.flush(now=1.0)
    messages = [p for t, p, *_ in out if t == "cx/v1/exec/alice"]
    assert len(messages) == 4 and max(map(len, messages)) < 128 * 1024
    answers = reports(out, "alice")
    assert [r["order_id"] for r in answers] == [f"o{i}" for i in range(count)]


def test_futures_trade_over_the_gateway_and_the_end_of_day_settles_them():
    engine = Engine(parse_market(futures_market("2099-12")), ledger=True)
    for account in ("alice", "bob"):
        engine.execute(Deposit(account=account, currency="CNY", amount="10000.00"))
    core = GatewayCore(engine)
    send(
        core, "alice", {
            "action": "new",
            "order_id": "a1",
            "instrument": "F",
            "side": "sell",
            "price": "80.00",
            "qty": 2
        })  # 16,000 > 10,000
    send(
        core, "alice", {
            "action": "new",
            "order_id": "a2",
            "instrument": "F",
            "side": "sell",
            "price": "80.00",
            "qty": 1
        })
    send(core, "bob", {
        "action": "new",
        "order_id": "b1",
        "instrument": "F",
        "side": "buy",
        "price": "81.00",
        "qty": 1
    })
    out = core.flush(now=1.0)
    assert [(r["report"], r.get("reason"))
            for r in reports(out, "alice")] == [("rejected", "insufficient_margin"),
                                                ("accepted", None), ("fill", None),
                                                ("cleared", None)]
    send(core, "bob", {"action": "eod"})  # the operator's, not a bot's
    assert reports(core.flush(now=2.0), "bob")[0]["reason"] == "not_permitted"
    core.end_of_day()
    out = core.flush(now=3.0)
    for account, position in (("alice", -1), ("bob", 1)):
        margin = [r for r in reports(out, account) if r["report"] == "variation_margin"]
        assert margin == [{
            "report": "variation_margin",
            "seq": margin[0]["seq"],
            "instrument": "F",
            "position": position,
            "amount": "0.00",
            "currency": "CNY"
        }]
    assert engine.ledger.clearing.settlement["F"] == 8000  # the day's only trade
    engine.check()


def test_remembered_prices_are_bounded_and_stay_right():
    from gateway.mqtt.wire import _PRICES_KEPT, ReportMaker

    maker = ReportMaker(default_market())
    for ticks in range(_PRICES_KEPT + 10):
        assert maker.price("CEA25", ticks) == f"{ticks // 100}.{ticks % 100:02d}"
    assert len(maker._texts["CEA25"]) <= _PRICES_KEPT
    assert maker.price("CEA25", 6001) == "60.01" and maker.price("CEA25", None) is None


def test_accepted_and_fill_reports_keep_their_keys_and_order(core):
    send(core, "alice", order("a1", "sell", "60.00"))
    send(core, "bob", {**order("b1", "buy", "60.00"), "command_id": "k1"})
    send(
        core, "bob", {
            "action": "new",
            "order_id": "m1",
            "instrument": "CEA25",
            "side": "buy",
            "type": "market",
            "tif": "ioc",
            "qty": 1
        })
    out = core.flush(now=1.0)
    alice, bob = reports(out, "alice"), reports(out, "bob")
    assert list(alice[0]) == [
        "report", "seq", "order_id", "instrument", "side", "type", "tif", "price", "qty"
    ]
    assert (list(bob[0]) == [
        "report", "seq", "order_id", "instrument", "side", "type", "tif", "price", "qty",
        "command_id"
    ] and bob[0]["command_id"] == "k1")
    assert list(alice[1]) == [
        "report", "seq", "trade_id", "instrument", "price", "qty", "order_id", "side", "leaves_qty",
        "liquidity"
    ]
    assert (alice[1]["liquidity"], bob[1]["liquidity"]) == ("maker", "taker")
    market = [r for r in bob if r.get("order_id") == "m1" and r["report"] == "accepted"]
    assert market[0]["price"] is None  # a market order's accepted report says null


# --- the bot client's inbox -------------------------------------------------------------------
def test_the_client_inbox_keeps_order_waits_for_items_and_drops_the_newest_when_full():
    import asyncio

    from gateway.bots.client import _Inbox

    async def scenario():
        inbox = _Inbox(limit=3)
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing yet: the reader waits
        assert inbox.offer([{"seq": 1}]) == 0
        assert await asyncio.wait_for(waiting, 1) == {"seq": 1}
        assert inbox.offer([{"seq": 2}, {"seq": 3}]) == 0
        assert inbox.offer([{"seq": 4}, {"seq": 5}]) == 1  # room for one: the newest goes
        assert inbox.offer([{"seq": 6}]) == 1
        assert [await inbox.get(), await inbox.get()] == [{"seq": 2}, {"seq": 3}]
        assert inbox.take_all() == [{"seq": 4}] and inbox.take_all() == []

    asyncio.run(scenario())


def test_a_topic_whose_publishes_hang_holds_up_no_other_topic():
    import asyncio

    from gateway.protocol import TopicSender

    class Client:

        def __init__(self):
            self.sent = []
            self.stuck = asyncio.Event()  # never set: the slow subscriber's topic

        async def publish(self, topic, payload, qos, retain=False):
            if topic == "cx/v1/exec/slow":
                await self.stuck.wait()
            self.sent.append((topic, payload))

    async def scenario():
        client = Client()
        sender = TopicSender(client, window=4)
        sender.send_all([("cx/v1/exec/slow", b"%d" % i, 1) for i in range(50)])
        sender.send_all([("cx/v1/exec/quiet", b"%d" % i, 1) for i in range(10)])
        await asyncio.sleep(0.05)
        return client.sent, sender.waiting

    sent, waiting = asyncio.run(scenario())
    assert sent == [("cx/v1/exec/quiet", b"%d" % i) for i in range(10)]  # in order
    assert waiting == 50


def test_a_bots_id_of_the_operators_form_turned_away_is_not_answered_as_the_operators():
    """Turned away whole (its intake full), a bot's command with the id '@ops/s1' was
    looked up in the window under its account, and answered with the operator's
    surrender for it that took that id."""
    core = GatewayCore(Engine(default_market().open_all_hours(), ledger=True),
                       settings=GatewaySettings(book_interval=0, intake=1))
    core.receive("cx/v1/ops/commands", json.dumps([
        {"action": "issue", "account": "alice", "instrument": "CEA25", "qty": 100},
        {"action": "surrender", "account": "alice", "instrument": "CEA25", "qty": 5,
         "command_id": "s1"}]).encode())
    core.flush(now=0.0)
    send(core, "alice", order("o1", "sell", "70.00", 1, command_id="n1"))
    send(core, "alice", order("o2", "sell", "70.00", 1, command_id="@ops/s1"))
    answers = reports(core.flush(now=0.0), "alice")
    theirs = [r for r in answers if r.get("command_id") == "@ops/s1"]
    assert [(r["report"], r.get("reason")) for r in theirs] == [("rejected", "overloaded")]


def test_a_message_of_more_commands_than_the_burst_is_taken_once_the_bucket_is_full():
    """No bucket holds more than the burst: such a message was refused rate_limited for
    good, however long its bot waited."""
    core = GatewayCore(Engine(open_market()),
                       settings=GatewaySettings(rate=10, burst=5, book_interval=0))
    batch = [order(f"o{i}", "sell", "70.00", 1, command_id=f"c{i}") for i in range(8)]
    core.receive("cx/v1/orders/alice", json.dumps(batch).encode(), now=0.0)
    first = reports(core.flush(now=0.0), "alice")
    assert [r["report"] for r in first] == ["accepted"] * 8  # a full bucket takes it
    core.receive("cx/v1/orders/alice", json.dumps(order("n", "sell", "70.00", 1)).encode(),
                 now=0.2)  # 3 in debt, +2: still short
    assert reports(core.flush(now=0.2), "alice")[0]["reason"] == "rate_limited"
    core.receive("cx/v1/orders/alice", json.dumps(order("n", "sell", "70.00", 1)).encode(),
                 now=0.5)
    assert reports(core.flush(now=0.5), "alice")[0]["report"] == "accepted"


@pytest.mark.parametrize("first, then, reason", [
    ({"action": "auction_open", "auction": "A", "instrument": "CEA25", "side": "sell",
      "price": "60.00", "qty": 100_000},
     order("A", "sell", "70.00", 1), "duplicate_order_id"),
    (order("P", "sell", "70.00", 1),
     {"action": "auction_open", "auction": "P", "instrument": "CEA25", "side": "sell",
      "price": "60.00", "qty": 100_000}, "duplicate_auction")])
def test_an_auction_and_an_order_of_its_initiator_never_share_an_id(first, then, reason):
    """Over MQTT a bot's order ids are its own, an auction's everyone's: bob's auction A
    and his order A were both taken, and his fills of each carried the order_id A."""
    from exchange.commands import IssueAllowances

    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=200_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "bob", {**first, "command_id": "c1"})
    assert reports(core.flush(now=0.0), "bob")[0]["report"] in ("accepted", "auction")
    send(core, "bob", {**then, "command_id": "c2"})
    answer = reports(core.flush(now=0.0), "bob")
    assert [(r["report"], r["reason"]) for r in answer] == [("rejected", reason)]


@pytest.mark.parametrize("auction_first", [True, False])
def test_in_one_message_an_auction_and_an_order_named_alike_are_not_both_taken(auction_first):
    """Each was checked against the engine as the message was read, before either ran."""
    from exchange.commands import IssueAllowances

    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=200_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    auction = {"action": "auction_open", "auction": "A", "instrument": "CEA25", "side": "sell",
               "price": "60.00", "qty": 100_000, "command_id": "c1"}
    new = {**order("A", "sell", "70.00", 1), "command_id": "c2"}
    send(core, "bob", [auction, new] if auction_first else [new, auction])
    answers = {r.get("command_id"): r for r in reports(core.flush(now=0.0), "bob")}
    assert answers["c1"]["report"] == "auction"
    assert (answers["c2"]["report"], answers["c2"]["reason"]) == ("rejected", "duplicate_order_id")


def test_an_operators_auction_for_an_account_never_takes_an_id_of_that_accounts_orders():
    """The operator opened auction q7 for alice while her order q7 rested: her auction
    fills then carried order_id q7 too, as if her 10 t order had sold 100,000 t."""
    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=200_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "alice", {**order("q7", "sell", "70.00", 10), "command_id": "c1"})
    assert reports(core.flush(now=0.0), "alice")[0]["report"] == "accepted"
    core.receive("cx/v1/ops/commands", json.dumps(
        {"action": "auction_open", "account": "alice", "auction": "q7", "instrument": "CEA25",
         "side": "sell", "price": "60.00", "qty": 100_000, "command_id": "o1"}).encode(),
        now=0.0)
    ops = [decode(p) for t, p, *_ in core.flush(now=0.0) if t == "cx/v1/ops/reports"]
    answers = [r for body in ops for r in (body if isinstance(body, list) else [body])]
    assert [(r["report"], r.get("reason")) for r in answers] == [("rejected", "duplicate_auction")]
    assert not engine.auctions.auctions


def _ops(core, body):
    core.receive("cx/v1/ops/commands", json.dumps(body).encode(), now=0.0)


AUCTION = {"action": "auction_open", "account": "alice", "auction": "q7", "instrument": "CEA25",
           "side": "sell", "price": "60.00", "qty": 100_000, "command_id": "o1"}


def test_an_operators_auction_and_an_order_of_its_account_named_alike_in_one_flush():
    """The order q7 and the operator's auction q7 for alice arrive before the same flush:
    each is checked against the engine as it is read, before the other ran."""
    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=200_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "alice", {**order("q7", "sell", "70.00", 10), "command_id": "c1"})
    _ops(core, AUCTION)
    core.flush(now=0.0)
    assert not (engine.auctions.auctions and any(
        o.order_id == "alice/q7" for o in engine.live_orders()))


def test_a_bots_own_auction_and_order_named_alike_in_two_messages_of_one_flush():
    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=200_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "alice", {**order("q7", "sell", "70.00", 10), "command_id": "c1"})
    body = {k: v for k, v in AUCTION.items() if k != "account"}
    send(core, "alice", {**body, "command_id": "c2"})
    core.flush(now=0.0)
    assert not (engine.auctions.auctions and any(
        o.order_id == "alice/q7" for o in engine.live_orders()))


def test_an_auction_never_takes_another_accounts_order_ids():
    """bob's auction named like alice's next order id refused her order duplicate_order_id
    for the rest of the day: only the initiator's fills carry an auction's id."""
    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(IssueAllowances(account="bob", instrument="CEA25", qty=200_000))
    engine.execute(IssueAllowances(account="alice", instrument="CEA25", qty=10))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    send(core, "bob", {"action": "auction_open", "auction": "s-7", "instrument": "CEA25",
                       "side": "sell", "price": "99.00", "qty": 100_000, "command_id": "c1"})
    assert reports(core.flush(now=0.0), "bob")[0]["report"] == "auction"
    send(core, "alice", {**order("s-7", "sell", "70.00", 1), "command_id": "c1"})
    assert reports(core.flush(now=0.0), "alice")[0]["report"] == "accepted"
    # in one flush too: bob's auction and alice's order named alike are both taken
    send(core, "bob", {"action": "auction_open", "auction": "s-8", "instrument": "CEA25",
                       "side": "sell", "price": "99.00", "qty": 100_000, "command_id": "c2"})
    send(core, "alice", {**order("s-8", "sell", "70.00", 1), "command_id": "c2"})
    out = core.flush(now=0.0)
    assert reports(out, "bob")[0]["report"] == "auction"
    assert reports(out, "alice")[0]["report"] == "accepted"
