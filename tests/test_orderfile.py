"""Order-file reader (exchange.orderfile): the fast inline CSV path and the precise
``_Reader.command`` path must build identical commands; defaults, headers, BOM, blank
lines and line numbers in errors.
"""

from __future__ import annotations

import csv
import io
import json
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange import orderfile
from exchange.commands import (AmendOrder, CancelOrder, Deposit, EndOfDay, IssueAllowances,
                               MassCancel, PlaceOrder, SurrenderAllowances, Withdraw)
from exchange.orderfile import (FIELDS, NewRow, OrderFileError, Row, RowError, RowReader, _as_text,
                                _Reader, _row_values, parse_order_text, read_order_file)

STP = ("cancel_resting", "cancel_aggressor", "cancel_both", "none")
HEADER = b"action,order_id,account,instrument,side,type,tif,price,qty\n"

# --- helpers ------------------------------------------------------------------------------


def csv_bytes(rows: list[dict], columns=FIELDS, *, header=None, newline="\n") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header if header is not None else columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return out.getvalue().encode("utf-8")


def precise(rows: list[dict], default_stp=None) -> list:
    """Commands built row by row by the precise path."""
    reader = _Reader(default_stp)
    return [reader.command(*[row.get(f, "") for f in FIELDS]) for row in rows]


def parse(data: bytes, fmt="csv", default_stp=None) -> list:
    return parse_order_text(data, fmt, name="t", default_stp=default_stp)


def error_of(data: bytes, fmt="csv", default_stp=None) -> OrderFileError:
    with pytest.raises(OrderFileError) as info:
        parse(data, fmt, default_stp)
    return info.value


def row(action, **values) -> dict:
    return {"action": action, **values}


# Every action and field: new with all types/tifs/stp/post_only/display_qty/stop_price/
# expire_ts/ts; cancel with and without instrument/ts; amend with empty price or qty; eod
# with and without ts; deposit/withdraw/issue/surrender; mass_cancel.
EVERYTHING = [
    row("new", order_id="n1", account="a", instrument="CEA25", side="buy", price="60.00", qty="10"),
    row("new", order_id="n2", account="a", instrument="CEA25", side="sell", type="limit", tif="gtc",
        price="60.01", qty="5", stp="none", ts="1000"),
    row("new", order_id="n3", account="b", instrument="CEA25", side="buy", type="market", tif="ioc",
        qty="7"),
    row("new", order_id="n4", account="b", instrument="CEA25", side="sell", type="market",
        tif="fok", qty="7", stp="cancel_aggressor"),
    row("new", order_id="n5", account="b", instrument="CEA25", side="buy", type="stop", tif="gtc",
        qty="3", stop_price="61.00"),
    row("new", order_id="n6", account="c", instrument="CEA25", side="sell", type="stop_limit",
        tif="day", price="59.00", qty="3", stop_price="59.50", stp="cancel_both"),
    row("new", order_id="n7", account="c", instrument="CEA25", side="buy", type="limit", tif="gtd",
        price="60.00", qty="100", expire_ts="5000", ts="2000"),
    row("new", order_id="n8", account="c", instrument="CEA25", side="buy", price="60.00", qty="100",
        display_qty="10", stp="cancel_resting"),
    row("new", order_id="n9", account="c", instrument="CEA25", side="sell", price="60.05",
        qty="100", post_only="true"),
    row("new", order_id="n10", account="c", instrument="CEA25", side="sell", price="60.05",
        qty="100", post_only="false"),
    row("new", order_id="n11", account="c", instrument="CEA25", side="sell", price="60.05",
        qty="100", post_only="TRUE"),
    row("new", order_id="n12", account="d", instrument="CEA-DEC26", side="buy", tif="day",
        price="60", qty="1", ts="3000"),
    row("new", order_id="n13", account="d", instrument="NOPE", side="buy", price="60.001",
        qty="0"),  # reads well; the engine rejects it
    row("new", order_id="n14", account="d", instrument="CEA25", side="buy", price="-1",
        qty="-5"),  # reads well too
    row("new", order_id="n15", account="d", instrument="CEA25", side="buy", type="", tif="",
        price="6.001e1", qty="1"),
    row("cancel", order_id="n1", account="a"),
    row("cancel", order_id="n2", account="a", instrument="CEA25"),
    row("cancel", order_id="n3", account="b", ts="4000"),
    row("cancel", order_id="n4", account="b", instrument="CEA25", ts="4001", side="buy"),
    row("amend", order_id="n8", account="c", price="60.02", qty="50"),
    row("amend", order_id="n8", account="c", qty="40"),
    row("amend", order_id="n8", account="c", price="60.03"),
    row("amend", order_id="n8", account="c", instrument="CEA25", ts="4500"),
    row("amend", order_id="n8", account="c", qty="0"),
    row("eod"),
    row("eod", ts="86400000000000"),
    row("deposit", account="a", instrument="CNY", qty="1000000.50"),
    row("withdraw", account="a", instrument="CNY", qty="10", ts="5000"),
    row("issue", account="a", instrument="CEA25", qty="1000"),
    row("surrender", account="a", instrument="CEA25", qty="10", ts="6000"),
    row("mass_cancel", account="a"),
    row("mass_cancel", account="a", instrument="CEA25", side="sell", ts="7000")
]

# --- fast path == precise path ------------------------------------------------------------


@pytest.mark.parametrize("default_stp", [None, *STP])
def test_fast_and_precise_paths_agree(default_stp):
    commands = parse(csv_bytes(EVERYTHING), default_stp=default_stp)
    assert commands == precise(EVERYTHING, default_stp)
    assert len(commands) == len(EVERYTHING)


def test_commands_are_what_the_rows_say():
    commands = parse(csv_bytes(EVERYTHING))
    by_id = {c.order_id: c for c in commands if isinstance(c, PlaceOrder)}
    assert by_id["n1"] == PlaceOrder(order_id="n1", account="a", instrument="CEA25", side="buy",
                                     type="limit", tif="gtc", price="60.00", qty=10)
    assert by_id["n2"].stp == "none" and by_id["n2"].ts == 1000
    assert by_id["n3"].type == "market" and by_id["n3"].price is None
    assert by_id["n5"].stop_price == "61.00" and by_id["n5"].price is None
    assert by_id["n6"].tif == "day" and by_id["n6"].stp == "cancel_both"
    assert by_id["n7"].expire_ts == 5000 and by_id["n7"].tif == "gtd"
    assert by_id["n8"].display_qty == 10
    assert by_id["n9"].post_only is True and by_id["n10"].post_only is False
    assert by_id["n11"].post_only is True
    assert by_id["n13"].qty == 0 and by_id["n13"].price == "60.001"
    assert by_id["n14"].qty == -5
    assert by_id["n15"].price == "6.001e1", "prices stay exact strings"
    assert all(type(c.qty) is int for c in by_id.values())
    rest = [c for c in commands if not isinstance(c, PlaceOrder)]
    assert rest[0] == CancelOrder(order_id="n1", account="a")
    assert rest[1] == CancelOrder(order_id="n2", account="a", instrument="CEA25")
    assert rest[2] == CancelOrder(order_id="n3", account="b", ts=4000)
    assert rest[4] == AmendOrder(order_id="n8", account="c", price="60.02", qty=50)
    assert rest[5] == AmendOrder(order_id="n8", account="c", qty=40)
    assert rest[6] == AmendOrder(order_id="n8", account="c", price="60.03")
    assert rest[7] == AmendOrder(order_id="n8", account="c", instrument="CEA25", ts=4500)
    assert rest[8] == AmendOrder(order_id="n8", account="c", qty=0)
    assert rest[9] == EndOfDay() and rest[10] == EndOfDay(ts=86400000000000)
    assert rest[11] == Deposit(account="a", currency="CNY", amount="1000000.50")
    assert rest[12] == Withdraw(account="a", currency="CNY", amount="10", ts=5000)
    assert rest[13] == IssueAllowances(account="a", instrument="CEA25", qty=1000)
    assert rest[14] == SurrenderAllowances(account="a", instrument="CEA25", qty=10, ts=6000)
    assert rest[15] == MassCancel(account="a")
    assert rest[16] == MassCancel(account="a", instrument="CEA25", side="sell", ts=7000)


def test_ndjson_gives_the_same_commands_as_csv():
    lines = []
    for r in EVERYTHING:
        record = {k: v for k, v in r.items() if v != ""}
        for key in ("qty", "display_qty", "expire_ts", "ts"):
            if key in record and r["action"] not in ("deposit", "withdraw"):
                record[key] = int(record[key])
        if "post_only" in record and record["post_only"] in ("true", "false"):
            record["post_only"] = record["post_only"] == "true"
        lines.append(json.dumps(record))
    data = ("\n".join(lines) + "\n").encode()
    for stp in (None, "none"):
        assert parse(data, "ndjson", stp) == parse(csv_bytes(EVERYTHING), "csv", stp)


# --- defaults, headers, BOM, blank lines --------------------------------------------------


def test_default_stp_only_where_stp_is_empty():
    rows = [
        row("new", order_id="a", account="x", instrument="CEA25", side="buy", price="60", qty="1"),
        row("new", order_id="b", account="x", instrument="CEA25", side="buy", price="60", qty="1",
            stp="cancel_both"),
        row("new", order_id="c", account="x", instrument="CEA25", side="buy", price="60", qty="1",
            display_qty="1"),
        row("new", order_id="d", account="x", instrument="CEA25", side="buy", price="60", qty="1",
            display_qty="1", stp="none")
    ]
    for default in STP:
        got = [c.stp for c in parse(csv_bytes(rows), default_stp=default)]
        assert got == [default, "cancel_both", default, "none"]
    assert [c.stp for c in parse(csv_bytes(rows))] == [None, "cancel_both", None, "none"]
    with pytest.raises(ValueError):
        parse(csv_bytes(rows), default_stp="sometimes")


def test_missing_columns_take_defaults():
    data = (b"action,order_id,account,instrument,side,price,qty\nnew,o1,a,CEA25,buy,60.00,5\n"
            b"cancel,o1,a,,,,\n")
    new, cancel = parse(data)
    assert new == PlaceOrder(order_id="o1", account="a", instrument="CEA25", side="buy",
                             type="limit", tif="gtc", price="60.00", qty=5)
    assert (new.stop_price, new.display_qty, new.post_only, new.stp, new.expire_ts,
            new.ts) == (None, None, False, None, None, None)
    assert cancel == CancelOrder(order_id="o1", account="a")
    # Column order does not matter.
    shuffled = b"qty,price,side,instrument,account,order_id,action\n5,60.00,buy,CEA25,a,o1,new\n"
    assert parse(shuffled) == [new]


def test_header_with_surrounding_spaces():
    data = b" action , order_id ,account,instrument , side,price,qty\nnew,o1,a,CEA25,buy,60.00,5\n"
    assert parse(data) == [
        PlaceOrder(order_id="o1", account="a", instrument="CEA25", side="buy", price="60.00", qty=5)
    ]


def test_bom_is_ignored():
    plain = csv_bytes(EVERYTHING[:5])
    assert parse(b"\xef\xbb\xbf" + plain) == parse(plain)


def test_crlf_line_endings():
    assert parse(csv_bytes(EVERYTHING, newline="\r\n")) == parse(csv_bytes(EVERYTHING))


def test_blank_lines_skipped_and_line_numbers_right():
    header = b"action,order_id,account,instrument,side,price,qty\n"
    good = b"new,o1,a,CEA25,buy,60.00,5\n"
    data = header + b"\n" + good + b"\n\n" + good.replace(b"o1", b"o2") + b"   \n"
    assert [c.order_id for c in parse(data)] == ["o1", "o2"]
    # Physical lines: 1 header, 2 blank, 3 good, 4 blank, 5 blank, 6 bad.
    bad = header + b"\n" + good + b"\n\n" + b"new,o3,a,CEA25,buy,abc,5\n"
    err = error_of(bad)
    assert err.line == 6 and "line 6" in str(err) and "abc" in str(err)
    # Same with CRLF.
    err = error_of(bad.replace(b"\n", b"\r\n"))
    assert err.line == 6
    # A ragged row after blank lines.
    err = error_of(header + b"\n\n" + b"new,o3,a,CEA25,buy,60.00\n")
    assert err.line == 4 and "field" in err.message


def test_line_numbers_after_quoted_multiline_field():
    data = (b"action,order_id,account,instrument,side,price,qty\n"
            b'new,"o\n1",a,CEA25,buy,60.00,5\n'
            b"new,o2,a,CEA25,buy,60.00,x\n")
    err = error_of(data)
    assert err.line == 4


@pytest.mark.parametrize("slice_bytes", [1, 5, 40, 1 << 22])
def test_ndjson_line_numbers_count_blank_lines(monkeypatch, slice_bytes):
    # The file is read a slice of lines at a time; any slicing gives the same.
    monkeypatch.setattr(orderfile, "_NDJSON_SLICE", slice_bytes)
    good = b'{"action":"eod"}\n'
    err = error_of(good + b"\n" + good + b'{"action":"new","side":"up","qty":1}\n', "ndjson")
    assert err.line == 4 and "up" in err.message
    err = error_of(good + b"\n\n" + b'{"action": nope}\n' + good, "ndjson")
    assert err.line == 4
    rows = b"".join(b'{"action":"eod","ts":%d}\n%s' % (i, b"\n" * (i % 3)) for i in range(50))
    for tail in (b"", b'{"action":"eod","ts":99}', b"\n\n"):
        commands = parse(rows + tail, "ndjson")
        assert [c.ts for c in commands] == list(range(50)) + ([99] if b"99" in tail else [])
    err = error_of(rows + b'{"action":"eod","ts":"x"}', "ndjson")
    assert err.line == 50 + sum(i % 3 for i in range(50)) + 1 and "'x'" in err.message


@pytest.mark.parametrize("line,fragment", [("new,o1,a,CEA25,buy,limit,gtc,abc,10", "abc"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,60,x1", "x1"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,60,1.5", "whole"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,60,", "qty"),
                                           ("new,o1,a,CEA25,,limit,gtc,60,1", "side"),
                                           ("new,o1,a,CEA25,BUY,limit,gtc,60,1", "BUY"),
                                           ("new,o1,a,CEA25,buy,Limit,gtc,60,1", "Limit"),
                                           ("new,o1,a,CEA25,buy,limit,GTC,60,1", "GTC"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,nan,1", "nan"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,inf,1", "inf"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,60.0.0,1", "60.0.0"),
                                           ('new,o1,a,CEA25,buy,limit,gtc,"60,5",1', "60,5"),
                                           ("amend,o1,a,CEA25,,,,abc,", "abc"),
                                           ("amend,o1,a,CEA25,,,,,2.5", "2.5"),
                                           ("deposit,,a,CNY,,,,,", "qty"),
                                           ("deposit,,a,CNY,,,,,1e", "1e"),
                                           ("issue,,a,CEA25,,,,,1.5", "1.5"),
                                           ("mass_cancel,,a,CEA25,both,,,,", "both"),
                                           (",o1,a,CEA25,buy,limit,gtc,60,1", "action"),
                                           ("trade,o1,a,CEA25,buy,limit,gtc,60,1", "trade"),
                                           # The wording does not change with the size.
                                           (f"new,o1,a,CEA25,buy,limit,gtc,60,{2**63}",
                                            "out of range"),
                                           (f"new,o1,a,CEA25,buy,limit,gtc,60,{2**64}",
                                            "out of range"),
                                           (f"new,o1,a,CEA25,buy,limit,gtc,60,{10**38}",
                                            "out of range"),
                                           # Only ASCII digits are digits.
                                           ("new,o1,a,CEA25,buy,limit,gtc,60,\uff11\uff10",
                                            "is not a number"),
                                           ("new,o1,a,CEA25,buy,limit,gtc,\uff16\uff10,1",
                                            "is not a number")])
def test_unreadable_rows(line, fragment):
    header = "action,order_id,account,instrument,side,type,tif,price,qty\n"
    good = "new,g,a,CEA25,buy,limit,gtc,60,1\n"
    data = (header + good + line + "\n").encode()
    err = error_of(data)
    assert err.line == 3 and fragment in err.message
    # The precise path refuses the same row with the same message.
    values = next(csv.reader([line]))
    padded = dict(zip(header.strip().split(","), values))
    with pytest.raises(ValueError) as info:
        precise([padded])
    assert str(info.value) == err.message


@pytest.mark.parametrize("key, value, hint", [
    ("price", "60.5", 'prices as decimal strings, e.g. "61.20"'),
    ("stop_price", "61.5", 'prices as decimal strings, e.g. "61.20"'),
    ("qty", "100.0", "a quantity is a whole number of units"),
    ("ts", "1.5", "ts is a whole number"),
    ("year", "2025.0", "year is a whole number"),
])
def test_a_json_number_with_a_fraction_is_named_with_a_hint_for_its_field(key, value, hint):
    """The hint said to write prices as strings whatever the field at fault was."""
    row = ('{"action":"new","order_id":"o","account":"a","instrument":"CEA25","side":"buy",'
           f'"price":"60.00","qty":1,"{key}":{value}}}').encode()
    err = error_of(b'{"action":"eod"}\n' + row, "ndjson")
    assert err.line == 2 and f"$.{key}" in err.message and hint in err.message, err.message
    if key not in ("price", "stop_price"):
        assert "prices" not in err.message
    from gateway.mqtt.wire import WireDecoder  # the gateway's hint is the same, sent

    (report, ) = WireDecoder().decode("a", row)
    assert hint.replace("write", "send") in report.message or hint in report.message


def test_header_errors():
    assert error_of(b"").line == 1
    err = error_of(b"action,order_id,colour\n")
    assert err.line == 1 and "colour" in err.message
    err = error_of(b"order_id,account\no1,a\n")
    assert err.line == 1 and "action" in err.message
    err = error_of(b"action,action\nnew,new\n")
    assert err.line == 1
    err = error_of(b"\xff\xfeaction\n")
    assert "UTF-8" in str(err) and err.line == 1


def test_bytes_that_are_not_utf8_name_their_line():
    # The error names the line of the bad byte, with or without a byte order mark,
    # however far into the file, with lines ended as the CSV reader ends them.
    rows = b"".join(b"new,o%d,a,CEA25,buy,limit,,60.00,100\n" % i for i in range(5000))
    for bom in (b"", b"\xef\xbb\xbf"):
        data = bom + HEADER + rows + b"new,o\xe9,a,CEA25,buy,limit,,60.00,100\n"
        err = error_of(data)
        assert err.line == 5002 and "not UTF-8" in err.message
    line = b"new,o1,a,CEA25,buy,limit,,60.00,100"
    for end in (b"\n", b"\r\n", b"\r"):
        data = HEADER.rstrip(b"\n") + end + line + end + b"new,\xff" + end
        assert error_of(data).line == 3


def test_bytes_that_are_not_utf8_are_named_before_any_row_error():
    # The whole file is checked first, as when it was decoded whole: the answer does
    # not depend on how far apart a bad row and a bad byte are.
    for gap in (b"", b"x" * 20000 + b"\n"):
        err = error_of(HEADER + b"new,o1,a\n" + gap + b"new,\xff\n")
        assert "not UTF-8" in err.message and err.line == (3 if not gap else 4)


def test_rows_share_one_string_per_name():
    commands = parse(HEADER + b"new,o1,acc1,CEA25,buy,limit,,60.00,100\n"
                     b"new,o2,acc1,CEA25,sell,limit,,60.00,100\ncancel,o1,acc1,,,,,,\n")
    assert commands[0].account is commands[1].account is commands[2].account
    assert commands[0].instrument is commands[1].instrument
    assert [c.account for c in commands] == ["acc1"] * 3


def test_read_order_file_detects_format(tmp_path):
    csv_path = tmp_path / "o.csv"
    csv_path.write_bytes(csv_bytes(EVERYTHING))
    nd_path = tmp_path / "o.ndjson"
    nd_path.write_bytes(b'{"action":"eod","ts":5}\n')
    assert read_order_file(csv_path) == parse(csv_bytes(EVERYTHING))
    assert read_order_file(nd_path) == [EndOfDay(ts=5)]
    with pytest.raises(OrderFileError) as info:
        read_order_file(tmp_path / "missing.csv")
    assert "missing.csv" in str(info.value) and info.value.line is None


def test_progress_callback_reports_all_rows():
    calls = []
    commands = parse_order_text(csv_bytes(EVERYTHING), "csv",
                                progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == len(commands)


# --- property: random well-formed rows, fast path == precise path -------------------------

_ids = st.text(alphabet="abcXYZ0189-_.:/ ", min_size=1, max_size=8)
_prices = st.one_of(
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False,
                allow_infinity=False).map(str),
    st.sampled_from(["60", "60.00", "6.0e1", "0.01", "1E+2", "-0", "00060.10"]))
_ints = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str), st.sampled_from(["0", "007",
                                                                                  "-1"]))
_opt = lambda s: st.one_of(st.just(""), st.just(""), s)

_new_rows = st.fixed_dictionaries({
    "action": st.just("new"),
    "order_id": _ids,
    "account": _ids,
    "instrument": st.sampled_from(["CEA25", "CCER", "CEA-DEC26", "X"]),
    "side": st.sampled_from(["buy", "sell"]),
    "type": st.sampled_from(["", "limit", "market", "stop", "stop_limit"]),
    "tif": st.sampled_from(["", "gtc", "day", "ioc", "fok", "gtd"]),
    "price": _opt(_prices),
    "qty": _ints,
    "stop_price": _opt(_prices),
    "display_qty": _opt(_ints),
    "post_only": st.sampled_from(["", "", "", "true", "false", "True", "FALSE"]),
    "stp": st.sampled_from(["", "", *STP]),
    "expire_ts": _opt(_ints),
    "ts": _opt(_ints)
})
_other_rows = st.one_of(
    st.fixed_dictionaries({
        "action": st.just("cancel"),
        "order_id": _ids,
        "account": _ids,
        "instrument": _opt(st.just("CEA25")),
        "ts": _opt(_ints),
        "side": _opt(st.sampled_from(["buy", "sell"]))
    }),
    st.fixed_dictionaries({
        "action": st.just("amend"),
        "order_id": _ids,
        "account": _ids,
        "instrument": _opt(st.just("CEA25")),
        "price": _opt(_prices),
        "qty": _opt(_ints),
        "ts": _opt(_ints)
    }), st.fixed_dictionaries({
        "action": st.just("eod"),
        "ts": _opt(_ints)
    }),
    st.fixed_dictionaries({
        "action": st.sampled_from(["deposit", "withdraw"]),
        "account": _ids,
        "instrument": st.just("CNY"),
        "qty": _prices,
        "ts": _opt(_ints)
    }),
    st.fixed_dictionaries({
        "action": st.sampled_from(["issue", "surrender"]),
        "account": _ids,
        "instrument": st.just("CEA25"),
        "qty": _ints,
        "ts": _opt(_ints)
    }),
    st.fixed_dictionaries({
        "action": st.just("mass_cancel"),
        "account": _ids,
        "instrument": _opt(st.just("CEA25")),
        "side": st.sampled_from(["", "buy", "sell"]),
        "ts": _opt(_ints)
    }))
_rows = st.lists(st.one_of(_new_rows, _new_rows, _other_rows), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, default_stp=st.sampled_from([None, *STP]), columns=st.permutations(FIELDS))
def test_property_fast_path_equals_precise_path(rows, default_stp, columns):
    data = csv_bytes(rows, columns)
    assert parse(data, default_stp=default_stp) == precise(rows, default_stp)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=_rows, default_stp=st.sampled_from([None, *STP]), columns=st.one_of(
        st.just(list(FIELDS[:9])),
        st.permutations(FIELDS[:9]).flatmap(lambda c: st.integers(min_value=1, max_value=9).map(
            lambda n: ["action", *[x for x in c if x != "action"]][:n]))))
def test_property_a_file_of_pinned_columns_only_reads_as_the_precise_path(
        rows, default_stp, columns):
    """A header of (some of) the nine pinned columns, in any order, takes the narrow read;
    the pinned header itself, in its order, the narrowest."""
    rows = [{c: r[c] for c in columns if c in r} for r in rows]
    data = csv_bytes(rows, columns)
    expected = []
    for number, values in enumerate(rows, 2):
        try:
            expected += precise([values], default_stp)
        except ValueError as exc:  # the same row fails the same way
            err = error_of(data, default_stp=default_stp)
            assert (err.line, err.message) == (number, str(exc))
            return
    assert parse(data, default_stp=default_stp) == expected


def _json_line(row: dict, typed: bool) -> bytes:
    """*row* (text values) as an NDJSON line whose values read back as the same text;
    *typed*: whole numbers as JSON integers and true/false as JSON booleans."""
    record = {}
    for key, value in row.items():
        if value == "":
            continue
        if (typed and key in ("qty", "display_qty", "expire_ts", "ts")
                and row["action"] not in ("deposit", "withdraw") and value.lstrip("-").isdigit()
                and str(int(value)) == value):
            value = int(value)
        elif typed and key == "post_only" and value in ("true", "false"):
            value = value == "true"
        record[key] = value
    return json.dumps(record).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, default_stp=st.sampled_from([None, *STP]), typed=st.booleans(),
       pinned=st.booleans())
def test_property_ndjson_reads_as_the_precise_path(rows, default_stp, typed, pinned):
    """NDJSON rows, typed or as text, give the precise path's commands, or its error at
    the same line. *pinned*: new and cancel rows of the pinned keys alone, typed, as the
    generator writes them, which take the fast path (any other row in a slice does not)."""
    if pinned:
        typed = True
        rows = [{
            k: v
            for k, v in r.items() if k in FIELDS[:9]
        } for r in rows if r["action"] in ("new", "cancel")] or [{
            "action": "cancel"
        }]
    data = b"\n".join(_json_line(r, typed) for r in rows) + b"\n"
    expected = []
    for number, values in enumerate(rows, 1):
        try:
            expected += precise([values], default_stp)
        except ValueError as exc:  # the same row fails the same way
            err = error_of(data, "ndjson", default_stp)
            assert (err.line, err.message) == (number, str(exc))
            return
    assert parse(data, "ndjson", default_stp) == expected


_junk = st.sampled_from([
    "x", "abc", "1.5", "nan", "1e3", " 1", "-3", "BUY", "Limit", "true", "none", "60,5", "1_0",
    "0x10", "", "buy", "gtc", "inf", "1e", "--1"
])
# The fields the fast path reads itself are the likeliest to be broken.
_broken_field = st.sampled_from(
    [*("side", "type", "tif", "price", "qty", "stp", "ts") * 3, *FIELDS[1:]])
_FAST_SHAPE = {"stop_price": "", "display_qty": "", "post_only": "", "expire_ts": ""}


@st.composite
def _maybe_broken_row(draw):
    """A well-formed row, often in the fast path's shape, often with one field broken."""
    values = dict(draw(_new_rows if draw(st.integers(0, 3)) else _other_rows))
    if values["action"] == "new" and draw(st.booleans()):
        values.update(_FAST_SHAPE)
    if draw(st.booleans()):
        values[draw(_broken_field)] = draw(_junk)
    return values


@settings(max_examples=500, deadline=None)
@given(values=_maybe_broken_row(), default_stp=st.sampled_from([None, *STP]))
def test_property_fast_and_precise_fail_alike(values, default_stp):
    """Any single row: the same command from both paths, or the same error message."""
    data = csv_bytes([{f: values.get(f, "") for f in FIELDS}])
    try:
        expected = precise([values], default_stp)
    except ValueError as exc:
        err = error_of(data, default_stp=default_stp)
        assert err.line == 2 and err.message == str(exc)
    else:
        assert parse(data, default_stp=default_stp) == expected


# --- the wire's row reader: its fast path for plain orders agrees with the shared one ----

_VALUES = {
    "action": st.sampled_from(["new", "new", "new", "cancel", None, "eod"]),
    "order_id": st.sampled_from(["o1", "", None]),
    "account": st.sampled_from(["alice", None]),
    "instrument": st.sampled_from(["CEA25", None]),
    "side": st.sampled_from(["buy", "sell", "hold", None]),
    "type": st.sampled_from(["limit", "market", "", None, "stop", "odd"]),
    "tif": st.sampled_from(["gtc", "ioc", "", None, "never"]),
    "price": st.sampled_from(["60.00", "60.001", "abc", "", None, 60, True]),
    "qty": st.one_of(st.sampled_from([10, 0, -3, "10", True, None, 1 << 63, -(1 << 63)]),
                     st.integers()),
    "stop_price": st.sampled_from([None, None, "59.00"]),
    "post_only": st.sampled_from([None, None, True, "false"]),
    "stp": st.sampled_from([None, "", "none", "cancel_both", "bogus"]),
    "ts": st.sampled_from([None, 5, -1, 1 << 63, "7"]),
    "command_id": st.sampled_from([None, "", "c1"]),
    "year": st.sampled_from([None, None, 2024]),
    "kind": st.sampled_from([None, "covered"])
}

# mostly a plain order (the fast path), each field sometimes anything from its pool
_PLAIN = {
    "action": "new",
    "order_id": "o1",
    "account": "alice",
    "instrument": "CEA25",
    "side": "buy",
    "type": "limit",
    "tif": "gtc",
    "price": "60.00",
    "qty": 10,
    "stop_price": None,
    "post_only": None,
    "stp": None,
    "ts": None,
    "command_id": "c1",
    "year": None,
    "kind": None
}
_ROWS = st.fixed_dictionaries({
    key: st.one_of(st.just(_PLAIN[key]), st.just(_PLAIN[key]), st.just(_PLAIN[key]), pool)
    for key, pool in _VALUES.items()
})


@settings(max_examples=400, deadline=None)
@given(_ROWS, st.sampled_from([None, "none"]))
def test_the_wire_reader_builds_what_the_shared_reader_builds(values, default_stp):
    reader = RowReader(default_stp)
    row = Row(**values)

    def outcome(read):
        try:
            return read()
        except RowError as exc:
            return ("error", str(exc))

    fast = outcome(lambda: reader.row(row, row.account, row.order_id, row.ts))
    shared = outcome(lambda: reader.command(*map(_as_text, _row_values(row))))
    assert fast == shared


# --- a key the row's action has no use for -------------------------------------------------

STRAY = [
    (row("surrender", account="a", instrument="CEA25", qty="10", year="2025", price="61.00"),
     "price is not a key of a surrender row"),
    (row("surrender", account="a", instrument="CEA25", qty="10", stage="final"),
     "stage is not a key of a surrender row"),
    (row("emissions", account="a", year="2025", qty="10", stage="pre"),
     "stage is not a key of an emissions row"),
    (row("deadline", year="2025", qty="100"), "qty is not a key of a deadline row"),
    (row("transfer", account="a", to_account="b", instrument="CEA25", qty="1", side="sell"),
     "side is not a key of a transfer row"),
    (row("deposit", account="a", instrument="CNY", qty="10", to_account="b"),
     "to_account is not a key of a deposit row"),
    (row("amend", order_id="n1", account="a", qty="5", tif="ioc"),
     "tif is not a key of an amend row"),
    # a new order with another action's key leaves the reader's shortcut for the checks
    (row("new", order_id="n1", account="a", instrument="CEA25", side="buy", price="60.00",
         qty="1", to_account="b"), "to_account is not a key of a new row"),
    (row("new", order_id="n1", account="a", instrument="CEA25", side="buy", price="60.00",
         qty="1", quality="default"), "quality is not a key of a new row"),
]


@pytest.mark.parametrize(("stray", "message"), STRAY)
def test_a_key_the_action_has_no_use_for_is_refused_not_dropped(stray, message):
    # The value was dropped without a word: a desk's surrender "at 61.00", or an order
    # "to b", read as if the key were not there.
    for fmt, data in (("csv", csv_bytes([stray])),
                      ("ndjson", json.dumps({k: v for k, v in stray.items() if v}).encode())):
        with pytest.raises(OrderFileError, match=message):
            parse(data, fmt)
    wire = Row(**{k: (int(v) if k in ("qty", "year") and v.isdigit() else v)
                  for k, v in stray.items() if v})
    with pytest.raises(RowError, match=message):
        RowReader(None).row(wire, wire.account, wire.order_id, wire.ts)


@pytest.mark.parametrize("key", orderfile._NOT_ORDER_KEYS)
def test_a_new_order_with_any_key_of_another_action_is_refused_by_each_reader(key):
    # The wire reader's shortcut names each of these keys in its test: one left out there
    # would let a new order drop it without a word.
    value = 2025 if key in ("year", "multiple", "months") else "x"
    fields = {"order_id": "n1", "account": "a", "instrument": "CEA25", "side": "buy",
              "price": "60.00", "qty": 1, key: value}
    with pytest.raises(RowError, match=f"{key} is not a key of a new row"):
        RowReader(None).row(Row(action="new", **fields), "a", "n1", None)
    text = {k: str(v) for k, v in fields.items()}
    with pytest.raises(OrderFileError, match=f"{key} is not a key of a new row"):
        parse(csv_bytes([row("new", **text)]))


def test_an_amend_may_repeat_its_orders_side_as_the_pinned_files_do():
    # tests/golden/rich.csv: "R04-000002,amend,sell,CEA25,ent002,62,60.01": the side is the
    # order's own, repeated, and not checked against it
    commands = parse_order_text(b"action,order_id,account,side,qty\namend,o1,a,sell,5\n", "csv")
    assert commands == [AmendOrder(order_id="o1", account="a", qty=5)]


@pytest.mark.parametrize(("line", "message"), [
    (b"[1,2]", "a line of NDJSON is one JSON object, not array"),
    (b'{"action":"new"', "not valid JSON: Input data was truncated"),
])
def test_an_ndjson_line_that_is_no_row_says_so_plainly(line, message):
    # It said "Expected `object`, got `array`" and "Input data was truncated", the
    # decoder's own words.
    assert message in str(error_of(line + b"\n", "ndjson"))


@pytest.mark.parametrize("extra", [b"", b',"ts":1'])  # the pinned path, and the other
@pytest.mark.parametrize("slice_bytes", [1, 1 << 22])
def test_an_ndjson_line_of_two_objects_is_refused_naming_its_line(monkeypatch, extra,
                                                                 slice_bytes):
    # Each slice's lines were joined into one JSON array, so '{...},{...}' on one line read
    # as two rows: the pinned path made two commands of the line, the other paired rows
    # with lines by position and dropped the last line's command without a word.
    monkeypatch.setattr(orderfile, "_NDJSON_SLICE", slice_bytes)
    data = (b'{"action":"halt","instrument":"CEA24"' + extra + b'}\n'
            b'{"action":"eod"' + extra + b'},{"action":"eod"' + extra + b'}\n'
            b'{"action":"halt","instrument":"CEA25"' + extra + b'}\n')
    with pytest.raises(OrderFileError) as caught:
        parse_order_text(data, "ndjson", name="f.ndjson")
    assert caught.value.line == 2
    assert "not valid JSON" in caught.value.message



@pytest.mark.parametrize("extra", [b"", b',"ts":1'])  # the pinned path, and the other
@pytest.mark.parametrize("cut", [b',"instrument":"CE|A25"}', b'|"instrument":"CEA25"}'])
def test_an_ndjson_row_cut_over_two_lines_beside_a_line_of_two_is_refused(extra, cut):
    # The slice's rows were counted against its lines: a row cut over lines 1-2 (one row
    # of two lines, the cut in a string or between two keys) and a line 3 of two objects
    # (two rows of one line) came out as many, and the file read without a word (the
    # instrument "CE,A25" in one case).
    head, tail = cut.split(b"|")
    data = (b'{"action":"halt"' + extra + head + b'\n' + tail + b'\n'
            b'{"action":"eod"' + extra + b'},{"action":"eod"' + extra + b'}\n')
    with pytest.raises(OrderFileError) as caught:
        parse_order_text(data, "ndjson", name="f.ndjson")
    assert caught.value.line == 1


def test_ndjson_lines_with_blanks_after_them_read_as_before():
    data = (b'{"action":"halt","instrument":"CEA24"} \r\n\n'
            b'{"action":"resume","instrument":"CEA24","ts":1}\t\n')
    assert [type(c).__name__ for c in parse_order_text(data, "ndjson")] == [
        "HaltInstrument", "ResumeInstrument"]


def test_a_new_rows_values_are_the_readers_own():
    # NewRow (the wire's plain new orders) types side, type, tif and stp as the values the
    # readers take: one missing would send its orders the long way, one too many would let
    # through a value the readers refuse.
    hints = typing.get_type_hints(NewRow)
    values = {name: set(typing.get_args(typing.get_args(hints[name])[0]))
              for name in ("type", "tif", "stp")}
    assert values == {"type": set(orderfile._TYPES), "tif": set(orderfile._TIFS),
                      "stp": {"", *STP}}
    assert set(typing.get_args(hints["side"])) == set(orderfile._SIDES)
