"""The compliance registry inside the engine: conservation, the rules, a 10,000-entity year.

The rules with their numbers are in tests/scenarios/registry_compliance.txt (events
written by hand) and tests/test_allocation.py; here, random command streams must keep
every allowance in exactly one account and the registry's records equal to what moved.
"""
from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import Engine, default_market
from exchange.commands import (ComplianceDeadline, Deposit, IssueAllowances, PlaceOrder,
                               RecordEmissions, SurrenderAllowances, TransferAllowances)
from exchange.events import AllowancesSurrendered, CommandRejected, ComplianceAssessed
from exchange.registry import civil_month, deadline_ns

DEC_2025 = 1_765_360_800 * 10**9      # 2025-12-10 10:00 UTC
ACCOUNTS = ("e1", "e2", "e3")
SYMBOLS = ("CEA23", "CEA24", "CEA25", "CCER")

command = st.one_of(
    st.builds(IssueAllowances, account=st.sampled_from(ACCOUNTS),
              instrument=st.sampled_from(SYMBOLS), qty=st.integers(1, 500)),
    st.builds(RecordEmissions, account=st.sampled_from(ACCOUNTS),
              year=st.sampled_from((2024, 2025)), qty=st.integers(0, 2000),
              quality=st.sampled_from(("measured", "revised", "nonsense"))),
    st.builds(SurrenderAllowances, account=st.sampled_from(ACCOUNTS),
              instrument=st.sampled_from(SYMBOLS), qty=st.integers(1, 300),
              year=st.sampled_from((None, 2024, 2025))),
    st.builds(TransferAllowances, account=st.sampled_from(ACCOUNTS),
              to_account=st.sampled_from(ACCOUNTS), instrument=st.sampled_from(SYMBOLS),
              qty=st.integers(1, 200)),
    st.builds(ComplianceDeadline, year=st.sampled_from((2024, 2025)),
              multiple=st.sampled_from((5, 7, 11))),
)


def _trade_in_december(engine: Engine) -> None:
    for c in (IssueAllowances(account="mm", instrument="CEA25", qty=100),
              Deposit(account="buyer", currency="CNY", amount="100000.00"),
              PlaceOrder(order_id="s", account="mm", instrument="CEA25", side="sell",
                         price="98.00", qty=10, ts=DEC_2025),
              PlaceOrder(order_id="b", account="buyer", instrument="CEA25", side="buy",
                         price="98.00", qty=10, ts=DEC_2025)):
        engine.execute(c)


@settings(max_examples=150, deadline=None)
@given(st.lists(command, max_size=40), st.booleans())
def test_every_allowance_stays_in_one_account_and_the_records_match(commands, priced):
    engine = Engine(default_market(), ledger=True)
    if priced:
        _trade_in_december(engine)
    moved: dict[tuple[str, int], int] = {}
    for cmd in commands:
        events = engine.execute(cmd)
        engine.check()  # supply per asset = every account's holdings; registry invariants
        for event in events:
            if type(event) is AllowancesSurrendered and event.year is not None:
                key = (event.account, event.year)
                moved[key] = moved.get(key, 0) + event.qty
        if type(events[-1]) is CommandRejected:
            assert len(events) == 1  # a rejection moves nothing
    recorded = {key: ob.allowances + ob.offsets
                for key, ob in engine.ledger.registry.obligations.items()
                if ob.allowances + ob.offsets}
    assert recorded == moved
    supply = engine.ledger.supply
    for symbol in SYMBOLS:
        held = sum(h.total for a in engine.ledger.accounts.values()
                   for s, h in a.holdings.items() if s == symbol)
        assert held == supply.get(symbol, 0)


def test_civil_month_agrees_with_the_deadline_boundaries():
    for year in (2019, 2024, 2025, 2099):
        assert civil_month(deadline_ns(year) - 1) == (year + 1, 12)
        assert civil_month(deadline_ns(year)) == (year + 2, 1)


def test_a_year_of_ten_thousand_entities_runs_in_seconds():
    engine = Engine(default_market(), ledger=True)
    _trade_in_december(engine)
    started = time.perf_counter()
    for n in range(10_000):
        account = f"ent{n:05d}"
        engine.execute(IssueAllowances(account=account, instrument="CEA24", qty=1000))
        engine.execute(RecordEmissions(account=account, year=2024, qty=1000 + n % 7))
        engine.execute(SurrenderAllowances(account=account, instrument="CEA24", qty=1000,
                                           year=2024))
    events = engine.execute(ComplianceDeadline(year=2024))
    took = time.perf_counter() - started
    assessed = [e for e in events if type(e) is ComplianceAssessed]
    assert len(assessed) == 10_000
    short = [e for e in assessed if e.status == "short"]
    assert len(short) == sum(1 for n in range(10_000) if n % 7)
    assert all(e.fine == e.shortfall * 9800 * 5 for e in short)
    engine.check()
    assert took < 30  # seconds, on a loaded CI machine; typically well under 2
