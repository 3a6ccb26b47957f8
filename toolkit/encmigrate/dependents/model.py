"""What a dependent is, and the words plan check and drop-unencrypted use for each kind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from encmigrate.plan import ColumnPlan, TablePlan

__all__ = [
    "INHERITANCE_CHILDREN",
    "INHERITED_COLUMN",
    "OWN_PG_TRIGGER",
    "OWN_PREFIX",
    "PARTITIONED_UNIQUE_TOKEN",
    "PARTITION_KEY",
    "PRIMARY_KEY",
    "UNENCRYPTABLE_KINDS",
    "Dependent",
    "Describe",
    "refusal_line",
    "unique",
    "warning_message",
]

PRIMARY_KEY = "primary key"
PARTITION_KEY = "partition key"
INHERITED_COLUMN = "inherited column"
INHERITANCE_CHILDREN = "inheritance children"
PARTITIONED_UNIQUE_TOKEN = "unique token on a partitioned table"  # noqa: S105 (a kind, not a secret)
# A column with one of these cannot be encrypted at all: a plan problem, not a step-5 matter.
UNENCRYPTABLE_KINDS = frozenset(
    {PRIMARY_KEY, PARTITION_KEY, INHERITED_COLUMN, INHERITANCE_CHILDREN, PARTITIONED_UNIQUE_TOKEN}
)

# encmigrate's own trigger (PostgreSQL), and the prefix of its SQLite triggers and functions.
OWN_PG_TRIGGER = "encmigrate_shadow"
OWN_PREFIX = "encmigrate_shadow_"
_RESTORED = "dropped with the column, restored on downgrade"


@dataclass(frozen=True)
class Dependent:
    """One object that depends on a planned plaintext column.

    ``table`` and ``column`` are the planned column as the plan writes them;
    ``name`` is the object's schema-qualified name (``view public.v``, ``tr on
    public.t`` for per-table objects). ``effect`` says what step 5 does to it,
    ``action`` what the operator does about it. ``blocking`` ones make
    ``drop-unencrypted`` refuse; ``droppable`` ones (unique indexes and
    constraints that the drop can remove) let ``--allow-dropping-constraints``
    through. ``best_effort`` marks a finding from a text search.
    """

    table: str
    column: str
    kind: str
    name: str
    effect: str
    action: str
    blocking: bool
    best_effort: bool = False
    droppable: bool = False

    @property
    def unencryptable(self) -> bool:
        """A primary key, partition key or inherited column: it cannot be encrypted at all."""
        return self.kind in UNENCRYPTABLE_KINDS


def warning_message(dependent: Dependent) -> str:
    """The plan warning for ``dependent`` (blocking ones say what drop-unencrypted waits for)."""
    head = f"{dependent.kind} {dependent.name} depends on {dependent.table}.{dependent.column}"
    if dependent.best_effort:
        head += " (best effort: found by a text search)"
    if dependent.blocking:
        return (
            f"{head}: at step 5 {dependent.effect}; drop-unencrypted will refuse until you "
            f"{dependent.action}"
        )
    return f"{head}: at step 5 {dependent.effect}; {dependent.action}"


def refusal_line(dependent: Dependent) -> str:
    """One line of drop-unencrypted's refusal: kind, name, what happens and what to do."""
    return (
        f"{dependent.kind} {dependent.name!r} uses {dependent.table}.{dependent.column}: "
        f"{dependent.effect}; {dependent.action}"
    )


def unique(found: Iterable[Dependent]) -> list[Dependent]:
    seen: set[tuple[str, str]] = set()
    kept: list[Dependent] = []
    for dependent in found:
        key = (dependent.kind, dependent.name)
        if key not in seen:
            seen.add(key)
            kept.append(dependent)
    return kept


class Describe:
    """The effect and action texts of each kind, for one planned column."""

    def __init__(self, table: TablePlan, column: ColumnPlan) -> None:
        self.table, self.column = table, column
        self.col = column.column
        self.view = table.view

    def make(
        self,
        kind: str,
        name: str,
        effect: str,
        action: str,
        *,
        blocking: bool = True,
        best_effort: bool = False,
        droppable: bool = False,
    ) -> Dependent:
        return Dependent(
            self.column.table,
            self.col,
            kind,
            name,
            effect,
            action,
            blocking,
            best_effort,
            droppable,
        )

    def view_like(self, kind: str, name: str) -> Dependent:
        return self.make(
            kind,
            name,
            f"DROP COLUMN fails: it reads {self.col}",
            f"recreate it over the {self.view} view (which has {self.col} as ciphertext) "
            f"or without {self.col}, or drop it",
        )

    def fails(self, kind: str, name: str, what: str, action: str | None = None) -> Dependent:
        return self.make(
            kind,
            name,
            f"DROP COLUMN fails: {what}",
            action or f"drop it, or recreate it without {self.col}, before step 5",
        )

    def generated(self, identity: str) -> Dependent:
        return self.fails(
            "generated column",
            identity,
            f"it is computed from {self.col}",
            f"drop the generated column, or redefine it without {self.col}, before step 5",
        )

    def lost(self, kind: str, name: str, what: str) -> Dependent:
        """A constraint the drop removes silently: blocking, the rule would just stop."""
        return self.make(
            kind,
            name,
            f"dropped with the column: {what} is no longer enforced",
            f"drop it, or recreate it without {self.col} (enforce the rule in the "
            "application), before step 5",
        )

    def index(self, name: str, *, restored: bool) -> Dependent:
        if restored:
            return self.make("index", name, _RESTORED, "nothing to do", blocking=False)
        return self.make(
            "index",
            name,
            "dropped with the column, not restored on downgrade",
            f"recreate it without {self.col} afterwards if queries need it",
            blocking=False,
        )

    def unique(self, kind: str, name: str, *, single: bool) -> Dependent:
        search = self.column.search_column
        if single and self.column.unique_token and search is not None:
            return self.make(
                kind,
                name,
                f"dropped with the column; a unique index on {search} takes over (unique_token)",
                "nothing to do",
                blocking=False,
            )
        effect = f"dropped with the column: uniqueness of {self.col} is no longer enforced"
        if not single:
            action = (
                "pass --allow-dropping-constraints to drop it (unique_token carries only a "
                "single-column uniqueness), or enforce it in the application"
            )
        elif search is not None:
            action = (
                "set unique_token = true on the column to enforce it on "
                f"{search}, or pass --allow-dropping-constraints to drop it"
            )
        else:
            action = (
                "make the column searchable with unique_token = true to keep it, or pass "
                "--allow-dropping-constraints to drop it"
            )
        return self.make(kind, name, effect, action, droppable=True)
