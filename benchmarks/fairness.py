"""``python -m benchmarks.fairness [--quick]``: a quiet bot's answers while another floods.

Processes: the exchange (``carbonx serve``, as shipped: engine, ledger, gateway) on the
embedded broker and on mosquitto (configured by ``carbonx broker-config``), a flooding
process and a quiet bot's process. The flooder is a plain MQTT client that publishes
new orders on its own topic as fast as the broker takes them and never waits for an
answer (one order a message, then batches of 100); the quiet bot (``ExchangeClient``)
sends one order every 20 ms throughout and times each from sent to its answer.

Measured: the quiet bot's answer latency (p50, p99, max), how many of its orders went
unanswered, and what became of the flood (sent, answered accepted, turned away by the
rate limit). Target (reported, never enforced): quiet p99 under 50 ms during the flood.
Writes ``results/fairness.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

from .gateway import _percentiles, _start, _stop
from .stats import RESULT_PREFIX, emit

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"

TARGET_P99_MS = 50.0
FULL = {"seconds": 6.0, "batches": (1, 100)}
QUICK = {"seconds": 1.5, "batches": (1, 100)}
QUIET_EVERY = 0.02  # seconds between two of the quiet bot's orders


def _order(tag: str, n: int, side: str = "buy") -> dict:
    # Resting, never crossing: the book grows as on a busy day.
    cents = 5000 - n % 500 if side == "buy" else 7000 + n % 500
    return {
        "action": "new",
        "order_id": f"{tag}-{n}",
        "instrument": "CEA25",
        "side": side,
        "price": f"{cents // 100}.{cents % 100:02d}",
        "qty": 1
    }


# --- the flooder -----------------------------------------------------------------------
async def _flood(args) -> dict:
    import aiomqtt

    from gateway.protocol import PENDING_CALLS_WARNING, SOCKET_OPTIONS, exec_topic, orders_topic

    answered = turned_away = refused = 0
    async with aiomqtt.Client("127.0.0.1", args.port, username="flood", password=args.password,
                              max_inflight_messages=1000, socket_options=SOCKET_OPTIONS) as client:
        client.pending_calls_threshold = PENDING_CALLS_WARNING
        await client.subscribe(exec_topic("flood"), qos=1)

        async def count() -> None:
            nonlocal answered, turned_away, refused
            async for message in client.messages:
                body = json.loads(message.payload)
                for report in body if isinstance(body, list) else [body]:
                    if report.get("reason") in ("rate_limited", "overloaded"):
                        turned_away += 1
                    elif report.get("report") in ("accepted", "rejected"):
                        answered += 1
                        refused += report.get("report") == "rejected"

        counter = asyncio.ensure_future(count())
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        start = loop.time()
        sent = 0
        numbers = iter(range(10**9))

        async def publisher() -> None:
            # As fast as the broker acknowledges: a publish in flight per task.
            nonlocal sent
            while loop.time() - start < args.seconds:
                batch = [_order("f", next(numbers), "sell") for _ in range(args.batch)]
                body = batch[0] if args.batch == 1 else batch
                await client.publish(orders_topic("flood"), json.dumps(body).encode(), qos=1)
                sent += args.batch

        await asyncio.gather(*(publisher() for _ in range(64)))
        elapsed = loop.time() - start
        await asyncio.sleep(1.0)
        counter.cancel()
    return {
        "sent": sent,
        "answered": answered,
        "turned_away": turned_away,
        "refused": refused,  # by the engine: a broken check unless 0 (every order rests)
        "elapsed_s": round(elapsed, 3),
        "offered_per_s": round(sent / elapsed)
    }


# --- the quiet bot ---------------------------------------------------------------------
async def _quiet(args) -> dict:
    from gateway.bots.client import ExchangeClient

    samples: list[int] = []
    timeline: list[tuple[float, float]] = []
    refused: list[dict] = []
    async with ExchangeClient("quiet", args.password, "127.0.0.1", args.port, timeout=30,
                              resend_after=60) as client:
        await client.request(_order("warm", 0))

        def answered(sent: int, at: float, future) -> None:
            took = time.perf_counter_ns() - sent
            samples.append(took)
            if future.exception() is None and future.result().get("report") != "accepted":
                refused.append(future.result())
            timeline.append((round(at, 3), round(took / 1e6, 1)))

        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        n = 0
        while loop.time() - start < args.seconds:
            sent = time.perf_counter_ns()
            future = client.submit(_order("q", n))
            future.add_done_callback(functools.partial(answered, sent, loop.time() - start))
            futures.append(future)
            n += 1
            await asyncio.sleep(QUIET_EVERY)
        _, pending = await asyncio.wait(futures, timeout=30)
    return {"sent": n, "unanswered": len(pending), "refused": len(refused),
            "first_refusal": refused[0] if refused else None, "samples_ns": samples,
            "slowest": sorted(timeline, key=lambda t: -t[1])[:12]}  # (s into the run, ms)


# --- the orchestrator ------------------------------------------------------------------
def _one(kind: str, batch: int, seconds: float) -> dict:
    from gateway.mqtt.brokerconfig import write_broker_config

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from mosquitto import Mosquitto, free_port  # the test suite's broker runner

    with tempfile.TemporaryDirectory(prefix="carbonx-fairness-") as scratch:
        directory = Path(scratch)
        port = free_port()
        funding = directory / "funding.csv"
        funding.write_text("action,account,instrument,qty\n"
                           "deposit,quiet,CNY,100000000\nissue,flood,CEA25,100000000\n")
        broker = None
        if kind == "mosquitto":
            credentials = write_broker_config(directory / "broker", port, {
                "quiet": None,
                "flood": None
            })
            broker = Mosquitto(directory / "broker")
            broker.__enter__()
            command = ["--broker", f"mqtt://gateway:{credentials['gateway']}@127.0.0.1:{port}"]
            ready = "gateway on"
        else:
            path = directory / "credentials.json"
            command = ["--port", str(port), "--credentials", str(path)]
            ready = "gateway ready"
        try:
            exchange, log = _start([
                # Always open: outside the default market's trading day every order
                # would be measured being refused.
                sys.executable, "-m", "gateway.cli", "serve", *command, "--init",
                str(funding), "--always-open", "--log-level", "ERROR"
            ], ready, directory / "serve.log")
            if kind != "mosquitto":
                credentials = json.loads((directory / "credentials.json").read_text())
            try:
                base = [sys.executable, "-m", "benchmarks.fairness"]
                quiet, quiet_log = _start([
                    *base, "quiet", "--port",
                    str(port), f"--password={credentials['quiet']}", "--seconds",
                    str(seconds + 1.0)
                ], "ready", directory / "quiet.log")
                flood, flood_log = _start([
                    *base, "flood", "--port",
                    str(port), f"--password={credentials['flood']}", "--seconds",
                    str(seconds), "--batch",
                    str(batch)
                ], "ready", directory / "flood.log")
                result = {
                    "quiet": _result(quiet, quiet_log, seconds),
                    "flood": _result(flood, flood_log, seconds)
                }
            finally:
                _stop(exchange)
                log.close()
        finally:
            if broker is not None:
                broker.__exit__(None, None, None)
    quiet = result["quiet"]
    quiet.update(_percentiles(quiet.pop("samples_ns")))
    return result


def _result(process, log, seconds: float) -> dict:
    out, _ = process.communicate(timeout=seconds + 120)
    log.write(out)
    log.close()
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"a load process failed:\n{out[-3000:]}")


def run_benchmark(settings: dict) -> dict:
    result: dict = {
        "settings": {
            "seconds": settings["seconds"],
            "batches": list(settings["batches"])
        }
    }
    for kind in ("embedded", "mosquitto"):
        for batch in settings["batches"]:
            result[f"{kind}_batch{batch}"] = _one(kind, batch, settings["seconds"])
    worst = max(run["quiet"].get("p99_ms", 1e9) for key, run in result.items() if key != "settings")
    unanswered = sum(run["quiet"]["unanswered"] for key, run in result.items() if key != "settings")
    refused = sum(run["quiet"]["refused"] + run["flood"]["refused"]
                  for key, run in result.items() if key != "settings")
    result["verdict"] = {
        "refused": refused,  # by the engine: a broken check unless 0 (every order rests)
        "worst_quiet_p99_ms": worst,
        "target_met": worst < TARGET_P99_MS,
        "quiet_unanswered": unanswered
    }
    return result


def render(result: dict) -> str:
    lines = [
        "quiet bot's answer latency while another account floods (ms)",
        "broker     flood batch  offered/s  answered  turned away   "
        "p50      p99      max   unanswered"
    ]
    for key, run in result.items():
        if key in ("settings", "verdict"):
            continue
        kind, _, batch = key.partition("_batch")
        q, f = run["quiet"], run["flood"]
        lines.append(f"{kind:<10} {batch:>11}  {f['offered_per_s']:>9,}  {f['answered']:>8,}"
                     f"  {f['turned_away']:>11,}  {q.get('p50_ms', '-'):>6}  "
                     f"{q.get('p99_ms', '-'):>7}  {q.get('max_ms', '-'):>7}  "
                     f"{q['unanswered']:>5}")
    v = result["verdict"]
    lines.append(f"target: quiet p99 < {TARGET_P99_MS:g} ms: {v['target_met']} "
                 f"(worst {v['worst_quiet_p99_ms']} ms)")
    lines.append(f"orders refused (each order rests, so a broken check unless 0): {v['refused']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    for role in ("flood", "quiet"):
        one = sub.add_parser(role)
        one.add_argument("--port", type=int, required=True)
        one.add_argument("--password", required=True)
        one.add_argument("--seconds", type=float, default=3.0)
        one.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where to write fairness.json")
    args = parser.parse_args(argv)
    if args.role in ("flood", "quiet"):
        from gateway.mqtt.serve import run_async

        holder: list = []

        async def go() -> None:
            holder.append(await (_flood(args) if args.role == "flood" else _quiet(args)))

        run_async(go())
        emit(holder[0])
        return 0
    result = run_benchmark(QUICK if args.quick else FULL)
    print(render(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("fairness-quick.json" if args.quick else "fairness.json")
     ).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not result["verdict"]["refused"] else 1


if __name__ == "__main__":
    sys.exit(main())
