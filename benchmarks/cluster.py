"""``python -m benchmarks.cluster [--quick]``: the exchange on a JetStream log beside the
exchange on its local journal, and how long a failover takes.

Set-ups, in one run, each with its own mosquitto (``carbonx broker-config``, the
per-account limit raised as in ``benchmarks.gateway``) and the same funding:

- local: ``carbonx serve --broker ... --journal DIR`` (commands fsynced to local
  segments before they act);
- cluster: three ``nats-server`` with JetStream (file storage, three replicas) and two
  ``carbonx serve --cluster`` nodes, the leader the gateway, the other following.

Each takes the load process of ``benchmarks.gateway`` (its bots, resting orders):
order-to-``accepted`` latency one order a message at 1,000/s, and batched throughput
(batches of 100). Then failover: a bot places orders one at a time while the leader is
killed (SIGKILL) at ``kills`` random points, the killed node started again as a
follower each time; measured per kill, from the kill to the new leader's "gateway
ready", and to the bot's next answer. Then the NATS server leading the log's stream is
killed (alone, or with ``--nats-with-leader`` at the moment of a leader kill) and the
leader is killed ``kills_after`` more times on the two servers left. Targets (reported,
never enforced): clustered throughput at least half of the local journal's; failover
median under 2 s.
A refused order or an order the log lost is a broken check (exit status 1).
Writes ``results/cluster.json`` (``cluster-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import gateway as gw

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"

FULL = {"seconds": 3.0, "bots": 4, "orders": 4_000, "batched_orders": 200_000, "kills": 10,
        "kills_after": 3, "nats_with_leader": False}
QUICK = {"seconds": 0.5, "bots": 2, "orders": 400, "batched_orders": 10_000, "kills": 2,
         "kills_after": 1, "nats_with_leader": False}
TARGET_RATIO = 0.5
TARGET_FAILOVER_MEDIAN_S = 2.0


def _funding(directory: Path, bots: list[str]) -> Path:
    rows = ["action,account,instrument,qty"]
    for bot in bots:
        rows += [f"deposit,{bot},CNY,100000000", f"issue,{bot},CEA25,500000"]
    rows.append("issue,killbot,CEA25,500000")
    path = directory / "funding.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _limits():
    """The broker's per-account limit, raised for the load's bots (as in
    benchmarks.gateway), the same for both set-ups."""
    from gateway.mqtt.brokerconfig import AccountLimits

    return AccountLimits.scaled(message_rate=20_000, byte_rate=64 * 1024 * 1024)


def _load(settings: dict, port: int, credentials: Path) -> dict:
    gw.RATES = (1000, )  # order -> accepted at one rate: this compares set-ups
    return gw._run_load(settings, port, credentials)


def _local(settings: dict, directory: Path, bots: list[str]) -> dict:
    from gateway.mqtt.brokerconfig import write_broker_config

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from mosquitto import Mosquitto, free_port

    port = free_port()
    limits = _limits()
    credentials = write_broker_config(directory / "broker", port, dict.fromkeys(bots),
                                      limits=limits)
    (directory / "credentials.json").write_text(json.dumps(credentials))
    with Mosquitto(directory / "broker"):
        url = f"mqtt://gateway:{credentials['gateway']}@127.0.0.1:{port}"
        exchange, log = gw._start([
            sys.executable, "-m", "gateway.cli", "serve", "--broker", url, "--init",
            str(_funding(directory, bots)), "--always-open", "--journal",
            str(directory / "journal"), "--log-level", "WARNING"
        ], "gateway on", directory / "serve.log")
        try:
            return _load(settings, port, directory / "credentials.json")
        finally:
            gw._stop(exchange)
            log.close()


def _cluster(settings: dict, directory: Path, bots: list[str]) -> dict:
    sys.path.insert(0, str(ROOT.parent / "tests"))
    from clusterharness import Harness  # the test suite's: nats-server, mosquitto, nodes

    limits = _limits()
    funding = _funding(directory, bots).read_text()
    harness = Harness(directory, accounts=(*bots, "killbot"), init=funding, limits=limits)
    (directory / "credentials.json").write_text(json.dumps(harness.credentials))
    try:
        harness.node("a")
        harness.wait_leader()
        harness.node("b")
        time.sleep(1.0)
        result = _load(settings, harness.port, directory / "credentials.json")
        result["failover"] = _failover(harness, settings["kills"], settings["kills_after"],
                                       settings["nats_with_leader"])
        return result
    finally:
        harness.close()


def _failover(harness, kills: int, kills_after: int, both: bool) -> dict:
    """*kills* leader kills on three NATS servers; then one NATS server lost (with
    *both*, at the moment of a leader kill; else alone, the leader running on); then
    *kills_after* leader kills on the two servers left."""
    import asyncio
    import threading

    from gateway.bots.client import ExchangeClient

    answers: list[float] = []  # time.monotonic() of each answer
    accepted: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    async def bot() -> None:
        async with ExchangeClient("killbot", harness.credentials["killbot"], "127.0.0.1",
                                  harness.port, timeout=60, resend_after=0.25) as client:
            n = 0
            while not stop.is_set():
                n += 1
                answer = await client.request({"action": "new", "order_id": f"k{n}",
                                               "instrument": "CEA25", "side": "sell",
                                               "price": f"{80 + n % 40}.00", "qty": 1})
                answers.append(time.monotonic())
                if answer.get("report") == "accepted":
                    accepted.append(f"killbot/k{n}")
                await asyncio.sleep(0.005)

    def run() -> None:
        try:
            asyncio.run(bot())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    rng = random.Random(7)

    def kill_leader(also_server: bool = False) -> tuple[float, float]:
        """Kill the leader (and with *also_server*, at the same moment, the NATS server
        leading the log's stream); the seconds to the new leader's "gateway ready" and
        to the bot's next answer; the node started again as a follower."""
        time.sleep(rng.uniform(0.3, 1.5))
        leader = harness.wait_leader()
        server = harness.log_server() if also_server else None
        harness.nodes[leader].kill()
        killed = time.monotonic()
        if server is not None:
            harness.kill_server(server)
        harness.wait_leader(other_than=leader, timeout=60)
        to_leader = time.monotonic() - killed
        to_answer = next_answer(killed)
        harness.nodes[leader].start()
        harness.wait_following(leader, timeout=60)  # a standby again before the next kill
        return to_leader, to_answer

    def next_answer(since: float) -> float:
        while not answers or answers[-1] < since:
            time.sleep(0.01)
        return next(a for a in answers if a > since) - since

    kills_3: list[tuple[float, float]] = []
    kills_2: list[tuple[float, float]] = []
    try:
        while len(answers) < 5:
            time.sleep(0.05)
        for _ in range(kills):
            kills_3.append(kill_leader())
        if both:
            # The NATS server leading the log's stream dies with the leader: JetStream
            # elects the stream's new leader first (nats-server: 4-9 s).
            together = kill_leader(also_server=True)
        else:
            # The NATS server leading the log's stream dies alone: the leader waits out
            # JetStream's election and goes on.
            time.sleep(rng.uniform(0.3, 1.5))
            leader = harness.wait_leader()
            server = harness.log_server()
            harness.kill_server(server)
            killed = time.monotonic()
            stall = next_answer(killed)
            before = sum(1 for a in answers if a <= killed)
            while len(answers) < before + 5:
                time.sleep(0.05)
            kept = harness.wait_leader() == leader
            harness.wait_groups_led()  # then leaders are killed with JetStream settled
        for _ in range(kills_after):
            kills_2.append(kill_leader())
    finally:
        stop.set()
        thread.join(60)
    from clusterharness import replayed

    engine = replayed(harness.entries())
    live = {o.order_id for o in engine.live_orders() if o.account == "killbot"}
    result = {"kills": kills, **_spread([k[0] for k in kills_3], [k[1] for k in kills_3])}
    if both:
        result["with_nats_server"] = {"to_new_leader_s": round(together[0], 3),
                                      "to_next_answer_s": round(together[1], 3)}
    else:
        result["nats_server_lost"] = {"to_next_answer_s": round(stall, 3),
                                      "leader_kept": kept}
    result["after_nats_server_lost"] = {
        "kills": kills_after, **_spread([k[0] for k in kills_2], [k[1] for k in kills_2])}
    result.update({"acknowledged": len(accepted),
                   "acknowledged_in_log": len(live & set(accepted)),
                   "bot_errors": [repr(e) for e in errors]})
    return result


def _spread(to_leader: list[float], to_answer: list[float]) -> dict:
    if not to_leader:
        return {}
    return {
        "to_new_leader_s": [round(t, 3) for t in to_leader],
        "to_next_answer_s": [round(t, 3) for t in to_answer],
        "median_to_new_leader_s": round(statistics.median(to_leader), 3),
        "max_to_new_leader_s": round(max(to_leader), 3),
        "median_to_next_answer_s": round(statistics.median(to_answer), 3),
        "max_to_next_answer_s": round(max(to_answer), 3),
    }


def run_benchmark(settings: dict) -> dict:
    bots = [f"bot{i}" for i in range(settings["bots"])]
    result: dict = {"settings": settings}
    with tempfile.TemporaryDirectory(prefix="carbonx-cluster-") as scratch:
        directory = Path(scratch)
        (directory / "local").mkdir()
        (directory / "cluster").mkdir()
        result["local"] = _local(settings, directory / "local", bots)
        result["cluster"] = _cluster(settings, directory / "cluster", bots)
    local, cluster = result["local"], result["cluster"]
    ratio = cluster["batched"]["orders_per_s"] / max(local["batched"]["orders_per_s"], 1)
    failover = cluster["failover"]
    refused = sum(v.get("rejected", 0) for side in (local, cluster) for v in side.values()
                  if isinstance(v, dict))
    result["verdict"] = {
        "batched_ratio": round(ratio, 3),
        "ratio_target_met": ratio >= TARGET_RATIO,
        "failover_median_s": failover["median_to_new_leader_s"],
        "failover_target_met": failover["median_to_new_leader_s"] < TARGET_FAILOVER_MEDIAN_S,
        "refused": refused,
        "lost": failover["acknowledged"] - failover["acknowledged_in_log"],
    }
    return result


def render(result: dict) -> str:
    local, cluster, v = result["local"], result["cluster"], result["verdict"]
    f = cluster["failover"]
    lines = ["the exchange on its local journal | on a 3-replica JetStream log (2 nodes)"]
    for key in ("latency_1000", ):
        a, b = local[key], cluster[key]
        lines.append(f"order -> accepted at 1,000/s: p50 {a.get('p50_ms')} | {b.get('p50_ms')}"
                     f" ms, p99 {a.get('p99_ms')} | {b.get('p99_ms')} ms")
    for key in ("unbatched", "batched"):
        lines.append(f"{key:<10} {local[key]['orders_per_s']:>9,} | "
                     f"{cluster[key]['orders_per_s']:,} orders/s")
    lines += [
        f"batched ratio {v['batched_ratio']} (target >= {TARGET_RATIO}): "
        f"{'met' if v['ratio_target_met'] else 'missed'}",
        f"failover over {f['kills']} kills: to the new leader median "
        f"{f['median_to_new_leader_s']} s, max {f['max_to_new_leader_s']} s; to the bot's "
        f"next answer median {f['median_to_next_answer_s']} s, max "
        f"{f['max_to_next_answer_s']} s (target median < {TARGET_FAILOVER_MEDIAN_S} s: "
        f"{'met' if v['failover_target_met'] else 'missed'})",
        _render_nats_loss(f),
        f"checks: {f['acknowledged_in_log']}/{f['acknowledged']} acknowledged orders in the "
        f"log; refused {v['refused']}",
    ]
    return "\n".join(lines)


def _render_nats_loss(f: dict) -> str:
    if "with_nats_server" in f:
        w = f["with_nats_server"]
        line = (f"leader and the log's NATS server killed together: new leader after "
                f"{w['to_new_leader_s']} s, bot's next answer after {w['to_next_answer_s']} s")
    else:
        n = f["nats_server_lost"]
        line = (f"the log's NATS server killed alone: bot's next answer after "
                f"{n['to_next_answer_s']} s, the leader "
                f"{'kept leading' if n['leader_kept'] else 'was replaced'}")
    a = f["after_nats_server_lost"]
    if a.get("kills"):
        line += (f"; then {a['kills']} kills on two NATS servers: to the new leader median "
                 f"{a['median_to_new_leader_s']} s, max {a['max_to_new_leader_s']} s")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, two kills")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where to write cluster.json")
    parser.add_argument("--nats-with-leader", action="store_true",
                        help="kill the log's NATS server at the moment of a leader kill "
                             "(by default it is killed alone, the leader running on)")
    args = parser.parse_args(argv)
    result = run_benchmark({**(QUICK if args.quick else FULL),
                            "nats_with_leader": args.nats_with_leader})
    print(render(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("cluster-quick.json" if args.quick else "cluster.json")
     ).write_text(json.dumps(result, indent=1) + "\n")
    v = result["verdict"]
    return 0 if not v["refused"] and not v["lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
