"""``python -m benchmarks.web [--quick] [--json]``: the web portal's cost to the live gateway.

The claim measured: with the dashboard open and 20 clients watching one instrument, the
gateway's batched order throughput stays at least 90% of its figure without them, and a
trade is on the page within 250 ms (p99).

Processes, as ``benchmarks.gateway`` has them (its pieces imported): two set-ups, each
its own mosquitto (configured by ``carbonx broker-config`` on a free loopback port, the
per-account limit raised) and its own exchange, ``carbonx serve --broker ... --init
FUNDING --always-open`` (engine, ledger, gateway, as shipped): (a) alone, (b) with
``--web``. Both live through the whole run and take the same floods, so their books stay
alike. A flood: a fresh load process of ``ExchangeClient`` bots sending resting, never
crossing CEA25 orders in batches of 100 (``benchmarks.gateway._flood``).

- throughput: answered orders/s of a flood (a) alone and (b) with 20 watchers: 20 pages
  of one headless Chromium (``/usr/bin/chromium``, Playwright, one context) on
  ``/market/CEA25``, opened once, each past NiceGUI's websocket handshake, so the portal
  renders and pushes 20 market pages at its rate limit all through (b)'s floods, and the
  browser draws them on the same cores (its CPU time and the exchange's are recorded per
  flood). (a) and (b) take turns over several rounds, who goes first alternating, each
  flood after the machine has quietened (at most 0.5 s); the figure is the median of the
  rounds' ratios b/a, after a round not counted (the first flood into each exchange, and
  the pages' first full ladder). Each flood checks that every order was answered and
  that every watcher's ladder changed with it (a busy market's pages draw in its pause).
- latency: after the floods, the 20 watchers still open, on one of them brought to the
  front: crossing pairs (a ``maker`` sells and at once a ``taker`` buys, at 60.00, a
  quantity unique to the sample: two flushes, so the trade's drawing waits out the
  page's rate limit, ``REFRESH_S``, after the sell's), and a few rested buys (each
  meeting a sell placed long before: the page idle when the trade comes); each sample
  after a pause longer than the rate limit. The time from the publish, and from the
  buy's answer, to the trade's row being first in the tape (a ``MutationObserver`` in the
  page, awaited from Python: one clock, ``time.perf_counter``, on both ends; the answer
  of the awaited promise adds a DevTools round trip). The target is judged on the pairs;
  the page's first trade after the floods (a pair before them) is reported apart.

Targets (reported, never enforced): ratio >= 0.9; p99 < 250 ms. A full run writes
``results/web.json``; ``--quick`` (the test's) writes a file only when given ``--out``.
``--json`` prints the result as JSON on stdout and the table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .gateway import _flood, _stop, load_parser, run_load
from .stats import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
CHROMIUM = Path("/usr/bin/chromium")

TARGET_RATIO = 0.9  # throughput with the watchers over without
TARGET_P99_MS = 250.0  # trade to its row on the page
FULL = {"rounds": 5, "bots": 4, "orders": 40_000, "watchers": 20, "samples": 45, "rested": 5}
QUICK = {"rounds": 2, "bots": 2, "orders": 20_000, "watchers": 4, "samples": 10, "rested": 3}
INSTRUMENT = "CEA25"
PRICE = "60.00"  # the crossing pairs' price: between the flood's buys and sells
BATCH = 100


def _window() -> int:
    """Unanswered orders a bot may have, as in benchmarks.gateway's batched run: the
    gateway's intake per account. With more, a gateway that falls behind turns messages
    away "overloaded"; the bot resends those only after resend_after (60 s here), past its
    30 s timeout, so they counted as unanswered (a CI run: 300 of 120,000 orders, two
    floods of 60 s)."""
    from gateway.mqtt.service import GatewaySettings

    return GatewaySettings().intake


# --- the load process ------------------------------------------------------------------
async def _load(args) -> dict:
    from gateway.bots.client import ExchangeClient

    credentials = json.loads(Path(args.credentials).read_text())
    clients = [
        ExchangeClient(f"bot{i}", credentials[f"bot{i}"], "127.0.0.1", args.port, timeout=30,
                       resend_after=60) for i in range(args.bots)
    ]
    for client in clients:
        await client.__aenter__()
    try:
        # the order ids: b{tag}{bot}-{n}, a tag a round, as the exchanges live through all
        warm = await _flood(clients[:1], 200, 1, 50, f"w{args.tag}")  # connections warm
        flood = await _flood(clients, args.orders // len(clients), BATCH, _window(), args.tag)
    finally:
        for client in clients:
            await client.close()
    return {"warmup_lost": warm["lost"], **flood}


# --- the exchange ----------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _browser_cpu_seconds() -> float:
    """CPU time of the Chromium processes this process started (through Playwright)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:].rsplit(")", 1)
        fields = rest.split()
        parents[int(entry.name)] = int(fields[1])
        if name.startswith("chrom"):
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()

    def mine(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    return sum(t for pid, t in times.items() if mine(pid))


async def _settle(limit: float = 0.5) -> float:
    """Wait (up to *limit* s) until the machine is mostly idle (under 30% busy over 0.2 s),
    so that a flood does not start in the last one's wake; return the wait."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        busy, total = _machine_busy()
        await asyncio.sleep(0.2)
        busy2, total2 = _machine_busy()
        if (busy2 - busy) / max(total2 - total, 1) < 0.3:
            break
    return round(time.perf_counter() - began, 2)


class _Exchange:
    """``carbonx serve --broker`` (with ``--web`` when *web* is a port), its output in a
    log file (never an unread pipe), until ``stop``."""

    def __init__(self, directory: Path, url: str, funding: Path, web: int | None,
                 credentials: Path) -> None:
        command = [sys.executable, "-m", "gateway.cli", "serve", "--broker", url, "--init",
                   str(funding), "--always-open", "--log-level", "WARNING"]
        if web is not None:
            command += ["--web", str(web), "--web-credentials", str(credentials)]
        self.log = directory / "serve.log"
        self.handle = self.log.open("w")
        self.process = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "gateway ready" in self.log.read_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text()[-2000:].rstrip() or "(no output)"
        raise RuntimeError(f"carbonx serve did not start within {timeout:g} s:\n{tail}")

    def stop(self) -> None:
        _stop(self.process)
        self.handle.close()


async def _run_load(settings: dict, port: int, credentials: Path, tag: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.web", "load", "--port", str(port),
               "--credentials", str(credentials), "--bots", str(settings["bots"]), "--orders",
               str(settings["orders"]), "--tag", tag]
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 300)
    for line in out.decode().splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"load process failed:\n{err.decode()[-3000:]}")


# --- the watchers ----------------------------------------------------------------------
# Counts the ladder's DOM changes: proof that a watcher was kept up to date by the flood.
COUNT_JS = """() => {
  window.__cxChanges = 0;
  const ladder = document.querySelector('[data-testid=ladder]');
  new MutationObserver(() => { window.__cxChanges += 1; })
    .observe(ladder, {childList: true, subtree: true, characterData: true});
}"""

# Resolves once the tape's newest row shows [price, qty] (checked at once, then on every
# change of the tape).
ROW_JS = """([price, qty]) => new Promise((resolve) => {
  const tape = document.querySelector('[data-testid=tape]');
  const shown = () => {
    const row = tape.querySelector('tbody tr');
    return !!row && row.cells.length > 2 && row.cells[1].textContent.trim() === price
        && row.cells[2].textContent.trim() === String(qty);
  };
  if (shown()) { resolve(performance.now()); return; }
  const observer = new MutationObserver(() => {
    if (shown()) { observer.disconnect(); resolve(performance.now()); }
  });
  observer.observe(tape, {childList: true, subtree: true, characterData: true});
})"""


async def _open_watchers(browser, url: str, login: tuple[str, str], count: int):
    """One context, *count* pages of the market page, each past NiceGUI's handshake."""
    context = await browser.new_context(
        http_credentials={"username": login[0], "password": login[1]},
        viewport={"width": 1400, "height": 900})

    async def one():
        page = await context.new_page()
        response = await page.goto(f"{url}/market/{INSTRUMENT}")
        if response is None or response.status != 200:
            raise RuntimeError(f"the market page answered {response and response.status}")
        await page.wait_for_function("window.did_handshake === true", timeout=30_000)
        await page.evaluate(COUNT_JS)
        session = await context.new_cdp_session(page)
        await session.send("Performance.enable")
        return page, session

    opened = []
    # A few at a time: each page costs Chromium about 0.6 s of CPU (Quasar, Tailwind's
    # runtime, ECharts), however many go at once, and all at once time out on two cores.
    for start in range(0, count, 4):
        opened += await asyncio.gather(*(one() for _ in range(min(4, count - start))))
    return context, [page for page, _ in opened], [session for _, session in opened]


async def _changes(pages) -> list[int]:
    return [await page.evaluate("window.__cxChanges") for page in pages]


# Where a page's renderer spends its time (Chromium's Performance domain, seconds).
WORK = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")


async def _browser_work(sessions) -> dict[str, float]:
    """The renderers' time so far, summed over the watchers' pages, by kind."""
    total = dict.fromkeys(WORK, 0.0)
    for session in sessions:
        for metric in (await session.send("Performance.getMetrics"))["metrics"]:
            if metric["name"] in total:
                total[metric["name"]] += metric["value"]
    return total


# --- latency -------------------------------------------------------------------------------
def _new(order_id: str, side: str, price: str, qty: int) -> dict:
    return {"action": "new", "order_id": order_id, "instrument": INSTRUMENT, "side": side,
            "price": price, "qty": qty}


async def _latency(page, port: int, credentials: dict, pairs: int, rested: int) -> dict:
    """*pairs* crossing pairs published back to back (the sell, then at once the buy), and
    *rested* buys each taking a sell placed long before; each sample after a pause longer
    than the page's rate limit, so that the previous sample's drawing does not hold it."""
    from gateway.bots.client import ExchangeClient

    await page.bring_to_front()
    found: dict[str, dict[str, list[float]]] = {
        mode: {"from_publish": [], "from_answer": []} for mode in ("first", "pair", "rested")}
    reports: set[str] = set()
    async with (ExchangeClient("maker", credentials["maker"], port=port, timeout=30) as maker,
                ExchangeClient("taker", credentials["taker"], port=port, timeout=30) as taker):

        async def sample(mode: str, n: int, price: str, qty: int, sell: bool) -> None:
            await asyncio.sleep(random.uniform(0.26, 0.30))  # past the refresh limit since the last
            seen = asyncio.ensure_future(page.evaluate(ROW_JS, [price, qty]))
            sent = time.perf_counter()
            sold = maker.submit(_new(f"s{mode}{n}", "sell", price, qty)) if sell else None
            answer = await asyncio.wait_for(taker.submit(_new(f"b{mode}{n}", "buy", price,
                                                              qty)), 10)
            answered = time.perf_counter()
            reports.add(answer.get("report", "?"))
            if sold is not None:
                reports.add((await asyncio.wait_for(sold, 10)).get("report", "?"))
            try:
                await asyncio.wait_for(seen, 10)
            except TimeoutError:
                return  # never seen: counted by its absence
            shown = time.perf_counter()
            found[mode]["from_publish"].append((shown - sent) * 1000)
            found[mode]["from_answer"].append((shown - answered) * 1000)

        # The rested sells at rising prices, one message: buy k then meets sell k first.
        prices = [f"61.{k:02d}" for k in range(rested)]
        sells = maker.submit_many([_new(f"r{k}", "sell", prices[k], 201 + k)
                                   for k in range(rested)])
        for answer in await asyncio.wait_for(asyncio.gather(*sells), 10):
            reports.add(answer.get("report", "?"))
        # The page's first trade, not counted: after the floods it was the slowest sample
        # of every run (240-435 ms, the next at most 160 ms): the tape's first row, the
        # page just brought to the front. Its figure is kept apart.
        await sample("first", 0, PRICE, 100, True)
        for n in range(pairs):
            await sample("pair", n, PRICE, 101 + n, True)  # qty unique: the row is this one
        for k in range(rested):
            await sample("rested", k, prices[k], 201 + k, False)
    out: dict = {"reports": sorted(reports),
                 "first_pair_ms": [round(v, 1) for v in found["first"]["from_publish"]]}
    for mode, count in (("pair", pairs), ("rested", rested)):
        values = found[mode]
        out[mode] = {"samples": count, "seen": len(values["from_publish"]),
                     "from_publish": _summary(values["from_publish"]),
                     "from_answer": _summary(values["from_answer"]),
                     "raw_from_publish_ms": [round(v, 1) for v in values["from_publish"]]}
    return out


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:  # nearest rank
        return round(ordered[min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)], 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 2),
            "n": len(ordered)}


# --- the orchestrator ------------------------------------------------------------------
class _Side:
    """One of the two set-ups: its own mosquitto and ``carbonx serve``; *web*: with the
    portal (and, once opened, its watchers)."""

    def __init__(self, name: str, scratch: Path, bots: list[str], web: bool) -> None:
        from gateway.mqtt.brokerconfig import AccountLimits, write_broker_config
        from mosquitto import free_port

        self.name = name
        self.directory = scratch / name
        self.port = free_port()
        # As benchmarks.gateway: the per-account limit raised, this measures the gateway.
        limits = AccountLimits.scaled(message_rate=20_000, byte_rate=64 * 1024 * 1024)
        self.credentials = write_broker_config(
            self.directory / "broker", self.port,
            {a: None for a in [*bots, "maker", "taker"]}, limits=limits)
        self.credentials_file = self.directory / "credentials.json"
        self.credentials_file.write_text(json.dumps(self.credentials))
        self.web = free_port() if web else None
        self.exchange: _Exchange | None = None
        self.pages: list = []
        self.sessions: list = []  # a DevTools session per page (its renderer's metrics)

    def start(self, funding: Path) -> None:
        url = f"mqtt://gateway:{self.credentials['gateway']}@127.0.0.1:{self.port}"
        self.exchange = _Exchange(self.directory, url, funding, self.web,
                                  self.credentials_file)


async def _flood_once(side: _Side, settings: dict, tag: str) -> dict:
    assert side.exchange is not None
    pid = side.exchange.process.pid
    before = await _changes(side.pages)
    work = await _browser_work(side.sessions)
    settled = await _settle()
    cpu, browser = _cpu_seconds(pid), _browser_cpu_seconds()
    busy, total = _machine_busy()
    out = await _run_load(settings, side.port, side.credentials_file, tag)
    busy2, total2 = _machine_busy()
    out["settle_s"] = settled
    out["exchange_cpu_s"] = round(_cpu_seconds(pid) - cpu, 2)
    out["exchange_cpu_us_per_order"] = round(out["exchange_cpu_s"] * 1e6 / out["answered"], 1)
    out["browser_cpu_s"] = round(_browser_cpu_seconds() - browser, 2)
    out["machine_busy"] = round((busy2 - busy) / max(total2 - total, 1), 3)
    if side.pages:
        # A busy market's pages draw in its pause (gateway.web.pages.next_drawing): the
        # flood's last state a moment after its last answer.
        waited = time.perf_counter()
        while True:
            changes = [b - a for a, b in zip(before, await _changes(side.pages))]
            if min(changes) > 0 or time.perf_counter() - waited > 3.0:
                break
            await asyncio.sleep(0.05)
        out["watchers"] = len(changes)
        out["watchers_updated"] = sum(1 for c in changes if c > 0)
        out["watcher_changes_min"] = min(changes)
        after = await _browser_work(side.sessions)
        out["browser_work_s"] = {k: round(after[k] - work[k], 3) for k in WORK}
    return out


async def _benchmark(settings: dict, scratch: Path) -> dict:
    from playwright.async_api import async_playwright

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from mosquitto import Mosquitto  # the test suite's broker runner

    bots = [f"bot{i}" for i in range(settings["bots"])]
    rows = ["action,account,instrument,qty"]
    for bot in bots:
        # Allowances for every sell, and few enough that the bot's buys stay under
        # its position limit (1,000,000 t counting what it holds).
        rows += [f"deposit,{bot},CNY,100000000", f"issue,{bot},CEA25,500000"]
    rows += ["deposit,taker,CNY,100000000", "issue,maker,CEA25,10000000"]
    funding = scratch / "funding.csv"
    funding.write_text("\n".join(rows) + "\n")
    alone = _Side("alone", scratch, bots, web=False)
    watched = _Side("watched", scratch, bots, web=True)
    out: dict = {"rounds": []}
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with Mosquitto(alone.directory / "broker"), Mosquitto(watched.directory / "broker"):
        try:
            for side in (alone, watched):
                side.start(funding)
            for side in (alone, watched):
                assert side.exchange is not None
                await asyncio.to_thread(side.exchange.wait_ready)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                           args=args)
                try:
                    began = time.perf_counter()
                    context, watched.pages, watched.sessions = await _open_watchers(
                        browser, f"http://127.0.0.1:{watched.web}",
                        ("bot0", watched.credentials["bot0"]), settings["watchers"])
                    out["watchers_open_s"] = round(time.perf_counter() - began, 2)
                    began = time.perf_counter()
                    # A round not counted: the first flood into each exchange, and the
                    # pages' first drawing of a full ladder, with its first layout of the
                    # table (its browser CPU was twice a later round's).
                    out["warmup"] = {side.name: await _flood_once(side, settings, "w")
                                     for side in (alone, watched)}
                    for r in range(settings["rounds"]):
                        one: dict = {}
                        for side in ((alone, watched) if r % 2 == 0 else (watched, alone)):
                            one[side.name] = await _flood_once(side, settings, f"r{r}b")
                        one["ratio"] = round(one["watched"]["orders_per_s"]
                                             / one["alone"]["orders_per_s"], 4)
                        out["rounds"].append(one)
                    out["floods_s"] = round(time.perf_counter() - began, 2)
                    began = time.perf_counter()
                    out["latency"] = await _latency(watched.pages[0], watched.port,
                                                    watched.credentials, settings["samples"],
                                                    settings["rested"])
                    out["latency_s"] = round(time.perf_counter() - began, 2)
                    await context.close()
                finally:
                    await browser.close()
        finally:
            for side in (alone, watched):
                if side.exchange is not None:
                    await asyncio.to_thread(side.exchange.stop)
    return out


def run_benchmark(settings: dict) -> dict:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="carbonx-webbench-") as scratch:
        raw = asyncio.run(_benchmark(settings, Path(scratch)))
    rounds, latency = raw["rounds"], raw["latency"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    floods = [r[k] for r in rounds for k in ("alone", "watched")] + list(raw["warmup"].values())
    pair, rested = latency["pair"], latency["rested"]
    checks = {
        "sent": sum(f["sent"] for f in floods),
        "answered": sum(f["answered"] for f in floods),
        "all_answered": all(f["lost"] == 0 and f["warmup_lost"] == 0 for f in floods),
        # every order rests: a refusal (market closed, a limit) would measure the wrong work
        "none_refused": all(f["rejected"] == 0 for f in floods),
        "watchers": settings["watchers"],
        "watchers_updated": [r["watched"]["watchers_updated"] for r in rounds],
        "trades_sampled": pair["samples"] + rested["samples"] + 1,
        "trades_seen": pair["seen"] + rested["seen"] + len(latency["first_pair_ms"]),
        "reports": latency["reports"],
    }
    checks["passed"] = (checks["all_answered"] and checks["none_refused"]
                        and checks["reports"] == ["accepted"]
                        and checks["trades_seen"] == checks["trades_sampled"]
                        and all(w == settings["watchers"] for w in checks["watchers_updated"]))
    p99 = pair["from_publish"].get("p99_ms")
    result = {
        "settings": settings,
        "method": {
            "broker": "mosquitto (carbonx broker-config, the per-account limit raised), one "
                      "for each set-up",
            "exchange": "carbonx serve --broker --init --always-open: one without the portal, "
                        "one with --web; each gets the same floods, so their books match",
            "flood": f"{settings['bots']} bots (ExchangeClient), batches of {BATCH}, window "
                     f"{_window():,}, {settings['orders']:,} resting CEA25 orders a flood, from "
                     "a fresh load process; the two set-ups take turns, alternating who "
                     "goes first",
            "watchers": f"{settings['watchers']} pages of one headless Chromium (one "
                        f"context) on /market/{INSTRUMENT}, each past NiceGUI's handshake, "
                        "open all through; the browser shares the machine's cores",
            "latency": "after the floods, the watchers open: a pair (maker sells, taker buys "
                       "at once; two flushes, so the trade's drawing waits out the page's "
                       "rate limit after the sell's) and rested buys (the sell placed long "
                       "before); publish or answer to the row first in the tape (a "
                       "MutationObserver in the page, awaited from Python: one clock)",
        },
        "throughput": {
            "alone_orders_per_s": [r["alone"]["orders_per_s"] for r in rounds],
            "watched_orders_per_s": [r["watched"]["orders_per_s"] for r in rounds],
            "ratios": [r["ratio"] for r in rounds],
            "ratio_median": round(ratio, 4),
            # where the cores went: the exchange's own CPU per order (the portal's rendering
            # is in it), and the browser's CPU during a watched flood
            "exchange_cpu_us_per_order": {
                side: statistics.median(r[side]["exchange_cpu_us_per_order"] for r in rounds)
                for side in ("alone", "watched")},
            "browser_cpu_s_per_watched_flood": statistics.median(
                r["watched"]["browser_cpu_s"] for r in rounds),
            "watched_flood_s": statistics.median(r["watched"]["elapsed_s"] for r in rounds),
            # the pages' renderers during a watched flood (the settle before it included)
            "browser_work_s": {key: statistics.median(r["watched"]["browser_work_s"][key]
                                                      for r in rounds) for key in WORK},
        },
        "latency": {**{mode: {k: v for k, v in latency[mode].items()}
                       for mode in ("pair", "rested")},
                    "first_pair_ms": latency["first_pair_ms"]},
        "checks": checks,
        "targets": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS},
        "verdict": {
            "ratio": round(ratio, 4),
            "ratio_target_met": ratio >= TARGET_RATIO,
            "p99_ms": p99,
            "p99_target_met": p99 is not None and p99 < TARGET_P99_MS,
        },
        "phases_s": {k: raw[k] for k in ("watchers_open_s", "floods_s", "latency_s")},
        "rounds": rounds,
        "warmup_round": raw["warmup"],
    }
    result["elapsed_s"] = round(time.perf_counter() - began, 1)
    return result


def render(result: dict) -> str:
    t, lat, v, c = result["throughput"], result["latency"], result["verdict"], result["checks"]
    lines = [f"batched orders/s answered: the exchange alone | served with {c['watchers']} "
             "watchers", "round      alone    watched   ratio"]
    for n, (a, w, r) in enumerate(zip(t["alone_orders_per_s"], t["watched_orders_per_s"],
                                      t["ratios"])):
        lines.append(f"{n:>5}   {a:>8,}   {w:>8,}   {r:.3f}")
    cpu = t["exchange_cpu_us_per_order"]
    lines += [f"median ratio {t['ratio_median']:.3f} (target >= {TARGET_RATIO}): "
              f"{'met' if v['ratio_target_met'] else 'missed'}",
              f"exchange CPU per order {cpu['alone']} us alone, {cpu['watched']} us watched; "
              f"the browser {t['browser_cpu_s_per_watched_flood']} s CPU in a "
              f"{t['watched_flood_s']} s watched flood; its pages' renderers: "
              + ", ".join(f"{k[:-8].lower()} {v} s" for k, v in t["browser_work_s"].items()),
              "",
              "trade -> its row first in the page's tape, ms",
              "sample            seen    p50      p99      max"]
    for mode in ("pair", "rested"):
        for key in ("from_publish", "from_answer"):
            s = lat[mode][key]
            name = f"{mode} {key[5:]}"
            lines.append(f"{name:<16} {lat[mode]['seen']:>2}/{lat[mode]['samples']:<3} "
                         f"{s.get('p50_ms', '-'):>7}  {s.get('p99_ms', '-'):>7}  "
                         f"{s.get('max_ms', '-'):>7}")
    lines.append(f"the page's first trade (not counted): {lat['first_pair_ms']} ms from publish")
    lines += [
        f"p99, pair from publish: {v['p99_ms']} ms (target < {TARGET_P99_MS:g}): "
        f"{'met' if v['p99_target_met'] else 'missed'}", "",
        f"checks: {c['answered']:,}/{c['sent']:,} orders answered; watchers updated by each "
        f"flood {c['watchers_updated']} of {c['watchers']}; trades seen {c['trades_seen']}/"
        f"{c['trades_sampled']}; reports {c['reports']}: "
        f"{'passed' if c['passed'] else 'FAILED'}",
        f"{c['watchers']} watchers opened in {result['phases_s']['watchers_open_s']} s; "
        f"floods {result['phases_s']['floods_s']} s; latency {result['phases_s']['latency_s']} "
        f"s; whole run {result['elapsed_s']} s"
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    load = load_parser(sub, 100_000)
    load.add_argument("--tag", default="x")
    parser.add_argument("--quick", action="store_true", help="small sizes, under 20 s")
    parser.add_argument("--json", action="store_true",
                        help="the result as JSON on stdout (the table on stderr)")
    parser.add_argument("--out", help="the JSON file to write (default: results/web.json; "
                        "none with --quick)")
    args = parser.parse_args(argv)
    if args.role == "load":
        return run_load(_load, args)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: install Debian's chromium", file=sys.stderr)
        return 2
    result = run_benchmark(QUICK if args.quick else FULL)
    print(render(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
    out = args.out or (None if args.quick else str(RESULTS_DIR / "web.json"))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["checks"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
