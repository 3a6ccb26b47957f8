"""PostgreSQL: what depends on a planned column, from pg_depend, pg_constraint and friends.

The queries are in :mod:`encmigrate.dependents.pg_queries`; this module turns
their rows into :class:`~encmigrate.dependents.model.Dependent` entries.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sqlalchemy as sa

from encmigrate.dependents.model import (
    INHERITANCE_CHILDREN,
    INHERITED_COLUMN,
    OWN_PG_TRIGGER,
    PARTITION_KEY,
    PARTITIONED_UNIQUE_TOKEN,
    PRIMARY_KEY,
    Dependent,
    Describe,
)
from encmigrate.dependents.pg_queries import (
    PG15_SCHEMA,
    PG15_WHOLE,
    PG_ATTRDEF,
    PG_CLASS,
    PG_CONSTRAINTS,
    PG_DEPEND,
    PG_FUNCTIONS,
    PG_PARENT,
    PG_PARTITION_KEY,
    PG_PUBLICATION_REL,
    PG_PUBLICATIONS,
    PG_REWRITE,
    PG_TREE,
    PG_TRIGGER,
)
from encmigrate.identifiers import qualified

if TYPE_CHECKING:
    from encmigrate.plan import ColumnPlan, TablePlan

__all__ = ["postgresql_dependents"]


def _pg_target(connection: sa.Connection, table: TablePlan) -> str:
    # A bound value, not SQL text: the dialect's quoting would double a `%` in the name.
    return qualified(connection.dialect, table.table_name, table.schema_name)


def postgresql_dependents(
    connection: sa.Connection, table: TablePlan, column: ColumnPlan, describe: Describe
) -> list[Dependent]:
    root = connection.execute(
        sa.text("SELECT CAST(to_regclass(:target) AS oid)"),
        {"target": _pg_target(connection, table)},
    ).scalar()
    if root is None:
        return []
    tree = connection.execute(PG_TREE, {"rel": root, "column": column.column}).all()
    if not tree or tree[0][0] != root:
        return []  # the plaintext column is not there (dropped already, or never existed)
    version = int(connection.execute(sa.text("SHOW server_version_num")).scalar() or 0)
    found: list[Dependent] = []
    kind = connection.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = :r"), {"r": root}
    ).scalar()
    if kind == "p" and column.unique_token and column.search_column is not None:
        found.append(
            describe.make(
                PARTITIONED_UNIQUE_TOKEN,
                f"{tree[0][3]}.{column.search_column}",
                "unique_token needs a unique index on the search token alone, and PostgreSQL "
                "requires the partition key in every unique index of a partitioned table",
                "remove unique_token and enforce the uniqueness in the application",
            )
        )
    if kind == "r" and len(tree) > 1:
        # Declarative partitions get the parent's row trigger cloned; inheritance children
        # do not: their rows' plaintext could change without their ciphertext being cleared.
        found.append(
            describe.make(
                INHERITANCE_CHILDREN,
                f"{tree[0][3]}.{column.column}",
                f"{column.column} is inherited by {len(tree) - 1} child table(s) "
                "(INHERITS), whose rows the shadow trigger on the parent does not see",
                "encrypt a partitioned table (PARTITION BY) instead, or plan each child table "
                "as a table of its own after detaching it (ALTER TABLE ... NO INHERIT)",
            )
        )
    if tree[0][2] > 0:
        parent = connection.execute(PG_PARENT, {"rel": root}).scalar()
        found.append(
            describe.make(
                INHERITED_COLUMN,
                f"{tree[0][3]}.{column.column}",
                f"DROP COLUMN fails: {column.column} is inherited from {parent}",
                f"plan the column on {parent} instead",
            )
        )
    functions: set[int] = set()
    for rel, att, _inherited, identity in tree:
        descendant = rel != root
        found += _pg_partition_key(connection, rel, att, identity, describe)
        found += _pg_constraints(connection, rel, att, describe, descendant=descendant)
        found += _pg_depend(connection, rel, att, root, describe, functions, version)
        found += _pg_publications(connection, rel, column.column, describe, version)
    found += _pg_functions(connection, column, describe, functions)
    return found


def _pg_partition_key(
    connection: sa.Connection, rel: int, att: int, identity: str, describe: Describe
) -> list[Dependent]:
    if connection.execute(PG_PARTITION_KEY, {"rel": rel, "att": att}).first() is None:
        return []
    return [
        describe.make(
            PARTITION_KEY,
            identity,
            f"DROP COLUMN fails: {describe.col} is in the partition key of {identity}",
            "remove the column from the plan: a partition key cannot be encrypted",
        )
    ]


def _pg_constraints(
    connection: sa.Connection, rel: int, att: int, describe: Describe, *, descendant: bool
) -> list[Dependent]:
    found: list[Dependent] = []
    rows = connection.execute(PG_CONSTRAINTS, {"rel": rel, "att": att}).all()
    for contype, identity, outgoing, incoming, width, other, inherited in rows:
        if descendant and inherited:
            continue  # a CHECK inherited from the planned table: reported there
        if contype == "p" and outgoing:
            found.append(
                describe.make(
                    PRIMARY_KEY,
                    identity,
                    f"part of the primary key {identity}: key columns cannot be encrypted "
                    "(the backfill pages by key)",
                    "remove the column from the plan",
                )
            )
        elif contype == "u" and outgoing:
            found.append(describe.unique("unique constraint", identity, single=width == 1))
        elif contype == "c" and outgoing:
            found.append(describe.lost("check constraint", identity, "its rule"))
        elif contype == "x" and outgoing:
            found.append(describe.lost("exclusion constraint", identity, "the exclusion"))
        if contype == "f" and outgoing:
            found.append(
                describe.make(
                    "foreign key",
                    identity,
                    f"dropped with the column: the reference to {other} is no longer enforced",
                    f"drop the foreign key first: a ciphertext cannot reference {other}",
                )
            )
        if contype == "f" and incoming:
            found.append(
                describe.fails(
                    "referencing foreign key",
                    identity,
                    f"{other} references {describe.col}",
                    f"drop the foreign key on {other} (or make it reference the primary key) "
                    "before step 5",
                )
            )
    return found


def _pg_depend(
    connection: sa.Connection,
    rel: int,
    att: int,
    root: int,
    describe: Describe,
    functions: set[int],
    version: int,
) -> list[Dependent]:
    found: list[Dependent] = []
    rows = connection.execute(PG_DEPEND, {"rel": rel, "att": att}).all()
    for catalog, objid, objsubid, deptype, object_type, identity in rows:
        if catalog == "pg_rewrite":
            found += _pg_rule(connection, objid, identity, describe)
        elif catalog == "pg_class":
            found += _pg_class(connection, objid, objsubid, att, rel, root, identity, describe)
        elif catalog == "pg_attrdef":
            column = connection.execute(PG_ATTRDEF, {"oid": objid}).scalar()
            found.append(describe.generated(str(column)))
        elif catalog == "pg_trigger":
            found += _pg_trigger(connection, objid, identity, describe, version)
        elif catalog == "pg_policy":
            found.append(
                describe.fails(
                    "policy", identity, f"the row-level security policy uses {describe.col}"
                )
            )
        elif catalog == "pg_publication_rel":
            publication = connection.execute(PG_PUBLICATION_REL, {"oid": objid}).scalar()
            found.append(
                describe.fails(
                    "publication",
                    str(publication),
                    f"its column list names {describe.col}",
                    f"remove {describe.col} from the publication's column list (ALTER "
                    "PUBLICATION ... SET TABLE) before step 5, and drop it on the subscribers",
                )
            )
        elif catalog == "pg_statistic_ext":
            found.append(
                describe.make(
                    "statistics object",
                    identity,
                    "dropped with the column",
                    f"recreate it without {describe.col} afterwards if the planner needs it",
                    blocking=False,
                )
            )
        elif catalog == "pg_proc":
            functions.add(int(objid))
            found.append(describe.fails("function", identity, f"its SQL body uses {describe.col}"))
        else:
            found.append(_pg_other(describe, object_type, identity, deptype))
    return found


def _pg_other(describe: Describe, object_type: str, identity: str, deptype: str) -> Dependent:
    if deptype == "n":
        return describe.fails(object_type, identity, f"it depends on {describe.col}")
    return describe.make(
        object_type,
        identity,
        "dropped with the column",
        "check whether it is still needed afterwards",
        blocking=False,
    )


def _pg_rule(
    connection: sa.Connection, objid: int, identity: str, describe: Describe
) -> list[Dependent]:
    row = connection.execute(PG_REWRITE, {"oid": objid}).first()
    if row is None:
        return []
    rulename, relkind, relation = row
    if rulename == "_RETURN":  # a view's query is its _RETURN rule
        return [describe.view_like("materialized view" if relkind == "m" else "view", relation)]
    return [
        describe.fails(
            "rule",
            identity,
            "the rule uses it",
            f"drop the rule or rewrite it without {describe.col}",
        )
    ]


def _pg_class(
    connection: sa.Connection,
    objid: int,
    objsubid: int,
    att: int,
    rel: int,
    root: int,
    identity: str,
    describe: Describe,
) -> list[Dependent]:
    if objid == rel and objsubid == 0:
        return []  # the table's own partition key: reported by _pg_partition_key
    row = connection.execute(PG_CLASS, {"oid": objid, "att": att}).first()
    if row is None:
        return []
    relkind, unique, expression, single, attached = row
    if objsubid > 0 and relkind in ("r", "p"):
        return [describe.generated(identity)]
    if relkind not in ("i", "I"):
        return []  # an owned sequence (serial) and the like: gone with the column, harmless
    if attached:
        return []  # a partition's part of a partitioned index: reported with the parent's
    if unique:
        return [describe.unique("unique index", identity, single=bool(single) and not expression)]
    # The drop revision restores the plain-column indexes of the planned table itself; a
    # partition's own index or an expression or partial index goes with the column for good.
    return [describe.index(identity, restored=rel == root and not expression)]


def _pg_trigger(
    connection: sa.Connection, objid: int, identity: str, describe: Describe, version: int
) -> list[Dependent]:
    cloned = "tgparentid <> 0" if version >= 130000 else "false"
    statement = sa.text(PG_TRIGGER.format(cloned=cloned))
    row = connection.execute(statement, {"oid": objid}).first()
    if row is None:
        return []
    name, internal, cloned = row
    if internal or cloned or name == OWN_PG_TRIGGER:
        return []  # foreign-key machinery, a partition's clone, or encmigrate's own trigger
    return [
        describe.fails(
            "trigger",
            identity,
            f"its UPDATE OF list or WHEN clause names {describe.col}",
            f"drop the trigger, or recreate it without {describe.col}, before step 5",
        )
    ]


def _pg_publications(
    connection: sa.Connection, rel: int, column: str, describe: Describe, version: int
) -> list[Dependent]:
    # Before 15 there are no column lists: every publication of the table sends it whole.
    modern = version >= 150000
    statement = PG_PUBLICATIONS.format(
        whole=PG15_WHOLE if modern else "", schema=PG15_SCHEMA if modern else ""
    )
    return [
        describe.make(
            "publication",
            str(name),
            f"subscribers received {column} and keep their copy of the plaintext",
            f"drop {column} on each subscriber too, after step 5",
            blocking=False,
        )
        for (name,) in connection.execute(sa.text(statement), {"rel": rel})
    ]


def _pg_functions(
    connection: sa.Connection, column: ColumnPlan, describe: Describe, known: set[int]
) -> list[Dependent]:
    # PostgreSQL's regular expressions: a word character is alphanumeric or "_".
    pattern = f"(^|[^[:alnum:]_$]){re.escape(column.column)}($|[^[:alnum:]_$])"
    rows = connection.execute(PG_FUNCTIONS, {"pattern": pattern}).all()
    return [
        describe.make(
            "function",
            str(identity),
            f"its body mentions {column.column}; if it reads the plaintext it fails at run time",
            f"read it; make it use {column.encrypted_column} (or the {describe.view} view) if "
            f"it reads {column.column}",
            blocking=False,
            best_effort=True,
        )
        for oid, identity in rows
        if int(oid) not in known
    ]
