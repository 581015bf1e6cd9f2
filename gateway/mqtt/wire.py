"""Wire messages: bots' commands in, execution reports and market data out.

Topics and message shapes are pinned (docs/mqtt.md). A bot writes commands to
``cx/v1/orders/{account}``: one object or a list of them, in JSON (always accepted) or
msgpack, keyed like the order file (``{"action": "new", "order_id": "c1", ...}``).

Decoding never raises: every problem becomes a ``rejected`` report with a reason for the
sender, and nothing reaches the engine. The account is the topic's; a command naming
another account is rejected ``wrong_account``. Bots may trade (``new``, ``cancel``,
``amend``, ``mass_cancel``) and surrender; cash, issuance and account administration
are the operator's (``--init``), so those actions are rejected ``not_permitted``.

Order ids are the bot's own: the gateway keeps each account's ids apart inside the engine
by prefixing them with ``{account}/`` (account names hold no ``/``), and strips the prefix
in every report, so two bots may both use ``c1``.

Reports are tagged by ``report`` (``accepted``, ``rejected``, ``fill``, ``cancelled``,
``amended``, ``expired``, ``triggered``, and the extensions ``mass_cancel_accepted``,
``settled``, ``surrendered`` and, from the clearing house, ``variation_margin``,
``margin_call``, ``margin_call_met``, ``closed_out``, ``default``, ``delivery``,
``delivery_failed`` and ``exercised``), carry ``order_id`` where there is one, the event's ``seq``,
and, on the report that answers a command, that command's ``command_id``. Prices are
decimal strings, cash decimal strings of the currency.

Every report is a ``Report`` struct, one class per kind, tagged by ``report`` (``AnyReport``
decodes them all): a key is absent only where its field has a default (``None``, or
``False`` for ``duplicate``) and holds it; every other key is always there, ``null`` or not.
"""

from __future__ import annotations

import functools
import operator
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

import msgspec

from exchange.calendar import format_date
from exchange.events import (AccountStatusChanged, AllowancesAllocated, AllowancesClawedBack,
                             AllowancesConverted, AllowancesIssued, AllowancesPledged,
                             AllowancesSurrendered, AllowancesTransferred, AuctionBidAccepted,
                             AuctionCleared, AuctionOpened, BlockAccepted, BlockPosted,
                             CashDeposited, CashWithdrawn, CommandRejected, DailyStatistics,
                             HoldingsUnlocked, PledgeEnforced, PledgeReleased, QuotingAssessed,
                             DefaultRecorded, DeliveryFailed, DeliverySettled, MarginCalled,
                             MarginCallMet, MassCancelAccepted, OptionExercised, OrderAccepted,
                             OrderAmended, OrderCancelled, OrderExpired, OrderTriggered,
                             PositionClosedOut, TradeCleared, TradeExecuted, TradeSettled,
                             VariationMargin)
from exchange.market import Market, format_cash
from exchange.orderfile import NewRow, Row, RowError, RowReader, float_hint
from exchange.commands import BidAuction, OpenAuction, PlaceOrder, PostBlock
from exchange.reasons import Reason
from gateway.protocol import (BAD_COMMAND, MALFORMED, MAX_COMMANDS, MAX_PAYLOAD, MAX_TEXT,
                              NOT_PERMITTED, TOO_LARGE, TOO_MANY_COMMANDS, WRONG_ACCOUNT,
                              account_name_problem, is_msgpack)

__all__ = [
    "WireDecoder", "ReportMaker", "client_id", "WIRE_ACTIONS", "Report", "AnyReport",
    "AcceptedReport", "FillReport", "CancelledReport", "RejectedReport", "AmendedReport",
    "ExpiredReport", "TriggeredReport", "SettledReport", "ClearedReport",
    "MassCancelAcceptedReport",
    "SurrenderedReport", "VariationMarginReport", "MarginCallReport", "MarginCallMetReport",
    "ClosedOutReport", "DefaultReport", "DeliveryReport", "DeliveryFailedReport",
    "ExercisedReport", "NoticeReport", "BlockReport", "BlockAcceptedReport", "AuctionReport",
    "BidAcceptedReport", "AuctionClearedReport", "QuotingReport", "OpsAcceptedReport",
    "AnyOpsReport", "ORDER_ACTIONS", "OPS_ID_PREFIX", "operators_own", "opened_by",
    "daily_record"
]

# Text fields a bot's command may carry that the exchange keeps or parses.
_TEXT_FIELDS = ("order_id", "command_id", "account", "instrument", "price", "stop_price", "side",
                "type", "tif", "stp", "to_account", "to_instrument", "auction", "pricing")
WIRE_ACTIONS = frozenset({
    "new", "cancel", "amend", "mass_cancel", "surrender", "block", "block_accept", "auction_open",
    "auction_bid"
})
# The operator's rows that open the account they name if it does not exist, and where.
_OPENING = {"open_account": ("account", ), "deposit": ("account", ), "issue": ("account", ),
            "transfer": ("to_account", )}
# What the operator may not send: orders, blocks and bids are the accounts' own.
ORDER_ACTIONS = frozenset(
    {"new", "cancel", "amend", "mass_cancel", "block", "block_accept", "auction_bid"})
# Actions whose order_id is the sender's own (kept apart as ``{account}/{id}``).
_OWN_IDS = frozenset({"new", "cancel", "amend", "block", "auction_bid"})
_NEW_IDS = frozenset({"new", "block", "auction_bid"})  # the actions that take a new id
_ID_FIELDS = ("order_id", "command_id")
# The operator's command ids, as the engine keeps them (its window is by account and id,
# and an operator's row names an account): no bot's id begins with '@'.
OPS_ID_PREFIX = "@ops/"


def _same_message_ids(items: list) -> None:
    """In one message an auction and an order, block or bid of its opener named alike
    (each checked against the engine as the message is read, before either ran): the
    order, block or bid is refused ``duplicate_order_id`` in its place."""
    opened = {c.auction for c in items if type(c) is OpenAuction}
    for index, item in enumerate(items):
        if type(item) in (PlaceOrder, PostBlock, BidAuction) and (
                client_id(item.order_id) in opened):
            items[index] = _rejection(
                Reason.DUPLICATE_ORDER_ID, f"order_id {client_id(item.order_id)!r} is an "
                "auction's in the same message", {"action": type(item).__struct_config__.tag,
                                                  "order_id": client_id(item.order_id),
                                                  "command_id": item.command_id})


def operators_own(command: Any) -> Any:
    """*command*, one of the operator's (a row on its topic, or of ``serve --init``), with
    its command id in the operator's own space (``OPS_ID_PREFIX``): the engine's window is
    by account and id, and a row naming alice with her bot's id was answered as that
    command, and not applied."""
    if command.command_id is None or command.command_id.startswith(OPS_ID_PREFIX):
        return command
    return msgspec.structs.replace(command, command_id=OPS_ID_PREFIX + command.command_id)


def _bounded_row() -> type[Row]:
    """``Row`` with each of its text fields (``_TEXT_FIELDS``) at most ``MAX_TEXT``
    characters, checked by the decoder as it reads (in C). Profiled (benchmarks/gateway.py,
    batched): checking them in Python was about a twelfth of the gateway's time. A message
    that breaks the bound is decoded again item by item as plain ``Row``s, and the item at
    fault is told which field is too long (``WireDecoder._decode_each``)."""
    return _bounded(Row, _TEXT_FIELDS, "_BoundedRow")


def _bounded(base: type, names: tuple[str, ...], name: str, kw_only: bool = False) -> Any:
    """*base* with each of its text fields *names* at most ``MAX_TEXT`` characters."""
    bounded = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    hints = typing.get_type_hints(base, include_extras=True)
    fields = []
    for field in names:
        kinds = typing.get_args(hints[field]) or (hints[field], )
        assert str in kinds, f"{base.__name__}.{field} is not a text field"
        union = functools.reduce(operator.or_, [bounded if k is str else k for k in kinds])
        fields.append((field, union, None))
    return msgspec.defstruct(name, fields, bases=(base, ), forbid_unknown_fields=True,
                             kw_only=kw_only)


_BoundedRow = _bounded_row()
# A plain new order (``NewRow``), its text fields bounded as ``_BoundedRow``'s (its others
# are of a few values).
_BoundedNewRow = _bounded(NewRow, ("order_id", "command_id", "account", "instrument", "price"),
                          "_BoundedNewRow", kw_only=True)


class _Ids(msgspec.Struct):
    """What a turned-away command's answer needs of it (other keys are skipped unread)."""

    action: str | None = None
    order_id: str | None = None
    command_id: str | None = None


def _rejection(reason: str, message: str, raw=None) -> RejectedReport:
    report = RejectedReport(reason=reason, message=message)
    if isinstance(raw, dict):
        for key in ("action", *_ID_FIELDS):
            value = raw.get(key)
            if isinstance(value, str) and len(value) <= MAX_TEXT:
                setattr(report, key, value)
    return report


def _too_many(count: int) -> RejectedReport:
    return _rejection(TOO_MANY_COMMANDS,
                      f"{count} commands in one message; the limit is {MAX_COMMANDS}")


class WireDecoder:
    """Turns one message from an account into commands plus rejections for the sender."""

    def __init__(self) -> None:
        self.ts: int | None = None  # the gateway's clock, set before each decode
        # Whether an account exists (the gateway sets it from its engine): an operator's
        # row that would open one is held to the name rule, one about it as it is not.
        self.exists: Callable[[str], bool] = lambda name: False
        # Whether an id is used today, as the engine keeps it (the gateway sets it too): a
        # bot's ids are its own (``account/id``), an auction's are everyone's.
        self.used: Callable[[str], bool] = lambda order_id: False
        self.auction_ids: Collection[str] = ()  # ... and the day's auctions (the engine's)
        self._reader = RowReader(None)
        self._json = msgspec.json.Decoder(_BoundedRow | list[_BoundedRow])
        self._msgpack = msgspec.msgpack.Decoder(_BoundedRow | list[_BoundedRow])
        self._json_new = msgspec.json.Decoder(_BoundedNewRow | list[_BoundedNewRow])
        self._msgpack_new = msgspec.msgpack.Decoder(_BoundedNewRow | list[_BoundedNewRow])
        self._json_ids = msgspec.json.Decoder(_Ids | list[_Ids])
        self._msgpack_ids = msgspec.msgpack.Decoder(_Ids | list[_Ids])
        self._json_any = msgspec.json.Decoder()
        self._msgpack_any = msgspec.msgpack.Decoder()

    def decode(self, account: str | None, payload: bytes) -> list:
        """Return what *payload*, sent on *account*'s topic, asks for, in message order:
        a command for each good item (account filled in, order id qualified by the
        account), a ``RejectedReport`` for each bad one. *account* ``None``: the
        operator's rows (any action but orders; accounts as the rows name them).
        """
        if len(payload) > MAX_PAYLOAD:
            return [
                _rejection(TOO_LARGE,
                           f"message of {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
            ]
        packed = is_msgpack(payload)
        if account is not None:
            orders = self._new_orders(account, payload, packed)
            if orders is not None:
                return orders
        try:
            decoded = (self._msgpack if packed else self._json).decode(payload)
        except msgspec.DecodeError:
            return self._decode_each(account, payload, packed)
        rows = decoded if type(decoded) is list else [decoded]
        if len(rows) > MAX_COMMANDS:
            return [_too_many(len(rows))]
        if not rows:
            return [_rejection(MALFORMED, "an empty list: no command")]
        items = self._commands(account, rows, True)
        if account is not None and OpenAuction in set(map(type, items)):
            _same_message_ids(items)
        return items

    def _new_orders(self, account: str, payload: bytes, packed: bool) -> list | None:
        """The commands of a message of plain new orders (``NewRow``), each as ``_commands``
        builds it, or ``None`` for any other message, or any row that ``_commands`` would
        refuse or read the long way: it is decoded as ``Row``s then. Benchmarks/gateway.py,
        batched: no key of another action is looked at (tests/test_wire_decode.py holds
        this equal to the plain path)."""
        try:
            decoded = (self._msgpack_new if packed else self._json_new).decode(payload)
        except msgspec.DecodeError:
            return None
        rows = decoded if type(decoded) is list else [decoded]
        if not rows or len(rows) > MAX_COMMANDS:
            return None
        items: list = []
        append = items.append
        ts = self.ts
        auctions = self.auction_ids
        new_order = self._reader.new_order
        for row in rows:
            command_id, named, order_id = row.command_id, row.account, row.order_id
            if ((command_id is not None and (command_id == "" or command_id[0] == "@"))
                    or (named and named != account) or not order_id
                    or (auctions and opened_by(auctions, order_id, account))):
                return None
            command = new_order(row, account, f"{account}/{order_id}", ts)
            if command is None:
                return None
            append(command)
        return items

    def turn_away(self, payload: bytes, reason: str, message: str) -> list[RejectedReport]:
        """A ``rejected`` report with *reason* for each command of *payload*, reading
        only what the answers carry (action, order id, command id), or one for the whole
        message if even that cannot be read."""
        if len(payload) <= MAX_PAYLOAD:
            try:
                read = (self._msgpack_ids
                        if is_msgpack(payload) else self._json_ids).decode(payload)
            except (msgspec.DecodeError, RecursionError):
                pass
            else:
                items = read if type(read) is list else [read]
                if len(items) <= MAX_COMMANDS:
                    return [
                        _rejection(reason, message, msgspec.structs.asdict(item)) for item in items
                    ]
        return [_rejection(reason, message)]

    def _decode_each(self, account: str | None, payload: bytes, packed: bool):
        """The message as a whole did not type-check: find which items are at fault."""
        kind = "msgpack" if packed else "JSON"
        try:
            raw = (self._msgpack_any if packed else self._json_any).decode(payload)
        except msgspec.DecodeError as exc:
            if packed:  # JSON that is no object nor list (null, 12, "x") is read as msgpack
                return [_rejection(MALFORMED, "neither JSON commands (an object or a list of "
                                   f"objects, starting with {{ or [) nor msgpack: {exc}")]
            return [_rejection(MALFORMED, f"not valid {kind}: {exc}")]
        except RecursionError:
            # The typed decode above never recurses (a command's fields are scalars); the
            # untyped one does, and msgspec stops it at the interpreter's recursion
            # limit with this error, before the stack is at risk.
            return [_rejection(MALFORMED, f"{kind} nested too deeply")]
        raw_items = raw if type(raw) is list else [raw]
        if len(raw_items) > MAX_COMMANDS:
            return [_too_many(len(raw_items))]
        if not raw_items:
            return [_rejection(MALFORMED, "an empty list: no command")]
        items: list = []
        for item in raw_items:
            if not isinstance(item, dict):
                items.append(
                    _rejection(MALFORMED,
                               f"a command must be an object, not {type(item).__name__}"))
                continue
            try:
                row = msgspec.convert(item, Row)
            except msgspec.ValidationError as exc:
                items.append(_rejection(BAD_COMMAND, float_hint(str(exc), "send"), item))
                continue
            items.append(self._command(account, row))
        return items

    def _command(self, account: str | None, row: Row, bounded: bool = False):
        """The command of one decoded row, or the ``rejected`` report saying why not."""
        return self._commands(account, [row], bounded)[0]

    def _commands(self, account: str | None, rows: list[Row], bounded: bool = False) -> list:
        """The command of each decoded row of one message, or the ``rejected`` report saying
        why not, in order. *bounded*: the decoder has checked the text fields' lengths
        (``_BoundedRow``). One pass a message, what every row shares read once, the row's
        account, order id and time given to the reader rather than set on the row
        (benchmarks/gateway.py, batched: 3.0% fewer instructions in the gateway core)."""
        items: list = []
        append = items.append
        ts = self.ts  # the gateway's clock, not the bot's, moves the engine
        read = self._reader.row
        auctions = self.auction_ids
        for row in rows:
            action = row.action
            if not bounded:
                long = next((name for name in _TEXT_FIELDS if type(getattr(row, name)) is str
                             and len(getattr(row, name)) > MAX_TEXT), None)
                if long is not None:
                    append(_rejection(
                        BAD_COMMAND,
                        f"{long} is {len(getattr(row, long))} characters long; the limit is "
                        f"{MAX_TEXT}", msgspec.to_builtins(row)))
                    continue
            if account is None:
                append(self._operators(row))
                continue
            if action not in WIRE_ACTIONS:
                reason = NOT_PERMITTED if action else BAD_COMMAND
                message = (f"action {action!r} is not open to bots "
                           f"({', '.join(sorted(WIRE_ACTIONS))})" if action else
                           "action is required")
                append(_rejection(reason, message, msgspec.to_builtins(row)))
                continue
            if type(row.command_id) is str and row.command_id.startswith("@"):
                append(_rejection(BAD_COMMAND, "command_id: an id beginning with '@' is the "
                                  "exchange's own", msgspec.to_builtins(row)))
                continue
            if row.command_id == "":
                # Read as no id at all, it ran without one: its answer carried none, and a
                # client waiting for "" resent it for ever, each copy acting again.
                append(_rejection(BAD_COMMAND, "command_id is empty: give an id, or leave the "
                                  "key out", msgspec.to_builtins(row)))
                continue
            named = row.account
            if named is not None and named != "" and named != account:
                append(_rejection(
                    WRONG_ACCOUNT,
                    f"the command names account {named!r} but was sent on {account!r}'s topic",
                    msgspec.to_builtins(row)))
                continue
            # (before the ids take their account: a rejection names the bot's own)
            if row.auction is not None and (type(row.auction) is not str or "/" in row.auction):
                append(_rejection(BAD_COMMAND, "auction: an id without '/'",
                                  msgspec.to_builtins(row)))
                continue
            order_id = row.order_id
            if action == "new" or action == "cancel" or action == "amend" or action in _OWN_IDS:
                if not order_id:
                    append(_rejection(BAD_COMMAND, "order_id is required",
                                      msgspec.to_builtins(row)))
                    continue
                if auctions and action in _NEW_IDS and opened_by(auctions, order_id, account):
                    # An auction's fills carry its id as its initiator's order_id: not one of
                    # the initiator's own ids that day (another account's ids are its own)
                    append(_rejection(Reason.DUPLICATE_ORDER_ID, f"order_id {order_id!r} is "
                                      "an auction's today", msgspec.to_builtins(row)))
                    continue
                order_id = f"{account}/{order_id}"
            elif action == "auction_open" and type(row.auction) is str and self.used(
                    f"{account}/{row.auction}"):
                append(_rejection(Reason.DUPLICATE_AUCTION, f"auction {row.auction!r} is an id "
                                  "of this account's own order, block or bid today",
                                  msgspec.to_builtins(row)))
                continue
            elif action == "block_accept":
                # The block's id is its poster's: accepted as ``{to_account}/{id}``.
                if not order_id or not row.to_account or "/" in row.to_account:
                    append(_rejection(BAD_COMMAND, "order_id and to_account (the block's poster) "
                                      "are required", msgspec.to_builtins(row)))
                    continue
                order_id = f"{row.to_account}/{order_id}"
            try:
                append(read(row, account, order_id, ts))
            except RowError as exc:
                record = msgspec.to_builtins(row)  # (the reader set the row's ids as read)
                if isinstance(record.get("order_id"), str):
                    record["order_id"] = client_id(record["order_id"])
                append(_rejection(BAD_COMMAND, str(exc), record))
        return items

    def _operators(self, row: Row):
        """The operator's row: any action but an account's orders, stamped with the
        gateway's clock."""
        if not row.action:
            return _rejection(BAD_COMMAND, "action is required", msgspec.to_builtins(row))
        if row.command_id == "":  # as a bot's: run as one without an id, answered with none
            return _rejection(BAD_COMMAND, "command_id is empty: give an id, or leave the key "
                              "out", msgspec.to_builtins(row))
        if row.action in ORDER_ACTIONS:
            return _rejection(
                NOT_PERMITTED, f"action {row.action!r}: the operator places no orders for accounts "
                "(accounts send their own on their orders topic)", msgspec.to_builtins(row))
        opens = _OPENING.get(row.action, ())
        for name in (getattr(row, field) for field in opens):
            # An account the row may open must be one that can log in (system accounts,
            # "@...", are the engine's to refuse); rows about accounts that exist (some
            # opened before the rule, or by an order file) name them as they are.
            if (type(name) is str and name and not name.startswith("@")
                    and (row.action == "open_account" or not self.exists(name))):
                problem = account_name_problem(name)
                if problem is not None:
                    return _rejection(BAD_COMMAND, problem, msgspec.to_builtins(row))
        if (row.action == "auction_open" and type(row.auction) is str and type(row.account) is str
                and row.account and self.used(f"{row.account}/{row.auction}")):
            # The initiator's fills carry the auction's id as their order_id: as for a
            # bot's own auction_open, not an id of one of its own orders, blocks or bids.
            return _rejection(Reason.DUPLICATE_AUCTION, f"auction {row.auction!r} is an id of "
                              f"{row.account}'s own order, block or bid today",
                              msgspec.to_builtins(row))
        try:
            command = self._reader.row(row, row.account, row.order_id, self.ts)
        except RowError as exc:
            return _rejection(BAD_COMMAND, str(exc), msgspec.to_builtins(row))
        return operators_own(command)

    def trim(self, limit: int = 100_000) -> None:
        """Bound memory in a long-lived gateway: past *limit* remembered values, drop the
        reader's tables of checked prices and quantities."""
        if len(self._reader.numbers) + len(self._reader.integers) > limit:
            self._reader.forget()


def opened_by(auctions: Any, auction: str | None, account: str | None) -> bool:
    """Whether *account* opened the day's auction *auction* (*auctions*: the engine's, by
    id). Only the initiator's fills carry an auction's id as their ``order_id``: another
    account's order, block or bid of that name is its own (refusing it let any account
    holding 100,000 t take another's next order ids for the day)."""
    found = auctions.get(auction) if isinstance(auctions, Mapping) else None
    return found is not None and found.initiator.account == account


def client_id(order_id: str | None) -> str | None:
    """The bot's own order id of an engine order id (``alice/c1`` -> ``c1``)."""
    if order_id is None:
        return None
    return order_id.partition("/")[2] or order_id


_PRICES_KEPT = 4096


class Report(msgspec.Struct, tag_field="report", omit_defaults=True, gc=False):
    """An execution report: one subclass per kind, its tag the ``report`` key, encoded first.

    Profiled (benchmarks/gateway.py; accepted and fill reports, the commonest by far): a struct is
    built and encoded in about a third of a dict's time. Built positionally where the fields allow;
    a field without a default is always encoded (``null`` included), one with a default only when it
    holds something else. Every report the gateway makes ends with ``duplicate`` (``true`` on a
    resent command's answers) and ``command_id`` (on the report that answers a command)."""


class _Answering(Report, kw_only=True):
    """The fields every report ends with (keyword-only, so they follow a subclass's own
    positional ones; ``RejectedReport``, keyword-only throughout, lists them itself)."""

    duplicate: bool = False
    command_id: str | None = None


class AcceptedReport(_Answering, tag="accepted"):
    seq: int
    order_id: str | None
    instrument: str
    side: str
    type: str
    tif: str
    price: str | None
    qty: int


class FillReport(_Answering, tag="fill"):
    seq: int
    trade_id: int
    instrument: str
    price: str
    qty: int
    order_id: str | None
    side: str
    leaves_qty: int
    liquidity: str
    mode: str | None = None  # "block" or "auction"; absent for the order book


class BlockReport(_Answering, tag="block"):
    """A block agreement posted: to its poster, and to the account it names."""

    seq: int
    order_id: str | None
    account: str
    instrument: str
    side: str
    price: str
    qty: int
    to_account: str | None


class BlockAcceptedReport(_Answering, tag="block_accepted"):
    """The acceptor's answer: it took the block *order_id* of *to_account* (its fill
    follows)."""

    seq: int
    order_id: str | None
    to_account: str
    instrument: str
    side: str
    price: str
    qty: int


class AuctionReport(_Answering, tag="auction"):
    """The initiator's answer: its auction opened."""

    seq: int
    auction: str
    instrument: str
    side: str
    qty: int
    reserve: str
    pricing: str
    primary: bool


class BidAcceptedReport(_Answering, tag="bid_accepted"):
    """The bidder's answer: its bid is in the auction, held until it clears."""

    seq: int
    auction: str
    order_id: str | None
    instrument: str
    side: str
    price: str
    qty: int


class QuotingReport(_Answering, tag="quoting"):
    """A market maker's quoting over a trading day, against its obligation (to the
    market maker, and to the operator on the ops reports topic)."""

    seq: int
    account: str
    instrument: str
    day: int
    quoted_ns: int
    session_ns: int
    presence_bps: int
    average_spread: str | None
    met: bool
    rebate: str
    currency: str


class AuctionClearedReport(_Answering, tag="auction_cleared"):
    """To the initiator: how its auction ended (its fills come as ``fill`` reports)."""

    seq: int
    auction: str
    instrument: str
    status: str
    price: str | None
    qty: int
    unsold: int
    bids: int
    filled_bids: int


class CancelledReport(_Answering, tag="cancelled"):
    seq: int
    order_id: str | None
    instrument: str
    side: str
    cancelled_qty: int
    reason: str


class RejectedReport(Report, tag="rejected", kw_only=True):
    """The engine's rejection (``seq``, ``action``, ``reason``, ``order_id`` if the command
    named one) or the gateway's own, before the engine (``reason``, ``message`` and what
    could be read of the command: ``action``, ``order_id``, ``command_id``)."""

    seq: int | None = None
    action: str | None = None
    reason: str
    message: str | None = None
    order_id: str | None = None
    duplicate: bool = False
    command_id: str | None = None


class AmendedReport(_Answering, tag="amended"):
    seq: int
    order_id: str | None
    instrument: str
    side: str
    price: str | None
    qty: int
    priority_kept: bool


class ExpiredReport(_Answering, tag="expired"):
    seq: int
    order_id: str | None
    instrument: str
    side: str
    expired_qty: int


class TriggeredReport(_Answering, tag="triggered"):
    seq: int
    order_id: str | None
    instrument: str
    side: str
    stop_price: str
    last_price: str


class SettledReport(_Answering, tag="settled"):
    """One side of a settled trade: the cash of the fill and this side's fee."""

    seq: int
    trade_id: int
    instrument: str
    qty: int
    cash: str
    currency: str
    side: str
    fee: str


class MassCancelAcceptedReport(_Answering, tag="mass_cancel_accepted"):
    seq: int
    instrument: str | None
    side: str | None
    count: int


class SurrenderedReport(_Answering, tag="surrendered"):
    seq: int
    instrument: str
    qty: int
    year: int | None = None


class ClearedReport(_Answering, tag="cleared"):
    """One side of a futures or options trade, cleared: the position it leaves and this
    side's fee (an option's premium, price x qty x contract size, moves with it), as
    ``settled`` is for a spot trade."""

    seq: int
    trade_id: int
    instrument: str
    qty: int
    price: str
    side: str
    position: int
    fee: str
    currency: str


# The clearing house's news for an account (exchange.derivatives.clearing): each report's
# fields are its event's but ``account``, prices as decimal strings on the instrument's
# tick (a strike on the underlying's) and amounts as cash decimal strings.
class VariationMarginReport(_Answering, tag="variation_margin"):
    seq: int
    instrument: str
    position: int
    amount: str
    currency: str


class MarginCallReport(_Answering, tag="margin_call"):
    seq: int
    equity: str
    maintenance: str
    initial: str
    currency: str


class MarginCallMetReport(_Answering, tag="margin_call_met"):
    seq: int
    equity: str
    currency: str


class ClosedOutReport(_Answering, tag="closed_out"):
    seq: int
    instrument: str
    qty: int
    price: str | None
    via: str


class DefaultReport(_Answering, tag="default"):
    seq: int
    amount: str
    currency: str
    reason: str


class DeliveryReport(_Answering, tag="delivery"):
    seq: int
    instrument: str
    underlying: str
    side: str
    tonnes: int
    cash: str


class DeliveryFailedReport(_Answering, tag="delivery_failed"):
    seq: int
    instrument: str
    tonnes: int
    penalty: str


class ExercisedReport(_Answering, tag="exercised"):
    seq: int
    instrument: str
    underlying: str
    lots: int
    strike: str


class HoldingReport(_Answering, tag="holding"):
    """The account's holding of ``asset`` changed other than by a trade: by the operator's
    cash and registry rows, a pledge, the year's allocation, banking, or the end of day's
    unlock of what was bought (T+1). ``qty`` (allowances, units) or ``amount`` (cash, a
    decimal string) is the signed change of what is available to trade, ``pledged`` the
    signed change of what is pledged; ``cause`` says which row or step; ``counterparty``
    the other account of a transfer or pledge."""

    seq: int
    asset: str
    cause: str
    qty: int | None = None
    amount: str | None = None
    pledged: int | None = None
    counterparty: str | None = None
    pledge_id: str | None = None


class AccountReport(_Answering, tag="account"):
    """The account's status changed: ``open``, ``suspended`` or ``closed``."""

    seq: int
    status: str


class NoticeReport(Report, tag="notice"):
    """Written by the broker, never by the gateway: mosquitto's publishing limit
    (gateway/mqtt/mosquitto_limit.c) dropped ``dropped`` of the account's messages."""

    reason: str
    dropped: int
    message: str


class OpsAcceptedReport(Report, tag="accepted", kw_only=True):
    """The answer to an operator's row that the exchange accepted (on the ops reports
    topic): its action, and the account and instrument it named."""

    seq: int
    action: str
    account: str | None = None
    instrument: str | None = None
    duplicate: bool = False
    command_id: str | None = None


# What the operator reads on the ops reports topic.
AnyOpsReport = OpsAcceptedReport | RejectedReport

AnyReport = (AcceptedReport | FillReport | CancelledReport | RejectedReport | AmendedReport
             | ExpiredReport | TriggeredReport | SettledReport | ClearedReport
             | MassCancelAcceptedReport | SurrenderedReport | VariationMarginReport
             | MarginCallReport | MarginCallMetReport
             | ClosedOutReport | DefaultReport | DeliveryReport | DeliveryFailedReport
             | ExercisedReport | NoticeReport | BlockReport | BlockAcceptedReport | AuctionReport
             | BidAcceptedReport | AuctionClearedReport | QuotingReport | HoldingReport
             | AccountReport)

# The events of blocks and auctions an account hears of.
_MODE_EVENTS = (BlockPosted, BlockAccepted, AuctionOpened, AuctionBidAccepted, AuctionCleared,
                QuotingAssessed)
# The events that change an account's holdings other than by a trade (HoldingReport).
_HOLDING_EVENTS = frozenset({
    CashDeposited, CashWithdrawn, AllowancesIssued, AllowancesTransferred, AllowancesClawedBack,
    AllowancesPledged, PledgeReleased, PledgeEnforced, AllowancesAllocated, AllowancesConverted,
    HoldingsUnlocked})
# The clearing events an account hears of, by the report they become.
_CLEARING_EVENTS = (VariationMargin, MarginCalled, MarginCallMet, PositionClosedOut,
                    DefaultRecorded, DeliverySettled, DeliveryFailed, OptionExercised)


class ReportMaker:
    """Turns engine events into (account, report) pairs and public market data."""

    def __init__(self, market: Market) -> None:
        self._market = market
        self._ticks = {symbol: inst.tick for symbol, inst in market.instruments.items()}
        self._currency = {symbol: inst.currency for symbol, inst in market.instruments.items()}
        # Profiled (benchmarks/gateway.py, batched): prices repeat, so each instrument's
        # formatted prices are remembered (bounded: cleared past _PRICES_KEPT).
        self._texts: dict[str, dict[int, str]] = {symbol: {} for symbol in self._ticks}

    def price(self, instrument: str, ticks: int | None) -> str | None:
        if ticks is None:
            return None
        texts = self._texts[instrument]
        text = texts.get(ticks)
        if text is None:
            if len(texts) >= _PRICES_KEPT:
                texts.clear()
            text = texts[ticks] = self._ticks[instrument].format(ticks)
        return text

    def reports(self, event, reports: list) -> None:
        """Append ``(account, report)`` for every account *event* concerns."""
        kind = type(event)
        if kind is OrderAccepted:
            # The commonest report (benchmarks/gateway.py, batched): the order's own id and
            # its remembered price read here, as ``client_id`` and ``price`` would.
            instrument, ticks, order_id = event.instrument, event.price, event.order_id
            price = None if ticks is None else self._texts[instrument].get(ticks)
            reports.append((event.account,
                            AcceptedReport(event.seq, order_id.partition("/")[2] or order_id,
                                           instrument, event.side, event.type, event.tif,
                                           price or self.price(instrument, ticks), event.qty)))
        elif kind is TradeExecuted:
            instrument, seq, trade_id, qty = event.instrument, event.seq, event.trade_id, event.qty
            price = self.price(instrument, event.price)
            buyer_took = event.aggressor == "buy"
            mode = None if event.mode == "listing" else event.mode
            reports.append((event.buy_account,
                            FillReport(seq, trade_id, instrument, price, qty,
                                       client_id(event.buy_order_id), "buy", event.buy_leaves_qty,
                                       "taker" if buyer_took else "maker", mode)))
            reports.append((event.sell_account,
                            FillReport(seq, trade_id, instrument, price, qty,
                                       client_id(event.sell_order_id), "sell",
                                       event.sell_leaves_qty, "maker" if buyer_took else "taker",
                                       mode)))
        elif kind is OrderCancelled:
            reports.append((event.account,
                            CancelledReport(event.seq, client_id(event.order_id), event.instrument,
                                            event.side, event.cancelled_qty, event.reason)))
        elif kind is CommandRejected:
            if event.account:
                # client_id(None) is None: no order id, no key
                reports.append((event.account,
                                RejectedReport(seq=event.seq, action=event.action,
                                               reason=event.reason,
                                               order_id=client_id(event.order_id))))
        elif kind is OrderAmended:
            reports.append((event.account,
                            AmendedReport(event.seq, client_id(event.order_id), event.instrument,
                                          event.side, self.price(event.instrument, event.price),
                                          event.qty, event.priority_kept)))
        elif kind is OrderExpired:
            reports.append((event.account,
                            ExpiredReport(event.seq, client_id(event.order_id), event.instrument,
                                          event.side, event.expired_qty)))
        elif kind is OrderTriggered:
            instrument = event.instrument
            reports.append((event.account,
                            TriggeredReport(event.seq, client_id(event.order_id), instrument,
                                            event.side, self.price(instrument, event.stop_price),
                                            self.price(instrument, event.last_price))))
        elif kind is TradeSettled:
            currency = event.currency
            cash = format_cash(currency, event.cash)
            reports.append((event.buy_account,
                            SettledReport(event.seq, event.trade_id, event.instrument, event.qty,
                                          cash, currency, "buy",
                                          format_cash(currency, event.buy_fee))))
            reports.append((event.sell_account,
                            SettledReport(event.seq, event.trade_id, event.instrument, event.qty,
                                          cash, currency, "sell",
                                          format_cash(currency, event.sell_fee))))
        elif kind is TradeCleared:
            instrument = event.instrument
            currency = self._currency[instrument]
            price = self.price(instrument, event.price) or ""
            reports.append((event.buy_account,
                            ClearedReport(event.seq, event.trade_id, instrument, event.qty, price,
                                          "buy", event.buy_position,
                                          format_cash(currency, event.buy_fee), currency)))
            reports.append((event.sell_account,
                            ClearedReport(event.seq, event.trade_id, instrument, event.qty, price,
                                          "sell", event.sell_position,
                                          format_cash(currency, event.sell_fee), currency)))
        elif kind is MassCancelAccepted:
            reports.append((event.account,
                            MassCancelAcceptedReport(event.seq, event.instrument, event.side,
                                                     event.count)))
        elif kind in _CLEARING_EVENTS:
            reports.append((event.account, self.clearing_report(event)))
        elif kind is AllowancesSurrendered:
            reports.append((event.account,
                            SurrenderedReport(event.seq, event.instrument, event.qty, event.year)))
        elif kind in _MODE_EVENTS:
            self.mode_reports(event, reports)
        elif kind in _HOLDING_EVENTS:
            made: list = []
            self.holding_reports(event, made)
            # Not to a system account ("@registry" issues a primary auction's units to
            # itself, to sell): none has an exec topic, or a bot to read it.
            reports += [(account, report) for account, report in made
                        if not account.startswith("@")]
        elif kind is AccountStatusChanged:
            reports.append((event.account, AccountReport(event.seq, event.status)))

    @staticmethod
    def holding_reports(event, reports: list) -> None:
        """The ``holding`` reports of an event that moves an account's cash or allowances
        other than by a trade: one for each account and asset it changes."""
        kind, seq = type(event), event.seq
        if kind is CashDeposited or kind is CashWithdrawn:
            amount = event.amount if kind is CashDeposited else -event.amount
            cause = "deposit" if kind is CashDeposited else "withdrawal"
            reports.append((event.account, HoldingReport(
                seq, event.currency, cause, amount=format_cash(event.currency, amount))))
        elif kind is AllowancesIssued or kind is AllowancesClawedBack:
            issued = kind is AllowancesIssued
            reports.append((event.account, HoldingReport(
                seq, event.instrument, "issue" if issued else "clawback",
                qty=event.qty if issued else -event.qty)))
        elif kind is AllowancesTransferred:
            reports.append((event.account, HoldingReport(
                seq, event.instrument, "transfer", qty=-event.qty, counterparty=event.to_account)))
            reports.append((event.to_account, HoldingReport(
                seq, event.instrument, "transfer", qty=event.qty, counterparty=event.account)))
        elif kind is AllowancesPledged or kind is PledgeReleased:
            sign = 1 if kind is PledgeReleased else -1
            cause = "pledge" if kind is AllowancesPledged else "pledge_release"
            reports.append((event.account, HoldingReport(
                seq, event.instrument, cause, qty=sign * event.qty, pledged=-sign * event.qty,
                counterparty=event.to_account, pledge_id=event.pledge_id)))
        elif kind is PledgeEnforced:
            reports.append((event.account, HoldingReport(
                seq, event.instrument, "pledge_enforce", pledged=-event.qty,
                counterparty=event.to_account, pledge_id=event.pledge_id)))
            reports.append((event.to_account, HoldingReport(
                seq, event.instrument, "pledge_enforce", qty=event.qty,
                counterparty=event.account, pledge_id=event.pledge_id)))
        elif kind is AllowancesAllocated:
            change = event.issued - event.clawed_back
            if change:
                reports.append((event.account, HoldingReport(seq, event.instrument,
                                                             "allocation", qty=change)))
        elif kind is AllowancesConverted:
            reports.append((event.account, HoldingReport(seq, event.instrument, "conversion",
                                                         qty=-event.qty)))
            reports.append((event.account, HoldingReport(seq, event.to_instrument, "conversion",
                                                         qty=event.qty)))
        elif kind is HoldingsUnlocked:  # (units bought: cash is never locked)
            reports.append((event.account, HoldingReport(seq, event.asset, "unlock",
                                                         qty=event.qty)))

    def mode_reports(self, event, reports: list) -> None:
        """The reports of the block and auction events (``exchange.blocks``,
        ``exchange.auctions``)."""
        kind = type(event)
        instrument = event.instrument
        if kind is BlockPosted:
            price = self.price(instrument, event.price)
            assert price is not None
            for account in (event.account, event.to_account):
                if account:  # its poster, and the account it names
                    reports.append((account,
                                    BlockReport(event.seq, client_id(event.order_id),
                                                event.account, instrument, event.side, price,
                                                event.qty, event.to_account)))
        elif kind is BlockAccepted:
            reports.append((event.account,
                            BlockAcceptedReport(event.seq, client_id(event.order_id),
                                                event.to_account, instrument, event.side,
                                                self.price(instrument, event.price) or "",
                                                event.qty)))
        elif kind is AuctionOpened and not event.primary:  # the registry has no exec topic
            reports.append((event.account,
                            AuctionReport(event.seq, event.auction, instrument, event.side,
                                          event.qty, self.price(instrument, event.reserve) or "",
                                          event.pricing, event.primary)))
        elif kind is AuctionBidAccepted:
            reports.append((event.account,
                            BidAcceptedReport(event.seq, event.auction, client_id(event.order_id),
                                              instrument, event.side,
                                              self.price(instrument, event.price) or "",
                                              event.qty)))
        elif kind is QuotingAssessed:
            reports.append((event.account,
                            QuotingReport(event.seq, event.account, instrument, event.day,
                                          event.quoted_ns, event.session_ns, event.presence_bps,
                                          self.price(instrument, event.average_spread),
                                          event.met, format_cash(event.currency, event.rebate),
                                          event.currency)))
        elif kind is AuctionCleared and event.account and not event.account.startswith("@"):
            reports.append((event.account,
                            AuctionClearedReport(event.seq, event.auction, instrument,
                                                 event.status, self.price(instrument, event.price),
                                                 event.qty, event.unsold, event.bids,
                                                 event.filled_bids)))

    def public_block(self, event: BlockPosted | BlockAccepted, status: str) -> dict:
        """A public block quote as market data (``cx/v1/md/{instrument}/blocks``): who
        posted it and its id (to accept it), side, price and quantity, and ``status``
        (``open``, then ``accepted``, ``withdrawn`` or ``expired``)."""
        poster = event.account if type(event) is BlockPosted else event.to_account
        side = event.side if type(event) is BlockPosted else (
            "sell" if event.side == "buy" else "buy")
        return {
            "seq": event.seq,
            "order_id": client_id(event.order_id),
            "account": poster,
            "instrument": event.instrument,
            "side": side,
            "price": self.price(event.instrument, event.price),
            "qty": event.qty,
            "status": status
        }

    def auction_state(self, event: AuctionOpened | AuctionBidAccepted | AuctionCleared
                      | OrderCancelled, opened: AuctionOpened, bids: int) -> dict:
        """An auction's state as market data (``cx/v1/md/{instrument}/auctions``): its
        terms, ``status`` (``open``, or how it ended), the number of bids (never their
        prices: bids are sealed) and, once cleared, its price and quantity."""
        instrument = opened.instrument
        body = {
            "seq": event.seq,
            "auction": opened.auction,
            "instrument": instrument,
            "side": opened.side,
            "qty": opened.qty,
            "reserve": self.price(instrument, opened.reserve),
            "pricing": opened.pricing,
            "primary": opened.primary,
            "status": "open",
            "bids": bids
        }
        if type(event) is AuctionCleared:
            body.update(status=event.status, price=self.price(instrument, event.price),
                        cleared_qty=event.qty, unsold=event.unsold, bids=event.bids,
                        filled_bids=event.filled_bids)
        return body

    def clearing_report(self, event) -> Report:
        """A clearing event as the account's report: its fields but the account, prices
        as decimal strings on the instrument's tick (a strike on the underlying's) and
        amounts as decimal cash strings."""
        kind = type(event)
        seq = event.seq
        if kind is VariationMargin:
            return VariationMarginReport(seq, event.instrument, event.position,
                                         format_cash(event.currency, event.amount), event.currency)
        if kind is MarginCalled:
            currency = event.currency
            return MarginCallReport(seq, format_cash(currency, event.equity),
                                    format_cash(currency, event.maintenance),
                                    format_cash(currency, event.initial), currency)
        if kind is MarginCallMet:
            return MarginCallMetReport(seq, format_cash(event.currency, event.equity),
                                       event.currency)
        if kind is PositionClosedOut:
            return ClosedOutReport(seq, event.instrument, event.qty,
                                   self.price(event.instrument, event.price), event.via)
        if kind is DefaultRecorded:
            return DefaultReport(seq, format_cash(event.currency, event.amount), event.currency,
                                 event.reason)
        if kind is DeliverySettled:
            return DeliveryReport(seq, event.instrument, event.underlying, event.side,
                                  event.tonnes,
                                  format_cash(self._currency[event.instrument], event.cash))
        if kind is DeliveryFailed:
            return DeliveryFailedReport(seq, event.instrument, event.tonnes,
                                        format_cash(self._currency[event.instrument],
                                                    event.penalty))
        if kind is OptionExercised:
            return ExercisedReport(seq, event.instrument, event.underlying, event.lots,
                                   self.price(event.underlying, event.strike))
        raise TypeError(f"not a clearing event: {kind.__name__}")

    def public_trade(self, event: TradeExecuted) -> dict:
        """A trade as market data: no accounts, no order ids."""
        return {
            "seq": event.seq,
            "trade_id": event.trade_id,
            "instrument": event.instrument,
            "price": self.price(event.instrument, event.price),
            "qty": event.qty,
            "aggressor": event.aggressor,
            **({} if event.mode == "listing" else {"mode": event.mode})
        }

    def daily(self, event: DailyStatistics) -> dict:
        """An instrument's day as market data (``cx/v1/md/{instrument}/daily``)."""
        return {"seq": event.seq, "day": event.day, **daily_record(event, self._market)}

    def depth(self, instrument: str, seq: int, shape) -> dict:
        """Aggregated depth from ``book.depth(levels)``: price levels a side, best first."""
        bids, asks = shape
        fmt = self._ticks[instrument].format
        return {
            "instrument": instrument,
            "seq": seq,
            "bids": [[fmt(p), qty, count] for p, qty, count in bids],
            "asks": [[fmt(p), qty, count] for p, qty, count in asks]
        }


def daily_record(event: DailyStatistics, market: Market) -> dict:
    """One end of day's statistics of an instrument, keyed as ``replay --daily`` writes
    them: the date as ``YYYY-MM-DD`` in the market's time zone (the day's number from 1
    when the ``eod`` came without a time), prices and turnover as decimal strings,
    ``""`` where the day had no listing trade."""
    inst = market[event.instrument]
    price = inst.tick.format
    return {
        "date": str(event.day) if event.date is None else format_date(event.date),
        "instrument": event.instrument,
        "open": "" if event.open is None else price(event.open),
        "high": "" if event.high is None else price(event.high),
        "low": "" if event.low is None else price(event.low),
        "close": "" if event.close is None else price(event.close),
        "volume": event.volume,
        "turnover": format_cash(inst.currency, event.turnover),
        "block_volume": event.block_volume,
        "auction_volume": event.auction_volume
    }
