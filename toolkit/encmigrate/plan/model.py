"""What a plan is: its settings sections, the entries as written, and the validated values.

The entry models (:class:`ColumnEntry`, :class:`TableSettings` and the section
settings) check the file's own rules, field by field; :class:`Plan`,
:class:`TablePlan` and :class:`ColumnPlan` are what the generators and the
migrator read once :func:`encmigrate.plan.load` has checked everything.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from encmigrate.config import KeysSettings
from encmigrate.crypto.codecs import TYPE_NAMES
from encmigrate.crypto.search import Normalize
from encmigrate.dependents import Dependent
from encmigrate.errors import ConfigError
from encmigrate.plan.database_url import safe_url
from encmigrate.spec import SEARCH_SUFFIX, SHADOW_SUFFIX, ColumnSpec


class ColumnPhase(enum.StrEnum):
    """Where a planned column stands in the live schema."""

    UNCHECKED = "unchecked"  # no database was consulted
    PLAIN = "plain"  # plaintext only: step 1 not applied yet
    SHADOWED = "shadowed"  # plaintext and <col>_encrypted: steps 1-4
    DROPPED = "dropped"  # <col>_encrypted only: step 5 applied


@dataclass(frozen=True, slots=True)
class PlanWarning:
    """Something the plan allows but a reviewer should see, with its figure."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class DatabaseSettings(BaseModel):
    """The ``[database]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str | None = Field(default=None, min_length=1)


class AlembicSettings(BaseModel):
    """The ``[alembic]`` table: where the Alembic config lives (relative to the plan)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: str = Field(default="alembic.ini", min_length=1)


class MigrationSettings(BaseModel):
    """The ``[migration]`` table: defaults of the backfill, and how schema revisions take locks.

    ``ddl_lock_timeout`` bounds how long a revision's DDL waits for its lock: a
    waiting ``ALTER TABLE`` makes every later query on the table queue behind it,
    so the wait is the application's outage. ``ddl_retries`` is how many times
    ``--apply`` tries again after such a timeout (or a deadlock).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    sleep: float = Field(default=0.0, ge=0.0)
    # Seconds; written "2s", "500ms" or a number of seconds.
    ddl_lock_timeout: float = Field(default=2.0, gt=0.0, le=600.0)
    ddl_retries: int = Field(default=10, ge=0, le=100)

    @field_validator("ddl_lock_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError('must be a duration such as "2s" or "500ms", or a number of seconds')
        if not isinstance(value, str):
            return value
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value)
        if found is None:
            raise ValueError('must be a duration such as "2s" or "500ms", or a number of seconds')
        number = float(found.group(1))
        return number / 1000 if found.group(2) == "ms" else number

    @property
    def ddl_lock_timeout_ms(self) -> int:
        """``ddl_lock_timeout`` in whole milliseconds (at least 1: 0 would mean no limit)."""
        return max(1, round(self.ddl_lock_timeout * 1000))


class TableSettings(BaseModel):
    """One ``[tables."<table>"]`` entry: per-table options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    view: str | None = Field(default=None, min_length=1)


class ColumnEntry(BaseModel):
    """One ``[[columns]]`` entry as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(min_length=1)
    column: str = Field(min_length=1)
    type: str = "string"
    searchable: bool = False
    normalize: Normalize = Normalize.NONE
    context: str | None = Field(default=None, min_length=1)
    storage: Literal["binary", "text"] = "binary"
    unique_token: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TYPE_NAMES:
            raise ValueError(f"unknown type {value!r}; use one of {', '.join(TYPE_NAMES)}")
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(parts):
            raise ValueError("must be 'table' or 'schema.table', each part non-empty")
        return value


class ColumnPlan(BaseModel):
    """One column to encrypt, with everything the generators and the migrator need."""

    model_config = ConfigDict(frozen=True)

    table: str  # as the plan writes it: "customer" or "sales.customer"
    column: str
    type: str
    searchable: bool = False
    normalize: Normalize = Normalize.NONE
    context: str
    storage: Literal["binary", "text"] = "binary"
    # Step 5 carries a unique constraint over to <col>_search (searchable columns only).
    unique_token: bool = False
    phase: ColumnPhase = ColumnPhase.UNCHECKED
    # What depends on the live plaintext column (found when the plan is checked).
    dependents: tuple[Dependent, ...] = ()

    @property
    def schema_name(self) -> str | None:
        return split_table(self.table)[0]

    @property
    def table_name(self) -> str:
        return split_table(self.table)[1]

    @property
    def spec(self) -> ColumnSpec:
        """The column's spec, from which the migrator and the tools build its cipher."""
        return ColumnSpec(
            context=self.context,
            type_name=self.type,
            searchable=self.searchable,
            normalize=self.normalize,
            storage=self.storage,
            column=self.column,
        )

    # The names need no valid spec: a plan with problems is still checked against the
    # live schema, to report every problem at once.
    @property
    def encrypted_column(self) -> str:
        return self.column + SHADOW_SUFFIX

    @property
    def search_column(self) -> str | None:
        return self.column + SEARCH_SUFFIX if self.searchable else None


class TablePlan(BaseModel):
    """The planned columns of one table, its view name and (once checked) primary key."""

    model_config = ConfigDict(frozen=True)

    table: str
    view: str
    columns: tuple[ColumnPlan, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def schema_name(self) -> str | None:
        return split_table(self.table)[0]

    @property
    def table_name(self) -> str:
        return split_table(self.table)[1]


class Plan(BaseModel):
    """A validated plan. ``database_url`` is kept out of ``repr`` (it may hold a password)."""

    model_config = ConfigDict(frozen=True)

    source: Path | None
    database_url: str | None = Field(default=None, repr=False)
    alembic_config: Path
    keys: KeysSettings = KeysSettings()
    migration: MigrationSettings = MigrationSettings()
    tables: tuple[TablePlan, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()

    @property
    def columns(self) -> tuple[ColumnPlan, ...]:
        return tuple(column for table in self.tables for column in table.columns)

    @property
    def safe_database_url(self) -> str | None:
        return None if self.database_url is None else safe_url(self.database_url)

    def table(self, name: str) -> TablePlan:
        """The plan of table ``name`` (as the plan writes it), or ConfigError."""
        for table in self.tables:
            if table.table == name:
                return table
        known = ", ".join(t.table for t in self.tables) or "none"
        raise ConfigError(f"table {name!r} is not in the plan (planned tables: {known})")

    def select(self, tables: Iterable[str] | None = None) -> tuple[TablePlan, ...]:
        """The plans of ``tables`` (all planned tables when None)."""
        if tables is None:
            return self.tables
        return tuple(self.table(name) for name in tables)


def split_table(name: str) -> tuple[str | None, str]:
    """``"schema.table"`` -> ``("schema", "table")``; ``"table"`` -> ``(None, "table")``."""
    schema, _, table = name.rpartition(".")
    return (schema or None), table
