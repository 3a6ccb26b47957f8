"""Which partition key values have somewhere to go: one choice per leaf partition.

A row inserted into a partitioned table must fall into a partition (or a
default one). :func:`partition_choices` reads the bounds of every partition
(``pg_get_expr(relpartbound)``), sub-partitions included, and returns, per
leaf, what each key column must hold to land there: a range for a
single-column range partition, the lower bound for a multi-column one (the
lower bound is inclusive), the listed values for a list partition, nothing
for hash and default partitions. Keys that are expressions are not read: the
database refuses the rows that fit no partition, and they are generated
again.
"""

from __future__ import annotations

import re
from typing import Any, Final

import sqlalchemy as sa

from encmigrate.rehearse.allowed_values import Allowed, typed_literal

__all__ = ["Leaf", "partition_choices"]

Leaf = dict[str, Allowed]

_RANGE: Final = re.compile(r"^FOR VALUES FROM \((?P<low>.*)\) TO \((?P<high>.*)\)$", re.DOTALL)
_LIST: Final = re.compile(r"^FOR VALUES IN \((?P<items>.*)\)$", re.DOTALL)
_ITEM: Final = re.compile(
    r"'(?:[^']|'')*'|\bMINVALUE\b|\bMAXVALUE\b|\bNULL\b|\btrue\b|\bfalse\b|-?\d+(?:\.\d+)?"
)


def partition_choices(connection: sa.Connection, table: sa.Table) -> list[Leaf] | None:
    """One :data:`Leaf` per leaf partition of ``table``; None if it is not partitioned.

    PostgreSQL's declarative partitions only: elsewhere (MariaDB) None, and a row
    outside every partition is refused by the server and left out like any other.
    """
    if connection.dialect.name != "postgresql":
        return None
    oid = connection.execute(
        sa.text(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND n.nspname = coalesce(:schema, current_schema()) "
            "AND c.relkind = 'p'"
        ),
        {"table": table.name, "schema": table.schema},
    ).scalar()
    if oid is None:
        return None
    return _leaves(connection, int(oid), table)


def _leaves(connection: sa.Connection, oid: int, table: sa.Table) -> list[Leaf]:
    keys = [
        str(name) if name is not None else None
        for name in connection.execute(
            sa.text(
                "SELECT a.attname FROM pg_partitioned_table p "
                "CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, n) "
                "LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum "
                "WHERE p.partrelid = :oid ORDER BY k.n"
            ),
            {"oid": oid},
        ).scalars()
    ]
    partitions = connection.execute(
        sa.text(
            "SELECT c.oid, pg_get_expr(c.relpartbound, c.oid), c.relkind = 'p' "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = :oid ORDER BY c.oid"
        ),
        {"oid": oid},
    ).all()
    leaves: list[Leaf] = []
    for child, bound, partitioned in partitions:
        here = _bound(str(bound), keys, table)
        if here is None:
            continue
        if not partitioned:
            leaves.append(here)
            continue
        for below in _leaves(connection, int(child), table):
            merged = dict(here)
            for column, allowed in below.items():
                merged[column] = merged[column] & allowed if column in merged else allowed
            leaves.append(merged)
    return leaves


def _bound(bound: str, keys: list[str | None], table: sa.Table) -> Leaf | None:
    """What the key columns hold in the partition of ``bound``; None for none (e.g. IN (NULL))."""
    if match := _RANGE.match(bound):
        lows = _items(match["low"])
        highs = _items(match["high"])
        if len(keys) == 1 and keys[0] is not None:
            kind = table.c[keys[0]].type
            low = None if lows[0] is None else typed_literal(lows[0], kind)
            high = None if highs[0] is None else typed_literal(highs[0], kind)
            return {keys[0]: Allowed(low=low, high=high, high_open=True)}
        leaf: Leaf = {}
        for key, lowest in zip(keys, lows, strict=False):
            if key is None or lowest is None:
                break
            leaf[key] = Allowed(choices=(typed_literal(lowest, table.c[key].type),))
        return leaf
    if match := _LIST.match(bound):
        listed = keys[0] if keys else None
        if listed is None:
            return {}
        values: list[Any] = [
            typed_literal(item, table.c[listed].type)
            for item in _items(match["items"])
            if item is not None
        ]
        return {listed: Allowed(choices=tuple(values))} if values else None
    return {}  # hash and default partitions take any value


def _items(text: str) -> list[str | None]:
    """The literals of a bound, unquoted; None for MINVALUE, MAXVALUE and NULL."""
    return [
        item[1:-1].replace("''", "'")
        if item.startswith("'")
        else (None if item in ("MINVALUE", "MAXVALUE", "NULL") else item)
        for item in _ITEM.findall(text)
    ]
