"""Hostile messages for the gateway, shared by the core tests, the broker tests and the
larger seeded run in ``benchmarks/hostile.py``. Each case is ``(name, topic, payload)``;
the sender is ``mallory`` unless the topic says otherwise."""

from __future__ import annotations

import json
import random

import msgspec

TOPIC = "cx/v1/orders/mallory"


def nested(depth: int, *, packed: bool = False) -> bytes:
    """A list nested *depth* deep, as JSON or msgpack (built without recursion)."""
    if not packed:
        return b"[" * depth + b"]" * depth
    return b"\x91" * depth + b"\x90"  # fixarray of one item, *depth* times, then []


def _new(**extra) -> dict:
    return {
        "action": "new",
        "order_id": "m1",
        "instrument": "CEA25",
        "side": "buy",
        "price": "60.00",
        "qty": 1,
        **extra
    }


def _json(body) -> bytes:
    return json.dumps(body).encode()


def corpus() -> list[tuple[str, str, bytes]]:
    """The fixed cases: each once broke, or could break, a gateway."""
    cases: list[tuple[str, str, bytes]] = []

    def add(name: str, body, topic: str = TOPIC) -> None:
        payload = body if isinstance(body, bytes) else _json(body)
        cases.append((name, topic, payload))

    for symbol in ("CEA26", "CEA-25", "", "cx/v1/#", "\u0000", "x" * 64):
        add(f"new unknown instrument {symbol[:8]!r}", _new(instrument=symbol))
        add(f"cancel unknown instrument {symbol[:8]!r}", {
            "action": "cancel",
            "order_id": "m1",
            "instrument": symbol
        })
        add(f"amend unknown instrument {symbol[:8]!r}", {
            "action": "amend",
            "order_id": "m1",
            "instrument": symbol,
            "qty": 2
        })
        add(f"mass_cancel unknown instrument {symbol[:8]!r}", {
            "action": "mass_cancel",
            "instrument": symbol
        })
        add(f"surrender unknown instrument {symbol[:8]!r}", {
            "action": "surrender",
            "instrument": symbol,
            "qty": 1,
            "year": 2024
        })
    add("deep JSON list", nested(1000))
    add("deep JSON list 100k", nested(100_000))
    add("deep JSON in a field", b'{"action":"new","order_id":' + nested(2000) + b"}")
    add("deep JSON objects", b"[" + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"]")
    add("deep msgpack", nested(1000, packed=True))
    add("long order id", _new(order_id="x" * 120_000))
    add("long command id", _new(command_id="y" * 100_000))
    add("long price", _new(price="1" * 5000))
    add("long side", _new(side="b" * 10_000))
    add("huge quantity", _new(qty=10**30))
    add("negative quantity", _new(qty=-5))
    add("zero price", _new(price="0"))
    add("float price", _new(price=60.0))
    add("nan price",
        b'{"action":"new","order_id":"m1","instrument":"CEA25","side":"buy","price":NaN,"qty":1}')
    add("exponent price", _new(price="6e1"))
    add("unicode digits price", _new(price="\u0666\u0660.00"))
    add("side in capitals", _new(side="BUY"))
    add("type in capitals", _new(type="LIMIT"))
    add("unknown tif", _new(tif="forever"))
    add("unknown stp", _new(stp="maybe"))
    add("another account", _new(account="alice"))
    add("cancel alice's order", {"action": "cancel", "order_id": "a1"})
    add("cancel alice's engine id", {"action": "cancel", "order_id": "alice/a1"})
    add("amend alice's engine id", {"action": "amend", "order_id": "alice/a1", "qty": 1})
    add("mass_cancel as alice", {"action": "mass_cancel", "account": "alice"})
    add("operator deposit", {"action": "deposit", "instrument": "CNY", "qty": "1000000"})
    add("operator issue", {"action": "issue", "instrument": "CEA25", "qty": 10**6})
    add("operator eod", {"action": "eod"})
    add(
        "transfer from alice", {
            "action": "transfer",
            "account": "alice",
            "to_account": "mallory",
            "instrument": "CEA25",
            "qty": 10
        })
    add("empty", b"")
    add("whitespace", b"   \n")
    add("null", b"null")
    add("number", b"12")
    add("string", b'"new"')
    add("list of numbers", b"[1, 2, 3]")
    add("binary", bytes(range(256)))
    add("bad utf-8", b'{"action":"new","order_id":"\xff\xfe"}')
    add("msgpack ext", b"\xd4\x01\x00")
    add("msgpack huge map header", b"\xdf\xff\xff\xff\xff")
    add("msgpack huge str header", b"\xdb\xff\xff\xff\xff")
    add("msgpack huge array header", b"\xdd\xff\xff\xff\xff")
    add("msgpack order", msgspec.msgpack.encode(_new(instrument="CEA26")))
    add("many commands", [_new(order_id=f"m{i}") for i in range(1001)])
    add("oversize message", _new(note="z" * 300_000))
    add("unknown field", _new(colour="green"))
    add("duplicate keys", b'{"action":"new","action":"deposit","order_id":"m1"}')
    add("list of lists", [[_new()]])
    add("gtd with huge expiry", _new(tif="gtd", expire_ts=2**70))
    add("ts from the bot", _new(ts=2**62))
    add("stop with no stop price", _new(type="stop"))
    add("iceberg bigger than order", _new(display_qty=10**9))
    add("not an orders topic", _new(), topic="cx/v1/exec/alice")
    add("orders wildcard topic", _new(), topic="cx/v1/orders/+")
    add("orders sub-topic", _new(), topic="cx/v1/orders/mallory/x")
    add("empty account topic", _new(), topic="cx/v1/orders/")
    add("long account topic", _new(), topic="cx/v1/orders/" + "m" * 5000)
    return cases


def mutations(rng: random.Random, payload: bytes) -> list[bytes]:
    """A few seeded variants of *payload*: flipped bytes, cuts, splices, repeats."""
    out = [payload]
    if payload:
        data = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append(bytes(data))
        cut = rng.randrange(len(payload))
        out.append(payload[:cut])
        out.append(payload[cut:] + payload[:cut])
    out.append(b"[" + b",".join([payload or b"0"] * rng.randint(2, 5)) + b"]")
    return out
