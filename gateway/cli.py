"""``carbonx``: the command line that joins the core and the edge.

Exit status: 0 on success (``carbonx`` alone prints the help, ``carbonx --version`` the
version); 2 for bad input (a file that cannot be read, a bad option, a market file that
does not parse), with one clear message on stderr and no traceback; 1 when
``journal-cut`` without ``--yes`` finds something to cut; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from exchange.commands import STP_MODES
from exchange.journal import JournalError
from exchange.market import MarketConfigError, load_market
from exchange.orderfile import OrderFileError
from gateway.errors import UsageError
from gateway.tools.outputs import check_outputs
from gateway.mqtt.brokerconfig import (ACCOUNT_BYTE_RATE, ACCOUNT_MESSAGE_RATE, EMBEDDED_BYTE_RATE,
                                       EMBEDDED_MESSAGE_RATE)

__all__ = ["main", "build_parser", "package_version"]

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def package_version() -> str:
    """Return carbonx's version: the installed package's, else the ``pyproject.toml`` of
    the source tree this module runs from, else ``"unknown"``."""
    try:
        return metadata.version("carbonx")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as fh:
            project = tomllib.load(fh)["project"]
        if project["name"] == "carbonx":
            return str(project["version"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        pass
    return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: print ``carbonx X.Y.Z`` on stdout and exit 0 (looked up only then)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"carbonx {package_version()}")
        parser.exit(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonx", description="carbonx: an exchange engine for carbon emission allowances.")
    parser.add_argument("--version", action=_VersionAction, help="print carbonx's version and exit")
    # No COMMAND at all prints this help (see main), so the subcommand is optional here.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    replay = sub.add_parser(
        "replay", help="replay an order file through the matching engine",
        description=("Replay an order file (CSV with a header row, or NDJSON with the same keys) "
                     "through the engine and report what happened. Rows that break a market rule "
                     "are rejected and the replay goes on; a row that cannot be read stops it "
                     "with exit status 2."))
    replay.add_argument("file", metavar="FILE", help="the order file")
    replay.add_argument("--format", choices=("csv", "ndjson"),
                        help="file format (default: from the extension; .ndjson, .jsonl and "
                        ".json: ndjson)")
    replay.add_argument("--market", metavar="TOML",
                        help="market configuration (default: the shipped default market)")
    replay.add_argument("--ledger", action="store_true",
                        help="run with accounts, pre-trade risk and settlement")
    replay.add_argument(
        "--stp", choices=STP_MODES, metavar="MODE",
        help=f"self-trade prevention for rows whose stp is empty: "
        f"{', '.join(STP_MODES)} (default: cancel_resting)")
    replay.add_argument("--fills", metavar="OUT.ndjson", help="write every trade as NDJSON")
    replay.add_argument("--events", metavar="OUT.ndjson", help="write every event as NDJSON")
    replay.add_argument(
        "--daily", metavar="OUT.csv",
        help="write each end of day's statistics per instrument as CSV (date,instrument,open,"
        "high,low,close,volume,turnover,block_volume,auction_volume)")
    replay.add_argument(
        "--mm-report", metavar="OUT.csv",
        help="write each end of day's market-maker assessment per account and instrument as "
        "CSV (day,account,instrument,quoted_s,session_s,presence_pct,average_spread,met,rebate,"
        "currency): the market file's [market_makers.SYMBOL] obligations, --ledger")
    replay.add_argument(
        "--always-open", action="store_true",
        help="set the market's schedule aside: rows with a ts are not checked against its "
        "sessions, weekdays and holidays")
    replay.add_argument(
        "--no-position-limits", action="store_true",
        help="set the market's position limits ([limits]) aside: for synthetic files such as "
        "gen-orders --fund ones, whose accounts hold more than a limit allows")
    replay.add_argument("--json", action="store_true",
                        help="print one JSON summary object on stdout")
    replay.add_argument(
        "--journal", metavar="DIR",
        help="with --ledger: journal every input command in DIR (a new or "
        "empty directory), group-committed with fsync, with snapshots; "
        "'carbonx holdings DIR' recovers from it")
    replay.add_argument(
        "--holdings", metavar="OUT.csv",
        help="with --ledger: write the final holdings as CSV (account,asset,available,held,locked; "
        "pledged after them when anything is pledged)")
    replay.set_defaults(run=_cmd_replay)

    holdings = sub.add_parser(
        "holdings", help="recover the state from a journal directory and show holdings",
        description=(
            "Recover the exchange's state from a journal directory (latest snapshot, then "
            "the journaled commands after it; a torn last frame, never committed, is "
            "ignored and reported; a damaged snapshot is passed over with a warning) and "
            "print each account's holdings. Damage anywhere else (a frame or segment that "
            "fails its checksum, a missing segment, a changed meta.json or manifest.json) "
            "is an error naming the file and byte, exit status 2, and nothing on disk "
            'changes: see \'carbonx journal-cut\'. --json prints {"seq": N, "holdings": [...], '
            '"positions": [...], "margin": [...]}, N being the number of input commands '
            "recovered; positions are futures and options (lots, average price, margin, "
            "last settlement), margin is each such account's margin held, equity, initial "
            "and maintenance margin and call."))
    holdings.add_argument("directory", metavar="DIR", help="the journal directory")
    holdings.add_argument("--json", action="store_true", help="print one JSON object")
    holdings.set_defaults(run=_cmd_holdings)

    cut = sub.add_parser(
        "journal-cut", help="cut a damaged journal back to its last good frame (asks --yes)",
        description=(
            "Recover a journal directory up to its first damage and print what cutting it "
            "back there drops: committed commands, frames and bytes, file by file. Without "
            "--yes nothing changes (exit status 1 if something would be cut, 0 if the "
            "journal recovers whole). With --yes every file that changes or goes is first "
            "copied into DIR/cut-NNNNNN/, then the journal is cut; run it again until "
            "nothing is left to cut. Never run it while carbonx serve writes DIR."))
    cut.add_argument("directory", metavar="DIR", help="the journal directory")
    cut.add_argument("--yes", action="store_true",
                     help="copy the files aside and cut (default: only say what would go)")
    cut.add_argument(
        "--from-snapshot", action="store_true",
        help="for damage before a whole snapshot after which the journal reads well: keep "
        "that snapshot's state and every command after it, and set aside the segments and "
        "snapshots before it (their records, not their state); no command is dropped")
    cut.set_defaults(run=_cmd_journal_cut)

    serve = sub.add_parser(
        "serve", help="run the exchange: engine, ledger, journal and MQTT gateway", description=(
            "Run the exchange for trading bots over MQTT until interrupted (Ctrl-C or "
            "SIGTERM). Without --broker, an embedded broker listens on 127.0.0.1:PORT with "
            "a password per account (from --credentials, or generated for the accounts "
            "of --init and written there). With --broker, the gateway joins that broker "
            "(see 'carbonx broker-config'), its password from --password-file or the "
            "CARBONX_PASSWORD environment variable (a password in the URL works too, and "
            "wins over CARBONX_PASSWORD, but other users can see a command line). Nothing "
            "is written (journal, credentials) until the embedded broker listens or the "
            "broker has taken the gateway's login; a port in use, an unreachable broker "
            "or a refused login exits with status 2. Bots write commands to cx/v1/orders/ACCOUNT "
            "and read cx/v1/exec/ACCOUNT, cx/v1/md/INSTRUMENT/{trades,book} and, whether "
            "the gateway serves, cx/v1/status."))
    serve.add_argument(
        "--broker", metavar="URL", help="mqtt://USER@HOST:PORT of a broker to join (default: the "
        "embedded broker); mqtt://USER:PASS@HOST:PORT also works")
    serve.add_argument(
        "--password-file", metavar="FILE",
        help="with --broker: a file holding the gateway user's password "
        "on one line (else the URL's, else $CARBONX_PASSWORD; not with a password in "
        "the URL)")
    serve.add_argument("--market", metavar="TOML", help="market configuration")
    serve.add_argument(
        "--cluster", metavar="URLS",
        help="nats://HOST:PORT[,...]: keep the command log on NATS JetStream and run as "
        "one node of a cluster (with --broker): the node holding the lease is the gateway, "
        "the others apply the log and take over when it stops (needs the cluster extra)")
    serve.add_argument("--node-id", metavar="NAME",
                       help="with --cluster: this node's name (default: host name and a tag)")
    serve.add_argument("--snapshot-every", type=int, metavar="N",
                       help="commands between two snapshots of the engine (default: 500,000 "
                       "in a journal directory, 200,000 in a cluster)")
    serve.add_argument(
        "--always-open", action="store_true",
        help="a test exchange that trades at any hour: the market's schedule (sessions, "
        "weekdays, holidays) is set aside, and the journal records it")
    serve.add_argument(
        "--web", type=int, metavar="PORT",
        help="also serve the web portal (live pages and the REST API under /api/v1) on "
        "http://127.0.0.1:PORT/, its logins the exchange's passwords (needs the web extra)")
    serve.add_argument(
        "--web-host", default="127.0.0.1", metavar="HOST",
        help="the address the web portal listens on (default: 127.0.0.1, this machine only)")
    serve.add_argument(
        "--web-credentials", metavar="FILE",
        help="with --broker: the credentials file broker-config wrote, the web portal's logins")
    serve.add_argument(
        "--no-position-limits", action="store_true",
        help="a test exchange without position limits ([limits] set aside; the journal "
        "records it)")
    serve.add_argument("--journal", metavar="DIR",
                       help="journal directory: recovered if it holds a journal, else new")
    serve.add_argument(
        "--init", metavar="FILE", help="an order file applied before going live (deposits, "
        "issuance, accounts); not re-applied to a recovered journal")
    serve.add_argument(
        "--credentials", metavar="FILE",
        help="embedded broker: JSON of account passwords (default: "
        "DIR/credentials.json with --journal, else "
        "./carbonx-credentials.json)")
    serve.add_argument("--port", type=int, default=None,
                       help="embedded broker: port on 127.0.0.1 (default: 1883)")
    serve.add_argument(
        "--message-rate", type=int, default=None, metavar="N",
        help="the embedded broker's limit: messages an account may publish "
        f"a second (default {EMBEDDED_MESSAGE_RATE}; bursts of a fifth); "
        "with --broker, mosquitto's limit is set by broker-config")
    serve.add_argument(
        "--byte-rate", type=int, default=None, metavar="N",
        help="the embedded broker's limit: bytes an account may publish a "
        f"second (default {EMBEDDED_BYTE_RATE}: the broker shares the exchange's process)")
    serve.add_argument("--book-interval", type=float, default=0.1, metavar="SECONDS",
                       help="least time between two depth messages of an instrument (default: 0.1)")
    serve.add_argument(
        "--eod", metavar="HH:MM",
        help="end the trading day at this time of the market's time zone (Beijing for the "
        "default market; UTC for a market without a schedule) on each business day of its "
        "calendar, after the last session: expiries, T+1, futures settlement, margin calls, "
        "deliveries, daily statistics (default: never; the operator's eod rows do it)")
    serve.add_argument("--log-level", default="WARNING",
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                       help="what the gateway logs on stderr (default: WARNING: lost and "
                       "regained broker connections, refused messages; INFO adds each "
                       "connection and snapshot)")
    serve.set_defaults(run=_cmd_serve)

    demo = sub.add_parser(
        "demo", help="run the whole exchange with bots for a while, then sum up",
        description=("Start the embedded broker, the gateway with engine, ledger and journal, and "
                     "seven bots (two market makers quoting under an obligation, three noise "
                     "traders, a compliance buyer and a power company that sells it its "
                     "shortfall in a block agreement) that trade over MQTT for a bounded time, "
                     "over trading days that each end with an end of day; then print trades, "
                     "volume and VWAP per instrument, the block trades, the market makers' "
                     "assessments, and each bot's holdings and P&L."))
    demo.add_argument("--seconds", type=float, default=20.0,
                      help="how long the bots trade (default: 20)")
    demo.add_argument("--seed", type=int, default=1, help="the bots' random seed (default: 1)")
    demo.add_argument("--web", type=int, metavar="PORT",
                      help="also serve the web portal on http://127.0.0.1:PORT/ (the logins "
                      "are written to credentials.json in the journal directory; needs the web "
                      "extra)")
    demo.add_argument("--days", type=int, default=2,
                      help="trading days the seconds are split into, each ended by an end of "
                      "day (default: 2)")
    demo.add_argument("--journal", metavar="DIR",
                      help="keep the journal in DIR (default: a temporary directory)")
    demo.set_defaults(run=_cmd_demo)

    broker = sub.add_parser(
        "broker-config", help="write a mosquitto configuration for the exchange",
        description=("Write DIR/mosquitto.conf (a listener on 127.0.0.1:PORT), DIR/passwd, DIR/acl "
                     "and DIR/credentials.json, so that each account may write only "
                     "cx/v1/orders/ACCOUNT and read only cx/v1/exec/ACCOUNT and cx/v1/md/#, and "
                     "the gateway user may read every orders topic and write reports and market "
                     "data. A client's identifier is its user name (use_username_as_clientid), so "
                     "no account can take over another's session; packets over 1 MiB are refused; "
                     "each account may publish 1,000 messages and 4 MiB a second (a plugin, "
                     "carbonx_limit.so, built here with cc from mosquitto-dev's headers; "
                     "--no-limit goes without). "
                     "Passwords are generated where not given (always for the gateway and the "
                     "operator, also written alone to DIR/gateway.password and "
                     "DIR/operator.password); passwd, credentials.json and the password files "
                     "are mode 0600. A directory that already holds any of these files is left "
                     "alone unless --force. Written by root, mosquitto.conf has no 'user' line: "
                     "mosquitto started as root drops to the 'mosquitto' user, which is given "
                     "passwd and acl and must be able to enter DIR. Then: "
                     "mosquitto -c DIR/mosquitto.conf, carbonx serve --broker "
                     "mqtt://gateway@127.0.0.1:PORT --password-file DIR/gateway.password, and "
                     "carbonx admin --broker mqtt://operator@127.0.0.1:PORT --password-file "
                     "DIR/operator.password FILE."))
    broker.add_argument("--out", metavar="DIR", required=True, help="output directory")
    broker.add_argument("--port", type=int, required=True, help="the listener's port")
    broker.add_argument("--force", action="store_true",
                        help="overwrite a configuration already in DIR (new passwords)")
    broker.add_argument(
        "--no-limit", action="store_true",
        help="no per-account publishing limit (it is a mosquitto plugin "
        "built here, which needs cc, mosquitto-dev and "
        "libmosquitto-dev)")
    broker.add_argument(
        "--message-rate", type=int, default=ACCOUNT_MESSAGE_RATE, metavar="N",
        help="messages an account may publish a second "
        "(default %(default)s; bursts of a fifth of it)")
    broker.add_argument("--byte-rate", type=int, default=ACCOUNT_BYTE_RATE, metavar="N",
                        help="bytes an account may publish a second (default %(default)s)")
    broker.add_argument("accounts", metavar="ACCOUNT[:PASSWORD]", nargs="+",
                        help="trading accounts, each with an optional password")
    broker.set_defaults(run=_cmd_broker_config)

    from gateway.tools import comply

    compliance = sub.add_parser("comply", help="run a compliance year of a scenario",
                                description=comply.DESCRIPTION)
    comply.add_arguments(compliance)
    compliance.set_defaults(run=comply.run)

    from gateway.tools import genorders

    gen = sub.add_parser("gen-orders", help="write a seeded order file",
                         description=genorders.DESCRIPTION)
    genorders.add_arguments(gen)
    gen.set_defaults(run=genorders.run)
    from gateway.tools import admin
    admin.add_parser(sub)
    status = sub.add_parser(
        "cluster-status", help="show a cluster's nodes, its leader and its log",
        description=("Read the cluster's state from NATS: who holds the lease, the log "
                     "stream's last sequence and replicas, and each node's role, applied "
                     "log sequence, engine sequence and state hash (equal hashes at equal "
                     "sequences: the same state)."))
    status.add_argument("--cluster", metavar="URLS", required=True,
                        help="nats://HOST:PORT[,...] of the cluster's NATS servers")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_cmd_cluster_status)
    return parser


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    try:
        from gateway.cluster.serve import cluster_status
        from gateway.mqtt.serve import ServeError
    except ImportError:
        raise UsageError("cluster-status needs the cluster extra: pip install -e '.[cluster]'"
                         ) from None
    try:
        return cluster_status(args.cluster, as_json=args.json)
    except ServeError as exc:
        raise UsageError(str(exc)) from None


def _cmd_replay(args: argparse.Namespace) -> int:
    from gateway.tools.progress import ProgressBar
    from gateway.tools.replay import (run_replay, write_daily, write_events, write_fills,
                                      write_holdings, write_mm_report)

    for option in ("journal", "holdings", "mm_report"):
        if getattr(args, option) and not args.ledger:
            raise UsageError(f"--{option.replace('_', '-')} needs --ledger (without accounts "
                             "there are no holdings, account kinds or fees)")
    outputs = {option: getattr(args, option)
               for option in ("holdings", "fills", "events", "daily", "mm_report")
               if getattr(args, option)}
    check_outputs([("the order file", args.file)], outputs)
    market = load_market(args.market)
    if args.always_open:
        market = market.open_all_hours()
    if args.no_position_limits:
        market = market.without_limits()
    progress = ProgressBar.for_terminal()
    result = run_replay(args.file, fmt=args.format, market=market, stp=args.stp,
                        keep_events=bool(args.fills or args.events or args.daily
                                         or args.mm_report),
                        progress=progress,
                        ledger=args.ledger, journal=args.journal)
    for warning in result.warnings:
        print(f"carbonx replay: warning: {warning}", file=sys.stderr)
    events = result.events or []
    writers = {
        "holdings": lambda path: write_holdings(path, result.engine),
        "fills": lambda path: write_fills(path, events, market),
        "events": lambda path: write_events(path, events, market),
        "daily": lambda path: write_daily(path, events, market),
        "mm_report": lambda path: write_mm_report(path, events, market)
    }
    for option, path in outputs.items():
        try:
            writers[option](path)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"replayed {args.file}")
        print(f"  messages  {summary['messages']:>12,}   accepted {summary['accepted']:,}, "
              f"rejected {summary['rejected']:,}")
        print(f"  trades    {summary['trades']:>12,}   volume {summary['volume']:,}")
        print(f"  elapsed   {summary['elapsed_s']:>12.3f} s  {summary['msgs_per_s']:,} msgs/s "
              f"(read + decode + match)")
        print(
            f"  engine    {summary['engine_s']:>12.3f} s  {summary['engine_msgs_per_s']:,} msgs/s")
        for reason, count in summary["rejects"].items():
            print(f"  rejected  {count:>12,}   {reason}")
        print(f"  state     {summary['state_hash']}")
    return EXIT_OK


def _cmd_holdings(args: argparse.Namespace) -> int:
    from exchange.journal import JournalDamage, recover
    from gateway.tools.replay import holding_rows, margin_rows, pledge_rows, position_rows

    try:
        recovered = recover(args.directory)
    except JournalDamage as exc:
        if exc.legacy:  # journal-cut refuses an older format, and serve a damaged one
            by_hand = (f"cut {exc.path} to its first {exc.good_end} bytes and remove the "
                       f"segments after it" if exc.kind == "frame" else "mend it")
            raise UsageError(f"{exc}; it is in an older journal format, which journal-cut "
                             f"does not cut: on a copy of {args.directory}, {by_hand}, and "
                             f"'carbonx serve' converts the copy (commands after {exc.seq} "
                             f"are dropped)") from None
        raise UsageError(f"{exc}; 'carbonx journal-cut {args.directory}' shows what cutting "
                         f"it back to the last good frame would drop") from None
    rows = holding_rows(recovered.engine)
    positions = position_rows(recovered.engine)
    margins = margin_rows(recovered.engine)
    pledges = pledge_rows(recovered.engine)
    for warning in recovered.warnings:
        print(f"carbonx holdings: warning: {warning}", file=sys.stderr)
    if recovered.torn_bytes:
        print(
            f"carbonx holdings: note: ignored a torn last frame ({recovered.torn_bytes} "
            f"bytes) in {recovered.segment}", file=sys.stderr)
    if args.json:
        print(
            json.dumps({
                "seq": recovered.seq,
                "holdings": rows,
                "positions": positions,
                "margin": margins,
                "pledges": pledges
            }))
        return EXIT_OK
    print(f"recovered {recovered.seq:,} commands from {args.directory}"
          f" (snapshot at {recovered.snapshot_seq:,}, {recovered.replayed:,} replayed)")
    if recovered.engine.ledger is None:
        print("  (journal of a matching-only replay: no accounts)")
        return EXIT_OK
    pledged = ("pledged",) if any(row["pledged"] for row in rows) else ()
    _print_table(rows, ("account", "asset", "available", "held", "locked", *pledged), 2)
    if positions:
        print("positions (lots; margin in cash, prices per tonne)")
        _print_table(positions,
                     ("account", "instrument", "qty", "avg_price", "settlement", "margin"), 2)
    if margins:
        print("margin and equity (equity = available cash + margin held)")
        _print_table(
            [{
                **r, "margin_call": "CALLED" if r["margin_call"] else "-"
            } for r in margins],
            ("account", "currency", "margin", "equity", "initial", "maintenance", "margin_call"), 2)
    if pledges:
        print("pledges in force (account: the pledgor, to_account: the pledgee)")
        _print_table(pledges, ("pledge_id", "account", "to_account", "instrument", "qty"), 2)
    return EXIT_OK


def _cmd_journal_cut(args: argparse.Namespace) -> int:
    from exchange.journal import cut_journal

    plan = cut_journal(args.directory, apply=args.yes, from_snapshot=args.from_snapshot)
    if plan.problem is None:
        print(
            f"{args.directory}: nothing to cut: the journal recovers whole ({plan.keep:,} commands)"
        )
        return EXIT_OK
    print(f"damage: {plan.problem}")
    if plan.kind == "base":
        print(f"keeps the state after command {plan.keep:,} (its snapshot) and every command "
              f"after it: drops no command; sets aside the records before it, "
              f"{plan.frames:,} frame(s), {plan.bytes:,} bytes in all:")
    elif plan.kind in ("frame", "segment"):
        print(f"cut back to command {plan.keep:,}: drops at least {plan.commands:,} committed "
              f"command(s) in {plan.frames:,} frame(s), {plan.bytes:,} bytes in all:")
    elif plan.kind == "ahead":
        print(f"the segments end at command {plan.keep:,}: drops the snapshots past it, "
              f"{plan.bytes:,} bytes (the commands they hold past it are lost already):")
    else:
        print(f"drops no command; {plan.bytes:,} bytes in all:")
    width = max(len(name) for name, _ in plan.files)
    for name, what in plan.files:
        print(f"  {name.ljust(width)}  {what}")
    if not args.yes:
        if plan.kind in ("frame", "segment") and plan.commands:
            from exchange.journal import JournalError

            try:
                kept = cut_journal(args.directory, from_snapshot=True)
            except JournalError:
                pass
            else:
                print(f"or, with --from-snapshot: keep the state after command {kept.keep:,} "
                      f"(a whole snapshot) and every command after it, dropping none")
        print(f"dry run: nothing changed. With --yes these files are first copied into "
              f"{args.directory}/cut-NNNNNN/, then cut.")
        return 1
    print(f"copied into {plan.copied} and cut; run it again until nothing is left to cut")
    return EXIT_OK


def _print_table(rows: list[dict], header: tuple, left: int) -> None:
    """Print *rows* under *header*, the first *left* columns left-aligned."""
    widths = [max([len(h)] + [len(str(r[h])) for r in rows]) for h in header]
    print("  " + "  ".join(
        h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for r in rows:
        print("  " + "  ".join(
            str(r[h]).ljust(w) if i < left else str(r[h]).rjust(w)
            for i, (h, w) in enumerate(zip(header, widths))))


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from gateway.mqtt.serve import ServeError, main_serve
    from gateway.mqtt.service import GatewaySettings, seconds_of_day

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Options that would be passed over say so, as --password-file without --broker does.
    if args.broker and (args.credentials or args.port is not None):
        raise UsageError("--credentials and --port are the embedded broker's; with --broker, "
                         "the broker has its own (broker-config)")
    if args.web_credentials and args.web is None:
        raise UsageError("--web-credentials is the web portal's logins: it goes with --web")
    if args.node_id and not args.cluster:
        raise UsageError("--node-id names a node of a cluster: it goes with --cluster")
    if args.port is None:
        args.port = 1883
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    if args.web is not None and not 0 < args.web < 65536:
        raise UsageError(f"--web {args.web}: not a port number (1 to 65535)")
    if not (args.book_interval >= 0 and math.isfinite(args.book_interval)):
        raise UsageError(f"--book-interval {args.book_interval:g}: must be a number of seconds, "
                         "0 or more")
    if args.eod is not None:
        try:
            seconds_of_day(args.eod)
        except ValueError as exc:
            raise UsageError(f"--eod: {exc}") from None
    limits = None
    if args.message_rate is not None or args.byte_rate is not None:
        if args.broker:
            raise UsageError("--message-rate and --byte-rate set the embedded broker's "
                             "limit; with --broker, set mosquitto's with broker-config")
        from gateway.mqtt.brokerconfig import AccountLimits

        _check_rates(args)
        try:
            limits = AccountLimits.scaled(
                EMBEDDED_MESSAGE_RATE if args.message_rate is None else args.message_rate,
                EMBEDDED_BYTE_RATE if args.byte_rate is None else args.byte_rate)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    from exchange import default_market

    market = load_market(args.market) if args.market else default_market()
    if args.always_open:
        market = market.open_all_hours()
    if args.no_position_limits:
        market = market.without_limits()
    if args.snapshot_every is not None and args.snapshot_every < 1:
        raise UsageError("--snapshot-every must be at least 1")
    if args.cluster:
        if args.journal or args.web is not None or args.credentials:
            raise UsageError("--cluster keeps the log on NATS: --journal, --web and "
                             "--credentials do not go with it")
        try:
            from gateway.cluster.serve import main_cluster
        except ImportError:
            raise UsageError("--cluster needs the cluster extra: pip install -e '.[cluster]'"
                             ) from None
        try:
            return main_cluster(
                market, cluster_url=args.cluster, broker_url=args.broker, node_id=args.node_id,
                init=args.init, password_file=args.password_file,
                settings=GatewaySettings(book_interval=args.book_interval, eod_at=args.eod),
                snapshot_every=args.snapshot_every)
        except ServeError as exc:
            raise UsageError(str(exc)) from None
    try:
        return main_serve(
            market, broker_url=args.broker, journal=args.journal,
            init=args.init, credentials_path=args.credentials, port=args.port,
            settings=GatewaySettings(book_interval=args.book_interval, eod_at=args.eod,
                                     **({} if args.snapshot_every is None else
                                        {"snapshot_every": args.snapshot_every})),
            password_file=args.password_file, limits=limits, web_port=args.web,
            web_host=args.web_host, web_credentials=args.web_credentials)
    except ServeError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot start: {exc.strerror or exc}") from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.tools.demo import run_demo

    if not 0 < args.seconds <= 3600:
        raise UsageError("--seconds must be more than 0 and at most 3600")
    if not 1 <= args.days <= 30:
        raise UsageError("--days must be from 1 to 30")
    if args.web is not None and not 0 < args.web < 65536:
        raise UsageError("--web must be a port number, 1 to 65535")
    result = run_demo(args.seconds, args.seed, args.journal, days=args.days, web=args.web)
    print(result.summary)
    return EXIT_OK


def _check_rates(args: argparse.Namespace) -> None:
    """--message-rate and --byte-rate, named as the user wrote them when out of range."""
    for option, value in (("--message-rate", args.message_rate), ("--byte-rate", args.byte_rate)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be a positive whole number, not {value}")


def _cmd_broker_config(args: argparse.Namespace) -> int:
    import os

    from gateway.mqtt.brokerconfig import AccountLimits, parse_account_args, write_broker_config

    _check_rates(args)
    try:
        accounts = parse_account_args(args.accounts)
        limits = None if args.no_limit else AccountLimits.scaled(args.message_rate, args.byte_rate)
        credentials = write_broker_config(args.out, args.port, accounts, force=args.force,
                                          limits=limits)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    accounts_written = [name for name in credentials if name not in ("gateway", "operator")]
    print(f"wrote {args.out}/mosquitto.conf, passwd, acl, credentials.json, gateway.password, "
          f"operator.password{'' if args.no_limit else ' and carbonx_limit.so'} for "
          f"{len(accounts_written)} account(s), the gateway and the operator")
    if os.geteuid() == 0:
        print(
            f"carbonx broker-config: note: written by root, so mosquitto.conf has no "
            f"'user' line; mosquitto started as root runs as 'mosquitto', which was given "
            f"{args.out}/passwd and acl and must be able to enter {args.out}", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    name = "carbonx"  # then the subcommand's, once known
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the subcommand's parser, with its usage line, not carbonx's
            _parser_of(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:  # bare ``carbonx``: say what there is
            parser.print_help()
            return EXIT_OK
        name = f"carbonx {args.command}"
        return args.run(args)
    except (UsageError, OrderFileError, MarketConfigError, JournalError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): output cut short, not failed
        _drop_stdout()
        return EXIT_OK
    except OSError as exc:  # standard output could not be written (a full disk, ...)
        _drop_stdout()
        where = f"cannot write {exc.filename}" if exc.filename else "cannot write the output"
        print(f"{name}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser_of(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand *command* (argparse keeps them on its subparsers action),
    or *parser* itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _drop_stdout() -> None:
    """Point standard output at the null device, so that what is still buffered for a
    closed or failing one is not written again at exit (a second error and a traceback)."""
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no real stdout (captured, replaced): nothing to drop
        pass


if __name__ == "__main__":
    # Run as ``python -m gateway.cli`` this file is ``__main__``; go through the package
    # module so the command table is built once.
    from gateway.cli import main as _main

    sys.exit(_main())
