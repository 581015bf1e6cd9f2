"""Small market files the clearing tests share (TOML text for ``parse_market``), the
default market open at all hours, and the gateway tests' new-order message."""

from __future__ import annotations

from exchange.market import Market, default_market


def open_market() -> Market:
    """The default market with its trading schedule set aside (``[operation] always_open``
    in its text, so a journal or snapshot of it reads back the same): for tests that are
    not about the trading day, whose commands carry the wall clock or any other ``ts``."""
    return default_market().open_all_hours()


def futures_market(month: str = "2026-12", maintenance: str | None = "6000.00") -> str:
    """A cleared market: the allowance ``CEA25`` and the future ``F`` on it (1 lot =
    1,000 t, tick 0.01, up to 100 lots, initial margin 8,000.00 a lot), fees off.
    *month* is F's contract month; *maintenance* its maintenance margin (``None``: the
    default, three quarters of the initial)."""
    text = f"""
[defaults]
currency = "CNY"
maker_fee_bps = "0"
taker_fee_bps = "0"
[instruments.CEA25]
tick = "0.01"
vintage = 2025
[instruments.F]
kind = "future"
tick = "0.01"
contract_size = 1000
max_qty = 100
underlying = "CEA25"
contract_month = "{month}"
initial_margin = "8000.00"
"""
    if maintenance is not None:
        text += f'maintenance_margin = "{maintenance}"\n'
    return text


def order(order_id, side, price, qty=10, **extra) -> dict:
    """A gateway ``new`` order message on ``CEA25`` (more fields in *extra*)."""
    return {
        "action": "new",
        "order_id": order_id,
        "instrument": "CEA25",
        "side": side,
        "price": price,
        "qty": qty,
        **extra
    }
