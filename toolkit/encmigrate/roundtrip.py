"""What a rollback writes back, and where it cannot give back the stored bytes.

After step 5, the ciphertext holds a column's *value*, not its spelling: a
SQLite ``DATETIME`` stored as the text ``'1962-02-18 00:00:00'`` and one
stored as ``'1962-02-18 00:00:00.000000'`` encrypt to the same datetime.
``decrypt-back`` writes one spelling, :func:`written_form`; the drop revision
counts, before anything is dropped, the stored values whose spelling differs
from it (:func:`respelled_values`), so the operator learns what a rollback
would not restore byte for byte while the plaintext is still there.

The spelling decrypt-back uses:
* SQLite date/time columns (stored as text): ISO 8601 with a space between
  date and time, and no fraction when the microseconds are 0
  (``'1962-02-18 00:00:00'``, what SQLite's own ``datetime()`` writes);
* text columns holding dates, times, numbers or booleans: the ISO form, the
  exact decimal text, ``true``/``false``;
* columns planned as json: the value itself where the column's SQL type is
  JSON (the driver encodes it: PostgreSQL json/jsonb, SQLite JSON, MySQL's
  JSON), compact JSON text everywhere else (text columns, MariaDB's JSON,
  which is a LONGTEXT with a ``json_valid`` check). migrate-data parses the
  column's text as JSON, so every value, a JSON string too, goes back encoded:
  the document ``"hello"`` decrypts to the string ``hello`` and is written
  ``"hello"``, not ``hello``;
* everything else goes back as the value, in the column's own SQL type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.codecs import JSON_NULL

__all__ = ["respelled_values", "sqlite_temporal", "written_form"]

_TEMPORAL = (sa.DateTime, sa.Date, sa.Time)


def sqlite_temporal(column_type: sa.types.TypeEngine[Any], dialect: str) -> bool:
    """A SQLite date/time column: text in the file, spelled by whoever wrote it."""
    return dialect == "sqlite" and isinstance(column_type, _TEMPORAL)


def written_form(
    value: Any, column_type: sa.types.TypeEngine[Any], dialect: str, plan_type: str
) -> Any:
    """A decrypted value as decrypt-back writes it into a column of ``column_type``.

    ``plan_type``: the column's type in the plan, which the value has (the
    column's SQL type alone cannot tell a JSON string from a text value).
    """
    if value is None:
        return None
    if plan_type == "json":
        return _json_form(value, column_type)
    if sqlite_temporal(column_type, dialect) and isinstance(value, dt.date | dt.time):
        return _sqlite_spelling(value)
    if isinstance(column_type, sa.String) and not isinstance(value, str):
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | decimal.Decimal):
            return str(value)
    return value


def _json_form(value: Any, column_type: sa.types.TypeEngine[Any]) -> Any:
    if isinstance(column_type, sa.JSON):
        return sa.JSON.NULL if value is JSON_NULL else value
    if value is JSON_NULL:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _sqlite_spelling(value: dt.date | dt.time) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat()


def _parse_json(text: str) -> Any:
    value = json.loads(text)
    return JSON_NULL if value is None else value


# Parsers of the stored text, per plan type, for the spelling check (text-stored values only).
_PARSE: dict[str, Callable[[str], Any]] = {
    "date": dt.date.fromisoformat,
    "datetime": dt.datetime.fromisoformat,
    "time": dt.time.fromisoformat,
    "numeric": decimal.Decimal,
    "float": float,
    "integer": int,
    "bigint": int,
    "json": _parse_json,
}


def respelled_values(
    connection: sa.Connection,
    table: sa.TableClause,
    column: str,
    column_type: sa.types.TypeEngine[Any],
    plan_type: str,
) -> int:
    """How many stored values decrypt-back would write back spelled differently.

    Only values stored as text can be spelled several ways: SQLite date/time
    columns, and text columns planned as a date, time, number or json (MariaDB's
    JSON too: ``{"a": 1}`` comes back ``{"a":1}``). Others: 0.
    Reads the column's text in one pass (no value leaves this function).
    """
    dialect = connection.dialect.name
    parse = _PARSE.get(plan_type)
    textual = isinstance(column_type, sa.String) or sqlite_temporal(column_type, dialect)
    if parse is None or not textual:
        return 0
    stored = sa.cast(sa.column(column), sa.Text)
    query = sa.select(stored).select_from(table).where(sa.column(column).is_not(None))
    differ = 0
    for (text,) in connection.execute(query):
        try:
            value = parse(text)
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            continue  # a value that does not parse never got a ciphertext: the drop refuses
        if written_form(value, column_type, dialect, plan_type) != text:
            differ += 1
    return differ
