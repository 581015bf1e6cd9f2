"""The gateway over real brokers: the embedded amqtt broker and a mosquitto started for
the test with the config ``carbonx broker-config`` writes. Bots connect with the bot
client (or plain MQTT clients) as they would from outside."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from markets import futures_market, open_market, order
from mosquitto import require_clients

from exchange import Engine
from exchange.commands import Deposit, IssueAllowances, RecordEmissions
from exchange.journal import create_journal, recover
from exchange.market import parse_market
from gateway.bots.client import ExchangeClient
from gateway.mqtt.embedded import GATEWAY_USER, EmbeddedBroker
from gateway.mqtt.service import GatewayCore, GatewaySettings, run_gateway

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LIMIT = 30  # seconds: no test here may hang


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request):
    """``(host, port, credentials, restart)`` of a running broker of either kind."""
    if request.param == "mosquitto":
        real = request.getfixturevalue("mosquitto_broker")
        return ("mosquitto", real.host, real.port, real.credentials, real.mosquitto)
    return ("embedded", None, None, {
        GATEWAY_USER: "gw-secret",
        "alice": "alice-secret",
        "bob": "bob-secret"
    }, None)


@contextlib.asynccontextmanager
async def gateway_on(host, port, credentials, core: GatewayCore):
    """Run *core*'s gateway on the broker at *host*:*port* for the block, once it is
    ready; yield its task; stop it after (what it raised is raised)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(
        run_gateway(core, host=host, port=port, username=GATEWAY_USER,
                    password=credentials[GATEWAY_USER], stop=stop, ready=ready,
                    retry_delay=0.1))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_gateway(kind, host, port, credentials, core: GatewayCore):
    """Run *core*'s gateway (and the embedded broker, for that kind) for the block;
    yield the broker's host and port and the gateway's task."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "embedded":
            embedded = await stack.enter_async_context(EmbeddedBroker(credentials))
            host, port = embedded.host, embedded.port
        async with gateway_on(host, port, credentials, core) as task:
            yield host, port, task


@contextlib.asynccontextmanager
async def exchange(broker, core: GatewayCore | None = None):
    """Run a gateway (and the embedded broker, for that kind) for the block."""
    kind, host, port, credentials, _ = broker
    core = core or GatewayCore(Engine(open_market()), settings=GatewaySettings(book_interval=0))
    async with running_gateway(kind, host, port, credentials, core) as (host, port, _):
        yield core, host, port, credentials


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, LIMIT))


async def collect(client: ExchangeClient, count: int, timeout: float = 5.0) -> list[dict]:
    found: list[dict] = []

    async def gather() -> None:
        async for report in client.reports():
            found.append(report)
            if len(found) >= count:
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(gather(), timeout)
    return found


def test_orders_in_fills_and_depth_out_in_order(broker):

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            async with (ExchangeClient("alice", creds["alice"], host, port, market_data=["CEA25"])
                        as alice, ExchangeClient("bob", creds["bob"], host, port) as bob):
                placed = [
                    await alice.place("CEA25", "sell", 10, f"{60 + i}.00", order_id=f"s{i}")
                    for i in range(5)
                ]
                assert [r["report"] for r in placed] == ["accepted"] * 5
                answer = await bob.place("CEA25", "buy", 35, "64.00", order_id="b1")
                assert answer["report"] == "accepted" and answer["order_id"] == "b1"
                bob_reports = await collect(bob, 5)
                alice_reports = await collect(alice, 9)
                books = []
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(3):
                        async for topic, body in alice.market_data():
                            if topic.endswith("/book"):
                                books.append(body)
                                if body["asks"] == [["63.00", 5, 1], ["64.00", 10, 1]]:
                                    break
        return bob_reports, alice_reports, books

    bob_reports, alice_reports, books = run(scenario())
    fills = [r for r in bob_reports if r["report"] == "fill"]
    assert [(f["price"], f["qty"], f["leaves_qty"]) for f in fills] == [("60.00", 10, 25),
                                                                        ("61.00", 10, 15),
                                                                        ("62.00", 10, 5),
                                                                        ("63.00", 5, 0)]
    assert all(f["liquidity"] == "taker" and f["order_id"] == "b1" for f in fills)
    maker = [r for r in alice_reports if r["report"] == "fill"]
    assert [r["order_id"] for r in maker] == ["s0", "s1", "s2", "s3"]
    seqs = [r["seq"] for r in alice_reports]
    assert seqs == sorted(seqs)  # one account's reports arrive in engine order
    assert books[-1]["asks"] == [["63.00", 5, 1], ["64.00", 10, 1]]
    assert books[-1]["bids"] == []


def test_a_gtd_order_expires_at_its_time_in_a_quiet_market(broker):
    """Nobody sends anything after the order: it is reported expired at its time (the
    gateway moves the engine's clock itself), and leaves the published book."""

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            async with ExchangeClient("alice", creds["alice"], host, port,
                                      market_data=["CEA25"]) as alice:
                expire_ts = time.time_ns() + 300_000_000
                answer = await alice.request({"action": "new", "order_id": "g1",
                                              "instrument": "CEA25", "side": "buy",
                                              "price": "59.00", "qty": 7, "tif": "gtd",
                                              "expire_ts": expire_ts})
                assert answer["report"] == "accepted"
                found = await collect(alice, 2, timeout=3.0)  # its acceptance, then
                heard = time.time_ns()
                expired = found[-1]
        return expired, (heard - expire_ts) / 1e9, core

    expired, late_s, core = run(scenario())
    assert (expired["report"], expired["order_id"]) == ("expired", "g1"), expired
    assert late_s < 1.0, late_s  # the timer looks every 0.25 s
    assert core.engine.order("alice/g1") is None


def test_an_account_cannot_trade_as_another_or_read_its_reports(broker):

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            async with aiomqtt.Client(host, port, username="bob", password=creds["bob"]) as spy:
                with contextlib.suppress(aiomqtt.MqttError):
                    await spy.subscribe("cx/v1/exec/alice", qos=1)
                with contextlib.suppress(aiomqtt.MqttError):
                    await spy.subscribe("cx/v1/exec/+", qos=1)
                # Bob writes on Alice's topic: the broker must drop it.
                await spy.publish("cx/v1/orders/alice", json.dumps(order("forged", "sell",
                                                                         "60.00")), qos=1)
                async with ExchangeClient("alice", creds["alice"], host, port) as alice:
                    answer = await alice.place("CEA25", "sell", 10, "61.00", order_id="real")
                    forged = await ExchangeClient.request(alice, {
                        **order("x", "buy", "61.00"), "account": "bob"
                    })
                    leaked = []
                    with contextlib.suppress(asyncio.TimeoutError):
                        async with asyncio.timeout(1.0):
                            async for message in spy.messages:
                                leaked.append(message.topic.value)
            return core, answer, forged, leaked

    core, answer, forged, leaked = run(scenario())
    assert answer["report"] == "accepted"
    assert forged["report"] == "rejected" and forged["reason"] == "wrong_account"
    assert leaked == []
    assert core.engine.order("alice/forged") is None and core.engine.order("alice/real")
    assert core.engine.accepted == 1


def test_bad_input_is_rejected_on_the_senders_topic_and_the_gateway_goes_on(broker):
    bad = [
        b"{not json", b"\xc1",
        json.dumps({
            "action": "deposit",
            "instrument": "CNY",
            "qty": "9"
        }).encode(),
        json.dumps(order("p", "buy", 61.5)).encode(),
        json.dumps(order("q", "buy", "61.50", qty="ten")).encode(),
        json.dumps({
            "action": "new"
        }).encode(), b"x" * 300_000
    ]

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            async with aiomqtt.Client(host, port, username="alice", password=creds["alice"]) as raw:
                await raw.subscribe("cx/v1/exec/alice", qos=1)
                for payload in bad:
                    await raw.publish("cx/v1/orders/alice", payload, qos=1)
                await raw.publish("cx/v1/orders/alice", json.dumps(order("ok", "buy", "61.00")),
                                  qos=1)
                answers = []
                async with asyncio.timeout(10):
                    async for message in raw.messages:
                        body = json.loads(message.payload)
                        answers.extend(body if isinstance(body, list) else [body])
                        if any(a.get("order_id") == "ok" for a in answers):
                            break
            return core, answers

    core, answers = run(scenario())
    reasons = [a.get("reason") for a in answers if a["report"] == "rejected"]
    assert reasons == [
        "malformed", "malformed", "not_permitted", "bad_command", "bad_command", "bad_command",
        "too_large"
    ]
    assert answers[-1]["report"] == "accepted"
    assert core.engine.accepted == 1 and core.engine.rejected == 0


def test_a_flood_is_rate_limited_and_others_still_trade(broker):

    async def scenario():
        core = GatewayCore(Engine(open_market()),
                           settings=GatewaySettings(rate=50, burst=50, book_interval=0))
        async with exchange(broker, core) as (core, host, port, creds):
            async with (ExchangeClient("alice", creds["alice"], host, port) as
                        alice, ExchangeClient("bob", creds["bob"], host, port) as bob):
                first = await asyncio.wait_for(asyncio.gather(*alice.submit_many(
                    [order(f"f{i}", "sell", "70.00", 1) for i in range(200)])), 20)
                flood = alice.submit_many([order(f"g{i}", "sell", "70.00", 1)
                                           for i in range(200)])
                while alice.not_taken < 200:  # each told rate_limited: not taken
                    await asyncio.sleep(0.01)
                calm = await bob.place("CEA25", "buy", 1, "59.00")
                pending = [f for f in flood if not f.done()]
        return first, pending, calm, core

    first, pending, calm, core = run(scenario())
    # A message of 200 commands, over the burst of 50, is taken with the bucket full and
    # leaves it in debt (at 50 a second: 3 s); the next 200 are refused whole, none taken;
    # the client keeps them pending (to resend), and bob trades meanwhile.
    assert [a["report"] for a in first] == ["accepted"] * 200
    assert calm["report"] == "accepted"
    assert len(pending) == 200
    assert len([o for o in core.engine.live_orders() if o.account == "alice"]) == 200


def test_reconnect_after_a_broker_restart_loses_and_doubles_nothing(mosquitto_broker):
    credentials = mosquitto_broker.credentials
    broker = ("mosquitto", mosquitto_broker.host, mosquitto_broker.port, credentials,
              mosquitto_broker.mosquitto)

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            async with ExchangeClient("alice", creds["alice"], host, port, retry_delay=0.05,
                                      resend_after=0.5) as alice:
                first = alice.submit_many([order(f"a{i}", "sell", "70.00", 1) for i in range(100)])
                await asyncio.sleep(0)  # in flight as the broker goes away
                await asyncio.to_thread(mosquitto_broker.mosquitto.stop)
                while_down = [alice.submit(order(f"d{i}", "sell", "70.00", 1)) for i in range(50)]
                await asyncio.sleep(0.3)
                await asyncio.to_thread(mosquitto_broker.mosquitto.start)
                answers = await asyncio.wait_for(asyncio.gather(*first, *while_down), 20)
                reconnected = alice.connects
        return core, answers, reconnected

    core, answers, reconnected = run(scenario())
    assert reconnected >= 2
    assert len(answers) == 150
    assert all(a["report"] == "accepted" for a in answers)
    ids = [a["order_id"] for a in answers]
    assert len(set(ids)) == 150
    live = [o.order_id for o in core.engine.live_orders()]
    assert sorted(live) == sorted(f"alice/{i}" for i in ids)  # each order once
    assert core.engine.accepted == 150


def test_the_gateway_waits_longer_while_the_broker_stays_away_and_says_when_it_is_back(
        mosquitto_broker, caplog):
    broker = ("mosquitto", mosquitto_broker.host, mosquitto_broker.port,
              mosquitto_broker.credentials, mosquitto_broker.mosquitto)

    async def scenario():
        async with exchange(broker) as (core, host, port, creds):
            await asyncio.to_thread(mosquitto_broker.mosquitto.stop)
            await asyncio.sleep(1.6)  # attempts after 0.1, 0.2, 0.4 and 0.8 s
            await asyncio.to_thread(mosquitto_broker.mosquitto.start)
            async with ExchangeClient("alice", creds["alice"], host, port) as alice:
                answer = await alice.submit(order("back", "sell", "70.00", 1))
        return answer

    with caplog.at_level(logging.INFO, logger="carbonx.gateway"):
        answer = run(scenario())
    assert answer["report"] == "accepted"
    said = [r.getMessage() for r in caplog.records if r.name == "carbonx.gateway"]
    lost = [m for m in said if m.startswith("broker ")]
    assert lost[0].startswith("broker connection lost")
    assert all(m.startswith("broker still unreachable") for m in lost[1:]) and len(lost) >= 3
    waits = [float(m.rsplit("retrying in ", 1)[1].split()[0]) for m in lost]
    assert waits[:4] == [0.1, 0.2, 0.4, 0.8][:len(waits[:4])]  # each wait twice the last
    back = [m for m in said if m.startswith("gateway reconnected")]
    assert len(back) == 1 and f"after {len(lost)} failed attempt(s)" in back[0]


def test_plain_mosquitto_rr_is_accepted_and_answered(mosquitto_broker):
    """Any MQTT client can trade: mosquitto_rr sends a command and waits for the report
    on one connection (an account's client id is its user name: one connection each)."""
    pub, _ = require_clients()
    rr = str(Path(pub).with_name("mosquitto_rr"))
    creds = mosquitto_broker.credentials
    broker = ("mosquitto", mosquitto_broker.host, mosquitto_broker.port, creds, None)

    async def scenario():
        async with exchange(broker) as (core, host, port, _):
            message = json.dumps({
                "action": "new",
                "order_id": "c1",
                "instrument": "CEA25",
                "side": "buy",
                "type": "limit",
                "price": "61.20",
                "qty": 100
            })
            asker = await asyncio.create_subprocess_exec(
                rr, "-h", host, "-p", str(port), "-u", "alice", "-P", creds["alice"], "-t",
                "cx/v1/orders/alice", "-e", "cx/v1/exec/alice", "-q", "1", "-m", message, "-W",
                "10", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            return await asker.communicate()

    out, err = run(scenario())
    report = json.loads(out)
    assert report["report"] == "accepted", err
    assert (report["order_id"], report["price"], report["qty"]) == ("c1", "61.20", 100)


def test_acknowledged_commands_survive_in_the_journal(broker, tmp_path):
    market = open_market()
    writer = create_journal(tmp_path / "journal", market.text, ledger=False)

    async def scenario():
        core = GatewayCore(Engine(market), journal=writer,
                           settings=GatewaySettings(book_interval=0))
        async with exchange(broker, core) as (core, host, port, creds):
            async with ExchangeClient("alice", creds["alice"], host, port) as alice:
                answers = await asyncio.gather(*alice.submit_many(
                    [order(f"j{i}", "sell", f"{70 + i}.00", 1) for i in range(20)]))
                # Every answer is out: recovery, right now, already has those orders.
                recovered = recover(tmp_path / "journal")
        return core, answers, recovered

    core, answers, recovered = run(scenario())
    writer.close()
    assert [a["report"] for a in answers] == ["accepted"] * 20
    assert recovered.seq == 20
    assert recovered.engine.state_hash() == core.engine.state_hash()


def test_a_bot_surrenders_against_its_obligation_on_its_own_topic(broker):
    # The gateway's clock is the wall clock: last year's obligation is open until the
    # end of this year, whatever year the test runs in.
    year = datetime.now(UTC).year - 1
    market = parse_market(f"""
[defaults]
currency = "CNY"
tick = "0.01"
[instruments.CEA{year}]
vintage = {year}
[instruments.CEA{year + 1}]
vintage = {year + 1}
[instruments.CCER]
offset = true
registered = "2024-06-01"
""")
    this, later = f"CEA{year}", f"CEA{year + 1}"
    engine = Engine(market, ledger=True)
    for command in (IssueAllowances(account="alice", instrument=this, qty=1000),
                    IssueAllowances(account="alice", instrument=later, qty=10),
                    IssueAllowances(account="alice", instrument="CCER",
                                    qty=100), RecordEmissions(account="alice", year=year,
                                                              qty=1000)):
        engine.execute(command)

    async def scenario():
        core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
        async with exchange(broker, core) as (core, host, port, creds):
            async with ExchangeClient("alice", creds["alice"], host, port) as alice:
                return [
                    await alice.surrender("CCER", 51, year=year),  # over the 5% cap
                    await alice.surrender(later, 1, year=year),  # no borrowing
                    await alice.surrender("CCER", 50, year=year),
                    await alice.surrender(this, 950, year=year)
                ]

    answers = run(scenario())
    assert [(a["report"], a.get("reason"))
            for a in answers] == [("rejected", "offset_cap_exceeded"),
                                  ("rejected", "ineligible_vintage"), ("surrendered", None),
                                  ("surrendered", None)]
    assert [a.get("year") for a in answers[2:]] == [year, year]
    obligation = engine.ledger.registry.obligations[("alice", year)]
    assert (obligation.allowances, obligation.offsets) == (950, 50)
    assert engine.ledger.holding("alice", this).available == 50


def test_futures_clear_over_mqtt_and_the_end_of_day_reaches_each_bot(broker):
    engine = Engine(parse_market(futures_market("2099-12")), ledger=True)
    for account in ("alice", "bob"):
        engine.execute(Deposit(account=account, currency="CNY", amount="10000.00"))

    async def scenario():
        core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
        async with exchange(broker, core) as (core, host, port, creds):
            async with (ExchangeClient("alice", creds["alice"], host, port) as
                        alice, ExchangeClient("bob", creds["bob"], host, port) as bob):
                answers = [
                    await alice.place("F", "sell", 2, "80.00"),  # 16,000 > 10,000
                    await alice.place("F", "sell", 1, "80.00"),
                    await bob.place("F", "buy", 1, "80.00")
                ]
                core.end_of_day()  # the operator's, queued in order
                await bob.place("F", "sell", 1, "99.00")  # the next command runs it
                # each bot: its answers, its fill and its clearing, then the day's
                # variation margin
                return answers, await collect(alice, 5), await collect(bob, 5)

    answers, alice_reports, bob_reports = run(scenario())
    assert [(a["report"], a.get("reason"))
            for a in answers] == [("rejected", "insufficient_margin"), ("accepted", None),
                                  ("accepted", None)]
    for reports_, position in ((alice_reports, -1), (bob_reports, 1)):
        kinds = [r["report"] for r in reports_]
        assert "fill" in kinds and "cleared" in kinds and "variation_margin" in kinds, kinds
        margin = reports_[kinds.index("variation_margin")]
        assert (margin["instrument"], margin["position"], margin["amount"]) == ("F", position,
                                                                                "0.00")
        seqs = [r["seq"] for r in reports_]
        assert seqs == sorted(seqs)  # in engine order, the day's news after the fill
    assert engine.ledger.clearing.positions["F"]["bob"].net == 1
    engine.check()
