"""Commands: what the engine is asked to do, in the order-file / wire vocabulary.

Commands are imperative, immutable msgspec Structs in one union tagged by ``action``,
so a wire message such as ``{"action": "new", ...}`` decodes straight into one. Field
names are the pinned order-file keys (shared/DESIGN.md). Prices stay exact decimal
strings here; the engine converts them to ticks with the instrument's rules, so an
off-tick price is a sequenced, journaled rejection like any other rule break.

Schema evolution: new fields must have defaults; tags and field names never change.
"""
from __future__ import annotations

from typing import Literal, Union

import msgspec

__all__ = [
    "Command", "PlaceOrder", "CancelOrder", "AmendOrder", "MassCancel", "EndOfDay",
    "Deposit", "Withdraw", "IssueAllowances", "SurrenderAllowances", "TransferAllowances",
    "OpenAccount", "SuspendAccount", "ResumeAccount", "CloseAccount", "RecordEmissions",
    "ComplianceDeadline", "ClawBackAllowances", "AllocateAllowances", "ConvertAllowances",
    "AnyCommand",
    "ADMIN_COMMANDS", "ACCOUNT_KINDS",
    "SIDES", "ORDER_TYPES", "TIFS", "STP_MODES",
]

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market", "stop", "stop_limit"]
TimeInForce = Literal["gtc", "day", "ioc", "fok", "gtd"]
StpMode = Literal["cancel_resting", "cancel_aggressor", "cancel_both", "none"]

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market", "stop", "stop_limit")
TIFS = ("gtc", "day", "ioc", "fok", "gtd")
STP_MODES = ("cancel_resting", "cancel_aggressor", "cancel_both", "none")


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


class PlaceOrder(Command, tag="new"):
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


class CancelOrder(Command, tag="cancel"):
    """Cancel the open quantity of an order; only its owner may."""

    order_id: str
    account: str
    instrument: str | None = None


class AmendOrder(Command, tag="amend"):
    """Change an order's price and/or open quantity; ``None`` keeps the current value."""

    order_id: str
    account: str
    instrument: str | None = None
    price: str | None = None
    qty: int | None = None


class MassCancel(Command, tag="mass_cancel"):
    """Cancel every open order of an account, optionally of one instrument and side."""

    account: str
    instrument: str | None = None
    side: Side | None = None


class EndOfDay(Command, tag="eod"):
    """End the trading day: expire day orders, set reference prices from the close."""


class Deposit(Command, tag="deposit"):
    """Credit cash to an account (``instrument`` is the currency; ``qty`` a decimal amount)."""

    account: str
    currency: str = msgspec.field(name="instrument")
    amount: str = msgspec.field(name="qty")


class Withdraw(Command, tag="withdraw"):
    """Debit cash from an account."""

    account: str
    currency: str = msgspec.field(name="instrument")
    amount: str = msgspec.field(name="qty")


class IssueAllowances(Command, tag="issue"):
    """Issue allowances (whole units) of an instrument into an account's holdings."""

    account: str
    instrument: str
    qty: int


class SurrenderAllowances(Command, tag="surrender"):
    """Surrender allowances from an account's holdings against its obligation for
    ``year`` (the registry's eligibility rules apply); without a year, a voluntary
    cancellation."""

    account: str
    instrument: str
    qty: int
    year: int | None = None


class ClawBackAllowances(Command, tag="claw_back"):
    """Take back allowances the registry issued in excess (a true-up below the
    pre-allocation): they leave the account and the supply."""

    account: str
    instrument: str
    qty: int


class RecordEmissions(Command, tag="emissions"):
    """Record an account's verified emissions for a compliance year (tCO2e), which set
    its obligation; a second record for the same year restates the first."""

    account: str
    year: int
    qty: int
    quality: str = "measured"  # measured, default, estimated or revised (checked)
    verifier: str | None = None
    months: int = 12           # monthly-log completeness: months of the year logged


class AllocateAllowances(Command, tag="allocate"):
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


class ConvertAllowances(Command, tag="convert"):
    """Banking: convert old-vintage allowances (2019-2024) into ``to_instrument`` (the
    2025 vintage) within the cap T = 10,000 + 1.5 x net sales in 2024-2025."""

    account: str
    instrument: str
    to_instrument: str
    qty: int


class ComplianceDeadline(Command, tag="deadline"):
    """Assess every obligation of ``year``: compliant or short, and the fine, at
    ``multiple`` (5-10) times the average allowance price of the month before the
    deadline."""

    year: int
    multiple: int = 5


class TransferAllowances(Command, tag="transfer"):
    """Move available allowances from ``account`` to ``to_account`` (a registry transfer)."""

    account: str
    to_account: str
    instrument: str
    qty: int


ACCOUNT_KINDS = ("covered", "financial", "market_maker")


class OpenAccount(Command, tag="open_account"):
    """Open an account of a kind: ``covered`` entity, ``financial`` institution or
    ``market_maker``. Accounts a replay meets first in another row open as ``covered``."""

    account: str
    kind: Literal["covered", "financial", "market_maker"] = "covered"


class SuspendAccount(Command, tag="suspend_account"):
    """Suspend an account: no new orders or amends; cancels and cash movements go on."""

    account: str


class ResumeAccount(Command, tag="resume_account"):
    """Lift a suspension."""

    account: str


class CloseAccount(Command, tag="close_account"):
    """Close an empty account (no holdings, no open orders) for good."""

    account: str


AnyCommand = Union[
    PlaceOrder, CancelOrder, AmendOrder, MassCancel, EndOfDay,
    Deposit, Withdraw, IssueAllowances, SurrenderAllowances, TransferAllowances,
    OpenAccount, SuspendAccount, ResumeAccount, CloseAccount, RecordEmissions,
    ComplianceDeadline, ClawBackAllowances, AllocateAllowances, ConvertAllowances,
]
ADMIN_COMMANDS = (Deposit, Withdraw, IssueAllowances, SurrenderAllowances, TransferAllowances,
                  OpenAccount, SuspendAccount, ResumeAccount, CloseAccount, RecordEmissions,
                  ComplianceDeadline, ClawBackAllowances, AllocateAllowances,
                  ConvertAllowances)
