"""Hostile input to the gateway core: every payload on any topic gets an answer or is
dropped, the gateway goes on serving, and no other account's state moves.

The fixed corpus names the cases found by trying the live exchange as an attacker
would; a seeded generator then mixes and mutates them (a larger run of the same
generator is ``python -m benchmarks.hostile``)."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from hostile_corpus import corpus, mutations, nested
from markets import open_market

from exchange import Engine
from exchange.commands import Deposit, IssueAllowances
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import MAX_TEXT

ALICE_ORDER = {
    "action": "new",
    "order_id": "a1",
    "instrument": "CEA25",
    "side": "sell",
    "price": "60.00",
    "qty": 10
}


def reports(outgoing, account):
    found = []
    for topic, payload, *_ in outgoing:
        if topic == f"cx/v1/exec/{account}":
            body = (json.loads(payload)
                    if payload[:1] in (b"{", b"[") else msgspec.msgpack.decode(payload))
            found.extend(body if isinstance(body, list) else [body])
    return found


def alice_view(engine: Engine) -> tuple:
    """What another account could damage: alice's holdings and live orders."""
    ledger = engine.ledger
    holdings = sorted((asset, h.available, h.held, h.locked)
                      for asset, h in ledger.accounts["alice"].holdings.items())
    orders = sorted(
        (o.order_id, o.qty, o.price) for o in engine.live_orders() if o.account == "alice")
    return holdings, orders


def live_core(*, fund_mallory: bool = False) -> GatewayCore:
    """A gateway with alice resting a sell. Mallory has nothing unless funded, so none
    of her orders can trade with alice's by right: any change to alice is damage."""
    engine = Engine(open_market(), ledger=True)
    for account in ("alice", "mallory") if fund_mallory else ("alice", ):
        engine.execute(Deposit(account=account, currency="CNY", amount="1000000"))
        engine.execute(IssueAllowances(account=account, instrument="CEA25", qty=100_000))
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    core.receive("cx/v1/orders/alice", json.dumps(ALICE_ORDER).encode(), now=0.0)
    assert reports(core.flush(now=0.0), "alice")[0]["report"] == "accepted"
    return core


def alive(core: GatewayCore, n: int) -> None:
    """The gateway still serves an honest account, and answers it right."""
    core.receive(
        "cx/v1/orders/bob",
        json.dumps({
            "action": "new",
            "order_id": f"probe{n}",
            "instrument": "CEA25",
            "side": "buy",
            "price": "10.00",
            "qty": 1
        }).encode(), now=float(n))
    answers = reports(core.flush(now=float(n)), "bob")
    # bob has no cash: a clean rejection is the right answer, and it is an answer
    assert [(r["report"], r.get("order_id")) for r in answers] == [("rejected", f"probe{n}")]


@pytest.mark.parametrize("name, topic, payload", corpus(), ids=lambda v: v
                         if isinstance(v, str) and len(v) < 40 else None)
def test_each_hostile_message_is_answered_or_dropped_and_changes_no_one_else(name, topic, payload):
    core = live_core()
    before = alice_view(core.engine)
    core.receive(topic, payload, now=1.0)
    out = core.flush(now=1.0)
    for _topic_out, body, *_ in out:  # everything published is well formed
        assert len(body) < 1_100_000
        json.loads(body) if body[:1] in (b"{", b"[") else msgspec.msgpack.decode(body)
    for report in reports(out, "mallory"):
        for key in ("order_id", "command_id"):
            assert len(report.get(key) or "") <= MAX_TEXT
    assert alice_view(core.engine) == before
    core.engine.check()
    alive(core, 2)


def test_unknown_instruments_in_every_command_kind_are_rejected_by_name():
    core = live_core()
    kinds = [{
        "action": "new",
        "order_id": "m1",
        "instrument": "CEA26",
        "side": "buy",
        "price": "60.00",
        "qty": 1
    }, {
        "action": "new",
        "order_id": "m2",
        "instrument": "CEA-25",
        "side": "sell",
        "price": "60.00",
        "qty": 1
    }, {
        "action": "cancel",
        "order_id": "m1",
        "instrument": "CEA26"
    }, {
        "action": "amend",
        "order_id": "m1",
        "instrument": "CEA26",
        "qty": 2
    }, {
        "action": "mass_cancel",
        "instrument": "CEA26"
    }, {
        "action": "surrender",
        "instrument": "CEA26",
        "qty": 1
    }, {
        "action": "surrender",
        "instrument": "CEA26",
        "qty": 1,
        "year": 2024
    }]
    for n, command in enumerate(kinds):
        core.receive("cx/v1/orders/mallory",
                     json.dumps({
                         **command, "command_id": f"k{n}"
                     }).encode(), now=1.0)
    answers = reports(core.flush(now=1.0), "mallory")
    by_id = {r["command_id"]: r for r in answers if "command_id" in r}
    assert sorted(by_id) == [f"k{n}" for n in range(len(kinds))]
    assert all(r["report"] == "rejected" for r in by_id.values())
    alive(core, 2)


def test_deep_nesting_is_refused_without_recursing_into_it():
    core = live_core()
    for payload in (b"[" * 5000 + b"]" * 5000,
                    b'{"action":"new","order_id":' + b"[" * 3000 + b"]" * 3000 + b"}",
                    nested(3000, packed=True)):
        core.receive("cx/v1/orders/mallory", payload, now=1.0)
        answers = reports(core.flush(now=1.0), "mallory")
        assert [r["reason"] for r in answers] == ["malformed"]
    alive(core, 2)


def test_ids_and_texts_are_bounded_and_never_echoed_long():
    core = live_core()
    long = "x" * 120_000
    core.receive(
        "cx/v1/orders/mallory",
        json.dumps({
            "action": "new",
            "order_id": long,
            "instrument": "CEA25",
            "side": "sell",
            "price": "60.00",
            "qty": 1,
            "command_id": long
        }).encode(), now=1.0)
    core.receive(
        "cx/v1/orders/mallory",
        json.dumps({
            "action": "new",
            "order_id": "ok",
            "instrument": "CEA25",
            "side": "sell",
            "price": "6" * 200,
            "qty": 1
        }).encode(), now=1.0)
    answers = reports(core.flush(now=1.0), "mallory")
    assert [r["reason"] for r in answers] == ["bad_command", "bad_command"]
    assert "order_id is 120000 characters long" in answers[0]["message"]
    assert all(len(json.dumps(r)) < 300 for r in answers)
    assert core.engine.order("mallory/ok") is None


def test_a_full_intake_turns_a_flood_away_and_others_are_served_in_the_same_flush():
    core = live_core(fund_mallory=True)
    core.settings.intake = 50
    core.settings.flush_commands = 20
    batch = [{
        "action": "new",
        "order_id": f"f{i}",
        "instrument": "CEA25",
        "side": "sell",
        "price": "70.00",
        "qty": 1,
        "command_id": f"c{i}"
    } for i in range(40)]
    for start in range(0, 200, 40):
        core.receive(
            "cx/v1/orders/mallory",
            json.dumps([{
                **c, "order_id": f"{c['order_id']}-{start}",
                "command_id": f"{c['command_id']}-{start}"
            } for c in batch]).encode(), now=1.0)
    core.receive(
        "cx/v1/orders/alice",
        json.dumps({
            "action": "new",
            "order_id": "a2",
            "instrument": "CEA25",
            "side": "sell",
            "price": "61.00",
            "qty": 1
        }).encode(), now=1.0)
    first = core.flush(now=1.0)
    # alice's one order is run in the first flush, beside a share of mallory's
    assert [r["report"] for r in reports(first, "alice")] == ["accepted"]
    mallory = reports(first, "mallory")
    overloaded = [r for r in mallory if r.get("reason") == "overloaded"]
    assert len(overloaded) == 120 and all(r["command_id"] for r in overloaded)
    assert core.stats.by_reason["overloaded"] == 120
    assert 0 < sum(r["report"] == "accepted" for r in mallory) <= 20
    answered = sum(r["report"] == "accepted" for r in mallory)
    while core.pending:
        answered += sum(r["report"] == "accepted" for r in reports(core.flush(now=1.0), "mallory"))
    assert answered == 80  # two messages fitted in the intake, three were turned away


def test_a_seeded_mix_of_hostile_messages_never_stops_the_gateway():
    core = live_core()
    before = alice_view(core.engine)
    rng = random.Random(16)
    cases = corpus()
    for n in range(300):
        _, topic, payload = rng.choice(cases)
        for mutated in mutations(rng, payload):
            core.receive(topic, mutated, now=1.0 + n)
        if n % 25 == 0:
            core.flush(now=1.0 + n)
            assert alice_view(core.engine) == before
    while core.pending:
        core.flush(now=400.0)
    assert alice_view(core.engine) == before
    core.engine.check()
    alive(core, 500)


def _a_sweep_answered(core: GatewayCore, fills: int) -> list[dict]:
    """Mallory's buy (command ``k``) takes *fills* sells of alice's, one unit each: its
    answer, fills and settlements included."""
    core.receive("cx/v1/orders/alice", json.dumps([
        {**ALICE_ORDER, "order_id": f"s{i}", "price": "59.00", "qty": 1}
        for i in range(fills)]).encode(), now=1.0)
    core.flush(now=1.0)
    core.receive("cx/v1/orders/mallory", json.dumps({
        **ALICE_ORDER, "order_id": "sweep", "side": "buy", "price": "59.00", "qty": fills,
        "command_id": "k"}).encode(), now=1.0)
    first = reports(core.flush(now=1.0), "mallory")
    assert sum(r["report"] == "fill" for r in first) == fills
    return first


@pytest.mark.parametrize("full_intake", [False, True])
def test_copies_of_a_commands_id_in_one_message_are_not_each_answered_again(full_intake):
    """A command that ran is answered again, fills included, when resent. Each copy was:
    1,000 copies of the id of a buy that took 300 sells, in one 60 KB message (or one
    turned away by a full intake, whose copies are each answered as they ran), made the
    gateway build and publish that answer 1,000 times, every account waiting on it
    (with 1,000 fills: 8.6 s and 310 MB of reports for one message). One copy's answer
    is enough; the bot client takes the first and skips the rest."""
    core = live_core(fund_mallory=True)
    first = _a_sweep_answered(core, 300)
    if full_intake:
        core.settings.intake = 1
        core.receive("cx/v1/orders/mallory", json.dumps({
            **ALICE_ORDER, "order_id": "w1", "price": "70.00", "qty": 1}).encode(), now=2.0)
    copies = [{"action": "cancel", "order_id": "x", "command_id": "k"}] * 1000
    core.receive("cx/v1/orders/mallory", json.dumps(copies).encode(), now=2.0)
    again = [r for r in reports(core.flush(now=2.0), "mallory") if r.get("duplicate")]
    assert again == [{**r, "duplicate": True} for r in first]
    assert core.stats.resends_dropped == 999
    alive(core, 3)


@pytest.mark.parametrize("one_flush", [False, True])
def test_resends_of_a_long_answer_cost_what_as_many_commands_do(one_flush):
    """One copy a message, each in its own flush or all in one, each copy's answer built
    again: a long answer (300 fills, 601 reports) now counts against the account's rate
    as one command an event, so the account's burst buys a bounded number of them; the
    others get no answer now (the bot resends later), and no one else waits on them."""
    core = live_core(fund_mallory=True)
    first = _a_sweep_answered(core, 300)
    events = len(core.engine.answer("mallory", "k") or ())
    assert events > 600
    core.settings.rate, core.settings.burst = 1_000.0, 5_000.0  # (1,000 commands a second)
    resend = json.dumps({"action": "cancel", "order_id": "x", "command_id": "k"}).encode()
    answered = 0
    for _ in range(50):  # within the same instant: nothing refills the bucket
        core.receive("cx/v1/orders/mallory", resend, now=3.0)
        if not one_flush:
            out = reports(core.flush(now=3.0), "mallory")
            answered += out == [{**r, "duplicate": True} for r in first]
    if one_flush:
        out = reports(core.flush(now=3.0), "mallory")
        answered = int(out == [{**r, "duplicate": True} for r in first])
        assert core.stats.resends_dropped == 49
    else:
        # The burst, less the 50 commands the copies are themselves, buys 7 answers.
        assert answered == (5_000 - 50) // events
        assert core.stats.resends_dropped == 50 - answered
    # A short answer is given whatever the rate: the order the probe places, resent.
    alive(core, 4)


def test_copies_in_one_message_are_answered_once_even_when_a_busy_flush_splits_them():
    """docs/mqtt.md: "Copies of one command id that arrive together (in one message, or
    before the gateway's next run) get that answer once." A flush takes at most
    ``flush_commands`` items, shared between the accounts waiting: with two other
    accounts busy, mallory's one message of 1,000 copies runs over two flushes, and
    ``_again`` (reset at each flush) lets the second flush answer the id again."""
    core = live_core(fund_mallory=True)
    first = _a_sweep_answered(core, 300)
    for account in ("alice", "bob"):  # two honest accounts with a full message each
        core.receive(f"cx/v1/orders/{account}", json.dumps([
            {**ALICE_ORDER, "order_id": f"{account}{i}", "side": "buy", "price": "10.00",
             "qty": 1} for i in range(1000)]).encode(), now=2.0)
    copies = [{"action": "cancel", "order_id": "x", "command_id": "k"}] * 1000
    core.receive("cx/v1/orders/mallory", json.dumps(copies).encode(), now=2.0)
    again = []
    while core.pending:
        again += [r for r in reports(core.flush(now=2.0), "mallory") if r.get("duplicate")]
    assert again == [{**r, "duplicate": True} for r in first]  # once, not once a flush


def test_short_answers_given_again_to_a_message_turned_away_are_bounded_by_its_size():
    """An account over its rate has its messages turned away; a resend in one is still
    answered (told "rate_limited" after it acted, a bot would take it for refused). Short
    answers cost no tokens, but together no more events than the message has commands:
    ten resends of buys that each took two sells (five events an answer) get two answers
    now, not fifty reports, and the others theirs when sent again with the rate back."""
    core = live_core(fund_mallory=True)
    core.receive("cx/v1/orders/alice", json.dumps([
        {**ALICE_ORDER, "order_id": f"s{i}", "price": "59.00", "qty": 1}
        for i in range(20)]).encode(), now=1.0)
    core.flush(now=1.0)
    buys = [{**ALICE_ORDER, "order_id": f"b{i}", "side": "buy", "price": "59.00", "qty": 2,
             "command_id": f"c{i}"} for i in range(10)]
    core.receive("cx/v1/orders/mallory", json.dumps(buys).encode(), now=1.0)
    core.flush(now=1.0)
    sizes = {len(core.engine.answer("mallory", f"c{i}") or ()) for i in range(10)}
    assert sizes == {5}  # accepted, two trades, two settlements
    core.settings.rate, core.settings.burst = 1.0, 10.0
    resends = json.dumps(buys).encode()
    core.receive("cx/v1/orders/mallory", json.dumps([
        {**ALICE_ORDER, "order_id": f"w{i}", "side": "buy", "price": "10.00", "qty": 1}
        for i in range(10)]).encode(), now=5.0)  # the bucket's last tokens
    core.receive("cx/v1/orders/mallory", resends, now=5.0)
    out = reports(core.flush(now=5.0), "mallory")
    again = {r["command_id"] for r in out if r.get("duplicate") and "command_id" in r}
    assert len(again) == 2 and not any(r.get("reason") == "rate_limited" for r in out
                                       if r.get("command_id", "").startswith("c"))
    assert sum(bool(r.get("duplicate")) for r in out) <= len(buys)
    core.receive("cx/v1/orders/mallory", resends, now=60.0)  # the rate is back
    later = reports(core.flush(now=60.0), "mallory")
    assert {r["command_id"] for r in later if "command_id" in r} == {f"c{i}" for i in range(10)}
    alive(core, 61)
