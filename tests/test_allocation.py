"""The allocation and compliance rules reproduce shared/DOMAIN.md's numbers exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.compliance.allocation import (SECTOR_RULES, Adjustment, AllocationError, Entity,
                                            PowerUnit, adjust, allocate, alpha, banking_cap,
                                            ccer_cap, fine_fen, industrial_allocation,
                                            industrial_alphas, load_factor, power_allocation,
                                            pre_allocation, sector_rule, solve_benchmark, true_up)

# --- power: A = Qe·Be·Ff + Qh·Bh ------------------------------------------------------------


def test_coal_unit_with_load_factor_and_heat():
    # 1,000,000 MWh from a large coal unit at 60% load: Ff = 1.015^(16 - 12) = 1.015^4;
    # 500,000 GJ of heat at the coal heat benchmark 0.1033.
    # 1,000,000 × 0.7910 × 1.061363550625 + 500,000 × 0.1033 = 891,188.568...
    unit = PowerUnit("coal_large", "1000000", heat_gj="500000", load="0.60")
    assert unit.benchmark_allocation() == Fraction("891188.568544375")
    assert power_allocation([unit], "950000") == 891_188  # rounded down, not up


def test_load_factor_applies_only_below_65_percent():
    assert load_factor("0.65") == 1 and load_factor("0.90") == 1
    assert load_factor("0.6499") > 1
    assert load_factor("0.50") == Fraction("1.015")**6
    with pytest.raises(AllocationError):
        load_factor("1.2")


def test_gas_unit_is_topped_up_to_its_verified_emissions():
    # 500,000 MWh × 0.3288 + 100,000 GJ × 0.0533 = 169,730 t against 200,000 t emitted
    unit = PowerUnit("gas", "500000", heat_gj="100000", load="0.80")
    assert unit.benchmark_allocation() == 169_730
    assert power_allocation([unit], "200000") == 200_000
    # a coal unit is not topped up: short by 5.8%, under the 20% cap
    assert power_allocation([PowerUnit("coal_large", "1000000")], "840000") == 791_000


def test_no_power_entity_is_short_by_more_than_20_percent():
    # 791,000 t allocated against 1,200,000 t emitted would be 34% short: lifted to 80%
    assert power_allocation([PowerUnit("coal_large", "1000000")], "1200000") == 960_000
    # exactly 20% short stays as it is
    assert power_allocation([PowerUnit("coal_large", "1000000")], "988750") == 791_000


def test_power_refuses_floats_and_unknown_units():
    with pytest.raises(AllocationError, match="float"):
        PowerUnit("coal_large", 1000000.0)
    with pytest.raises(AllocationError, match="unknown unit type"):
        PowerUnit("nuclear", "1000")
    with pytest.raises(AllocationError, match="negative"):
        PowerUnit("gas", "-1")


# --- steel, cement, aluminium: A = E·(1+α) -------------------------------------------------


@pytest.mark.parametrize(
    "x,expected",
    [
        ("0.1999", Fraction("0.029985")),  # just inside: 0.15 × X
        ("0.2", Fraction("0.03")),  # at the edge
        ("0.2001", Fraction("0.03")),  # just outside: capped
        ("0.9", Fraction("0.03")),
        ("-0.1999", Fraction("-0.029985")),
        ("-0.2", Fraction("-0.03")),
        ("-0.2001", Fraction("-0.03")),
        ("0", Fraction(0))
    ])
def test_alpha_inside_and_outside_twenty_percent(x, expected):
    assert alpha(x) == expected


def test_benchmark_is_solved_so_the_sector_total_equals_emissions():
    # three cement plants: the cleanest gains, the dirtiest loses, the total is kept
    plants = {
        "clean": ("1000000", "0.80"),
        "middle": ("2000000", "0.85"),
        "dirty": ("500000", "1.10")
    }
    bp, alphas = industrial_alphas(plants)
    total = sum(Fraction(e) * (1 + alphas[name]) for name, (e, _) in plants.items())
    assert total == 3_500_000
    assert alphas["clean"] > alphas["middle"] > alphas["dirty"]
    assert alphas["dirty"] == Fraction("-0.03")  # X = (BP - 1.10)/BP below -20%
    allocated = industrial_allocation(plants)
    assert 3_500_000 - 3 <= sum(allocated.values()) <= 3_500_000  # at most 1 t each lost


def test_industrial_allocation_rounds_down():
    allocated = industrial_allocation({"a": ("101", "1.0"), "b": ("100", "1.2")})
    _, alphas = industrial_alphas({"a": ("101", "1.0"), "b": ("100", "1.2")})
    exact_a = 101 * (1 + alphas["a"])
    assert exact_a.denominator > 1 and allocated["a"] == int(exact_a)  # floor, positive


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**7), st.integers(1, 5000)), min_size=1, max_size=30))
def test_any_sector_balances_exactly(rows):
    entities = {f"e{n}": (str(e), Fraction(i, 1000)) for n, (e, i) in enumerate(rows)}
    bp = solve_benchmark(entities)
    _, alphas = industrial_alphas(entities)
    assert bp > 0
    assert sum(Fraction(e) * alphas[name] for name, (e, _) in entities.items()) == 0


def test_a_sector_without_emissions_is_refused():
    with pytest.raises(AllocationError):
        solve_benchmark({})
    with pytest.raises(AllocationError):
        solve_benchmark({"a": ("100", "0")})


# --- the yearly cycle -----------------------------------------------------------------------------


def test_pre_allocation_then_true_up():
    issued = pre_allocation("1234567")  # 70% of 1,234,567 = 864,196.9
    assert issued == 864_196
    assert pre_allocation("1234567", "0.50") == 617_283  # the 2026 draft's cut
    assert true_up(900_000, issued) == 35_804  # more issued
    assert true_up(800_000, issued) == -64_196  # the excess taken back


def test_regional_factors_never_grow_the_sector_beyond_its_cap():
    base = {"a": 1000, "b": 1000, "c": 1000}
    regions = {"a": "west", "b": "west", "c": "east"}
    grown = adjust(base, regions,
                   Adjustment(regional={"west": Fraction("1.2")}, cap_share=Fraction("1.05")))
    assert sum(grown.values()) <= 3150
    assert grown["a"] == grown["b"] > grown["c"]
    kept = adjust(base, regions, Adjustment(regional={"east": Fraction("0.9")}))
    assert kept == {"a": 1000, "b": 1000, "c": 900}  # under the cap: unscaled


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 10**6), min_size=1,
                    max_size=10), st.integers(50, 200), st.integers(50, 150))
def test_adjusted_total_never_exceeds_the_cap(base, factor, cap):
    regions = {name: name[0] for name in base}
    out = adjust(base, regions,
                 Adjustment(regional={"a": Fraction(factor, 100)}, cap_share=Fraction(cap, 100)))
    assert sum(out.values()) <= sum(base.values()) * Fraction(cap, 100)
    assert all(v >= 0 for v in out.values())


# --- surrender and the deadline -----------------------------------------------------------------


def test_ccer_may_cover_at_most_five_percent():
    assert ccer_cap(1_000_000) == 50_000
    assert ccer_cap(1_000_019) == 50_000  # 50,000.95 rounded down
    assert ccer_cap(0) == 0


def test_banking_cap():
    # T = 10,000 + 1.5 × max(0, net sales), capped at the old-vintage holdings
    assert banking_cap(200_001, 10**9) == 310_001  # 310,001.5 rounded down
    assert banking_cap(0, 10**9) == 10_000
    assert banking_cap(-400_000, 10**9) == 10_000  # net buyers get the base only
    assert banking_cap(1_000_000, 12_345) == 12_345  # never more than is held


def test_the_published_fine_case():
    # 865,300 t short × 98 CNY × 5 = 423,997,000 CNY, in fen
    assert fine_fen(865_300, 9_800 * 7, 7) == 423_997_000_00
    # the average is volume-weighted and exact: 1,000 t at 97.00 and 3,000 t at 99.00
    assert fine_fen(10, 97_00 * 1000 + 99_00 * 3000, 4000) == 10 * 9850 * 5
    with pytest.raises(AllocationError, match="5 to 10"):
        fine_fen(1, 100, 1, multiple=4)
    with pytest.raises(AllocationError, match="no trades"):
        fine_fen(1, 0, 0)


# --- the allocation plan: one named rule per sector ------------------------------------------


def test_the_plan_applies_each_sectors_named_rule_then_the_factors():
    coal = Entity("coal", "power", 900_000, "west", units=(PowerUnit("coal_large", "1000000"), ))
    mill_a = Entity("mill-a", "steel", 100, "east", intensity=Fraction(1))
    mill_b = Entity("mill-b", "steel", 100, "east", intensity=Fraction(6, 5))
    plan = allocate([coal, mill_a, mill_b])  # the defaults: benchmarks and intensity
    assert plan == {"coal": 791_000, "mill-a": 101, "mill-b": 98}
    assert allocate([coal, mill_a, mill_b], {"steel": {
        "rule": "verified_emissions"
    }}) == {
        "coal": 791_000,
        "mill-a": 100,
        "mill-b": 100
    }
    # a configured benchmark replaces the 2024 one; the west's factor adds 2%, capped at 1%
    rules = {"power": {"rule": "power_benchmark", "electricity": {"coal_large": "0.8000"}}}
    assert allocate([coal], rules)["coal"] == 800_000
    assert (allocate([coal], rules,
                     Adjustment(regional={"west": Fraction("1.02")},
                                cap_share=Fraction("1.01")))["coal"] == 808_000)


def test_a_new_rule_plugs_in_by_name_and_unknown_ones_are_refused():

    @sector_rule("half_of_emissions")
    def half(entities, params):
        return {e.name: e.emissions // 2 for e in entities}

    try:
        kiln = Entity("kiln", "cement", 1001, intensity=Fraction(1))
        assert allocate([kiln], {"cement": {"rule": "half_of_emissions"}}) == {"kiln": 500}
    finally:
        del SECTOR_RULES["half_of_emissions"]
    with pytest.raises(AllocationError, match="unknown rule 'half_of_emissions'"):
        allocate([kiln], {"cement": {"rule": "half_of_emissions"}})
    with pytest.raises(AllocationError, match="needs its generating units"):
        allocate([Entity("bare", "power", 10)])
    with pytest.raises(AllocationError, match="unknown gas_turbine"):
        allocate([Entity("p", "power", 10, units=(PowerUnit("gas", "1"), ))],
                 {"power": {
                     "rule": "power_benchmark",
                     "electricity": {
                         "gas_turbine": "1"
                     }
                 }})
