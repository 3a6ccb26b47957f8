"""The shadow trigger on MariaDB (and MySQL): one ``BEFORE UPDATE`` row trigger per table.

It keeps the same invariant as the PostgreSQL trigger (see
:mod:`encmigrate.revisions.triggers`): a row's plaintext is NULL, or equal to
its decrypted ciphertext, or its ciphertext is NULL. What differs, and why:

* **No ``UPDATE OF <columns>``.** A MySQL trigger fires on every UPDATE of
  the table, so the body itself decides per column whether anything changed.
  It costs every UPDATE of the table a few comparisons (measured in
  tests/integration/test_mariadb_steps.py; see docs/mariadb.md).
* **``BEFORE UPDATE`` editing ``NEW``.** A MySQL trigger cannot update its own
  table (error 1442), but a ``BEFORE`` trigger may assign ``NEW.<col>``: the
  same row-local edit the PL/pgSQL function makes, in the same statement.
* **Values compared as bytes.** ``NEW.p <=> OLD.p`` on a text column compares
  under its collation: with the usual case-insensitive, PAD SPACE collations
  ``'Ann' = 'ann'`` and ``'a' = 'a '``, so a change of case or of trailing
  spaces would keep a ciphertext of the old spelling. Both sides are
  compared ``CAST(... AS BINARY)`` (the PostgreSQL trigger compares as text
  for the same reason: a new spelling is a new plaintext). ``<=>`` is
  NULL-safe equality (PostgreSQL's ``IS NOT DISTINCT FROM``).
* **One statement, no ``BEGIN ... END``.** The body is a single ``SET`` of
  ``NEW.<col> = IF(condition, NULL, NEW.<col>)`` assignments, so the
  ``--sql`` output runs in the ``mysql`` client without ``DELIMITER``.
  Assignments run left to right and later ones see earlier ones, so every
  condition reads only columns not yet assigned: per planned column the
  search token and the ciphertext first (cleared when the plaintext changed
  and the ciphertext did not), then, with ``view_writes``, the plaintext
  (cleared when the ciphertext changed and the plaintext did not: a write
  through the ``<table>_secure`` view). The two conditions exclude each
  other, so their order does not change the outcome.
* **The migrator's mark is a user variable.** The migrator runs
  ``SET @`encmigrate.writer` = 'migrator'`` around its batch's UPDATE and
  resets it to NULL after (``migrate/batch.py``); user variables belong to
  one session, so no other connection is affected. Every condition starts
  with ``NOT (@`encmigrate.writer` <=> 'migrator')``.
* **Installed atomically.** MariaDB has ``CREATE OR REPLACE TRIGGER``: the
  table is never without its trigger while a revision reinstalls it (MySQL
  has no OR REPLACE: there it is dropped and created, with a short window).
* **Whether it has ``view_writes``** is read back from
  ``information_schema.TRIGGERS``: the body of a ``view_writes`` trigger
  starts with a fixed comment, before any name, so a name cannot fake it
  (the ``mysql`` client strips comments unless run with ``--comments``:
  docs/mariadb.md).
* **Its name** is ``encmigrate_shadow_<table>``, shortened with a hash past
  MySQL's 64-character identifier limit as the PostgreSQL function's name is.

**The fence of step 5.** MariaDB DDL is not transactional, so the drop's check
cannot share a transaction with ``DROP COLUMN``: a plaintext written between
the two would be dropped (the shadow trigger clears its stale ciphertext).
Before the check, step 5 adds two more triggers (:func:`fence_statements`):
``BEFORE UPDATE`` refusing an UPDATE that sets a planned plaintext to a
non-NULL value other than the stored one, and ``BEFORE INSERT`` refusing a row
with a planned plaintext and no ciphertext (what the drop would lose; a row
inserted through the view with both, its plaintext filled by a column default,
loses nothing). Both ``SIGNAL SQLSTATE '45000'`` with a message naming the
column and the view to write instead. Creating a trigger takes the table's
exclusive metadata lock, so it waits for every transaction that touched the
table to end: from then on the check sees every plaintext that will ever be
written. They are separate triggers (MariaDB runs several per event, in
creation order), not a new body of the shadow trigger: the shadow trigger
keeps its body, which says whether it has ``view_writes``, and lifting the
fence is one ``DROP TRIGGER IF EXISTS`` per trigger. A ``SIGNAL`` needs
``IF ... END IF`` in ``BEGIN ... END``: the ``--sql`` output wraps these
statements in ``DELIMITER //`` lines for the ``mysql`` client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.engine import Dialect

from encmigrate.revisions.sqltext import qualified, quote, string_literal
from encmigrate.tracking import MIGRATOR_VARIABLE

if TYPE_CHECKING:
    from encmigrate.revisions.triggers import ShadowColumn

__all__ = [
    "MYSQL_MAX_CHARS",
    "VIEW_WRITES_MARK",
    "drop_statements",
    "fence_names",
    "fence_statements",
    "install_statements",
    "lift_fence_statements",
    "trigger_name",
]

MYSQL_MAX_CHARS = 64
# The first words of a view_writes trigger's body (information_schema.TRIGGERS.ACTION_STATEMENT).
VIEW_WRITES_MARK = "SET /* encmigrate: view_writes */ "


def trigger_name(table: str) -> str:
    """``encmigrate_shadow_<table>``, kept within MySQL's 64 characters with a hash suffix."""
    return _within_limit(f"encmigrate_shadow_{table}", table)


def fence_names(table: str) -> tuple[str, str]:
    """The step-5 fence triggers: ``encmigrate_fence_u_<table>`` and ``..._i_<table>``."""
    return (
        _within_limit(f"encmigrate_fence_u_{table}", table),
        _within_limit(f"encmigrate_fence_i_{table}", table),
    )


def _within_limit(name: str, table: str) -> str:
    if len(name) <= MYSQL_MAX_CHARS:
        return name
    digest = hashlib.sha256(table.encode("utf-8")).hexdigest()[:12]
    return f"{name[: MYSQL_MAX_CHARS - 13]}_{digest}"


def install_statements(
    dialect: Dialect,
    table: str,
    columns: Sequence[ShadowColumn],
    *,
    schema: str | None = None,
    view_writes: bool = False,
) -> list[str]:
    """``CREATE OR REPLACE TRIGGER`` on MariaDB; drop and create on MySQL."""
    name = qualified(dialect, trigger_name(table), schema)
    body = _body(dialect, columns, view_writes)
    target = qualified(dialect, table, schema)
    if getattr(dialect, "is_mariadb", False):
        return [f"CREATE OR REPLACE TRIGGER {name} BEFORE UPDATE ON {target} FOR EACH ROW\n{body}"]
    return [
        *drop_statements(dialect, table, schema=schema),
        f"CREATE TRIGGER {name} BEFORE UPDATE ON {target} FOR EACH ROW\n{body}",
    ]


def drop_statements(dialect: Dialect, table: str, *, schema: str | None = None) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {qualified(dialect, trigger_name(table), schema)}"]


def fence_statements(
    dialect: Dialect,
    table: str,
    columns: Sequence[tuple[str, str]],
    *,
    schema: str | None = None,
    shown: str,
    view: str,
) -> list[str]:
    """The two fence triggers of step 5 over ``columns`` (plaintext, ciphertext).

    ``shown`` and ``view`` are the table and view names the refusal names. Each
    statement is one compound statement (``BEGIN ... END``): sent whole through
    the driver, and between ``DELIMITER`` lines in the ``mysql`` client.
    """
    update_name, insert_name = (qualified(dialect, n, schema) for n in fence_names(table))
    target = qualified(dialect, table, schema)

    def q(name: str) -> str:
        return quote(dialect, name)

    def refuse(condition: str, plaintext: str) -> str:
        message = string_literal(
            dialect,
            f"encmigrate: {shown}.{plaintext} is being dropped (step 5): "
            f"write the encrypted column (the {view} view)",
        )
        return (
            f"    IF {condition} THEN\n"
            f"        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {message};\n"
            "    END IF;"
        )

    updates = [
        refuse(
            f"NEW.{q(p)} IS NOT NULL AND NOT (CAST(NEW.{q(p)} AS BINARY) <=> "
            f"CAST(OLD.{q(p)} AS BINARY))",
            p,
        )
        for p, _ in columns
    ]
    inserts = [refuse(f"NEW.{q(p)} IS NOT NULL AND NEW.{q(c)} IS NULL", p) for p, c in columns]
    mariadb = getattr(dialect, "is_mariadb", False)
    create = "CREATE OR REPLACE TRIGGER" if mariadb else "CREATE TRIGGER"
    statements = [] if mariadb else lift_fence_statements(dialect, table, schema=schema)
    for name, event, checks in ((update_name, "UPDATE", updates), (insert_name, "INSERT", inserts)):
        body = "BEGIN\n" + "\n".join(checks) + "\nEND"
        statements.append(f"{create} {name} BEFORE {event} ON {target} FOR EACH ROW\n{body}")
    return statements


def lift_fence_statements(dialect: Dialect, table: str, *, schema: str | None = None) -> list[str]:
    """``DROP TRIGGER IF EXISTS`` of both fence triggers: the application writes again."""
    return [f"DROP TRIGGER IF EXISTS {qualified(dialect, n, schema)}" for n in fence_names(table)]


def _body(dialect: Dialect, columns: Sequence[ShadowColumn], view_writes: bool) -> str:
    def q(name: str) -> str:
        return quote(dialect, name)

    not_migrator = f"NOT ({MIGRATOR_VARIABLE} <=> 'migrator')"
    assignments: list[str] = []
    for column in columns:
        plain, cipher = q(column.plaintext), q(column.ciphertext)
        plain_same = f"CAST(NEW.{plain} AS BINARY) <=> CAST(OLD.{plain} AS BINARY)"
        cipher_same = f"NEW.{cipher} <=> OLD.{cipher}"
        stale = f"{not_migrator} AND NOT ({plain_same}) AND {cipher_same}"
        shadows = ([q(column.search)] if column.search else []) + [cipher]
        assignments += [f"NEW.{s} = IF({stale}, NULL, NEW.{s})" for s in shadows]
        if view_writes:
            superseded = f"{not_migrator} AND {plain_same} AND NOT ({cipher_same})"
            assignments.append(f"NEW.{plain} = IF({superseded}, NULL, NEW.{plain})")
    lead = VIEW_WRITES_MARK if view_writes else "SET "
    return lead + ",\n    ".join(assignments)
