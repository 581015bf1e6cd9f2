"""``python -m benchmarks.gateway [--quick]``: the MQTT gateway over a real mosquitto.

Processes: mosquitto (configured by ``carbonx broker-config``, on a free loopback port),
the exchange (``carbonx serve --broker ... --init FUNDING``: engine, ledger, gateway, as
shipped), and one load process whose bots are ``ExchangeClient`` connections, one per
account. Beside each gateway figure stands the same load through a raw echo (a plain
aiomqtt process subscribed to the orders topics that publishes each message straight
back on the sender's exec topic): the broker and client library alone, the limit.

Measured:

- latency: order sent to its ``accepted`` report received, per order, one order per
  message, paced at fixed rates (1,000, 2,000 and 5,000 orders/s): p50, p99, p99.9, max;
- throughput: several bots sending as fast as a window of unanswered orders allows,
  unbatched (one order a message) and in batches of 100 (a window of 5,000 a bot, the
  gateway's intake per account); orders/s, and lost messages (orders sent minus answers
  received: must be zero).

Targets (reported, never enforced): p99 <= 5 ms at 2,000 orders/s; >= 10,000 orders/s
unbatched; >= 100,000 orders/s batched; zero lost. Writes ``results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .stats import RESULT_PREFIX, emit

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"

TARGET_P99_MS = 5.0  # at 2,000 orders/s
TARGET_UNBATCHED = 10_000  # orders/s
TARGET_BATCHED = 100_000  # orders/s
RATES = (1_000, 2_000, 5_000)
FULL = {"seconds": 4.0, "bots": 4, "orders": 40_000, "batched_orders": 400_000}
QUICK = {"seconds": 0.5, "bots": 2, "orders": 2_000, "batched_orders": 10_000}


# --- the load process ------------------------------------------------------------------
def _order(bot, n: int) -> dict:
    # Resting, never crossing: sells high, buys low, so every order is accepted and the
    # book grows as on a busy day.
    side = "sell" if n % 2 else "buy"
    cents = 7000 + n % 500 if side == "sell" else 5000 - n % 500
    return {
        "action": "new",
        "order_id": f"b{bot}-{n}",
        "instrument": "CEA25",
        "side": side,
        "price": f"{cents // 100}.{cents % 100:02d}",
        "qty": 1
    }


_FIRST_REFUSAL: list = []  # the first refusing answer, to say why in the result


def _rejected(future: asyncio.Future) -> bool:
    """Whether an order's answer refused it (every order here should rest)."""
    refused = (future.cancelled() or future.exception() is not None
               or future.result().get("report") != "accepted")
    if refused and not _FIRST_REFUSAL:
        _FIRST_REFUSAL.append(repr(future) if future.cancelled() or future.exception()
                              else future.result())
    return refused


async def _latency(client, rate: int, seconds: float, bot: int) -> dict:
    loop = asyncio.get_running_loop()
    count = max(int(rate * seconds), 1)
    samples: list[int] = []
    futures = []
    start = loop.time()
    for n in range(count):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter_ns()
        future = client.submit(_order(bot, n))
        future.add_done_callback(lambda f, sent=sent: samples.append(time.perf_counter_ns() - sent))
        futures.append(future)
    done, pending = await asyncio.wait(futures, timeout=30)
    achieved = count / max(loop.time() - start, 1e-9)
    return {
        "sent": count,
        "answered": len(done),
        "rejected": sum(_rejected(f) for f in done),
        "lost": len(pending),
        "rate_achieved": round(achieved),
        "samples_ns": samples
    }


async def _flood(clients, per_bot: int, batch: int, window: int, tag: str) -> dict:
    loop = asyncio.get_running_loop()

    async def one(index: int, client) -> int:
        # A window of unanswered orders, kept by done-callbacks: asyncio.wait over the
        # whole window on every answer costs O(window) each time (profiled: it starved
        # the load process).
        answered = 0
        in_flight = 0
        room = asyncio.Event()
        finished = loop.create_future()

        def done(future) -> None:
            nonlocal answered, in_flight
            answered += 1
            rejected[index] += _rejected(future)
            in_flight -= 1
            if in_flight < window:
                room.set()
            if answered == per_bot and not finished.done():
                finished.set_result(None)

        n = 0
        while n < per_bot:
            size = min(batch, per_bot - n)
            for future in client.submit_many([_order(f"{tag}{index}", n + i) for i in range(size)]):
                future.add_done_callback(done)
            n += size
            in_flight += size
            if in_flight >= window:
                room.clear()
                await room.wait()
        try:
            await asyncio.wait_for(asyncio.shield(finished), 60)
        except TimeoutError:
            pass
        return answered

    rejected = [0] * len(clients)
    start = loop.time()
    answered = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    elapsed = loop.time() - start
    sent = per_bot * len(clients)
    return {
        "sent": sent,
        "answered": sum(answered),
        "rejected": sum(rejected),
        "lost": sent - sum(answered),
        "elapsed_s": round(elapsed, 4),
        "orders_per_s": round(sum(answered) / elapsed)
    }


async def _load(args) -> dict:
    from gateway.bots.client import ExchangeClient
    from gateway.mqtt.service import GatewaySettings

    credentials = json.loads(Path(args.credentials).read_text())
    accounts = [f"bot{i}" for i in range(args.bots)]
    result: dict = {}
    clients = [
        ExchangeClient(a, credentials[a], "127.0.0.1", args.port, timeout=30, resend_after=60)
        for a in accounts
    ]
    for client in clients:
        await client.__aenter__()
    try:
        warm = await _flood(clients[:1], 200, 1, 50, "w")  # connections and caches warm
        result["warmup_lost"] = warm["lost"]
        for rate in args.rates:
            result[f"latency_{rate}"] = await _latency(clients[0], rate, args.seconds, f"r{rate}-")
        result["unbatched"] = await _flood(clients, args.orders // len(clients), 1, 2000, "u")
        # The window is the gateway's intake per account: a bot with more unanswered orders
        # than that may be turned away "overloaded" (to resend), which would count here as a
        # refusal.
        result["batched"] = await _flood(clients, args.batched_orders // len(clients), 100,
                                         GatewaySettings().intake, "x")
    finally:
        for client in clients:
            await client.close()
    result["first_refusal"] = _FIRST_REFUSAL[0] if _FIRST_REFUSAL else None
    return result


def _echo_main(args) -> None:
    """The raw limit: republish every orders message on the sender's exec topic, with
    the same per-loop-turn batching as the gateway."""
    import aiomqtt

    from gateway.mqtt.serve import run_async
    from gateway.protocol import PENDING_CALLS_WARNING, SOCKET_OPTIONS, account_of

    async def main() -> None:
        async with aiomqtt.Client("127.0.0.1", args.port, username="gateway",
                                  password=args.password, max_inflight_messages=1000,
                                  socket_options=SOCKET_OPTIONS) as client:
            client.pending_calls_threshold = PENDING_CALLS_WARNING
            await client.subscribe("cx/v1/orders/+", qos=1)
            print("ready", flush=True)
            async for message in client.messages:
                account = account_of(message.topic.value)
                body = json.loads(message.payload)
                items = body if isinstance(body, list) else [body]
                answer = [{
                    "report": "accepted",
                    "command_id": item["command_id"],
                    "order_id": item.get("order_id")
                } for item in items]
                asyncio.ensure_future(
                    client.publish(f"cx/v1/exec/{account}", json.dumps(answer), qos=1))

    run_async(main())


# --- the orchestrator ------------------------------------------------------------------
def _percentiles(samples: list[int]) -> dict:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1e6, 3)

    return {
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(ordered[-1] / 1e6, 3),
        "n": len(ordered)
    }


def _summarise(raw: dict) -> dict:
    out = {}
    for key, value in raw.items():
        if key.startswith("latency_"):
            value = dict(value)
            value.update(_percentiles(value.pop("samples_ns")))
        out[key] = value
    return out


def _start(command: list[str], ready: str, log: Path, timeout: float = 20.0):
    """Start a process and wait for *ready* in its output (stderr joined to stdout)."""
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        handle.write(line)
        handle.flush()
        seen.append(line)
        if ready in line:
            return process, handle
    process.kill()
    # the log lives in a temporary directory that goes with the run: say what it said
    tail = "".join(seen[-15:]).rstrip() or "(no output)"
    raise RuntimeError(f"{' '.join(command[1:4])} did not start within {timeout:g} s:\n{tail}")


def _stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_load(settings: dict, port: int, credentials: Path) -> dict:
    command = [
        sys.executable, "-m", "benchmarks.gateway", "load", "--port",
        str(port), "--credentials",
        str(credentials), "--bots",
        str(settings["bots"]), "--seconds",
        str(settings["seconds"]), "--orders",
        str(settings["orders"]), "--batched-orders",
        str(settings["batched_orders"]), "--rates", *map(str, RATES)
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return _summarise(json.loads(line[len(RESULT_PREFIX):]))
    raise RuntimeError(f"load process failed:\n{done.stderr[-3000:]}")


def run_benchmark(settings: dict) -> dict:
    from gateway.mqtt.brokerconfig import AccountLimits, write_broker_config

    bench_limits = AccountLimits.scaled(message_rate=20_000, byte_rate=64 * 1024 * 1024)

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from mosquitto import Mosquitto, free_port  # the test suite's broker runner

    bots = [f"bot{i}" for i in range(settings["bots"])]
    result: dict = {"settings": settings}
    with tempfile.TemporaryDirectory(prefix="carbonx-gwbench-") as scratch:
        directory = Path(scratch)
        port = free_port()
        # The broker's per-account limit raised to the load one bot offers here (5,000
        # orders/s one a message): this measures the gateway, not the limit.
        credentials = write_broker_config(directory / "broker", port, {b: None
                                                                       for b in bots},
                                          limits=bench_limits)
        (directory / "credentials.json").write_text(json.dumps(credentials))
        funding = directory / "funding.csv"
        rows = ["action,account,instrument,qty"]
        for bot in bots:
            # Allowances for every sell, and few enough that the bot's buys stay under
            # its position limit (1,000,000 t counting what it holds).
            rows += [f"deposit,{bot},CNY,100000000", f"issue,{bot},CEA25,500000"]
        funding.write_text("\n".join(rows) + "\n")
        with Mosquitto(directory / "broker"):
            url = f"mqtt://gateway:{credentials['gateway']}@127.0.0.1:{port}"
            exchange, log = _start([
                # Always open: the default market's trading day is a few hours of Beijing
                # time, and outside it every order would be measured being refused.
                sys.executable, "-m", "gateway.cli", "serve", "--broker", url, "--init",
                str(funding), "--always-open", "--log-level", "WARNING"
            ], "gateway on", directory / "serve.log")
            try:
                time.sleep(0.5)
                result["gateway"] = _run_load(settings, port, directory / "credentials.json")
            finally:
                _stop(exchange)
                log.close()
            echo, log = _start([
                sys.executable, "-m", "benchmarks.gateway", "echo", "--port",
                str(port), f"--password={credentials['gateway']}"
            ], "ready", directory / "echo.log")
            try:
                result["raw"] = _run_load(settings, port, directory / "credentials.json")
            finally:
                _stop(echo)
                log.close()
    result["verdict"] = _verdict(result)
    return result


def _verdict(result: dict) -> dict:
    gw = result["gateway"]
    lost = sum(v.get("lost", 0) for v in gw.values() if isinstance(v, dict))
    rejected = sum(v.get("rejected", 0) for v in gw.values() if isinstance(v, dict))
    return {
        "rejected": rejected,  # a broken check unless 0: the orders were made to rest
        "p99_at_2000_ms": gw["latency_2000"].get("p99_ms"),
        "p99_target_met": (gw["latency_2000"].get("p99_ms") or 1e9) <= TARGET_P99_MS,
        "unbatched_target_met": gw["unbatched"]["orders_per_s"] >= TARGET_UNBATCHED,
        "batched_target_met": gw["batched"]["orders_per_s"] >= TARGET_BATCHED,
        "lost": lost,
        "zero_lost": lost == 0
    }


def render(result: dict) -> str:
    gw, raw = result["gateway"], result["raw"]
    lines = [
        "order -> accepted latency, one order a message (gateway | raw echo, ms)",
        "rate/s   achieved   p50            p99            p99.9          max"
    ]
    for rate in RATES:
        g, r = gw[f"latency_{rate}"], raw[f"latency_{rate}"]
        cells = "  ".join(f"{g.get(k, '-'):>6} | {r.get(k, '-'):<6}"
                          for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms"))
        lines.append(f"{rate:>6}   {g['rate_achieved']:>8}   {cells}")
    lines += ["", "throughput, several bots (orders/s; gateway | raw echo; lost)"]
    for key in ("unbatched", "batched"):
        g, r = gw[key], raw[key]
        lines.append(f"{key:<10} {g['orders_per_s']:>9,} | {r['orders_per_s']:<9,}  "
                     f"lost {g['lost']} | {r['lost']}")
    v = result["verdict"]
    lines += [
        "", f"targets: p99 <= {TARGET_P99_MS} ms at 2,000/s: {v['p99_target_met']}; "
        f">= {TARGET_UNBATCHED:,}/s unbatched: {v['unbatched_target_met']}; "
        f">= {TARGET_BATCHED:,}/s batched: {v['batched_target_met']}; "
        f"zero lost: {v['zero_lost']}",
        f"orders refused (each order rests, so a broken check unless 0): {v['rejected']}"
    ]
    return "\n".join(lines)


def run_load(load, args: argparse.Namespace) -> int:
    """Run the ``load`` role: the coroutine *load(args)*, its result emitted as JSON."""
    from gateway.mqtt.serve import run_async

    holder: list = []

    async def go() -> None:
        holder.append(await load(args))

    run_async(go())
    emit(holder[0])
    return 0


def load_parser(sub, orders: int) -> argparse.ArgumentParser:
    """The ``load`` role's arguments (a fresh process of bots): the broker's port, the
    credentials file, how many bots and how many orders each flood sends."""
    load = sub.add_parser("load")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--credentials", required=True)
    load.add_argument("--bots", type=int, default=4)
    load.add_argument("--orders", type=int, default=orders)
    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    load = load_parser(sub, 40_000)
    load.add_argument("--seconds", type=float, default=3.0)
    load.add_argument("--batched-orders", type=int, default=400_000)
    load.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    echo = sub.add_parser("echo")
    echo.add_argument("--port", type=int, required=True)
    echo.add_argument("--password", required=True)
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds not minutes")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where to write gateway.json")
    args = parser.parse_args(argv)
    if args.role == "load":
        return run_load(_load, args)
    if args.role == "echo":
        _echo_main(args)
        return 0
    result = run_benchmark(QUICK if args.quick else FULL)
    print(render(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gateway-quick.json" if args.quick else "gateway.json"
    (out / name).write_text(json.dumps(result, indent=1) + "\n")
    verdict = result["verdict"]
    return 0 if verdict["zero_lost"] and not verdict["rejected"] else 1


if __name__ == "__main__":
    sys.exit(main())
