"""The order file's split reader beside the csv module: for any text, reading a CSV
order file with the split reader gives what the csv module's reader gives, the same
commands or the same error on the same line.

The split reader (``exchange.orderfile._plain_rows``) takes text with no quote or
carriage return, whose lines fit the csv module's field size limit; the tests read each
text both ways, the plain way by turning the split reader off.
"""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import exchange.orderfile as orderfile
from exchange.orderfile import OrderFileError, parse_order_text

HEADER = "action,order_id,account,instrument,side,type,tif,price,qty"
PLAIN_ROWS = [
    "new,o1,a,CEA25,buy,limit,,60.00,10", "new,o2,b,CEA25,sell,limit,ioc,59.99,5",
    "cancel,o1,a,,,,,,", "new,o3,a,CEA25,buy,market,,,7", "new,o4,a,CEA25,sell,,,61.5,1",
    "deposit,,a,CNY,,,,,100.00", "eod,,,,,,,,", "new,o5,a,CEA25,buy,limit,,6O.00,1",
    "new,o6,a,CEA25,up,limit,,60.00,1", "new,o7,a,CEA25,buy,limit,,60.00", "bogus,,,,,,,,",
    "", " ", "new,o8,é,CEA25,buy,limit,,60.00,3", "new,o12,a\0,CEA25,buy,limit,,60.00,1"
]
# A quote or a carriage return, where the csv module reads other than a split would.
ROWS = [
    *PLAIN_ROWS,
    'new,"o9",a,CEA25,buy,limit,,60.00,1', 'new,o10,"a,b",CEA25,sell,limit,,60.00,1',
    "new,o11,a\r,CEA25,buy,limit,,60.00,1", 'new,o13,"a\nb",CEA25,buy,limit,,60.00,1'
]
# Pieces of text: whole rows and lines, and the characters the two readers could differ on.
PIECES = st.sampled_from([*ROWS, HEADER, "action", "action,qty", "\n", "\n", "\n", ",", '"',
                          "\r", "\r\n", "\0", " ", "x", "\ufeff"])


def _read(data: bytes, *, plain: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    """The commands the file *data* reads as, or its error as (line, message)."""
    with monkeypatch.context() as patch:
        if not plain:
            patch.setattr(orderfile, "_plain_rows", lambda data: None)
        try:
            return parse_order_text(data, "csv", name="f.csv")
        except OrderFileError as exc:
            return (exc.line, str(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=12), st.booleans(), st.integers(min_value=1, max_value=40))
def test_split_reader_reads_as_the_csv_module(pieces: list[str], header: bool,
                                              size: int) -> None:
    text = (HEADER + "\n" if header else "") + "\n".join(pieces)
    data = text.encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(orderfile, "_SPLIT_BYTES", size)  # slices that end mid-file
        assert _read(data, plain=True, monkeypatch=patch) == _read(data, plain=False,
                                                                    monkeypatch=patch)


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("text", [
    HEADER + "\n" + "\n".join(PLAIN_ROWS) + "\n", HEADER, "\n", "\n\n" + HEADER, HEADER + "\n\n\n",
    "\ufeff" + HEADER + "\nnew,o1,a,CEA25,buy,,,60,1", "a,,b\n,\n,,,\n"
])
@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
def test_split_rows_are_the_csv_rows(text: str, size: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Row for row: the csv module's rows, less the rows of no fields after the first."""
    monkeypatch.setattr(orderfile, "_SPLIT_BYTES", size)
    rows = orderfile._plain_rows(text.encode())
    assert rows is not None
    expected = _csv_rows(text.removeprefix("\ufeff"))
    assert list(rows) == expected[:1] + [row for row in expected[1:] if row]


@pytest.mark.parametrize("text", ['a,"b"\n', "a\r\nb\n", "a\rb"])
def test_text_the_split_reader_does_not_take(text: str) -> None:
    assert orderfile._plain_rows(text.encode()) is None


def test_a_line_past_the_field_size_limit_goes_to_the_csv_module(
        monkeypatch: pytest.MonkeyPatch) -> None:
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(20)
        data = f"{HEADER}\nnew,o1,a,CEA25,buy,limit,,60.00,{'1' * 30}\n".encode()
        with pytest.raises(OrderFileError) as plain:
            parse_order_text(data, "csv", name="f.csv")
        with pytest.raises(_NotPlainError):
            list(orderfile._plain_rows(data) or ())
    finally:
        csv.field_size_limit(limit)
    # the csv module's own error, on its own line
    assert plain.value.line == 2 and "field larger than field limit" in str(plain.value)


_NotPlainError = orderfile._NotPlain


def test_an_error_names_its_line_though_the_split_reader_read_first() -> None:
    data = f"{HEADER}\nnew,o1,a,CEA25,buy,limit,,60.00,1\n\nnew,o2,a,CEA25,up,,,60.00,1\n"
    with pytest.raises(OrderFileError) as caught:
        parse_order_text(data.encode(), "csv", name="f.csv")
    assert caught.value.line == 4


def test_a_header_past_the_field_size_limit_goes_to_the_csv_module() -> None:
    # The split reader checked the data lines' length but not the header's: a header
    # field padded with spaces past the limit (columns are stripped) read as a good
    # header, where the csv module refuses the file on line 1.
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(20)
        data = f"action{' ' * 30},qty\neod,\n".encode()
        with pytest.raises(_NotPlainError):
            list(orderfile._plain_rows(data) or ())
        with pytest.raises(OrderFileError) as caught:
            parse_order_text(data, "csv", name="f.csv")
    finally:
        csv.field_size_limit(limit)
    assert caught.value.line == 1 and "field larger than field limit" in str(caught.value)
