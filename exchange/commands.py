"""Commands: what the engine is asked to do, in the order-file / wire vocabulary.

Commands are imperative, immutable msgspec Structs in one union tagged by ``action``,
so a wire message such as ``{"action": "new", ...}`` decodes straight into one. Field
names are the pinned order-file keys (docs/formats.md). Prices stay exact decimal
strings here; the engine converts them to ticks with the instrument's rules, so an
off-tick price is a sequenced, journaled rejection like any other rule break.

Schema evolution: new fields must have defaults; tags and field names never change.

Enum-like fields are checked when a command is made, by any caller: msgspec checks a
``Literal`` field only when it decodes one, so ``PlaceOrder(side="BUY")`` would otherwise
be made, and the engine reads anything but ``"buy"`` as a sell. ``PlaceOrder``,
``MassCancel`` and ``OpenAccount`` check theirs in ``__post_init__`` (which msgspec also
runs on decode) and raise ``ValueError`` for an unknown value, ``TypeError`` for a
quantity that is not an ``int``. Values the engine judges (a quantity of zero or below,
an emissions ``quality``, an allocation ``stage``) are left to it: they are sequenced,
journaled rejections with a reason, and a journal may hold them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Command", "PlaceOrder", "CancelOrder", "AmendOrder", "MassCancel", "EndOfDay", "Deposit",
    "Withdraw", "IssueAllowances", "SurrenderAllowances", "TransferAllowances", "OpenAccount",
    "SuspendAccount", "ResumeAccount", "CloseAccount", "RecordEmissions", "ComplianceDeadline",
    "ClawBackAllowances", "AllocateAllowances", "ConvertAllowances", "PledgeAllowances",
    "ReleasePledge", "EnforcePledge", "PLEDGE_COMMANDS", "HaltInstrument",
    "ResumeInstrument", "PostBlock", "AcceptBlock", "OpenAuction", "BidAuction", "CloseAuction",
    "AdvanceClock", "AnyCommand", "BLOCK_COMMANDS", "AUCTION_COMMANDS", "PRICINGS",
    "ADMIN_COMMANDS", "OPERATOR_COMMANDS",
    "ACCOUNT_KINDS", "SIDES", "ORDER_TYPES", "TIFS", "STP_MODES"
]

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market", "stop", "stop_limit"]
TimeInForce = Literal["gtc", "day", "ioc", "fok", "gtd"]
StpMode = Literal["cancel_resting", "cancel_aggressor", "cancel_both", "none"]

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market", "stop", "stop_limit")
TIFS = ("gtc", "day", "ioc", "fok", "gtd")
STP_MODES = ("cancel_resting", "cancel_aggressor", "cancel_both", "none")
PRICINGS = ("uniform", "pay_as_bid")
Pricing = Literal["uniform", "pay_as_bid"]

_TYPE_SET = frozenset(ORDER_TYPES)
_TIF_SET = frozenset(TIFS)
_STP_SET = frozenset((*STP_MODES, None))


def _one_of(command: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming *command*'s field *name* unless *value* is allowed."""
    if isinstance(value, str) and value in allowed:
        return
    shown = ", ".join(repr(a) for a in allowed)
    raise ValueError(f"{command}: {name} must be one of {shown}, not {value!r}")


def _integer(command: str, name: str, value: object) -> None:
    """Raise ``TypeError`` naming *command*'s field *name* unless *value* is an ``int``."""
    if type(value) is not int:
        raise TypeError(f"{command}: {name} must be an int, not {type(value).__name__} {value!r}")


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="action", gc=False,
              omit_defaults=True):
    """Base of every command. ``ts`` (integer nanoseconds) moves the engine's clock.

    ``command_id``, when given, makes a command idempotent: the engine applies the
    first command with a given (account, command_id) and rejects any later one as
    ``duplicate_command`` (a bot resending after a reconnect).

    ``omit_defaults``: encoded commands (journal frames, wire messages) leave out fields
    at their defaults, which decode back to the same defaults.
    """

    ts: int | None = None
    command_id: str | None = None


class PlaceOrder(Command, frozen=True, tag="new"):
    """Enter a new order. ``price`` and ``stop_price`` are exact decimal strings."""

    order_id: str
    account: str
    instrument: str
    side: Side
    qty: int
    type: OrderType = "limit"
    tif: TimeInForce = "gtc"
    price: str | None = None
    stop_price: str | None = None
    display_qty: int | None = None
    post_only: bool = False
    stp: StpMode | None = None
    expire_ts: int | None = None

    def __post_init__(self) -> None:
        # On the path every order takes (the order-file readers and the gateway make
        # millions), so measured (cachegrind): string comparisons with the common value
        # first cost about a third of set lookups; the details only when a test fails.
        try:
            if ((self.side == "buy" or self.side == "sell")
                    and (self.type == "limit" or self.type in _TYPE_SET)
                    and (self.tif == "gtc" or self.tif in _TIF_SET)
                    and (self.stp is None or self.stp in _STP_SET) and type(self.qty) is int):
                return
        except TypeError:  # an unhashable value: say which below
            pass
        _invalid_order(self)


def _invalid_order(order: PlaceOrder) -> None:
    """Raise the error that says what is wrong with *order* (the slow path)."""
    for name, allowed in (("side", SIDES), ("type", ORDER_TYPES), ("tif", TIFS)):
        _one_of("PlaceOrder", name, getattr(order, name), allowed)
    if order.stp is not None:
        _one_of("PlaceOrder", "stp", order.stp, STP_MODES)
    _integer("PlaceOrder", "qty", order.qty)
    raise AssertionError("unreachable: PlaceOrder failed a check that passes")


class CancelOrder(Command, frozen=True, tag="cancel"):
    """Cancel the open quantity of an order; only its owner may."""

    order_id: str
    account: str
    instrument: str | None = None


class AmendOrder(Command, frozen=True, tag="amend"):
    """Change an order's price and/or open quantity; ``None`` keeps the current value."""

    order_id: str
    account: str
    instrument: str | None = None
    price: str | None = None
    qty: int | None = None


class MassCancel(Command, frozen=True, tag="mass_cancel"):
    """Cancel every open order of an account, optionally of one instrument and side."""

    account: str
    instrument: str | None = None
    side: Side | None = None

    def __post_init__(self) -> None:
        if self.side is not None:
            _one_of("MassCancel", "side", self.side, SIDES)


class EndOfDay(Command, frozen=True, tag="eod"):
    """End the trading day: expire day orders, set reference prices from the close."""


class AdvanceClock(Command, frozen=True, tag="clock"):
    """Move the engine's clock to ``ts`` and nothing else: the live gateway's, when a gtd
    order's time has come and no other command would move the clock (the order leaves the
    book then, not at the next command). Journaled like any command; no order-file row."""


class HaltInstrument(Command, frozen=True, tag="halt"):
    """Halt trading in an instrument (the operator's): new orders and amends are rejected
    ``instrument_halted`` until it is resumed; cancels go through, resting orders stay."""

    instrument: str


class ResumeInstrument(Command, frozen=True, tag="resume"):
    """Lift a halt: the instrument trades again, its resting orders as they were."""

    instrument: str


class Deposit(Command, frozen=True, tag="deposit"):
    """Credit cash to an account (``instrument`` is the currency; ``qty`` a decimal amount)."""

    account: str
    currency: str = msgspec.field(name="instrument")
    amount: str = msgspec.field(name="qty")


class Withdraw(Command, frozen=True, tag="withdraw"):
    """Debit cash from an account."""

    account: str
    currency: str = msgspec.field(name="instrument")
    amount: str = msgspec.field(name="qty")


class IssueAllowances(Command, frozen=True, tag="issue"):
    """Issue allowances (whole units) of an instrument into an account's holdings."""

    account: str
    instrument: str
    qty: int


class SurrenderAllowances(Command, frozen=True, tag="surrender"):
    """Surrender allowances from an account's holdings against its obligation for
    ``year`` (the registry's eligibility rules apply); without a year, a voluntary
    cancellation."""

    account: str
    instrument: str
    qty: int
    year: int | None = None


class ClawBackAllowances(Command, frozen=True, tag="claw_back"):
    """Take back allowances the registry issued in excess (a true-up below the
    pre-allocation): they leave the account and the supply."""

    account: str
    instrument: str
    qty: int


class RecordEmissions(Command, frozen=True, tag="emissions"):
    """Record an account's verified emissions for a compliance year (tCO2e), which set
    its obligation; a second record for the same year restates the first."""

    account: str
    year: int
    qty: int
    quality: str = "measured"  # measured, default, estimated or revised (checked)
    verifier: str | None = None
    months: int = 12  # monthly-log completeness: months of the year logged


class AllocateAllowances(Command, frozen=True, tag="allocate"):
    """Set an entity's free allocation of ``year`` in that year's vintage: ``stage``
    ``pre`` (a share of prior-year emissions, before verification) or ``final`` (the
    true-up, only once the year's emissions are verified; a restatement sends a new
    final). The registry issues the difference from what it allocated before, or claws
    the excess back, after deducting last year's shortfall."""

    account: str
    instrument: str
    year: int
    qty: int
    stage: str = "final"


class ConvertAllowances(Command, frozen=True, tag="convert"):
    """Banking: convert old-vintage allowances (2019-2024) into ``to_instrument`` (the
    2025 vintage) within the cap T = 10,000 + 1.5 x net sales in 2024-2025."""

    account: str
    instrument: str
    to_instrument: str
    qty: int


class ComplianceDeadline(Command, frozen=True, tag="deadline"):
    """Assess every obligation of ``year``: compliant or short, and the fine, at
    ``multiple`` (5-10) times the average allowance price of the month before the
    deadline, or at ``price`` (a decimal string, per unit in the allowances' currency:
    the operator's reference price, such as the published national average) when given."""

    year: int
    multiple: int = 5
    price: str | None = None


class TransferAllowances(Command, frozen=True, tag="transfer"):
    """Move available allowances from ``account`` to ``to_account`` (a registry transfer)."""

    account: str
    to_account: str
    instrument: str
    qty: int


ACCOUNT_KINDS = ("covered", "financial", "market_maker")


class OpenAccount(Command, frozen=True, tag="open_account"):
    """Open an account of a kind: ``covered`` entity, ``financial`` institution or
    ``market_maker``. Accounts a replay meets first in another row open as ``covered``."""

    account: str
    kind: Literal["covered", "financial", "market_maker"] = "covered"

    def __post_init__(self) -> None:
        _one_of("OpenAccount", "kind", self.kind, ACCOUNT_KINDS)


class SuspendAccount(Command, frozen=True, tag="suspend_account"):
    """Suspend an account: no new orders or amends; cancels and cash movements go on."""

    account: str


class ResumeAccount(Command, frozen=True, tag="resume_account"):
    """Lift a suspension."""

    account: str


class CloseAccount(Command, frozen=True, tag="close_account"):
    """Close an empty account (no holdings, no open orders) for good."""

    account: str


# --- pledges of allowances (exchange.ledger) ---------------------------------------------
class PledgeAllowances(Command, frozen=True, tag="pledge"):
    """Register a pledge: ``qty`` of ``account``'s available ``instrument`` become pledged
    to ``to_account`` (the pledgee, such as a lending bank) under the pledge id
    ``order_id``. Pledged units stay the pledgor's but cannot be sold, transferred,
    surrendered or converted until the pledge is released or enforced."""

    pledge_id: str = msgspec.field(name="order_id")
    account: str
    to_account: str
    instrument: str
    qty: int

    def __post_init__(self) -> None:
        _integer("PledgeAllowances", "qty", self.qty)


class ReleasePledge(Command, frozen=True, tag="pledge_release"):
    """Release ``qty`` (all, without it) of the pledge ``order_id`` made by ``account``:
    the units become available to the pledgor again (the debt was repaid)."""

    pledge_id: str = msgspec.field(name="order_id")
    account: str
    qty: int | None = None


class EnforcePledge(Command, frozen=True, tag="pledge_enforce"):
    """Enforce ``qty`` (all, without it) of the pledge ``order_id`` made by ``account``:
    the pledged units pass to the pledgee's available holdings (the debtor defaulted)."""

    pledge_id: str = msgspec.field(name="order_id")
    account: str
    qty: int | None = None


PLEDGE_COMMANDS = (PledgeAllowances, ReleasePledge, EnforcePledge)


# --- block agreements and one-way bidding (exchange.blocks, exchange.auctions) -----------
class PostBlock(Command, frozen=True, tag="block"):
    """Post a block agreement: *qty* at *price*, all or nothing, away from the book.

    ``to_account`` names the only account that may accept it; ``None`` makes it a public
    block quote any account may accept. ``order_id`` is the block's id (unique for the
    day among order ids); the poster cancels it with ``cancel``."""

    order_id: str
    account: str
    instrument: str
    side: Side
    price: str
    qty: int
    to_account: str | None = None

    def __post_init__(self) -> None:
        _one_of("PostBlock", "side", self.side, SIDES)
        _integer("PostBlock", "qty", self.qty)


class AcceptBlock(Command, frozen=True, tag="block_accept"):
    """Accept the block ``order_id`` posted by ``to_account``: it trades whole, at once."""

    order_id: str
    account: str
    to_account: str
    instrument: str | None = None


class OpenAuction(Command, frozen=True, tag="auction_open"):
    """Open a one-way auction: the initiator ``account`` sells (``side`` sell; buyers bid)
    or buys (``side`` buy; sellers offer) ``qty`` with reserve ``price``. Opened by the
    registry's account ``@registry`` as seller, it is a primary auction of new allowances."""

    auction: str
    account: str
    instrument: str
    side: Side
    qty: int
    price: str
    pricing: Pricing = "uniform"

    def __post_init__(self) -> None:
        _one_of("OpenAuction", "side", self.side, SIDES)
        _one_of("OpenAuction", "pricing", self.pricing, PRICINGS)
        _integer("OpenAuction", "qty", self.qty)


class BidAuction(Command, frozen=True, tag="auction_bid"):
    """Bid (or offer, in a purchase) ``qty`` at ``price`` in an open auction. The bid's
    ``order_id`` is the bidder's own; ``cancel`` withdraws it until the auction clears."""

    auction: str
    order_id: str
    account: str
    price: str
    qty: int

    def __post_init__(self) -> None:
        _integer("BidAuction", "qty", self.qty)


class CloseAuction(Command, frozen=True, tag="auction_close"):
    """Clear an auction (the operator's): bids fill by price, then time."""

    auction: str


AnyCommand = (PlaceOrder
              | CancelOrder
              | AmendOrder
              | MassCancel
              | EndOfDay
              | Deposit
              | Withdraw
              | IssueAllowances
              | SurrenderAllowances
              | TransferAllowances
              | OpenAccount
              | SuspendAccount
              | ResumeAccount
              | CloseAccount
              | RecordEmissions
              | ComplianceDeadline
              | ClawBackAllowances
              | AllocateAllowances
              | ConvertAllowances
              | PledgeAllowances
              | ReleasePledge
              | EnforcePledge
              | HaltInstrument
              | ResumeInstrument
              | PostBlock
              | AcceptBlock
              | OpenAuction
              | BidAuction
              | CloseAuction
              | AdvanceClock)
BLOCK_COMMANDS = (PostBlock, AcceptBlock)
AUCTION_COMMANDS = (OpenAuction, BidAuction, CloseAuction)
ADMIN_COMMANDS = (Deposit, Withdraw, IssueAllowances, SurrenderAllowances, TransferAllowances,
                  OpenAccount, SuspendAccount, ResumeAccount, CloseAccount, RecordEmissions,
                  ComplianceDeadline, ClawBackAllowances, AllocateAllowances, ConvertAllowances,
                  *PLEDGE_COMMANDS)
# What only the exchange's operator may send (never a bot): the ledger's and registry's
# actions, the end of the day, halts and the clearing of auctions.
OPERATOR_COMMANDS = (*ADMIN_COMMANDS, EndOfDay, HaltInstrument, ResumeInstrument, CloseAuction)
