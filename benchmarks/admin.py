"""``python -m benchmarks.admin [--count N]``: the operator's round trip over a real mosquitto.

Processes: mosquitto (configured by ``carbonx broker-config``, on a free loopback port,
its per-account limit raised as ``benchmarks/gateway.py`` raises it, so the limit is not
what is measured) and the exchange (``carbonx serve --broker ... --init FUNDING``). This
process is the operator: ``gateway.tools.admin.AdminClient``, the client ``carbonx
admin`` runs, logged in as ``operator``, sends N deposits (300 by default) one at a time,
each once the one before is answered, as ``carbonx admin`` does, after a few untimed
ones that warm the connections up.

Measured: each row's round trip, from just before its command is published on
``cx/v1/ops/commands`` to its answer received on ``cx/v1/ops/reports``, with
``perf_counter_ns``: p50, p99, p99.9, max and mean in milliseconds (nearest rank). Every
deposit must be accepted. Prints a few lines (``--json``: the result as one JSON
object) and writes ``admin.json`` into ``--out`` (default ``benchmarks/results/``).
Nothing is enforced: the numbers are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .gateway import _percentiles, _start, _stop

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"

DEFAULT_COUNT = 300
WARMUP = 20  # untimed round trips first
MAX_COUNT = 100_000
ACCOUNT = "acct1"


async def _round_trips(port: int, password: str, count: int, warmup: int) -> dict:
    """Send *warmup* then *count* deposits as the operator, one at a time; time each."""
    from exchange.commands import Deposit
    from gateway.mqtt.serve import BrokerAddress
    from gateway.tools.admin import AdminClient

    samples: list[int] = []
    answers: dict[str, int] = {}
    async with AdminClient(BrokerAddress("127.0.0.1", port, "operator", password),
                           timeout=10.0) as operator:
        for number in range(warmup + count):
            command = operator.command_id(Deposit(account=ACCOUNT, currency="CNY", amount="1"))
            started = time.perf_counter_ns()
            answer = await operator.send(command)
            took = time.perf_counter_ns() - started
            if number >= warmup:
                samples.append(took)
                kind = answer.get("report") or "?"
                answers[kind] = answers.get(kind, 0) + 1
    return {"samples_ns": samples, "answers": answers}


def run_benchmark(count: int = DEFAULT_COUNT, warmup: int = WARMUP) -> dict:
    """Start mosquitto and ``carbonx serve``, time *count* operator round trips, stop both."""
    from gateway.mqtt.brokerconfig import AccountLimits, PluginBuildError, write_broker_config
    from gateway.mqtt.serve import run_async

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from mosquitto import Mosquitto, free_port  # the test suite's broker runner

    with tempfile.TemporaryDirectory(prefix="carbonx-adminbench-") as scratch:
        directory = Path(scratch)
        port = free_port()
        limits: AccountLimits | None = AccountLimits.scaled(message_rate=20_000,
                                                            byte_rate=64 * 1024 * 1024)
        try:
            credentials = write_broker_config(directory / "broker", port, {ACCOUNT: None},
                                              limits=limits)
        except PluginBuildError:  # no C compiler or mosquitto headers: without the limit
            limits = None
            credentials = write_broker_config(directory / "broker", port, {ACCOUNT: None},
                                              limits=None, force=True)
        funding = directory / "funding.csv"
        funding.write_text(f"action,account,instrument,qty\ndeposit,{ACCOUNT},CNY,1\n")
        raw: list[dict] = []
        with Mosquitto(directory / "broker"):
            url = f"mqtt://gateway:{credentials['gateway']}@127.0.0.1:{port}"
            exchange, log = _start([
                sys.executable, "-m", "gateway.cli", "serve", "--broker", url, "--init",
                str(funding), "--log-level", "WARNING"
            ], "gateway on", directory / "serve.log")
            try:

                async def go() -> None:
                    raw.append(await _round_trips(port, credentials["operator"], count, warmup))

                started = time.perf_counter()
                run_async(go())
                wall = time.perf_counter() - started
            finally:
                _stop(exchange)
                log.close()
    samples = raw[0]["samples_ns"]
    result = {
        "benchmark": "carbonx admin round trip",
        "count": count,
        "warmup": warmup,
        "answers": raw[0]["answers"],
        "accepted": raw[0]["answers"].get("accepted", 0),
        "mean_ms": round(statistics.fmean(samples) / 1e6, 3) if samples else None,
        "wall_s": round(wall, 3),
        "broker_limit": None if limits is None else limits.message_rate,
        **_percentiles(samples)
    }
    return result


def render(result: dict) -> str:
    return (f"operator round trip (admin row sent -> its answer received), "
            f"{result['count']:,} deposits one at a time through mosquitto and carbonx serve:\n"
            f"  p50 {result.get('p50_ms')} ms   p99 {result.get('p99_ms')} ms   "
            f"p99.9 {result.get('p999_ms')} ms   max {result.get('max_ms')} ms   "
            f"mean {result.get('mean_ms')} ms\n"
            f"  accepted {result['accepted']:,} of {result['count']:,}; {result['wall_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.admin",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"timed round trips (default {DEFAULT_COUNT}; at most {MAX_COUNT:,})")
    parser.add_argument("--warmup", type=int, default=WARMUP,
                        help=f"untimed round trips first (default {WARMUP})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where to write admin.json")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT or args.warmup < 0:
        parser.error(f"--count must be 1 to {MAX_COUNT:,} and --warmup not negative")
    from gateway.tools.admin import AdminError

    try:
        result = run_benchmark(args.count, args.warmup)
    except (AdminError, RuntimeError, OSError) as exc:  # no broker, no exchange, no answer
        print(f"python -m benchmarks.admin: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else render(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "admin.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["accepted"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
