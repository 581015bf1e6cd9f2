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
import json
import random
import time
import tomllib
from pathlib import Path

from exchange import Engine, default_market
from exchange.commands import (AllocateAllowances, ComplianceDeadline, Deposit, IssueAllowances,
                               OpenAccount, PlaceOrder, RecordEmissions, SurrenderAllowances)
from exchange.compliance.allocation import (SECTOR_RULES, Adjustment, AllocationError, Entity,
                                            PowerUnit, allocate, exact, pre_allocation)
from exchange.compliance.registry import deadline_ns
from exchange.events import CommandRejected, ComplianceAssessed, DeadlinePassed
from exchange.market import format_cash
from exchange.orderfile import OrderFileError, read_order_file
from gateway.errors import UsageError

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
_DAY_NS = 86_400 * 10**9


class ScenarioError(ValueError):
    """A scenario that cannot be run: the message names the problem."""


def load_scenario(path: str | Path) -> dict:
    """Read and check the scenario TOML at *path*; raise ``ScenarioError``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not isinstance(data.get("year"), int):
        raise ScenarioError(f"{path}: 'year' (the compliance year) is required")
    entities = data.get("entities")
    if not isinstance(entities, list) or not entities:
        raise ScenarioError(f"{path}: no [[entities]]")
    names = set()
    for number, entity in enumerate(entities, 1):
        where = f"{path}: entity {number} ({entity.get('name', '?')})"
        if not entity.get("name") or entity["name"] in names:
            raise ScenarioError(f"{where}: a unique 'name' is required")
        names.add(entity["name"])
        if entity.get("sector") not in SECTORS:
            raise ScenarioError(f"{where}: sector must be one of {', '.join(SECTORS)}")
        for key in ("prior_emissions", "emissions"):
            if not isinstance(entity.get(key), int) or entity[key] < 0:
                raise ScenarioError(f"{where}: '{key}' must be a whole number of tonnes")
        if entity["sector"] == "power" and not entity.get("units"):
            raise ScenarioError(f"{where}: a power entity needs its 'units'")
        for unit in entity.get("units", ()):
            own = unit.get("emissions") if isinstance(unit, dict) else None
            if own is not None and (type(own) is not int or own < 0):
                raise ScenarioError(
                    f"{where}: a unit's 'emissions' must be a whole number of tonnes")
        if entity["sector"] != "power" and "intensity" not in entity:
            raise ScenarioError(f"{where}: an industrial entity needs its 'intensity'")
        months = entity.get("months", 12)
        if type(months) is not int or not 0 <= months <= 12:
            raise ScenarioError(f"{where}: 'months' (monthly logs complete) must be 0 to 12")
    price = data.get("deadline_price")
    if price is not None and not isinstance(price, str):
        raise ScenarioError(f'{path}: deadline_price is a decimal string ("98.00" CNY/t)')
    rules = data.get("rules", {})
    if not isinstance(rules, dict) or not all(isinstance(r, dict) for r in rules.values()):
        raise ScenarioError(f"{path}: [rules.SECTOR] tables name each sector's rule")
    for sector, rule in rules.items():
        if sector not in SECTORS:
            raise ScenarioError(f"{path}: rules for unknown sector {sector!r}")
        if rule.get("rule") not in SECTOR_RULES:
            raise ScenarioError(
                f"{path}: rules.{sector}: rule must be one of {', '.join(SECTOR_RULES)}")
    for number, restatement in enumerate(data.get("restatements", []), 1):
        if restatement.get("entity") not in names:
            raise ScenarioError(
                f"{path}: restatement {number}: unknown entity {restatement.get('entity')!r}")
        if not isinstance(restatement.get("emissions"), int) or restatement["emissions"] < 0:
            raise ScenarioError(
                f"{path}: restatement {number}: 'emissions' must be a whole number of tonnes")
    data["_base"] = Path(path).resolve().parent
    return data


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
    vintage = next((s for s, i in market.instruments.items() if i.vintage == year and not i.offset),
                   None)
    offset = next((s for s, i in market.instruments.items() if i.offset), None)
    if vintage is None:
        raise ScenarioError(f"the market lists no allowance of vintage {year}")
    engine = Engine(market, ledger=True)
    rejected: dict[str, int] = {}

    def submit(command) -> list:
        events = engine.execute(command)
        for event in events:
            if type(event) is CommandRejected:
                rejected[event.reason] = rejected.get(event.reason, 0) + 1
        return events

    entities = data["entities"]
    share = exact(str(data.get("pre_allocation_share", "0.70")))
    pre: dict[str, int] = {}
    for entity in entities:
        name = entity["name"]
        submit(OpenAccount(account=name, kind="covered"))
        pre[name] = pre_allocation(entity["prior_emissions"], share)
        submit(
            AllocateAllowances(account=name, instrument=vintage, year=year, qty=pre[name],
                               stage="pre"))
        if entity.get("ccer") and offset:
            submit(IssueAllowances(account=name, instrument=offset, qty=entity["ccer"]))

    if data.get("orders"):
        try:
            for command in read_order_file(data["_base"] / data["orders"]):
                submit(command)
        except OrderFileError as exc:
            raise ScenarioError(str(exc)) from None
    # 11 December, 10:00 in the market's time zone (02:00 UTC in Beijing), inside the
    # default market's morning session.
    december = deadline_ns(year, market.schedule) - 21 * _DAY_NS + 10 * 3600 * 10**9
    for number, trade in enumerate(data.get("december_trades", []), 1):
        qty, price = int(trade["qty"]), str(trade["price"])
        submit(IssueAllowances(account="market-seller", instrument=vintage, qty=qty))
        submit(
            Deposit(account="market-buyer", currency="CNY",
                    amount=str(exact(price) * qty * 2 // 1)))
        for side, account in (("sell", "market-seller"), ("buy", "market-buyer")):
            submit(
                PlaceOrder(order_id=f"december-{number}-{side}", account=account,
                           instrument=vintage, side=side, price=price, qty=qty, ts=december))

    emissions = {}
    for entity in entities:
        emissions[entity["name"]] = entity["emissions"]
        submit(
            RecordEmissions(account=entity["name"], year=year, qty=entity["emissions"],
                            quality=entity.get("quality", "measured"),
                            verifier=entity.get("verifier"), months=entity.get("months", 12)))

    def true_up(final: dict[str, int], before: dict[str, int]) -> None:
        """Send a final allocation to each entity whose figure changed: the registry
        issues the difference from what it issued, or claws the excess back."""
        for name, qty in final.items():
            if qty != before.get(name):
                submit(
                    AllocateAllowances(account=name, instrument=vintage, year=year, qty=qty,
                                       stage="final"))

    try:
        final = _plan(data, emissions)
        true_up(final, {})
        # A restatement (a revised record after verification) recomputes the plan: the
        # restated entity's allocation and, through BP, its sector's; each change is
        # issued or clawed back.
        for restatement in data.get("restatements", []):
            emissions[restatement["entity"]] = restatement["emissions"]
            submit(
                RecordEmissions(account=restatement["entity"], year=year,
                                qty=restatement["emissions"],
                                quality=restatement.get("quality", "revised"),
                                verifier=restatement.get("verifier")))
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
            submit(SurrenderAllowances(account=name, instrument=vintage, qty=give, year=year))
        rest = min(target - give, obligation // 20, entity.get("ccer", 0))
        if rest > 0 and offset:
            submit(SurrenderAllowances(account=name, instrument=offset, qty=rest, year=year))

    multiple = int(data.get("multiple", 5))
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
        help="a PNG of each sector's allocation, emissions and surrender "
        "(needs matplotlib: pip install -e '.[bench]')")


def run(args: argparse.Namespace) -> int:

    if bool(args.scenario) == bool(args.example):
        raise UsageError("give a SCENARIO file or --example (one of them)")
    try:
        report = run_cycle(load_scenario(EXAMPLE if args.example else args.scenario))
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
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
    print(f"  {stats['commands']:,} commands through the engine in {stats['seconds']} s; "
          f"rejections {stats['rejected'] or 'none'}")
    return 0


def _chart(report: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--chart needs matplotlib: pip install -e '.[bench]'") from None
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
