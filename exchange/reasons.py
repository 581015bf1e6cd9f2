"""Reason codes, grouped by the pipeline stage that gives them.

A ``rejected`` command carries one of the VALIDATION, STATE or RISK codes and changes
nothing. An accepted order whose remainder cannot rest is ``cancelled`` with one of the
OUTCOME codes. Codes are stable strings: tools and bots match on them.
"""

from __future__ import annotations

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

# --- state: the command does not fit the engine's current state -----------------------
DUPLICATE_ORDER_ID = "duplicate_order_id"
UNKNOWN_ORDER = "unknown_order"
NOT_OWNER = "not_owner"
POST_ONLY_WOULD_TRADE = "post_only_would_trade"

DUPLICATE_COMMAND = "duplicate_command"
UNKNOWN_ACCOUNT = "unknown_account"
ACCOUNT_EXISTS = "account_exists"
ACCOUNT_NOT_EMPTY = "account_not_empty"
RESERVED_ACCOUNT = "reserved_account"
UNKNOWN_CURRENCY = "unknown_currency"
INVALID_AMOUNT = "invalid_amount"
NOT_ISSUABLE = "not_issuable"
NOT_CLEARED = "not_cleared"

# --- registry: compliance rules (exchange.compliance.registry) ------------------------------------
INVALID_QUALITY = "invalid_quality"  # data quality not measured/default/estimated/revised
INVALID_YEAR = "invalid_year"
INVALID_MULTIPLE = "invalid_multiple"  # a fine multiple outside 5-10
NO_OBLIGATION = "no_obligation"  # no verified emissions for that year
INELIGIBLE_VINTAGE = "ineligible_vintage"  # a later vintage (no borrowing) or unconverted
OFFSET_CAP_EXCEEDED = "offset_cap_exceeded"  # CCER beyond 5% of the obligation
INELIGIBLE_OFFSET = "ineligible_offset"  # CCER from inside the scheme, or too old
AFTER_DEADLINE = "after_deadline"
YEAR_CLOSED = "year_closed"  # the year's deadline was processed
NO_MARKET_PRICE = "no_market_price"  # no allowance trades in the month before it
NOT_COVERED = "not_covered"  # the account is not a covered entity
INVALID_MONTHS = "invalid_months"  # monthly-log completeness outside 0-12
INVALID_STAGE = "invalid_stage"  # an allocation stage other than pre or final
NOT_VERIFIED = "not_verified"  # a true-up before the emissions are verified
ALREADY_FINAL = "already_final"  # a pre-allocation after the true-up
CONVERSION_CAP_EXCEEDED = "conversion_cap_exceeded"  # banking conversion beyond its cap

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
LIMIT_ONLY = "limit_only"  # an option buy needs a limit price

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

VALIDATION = frozenset({
    MISSING_FIELD, UNKNOWN_INSTRUMENT, MISSING_PRICE, PRICE_NOT_ALLOWED, INVALID_PRICE, OFF_TICK,
    PRICE_OUT_OF_BAND, MISSING_STOP_PRICE, STOP_PRICE_NOT_ALLOWED, INVALID_QUANTITY, OFF_STEP,
    QUANTITY_BELOW_MINIMUM, QUANTITY_ABOVE_MAXIMUM, INVALID_DISPLAY_QTY, POST_ONLY_NOT_ALLOWED,
    MISSING_EXPIRE_TS, EXPIRE_TS_NOT_ALLOWED, EXPIRE_TS_IN_PAST
})
STATE = frozenset({
    DUPLICATE_ORDER_ID, UNKNOWN_ORDER, NOT_OWNER, POST_ONLY_WOULD_TRADE, DUPLICATE_COMMAND,
    UNKNOWN_ACCOUNT, ACCOUNT_EXISTS, ACCOUNT_NOT_EMPTY, RESERVED_ACCOUNT, UNKNOWN_CURRENCY,
    INVALID_AMOUNT, NOT_ISSUABLE, NOT_CLEARED
})
RISK = frozenset({
    INSUFFICIENT_CASH, INSUFFICIENT_ALLOWANCES, POSITION_LIMIT, ACCOUNT_SUSPENDED, ACCOUNT_CLOSED,
    STOP_NEEDS_BAND, INSUFFICIENT_MARGIN, REDUCE_ONLY, CONTRACT_EXPIRED, LIMIT_ONLY
})
# post_only_would_trade is both: an amend that would make a post-only order trade is
# rejected; a new post-only order that would trade is accepted, then cancelled.
OUTCOME = frozenset({
    CANCELLED_BY_OWNER, MASS_CANCEL, IOC_REMAINDER, MARKET_REMAINDER, FOK_UNFILLED,
    STP_CANCEL_RESTING, STP_CANCEL_AGGRESSOR, STOP_LIMIT_OUT_OF_BAND, POST_ONLY_WOULD_TRADE,
    INSUFFICIENT_CASH, CONTRACT_EXPIRED, MARGIN_CLOSE_OUT
})
# insufficient_cash is an outcome too: a market buy with no band trades only while the
# account's cash covers the next fill, and the rest is cancelled with it.
REGISTRY = frozenset({
    INVALID_QUALITY, INVALID_YEAR, INVALID_MULTIPLE, NO_OBLIGATION, INELIGIBLE_VINTAGE,
    OFFSET_CAP_EXCEEDED, INELIGIBLE_OFFSET, AFTER_DEADLINE, YEAR_CLOSED, NO_MARKET_PRICE,
    NOT_COVERED, INVALID_MONTHS, INVALID_STAGE, NOT_VERIFIED, ALREADY_FINAL,
    CONVERSION_CAP_EXCEEDED
})
REJECT_REASONS = VALIDATION | STATE | RISK | REGISTRY


class Rejected(Exception):
    """A command refused for *reason*: raised where the rule is checked (before anything
    has changed), caught where the command is answered (``Ledger.apply``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

