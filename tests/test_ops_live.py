"""The operator's console live, on the embedded broker and a real mosquitto: every kind of
operator row sent with ``carbonx admin``'s client to a running gateway, each answered on
``cx/v1/ops/reports``; then the exchange recovered from its journal has the same state,
so a restart keeps what the operator did. A row that breaks a rule is rejected with its
reason and changes nothing; an order row from the operator is refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_gateway_mqtt import LIMIT, running_gateway

from exchange import Engine, default_market
from exchange.journal import create_journal, recover
from gateway.mqtt.embedded import GATEWAY_USER
from gateway.mqtt.serve import BrokerAddress
from gateway.mqtt.service import GatewayCore, GatewaySettings
from gateway.protocol import OPERATOR
from gateway.tools.admin import read_rows, send_rows, with_command_ids

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Every operator action there is, in an order that lets each be accepted, then rows that
# must be rejected: (the row, the reason it is rejected, or None when accepted).
ROWS = [
    ("open_account,alice,,,financial,,,,", None),
    ("open_account,bob,,,covered,,,,", None),
    ("open_account,carol,,,covered,,,,", None),
    ("deposit,alice,CNY,5000.00,,,,,", None),
    ("withdraw,alice,CNY,1000.00,,,,,", None),
    ("issue,bob,CEA25,800,,,,,", None),
    ("transfer,bob,CEA25,100,,alice,,,", None),
    ("suspend_account,carol,,,,,,,", None),
    ("resume_account,carol,,,,,,,", None),
    ("emissions,bob,,500,,,2025,,", None),
    ("allocate,bob,CEA25,400,,,2025,final,", None),
    ("surrender,bob,CEA25,500,,,2025,,", None),
    ("halt,,CEA25,,,,,,", None),
    ("resume,,CEA25,,,,,,", None),
    ("close_account,carol,,,,,,,", None),
    ("eod,,,,,,,,", None),
    # (2024: a year whose deadline has passed; one stamped before it is refused)
    ("deadline,,,,,,2024,,5", None),
    # rule breaks: answered with the reason, nothing changes
    ("withdraw,alice,CNY,999999.00,,,,,", "insufficient_cash"),
    ("issue,dave,CEA99,5,,,,,", "unknown_instrument"),
    ("resume,,CEA25,,,,,,", "not_halted"),
    ("open_account,alice,,,financial,,,,", "account_exists"),
    # the operator places no orders for accounts
    ("cancel,alice,,,,,,,", "not_permitted"),
]
HEADER = "action,account,instrument,qty,kind,to_account,year,stage,multiple"


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request):
    if request.param == "mosquitto":
        real = request.getfixturevalue("mosquitto_broker")
        return ("mosquitto", real.host, real.port, real.credentials, real.mosquitto)
    return ("embedded", None, None, {GATEWAY_USER: "gw-secret", OPERATOR: "op-secret"}, None)


def test_every_operator_action_is_answered_live_and_survives_a_restart(broker, tmp_path):
    kind, host, port, credentials, _ = broker
    orders = tmp_path / "ops.csv"
    # the last column, order_id, only for the operator's (refused) cancel
    lines = [row + (",x1" if row.startswith("cancel,") else ",") for row, _ in ROWS]
    orders.write_text(HEADER + ",order_id\n" + "\n".join(lines) + "\n")
    rows = with_command_ids(read_rows(str(orders)))
    market = default_market().open_all_hours()
    writer = create_journal(tmp_path / "journal", market.text, ledger=True)
    core = GatewayCore(Engine(market, ledger=True), journal=writer,
                       settings=GatewaySettings(book_interval=0))
    answers: list[dict] = []

    async def go() -> None:
        async with running_gateway(kind, host, port, credentials, core) as (host_, port_, _):
            address = BrokerAddress(host_, port_, OPERATOR, credentials[OPERATOR])
            await asyncio.wait_for(
                send_rows(address, rows, timeout=10, out=lambda _, answer: answers.append(answer)),
                LIMIT)

    asyncio.run(go())
    writer.close()
    assert len(answers) == len(ROWS)
    for (row, reason), answer, sent in zip(ROWS, answers, rows):
        assert answer["command_id"] == sent.command.command_id, row
        if reason is None:
            assert answer["report"] == "accepted", (row, answer)
        else:
            assert (answer["report"], answer["reason"]) == ("rejected", reason), (row, answer)
    live = core.engine
    ledger = live.ledger
    assert ledger is not None
    alice_cash, bob_units = ledger.holding("alice", "CNY"), ledger.holding("bob", "CEA25")
    assert alice_cash is not None and bob_units is not None
    assert alice_cash.available == 400_000  # 5,000.00 - 1,000.00, in fen
    assert bob_units.available == 800 - 100 + 400 - 500
    assert ledger.accounts["carol"].status == "closed"
    # Restarted from the journal: the same state, to the hash.
    recovered = recover(tmp_path / "journal").engine
    assert recovered.state_hash() == live.state_hash()
    assert recovered.seq == live.seq


def test_serve_opens_a_members_account_live_which_then_trades_and_survives_a_restart(tmp_path):
    """`carbonx serve` on the embedded broker with no account at all: it says nobody can
    log in; the operator opens and funds two accounts with `carbonx admin`; each gets a
    login in the credentials file and they trade; a restart from the journal keeps it."""
    from test_gateway_cli import carbonx, start_serve, stop, trade

    from mosquitto import free_port

    port = free_port()
    journal = tmp_path / "journal"
    serve, said = start_serve("--port", str(port), "--journal", str(journal), "--always-open",
                              cwd=tmp_path)
    try:
        assert any("no account can log in" in line for line in said), said
        credentials = json.loads((journal / "credentials.json").read_text())
        assert set(credentials) == {"gateway", "operator"}
        (tmp_path / "operator.password").write_text(credentials["operator"] + "\n")
        (tmp_path / "members.csv").write_text("action,account,instrument,qty,kind\n"
                                              "open_account,alice,,,covered\n"
                                              "open_account,bob,,,financial\n"
                                              "issue,alice,CEA25,1000,\n"
                                              "deposit,bob,CNY,100000.00,\n")
        done = carbonx("admin", "--broker", f"mqtt://operator@127.0.0.1:{port}", "--password-file",
                       str(tmp_path / "operator.password"), "members.csv", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        credentials = json.loads((journal / "credentials.json").read_text())
        assert {"alice", "bob"} <= set(credentials)
        sold, bought = trade(port, credentials)
        assert sold["report"] == "accepted" and bought["report"] == "accepted"
    finally:
        code, err = stop(serve)
    assert code == 0, err
    assert "account alice opened: its password is in" in "".join(said) + err
    holdings = json.loads(carbonx("holdings", str(journal), "--json").stdout)
    rows = {(h["account"], h["asset"]): h for h in holdings["holdings"]}
    assert rows[("bob", "CEA25")]["locked"] == 100  # bought today: T+1
    # Restarted: the same journal, the members' logins kept, the exchange carries on.
    serve, said = start_serve("--port", str(port), "--journal", str(journal), "--always-open",
                              cwd=tmp_path)
    try:
        assert not any("no account can log in" in line for line in said), said
    finally:
        code, err = stop(serve)
    assert code == 0, err
    again = json.loads(carbonx("holdings", str(journal), "--json").stdout)
    assert again["holdings"] == holdings["holdings"]
