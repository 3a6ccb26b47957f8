"""Looking at encrypted data without decrypting it: envelope headers and blind-index lookups.

:func:`inspect_envelope` reads what any holder of a ciphertext can read (the
format byte, the key version, the sizes) and says what the keyring makes of
that version: the troubleshooting step "check the key version in the
metadata" for a value that raises ``DecryptionError``. :func:`find_keys`
finds rows by a searchable column's value through its search tokens and
returns their primary keys only. Neither derives a data key or decrypts a
value; ``find`` derives the column's search keys.
"""

from __future__ import annotations

import base64
import binascii
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.envelope import (
    HEADER_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    envelope_from_text,
    envelope_to_text,
    parse_header,
)
from encmigrate.crypto.search import SearchableCipher
from encmigrate.errors import ConfigError, DatabaseError, NotAnEnvelopeError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate.columns import ColumnWork
from encmigrate.migrate.keyset import KeyCodec
from encmigrate.plan import ColumnPlan, Plan, TablePlan

__all__ = [
    "EnvelopeReport",
    "FoundKeys",
    "NotAnEnvelopeError",
    "decode_envelope_text",
    "find_keys",
    "inspect_envelope",
    "key_text",
    "planned_column",
    "read_envelope",
]

_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class EnvelopeReport:
    """What an envelope's header says, and what the keyring makes of its key version.

    ``key_state`` is the version's state in the keyring (``active``,
    ``retired``, ``disabled``, ``destroyed``), ``missing`` when the keyring
    does not have it, or None when no keyring was given.
    """

    format: int
    key_version: int
    size: int
    ciphertext_size: int
    key_state: str | None
    readable: bool | None
    current_version: int | None
    encoding: str = "binary"
    header_size: int = HEADER_SIZE
    nonce_size: int = NONCE_SIZE
    tag_size: int = TAG_SIZE

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "key_version": self.key_version,
            "size": self.size,
            "header": self.header_size,
            "nonce": self.nonce_size,
            "ciphertext": self.ciphertext_size,
            "tag": self.tag_size,
            "encoding": self.encoding,
            "key_state": self.key_state,
            "readable": self.readable,
            "current_version": self.current_version,
        }


def decode_envelope_text(text: str) -> tuple[bytes, str]:
    """The envelope bytes of hex or base64 ``text``, and which encoding it was.

    Hex may carry PostgreSQL's ``\\x`` prefix (what psql shows for bytea) or
    ``0x``; base64 may be standard or urlsafe, padded or not. A hex string is
    also valid base64, but at most one of the two readings starts with the
    format byte (hex ``01…`` is base64 ``0x d3…``), so the one that parses as
    an envelope wins.
    """
    cleaned = "".join(text.split())
    candidates: list[tuple[bytes, str]] = []
    digits = cleaned[2:] if cleaned[:2] in ("\\x", "0x", "0X") else cleaned
    if digits and len(digits) % 2 == 0 and set(digits) <= _HEX:
        candidates.append((bytes.fromhex(digits), "hex"))
    padded = cleaned + "=" * (-len(cleaned) % 4)
    standard = envelope_from_text(padded)
    if standard is not None:
        candidates.append((standard, "base64"))
    else:
        try:
            urlsafe = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
            candidates.append((urlsafe, "base64"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            pass
    for blob, encoding in candidates:
        if parse_header(blob) is not None:
            return blob, encoding
    if not candidates:
        raise NotAnEnvelopeError(
            "the value is neither hex nor base64; pass a ciphertext as shown by the database "
            "(bytea as hex, text columns as base64) or use --table/--column/--key"
        )
    longest = max(len(blob) for blob, _ in candidates)
    raise NotAnEnvelopeError(
        f"the value decodes to {longest} bytes that are not an envelope (it needs the "
        "format byte 0x01 or 0x02, a key version other than 0, and at least 33 bytes): "
        "it is not an encmigrate ciphertext, or it was truncated"
    )


def inspect_envelope(
    blob: bytes | bytearray | memoryview,
    keyring: Keyring | None = None,
    *,
    encoding: str = "binary",
) -> EnvelopeReport:
    """Read ``blob``'s header and look its key version up in ``keyring``; never decrypts."""
    header = parse_header(blob)
    if header is None:
        raise NotAnEnvelopeError(
            f"{len(blob)} bytes that are not an envelope (it needs the format byte 0x01 or 0x02, "
            "a key version other than 0, and at least 33 bytes)"
        )
    state: str | None = None
    readable: bool | None = None
    current: int | None = None
    if keyring is not None:
        entry = keyring.find(header.version)
        state = "missing" if entry is None else entry.state.value
        readable = entry is not None and entry.readable
        current = keyring.current
    return EnvelopeReport(
        format=header.format,
        key_version=header.version,
        size=header.size,
        ciphertext_size=header.plaintext_size,
        key_state=state,
        readable=readable,
        current_version=current,
        encoding=encoding,
    )


# -- rows -----------------------------------------------------------------------------------------


def planned_column(plan: Plan, target: str) -> tuple[TablePlan, ColumnPlan]:
    """The plan of ``TABLE.COLUMN`` (``schema.table.column`` too), or ConfigError (exit 2)."""
    table_name, dot, column_name = target.rpartition(".")
    if not dot or not table_name or not column_name:
        raise ConfigError(f"{target!r}: expected TABLE.COLUMN, e.g. customers.email")
    table = plan.table(table_name)
    for column in table.columns:
        if column.column == column_name:
            return table, column
    known = ", ".join(c.column for c in table.columns)
    raise ConfigError(
        f"column {column_name!r} of {table_name!r} is not in the plan (planned columns: {known})"
    )


def _reflect(engine: sa.Engine, table: TablePlan) -> sa.Table:
    try:
        return sa.Table(
            table.table_name, sa.MetaData(), schema=table.schema_name, autoload_with=engine
        )
    except sa.exc.NoSuchTableError:
        raise ConfigError(f"table {table.table!r} does not exist in the database") from None
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach the database: {_driver_message(exc)}") from None


def _driver_message(exc: sa.exc.DBAPIError) -> str:
    # The driver's own first line: SQLAlchemy's text would add the SQL and its parameters.
    original = exc.orig if exc.orig is not None else exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def _shadow(live: sa.Table, name: str | None, table: TablePlan) -> sa.Column[Any]:
    if name is None or name not in live.c:
        raise ConfigError(
            f"{table.table}.{name} does not exist: run `encmigrate add-columns --apply` first"
        )
    return live.c[name]


def _key_values(primary_key: Sequence[sa.Column[Any]], given: Sequence[str]) -> dict[str, Any]:
    """``--key`` arguments as typed values of the primary-key columns.

    One column: ``--key 42`` (or ``--key id=42``). Composite keys: one
    ``--key name=value`` per column.
    """
    names = [c.name for c in primary_key]
    if len(names) == 1 and len(given) == 1 and not given[0].startswith(f"{names[0]}="):
        texts = {names[0]: given[0]}
    else:
        texts = {}
        for item in given:
            name, eq, value = item.partition("=")
            if not eq or name not in names or name in texts:
                raise ConfigError(
                    f"--key: give one --key NAME=VALUE per primary-key column ({', '.join(names)})"
                )
            texts[name] = value
        if set(texts) != set(names):
            missing = ", ".join(n for n in names if n not in texts)
            raise ConfigError(f"--key: missing primary-key column(s) {missing}")
    try:
        values = KeyCodec(primary_key).from_json([texts[n] for n in names])
    except (ValueError, TypeError, ArithmeticError):
        raise ConfigError(
            f"--key: a value does not fit the type of the primary key ({', '.join(names)})"
        ) from None
    assert values is not None
    return dict(zip(names, values, strict=True))


def read_envelope(
    engine: sa.Engine, table: TablePlan, column: ColumnPlan, key: Sequence[str]
) -> tuple[bytes, dict[str, Any]]:
    """The ciphertext of ``column`` in the row with primary key ``key``, and the typed key.

    No such row: ConfigError (exit 2). A NULL ciphertext: NotAnEnvelopeError
    (exit 1), with what to do.
    """
    live = _reflect(engine, table)
    primary_key = list(live.primary_key.columns)
    if not primary_key:
        raise ConfigError(f"table {table.table!r} has no primary key")
    values = _key_values(primary_key, key)
    encrypted = _shadow(live, column.encrypted_column, table)
    query = sa.select(encrypted).where(*(live.c[name] == v for name, v in values.items()))
    where = ", ".join(f"{name}={value}" for name, value in values.items())
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot read {table.table}: {_driver_message(exc)}") from None
    except sa.exc.DBAPIError as exc:
        raise ConfigError(f"cannot read {table.table} at {where}: {_driver_message(exc)}") from None
    if not rows:
        raise ConfigError(f"no row of {table.table} has {where}")
    stored = rows[0][0]
    if stored is None:
        raise NotAnEnvelopeError(
            f"{table.table}.{encrypted.name} is NULL at {where}: the value is not encrypted yet "
            "(run `encmigrate migrate-data`) or it is NULL"
        )
    if isinstance(stored, str):
        blob = envelope_from_text(stored)
        if blob is None:
            raise NotAnEnvelopeError(
                f"{table.table}.{encrypted.name} at {where} is not base64 (storage = 'text')"
            )
        return blob, values
    return bytes(stored), values


@dataclass(frozen=True, slots=True)
class FoundKeys:
    """Primary keys of the rows a lookup matched, in key order."""

    table: str
    column: str
    key_columns: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...]
    truncated: bool

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.key_columns, key, strict=True)) for key in self.keys]


def find_keys(
    engine: sa.Engine,
    table: TablePlan,
    column: ColumnPlan,
    value: Any,
    keyring: Keyring,
    *,
    limit: int = 100,
) -> FoundKeys:
    """Primary keys of rows whose search token matches ``value`` under any readable version.

    ``value`` is parsed as the column's type as the migrator parses text
    columns (``"42"`` for an integer column). The column must be searchable.
    Rows written under a disabled or destroyed version are not found.
    """
    if not column.searchable:
        raise ConfigError(
            f"{table.table}.{column.column} is not searchable (it has no blind index); "
            "set searchable = true in the plan and run add-columns and migrate-data"
        )
    live = _reflect(engine, table)
    search = _shadow(live, column.search_column, table)
    primary_key = list(live.primary_key.columns)
    if not primary_key:
        raise ConfigError(f"table {table.table!r} has no primary key")
    work = ColumnWork(column, keyring)
    assert isinstance(work.cipher, SearchableCipher)
    try:
        typed = work.coerce(value)
    except (ValueError, TypeError, ArithmeticError):
        raise ConfigError(
            f"the value does not parse as {column.type} ({table.table}.{column.column})"
        ) from None
    tokens: list[Any] = list(work.cipher.lookup_tokens(typed))
    if column.storage == "text":
        tokens = [envelope_to_text(t) for t in tokens]
    if not tokens:
        return FoundKeys(table.table, column.column, tuple(c.name for c in primary_key), (), False)
    query = (
        sa.select(*primary_key).where(search.in_(tokens)).order_by(*primary_key).limit(limit + 1)
    )
    try:
        with engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot search {table.table}: {_driver_message(exc)}") from None
    codec = KeyCodec(primary_key)
    keys = tuple(tuple(codec.to_json(row) or ()) for row in rows[:limit])
    return FoundKeys(
        table.table, column.column, tuple(c.name for c in primary_key), keys, len(rows) > limit
    )


def key_text(key: Mapping[str, Any]) -> str:
    """A primary key as ``inspect --key`` takes it: ``42``, or ``a=1 b=2``."""
    if len(key) == 1:
        return str(next(iter(key.values())))
    return " ".join(f"{name}={value}" for name, value in key.items())
