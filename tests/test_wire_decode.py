"""The wire decoder's fast path held equal to its plain one.

A message is decoded into rows whose text fields the decoder itself bounds
(``_BoundedRow``); a message that breaks a bound, or does not type-check, is read again
item by item as plain ``Row``s, each checked in Python (``_decode_each``). Both must give
the same commands and the same rejections, for any message. So must the way of a message
of plain new orders (``NewRow``, ``WireDecoder._new_orders``).
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt.wire import WireDecoder
from gateway.protocol import MAX_TEXT

TEXT_KEYS = ("order_id", "command_id", "account", "instrument", "price", "side", "type", "tif",
             "stp", "to_account", "auction", "pricing")


def text(near: int = MAX_TEXT) -> st.SearchStrategy[str]:
    """Short values, and values either side of the bound."""
    return st.one_of(
        st.sampled_from(["", "c1", "CEA25", "60.00", "buy", "sell", "limit", "ioc", "none",
                         "bob", "60.015", "-1"]),
        st.integers(near - 2, near + 2).map(lambda n: "x" * n))


row = st.fixed_dictionaries(
    {"action": st.sampled_from(["new", "cancel", "amend", "mass_cancel", "surrender", "block",
                                "deposit", ""])},
    optional={
        **{key: text() for key in TEXT_KEYS},
        "qty": st.one_of(st.integers(-5, 10**6), st.just("10")),
        "price": st.one_of(text(), st.integers(1, 10**5)),
    })


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=6), packed=st.booleans(),
       account=st.sampled_from(["bob", None]))
def test_the_bounded_decode_answers_as_the_item_by_item_one(rows, packed, account):
    decoder = WireDecoder()
    decoder.ts = 5
    payload = (msgspec.msgpack.encode(rows) if packed else msgspec.json.encode(rows))
    fast = decoder.decode(account, payload)
    plain = decoder._decode_each(account, payload, packed)
    assert fast == plain
    for got, sent in zip(fast, rows):  # a too-long field is never let through
        if any(isinstance(v, str) and len(v) > MAX_TEXT for v in sent.values()):
            assert type(got).__name__ == "RejectedReport"


# --- a message of plain new orders (``WireDecoder._new_orders``, ``NewRow``) ---------------

_NEW = {"action": "new", "order_id": "c1", "instrument": "CEA25", "side": "buy",
        "price": "60.00", "qty": 10}
# Each key sometimes left out, sometimes anything from its pool: near or off the plain path.
_NEW_VALUES = {
    "action": st.sampled_from(["new", "cancel", "", None]),
    "order_id": st.one_of(st.sampled_from(["c1", "c2", "", None, 7, "a1"]), text()),
    "account": st.sampled_from(["bob", "", None, "alice", 3]),
    "instrument": st.one_of(st.sampled_from(["CEA25", "", None, "XX"]), text()),
    "side": st.sampled_from(["buy", "sell", "", None, "BUY"]),
    "type": st.sampled_from(["limit", "market", "stop", "stop_limit", "", None, "odd"]),
    "tif": st.sampled_from(["gtc", "day", "ioc", "fok", "gtd", "", None, "never"]),
    "price": st.one_of(st.sampled_from(["60.00", "60.015", "abc", "", None, "1e3", 60, True]),
                       text()),
    "qty": st.one_of(st.sampled_from([1, 0, -3, "10", True, None, 1.5, 1 << 63, (1 << 63) - 1,
                                      -(1 << 63), (1 << 64) - 1])),
    "stp": st.sampled_from(["", None, "none", "cancel_both", "cancel_resting",
                            "cancel_aggressor", "bogus"]),
    "command_id": st.one_of(st.sampled_from(["k1", "", None, "@ops/k1", "@", 5]), text()),
    "ts": st.sampled_from([5, None]),
    "stop_price": st.sampled_from(["59.00", None]),
    "post_only": st.sampled_from([True, None]),
    "year": st.sampled_from([2025, None]),
    "auction": st.sampled_from(["a1", None]),
}


@st.composite
def _new_row(draw):
    row = dict(_NEW)
    for key, pool in _NEW_VALUES.items():
        choice = draw(st.sampled_from(["keep"] * 12 + ["drop", "other"]))
        if choice == "drop":
            row.pop(key, None)
        elif choice == "other":
            row[key] = draw(pool)
    return row


class _Auction:
    def __init__(self, account):
        self.initiator = type("Order", (), {"account": account})()


@settings(max_examples=500, deadline=None)
@given(rows=st.one_of(st.lists(_new_row(), min_size=0, max_size=5), _new_row()),
       packed=st.booleans(), ts=st.sampled_from([5, 5, 5, None, 1 << 63, "7"]),
       default_stp=st.sampled_from([None, "none"]),
       auctions=st.sampled_from([{}, {"a1": _Auction("bob")}, {"c1": _Auction("bob")},
                                 {"c1": _Auction("alice")}]))
def test_a_message_of_plain_new_orders_decodes_as_on_the_plain_path(rows, packed, ts,
                                                                     default_stp, auctions):
    # benchmarks/gateway.py, batched: a message of plain new orders is decoded as NewRows,
    # and must give what the plain path (Rows through _commands) gives, or leave it to it.
    decoder = WireDecoder()
    decoder.ts = ts
    decoder.auction_ids = auctions
    decoder._reader.default_stp = default_stp
    payload = msgspec.msgpack.encode(rows) if packed else msgspec.json.encode(rows)
    fast = decoder.decode("bob", payload)
    plain_decoder = WireDecoder()
    plain_decoder.ts = ts
    plain_decoder.auction_ids = auctions
    plain_decoder._reader.default_stp = default_stp
    plain_decoder._new_orders = lambda account, payload, packed: None  # type: ignore
    assert fast == plain_decoder.decode("bob", payload)


def test_the_benchmarks_messages_take_the_plain_new_orders_way():
    decoder = WireDecoder()
    decoder.ts = 5
    rows = [{"action": "new", "order_id": f"b{n}", "instrument": "CEA25",
             "side": "buy" if n % 2 else "sell", "price": "60.00", "qty": 1}
            for n in range(100)]
    for payload in (msgspec.json.encode(rows), msgspec.msgpack.encode(rows),
                    msgspec.json.encode(rows[0])):
        orders = decoder._new_orders("bob", payload, payload[:1] not in (b"[", b"{"))
        assert orders is not None and orders == decoder.decode("bob", payload)


def _both_ways(rows, ts=5, auctions=None) -> tuple[list, list]:
    """What a message of *rows* from bob decodes to, with and without the new-orders way."""
    fast, plain = WireDecoder(), WireDecoder()
    for decoder in (fast, plain):
        decoder.ts = ts
        decoder.auction_ids = auctions or {}
    plain._new_orders = lambda account, payload, packed: None  # type: ignore[method-assign]
    payload = msgspec.json.encode(rows)
    return fast.decode("bob", payload), plain.decode("bob", payload)


@pytest.mark.parametrize("change, ts, auctions", [
    ({"account": "alice"}, 5, None),  # another account's: wrong_account
    ({"account": "bob"}, 5, None),  # its own, named
    ({"account": ""}, 5, None),
    ({"command_id": ""}, 5, None),
    ({"command_id": "@k"}, 5, None),
    ({"command_id": "k1"}, 5, None),
    ({"order_id": ""}, 5, None),
    ({"order_id": "a1"}, 5, {"a1": _Auction("bob")}),  # its own auction's id
    ({"order_id": "a1"}, 5, {"a1": _Auction("alice")}),  # another's auction: bob's own id
    ({"price": "60.015"}, 5, None),  # off the tick: the engine's to refuse
    ({"price": "abc"}, 5, None),
    ({"price": "1e3"}, 5, None),
    ({"qty": -(1 << 63) - 1}, 5, None),
    ({}, 1 << 63, None),  # the clock out of range
    ({"stp": "none"}, 5, None),
    ({"type": "market", "tif": "ioc"}, 5, None),
])
def test_each_rule_of_the_plain_path_holds_on_the_new_orders_way(change, ts, auctions):
    rows = [dict(_NEW, order_id="ok"), {**_NEW, **change}]
    fast, plain = _both_ways(rows, ts, auctions)
    assert fast == plain
    fast, plain = _both_ways(rows[1], ts, auctions)  # and as a single object
    assert fast == plain
