"""The file's own rules: sections, ``[tables]``, ``[[columns]]``, names and default view names.

Each check appends its problems (each with the file and key it comes from and
what to do) to the caller's list instead of raising, so that
:func:`encmigrate.plan.load` reports every problem at once. A name the
identifier rules refuse goes no further: not to the database, not to SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ValidationError

from encmigrate.config import ConfigFile, KeysSettings
from encmigrate.crypto.search import Normalize
from encmigrate.identifiers import name_problem, shown
from encmigrate.plan.model import (
    AlembicSettings,
    ColumnEntry,
    ColumnPlan,
    DatabaseSettings,
    MigrationSettings,
    TablePlan,
    TableSettings,
    split_table,
)
from encmigrate.spec import SEARCH_SUFFIX, SHADOW_SUFFIX, VIEW_SUFFIX, default_context

_SECTIONS: dict[str, type[BaseModel]] = {
    "database": DatabaseSettings,
    "alembic": AlembicSettings,
    "keys": KeysSettings,
    "migration": MigrationSettings,
}
_TOP_LEVEL = (*_SECTIONS, "columns", "tables")


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


def validate_sections(found: ConfigFile, problems: list[str]) -> dict[str, BaseModel]:
    """The top-level sections as their settings models; unknown top-level keys are problems."""
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


def validate_tables(found: ConfigFile, problems: list[str], limit: int | None) -> dict[str, str]:
    """Each ``[tables."<table>"]`` entry checked; returns table -> view name where one is set."""
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


def validate_columns(found: ConfigFile, problems: list[str], limit: int | None) -> list[ColumnPlan]:
    """Each ``[[columns]]`` entry checked; returns the columns that passed, context defaulted."""
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
        data["context"] = parsed.context or default_context(parsed.table, parsed.column)
        columns.append(ColumnPlan.model_validate(data))
    return columns


def _name_problems(
    found: ConfigFile, location: str, entry: ColumnEntry, limit: int | None
) -> list[str]:
    """The problems of an entry's table and column names (one per name at most)."""
    problems = []
    schema, table = split_table(entry.table)
    for part, name in (("schema", schema), ("table", table)):
        problem = None if name is None else name_problem(name, limit=limit)
        if problem is not None:
            problems.append(f"{found.where(location + '.table')}: the {part} name {problem}")
    # The longest name derived from the column is <column>_encrypted.
    suffix = max(SHADOW_SUFFIX, SEARCH_SUFFIX, key=len)
    problem = name_problem(entry.column, suffix=suffix, limit=limit)
    if problem is not None:
        problems.append(f"{found.where(location + '.column')}: the column name {problem}")
    return problems


def validate_default_views(
    found: ConfigFile,
    tables: Sequence[TablePlan],
    views: Mapping[str, str],
    problems: list[str],
    limit: int | None,
) -> tuple[TablePlan, ...]:
    """The tables whose view name fits: without a ``view`` setting it is ``<table>_secure``."""
    locations = column_locations(found)
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


def group_tables(columns: Sequence[ColumnPlan], views: Mapping[str, str]) -> tuple[TablePlan, ...]:
    """The columns grouped by table, in plan order, each table with its view name."""
    order: dict[str, list[ColumnPlan]] = {}
    for column in columns:
        order.setdefault(column.table, []).append(column)
    return tuple(
        TablePlan(
            table=name,
            view=views.get(name, split_table(name)[1] + VIEW_SUFFIX),
            columns=tuple(planned),
        )
        for name, planned in order.items()
    )


def column_locations(found: ConfigFile) -> dict[tuple[str, str], str]:
    """(table, column) as written -> ``columns[<index>]`` of its first entry, for messages."""
    raw = found.table.get("columns", [])
    locations: dict[tuple[str, str], str] = {}
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(entry, Mapping):
            key = (str(entry.get("table")), str(entry.get("column")))
            locations.setdefault(key, f"columns[{index}]")
    return locations
