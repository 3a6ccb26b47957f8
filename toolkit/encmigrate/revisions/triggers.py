"""SQL of the key-free shadow trigger and of the pre-drop check, per dialect.

Every identifier goes through :func:`encmigrate.revisions.sqltext.quote` (the
dialect's quoting where needed, mixed case kept, ``%`` kept single for
:func:`~encmigrate.revisions.sqltext.verbatim`); no value is ever interpolated:
the f-strings below build DDL from names only. The function body's dollar
quotes use a tag that no name in it contains.

The trigger keeps the shadow invariant (docs/application-writes.md): a row's
plaintext is NULL or equal to its decrypted ciphertext, or its ciphertext is
NULL. Without it, an application UPDATE landing between the backfill's write
and the drop would leave a ciphertext of the *old* value behind, and the drop
would lose the new one. It needs no key: it only ever sets values to NULL.

* PostgreSQL: ``BEFORE UPDATE OF <plaintext columns>`` running a PL/pgSQL
  function that edits ``NEW``. Listing only the plaintext columns is what keeps
  the migrator's shadow-only writes from firing it.
* SQLite: one ``AFTER UPDATE OF <plaintext>`` trigger per column that updates
  the row by ``rowid`` (SQLite triggers cannot edit ``NEW``).
* MariaDB/MySQL: one ``BEFORE UPDATE`` trigger per table (no ``UPDATE OF``:
  the body compares each column itself) that edits ``NEW`` in one ``SET``;
  :mod:`encmigrate.revisions.mysql_trigger` says why it looks as it does.

With ``view_writes`` (installed by ``create-views``) the trigger also fires on
the ciphertext column, and a write that changes the ciphertext but not the
plaintext sets the plaintext to NULL: the ciphertext is the truth from then on.

The migrator's own writes (backfill, catch-up, repair, rewrap, decrypt-back)
also change ciphertexts alone, and must never be taken for a write through
the view: a catch-up run after step 4 would set to NULL the plaintexts the
application had just written. They keep plaintext and ciphertext in agreement
themselves, so the trigger leaves them alone. They mark their transaction:
* PostgreSQL: ``SET LOCAL encmigrate.writer = 'migrator'`` (a transaction-local
  setting the trigger function reads with ``current_setting``);
* MariaDB/MySQL: the user variable ``@`encmigrate.writer` = 'migrator'``,
  set around the batch's UPDATE and reset after it (user variables belong to
  one session);
* SQLite (no session settings): a row in ``encryption_migration_writer``,
  inserted before the batch's UPDATE and deleted after it in the same
  transaction. SQLite has one writer at a time and nobody else sees an
  uncommitted row, so the mark is seen by the migrator's statement alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy.engine import Dialect

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.identifiers import POSTGRESQL_MAX_BYTES, truncate_utf8, utf8_length
from encmigrate.revisions import mysql_trigger
from encmigrate.revisions.sqltext import dollar_quoted, qualified, quote, string_literal
from encmigrate.tracking import MIGRATOR_SETTING, SQLITE_WRITER_TABLE

__all__ = [
    "ShadowColumn",
    "check_statement",
    "drop_trigger_statements",
    "install_trigger_statements",
    "missing_rows_query",
    "qualified",
]

PG_TRIGGER = "encmigrate_shadow"


class ShadowColumn(NamedTuple):
    """A planned column and its shadows: (plaintext, ciphertext, search token or None)."""

    plaintext: str
    ciphertext: str
    search: str | None = None


def pg_function_name(table: str) -> str:
    """The trigger function's name, kept within PostgreSQL's 63-byte limit."""
    name = f"encmigrate_shadow_{table}"
    if utf8_length(name) <= POSTGRESQL_MAX_BYTES:
        return name
    digest = hashlib.sha256(table.encode("utf-8")).hexdigest()[:12]
    return f"encmigrate_shadow_{truncate_utf8(table, POSTGRESQL_MAX_BYTES - 32)}_{digest}"


def sqlite_trigger_name(table: str, column: str) -> str:
    return f"encmigrate_shadow_{table}_{column}"


def install_trigger_statements(
    dialect: Dialect,
    table: str,
    columns: Sequence[ShadowColumn],
    *,
    schema: str | None = None,
    view_writes: bool = False,
) -> list[str]:
    """Statements that (re)install the trigger of ``table`` for ``columns``."""
    if dialect.name in MYSQL_DIALECTS:
        return mysql_trigger.install_statements(
            dialect, table, columns, schema=schema, view_writes=view_writes
        )
    drops = drop_trigger_statements(dialect, table, columns, schema=schema, function=False)
    if dialect.name == "postgresql":
        return [*drops, *_pg_install(dialect, table, columns, schema, view_writes)]
    if dialect.name == "sqlite":
        triggers = [_sqlite_trigger(dialect, table, c, view_writes) for c in columns]
        if view_writes:
            # Kept when the trigger goes: other tables' triggers may read it. Always empty
            # outside the migrator's own transactions.
            writer = quote(dialect, SQLITE_WRITER_TABLE)
            triggers.insert(0, f"CREATE TABLE IF NOT EXISTS {writer} (pid INTEGER)")
        return [*drops, *triggers]
    raise NotImplementedError(
        f"encmigrate triggers support postgresql, sqlite and mariadb, not {dialect.name}"
    )


def drop_trigger_statements(
    dialect: Dialect,
    table: str,
    columns: Sequence[ShadowColumn],
    *,
    schema: str | None = None,
    function: bool = True,
) -> list[str]:
    """Statements that remove the trigger (and, on PostgreSQL, its function)."""
    if dialect.name == "postgresql":
        target = qualified(dialect, table, schema)
        statements = [f"DROP TRIGGER IF EXISTS {quote(dialect, PG_TRIGGER)} ON {target}"]
        if function:
            fn = qualified(dialect, pg_function_name(table), schema)
            statements.append(f"DROP FUNCTION IF EXISTS {fn}()")
        return statements
    if dialect.name == "sqlite":
        return [
            f"DROP TRIGGER IF EXISTS {_sqlite_name(dialect, table, c.plaintext, schema)}"
            for c in columns
        ]
    if dialect.name in MYSQL_DIALECTS:
        return mysql_trigger.drop_statements(dialect, table, schema=schema)
    raise NotImplementedError(
        f"encmigrate triggers support postgresql, sqlite and mariadb, not {dialect.name}"
    )


def _sqlite_name(dialect: Dialect, table: str, column: str, schema: str | None) -> str:
    return qualified(dialect, sqlite_trigger_name(table, column), schema)


def _pg_install(
    dialect: Dialect,
    table: str,
    columns: Sequence[ShadowColumn],
    schema: str | None,
    view_writes: bool,
) -> list[str]:
    def q(name: str) -> str:
        return quote(dialect, name)

    body: list[str] = []
    for column in columns:
        plain, cipher = q(column.plaintext), q(column.ciphertext)
        clear = [f"            NEW.{cipher} := NULL;"]
        if column.search:
            clear.append(f"            NEW.{q(column.search)} := NULL;")
        body += [
            # Compared as text: json has no equality operator, and a spelling change
            # (1.0 -> 1.00) is a new plaintext for an exact codec anyway.
            f"    IF NEW.{plain}::text IS DISTINCT FROM OLD.{plain}::text THEN",
            f"        IF NEW.{cipher} IS NOT DISTINCT FROM OLD.{cipher} THEN",
            *clear,
            "        END IF;",
        ]
        if view_writes:
            body += [
                f"    ELSIF NEW.{cipher} IS DISTINCT FROM OLD.{cipher} THEN",
                f"        NEW.{plain} := NULL;",
            ]
        body.append("    END IF;")
    function = qualified(dialect, pg_function_name(table), schema)
    code = "\n".join(
        [
            "BEGIN",
            "    -- The migrator's own writes keep plaintext and ciphertext in agreement.",
            f"    IF current_setting('{MIGRATOR_SETTING}', true) = 'migrator' THEN",
            "        RETURN NEW;",
            "    END IF;",
            "    -- A new plaintext without a new ciphertext makes the ciphertext stale: clear it.",
            *body,
            "    RETURN NEW;",
            "END",
        ]
    )
    create_function = (
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n"
        f"LANGUAGE plpgsql AS {dollar_quoted(code)}"
    )
    watched = [c.plaintext for c in columns]
    if view_writes:
        watched += [c.ciphertext for c in columns]
    create_trigger = (
        f"CREATE TRIGGER {q(PG_TRIGGER)} BEFORE UPDATE OF {', '.join(q(c) for c in watched)} "
        f"ON {qualified(dialect, table, schema)} FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    return [create_function, create_trigger]


def _sqlite_trigger(dialect: Dialect, table: str, column: ShadowColumn, view_writes: bool) -> str:
    def q(name: str) -> str:
        return quote(dialect, name)

    plain, cipher = q(column.plaintext), q(column.ciphertext)
    plain_changed = f"NEW.{plain} IS NOT OLD.{plain}"
    cipher_kept = f"NEW.{cipher} IS OLD.{cipher}"
    name = q(sqlite_trigger_name(table, column.plaintext))
    target = q(table)
    shadows = [cipher] + ([q(column.search)] if column.search else [])
    if not view_writes:
        sets = ", ".join(f"{c} = NULL" for c in shadows)
        update = f"UPDATE {target} SET {sets} WHERE rowid = NEW.rowid"
        return (
            f"CREATE TRIGGER {name} AFTER UPDATE OF {plain} ON {target} FOR EACH ROW\n"
            f"WHEN {plain_changed} AND {cipher_kept}\n"
            f"BEGIN\n    {update};\nEND"
        )
    # One trigger per column doing both directions in one UPDATE: a second trigger
    # would be fired by this one's write and undo it.
    stale = f"({plain_changed} AND {cipher_kept})"
    by_migrator = f"EXISTS (SELECT 1 FROM {q(SQLITE_WRITER_TABLE)})"
    superseded = (
        f"(NEW.{cipher} IS NOT OLD.{cipher} AND NEW.{plain} IS OLD.{plain} AND NOT {by_migrator})"
    )
    sets = ", ".join(f"{c} = CASE WHEN {stale} THEN NULL ELSE {c} END" for c in shadows)
    sets += f", {plain} = CASE WHEN {superseded} THEN NULL ELSE {plain} END"
    update = f"UPDATE {target} SET {sets} WHERE rowid = NEW.rowid"
    return (
        f"CREATE TRIGGER {name} AFTER UPDATE OF {plain}, {cipher} ON {target} FOR EACH ROW\n"
        f"WHEN {stale} OR {superseded}\n"
        f"BEGIN\n    {update};\nEND"
    )


def missing_rows_query(
    dialect: Dialect, table: str, columns: Sequence[tuple[str, str]], schema: str | None
) -> str:
    """SELECT of rows whose plaintext is set but whose ciphertext is NULL (not encrypted)."""
    where = " OR ".join(
        f"({quote(dialect, p)} IS NOT NULL AND {quote(dialect, c)} IS NULL)" for p, c in columns
    )
    return f"SELECT 1 FROM {qualified(dialect, table, schema)} WHERE {where}"


def check_statement(
    dialect: Dialect, table: str, columns: Sequence[tuple[str, str]], schema: str | None
) -> str:
    """PostgreSQL: a DO block that aborts the revision when a row is not encrypted."""
    shown = f"{schema}.{table}" if schema else table
    message = string_literal(
        dialect,
        f"encmigrate: {shown} has rows with plaintext and no ciphertext; "
        "run encmigrate migrate-data and encmigrate verify, then upgrade again",
    )
    code = "\n".join(
        [
            "BEGIN",
            f"    IF EXISTS ({missing_rows_query(dialect, table, columns, schema)}) THEN",
            f"        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = {message};",
            "    END IF;",
            "END",
        ]
    )
    return f"DO {dollar_quoted(code)}"
