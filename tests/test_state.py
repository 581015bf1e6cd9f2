"""The engine's state as versioned data (exchange.state) and the command window.

* Round trips: random command streams (the generators of test_properties.py, with
  ledger commands and command ids mixed in; the clearing state machine of
  test_clearing_properties.py; every scenario file; the golden order files), the state
  encoded and decoded at a random point (or at every point), on the fast and the naive
  book, ledger on and off: the same ``state_hash()``, ``check()`` passes, the same
  bytes when encoded again, and the rest of the stream gives identical events and the
  same final hash, on the book it was written from and on the other one.
* Hostile payloads: garbage, pickles (a pickle that would run code, and a msgpack map
  claiming to hold one), another version, truncations, random byte flips, and states
  that contradict themselves all raise ``StateError`` and never run code.
* The command window: eviction order, a resend inside the window is rejected
  ``duplicate_command`` and ``answer()`` gives the first answer's events, a resend
  beyond it acts as new, entries and memory bounded at W.
"""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from markets import open_market
from test_clearing_properties import Futures, Hypothesis
from test_properties import MARKET, Context, commands
from test_scenarios import SCENARIO_FILES, load_scenario

from exchange import (CancelOrder, CommandRejected, Deposit, EndOfDay, Engine, FastBook,
                      IssueAllowances, MassCancel, NaiveBook, OrderAccepted, PlaceOrder,
                      TradeExecuted, default_market)
from exchange.book.fast import (DAY, FOK, GTC, GTD, IOC, KIND_CODES, STP_CODES, TIF_CODES, Order)
from exchange.commands import (AllocateAllowances, ComplianceDeadline, ConvertAllowances,
                               OpenAccount, PledgeAllowances, RecordEmissions, ResumeAccount,
                               SurrenderAllowances,
                               SuspendAccount, TransferAllowances, Withdraw)
from exchange.events import AnyEvent, Event
from exchange.market import Market
from exchange.orderfile import read_order_file
from exchange.persist import decode_state, encode_state
from exchange.state import (FORMAT, STATE_VERSION, EngineState, OrderState, StateError, read_state)
from exchange.reasons import Reason

ACCOUNTS = ("a", "b", "c")
WINDOWS = (1, 2, 3, 8, 100_000)
OTHER_BOOK = {FastBook: NaiveBook, NaiveBook: FastBook}
BOOKS = pytest.mark.parametrize("book", [FastBook, NaiveBook], ids=["fast", "naive"])
TS_2025 = 1_750_000_000 * 10**9  # June 2025: net sales count, a deadline comes

# --- streams -------------------------------------------------------------------------------


@st.composite
def admin_commands(draw):
    """A ledger or registry command on the default market's accounts and allowances."""
    account = draw(st.sampled_from(ACCOUNTS + ("d", )))
    symbol = draw(st.sampled_from(("CEA25", "CEA24", "CEA24", "XX")))
    qty = draw(st.integers(1, 300))
    kind = draw(
        st.sampled_from(
            ("deposit", "withdraw", "issue", "transfer", "surrender", "suspend", "resume", "open",
             "emissions", "allocate", "convert", "deadline", "clock")))
    if kind == "deposit":
        return Deposit(account=account, currency="CNY", amount=f"{qty * 100}.00")
    if kind == "withdraw":
        return Withdraw(account=account, currency="CNY", amount=f"{qty * 10}.00")
    if kind == "issue":
        return IssueAllowances(account=account, instrument=symbol, qty=qty)
    if kind == "transfer":
        return TransferAllowances(account=account, to_account=draw(st.sampled_from(ACCOUNTS)),
                                  instrument=symbol, qty=qty)
    if kind == "surrender":
        return SurrenderAllowances(account=account, instrument=symbol, qty=qty,
                                   year=draw(st.sampled_from((None, 2024, 2025))))
    if kind == "suspend":
        return SuspendAccount(account=account)
    if kind == "resume":
        return ResumeAccount(account=account)
    if kind == "open":
        return OpenAccount(account=draw(st.sampled_from(("d", "e", "fi"))),
                           kind=draw(st.sampled_from(("covered", "financial"))))
    if kind == "emissions":
        return RecordEmissions(account=account, year=draw(st.sampled_from(
            (2024, 2025))), qty=qty * 3, quality=draw(st.sampled_from(("measured", "default"))),
                               verifier=draw(st.sampled_from((None, "v1"))))
    if kind == "allocate":
        year = draw(st.sampled_from((2024, 2025)))
        return AllocateAllowances(account=account, instrument=f"CEA{year % 100}", year=year,
                                  qty=qty, stage=draw(st.sampled_from(("pre", "final"))))
    if kind == "convert":
        return ConvertAllowances(account=account, instrument="CEA24", to_instrument="CEA25",
                                 qty=qty)
    if kind == "deadline":
        return ComplianceDeadline(year=2024, multiple=draw(st.sampled_from((5, 7))))
    # the clock jumps to 2025, where net sales count and monthly prices are tallied
    return MassCancel(account="nobody", ts=TS_2025)


def _with_ids(draw, cmds: list) -> list:
    """Give about one command in three a command id from a small pool: many resends."""
    pool = [f"k{n}" for n in range(6)]
    return [
        msgspec.structs.replace(c, command_id=draw(st.sampled_from(pool))) if draw(st.integers(
            0, 2)) == 0 else c for c in cmds
    ]


@st.composite
def matching_streams(draw):
    ctx = Context()
    cmds = [draw(commands(ctx)) for _ in range(draw(st.integers(1, 60)))]
    return _with_ids(draw, cmds)


@st.composite
def ledger_streams(draw):
    ctx = Context()
    cmds: list = []
    for account in ACCOUNTS:
        cmds.append(Deposit(account=account, currency="CNY", amount="20000.00"))
        for symbol in ("CEA25", "CEA24"):
            cmds.append(IssueAllowances(account=account, instrument=symbol, qty=200))
    for _ in range(draw(st.integers(1, 60))):
        if draw(st.integers(0, 3)) == 0:
            cmds.append(draw(admin_commands()))
        else:
            cmds.append(draw(commands(ctx)))
    return _with_ids(draw, cmds)


# --- round trips ---------------------------------------------------------------------------


def _same(left: Engine, right: Engine) -> None:
    assert left.state_hash() == right.state_hash()
    right.check()
    assert encode_state(right) == encode_state(left)
    for account, command_id in left._answers:
        assert right.answer(account, command_id) == left.answer(account, command_id)


def _round_trip(market: Market, cmds: list, split: int, book, *, ledger: bool,
                window: int = 100_000) -> None:
    """Run *cmds* up to *split*, restore the state on both books, run the rest on all."""
    engine = Engine(market, book=book, ledger=ledger, command_window=window)
    for cmd in cmds[:split]:
        engine.execute(cmd)
    data = encode_state(engine)
    twins = [
        decode_state(data, book=book),
        decode_state(data, book=OTHER_BOOK[book]),
        Engine.from_state(engine.to_state(), book=book)
    ]
    for twin in twins:
        _same(engine, twin)
    for cmd in cmds[split:]:
        events = engine.execute(cmd)
        for twin in twins:
            assert twin.execute(cmd) == events, f"the restored engine differs on {cmd!r}"
    engine.check()
    for twin in twins:
        _same(engine, twin)


@pytest.mark.parametrize(("streams", "ledger"), [(matching_streams, False), (ledger_streams, True)],
                         ids=["matching", "ledger"])
@BOOKS
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_state_round_trips_at_a_random_point(streams, ledger, book, data) -> None:
    cmds = data.draw(streams(), label="commands")
    split = data.draw(st.integers(0, len(cmds)), label="split")
    window = data.draw(st.sampled_from(WINDOWS), label="window")
    _round_trip(MARKET, cmds, split, book, ledger=ledger, window=window)


class _Twinned(Futures):
    """The clearing state machine, with a restored twin fed every later command."""

    def __init__(self) -> None:
        super().__init__()
        self.twins: list[Engine] = []

    def run(self, cmd) -> list:
        events = super().run(cmd)
        for twin in self.twins:
            assert twin.execute(cmd) == events, f"the restored engine differs on {cmd!r}"
        return events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_clearing_state_round_trips_at_a_random_point(data) -> None:
    """Futures positions, margin, settlement, calls, defaults, expiry and delivery."""
    machine = _Twinned()
    draw = Hypothesis(data)
    machine.begin(draw)
    for _ in range(data.draw(st.integers(0, 40), label="steps before")):
        machine.act(draw)
    state = encode_state(machine.engine)
    machine.twins = [decode_state(state), decode_state(state, book=NaiveBook)]
    for twin in machine.twins:
        _same(machine.engine, twin)
    for _ in range(data.draw(st.integers(1, 30), label="steps after")):
        machine.act(draw)
    for twin in machine.twins:
        _same(machine.engine, twin)


def _every_point(market: Market, cmds: list, book, *, ledger: bool, every: int = 1) -> None:
    """Encode the state after every *every* commands; each restored engine must run the
    rest of *cmds* exactly as the original did."""
    engine = Engine(market, book=book, ledger=ledger)
    answers, states = [], []
    for index, cmd in enumerate(cmds):
        if index % every == 0:
            states.append((index, encode_state(engine)))
        answers.append(engine.execute(cmd))
    states.append((len(cmds), encode_state(engine)))
    for index, data in states:
        twin = decode_state(data, book=book)
        for cmd, events in zip(cmds[index:], answers[index:]):
            assert twin.execute(cmd) == events, f"restored after {index}: differs on {cmd!r}"
        _same(engine, twin)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_every_scenario_round_trips_after_every_command(path: Path) -> None:
    """The scenarios reach what random streams rarely do: compliance years, options,
    close-outs, defaults, deliveries."""
    scenario = load_scenario(path)
    for book in (FastBook, NaiveBook):
        _every_point(scenario.market(), scenario.commands(), book, ledger=scenario.holdings
                     is not None)


@pytest.mark.parametrize("name", ["basic", "rich", "stp"])
def test_golden_order_files_round_trip(golden_dir: Path, name: str) -> None:
    cmds = read_order_file(golden_dir / f"{name}.csv")
    for book in (FastBook, NaiveBook):
        _every_point(default_market(), cmds, book, ledger=False, every=40)


def test_a_state_holds_every_kind_of_order() -> None:
    """One engine with icebergs, gtd, day, post-only, every stp mode, both kinds of stop,
    a triggered stop-limit resting, an amended order and done ids of the day."""
    engine = Engine(open_market(), ledger=True)
    cmds = [Deposit(account=a, currency="CNY", amount="100000.00") for a in ACCOUNTS]
    cmds += [IssueAllowances(account=a, instrument="CEA25", qty=1000) for a in ACCOUNTS]

    def order(order_id, account, side, price, qty=10, **extra):
        return PlaceOrder(order_id=order_id, account=account, instrument="CEA25", side=side,
                          price=price, qty=qty, **extra)

    cmds += [
        order("s1", "a", "sell", "60.00", 5),
        order("b1", "b", "buy", "60.00", 5),  # a trade: last 60.00, a band
        EndOfDay(ts=10),
        order("ice", "a", "sell", "61.00", 50, display_qty=10),
        order("gtd", "b", "buy", "59.00", tif="gtd", expire_ts=500, ts=20),
        order("day", "c", "buy", "58.50", tif="day", stp="cancel_both"),
        order("po", "c", "sell", "62.00", post_only=True, stp="none"),
        PlaceOrder(order_id="stm", account="b", instrument="CEA25", side="sell", type="stop",
                   stop_price="55.00", qty=3, stp="cancel_aggressor"),
        PlaceOrder(order_id="stl", account="c", instrument="CEA25", side="buy", type="stop_limit",
                   stop_price="61.00", price="60.50", qty=4, tif="gtd", expire_ts=900),
        order("t1", "b", "buy", "61.00", 12),  # takes the iceberg's slice: stl fires
        order("ioc", "a", "sell", "57.00", 1, tif="ioc")
    ]
    for cmd in cmds:
        engine.execute(cmd)
    live = {o.order_id: o for o in engine.live_orders()}
    assert {"ice", "gtd", "day", "po", "stm", "stl"} <= set(live), sorted(live)
    assert live["ice"].visible < live["ice"].display and live["stl"].stop_price
    rest = [
        CancelOrder(order_id="po", account="c"),
        EndOfDay(ts=600),
        order("x", "a", "sell", "50.00", 30),
        order("y", "b", "buy", "65.00", 30)
    ]
    for book in (FastBook, NaiveBook):
        _round_trip(open_market(), cmds + rest, len(cmds), book, ledger=True)


# --- the schema ----------------------------------------------------------------------------


def test_order_state_is_the_engine_order_field_for_field() -> None:
    """encode_state writes the engine's Order objects as OrderState arrays and
    decode_state reads them back as Orders: the two must keep one layout."""
    assert OrderState.__struct_fields__ == Order.__struct_fields__
    assert OrderState.__struct_defaults__ == Order.__struct_defaults__
    assert Order.__struct_config__.array_like and OrderState.__struct_config__.array_like
    order = Order("o1", "a", "CEA25", True, 6000, 10, 5, 5, 0, GTD, 3, True, 7, 99, 42)
    record = OrderState(**msgspec.structs.asdict(order))
    assert msgspec.msgpack.encode(order) == msgspec.msgpack.encode(record)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=Order) == order


def test_the_codes_are_those_the_schema_documents() -> None:
    assert KIND_CODES == {"limit": 0, "market": 1, "stop": 2, "stop_limit": 3}
    assert TIF_CODES == {"gtc": 0, "day": 1, "gtd": 2, "ioc": 3, "fok": 4}
    assert (GTC, DAY, GTD, IOC, FOK) == (0, 1, 2, 3, 4)
    assert STP_CODES == {"cancel_resting": 0, "cancel_aggressor": 1, "cancel_both": 2, "none": 3}


def test_every_event_can_be_remembered_in_the_command_window() -> None:
    union = set(AnyEvent.__args__)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert set(subclasses(Event)) <= union


def test_a_newer_payload_with_more_fields_and_an_older_one_with_fewer_still_decode() -> None:
    """The evolution rule: new fields have defaults; readers skip what they do not know."""
    engine = Engine(default_market(), command_window=5)
    engine.execute(
        PlaceOrder(order_id="o1", account="a", instrument="CEA25", side="buy", price="60.00",
                   qty=10, command_id="c1"))
    raw = msgspec.msgpack.decode(encode_state(engine))
    raw["a_field_of_version_one_later"] = {"x": 1}
    raw["instruments"][0]["bids"] = [row + [0] for row in raw["instruments"][0]["bids"]]
    del raw["rejects"], raw["gtd"]  # fields with defaults, as an older writer might
    restored = decode_state(msgspec.msgpack.encode(raw))
    assert restored.state_hash() == engine.state_hash()


def test_to_state_gives_copies_that_later_commands_do_not_change() -> None:
    engine = Engine(default_market())
    engine.execute(
        PlaceOrder(order_id="o1", account="a", instrument="CEA25", side="buy", price="60.00",
                   qty=10))
    state = engine.to_state()
    engine.execute(
        PlaceOrder(order_id="o2", account="b", instrument="CEA25", side="sell", price="60.00",
                   qty=4))
    (bid, ) = next(i for i in state.instruments if i.symbol == "CEA25").bids
    assert type(bid) is OrderState and bid.qty == 10
    assert Engine.from_state(state).order("o1").qty == 10
    assert msgspec.msgpack.decode(encode_state(engine), type=EngineState[OrderState]).seq == 3


def test_a_market_without_its_text_cannot_be_written() -> None:
    market = default_market()
    engine = Engine(Market(instruments=market.instruments))
    with pytest.raises(ValueError, match="TOML text"):
        encode_state(engine)


def test_the_smaller_windows_of_a_restored_engine_keep_the_newest_ids() -> None:
    engine = Engine(default_market(), command_window=10)
    for number in range(6):
        engine.execute(MassCancel(account="a" if number % 3 else "b", command_id=f"c{number}"))
    # b has c0 and c3, its own newest two; a has c1, c2, c4 and c5, of which c4 and c5 are
    # its newest two (and with c3 the newest three of all): c1 and c2 are past both
    restored = decode_state(encode_state(engine), command_window=3, account_window=2)
    assert [key[1] for key in restored._answers] == ["c0", "c3", "c4", "c5"]
    assert (restored.command_window, restored.account_window) == (3, 2)
    restored.check()
    kept = decode_state(encode_state(engine))  # the windows it was saved with forget nothing
    assert list(kept._answers) == list(engine._answers)
    assert (kept.command_window, kept.account_window) == (10, 1_000)


# --- hostile payloads ----------------------------------------------------------------------

RAN: list[str] = []


def _record(what: str) -> str:
    RAN.append(what)
    return what


class _Trap:
    """Unpickling this calls _record: proof that a pickle ran code."""

    def __reduce__(self):
        return (_record, ("unpickled", ))


def _small_engine(ledger: bool = True) -> Engine:
    engine = Engine(open_market(), ledger=ledger, command_window=4)
    for cmd in (
            Deposit(account="a", currency="CNY", amount="1000.00"),
            IssueAllowances(account="b", instrument="CEA25", qty=100),
            PlaceOrder(order_id="s1", account="b", instrument="CEA25", side="sell", price="60.00",
                       qty=30, command_id="k1"),
            PlaceOrder(order_id="b1", account="a", instrument="CEA25", side="buy", price="59.00",
                       qty=5, tif="gtd", expire_ts=100, ts=1),
            PlaceOrder(order_id="b2", account="a", instrument="CEA25", side="buy", price="59.50",
                       qty=3),
            PlaceOrder(order_id="b3", account="a", instrument="CEA25", side="buy", price="60.00",
                       qty=2),  # trades: a done id of the day
            PlaceOrder(order_id="st", account="a", instrument="CEA25", side="buy",
                       type="stop_limit", stop_price="61.00", price="61.00", qty=1),
            PledgeAllowances(pledge_id="L1", account="b", to_account="a", instrument="CEA25",
                             qty=10)):
        engine.execute(cmd)
    return engine


def test_a_pickle_is_refused_and_never_runs() -> None:
    RAN.clear()
    assert pickle.loads(pickle.dumps(_Trap())) == "unpickled" and RAN == ["unpickled"]
    RAN.clear()
    for payload in (pickle.dumps(_Trap()), pickle.dumps(_small_engine()),
                    pickle.dumps({
                        "format": FORMAT,
                        "version": STATE_VERSION
                    }),
                    msgspec.msgpack.encode({
                        "format": "pickle",
                        "version": STATE_VERSION,
                        "payload": pickle.dumps(_Trap())
                    }),
                    msgspec.msgpack.encode({
                        "format": FORMAT,
                        "version": STATE_VERSION,
                        "market": pickle.dumps(_Trap())
                    })):
        with pytest.raises(StateError):
            decode_state(payload)
    assert RAN == []


@pytest.mark.parametrize(
    "payload", [
        b"", b"\x00", b"garbage", b"\xc1", b"\x80" * 8,
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"format": FORMAT}),
        msgspec.msgpack.encode({"version": STATE_VERSION})
    ], ids=["empty", "zero", "text", "reserved", "maps", "array", "no-version", "no-format"])
def test_garbage_is_refused(payload: bytes) -> None:
    with pytest.raises(StateError, match="not an engine state|does not decode"):
        decode_state(payload)


def test_another_version_is_not_read() -> None:
    raw = msgspec.msgpack.decode(encode_state(_small_engine()))
    for version in (0, STATE_VERSION + 1, -1):
        raw["version"] = version
        with pytest.raises(StateError, match=f"version {version} is not read"):
            decode_state(msgspec.msgpack.encode(raw))


def test_every_truncation_is_refused() -> None:
    data = encode_state(_small_engine())
    for cut in range(len(data)):
        with pytest.raises(StateError):
            decode_state(data[:cut])


def _tampered(change) -> bytes:
    """The small engine's state as msgpack data, changed by *change* (in place)."""
    raw = msgspec.msgpack.decode(encode_state(_small_engine()))
    change(raw)
    return msgspec.msgpack.encode(raw)


def _main(raw: dict) -> dict:
    return next(i for i in raw["instruments"] if i["symbol"] == "CEA25")


def _add_unknown_instrument(raw: dict) -> None:
    raw["instruments"].append({**_main(raw), "symbol": "XX"})


def _move_order_to_unknown_instrument(raw: dict) -> None:
    _main(raw)["bids"][0][2] = "XX"


def _unregister_first_order(raw: dict) -> None:
    raw["registry"] = [item for item in raw["registry"] if item != 0]


def _register_twice(raw: dict) -> None:
    raw["registry"].append(raw["registry"][0])


def _register_done_id_twice(raw: dict) -> None:
    raw["registry"] += ["gone", "gone"]


def _register_beyond(raw: dict) -> None:
    raw["registry"].append(99)


def _bad_market(raw: dict) -> None:
    raw["market"] = "[instruments.X\nkind = "


def _other_market(raw: dict) -> None:
    raw["market"] = '[instruments.ZZ]\ncurrency = "CNY"\ntick = "0.01"\n'


def _crossed(raw: dict) -> None:
    _main(raw)["asks"][0][4] = 5000  # an ask under the best bid


def _out_of_priority(raw: dict) -> None:
    _main(raw)["bids"].reverse()


def _sell_among_bids(raw: dict) -> None:
    _main(raw)["bids"][0][3] = False


def _market_order_resting(raw: dict) -> None:
    _main(raw)["bids"][0][8] = KIND_CODES["market"]


def _ioc_resting(raw: dict) -> None:
    _main(raw)["bids"][0][9] = IOC


def _visible_above_qty(raw: dict) -> None:
    _main(raw)["bids"][0][6] = 10_000


def _gtd_entry_of_plain_order(raw: dict) -> None:
    raw["gtd"].append([5, 77, "s1"])


def _gtd_order_without_entry(raw: dict) -> None:
    raw["gtd"] = []


def _command_twice(raw: dict) -> None:
    raw["commands"].append(raw["commands"][0])


def _command_id_not_text(raw: dict) -> None:
    raw["commands"][0][1] = 5


def _not_an_event(raw: dict) -> None:
    raw["commands"][0][2] = [{"event": "exec_code", "seq": 1}]


def _hold_of_unknown_account(raw: dict) -> None:
    raw["ledger"]["holds"][0][1] = "mallory"


def _holding_of_unknown_asset(raw: dict) -> None:
    raw["ledger"]["accounts"][-1]["holdings"].append(["GOLD", 1, 0, 0, 0])


def _system_account_missing(raw: dict) -> None:
    raw["ledger"]["accounts"] = [a for a in raw["ledger"]["accounts"] if a["name"] != "@exchange"]


def _hold_missing(raw: dict) -> None:
    raw["ledger"]["holds"].pop()


def _pledge_not_in_the_bucket(raw: dict) -> None:
    raw["ledger"]["pledges"][0][4] += 1  # the pledge says 11, b's pledged bucket 10


def _pledge_to_unknown_account(raw: dict) -> None:
    raw["ledger"]["pledges"][0][2] = "mallory"


def _pledge_twice(raw: dict) -> None:
    raw["ledger"]["pledges"].append(raw["ledger"]["pledges"][0])


def _pledge_to_a_system_account(raw: dict) -> None:
    raw["ledger"]["pledges"][0][2] = "@registry"


def _pledge_to_a_closed_account(raw: dict) -> None:
    [pledgee] = [a for a in raw["ledger"]["accounts"] if a["name"] == "a"]
    pledgee["status"] = "closed"  # a pledgee cannot close while a pledge to it is in force


def _pledge_of_cash(raw: dict) -> None:
    [pledgor] = [a for a in raw["ledger"]["accounts"] if a["name"] == "b"]
    units, cash = (next(h for h in pledgor["holdings"] if h[0] == asset)
                   for asset in ("CEA25", "CNY"))
    units[1], units[5] = units[1] + units[5], 0  # available, pledged
    cash[1], cash[5] = cash[1] - 10, 10
    raw["ledger"]["pledges"][0][3] = "CNY"  # the pledge and the buckets agree: on cash


def _not_conserved(raw: dict) -> None:
    raw["ledger"]["supply"]["CNY"] += 1


def _negative_notional(raw: dict) -> None:
    _main(raw)["day_notional"] = "-5"


def _stop_as_resting(raw: dict) -> None:
    main = _main(raw)
    main["bids"].append(main["stop_buys"].pop())


@pytest.mark.parametrize("change", [
    _add_unknown_instrument, _move_order_to_unknown_instrument, _unregister_first_order,
    _register_twice, _register_done_id_twice, _register_beyond, _bad_market, _other_market,
    _crossed, _out_of_priority, _sell_among_bids, _market_order_resting, _ioc_resting,
    _visible_above_qty, _gtd_entry_of_plain_order, _gtd_order_without_entry, _command_twice,
    _command_id_not_text, _not_an_event, _hold_of_unknown_account, _holding_of_unknown_asset,
    _system_account_missing, _hold_missing, _not_conserved, _negative_notional, _stop_as_resting,
    _pledge_not_in_the_bucket, _pledge_to_unknown_account, _pledge_twice,
    _pledge_to_a_system_account, _pledge_to_a_closed_account, _pledge_of_cash
], ids=lambda f: f.__name__.strip("_"))
def test_a_state_that_contradicts_itself_is_refused(change) -> None:
    with pytest.raises(StateError):
        decode_state(_tampered(change))


@pytest.mark.parametrize("ledger", [False, True], ids=["matching", "ledger"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bytes_give_a_state_error_or_a_consistent_engine(ledger, data) -> None:
    """Random byte changes never raise anything but StateError; what does decode is an
    engine whose invariants hold (decode_state checks them) and that runs on."""
    payload = bytearray(_SMALL[ledger])
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        at = data.draw(st.integers(0, len(payload) - 1), label="at")
        payload[at] = data.draw(st.integers(0, 255), label="byte")
    try:
        engine = decode_state(bytes(payload))
    except StateError:
        return
    engine.execute(
        PlaceOrder(order_id="z", account="a", instrument="CEA25", side="sell", price="59.00",
                   qty=1))


_SMALL = {ledger: encode_state(_small_engine(ledger)) for ledger in (False, True)}


def test_read_state_gives_the_data_without_building_an_engine() -> None:
    state = read_state(_SMALL[True])
    assert state.version == STATE_VERSION and state.ledger is not None
    assert [c.command_id for c in state.commands] == ["k1"]
    framed = memoryview(b"header" + _SMALL[True])[6:]  # as a journal reads a file
    assert decode_state(framed).state_hash() == _small_engine().state_hash()


# --- the command window --------------------------------------------------------------------


def _deposit(command_id: str | None, account: str = "a") -> Deposit:
    return Deposit(account=account, currency="CNY", amount="10.00", command_id=command_id)


def test_the_window_forgets_the_oldest_ids_first() -> None:
    engine = Engine(default_market(), ledger=True, command_window=3, account_window=1)
    for number in range(5):
        engine.execute(_deposit(f"c{number}"))
        engine.check()
    assert list(engine._answers) == [("a", "c2"), ("a", "c3"), ("a", "c4")]
    assert engine.answer("a", "c0") is None and engine.answer("a", "c1") is None
    assert engine.answer("a", "c2") is not None
    # the same id from another account is another key
    engine.execute(_deposit("c4", account="b"))
    assert list(engine._answers) == [("a", "c3"), ("a", "c4"), ("b", "c4")]


def test_one_accounts_flood_does_not_push_out_anothers_ids() -> None:
    """The global window is W; each account keeps its own P newest besides, so a flood
    from one account forgets only the flooder's ids beyond W."""
    engine = Engine(default_market(), ledger=True, command_window=4, account_window=2)
    engine.execute(_deposit("quiet-1", account="q"))
    engine.execute(_deposit("quiet-2", account="q"))
    engine.execute(_deposit("quiet-3", account="q"))
    for number in range(50):
        engine.execute(_deposit(f"flood-{number}", account="f"))
    engine.check()
    assert [key for key in engine._answers if key[0] == "q"] == [("q", "quiet-2"),
                                                                  ("q", "quiet-3")]
    assert [key[1] for key in engine._answers if key[0] == "f"] == [
        f"flood-{number}" for number in range(46, 50)]
    # the quiet account's resend is still a duplicate; its oldest, past both, acts again
    assert engine.execute(_deposit("quiet-3", account="q"))[0].reason == Reason.DUPLICATE_COMMAND
    assert type(engine.execute(_deposit("quiet-1", account="q"))[0]).__name__ == "CashDeposited"
    # and the memory stays at W + P per account
    assert len(engine._answers) <= 4 + 2 * 2


@pytest.mark.parametrize("ledger", [False, True], ids=["matching", "ledger"])
def test_a_resend_inside_the_window_is_a_duplicate_and_answer_gives_the_first_events(
        ledger) -> None:
    engine = Engine(open_market(), ledger=ledger, command_window=3)
    if ledger:
        engine.execute(IssueAllowances(account="s", instrument="CEA25", qty=100))
        engine.execute(Deposit(account="b", currency="CNY", amount="10000.00"))
    engine.execute(
        PlaceOrder(order_id="s1", account="s", instrument="CEA25", side="sell", price="60.00",
                   qty=10))
    buy = PlaceOrder(order_id="b1", account="b", instrument="CEA25", side="buy", price="60.00",
                     qty=4, command_id="k", ts=5)
    first = engine.execute(buy)
    assert type(first[0]) is OrderAccepted and type(first[1]) is TradeExecuted
    assert engine.answer("b", "k") == tuple(first)  # the fills and settlement too
    before = engine.snapshot()
    again = engine.execute(buy)
    assert len(again) == 1 and type(again[0]) is CommandRejected
    assert again[0].reason == Reason.DUPLICATE_COMMAND and again[0].order_id == "b1"
    after = engine.snapshot()
    # only the counters moved: seq, rejected, rejects
    assert after[0] == before[0] + 1 and after[5] == before[5] + 1
    assert [after[i]
            for i in (1, 2, 3, 4, 7, 8, 9, 10)] == [before[i] for i in (1, 2, 3, 4, 7, 8, 9, 10)]
    assert engine.answer("b", "k") == tuple(first)
    restored = decode_state(encode_state(engine))
    assert restored.answer("b", "k") == tuple(first)
    assert restored.execute(buy)[0].reason == Reason.DUPLICATE_COMMAND


def test_a_resend_beyond_the_window_acts_as_a_new_command() -> None:
    engine = Engine(default_market(), ledger=True, command_window=2, account_window=2)
    assert type(engine.execute(_deposit("k"))[0]).__name__ == "CashDeposited"
    assert engine.execute(_deposit("k"))[0].reason == Reason.DUPLICATE_COMMAND
    engine.execute(_deposit("x"))
    engine.execute(_deposit("y"))  # "k" is forgotten
    assert engine.answer("a", "k") is None
    assert type(engine.execute(_deposit("k"))[0]).__name__ == "CashDeposited"
    assert engine.ledger.holding("a", "CNY").available == 4 * 1000
    engine.check()


def test_commands_without_an_account_and_a_zero_window() -> None:
    engine = Engine(default_market(), command_window=1)
    engine.execute(EndOfDay(command_id="eod-1"))
    assert engine.answer(None, "eod-1") == engine.answer("", "eod-1") is not None
    assert engine.execute(EndOfDay(command_id="eod-1"))[0].reason == Reason.DUPLICATE_COMMAND
    off = Engine(default_market(), command_window=0, account_window=0)
    off.execute(EndOfDay(command_id="e"))
    assert type(off.execute(EndOfDay(command_id="e"))[0]).__name__ == "TradingDayEnded"
    assert not off._answers and off.answer("", "e") is None
    off.check()
    # with no global window, each account's own still answers
    own = Engine(default_market(), command_window=0, account_window=1)
    own.execute(EndOfDay(command_id="e"))
    assert own.execute(EndOfDay(command_id="e"))[0].reason == Reason.DUPLICATE_COMMAND
    own.check()
    with pytest.raises(ValueError):
        Engine(default_market(), command_window=-1)
    with pytest.raises(ValueError):
        Engine(default_market(), account_window=-1)


def test_commands_without_ids_leave_the_window_alone() -> None:
    engine = Engine(default_market(), ledger=True, command_window=3)
    engine.execute(_deposit("k"))
    for _ in range(10):
        engine.execute(_deposit(None))
    assert list(engine._answers) == [("a", "k")]


def test_the_window_is_in_the_state_hash() -> None:
    with_ids, without = Engine(default_market()), Engine(default_market())
    for number in range(3):
        with_ids.execute(MassCancel(account="a", command_id=f"k{number}"))
        without.execute(MassCancel(account="a"))
    assert with_ids.state_hash() != without.state_hash()
    other = Engine(default_market())
    for number in (0, 2, 1):
        other.execute(MassCancel(account="a", command_id=f"k{number}"))
    assert other.state_hash() != with_ids.state_hash()  # the order of the ids counts


def _naive_window(arrivals: list[tuple[str, str]], window: int, own: int) -> list:
    """The plain definition: of the ids remembered when they came (*arrivals*, oldest
    first), those among the newest *window* of all or the newest *own* of their account."""
    kept = set(range(max(len(arrivals) - window, 0), len(arrivals)))
    by_account: dict[str, list[int]] = {}
    for index, key in enumerate(arrivals):
        by_account.setdefault(key[0], []).append(index)
    for indexes in by_account.values():
        kept.update(indexes[max(len(indexes) - own, 0):])
    return [arrivals[index] for index in sorted(kept)]


@settings(max_examples=150, deadline=None)
@given(window=st.integers(0, 6), own=st.integers(0, 4),
       sent=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 7)), max_size=60))
def test_the_windows_keep_what_the_plain_definition_keeps(window, own, sent) -> None:
    """The engine's windows against the definition, step by step; a resend of a kept id
    is a duplicate, of any other acts; a restored engine keeps and answers the same."""
    engine = Engine(default_market(), command_window=window, account_window=own)
    arrivals: list[tuple[str, str]] = []
    for account, number in sent:
        key = (account, f"k{number}")
        duplicate = key in _naive_window(arrivals, window, own)
        (event, ) = engine.execute(MassCancel(account=account, command_id=key[1]))
        assert (getattr(event, "reason", None) == Reason.DUPLICATE_COMMAND) == duplicate
        if not duplicate:
            arrivals.append(key)
        assert list(engine._answers) == _naive_window(arrivals, window, own)
    engine.check()
    restored = decode_state(encode_state(engine))
    assert list(restored._answers) == list(engine._answers)
    assert restored.state_hash() == engine.state_hash()
    for account, number in sent[-5:]:
        again = MassCancel(account=account, command_id=f"k{number}")
        assert restored.execute(again) == engine.execute(again)
    assert list(restored._answers) == list(engine._answers)


def test_entries_and_memory_stay_bounded_at_the_window() -> None:
    """W entries at most, whatever the number of commands; and the cost per id is what
    the Engine docstring states (about 290 B for an order that rests)."""
    window, own, count = 500, 20, 5000
    engine = Engine(default_market(), command_window=window, account_window=own)
    for number in range(count):
        engine.execute(MassCancel(account=f"acct{number % 7}", command_id=f"c{number}"))
        assert len(engine._answers) == len(engine._answer_order) == min(number + 1, window)
    assert next(iter(engine._answers)) == (f"acct{(count - window) % 7}", f"c{count - window}")
    # one account's own window past the global one: W + P x accounts at most
    for number in range(count):
        engine.execute(MassCancel(account=f"other{number % 50}", command_id=f"o{number}"))
        assert len(engine._answers) <= window + own * 57
    engine.check()
    # the newest W (10 of each other account), each other's 10 more of its own newest,
    # and the seven first accounts' own newest
    assert len(engine._answers) == window + 50 * (own - window // 50) + 7 * own

    def kept(ids: bool) -> float:
        cmds = [
            PlaceOrder(order_id=f"o{n}", account="acct01", instrument="CEA25", side="buy",
                       price="50.00", qty=10, command_id=f"cmd-{n:08d}" if ids else None)
            for n in range(2000)
        ]
        engine = Engine(default_market(), command_window=2000)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        out: list = []
        for cmd in cmds:
            engine.submit(cmd, out)
            out.clear()
        del cmds
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return kept / 2000

    per_id = kept(True) - kept(False)
    assert 150 < per_id < 450, per_id


# --- the benchmark, tiny ---------------------------------------------------------------------


def test_the_snapshot_benchmark_agrees_on_the_state_hash() -> None:
    from benchmarks import snapshot

    result = snapshot.measure(1500, ledger=True, command_ids=200, repeat=1)
    assert result["resting"] == 1500
    assert all(row["same_state_hash"] for row in result["methods"].values())
    assert result["methods"]["state"]["bytes"] < result["methods"]["pickle"]["bytes"]
    assert "state+check" in snapshot.table(result)


def _kinds(cmds: list, *, ledger: bool) -> set[str]:
    engine = Engine(MARKET, ledger=ledger)
    kinds = set()
    for cmd in cmds:
        for event in engine.execute(cmd):
            kinds.add(getattr(event, "reason", None) or type(event).__name__)
    return kinds


@pytest.mark.parametrize(
    ("streams", "ledger", "wanted"),
    [(matching_streams, False, {"TradeExecuted", "OrderTriggered", "duplicate_command"}),
     (ledger_streams, True,
      {"TradeSettled", "EmissionsVerified", "AllowancesAllocated", "duplicate_command"})],
    ids=["matching", "ledger"])
def test_the_random_streams_reach_what_the_round_trips_should_cover(streams, ledger,
                                                                    wanted) -> None:
    """Guard against generators that never get anywhere: streams drawn as the round
    trips draw them reach trades, triggered stops or the registry, and resent ids."""
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, database=None, phases=[Phase.generate],
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(cmds=streams())
    def collect(cmds) -> None:
        seen.update(_kinds(cmds, ledger=ledger))

    collect()
    assert wanted <= seen, wanted - seen


def test_an_open_blocks_id_outlives_the_forgetting_of_done_ids(monkeypatch):
    """Forgetting the oldest done ids keeps those an open block still uses: its id
    still refuses an order, and the block can still be accepted."""
    import exchange.engine as engine_module
    from exchange.commands import AcceptBlock, PostBlock

    monkeypatch.setattr(engine_module, "DONE_IDS", 10)
    engine = Engine(default_market())
    engine._sweep_at = 20
    engine.execute(PostBlock(order_id="B1", account="a", instrument="CEA25", side="sell",
                             price="60.00", qty=100_000, to_account="b"))
    for n in range(40):
        engine.execute(PlaceOrder(order_id=f"s{n}", account="a", instrument="CEA25",
                                  side="sell", price="60.00", qty=1))
        engine.execute(PlaceOrder(order_id=f"b{n}", account="b", instrument="CEA25", side="buy",
                                  price="60.00", qty=1))
    assert "s0" not in engine._ids and "b39" in engine._ids  # the oldest were forgotten
    refused = engine.execute(PlaceOrder(order_id="B1", account="c", instrument="CEA25",
                                        side="buy", price="59.00", qty=1))
    assert refused[0].reason == "duplicate_order_id"
    accepted = engine.execute(AcceptBlock(order_id="B1", account="b", to_account="a"))
    assert type(accepted[0]).__name__ == "BlockAccepted"
    engine.check()


def test_done_ids_past_the_window_are_forgotten_alike_in_a_restored_engine(monkeypatch):
    """Ids of done orders are kept for the day up to DONE_IDS; the sweep that forgets
    older ones happens at the same point in an engine restored from its state."""
    import exchange.engine as engine_module

    monkeypatch.setattr(engine_module, "DONE_IDS", 10)
    engine = Engine(default_market())
    engine._sweep_at = 20

    def trade(engine, n):
        engine.execute(
            PlaceOrder(order_id=f"s{n}", account="a", instrument="CEA25", side="sell",
                       price="60.00", qty=1))
        engine.execute(
            PlaceOrder(order_id=f"b{n}", account="b", instrument="CEA25", side="buy", price="60.00",
                       qty=1))

    for n in range(15):
        trade(engine, n)
    restored = decode_state(encode_state(engine))
    for n in range(15, 60):
        trade(engine, n)
        trade(restored, n)
    assert restored.state_hash() == engine.state_hash()
    assert len(engine._ids) <= 30  # bounded, though 120 orders were done today
    # the newest done ids still refuse a reuse; the oldest are forgotten
    assert (engine.execute(
        PlaceOrder(order_id="b59", account="b", instrument="CEA25", side="buy", price="59.00",
                   qty=1))[0].reason == "duplicate_order_id")
    assert (type(
        engine.execute(
            PlaceOrder(order_id="b0", account="b", instrument="CEA25", side="buy", price="59.00",
                       qty=1))[0]).__name__ == "OrderAccepted")
    engine.check()
