"""Keyset pagination over a primary key, composite keys included (never OFFSET).

A cursor is the tuple of key values of the last row done. It is stored as a
JSON array in key-column order; :class:`KeyCodec` turns it back into values
of the key columns' Python types.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["Cursor", "KeyCodec", "after", "at_most"]

Cursor = tuple[Any, ...]


class KeyCodec:
    """Converts key tuples to JSON arrays and back, by the key columns' types."""

    def __init__(self, columns: Sequence[sa.Column[Any]]) -> None:
        self.columns = tuple(columns)
        self._types = tuple(_python_type(c) for c in columns)

    def to_json(self, key: Cursor | None) -> list[Any] | None:
        if key is None:
            return None
        return [_jsonable(v) for v in key]

    def from_json(self, document: Sequence[Any] | None) -> Cursor | None:
        if document is None:
            return None
        return tuple(_revive(v, t) for v, t in zip(document, self._types, strict=True))


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)  # UUID, Decimal


def _revive(value: Any, kind: type | None) -> Any:
    if value is None or kind is None or isinstance(value, kind):
        return value
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is decimal.Decimal:
        return decimal.Decimal(value)
    if kind in (dt.datetime, dt.date, dt.time):
        return kind.fromisoformat(value)
    if kind is bytes:
        return bytes.fromhex(value)
    return kind(value)


def _tuple(columns: Sequence[sa.Column[Any]]) -> Any:
    return columns[0] if len(columns) == 1 else sa.tuple_(*columns)


def _values(columns: Sequence[sa.Column[Any]], key: Cursor, name: str | None) -> Any:
    params = [
        sa.bindparam(None if name is None else f"{name}{i}", v, type_=c.type)
        for i, (c, v) in enumerate(zip(columns, key, strict=True))
    ]
    return params[0] if len(params) == 1 else sa.tuple_(*params)


def after(
    columns: Sequence[sa.Column[Any]], key: Cursor, *, name: str | None = None
) -> sa.ColumnElement[bool]:
    """Rows whose key sorts after ``key`` (row-value comparison for composite keys).

    ``name``: the key's parameters are named ``<name>0``, ``<name>1``, ... (for a
    statement compiled once and run again with other keys), else anonymous.
    """
    result: sa.ColumnElement[bool] = _tuple(columns) > _values(columns, key, name)
    return result


def at_most(
    columns: Sequence[sa.Column[Any]], key: Cursor, *, name: str | None = None
) -> sa.ColumnElement[bool]:
    """Rows whose key sorts at or before ``key`` (``name`` as for :func:`after`)."""
    result: sa.ColumnElement[bool] = _tuple(columns) <= _values(columns, key, name)
    return result
