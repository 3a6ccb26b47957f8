"""Generated rows that the schema accepts: types, NOT NULL, unique and foreign keys, CHECKs.

Every table of :func:`~encmigrate.rehearse.table_graph.fill_order` gets
``count`` rows, parents first (a referenced table that already has rows keeps
them and gets none). Per column:

* generated (computed) and identity columns, and columns whose default is a
  sequence, are the database's to fill; other columns with a default keep it
  unless planned, unique or a partition key;
* a foreign key takes an existing key of its parent (all its columns
  together); one that makes the row unique takes each parent key once; one
  that closes a cycle or points at its own table stays NULL;
* planned columns get values of the plan's type (NULL every tenth row when
  nullable); unique and key columns values that differ from row to row
  (integers after the largest present); other NOT NULL columns a value of
  their SQL type; nullable ones stay NULL;
* CHECK constraints of simple shapes and partition bounds narrow the values
  (:mod:`~encmigrate.rehearse.check_bounds`,
  :mod:`~encmigrate.rehearse.partition_bounds`).

Rows that repeat a unique value are drawn again before they are sent. Rows the
database still refuses (a CHECK too complex to read, a value out of a domain)
are drawn again up to :data:`ATTEMPTS` times each and then left out; the
report says how many and which constraint refused them. A table that accepts
none fails the step with the constraint's name and what to use instead. Error
messages never carry a generated value either (they name constraints).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa

from encmigrate import plan as plan_module
from encmigrate.errors import ConfigError
from encmigrate.rehearse.allowed_values import Allowed, narrowed
from encmigrate.rehearse.check_bounds import allowed_by_checks, check_definitions
from encmigrate.rehearse.database_errors import error_summary
from encmigrate.rehearse.partition_bounds import partition_choices
from encmigrate.rehearse.table_graph import FillTable, ForeignKey, fill_order
from encmigrate.rehearse.value_makers import (
    Maker,
    kind_of,
    maker_for,
    nullable,
    sequence_maker,
)

__all__ = ["ATTEMPTS", "generate_rows"]

INSERT_ROWS: Final = 5000
ATTEMPTS: Final = 5  # draws of one row before it is left out
PARENT_KEYS: Final = 10_000  # parent keys a foreign key picks from
_REFUSALS: Final = (sa.exc.IntegrityError, sa.exc.DataError)


def generate_rows(
    engine: sa.Engine, plan: plan_module.Plan, count: int, rng: random.Random
) -> list[str]:
    """Fill the planned tables and their parents with ``count`` rows each; the warnings."""
    with engine.connect() as connection:
        order = fill_order(connection, plan)
    warnings: list[str] = []
    for fill in order:
        with engine.begin() as connection:
            if fill.plan is None and _has_rows(connection, fill.table):
                continue
            kinds = {c.column: c.type for c in fill.plan.columns} if fill.plan else {}
            rows = _TableRows(connection, fill, kinds, count)
            warning = rows.insert(connection, rng)
        if warning:
            warnings.append(warning)
    return warnings


def _has_rows(connection: sa.Connection, table: sa.Table) -> bool:
    return (
        connection.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None
    )


@dataclass
class _Refusals:
    """Rows left out, and what the database said when it refused them (names only)."""

    rows: int = 0
    reasons: dict[str, None] = field(default_factory=dict)

    def add(self, exc: BaseException) -> None:
        self.reasons[error_summary(exc)] = None


class _TableRows:
    """The makers of one table's rows."""

    def __init__(
        self,
        connection: sa.Connection,
        fill: FillTable,
        planned: Mapping[str, str],
        count: int,
    ) -> None:
        self.fill = fill
        self.table = table = fill.table
        self.count = count
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                # None must be SQL NULL, not the JSON value null (which SQL sees as NOT NULL).
                column.type.none_as_null = True
        checks = allowed_by_checks(check_definitions(connection, table), table)
        leaves = partition_choices(connection, table)
        if leaves == []:
            raise ConfigError(f"--rows: {fill.name} is partitioned but has no partition")
        self.foreign = self._foreign_keys(connection)
        taken = {name for foreign_key, _, _ in self.foreign for name in foreign_key.columns}
        partition_keys = {name for leaf in leaves or [] for name in leaf}
        bases = self._bases(connection, planned, taken, partition_keys)
        self.makers = {
            name: narrowed(base, checks.get(name), table.c[name].type)
            for name, base in bases.items()
            if name not in partition_keys
        }
        for name in self.makers:
            if name in planned and table.c[name].nullable:
                self.makers[name] = nullable(self.makers[name])
        # Partition keys: per leaf partition, values that land in it (and pass the CHECKs).
        self.leaves = [
            {
                name: narrowed(base, _both(leaf.get(name), checks.get(name)), table.c[name].type)
                for name, base in bases.items()
                if name in partition_keys
            }
            for leaf in leaves or [{}]
        ]
        # Unique column sets whose every value comes from here: repeats are drawn again.
        self.seen: list[tuple[tuple[str, ...], set[tuple[Any, ...]]]] = [
            (u, set()) for u in fill.unique if all(c in bases or c in taken for c in u)
        ]

    def _foreign_keys(
        self, connection: sa.Connection
    ) -> list[tuple[ForeignKey, list[tuple[Any, ...]], bool]]:
        """Each foreign key, its parent's keys, and whether each key is taken once (unique)."""
        found = []
        for foreign_key in self.fill.foreign_keys:
            keys = self._parent_keys(connection, foreign_key)
            one_each = any(set(u) <= set(foreign_key.columns) for u in self.fill.unique)
            if one_each:
                self.count = min(self.count, len(keys))
            found.append((foreign_key, keys, one_each))
        return found

    def _bases(
        self,
        connection: sa.Connection,
        planned: Mapping[str, str],
        taken: set[str],
        partition_keys: set[str],
    ) -> dict[str, Maker]:
        """A maker for every column the rows give a value (foreign keys aside)."""
        unique_columns = {c for u in self.fill.unique for c in u}
        bases: dict[str, Maker] = {}
        for column in self.table.columns:
            if column.name in taken or self._database_fills(column, planned, partition_keys):
                continue
            base = self._base_maker(connection, column, planned, unique_columns, partition_keys)
            if base is not None:
                bases[column.name] = base
        return bases

    def _database_fills(
        self, column: sa.Column[Any], planned: Mapping[str, str], partition_keys: set[str]
    ) -> bool:
        """Generated, identity and sequence columns; other defaults unless the row needs a value."""
        if column.computed is not None or column.identity is not None:
            return True
        default = column.server_default
        if default is None:
            return False
        text = str(getattr(default, "arg", ""))
        if "nextval(" in text:
            return True
        needed = column.name in planned or column.name in partition_keys
        return not needed and not any(column.name in u for u in self.fill.unique)

    def _base_maker(
        self,
        connection: sa.Connection,
        column: sa.Column[Any],
        planned: Mapping[str, str],
        unique_columns: set[str],
        partition_keys: set[str],
    ) -> Maker | None:
        where = f"--rows: {self.fill.name}.{column.name}"
        if column.name in planned:
            kind = planned[column.name]
            if kind == "binary" and isinstance(column.type, sa.String):
                raise ConfigError(f"{where}: binary values in a text column are not generated")
            return maker_for(kind, column.type)
        if column.nullable and column.name not in partition_keys:
            return None  # NULL fits, and never repeats a unique value
        if column.name in unique_columns:
            start = connection.execute(sa.select(sa.func.max(column))).scalar()
            sequence = sequence_maker(column.type, start)
            if sequence is not None:
                return sequence
        return maker_for(kind_of(column.type, where), column.type)

    def _parent_keys(
        self, connection: sa.Connection, foreign_key: ForeignKey
    ) -> list[tuple[Any, ...]]:
        columns = [self.table.c[name] for name in foreign_key.columns]
        if foreign_key.deferred:
            required = [c.name for c in columns if not c.nullable]
            if required:
                raise ConfigError(
                    f"--rows: {self.fill.name}.{required[0]} is a NOT NULL foreign key in a "
                    "cycle (or to its own table): generated rows cannot satisfy it; copy real "
                    "rows with --sample-from, or load rows with --load"
                )
            return []
        parent = foreign_key.parent
        keys = [parent.c[name] for name in foreign_key.parent_columns]
        found = [
            tuple(row)
            for row in connection.execute(
                sa.select(*keys)
                .where(*(k.is_not(None) for k in keys))
                .distinct()
                .limit(PARENT_KEYS)
            )
        ]
        if not found and not all(c.nullable for c in columns):
            raise ConfigError(
                f"--rows: {self.fill.name}.{columns[0].name} references {parent.fullname}, "
                "which has no rows"
            )
        return found

    def row(self, i: int, rng: random.Random) -> dict[str, Any]:
        values = {name: make(i, rng) for name, make in self.makers.items()}
        leaf = rng.choice(self.leaves)
        values.update({name: make(i, rng) for name, make in leaf.items()})
        for foreign_key, keys, one_each in self.foreign:
            if not keys:
                chosen: tuple[Any, ...] = (None,) * len(foreign_key.columns)
            elif one_each:
                chosen = keys[i % len(keys)]
            else:
                chosen = rng.choice(keys)
            values.update(zip(foreign_key.columns, chosen, strict=True))
        return values

    def fresh_row(self, i: int, rng: random.Random) -> dict[str, Any] | None:
        """Row ``i``, drawn again while it repeats a unique value; None if it keeps repeating."""
        for attempt in range(ATTEMPTS):
            values = self.row(i + attempt * self.count, rng)
            keys = [(seen, tuple(values.get(c) for c in u)) for u, seen in self.seen]
            if all(None in key or key not in seen for seen, key in keys):
                for seen, key in keys:
                    seen.add(key)
                return values
        return None

    def insert(self, connection: sa.Connection, rng: random.Random) -> str | None:
        """Insert the rows; a warning if some were left out. ConfigError if none went in."""
        for _, keys, one_each in self.foreign:
            if one_each:
                rng.shuffle(keys)
        statement = self.table.insert()
        refused = _Refusals()
        inserted = 0
        for first in range(0, self.count, INSERT_ROWS):
            batch: list[dict[str, Any]] = []
            for i in range(first, min(first + INSERT_ROWS, self.count)):
                values = self.fresh_row(i, rng)
                if values is None:
                    refused.rows += 1
                else:
                    batch.append(values)
            if not batch:
                continue
            try:
                with connection.begin_nested():
                    connection.execute(statement, batch)
                inserted += len(batch)
            except _REFUSALS:
                inserted += self._one_by_one(connection, statement, batch, first, rng, refused)
        if self.count and not inserted:
            reasons = "; ".join(refused.reasons) or "every row repeated a unique value"
            raise ConfigError(
                f"--rows: no generated row of {self.fill.name} was accepted ({reasons}): copy "
                "real rows with --sample-from, or load rows with --load"
            )
        if not refused.rows:
            return None
        reasons = "; ".join(refused.reasons) or "they kept repeating a unique value"
        return (
            f"generated rows: {refused.rows:,} of {self.count:,} rows of {self.fill.name} "
            f"were left out ({reasons})"
        )

    def _one_by_one(
        self,
        connection: sa.Connection,
        statement: sa.Insert,
        batch: list[dict[str, Any]],
        first: int,
        rng: random.Random,
        refused: _Refusals,
    ) -> int:
        """Insert ``batch`` row by row, drawing a refused row again; the rows inserted."""
        inserted = 0
        for offset, values in enumerate(batch):
            row: dict[str, Any] | None = values
            attempt = 0
            while row is not None:
                try:
                    with connection.begin_nested():
                        connection.execute(statement, row)
                    inserted += 1
                    break
                except _REFUSALS as exc:
                    refused.add(exc)
                    attempt += 1
                    again = first + offset + attempt * self.count * ATTEMPTS
                    row = self.fresh_row(again, rng) if attempt < ATTEMPTS else None
            else:
                refused.rows += 1
        return inserted


def _both(a: Allowed | None, b: Allowed | None) -> Allowed | None:
    if a is None or b is None:
        return a or b
    return a & b
