"""The operator's rows inside the gateway (no network): answered on the ops reports topic,
malformed or forbidden rows refused there and changing nothing; halts and daily
statistics published as market data; and when ``--eod`` falls due."""

from __future__ import annotations

import json

import pytest

from exchange import Engine, default_market
from exchange.calendar import days_from_civil
from exchange.commands import OpenAccount
from gateway.mqtt.service import (GatewayCore, GatewaySettings, missed_ends_of_day,
                                  next_end_of_day)
from gateway.protocol import OPS_COMMANDS, OPS_REPORTS, exec_topic, orders_topic


def _core() -> GatewayCore:
    return GatewayCore(Engine(default_market().open_all_hours(), ledger=True),
                       settings=GatewaySettings(book_interval=0))


def _messages(outgoing, topic: str) -> list[dict]:
    found: list[dict] = []
    for message in outgoing:
        if message[0] == topic:
            body = json.loads(message[1])
            found += body if isinstance(body, list) else [body]
    return found


def _ops(core: GatewayCore, *rows: dict) -> tuple[list[dict], list]:
    core.receive(OPS_COMMANDS, json.dumps(list(rows)).encode())
    outgoing = core.flush()
    return _messages(outgoing, OPS_REPORTS), outgoing


def test_each_operator_row_is_answered_with_its_command_id():
    core = _core()
    answers, _ = _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY",
                             "qty": "100.00", "command_id": "c1"},
                      {"action": "withdraw", "account": "alice", "instrument": "CNY",
                       "qty": "500.00", "command_id": "c2"})
    assert [(a["report"], a["command_id"], a["action"]) for a in answers] == [
        ("accepted", "c1", "deposit"), ("rejected", "c2", "withdraw")]
    assert answers[1]["reason"] == "insufficient_cash"
    assert answers[0]["account"] == "alice" and answers[0]["instrument"] == "CNY"
    # Counted among the commands (serve's closing line), as the accounts' are.
    assert (core.stats.messages, core.stats.commands, core.stats.turned_away) == (1, 2, 0)


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", "malformed"),
    (b"[1, 2]", "malformed"),
    (b'{"account": "alice"}', "bad_command"),
    (b'{"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "x"}',
     "bad_command"),
    (b'{"action": "fly", "command_id": "c9"}', "bad_command"),
    (b'{"action": "new", "order_id": "o1", "account": "alice", "instrument": "CEA25", '
     b'"side": "buy", "price": "60.00", "qty": 1}', "not_permitted"),
    (b'{"action": "cancel", "order_id": "o1", "account": "alice"}', "not_permitted"),
    (b'{"action": "mass_cancel", "account": "alice"}', "not_permitted"),
    # Accounts that could never log in: the system users' names, and names that are not
    # one level of a topic.
    (b'{"action": "open_account", "account": "gateway", "kind": "financial"}', "bad_command"),
    (b'{"action": "open_account", "account": "operator", "kind": "financial"}', "bad_command"),
    (b'{"action": "open_account", "account": "a/b", "kind": "financial"}', "bad_command"),
    (b'{"action": "deposit", "account": "x+y", "instrument": "CNY", "qty": "1.00"}',
     "bad_command"),
    (b'{"action": "transfer", "account": "alice", "to_account": "a#", "instrument": "CEA25", '
     b'"qty": 1}', "bad_command"),
    # ... and names that could not log in to the web portal (HTTP Basic's user:password),
    # nor be in mosquitto's password file, nor be a segment of a page's address
    (b'{"action": "open_account", "account": "x:y", "kind": "covered"}', "bad_command"),
    (b'{"action": "open_account", "account": "..", "kind": "covered"}', "bad_command"),
    (b'{"action": "open_account", "account": "a b", "kind": "covered"}', "bad_command"),
    (b'{"action": "open_account", "account": "a\\u0000b", "kind": "covered"}', "bad_command"),
])
def test_a_bad_or_forbidden_operator_row_is_refused_there_and_changes_nothing(payload, reason):
    core = _core()
    before = core.engine.state_hash()
    core.receive(OPS_COMMANDS, payload)
    outgoing = core.flush()
    answers = _messages(outgoing, OPS_REPORTS)
    assert answers and all(a["report"] == "rejected" for a in answers)
    assert answers[0]["reason"] == reason
    assert core.engine.state_hash() == before
    assert [m for m in outgoing if m[0] != OPS_REPORTS] == []


def test_rows_about_an_account_that_exists_name_it_as_it_is():
    """An account opened under an older rule, or by an order file (here 'desk 1'), can
    still be suspended, credited and closed: only rows that would open an account under a
    name that cannot log in are refused."""
    core = _core()
    core.engine.execute(OpenAccount(account="desk 1", kind="financial"))
    for row in ({"action": "suspend_account", "account": "desk 1"},
                {"action": "resume_account", "account": "desk 1"},
                {"action": "deposit", "account": "desk 1", "instrument": "CNY", "qty": "1.00"},
                {"action": "withdraw", "account": "desk 1", "instrument": "CNY", "qty": "1.00"},
                {"action": "close_account", "account": "desk 1"}):
        answers, _ = _ops(core, row)
        assert answers[0]["report"] == "accepted", (row, answers)
    answers, _ = _ops(core, {"action": "transfer", "account": "alice", "to_account": "b c",
                             "instrument": "CEA25", "qty": 1})
    assert (answers[0]["report"], answers[0]["reason"]) == ("rejected", "bad_command")


def test_a_resent_operator_row_is_answered_again_and_applied_once():
    core = _core()
    row = {"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "100.00",
           "command_id": "again"}
    first, _ = _ops(core, row)
    second, _ = _ops(core, row)
    assert first[0]["report"] == second[0]["report"] == "accepted"
    assert second[0]["duplicate"] is True and second[0]["seq"] == first[0]["seq"]
    ledger = core.engine.ledger
    assert ledger is not None
    holding = ledger.holding("alice", "CNY")
    assert holding is not None and holding.available == 10_000


def test_the_account_an_operator_row_names_is_not_told_of_its_rejection():
    """A resent operator row made the account it named receive 'rejected
    duplicate_command' (no command id) for a deposit that had been applied; a bot would
    take its withdrawal for failed. An operator row's answer, refused or not, is the
    operator's alone."""
    core = _core()
    row = {"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "100.00",
           "command_id": "again"}
    _ops(core, row)
    for rows in ([row], [{"action": "withdraw", "account": "alice", "instrument": "CNY",
                          "qty": "500.00", "command_id": "w1"}]):
        answers, outgoing = _ops(core, *rows)
        assert [a["report"] for a in answers] in (["accepted"], ["rejected"])
        assert _messages(outgoing, exec_topic("alice")) == []


def _bot(core: GatewayCore, account: str, body: dict) -> list[dict]:
    core.receive(orders_topic(account), json.dumps(body).encode())
    return _messages(core.flush(), exec_topic(account))


def test_an_operator_row_and_a_bot_with_the_same_command_id_are_both_applied():
    """The command window is by account and id, and an operator's row names an account:
    a deposit to alice with her bot's id was answered 'accepted' (a duplicate) and not
    applied; a bot command with an operator row's id got no answer at all."""
    core = _core()
    _ops(core, {"action": "deposit", "account": "bob", "instrument": "CNY",
                "qty": "100000.00", "command_id": "boot"})
    bought = _bot(core, "bob", {"action": "new", "order_id": "o1", "instrument": "CEA25",
                                "side": "buy", "price": "60.00", "qty": 10, "command_id": "k1"})
    assert [(r["report"], r["command_id"]) for r in bought] == [("accepted", "k1")]
    answers, _ = _ops(core, {"action": "deposit", "account": "bob", "instrument": "CNY",
                             "qty": "5.00", "command_id": "k1"})
    assert [(a["report"], a["command_id"], a.get("duplicate", False)) for a in answers] == [
        ("accepted", "k1", False)]
    _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY",
                "qty": "1000.00", "command_id": "z9"})
    mine = _bot(core, "alice", {"action": "new", "order_id": "a1", "instrument": "CEA25",
                                "side": "buy", "price": "60.00", "qty": 1, "command_id": "z9"})
    assert [(r["report"], r["command_id"]) for r in mine] == [("accepted", "z9")]
    ledger = core.engine.ledger
    assert ledger is not None
    assert ledger.holding("bob", "CNY").available + ledger.holding("bob", "CNY").held == (
        10_000_500)
    # No bot may take an id of the operator's form.
    refused = _bot(core, "alice", {"action": "cancel", "order_id": "a1",
                                   "command_id": "@ops/z9"})
    assert [(r["report"], r["reason"]) for r in refused] == [("rejected", "bad_command")]


def test_an_operator_id_used_again_for_another_row_is_not_told_that_row_was_done():
    core = _core()
    first, _ = _ops(core, {"action": "halt", "instrument": "CEA23", "command_id": "op-1"})
    again, _ = _ops(core, {"action": "halt", "instrument": "CEA22", "command_id": "op-1"})
    assert first[0]["report"] == "accepted"
    assert (again[0]["report"], again[0]["reason"], again[0]["command_id"]) == (
        "rejected", "duplicate_command", "op-1")
    assert "used by an earlier command" in again[0]["message"]
    assert not core.engine.halted("CEA22") and core.engine.halted("CEA23")


def test_an_init_rows_id_is_the_operators_too(tmp_path):
    """``serve --init`` rows kept their raw ids while the operator's rows over MQTT took
    the operator's space: an init deposit resent by ``admin`` with its id was applied
    again, and alice's bot command with that id got no answer at all."""
    from gateway.mqtt.serve import open_engine

    init = tmp_path / "init.csv"
    init.write_text("action,account,instrument,qty,command_id\n"
                    "deposit,alice,CNY,100000.00,k1\n")
    engine, _, _ = open_engine(default_market().open_all_hours(), journal=None, init=init)
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    again, _ = _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY",
                           "qty": "100000.00", "command_id": "k1"})
    assert [(a["report"], a.get("duplicate")) for a in again] == [("accepted", True)]
    mine = _bot(core, "alice", {"action": "new", "order_id": "o1", "instrument": "CEA25",
                                "side": "buy", "price": "60.00", "qty": 10, "command_id": "k1"})
    assert [(r["report"], r["command_id"]) for r in mine] == [("accepted", "k1")]
    ledger = core.engine.ledger
    assert ledger is not None
    cash = ledger.holding("alice", "CNY")
    assert cash.available + cash.held == 10_000_000


@pytest.mark.parametrize("first, then", [
    ({"action": "halt", "instrument": "CEA23"}, {"action": "resume", "instrument": "CEA23"}),
    ({"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "5.00"},
     {"action": "withdraw", "account": "alice", "instrument": "CNY", "qty": "5.00"}),
    ({"action": "suspend_account", "account": "alice"},
     {"action": "close_account", "account": "alice"}),
])
def test_an_operator_id_used_again_for_another_action_is_refused(first, then):
    core = _core()
    _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "1.00"})
    done, _ = _ops(core, {**first, "command_id": "x"})
    again, _ = _ops(core, {**then, "command_id": "x"})
    assert done[0]["report"] == "accepted"
    assert (again[0]["report"], again[0]["reason"]) == ("rejected", "duplicate_command")


def test_a_row_journaled_before_the_operators_ids_had_their_space_is_answered_when_resent():
    """Across the upgrade: a journal's operator rows hold their plain ids, and 'admin
    --session' sending the file again applied them a second time."""
    from exchange.commands import Deposit

    engine = Engine(default_market().open_all_hours(), ledger=True)
    engine.execute(Deposit(account="alice", currency="CNY", amount="1000.00",
                           command_id="admin-00c0ffee-2"))  # as an older gateway journaled it
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    again, _ = _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY",
                           "qty": "1000.00", "command_id": "admin-00c0ffee-2"})
    assert [(a["report"], a["command_id"], a.get("duplicate")) for a in again] == [
        ("accepted", "admin-00c0ffee-2", True)]
    other, _ = _ops(core, {"action": "withdraw", "account": "alice", "instrument": "CNY",
                           "qty": "1.00", "command_id": "admin-00c0ffee-2"})
    assert [(a["report"], a.get("duplicate", False)) for a in other] == [("accepted", False)]
    ledger = core.engine.ledger
    assert ledger is not None and ledger.holding("alice", "CNY").available == 99_900


def test_an_operator_id_used_again_for_another_account_is_refused_after_a_restart_too():
    """The window is by account and id: an id used for a deposit to dave, used again for
    one to carol, was a new key, and carol's deposit ran."""
    core = _core()
    first, _ = _ops(core, {"action": "deposit", "account": "dave", "instrument": "CNY",
                           "qty": "1.00", "command_id": "K"})
    again, _ = _ops(core, {"action": "deposit", "account": "carol", "instrument": "CNY",
                           "qty": "1.00", "command_id": "K"})
    assert first[0]["report"] == "accepted"
    assert (again[0]["report"], again[0]["reason"], again[0]["command_id"]) == (
        "rejected", "duplicate_command", "K")
    restarted = GatewayCore(core.engine, settings=GatewaySettings(book_interval=0))
    later, _ = _ops(restarted, {"action": "halt", "instrument": "CEA25", "command_id": "K"})
    assert (later[0]["report"], later[0]["reason"]) == ("rejected", "duplicate_command")
    ledger = core.engine.ledger
    assert ledger is not None and ledger.holding("carol", "CNY") is None
    assert not core.engine.halted("CEA25")


def test_one_operator_id_for_two_accounts_in_one_message_runs_the_first_only():
    core = _core()
    answers, _ = _ops(core, {"action": "deposit", "account": "dave", "instrument": "CNY",
                             "qty": "1.00", "command_id": "K"},
                      {"action": "deposit", "account": "carol", "instrument": "CNY",
                       "qty": "1.00", "command_id": "K"})
    assert [(a["report"], a.get("reason")) for a in answers] == [
        ("accepted", None), ("rejected", "duplicate_command")]
    ledger = core.engine.ledger
    assert ledger is not None and ledger.holding("carol", "CNY") is None


def test_an_operator_row_with_an_id_its_accounts_bot_used_for_the_same_action_runs():
    """The upgrade's answer for plain ids took a bot's own surrender with that id for an
    old operator row, and the operator's surrender was answered done and not made."""
    from exchange.commands import IssueAllowances

    core = _core()
    core.engine.execute(IssueAllowances(account="dave", instrument="CEA25", qty=1_000))
    core.receive(orders_topic("dave"), json.dumps(
        {"action": "surrender", "instrument": "CEA25", "qty": 10, "command_id": "s1"}).encode())
    core.flush()
    answers, _ = _ops(core, {"action": "surrender", "account": "dave", "instrument": "CEA25",
                             "qty": 300, "command_id": "s1"})
    assert [(a["report"], a.get("duplicate", False)) for a in answers] == [("accepted", False)]
    ledger = core.engine.ledger
    assert ledger is not None and ledger.holding("dave", "CEA25").available == 690


def test_an_operator_id_the_window_forgot_is_the_rows_that_took_it_again():
    """An id was kept for the first account it named: taken again once the window forgot
    it, a third account's row with it ran."""
    core = GatewayCore(Engine(default_market().open_all_hours(), ledger=True,
                              command_window=2, account_window=1),
                       settings=GatewaySettings(book_interval=0))
    _ops(core, {"action": "deposit", "account": "dave", "instrument": "CNY", "qty": "1.00",
                "command_id": "K"})
    _ops(core, {"action": "deposit", "account": "dave", "instrument": "CNY", "qty": "1.00",
                "command_id": "D2"})
    for n in range(3):  # the window forgets dave's K (his newest one id is kept)
        _ops(core, {"action": "deposit", "account": "zed", "instrument": "CNY", "qty": "1.00",
                    "command_id": f"f{n}"})
    assert ("dave", "@ops/K") not in core.engine.answered
    carol, _ = _ops(core, {"action": "deposit", "account": "carol", "instrument": "CNY",
                           "qty": "1.00", "command_id": "K"})
    erin, _ = _ops(core, {"action": "deposit", "account": "erin", "instrument": "CNY",
                          "qty": "1.00", "command_id": "K"})
    assert carol[0]["report"] == "accepted"
    assert (erin[0]["report"], erin[0]["reason"]) == ("rejected", "duplicate_command")


def test_a_halt_is_market_data_and_bots_are_refused_until_the_resume():
    core = _core()
    _ops(core, {"action": "issue", "account": "alice", "instrument": "CEA25", "qty": 10})
    answers, outgoing = _ops(core, {"action": "halt", "instrument": "CEA25", "command_id": "h"})
    assert answers[0]["report"] == "accepted"
    (status, ) = [m for m in outgoing if m[0] == "cx/v1/md/CEA25/status"]
    assert json.loads(status[1])["status"] == "halted" and status[3] is True  # retained
    order = {"action": "new", "order_id": "s1", "instrument": "CEA25", "side": "sell",
             "price": "60.00", "qty": 5}
    core.receive(orders_topic("alice"), json.dumps(order).encode())
    (report, ) = _messages(core.flush(), "cx/v1/exec/alice")
    assert (report["report"], report["reason"]) == ("rejected", "instrument_halted")
    _, outgoing = _ops(core, {"action": "resume", "instrument": "CEA25"})
    (status, ) = [m for m in outgoing if m[0] == "cx/v1/md/CEA25/status"]
    assert json.loads(status[1])["status"] == "trading"
    core.receive(orders_topic("alice"), json.dumps({**order, "order_id": "s2"}).encode())
    (report, ) = _messages(core.flush(), "cx/v1/exec/alice")
    assert report["report"] == "accepted"


def test_the_end_of_day_publishes_each_instruments_daily_statistics():
    core = _core()
    _ops(core, {"action": "issue", "account": "alice", "instrument": "CEA25", "qty": 10},
         {"action": "deposit", "account": "bob", "instrument": "CNY", "qty": "1000.00"})
    for account, side in (("alice", "sell"), ("bob", "buy")):
        core.receive(orders_topic(account), json.dumps({
            "action": "new", "order_id": "o", "instrument": "CEA25", "side": side,
            "price": "60.00", "qty": 4}).encode())
    core.flush()
    answers, outgoing = _ops(core, {"action": "eod", "command_id": "day"})
    assert answers[0]["report"] == "accepted" and answers[0]["action"] == "eod"
    (daily, ) = _messages(outgoing, "cx/v1/md/CEA25/daily")
    assert {k: daily[k] for k in ("instrument", "open", "high", "low", "close", "volume",
                                  "turnover")} == {
        "instrument": "CEA25", "open": "60.00", "high": "60.00", "low": "60.00",
        "close": "60.00", "volume": 4, "turnover": "240.00"}


def _beijing(month: int, day: int, hour: int, minute: int) -> int:
    return ((days_from_civil(2026, month, day) * 86_400 + hour * 3600 + minute * 60) -
            8 * 3600) * 10**9


@pytest.mark.parametrize("now, due", [
    ((12, 3, 10, 0), (12, 3, 15, 30)),  # a Thursday morning: that afternoon
    ((12, 3, 15, 30), (12, 4, 15, 30)),  # at the time itself: the next business day
    ((12, 4, 16, 0), (12, 7, 15, 30)),  # Friday after it: Monday, not Saturday
    ((12, 5, 9, 0), (12, 7, 15, 30)),  # Saturday: Monday
    ((9, 30, 16, 0), (10, 8, 15, 30)),  # before the National Day holidays: after them
])
def test_serve_eod_falls_due_on_business_days_only(now, due):
    schedule = default_market().schedule
    at = 15 * 3600 + 30 * 60
    assert next_end_of_day(_beijing(*now), at, schedule) == _beijing(*due)


def test_without_a_schedule_eod_falls_due_every_day_at_utc_time():
    thursday_noon_utc = days_from_civil(2026, 12, 3) * 86_400 * 10**9 + 12 * 3600 * 10**9
    due = next_end_of_day(thursday_noon_utc, 7 * 3600, None)
    assert due == (days_from_civil(2026, 12, 4) * 86_400 + 7 * 3600) * 10**9


def _local_day(month: int, day: int) -> int:
    return default_market().schedule.local(_beijing(month, day, 12, 0))[0]


@pytest.mark.parametrize("ended, now, missed", [
    ((12, 3), (12, 7, 10, 0), [(12, 4, 15, 30)]),  # down Friday to Monday morning
    ((12, 3), (12, 7, 16, 0), [(12, 4, 15, 30), (12, 7, 15, 30)]),  # ... to Monday evening
    ((12, 4), (12, 4, 16, 0), []),  # Friday's ended: nothing missed
    ((12, 4), (12, 7, 15, 29), []),  # Monday's not due yet
    ((9, 29), (10, 8, 16, 0), [(9, 30, 15, 30), (10, 8, 15, 30)]),  # the holidays skipped
])
def test_serve_eod_catches_up_the_business_days_it_missed(ended, now, missed):
    """A gateway down at its --eod time never ended that day: the next traded under the
    day before's band, with its day orders, and one daily row covered two days."""
    schedule = default_market().schedule
    at = 15 * 3600 + 30 * 60
    assert missed_ends_of_day(_beijing(*now), at, schedule, _local_day(*ended), 1) == [
        _beijing(*due) for due in missed]


def test_serve_eod_catches_up_nothing_for_an_exchange_that_never_ran():
    schedule = default_market().schedule
    at = 15 * 3600
    assert missed_ends_of_day(_beijing(12, 7, 16, 0), at, schedule, None, 0) == []
    # ... but a day that traded and never ended is ended (from its clock's day)
    assert missed_ends_of_day(_beijing(12, 7, 16, 0), at, schedule, None,
                              _beijing(12, 7, 10, 0)) == [_beijing(12, 7, 15, 0)]
    assert missed_ends_of_day(_beijing(12, 7, 16, 0), at, None, None, 1) == []


def test_a_missed_end_of_day_runs_at_its_own_time_and_ends_that_day():
    engine = Engine(default_market(), ledger=True)
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    friday = _beijing(12, 4, 15, 30)
    core.end_of_day(friday)
    answers = _messages(core.flush(), OPS_REPORTS)
    assert [(a["report"], a["action"]) for a in answers] == [("accepted", "eod")]
    assert engine.last_day_ended == _local_day(12, 4)


def test_serve_eod_waits_until_the_wall_clock_reaches_its_time(monkeypatch):
    """An event loop's timer may fire early by the wall clock (uvloop's by up to a
    millisecond): the scheduled end of day must not be stamped before its time, where at
    15:00 it would be rejected market_open."""
    import asyncio

    import gateway.mqtt.service as service

    clock = [_beijing(12, 3, 14, 59)]
    due = _beijing(12, 3, 15, 0)
    real_sleep = asyncio.sleep

    async def early_sleep(seconds: float) -> None:  # wakes up a millisecond early
        clock[0] += max(int(seconds * 1e9) - 1_000_000, 1_000)
        await real_sleep(0)

    monkeypatch.setattr(service.time, "time_ns", lambda: clock[0])
    monkeypatch.setattr(service.asyncio, "sleep", early_sleep)
    asyncio.run(service.sleep_until(due))
    assert clock[0] >= due
    engine = Engine(default_market(), ledger=True)
    core = GatewayCore(engine, settings=GatewaySettings(book_interval=0))
    core.end_of_day()
    answers = _messages(core.flush(), OPS_REPORTS)
    assert [(a["report"], a["action"]) for a in answers] == [("accepted", "eod")]


def test_an_operators_row_with_an_empty_command_id_is_refused_under_it():
    """As a bot's command: an operator's row with ``"command_id": ""`` ran as one without
    an id, answered with none, and a copy sent again (the console waiting for the answer
    to "") acted again: a deposit made twice."""
    core = _core()
    row = {"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "100.00",
           "command_id": ""}
    seq = core.engine.seq
    for _ in range(2):
        answers, _ = _ops(core, row)
        assert [(a["report"], a["reason"], a["command_id"]) for a in answers] == [
            ("rejected", "bad_command", "")]
    assert core.engine.seq == seq


def test_an_operator_id_used_again_for_another_pledge_is_not_told_that_row_was_done():
    """Pledge rows are about a pledge: the release of P2 with the id of P1's release was
    answered 'accepted' (a duplicate) and P2 stayed pledged; so was a pledge to another
    pledgee with the id of an earlier pledge of the same pledgor and instrument."""
    core = _core()
    _ops(core, {"action": "open_account", "account": "bank", "kind": "financial"},
         {"action": "open_account", "account": "bank2", "kind": "financial"},
         {"action": "issue", "account": "acme", "instrument": "CEA25", "qty": 1_000})
    for pledge in ("P1", "P2"):
        done, _ = _ops(core, {"action": "pledge", "order_id": pledge, "account": "acme",
                              "to_account": "bank", "instrument": "CEA25", "qty": 100,
                              "command_id": f"k-{pledge}"})
        assert done[0]["report"] == "accepted"
    released, _ = _ops(core, {"action": "pledge_release", "order_id": "P1", "account": "acme",
                              "command_id": "r1"})
    again, _ = _ops(core, {"action": "pledge_release", "order_id": "P1", "account": "acme",
                           "command_id": "r1"})  # a true resend
    other, _ = _ops(core, {"action": "pledge_release", "order_id": "P2", "account": "acme",
                           "command_id": "r1"})
    assert released[0]["report"] == "accepted"
    assert (again[0]["report"], again[0].get("duplicate")) == ("accepted", True)
    assert (other[0]["report"], other[0]["reason"]) == ("rejected", "duplicate_command")
    elsewhere, _ = _ops(core, {"action": "pledge", "order_id": "P3", "account": "acme",
                               "to_account": "bank2", "instrument": "CEA25", "qty": 5,
                               "command_id": "k-P2"})
    assert (elsewhere[0]["report"], elsewhere[0]["reason"]) == ("rejected", "duplicate_command")
    refused, _ = _ops(core, {"action": "pledge_release", "order_id": "P9", "account": "acme",
                             "command_id": "r9"})
    retried, _ = _ops(core, {"action": "pledge_release", "order_id": "P2", "account": "acme",
                             "command_id": "r9"})
    assert refused[0]["reason"] == "unknown_pledge"
    assert (retried[0]["reason"], retried[0].get("duplicate", False)) == (
        "duplicate_command", False)  # not P9's 'unknown_pledge' again
    ledger = core.engine.ledger
    assert ledger is not None and list(ledger.pledges) == ["P2"]
    # the receiver is a row's subject too: a transfer to bank2 with the id of one to bank
    _ops(core, {"action": "transfer", "account": "acme", "to_account": "bank",
                "instrument": "CEA25", "qty": 1, "command_id": "t1"})
    moved, _ = _ops(core, {"action": "transfer", "account": "acme", "to_account": "bank2",
                           "instrument": "CEA25", "qty": 1, "command_id": "t1"})
    assert (moved[0]["report"], moved[0]["reason"]) == ("rejected", "duplicate_command")
    assert ledger.holding("bank2", "CEA25") is None


def test_each_account_hears_of_what_the_operators_rows_did_to_its_holdings_and_status():
    core = _core()
    _ops(core, {"action": "open_account", "account": "bank", "kind": "financial"})
    answers, outgoing = _ops(
        core,
        {"action": "deposit", "account": "alice", "instrument": "CNY", "qty": "100.50"},
        {"action": "issue", "account": "alice", "instrument": "CEA25", "qty": 1000},
        {"action": "transfer", "account": "alice", "to_account": "bob", "instrument": "CEA25",
         "qty": 300},
        {"action": "pledge", "order_id": "p1", "account": "alice", "to_account": "bank",
         "instrument": "CEA25", "qty": 200},
        {"action": "pledge_enforce", "order_id": "p1", "account": "alice", "qty": 50},
        {"action": "pledge_release", "order_id": "p1", "account": "alice", "qty": 150},
        {"action": "withdraw", "account": "alice", "instrument": "CNY", "qty": "0.50"},
        {"action": "suspend_account", "account": "bob"})
    assert [a["report"] for a in answers] == ["accepted"] * 8, answers

    def heard(account: str) -> list[tuple]:
        keys = ("asset", "cause", "qty", "amount", "pledged", "counterparty", "pledge_id",
                "status")
        return [(r["report"], *(r.get(k) for k in keys))
                for r in _messages(outgoing, exec_topic(account))]

    assert heard("alice") == [
        ("holding", "CNY", "deposit", None, "100.50", None, None, None, None),
        ("holding", "CEA25", "issue", 1000, None, None, None, None, None),
        ("holding", "CEA25", "transfer", -300, None, None, "bob", None, None),
        ("holding", "CEA25", "pledge", -200, None, 200, "bank", "p1", None),
        ("holding", "CEA25", "pledge_enforce", None, None, -50, "bank", "p1", None),
        ("holding", "CEA25", "pledge_release", 150, None, -150, "bank", "p1", None),
        ("holding", "CNY", "withdrawal", None, "-0.50", None, None, None, None)]
    assert heard("bob") == [
        ("holding", "CEA25", "transfer", 300, None, None, "alice", None, None),
        ("account", None, None, None, None, None, None, None, "suspended")]
    assert heard("bank") == [
        ("holding", "CEA25", "pledge_enforce", 50, None, None, "alice", "p1", None)]
    # What they heard adds up to what the ledger holds.
    holdings = {(a, asset): (avail, pledged)
                for a, asset, avail, _, _, pledged in core.engine.ledger.holdings()}
    assert holdings[("alice", "CEA25")] == (1000 - 300 - 200 + 150, 0)
    assert holdings[("bank", "CEA25")][0] == 50


def test_a_primary_auctions_issue_is_no_holding_report_to_the_registry():
    """The units a primary auction sells are issued to the registry, held for the sale
    (never available to it) and delivered to the buyers at once: that is no 'holding'
    change of anyone's, and the registry has no exec topic (its auction_opened is not
    reported either). The buyers hear of their units by their fills."""
    core = _core()
    _ops(core, {"action": "deposit", "account": "alice", "instrument": "CNY",
                "qty": "10000000.00"},
         {"action": "auction_open", "auction": "P1", "account": "@registry",
          "instrument": "CEA25", "side": "sell", "qty": 100_000, "price": "59.00"})
    core.receive(orders_topic("alice"), json.dumps(
        {"action": "auction_bid", "auction": "P1", "order_id": "x1", "price": "60.00",
         "qty": 100_000}).encode())
    core.flush()
    answers, outgoing = _ops(core, {"action": "auction_close", "auction": "P1"})
    assert [a["report"] for a in answers] == ["accepted"], answers
    assert [r["report"] for r in _messages(outgoing, exec_topic("alice"))][:1] == ["fill"]
    assert not [r for r in _messages(outgoing, exec_topic("@registry"))
                if r["report"] == "holding"]
