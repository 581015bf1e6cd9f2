"""Block agreements and one-way auctions live, on the embedded broker and a real mosquitto.

Bots post and accept blocks and bid in auctions on their own orders topics and hear of them
on their exec topics (the account a directed block names is told of it); public block
quotes and each auction's state are market data; the operator clears auctions with
``carbonx admin``'s client. Block and auction fills carry their ``mode``. Actions that are
not a bot's (clearing an auction) or not the operator's (a block) are refused
``not_permitted``."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from markets import open_market
from test_gateway_mqtt import LIMIT, broker, collect, running_gateway  # noqa: F401

from exchange import Deposit, Engine, IssueAllowances
from exchange.commands import CloseAuction, PostBlock
from gateway.bots.client import ExchangeClient
from gateway.mqtt.serve import BrokerAddress
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import OPERATOR
from gateway.tools.admin import AdminClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def market_data(client: ExchangeClient, topic_end: str, until, timeout: float = 5.0):
    """The bodies of *client*'s market data on topics ending *topic_end*, until *until*
    holds for one."""
    found: list = []
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(timeout):
            async for topic, body in client.market_data():
                if topic.endswith(topic_end):
                    found.append(body)
                    if until(body):
                        break
    return found


def test_blocks_and_auctions_live(broker):  # noqa: F811  # the fixture
    kind, host, port, credentials, _ = broker
    if OPERATOR not in credentials:
        credentials = {**credentials, OPERATOR: "op-secret"}
    engine = Engine(open_market(), ledger=True)
    for command in (Deposit(account="bob", currency="CNY", amount="50000000.00"),
                    IssueAllowances(account="alice", instrument="CEA25", qty=500_000)):
        engine.execute(command)
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))

    async def scenario():
        async with running_gateway(kind, host, port, credentials, core) as (host_, port_, _):
            operator = BrokerAddress(host_, port_, OPERATOR, credentials[OPERATOR])
            async with (ExchangeClient("alice", credentials["alice"], host_, port_,
                                       market_data=["CEA25"]) as alice,
                        ExchangeClient("bob", credentials["bob"], host_, port_) as bob,
                        AdminClient(operator, timeout=10) as admin):
                answers = {
                    "directed": await alice.post_block("CEA25", "sell", 100_000, "60.00",
                                                       to_account="bob", order_id="b1"),
                    "small": await alice.post_block("CEA25", "sell", 99_999, "60.00",
                                                    to_account="bob", order_id="b2"),
                }
                told = await collect(bob, 1)  # the block names bob: he is told of it
                answers["accept"] = await bob.accept_block("b1", "alice")
                answers["public"] = await alice.post_block("CEA25", "sell", 100_000, "61.00",
                                                           order_id="p1")
                answers["accept_public"] = await bob.accept_block("p1", "alice")
                blocks = await market_data(alice, "/blocks", lambda b: b["status"] == "accepted")
                answers["open"] = await alice.open_auction("A1", "CEA25", "sell", 200_000,
                                                           "59.00")
                answers["bid"] = await bob.bid("A1", 150_000, "59.50", order_id="x1")
                answers["bot_close"] = await bob.request({"action": "auction_close",
                                                          "auction": "A1"})
                answers["operator_block"] = await admin.send(
                    PostBlock(order_id="o1", account="alice", instrument="CEA25", side="sell",
                              price="60.00", qty=100_000))
                answers["close"] = await admin.send(CloseAuction(auction="A1"))
                auctions = await market_data(alice, "/auctions",
                                             lambda b: b["status"] != "open")
                bob_reports = await collect(bob, 30, timeout=2)
                alice_reports = await collect(alice, 30, timeout=2)
        return answers, told, blocks, auctions, bob_reports, alice_reports

    answers, told, blocks, auctions, bob_reports, alice_reports = asyncio.run(
        asyncio.wait_for(scenario(), LIMIT))
    assert answers["directed"]["report"] == "block" and answers["directed"]["order_id"] == "b1"
    assert (answers["small"]["report"], answers["small"]["reason"]) == ("rejected",
                                                                       "below_block_minimum")
    assert [(r["report"], r["order_id"], r["account"]) for r in told] == [("block", "b1", "alice")]
    assert answers["accept"]["report"] == "block_accepted"
    assert answers["accept"]["to_account"] == "alice" and answers["accept"]["qty"] == 100_000
    assert answers["accept_public"]["report"] == "block_accepted"
    assert [(b["order_id"], b["account"], b["status"]) for b in blocks] == [("p1", "alice", "open"),
                                                                           ("p1", "alice",
                                                                            "accepted")]
    assert answers["open"]["report"] == "auction" and answers["bid"]["report"] == "bid_accepted"
    assert (answers["bot_close"]["report"], answers["bot_close"]["reason"]) == ("rejected",
                                                                               "not_permitted")
    assert (answers["operator_block"]["report"],
            answers["operator_block"]["reason"]) == ("rejected", "not_permitted")
    assert answers["close"]["report"] == "accepted"
    assert [(a["status"], a["bids"]) for a in auctions][-1] == ("cleared", 1)
    assert auctions[-1]["price"] == "59.50" and auctions[-1]["cleared_qty"] == 150_000
    assert auctions[-1]["unsold"] == 50_000
    fills = [(r["order_id"], r["qty"], r["price"], r.get("mode")) for r in bob_reports
             if r["report"] == "fill"]
    assert fills == [("b1", 100_000, "60.00", "block"), ("p1", 100_000, "61.00", "block"),
                     ("x1", 150_000, "59.50", "auction")]
    cleared = [r for r in alice_reports if r["report"] == "auction_cleared"]
    assert [(r["auction"], r["status"], r["qty"]) for r in cleared] == [("A1", "cleared", 150_000)]
    ledger = core.engine.ledger
    assert ledger is not None
    units = ledger.holding("bob", "CEA25")
    assert units is not None and units.total == 350_000
    left = ledger.holding("alice", "CEA25")
    assert left is not None and (left.available, left.held) == (150_000, 0)
    core.engine.check()
