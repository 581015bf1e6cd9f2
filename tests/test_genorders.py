"""``carbonx gen-orders``: profiles, message mix, depth, determinism, replayability.

The carbon profile's claims are checked on the file itself, replayed through the real
engine: nothing rejected (with and without ``--ledger``), about 75% of the year's traded
volume in the last quarter before the deadline, bursts after the open, timestamps in the
listing hours (Beijing time, the default market's schedule) of trading days, an ``eod``
closing each busy day. Files of 20,000 rows are generated once per module and shared.
"""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exchange import (AmendOrder, CancelOrder, EndOfDay, Engine, PlaceOrder, TradeExecuted,
                      default_market)
from benchmarks.data import unlimited_market
from exchange.orderfile import read_order_file
from gateway.cli import main
from gateway.tools.genorders import (CARBON_MIX, HOLIDAYS, KINDS, generate_carbon, generate_mixed,
                                     parse_mix, trading_days)

REPO = Path(__file__).resolve().parents[1]
ROWS = 20_000
EXAMPLE_MIX = "limit=60,cancel=15,amend=5,marketable=10,market=3,ioc=3,fok=2,stop=2"
MIX_TOLERANCE = 0.012  # absolute, on a share; sampling alone is about 0.003 at 20,000 rows
# The default market's trading day, in its time zone (Asia/Shanghai, UTC+08:00).
BEIJING = ZoneInfo("Asia/Shanghai")
AM_OPEN, AM_CLOSE = 9 * 3600 + 1800, 11 * 3600 + 1800
PM_OPEN, PM_CLOSE = 13 * 3600, 15 * 3600
LAST_QUARTER = (calendar.timegm((2025, 10, 1, 0, 0, 0)) - 8 * 3600) * 10**9  # Beijing midnight

# --- helpers ------------------------------------------------------------------------------


def gen(capsys, out, *args) -> None:
    """Run ``carbonx gen-orders ARGS --out OUT`` in-process; it must succeed quietly."""
    capsys.readouterr()
    status = main(["gen-orders", *map(str, args), "--out", str(out)])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""


def replay_summary(capsys, path, *args) -> dict:
    capsys.readouterr()
    status = main(["replay", str(path), "--json", *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def replay(path) -> tuple[Engine, list, Counter, list[tuple[int | None, int]]]:
    """Replay *path* (no ledger) and return the engine, the commands, each command's
    kind (see ``KINDS``; passive or marketable judged against the book it met) and
    ``(command ts, traded qty)`` per trade."""
    commands = read_order_file(path)
    engine = Engine(default_market())
    kinds: Counter = Counter()
    trades = []
    out: list = []
    for command in commands:
        kind = None
        if type(command) is PlaceOrder:
            if command.type == "market":
                kind = "market"
            elif command.type in ("stop", "stop_limit"):
                kind = "stop"
            elif command.tif in ("ioc", "fok"):
                kind = command.tif
            else:
                price = engine.market[command.instrument].tick.to_units(command.price)
                crosses = engine.book(command.instrument).would_cross(command.side == "buy", price)
                kind = "marketable" if crosses else "limit"
        elif type(command) is CancelOrder:
            kind = "cancel"
        elif type(command) is AmendOrder:
            kind = "amend"
        if kind:
            kinds[kind] += 1
        out.clear()
        engine.submit(command, out)
        trades.extend((command.ts, e.qty) for e in out if type(e) is TradeExecuted)
    return engine, commands, kinds, trades


def assert_mix(kinds: Counter, mix: dict[str, int]) -> None:
    total, wanted = sum(kinds.values()), sum(mix.values())
    for kind in KINDS:
        observed, expected = kinds[kind] / total, mix.get(kind, 0) / wanted
        assert abs(observed - expected) <= MIX_TOLERANCE, (kind, observed, expected)


def seconds_of_day(ts: int) -> int:
    """Seconds since midnight in Beijing."""
    local = datetime.fromtimestamp(ts // 10**9, tz=BEIJING)
    return local.hour * 3600 + local.minute * 60 + local.second


def day_of(ts: int) -> date:
    """The calendar day in Beijing."""
    return datetime.fromtimestamp(ts // 10**9, tz=BEIJING).date()


@pytest.fixture(scope="module")
def carbon_file(tmp_path_factory):
    """A 20,000-row carbon file (CSV, default options, seed 1)."""
    path = tmp_path_factory.mktemp("carbon") / "carbon.csv"
    from gateway.tools.genorders import CARBON_HEADER, write_rows

    write_rows(path, generate_carbon(ROWS, seed=1), "csv", CARBON_HEADER)
    return path


@pytest.fixture(scope="module")
def carbon_replayed(carbon_file):
    return replay(carbon_file)


# --- determinism --------------------------------------------------------------------------


def test_generate_mixed_deterministic():
    a = generate_mixed(3000, seed=4, fund=True)
    assert a == generate_mixed(3000, seed=4, fund=True)
    assert a != generate_mixed(3000, seed=5, fund=True)
    assert len(a) == 3000


@pytest.mark.parametrize("profile", [["--profile", "carbon"], ["--mix", EXAMPLE_MIX]],
                         ids=["carbon", "mixed-with-mix"])
@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_same_seed_same_bytes(capsys, tmp_path, profile, fmt):
    files = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        files[name] = tmp_path / f"{name}.{fmt}"
        gen(capsys, files[name], "--messages", 4000, "--seed", seed, "--format", fmt, "--fund",
            *profile)
    a, b, c = (files[k].read_bytes() for k in "abc")
    assert a == b and a
    assert a != c
    assert len(read_order_file(files["a"])) == 4000


def test_carbon_deterministic_across_processes(run_carbonx, tmp_path):
    """Different hash seeds, the same bytes (no dependence on set or dict hash order)."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"c{hash_seed}.ndjson"
        proc = run_carbonx("gen-orders", "--profile", "carbon", "--messages", 3000, "--format",
                           "ndjson", "--out", out, env={"PYTHONHASHSEED": hash_seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_csv_and_ndjson_replay_alike(capsys, tmp_path):
    csv_path, nd_path = tmp_path / "c.csv", tmp_path / "c.ndjson"
    for path, fmt in ((csv_path, "csv"), (nd_path, "ndjson")):
        gen(capsys, path, "--profile", "carbon", "--messages", 4000, "--fund", "--format", fmt)
    first = json.loads(nd_path.read_text().splitlines()[0])
    assert first["action"] == "deposit" and isinstance(
        first["qty"], str), ("a deposit amount is a decimal string")
    a = replay_summary(capsys, csv_path, "--ledger")
    b = replay_summary(capsys, nd_path, "--ledger")
    assert a["state_hash"] == b["state_hash"] and a["trades"] == b["trades"] > 0


# --- the mix -------------------------------------------------------------------------------


def test_mix_shares_carbon_default(carbon_replayed):
    assert_mix(carbon_replayed[2], CARBON_MIX)
    assert all(carbon_replayed[2][kind] for kind in KINDS), "the default has every kind"


@pytest.mark.parametrize("profile", ["mixed", "carbon"])
def test_mix_shares_requested(capsys, tmp_path, profile):
    path = tmp_path / "m.csv"
    gen(capsys, path, "--profile", profile, "--messages", ROWS, "--mix", EXAMPLE_MIX)
    engine, _, kinds, _ = replay(path)
    assert engine.rejected == 0, engine.rejects
    assert_mix(kinds, parse_mix(EXAMPLE_MIX))


def test_mix_leaves_out_kinds(capsys, tmp_path):
    path = tmp_path / "m.csv"
    gen(capsys, path, "--messages", ROWS, "--mix", "limit=3,amend=1")
    _, _, kinds, _ = replay(path)
    assert set(kinds) == {"limit", "amend"}
    assert_mix(kinds, {"limit": 3, "amend": 1})


BAD_MIXES = [("limit=60,swap=10", ["unknown kind", "swap"]),
             ("limit=x", ["limit", "whole number", "'x'"]), ("limit=-5", ["limit", "whole number"]),
             ("limit=1.5", ["limit", "whole number"]), ("limit", ["KIND=SHARE"]),
             ("limit=0,cancel=0", ["zero"]), ("", ["zero"]), ("limit=1,limit=2", ["twice"])]


@pytest.mark.parametrize("text,fragments", BAD_MIXES, ids=[m[0] or "empty" for m in BAD_MIXES])
@pytest.mark.parametrize("profile", ["mixed", "carbon"])
def test_bad_mix_is_usage_error(capsys, tmp_path, text, fragments, profile):
    out = tmp_path / "never.csv"
    capsys.readouterr()
    status = main(
        ["gen-orders", "--profile", profile, "--messages", "100", "--mix", text, "--out",
         str(out)])
    stdout, stderr = capsys.readouterr()
    assert status == 2
    assert stdout == "" and not out.exists(), "nothing is written"
    assert stderr.startswith("carbonx gen-orders: error: --mix")
    for fragment in fragments:
        assert fragment in stderr


def test_bad_mix_no_traceback(tmp_path):
    """As the console script runs it (``python -m gateway.cli`` would load the command
    line twice, as __main__ and as gateway.cli, with two different UsageError classes)."""
    proc = subprocess.run([
        sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())",
        "gen-orders", "--mix", "limit=60,nope=1", "--out",
        str(tmp_path / "x.csv")
    ], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "nope" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "args,fragment", [(["--market-makers", "2"], "--market-makers"),
                      (["--deadline", "2025-12-31"], "--deadline"),
                      (["--profile", "carbon", "--instruments", "CEA25,CEA-DEC26"], "CEA-DEC26"),
                      (["--profile", "carbon", "--deadline", "31/12/2025"], "31/12/2025"),
                      (["--profile", "carbon", "--market-makers", "-1"], "--market-makers"),
                      (["--depth-ticks", "0"], "--depth-ticks")])
def test_other_bad_options(capsys, tmp_path, args, fragment):
    out = tmp_path / "never.csv"
    capsys.readouterr()
    status = main(["gen-orders", "--messages", "100", *args, "--out", str(out)])
    _, stderr = capsys.readouterr()
    assert status == 2 and fragment in stderr and not out.exists()


# --- depth ---------------------------------------------------------------------------------


def passive_distances(path) -> list[int]:
    """Ticks from each passive order to the opposite touch it met (where there was one)."""
    engine = Engine(default_market())
    found = []
    for command in read_order_file(path):
        if type(command) is PlaceOrder and command.type == "limit" and command.tif == "gtc":
            book = engine.book(command.instrument)
            price = engine.market[command.instrument].tick.to_units(command.price)
            buy = command.side == "buy"
            touch = book.best_ask() if buy else book.best_bid()
            if touch is not None and not book.would_cross(buy, price):
                found.append(touch - price if buy else price - touch)
        engine.submit(command, [])
    return found


def test_depth_ticks_and_shape(capsys, tmp_path):
    median = {}
    for name, args in (("uniform", ["--depth-shape",
                                    "uniform"]), ("geometric", ["--depth-shape", "geometric"]),
                       ("shallow", ["--depth-ticks", "3"])):
        path = tmp_path / f"{name}.csv"
        gen(capsys, path, "--messages", 6000, "--mix", "limit=60,cancel=20,marketable=20", *args)
        distances = sorted(passive_distances(path))
        median[name] = distances[len(distances) // 2]
    # Uniform over 1-20 ticks from the mid: a median near 11 from the far touch.
    assert 9 <= median["uniform"] <= 14, median
    assert median["geometric"] <= 0.6 * median["uniform"], median
    assert median["shallow"] <= 4, median


def refused(capsys, out, *args) -> str:
    """Run ``carbonx gen-orders ARGS --out OUT``; it must fail with one usage error line
    and write nothing. Return that line."""
    capsys.readouterr()
    status = main(["gen-orders", *map(str, args), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert status == 2, stderr
    assert stdout == "" and not out.exists(), "nothing is written"
    assert stderr.startswith("carbonx gen-orders: error: ") and stderr.count("\n") == 1, stderr
    return stderr


@pytest.mark.parametrize("profile", [[], ["--mix", EXAMPLE_MIX], ["--profile", "carbon"]],
                         ids=["mixed", "mixed-with-mix", "carbon"])
def test_depth_ticks_is_refused_beyond_what_keeps_prices_positive(capsys, tmp_path, profile):
    """Deeper than 3000 ticks (30.00), a buy below the mid 60.00 (or CCER's 52.00) could
    be priced at zero or below; at 3000 itself the file still replays without a reject."""
    for depth in (3001, 6000, 10_000):
        error = refused(capsys, tmp_path / "never.csv", "--messages", 3000, "--depth-ticks",
                        depth, *profile)
        assert "--depth-ticks must be from 1 to 3000" in error and str(depth) in error
    path = tmp_path / "deepest.csv"
    gen(capsys, path, "--messages", 3000, "--depth-ticks", 3000, *profile)
    summary = replay_summary(capsys, path)
    assert summary["messages"] == 3000 and summary["rejected"] == 0, summary["rejects"]


def test_generate_mixed_never_prices_an_order_at_zero_or_below(tmp_path):
    """The mid (60.00) walks, but never so low that the deepest buy would be priced at
    zero or below; a depth that reaches zero from the start is refused."""
    from gateway.tools.genorders import write_rows

    rows = generate_mixed(3000, seed=1, depth_ticks=5999)
    path = tmp_path / "deep.csv"
    write_rows(path, rows, "csv")
    engine, commands, _, _ = replay(path)
    assert len(commands) == 3000 and engine.rejected == 0, engine.rejects
    for depth in (6000, 10_000, 0):
        with pytest.raises(ValueError, match="zero or below"):
            generate_mixed(10, depth_ticks=depth)


def test_depth_ticks_reaches_mixed_unchanged(capsys, tmp_path):
    """Without --mix, the mixed profile is generate_mixed itself (its bytes frozen)."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    gen(capsys, a, "--messages", 2000, "--seed", 2)
    gen(capsys, b, "--messages", 2000, "--seed", 2, "--depth-ticks", 20, "--depth-shape", "uniform")
    assert a.read_bytes() == b.read_bytes()
    rows = generate_mixed(2000, seed=2)
    assert a.read_text().splitlines()[1] == ",".join(rows[0])


# --- the carbon profile ---------------------------------------------------------------------


def test_carbon_replays_without_rejections(capsys, carbon_file, carbon_replayed):
    engine, commands, _, trades = carbon_replayed
    assert len(commands) == ROWS
    assert engine.rejected == 0, engine.rejects
    summary = replay_summary(capsys, carbon_file)
    assert summary["messages"] == ROWS and summary["rejected"] == 0, summary["rejects"]
    assert summary["trades"] == len(trades) > 1000


def test_carbon_last_quarter_volume(carbon_replayed):
    trades = carbon_replayed[3]
    total = sum(qty for _, qty in trades)
    late = sum(qty for ts, qty in trades if ts >= LAST_QUARTER)
    assert 0.70 <= late / total <= 0.80, late / total


def test_carbon_open_burst(carbon_replayed):
    stamps = [c.ts for c in carbon_replayed[1] if type(c) is not EndOfDay]
    seconds = [seconds_of_day(ts) for ts in stamps]
    listing = (AM_CLOSE - AM_OPEN) + (PM_CLOSE - PM_OPEN)
    morning = sum(AM_OPEN <= s < AM_OPEN + 1800 for s in seconds) / len(seconds)
    afternoon = sum(PM_OPEN <= s < PM_OPEN + 1200 for s in seconds) / len(seconds)
    assert morning > 2.5 * 1800 / listing, morning
    assert afternoon > 1.3 * 1200 / listing, afternoon


def test_carbon_timestamps_and_eod(carbon_replayed):
    commands = carbon_replayed[1]
    stamps = [c.ts for c in commands]
    assert all(type(ts) is int for ts in stamps), "every row has a ts"
    assert stamps == sorted(stamps), "ts never goes back"
    days = trading_days()
    for ts in stamps:
        s = seconds_of_day(ts)
        assert AM_OPEN <= s <= AM_CLOSE or PM_OPEN <= s <= PM_CLOSE, ts
        assert day_of(ts).weekday() < 5 and day_of(ts) not in HOLIDAYS
        assert days[0] <= day_of(ts) <= days[-1]
    # One eod at 15:00 closes each day that has messages, and it is the day's last row.
    busy = {day_of(c.ts) for c in commands if type(c) is not EndOfDay}
    eods = [c for c in commands if type(c) is EndOfDay]
    assert sorted(day_of(c.ts) for c in eods) == sorted(busy)
    assert all(seconds_of_day(c.ts) == PM_CLOSE for c in eods)
    for before, after in zip(commands, commands[1:]):
        if day_of(after.ts) != day_of(before.ts):
            assert type(before) is EndOfDay


def test_carbon_participants_and_instruments(carbon_replayed):
    engine, commands, _, _ = carbon_replayed
    orders = [c for c in commands if type(c) is PlaceOrder]
    accounts = Counter(c.account for c in orders)
    entities = [a for a in accounts if a.startswith("ent")]
    makers = [a for a in accounts if a.startswith("mm")]
    assert 150 <= len(entities) <= 200 and sorted(makers) == ["mm01", "mm02", "mm03", "mm04"]
    assert accounts["ent0001"] > 5 * accounts["ent0200"], "entities differ in activity"
    for maker in makers:
        assert {c.side for c in orders if c.account == maker} == {"buy", "sell"}
    amended = Counter(c.account[:2] for c in commands if type(c) is AmendOrder)
    assert amended["mm"] and amended["en"], "market makers re-quote, entities amend"
    assert {c.instrument for c in orders} == {"CEA23", "CEA24", "CEA25", "CCER"}
    for c in orders:
        assert 1 <= c.qty <= 99_999
    ccer, cea = engine.reference_price("CCER"), engine.reference_price("CEA25")
    assert ccer is not None and cea is not None and ccer < 0.9 * cea, "CCER is cheaper"


def test_carbon_fund_replays_with_ledger(capsys, tmp_path):
    path = tmp_path / "funded.csv"
    gen(capsys, path, "--profile", "carbon", "--messages", ROWS, "--fund", "--accounts", 120,
        "--market-makers", 3)
    commands = read_order_file(path)
    funding = [c for c in commands[:120 * 5 + 3 * 5]]
    assert {type(c).__name__ for c in funding} == {"Deposit", "IssueAllowances"}
    # Funded: a market without position limits refuses nothing.
    market = tmp_path / "unlimited.toml"
    market.write_text(unlimited_market())
    summary = replay_summary(capsys, path, "--ledger", "--market", str(market))
    assert summary["messages"] == ROWS
    assert summary["rejected"] == 0, summary["rejects"]
    assert summary["trades"] > 1000
    # The default market's limits (1,000,000 t across vintages, plus a covered entity's
    # allocation: none here) refuse what would take a trader past them, and nothing else.
    limited = replay_summary(capsys, path, "--ledger")
    assert set(limited["rejects"]) <= {"position_limit", "unknown_order"}, limited["rejects"]


def test_carbon_options(capsys, tmp_path):
    """--instruments, --deadline and a small file: still exact, still no rejections."""
    path = tmp_path / "c.csv"
    gen(capsys, path, "--profile", "carbon", "--messages", 1500, "--instruments", "CEA25,CCER",
        "--deadline", "2026-06-30", "--market-makers", 0, "--fund")
    summary = replay_summary(capsys, path, "--ledger")
    assert summary["messages"] == 1500 and summary["rejected"] == 0, summary["rejects"]
    commands = read_order_file(path)
    stamps = [c.ts for c in commands if c.ts is not None]
    assert date(2025, 7, 1) <= day_of(min(stamps)) and day_of(max(stamps)) <= date(2026, 6, 30)
    assert {c.instrument for c in commands if type(c) is PlaceOrder} == {"CEA25", "CCER"}
    assert not any(c.account.startswith("mm") for c in commands if type(c) is PlaceOrder)


def test_deadline_is_refused_where_timestamps_would_leave_64_bit_nanoseconds(capsys, tmp_path):
    """A ts is nanoseconds since 1970-01-01 in 64 bits: the compliance year may start no
    earlier than 1970-01-01 (deadline 1970-12-31) and end no later than 2262-04-11."""
    for deadline, where in (("1900-01-01", "before 1970"), ("1970-12-30", "before 1970"),
                            ("2262-04-12", "past 64-bit"), ("9999-12-31", "past 64-bit")):
        error = refused(capsys, tmp_path / "never.csv", "--profile", "carbon", "--messages", 300,
                        "--deadline", deadline)
        assert f"--deadline {deadline}" in error and where in error, error
        assert "1970-12-31 to 2262-04-11" in error, error
        with pytest.raises(ValueError, match="1970-12-31 to 2262-04-11"):
            generate_carbon(10, deadline=date.fromisoformat(deadline))
    for deadline in ("1970-12-31", "2262-04-11"):
        path = tmp_path / f"{deadline}.csv"
        gen(capsys, path, "--profile", "carbon", "--messages", 1500, "--deadline", deadline)
        stamps = [c.ts for c in read_order_file(path)]
        assert all(0 <= ts < 2**63 for ts in stamps)
        assert day_of(max(stamps)) == date.fromisoformat(deadline)
        assert replay_summary(capsys, path)["rejected"] == 0


def test_carbon_in_a_daylight_saving_year_stays_in_the_listing_hours(capsys, tmp_path):
    """China kept daylight saving time (UTC+09:00) in the summers of 1986-1991, and so
    does the default market's schedule: its sessions then start an hour earlier in UTC."""
    path = tmp_path / "1988.csv"
    gen(capsys, path, "--profile", "carbon", "--messages", 3000, "--deadline", "1988-12-31")
    commands = read_order_file(path)
    summer = [c.ts for c in commands if date(1988, 6, 1) <= day_of(c.ts) <= date(1988, 8, 31)]
    assert summer, "the file trades in the summer"
    for ts in summer:
        s = seconds_of_day(ts)
        assert AM_OPEN <= s <= AM_CLOSE or PM_OPEN <= s <= PM_CLOSE, ts
    summary = replay_summary(capsys, path)
    assert summary["messages"] == 3000 and summary["rejected"] == 0, summary["rejects"]


def test_trading_days():
    days = trading_days(date(2025, 12, 31))
    assert len(days) == 243
    assert days[0] == date(2025, 1, 2) and days[-1] == date(2025, 12, 31)
    assert date(2025, 10, 8) not in days and date(2025, 10, 9) in days
    assert all(d.weekday() < 5 for d in days)
