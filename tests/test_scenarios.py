"""Golden scenarios: commands in, expected events out.

Every ``tests/scenarios/*.txt`` file is one scenario. Its expected events were written
by hand from the matching semantics of shared/DESIGN.md (and, where DESIGN.md is silent,
from the engine's documented choice), never by dumping engine output: a golden file must
be able to catch an engine bug. Each scenario runs with both books (``FastBook`` and the
reference ``NaiveBook``); the engine must emit exactly the listed events, no more.

Scenario file format
--------------------
::

    # Title: one line.                    lines before the first section: the description
    # More description.
    --- market                            optional: a whole market TOML that replaces the
    [instruments.CEA25]                   default market (e.g. to set a reference price);
    tick = "0.01"                         the one word ``default``: the default market
                                          with its schedule (without a market section
                                          the default market is always open)
    --- orders                            required
    action,order_id,account,instrument,side,type,tif,price,qty
    new,s1,ann,CEA25,sell,limit,gtc,60.00,10
    > accepted s1                         the events of the row above, in order: every
    > ...                                 event the engine emits must be listed
    # a comment                           comments and blank lines go anywhere
    --- book                              optional: every resting order and untriggered
    CEA25 sell s1 60.00 x 10              stop at the end; an empty section asserts an
                                          empty market
    --- xfail                             optional: the engine disagrees with DESIGN.md;
    why, with the DESIGN.md rule          the scenario is a strict xfail
    --- ledger                            optional: run with the ledger on (accounts,
    ann CNY 100.00 0.00 0.00              risk, settlement); the lines are every final
    ann CEA25 10 0 0                      holding with a unit in it:
                                          ACCOUNT ASSET AVAILABLE HELD LOCKED
                                          [pledged=N] (when any is pledged)

The ``orders`` block is the pinned order-file CSV (shared/DESIGN.md): a header naming
the columns the scenario uses (missing keys take their defaults), then one command per
row, read with ``exchange.orderfile.parse_order_text``.

Event lines (``-`` for an absent id or price; prices as decimal strings on the tick)::

    accepted ID
    rejected ACTION ID REASON
    trade PRICE x QTY buy=ID sell=ID aggressor=buy|sell leaves=BUY_LEAVES/SELL_LEAVES
    cancelled ID QTY REASON
    amended ID OLD_PRICE x OLD_QTY -> PRICE x QTY priority_kept|priority_lost
    expired ID QTY
    triggered ID stop=PRICE last=PRICE
    day_ended DAY
    clock TS
    reference SYMBOL PRICE volume=QTY
    mass_cancel ACCOUNT SYMBOL|* SIDE|* count=N
    ledger_ignored ACTION ACCOUNT
    opened ACCOUNT KIND                    status ACCOUNT STATUS
    deposited ACCOUNT CURRENCY AMOUNT      withdrawn ACCOUNT CURRENCY AMOUNT
    issued ACCOUNT SYMBOL QTY              surrendered ACCOUNT SYMBOL QTY
    transferred ACCOUNT -> TO SYMBOL QTY   unlocked ACCOUNT ASSET QTY
    pledged ID ACCOUNT -> TO SYMBOL QTY    pledge_released ID ACCOUNT SYMBOL QTY remaining=N
    pledge_enforced ID ACCOUNT -> TO SYMBOL QTY remaining=N
    settled TRADE_ID BUYER<-SELLER QTY for CASH fees=BUY_FEE/SELL_FEE   (cash as decimals)

Book lines, per instrument in market order: bids best first, asks best first, then the
untriggered stops in trigger priority (buys, then sells)::

    SYMBOL buy|sell ID PRICE x OPEN_QTY [shown=DISPLAYED]     (shown only when < open)
    SYMBOL stop buy|sell ID stop=PRICE [limit=PRICE] x QTY

Beyond the lines, every run checks what the lines leave out: an accepted order echoes
its command; trades, cancels, amends, expiries and triggers carry the account,
instrument and side of the order they name; ``seq`` and ``trade_id`` strictly increase;
each command gives exactly one result event, preceded only by gtd expiries, and nothing
follows a rejection; ``engine.check()`` holds after every command.
"""

from __future__ import annotations

import difflib
import re
import string
import typing
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from exchange import (AmendOrder, AnyEvent, CancelOrder, CommandRejected, Deposit, EndOfDay, Engine,
                      FastBook, IssueAllowances, LedgerCommandIgnored, MassCancel,
                      MassCancelAccepted, NaiveBook, OrderAccepted, OrderAmended, OrderCancelled,
                      OrderExpired, OrderTriggered, PlaceOrder, ReferencePriceSet,
                      SurrenderAllowances, TradeExecuted, TradingDayEnded, Withdraw, default_market,
                      reasons)
from exchange.book.fast import STOP_LIMIT
from exchange.calendar import format_date
from exchange.commands import (ADMIN_COMMANDS, ORDER_TYPES, STP_MODES, TIFS, AcceptBlock,
                               AdvanceClock,
                               BidAuction, CloseAuction, OpenAuction, PostBlock, AllocateAllowances,
                               ClawBackAllowances, CloseAccount, ComplianceDeadline,
                               ConvertAllowances, EnforcePledge, HaltInstrument, OpenAccount,
                               PledgeAllowances, RecordEmissions, ReleasePledge, ResumeAccount,
                               ResumeInstrument, SuspendAccount, TransferAllowances)
from exchange.events import (AuctionBidAccepted, AuctionCleared, AuctionOpened, BlockAccepted,
                             ClockAdvanced,
                             BlockPosted, QuotingAssessed, AccountOpened, AccountStatusChanged,
                             AllowancesAllocated,
                             AllowancesClawedBack, AllowancesConverted, AllowancesIssued,
                             AllowancesPledged, PledgeEnforced, PledgeReleased,
                             AllowancesSurrendered, AllowancesTransferred, CashDeposited,
                             CashWithdrawn, ComplianceAssessed, ContractExpired, DailyStatistics,
                             DeadlinePassed,
                             DefaultRecorded, DeliveryFailed, DeliverySettled, EmissionsVerified,
                             HoldingsUnlocked, MarginCalled, MarginCallMet, OptionExercised,
                             PositionClosedOut, SettlementPriceSet, TradeCleared, TradeSettled,
                             TradingStatusChanged, VariationMargin)
from exchange.market import Market, parse_market
from exchange.orderfile import parse_order_text
from exchange.reasons import Reason

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.txt"))
SECTIONS = ("market", "orders", "book", "xfail", "ledger")


# --- reading a scenario ------------------------------------------------------------------
@dataclass
class Step:
    """One command row and the events it must give."""

    line: int  # 1-based line of the row in the scenario file
    row: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    path: Path
    description: str
    market_toml: str | None
    header: str
    steps: list[Step]
    book: list[str] | None
    xfail: str | None
    holdings: list[str] | None = None  # with the ledger on: every final non-zero holding

    @property
    def name(self) -> str:
        return self.path.stem

    def market(self) -> Market:
        if self.market_toml is None:
            return default_market().open_all_hours()
        if self.market_toml.strip() == "default":
            return default_market()
        return parse_market(self.market_toml, f"{self.path.name} [market]")

    def commands(self, name: str | None = None) -> list:
        text = "\n".join([self.header] + [s.row for s in self.steps]) + "\n"
        commands = parse_order_text(text.encode(), "csv", name=name or self.path.name)
        assert len(commands) == len(self.steps), f"{self.path.name}: a row gave no command"
        return commands


def _norm(line: str) -> str:
    return " ".join(line.split())


def load_scenario(path: Path) -> Scenario:
    description: list[str] = []
    sections: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("---"):
            name = raw[3:].strip()
            if name not in SECTIONS or name in sections:
                raise ValueError(f"{path.name}:{number}: unknown or repeated section {name!r}")
            current = sections[name] = []
        elif current is None:
            if raw.strip():
                if not raw.startswith("#"):
                    raise ValueError(f"{path.name}:{number}: text before the first section")
                description.append(raw.lstrip("# ").rstrip())
        else:
            current.append((number, raw))
    if "orders" not in sections:
        raise ValueError(f"{path.name}: no '--- orders' section")

    header = None
    steps: list[Step] = []
    for number, raw in sections["orders"]:
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(">"):
            if not steps:
                raise ValueError(f"{path.name}:{number}: an event line before any command row")
            steps[-1].expected.append(_norm(text[1:]))
        elif header is None:
            header = text
        else:
            steps.append(Step(number, text))
    if header is None or not steps:
        raise ValueError(f"{path.name}: the orders section needs a header and rows")

    def plain(name: str) -> list[str] | None:
        if name not in sections:
            return None
        return [_norm(raw) for _, raw in sections[name] if raw.strip() and not raw.startswith("#")]

    market = "\n".join(raw for _, raw in sections["market"]) if "market" in sections else None
    xfail = plain("xfail")
    return Scenario(path, "\n".join(description), market, header, steps, plain("book"),
                    " ".join(xfail) if xfail is not None else None, plain("ledger"))


# --- formatting events -------------------------------------------------------------------
# One line template for each event type, its kind first. In a template ``{f}`` is the
# event's field f; ``{f:or-}`` (``{f:or*}``) the field, or ``-`` (``*``) when it is empty;
# ``{f:price}`` ticks as a price on the event's instrument (``{f:price@g}``: on the instrument
# in field g) and ``{f:cash}`` CNY fen as yuan, sign first, both ``-`` when absent;
# ``{f:yes|no}`` one word or the other by a flag. A ``[part]`` is left out when the field in
# it is None or holds its default.
LINE_FORMATS = {
    OrderAccepted: "accepted {order_id}",
    CommandRejected: "rejected {action} {order_id:or-} {reason}",
    TradeExecuted: ("trade {price:price} x {qty} buy={buy_order_id} sell={sell_order_id} "
                    "aggressor={aggressor} leaves={buy_leaves_qty}/{sell_leaves_qty}"
                    "[ mode={mode}]"),
    OrderCancelled: "cancelled {order_id} {cancelled_qty} {reason}",
    OrderAmended: ("amended {order_id} {old_price:price} x {old_qty} -> {price:price} x {qty} "
                   "{priority_kept:priority_kept|priority_lost}"),
    OrderExpired: "expired {order_id} {expired_qty}",
    OrderTriggered: "triggered {order_id} stop={stop_price:price} last={last_price:price}",
    TradingDayEnded: "day_ended {day}",
    ClockAdvanced: "clock {ts}",
    ReferencePriceSet: "reference {instrument} {price:price} volume={close_volume}",
    DailyStatistics: ("daily {instrument} day={day}[ date={date:date}] open={open:price} "
                      "high={high:price} low={low:price} close={close:price} volume={volume} "
                      "turnover={turnover:cash}[ block={block_volume}][ auction={auction_volume}]"),
    TradingStatusChanged: "trading_status {instrument} {halted:halted|trading}",
    MassCancelAccepted: "mass_cancel {account} {instrument:or*} {side:or*} count={count}",
    LedgerCommandIgnored: "ledger_ignored {action} {account}",
    AccountOpened: "opened {account} {kind}",
    AccountStatusChanged: "status {account} {status}",
    CashDeposited: "deposited {account} {currency} {amount:cash}",
    CashWithdrawn: "withdrawn {account} {currency} {amount:cash}",
    AllowancesIssued: "issued {account} {instrument} {qty}",
    AllowancesSurrendered: "surrendered {account} {instrument} {qty}[ for {year}]",
    AllowancesTransferred: "transferred {account} -> {to_account} {instrument} {qty}",
    AllowancesPledged: "pledged {pledge_id} {account} -> {to_account} {instrument} {qty}",
    PledgeReleased: ("pledge_released {pledge_id} {account} {instrument} {qty} "
                     "remaining={remaining}"),
    PledgeEnforced: ("pledge_enforced {pledge_id} {account} -> {to_account} {instrument} {qty} "
                     "remaining={remaining}"),
    HoldingsUnlocked: "unlocked {account} {asset} {qty}",
    TradeSettled: ("settled {trade_id} {buy_account}<-{sell_account} {qty} for {cash:cash} "
                   "fees={buy_fee:cash}/{sell_fee:cash}"),
    EmissionsVerified: ("emissions {account} {year} {qty} {quality} verifier={verifier:or-}"
                        "[ restated_from={restated_from}][ months={months}]"),
    DeadlinePassed: ("deadline {year} entities={entities} short={short} "
                     "average={average_price:cash}"),
    ComplianceAssessed: ("assessed {account} {year} {status} obligation={obligation} "
                         "allowances={surrendered_allowances} offsets={surrendered_offsets} "
                         "shortfall={shortfall} fine={fine:cash}"),
    AllowancesClawedBack: "clawed_back {account} {instrument} {qty}",
    AllowancesAllocated: ("allocated {account} {instrument} {year} {stage} allocation={allocation} "
                          "deducted={deducted} issued={issued} clawed_back={clawed_back}"),
    AllowancesConverted: ("converted {account} {instrument}->{to_instrument} {qty} "
                          "cap_left={cap_left}"),
    TradeCleared: ("cleared {trade_id} {instrument} {qty} at {price:price} positions "
                   "{buy_account}={buy_position} {sell_account}={sell_position}"),
    SettlementPriceSet: "settlement {instrument} {price:price} {source}",
    VariationMargin: "variation {account} {instrument} position={position} {amount:cash}",
    MarginCalled: ("margin_called {account} equity={equity:cash} "
                   "maintenance={maintenance:cash} initial={initial:cash}"),
    MarginCallMet: "margin_call_met {account} equity={equity:cash}",
    PositionClosedOut: "closed_out {account} {instrument} {qty}[ at {price:price}] via {via}",
    DefaultRecorded: "default {account} {amount:cash} {reason}",
    ContractExpired: "expired {instrument} final={final_price:price}",
    DeliverySettled: ("delivered {account} {instrument} {side} {tonnes} {underlying} "
                      "for {cash:cash}"),
    DeliveryFailed: "delivery_failed {account} {instrument} {tonnes} penalty={penalty:cash}",
    OptionExercised: ("exercised {account} {instrument} into {lots} {underlying} "
                      "at {strike:price@underlying}"),
    BlockPosted: "block {order_id} {account} {side} {qty} at {price:price}[ to={to_account}]",
    BlockAccepted: ("block_accepted {order_id} by {account} from {to_account} {side} {qty} "
                    "at {price:price}"),
    AuctionOpened: ("auction_opened {auction} {account} {side} {qty} reserve={reserve:price} "
                    "{pricing}[ primary={primary}]"),
    AuctionBidAccepted: "bid {order_id} in {auction} {account} {side} {qty} at {price:price}",
    AuctionCleared: ("auction_cleared {auction} {status} {qty} at {price:price} unsold={unsold} "
                     "bids={bids} filled={filled_bids}"),
    QuotingAssessed: ("quoting {account} {instrument} day={day} quoted={quoted_ns} "
                      "session={session_ns} presence={presence_bps} spread={average_spread:or-} "
                      "{met:met|missed}[ rebate={rebate:cash}]")
}
EVENT_KINDS = {event_type: line.split()[0] for event_type, line in LINE_FORMATS.items()}
_OPTIONAL = re.compile(r"\[([^\[\]{]*\{(\w+)[^\[\]]*)\]")


class _LineFormatter(string.Formatter):
    """Fills a ``LINE_FORMATS`` template from one event (see above)."""

    def __init__(self, event, market: Market) -> None:
        self.event = event
        self.market = market

    def get_value(self, key, args, kwargs):
        return getattr(self.event, key)

    def format_field(self, value, format_spec: str) -> str:
        if format_spec in ("or-", "or*"):
            return str(value or format_spec[-1])
        if "|" in format_spec:
            yes, no = format_spec.split("|")
            return yes if value else no
        if format_spec and value is None:
            return "-"
        if format_spec.startswith("price"):
            symbol = getattr(self.event, format_spec.partition("@")[2] or "instrument")
            return self.market[symbol].format_price(value)
        if format_spec == "cash":
            return cash(value)
        if format_spec == "date":
            return format_date(value)
        return format(value, format_spec)


def cash(amount: int) -> str:
    """CNY fen as yuan, sign first."""
    return f"{'-' if amount < 0 else ''}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def format_event(event, market: Market) -> str:
    line = LINE_FORMATS.get(type(event))
    if line is None:
        raise AssertionError(f"no scenario line format for {type(event).__name__}: add one")

    def optional(part: re.Match) -> str:
        value = getattr(event, part[2])
        default = {f.name: f.default for f in msgspec.structs.fields(event)}[part[2]]
        return "" if value is None or value == default else part[1]

    return _LineFormatter(event, market).format(_OPTIONAL.sub(optional, line))


def book_lines(engine: Engine, market: Market) -> list[str]:
    lines = []
    stops = {row[0]: row[8] for row in engine.snapshot()[-1]}  # instruments come last
    for symbol, inst in market.instruments.items():
        book = engine.book(symbol)
        for is_buy in (True, False):
            for o in book.orders(is_buy):
                shown = f" shown={o.visible}" if o.visible != o.qty else ""
                lines.append(f"{symbol} {'buy' if is_buy else 'sell'} {o.order_id} "
                             f"{inst.format_price(o.price)} x {o.qty}{shown}")
        for order_id, _account, is_buy, kind, stop, price, qty, *_ in stops[symbol]:
            limit = f" limit={inst.format_price(price)}" if kind == STOP_LIMIT else ""
            lines.append(f"{symbol} stop {'buy' if is_buy else 'sell'} {order_id} "
                         f"stop={inst.format_price(stop)}{limit} x {qty}")
    return lines


# --- the checks the lines leave out --------------------------------------------------------
RESULT_OF = {
    PlaceOrder: OrderAccepted,
    CancelOrder: OrderCancelled,
    AmendOrder: OrderAmended,
    MassCancel: MassCancelAccepted,
    EndOfDay: TradingDayEnded,
    AdvanceClock: ClockAdvanced,
    HaltInstrument: TradingStatusChanged,
    ResumeInstrument: TradingStatusChanged,
    PostBlock: BlockPosted,
    AcceptBlock: BlockAccepted,
    OpenAuction: AuctionOpened,
    BidAuction: AuctionBidAccepted,
    CloseAuction: AuctionCleared,
    **{
        command_type: LedgerCommandIgnored
        for command_type in ADMIN_COMMANDS
    }
}
RESULT_WITH_LEDGER = {
    **RESULT_OF, Deposit: CashDeposited,
    Withdraw: CashWithdrawn,
    IssueAllowances: AllowancesIssued,
    SurrenderAllowances: AllowancesSurrendered,
    TransferAllowances: AllowancesTransferred,
    OpenAccount: AccountOpened,
    SuspendAccount: AccountStatusChanged,
    ResumeAccount: AccountStatusChanged,
    CloseAccount: AccountStatusChanged,
    RecordEmissions: EmissionsVerified,
    ComplianceDeadline: DeadlinePassed,
    ClawBackAllowances: AllowancesClawedBack,
    AllocateAllowances: AllowancesAllocated,
    ConvertAllowances: AllowancesConverted,
    PledgeAllowances: AllowancesPledged,
    ReleasePledge: PledgeReleased,
    EnforcePledge: PledgeEnforced
}


class Checker:
    """Cross-checks the fields the scenario lines do not show."""

    def __init__(self, market: Market, ledger: bool = False) -> None:
        self.market = market
        self.result_of = RESULT_WITH_LEDGER if ledger else RESULT_OF
        self.orders: dict[str, tuple[str, str, str]] = {}  # id -> (account, instrument, side)
        self.seq = 0
        self.trade_id = 0

    def _names(self, order_id: str, account: str, instrument: str, side: str, where: str):
        assert order_id in self.orders, f"{where}: names order {order_id!r}, never accepted"
        assert self.orders[order_id] == (account, instrument, side), (
            f"{where}: {order_id} carries {(account, instrument, side)}, "
            f"accepted as {self.orders[order_id]}")

    def check(self, cmd, events: list, where: str) -> None:
        for e in events:
            assert e.seq > self.seq, f"{where}: seq {e.seq} after {self.seq}"
            self.seq = e.seq
        first = 0
        while first < len(events) and isinstance(events[first], OrderExpired):
            first += 1
        assert first < len(events), f"{where}: no result event"
        result = events[first]
        tag = type(cmd).__struct_config__.tag
        if isinstance(result, CommandRejected):
            assert len(events) == first + 1, f"{where}: events after a rejection"
            assert result.action == tag, f"{where}: rejected action {result.action!r}"
            assert result.reason in reasons.REJECT_REASONS, f"{where}: {result.reason!r}"
            assert result.account == getattr(cmd, "account", None), f"{where}: rejected account"
            assert result.ts == cmd.ts, f"{where}: rejected ts"
            if isinstance(cmd, (PlaceOrder, CancelOrder, AmendOrder)):
                assert result.order_id == cmd.order_id, f"{where}: rejected order_id"
        else:
            assert isinstance(
                result, self.result_of[type(cmd)]), (f"{where}: result {type(result).__name__}")
        if isinstance(result, OrderAccepted):
            self._accepted(cmd, result, where)
        elif isinstance(result, (OrderCancelled, OrderAmended)):
            assert result.order_id == cmd.order_id and result.account == cmd.account, where
            if isinstance(result, OrderCancelled):
                assert result.reason == Reason.CANCELLED_BY_OWNER, where
        elif isinstance(result, MassCancelAccepted):
            assert (result.account, result.instrument, result.side) == (cmd.account, cmd.instrument,
                                                                        cmd.side), where
            cancels = events[first + 1:]
            assert len(cancels) == result.count, f"{where}: mass cancel count"
            for e in cancels:
                assert isinstance(e, OrderCancelled) and e.reason == Reason.MASS_CANCEL, where
                assert e.account == cmd.account, where
        elif isinstance(result, LedgerCommandIgnored):
            assert (result.action, result.account) == (tag, cmd.account), where
        elif isinstance(result, BlockPosted):
            assert (result.order_id, result.account, result.side) == (cmd.order_id, cmd.account,
                                                                      cmd.side), where
            self.orders[cmd.order_id] = (cmd.account, cmd.instrument, cmd.side)
        elif isinstance(result, AuctionOpened):
            side = cmd.side  # the initiator's side in its trades
            self.orders[cmd.auction] = (cmd.account, cmd.instrument, side)
        elif isinstance(result, AuctionBidAccepted):
            assert (result.order_id, result.account) == (cmd.order_id, cmd.account), where
            self.orders[cmd.order_id] = (cmd.account, result.instrument, result.side)
        for e in events:
            if isinstance(e, OrderAccepted) and e is not result:
                # the engine's own orders: a margin close-out sent at the end of the day
                assert isinstance(cmd, EndOfDay) and e.order_id.startswith("@close-"), where
                self.orders[e.order_id] = (e.account, e.instrument, e.side)
            if isinstance(e, TradeExecuted):
                assert e.trade_id > self.trade_id, f"{where}: trade_id {e.trade_id}"
                self.trade_id = e.trade_id
                assert e.qty > 0 and e.aggressor in ("buy", "sell"), where
                if e.mode == "block":  # one id, the block's: its poster is one of the two
                    account, _, side = self.orders[e.buy_order_id]
                    assert e.buy_order_id == e.sell_order_id, where
                    assert account == (e.buy_account if side == "buy" else e.sell_account), where
                    continue
                self._names(e.buy_order_id, e.buy_account, e.instrument, "buy", where)
                self._names(e.sell_order_id, e.sell_account, e.instrument, "sell", where)
            elif isinstance(e, (OrderCancelled, OrderAmended, OrderExpired, OrderTriggered)):
                self._names(e.order_id, e.account, e.instrument, e.side, where)

    def _accepted(self, cmd: PlaceOrder, e: OrderAccepted, where: str) -> None:
        tick = self.market[cmd.instrument].tick

        def ticks(text):
            return None if text is None else tick.to_units(text)

        display = 0 if cmd.display_qty in (None, cmd.qty) else cmd.display_qty
        got = (e.order_id, e.account, e.instrument, e.side, e.type, e.tif, e.price, e.qty,
               e.stop_price, e.display_qty, e.post_only, e.stp, e.expire_ts, e.ts)
        want = (cmd.order_id, cmd.account, cmd.instrument, cmd.side, cmd.type, cmd.tif,
                ticks(cmd.price), cmd.qty, ticks(cmd.stop_price), display, cmd.post_only, cmd.stp
                or "cancel_resting", cmd.expire_ts, cmd.ts)
        assert got == want, f"{where}: accepted event does not echo its command: {got} != {want}"
        self.orders[cmd.order_id] = (cmd.account, cmd.instrument, cmd.side)


# --- running -------------------------------------------------------------------------------
def run_scenario(scenario: Scenario, book=FastBook) -> tuple[list[str], list[str]]:
    """Run *scenario*; return (expected, actual) transcripts: rows with their events."""
    market = scenario.market()
    ledger = scenario.holdings is not None
    engine = Engine(market, book=book, ledger=ledger)
    checker = Checker(market, ledger)
    expected: list[str] = []
    actual: list[str] = []
    for step, cmd in zip(scenario.steps, scenario.commands()):
        where = f"{scenario.path.name}:{step.line}"
        events = engine.execute(cmd)
        engine.check()
        checker.check(cmd, events, where)
        head = f"[line {step.line}] {step.row}"
        expected += [head] + [f"    {line}" for line in step.expected]
        actual += [head] + [f"    {format_event(e, market)}" for e in events]
    if scenario.book is not None:
        expected += ["--- book"] + scenario.book
        actual += ["--- book"] + book_lines(engine, market)
    if ledger:
        expected += ["--- ledger"] + scenario.holdings
        actual += ["--- ledger"] + holding_lines(engine, market)
    return expected, actual


def holding_lines(engine: Engine, market: Market) -> list[str]:
    currencies = {inst.currency for inst in market.instruments.values()}
    lines = []
    for account, asset, *buckets, pledged in engine.ledger.holdings():
        if any(buckets) or pledged:
            text = [cash(b) if asset in currencies else str(b) for b in buckets]
            lines.append(" ".join([account, asset, *text] + ([f"pledged={pledged}"] if pledged
                                                              else [])))
    return lines


def _params():
    params = []
    for path in SCENARIO_FILES:
        scenario = load_scenario(path)
        marks = [pytest.mark.xfail(strict=True, reason=scenario.xfail)] if scenario.xfail else []
        for book in (FastBook, NaiveBook):
            kind = "fast" if book is FastBook else "naive"
            params.append(pytest.param(scenario, book, marks=marks, id=f"{path.stem}-{kind}"))
    return params


@pytest.mark.parametrize(("scenario", "book"), _params())
def test_scenario(scenario: Scenario, book) -> None:
    expected, actual = run_scenario(scenario, book)
    if expected != actual:
        diff = "\n".join(
            difflib.unified_diff(expected, actual, "expected", "engine", lineterm="", n=4))
        pytest.fail(f"{scenario.path.name} ({scenario.description.splitlines()[0]}):\n{diff}",
                    pytrace=False)


# --- coverage: new codes, kinds and modes force new scenarios -------------------------------
def _passing() -> list[Scenario]:
    return [s for s in map(load_scenario, SCENARIO_FILES) if s.xfail is None]


def _expected_lines() -> list[str]:
    return [line for s in _passing() for step in s.steps for line in step.expected]


def test_there_are_scenarios() -> None:
    assert len(SCENARIO_FILES) >= 20
    for path in SCENARIO_FILES:
        assert load_scenario(path).description, f"{path.name}: describe the scenario"


def test_every_reject_reason_has_a_scenario() -> None:
    seen = {line.split()[3] for line in _expected_lines() if line.startswith("rejected ")}
    missing = sorted(reasons.REJECT_REASONS - seen)
    assert not missing, f"reject reasons with no scenario rejecting a command for them: {missing}"


def test_every_outcome_reason_has_a_scenario() -> None:
    seen = {line.split()[3] for line in _expected_lines() if line.startswith("cancelled ")}
    missing = sorted(reasons.OUTCOME - seen)
    assert not missing, f"cancel reasons with no scenario: {missing}"


def test_every_event_type_has_a_scenario() -> None:
    assert set(
        typing.get_args(AnyEvent)) == set(EVENT_KINDS), ("a new event type needs a line format")
    seen = {line.split()[0] for line in _expected_lines()}
    missing = sorted(set(EVENT_KINDS.values()) - seen)
    assert not missing, f"event kinds with no scenario: {missing}"


def test_every_order_type_tif_and_stp_mode_has_a_scenario() -> None:
    placed = [c for s in _passing() for c in s.commands() if isinstance(c, PlaceOrder)]
    assert set(ORDER_TYPES) <= {c.type for c in placed}
    assert set(TIFS) <= {c.tif for c in placed}
    assert set(STP_MODES) <= {c.stp for c in placed}
