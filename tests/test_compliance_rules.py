"""Compliance rules of the 2023-2024 allocation plan that the first version got wrong.

Each test names the rule it holds the code to, and shows the figure before and after.
"""

from __future__ import annotations

import json
from fractions import Fraction
from math import floor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markets import open_market

from exchange import Engine
from exchange.commands import (AllocateAllowances, ComplianceDeadline, ConvertAllowances, Deposit,
                               IssueAllowances, OpenAccount, OpenAuction, PlaceOrder,
                               RecordEmissions, SurrenderAllowances)
from exchange.compliance.allocation import (Adjustment, AllocationError, Entity, PowerUnit,
                                            allocate, default_rules, fine_fen, power_allocation)
from exchange.compliance.registry import (CONVERSION_CLOSES, Registry, civil_month, deadline_ns,
                                          local_day_start_ns)
from exchange.calendar import days_from_civil
from exchange.events import (AllowancesConverted, CommandRejected, ComplianceAssessed,
                             DeadlinePassed)
from exchange.market import default_market
from exchange.orderfile import parse_order_text
from exchange.persist import decode_state, encode_state
from exchange.state import RegistryState
from gateway.cli import main
from gateway.tools import comply

S = 10**9
HOUR = 3600 * S


def _beijing(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
             second: int = 0) -> int:
    """Engine time (ns) of a wall-clock time in Beijing (UTC+8, no daylight saving)."""
    return ((days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) * S
            - 8 * HOUR)


# --- 1. the load factor -----------------------------------------------------------------------


def test_the_load_factor_applies_to_conventional_coal_units_only():
    """2023-2024 allocation plan, annex: the load factor Ff = 1.015^(16-20F) below 65%
    load applies to conventional coal units (large and small) only, not to gas nor to
    unconventional coal."""
    gas = PowerUnit("gas", "1000000", load="0.50")
    assert gas.benchmark_allocation() == 328_800  # 0.3288 x 1,000,000
    was = floor(Fraction("0.3288") * 1_000_000 * Fraction("1.015")**6)
    assert was == 359_524  # what the load factor gave it before
    assert power_allocation([gas], "300000") == 328_800  # above its emissions: no top-up
    assert PowerUnit("coal_unconventional", "1000000",
                     load="0.50").benchmark_allocation() == 824_400  # 0.8244, Ff = 1
    # conventional coal keeps it: 1.015^6 at 50% load
    assert PowerUnit("coal_large", "1000000", load="0.50").benchmark_allocation() == (
        Fraction("0.7910") * 1_000_000 * Fraction("1.015")**6)
    assert PowerUnit("coal_small", "1000000", load="0.50").benchmark_allocation() == (
        Fraction("0.8049") * 1_000_000 * Fraction("1.015")**6)
    with pytest.raises(AllocationError, match="outside 0..1"):
        PowerUnit("gas", "1000", load="1.5")  # a gas unit's load is still checked


# --- 2. the gas top-up, per unit ------------------------------------------------------------


def test_each_gas_unit_is_topped_up_to_its_own_verified_emissions():
    """2023-2024 allocation plan, annex: gas units are topped up to their verified
    emissions unit by unit, in an entity of coal and gas units too (not per entity, and
    not only for entities of gas units only)."""
    coal = PowerUnit("coal_large", "1000000")  # 1,000,000 MWh x 0.7910 = 791,000 t
    gas = PowerUnit("gas", "1000000", load="0.80", emissions="380000")  # 328,800 t, emits 380,000
    # entity: 900,000 t from coal + 380,000 t from gas = 1,280,000 t (the 20% floor,
    # 1,024,000 t, is below both figures). Before: 791,000 + 328,800 = 1,119,800 t, the gas
    # unit left short because the entity was not gas only.
    assert power_allocation([coal, gas], "1280000") == 1_171_000  # 791,000 + 380,000
    # an entity of two gas units: each to its own emissions (328,800 + 200,000), not the
    # entity's total to its emissions (max(493,200, 500,000) = 500,000)
    big = PowerUnit("gas", "1000000", emissions="300000")  # 328,800 t, emits 300,000: no top-up
    small = PowerUnit("gas", "500000", emissions="200000")  # 164,400 t, emits 200,000
    assert power_allocation([big, small], "500000") == 528_800
    # a single gas unit with no figure of its own takes the entity's (as before)
    assert power_allocation([PowerUnit("gas", "1000000")], "400000") == 400_000


def test_a_gas_unit_beside_others_needs_its_own_emissions():
    """2023-2024 allocation plan, annex: the top-up is per gas unit, so a mixed entity
    must say what each gas unit emitted."""
    coal = PowerUnit("coal_large", "1000000")
    with pytest.raises(AllocationError, match="needs its own verified emissions"):
        power_allocation([coal, PowerUnit("gas", "1000000")], "1280000")
    with pytest.raises(AllocationError, match="exceed the entity's"):
        power_allocation([coal, PowerUnit("gas", "10", emissions="2000000")], "1280000")
    with pytest.raises(AllocationError, match="pow: a gas unit"):  # the plan names the entity
        allocate([Entity("pow", "power", 1_280_000, units=(coal, PowerUnit("gas", "1")))])


_MIXED = """year = 2024
[[december_trades]]
price = "98.00"
qty = 10
[[entities]]
name = "mixed"
sector = "power"
units = [{ type = "coal_large", electricity_mwh = "1000000" },
         { type = "gas", electricity_mwh = "1000000", load = "0.80", emissions = 380000 }]
prior_emissions = 1280000
emissions = 1280000
"""


def test_a_scenario_gives_each_gas_unit_its_verified_emissions(tmp_path):
    """2023-2024 allocation plan, annex: gas units topped up per unit; the scenario TOML
    gives a unit its ``emissions`` (scenarios without it read as before)."""
    path = tmp_path / "mixed.toml"
    path.write_text(_MIXED)
    report = comply.run_cycle(comply.load_scenario(path))
    assert report["entities"][0]["allocated"] == 1_171_000  # before: 1,119,800
    path.write_text(_MIXED.replace("emissions = 380000", 'emissions = "380000"'))
    with pytest.raises(comply.ScenarioError, match="a unit's 'emissions'"):
        comply.load_scenario(path)
    path.write_text(_MIXED.replace(", emissions = 380000", ""))
    with pytest.raises(comply.ScenarioError, match="needs its own verified emissions"):
        comply.run_cycle(comply.load_scenario(path))


# --- 3. steel, cement and aluminium in 2024 --------------------------------------------------


def test_industry_is_allocated_its_verified_emissions_in_2024():
    """2024 allocation plan for steel, cement and aluminium (their first year): allocation
    equals verified emissions; the intensity rule starts in 2025. No regional factor moves
    it."""
    assert {default_rules(2024)[s] for s in ("steel", "cement", "aluminium")} == {
        "verified_emissions"
    }
    assert {default_rules(2025)[s] for s in ("steel", "cement", "aluminium")} == {
        "intensity_benchmark"
    }
    mills = [Entity("clean", "steel", 1000, "east", intensity=Fraction(1)),
             Entity("dirty", "cement", 1000, "east", intensity=Fraction(6, 5))]
    east = Adjustment(regional={"east": Fraction("0.99")})
    assert allocate(mills, adjustment=east, year=2024) == {"clean": 1000, "dirty": 1000}
    # from 2025 the intensity rule and the factors apply (each sector balanced alone)
    assert allocate(mills, adjustment=east, year=2025) == {"clean": 990, "dirty": 990}


def test_the_example_fines_no_industrial_entity_that_surrendered_all_it_was_given():
    """2024 allocation plan for steel, cement and aluminium: allocation equals verified
    emissions, so an entity that surrenders all it was given is compliant. The shipped
    example fined 7 such steel entities in the east (regional factor 0.99) before."""
    data = comply.load_scenario(comply.EXAMPLE)
    report = comply.run_cycle(data)
    everything = {e["name"] for e in data["entities"] if e["surrender_share"] == "1.0"}
    industrial = [r for r in report["entities"] if r["sector"] != "power"]
    fined = [r["entity"] for r in industrial if r["entity"] in everything and r["shortfall"]]
    assert fined == []  # before: 7 steel entities (and 4 cement, 4 aluminium)
    assert all(r["allocated"] == r["obligation"] for r in industrial)


# --- 4. the regional factor after the 20% shortfall cap ------------------------------------


def test_a_regional_factor_below_one_cannot_break_the_shortfall_cap():
    """2023-2024 allocation plan: no power entity short by more than 20% of its verified
    emissions, after the regional and yearly factors too."""
    # 1,000,000 MWh of large coal: 791,000 t against 1,200,000 t emitted, lifted to the
    # 20% floor 960,000; the east's 0.99 took it to 950,400 (20.8% short) before.
    coal = Entity("coal", "power", 1_200_000, "east", units=(PowerUnit("coal_large", "1000000"), ))
    east = Adjustment(regional={"east": Fraction("0.99")})
    assert allocate([coal], adjustment=east)["coal"] == 960_000
    assert allocate([coal], adjustment=Adjustment(yearly=Fraction("0.9")))["coal"] == 960_000
    # under a sector cap, the others share what the floor leaves: the west's 1.10 on
    # 791,000 t is scaled so that the sector stays within its 1,751,000 t
    west = Entity("west", "power", 800_000, "west", units=(PowerUnit("coal_large", "1000000"), ))
    plan = allocate([coal, west], adjustment=Adjustment(
        regional={"east": Fraction("0.90"), "west": Fraction("1.10")}, cap_share=Fraction(1)))
    assert plan == {"coal": 960_000, "west": 791_000}
    # a cap that the floor alone exceeds: the floor comes first
    plan = allocate([coal], adjustment=Adjustment(cap_share=Fraction("0.5")))
    assert plan == {"coal": 960_000}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(100_000, 5_000_000), st.integers(10_000, 3_000_000),
                          st.sampled_from(("east", "west", "north")), st.integers(0, 100)),
                min_size=1, max_size=12),
       st.integers(80, 120), st.integers(80, 120), st.integers(90, 110), st.integers(95, 110))
def test_no_power_entity_ends_short_by_more_than_20_percent(rows, east, west, yearly, cap):
    """2023-2024 allocation plan: the 20% shortfall cap holds whatever the factors."""
    entities = [
        Entity(f"e{n}", "power", emissions, region,
               units=(PowerUnit("coal_small", str(mwh), load=Fraction(load, 100)), ))
        for n, (emissions, mwh, region, load) in enumerate(rows)
    ]
    adjustment = Adjustment(regional={"east": Fraction(east, 100), "west": Fraction(west, 100)},
                            yearly=Fraction(yearly, 100), cap_share=Fraction(cap, 100))
    plan = allocate(entities, adjustment=adjustment)
    for e in entities:
        assert e.emissions - plan[e.name] <= Fraction(e.emissions) / 5, e


# --- 5. banking ------------------------------------------------------------------------------


def _ledgered(market=None) -> Engine:
    return Engine(market or default_market(), ledger=True)


def _convert(engine: Engine, account: str, qty: int, ts: int | None = None) -> object:
    return engine.execute(ConvertAllowances(account=account, instrument="CEA23",
                                            to_instrument="CEA25", qty=qty, ts=ts))[-1]


def test_net_sales_count_only_the_2019_to_2024_vintages():
    """2023-2024 allocation plan, annex (banking): T = 10,000 + 1.5 x net sales of
    2019-2024 vintages in 2024-2025; sales of the 2025 vintage do not raise it."""
    engine = _ledgered(open_market())
    when = _beijing(2025, 6, 10, 10)
    for cmd in (IssueAllowances(account="s", instrument="CEA25", qty=1000),
                IssueAllowances(account="s", instrument="CEA23", qty=20_000),
                Deposit(account="b", currency="CNY", amount="100000.00"),
                PlaceOrder(order_id="s1", account="s", instrument="CEA25", side="sell",
                           price="98.00", qty=1000, ts=when),
                PlaceOrder(order_id="b1", account="b", instrument="CEA25", side="buy",
                           price="98.00", qty=1000, ts=when)):
        engine.execute(cmd)
    assert type(_convert(engine, "s", 10_001)) is CommandRejected  # the cap stays 10,000


def test_conversion_closes_at_the_end_of_10_june_2026_in_the_market_time():
    """2023-2024 allocation plan, annex (banking): applications to convert are accepted
    until 2026-06-10, the whole day in the market's time zone (Beijing), not after."""
    engine = _ledgered()
    engine.execute(IssueAllowances(account="k", instrument="CEA23", qty=1000))
    last = _beijing(2026, 6, 10, 23, 59, 59)
    done = _convert(engine, "k", 100, last)
    assert type(done) is AllowancesConverted and done.qty == 100
    late = _convert(engine, "k", 100, last + S)  # 00:00 Beijing on 11 June, 16:00 UTC on 10 June
    assert type(late) is CommandRejected and late.reason == "conversion_closed"


def test_the_window_is_configurable_on_the_registry():
    """2023-2024 allocation plan, annex (banking): the window's last day (2026-06-10 by
    default) is a registry setting."""
    registry = Registry(default_market().instruments,
                        conversion_closes=days_from_civil(2026, 3, 31))
    registry.clock = local_day_start_ns(days_from_civil(2026, 4, 1))
    with pytest.raises(Exception, match="conversion_closed"):
        registry.conversion_left("k", "CEA23", "CEA25", 1000)
    assert days_from_civil(2026, 6, 10) == CONVERSION_CLOSES


def test_an_entity_that_missed_a_surrender_may_not_convert():
    """2023-2024 allocation plan, annex (banking): entities that missed a surrender
    (assessed short at a deadline) are excluded from conversion."""
    engine = _ledgered()
    for account, surrendered in (("late", 900), ("ontime", 1000)):
        engine.execute(IssueAllowances(account=account, instrument="CEA24", qty=1000))
        engine.execute(IssueAllowances(account=account, instrument="CEA23", qty=500))
        engine.execute(RecordEmissions(account=account, year=2024, qty=1000))
        engine.execute(SurrenderAllowances(account=account, instrument="CEA24", qty=surrendered,
                                           year=2024))
    engine.execute(ComplianceDeadline(year=2024, price="98.00"))
    refused = _convert(engine, "late", 100)
    assert type(refused) is CommandRejected and refused.reason == "missed_surrender"
    assert type(_convert(engine, "ontime", 100)) is AllowancesConverted


def test_no_deadline_while_an_allocated_entity_has_no_verified_emissions():
    """An entity allocated for the year whose emissions were never recorded passed the
    deadline neither compliant nor short: no shortfall, no fine, and it could still
    convert (bank) its allowances. The year is not closed until the authority has
    determined its emissions."""
    engine = _ledgered()
    for account in ("a", "b"):
        engine.execute(OpenAccount(account=account, kind="covered"))
    engine.execute(AllocateAllowances(account="a", instrument="CEA24", qty=70_000, year=2024,
                                      stage="pre"))
    engine.execute(RecordEmissions(account="b", year=2024, qty=100))
    before = engine.snapshot()[7:]
    refused = engine.execute(ComplianceDeadline(year=2024, price="98.00"))
    assert [(type(e), e.reason) for e in refused] == [(CommandRejected, "not_verified")]
    assert engine.snapshot()[7:] == before
    engine.execute(RecordEmissions(account="a", year=2024, qty=80_000))
    events = engine.execute(ComplianceDeadline(year=2024, price="98.00"))
    assessed = {e.account: e.status for e in events if type(e) is ComplianceAssessed}
    assert assessed == {"a": "short", "b": "short"}
    assert _convert(engine, "a", 100).reason == "missed_surrender"


def test_an_allocated_entity_whose_account_closed_does_not_hold_the_year_open():
    """Its emissions can no longer be recorded (account_closed): waiting for them, the
    deadline was refused for good."""
    from exchange.commands import CloseAccount, TransferAllowances

    engine = _ledgered()
    for account in ("a", "b"):
        engine.execute(OpenAccount(account=account, kind="covered"))
    engine.execute(AllocateAllowances(account="a", instrument="CEA24", qty=5_000, year=2024,
                                      stage="pre"))
    engine.execute(TransferAllowances(account="a", to_account="b", instrument="CEA24",
                                      qty=5_000))
    assert type(engine.execute(CloseAccount(account="a"))[0]) is not CommandRejected
    engine.execute(RecordEmissions(account="b", year=2024, qty=100))
    assert engine.execute(RecordEmissions(account="a", year=2024, qty=100))[0].reason == \
        "account_closed"
    events = engine.execute(ComplianceDeadline(year=2024, price="98.00"))
    assert {e.account: e.status for e in events if type(e) is ComplianceAssessed} == {
        "b": "short"}  # the year closes; b surrendered nothing


def test_the_cap_counts_the_old_vintages_held_at_the_cut_off():
    """2023-2024 allocation plan, annex (banking): the cap is on the old-vintage holdings
    at the cut-off, 2025-12-31 (the end of that day in the market's time zone), recorded
    when the engine's clock first passes it; what arrives later does not count."""
    engine = _ledgered()
    engine.execute(IssueAllowances(account="k", instrument="CEA23", qty=3000))
    engine.execute(IssueAllowances(account="k", instrument="CEA24", qty=2000))
    # 23:59:59 in Beijing on 31 December: nothing recorded yet
    engine.execute(IssueAllowances(account="k", instrument="CEA23", qty=1000,
                                   ts=_beijing(2025, 12, 31, 23, 59, 59)))
    assert engine.ledger.registry.cutoff is None
    # 00:00 in Beijing (16:00 UTC): the clock passes the cut-off before this row runs
    engine.execute(IssueAllowances(account="k", instrument="CEA23", qty=50_000,
                                   ts=_beijing(2026, 1, 1)))
    assert engine.ledger.registry.cutoff == {"k": 6000}
    refused = _convert(engine, "k", 6001)  # before: up to 10,000, from 56,000 held now
    assert type(refused) is CommandRejected and refused.reason == "conversion_cap_exceeded"
    assert _convert(engine, "k", 6000).cap_left == 0
    # the record is state: a restored registry keeps it, and a state without it reads
    state = engine.ledger.registry.to_state()
    assert state.cutoff_holdings == {"k": 6000}
    restored = Registry(default_market().instruments)
    restored.load_state(state)
    assert restored.cutoff == {"k": 6000} and restored.clock == state.clock
    Registry(default_market().instruments).load_state(RegistryState())


# --- 6. the market's time zone --------------------------------------------------------------


def test_the_deadline_and_the_months_are_in_the_market_time_zone():
    """The compliance deadline (the whole of 31 December of the next year) and the months
    of the fine's average price are days of the market's time zone (Beijing, UTC+8, for
    the default market), not of UTC."""
    schedule = default_market().schedule
    assert deadline_ns(2024, schedule) == _beijing(2026, 1, 1)  # 2025-12-31 16:00 UTC
    assert deadline_ns(2024) == _beijing(2026, 1, 1, 8)  # without a schedule: UTC, as before
    assert civil_month(_beijing(2025, 12, 1, 7, 30), schedule) == (2025, 12)
    assert civil_month(_beijing(2025, 12, 1, 7, 30)) == (2025, 11)
    engine = _ledgered()
    engine.execute(IssueAllowances(account="ent", instrument="CEA24", qty=1000))
    engine.execute(RecordEmissions(account="ent", year=2024, qty=1000))
    on_time = engine.execute(SurrenderAllowances(account="ent", instrument="CEA24", qty=500,
                                                 year=2024, ts=_beijing(2025, 12, 31, 23, 30)))
    assert type(on_time[-1]) is not CommandRejected
    # 07:30 Beijing on 1 January 2026 is still 31 December (23:30) in UTC: refused
    late = engine.execute(SurrenderAllowances(account="ent", instrument="CEA24", qty=500,
                                              year=2024, ts=_beijing(2026, 1, 1, 7, 30)))
    assert type(late[-1]) is CommandRejected and late[-1].reason == "after_deadline"


# --- 7. the operator's reference price -----------------------------------------------------


def test_a_deadline_row_reads_the_operator_price():
    """The deadline command takes an optional reference price (CNY per tonne); the order
    file reads it from the row's price."""
    commands = parse_order_text(b"action,year,multiple,price\ndeadline,2024,5,98.00\n"
                                b"deadline,2025,,\n")
    assert commands == [ComplianceDeadline(year=2024, multiple=5, price="98.00"),
                        ComplianceDeadline(year=2025)]
    rows = parse_order_text(b'{"action": "deadline", "year": 2024, "price": "98.00"}\n', "ndjson")
    assert rows == [ComplianceDeadline(year=2024, price="98.00")]


def _short_entity(engine: Engine, shortfall: int) -> None:
    engine.execute(IssueAllowances(account="ent", instrument="CEA24", qty=1_000_000))
    engine.execute(RecordEmissions(account="ent", year=2024, qty=1_000_000 + shortfall))
    engine.execute(SurrenderAllowances(account="ent", instrument="CEA24", qty=1_000_000,
                                       year=2024))


def test_with_no_trades_the_operator_price_sets_the_fine():
    """Shortfall: a fine of 5-10 times the average market price of the month before the
    deadline; with no trades that month the operator's reference price (the published
    national average) is used. The published case: 865,300 t x 98 CNY x 5 =
    423,997,000 CNY."""
    engine = _ledgered()
    _short_entity(engine, 865_300)
    refused = engine.execute(ComplianceDeadline(year=2024))
    assert type(refused[-1]) is CommandRejected and refused[-1].reason == "no_market_price"
    events = engine.execute(ComplianceDeadline(year=2024, multiple=5, price="98.00"))
    passed = next(e for e in events if type(e) is DeadlinePassed)
    assessed = next(e for e in events if type(e) is ComplianceAssessed)
    assert (passed.price, passed.multiple, passed.price_source) == (9800, 5, "operator")
    assert passed.average_price is None  # no market average
    assert assessed.fine == 423_997_000_00 == fine_fen(865_300, 9800, 1)
    engine.check()


@pytest.mark.parametrize("year", [-5, 0, 1999, 10000, 99999])
def test_a_deadline_of_a_year_that_cannot_be_is_refused_and_closes_nothing(year):
    """A typo in the deadline's year closed that year for good (its emissions then
    refused year_closed); the year is checked as emissions' and allocations' are."""
    engine = _ledgered()
    before = engine.snapshot()[7:]  # all but the counters (a rejection counts)
    refused = engine.execute(ComplianceDeadline(year=year, multiple=5, price="98.00"))
    assert [(type(e), e.reason) for e in refused] == [(CommandRejected, "invalid_year")]
    assert engine.snapshot()[7:] == before


@pytest.mark.parametrize("price, emissions", [("98000000000.00", 1_000_000 + 1_000_000),
                                              ("98.00", (1 << 62) - 1)])
def test_a_fine_past_what_the_ledger_records_is_refused_before_anything_changes(price,
                                                                                emissions):
    """A mistyped price (or emissions no entity has) gave a fine over 2^64 fen: the state
    could no longer be written, and the live exchange died at every snapshot."""
    engine = _ledgered()
    engine.execute(IssueAllowances(account="ent", instrument="CEA24", qty=1))  # opens it
    recorded = engine.execute(RecordEmissions(account="ent", year=2024, qty=emissions))
    assert type(recorded[0]) is not CommandRejected
    before = engine.snapshot()[7:]  # all but the counters (a rejection counts)
    refused = engine.execute(ComplianceDeadline(year=2024, multiple=10, price=price))
    assert [(type(e), e.reason) for e in refused] == [(CommandRejected, "fine_out_of_range")]
    assert engine.snapshot()[7:] == before
    written = engine.state_hash()
    assert decode_state(encode_state(engine)).state_hash() == written  # it can be written
    engine.check()


def test_when_given_the_operator_price_is_used_over_the_market_average():
    """Shortfall fines: the operator's reference price, when given, is the price."""
    engine = _ledgered(open_market())
    december = _beijing(2025, 12, 10, 10)
    for cmd in (IssueAllowances(account="mm", instrument="CEA25", qty=10),
                Deposit(account="buyer", currency="CNY", amount="1000.00"),
                PlaceOrder(order_id="s", account="mm", instrument="CEA25", side="sell",
                           price="90.00", qty=10, ts=december),
                PlaceOrder(order_id="b", account="buyer", instrument="CEA25", side="buy",
                           price="90.00", qty=10, ts=december)):
        engine.execute(cmd)
    _short_entity(engine, 100)
    for price in ("98.001", "0", "-1.00", "abc"):
        refused = engine.execute(ComplianceDeadline(year=2024, price=price))[-1]
        assert type(refused) is CommandRejected and refused.reason == "invalid_price", price
    events = engine.execute(ComplianceDeadline(year=2024, multiple=7, price="98.00"))
    passed = events[0]
    assert type(passed) is DeadlinePassed
    assert (passed.average_price, passed.price, passed.multiple) == (9000, 9800, 7)
    assert events[1].fine == 100 * 9800 * 7


def test_without_an_operator_price_the_event_names_the_market_average():
    """Shortfall fines at the month's average: the deadline's event says so."""
    engine = _ledgered(open_market())
    december = _beijing(2025, 12, 10, 10)
    for cmd in (IssueAllowances(account="mm", instrument="CEA25", qty=10),
                Deposit(account="buyer", currency="CNY", amount="1000.00"),
                PlaceOrder(order_id="s", account="mm", instrument="CEA25", side="sell",
                           price="98.00", qty=10, ts=december),
                PlaceOrder(order_id="b", account="buyer", instrument="CEA25", side="buy",
                           price="98.00", qty=10, ts=december)):
        engine.execute(cmd)
    _short_entity(engine, 865_300)
    events = engine.execute(ComplianceDeadline(year=2024, multiple=5))
    assert (events[0].price, events[0].multiple, events[0].price_source) == (9800, 5, "market")
    assert events[1].fine == 423_997_000_00  # the published case, at the market's 98.00


def test_an_accounts_trades_with_itself_do_not_set_the_fine_price():
    """A short entity selling to itself in December at the band's floor would lower the
    average that prices its own fine (a month's self-trades outweighed the real ones)."""
    engine = _ledgered(open_market())
    december = _beijing(2025, 12, 10, 10)
    for cmd in (IssueAllowances(account="mm", instrument="CEA25", qty=10),
                Deposit(account="buyer", currency="CNY", amount="1000.00"),
                IssueAllowances(account="ent", instrument="CEA25", qty=99_999),
                Deposit(account="ent", currency="CNY", amount="6000000.00"),
                PlaceOrder(order_id="s", account="mm", instrument="CEA25", side="sell",
                           price="98.00", qty=10, ts=december),
                PlaceOrder(order_id="b", account="buyer", instrument="CEA25", side="buy",
                           price="98.00", qty=10, ts=december),
                PlaceOrder(order_id="own-s", account="ent", instrument="CEA25", side="sell",
                           price="54.00", qty=99_999, ts=december),
                PlaceOrder(order_id="own-b", account="ent", instrument="CEA25", side="buy",
                           price="54.00", qty=99_999, ts=december, stp="none")):
        assert type(engine.execute(cmd)[0]) is not CommandRejected, cmd
    assert engine.trades == 2  # the self-trade happened
    _short_entity(engine, 865_300)
    events = engine.execute(ComplianceDeadline(year=2024, multiple=5))
    assert (events[0].average_price, events[0].price_source) == (9800, "market")
    assert events[1].fine == 423_997_000_00
    engine.check()


def test_a_fine_is_the_published_price_times_the_shortfall_and_multiple():
    """An uneven month: 1 t at 60.00 and 2 t at 60.01 average 60.00667 CNY. The price
    published (``average_price``, ``price``) is 60.01, on the fen, halves up, and each
    fine is exactly shortfall x multiple x that price, so anyone can check it."""
    engine = _ledgered(open_market())
    december = _beijing(2025, 12, 10, 10)
    for cmd in (IssueAllowances(account="mm", instrument="CEA25", qty=10),
                Deposit(account="buyer", currency="CNY", amount="1000.00")):
        engine.execute(cmd)
    for number, (price, qty) in enumerate((("60.00", 1), ("60.01", 2))):
        for side, account in (("sell", "mm"), ("buy", "buyer")):
            engine.execute(PlaceOrder(order_id=f"{side}{number}", account=account,
                                      instrument="CEA25", side=side, price=price, qty=qty,
                                      ts=december))
    _short_entity(engine, 3)
    events = engine.execute(ComplianceDeadline(year=2024, multiple=5))
    passed, assessed = events[0], events[1]
    assert type(passed) is DeadlinePassed and type(assessed) is ComplianceAssessed
    assert (passed.average_price, passed.price, passed.price_source) == (6001, 6001, "market")
    assert assessed.shortfall == 3
    assert assessed.fine == 3 * 5 * 6001 == 90015
    engine.check()


# --- 8. the multiple in every output --------------------------------------------------------


def test_every_comply_output_names_the_fine_multiple_and_price(tmp_path, capsys):
    """Shortfall: a fine of 5 to 10 times the price; every compliance output says which
    multiple (and price) it used."""
    path = tmp_path / "s.toml"
    path.write_text(_MIXED.replace("year = 2024\n", 'year = 2024\nmultiple = 7\n'
                                   'deadline_price = "98.00"\n'))
    assert main(["comply", str(path)]) == 0
    assert "fines at 7 x 98.00 CNY/t (the operator's reference price)" in capsys.readouterr().out
    assert main(["comply", str(path), "--json", "--csv", str(tmp_path / "o.csv")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["multiple"], report["price"], report["price_source"]) == (7, "98.00",
                                                                             "operator")
    header, row = (tmp_path / "o.csv").read_text().splitlines()
    assert header.endswith(",multiple") and row.endswith(",7")
    path.write_text(_MIXED.replace("year = 2024\n", "year = 2024\ndeadline_price = 98\n"))
    assert main(["comply", str(path)]) == 2
    assert "deadline_price is a decimal string" in capsys.readouterr().err


_MOST = (1 << 62) - 1  # the most the ledger records


@pytest.mark.parametrize("command", [
    Deposit(account="x", currency="CNY", amount=f"{_MOST // 100}.{_MOST % 100:02d}"),
    IssueAllowances(account="x", instrument="CEA25", qty=_MOST),
    AllocateAllowances(account="ent", instrument="CEA24", year=2024, qty=_MOST, stage="pre"),
    ConvertAllowances(account="ent", instrument="CEA23", to_instrument="CEA25", qty=1),
    OpenAuction(auction="P1", account="@registry", instrument="CEA25", side="sell", qty=_MOST,
                price="60.00"),
], ids=["deposit", "issue", "allocate", "convert", "primary-auction"])
def test_what_would_take_a_supply_past_what_the_ledger_records_is_refused(command):
    """Each issue and deposit was within 2^62 - 1, but balances added up with no cap: a
    holding past 2^64 could not be snapshotted, and the live exchange died at its next
    snapshot, and again after every restart."""
    engine = _ledgered(open_market())
    for setup in (OpenAccount(account="ent"), IssueAllowances(account="ent", instrument="CEA23",
                                                              qty=10),
                  Deposit(account="x", currency="CNY", amount="0.01"),
                  IssueAllowances(account="x", instrument="CEA24", qty=1),
                  IssueAllowances(account="x", instrument="CEA25", qty=_MOST)):
        assert type(engine.execute(setup)[0]) is not CommandRejected, setup
    before = engine.snapshot()[7:]  # all but the counters (a rejection counts)
    refused = engine.execute(command)
    assert [(type(e), e.reason) for e in refused] == [(CommandRejected, "supply_limit")]
    assert engine.snapshot()[7:] == before
    assert decode_state(encode_state(engine)).state_hash() == engine.state_hash()
    engine.check()


def test_a_supply_may_reach_the_most_the_ledger_records_and_be_written():
    engine = _ledgered(open_market())
    for command in (IssueAllowances(account="a", instrument="CEA25", qty=_MOST - 5),
                    IssueAllowances(account="b", instrument="CEA25", qty=5),
                    Deposit(account="a", currency="CNY",
                            amount=f"{_MOST // 100}.{_MOST % 100:02d}")):
        assert type(engine.execute(command)[0]) is not CommandRejected, command
    assert engine.ledger.supply["CEA25"] == engine.ledger.supply["CNY"] == _MOST
    assert decode_state(encode_state(engine)).state_hash() == engine.state_hash()


def test_open_primary_auctions_count_against_the_supply_limit_until_they_clear():
    """Checked only as each opened, two primary auctions and an issue between opening and
    clearing took the supply past the limit when they cleared."""
    from exchange.commands import BidAuction, CloseAuction

    engine = _ledgered(open_market())
    for command in (IssueAllowances(account="x", instrument="CEA25", qty=_MOST - 200_000),
                    Deposit(account="b", currency="CNY", amount="1000000.00")):
        assert type(engine.execute(command)[0]) is not CommandRejected

    def primary(name: str) -> list:
        return engine.execute(OpenAuction(auction=name, account="@registry",
                                          instrument="CEA25", side="sell", qty=100_000,
                                          price="1.00"))

    assert type(primary("P1")[0]) is not CommandRejected
    assert type(primary("P2")[0]) is not CommandRejected  # the supply would be exactly full
    assert primary("P3")[0].reason == "supply_limit"
    refused = engine.execute(IssueAllowances(account="y", instrument="CEA25", qty=1))
    assert refused[0].reason == "supply_limit"
    for name, bidder in (("P1", "b1"), ("P2", "b2")):
        engine.execute(BidAuction(auction=name, order_id=bidder, account="b", price="1.00",
                                  qty=100_000))
        engine.execute(CloseAuction(auction=name))
    assert engine.ledger.supply["CEA25"] == _MOST
    assert decode_state(encode_state(engine)).state_hash() == engine.state_hash()
    engine.check()


def test_a_transfer_to_its_own_account_is_refused_and_changes_nothing():
    """It moved nothing, and was reported, journaled and shown as a transfer."""
    from exchange.commands import TransferAllowances

    engine = _ledgered()
    engine.execute(OpenAccount(account="a", kind="covered"))
    engine.execute(AllocateAllowances(account="a", instrument="CEA24", qty=5_000, year=2024,
                                      stage="pre"))
    events = engine.execute(TransferAllowances(account="a", to_account="a", instrument="CEA24",
                                               qty=100))
    assert [(type(e), e.reason) for e in events] == [(CommandRejected, "same_account")]
    holding = engine.ledger.holding("a", "CEA24")
    assert holding is not None and holding.available == 5_000 and not holding.held
