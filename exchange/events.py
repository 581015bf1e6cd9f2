"""Events: what happened, in the past tense, each with a global sequence number.

Events are immutable msgspec Structs in one union tagged by ``event``. Prices are in
integer ticks of the instrument and quantities in whole units (tonnes or lots); output
edges turn ticks back into decimal strings. Every command gives exactly one *result*
event (``OrderAccepted``, ``OrderCancelled`` for a cancel, ``OrderAmended``,
``MassCancelAccepted``, ``TradingDayEnded``, ``LedgerCommandIgnored`` or
``CommandRejected``) followed by zero or more consequence events.

Schema evolution: new fields must have defaults; tags and field names never change.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Event", "OrderAccepted", "CommandRejected", "TradeExecuted", "OrderCancelled", "OrderAmended",
    "OrderExpired", "OrderTriggered", "MassCancelAccepted", "TradingDayEnded", "ReferencePriceSet",
    "DailyStatistics", "TradingStatusChanged",
    "LedgerCommandIgnored", "AccountOpened", "AccountStatusChanged", "CashDeposited",
    "CashWithdrawn", "AllowancesIssued", "AllowancesTransferred", "AllowancesSurrendered",
    "TradeSettled", "HoldingsUnlocked", "EmissionsVerified", "ComplianceAssessed", "DeadlinePassed",
    "AllowancesClawedBack", "AllowancesAllocated", "AllowancesConverted", "AllowancesPledged",
    "PledgeReleased", "PledgeEnforced", "TradeCleared",
    "SettlementPriceSet", "VariationMargin", "MarginCalled", "MarginCallMet", "PositionClosedOut",
    "DefaultRecorded", "ContractExpired", "DeliverySettled", "DeliveryFailed", "OptionExercised",
    "BlockPosted", "BlockAccepted", "QuotingAssessed", "AuctionOpened", "AuctionBidAccepted",
    "AuctionCleared", "ClockAdvanced",
    "AnyEvent"
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", gc=False):
    """Base of every event: ``seq`` is global and strictly increasing."""

    seq: int


class OrderAccepted(Event, frozen=True, tag="order_accepted"):
    """A valid order entered the engine. ``price`` is ``None`` for market and stop orders."""

    order_id: str
    account: str
    instrument: str
    side: str
    type: str
    tif: str
    price: int | None
    qty: int
    stop_price: int | None = None
    display_qty: int = 0
    post_only: bool = False
    stp: str = "cancel_resting"
    expire_ts: int | None = None
    ts: int | None = None


class CommandRejected(Event, frozen=True, tag="command_rejected"):
    """A command broke a rule and changed nothing."""

    action: str
    reason: str
    order_id: str | None = None
    account: str | None = None
    instrument: str | None = None
    ts: int | None = None


class TradeExecuted(Event, frozen=True, tag="trade_executed"):
    """Two orders traded ``qty`` at the resting order's ``price``."""

    trade_id: int
    instrument: str
    price: int
    qty: int
    buy_order_id: str
    sell_order_id: str
    buy_account: str
    sell_account: str
    aggressor: str
    buy_leaves_qty: int
    sell_leaves_qty: int
    mode: str = "listing"  # the trading mode: listing (the book), block or auction


class OrderCancelled(Event, frozen=True, tag="order_cancelled"):
    """``cancelled_qty`` of an order left the book for ``reason``."""

    order_id: str
    account: str
    instrument: str
    side: str
    cancelled_qty: int
    reason: str


class OrderAmended(Event, frozen=True, tag="order_amended"):
    """An order's price or open quantity changed; ``priority_kept`` tells if it kept its place."""

    order_id: str
    account: str
    instrument: str
    side: str
    price: int | None
    qty: int
    old_price: int | None
    old_qty: int
    priority_kept: bool


class OrderExpired(Event, frozen=True, tag="order_expired"):
    """A day order at the end of the day, or a gtd order at its time, left the book."""

    order_id: str
    account: str
    instrument: str
    side: str
    expired_qty: int


class OrderTriggered(Event, frozen=True, tag="order_triggered"):
    """A stop order's condition held on ``last_price``; it now acts as market or limit."""

    order_id: str
    account: str
    instrument: str
    side: str
    stop_price: int
    last_price: int


class MassCancelAccepted(Event, frozen=True, tag="mass_cancel_accepted"):
    """A mass cancel was accepted; ``count`` orders follow as ``OrderCancelled``."""

    account: str
    instrument: str | None
    side: str | None
    count: int


class TradingDayEnded(Event, frozen=True, tag="trading_day_ended"):
    """The trading day ``day`` (counted from 1) ended."""

    day: int
    ts: int | None = None


class ClockAdvanced(Event, frozen=True, tag="clock_advanced"):
    """The result of ``AdvanceClock``: the engine's clock is at ``ts`` (the gtd orders
    whose time it passed expired just before)."""

    ts: int


class ReferencePriceSet(Event, frozen=True, tag="reference_price_set"):
    """An instrument's reference price (and so its band) for the next day."""

    instrument: str
    price: int
    close_volume: int


class DailyStatistics(Event, frozen=True, tag="daily_statistics"):
    """One instrument's day, at its end. Prices in ticks: ``open``, ``high`` and ``low``
    of the listing trades (``None`` on a day without one), ``close`` the listing VWAP to
    the nearest tick, halves up (the previous close carried on a day without a listing
    trade; ``None`` if there never was one). ``volume`` is the listing volume and
    ``turnover`` its value in the currency's minor units; ``block_volume`` and
    ``auction_volume`` what the other trading modes traded. ``date`` is the local
    calendar day (a day number) of the end of day's ``ts`` in the market's time zone
    (UTC without a schedule), ``None`` when it came without one."""

    instrument: str
    day: int
    date: int | None
    open: int | None
    high: int | None
    low: int | None
    close: int | None
    volume: int
    turnover: int
    block_volume: int = 0
    auction_volume: int = 0


class TradingStatusChanged(Event, frozen=True, tag="trading_status_changed"):
    """The operator halted (``halted`` true) or resumed an instrument."""

    instrument: str
    halted: bool
    ts: int | None = None


class LedgerCommandIgnored(Event, frozen=True, tag="ledger_command_ignored"):
    """A ledger command (deposit, issue...) reached a matching-only engine: no effect."""

    action: str
    account: str


class AccountOpened(Event, frozen=True, tag="account_opened"):
    """An account came into being: by ``open_account``, or with its first credit."""

    account: str
    kind: str


class AccountStatusChanged(Event, frozen=True, tag="account_status_changed"):
    """An account became ``open``, ``suspended`` or ``closed``."""

    account: str
    status: str


class CashDeposited(Event, frozen=True, tag="cash_deposited"):
    """``amount`` minor units (fen) of ``currency`` came into the account from outside."""

    account: str
    currency: str
    amount: int


class CashWithdrawn(Event, frozen=True, tag="cash_withdrawn"):
    """``amount`` minor units of ``currency`` left the account for outside."""

    account: str
    currency: str
    amount: int


class AllowancesIssued(Event, frozen=True, tag="allowances_issued"):
    """The registry issued ``qty`` units of ``instrument`` into the account."""

    account: str
    instrument: str
    qty: int


class AllowancesTransferred(Event, frozen=True, tag="allowances_transferred"):
    """``qty`` available units moved from ``account`` to ``to_account``."""

    account: str
    to_account: str
    instrument: str
    qty: int


class AllowancesSurrendered(Event, frozen=True, tag="allowances_surrendered"):
    """``qty`` units left the account for the registry's surrender account, for good;
    against the obligation of ``year`` when given."""

    account: str
    instrument: str
    qty: int
    year: int | None = None


class AllowancesClawedBack(Event, frozen=True, tag="allowances_clawed_back"):
    """``qty`` units the registry had issued in excess left the account and the supply."""

    account: str
    instrument: str
    qty: int


class AllowancesPledged(Event, frozen=True, tag="allowances_pledged"):
    """``qty`` available units of the pledgor ``account`` became pledged to ``to_account``
    under ``pledge_id``: still the pledgor's, but not tradable or transferable."""

    pledge_id: str
    account: str
    to_account: str
    instrument: str
    qty: int


class PledgeReleased(Event, frozen=True, tag="pledge_released"):
    """``qty`` pledged units of ``pledge_id`` became available to the pledgor ``account``
    again; ``remaining`` units stay pledged (0: the pledge has ended)."""

    pledge_id: str
    account: str
    to_account: str
    instrument: str
    qty: int
    remaining: int


class PledgeEnforced(Event, frozen=True, tag="pledge_enforced"):
    """``qty`` pledged units of ``pledge_id`` passed from the pledgor ``account`` to the
    pledgee ``to_account``'s available holdings; ``remaining`` units stay pledged."""

    pledge_id: str
    account: str
    to_account: str
    instrument: str
    qty: int
    remaining: int


class EmissionsVerified(Event, frozen=True, tag="emissions_verified"):
    """An account's verified emissions for ``year``: its obligation. ``restated_from``
    is the figure a restatement replaced."""

    account: str
    year: int
    qty: int
    quality: str
    verifier: str | None = None
    restated_from: int | None = None
    months: int = 12


class AllowancesAllocated(Event, frozen=True, tag="allowances_allocated"):
    """The registry set ``account``'s free allocation of ``year`` (``stage`` pre or
    final) to ``allocation`` units, less ``deducted`` (last year's shortfall), by
    issuing ``issued`` or clawing back ``clawed_back`` units of ``instrument``."""

    account: str
    instrument: str
    year: int
    stage: str
    allocation: int
    deducted: int
    issued: int
    clawed_back: int


class AllowancesConverted(Event, frozen=True, tag="allowances_converted"):
    """Banking: ``qty`` units of ``instrument`` were cancelled and as many of
    ``to_instrument`` issued; ``cap_left`` is what the account may still convert."""

    account: str
    instrument: str
    to_instrument: str
    qty: int
    cap_left: int


class ComplianceAssessed(Event, frozen=True, tag="compliance_assessed"):
    """At the deadline: one entity's year. ``fine`` in minor units; a shortfall is
    deducted from the next year's allocation."""

    account: str
    year: int
    obligation: int
    surrendered_allowances: int
    surrendered_offsets: int
    shortfall: int
    fine: int
    status: str


class DeadlinePassed(Event, frozen=True, tag="deadline_passed"):
    """The deadline of ``year`` was processed: ``entities`` assessed, ``short`` of them
    short; ``average_price`` the market's average of the month before the deadline (minor
    units per unit, to the nearest, halves up; ``None``: no trades); each fine is exactly
    shortfall times ``multiple`` times ``price`` (minor units per unit), from
    ``price_source``: ``operator`` (the deadline's reference price) or ``market`` (the
    average)."""

    year: int
    entities: int
    short: int
    average_price: int | None = None
    multiple: int | None = None
    price: int | None = None
    price_source: str | None = None


class TradeSettled(Event, frozen=True, tag="trade_settled"):
    """A trade settled delivery-versus-payment: ``cash`` minor units buyer to seller,
    ``qty`` units seller to buyer (locked until the next day under T+1), and each
    side's fee to the exchange's fee account."""

    trade_id: int
    instrument: str
    buy_account: str
    sell_account: str
    qty: int
    cash: int
    buy_fee: int
    sell_fee: int
    currency: str = "CNY"


class HoldingsUnlocked(Event, frozen=True, tag="holdings_unlocked"):
    """At the end of the day, ``qty`` units bought earlier became available to sell."""

    account: str
    asset: str
    qty: int


class TradeCleared(Event, frozen=True, tag="trade_cleared"):
    """A futures or options trade changed both sides' positions (signed lots after the
    trade); a future's cash moves at the day's settlement, as variation margin (an
    option's premium moves now), and each side's fee now."""

    trade_id: int
    instrument: str
    buy_account: str
    sell_account: str
    qty: int
    price: int
    buy_position: int
    sell_position: int
    buy_fee: int = 0  # minor units, paid to the exchange's fee account as it traded
    sell_fee: int = 0


class SettlementPriceSet(Event, frozen=True, tag="settlement_price_set"):
    """The day's settlement price of a futures contract, in ticks, and where it came
    from: ``window`` (the closing window's volume-weighted price), ``mid`` (of the best
    bid and offer), ``previous`` (the last settlement) or ``day`` (the day's
    volume-weighted price, when nothing else exists)."""

    instrument: str
    price: int
    source: str


class VariationMargin(Event, frozen=True, tag="variation_margin"):
    """One position marked to the settlement price: ``amount`` minor units paid to the
    account (negative: paid by it) through the clearing account. Each contract's day
    sums to zero."""

    account: str
    instrument: str
    position: int
    amount: int
    currency: str


class MarginCalled(Event, frozen=True, tag="margin_called"):
    """The account's equity (cash available plus margin held) fell below its maintenance
    margin: it may only reduce positions until equity is back to the initial margin."""

    account: str
    equity: int
    maintenance: int
    initial: int
    currency: str


class MarginCallMet(Event, frozen=True, tag="margin_call_met"):
    """A called account's equity is back to its initial margin: the call is lifted."""

    account: str
    equity: int
    currency: str


class PositionClosedOut(Event, frozen=True, tag="position_closed_out"):
    """Still under margin a day after its call: ``qty`` signed lots of the account's
    position were closed, through the book (``via`` ``book``) or, what the book could
    not take, taken over by the clearing account at the settlement price (``clearing``)."""

    account: str
    instrument: str
    qty: int
    price: int | None
    via: str


class DefaultRecorded(Event, frozen=True, tag="default_recorded"):
    """The account could not pay ``amount`` minor units it owed the clearing house: the
    loss falls on the default fund."""

    account: str
    amount: int
    currency: str
    reason: str


class ContractExpired(Event, frozen=True, tag="contract_expired"):
    """A futures contract passed its last trading day: open orders are cancelled and
    positions await delivery at ``final_price`` (ticks)."""

    instrument: str
    final_price: int | None


class OptionExercised(Event, frozen=True, tag="option_exercised"):
    """An option in the money at expiry: the account's position became ``lots`` signed
    lots of the underlying future at ``strike`` (ticks)."""

    account: str
    instrument: str
    underlying: str
    lots: int
    strike: int


class DeliverySettled(Event, frozen=True, tag="delivery_settled"):
    """Physical delivery of an expired contract for one account: ``tonnes`` of
    ``underlying`` delivered (a short) or received (a long) and ``cash`` minor units
    received (a short) or paid (a long) at the final settlement price."""

    account: str
    instrument: str
    underlying: str
    side: str
    tonnes: int
    cash: int


class DeliveryFailed(Event, frozen=True, tag="delivery_failed"):
    """A delivery that did not happen: a short without the allowances pays ``penalty``
    (negative ``penalty``: a long not delivered to is compensated)."""

    account: str
    instrument: str
    tonnes: int
    penalty: int


# --- block agreements and one-way bidding --------------------------------------------------
class BlockPosted(Event, frozen=True, tag="block_posted"):
    """A block agreement was posted (the result of ``block``); ``to_account`` ``None``:
    a public block quote."""

    order_id: str
    account: str
    instrument: str
    side: str
    price: int
    qty: int
    to_account: str | None = None
    ts: int | None = None


class BlockAccepted(Event, frozen=True, tag="block_accepted"):
    """``account`` accepted the block ``order_id`` of ``to_account`` (the result of
    ``block_accept``); its trade follows."""

    order_id: str
    account: str
    to_account: str
    instrument: str
    side: str  # the acceptor's side
    price: int
    qty: int
    ts: int | None = None


class AuctionOpened(Event, frozen=True, tag="auction_opened"):
    """A one-way auction opened: the initiator ``account`` sells (``side`` sell) or buys
    ``qty`` with ``reserve`` price; ``primary``: new allowances sold by the registry."""

    auction: str
    account: str
    instrument: str
    side: str
    qty: int
    reserve: int
    pricing: str
    primary: bool = False
    ts: int | None = None


class AuctionBidAccepted(Event, frozen=True, tag="auction_bid_accepted"):
    """A bid (a buy in a sale, a sell in a purchase) entered an auction and is held."""

    auction: str
    order_id: str
    account: str
    instrument: str
    side: str
    price: int
    qty: int
    ts: int | None = None


class AuctionCleared(Event, frozen=True, tag="auction_cleared"):
    """An auction ended (``auction_close``, or the end of the day). ``status``:
    ``cleared`` (``qty`` traded; ``price`` the uniform price, or under pay-as-bid the
    last filled bid's), ``no_valid_bid``, ``undersubscribed`` or ``below_market`` (a primary
    auction cancelled). ``unsold`` went back to the initiator."""

    auction: str
    instrument: str
    status: str
    price: int | None
    qty: int
    unsold: int
    bids: int
    filled_bids: int
    pricing: str
    ts: int | None = None
    account: str = ""  # the initiator


class QuotingAssessed(Event, frozen=True, tag="quoting_assessed"):
    """A market maker's quoting on one instrument over a trading day, at its end.
    ``quoted_ns`` of the ``session_ns`` nanoseconds of listing session it quoted both
    sides within its obligation (size and spread); ``presence_bps`` is that share in
    basis points, rounded down; ``average_spread`` the time-weighted spread in ticks
    (rounded down) over the time it had both sides, ``None`` if never; ``met`` whether
    the obligation held; ``rebate`` the maker fees given back (minor units)."""

    account: str
    instrument: str
    day: int
    quoted_ns: int
    session_ns: int
    presence_bps: int
    average_spread: int | None
    met: bool
    rebate: int = 0
    currency: str = "CNY"


AnyEvent = (OrderAccepted
            | CommandRejected
            | TradeExecuted
            | OrderCancelled
            | OrderAmended
            | OrderExpired
            | OrderTriggered
            | MassCancelAccepted
            | TradingDayEnded
            | ReferencePriceSet
            | DailyStatistics
            | TradingStatusChanged
            | LedgerCommandIgnored
            | AccountOpened
            | AccountStatusChanged
            | CashDeposited
            | CashWithdrawn
            | AllowancesIssued
            | AllowancesTransferred
            | AllowancesSurrendered
            | TradeSettled
            | HoldingsUnlocked
            | EmissionsVerified
            | ComplianceAssessed
            | DeadlinePassed
            | AllowancesClawedBack
            | AllowancesAllocated
            | AllowancesConverted
            | AllowancesPledged
            | PledgeReleased
            | PledgeEnforced
            | TradeCleared
            | SettlementPriceSet
            | VariationMargin
            | MarginCalled
            | MarginCallMet
            | PositionClosedOut
            | DefaultRecorded
            | ContractExpired
            | DeliverySettled
            | DeliveryFailed
            | OptionExercised
            | BlockPosted
            | BlockAccepted
            | AuctionOpened
            | AuctionBidAccepted
            | AuctionCleared
            | QuotingAssessed
            | ClockAdvanced)
