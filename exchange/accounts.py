"""Accounts and their holdings: what the ledger and the clearing house both keep.

Every account holds, per asset (a currency such as ``CNY``, or an instrument such as
``CEA25``), four integer buckets: ``available``, ``held`` for open orders, ``locked``
until the next trading day (T+1), and ``pledged`` as collateral under a registered pledge
(its own until the pledge is released or enforced); ``pending_buy`` counts the units its
open buys still want. Accounts are participants (``covered``, ``financial``, ``market_maker``
and the like) or the system accounts below.
"""

from __future__ import annotations

__all__ = ["CLEARING", "CLOSED", "FEES", "OPEN", "REGISTRY", "SUSPENDED", "SYSTEM",
           "SYSTEM_ACCOUNTS", "Account", "Holding", "Pledge"]

# The system accounts: the exchange's fees, the registry (allowances issued and
# surrendered) and the clearing house. They hold, and never place orders.
FEES, REGISTRY, CLEARING = "@exchange", "@registry", "@clearing"
SYSTEM_ACCOUNTS = (FEES, REGISTRY, CLEARING)
OPEN, SUSPENDED, CLOSED = "open", "suspended", "closed"
SYSTEM = "system"  # the status of the system accounts: they never place orders


class Holding:
    """One account's balance of one asset, in four buckets (see the module docstring)."""

    __slots__ = ("available", "held", "locked", "pledged", "pending_buy")

    def __init__(self) -> None:
        self.available = 0
        self.held = 0
        self.locked = 0
        self.pledged = 0
        self.pending_buy = 0  # units the account's open buy orders still want

    @property
    def total(self) -> int:
        return self.available + self.held + self.locked + self.pledged


# units, cash, tick value, fee rate, position limit (None: no limit)
SpotTerms = tuple[Holding, Holding, int, int, "int | None"]


class Account:
    """A participant or system account: its kind, status and holdings by asset."""

    __slots__ = ("name", "kind", "status", "holdings", "spot")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.status = OPEN
        self.holdings: dict[str, Holding] = {}
        # What ``Ledger.reserve`` needs for a spot instrument once the account holds both
        # it and its currency: (units, cash, tick value, fee rate, position limit or
        # None). Derived, never state: holdings are never replaced, nor a kind changed.
        self.spot: dict[str, SpotTerms] = {}

    def holding(self, asset: str) -> Holding:
        holding = self.holdings.get(asset)
        if holding is None:
            holding = self.holdings[asset] = Holding()
        return holding


class Pledge:
    """A registered pledge in force: ``qty`` units of ``instrument``, held in the
    ``pledged`` bucket of the pledgor ``account``, pledged to ``to_account``."""

    __slots__ = ("pledge_id", "account", "to_account", "instrument", "qty")

    def __init__(self, pledge_id: str, account: str, to_account: str, instrument: str,
                 qty: int) -> None:
        self.pledge_id = pledge_id
        self.account = account
        self.to_account = to_account
        self.instrument = instrument
        self.qty = qty
