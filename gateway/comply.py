"""``carbonx comply SCENARIO|--example``: one compliance year, start to end, in the engine.

A scenario (TOML, documented by ``gateway/examples/compliance-2024.toml``) names the
year, the fine multiple, the pre-allocation share, regional and yearly adjustment
factors with a sector cap, the market's December trades (or an order file traded during
the year) and the covered entities: sector, region, prior-year and verified emissions
with their data quality and verifier, the share of their obligation they manage to
surrender, CCER held, and what their sector's rule needs (power units; an intensity for
steel, cement and aluminium).

The cycle, every step a command through the engine's sequenced pipeline with the ledger
on (so holdings are conserved and every step is an event):

1. open each entity's account; pre-allocate (a share of prior-year emissions, rounded
   down) in the year's vintage; issue its CCER;
2. trade: the scenario's order file, if any, and its December trades (of the next
   year: the month whose average price sets the fines);
3. record the verified emissions; compute each entity's allocation by its sector's rule
   (``exchange.allocation``), apply the regional and yearly factors under the sector cap,
   and true up: issue the difference, or claw the excess back;
4. surrender: allowances of the year's vintage up to the entity's share of its
   obligation, then CCER within the 5% cap;
5. the deadline: each entity compliant or short, and fined.

The report: per entity and per sector, obligation, allocation, surrendered allowances
and CCER, shortfall, fine and status. ``--json`` keys are pinned in shared/DESIGN.md.
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
from exchange.allocation import (Adjustment, AllocationError, PowerUnit, adjust, exact,
                                 industrial_allocation, power_allocation, pre_allocation)
from exchange.commands import (ClawBackAllowances, ComplianceDeadline, Deposit,
                               IssueAllowances, OpenAccount, PlaceOrder, RecordEmissions,
                               SurrenderAllowances)
from exchange.events import CommandRejected, ComplianceAssessed, DeadlinePassed
from exchange.orderfile import OrderFileError, read_order_file
from exchange.registry import deadline_ns

from .replay import format_cash

__all__ = ["DESCRIPTION", "add_arguments", "run", "run_cycle", "load_scenario",
           "example_scenario", "EXAMPLE", "SECTORS"]

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
        if entity["sector"] != "power" and "intensity" not in entity:
            raise ScenarioError(f"{where}: an industrial entity needs its 'intensity'")
    data["_base"] = Path(path).resolve().parent
    return data


def _allocations(data: dict) -> dict[str, int]:
    """Each entity's allocation by its sector's rule, then regional and yearly factors."""
    entities = data["entities"]
    base: dict[str, int] = {}
    for entity in entities:
        if entity["sector"] == "power":
            units = [PowerUnit(u["type"], str(u["electricity_mwh"]), str(u.get("heat_gj", 0)),
                               str(u.get("load", 1))) for u in entity["units"]]
            base[entity["name"]] = power_allocation(units, entity["emissions"])
    for sector in SECTORS[1:]:
        members = {e["name"]: (e["emissions"], exact(str(e["intensity"])))
                   for e in entities if e["sector"] == sector}
        if members:
            base.update(industrial_allocation(members))
    settings = data.get("adjustment", {})
    adjustment = Adjustment(
        regional={k: exact(str(v)) for k, v in settings.get("regions", {}).items()},
        yearly=exact(str(settings.get("yearly", 1))),
        cap_share=exact(str(settings.get("cap_share", 1))))
    regions = {e["name"]: e.get("region", "") for e in entities}
    final: dict[str, int] = {}
    for sector in SECTORS:
        members = {e["name"]: base[e["name"]] for e in entities if e["sector"] == sector}
        if members:
            final.update(adjust(members, regions, adjustment))
    return final


def run_cycle(data: dict) -> dict:
    """Run the scenario *data* (from ``load_scenario``) through the engine; return the
    report ``{"entities": [...], "sectors": [...], "year", "stats"}``."""
    started = time.perf_counter()
    year = data["year"]
    market = default_market()
    vintage = next((s for s, i in market.instruments.items()
                    if i.vintage == year and not i.offset), None)
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
        if pre[name]:
            submit(IssueAllowances(account=name, instrument=vintage, qty=pre[name]))
        if entity.get("ccer") and offset:
            submit(IssueAllowances(account=name, instrument=offset, qty=entity["ccer"]))

    if data.get("orders"):
        try:
            for command in read_order_file(data["_base"] / data["orders"]):
                submit(command)
        except OrderFileError as exc:
            raise ScenarioError(str(exc)) from None
    december = deadline_ns(year) - 21 * _DAY_NS + 10 * 3600 * 10**9  # 10 Dec, 10:00 UTC
    for number, trade in enumerate(data.get("december_trades", []), 1):
        qty, price = int(trade["qty"]), str(trade["price"])
        submit(IssueAllowances(account="market-seller", instrument=vintage, qty=qty))
        submit(Deposit(account="market-buyer", currency="CNY",
                       amount=str(exact(price) * qty * 2 // 1)))
        for side, account in (("sell", "market-seller"), ("buy", "market-buyer")):
            submit(PlaceOrder(order_id=f"december-{number}-{side}", account=account,
                              instrument=vintage, side=side, price=price, qty=qty,
                              ts=december))

    for entity in entities:
        submit(RecordEmissions(account=entity["name"], year=year, qty=entity["emissions"],
                               quality=entity.get("quality", "measured"),
                               verifier=entity.get("verifier")))
    try:
        final = _allocations(data)
    except (AllocationError, KeyError, TypeError) as exc:
        raise ScenarioError(f"allocation: {exc}") from None
    for entity in entities:
        name = entity["name"]
        difference = final[name] - pre[name]
        if difference > 0:
            submit(IssueAllowances(account=name, instrument=vintage, qty=difference))
        elif difference < 0:
            submit(ClawBackAllowances(account=name, instrument=vintage, qty=-difference))

    for entity in entities:
        name = entity["name"]
        target = int(exact(str(entity.get("surrender_share", 1))) * entity["emissions"])
        holding = engine.ledger.holding(name, vintage)
        give = min(target, holding.available if holding else 0)
        if give:
            submit(SurrenderAllowances(account=name, instrument=vintage, qty=give, year=year))
        rest = min(target - give, entity["emissions"] // 20, entity.get("ccer", 0))
        if rest > 0 and offset:
            submit(SurrenderAllowances(account=name, instrument=offset, qty=rest, year=year))

    events = submit(ComplianceDeadline(year=year, multiple=int(data.get("multiple", 5))))
    if type(events[-1]) is CommandRejected:
        raise ScenarioError(f"the deadline was refused: {events[-1].reason}")
    engine.check()
    passed = next(e for e in events if type(e) is DeadlinePassed)
    sector_of = {e["name"]: e["sector"] for e in entities}
    rows = [{"entity": e.account, "sector": sector_of[e.account], "obligation": e.obligation,
             "allocated": final[e.account], "surrendered_allowances": e.surrendered_allowances,
             "surrendered_ccer": e.surrendered_offsets, "shortfall": e.shortfall,
             "fine": e.fine, "status": e.status}
            for e in events if type(e) is ComplianceAssessed]
    sectors = []
    for sector in SECTORS:
        members = [r for r in rows if r["sector"] == sector]
        if not members:
            continue
        total = {key: sum(r[key] for r in members)
                 for key in ("obligation", "allocated", "surrendered_allowances",
                             "surrendered_ccer", "shortfall")}
        sectors.append({"sector": sector, "entities": len(members), **total,
                        "fine": format_cash("CNY", sum(r["fine"] for r in members)),
                        "short": sum(r["status"] == "short" for r in members)})
    for row in rows:
        row["fine"] = format_cash("CNY", row["fine"])
    return {"year": year, "entities": rows, "sectors": sectors,
            "average_price": format_cash("CNY", passed.average_price or 0),
            "stats": {"commands": engine.accepted + engine.rejected, "rejected": rejected,
                      "seconds": round(time.perf_counter() - started, 3),
                      "state_hash": engine.state_hash()}}


# --- the shipped example ---------------------------------------------------------------------

def example_scenario(seed: int = 2024, entities: int = 300) -> str:
    """Return the TOML of a realistic example year (*entities* over the four sectors).

    Deterministic: ``gateway/examples/compliance-2024.toml`` is this function's output.
    """
    rng = random.Random(seed)
    lines = ["# carbonx comply example: compliance year 2024, generated by",
             "# gateway.comply.example_scenario(seed=2024, entities=300). Emissions in tCO2e.",
             "year = 2024", "multiple = 5", 'pre_allocation_share = "0.70"', "",
             "[adjustment]", 'yearly = "1.00"',
             '# the sector total may not grow by more than 1% through the regional factors',
             'cap_share = "1.01"', "", "[adjustment.regions]",
             'west = "1.03"', 'northeast = "1.02"', 'east = "0.99"', "",
             "# the market's trades in December 2025, the month before the deadline",
             "[[december_trades]]", 'price = "97.50"', "qty = 40000", "",
             "[[december_trades]]", 'price = "98.20"', "qty = 60000", ""]
    regions = ("east", "west", "north", "northeast", "south")
    shares = (("power", 0.55), ("steel", 0.2), ("cement", 0.15), ("aluminium", 0.1))
    counts = {s: max(1, round(entities * w)) for s, w in shares}
    counts["power"] += entities - sum(counts.values())
    intensity = {"steel": (1.6, 2.1), "cement": (0.78, 0.92), "aluminium": (1.3, 1.9)}
    for sector, count in counts.items():
        for n in range(count):
            lines += ["[[entities]]", f'name = "{sector[:3]}-{n + 1:04d}"',
                      f'sector = "{sector}"', f'region = "{rng.choice(regions)}"']
            if sector == "power":
                unit_type = rng.choices(("coal_large", "coal_small", "gas"), (6, 3, 1))[0]
                mwh = rng.randrange(800_000, 6_000_000, 1000)
                heat = rng.randrange(0, 2_000_000, 1000)
                load = rng.choice(("0.55", "0.60", "0.62", "0.70", "0.75", "0.80"))
                factor = {"coal_large": 0.80, "coal_small": 0.82, "gas": 0.36}[unit_type]
                emissions = int(mwh * factor * rng.uniform(0.95, 1.08)
                                + heat * (0.1 if unit_type != "gas" else 0.05))
                lines.append(f'units = [{{ type = "{unit_type}", electricity_mwh = "{mwh}", '
                             f'heat_gj = "{heat}", load = "{load}" }}]')
            else:
                low, high = intensity[sector]
                lines.append(f'intensity = "{rng.uniform(low, high):.3f}"')
                emissions = rng.randrange(200_000, 8_000_000)
            prior = int(emissions * rng.uniform(0.9, 1.1))
            quality = rng.choices(("measured", "default", "estimated", "revised"), (7, 1, 1, 1))[0]
            surrender = rng.choices(("1.0", "0.97", "0.9", "0.75"), (85, 7, 5, 3))[0]
            lines += [f"prior_emissions = {prior}", f"emissions = {emissions}",
                      f'quality = "{quality}"', f'verifier = "V{rng.randrange(1, 13):02d}"',
                      f'surrender_share = "{surrender}"',
                      f"ccer = {rng.choice((0, 0, 0, emissions // 40, emissions // 20))}", ""]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", metavar="SCENARIO.toml",
                        help="the scenario to run (see gateway/examples/compliance-2024.toml)")
    parser.add_argument("--example", action="store_true",
                        help="run the shipped example: 300 entities over the four sectors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--csv", metavar="OUT", help="write one CSV row per entity")
    parser.add_argument("--chart", metavar="OUT.png",
                        help="a PNG of each sector's allocation, emissions and surrender "
                             "(needs matplotlib: pip install -e '.[bench]')")


def run(args: argparse.Namespace) -> int:
    from .cli import UsageError

    if bool(args.scenario) == bool(args.example):
        raise UsageError("give a SCENARIO file or --example (one of them)")
    try:
        report = run_cycle(load_scenario(EXAMPLE if args.example else args.scenario))
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.csv:
            with open(args.csv, "w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(out, fieldnames=list(report["entities"][0]))
                writer.writeheader()
                writer.writerows(report["entities"])
        if args.chart:
            _chart(report, args.chart)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    if args.json:
        print(json.dumps({"entities": report["entities"], "sectors": report["sectors"]}))
        return 0
    print(f"compliance year {report['year']}: {len(report['entities'])} entities, "
          f"fines at {report['average_price']} CNY/t (the December average)")
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
    from .cli import UsageError
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
    for offset, key, label in ((-width, "allocated", "allocated"),
                               (0, "obligation", "verified emissions"),
                               (width, "surrendered_allowances", "surrendered allowances")):
        ax.bar([i + offset for i in range(len(sectors))],
               [row[key] / 1e6 for row in sectors], width, label=label)
    ax.set_xticks(range(len(sectors)), [row["sector"] for row in sectors])
    ax.set_ylabel("million tCO2e")
    ax.set_title(f"Compliance year {report['year']} by sector")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
