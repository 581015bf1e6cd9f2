"""carbonx core: a pure, deterministic matching engine for carbon allowances.

Commands in, events out; no I/O, clock, randomness or network (the order-file reader
in ``exchange.orderfile`` is the core's file edge). docs/ gives the formats and the
market's rules.
"""

from exchange.book.fast import FastBook, Order
from exchange.book.naive import NaiveBook
from exchange.commands import (AmendOrder, AnyCommand, CancelOrder, Deposit, EndOfDay,
                               IssueAllowances, MassCancel, PlaceOrder, SurrenderAllowances,
                               Withdraw)
from exchange.engine import Engine
from exchange.events import (AnyEvent, CommandRejected, LedgerCommandIgnored, MassCancelAccepted,
                             OrderAccepted, OrderAmended, OrderCancelled, OrderExpired,
                             OrderTriggered, ReferencePriceSet, TradeExecuted, TradingDayEnded)
from exchange.market import Instrument, Market, MarketConfigError, default_market, load_market

__all__ = [
    "Engine", "FastBook", "NaiveBook", "Order", "Market", "Instrument", "MarketConfigError",
    "default_market", "load_market", "AnyCommand", "PlaceOrder", "CancelOrder", "AmendOrder",
    "MassCancel", "EndOfDay", "Deposit", "Withdraw", "IssueAllowances", "SurrenderAllowances",
    "AnyEvent", "OrderAccepted", "CommandRejected", "TradeExecuted", "OrderCancelled",
    "OrderAmended", "OrderExpired", "OrderTriggered", "MassCancelAccepted", "TradingDayEnded",
    "ReferencePriceSet", "LedgerCommandIgnored"
]
