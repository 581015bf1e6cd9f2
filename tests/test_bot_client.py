"""The bot client's own rules, found by a bot writer: each answer reaches ``reports()``
once (a resend's repeated answer is passed over when the first came), messages the
gateway would refuse whole are refused here before anything is sent, a refused login
says so at once, and a closed client ends its streams and takes no more commands."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.bots.client import ExchangeClient, ExchangeError
from gateway.mqtt.embedded import EmbeddedBroker
from gateway.protocol import MAX_COMMANDS, OrderedSender, exec_topic

EXEC = exec_topic("alice")


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario, 20))


def deliver(client: ExchangeClient, *reports: dict) -> None:
    """The gateway's message of *reports* on alice's exec topic, as the client gets it."""
    client._dispatch(EXEC, json.dumps(list(reports)).encode())


def answer(command_id: str, report: str = "accepted", duplicate: bool = False) -> dict:
    body = {"report": report, "order_id": f"o-{command_id}", "command_id": command_id}
    return {**body, "duplicate": True} if duplicate else body


def fill(order: str, qty: int, duplicate: bool = False) -> dict:
    body = {"report": "fill", "order_id": order, "qty": qty}
    return {**body, "duplicate": True} if duplicate else body


def test_each_answer_reaches_reports_once_however_often_it_is_resent():
    """The client's resend timer, under a broker's rate limit, had the gateway repeat
    answers (marked duplicate): 1,205 fill reports for 1,000 trades, and the example
    bots counted each into their inventory."""

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw")
        futures = client.submit_many([{"action": "new", "order_id": f"o-c{n}",
                                       "command_id": f"c{n}"} for n in (1, 2, 3)])
        deliver(client, answer("c1"), fill("o-c1", 10))
        assert futures[0].result()["command_id"] == "c1"
        # c1 answered again (a resend's answer): passed over, its fill too
        deliver(client, answer("c1", duplicate=True), fill("o-c1", 10, duplicate=True))
        # c2's first answer was lost (a restart): its repeated answer is the one it gets
        deliver(client, answer("c2", duplicate=True), fill("o-c2", 5, duplicate=True))
        assert futures[1].result()["duplicate"] is True
        # one message: c1's answer once more, then c3's, then a fill of a resting order
        deliver(client, answer("c1", duplicate=True), fill("o-c1", 10, duplicate=True),
                answer("c3"), fill("o-c3", 7), fill("o-rest", 1))
        # a repeated answer long enough to run on into the next message
        deliver(client, fill("o-rest", 2), answer("c3", duplicate=True))
        deliver(client, fill("o-c3", 7, duplicate=True), fill("o-rest", 3))
        got = [(r["report"], r["order_id"], r.get("qty")) for r in client.reports_waiting()]
        assert got == [("accepted", "o-c1", None), ("fill", "o-c1", 10),
                       ("accepted", "o-c2", None), ("fill", "o-c2", 5),
                       ("accepted", "o-c3", None), ("fill", "o-c3", 7), ("fill", "o-rest", 1),
                       ("fill", "o-rest", 2), ("fill", "o-rest", 3)]
        assert client.unanswered == 0
        await client.close()

    run(scenario())


def test_a_command_the_gateway_did_not_take_stays_pending_until_its_answer():
    """Under a flood, a command told 'overloaded' (or 'rate_limited') did nothing; the
    resend timer's copy found room and acted. The client took the refusal for the
    answer and passed the real 'accepted' over as a repeat: 24,002 orders the bots
    believed refused rested in the book. Such a refusal is now no answer: the command
    stays pending and is resent, and its answer is the copy's."""

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw")
        futures = client.submit_many([{"action": "new", "order_id": f"o-c{n}",
                                       "command_id": f"c{n}"} for n in (1, 2)])
        refused = {"report": "rejected", "reason": "overloaded", "message": "5000 waiting",
                   "command_id": "c1", "order_id": "o-c1"}
        deliver(client, refused, {**refused, "reason": "rate_limited", "command_id": "c2",
                                  "order_id": "o-c2"})
        assert not futures[0].done() and not futures[1].done()
        assert (client.unanswered, client.not_taken) == (2, 2)
        deliver(client, refused)  # the copy sent meanwhile, turned away too
        deliver(client, answer("c1"), fill("o-c1", 4), answer("c2", "rejected"))
        assert futures[0].result()["report"] == "accepted"
        assert futures[1].result()["report"] == "rejected"
        deliver(client, answer("c1", duplicate=True))  # a third copy's repeated answer
        got = [(r["report"], r["order_id"]) for r in client.reports_waiting()]
        assert got == [("accepted", "o-c1"), ("fill", "o-c1"), ("rejected", "o-c2")]
        assert client.unanswered == 0 and client.not_taken == 3
        # a refusal for a command no longer pending is a repeat, passed over
        deliver(client, refused)
        assert client.reports_waiting() == []
        await client.close()

    run(scenario())


def test_a_message_the_gateway_would_refuse_whole_is_refused_before_it_is_sent():
    """1,001 commands in one message were answered too_many_commands (with no command
    id), then resent by the client in smaller batches and all placed."""

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw")
        with pytest.raises(ValueError, match=f"at most {MAX_COMMANDS}"):
            client.submit_many([{"action": "cancel", "order_id": str(n)}
                                for n in range(MAX_COMMANDS + 1)])
        with pytest.raises(ValueError, match="bytes: the gateway takes at most"):
            client.submit_many([{"action": "cancel", "order_id": "x" * 300_000}])
        assert client.unanswered == 0  # nothing left to be resent
        await client.close()

    run(scenario())


def test_a_refused_login_says_so_at_once_and_a_closed_client_ends_its_streams():

    async def scenario() -> None:
        async with EmbeddedBroker({"gateway": "g", "operator": "o", "alice": "pw"}) as broker:
            started = time.monotonic()
            with pytest.raises(ExchangeError, match="refused the login of 'alice'"):
                async with ExchangeClient("alice", "wrong", broker.host, broker.port,
                                          timeout=10):
                    pass
            assert time.monotonic() - started < 5  # not the whole timeout
            async with ExchangeClient("alice", "pw", broker.host, broker.port) as client:
                assert client.connected
            # closed: the streams end, and no command is taken to wait for ever
            assert [r async for r in client.reports()] == []
            assert [m async for m in client.market_data()] == []
            with pytest.raises(ExchangeError, match="closed"):
                await client.cancel("x")

    run(scenario())


def test_a_command_submitted_while_reconnecting_leaves_before_later_ones():
    """On reconnecting, the client resends what is unanswered and only then counts as
    connected. A command submitted while a resend was being published was pending but in
    no batch: it went out ~2 s later with the resend timer, behind the commands sent once
    connected (an amend to 60.05 followed by one to 60.08 left the order at 60.05). The
    resend is queued on the connection's sender, which keeps call order, with no await
    before the client counts as connected: what is submitted after goes behind it."""

    class SlowBroker:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def publish(self, topic, payload, qos=0, retain=False):
            body = json.loads(payload)
            for command in body if isinstance(body, list) else [body]:
                self.sent.append(command["command_id"])
            await asyncio.sleep(0.01)  # the broker's acknowledgement

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw")
        client.submit({"action": "cancel", "order_id": "o0", "command_id": "c0"})
        broker = SlowBroker()
        sender = OrderedSender(broker)
        client._resend(sender, late=False)
        client._sender = sender
        client._connected.set()  # as _run does, with no await between
        client.submit({"action": "amend", "order_id": "o1", "price": "60.05",
                       "command_id": "a1"})
        client.submit({"action": "amend", "order_id": "o1", "price": "60.08",
                       "command_id": "a2"})
        await asyncio.sleep(0.05)
        assert broker.sent == ["c0", "a1", "a2"]
        assert client.unanswered == 3
        await client.close()

    run(scenario())


def test_a_command_left_unanswered_is_sent_again_less_and_less_often():
    """Under a slow gateway every waiting command went again every 2 s, so the gateway
    had many times the work the bots meant (25,798 commands for 1,816 in one run). A copy
    now waits twice as long as the one before, up to RESEND_MAX; a reconnect sends all."""
    from gateway.bots.client import RESEND_MAX

    class Broker:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def publish(self, topic, payload, qos=0, retain=False):
            body = json.loads(payload)
            self.sent += [c["command_id"] for c in (body if isinstance(body, list) else [body])]

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw", resend_after=2.0)
        client.submit({"action": "cancel", "order_id": "o0", "command_id": "c0"})
        broker = Broker()
        sender = OrderedSender(broker)
        entry = client._pending["c0"]
        now = asyncio.get_running_loop().time()
        waits = []
        for _ in range(8):
            client._resend(sender, late=True)  # not yet due: nothing goes
            entry[2] = now - entry[3]  # as if its wait had passed
            client._resend(sender, late=True)
            waits.append(entry[3])
        await asyncio.sleep(0.01)
        assert broker.sent == ["c0"] * 8
        assert waits == [4.0, 8.0, 16.0, RESEND_MAX, RESEND_MAX, RESEND_MAX, RESEND_MAX,
                         RESEND_MAX]
        client._resend(sender, late=False)  # a reconnect: every command unanswered, now
        await asyncio.sleep(0.01)
        assert broker.sent == ["c0"] * 9
        await client.close()

    run(scenario())


def test_mass_cancel_may_name_a_side():
    """A market maker pulling one side of its quotes: the protocol takes ``side`` on a
    mass cancel, and the client's ``mass_cancel`` had no way to send it."""

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw")
        asking = asyncio.ensure_future(client.mass_cancel("CEA25", side="sell"))
        await asyncio.sleep(0)
        [(command, *_)] = client._pending.values()
        assert {k: v for k, v in command.items() if k != "command_id"} == {
            "action": "mass_cancel", "instrument": "CEA25", "side": "sell"}
        asking.cancel()
        await client.close()

    run(scenario())


def test_market_data_dropped_unread_is_not_counted_as_reports_dropped():
    """A bot that subscribes to market data and reads none lost no report, but the
    market data it left unread was counted in dropped_reports, which says reports were
    lost."""

    async def scenario() -> None:
        client = ExchangeClient("alice", "pw", queue_limit=3)
        trade = b'[{"seq":1,"trade_id":1,"instrument":"CEA25","price":"60.00","qty":1}]'
        for _ in range(5):
            client._dispatch("cx/v1/md/CEA25/trades", trade)
        assert (client.dropped_market_data, client.dropped_reports) == (2, 0)
        for n in range(5):
            client._dispatch("cx/v1/exec/alice", b'{"report":"expired","seq":%d}' % n)
        assert (client.dropped_market_data, client.dropped_reports) == (2, 2)
        await client.close()

    run(scenario())
