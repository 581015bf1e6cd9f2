"""The wire decoder's fast path held equal to its plain one.

A message is decoded into rows whose text fields the decoder itself bounds
(``_BoundedRow``); a message that breaks a bound, or does not type-check, is read again
item by item as plain ``Row``s, each checked in Python (``_decode_each``). Both must give
the same commands and the same rejections, for any message.
"""

from __future__ import annotations

import msgspec
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
