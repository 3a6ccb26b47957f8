"""What depends on a planned plaintext column, read from the catalogs before anything is written.

Step 5 drops the plaintext columns. Everything else that uses one of them
either makes that ``DROP COLUMN`` fail halfway through a deployment (views,
rules, triggers, policies, generated columns, foreign keys from other tables,
publication column lists) or disappears with the column without a word (unique
and check constraints, indexes, statistics): a uniqueness lost that way is
found months later as duplicate accounts. :func:`find_dependents` lists them
all, each with what step 5 does to it and what the operator must do, so that
``plan check`` shows them and ``drop-unencrypted`` refuses before it writes a
revision.

* PostgreSQL: ``pg_depend`` (views and materialized views through
  ``pg_rewrite``, rules, indexes, generated columns, triggers, policies,
  publication column lists, statistics objects, SQL-standard function bodies),
  ``pg_constraint`` (both directions of a foreign key), ``pg_partitioned_table``
  and ``pg_publication_tables``, for the planned table and every partition and
  inheritance child (an index attached to a parent index, a cloned trigger or
  constraint is reported once, on the parent). Functions whose body mentions
  the column are found by a text search of ``pg_proc.prosrc``: best effort,
  and labelled so.
* SQLite: ``sqlite_master`` and the ``pragma_*`` table functions. SQLite keeps
  no dependency catalog, so views and triggers are found by the names in their
  SQL, as SQLite itself checks them when it drops a column.
* MariaDB/MySQL: ``information_schema`` (``COLUMNS`` for the primary key and
  generated columns, ``CHECK_CONSTRAINTS``, ``STATISTICS``, ``KEY_COLUMN_USAGE``
  in both directions); views, triggers and stored routines by the names in
  ``VIEW_DEFINITION``, ``ACTION_STATEMENT`` and ``ROUTINE_DEFINITION``, in the
  plan's database or naming its table qualified (these servers let the column
  go and break them; routines are best effort, as on PostgreSQL).

encmigrate's own objects (the ``encmigrate_shadow`` trigger and its function,
the ``<table>_secure`` view) are not dependents. Every value is a bound
parameter; identifiers from the plan reach SQL only through the dialect's
quoting. Other databases have nothing to report (an empty list).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from encmigrate.boundary import mapped_errors
from encmigrate.dependents.model import (
    UNENCRYPTABLE_KINDS,
    Dependent,
    Describe,
    refusal_line,
    unique,
    warning_message,
)
from encmigrate.dependents.mysql import mysql_dependents
from encmigrate.dependents.postgresql import postgresql_dependents
from encmigrate.dependents.sqlite import sqlite_dependents

if TYPE_CHECKING:
    from encmigrate.plan import ColumnPlan, TablePlan

# One finder per dialect: (connection, table, column, its texts) -> what uses the column.
Finder = Callable[[sa.Connection, "TablePlan", "ColumnPlan", Describe], list[Dependent]]

__all__ = [
    "UNENCRYPTABLE_KINDS",
    "Dependent",
    "find_dependents",
    "refusal_line",
    "warning_message",
]


def find_dependents(connection: sa.Connection, tables: Sequence[TablePlan]) -> list[Dependent]:
    """Everything that depends on the planned columns of ``tables`` whose plaintext exists.

    A planned column that does not exist (any more) has no dependents. Raises
    DatabaseError when the catalogs cannot be read.
    """
    finder = _FINDERS.get(connection.dialect.name)
    if finder is None:
        return []
    found: list[Dependent] = []
    with mapped_errors():
        for table in tables:
            for column in table.columns:
                found += unique(finder(connection, table, column, Describe(table, column)))
    return found


_FINDERS: dict[str, Finder] = {
    "postgresql": postgresql_dependents,
    "sqlite": sqlite_dependents,
    "mysql": mysql_dependents,
    "mariadb": mysql_dependents,
}
