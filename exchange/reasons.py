"""Reason codes: one vocabulary, each code with the pipeline stage that gives it.

A ``rejected`` command carries a VALIDATION, STATE, REGISTRY or RISK code, or, turned
away before the engine, a GATEWAY one, and changes nothing. An accepted order whose
remainder cannot rest is ``cancelled`` with an OUTCOME code. Codes are stable strings
(``Reason`` is a ``StrEnum``: a member is equal to its string, and encodes as it): tools
and bots match on them.

>>> Reason.OFF_TICK == "off_tick", Reason.OFF_TICK.stage
(True, <Stage.VALIDATION: 'validation'>)
>>> sorted(Reason.INSUFFICIENT_CASH.stages)
[<Stage.OUTCOME: 'outcome'>, <Stage.RISK: 'risk'>]
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "GATEWAY", "OUTCOME", "REGISTRY", "REJECT_REASONS", "RISK", "STATE", "VALIDATION", "Reason",
    "Rejected", "Stage"
]


class Stage(StrEnum):
    """Where in the pipeline a reason is given."""

    VALIDATION = "validation"  # the command breaks a market rule on its own: rejected
    STATE = "state"  # it does not fit the engine's current state: rejected
    REGISTRY = "registry"  # a compliance rule: rejected
    RISK = "risk"  # the ledger refuses it: rejected
    OUTCOME = "outcome"  # why an accepted order's quantity was cancelled
    GATEWAY = "gateway"  # turned away by the gateway before the engine


class Reason(StrEnum):
    """Every reason code the exchange gives, grouped by stage."""

    # --- validation: the command breaks a market rule on its own --------------------------
    MISSING_FIELD = "missing_field"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    MISSING_PRICE = "missing_price"
    PRICE_NOT_ALLOWED = "price_not_allowed"
    INVALID_PRICE = "invalid_price"
    OFF_TICK = "off_tick"
    PRICE_OUT_OF_BAND = "price_out_of_band"
    MISSING_STOP_PRICE = "missing_stop_price"
    STOP_PRICE_NOT_ALLOWED = "stop_price_not_allowed"
    INVALID_QUANTITY = "invalid_quantity"
    OFF_STEP = "off_step"
    QUANTITY_BELOW_MINIMUM = "quantity_below_minimum"
    QUANTITY_ABOVE_MAXIMUM = "quantity_above_maximum"
    INVALID_DISPLAY_QTY = "invalid_display_qty"
    POST_ONLY_NOT_ALLOWED = "post_only_not_allowed"
    MISSING_EXPIRE_TS = "missing_expire_ts"
    EXPIRE_TS_NOT_ALLOWED = "expire_ts_not_allowed"
    EXPIRE_TS_IN_PAST = "expire_ts_in_past"
    # block agreements and one-way bidding (exchange.blocks, exchange.auctions)
    NOT_SPOT = "not_spot"  # a block or auction on a derivative: spot instruments only
    BELOW_BLOCK_MINIMUM = "below_block_minimum"  # a block or auction under its minimum size
    OUTSIDE_BLOCK_BAND = "outside_block_band"  # a block priced beyond its band (+-30%)
    RESERVE_OUT_OF_RANGE = "reserve_out_of_range"  # a reserve outside its range (10%)
    BELOW_RESERVE = "below_reserve"  # a bid on a sale under the reserve (offer: above)
    ABOVE_BID_CAP = "above_bid_cap"  # a bid above the reference + 10% (offer: below - 10%)

    # --- state: the command does not fit the engine's current state -----------------------
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    UNKNOWN_ORDER = "unknown_order"
    NOT_OWNER = "not_owner"
    POST_ONLY_WOULD_TRADE = "post_only_would_trade"

    DUPLICATE_COMMAND = "duplicate_command"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_EXISTS = "account_exists"
    SAME_ACCOUNT = "same_account"  # a transfer to the account it comes from
    ACCOUNT_NOT_EMPTY = "account_not_empty"
    RESERVED_ACCOUNT = "reserved_account"
    UNKNOWN_CURRENCY = "unknown_currency"
    INVALID_AMOUNT = "invalid_amount"
    # a deposit, issue, allocation or conversion that would take the asset's supply (all
    # accounts together) to 2^62 units or more, the most the ledger records
    SUPPLY_LIMIT = "supply_limit"
    NOT_ISSUABLE = "not_issuable"
    NOT_CLEARED = "not_cleared"
    MARKET_CLOSED = "market_closed"  # outside its trading mode's session, or not a business day
    MARKET_OPEN = "market_open"  # an end of day before the day's last session has ended
    DAY_ENDED = "day_ended"  # an end of day for a date already ended, or for one before it
    INSTRUMENT_HALTED = "instrument_halted"  # the operator halted the instrument
    NOT_HALTED = "not_halted"  # a resume of an instrument that trades
    ALREADY_HALTED = "already_halted"  # a halt of an instrument already halted
    ALREADY_SUSPENDED = "already_suspended"  # a suspension of a suspended account
    NOT_SUSPENDED = "not_suspended"  # a resume_account of an account that is not suspended
    NOT_COUNTERPARTY = "not_counterparty"  # a block accepted by an account it does not name
    UNKNOWN_BLOCK = "unknown_block"  # no open block with that id and poster
    OWN_BLOCK = "own_block"  # a block accepted by the account that posted it
    UNKNOWN_AUCTION = "unknown_auction"
    DUPLICATE_AUCTION = "duplicate_auction"  # an auction id already in use today
    AUCTION_CLOSED = "auction_closed"  # a bid or close for an auction that has cleared
    OWN_AUCTION = "own_auction"  # the initiator bidding in its own auction
    DUPLICATE_PLEDGE = "duplicate_pledge"  # a pledge id already in force
    UNKNOWN_PLEDGE = "unknown_pledge"  # no pledge in force with that id
    EXCEEDS_PLEDGE = "exceeds_pledge"  # a release or enforcement of more than is pledged

    # --- registry: compliance rules (exchange.compliance.registry) ---
    INVALID_QUALITY = "invalid_quality"  # data quality not measured/default/estimated/revised
    INVALID_YEAR = "invalid_year"
    INVALID_MULTIPLE = "invalid_multiple"  # a fine multiple outside 5-10
    NO_OBLIGATION = "no_obligation"  # no verified emissions for that year
    INELIGIBLE_VINTAGE = "ineligible_vintage"  # a later vintage (no borrowing) or unconverted
    OFFSET_CAP_EXCEEDED = "offset_cap_exceeded"  # CCER beyond 5% of the obligation
    # a surrender beyond what the year still needs: the excess would be cancelled for nothing
    EXCEEDS_OBLIGATION = "exceeds_obligation"
    INELIGIBLE_OFFSET = "ineligible_offset"  # CCER from inside the scheme, or too old
    AFTER_DEADLINE = "after_deadline"
    YEAR_CLOSED = "year_closed"  # the year's deadline was processed
    DEADLINE_NOT_PASSED = "deadline_not_passed"  # a deadline row stamped before the deadline
    NO_MARKET_PRICE = "no_market_price"  # no allowance trades in the month before it
    # a fine of 2^62 fen or more (the most the ledger records): a price or emissions no
    # real year has
    FINE_OUT_OF_RANGE = "fine_out_of_range"
    NOT_COVERED = "not_covered"  # the account is not a covered entity
    INVALID_MONTHS = "invalid_months"  # monthly-log completeness outside 0-12
    INVALID_STAGE = "invalid_stage"  # an allocation stage other than pre or final
    NOT_VERIFIED = "not_verified"  # a true-up, or a deadline, before emissions are verified
    ALREADY_FINAL = "already_final"  # a pre-allocation after the true-up
    CONVERSION_CAP_EXCEEDED = "conversion_cap_exceeded"  # banking conversion beyond its cap
    CONVERSION_CLOSED = "conversion_closed"  # banking after its window (closes 2026-06-10)
    MISSED_SURRENDER = "missed_surrender"  # banking by an entity assessed short at a deadline

    # --- risk: the ledger refuses (checked before an order can trade) -----------------------
    INSUFFICIENT_CASH = "insufficient_cash"
    INSUFFICIENT_ALLOWANCES = "insufficient_allowances"
    POSITION_LIMIT = "position_limit"
    ACCOUNT_SUSPENDED = "account_suspended"
    ACCOUNT_CLOSED = "account_closed"
    STOP_NEEDS_BAND = "stop_needs_band"  # a stop market buy with no band: nothing to hold at
    INSUFFICIENT_MARGIN = "insufficient_margin"  # cash available below the initial margin
    REDUCE_ONLY = "reduce_only"  # under a margin call: only reducing orders
    CONTRACT_EXPIRED = "contract_expired"  # after the contract's last trading day
    LIMIT_ONLY = "limit_only"  # a market or stop order on an option: options take limits

    # --- outcome: why an accepted order's quantity was cancelled ---------------------------
    CANCELLED_BY_OWNER = "cancelled_by_owner"
    MASS_CANCEL = "mass_cancel"
    MARGIN_CLOSE_OUT = "margin_close_out"  # a called account's orders, before its close-out
    IOC_REMAINDER = "ioc_remainder"
    MARKET_REMAINDER = "market_remainder"
    FOK_UNFILLED = "fok_unfilled"
    STP_CANCEL_RESTING = "stp_cancel_resting"
    STP_CANCEL_AGGRESSOR = "stp_cancel_aggressor"
    STOP_LIMIT_OUT_OF_BAND = "stop_limit_out_of_band"
    AUCTION_UNFILLED = "auction_unfilled"  # the part of a bid the auction did not fill
    AUCTION_CANCELLED = "auction_cancelled"  # bids of an auction that did not clear

    # --- gateway: a message turned away before the engine (gateway.protocol sends them)
    MALFORMED = "malformed"  # not JSON / msgpack, or not objects
    BAD_COMMAND = "bad_command"  # a field of the wrong type, value or name
    NOT_PERMITTED = "not_permitted"  # an operator action sent by a bot
    WRONG_ACCOUNT = "wrong_account"  # the command names another account
    TOO_LARGE = "too_large"  # the message exceeds the payload limit
    TOO_MANY_COMMANDS = "too_many_commands"  # a list longer than the command limit
    RATE_LIMITED = "rate_limited"  # the account sent faster than its limit
    OVERLOADED = "overloaded"  # the account's intake is full: resend later

    @property
    def stages(self) -> frozenset[Stage]:
        """The stages that give this reason (a few codes are given by two)."""
        return _STAGES_OF[self]

    @property
    def stage(self) -> Stage:
        """The first stage that gives this reason."""
        return min(_STAGES_OF[self], key=list(Stage).index)


VALIDATION = frozenset[Reason]({
    Reason.MISSING_FIELD, Reason.UNKNOWN_INSTRUMENT, Reason.MISSING_PRICE, Reason.PRICE_NOT_ALLOWED,
    Reason.INVALID_PRICE, Reason.OFF_TICK, Reason.PRICE_OUT_OF_BAND, Reason.MISSING_STOP_PRICE,
    Reason.STOP_PRICE_NOT_ALLOWED, Reason.INVALID_QUANTITY, Reason.OFF_STEP,
    Reason.QUANTITY_BELOW_MINIMUM, Reason.QUANTITY_ABOVE_MAXIMUM, Reason.INVALID_DISPLAY_QTY,
    Reason.POST_ONLY_NOT_ALLOWED, Reason.MISSING_EXPIRE_TS, Reason.EXPIRE_TS_NOT_ALLOWED,
    Reason.EXPIRE_TS_IN_PAST, Reason.NOT_SPOT, Reason.BELOW_BLOCK_MINIMUM,
    Reason.OUTSIDE_BLOCK_BAND, Reason.RESERVE_OUT_OF_RANGE, Reason.BELOW_RESERVE,
    Reason.ABOVE_BID_CAP
})
STATE = frozenset[Reason]({
    Reason.DUPLICATE_ORDER_ID, Reason.UNKNOWN_ORDER, Reason.NOT_OWNER, Reason.POST_ONLY_WOULD_TRADE,
    Reason.DUPLICATE_COMMAND, Reason.UNKNOWN_ACCOUNT, Reason.ACCOUNT_EXISTS, Reason.SAME_ACCOUNT,
    Reason.ACCOUNT_NOT_EMPTY, Reason.RESERVED_ACCOUNT, Reason.UNKNOWN_CURRENCY,
    Reason.INVALID_AMOUNT, Reason.SUPPLY_LIMIT, Reason.NOT_ISSUABLE, Reason.NOT_CLEARED,
    Reason.MARKET_CLOSED, Reason.MARKET_OPEN, Reason.DAY_ENDED, Reason.INSTRUMENT_HALTED,
    Reason.NOT_HALTED, Reason.ALREADY_HALTED, Reason.ALREADY_SUSPENDED, Reason.NOT_SUSPENDED,
    Reason.NOT_COUNTERPARTY, Reason.UNKNOWN_BLOCK,
    Reason.OWN_BLOCK, Reason.UNKNOWN_AUCTION, Reason.DUPLICATE_AUCTION, Reason.AUCTION_CLOSED,
    Reason.OWN_AUCTION, Reason.DUPLICATE_PLEDGE, Reason.UNKNOWN_PLEDGE, Reason.EXCEEDS_PLEDGE
})
RISK = frozenset[Reason]({
    Reason.INSUFFICIENT_CASH, Reason.INSUFFICIENT_ALLOWANCES, Reason.POSITION_LIMIT,
    Reason.ACCOUNT_SUSPENDED, Reason.ACCOUNT_CLOSED, Reason.STOP_NEEDS_BAND,
    Reason.INSUFFICIENT_MARGIN, Reason.REDUCE_ONLY, Reason.CONTRACT_EXPIRED, Reason.LIMIT_ONLY
})
# post_only_would_trade is both: an amend that would make a post-only order trade is
# rejected; a new post-only order that would trade is accepted, then cancelled.
OUTCOME = frozenset[Reason]({
    Reason.CANCELLED_BY_OWNER, Reason.MASS_CANCEL, Reason.IOC_REMAINDER, Reason.MARKET_REMAINDER,
    Reason.FOK_UNFILLED, Reason.STP_CANCEL_RESTING, Reason.STP_CANCEL_AGGRESSOR,
    Reason.STOP_LIMIT_OUT_OF_BAND, Reason.POST_ONLY_WOULD_TRADE, Reason.INSUFFICIENT_CASH,
    Reason.CONTRACT_EXPIRED, Reason.MARGIN_CLOSE_OUT, Reason.AUCTION_UNFILLED,
    Reason.AUCTION_CANCELLED, Reason.PRICE_OUT_OF_BAND
})
# insufficient_cash is an outcome too: a market buy with no band trades only while the
# account's cash covers the next fill, and the rest is cancelled with it.
REGISTRY = frozenset[Reason]({
    Reason.INVALID_QUALITY, Reason.INVALID_YEAR, Reason.INVALID_MULTIPLE, Reason.NO_OBLIGATION,
    Reason.INELIGIBLE_VINTAGE, Reason.OFFSET_CAP_EXCEEDED, Reason.EXCEEDS_OBLIGATION,
    Reason.INELIGIBLE_OFFSET, Reason.AFTER_DEADLINE, Reason.YEAR_CLOSED, Reason.DEADLINE_NOT_PASSED,
    Reason.NO_MARKET_PRICE,
    Reason.FINE_OUT_OF_RANGE, Reason.NOT_COVERED,
    Reason.INVALID_MONTHS, Reason.INVALID_STAGE, Reason.NOT_VERIFIED, Reason.ALREADY_FINAL,
    Reason.CONVERSION_CAP_EXCEEDED, Reason.CONVERSION_CLOSED, Reason.MISSED_SURRENDER
})
REJECT_REASONS = VALIDATION | STATE | RISK | REGISTRY
GATEWAY = frozenset[Reason]({
    Reason.MALFORMED, Reason.BAD_COMMAND, Reason.NOT_PERMITTED, Reason.WRONG_ACCOUNT,
    Reason.TOO_LARGE, Reason.TOO_MANY_COMMANDS, Reason.RATE_LIMITED, Reason.OVERLOADED
})

_STAGES_OF: dict[Reason, frozenset[Stage]] = {
    member: frozenset(stage
                      for stage, members in ((Stage.VALIDATION, VALIDATION), (Stage.STATE, STATE),
                                             (Stage.REGISTRY, REGISTRY), (Stage.RISK, RISK),
                                             (Stage.OUTCOME, OUTCOME), (Stage.GATEWAY, GATEWAY))
                      if member in members)
    for member in Reason
}


class Rejected(Exception):
    """A command refused for *reason*: raised where the rule is checked (before anything
    has changed), caught where the command is answered (``Ledger.apply``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
