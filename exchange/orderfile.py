"""Order files: the pinned CSV / NDJSON format (docs/formats.md) read into commands.

This is the core's file edge. A row that cannot be read (a number that is not a number,
an unknown action, side, type, tif or stp, a missing side or quantity on a new order, a
ragged CSV row, an unknown column) raises ``OrderFileError`` naming the line (the CSV
header is line 1; NDJSON counts from its first line). A row that reads well becomes
exactly one command, whatever market rule it may break: the engine judges those.

Empty or missing keys take their defaults. Prices stay exact decimal strings.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Callable, Iterator
from itertools import chain, islice, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypedDict, TypeVar

import msgspec

from exchange.commands import (ACCOUNT_KINDS, PRICINGS, STP_MODES, AcceptBlock, AdvanceClock,
                               AllocateAllowances,
                               AmendOrder, BidAuction, CloseAuction, OpenAuction, PostBlock,
                               CancelOrder, ClawBackAllowances, CloseAccount, ComplianceDeadline,
                               ConvertAllowances, Deposit, EndOfDay, EnforcePledge,
                               HaltInstrument, IssueAllowances, MassCancel, OpenAccount,
                               PlaceOrder, PledgeAllowances, RecordEmissions, ReleasePledge,
                               ResumeAccount, ResumeInstrument,
                               SurrenderAllowances, SuspendAccount, TransferAllowances, Withdraw)
from exchange.units import is_decimal

if TYPE_CHECKING:
    from _csv import Reader as _CsvReader

    from exchange.commands import AnyCommand, OrderType, Side, TimeInForce

__all__ = [
    "OrderFileError", "FIELDS", "read_order_file", "parse_order_text", "detect_format", "Row",
    "RowError", "RowReader", "NewRow", "float_hint"
]

FIELDS = ("action", "order_id", "account", "instrument", "side", "type", "tif", "price", "qty",
          "stop_price", "display_qty", "post_only", "stp", "expire_ts", "ts", "command_id", "kind",
          "to_account", "year", "quality", "verifier", "multiple", "months", "stage",
          "to_instrument", "auction", "pricing")
# The last ten extend the pinned keys: an idempotency key for any row, the kind of an
# account for open_account, the receiving account of a transfer, and the registry's:
# the compliance year of surrender, emissions, allocate and deadline rows, an emissions
# record's data quality, verifier and monthly-log completeness (months logged), a
# deadline's fine multiple, an allocation's stage (pre or final), and the vintage a
# convert row turns old allowances into.

_TYPES: dict[str, OrderType] = {
    "": "limit",
    "limit": "limit",
    "market": "market",
    "stop": "stop",
    "stop_limit": "stop_limit"
}
_SIDES: dict[str, Side] = {"buy": "buy", "sell": "sell"}
_TIFS: dict[str, TimeInForce] = {
    "": "gtc",
    "gtc": "gtc",
    "day": "day",
    "ioc": "ioc",
    "fok": "fok",
    "gtd": "gtd"
}
_BOOLS: dict[str | bool, bool] = {"": False, "true": True, "false": False, True: True, False: False}
_STPS = frozenset(STP_MODES)
# Whole numbers: digits with an optional sign, within a signed 64-bit integer (what the
# journal and the wire carry). No underscores or spaces, unlike int().
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}\Z")  # ASCII digits only: "１０" is not 10
_DIGITS = re.compile(r"[+-]?[0-9]+\Z")  # a whole number of any size
_INT64 = 1 << 63
_INT64_MIN = -_INT64
ACTIONS = ("new", "cancel", "amend", "deposit", "withdraw", "issue", "surrender", "eod",
           "mass_cancel", "transfer", "open_account", "suspend_account", "resume_account",
           "close_account", "emissions", "deadline", "claw_back", "allocate", "convert", "halt",
           "resume", "block", "block_accept", "auction_open", "auction_bid", "auction_close",
           "clock", "pledge", "pledge_release", "pledge_enforce")
_ACCOUNT_STATUS: dict[str, type[SuspendAccount | ResumeAccount | CloseAccount]] = {
    "suspend_account": SuspendAccount,
    "resume_account": ResumeAccount,
    "close_account": CloseAccount
}


class OrderFileError(ValueError):
    """An order file that cannot be read; ``line`` is 1-based (CSV header = line 1)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class _RowError(ValueError):
    pass


RowError = _RowError  # a row that cannot be read; its message names the problem


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    """One NDJSON row, typed loosely; values are checked by the shared row reader."""

    action: str | None = None
    order_id: str | None = None
    account: str | None = None
    instrument: str | None = None
    side: str | None = None
    type: str | None = None
    tif: str | None = None
    price: str | int | None = None
    qty: int | str | None = None
    stop_price: str | int | None = None
    display_qty: int | str | None = None
    post_only: bool | str | None = None
    stp: str | None = None
    expire_ts: int | str | None = None
    ts: int | str | None = None
    command_id: str | None = None
    kind: str | None = None
    to_account: str | None = None
    year: int | str | None = None
    quality: str | None = None
    verifier: str | None = None
    multiple: int | str | None = None
    months: int | str | None = None
    stage: str | None = None
    to_instrument: str | None = None
    auction: str | None = None
    pricing: str | None = None


Row = _Row  # one row as its keys; the wire edge decodes messages into these too


class NewRow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A row of a plain new order, typed as ``RowReader.row``'s short way wants it: only
    the keys that way reads, and the values it takes (``side``, ``type``, ``tif`` and ``stp``
    among the readers' own: tests/test_orderfile.py holds them to ``_TYPES``, ``_TIFS`` and
    ``STP_MODES``). Any other key or value fails to decode, and the row is read as a ``Row``
    (``RowReader.new_order``)."""

    action: Literal["new"]
    order_id: str | None = None
    account: str | None = None
    instrument: str | None = None
    side: Literal["buy", "sell"]
    type: Literal["", "limit", "market", "stop", "stop_limit"] | None = None
    tif: Literal["", "gtc", "day", "ioc", "fok", "gtd"] | None = None
    price: str | None = None
    qty: Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
    stp: Literal["", "cancel_resting", "cancel_aggressor", "cancel_both", "none"] | None = None
    command_id: str | None = None


def float_hint(message: str, verb: str = "write") -> str:
    """*message*, a decoder's complaint about a row, with a hint for the field it names
    when that field was a JSON number with a fraction or exponent (a float): prices and
    cash go as decimal strings, every other number whole."""
    if "got `float`" not in message:
        return message
    field = message.rpartition("$.")[2].split("[")[0].strip("`")
    if field in ("price", "stop_price"):
        return f'{message} ({verb} prices as decimal strings, e.g. "61.20")'
    if field == "qty":
        return (f"{message} (a quantity is a whole number of units; {verb} a deposit's or "
                f'a withdrawal\'s amount as a decimal string, e.g. "1000.00")')
    return f"{message} ({field} is a whole number)"

_row_values = attrgetter(*FIELDS)
_ROWS_DECODER = msgspec.json.Decoder(list[_Row])
_ROW_DECODER = msgspec.json.Decoder(_Row)


class _Reader:
    """Turns one row's values (all ``str``, '' = missing; see FIELDS) into a command."""

    def __init__(self, default_stp: str | None) -> None:
        if default_stp is not None and default_stp not in _STPS:
            raise ValueError(f"unknown stp mode {default_stp!r}; one of {', '.join(STP_MODES)}")
        self.default_stp = default_stp
        # Each distinct string is checked once; both row paths read these tables.
        self.numbers = _Lookup(_number_or_bad)
        self.integers = _Lookup(_int_or_bad)
        # Profiled (benchmarks/endtoend.py): one shared str per distinct account, instrument
        # and side instead of a copy in every row: a million commands hold a third less
        # memory, and the engine compares and hashes them by identity.
        self.names = _Names()

    def _price(self, value: str | None, name: str) -> str | None:
        if not value:
            return None
        if self.numbers[value] is _BAD:
            raise _RowError(f"{name} {value!r} is not a number")
        return value

    def _int(self, value: str, name: str) -> int | None:
        if not value:
            return None
        number = self.integers[value]
        if number is not _BAD:
            return number
        if _DIGITS.match(value):
            raise _RowError(f"{name} {value!r} is out of range")
        if is_decimal(value):
            raise _RowError(f"{name} {value!r} is not a whole number")
        raise _RowError(f"{name} {value!r} is not a number")

    def command(self, action: str, order_id: str, account: str, instrument: str, side: str,
                type_: str, tif: str, price: str, qty: str, stop_price: str, display_qty: str,
                post_only: str, stp: str, expire_ts: str, ts: str, command_id: str = "",
                kind: str = "", to_account: str = "", year: str = "", quality: str = "",
                verifier: str = "", multiple: str = "", months: str = "", stage: str = "",
                to_instrument: str = "", auction: str = "", pricing: str = "") -> AnyCommand:
        """Return the command of one row, or raise ``_RowError``."""
        used = _USED.get(action)
        if used is not None:
            values = (order_id, account, instrument, side, type_, tif, price, qty, stop_price,
                      display_qty, post_only, stp, expire_ts, kind, to_account, year, quality,
                      verifier, multiple, months, stage, to_instrument, auction, pricing)
            for name, value in zip(_ROW_KEYS, values):
                if value and name not in used:
                    raise _RowError(f"{name} is not a key of {_a_row(action)}")
        if action in _REGISTRY_ACTIONS or year:
            command = self._registry(action, account, instrument, qty, ts, year, quality, verifier,
                                     multiple, months, stage, price)
        elif action in _MODE_ACTIONS or auction or pricing:
            command = self._mode(action, order_id, account, instrument, side, price, qty, ts,
                                 to_account, auction, pricing)
        else:
            command = self._command(action, order_id, account, instrument, side, type_, tif, price,
                                    qty, stop_price, display_qty, post_only, stp, expire_ts, ts,
                                    kind, to_account, to_instrument)
        if command_id:
            return msgspec.structs.replace(command, command_id=command_id)
        return command

    def _command(
            self,
            action: str,
            order_id: str,
            account: str,
            instrument: str,
            side: str,
            type_: str,
            tif: str,
            price: str | None,  # then the checked price
            qty: str,
            stop_price: str,
            display_qty: str,
            post_only: str,
            stp: str | None,  # then the order's mode, the reader's default if none
            expire_ts: str,
            ts: str,
            kind: str,
            to_account: str,
            to_instrument: str) -> AnyCommand:
        if action == "new":
            if side != "buy" and side != "sell":
                if not side:
                    raise _RowError("side is required for a new order")
                raise _RowError(f"unknown side {side!r} (buy or sell)")
            order_type = _TYPES.get(type_)
            if order_type is None:
                raise _RowError(f"unknown type {type_!r} (limit, market, stop or stop_limit)")
            time_in_force = _TIFS.get(tif)
            if time_in_force is None:
                raise _RowError(f"unknown tif {tif!r} (gtc, day, ioc, fok or gtd)")
            quantity = self._int(qty, "qty")
            if quantity is None:
                raise _RowError("qty is required for a new order")
            display = self._int(display_qty, "display_qty")
            expire = self._int(expire_ts, "expire_ts")
            when = self._int(ts, "ts")
            price = self._price(price, "price")
            flag = _BOOLS.get(post_only)
            if flag is None:
                flag = _BOOLS.get(post_only.lower())
                if flag is None:
                    raise _RowError(f"post_only {post_only!r} is not true or false")
            if not stp:
                stp = self.default_stp
            elif stp not in _STPS:
                raise _RowError(f"unknown stp {stp!r} ({', '.join(STP_MODES)})")
            return PlaceOrder(
                order_id=order_id,
                account=account,
                instrument=instrument,
                side=side,  # type: ignore[arg-type]  # buy or sell: checked above
                type=order_type,
                tif=time_in_force,
                price=price,
                qty=quantity,
                stop_price=self._price(stop_price, "stop_price"),
                display_qty=display,
                post_only=flag,
                stp=stp,  # type: ignore[arg-type]  # one of _STPS: checked above
                expire_ts=expire,
                ts=when)
        if action == "cancel":
            if instrument or ts:
                return CancelOrder(order_id=order_id, account=account, instrument=instrument
                                   or None, ts=self._int(ts, "ts"))
            return CancelOrder(order_id=order_id, account=account)
        if action == "amend":
            return AmendOrder(order_id=order_id, account=account, instrument=instrument or None,
                              price=self._price(price, "price"), qty=self._int(qty, "qty"),
                              ts=self._int(ts, "ts"))
        if action == "eod":
            return EndOfDay(ts=self._int(ts, "ts"))
        if action == "clock":
            when = self._int(ts, "ts")
            if when is None:
                raise _RowError("ts is required for clock")
            return AdvanceClock(ts=when)
        if action == "halt" or action == "resume":
            if not instrument:
                raise _RowError(f"instrument is required for {action}")
            halt = HaltInstrument if action == "halt" else ResumeInstrument
            return halt(instrument=instrument, ts=self._int(ts, "ts"))
        if action in ("deposit", "withdraw"):
            amount = self._price(qty, "qty")
            if amount is None:
                raise _RowError(f"qty (the amount) is required for {action}")
            cls = Deposit if action == "deposit" else Withdraw
            return cls(account=account, currency=instrument, amount=amount, ts=self._int(ts, "ts"))
        if action in ("issue", "surrender", "claw_back"):
            quantity = self._int(qty, "qty")
            if quantity is None:
                raise _RowError(f"qty is required for {action}")
            return _ALLOWANCE_MOVES[action](account=account, instrument=instrument, qty=quantity,
                                            ts=self._int(ts, "ts"))
        if action == "transfer":
            quantity = self._int(qty, "qty")
            if quantity is None:
                raise _RowError("qty is required for transfer")
            if not to_account:
                raise _RowError("to_account is required for transfer")
            return TransferAllowances(account=account, to_account=to_account, instrument=instrument,
                                      qty=quantity, ts=self._int(ts, "ts"))
        if action == "pledge":
            quantity = self._int(qty, "qty")
            if quantity is None:
                raise _RowError("qty is required for pledge")
            if not to_account:
                raise _RowError("to_account (the pledgee) is required for pledge")
            return PledgeAllowances(pledge_id=order_id, account=account, to_account=to_account,
                                    instrument=instrument, qty=quantity, ts=self._int(ts, "ts"))
        if action == "pledge_release" or action == "pledge_enforce":
            pledge_row = ReleasePledge if action == "pledge_release" else EnforcePledge
            return pledge_row(pledge_id=order_id, account=account, qty=self._int(qty, "qty"),
                              ts=self._int(ts, "ts"))
        if action == "convert":
            quantity = self._int(qty, "qty")
            if quantity is None:
                raise _RowError("qty is required for convert")
            if not to_instrument:
                raise _RowError(
                    "to_instrument (the vintage to convert into) is required for convert")
            return ConvertAllowances(account=account, instrument=instrument,
                                     to_instrument=to_instrument, qty=quantity,
                                     ts=self._int(ts, "ts"))
        if action == "open_account":
            if kind and kind not in ACCOUNT_KINDS:
                raise _RowError(f"unknown kind {kind!r} ({', '.join(ACCOUNT_KINDS)})")
            return OpenAccount(
                account=account,
                kind=kind or "covered",  # type: ignore[arg-type]  # checked above
                ts=self._int(ts, "ts"))
        if action in _ACCOUNT_STATUS:
            return _ACCOUNT_STATUS[action](account=account, ts=self._int(ts, "ts"))
        if action == "mass_cancel":
            if side not in ("", "buy", "sell"):
                raise _RowError(f"unknown side {side!r} (buy or sell)")
            return MassCancel(
                account=account,
                instrument=instrument or None,
                side=side or None,  # type: ignore[arg-type]  # buy, sell or none: checked above
                ts=self._int(ts, "ts"))
        if not action:
            raise _RowError("action is required")
        raise _RowError(f"unknown action {action!r} ({', '.join(ACTIONS)})")

    def _mode(self, action: str, order_id: str, account: str, instrument: str, side: str,
              price: str, qty: str, ts: str, to_account: str, auction: str,
              pricing: str) -> AnyCommand:
        """The rows of the trading modes away from the book: blocks and auctions."""
        when = self._int(ts, "ts")
        if action not in _MODE_ACTIONS:
            key = "auction" if auction else "pricing"
            raise _RowError(f"{key} is not a key of {_a_row(action)}")
        if action == "auction_close":
            if not auction:
                raise _RowError("auction is required for auction_close")
            return CloseAuction(auction=auction, ts=when)
        if action == "block_accept":
            if not to_account:
                raise _RowError("to_account (the account that posted the block) is required "
                                "for block_accept")
            return AcceptBlock(order_id=order_id, account=account, to_account=to_account,
                               instrument=instrument or None, ts=when)
        quantity = self._int(qty, "qty")
        if quantity is None:
            raise _RowError(f"qty is required for {action}")
        given = self._price(price, "price")
        if given is None:
            raise _RowError(f"price is required for {action}")
        if action == "auction_bid":
            if not auction:
                raise _RowError("auction is required for auction_bid")
            return BidAuction(auction=auction, order_id=order_id, account=account, price=given,
                              qty=quantity, ts=when)
        if side != "buy" and side != "sell":
            raise _RowError(f"side is required for {action} (buy or sell)" if not side else
                            f"unknown side {side!r} (buy or sell)")
        if action == "block":  # (auction and pricing refused with the keys it has no use for)
            return PostBlock(
                order_id=order_id, account=account, instrument=instrument,
                side=side,  # type: ignore[arg-type]  # buy or sell: checked above
                price=given, qty=quantity, to_account=to_account or None, ts=when)
        if not auction:
            raise _RowError("auction is required for auction_open")
        if pricing and pricing not in PRICINGS:
            raise _RowError(f"unknown pricing {pricing!r} ({', '.join(PRICINGS)})")
        return OpenAuction(
            auction=auction, account=account, instrument=instrument,
            side=side,  # type: ignore[arg-type]  # buy or sell: checked above
            qty=quantity, price=given,
            pricing=pricing or "uniform",  # type: ignore[arg-type]  # checked above
            ts=when)

    def _registry(self, action: str, account: str, instrument: str, qty: str, ts: str, year: str,
                  quality: str, verifier: str, multiple: str, months: str = "",
                  stage: str = "", price: str = "") -> AnyCommand:
        """The registry's rows: emissions, allocate, deadline (with the operator's
        reference ``price``, if any), and surrender against a year."""
        when = self._int(ts, "ts")
        compliance_year = self._int(year, "year")
        if compliance_year is None:
            raise _RowError(f"year is required for {action}")
        if action == "deadline":
            fine = self._int(multiple, "multiple")
            given: _Multiple = {} if fine is None else {"multiple": fine}
            return ComplianceDeadline(year=compliance_year, ts=when,
                                      price=self._price(price, "price"), **given)
        quantity = self._int(qty, "qty")
        if quantity is None:
            raise _RowError(f"qty is required for {action}")
        if action == "emissions":
            # The quality is the registry's to judge: a sequenced rejection, not a bad file.
            logged = self._int(months, "months")
            completeness: _Months = {} if logged is None else {"months": logged}
            return RecordEmissions(account=account, year=compliance_year, qty=quantity,
                                   quality=quality or "measured", verifier=verifier or None,
                                   ts=when, **completeness)
        if action == "allocate":
            # Likewise the stage: the registry rejects one it does not know.
            return AllocateAllowances(account=account, instrument=instrument, year=compliance_year,
                                      qty=quantity, stage=stage or "final", ts=when)
        if action == "surrender":
            return SurrenderAllowances(account=account, instrument=instrument, qty=quantity,
                                       year=compliance_year, ts=when)
        raise _RowError(f"year is not a key of {_a_row(action)}")


_REGISTRY_ACTIONS = frozenset({"emissions", "deadline", "allocate"})

# The keys each action has a use for (besides ``action``, ``ts`` and ``command_id``, which
# every row may give): a row giving another cannot be read, rather than the value dropped
# without a word. Those of blocks and auctions follow _MODE_UNUSED below.
_ROW_KEYS = tuple(f for f in FIELDS if f not in ("action", "ts", "command_id"))
_ORDER_KEYS = frozenset({"order_id", "account", "instrument", "side", "type", "tif", "price",
                         "qty", "stop_price", "display_qty", "post_only", "stp", "expire_ts"})
_HOLDING_KEYS = frozenset({"account", "instrument", "qty"})
_USED: dict[str, frozenset[str]] = {
    "new": _ORDER_KEYS,
    # a cancel may repeat its order's keys, as FIX's cancel request does (not checked)
    "cancel": _ORDER_KEYS,
    # an amend may repeat its order's side, as the pinned files' amend rows do (not checked)
    "amend": frozenset({"order_id", "account", "instrument", "side", "price", "qty"}),
    "deposit": _HOLDING_KEYS, "withdraw": _HOLDING_KEYS, "issue": _HOLDING_KEYS,
    "claw_back": _HOLDING_KEYS,
    "surrender": _HOLDING_KEYS | {"year"},
    "transfer": _HOLDING_KEYS | {"to_account"},
    "convert": _HOLDING_KEYS | {"to_instrument"},
    "pledge": _HOLDING_KEYS | {"order_id", "to_account"},
    "pledge_release": frozenset({"order_id", "account", "qty"}),
    "pledge_enforce": frozenset({"order_id", "account", "qty"}),
    "eod": frozenset(), "clock": frozenset(),
    "mass_cancel": frozenset({"account", "instrument", "side"}),
    "open_account": frozenset({"account", "kind"}),
    "suspend_account": frozenset({"account"}), "resume_account": frozenset({"account"}),
    "close_account": frozenset({"account"}),
    "halt": frozenset({"instrument"}), "resume": frozenset({"instrument"}),
    "emissions": frozenset({"account", "year", "qty", "quality", "verifier", "months"}),
    "allocate": frozenset({"account", "instrument", "year", "qty", "stage"}),
    "deadline": frozenset({"year", "price", "multiple"}),
}
# The keys of no order: a new row giving one leaves the readers' shortcuts for the
# checks above.
_NOT_ORDER_KEYS = tuple(f for f in _ROW_KEYS if f not in _ORDER_KEYS)


def _a_row(action: str) -> str:
    """'a block row', 'an amend row', 'a row without an action': for the messages."""
    if not action:
        return "a row without an action"
    return f"{'an' if action[0] in 'aeiou' else 'a'} {action} row"
_MODE_ACTIONS = frozenset({"block", "block_accept", "auction_open", "auction_bid", "auction_close"})
# The keys each row of the trading modes has no use for: given, the row is refused rather
# than the value silently dropped (a block_accept's price would not be its trade's).
# Keys no block or auction row has a use for: an order's own and the registry's.
_ORDER_ONLY = frozenset({"type", "tif", "stop_price", "display_qty", "post_only", "stp",
                         "expire_ts", "year", "kind", "to_instrument", "quality", "verifier",
                         "multiple", "months", "stage"})
_MODE_UNUSED: dict[str, frozenset[str]] = {
    "block": _ORDER_ONLY | {"auction", "pricing"},
    "block_accept": _ORDER_ONLY | {"side", "price", "qty", "auction", "pricing"},
    "auction_open": _ORDER_ONLY | {"order_id", "to_account"},
    "auction_bid": _ORDER_ONLY | {"instrument", "side", "to_account", "pricing"},
    "auction_close": _ORDER_ONLY | {"account", "order_id", "instrument", "side", "price", "qty",
                                    "to_account", "pricing"},
}
_USED.update((action, frozenset(_ROW_KEYS) - unused) for action, unused in _MODE_UNUSED.items())


# Keys a registry row passes only when it gives them (the command's default otherwise).
class _Multiple(TypedDict, total=False):
    multiple: int


class _Months(TypedDict, total=False):
    months: int


_ALLOWANCE_MOVES: dict[str, type[IssueAllowances | SurrenderAllowances | ClawBackAllowances]] = {
    "issue": IssueAllowances,
    "surrender": SurrenderAllowances,
    "claw_back": ClawBackAllowances
}


class RowReader(_Reader):
    """Reads one ``Row`` at a time into its command (the wire edge's entry point)."""

    def row(self, row: _Row, account: str | None, order_id: str | None,
            ts: int | str | None) -> AnyCommand:
        """Return the command of *row* with *account*, *order_id* and *ts* in place of its
        own (the wire edge's: the topic's account, the qualified id, the gateway's clock),
        or raise ``RowError`` naming the problem, those three set on *row*."""
        # Profiled (benchmarks/gateway.py, batched): a plain new order skips the text round
        # trip of every field, about a fifth of the gateway's time; anything else, or
        # anything wrong, takes the shared path, which builds the same command or names
        # the problem. The three values are given rather than set on the row and read back
        # (benchmarks/gateway.py, batched: with WireDecoder._commands, 3.0% fewer instructions).
        qty, price, stp = row.qty, row.price, row.stp
        # (no key of another action: each named, not an attrgetter, which costs ten times as
        # much; tests/test_orderfile.py holds the list to _NOT_ORDER_KEYS)
        if (row.action == "new" and type(qty) is int and row.year is None and row.kind is None
                and row.to_account is None and row.quality is None and row.verifier is None
                and row.multiple is None and row.months is None and row.stage is None
                and row.to_instrument is None and row.auction is None and row.pricing is None
                and row.stop_price is None
                and row.display_qty is None and row.post_only is None and row.expire_ts is None
                and (price is None or (type(price) is str and self.numbers[price] is not _BAD))
                and (ts is None or type(ts) is int) and _INT64_MIN <= qty < _INT64
                and (row.side == "buy" or row.side == "sell")):
            order_type = _TYPES.get(row.type or "")
            tif = _TIFS.get(row.tif or "")
            if not stp:
                stp = self.default_stp
            if (order_type is not None and tif is not None and (stp is None or stp in _STPS)
                    and (ts is None or _INT64_MIN <= ts < _INT64)):
                return PlaceOrder(
                    order_id=order_id or "",
                    account=account or "",
                    instrument=row.instrument or "",
                    side=row.side,  # type: ignore[arg-type]  # buy or sell: checked above
                    type=order_type,
                    tif=tif,
                    price=price or None,
                    qty=qty,
                    stp=stp,  # type: ignore[arg-type]  # one of _STPS: checked above
                    ts=ts,
                    command_id=row.command_id or None)
        row.account, row.order_id, row.ts = account, order_id, ts
        return self.command(*map(_as_text, _row_values(row)))

    def new_order(self, row: NewRow, account: str, order_id: str,
                  ts: int | None) -> PlaceOrder | None:
        """The command of *row* as ``row`` builds it for the same values as a ``Row``, or
        ``None`` if that would not take its short way (a price that is no number, a time out
        of range): read the row as a ``Row`` then. Benchmarks/gateway.py, batched: the wire
        edge decodes a message of plain new orders as these, and no key of another action
        is looked at (tests/test_wire_decode.py holds the two equal)."""
        price = row.price
        if ((price is not None and self.numbers[price] is _BAD)
                or not (ts is None or (type(ts) is int and _INT64_MIN <= ts < _INT64))):
            return None
        return PlaceOrder(order_id=order_id, account=account, instrument=row.instrument or "",
                          side=row.side, type=_TYPES[row.type or ""], tif=_TIFS[row.tif or ""],
                          price=price or None, qty=row.qty,
                          stp=row.stp or self.default_stp,  # type: ignore[arg-type]  # see init
                          ts=ts, command_id=row.command_id or None)

    def forget(self) -> None:
        """Drop the checked-value tables (a long-lived reader sees unbounded values)."""
        self.numbers.clear()
        self.integers.clear()


def _as_text(value: str | int | None) -> str:
    """An NDJSON value as the CSV reader would see it."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return value if type(value) is str else str(value)


Progress = Callable[[int, int], None]


def detect_format(path: str | Path) -> str:
    """Return ``ndjson`` for ``.ndjson`` / ``.jsonl`` / ``.json`` files, else ``csv``."""
    suffix = Path(path).suffix.lower()
    return "ndjson" if suffix in (".ndjson", ".jsonl", ".json") else "csv"


def read_order_file(path: str | Path, fmt: str | None = None, *, default_stp: str | None = None,
                    progress: Progress | None = None) -> list[AnyCommand]:
    """Read a whole order file into commands, one per data row, in file order.

    Raises ``OrderFileError`` for a file that cannot be read. *progress*, if given, is
    called as ``progress(rows_done, rows_estimated)`` now and then.
    """
    name = str(path)
    fmt = fmt or detect_format(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise OrderFileError(name, None, f"cannot read: {exc.strerror}") from None
    return parse_order_text(data, fmt, name=name, default_stp=default_stp, progress=progress)


def parse_order_text(data: bytes, fmt: str = "csv", *, name: str = "<orders>",
                     default_stp: str | None = None,
                     progress: Progress | None = None) -> list[AnyCommand]:
    """Parse order-file bytes (see ``read_order_file``)."""
    reader = _Reader(default_stp)
    if fmt == "csv":
        return _parse_csv(data, name, reader, progress)
    if fmt == "ndjson":
        return _parse_ndjson(data, name, reader, progress)
    raise ValueError(f"unknown order file format {fmt!r} (csv or ndjson)")


_PROGRESS_EVERY = 1 << 16


def _parse_csv(data: bytes, name: str, reader: _Reader,
               progress: Progress | None) -> list[AnyCommand]:
    estimate = data.count(b"\n")
    if not data.isascii():  # checked whole first, so it is the first error named
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(name, data, exc) from None
    plain = _plain_rows(data)
    if plain is not None:
        try:
            return _read_csv_rows(plain, name, reader, progress, estimate, None)
        except (OrderFileError, _NotPlain):
            pass  # the csv module reads it again: it names the line, and says the same
    # Profiled (benchmarks/endtoend.py): the text is decoded as the rows are read. Decoding
    # it whole first held the file three more times over (the str, and io.StringIO's
    # copy at four bytes a character), and each fresh page costs its first touch.
    rows = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    return _read_csv_rows(rows, name, reader, progress, estimate, rows)


def _read_csv_rows(rows: Iterator[list[str]], name: str, reader: _Reader,
                   progress: Progress | None, estimate: int,
                   numbered: _CsvReader | None) -> list[AnyCommand]:
    """Read the header and the rows of *rows* into commands; *numbered*, the csv
    module's reader, names the line of an error (without it, the line is not named)."""
    try:
        header = next(rows)
    except StopIteration:
        raise OrderFileError(name, 1, "empty file: expected a header row") from None
    except csv.Error as exc:
        raise OrderFileError(name, 1, f"not CSV: {exc}") from None
    picks = _header_picks(name, header)
    width = len(header)
    try:
        commands = _convert_rows(rows, width, picks, reader, progress, estimate)
    except (_RowError, csv.Error) as exc:
        line = None if numbered is None else numbered.line_num
        text = f"not CSV: {exc}" if isinstance(exc, csv.Error) else str(exc)
        raise OrderFileError(name, line, text) from None
    if progress is not None:
        progress(len(commands), len(commands))
    return commands


class _NotPlain(Exception):
    """Text that ``_plain_rows`` cannot split as the csv module would: a line longer
    than the csv module's field size limit."""


_SPLIT_BYTES = 1 << 20  # the text is decoded and split about this much at a time


def _plain_rows(data: bytes) -> Iterator[list[str]] | None:
    """The rows of CSV *data* (UTF-8 checked) split on its commas and newlines, when
    that is what the csv module would read: the text has no quote or carriage return.
    A blank line after the first is left out (the csv module reads it as a row of
    no fields, and those are skipped). ``None`` for any other text; the rows raise
    ``_NotPlain`` at a line longer than the csv module's field size limit.

    Profiled (benchmarks/endtoend.py): str.split in C in place of the csv module's
    character-by-character reader; tests/test_orderfile_plain.py holds the two equal.
    """
    if b'"' in data or b"\r" in data:
        return None
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if start == len(data):
        return iter(())
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    return chain(_header_row(data[start:end].decode()),
                 chain.from_iterable(_split_slices(data, end + 1)))


def _header_row(header: str) -> Iterator[list[str]]:
    """The header line's row; ``_NotPlain`` past the field size limit, as for any line
    (its columns are stripped, so a header padded past the limit would read well)."""
    if len(header) > csv.field_size_limit():
        raise _NotPlain
    yield header.split(",") if header else []


def _split_slices(data: bytes, start: int) -> Iterator[Iterator[list[str]]]:
    """From *start*, a slice of about ``_SPLIT_BYTES`` of *data* at a time, ending at a
    line's end: the rows of its lines that are not blank."""
    limit = csv.field_size_limit()
    size = len(data)
    while start < size:
        end = size
        if start + _SPLIT_BYTES < size:
            end = data.rfind(b"\n", start, start + _SPLIT_BYTES)
            if end < 0:  # a line longer than a slice
                end = data.find(b"\n", start + _SPLIT_BYTES)
                end = size if end < 0 else end
        lines = data[start:end].decode().split("\n")
        if max(map(len, lines)) > limit:
            raise _NotPlain
        yield map(str.split, filter(None, lines), repeat(","))
        start = end + 1


def _not_utf8(name: str, data: bytes, exc: UnicodeDecodeError) -> OrderFileError:
    """The error for order-file bytes that are not UTF-8 (*exc*, from decoding them
    whole as utf-8-sig), naming the line of the first bad byte as the CSV reader counts
    lines: a line ends at CR LF, LF or a lone CR."""
    before = data[:exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)]
    line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
    return OrderFileError(name, line, f"not UTF-8 text ({exc.reason})")


def _header_picks(name: str, header: list[str]) -> itemgetter[tuple[int, ...]]:
    columns = [c.strip() for c in header]
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        raise OrderFileError(
            name, 1,
            f"unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(FIELDS)}")
    if "action" not in columns:
        raise OrderFileError(name, 1, "the header has no 'action' column")
    if len(set(columns)) != len(columns):
        raise OrderFileError(name, 1, "a column appears twice in the header")
    width = len(columns)
    # Missing columns read the padding value '' appended to every row.
    return itemgetter(*[columns.index(f) if f in columns else width for f in FIELDS])


def _convert_rows(rows: Iterator[list[str]], width: int, picks: itemgetter[tuple[int, ...]],
                  reader: _Reader, progress: Progress | None, estimate: int,
                  commands: list[AnyCommand] | None = None) -> list[AnyCommand]:
    """Convert CSV rows (an iterator, taken a batch at a time) to commands, appended to
    *commands* (a new list if ``None``) and returned; raise ``_RowError`` at a bad row.

    Profiled (benchmarks/endtoend.py): per-row method calls and int() dominated decoding. The common
    new and cancel rows are built inline here, each distinct price, quantity and ts string being
    checked once into a lookup table; any other row, or any value the tables reject, goes to
    ``_Reader.command``, which builds the same command or names the problem.
    """
    row: list[str] | None
    side: str | None  # then the order's side, None if unknown
    stp: str | None  # then the order's mode, the reader's default if none
    numbers = reader.numbers
    names = reader.names
    integers = reader.integers
    types, tifs, stps, sides = _TYPES, _TIFS, _STPS, _SIDES
    # Profiled (benchmarks/endtoend.py): a file of the pinned columns alone takes only those
    # nine from each row; the rest stay empty.
    columns = picks(range(width + 1))  # each field's column; width: not in the file
    pinned = all(column == width for column in columns[_PINNED:])
    pick_pinned = itemgetter(*columns[:_PINNED])
    # ... and a row of exactly those nine, in their pinned order, is unpacked as it is.
    exact = pinned and columns[:_PINNED] == tuple(range(_PINNED))
    stop_price = display_qty = post_only = stp = expire_ts = ts = command_id = year = ""
    moded = False
    default_stp = reader.default_stp
    command = reader.command
    not_order = _NOT_ORDER_PICKS
    if commands is None:
        commands = []
    append = commands.append
    while True:
        row = None
        for row in islice(rows, _PROGRESS_EVERY):
            if len(row) != width:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                raise _RowError(f"expected {width} fields, found {len(row)}")
            if exact:
                action, order_id, account, instrument, side, type_, tif, price, qty = row
                stp = ""
            elif pinned:
                row.append("")
                action, order_id, account, instrument, side, type_, tif, price, qty = pick_pinned(
                    row)
                stp = ""
            else:
                row.append("")
                values = picks(row)
                (action, order_id, account, instrument, side, type_, tif, price, qty, stop_price,
                 display_qty, post_only, stp, expire_ts, ts, command_id, _, _,
                 year) = values[:_YEAR + 1]
                moded = any(not_order(values))  # a key no order has: the precise reader
            if command_id or year or moded:
                pass  # the precise reader below adds the idempotency key, judges the rest
            elif action == "new":
                if not (stop_price or display_qty or post_only or expire_ts):
                    order_type = types.get(type_)
                    time_in_force = tifs.get(tif)
                    quantity = integers[qty]
                    when = integers[ts] if ts else None
                    text = numbers[price] if price else None
                    side = sides.get(side)
                    if not stp:
                        stp = default_stp
                    if (order_type is not None and time_in_force is not None
                            and type(quantity) is int and text is not _BAD and when is not _BAD
                            and side is not None and (stp is None or stp in stps)):
                        # By position (benchmarks/endtoend.py): order_id, account, instrument,
                        # side, qty, type, tif, price, stop_price, display_qty, post_only, stp.
                        append(
                            PlaceOrder(order_id, names[account], names[instrument], side,
                                       quantity, order_type, time_in_force, text, None, None,
                                       False, stp,  # type: ignore[arg-type]  # checked above
                                       ts=when))
                        continue
            elif action == "cancel" and not instrument and not ts:
                append(CancelOrder(order_id, names[account]))
                continue
            if exact:
                row.append("")  # the padding that fields not in the file read
            append(command(*picks(row)))
        if progress is not None:
            progress(len(commands), estimate)
        if row is None:
            return commands


class _Bad(enum.Enum):
    """The type of ``_BAD``: an enum of one member, so that ``x is not _BAD`` narrows
    ``int | _Bad`` to ``int`` for the type checker (an ``object()`` would not)."""

    BAD = "bad"


_BAD: Final = _Bad.BAD  # what the lookup tables give for a value they refuse
_PINNED = FIELDS.index("qty") + 1  # the pinned order-file columns come first in FIELDS
_YEAR = FIELDS.index("year")
_PINNED_PICKS = _header_picks("<pinned>", list(FIELDS[:_PINNED]))
_NOT_ORDER_PICKS = itemgetter(*[FIELDS.index(f) for f in _NOT_ORDER_KEYS])  # of a row's values


def _number_or_bad(text: str) -> str | _Bad:
    return text if is_decimal(text) else _BAD


def _int_or_bad(text: str) -> int | _Bad:
    if _INTEGER.match(text):
        number = int(text)
        if -_INT64 <= number < _INT64:
            return number
    return _BAD


_V = TypeVar("_V")


class _Lookup(dict[str, _V]):
    """A dict that fills itself: ``table[key]`` computes and remembers ``make(key)``."""

    def __init__(self, make: Callable[[str], _V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: str) -> _V:
        value = self[key] = self._make(key)
        return value


class _Names(dict[str, str]):
    """Canonical strings: ``names[text]`` is the first str seen equal to *text*.

    Bounded: past ``_NAMES_MAX`` distinct strings, new ones are returned as they are.
    """

    def __missing__(self, key: str) -> str:
        if len(self) < _NAMES_MAX:
            self[key] = key
        return key


_NAMES_MAX = 1 << 16


def _parse_ndjson(data: bytes, name: str, reader: _Reader,
                  progress: Progress | None) -> list[AnyCommand]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark, as the CSV reader allows
    make = reader.command
    commands: list[AnyCommand] = []
    estimate = data.count(b"\n") + 1
    # Profiled (benchmarks/endtoend.py): the file is split a slice of about _NDJSON_SLICE
    # bytes at a time, not into all its lines at once; a million lines held as bytes and
    # numbered tuples were most of the 870 MB such a replay took.
    start = 0
    base = 0  # lines before the slice
    while start < len(data):
        end = data.find(b"\n", start + _NDJSON_SLICE)
        end = len(data) if end < 0 else end + 1
        lines = data[start:end].split(b"\n")
        if end < len(data) or data.endswith(b"\n"):
            lines.pop()  # the empty piece after the slice's last newline
        numbered = [(base + i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
        base += len(lines)
        start = end
        if not numbered:
            continue
        # One decode per slice: far faster than one per line. Its rows are the lines' one
        # for one when they are as many and every line ends a row (_rows_end_lines): a
        # line of two objects ("{...},{...}") decodes as more rows than lines, and one
        # object cut over two lines as fewer, and the two together as many. Otherwise
        # each line is decoded alone, which names the bad one.
        count = len(numbered)
        text = b"[" + b",\n".join(ln for _, ln in numbered) + b"]"
        whole = _rows_end_lines(text, numbered)
        pinned: list[_PinnedRow] | None
        try:
            # Profiled (benchmarks/endtoend.py, NDJSON): a slice whose rows have only the pinned
            # keys, of their plain JSON types, goes through the CSV rows' fast path as text.
            pinned = _PINNED_DECODER.decode(text) if whole else None
        except msgspec.DecodeError:
            pinned = None
        if pinned is not None and len(pinned) == count:
            done = len(commands)
            texts = [[
                r.action, r.order_id, r.account, r.instrument, r.side, r.type, r.tif, r.price,
                "" if r.qty is None else str(r.qty)
            ] for r in pinned]
            try:
                _convert_rows(iter(texts), _PINNED, _PINNED_PICKS, reader, None, 0, commands)
            except _RowError as exc:  # every row gives one command, so the bad one is:
                bad = numbered[len(commands) - done][0]
                raise OrderFileError(name, bad, str(exc)) from None
            if progress is not None:
                progress(len(commands), estimate)
            continue
        rows: list[_Row]
        try:
            rows = _ROWS_DECODER.decode(text) if whole else []
        except msgspec.DecodeError:
            rows = []
        if len(rows) != count:
            rows = [_decode_line(name, number, ln) for number, ln in numbered]
        for (number, _), row in zip(numbered, rows):
            try:
                commands.append(make(*map(_as_text, _row_values(row))))
            except _RowError as exc:
                raise OrderFileError(name, number, str(exc)) from None
        if progress is not None:
            progress(len(commands), estimate)
    return commands


_NDJSON_SLICE = 1 << 22


def _rows_end_lines(text: bytes, numbered: list[tuple[int, bytes]]) -> bool:
    """Whether each line of *numbered* (joined by ",\\n" into *text*, in "[...]") ends
    with "}". Then no row runs on from one line into the next: a string holds no
    newline, so that "}" is outside any, and a row's values are scalars, so it ends a
    row. (Joined by "," alone, '{"order_id":"o1' and '","qty":1}' read as one row.)"""
    if text.count(b"},\n") == len(numbered) - 1 and text.endswith(b"}]"):
        return True  # (a line holds no newline: each match is between two lines)
    return all(map(bytes.endswith, map(bytes.rstrip, (ln for _, ln in numbered)),
                   repeat(b"}")))


class _PinnedRow(msgspec.Struct, forbid_unknown_fields=True):
    """An NDJSON row of the nine pinned keys alone, as the order-file generator writes
    them: text, and ``qty`` a JSON integer. Any other row takes the ``_Row`` path."""

    action: str
    order_id: str = ""
    account: str = ""
    instrument: str = ""
    side: str = ""
    type: str = ""
    tif: str = ""
    price: str = ""
    qty: int | None = None


_PINNED_DECODER = msgspec.json.Decoder(list[_PinnedRow])


def _decode_line(name: str, number: int, line: bytes) -> _Row:
    try:
        return _ROW_DECODER.decode(line)
    except msgspec.ValidationError as exc:  # JSON, but not a row: say which
        text = str(exc)
        if text.startswith("Expected `object`, got `") and "$." not in text:
            text = (f"a line of NDJSON is one JSON object, not "
                    f"{text.partition('got `')[2].rstrip('`')}")
        raise OrderFileError(name, number, float_hint(text)) from None
    except msgspec.DecodeError as exc:  # not JSON at all
        raise OrderFileError(name, number, f"not valid JSON: {exc}") from None
