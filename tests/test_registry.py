"""The compliance registry inside the engine: conservation, the rules, a 10,000-entity year.

The rules with their numbers are in tests/scenarios/registry_compliance.txt (events
written by hand) and tests/test_allocation.py; here, random command streams must keep
every allowance in exactly one account and the registry's records equal to what moved.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from markets import open_market

from exchange import Engine
from exchange.commands import (AllocateAllowances, ClawBackAllowances, ComplianceDeadline,
                               ConvertAllowances, Deposit, IssueAllowances, PlaceOrder,
                               RecordEmissions, SurrenderAllowances, TransferAllowances)
from exchange.compliance.registry import civil_month, deadline_ns
from exchange.events import (AllowancesAllocated, AllowancesClawedBack, AllowancesConverted,
                             AllowancesIssued, AllowancesSurrendered, CommandRejected,
                             ComplianceAssessed)
from exchange.ledger import REGISTRY

DEC_2025 = 1_765_360_800 * 10**9  # 2025-12-10 10:00 UTC, 18:00 in Beijing (open_market)
ACCOUNTS = ("e1", "e2", "e3")
SYMBOLS = ("CEA23", "CEA24", "CEA25", "CCER")
VINTAGE = {2024: "CEA24", 2025: "CEA25"}

command = st.one_of(
    st.builds(IssueAllowances, account=st.sampled_from(ACCOUNTS),
              instrument=st.sampled_from(SYMBOLS), qty=st.integers(1, 500)),
    st.builds(RecordEmissions, account=st.sampled_from(ACCOUNTS), year=st.sampled_from(
        (2024, 2025)), qty=st.integers(0, 2000), quality=st.sampled_from(
            ("measured", "revised", "nonsense"))),
    st.builds(SurrenderAllowances, account=st.sampled_from(ACCOUNTS),
              instrument=st.sampled_from(SYMBOLS), qty=st.integers(1, 300), year=st.sampled_from(
                  (None, 2024, 2025))),
    st.builds(TransferAllowances, account=st.sampled_from(ACCOUNTS),
              to_account=st.sampled_from(ACCOUNTS), instrument=st.sampled_from(SYMBOLS),
              qty=st.integers(1, 200)),
    st.builds(ComplianceDeadline, year=st.sampled_from((2024, 2025)), multiple=st.sampled_from(
        (5, 7, 11))),
    st.builds(
        lambda account, year, qty, stage, wrong: AllocateAllowances(
            account=account, instrument="CEA23"
            if wrong else VINTAGE[year], year=year, qty=qty, stage=stage),
        st.sampled_from(ACCOUNTS), st.sampled_from((2024, 2025)), st.integers(0, 2000),
        st.sampled_from(("pre", "final", "final", "early")), st.booleans()),
    st.builds(ClawBackAllowances, account=st.sampled_from(ACCOUNTS),
              instrument=st.sampled_from(SYMBOLS), qty=st.integers(1, 300)),
    st.builds(ConvertAllowances, account=st.sampled_from(ACCOUNTS), instrument=st.sampled_from(
        ("CEA23", "CEA24", "CCER")), to_instrument=st.sampled_from(("CEA25", "CEA25", "CEA24")),
              qty=st.integers(1, 12_000)),
    # trades between the entities in 2025 (net sales raise the banking cap)
    st.builds(
        lambda n, seller, buyer, symbol, qty: [
            Deposit(account=buyer, currency="CNY", amount="50000.00"),
            PlaceOrder(order_id=f"s{n}", account=seller, instrument=symbol, side="sell", price=
                       "90.00", qty=qty, tif="ioc"
                       if n % 2 else "gtc", ts=DEC_2025 - 86_400 * 10**9 * 200),
            PlaceOrder(order_id=f"b{n}", account=buyer, instrument=symbol, side="buy", price=
                       "90.00", qty=qty, tif="ioc")
        ], st.integers(0, 10**6), st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS),
        st.sampled_from(SYMBOLS), st.integers(1, 300)))


def _registry_view(events: list, view: dict[str, int]) -> None:
    """Keep the registry's own count of each instrument in the accounts: issued, less
    clawed back, less surrendered, with conversions moved from one vintage to another."""
    for e in events:
        kind = type(e)
        if kind is AllowancesIssued:
            view[e.instrument] = view.get(e.instrument, 0) + e.qty
        elif kind is AllowancesAllocated:
            view[e.instrument] = view.get(e.instrument, 0) + e.issued - e.clawed_back
        elif kind is AllowancesClawedBack or kind is AllowancesSurrendered:
            view[e.instrument] -= e.qty
        elif kind is AllowancesConverted:
            view[e.instrument] -= e.qty
            view[e.to_instrument] = view.get(e.to_instrument, 0) + e.qty


def _trade_in_december(engine: Engine) -> None:
    for c in (IssueAllowances(account="mm", instrument="CEA25",
                              qty=100), Deposit(account="buyer", currency="CNY",
                                                amount="100000.00"),
              PlaceOrder(order_id="s", account="mm", instrument="CEA25", side="sell", price="98.00",
                         qty=10, ts=DEC_2025),
              PlaceOrder(order_id="b", account="buyer", instrument="CEA25", side="buy",
                         price="98.00", qty=10, ts=DEC_2025)):
        engine.execute(c)


@settings(max_examples=150, deadline=None)
@given(st.lists(command, max_size=40), st.booleans())
def test_every_allowance_stays_in_one_account_and_the_records_match(commands, priced):
    engine = Engine(open_market(), ledger=True)
    if priced:
        _trade_in_december(engine)
    moved: dict[tuple[str, int], int] = {}
    view: dict[str, int] = {}
    _registry_view(
        [AllowancesIssued(seq=0, account="mm", instrument="CEA25", qty=100)] if priced else [],
        view)
    for account in ACCOUNTS:  # each entity starts with old vintages and some cash
        for setup in (IssueAllowances(account=account, instrument="CEA23", qty=15_000),
                      IssueAllowances(account=account, instrument="CEA24", qty=800),
                      Deposit(account=account, currency="CNY", amount="50000.00")):
            _registry_view(engine.execute(setup), view)
    for step in commands:
        for cmd in step if isinstance(step, list) else [step]:
            before = engine.ledger.snapshot()
            events = engine.execute(cmd)
            engine.check()  # supply per asset = all holdings; the registry's invariants
            _registry_view(events, view)
            for event in events:
                if type(event) is AllowancesSurrendered and event.year is not None:
                    key = (event.account, event.year)
                    moved[key] = moved.get(key, 0) + event.qty
            if type(events[-1]) is CommandRejected:
                assert len(events) == 1  # a rejection moves nothing
                assert engine.ledger.snapshot() == before
    recorded = {
        key: ob.allowances + ob.offsets
        for key, ob in engine.ledger.registry.obligations.items() if ob.allowances + ob.offsets
    }
    assert recorded == moved
    for symbol in SYMBOLS:
        # every unit is in exactly one account: the registry's issued-minus-surrendered
        # (from its events alone) is what the participants hold, and the surrendered
        # units sit in the registry's account
        held = sum(h.total for name, a in engine.ledger.accounts.items() if name != REGISTRY
                   for s, h in a.holdings.items() if s == symbol)
        assert held == view.get(symbol, 0), symbol
        surrendered = engine.ledger.accounts[REGISTRY].holdings.get(symbol)
        assert held + (surrendered.total if surrendered else 0) == engine.ledger.supply.get(
            symbol, 0)


def test_civil_month_agrees_with_the_deadline_boundaries():
    for year in (2019, 2024, 2025, 2099):
        assert civil_month(deadline_ns(year) - 1) == (year + 1, 12)
        assert civil_month(deadline_ns(year)) == (year + 2, 1)


def test_a_year_of_ten_thousand_entities_is_assessed_and_fined():
    # its time is measured by the benchmarks' compliance stage, not here
    engine = Engine(open_market(), ledger=True)
    _trade_in_december(engine)
    for n in range(10_000):
        account = f"ent{n:05d}"
        engine.execute(IssueAllowances(account=account, instrument="CEA24", qty=1000))
        engine.execute(RecordEmissions(account=account, year=2024, qty=1000 + n % 7))
        engine.execute(SurrenderAllowances(account=account, instrument="CEA24", qty=1000,
                                           year=2024))
    events = engine.execute(ComplianceDeadline(year=2024))
    assessed = [e for e in events if type(e) is ComplianceAssessed]
    assert len(assessed) == 10_000
    short = [e for e in assessed if e.status == "short"]
    assert len(short) == sum(1 for n in range(10_000) if n % 7)
    assert all(e.fine == e.shortfall * 9800 * 5 for e in short)
    engine.check()


def test_a_deadline_stamped_before_the_year_s_deadline_is_refused_and_changes_nothing():
    # The live gateway stamps the operator's rows with its clock: a 2025 deadline sent on
    # 2026-12-05 (or a typo, 2026 for 2025) would close the year for good, with 26 days
    # (or a year) of surrender left. Refused until the end of 31 December of the next year.
    engine = Engine(open_market(), ledger=True)
    engine.execute(IssueAllowances(account="e1", instrument="CEA25", qty=900))
    engine.execute(RecordEmissions(account="e1", year=2025, qty=1000))
    engine.execute(SurrenderAllowances(account="e1", instrument="CEA25", qty=900, year=2025))
    due = deadline_ns(2025, engine.ledger.registry.schedule)
    registry = engine.ledger.registry
    before = registry.snapshot()
    for year, ts in ((2025, due - 1), (2026, due), (2025, DEC_2025)):
        refused = engine.execute(ComplianceDeadline(year=year, price="98.00", ts=ts))
        assert [type(e) for e in refused] == [CommandRejected], refused
        assert refused[0].reason == "deadline_not_passed"
    assert registry.snapshot() == before and not registry.closed
    events = engine.execute(ComplianceDeadline(year=2025, price="98.00", ts=due))
    assert [e.shortfall for e in events if type(e) is ComplianceAssessed] == [100]
    # without a ts (an order file without one), as before: the operator's own judgement
    engine.execute(RecordEmissions(account="e1", year=2026, qty=10))
    assert [type(e) for e in engine.execute(ComplianceDeadline(year=2026, price="98.00"))][0] \
        is not CommandRejected
    engine.check()


def test_a_surrender_without_a_year_counts_against_no_obligation():
    # A voluntary cancellation (formats.md): the units go to @registry, the year still
    # needs all of them, and the client makes the caller say so (year= has no default).
    import inspect

    from gateway.bots.client import ExchangeClient
    engine = Engine(open_market(), ledger=True)
    engine.execute(IssueAllowances(account="e1", instrument="CEA25", qty=1000))
    engine.execute(RecordEmissions(account="e1", year=2025, qty=1000))
    events = engine.execute(SurrenderAllowances(account="e1", instrument="CEA25", qty=400))
    assert [(type(e), e.year) for e in events] == [(AllowancesSurrendered, None)]
    assert engine.ledger.registry.obligations[("e1", 2025)].allowances == 0
    parameter = inspect.signature(ExchangeClient.surrender).parameters["year"]
    assert parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty
