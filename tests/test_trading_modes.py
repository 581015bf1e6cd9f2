"""Blocks, auctions and the market-maker programme at the edges: the order file's rows, the
replay's fills (``mode``), daily statistics and market-maker report, the wire's rules for
bots and the operator, the engine's state round trip with open blocks and auctions, a
journal recovered, and the benchmark that replays a file with 10% of such rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import pytest

from exchange import Engine, FastBook, NaiveBook
from exchange.commands import (AcceptBlock, BidAuction, CloseAuction, OpenAuction, PostBlock)
from exchange.events import BlockPosted, TradeExecuted
from exchange.journal import recover
from exchange.market import parse_market
from exchange.orderfile import OrderFileError, parse_order_text
from gateway.cli import main
from gateway.mqtt.wire import WireDecoder

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_parts(name: str) -> tuple[str, str]:
    """The market TOML and the order rows (without expectations) of a golden scenario."""
    text = (SCENARIOS / f"{name}.txt").read_text()
    market = text.split("--- market\n")[1].split("--- orders\n")[0]
    orders = text.split("--- orders\n")[1].split("\n--- ")[0]
    rows = [line for line in orders.splitlines() if line and not line.startswith(("> ", "#"))]
    return market, "\n".join(rows) + "\n"


def test_mode_rows_read_from_csv_and_ndjson_alike():
    csv_text = ("action,order_id,account,instrument,side,price,qty,to_account,auction,pricing\n"
                "block,B1,a,CEA25,sell,60.00,100000,b,,\n"
                "block_accept,B1,b,,,,,a,,\n"
                "auction_open,,a,CEA25,sell,59.00,200000,,A1,pay_as_bid\n"
                "auction_bid,x1,b,,,59.50,1000,,A1,\n"
                "auction_close,,,,,,,,A1,\n")
    commands = parse_order_text(csv_text.encode(), "csv")
    assert commands == [
        PostBlock(order_id="B1", account="a", instrument="CEA25", side="sell", price="60.00",
                  qty=100_000, to_account="b"),
        AcceptBlock(order_id="B1", account="b", to_account="a"),
        OpenAuction(auction="A1", account="a", instrument="CEA25", side="sell", qty=200_000,
                    price="59.00", pricing="pay_as_bid"),
        BidAuction(auction="A1", order_id="x1", account="b", price="59.50", qty=1000),
        CloseAuction(auction="A1")
    ]
    lines = [json.dumps({k: v for k, v in row.items() if v})
             for row in csv.DictReader(csv_text.splitlines())]
    assert parse_order_text("\n".join(lines).encode(), "ndjson") == commands


@pytest.mark.parametrize(("row", "message"), [
    ("block,B1,a,CEA25,sell,,100000,b,,", "price is required for block"),
    ("block,B1,a,CEA25,,60.00,100000,b,,", "side is required for block"),
    ("block_accept,B1,b,,,,,,,", "to_account"),
    ("auction_open,,a,CEA25,sell,59.00,200000,,,", "auction is required"),
    ("auction_open,,a,CEA25,sell,59.00,200000,,A1,dutch", "unknown pricing 'dutch'"),
    ("auction_close,,,,,,,,,", "auction is required"),
    ("new,o1,a,CEA25,buy,60.00,10,,A1,", "auction is not a key of a new row"),
    ("cancel,o1,a,,,,,,A1,", "auction is not a key of a cancel row"),
    # each mode row refuses a key it has no use for, as an order row does: dropped, the
    # bid's pricing would not be its auction's
    ("auction_bid,x1,b,,,59.00,100000,,A1,pay_as_bid", "pricing is not a key of an auction_bid"),
    ("auction_close,,,,,,,,A1,uniform", "pricing is not a key of an auction_close row"),
    ("block_accept,k1,b,,,,,s,A1,", "auction is not a key of a block_accept row"),
    ("block_accept,k1,b,,,,,s,,uniform", "pricing is not a key of a block_accept row"),
    ("block,k1,s,CEA25,sell,60.00,100000,,A1,", "auction is not a key of a block row"),
    ("amend,o1,a,,,61.00,,,,uniform", "pricing is not a key of an amend row"),
    # the operator's close names no account: one given was dropped, the auction cleared
    ("auction_close,,zz,,,,,,A1,,", "account is not a key of an auction_close row"),
    # nor has any mode row a use for a registry row's keys
    ("block,k1,s,CEA25,sell,60.00,100000,b,,,ccer", "quality is not a key of a block row"),
    ("auction_bid,x1,b,,,59.00,1000,,A1,,ccer", "quality is not a key of an auction_bid row"),
])
def test_a_mode_row_that_cannot_be_read_names_its_line(row, message):
    text = ("action,order_id,account,instrument,side,price,qty,to_account,auction,pricing,"
            "quality\n" + row + ("," if row.count(",") == 9 else ""))
    with pytest.raises(OrderFileError) as caught:
        parse_order_text(text.encode(), "csv", name="f.csv")
    assert caught.value.line == 2 and message in str(caught.value)


def test_replay_writes_modes_in_fills_daily_volumes_and_the_market_maker_report(tmp_path, capsys):
    market_text, orders = scenario_parts("auction_primary")
    market, path = tmp_path / "m.toml", tmp_path / "o.csv"
    market.write_text(market_text)
    path.write_text(orders)
    fills, daily = tmp_path / "fills.ndjson", tmp_path / "daily.csv"
    assert main(["replay", str(path), "--market", str(market), "--ledger", "--fills", str(fills),
                 "--daily", str(daily), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trades"] == 2 and summary["volume"] == 100_000
    lines = [json.loads(line) for line in fills.read_text().splitlines()]
    assert [(f["mode"], f["qty"], f["price"], f["sell_account"]) for f in lines] == [
        ("auction", 70_000, "58.00", "@registry"), ("auction", 30_000, "58.00", "@registry")]
    rows = list(csv.DictReader(daily.open()))
    assert [(r["instrument"], r["volume"], r["block_volume"], r["auction_volume"])
            for r in rows] == [("CEA25", "0", "0", "100000")]

    market_text, orders = scenario_parts("market_maker_quoting")
    market.write_text(market_text)
    path.write_text(orders)
    report = tmp_path / "mm.csv"
    assert main(["replay", str(path), "--market", str(market), "--ledger", "--mm-report",
                 str(report)]) == 0
    rows = list(csv.DictReader(report.open()))
    assert [(r["account"], r["presence_pct"], r["average_spread"], r["met"], r["rebate"])
            for r in rows] == [("mm1", "50.00", "0.10", "yes", "3.00"),
                               ("mm2", "0.00", "1.50", "no", "0.00")]
    assert rows[0]["quoted_s"] == "0.00000005" and rows[0]["session_s"] == "0.0000001"
    capsys.readouterr()
    assert main(["replay", str(path), "--mm-report", str(report)]) == 2
    assert "--mm-report needs --ledger" in capsys.readouterr().err


@pytest.mark.parametrize("book", [FastBook, NaiveBook], ids=["fast", "naive"])
def test_open_blocks_and_auctions_survive_the_state_round_trip(book):
    market_text, orders = scenario_parts("auction_sale")
    market = parse_market(market_text)
    commands = parse_order_text(orders.encode(), "csv")
    cut = next(i for i, c in enumerate(commands) if type(c) is CloseAuction)
    extra = [PostBlock(order_id="B9", account="power", instrument="CEA25", side="sell",
                       price="60.00", qty=100_000, to_account="b1")]
    live = Engine(market, book=book, ledger=True)
    for command in commands[:cut] + extra:
        live.execute(command)
    restored = Engine.from_state(live.to_state(), book=book)
    restored.check()
    assert restored.state_hash() == live.state_hash()
    assert [b.order_id for b, _ in restored.open_blocks()] == ["B9"]
    for command in commands[cut:] + [AcceptBlock(order_id="B9", account="b1",
                                                 to_account="power")]:
        assert msgspec.json.encode(restored.execute(command)) == msgspec.json.encode(
            live.execute(command))
        restored.check()
    assert restored.state_hash() == live.state_hash()


def test_a_journal_of_blocks_and_auctions_recovers_the_same_state(tmp_path, capsys):
    market_text, orders = scenario_parts("block_agreements")
    market, path = tmp_path / "m.toml", tmp_path / "o.csv"
    market.write_text(market_text)
    path.write_text(orders)
    assert main(["replay", str(path), "--market", str(market), "--ledger", "--journal",
                 str(tmp_path / "j"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recovered = recover(tmp_path / "j").engine
    assert recovered.state_hash() == summary["state_hash"]
    assert recovered.trades == summary["trades"] == 2


def test_the_wire_keeps_bots_ids_apart_and_each_side_to_its_own_actions():
    decoder = WireDecoder()
    decoder.ts = 123  # the gateway's clock stamps every command
    block, accept, bid, close, slash = decoder.decode("alice", json.dumps([
        {"action": "block", "order_id": "b1", "instrument": "CEA25", "side": "sell",
         "price": "60.00", "qty": 100_000, "to_account": "bob"},
        {"action": "block_accept", "order_id": "p1", "to_account": "carol"},
        {"action": "auction_bid", "auction": "A1", "order_id": "x1", "price": "59.00",
         "qty": 1000},
        {"action": "auction_close", "auction": "A1"},
        {"action": "auction_open", "auction": "A/1", "instrument": "CEA25", "side": "sell",
         "qty": 100_000, "price": "59.00"},
    ]).encode())
    assert type(block) is PostBlock and block.order_id == "alice/b1"
    assert block.account == "alice" and block.ts == 123
    assert type(accept) is AcceptBlock and accept.order_id == "carol/p1"  # the poster's id
    assert type(bid) is BidAuction and bid.order_id == "alice/x1" and bid.auction == "A1"
    assert (close.reason, slash.reason) == ("not_permitted", "bad_command")
    opened, posted = decoder.decode(None, json.dumps([
        {"action": "auction_open", "auction": "P1", "account": "@registry",
         "instrument": "CEA25", "side": "sell", "qty": 100_000, "price": "59.00"},
        {"action": "block", "order_id": "b1", "account": "alice", "instrument": "CEA25",
         "side": "sell", "price": "60.00", "qty": 100_000},
    ]).encode())
    assert type(opened) is OpenAuction and opened.account == "@registry"
    assert posted.reason == "not_permitted"


def test_a_matching_only_engine_trades_blocks_without_holds():
    market_text, _ = scenario_parts("block_agreements")
    engine = Engine(parse_market(market_text))
    posted = engine.execute(PostBlock(order_id="B1", account="a", instrument="CEA25", side="buy",
                                      price="60.00", qty=100_000))
    assert type(posted[0]) is BlockPosted
    traded = engine.execute(AcceptBlock(order_id="B1", account="b", to_account="a"))
    assert [type(e) for e in traded][1:] == [TradeExecuted]
    assert engine.trades == 1 and engine.volume == 100_000
    engine.check()


def test_a_cancel_naming_another_instrument_withdraws_no_block_nor_bid():
    """It withdrew them (an order's was rejected): a member who names the instrument as
    a check lost a block or bid it did not mean to pull."""
    from exchange.commands import CancelOrder

    market_text, _ = scenario_parts("block_agreements")
    engine = Engine(parse_market(market_text + """
[instruments.CEA24]
tick = "0.01"
vintage = 2024
"""))
    engine.execute(PostBlock(order_id="B1", account="a", instrument="CEA25", side="buy",
                             price="60.00", qty=100_000))
    engine.execute(OpenAuction(auction="A1", account="s", instrument="CEA25", side="sell",
                               qty=100_000, price="59.00"))
    engine.execute(BidAuction(auction="A1", order_id="x1", account="b", price="59.50",
                              qty=100_000))
    for order_id, account in (("B1", "a"), ("x1", "b")):
        wrong = engine.execute(CancelOrder(order_id=order_id, account=account,
                                           instrument="CEA24"))
        assert [(type(e).__name__, e.reason) for e in wrong] == [
            ("CommandRejected", "unknown_order")]
        other = engine.execute(CancelOrder(order_id=order_id, account="z"))
        assert other[0].reason == "not_owner"
        right = engine.execute(CancelOrder(order_id=order_id, account=account,
                                           instrument="CEA25"))
        assert [e.reason for e in right] == ["cancelled_by_owner"]
    engine.check()


def test_the_modes_benchmark_runs_and_agrees():
    from benchmarks import modes

    result = modes.measure(3000, repeat=1)
    assert result["failures"] == []
    assert result["trades_by_mode"]["block"] > 0 and result["trades_by_mode"]["auction"] > 0
    assert result["messages"]["with_modes"] > result["messages"]["listing_only"]


def test_a_gateway_over_a_recovered_engine_still_publishes_its_public_blocks_ends():
    from gateway.mqtt.service import GatewayCore, GatewaySettings

    market_text, _ = scenario_parts("block_agreements")
    engine = Engine(parse_market(market_text))
    engine.execute(PostBlock(order_id="alice/p1", account="alice", instrument="CEA25",
                             side="sell", price="60.00", qty=100_000))
    engine.execute(OpenAuction(auction="A1", account="alice", instrument="CEA25", side="sell",
                               qty=100_000, price="59.00"))
    # a gateway started over this engine (as after a restart from the journal)
    core = GatewayCore(Engine.from_state(engine.to_state()),
                       settings=GatewaySettings(book_interval=0))
    core.receive("cx/v1/orders/alice", json.dumps({"action": "cancel", "order_id": "p1"}).encode(),
                 now=0.0)
    core.receive("cx/v1/orders/bob", json.dumps({"action": "auction_bid", "auction": "A1",
                                                  "order_id": "x1", "price": "59.50",
                                                  "qty": 1000}).encode(), now=0.0)
    outgoing = core.flush(now=0.0)
    data = {topic: json.loads(payload) for topic, payload, *_ in outgoing
            if topic.startswith("cx/v1/md/CEA25/")}
    assert data["cx/v1/md/CEA25/blocks"]["status"] == "withdrawn"
    assert data["cx/v1/md/CEA25/blocks"]["order_id"] == "p1"
    assert (data["cx/v1/md/CEA25/auctions"]["status"],
            data["cx/v1/md/CEA25/auctions"]["bids"]) == ("open", 1)
    # As it connects, a gateway publishes retained each instrument's status and each open
    # auction's state: after a restart a late subscriber got only the status (the
    # embedded broker keeps no retained message across its own restart).
    again = GatewayCore(Engine.from_state(core.engine.to_state()))
    retained = [(topic, json.loads(payload)) for topic, payload, _, keep in again.retained()
                if keep]
    assert [t for t, _ in retained if t.endswith("/status")] == [
        f"cx/v1/md/{symbol}/status" for symbol in again.engine.market.instruments]
    auctions = [body for t, body in retained if t == "cx/v1/md/CEA25/auctions"]
    assert [(b["auction"], b["status"], b["bids"], b["seq"]) for b in auctions] == [
        ("A1", "open", 1, again.engine.seq)]


def test_no_position_limits_sets_the_limits_aside_and_the_journal_keeps_it(tmp_path, capsys):
    funded = Path(__file__).parent.parent / "examples" / "orders-funded.csv"
    assert main(["replay", str(funded), "--ledger", "--json"]) == 0
    limited = json.loads(capsys.readouterr().out)
    assert limited["rejects"].get("position_limit", 0) > 0
    assert main(["replay", str(funded), "--ledger", "--no-position-limits", "--journal",
                 str(tmp_path / "j"), "--json"]) == 0
    free = json.loads(capsys.readouterr().out)
    assert free["rejected"] == 0 and free["trades"] > limited["trades"]
    recovered = recover(tmp_path / "j").engine
    assert recovered.market.limits.by_kind == () and recovered.state_hash() == free["state_hash"]
    assert recovered.market.without_limits() is recovered.market


def test_a_withdrawn_bid_leaves_the_auctions_count_and_the_view_alike():
    from gateway.mqtt.service import GatewayCore, GatewaySettings
    from gateway.web.view import MarketView

    market_text, _ = scenario_parts("block_agreements")
    core = GatewayCore(Engine(parse_market(market_text)), settings=GatewaySettings(book_interval=0))
    view = MarketView(core.engine)
    core.watchers.append(view.on_events)

    def send(account: str, command: dict) -> dict:
        core.receive(f"cx/v1/orders/{account}", json.dumps(command).encode(), now=0.0)
        out = core.flush(now=0.0)
        return {topic: json.loads(p) for topic, p, *_ in out if topic.endswith("/auctions")}

    send("alice", {"action": "auction_open", "auction": "A1", "instrument": "CEA25",
                   "side": "sell", "qty": 100_000, "price": "59.00"})
    for bid in ("x1", "x2"):
        send("bob", {"action": "auction_bid", "auction": "A1", "order_id": bid,
                     "price": "59.50", "qty": 1000})
    state = send("bob", {"action": "cancel", "order_id": "x2"})["cx/v1/md/CEA25/auctions"]
    assert (state["status"], state["bids"]) == ("open", 1)
    assert view.auction_bids["A1"] == 1
    # a gateway over the same engine, recovered, counts the same
    again = GatewayCore(Engine.from_state(core.engine.to_state()))
    assert again._auctions["A1"][1] == 1 == MarketView(again.engine).auction_bids["A1"]


def _limited_future_market(financial: int):
    """CEA25 and a future F on it (1 lot = 1,000 t), a financial institution's position
    limit *financial* tonnes."""
    return parse_market(f'''
[defaults]
currency = "CNY"
[instruments.CEA25]
kind = "spot"
vintage = 2025
tick = "0.01"
[instruments.F]
kind = "future"
tick = "0.01"
contract_size = 1000
underlying = "CEA25"
contract_month = "2030-12"
initial_margin = "100.00"
max_qty = 1000
[limits]
financial = {financial}
''')


def test_a_futures_buy_amended_up_is_held_to_the_position_limit():
    market = _limited_future_market(150_000)
    engine = Engine(market, ledger=True)
    for command in parse_order_text(b"action,order_id,account,instrument,side,price,qty,kind\n"
                                    b"open_account,,fund,,,,,financial\n"
                                    b"deposit,,fund,CNY,,,100000000.00,\n"
                                    b"new,f1,fund,F,buy,80.00,151,\n"
                                    b"new,f1,fund,F,buy,80.00,150,\n"
                                    b"amend,f1,fund,,,,400,\n"
                                    b"amend,f1,fund,,,,100,\n", "csv"):
        engine.execute(command)
    assert engine.rejects == {"position_limit": 2}
    assert engine.order("f1").qty == 100
    engine.check()


def test_a_futures_buy_that_only_shortens_a_short_is_never_over_the_position_limit():
    """A buy was counted as if it added its lots to the account's exposure: a hedger at
    its limit could not buy back a short (nor could its close-out, which went to the
    clearing house instead). Only what a buy takes the net long past counts."""
    market = _limited_future_market(1_000_000)
    engine = Engine(market, ledger=True)
    for command in parse_order_text(b"action,order_id,account,instrument,side,price,qty,kind\n"
                                    b"open_account,,h,,,,,financial\n"
                                    b"deposit,,h,CNY,,,100000000.00,\n"
                                    b"issue,,h,CEA25,,,1000000,\n"
                                    b"deposit,,b,CNY,,,100000000.00,\n"
                                    b"new,h1,h,F,sell,80.00,5,\n"
                                    b"new,b1,b,F,buy,80.00,5,\n"
                                    b"new,b2,b,F,sell,80.00,6,\n"
                                    b"new,h2,h,F,buy,80.00,6,\n"  # 5 back and 1 long: too many
                                    b"new,h3,h,F,buy,80.00,5,\n", "csv"):  # back to flat
        engine.execute(command)
    assert engine.rejects == {"position_limit": 1}
    assert engine.order("h2") is None and engine.order("b2").qty == 1
    assert engine.ledger is not None
    assert engine.ledger.clearing.positions["F"].get("h") is None or \
        engine.ledger.clearing.positions["F"]["h"].net == 0
    engine.check()


def test_a_large_orders_fee_accrual_stays_under_one_minor_unit_and_its_state_encodes():
    from exchange.persist import encode_state

    market_text, _ = scenario_parts("fees_accrue_per_order")
    market = parse_market(market_text.replace('tick = "0.01"', 'tick = "0.01"\nmax_qty = '
                                              '1_000_000_000'))
    engine = Engine(market, ledger=True)
    for command in parse_order_text(
            b"action,order_id,account,instrument,side,price,qty\n"
            b"deposit,,b,CNY,,,40000000000000000.00\nissue,,s,CEA25,,,400000000\n"
            b"new,b1,b,CEA25,buy,100000000.00,30000000\n"
            b"new,s1,s,CEA25,sell,100000000.00,20000000\n", "csv"):
        engine.execute(command)
    engine.check()
    assert 0 <= engine.ledger._holds["b1"].accrued < 1_000_000
    assert encode_state(engine)
