"""The tables a rehearsal fills: the planned ones and every table they reference, parents first.

Reflecting a planned table reflects, through its foreign keys, every table it
references, directly or not; those are the tables whose rows the planned rows
need. They are ordered so that a parent comes before its children. A foreign
key that closes a cycle, or that points at its own table, cannot be ordered:
it is marked ``deferred`` (generated rows leave it NULL; copied rows load the
table in one statement, which PostgreSQL checks as a whole). Tables that
reference the planned ones, and the rest of the schema, get no rows: the
migration never reads them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import sqlalchemy as sa

from encmigrate import plan as plan_module
from encmigrate.errors import ConfigError

__all__ = ["FillTable", "ForeignKey", "fill_order"]


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key between two filled tables, by column names."""

    name: str
    columns: tuple[str, ...]
    parent: sa.Table
    parent_columns: tuple[str, ...]
    deferred: bool


@dataclass(frozen=True)
class FillTable:
    """A table to fill, its plan (None for a referenced table), foreign keys, unique sets."""

    table: sa.Table
    plan: plan_module.TablePlan | None
    foreign_keys: tuple[ForeignKey, ...]
    unique: tuple[tuple[str, ...], ...]

    @property
    def planned(self) -> bool:
        return self.plan is not None

    @property
    def name(self) -> str:
        return self.table.fullname

    @property
    def insertable(self) -> tuple[str, ...]:
        """The columns a row can be given: every one but generated (computed) columns."""
        return tuple(c.name for c in self.table.columns if c.computed is None)


def fill_order(connection: sa.Connection, plan: plan_module.Plan) -> list[FillTable]:
    """The planned tables and the tables they reference, parents first."""
    metadata = sa.MetaData()
    planned: dict[str, plan_module.TablePlan] = {}
    # A table in the default schema is reflected without its schema, as SQLAlchemy
    # reflects the tables that foreign keys point at: one Table object per table.
    default = connection.dialect.default_schema_name
    for table_plan in plan.tables:
        schema = None if table_plan.schema_name == default else table_plan.schema_name
        try:
            with warnings.catch_warnings():
                # Types SQLAlchemy does not know (PostGIS, ...) and expression indexes warn.
                warnings.simplefilter("ignore", sa.exc.SAWarning)
                table = sa.Table(
                    table_plan.table_name, metadata, schema=schema, autoload_with=connection
                )
        except sa.exc.NoSuchTableError:
            raise ConfigError(
                f"planned table {table_plan.table!r} does not exist in the rehearsal database"
            ) from None
        planned[table.fullname] = table_plan
    ordered = sa.schema.sort_tables_and_constraints(  # type: ignore[no-untyped-call]
        metadata.tables.values()
    )
    cyclic = {id(fk) for table, fks in ordered if table is None for fk in fks}
    return [
        FillTable(
            table=table,
            plan=planned.get(table.fullname),
            foreign_keys=tuple(_foreign_key(fk, cyclic) for fk in table.foreign_key_constraints),
            unique=_unique_sets(table),
        )
        for table, _ in ordered
        if table is not None
    ]


def _foreign_key(constraint: sa.ForeignKeyConstraint, cyclic: set[int]) -> ForeignKey:
    parent = constraint.referred_table
    return ForeignKey(
        name=str(constraint.name or ""),
        columns=tuple(constraint.column_keys),
        parent=parent,
        parent_columns=tuple(element.column.name for element in constraint.elements),
        deferred=id(constraint) in cyclic or parent is constraint.table,
    )


def _unique_sets(table: sa.Table) -> tuple[tuple[str, ...], ...]:
    sets: list[tuple[str, ...]] = []
    if table.primary_key.columns:
        sets.append(tuple(c.name for c in table.primary_key.columns))
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and constraint.columns:
            sets.append(tuple(c.name for c in constraint.columns))
    for index in table.indexes:
        if index.unique and index.columns:
            sets.append(tuple(c.name for c in index.columns))
    return tuple(dict.fromkeys(sets))
