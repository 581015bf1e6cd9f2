"""Exact decimal <-> integer conversion for prices, ticks and money.

Invariants: no float ever holds a price or an amount. A decimal string is parsed
exactly; a value that is not a whole number of units (ticks, fen, tonnes) is refused,
never rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["Scale", "parse_decimal", "is_decimal"]

_MISSING = object()
# Plain decimal notation only: no underscores, spaces, NaN or infinity.
# ASCII digits only (Python's \d would take "６０" for 60).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\Z")
_MAX_DIGITS = 30  # no price, quantity or amount in this market needs more


def parse_decimal(text: str) -> Decimal:
    """Return the exact ``Decimal`` of *text*; raise ``ValueError`` if it is not a finite number.

    >>> parse_decimal("60.10")
    Decimal('60.10')
    >>> parse_decimal("abc")
    Traceback (most recent call last):
    ...
    ValueError: 'abc' is not a decimal number
    """
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise ValueError(f"{text!r} is not a decimal number")
    try:
        value = Decimal(text)
    except (InvalidOperation, ArithmeticError):
        raise ValueError(f"{text!r} is not a decimal number") from None
    exponent = value.as_tuple().exponent
    if (not isinstance(exponent, int) or abs(exponent) > _MAX_DIGITS
            or value.adjusted() > _MAX_DIGITS):
        raise ValueError(f"{text!r} is out of range")
    return value


def is_decimal(text: str) -> bool:
    """Tell whether *text* reads as a finite decimal number.

    >>> is_decimal("1.5"), is_decimal("1,5"), is_decimal("nan")
    (True, False, False)
    """
    try:
        parse_decimal(text)
    except ValueError:
        return False
    return True


class Scale:
    """A unit of account such as a price tick (0.01 CNY/t) or a fen, as an exact decimal.

    ``to_units`` turns a decimal string into a whole number of units, or refuses it;
    ``format`` turns units back into a decimal string with the unit's decimal places.
    Conversions of repeated strings hit a bounded cache: O(1) after the first time.

    >>> tick = Scale("0.01")
    >>> tick.to_units("60.01"), tick.format(6001)
    (6001, '60.01')
    >>> tick.to_units("60.015") is None
    True
    >>> Scale("0.05").format(1201)
    '60.05'
    """

    __slots__ = ("text", "value", "places", "_step", "_cache")

    _CACHE_LIMIT = 1 << 16

    def __init__(self, text: str | Decimal) -> None:
        value = parse_decimal(str(text))
        if value <= 0:
            raise ValueError(f"a unit must be positive, got {text!r}")
        self.text = str(text)
        self.value = value
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        self.places = max(0, -exponent)
        # The unit as an integer count of 10**-places.
        self._step = int(value.scaleb(self.places))
        self._cache: dict[str, int | None] = {}

    def to_units(self, text: str) -> int | None:
        """Return *text* as a whole number of units, or ``None`` when it is off the unit.

        Raises ``ValueError`` when *text* is not a number at all.
        """
        cache = self._cache
        units = cache.get(text, _MISSING)
        if units is not _MISSING:
            return units  # type: ignore[return-value]
        result = self._exact_units(parse_decimal(text), text)
        if len(cache) < self._CACHE_LIMIT:
            cache[text] = result
        return result

    def units_of(self, value: Decimal) -> int | None:
        """Return the exact ``Decimal`` *value* in units, or ``None`` when off the unit."""
        return self._exact_units(value, str(value))

    def _exact_units(self, value: Decimal, text: str) -> int | None:
        # Integer arithmetic only: Decimal division would round past 28 digits.
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        if len(digits) + exponent > _MAX_DIGITS or exponent < -_MAX_DIGITS:
            raise ValueError(f"{text!r} is out of range")
        mantissa = int("".join(map(str, digits)))
        shift = exponent + self.places
        scaled: int  # mypy types int ** int as Any (a negative power is a float)
        if shift >= 0:
            scaled = mantissa * 10**shift
        else:
            scaled, rest = divmod(mantissa, 10**-shift)
            if rest:
                return None
        units, rest = divmod(scaled, self._step)
        if rest:
            return None
        return -units if sign else units

    def format(self, units: int) -> str:
        """Return *units* as a decimal string with this unit's decimal places."""
        raw = units * self._step
        if not self.places:
            return str(raw)
        sign = "-" if raw < 0 else ""
        digits = str(abs(raw)).rjust(self.places + 1, "0")
        return f"{sign}{digits[: -self.places]}.{digits[-self.places :]}"

    def __repr__(self) -> str:
        return f"Scale({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scale) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)
