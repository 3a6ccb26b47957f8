"""Values of a type, for generated rows: a maker per column, ``make(i, rng)`` for row ``i``.

Planned columns get values of the plan's type (written as text in a text
column), other columns values of their SQL type. Key and unique columns get
values that differ from row to row (:func:`sequence_maker`). Nothing here
knows about constraints: :mod:`encmigrate.rehearse.allowed_values` narrows a
maker to what a CHECK or a partition accepts.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import uuid
from collections.abc import Callable
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from encmigrate.errors import ConfigError

__all__ = [
    "NULL_EVERY",
    "Maker",
    "base_type",
    "kind_of",
    "maker_for",
    "nullable",
    "sequence_maker",
]

NULL_EVERY: Final = 10  # every 10th generated value of a nullable planned column is NULL

Maker = Callable[[int, random.Random], Any]


def base_type(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The type under a PostgreSQL domain (a domain's own CHECK is read elsewhere)."""
    while isinstance(column_type, postgresql.DOMAIN):
        column_type = column_type.data_type
    return column_type


def nullable(maker: Maker) -> Maker:
    """``maker``, with NULL every :data:`NULL_EVERY` rows."""

    def make(i: int, rng: random.Random) -> Any:
        return None if i % NULL_EVERY == NULL_EVERY - 1 else maker(i, rng)

    return make


def kind_of(column_type: sa.types.TypeEngine[Any], where: str) -> str:
    """The kind of value that fits a SQL type, or ConfigError naming ``where``."""
    column_type = base_type(column_type)
    for sql_type, kind in (
        (sa.Boolean, "boolean"),
        (sa.Enum, "enum"),
        (sa.Uuid, "uuid"),
        (sa.Integer, "integer"),
        (sa.Float, "float"),
        (sa.Numeric, "numeric"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.Time, "time"),
        (sa.Interval, "interval"),
        (postgresql.INET, "inet"),
        (postgresql.CIDR, "inet"),
        (sa.ARRAY, "array"),
        (sa.String, "string"),
        (sa.LargeBinary, "binary"),
        (sa.JSON, "json"),
    ):
        if isinstance(column_type, sql_type):
            return kind
    raise ConfigError(
        f"{where}: NOT NULL column of type {column_type} is not generated; "
        "copy real rows with --sample-from, or load rows with --load"
    )


def maker_for(kind: str, column_type: sa.types.TypeEngine[Any]) -> Maker:
    """Values of kind ``kind`` that fit ``column_type`` (as text in a text column)."""
    column_type = base_type(column_type)
    length = getattr(column_type, "length", None) if isinstance(column_type, sa.String) else None
    scale = getattr(column_type, "scale", None)
    precision = getattr(column_type, "precision", None)
    digits = min((precision or 12) - (scale or 0), 9)
    places = 2 if scale is None else scale
    aware = bool(getattr(column_type, "timezone", False))
    small = isinstance(column_type, sa.SmallInteger)
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC if aware else None)

    def string(i: int, rng: random.Random) -> str:
        return f"user{i}.{rng.randrange(10**6)}@example.com"

    def numeric(i: int, rng: random.Random) -> decimal.Decimal:
        units = rng.randrange(-(10**digits) + 1, 10**digits)
        return decimal.Decimal(units).scaleb(-places) if places else decimal.Decimal(units)

    values: dict[str, Maker] = {
        "string": string,
        "text": string,
        "integer": lambda i, rng: (
            rng.randrange(-30000, 30000) if small else rng.randrange(-(2**31), 2**31)
        ),
        "bigint": lambda i, rng: rng.randrange(-(2**62), 2**62),
        "float": lambda i, rng: rng.uniform(-1e6, 1e6),
        "numeric": numeric,
        "boolean": lambda i, rng: rng.random() < 0.5,
        "date": lambda i, rng: dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(30_000)),
        "datetime": lambda i, rng: epoch + dt.timedelta(seconds=rng.randrange(10**9)),
        "time": lambda i, rng: dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60)),
        "interval": lambda i, rng: dt.timedelta(minutes=rng.randrange(10**6)),
        "inet": lambda i, rng: f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "array": lambda i, rng: [],
        "binary": lambda i, rng: rng.randbytes(16),
        "json": lambda i, rng: {"n": i, "tags": [rng.choice(["a", "b", "c"]), i % 7]},
        "uuid": lambda i, rng: uuid.UUID(int=rng.getrandbits(128), version=4),
        "enum": lambda i, rng: rng.choice(list(getattr(column_type, "enums", []) or ["x"])),
    }
    maker = values[kind]
    if not isinstance(column_type, sa.String) or kind in ("string", "text", "enum", "inet"):
        if length is None:
            return maker
        return lambda i, rng: maker(i, rng)[:length]
    return lambda i, rng: as_text(maker(i, rng))[: length or None]


def sequence_maker(column_type: sa.types.TypeEngine[Any], start: Any) -> Maker | None:
    """Values that differ for every ``i`` (after ``start``, the largest present), or None.

    For unique and key columns: integers count up from ``start``; strings are
    ``i`` in base 36 (short enough for narrow columns); dates and timestamps
    step a day or a second; UUIDs are random. Other types have none.
    """
    column_type = base_type(column_type)
    if isinstance(column_type, sa.Integer):
        first = int(start or 0) + 1
        return lambda i, rng: first + i
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        first_number = decimal.Decimal(start or 0).to_integral_value(decimal.ROUND_FLOOR) + 1
        return lambda i, rng: first_number + i
    if isinstance(column_type, sa.Uuid):
        return lambda i, rng: uuid.UUID(int=rng.getrandbits(128), version=4)
    if isinstance(column_type, sa.DateTime):
        aware = bool(getattr(column_type, "timezone", False))
        epoch = start or dt.datetime(2000, 1, 1, tzinfo=dt.UTC if aware else None)
        return lambda i, rng: epoch + dt.timedelta(seconds=i + 1)
    if isinstance(column_type, sa.Date):
        day = start or dt.date(2000, 1, 1)
        return lambda i, rng: day + dt.timedelta(days=i + 1)
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum):
        return lambda i, rng: base36(i)
    return None


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def as_text(value: Any) -> str:
    """A value as a text column holds it (JSON compact, dates ISO)."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)
