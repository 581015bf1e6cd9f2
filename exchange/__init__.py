"""carbonx core: a pure, deterministic matching engine for carbon allowances.

Commands in, events out; no I/O, clock, randomness or network (the order-file reader
in ``exchange.orderfile`` is the core's file edge). See shared/DESIGN.md.
"""
from .book import FastBook, Order
from .commands import (AmendOrder, AnyCommand, CancelOrder, Deposit, EndOfDay,
                       IssueAllowances, MassCancel, PlaceOrder, SurrenderAllowances, Withdraw)
from .engine import Engine
from .events import (AnyEvent, CommandRejected, LedgerCommandIgnored, MassCancelAccepted,
                     OrderAccepted, OrderAmended, OrderCancelled, OrderExpired,
                     OrderTriggered, ReferencePriceSet, TradeExecuted, TradingDayEnded)
from .market import Instrument, Market, MarketConfigError, default_market, load_market
from .naive import NaiveBook

__all__ = [
    "Engine", "FastBook", "NaiveBook", "Order",
    "Market", "Instrument", "MarketConfigError", "default_market", "load_market",
    "AnyCommand", "PlaceOrder", "CancelOrder", "AmendOrder", "MassCancel", "EndOfDay",
    "Deposit", "Withdraw", "IssueAllowances", "SurrenderAllowances",
    "AnyEvent", "OrderAccepted", "CommandRejected", "TradeExecuted", "OrderCancelled",
    "OrderAmended", "OrderExpired", "OrderTriggered", "MassCancelAccepted",
    "TradingDayEnded", "ReferencePriceSet", "LedgerCommandIgnored",
]
