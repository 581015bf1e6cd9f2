"""An engine to bytes and back: the versioned state of ``exchange.state``, applied.

``encode_state(engine)`` gives the engine's whole state as msgpack bytes;
``decode_state(data)`` builds an engine indistinguishable from it (the same
``state_hash()``; ``check()`` passes; the same further commands give the same events).
The journal's snapshots carry these bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import msgspec

from exchange.book.fast import Counters, FastBook, OrderIds
from exchange.engine import Engine
from exchange.state import StateError, read_live_state

__all__ = ["decode_state", "encode_state"]

# What makes an engine's book of one instrument, as the engine's constructor takes it:
# (symbol, the shared counters, the day's shared order ids) -> the book.
BookFactory: TypeAlias = Callable[[str, Counters, OrderIds], FastBook]

_encoder = msgspec.msgpack.Encoder()


def encode_state(engine: Engine) -> bytes:
    """Return *engine*'s whole state as msgpack bytes (``EngineState``)."""
    # The engine's orders go in as they are: encoded as OrderState would be.
    return _encoder.encode(engine.to_state(copy=False))


def decode_state(data: bytes | bytearray | memoryview, *, book: BookFactory = FastBook,
                 check: bool = True, command_window: int | None = None,
                 account_window: int | None = None) -> Engine:
    """Build an ``Engine`` from *data* (``encode_state``; any buffer, a memoryview of a
    file's bytes too), on books made by *book* (``FastBook`` or ``NaiveBook``, as the
    engine's constructor takes).

    Raise ``StateError`` if *data* does not decode, is of another version, or does not
    make a consistent engine (an unknown instrument, an order whose id is not in the
    registry, a market that does not parse...). With *check* (the default) the engine's
    own ``check()`` runs too, and a broken invariant is a ``StateError``: measured at
    1,000,000 resting orders (benchmarks/snapshot.py), a third more time without a
    ledger, twice the time with one (every hold is checked). *command_window* and
    *account_window*, if given, replace the stored window sizes (``Engine.from_state``).
    """
    # The decoded orders are new: the engine takes them as they are, without a copy.
    engine = Engine.from_state(read_live_state(data), book=book, command_window=command_window,
                               account_window=account_window, adopt=True)
    if check:
        try:
            engine.check()
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"engine state is inconsistent: {exc or 'an invariant fails'}") from None
    return engine
