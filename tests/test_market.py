"""Market configuration (exchange.market) and exact units (exchange.units.Scale)."""

from __future__ import annotations

import math
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markets import futures_market

from exchange import calendar
from exchange.market import Instrument, MarketConfigError, default_market, load_market, parse_market
from exchange.units import Scale, is_decimal, parse_decimal

SPOT = ("CEA19-20", "CEA21", "CEA22", "CEA23", "CEA24", "CEA25", "CCER")
FUTURES = ("CEA-DEC26", "CEA-DEC27")
OPTIONS = ("CEA-DEC26-C85", "CEA-DEC26-P75")

# --- the default market (numbers from shared/DOMAIN.md) -----------------------------------


def test_default_market_instruments():
    market = default_market()
    assert set(market.instruments) == set(SPOT) | set(FUTURES) | set(OPTIONS)
    assert "CEA25" in market and "EUA" not in market
    again = load_market(None)
    assert list(again.instruments) == list(market.instruments)
    # Scale has no __eq__, so compare the instruments by their repr.
    assert [repr(i)
            for i in again.instruments.values()] == [repr(i) for i in market.instruments.values()]


@pytest.mark.parametrize("symbol", SPOT)
def test_default_spot_rules(symbol):
    inst = default_market()[symbol]
    assert inst.kind == "spot"
    assert inst.currency == "CNY"
    assert inst.tick.value == Decimal("0.01")
    assert inst.tick.to_units("60.01") == 6001
    assert inst.qty_step == 1
    assert inst.min_qty == 1
    assert inst.max_qty == 99_999  # listing orders under 100,000 t
    assert inst.band == Decimal("0.10")  # +-10% around the previous close
    assert (inst.band_num, inst.band_den) == (1, 10)
    assert inst.reference_price is None  # no band until an eod sets a reference
    assert inst.price_band(inst.reference_price) is None
    assert inst.contract_size == 1 and inst.unit == "t"


@pytest.mark.parametrize("symbol,vintage", [("CEA21", 2021), ("CEA22", 2022), ("CEA23", 2023),
                                            ("CEA24", 2024), ("CEA25", 2025)])
def test_default_vintages(symbol, vintage):
    assert default_market()[symbol].vintage == vintage


def test_the_first_periods_allowances_are_of_2019_and_2020():
    inst = default_market()["CEA19-20"]
    assert (inst.first_year, inst.vintage) == (2019, 2020)
    assert [inst.of_year(y) for y in (2018, 2019, 2020, 2021)] == [False, True, True, False]


@pytest.mark.parametrize("symbol,month", [("CEA-DEC26", "2026-12"), ("CEA-DEC27", "2027-12")])
def test_default_futures_rules(symbol, month):
    inst = default_market()[symbol]
    assert inst.kind == "future"
    assert inst.currency == "CNY"
    assert inst.tick.value == Decimal("0.01")
    assert inst.contract_size == 1000  # 1 lot = 1,000 t
    assert inst.min_qty == 1
    assert inst.max_qty == 10_000  # orders up to 10,000 lots
    assert inst.band is None  # futures: no price band
    assert inst.reference_price is None
    assert inst.unit == "lot"
    assert inst.underlying == "CEA25"
    assert inst.underlying in default_market()
    assert inst.contract_month == month
    assert (inst.initial_margin, inst.maintenance_margin) == (800_000, 600_000)  # fen a lot
    year, number = map(int, month.split("-"))
    last = calendar.Calendar().last_trading_day(year, number)
    assert inst.last_trading_day == last and calendar.weekday(last) == 0  # a Monday
    assert inst.delivery_day == calendar.Calendar().add_business_days(last, 3)


@pytest.mark.parametrize("symbol,kind,strike", [("CEA-DEC26-C85", "call", 8500),
                                                ("CEA-DEC26-P75", "put", 7500)])
def test_default_options_on_the_december_future(symbol, kind, strike):
    inst = default_market()[symbol]
    future = default_market()["CEA-DEC26"]
    assert (inst.kind, inst.option_type, inst.strike, inst.underlying) == ("option", kind, strike,
                                                                           "CEA-DEC26")
    assert inst.tick_value == future.tick_value and inst.contract_size == 1000
    # three business days before the future's last trading day (Monday 2026-12-28)
    assert calendar.format_date(inst.last_trading_day) == "2026-12-23"


def test_the_default_ccer_is_of_the_restarted_market():
    ccer = default_market()["CCER"]
    assert ccer.offset and not ccer.in_scheme
    assert calendar.format_date(ccer.registered) == "2024-03-01"  # after 2024-01-22


def test_a_holiday_on_the_last_monday_gives_the_penultimate_monday():
    # ICE Endex EUA futures: a holiday on the last Monday, or in the four days after it,
    # makes the penultimate Monday the last trading day.
    text = _CLEARED + '[clearing]\nholidays = ["2026-12-28", "2026-12-31"]\n'
    inst = parse_market(text)["F"]
    assert calendar.format_date(inst.last_trading_day) == "2026-12-21"  # penultimate Monday
    assert calendar.format_date(inst.delivery_day) == "2026-12-24"


def test_the_closing_window_is_read_in_local_time():
    clearing = parse_market(
        _CLEARED +
        '[clearing]\nsettlement_window = "14:45-15:00"\nutc_offset = "+08:00"\n').clearing

    def at(h, m):
        return (h * 3600 + m * 60) * 10**9

    assert clearing.in_window(at(6, 45)) and clearing.in_window(at(6, 59))
    assert not clearing.in_window(at(7, 0)) and not clearing.in_window(at(14, 50))


_CLEARED = futures_market(maintenance=None)


def test_a_futures_maintenance_margin_is_three_quarters_of_the_initial_unless_given():
    text = futures_market(maintenance=None).replace('"8000.00"', '"8000.03"')
    inst = parse_market(text)["F"]
    assert (inst.initial_margin, inst.maintenance_margin) == (800_003, 600_002)  # rounded down


@pytest.mark.parametrize(
    "extra,words",
    [('maintenance_margin = "9000.00"\n', "above the initial margin"),
     ('initial_margin = "8000.001"\n', None),
     ('[clearing]\nholidays = ["2026-02-30"]\n', "holidays"),
     ('[clearing]\nsettlement_window = "15:00-14:45"\n', "ends before it starts"),
     ('[clearing]\nsettlement_window = "9am"\n', "HH:MM"),
     ('[clearing]\nutc_offset = "+8"\n', "HH:MM"), ("[clearing]\nsurprise = 1\n", "unknown key"),
     ('[instruments.K]\ntick = "0.01"\nregistered = "2024-03-01"\n', "for offsets"),
     ('[instruments.K]\ntick = "0.01"\noffset = true\nregistered = "2024-13-01"\n', "registered"),
     ('[instruments.K]\ntick = "0.01"\noffset = true\nin_scheme = "yes"\n', "in_scheme"),
     ('[instruments.O]\nkind = "option"\ntick = "0.01"\ncontract_size = 1000\n'
      'underlying = "F"\nstrike = "85.005"\noption_type = "call"\n', "strike"),
     ('[instruments.O]\nkind = "option"\ntick = "0.01"\ncontract_size = 1000\n'
      'underlying = "F"\nstrike = "85.00"\noption_type = "straddle"\n', "call or put"),
     ('[instruments.O]\nkind = "option"\ntick = "0.01"\ncontract_size = 10\n'
      'underlying = "F"\nstrike = "85.00"\noption_type = "call"\n', "contract size")])
def test_bad_clearing_terms_are_refused(extra, words):
    text = (_CLEARED + extra if extra.startswith("[") else _CLEARED.replace(
        'initial_margin = "8000.00"\n', 'initial_margin = "8000.00"\n' + extra))
    if extra.startswith("initial_margin"):
        text = _CLEARED.replace('initial_margin = "8000.00"\n', extra)
    with pytest.raises(MarketConfigError) as caught:
        parse_market(text)
    if words:
        assert words in str(caught.value)


# --- price bands --------------------------------------------------------------------------


def _instrument(band: str) -> Instrument:
    b = Decimal(band)
    num, den = b.as_integer_ratio()
    return Instrument("X", "spot", "CNY", Scale("0.01"), band=b, band_num=num, band_den=den)


@pytest.mark.parametrize(
    "band,reference,expected",
    [
        ("0.10", 6000, (5400, 6600)),
        ("0.10", 6001, (5401, 6601)),  # 5400.9 -> 5401 (up), 6601.1 -> 6601 (down)
        ("0.10", 6009, (5409, 6609)),  # 5408.1 -> 5409, 6609.9 -> 6609
        ("0.07", 333, (310, 356)),  # 309.69 -> 310, 356.31 -> 356
        ("0.3", 1, (1, 1)),  # 0.7 -> 1, 1.3 -> 1
        ("0.999", 1000, (1, 1999)),  # low 1 -> never below one tick
        ("0.001", 999, (999, 999)),  # 998.001 -> 999, 999.999 -> 999
        ("0.125", 8, (7, 9)),
        ("0.3333333333333333333333333333", 3, (3, 3)),  # 2.00..01 -> 3, 3.99..99 -> 3
    ])
def test_price_band_rounding(band, reference, expected):
    inst = _instrument(band)
    b = Fraction(Decimal(band))
    low = max(math.ceil(reference * (1 - b)), 1)
    high = math.floor(reference * (1 + b))
    assert (low, high) == expected
    assert inst.price_band(reference) == expected


@settings(max_examples=300, deadline=None)
@given(reference=st.integers(min_value=1, max_value=10**12),
       band=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.9999"), places=4))
def test_price_band_never_widens(reference, band):
    inst = _instrument(str(band))
    low, high = inst.price_band(reference)
    b = Fraction(band)
    assert low == max(math.ceil(reference * (1 - b)), 1)
    assert high == math.floor(reference * (1 + b))
    assert Fraction(low) >= reference * (1 - b) and Fraction(high) <= reference * (1 + b)
    assert low <= reference <= high


def test_price_band_none_without_band_or_reference():
    assert _instrument("0.1").price_band(None) is None
    no_band = Instrument("X", "spot", "CNY", Scale("0.01"))
    assert no_band.price_band(6000) is None


# --- parsing TOML exactly -----------------------------------------------------------------


def market(body: str):
    return parse_market(body, "m.toml")


def test_toml_floats_are_exact():
    m = market("[instruments.X]\ntick = 0.01\nband = 0.1\nreference_price = 60.01\n"
               "[instruments.Y]\ntick = 0.05\nband = 0.3\nreference_price = 0.15\n")
    x, y = m["X"], m["Y"]
    assert x.band == Decimal("0.1") and (x.band_num, x.band_den) == (1, 10)
    assert x.tick.value == Decimal("0.01")
    assert x.reference_price == 6001
    assert x.price_band(x.reference_price) == (5401, 6601)
    assert y.band == Decimal("0.3") and (y.band_num, y.band_den) == (3, 10)
    assert y.reference_price == 3  # 0.15 / 0.05, which floats get wrong
    assert y.tick.to_units("0.15") == 3


def test_toml_strings_ints_and_defaults():
    m = market('[defaults]\ncurrency = "EUR"\n'
               '[instruments.A]\ntick = "0.25"\nqty_step = 5\nmax_qty = 100\n'
               '[instruments.B]\nkind = "future"\ntick = 1\ncurrency = "CNY"\n'
               'contract_size = 1000\nunderlying = "A"\n')
    a, b = m["A"], m["B"]
    assert a.currency == "EUR" and b.currency == "CNY"
    assert a.tick.to_units("60.25") == 241 and a.tick.to_units("60.10") is None
    assert (a.qty_step, a.min_qty, a.max_qty) == (5, 5, 100)
    assert a.band is None and a.reference_price is None
    assert b.max_qty == 10_000 and b.unit == "lot" and b.tick.to_units("60") == 60
    assert m.source == "m.toml"


def test_load_market_from_file(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[instruments.X]\ntick = "0.01"\n', encoding="utf-8")
    assert set(load_market(path).instruments) == {"X"}
    with pytest.raises(MarketConfigError, match="nope.toml"):
        load_market(tmp_path / "nope.toml")


GOOD_X = '[instruments.X]\ntick = "0.01"\n'  # nothing wrong with it: the rows add one bad key


@pytest.mark.parametrize(
    "body,fragments",
    [
        (GOOD_X + 'colour = "red"\n', ["'X'", "colour"]),
        ('[instruments.X]\ntick = "0"\n', ["'X'", "tick", "positive"]),
        ("[instruments.X]\ntick = 0\n", ["'X'", "tick"]),
        ('[instruments.X]\ntick = "-0.01"\n', ["'X'", "tick"]),
        ("[instruments.X]\ntick = -0.01\n", ["'X'", "tick"]),
        ('[instruments.X]\ntick = "abc"\n', ["'X'", "tick"]),
        ("[instruments.X]\ntick = true\n", ["'X'", "tick"]),
        ('[instruments.X]\nkind = "spot"\n', ["'X'", "tick"]),
        (GOOD_X + 'min_qty = 10\nmax_qty = 5\n', ["'X'", "min_qty", "max_qty", "10", "5"]),
        (GOOD_X + 'qty_step = 0\n', ["'X'", "qty_step"]),
        (GOOD_X + 'qty_step = 3\nmax_qty = 10\n', ["'X'", "qty_step"]),
        (GOOD_X + 'reference_price = "60.001"\n', ["'X'", "reference_price", "60.001", "0.01"]),
        ('[instruments.X]\ntick = "0.05"\nreference_price = 60.01\n', ["'X'", "reference_price"]),
        (GOOD_X + 'reference_price = 0\n', ["'X'", "reference_price"]),
        (GOOD_X + 'band = 0\n', ["'X'", "band"]),
        (GOOD_X + 'band = 1\n', ["'X'", "band"]),
        (GOOD_X + 'band = 1.5\n', ["'X'", "band"]),
        (GOOD_X + 'band = -0.1\n', ["'X'", "band"]),
        (GOOD_X + 'band = "10%"\n', ["'X'", "band"]),
        (GOOD_X + 'kind = "swap"\n', ["'X'", "kind", "swap"]),
        ('[instruments.F]\nkind = "future"\ntick = "0.01"\nunderlying = "NOPE"\n',
         ["'F'", "underlying", "NOPE"]),
        ('[instruments.X\ntick = "0.01"\n', ["TOML"]),
        ("tick = 0.01\n", ["tick"]),  # an unknown top-level section/key
        ('[defaults]\ncurrency = "CNY"\n', ["instruments"]),
        ("[instruments]\n", ["instruments"]),
        ("[instruments]\nX = 5\n", ["'X'"]),
        (GOOD_X + 'currency = ""\n', ["'X'", "currency"]),
        (GOOD_X + 'vintage = 20\n', ["'X'", "vintage"]),
        (GOOD_X + 'vintage_from = 2019\n', ["'X'", "vintage_from", "needs the vintage"]),
        (GOOD_X + 'vintage = 2020\nvintage_from = 2021\n', ["'X'", "vintage_from", "after"])
    ])
def test_market_config_errors(body, fragments):
    with pytest.raises(MarketConfigError) as info:
        market(body)
    message = str(info.value)
    assert "m.toml" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_defaults_not_a_table():
    with pytest.raises(MarketConfigError):
        market('defaults = 5\n[instruments.X]\ntick = "0.01"\n')


def test_unknown_key_in_defaults():
    with pytest.raises(MarketConfigError, match="colour"):
        market('[defaults]\ncolour = "red"\n[instruments.X]\ntick = "0.01"\n')


@pytest.mark.parametrize("tick", ["1e999999999", "1e-999999999"])
def test_tick_with_huge_exponent(tick):
    with pytest.raises(MarketConfigError):
        market(f'[instruments.X]\ntick = "{tick}"\n')


def test_market_config_error_is_value_error():
    assert issubclass(MarketConfigError, ValueError)


# --- exchange.units.Scale -----------------------------------------------------------------


@pytest.mark.parametrize("tick,text,units",
                         [("0.01", "60.01", 6001), ("0.01", "60.1", 6010), ("0.01", "60", 6000),
                          ("0.01", "60.000", 6000), ("0.01", "0.01", 1), ("0.01", "-0.01", -1),
                          ("0.01", "0", 0), ("0.01", "-0", 0), ("0.01", "6.001e1", 6001),
                          ("0.01", "1E+2", 10000), ("0.01", "0.0100", 1), ("0.01", "+5.5", 550),
                          ("0.01", "00060.10", 6010),
                          ("0.01", "123456789012345678.91", 12345678901234567891),
                          ("0.05", "60.05", 1201), ("0.05", "0.15", 3), ("0.25", "1.75", 7),
                          ("1", "42", 42), ("5", "15", 3), ("2.5", "7.5", 3), ("1E+1", "100", 10),
                          ("0.001", "1.234", 1234), ("0.1", "0.3", 3)])
def test_to_units_exact(tick, text, units):
    scale = Scale(tick)
    assert scale.to_units(text) == units
    assert scale.to_units(text) == units  # cached path
    assert scale.units_of(Decimal(text)) == units


@pytest.mark.parametrize("tick,text", [("0.01", "60.001"), ("0.01", "0.005"),
                                       ("0.01", "60.0099999999999999999999999"), ("0.01", "1e-3"),
                                       ("0.05", "60.03"), ("0.05", "60.01"), ("5", "7"),
                                       ("1", "0.5"), ("0.25", "0.1"), ("2.5", "5.1")])
def test_to_units_off_unit_is_none_never_rounded(tick, text):
    assert Scale(tick).to_units(text) is None
    assert Scale(tick).units_of(Decimal(text)) is None


@pytest.mark.parametrize(
    "text", ["abc", "", "nan", "NaN", "inf", "-Infinity", "1,5", "60.0.0", "0x10", "1e"])
def test_to_units_not_a_number_raises(text):
    with pytest.raises(ValueError):
        Scale("0.01").to_units(text)
    assert not is_decimal(text)


def test_parse_decimal():
    assert parse_decimal("60.10") == Decimal("60.10")
    assert str(parse_decimal("60.10")) == "60.10"
    with pytest.raises(ValueError):
        parse_decimal("nan")


@pytest.mark.parametrize("text", ["0", "-1", "-0.01", "abc", "nan"])
def test_scale_must_be_positive_number(text):
    with pytest.raises(ValueError):
        Scale(text)


@pytest.mark.parametrize("tick,units,text", [("0.01", 6001, "60.01"), ("0.01", 1, "0.01"),
                                             ("0.01", -1, "-0.01"), ("0.01", 0, "0.00"),
                                             ("0.01", -6001, "-60.01"), ("0.05", 1201, "60.05"),
                                             ("1", 42, "42"), ("5", 3, "15"), ("2.5", 3, "7.5"),
                                             ("0.001", 5, "0.005")])
def test_format(tick, units, text):
    assert Scale(tick).format(units) == text


_ticks = st.sampled_from(
    ["0.01", "0.05", "0.25", "1", "5", "2.5", "0.001", "0.0001", "10", "0.5", "1E+1", "0.10"])


@settings(max_examples=400, deadline=None)
@given(n=st.integers(min_value=-(10**18), max_value=10**18), tick=_ticks)
def test_format_round_trips(n, tick):
    scale = Scale(tick)
    text = scale.format(n)
    assert scale.to_units(text) == n
    assert Decimal(text) == n * Decimal(tick)  # exact, no float anywhere


@settings(max_examples=400, deadline=None)
@given(
    value=st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False,
                      allow_infinity=False), tick=_ticks)
def test_to_units_exact_or_none(value, tick):
    """to_units(d) is n with n * tick == d exactly, or None when d is not on the tick."""
    quotient = Fraction(value) / Fraction(Decimal(tick))
    got = Scale(tick).to_units(str(value))
    if quotient.denominator == 1:
        assert got == quotient.numerator
    else:
        assert got is None


@pytest.mark.parametrize("text", [
    "1e999999999", "1e-999999999", "-1e999999999", "1e1000000", "0e999999999", "9" * 40,
    "0." + "0" * 40 + "1"
])
def test_huge_exponents_raise_quickly(text):
    """Out-of-range values raise ValueError at once (checked in a subprocess with a timeout)."""
    code = ("import sys\nfrom decimal import Decimal\nfrom exchange.units import Scale\n"
            f"t = {text!r}\n"
            "for call in (lambda: Scale('0.01').to_units(t), "
            "lambda: Scale('0.01').units_of(Decimal(t))):\n"
            "    try:\n        call()\n    except ValueError:\n        pass\n"
            "    else:\n        sys.exit('no ValueError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tick", ["1e999999999", "1e-999999999"])
def test_scale_huge_exponent_raises_value_error(tick):
    with pytest.raises(ValueError):
        Scale(tick)


def test_a_series_lists_its_contracts_by_month():
    text = futures_market().split("[instruments.F]")[0] + (
        '[series.Q]\nseries = "quarterly"\nstart = "2026-11"\ncount = 3\ntick = "0.01"\n'
        'contract_size = 1000\nunderlying = "CEA25"\ninitial_margin = "8000.00"\n')
    market = parse_market(text)
    quarterly = {s: i for s, i in market.instruments.items() if s.startswith("Q-")}
    assert {
        s: i.contract_month
        for s, i in quarterly.items()
    } == {
        "Q-DEC26": "2026-12",
        "Q-MAR27": "2027-03",
        "Q-JUN27": "2027-06"
    }
    assert [calendar.format_date(i.last_trading_day)
            for i in quarterly.values()] == ["2026-12-28", "2027-03-29",
                                             "2027-06-28"]  # last Mondays
    monthly = parse_market(text.replace('"quarterly"', '"monthly"'))
    assert [s for s in monthly.instruments
            if s.startswith("Q-")] == ["Q-NOV26", "Q-DEC26", "Q-JAN27"]


@pytest.mark.parametrize(
    "change,words", [(("count = 3", "count = 0"), "count"), (('"quarterly"', '"weekly"'), "weekly"),
                     (('start = "2026-11"', 'start = "Nov 2026"'), "Nov 2026"),
                     (("count = 3", 'count = 3\ncontract_month = "2027-01"'), "come from series")])
def test_bad_series_are_refused(change, words):
    text = futures_market().split("[instruments.F]")[0] + (
        '[series.Q]\nseries = "quarterly"\nstart = "2026-11"\ncount = 3\ntick = "0.01"\n'
        'contract_size = 1000\nunderlying = "CEA25"\ninitial_margin = "8000.00"\n')
    with pytest.raises(MarketConfigError, match=words):
        parse_market(text.replace(*change))


def test_a_series_contract_may_not_repeat_a_listed_one():
    text = futures_market() + ('[series.F]\nseries = "december"\nstart = "2026-12"\n'
                               'count = 1\ntick = "0.01"\ncontract_size = 1000\n'
                               'underlying = "CEA25"\ninitial_margin = "8000.00"\n'
                               '[instruments.F-DEC26]\ntick = "0.01"\n')
    with pytest.raises(MarketConfigError, match="listed twice"):
        parse_market(text)
