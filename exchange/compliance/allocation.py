"""Allocation and compliance rules of the national market, as exact arithmetic.

The yearly numbers a registry needs, each a pure function (docs/compliance.md; the
defaults are the rules in force):

* ``power_allocation``     - A = Qe·Be·Ff + Qh·Bh per generating unit, with the load
                             factor Ff = 1.015^(16-20F) below 65% load for conventional
                             coal units only (large and small); each gas unit topped up
                             to its own verified emissions; no shortfall above 20% of
                             verified emissions, after every adjustment too;
* ``industrial_alphas``    - steel, cement, aluminium: A = E·(1+α), X = (BP-I)/BP,
                             α = 0.15·X inside ±20%, ±0.03 outside, with the sector value
                             BP solved exactly so that the sector's allocation equals its
                             verified emissions;
* ``pre_allocation`` and ``true_up`` - a share of the prior year's emissions first, the
                             difference to the final allocation once verified;
* ``adjust``               - regional and yearly multipliers with a sector cap, so the
                             total cannot grow by accident, above each entity's floor
                             (the power shortfall cap) when its rule sets one;
* ``default_rules``        - the rule of each sector by compliance year: steel, cement
                             and aluminium take A = E in 2024, the intensity rule from
                             2025;
* ``ccer_cap``, ``banking_cap``, ``fine_fen``, ``average_price`` - the 5% offset cap,
                             the banking conversion cap T = 10,000 + 1.5 × net sales, the
                             fine and the average price it is at.

Exactness: inputs are decimal strings, ``Decimal`` or ``Fraction`` (never ``float``: a
float is refused); arithmetic is in ``Fraction``; every allocation is rounded down to whole
tonnes at the end, as the rules say. The one irrational step, a load factor with a
fractional exponent, is computed with 50 significant digits and rounded down, so it
cannot round a unit up. Money is integer fen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from math import ceil, floor
from typing import TypeAlias

__all__ = [
    "exact", "POWER_BENCHMARKS", "HEAT_BENCHMARKS", "load_factor", "PowerUnit", "power_allocation",
    "alpha", "solve_benchmark", "industrial_alphas", "industrial_allocation", "pre_allocation",
    "true_up", "adjust", "ccer_cap", "banking_cap", "fine_fen", "average_price", "AllocationError",
    "Entity",
    "SECTOR_RULES", "sector_rule", "DEFAULT_RULES", "FIRST_YEAR_RULES", "default_rules",
    "allocate", "shortfall_floor", "LOAD_FACTOR_TYPES"
]


class AllocationError(ValueError):
    """Input that the rules cannot apply to (a float, a negative output, no entities)."""


# What the rules take as a number: a decimal string, an int, a Decimal or a Fraction.
Number: TypeAlias = str | int | Decimal | Fraction


def exact(value: object, name: str = "value") -> Fraction:
    """Return *value* (decimal string, int, ``Decimal`` or ``Fraction``) as a ``Fraction``.

    >>> exact("0.7910"), exact(3), exact(Decimal("1.5"))
    (Fraction(791, 1000), Fraction(3, 1), Fraction(3, 2))
    >>> exact(0.1)
    Traceback (most recent call last):
    ...
    exchange.compliance.allocation.AllocationError: value: 0.1 is a float; give a decimal string
    """
    if isinstance(value, (bool, float)):
        raise AllocationError(f"{name}: {value!r} is a float; give a decimal string")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    try:
        number = Decimal(value) if isinstance(value, str) else value
        if not isinstance(number, Decimal) or not number.is_finite():
            raise ValueError
    except (ArithmeticError, ValueError, TypeError):
        raise AllocationError(f"{name}: {value!r} is not a number") from None
    return Fraction(number)


# --- power ------------------------------------------------------------------------------

# 2024 benchmarks, tCO2 per MWh of electricity, by unit type (DOMAIN rule 4).
POWER_BENCHMARKS = {
    "coal_large": Fraction("0.7910"),
    "coal_small": Fraction("0.8049"),
    "coal_unconventional": Fraction("0.8244"),
    "gas": Fraction("0.3288")
}
# tCO2 per GJ of heat, by fuel.
HEAT_BENCHMARKS = {"coal": Fraction("0.1033"), "gas": Fraction("0.0533")}
# 2023-2024 allocation plan, annex: the load factor corrects conventional coal units only
# (large and small); gas and unconventional coal units take Ff = 1 at any load.
LOAD_FACTOR_TYPES = frozenset({"coal_large", "coal_small"})
LOAD_THRESHOLD = Fraction("0.65")
SHORTFALL_CAP = Fraction("0.20")  # no entity short by more than 20% of its emissions
_DIGITS = 50  # significant digits of a fractional load-factor power


def load_factor(load: Number) -> Fraction:
    """Return Ff for a unit running at *load* (a fraction of capacity): 1.015^(16-20F)
    below 65%, else 1; a fractional power is rounded down at 50 digits. Only conventional
    coal units take it (``LOAD_FACTOR_TYPES``; ``PowerUnit.benchmark_allocation``).

    >>> load_factor("0.70"), load_factor("0.60") == Fraction("1.015") ** 4
    (Fraction(1, 1), True)
    >>> Fraction("1.015") ** 3 < load_factor("0.625") < Fraction("1.015") ** 4  # 1.015^3.5
    True
    """
    share = exact(load, "load factor")
    if not 0 <= share <= 1:
        raise AllocationError(f"load factor {load} is outside 0..1")
    if share >= LOAD_THRESHOLD:
        return Fraction(1)
    exponent = 16 - 20 * share
    if exponent.denominator == 1:
        return Fraction("1.015")**int(exponent)
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        ctx.rounding = "ROUND_FLOOR"
        power = Decimal("1.015")**(Decimal(exponent.numerator) / Decimal(exponent.denominator))
    return Fraction(power)


@dataclass(frozen=True)
class PowerUnit:
    """One generating unit: electricity (MWh) and heat (GJ) supplied, its type, its load,
    and its own verified emissions (t; needed for a gas unit beside other units: the gas
    top-up is per unit)."""

    unit_type: str  # a key of POWER_BENCHMARKS
    electricity_mwh: Fraction
    heat_gj: Fraction = Fraction(0)
    load: Fraction = Fraction(1)
    emissions: Fraction | None = None

    def __post_init__(self) -> None:
        if self.unit_type not in POWER_BENCHMARKS:
            raise AllocationError(
                f"unknown unit type {self.unit_type!r}; known: {', '.join(POWER_BENCHMARKS)}")
        for name in ("electricity_mwh", "heat_gj", "load", "emissions"):
            given = getattr(self, name)
            if given is None:
                continue
            value = exact(given, name)
            if value < 0:
                raise AllocationError(f"{name} must not be negative")
            object.__setattr__(self, name, value)
        load_factor(self.load)  # 0..1 for every unit, whether or not its type takes Ff

    @property
    def fuel(self) -> str:
        return "gas" if self.unit_type == "gas" else "coal"

    def benchmark_allocation(self, electricity: Mapping[str, Fraction] = POWER_BENCHMARKS,
                             heat: Mapping[str, Fraction] = HEAT_BENCHMARKS) -> Fraction:
        """Return Qe·Be·Ff + Qh·Bh, exact (before top-up, cap and rounding); Ff is 1 but
        for conventional coal units.

        >>> PowerUnit("gas", "1000000", load="0.50").benchmark_allocation()  # no Ff for gas
        Fraction(328800, 1)
        """
        factor = load_factor(self.load) if self.unit_type in LOAD_FACTOR_TYPES else 1
        return self.electricity_mwh * electricity[self.unit_type] * factor + self.heat_gj * heat[
            self.fuel]


def shortfall_floor(verified_emissions: Number, shortfall_cap: Number = SHORTFALL_CAP) -> int:
    """Return the least whole allocation that leaves an entity short by at most
    *shortfall_cap* of its verified emissions: E·(1 - cap), rounded up (rounding down
    would break the cap by a fraction of a tonne).

    >>> shortfall_floor(1_200_000), shortfall_floor(1_200_001)
    (960000, 960001)
    """
    return ceil(exact(verified_emissions, "verified emissions") *
                (1 - exact(shortfall_cap, "shortfall cap")))


def power_allocation(units: Iterable[PowerUnit], verified_emissions: Number,
                     electricity: Mapping[str, Fraction] = POWER_BENCHMARKS,
                     heat: Mapping[str, Fraction] = HEAT_BENCHMARKS,
                     shortfall_cap: Fraction = SHORTFALL_CAP) -> int:
    """Return a power entity's allocation in whole tonnes (rounded down).

    Each unit's benchmark allocation, each gas unit topped up to its own verified
    emissions (a unit's ``emissions``; an entity of gas units only, none with a figure of
    its own, is topped up to the entity's: exactly per unit for a single unit), summed;
    then no entity is left short by more than 20% of its verified emissions
    (``shortfall_floor``).

    >>> power_allocation([PowerUnit("coal_large", "1000000")], "900000")
    791000
    >>> power_allocation([PowerUnit("gas", "1000000")], "400000")   # topped up
    400000
    >>> power_allocation([PowerUnit("coal_large", "1000000"),
    ...                   PowerUnit("gas", "1000000", emissions="380000")], "1280000")
    1171000
    >>> power_allocation([PowerUnit("coal_large", "1000000")], "1200000")  # 20% cap
    960000
    """
    units = list(units)
    emissions = exact(verified_emissions, "verified emissions")
    if emissions < 0:
        raise AllocationError("verified emissions must not be negative")
    own = sum((unit.emissions for unit in units if unit.emissions is not None), Fraction(0))
    if own > emissions:
        raise AllocationError(f"the units' verified emissions ({own}) exceed the entity's "
                              f"({emissions})")
    unknown = sum(1 for unit in units if unit.unit_type == "gas" and unit.emissions is None)
    if unknown and unknown < len(units):
        raise AllocationError("a gas unit beside other units needs its own verified emissions "
                              "('emissions'): the gas top-up is per unit")
    total = Fraction(0)
    for unit in units:
        allocation = unit.benchmark_allocation(electricity, heat)
        if unit.unit_type == "gas" and unit.emissions is not None:
            allocation = max(allocation, unit.emissions)  # topped up, unit by unit
        total += allocation
    if unknown:  # gas units only, none with its own figure: the entity's emissions are theirs
        total = max(total, emissions)
    return max(floor(total), shortfall_floor(emissions, shortfall_cap))


# --- steel, cement, aluminium --------------------------------------------------------------

ALPHA_SLOPE = Fraction("0.15")
ALPHA_EDGE = Fraction("0.20")
ALPHA_LIMIT = Fraction("0.03")


def alpha(x: Number) -> Fraction:
    """Return α for an intensity position X = (BP-I)/BP: 0.15·X inside ±20%, else ±0.03.

    >>> alpha("0.1999"), alpha("0.2"), alpha("-0.2001"), alpha("-0.1999")
    (Fraction(5997, 200000), Fraction(3, 100), Fraction(-3, 100), Fraction(-5997, 200000))
    """
    x = exact(x, "X")
    if x >= ALPHA_EDGE:
        return ALPHA_LIMIT
    if x <= -ALPHA_EDGE:
        return -ALPHA_LIMIT
    return ALPHA_SLOPE * x


def _alpha_at(intensity: Fraction, u: Fraction) -> Fraction:
    return alpha(1 - intensity * u)  # X = (BP - I)/BP = 1 - I/BP, with u = 1/BP


def solve_benchmark(entities: Mapping[str, tuple[Number, Number]]) -> Fraction:
    """Return the sector value BP at which Σ E·(1+α) = Σ E, exactly.

    *entities* maps a name to ``(verified emissions, intensity)``. Σ E·α is continuous and
    piecewise linear in u = 1/BP, falling from +0.03·ΣE to -0.03·ΣE, with corners where
    an entity's X crosses ±20%; the root is found on the segment where it changes sign
    (where Σ E·α is zero along a whole segment, that segment's end). O(n log n) for n
    entities.

    >>> solve_benchmark({"a": ("100", "1.0"), "b": ("100", "1.2")})
    Fraction(11, 10)
    """
    rows = [(exact(e, f"{name} emissions"), exact(i, f"{name} intensity"))
            for name, (e, i) in entities.items()]
    if not rows or sum(e for e, _ in rows) <= 0:
        raise AllocationError("a sector needs entities with verified emissions")
    if any(i <= 0 or e < 0 for e, i in rows):
        raise AllocationError("intensities must be positive and emissions not negative")

    def total(u: Fraction) -> Fraction:
        return sum((e * _alpha_at(i, u) for e, i in rows), Fraction(0))

    corners = sorted({edge / i for _, i in rows for edge in (1 - ALPHA_EDGE, 1 + ALPHA_EDGE)})
    # The sum falls as u grows: binary search for the first corner where it is <= 0
    # (O(log n) evaluations of O(n) each); the last corner always qualifies.
    first, last = 0, len(corners) - 1
    while first < last:
        middle = (first + last) // 2
        if total(corners[middle]) <= 0:
            last = middle
        else:
            first = middle + 1
    corner = corners[first]
    value = total(corner)
    low = corners[first - 1] if first else Fraction(0)
    low_value = total(low)  # > 0: +0.03·ΣE at u = 0
    # Linear between low and corner: low_value + slope·(u - low) = 0.
    return 1 / (low + low_value * (corner - low) / (low_value - value))


def industrial_alphas(
        entities: Mapping[str, tuple[Number, Number]]) -> tuple[Fraction, dict[str, Fraction]]:
    """Return the solved BP and each entity's α (see ``solve_benchmark``)."""
    bp = solve_benchmark(entities)
    return bp, {name: _alpha_at(exact(i), 1 / bp) for name, (_, i) in entities.items()}


def industrial_allocation(entities: Mapping[str, tuple[Number, Number]]) -> dict[str, int]:
    """Return each entity's A = E·(1+α) in whole tonnes, rounded down.

    >>> industrial_allocation({"a": ("100", "1.0"), "b": ("100", "1.2")})
    {'a': 101, 'b': 98}
    """
    _, alphas = industrial_alphas(entities)
    return {name: floor(exact(e) * (1 + alphas[name])) for name, (e, _) in entities.items()}


# --- the yearly cycle -------------------------------------------------------------------------

PRE_ALLOCATION_SHARE = Fraction("0.70")


def pre_allocation(prior_emissions: Number, share: Number = PRE_ALLOCATION_SHARE) -> int:
    """Return the pre-allocation: *share* of the prior year's verified emissions, rounded
    down (70% by default; the 2026 draft cuts it to at most 50%).

    >>> pre_allocation("1000001"), pre_allocation("1000001", "0.5")
    (700000, 500000)
    """
    share = exact(share, "share")
    if not 0 <= share <= 1:
        raise AllocationError(f"pre-allocation share {share} is outside 0..1")
    return floor(exact(prior_emissions, "prior emissions") * share)


def true_up(final: int, issued: int) -> int:
    """Return what the true-up moves: positive = issue more, negative = take back.

    >>> true_up(960000, 700000), true_up(600000, 700000)
    (260000, -100000)
    """
    return final - issued


@dataclass(frozen=True)
class Adjustment:
    """Regional and yearly multipliers, and the sector cap as a share of the unadjusted total."""

    regional: Mapping[str, Fraction] = field(default_factory=dict)
    yearly: Fraction = Fraction(1)
    cap_share: Fraction = Fraction(1)  # adjusted total <= cap_share × unadjusted total


def adjust(allocations: Mapping[str, int], regions: Mapping[str, str], adjustment: Adjustment,
           floors: Mapping[str, int] | None = None) -> dict[str, int]:
    """Apply regional and yearly multipliers, then scale down to the sector cap, never
    below an entity's floor.

    Each entity's allocation is multiplied by its region's factor (1 where none) and the
    year's factor; if the total then exceeds ``cap_share`` × the unadjusted total, every
    allocation is scaled by the same ratio. Rounded down, so the cap always holds. An
    entity with a floor in *floors* (the power rule's 20% shortfall cap,
    ``shortfall_floor``) never ends below it, whatever its factor: it is held at its floor
    and the others share what is left under the cap (the floor comes first if the floors
    alone exceed the cap).

    >>> adjust({"a": 1000, "b": 1000}, {"a": "west", "b": "east"},
    ...        Adjustment(regional={"west": Fraction("1.10")}))
    {'a': 1047, 'b': 952}
    >>> adjust({"a": 960}, {"a": "east"}, Adjustment(regional={"east": Fraction("0.99")}),
    ...        {"a": 960})
    {'a': 960}
    """
    base = sum(allocations.values())
    yearly = exact(adjustment.yearly)
    scaled = {
        name: value * exact(adjustment.regional.get(regions.get(name, ""), 1)) * yearly
        for name, value in allocations.items()
    }
    cap = exact(adjustment.cap_share) * base
    floors = floors or {}
    held = {name for name, value in scaled.items() if value < floors.get(name, 0)}
    while True:  # each pass holds more entities at their floors: at most one per entity
        free = sum((v for name, v in scaled.items() if name not in held), Fraction(0))
        room = cap - sum(floors[name] for name in held)
        ratio = Fraction(1) if free <= room or not free else max(Fraction(0), room) / free
        more = {
            name for name, value in scaled.items()
            if name not in held and value * ratio < floors.get(name, 0)
        }
        if not more:
            break
        held |= more
    return {
        name: floors[name] if name in held else floor(value * ratio)
        for name, value in scaled.items()
    }


# --- sector rules by name: the allocation plan ---------------------------------------------


@dataclass(frozen=True)
class Entity:
    """A covered entity as the allocation plan sees it: its verified emissions and what
    its sector's rule needs (power units; an intensity for steel, cement, aluminium)."""

    name: str
    sector: str
    emissions: int
    region: str = ""
    units: tuple[PowerUnit, ...] = ()
    intensity: Fraction | None = None


SectorRule = Callable[[Sequence[Entity], Mapping[str, object]], dict[str, int]]
SectorFloor = Callable[[Entity, Mapping[str, object]], int]
SECTOR_RULES: dict[str, SectorRule] = {}
RULE_FLOORS: dict[str, SectorFloor] = {}  # rule -> the least an entity ends with, adjusted
FIXED_RULES: set[str] = set()  # rules whose figures no regional or yearly factor moves


def sector_rule(name: str, *, minimum: SectorFloor | None = None,
                fixed: bool = False) -> Callable[[SectorRule], SectorRule]:
    """Register an allocation rule under *name*, for a plan's ``rule = "name"``. A rule
    takes one sector's entities and its parameters and returns whole tonnes per entity.
    *minimum* gives an entity's floor once adjusted (``adjust``); a *fixed* rule's
    figures are final: the regional and yearly factors and the sector cap leave them."""

    def register(rule: SectorRule) -> SectorRule:
        SECTOR_RULES[name] = rule
        RULE_FLOORS.pop(name, None)
        FIXED_RULES.discard(name)
        if minimum is not None:
            RULE_FLOORS[name] = minimum
        if fixed:
            FIXED_RULES.add(name)
        return rule

    return register


def _table(params: Mapping[str, object], key: str,
           default: Mapping[str, Fraction]) -> dict[str, Fraction]:
    given = params.get(key, {})
    if not isinstance(given, Mapping):
        raise AllocationError(f"{key} must be a table of benchmarks")
    unknown = set(given) - set(default)
    if unknown:
        raise AllocationError(
            f"{key}: unknown {', '.join(sorted(unknown))}; known: {', '.join(default)}")
    return {**default, **{k: exact(v, f"{key}.{k}") for k, v in given.items()}}


def _power_floor(entity: Entity, params: Mapping[str, object]) -> int:
    """The power rule's floor: no entity short by more than ``shortfall_cap`` (20%) of
    its verified emissions after every adjustment."""
    return shortfall_floor(entity.emissions,
                           exact(params.get("shortfall_cap", SHORTFALL_CAP), "shortfall_cap"))


@sector_rule("power_benchmark", minimum=_power_floor)
def _power_benchmark(entities: Sequence[Entity], params: Mapping[str, object]) -> dict[str, int]:
    """Power: A = Qe·Be·Ff + Qh·Bh per unit (Ff for conventional coal only), each gas
    unit topped up to its verified emissions, the 20% shortfall cap (held after the
    regional and yearly factors too). Parameters: ``electricity`` and ``heat`` benchmark
    tables (defaults: 2024), and ``shortfall_cap``."""
    electricity = _table(params, "electricity", POWER_BENCHMARKS)
    heat = _table(params, "heat", HEAT_BENCHMARKS)
    cap = exact(params.get("shortfall_cap", SHORTFALL_CAP), "shortfall_cap")
    for e in entities:
        if not e.units:
            raise AllocationError(f"{e.name}: the power rule needs its generating units")
    allocations = {}
    for e in entities:
        try:
            allocations[e.name] = power_allocation(e.units, e.emissions, electricity, heat, cap)
        except AllocationError as exc:
            raise AllocationError(f"{e.name}: {exc}") from None
    return allocations


@sector_rule("intensity_benchmark")
def _intensity_benchmark(entities: Sequence[Entity], params: Mapping[str,
                                                                     object]) -> dict[str, int]:
    """Steel, cement, aluminium from 2025: A = E·(1+α), BP solved over the sector."""
    table: dict[str, tuple[Number, Number]] = {}
    for e in entities:
        if e.intensity is None:
            raise AllocationError(f"{e.name}: the intensity rule needs its intensity")
        table[e.name] = (e.emissions, e.intensity)
    return industrial_allocation(table)


@sector_rule("verified_emissions", fixed=True)
def _verified_emissions(entities: Sequence[Entity], params: Mapping[str, object]) -> dict[str, int]:
    """Steel, cement, aluminium in 2024, their first year: A = E, exactly (no regional or
    yearly factor moves it)."""
    return {e.name: e.emissions for e in entities}


# The rules in force from 2025, when steel, cement and aluminium take the intensity rule.
DEFAULT_RULES = {
    "power": "power_benchmark",
    "steel": "intensity_benchmark",
    "cement": "intensity_benchmark",
    "aluminium": "intensity_benchmark"
}
INTENSITY_FROM = 2025
# 2024, the first compliance year of steel, cement and aluminium: allocation equals
# verified emissions (the intensity rule starts in 2025).
FIRST_YEAR_RULES = {
    **DEFAULT_RULES, "steel": "verified_emissions",
    "cement": "verified_emissions",
    "aluminium": "verified_emissions"
}


def default_rules(year: int | None = None) -> dict[str, str]:
    """Return each sector's rule for compliance *year* (``None``: the rules in force, from
    2025).

    >>> default_rules(2024)["steel"], default_rules(2025)["steel"], default_rules()["power"]
    ('verified_emissions', 'intensity_benchmark', 'power_benchmark')
    """
    return FIRST_YEAR_RULES if year is not None and year < INTENSITY_FROM else DEFAULT_RULES


def allocate(entities: Sequence[Entity], rules: Mapping[str, Mapping[str, object]] | None = None,
             adjustment: Adjustment = Adjustment(), year: int | None = None) -> dict[str, int]:
    """Return each entity's final allocation: its sector's rule (``rules[sector]["rule"]``
    names one of ``SECTOR_RULES``, with its parameters beside it; ``default_rules(year)``
    where a sector has none), then the regional and yearly factors under the sector cap,
    above the rule's floor (power: the 20% shortfall cap); a fixed rule's figures
    (``verified_emissions``) are final as they are.

    >>> allocate([Entity("a", "steel", 100, "east", intensity=Fraction(1)),
    ...           Entity("b", "steel", 100, "east", intensity=Fraction(6, 5))],
    ...          adjustment=Adjustment(regional={"east": Fraction("0.99")}), year=2024)
    {'a': 100, 'b': 100}
    """
    rules = rules or {}
    defaults = default_rules(year)
    sectors: dict[str, list[Entity]] = {}
    for entity in entities:
        sectors.setdefault(entity.sector, []).append(entity)
    regions = {e.name: e.region for e in entities}
    final: dict[str, int] = {}
    for sector, members in sectors.items():
        params = rules.get(sector, {})
        name = params.get("rule", defaults.get(sector))
        # name is any value of the plan: one that is no rule's name is not found
        rule = SECTOR_RULES.get(name)  # type: ignore[call-overload]
        if rule is None:
            raise AllocationError(
                f"{sector}: unknown rule {name!r}; known: {', '.join(SECTOR_RULES)}")
        figures = rule(members, params)
        if name in FIXED_RULES:
            final.update(figures)
            continue
        floor_of = RULE_FLOORS.get(name)  # type: ignore[call-overload]
        floors = None if floor_of is None else {e.name: floor_of(e, params) for e in members}
        final.update(adjust(figures, regions, adjustment, floors))
    return {e.name: final[e.name] for e in entities}


# --- surrender and the deadline -----------------------------------------------------------

CCER_SHARE = Fraction("0.05")
BANKING_BASE = 10_000
BANKING_SALES_FACTOR = Fraction("1.5")
FINE_MULTIPLE = 5
FINE_MULTIPLES = range(5, 11)


def ccer_cap(obligation: int) -> int:
    """Return the most CCER an entity may surrender: 5% of its obligation, rounded down.

    >>> ccer_cap(1_000_000), ccer_cap(19)
    (50000, 0)
    """
    return floor(obligation * CCER_SHARE)


def banking_cap(net_sales: int, old_holdings: int) -> int:
    """Return T = 10,000 + 1.5 × max(0, net sales in 2024-2025), capped at the old-vintage
    holdings, rounded down: how many 2019-2024 allowances may become 2025 vintage.

    >>> banking_cap(200_001, 10**9), banking_cap(-50, 10**9), banking_cap(10**6, 25_000)
    (310001, 10000, 25000)
    """
    return min(old_holdings, floor(BANKING_BASE + BANKING_SALES_FACTOR * max(0, net_sales)))


def average_price(notional_fen: int, volume: int) -> int:
    """Return the volume-weighted average price ``notional_fen / volume`` on the fen,
    halves up, as the reference price is rounded: the price a fine is published at.

    >>> average_price(6000 * 1 + 6001 * 2, 3)   # 60.00667 CNY
    6001
    >>> average_price(6000 + 6001, 2)           # 60.005 CNY, half up
    6001
    """
    if volume <= 0:
        raise AllocationError("no trades in the month before the deadline: no average price")
    return (2 * notional_fen + volume) // (2 * volume)


def fine_fen(shortfall: int, notional_fen: int, volume: int, multiple: int = FINE_MULTIPLE) -> int:
    """Return the fine in fen: shortfall × the month's average price × *multiple*.

    The average price is the volume-weighted price of the month before the deadline,
    ``notional_fen / volume`` on the fen (``average_price``), so that the fine is exactly
    the published price times the shortfall times the multiple.

    >>> fine_fen(865_300, 98 * 100 * 1000, 1000)   # the published case: 423,997,000 CNY
    42399700000
    >>> fine_fen(3, 6000 * 1 + 6001 * 2, 3)         # at 60.01 CNY, not 60.00667
    90015
    """
    if multiple not in FINE_MULTIPLES:
        raise AllocationError(f"the fine multiple must be 5 to 10, not {multiple}")
    return shortfall * average_price(notional_fen, volume) * multiple
