"""``carbonx comply SCENARIO|--example``: one compliance year, start to end, in the engine.

A scenario (TOML, documented by ``gateway/tools/examples/compliance-2024.toml``) names the
year, the fine multiple (and, optionally, the operator's reference price for the fines,
``deadline_price``), the pre-allocation share, each sector's allocation rule with its
parameters (``[rules.SECTOR]``, a name from ``exchange.compliance.allocation.SECTOR_RULES``;
a sector without one takes ``default_rules(year)``), the regional and yearly adjustment
factors with a sector cap, the market's December trades (or an order file traded during
the year), the covered entities (sector, region, prior-year and verified emissions with
their data quality, verifier and months of monthly logs, the share of their obligation
they manage to surrender, CCER held, and what their sector's rule needs: power units,
each with its own verified ``emissions`` where a gas unit sits beside other units, or
an intensity) and restatements.

The cycle, every step a command through the engine's sequenced pipeline with the ledger
on (so holdings are conserved and every step is an event):

1. open each entity's account; pre-allocate (``allocate`` stage ``pre``: a share of
   prior-year emissions, rounded down) in the year's vintage; issue its CCER;
2. trade: the scenario's order file, if any, and its December trades (of the next
   year: the month whose average price sets the fines);
3. record the verified emissions; compute the allocation plan (each sector's rule, then
   the regional and yearly factors under the sector cap) and true up (``allocate``
   stage ``final``, which the registry refuses before verification): it issues the
   difference, or claws the excess back;
4. restatements: each revised record, then the plan again, and a new final allocation
   for every entity whose figure moved (through BP a restatement can move its sector);
5. surrender: allowances of the year's vintage up to the entity's share of its
   obligation, then CCER within the 5% cap;
6. the deadline: each entity compliant or short, and fined at the multiple times the
   December average (or the operator's ``deadline_price``); the registry keeps the
   shortfall to deduct from the next year's allocation.

The report: per entity and per sector, obligation, allocation, surrendered allowances
and CCER, shortfall, fine and status; the fine's multiple and price in every output (the
summary line, ``--json``'s ``multiple``, ``price`` and ``price_source``, a ``multiple``
column in ``--csv``). ``--json`` keys are pinned (docs/formats.md).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import time
import tomllib
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from exchange import Engine, default_market
from exchange.calendar import days_from_civil
from exchange.commands import (AllocateAllowances, AnyCommand, ComplianceDeadline, Deposit,
                               IssueAllowances, OpenAccount, PlaceOrder, RecordEmissions,
                               SurrenderAllowances)
from exchange.compliance.allocation import (FINE_MULTIPLE, FINE_MULTIPLES, HEAT_BENCHMARKS,
                                            POWER_BENCHMARKS, SECTOR_RULES, Adjustment,
                                            AllocationError, Entity, PowerUnit, allocate, exact,
                                            pre_allocation)
from exchange.compliance.registry import QUALITIES, local_day_start_ns
from exchange.events import CommandRejected, ComplianceAssessed, DeadlinePassed, Event
from exchange.market import format_cash
from exchange.orderfile import OrderFileError, read_order_file
from gateway.errors import UsageError
from gateway.tools.outputs import check_outputs

__all__ = [
    "DESCRIPTION", "add_arguments", "run", "run_cycle", "load_scenario", "example_scenario",
    "EXAMPLE", "SECTORS"
]

DESCRIPTION = (
    "Run one compliance year of a scenario through the engine: pre-allocation, trading, "
    "verified emissions, allocation by sector rule with regional factors under a sector "
    "cap, true-up, surrender (CCER within 5%), and the deadline with fines at a multiple "
    "of the market's December average price. Prints a report per entity and sector; "
    "--json and --csv for machines, --chart for a PNG per sector.")
EXAMPLE = Path(__file__).resolve().parent / "examples" / "compliance-2024.toml"
SECTORS = ("power", "steel", "cement", "aluminium")


class ScenarioError(ValueError):
    """A scenario that cannot be run: the message names the problem."""


# The keys a scenario may have, at the top and in each of its tables: anything else is a
# typo, refused (as market files refuse unknown keys) rather than silently ignored.
_SCENARIO_KEYS = frozenset({
    "year", "multiple", "deadline_price", "pre_allocation_share", "adjustment", "rules",
    "december_trades", "orders", "entities", "restatements"
})
_ENTITY_KEYS = frozenset({
    "name", "sector", "region", "intensity", "units", "prior_emissions", "emissions", "quality",
    "verifier", "months", "surrender_share", "ccer"
})
_UNIT_KEYS = frozenset({"type", "electricity_mwh", "heat_gj", "load", "emissions"})
_ADJUSTMENT_KEYS = frozenset({"yearly", "cap_share", "regions"})
_TRADE_KEYS = frozenset({"price", "qty"})
_RESTATEMENT_KEYS = frozenset({"entity", "emissions", "quality", "verifier", "months"})
# The parameters of the shipped rules beside their ``rule`` key; a rule registered
# elsewhere (``@sector_rule``) takes its parameters unchecked here.
_RULE_PARAMETERS: dict[str, frozenset[str]] = {
    "power_benchmark": frozenset({"electricity", "heat", "shortfall_cap"}),
    "intensity_benchmark": frozenset(),
    "verified_emissions": frozenset(),
}
# The accounts the runner itself trades December through: no entity may take their names.
_MARKET_ACCOUNTS = ("market-seller", "market-buyer")
# The most tonnes the registry records in one figure (it refuses 2**62 and above).
_MOST_TONNES = (1 << 62) - 1
# ``--chart`` writes a PNG (its metadata is PNG's, without the writer's version, so that
# a chart is the same whatever matplotlib wrote it): the file's suffix must say so.
CHART_SUFFIX = ".png"


def _refuse_unknown_keys(table: Mapping[str, object], known: frozenset[str], where: str) -> None:
    """Raise ``ScenarioError`` if *table* has a key outside *known* (a typo, most likely)."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _table(value: object, where: str) -> dict[str, Any]:
    """Return *value* if it is a TOML table, else raise ``ScenarioError``."""
    if not isinstance(value, dict):
        raise ScenarioError(f"{where} must be a table")
    return value


def _tables(value: object, where: str) -> list[dict[str, Any]]:
    """Return *value* if it is an array of TOML tables (``[[...]]``), else raise."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ScenarioError(f"{where} must be an array of tables ([[...]])")
    return value


def _present(value: object, where: str) -> None:
    """Raise ``ScenarioError`` if *value* is missing (``None``: TOML has no null, so a key
    read with ``get`` is ``None`` only when it is not there)."""
    if value is None:
        raise ScenarioError(f"{where} is missing")


def _tonnes(value: object, where: str, least: int = 0) -> int:
    """Return *value*, a whole number of tonnes from *least* to ``_MOST_TONNES``."""
    _present(value, where)
    if type(value) is not int or not least <= value <= _MOST_TONNES:
        raise ScenarioError(
            f"{where} must be a whole number of tonnes from {least} to {_MOST_TONNES:,}, "
            f"not {value!r}")
    return value


def _decimal(value: object, where: str, least: Fraction = Fraction(0),
             most: Fraction | None = None, above_least: bool = False) -> Fraction:
    """Return *value* (a decimal string or a whole number, never a float) as an exact
    ``Fraction`` within *least* (excluded with *above_least*) and *most*; raise
    ``ScenarioError`` naming *where* otherwise."""
    _present(value, where)
    if isinstance(value, float):
        raise ScenarioError(f'{where}: {value!r} is a float; give a decimal string ("{value}")')
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ScenarioError(f"{where} must be a decimal string, not {value!r}")
    try:
        number = exact(value, where)
    except AllocationError:
        raise ScenarioError(f"{where}: {value!r} is not a number") from None
    too_low = number <= least if above_least else number < least
    if too_low or (most is not None and number > most):
        if most is not None:
            bounds = f"from {least} to {most}"
        else:
            bounds = f"above {least}" if above_least else f"at least {least}"
        raise ScenarioError(f"{where} must be {bounds}, not {value!r}")
    return number


def _one_of(value: object, choices: tuple[str, ...] | frozenset[str], where: str) -> str:
    """Return *value* if it is one of *choices*, else raise ``ScenarioError``."""
    _present(value, where)
    if not isinstance(value, str) or value not in choices:
        raise ScenarioError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _text(value: object, where: str) -> str:
    """Return *value* if it is a string, else raise ``ScenarioError``."""
    _present(value, where)
    if not isinstance(value, str):
        raise ScenarioError(f"{where} must be a string, not {value!r}")
    return value


def load_scenario(path: str | Path) -> dict:
    """Read and check the scenario TOML at *path*; raise ``ScenarioError`` naming the file
    and the key of the first problem (an unknown key, a value of the wrong type or out of
    range), so that a scenario that loads runs without the engine refusing a step."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    _refuse_unknown_keys(data, _SCENARIO_KEYS, f"{path}")
    if type(data.get("year")) is not int:
        raise ScenarioError(f"{path}: 'year' (the compliance year) is required")
    multiple = data.get("multiple", FINE_MULTIPLE)
    if type(multiple) is not int or multiple not in FINE_MULTIPLES:
        raise ScenarioError(f"{path}: 'multiple' (the fine multiple) must be a whole number "
                            f"{FINE_MULTIPLES[0]} to {FINE_MULTIPLES[-1]}, not {multiple!r}")
    price = data.get("deadline_price")
    if price is not None:
        if not isinstance(price, str):
            raise ScenarioError(f'{path}: deadline_price is a decimal string ("98.00" CNY/t)')
        number = _decimal(price, f"{path}: 'deadline_price'", above_least=True)
        if number * 100 != int(number * 100):  # on the fen, as the registry takes it
            raise ScenarioError(f"{path}: 'deadline_price' {price!r} is not on the fen (0.01)")
    _decimal(data.get("pre_allocation_share", "0.70"), f"{path}: 'pre_allocation_share'",
             most=Fraction(1))
    if "orders" in data:
        _text(data["orders"], f"{path}: 'orders' (an order file)")
    _check_adjustment(data.get("adjustment", {}), path)
    _check_rules(data.get("rules", {}), path)
    for number, trade in enumerate(_tables(data.get("december_trades", []),
                                           f"{path}: 'december_trades'"), 1):
        where = f"{path}: december trade {number}"
        _refuse_unknown_keys(trade, _TRADE_KEYS, where)
        _decimal(trade.get("price"), f"{where}: 'price'", above_least=True)
        _tonnes(trade.get("qty"), f"{where}: 'qty'", least=1)
    entities = data.get("entities")
    if not isinstance(entities, list) or not entities:
        raise ScenarioError(f"{path}: no [[entities]]")
    names: set[str] = set()
    for number, entity in enumerate(_tables(entities, f"{path}: 'entities'"), 1):
        _check_entity(entity, f"{path}: entity {number} ({entity.get('name', '?')})", names)
        names.add(entity["name"])
    for number, restatement in enumerate(_tables(data.get("restatements", []),
                                                 f"{path}: 'restatements'"), 1):
        where = f"{path}: restatement {number}"
        _refuse_unknown_keys(restatement, _RESTATEMENT_KEYS, where)
        if restatement.get("entity") not in names:
            raise ScenarioError(f"{where}: unknown entity {restatement.get('entity')!r}")
        _tonnes(restatement.get("emissions"), f"{where}: 'emissions'")
        _one_of(restatement.get("quality", "revised"), QUALITIES, f"{where}: 'quality'")
        if "verifier" in restatement:
            _text(restatement["verifier"], f"{where}: 'verifier'")
        months = restatement.get("months", 12)
        if type(months) is not int or not 0 <= months <= 12:
            raise ScenarioError(f"{where}: 'months' (monthly logs complete) must be 0 to 12")
    data["_base"] = Path(path).resolve().parent
    return data


def _check_entity(entity: dict[str, Any], where: str, names: set[str]) -> None:
    """Check one ``[[entities]]`` table (*names*: the entities before it); raise
    ``ScenarioError`` naming the entity and the key."""
    _refuse_unknown_keys(entity, _ENTITY_KEYS, where)
    name = entity.get("name")
    if not isinstance(name, str) or not name or name in names:
        raise ScenarioError(f"{where}: a unique 'name' is required")
    if name.startswith("@") or name in _MARKET_ACCOUNTS or name.startswith("market-buyer-"):
        raise ScenarioError(f"{where}: 'name' {name!r} is reserved (the exchange's "
                            f"'@' accounts and {', '.join(_MARKET_ACCOUNTS)}, "
                            "market-buyer-N)")
    if entity.get("sector") not in SECTORS:
        raise ScenarioError(f"{where}: sector must be one of {', '.join(SECTORS)}")
    if "region" in entity:
        _text(entity["region"], f"{where}: 'region'")
    for key in ("prior_emissions", "emissions"):
        _tonnes(entity.get(key), f"{where}: '{key}'")
    if entity["sector"] == "power" and not entity.get("units"):
        raise ScenarioError(f"{where}: a power entity needs its 'units'")
    for number, unit in enumerate(_tables(entity.get("units", []), f"{where}: 'units'"), 1):
        _check_unit(unit, f"{where}: unit {number}")
    if entity["sector"] != "power" and "intensity" not in entity:
        raise ScenarioError(f"{where}: an industrial entity needs its 'intensity'")
    if "intensity" in entity:
        _decimal(entity["intensity"], f"{where}: 'intensity'", above_least=True)
    months = entity.get("months", 12)
    if type(months) is not int or not 0 <= months <= 12:
        raise ScenarioError(f"{where}: 'months' (monthly logs complete) must be 0 to 12")
    _one_of(entity.get("quality", "measured"), QUALITIES, f"{where}: 'quality'")
    if "verifier" in entity:
        _text(entity["verifier"], f"{where}: 'verifier'")
    _decimal(entity.get("surrender_share", 1), f"{where}: 'surrender_share'", most=Fraction(1))
    _tonnes(entity.get("ccer", 0), f"{where}: 'ccer'")


def _check_unit(unit: dict[str, Any], where: str) -> None:
    """Check one generating unit of a power entity; raise ``ScenarioError``."""
    _refuse_unknown_keys(unit, _UNIT_KEYS, where)
    _one_of(unit.get("type"), tuple(POWER_BENCHMARKS), f"{where}: 'type'")
    _decimal(unit.get("electricity_mwh"), f"{where}: 'electricity_mwh'")
    _decimal(unit.get("heat_gj", 0), f"{where}: 'heat_gj'")
    _decimal(unit.get("load", 1), f"{where}: 'load'", most=Fraction(1))
    if unit.get("emissions") is not None:
        _tonnes(unit["emissions"], f"{where}: a unit's 'emissions'")


def _check_adjustment(adjustment: object, path: str | Path) -> None:
    """Check ``[adjustment]``: the yearly factor, the sector cap and the regional factors,
    none negative; raise ``ScenarioError``."""
    settings = _table(adjustment, f"{path}: [adjustment]")
    _refuse_unknown_keys(settings, _ADJUSTMENT_KEYS, f"{path}: [adjustment]")
    for key in ("yearly", "cap_share"):
        _decimal(settings.get(key, 1), f"{path}: adjustment.{key}")
    regions = _table(settings.get("regions", {}), f"{path}: [adjustment.regions]")
    for region, factor in regions.items():
        _decimal(factor, f"{path}: adjustment.regions.{region}")


def _check_rules(rules: object, path: str | Path) -> None:
    """Check ``[rules.SECTOR]``: a known sector, a known rule and, for the shipped rules,
    their parameters (benchmarks not negative, a shortfall cap within 0..1)."""
    if not isinstance(rules, dict) or not all(isinstance(r, dict) for r in rules.values()):
        raise ScenarioError(f"{path}: [rules.SECTOR] tables name each sector's rule")
    for sector, rule in rules.items():
        if sector not in SECTORS:
            raise ScenarioError(f"{path}: rules for unknown sector {sector!r}")
        if rule.get("rule") not in SECTOR_RULES:
            raise ScenarioError(
                f"{path}: rules.{sector}: rule must be one of {', '.join(SECTOR_RULES)}")
        parameters = _RULE_PARAMETERS.get(rule["rule"])
        if parameters is None:
            continue
        _refuse_unknown_keys(rule, parameters | {"rule"}, f"{path}: [rules.{sector}]")
        for key, known in (("electricity", POWER_BENCHMARKS), ("heat", HEAT_BENCHMARKS)):
            where = f"{path}: rules.{sector}.{key}"
            benchmarks = _table(rule.get(key, {}), where)
            _refuse_unknown_keys(benchmarks, frozenset(known), where)
            for name, value in benchmarks.items():
                _decimal(value, f"{where}.{name}")
        if "shortfall_cap" in rule:
            _decimal(rule["shortfall_cap"], f"{path}: rules.{sector}.shortfall_cap",
                     most=Fraction(1))


def _plan(data: dict, emissions: dict[str, int]) -> dict[str, int]:
    """Each entity's final allocation for the verified *emissions*: its sector's rule
    (``[rules.SECTOR]``, defaults ``exchange.compliance.allocation.DEFAULT_RULES``), then the
    regional and yearly factors under the sector cap (``[adjustment]``)."""
    entities = []
    for e in data["entities"]:
        units = tuple(
            PowerUnit(u["type"], str(u["electricity_mwh"]), str(u.get("heat_gj", 0)),
                      str(u.get("load", 1)), None if u.get("emissions") is None else str(
                          u["emissions"])) for u in e.get("units", ()))
        intensity = exact(str(e["intensity"]), "intensity") if "intensity" in e else None
        entities.append(
            Entity(e["name"], e["sector"], emissions[e["name"]], e.get("region", ""), units,
                   intensity))
    settings = data.get("adjustment", {})
    adjustment = Adjustment(
        regional={
            k: exact(str(v))
            for k, v in settings.get("regions", {}).items()
        }, yearly=exact(str(settings.get("yearly", 1))),
        cap_share=exact(str(settings.get("cap_share", 1))))
    return allocate(entities, data.get("rules", {}), adjustment, data["year"])


def run_cycle(data: dict) -> dict:
    """Run the scenario *data* (from ``load_scenario``) through the engine; return the
    report ``{"entities": [...], "sectors": [...], "year", "stats"}``."""
    started = time.perf_counter()
    year = data["year"]
    market = default_market()
    vintage = next((s for s, i in market.instruments.items() if i.of_year(year) and not i.offset),
                   None)
    offset = next((s for s, i in market.instruments.items() if i.offset), None)
    if vintage is None:
        raise ScenarioError(f"the market lists no allowance of vintage {year}")
    engine = Engine(market, ledger=True)
    rejected: dict[str, int] = {}  # reason code -> count, of the order file's commands

    def submit(command: AnyCommand, step: str | None = None) -> list[Event]:
        """Execute *command*; a rejection of a scenario's own *step* (an entity's, a
        December trade's) refuses the whole scenario, naming the step and the reason,
        rather than leaving it out of the report. The order file's rejections (*step*
        None) are market activity: counted in the stats."""
        events = engine.execute(command)
        for event in events:
            if type(event) is CommandRejected:
                if step is not None:
                    raise ScenarioError(f"{step} was refused: {event.reason}")
                rejected[str(event.reason)] = rejected.get(str(event.reason), 0) + 1
        return events

    entities = data["entities"]
    share = exact(str(data.get("pre_allocation_share", "0.70")))
    pre: dict[str, int] = {}
    for entity in entities:
        name = entity["name"]
        submit(OpenAccount(account=name, kind="covered"), f"entity {name!r}: opening its account")
        pre[name] = pre_allocation(entity["prior_emissions"], share)
        submit(
            AllocateAllowances(account=name, instrument=vintage, year=year, qty=pre[name],
                               stage="pre"), f"entity {name!r}: its pre-allocation")
        if entity.get("ccer") and offset:
            submit(IssueAllowances(account=name, instrument=offset, qty=entity["ccer"]),
                   f"entity {name!r}: issuing its CCER")

    if data.get("orders"):
        try:
            for command in read_order_file(data["_base"] / data["orders"]):
                submit(command)
        except OrderFileError as exc:
            raise ScenarioError(str(exc)) from None
    # The first business day from 11 December, 10:00 in the market's time zone (02:00
    # UTC in Beijing), inside the default market's morning session.
    schedule = market.schedule
    day = days_from_civil(year + 1, 12, 11)
    while schedule is not None and not schedule.is_business_day(day):
        day += 1
    december = local_day_start_ns(day, schedule) + 10 * 3600 * 10**9
    for number, trade in enumerate(data.get("december_trades", []), 1):
        qty, price = int(trade["qty"]), str(trade["price"])
        step = f"december trade {number} ({qty} at {price})"
        # a buyer a trade, as the market's many: one would soon pass a position limit
        buyer = "market-buyer" if number == 1 else f"market-buyer-{number}"
        submit(IssueAllowances(account="market-seller", instrument=vintage, qty=qty), step)
        submit(
            Deposit(account=buyer, currency="CNY",
                    amount=str(exact(price) * qty * 2 // 1)), step)
        for side, account in (("sell", "market-seller"), ("buy", buyer)):
            submit(
                PlaceOrder(order_id=f"december-{number}-{side}", account=account,
                           instrument=vintage, side=side, price=price, qty=qty, ts=december),
                step)

    emissions = {}
    for entity in entities:
        emissions[entity["name"]] = entity["emissions"]
        submit(
            RecordEmissions(account=entity["name"], year=year, qty=entity["emissions"],
                            quality=entity.get("quality", "measured"),
                            verifier=entity.get("verifier"), months=entity.get("months", 12)),
            f"entity {entity['name']!r}: its verified emissions")

    def true_up(final: dict[str, int], before: dict[str, int]) -> None:
        """Send a final allocation to each entity whose figure changed: the registry
        issues the difference from what it issued, or claws the excess back."""
        for name, qty in final.items():
            if qty != before.get(name):
                submit(
                    AllocateAllowances(account=name, instrument=vintage, year=year, qty=qty,
                                       stage="final"), f"entity {name!r}: its final allocation")

    try:
        final = _plan(data, emissions)
        true_up(final, {})
        # A restatement (a revised record after verification) recomputes the plan: the
        # restated entity's allocation and, through BP, its sector's; each change is
        # issued or clawed back.
        # A restatement revises the figure: the verifier and the months of monthly logs
        # stay those of the record it restates unless it gives its own.
        records = {e["name"]: (e.get("verifier"), e.get("months", 12)) for e in entities}
        for restatement in data.get("restatements", []):
            name = restatement["entity"]
            emissions[name] = restatement["emissions"]
            verifier, months = records[name]
            records[name] = (restatement.get("verifier", verifier),
                             restatement.get("months", months))
            submit(
                RecordEmissions(account=name, year=year, qty=restatement["emissions"],
                                quality=restatement.get("quality", "revised"),
                                verifier=records[name][0], months=records[name][1]),
                f"entity {name!r}: its restated emissions")
        if data.get("restatements"):
            final, before = _plan(data, emissions), final
            true_up(final, before)
    except (AllocationError, KeyError, TypeError) as exc:
        raise ScenarioError(f"allocation: {exc}") from None

    for entity in entities:
        name = entity["name"]
        obligation = emissions[name]
        target = int(exact(str(entity.get("surrender_share", 1))) * obligation)
        holding = engine.ledger.holding(name, vintage)
        give = min(target, holding.available if holding else 0)
        if give:
            submit(SurrenderAllowances(account=name, instrument=vintage, qty=give, year=year),
                   f"entity {name!r}: surrendering allowances")
        # CCER within the 5% cap, of what it was issued and still holds (an order file
        # may have moved some)
        offsets = engine.ledger.holding(name, offset) if offset else None
        rest = min(target - give, obligation // 20, entity.get("ccer", 0),
                   offsets.available if offsets else 0)
        if rest > 0 and offset:
            submit(SurrenderAllowances(account=name, instrument=offset, qty=rest, year=year),
                   f"entity {name!r}: surrendering CCER")

    multiple = data.get("multiple", FINE_MULTIPLE)
    events = submit(
        ComplianceDeadline(year=year, multiple=multiple, price=data.get("deadline_price")))
    if type(events[-1]) is CommandRejected:
        raise ScenarioError(f"the deadline was refused: {events[-1].reason}")
    engine.check()
    passed = next(e for e in events if type(e) is DeadlinePassed)
    sector_of = {e["name"]: e["sector"] for e in entities}
    allocations = engine.ledger.registry.allocations  # what the registry issued, net
    rows = [{
        "entity": e.account,
        "sector": sector_of[e.account],
        "obligation": e.obligation,
        "allocated": allocations[(e.account, year)].issued,
        "surrendered_allowances": e.surrendered_allowances,
        "surrendered_ccer": e.surrendered_offsets,
        "shortfall": e.shortfall,
        "fine": e.fine,
        "status": e.status
    } for e in events if type(e) is ComplianceAssessed]
    sectors = []
    for sector in SECTORS:
        members = [r for r in rows if r["sector"] == sector]
        if not members:
            continue
        total = {
            key: sum(r[key] for r in members)
            for key in ("obligation", "allocated", "surrendered_allowances", "surrendered_ccer",
                        "shortfall")
        }
        sectors.append({
            "sector": sector,
            "entities": len(members),
            **total, "fine": format_cash("CNY", sum(r["fine"] for r in members)),
            "short": sum(r["status"] == "short" for r in members)
        })
    for row in rows:
        row["fine"] = format_cash("CNY", row["fine"])
    return {
        "year": year,
        "entities": rows,
        "sectors": sectors,
        "average_price": format_cash("CNY", passed.average_price or 0),
        "multiple": multiple,
        # the price the fines used, per tonne: the operator's or the December average
        "price": None if passed.price is None else format_cash("CNY", passed.price),
        "price_source": passed.price_source,
        "stats": {
            "commands": engine.accepted + engine.rejected,
            "rejected": rejected,
            "seconds": round(time.perf_counter() - started, 3),
            "state_hash": engine.state_hash()
        }
    }


# --- the shipped example ---------------------------------------------------------------------


def example_scenario(seed: int = 2024, entities: int = 300) -> str:
    """Return the TOML of a realistic example year (*entities* over the four sectors).

    Deterministic: ``gateway/tools/examples/compliance-2024.toml`` is this function's output.
    """
    rng = random.Random(seed)
    lines = [
        "# carbonx comply example: compliance year 2024, generated by",
        "# gateway.tools.comply.example_scenario(seed=2024, entities=300). Emissions in tCO2e.",
        "year = 2024", "multiple = 5", 'pre_allocation_share = "0.70"', "", "[adjustment]",
        'yearly = "1.00"',
        "# the sector total may not grow by more than 1% through the regional factors",
        'cap_share = "1.01"', "", "[adjustment.regions]", 'west = "1.03"', 'northeast = "1.02"',
        'east = "0.99"', "",
        "# each sector's allocation rule (exchange.compliance.allocation.SECTOR_RULES), with its",
        "# parameters; the 2024 power benchmarks are the defaults, written out here",
        "[rules.power]", 'rule = "power_benchmark"', 'shortfall_cap = "0.20"', "",
        "[rules.power.electricity]", 'coal_large = "0.7910"', 'coal_small = "0.8049"',
        'coal_unconventional = "0.8244"', 'gas = "0.3288"', "", "[rules.power.heat]",
        'coal = "0.1033"', 'gas = "0.0533"', "",
        "# 2024 was the first year of steel, cement and aluminium: allocation equals",
        "# verified emissions, which no regional or yearly factor moves; from 2025 they take",
        '# the intensity rule (rule = "intensity_benchmark"). These are the 2024 defaults.',
        "[rules.steel]", 'rule = "verified_emissions"', "", "[rules.cement]",
        'rule = "verified_emissions"', "", "[rules.aluminium]", 'rule = "verified_emissions"', "",
        "# the market's trades in December 2025, the month before the deadline: their average",
        "# prices the fines (deadline_price = \"98.00\" would set the operator's reference",
        "# price instead, as when nothing traded)", "[[december_trades]]", 'price = "97.50"',
        "qty = 40000", "", "[[december_trades]]", 'price = "98.20"', "qty = 60000", "",
        "# A power entity lists its units: type (coal_large, coal_small, coal_unconventional,",
        "# gas), electricity_mwh, heat_gj, load (the load factor corrects conventional coal",
        "# only) and, for a gas unit beside other units, its own verified emissions",
        "# (emissions = 380000): each gas unit is topped up to its own emissions. A unit alone",
        "# takes the entity's.", ""
    ]
    regions = ("east", "west", "north", "northeast", "south")
    shares = (("power", 0.55), ("steel", 0.2), ("cement", 0.15), ("aluminium", 0.1))
    counts = {s: max(1, round(entities * w)) for s, w in shares}
    counts["power"] += entities - sum(counts.values())
    intensity = {"steel": (1.6, 2.1), "cement": (0.78, 0.92), "aluminium": (1.3, 1.9)}
    restate: list[tuple[str, int]] = []
    for sector, count in counts.items():
        for n in range(count):
            lines += [
                "[[entities]]", f'name = "{sector[:3]}-{n + 1:04d}"', f'sector = "{sector}"',
                f'region = "{rng.choice(regions)}"'
            ]
            if sector == "power":
                unit_type = rng.choices(("coal_large", "coal_small", "gas"), (6, 3, 1))[0]
                mwh = rng.randrange(800_000, 6_000_000, 1000)
                heat = rng.randrange(0, 2_000_000, 1000)
                load = rng.choice(("0.55", "0.60", "0.62", "0.70", "0.75", "0.80"))
                factor = {"coal_large": 0.80, "coal_small": 0.82, "gas": 0.36}[unit_type]
                emissions = int(mwh * factor * rng.uniform(0.95, 1.08) + heat *
                                (0.1 if unit_type != "gas" else 0.05))
                lines.append(f'units = [{{ type = "{unit_type}", electricity_mwh = "{mwh}", '
                             f'heat_gj = "{heat}", load = "{load}" }}]')
            else:
                low, high = intensity[sector]
                lines.append(f'intensity = "{rng.uniform(low, high):.3f}"')
                emissions = rng.randrange(200_000, 8_000_000)
            prior = int(emissions * rng.uniform(0.9, 1.1))
            quality = rng.choices(("measured", "default", "estimated", "revised"), (7, 1, 1, 1))[0]
            surrender = rng.choices(("1.0", "0.97", "0.9", "0.75"), (85, 7, 5, 3))[0]
            months = 12 if quality == "measured" else rng.choice((9, 10, 11, 12))
            lines += [
                f"prior_emissions = {prior}", f"emissions = {emissions}", f'quality = "{quality}"',
                f'verifier = "V{rng.randrange(1, 13):02d}"', f"months = {months}",
                f'surrender_share = "{surrender}"',
                f"ccer = {rng.choice((0, 0, 0, emissions // 40, emissions // 20))}", ""
            ]
            restate.append((f"{sector[:3]}-{n + 1:04d}", emissions))
    lines += [
        "# records revised after verification: each recomputes the allocation, and",
        "# the registry issues or claws back the difference"
    ]
    for name, emissions in rng.sample(restate, max(1, entities // 100)):
        lines += [
            "[[restatements]]", f'entity = "{name}"',
            f"emissions = {int(emissions * rng.uniform(0.96, 1.06))}", 'quality = "revised"', ""
        ]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", nargs="?", metavar="SCENARIO.toml",
        help="the scenario to run (see gateway/tools/examples/compliance-2024.toml)")
    parser.add_argument("--example", action="store_true",
                        help="run the shipped example: 300 entities over the four sectors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--csv", metavar="OUT", help="write one CSV row per entity")
    parser.add_argument(
        "--chart", metavar="OUT.png",
        help="a PNG (a .png file) of each sector's allocation, emissions and surrender "
        "(needs matplotlib: pip install -e '.[bench]')")


def run(args: argparse.Namespace) -> int:

    if bool(args.scenario) == bool(args.example):
        raise UsageError("give a SCENARIO file or --example (one of them)")
    if args.chart:  # before any work: a chart that cannot be written is known now
        if Path(args.chart).suffix.lower() != CHART_SUFFIX:
            raise UsageError(f"--chart {args.chart}: the chart is a PNG; give a "
                             f"{CHART_SUFFIX} file")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(_NO_MATPLOTLIB)
    path = EXAMPLE if args.example else args.scenario
    try:
        data = load_scenario(path)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    inputs: list[tuple[str, str | Path]] = [("the scenario", path)]
    if "orders" in data:
        inputs.append(("the scenario's order file", data["_base"] / data["orders"]))
    check_outputs(inputs, {option: getattr(args, option) for option in ("csv", "chart")
                           if getattr(args, option)})
    try:
        report = run_cycle(data)
    except ScenarioError as exc:  # a step the engine refused: name the file too
        raise UsageError(f"{path}: {exc}") from None
    try:
        if args.csv:
            with open(args.csv, "w", newline="", encoding="utf-8") as out:
                # each row says the fine's multiple too, after the pinned columns
                writer = csv.DictWriter(out, fieldnames=[*report["entities"][0], "multiple"])
                writer.writeheader()
                writer.writerows({**row, "multiple": report["multiple"]}
                                 for row in report["entities"])
        if args.chart:
            _chart(report, args.chart)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    if args.json:
        print(
            json.dumps({
                "entities": report["entities"],
                "sectors": report["sectors"],
                "multiple": report["multiple"],
                "price": report["price"],
                "price_source": report["price_source"]
            }))
        return 0
    source = ("the operator's reference price" if report["price_source"] == "operator" else
              "the December average")
    print(f"compliance year {report['year']}: {len(report['entities'])} entities, "
          f"fines at {report['multiple']} x {report['price'] or '-'} CNY/t ({source})")
    print(f"  {'sector':<10}{'entities':>9}{'obligation':>14}{'allocated':>14}"
          f"{'surrendered':>14}{'ccer':>10}{'short':>7}{'shortfall':>12}{'fines CNY':>18}")
    for row in report["sectors"]:
        print(f"  {row['sector']:<10}{row['entities']:>9,}{row['obligation']:>14,}"
              f"{row['allocated']:>14,}{row['surrendered_allowances']:>14,}"
              f"{row['surrendered_ccer']:>10,}{row['short']:>7,}{row['shortfall']:>12,}"
              f"{row['fine']:>18}")
    stats = report["stats"]
    rejections = ", ".join(f"{reason}: {count:,}" for reason, count in stats["rejected"].items())
    print(f"  {stats['commands']:,} commands through the engine in {stats['seconds']} s; "
          f"rejections {rejections or 'none'}")
    return 0


_NO_MATPLOTLIB = "--chart needs matplotlib: pip install -e '.[bench]'"


def _chart(report: dict, path: str) -> None:
    """Write a PNG bar chart of each sector's allocation, emissions and surrender to
    *path* (a ``.png`` file: ``run`` checks it first)."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(_NO_MATPLOTLIB) from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    sectors = report["sectors"]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    width = 0.27
    for offset, key, label in ((-width, "allocated", "allocated"), (0, "obligation",
                                                                    "verified emissions"),
                               (width, "surrendered_allowances", "surrendered allowances")):
        ax.bar([i + offset for i in range(len(sectors))], [row[key] / 1e6 for row in sectors],
               width, label=label)
    ax.set_xticks(range(len(sectors)), [row["sector"] for row in sectors])
    ax.set_ylabel("million tCO2e")
    ax.set_title(f"Compliance year {report['year']} by sector")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
