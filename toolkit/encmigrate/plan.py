"""The migration plan: which columns to encrypt, validated before any work starts.

:func:`load` reads the settings file that :func:`encmigrate.config.find_config`
finds, checks every entry against the file's own rules and then against the
live schema (SQLAlchemy inspection), and raises one :class:`PlanError` listing
**every** problem, each with the file and key it comes from and what to do.
Problems that leak nothing but deserve attention (a searchable column with so
few distinct values that its blind index gives the values away) come back as
:attr:`Plan.warnings` instead.

The database URL is resolved by :func:`resolve_database_url`, shared with the
``env.py`` that ``encmigrate init`` writes so that ``alembic upgrade`` and
``encmigrate ... --apply`` reach the same database.
"""

from __future__ import annotations

import configparser
import difflib
import enum
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from encmigrate.boundary import parse_database_url
from encmigrate.config import ConfigFile, KeysSettings, find_config
from encmigrate.crypto.codecs import TYPE_NAMES
from encmigrate.crypto.search import Normalize
from encmigrate.dependents import Dependent, find_dependents, warning_message
from encmigrate.errors import ConfigError, DatabaseError, PlanError
from encmigrate.identifiers import max_identifier_bytes, name_problem, shown

__all__ = [
    "DATABASE_URL_ENV",
    "ColumnPhase",
    "ColumnPlan",
    "Plan",
    "PlanError",
    "PlanWarning",
    "TablePlan",
    "load",
    "resolve_database_url",
    "safe_url",
]

DATABASE_URL_ENV = "ENCMIGRATE_DATABASE_URL"
ENCRYPTED_SUFFIX = "_encrypted"
SEARCH_SUFFIX = "_search"
VIEW_SUFFIX = "_secure"
# alembic init writes this placeholder; it names no database.
_ALEMBIC_PLACEHOLDER_URL = "driver://user:pass@localhost/dbname"
# Blind-index leak check: rows sampled per searchable column, and what counts as "few".
LEAK_SAMPLE_ROWS = 10_000
LEAK_MAX_DISTINCT = 20
LEAK_MAX_RATIO = 0.1

logger = logging.getLogger(__name__)


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
        return _split_table(self.table)[0]

    @property
    def table_name(self) -> str:
        return _split_table(self.table)[1]

    @property
    def encrypted_column(self) -> str:
        return self.column + ENCRYPTED_SUFFIX

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
        return _split_table(self.table)[0]

    @property
    def table_name(self) -> str:
        return _split_table(self.table)[1]


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


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def _split_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


# --- where the database URL comes from -------------------------------------------------------


def resolve_database_url(
    explicit: str | None = None,
    *,
    config: ConfigFile | None = None,
    environ: Mapping[str, str] | None = None,
    alembic_ini: str | os.PathLike[str] | None = None,
    alembic_url: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    required: bool = True,
) -> str | None:
    """The database URL in force: the first of these places that has one.

    ``explicit`` (``--database-url``) > ``ENCMIGRATE_DATABASE_URL`` > the plan's
    ``[database] url`` > ``sqlalchemy.url`` of the Alembic config. ``alembic_url``
    is that last value when the caller already has it (``env.py`` passes its
    ``config.get_main_option("sqlalchemy.url")``); otherwise ``alembic_ini`` or the
    plan's ``[alembic] config`` (or ``./alembic.ini``) is read. ``config`` is
    looked up with :func:`find_config` when not given. Raises ConfigError naming
    the four places when none has a URL and ``required``.
    """
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    if env.get(DATABASE_URL_ENV):
        return env[DATABASE_URL_ENV]
    if config is None:
        config = find_config(environ=env, cwd=cwd)
    database = config.table.get("database") if config is not None else None
    if isinstance(database, Mapping) and isinstance(database.get("url"), str):
        url: str = database["url"]
        if url:
            return url
    if alembic_url is None:
        ini = _alembic_ini_path(config, alembic_ini, cwd)
        alembic_url = _read_alembic_url(ini)
    if alembic_url and alembic_url != _ALEMBIC_PLACEHOLDER_URL:
        return alembic_url
    if not required:
        return None
    raise ConfigError(
        "no database URL: pass --database-url, set ENCMIGRATE_DATABASE_URL, "
        "add [database] url to encmigrate.toml, or set sqlalchemy.url in alembic.ini"
    )


def _alembic_ini_path(
    config: ConfigFile | None,
    explicit: str | os.PathLike[str] | None,
    cwd: str | os.PathLike[str] | None,
) -> Path:
    if explicit is not None:
        return Path(explicit)
    if config is not None:
        alembic = config.table.get("alembic")
        name = alembic.get("config") if isinstance(alembic, Mapping) else None
        return config.directory / (name if isinstance(name, str) and name else "alembic.ini")
    return (Path.cwd() if cwd is None else Path(cwd)) / "alembic.ini"


def _read_alembic_url(ini: Path) -> str | None:
    if not ini.is_file():
        return None
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        return parser.get("alembic", "sqlalchemy.url", fallback=None) or None
    except configparser.Error:
        # Not the parser's text: it quotes the line, which holds the URL and its password
        # (a `%` in a password is a configparser interpolation error).
        raise ConfigError(
            f"{ini}: cannot read sqlalchemy.url (write a literal % as %%, or set "
            "ENCMIGRATE_DATABASE_URL instead)"
        ) from None


# --- loading ----------------------------------------------------------------------------------


_SECTIONS: dict[str, type[BaseModel]] = {
    "database": DatabaseSettings,
    "alembic": AlembicSettings,
    "keys": KeysSettings,
    "migration": MigrationSettings,
}
_TOP_LEVEL = (*_SECTIONS, "columns", "tables")


def load(
    config: ConfigFile | str | os.PathLike[str] | None = None,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check_database: bool = True,
) -> Plan:
    """Read and validate the plan; raise :class:`PlanError` listing every problem.

    With ``check_database`` (the default) the planned tables and columns are
    checked against the live schema of the resolved database: existence,
    declared type, primary key, and the blind-index leak figure of searchable
    columns. An unreachable database raises DatabaseError (exit 4) when the
    file itself is fine; otherwise the file's problems are reported first.
    """
    env = os.environ if environ is None else environ
    found = config if isinstance(config, ConfigFile) else find_config(config, environ=env, cwd=cwd)
    if found is None:
        raise ConfigError(
            "no plan found: create encmigrate.toml (`encmigrate init` writes a starter), "
            "add [tool.encmigrate] to pyproject.toml, or pass --config"
        )
    url = resolve_database_url(database_url, config=found, environ=env, cwd=cwd, required=False)
    if url is not None:
        # A URL that does not parse is a one-line ConfigError naming where it was set (never
        # the URL: it may hold a password), whatever the command goes on to do.
        parse_database_url(url, origin=_url_origin(found, url))
    # Names are checked against the identifier limit (in bytes) of the database they go to.
    limit = max_identifier_bytes(url)
    problems: list[str] = []
    sections = _validate_sections(found, problems)
    view_names = _validate_tables(found, problems, limit)
    columns = _validate_columns(found, problems, limit)
    tables = _validate_default_views(
        found, _group(columns, view_names), view_names, problems, limit
    )
    warnings: list[PlanWarning] = []
    if check_database and url is None:
        problems.append(
            f"{found.path}: no database URL to check the plan against: add [database] url, "
            "set ENCMIGRATE_DATABASE_URL or pass --database-url"
        )
    elif check_database and url is not None and tables:
        try:
            tables = _check_live_schema(found, url, tables, problems, warnings)
        except DatabaseError:
            if problems:
                problems.append("(the database checks were skipped: the database is unreachable)")
                raise PlanError(problems) from None
            raise
    if problems:
        raise PlanError(problems)
    for warning in warnings:
        logger.info("plan warning: %s", warning)
    alembic = sections.get("alembic")
    alembic_name = alembic.config if isinstance(alembic, AlembicSettings) else "alembic.ini"
    keys = sections.get("keys")
    migration = sections.get("migration")
    return Plan(
        source=found.path,
        database_url=url,
        alembic_config=(found.directory / alembic_name).resolve(),
        keys=keys if isinstance(keys, KeysSettings) else KeysSettings(),
        migration=migration if isinstance(migration, MigrationSettings) else MigrationSettings(),
        tables=tables,
        warnings=tuple(warnings),
    )


def _problems_from(exc: ValidationError, found: ConfigFile, prefix: str) -> list[str]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join([prefix, *(str(p) for p in error["loc"])]) if error["loc"] else prefix
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against the README's plan reference"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{found.where(location)}: {message}")
    return problems


def _validate_sections(found: ConfigFile, problems: list[str]) -> dict[str, BaseModel]:
    for key in found.table:
        if key not in _TOP_LEVEL:
            problems.append(
                f"{found.where(key)}: unknown key; valid top-level keys are {', '.join(_TOP_LEVEL)}"
            )
    sections: dict[str, BaseModel] = {}
    for name, model in _SECTIONS.items():
        raw = found.table.get(name, {})
        if not isinstance(raw, Mapping):
            problems.append(f"{found.where(name)}: must be a table ([{name}])")
            continue
        try:
            sections[name] = model.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, found, name))
    return sections


def _validate_tables(found: ConfigFile, problems: list[str], limit: int | None) -> dict[str, str]:
    raw = found.table.get("tables", {})
    if not isinstance(raw, Mapping):
        problems.append(f'{found.where("tables")}: must be a table ([tables."<table>"])')
        return {}
    views: dict[str, str] = {}
    for table, settings in raw.items():
        # The key is the user's text: shown with its unsafe characters replaced.
        location = f"tables.{shown(table)}"
        if not isinstance(settings, Mapping):
            problems.append(f"{found.where(location)}: must be a table")
            continue
        try:
            parsed = TableSettings.model_validate(settings)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, found, location))
            continue
        problem = name_problem(table)
        if problem is not None:
            problems.append(f"{found.where(location)}: the table name {problem}")
            continue
        if parsed.view is not None:
            problem = name_problem(parsed.view, limit=limit)
            if problem is not None:
                problems.append(f"{found.where(location + '.view')}: the view name {problem}")
                continue
            views[table] = parsed.view
    return views


def _validate_columns(
    found: ConfigFile, problems: list[str], limit: int | None
) -> list[ColumnPlan]:
    raw = found.table.get("columns", [])
    if not isinstance(raw, list):
        problems.append(f"{found.where('columns')}: must be an array of tables ([[columns]])")
        return []
    if not raw:
        problems.append(
            f"{found.where('columns')}: no columns planned; add a [[columns]] entry per column"
        )
    columns: list[ColumnPlan] = []
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(raw):
        location = f"columns[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{found.where(location)}: must be a table")
            continue
        key = (str(entry.get("table")), str(entry.get("column")))
        parsed: ColumnEntry | None = None
        try:
            parsed = ColumnEntry.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, found, location))
        if key in seen:
            problems.append(
                f"{found.where(location)}: duplicate of columns[{seen[key]}] "
                f"({shown(key[0])}.{shown(key[1])}); keep one entry per column"
            )
            continue
        seen[key] = index
        if parsed is None:
            continue
        named = _name_problems(found, location, parsed, limit)
        if named:
            problems += named
            continue  # a refused name goes no further: not to the database, not to SQL
        if parsed.normalize is not Normalize.NONE and not parsed.searchable:
            problems.append(
                f"{found.where(location + '.normalize')}: only applies to searchable columns; "
                "set searchable = true or remove normalize"
            )
        if parsed.unique_token and not parsed.searchable:
            problems.append(
                f"{found.where(location + '.unique_token')}: only applies to searchable columns "
                "(the uniqueness moves to the search token); set searchable = true or remove "
                "unique_token"
            )
        data = parsed.model_dump()
        data["context"] = parsed.context or f"{parsed.table}.{parsed.column}"
        columns.append(ColumnPlan.model_validate(data))
    return columns


def _name_problems(
    found: ConfigFile, location: str, entry: ColumnEntry, limit: int | None
) -> list[str]:
    """The problems of an entry's table and column names (one per name at most)."""
    problems = []
    schema, table = _split_table(entry.table)
    for part, name in (("schema", schema), ("table", table)):
        problem = None if name is None else name_problem(name, limit=limit)
        if problem is not None:
            problems.append(f"{found.where(location + '.table')}: the {part} name {problem}")
    # The longest name derived from the column is <column>_encrypted.
    suffix = max(ENCRYPTED_SUFFIX, SEARCH_SUFFIX, key=len)
    problem = name_problem(entry.column, suffix=suffix, limit=limit)
    if problem is not None:
        problems.append(f"{found.where(location + '.column')}: the column name {problem}")
    return problems


def _validate_default_views(
    found: ConfigFile,
    tables: Sequence[TablePlan],
    views: Mapping[str, str],
    problems: list[str],
    limit: int | None,
) -> tuple[TablePlan, ...]:
    """The tables whose view name fits: without a ``view`` setting it is ``<table>_secure``."""
    locations = _column_locations(found)
    kept = []
    for table in tables:
        problem = None
        if table.table not in views:
            problem = name_problem(table.table_name, suffix=VIEW_SUFFIX, limit=limit)
        if problem is None:
            kept.append(table)
            continue
        where = locations.get((table.table, table.columns[0].column), "columns")
        problems.append(
            f"{found.where(where + '.table')}: the table name {problem}; or name the view "
            'with view = "..." under [tables] for this table'
        )
    return tuple(kept)


def _group(columns: Sequence[ColumnPlan], views: Mapping[str, str]) -> tuple[TablePlan, ...]:
    order: dict[str, list[ColumnPlan]] = {}
    for column in columns:
        order.setdefault(column.table, []).append(column)
    return tuple(
        TablePlan(
            table=name,
            view=views.get(name, _split_table(name)[1] + VIEW_SUFFIX),
            columns=tuple(planned),
        )
        for name, planned in order.items()
    )


# --- checks against the live schema -----------------------------------------------------------


_TEXTUAL = (sa.String,)
_FITS: dict[str, tuple[type[Any], ...]] = {
    "string": _TEXTUAL,
    "text": _TEXTUAL,
    "integer": (sa.Integer,),
    "bigint": (sa.Integer,),
    "float": (sa.Float,),
    "numeric": (sa.Numeric,),
    "boolean": (sa.Boolean,),
    "date": (sa.Date,),
    "datetime": (sa.DateTime,),
    "time": (sa.Time,),
    "binary": (sa.LargeBinary, sa.BINARY, sa.VARBINARY),
    "json": (sa.JSON,),
}


def type_fits(plan_type: str, column_type: sa.types.TypeEngine[Any]) -> bool:
    """Whether a live column of ``column_type`` can hold values of ``plan_type``.

    Its natural SQL type fits, and so does any text column (values parsed one
    by one; a value that does not parse goes to the failures table). A column
    without a declared type (SQLite) fits anything.
    """
    if isinstance(column_type, sa.types.NullType | sa.String):
        return True
    if plan_type == "numeric" and isinstance(column_type, sa.Float):
        return False  # a float column holds inexact values; numeric promises exact ones
    return isinstance(column_type, _FITS[plan_type])


def _url_origin(found: ConfigFile, url: str) -> str | None:
    """``<plan>: database.url`` when the URL is the plan's own, else None (set elsewhere)."""
    database = found.table.get("database")
    if isinstance(database, dict) and database.get("url") == url:
        return found.where("database.url")
    return None


def _check_live_schema(
    found: ConfigFile,
    url: str,
    tables: tuple[TablePlan, ...],
    problems: list[str],
    warnings: list[PlanWarning],
) -> tuple[TablePlan, ...]:
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError):
        # Not the driver's text: it can quote the URL, password included.
        problems.append(
            f"{found.where('database.url')}: not a usable database URL (it names a dialect or "
            "driver that is not installed)"
        )
        return tables
    locations = _column_locations(found)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            checked = tuple(
                _check_table(connection, inspector, table, found, locations, problems, warnings)
                for table in tables
            )
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot reach the database {safe_url(url)} to check the plan "
            f"({type(exc.orig).__name__ if exc.orig is not None else 'error'})"
        ) from None
    finally:
        engine.dispose()
    return checked


def _column_locations(found: ConfigFile) -> dict[tuple[str, str], str]:
    raw = found.table.get("columns", [])
    locations: dict[tuple[str, str], str] = {}
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(entry, Mapping):
            key = (str(entry.get("table")), str(entry.get("column")))
            locations.setdefault(key, f"columns[{index}]")
    return locations


def _check_table(
    connection: sa.Connection,
    inspector: sa.Inspector,
    table: TablePlan,
    found: ConfigFile,
    locations: Mapping[tuple[str, str], str],
    problems: list[str],
    warnings: list[PlanWarning],
) -> TablePlan:
    first = locations.get((table.table, table.columns[0].column), "columns")
    if not inspector.has_table(table.table_name, schema=table.schema_name):
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} does not exist in the "
            "database; check the name (schema-qualified as 'schema.table', case kept)"
        )
        return table
    live = {c["name"]: c for c in inspector.get_columns(table.table_name, schema=table.schema_name)}
    primary_key = tuple(
        inspector.get_pk_constraint(table.table_name, schema=table.schema_name).get(
            "constrained_columns"
        )
        or ()
    )
    if not primary_key:
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} has no primary key; "
            "the backfill pages by key (composite keys are fine): add one first"
        )
    if connection.dialect.name == "sqlite" and _without_rowid(connection, table.table_name):
        problems.append(
            f"{found.where(first + '.table')}: table {table.table!r} is a WITHOUT ROWID table; "
            "encmigrate's SQLite trigger updates rows by rowid: use a rowid table"
        )
    columns = []
    for column in table.columns:
        where = locations.get((column.table, column.column), "columns")
        phase = _phase(column, live)
        columns.append(column.model_copy(update={"phase": phase}))
        if phase is ColumnPhase.DROPPED:
            continue
        if column.column not in live:
            close = difflib.get_close_matches(column.column, list(live), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "check the name (case kept)"
            problems.append(
                f"{found.where(where + '.column')}: column {column.column!r} does not exist in "
                f"{table.table!r}; {hint}"
            )
            continue
        live_type = live[column.column]["type"]
        if not type_fits(column.type, live_type):
            problems.append(
                f"{found.where(where + '.type')}: type {column.type!r} does not fit the "
                f"column's SQL type {_type_name(connection, live_type)}; declare the matching "
                "type (see the README's plan reference) or store the values in a text column"
            )
        elif column.searchable:
            warning = _leak_warning(connection, column, found.where(where + ".searchable"))
            if warning is not None:
                warnings.append(warning)
    checked = table.model_copy(update={"columns": tuple(columns), "primary_key": primary_key})
    return _check_dependents(connection, checked, live, found, locations, problems, warnings)


def _check_dependents(
    connection: sa.Connection,
    table: TablePlan,
    live: Mapping[str, Any],
    found: ConfigFile,
    locations: Mapping[tuple[str, str], str],
    problems: list[str],
    warnings: list[PlanWarning],
) -> TablePlan:
    """Attach to each column what depends on its plaintext, found before anything is written.

    A primary key, partition key or inherited column cannot be encrypted: a
    problem. Everything else is a warning; a blocking one says that step 5 will
    refuse until the operator deals with it.
    """
    present = tuple(c for c in table.columns if c.phase is not ColumnPhase.DROPPED)
    present = tuple(c for c in present if c.column in live)
    if not present:
        return table
    dependents = find_dependents(connection, [table.model_copy(update={"columns": present})])
    for dependent in dependents:
        location = locations.get((dependent.table, dependent.column), "columns")
        where = found.where(location + ".column")
        if dependent.unencryptable:
            problems.append(
                f"{where}: {dependent.column!r} cannot be encrypted: {dependent.effect}; "
                f"{dependent.action}"
            )
        else:
            warnings.append(PlanWarning(where, warning_message(dependent)))
    columns = tuple(
        column.model_copy(
            update={"dependents": tuple(d for d in dependents if d.column == column.column)}
        )
        for column in table.columns
    )
    return table.model_copy(update={"columns": columns})


def _without_rowid(connection: sa.Connection, table: str) -> bool:
    sql = connection.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table},
    ).scalar()
    return bool(sql) and re.search(r"\)\s*WITHOUT\s+ROWID", str(sql), re.IGNORECASE) is not None


def _phase(column: ColumnPlan, live: Mapping[str, Any]) -> ColumnPhase:
    has_plain = column.column in live
    has_shadow = column.encrypted_column in live
    if has_plain and has_shadow:
        return ColumnPhase.SHADOWED
    if has_shadow:
        return ColumnPhase.DROPPED
    return ColumnPhase.PLAIN


def _type_name(connection: sa.Connection, type_: sa.types.TypeEngine[Any]) -> str:
    try:
        return type_.compile(dialect=connection.dialect)
    except sa.exc.CompileError:
        return type(type_).__name__


def _leak_warning(connection: sa.Connection, column: ColumnPlan, where: str) -> PlanWarning | None:
    """A warning when the blind index of ``column`` would reveal its values.

    A deterministic token maps equal values to equal tokens: with few distinct
    values, counting tokens is frequency analysis, and one known row reveals
    every row sharing its value. Sampled (LEAK_SAMPLE_ROWS) to stay cheap.
    """
    if column.type == "json":
        return None  # json has no equality on PostgreSQL; a JSON blind index is rare anyway
    if column.type == "boolean":
        return PlanWarning(
            where,
            "a boolean has at most 2 distinct values: its blind index reveals every row's "
            "value to anyone who knows one row; set searchable = false",
        )
    target = sa.table(column.table_name, sa.column(column.column), schema=column.schema_name)
    sample = (
        sa.select(target.c[column.column].label("value"))
        .where(target.c[column.column].is_not(None))
        .limit(LEAK_SAMPLE_ROWS)
        .subquery()
    )
    query = sa.select(sa.func.count(sa.distinct(sample.c.value)), sa.func.count(sample.c.value))
    distinct, rows = connection.execute(query).one()
    if rows < 2 * distinct or rows == 0:
        return None
    ratio = distinct / rows
    if distinct > LEAK_MAX_DISTINCT and ratio >= LEAK_MAX_RATIO:
        return None
    return PlanWarning(
        where,
        f"{distinct} distinct values in {rows} non-null rows sampled (ratio {ratio:.3f}): "
        "its blind index reveals which rows share a value (frequency analysis); "
        "set searchable = false unless lookups by value are needed",
    )
