"""What a column may hold as far as simple CHECKs and partition bounds say, and values in it.

:class:`Allowed` is a range (each end open or closed), a list of choices and
a length range, with values already of the column's Python type
(:func:`typed_literal` turns a SQL literal into one). :func:`narrowed` makes a
generated-value maker keep to it. Constraints too complex to read this way
are left to the database: rows it refuses are generated again (see
:mod:`encmigrate.rehearse.generated_rows`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import uuid
from dataclasses import dataclass, replace
from typing import Any, Final

import sqlalchemy as sa

from encmigrate.rehearse.value_makers import Maker, base_type

__all__ = ["Allowed", "narrowed", "typed_literal"]

_SPAN: Final = 10**6  # how far a range with one open end reaches
_INTEGER_LIMITS: Final = {
    sa.SmallInteger: 2**15 - 1,
    sa.BigInteger: 2**63 - 1,
    sa.Integer: 2**31 - 1,
}


@dataclass(frozen=True, slots=True)
class Allowed:
    """Values a column accepts: ``low``/``high`` (None: unbounded), choices, a length range."""

    low: Any = None
    low_open: bool = False
    high: Any = None
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    min_length: int | None = None
    max_length: int | None = None

    def admits(self, value: Any) -> bool:
        try:
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                return False
            if self.high is not None and (
                value > self.high or (self.high_open and value == self.high)
            ):
                return False
        except TypeError:
            return True
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                return False
            if self.max_length is not None and len(value) > self.max_length:
                return False
        return True

    def __and__(self, other: Allowed) -> Allowed:
        """Both at once: the tighter ends, the common choices, the tighter lengths."""
        result = self
        if other.low is not None and (result.low is None or _above(other.low, result.low)):
            result = replace(result, low=other.low, low_open=other.low_open)
        elif other.low is not None and other.low == result.low and other.low_open:
            result = replace(result, low_open=True)
        if other.high is not None and (result.high is None or _above(result.high, other.high)):
            result = replace(result, high=other.high, high_open=other.high_open)
        elif other.high is not None and other.high == result.high and other.high_open:
            result = replace(result, high_open=True)
        if other.choices is not None:
            mine = result.choices if result.choices is not None else other.choices
            common = tuple(c for c in other.choices if c in mine)
            result = replace(result, choices=common or other.choices)
        if other.min_length is not None:
            result = replace(result, min_length=max(other.min_length, result.min_length or 0))
        if other.max_length is not None:
            longest = min(other.max_length, result.max_length or other.max_length)
            result = replace(result, max_length=longest)
        return result


def _above(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:
        return False


def typed_literal(text: str, column_type: sa.types.TypeEngine[Any]) -> Any:
    """The Python value of the SQL literal ``text`` for ``column_type``, or None if unsure."""
    column_type = base_type(column_type)
    try:
        if isinstance(column_type, sa.Boolean):
            return text.lower() in ("t", "true", "1", "yes", "on")
        if isinstance(column_type, sa.Integer):
            return int(text)
        if isinstance(column_type, sa.Float):
            return float(text)
        if isinstance(column_type, sa.Numeric):
            return decimal.Decimal(text)
        if isinstance(column_type, sa.DateTime):
            return dt.datetime.fromisoformat(text)
        if isinstance(column_type, sa.Date):
            return dt.date.fromisoformat(text)
        if isinstance(column_type, sa.Time):
            return dt.time.fromisoformat(text)
        if isinstance(column_type, sa.Uuid):
            return uuid.UUID(text)
    except (ValueError, decimal.InvalidOperation):
        return None
    return text


def narrowed(maker: Maker, allowed: Allowed | None, column_type: sa.types.TypeEngine[Any]) -> Maker:
    """``maker``, kept to ``allowed``: a choice, a value in the range, a length that fits."""
    if allowed is None or allowed == Allowed():
        return maker
    column_type = base_type(column_type)
    if allowed.choices:
        choices = [c for c in allowed.choices if allowed.admits(c)] or list(allowed.choices)
        return lambda i, rng: rng.choice(choices)
    if allowed.low is not None or allowed.high is not None:
        between = _between(allowed, column_type)
        if between is not None:
            return between
    if allowed.min_length is not None or allowed.max_length is not None:
        shortest, longest = allowed.min_length or 0, allowed.max_length

        def sized(i: int, rng: random.Random) -> Any:
            value = maker(i, rng)
            if not isinstance(value, str):
                return value
            return value[:longest].ljust(shortest, "x")

        return sized
    return maker


def _between(allowed: Allowed, column_type: sa.types.TypeEngine[Any]) -> Maker | None:
    """Values inside ``allowed``'s range for numbers, dates and timestamps, else None."""
    low, high = allowed.low, allowed.high
    if isinstance(column_type, sa.Integer):
        limit = next(v for t, v in _INTEGER_LIMITS.items() if isinstance(column_type, t))
        lo = -limit if low is None else int(low) + (1 if allowed.low_open else 0)
        hi = limit if high is None else int(high) - (1 if allowed.high_open else 0)
        if low is None:
            lo = max(lo, hi - _SPAN)
        if high is None:
            hi = min(hi, lo + _SPAN)
        return (lambda i, rng: rng.randint(lo, hi)) if lo <= hi else None
    if isinstance(column_type, sa.Numeric):
        return _decimal_between(allowed, column_type)
    if isinstance(column_type, sa.DateTime | sa.Date):
        return _time_between(allowed, column_type)
    return None


def _time_between(allowed: Allowed, column_type: sa.types.TypeEngine[Any]) -> Maker | None:
    """Dates (a day apart) or timestamps (a second apart) inside ``allowed``'s range."""
    low, high = allowed.low, allowed.high
    timestamps = isinstance(column_type, sa.DateTime)
    unit = dt.timedelta(seconds=1) if timestamps else dt.timedelta(days=1)
    span = 10**8 if timestamps else 3650
    try:
        start = low if low is not None else high - unit * span
        end = high if high is not None else start + unit * span
        first = 1 if allowed.low_open and low is not None else 0
        last = (end - start) // unit - (1 if allowed.high_open and high is not None else 0)
    except (OverflowError, TypeError):
        return None
    if last < first:
        return None
    return lambda i, rng: start + unit * rng.randint(first, last)


def _decimal_between(allowed: Allowed, column_type: sa.types.TypeEngine[Any]) -> Maker | None:
    scale = getattr(column_type, "scale", None)
    precision = getattr(column_type, "precision", None)
    step = decimal.Decimal(1).scaleb(-(2 if scale is None else scale))
    largest = (
        decimal.Decimal(10) ** (precision - (scale or 0)) - step
        if precision is not None
        else decimal.Decimal(_SPAN) * 1000
    )
    low = None if allowed.low is None else decimal.Decimal(str(allowed.low))
    high = None if allowed.high is None else decimal.Decimal(str(allowed.high))
    lo = -largest if low is None else low + (step if allowed.low_open else 0)
    hi = largest if high is None else high - (step if allowed.high_open else 0)
    if low is None:
        lo = max(lo, hi - _SPAN)
    if high is None:
        hi = min(hi, lo + _SPAN)
    lo, hi = lo.quantize(step, decimal.ROUND_CEILING), hi.quantize(step, decimal.ROUND_FLOOR)
    if lo > hi:
        return None
    steps = int((hi - lo) / step)
    floating = isinstance(column_type, sa.Float)

    def make(i: int, rng: random.Random) -> Any:
        value = lo + step * rng.randint(0, steps)
        return float(value) if floating else value

    return make
