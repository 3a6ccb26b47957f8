"""A throwaway project (Alembic environment + plan) on a test database, for the generator tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from encmigrate import plan as plan_module
from encmigrate.plan import Plan
from encmigrate.revisions.generate import alembic_config
from encmigrate.scaffold import init


@dataclass
class Project:
    """A directory with alembic.ini, alembic/ and encmigrate.toml, pointed at ``url``."""

    directory: Path
    url: str

    @property
    def plan_file(self) -> Path:
        return self.directory / "encmigrate.toml"

    def write_plan(self, columns: str, extra: str = "") -> None:
        self.plan_file.write_text(
            f'[database]\nurl = "{self.url}"\n{extra}\n{columns}', encoding="utf-8"
        )

    def plan(self) -> Plan:
        return plan_module.load(self.plan_file, environ={})

    def alembic(self) -> Config:
        return alembic_config(self.plan())

    def upgrade(self, revision: str = "head") -> None:
        command.upgrade(self.alembic(), revision)

    def downgrade(self, revision: str = "-1") -> None:
        command.downgrade(self.alembic(), revision)

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)

    def revisions(self) -> list[Path]:
        return sorted((self.directory / "alembic" / "versions").glob("*.py"))


def make_project(directory: Path, url: str, columns: str, extra: str = "") -> Project:
    init(directory)
    project = Project(directory, url)
    project.write_plan(columns, extra)
    return project


def column(table: str, name: str, **options: Any) -> str:
    """One [[columns]] entry."""
    lines = ["[[columns]]", f'table = "{table}"', f'column = "{name}"']
    for key, value in options.items():
        rendered = str(value).lower() if isinstance(value, bool) else f'"{value}"'
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def execute(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), params or {})
    finally:
        engine.dispose()


def columns_of(url: str, table: str) -> list[str]:
    """The column names of ``table``, in table order."""
    engine = sa.create_engine(url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def schema_of(url: str, schemas: tuple[str | None, ...] = (None,)) -> dict[str, Any]:
    """Tables, views, columns (name, type, nullable), indexes and triggers, for comparison."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            found: dict[str, Any] = {}
            for schema in schemas:
                for table in inspector.get_table_names(schema=schema):
                    if table == "alembic_version":
                        continue
                    found[f"{schema}.{table}"] = {
                        "columns": [
                            (c["name"], str(c["type"]), c["nullable"])
                            for c in inspector.get_columns(table, schema=schema)
                        ],
                        "indexes": sorted(
                            (i["name"], tuple(i["column_names"]))
                            for i in inspector.get_indexes(table, schema=schema)
                        ),
                        "pk": inspector.get_pk_constraint(table, schema=schema)[
                            "constrained_columns"
                        ],
                    }
                for view in inspector.get_view_names(schema=schema):
                    found[f"view {schema}.{view}"] = [
                        c["name"] for c in inspector.get_columns(view, schema=schema)
                    ]
            found["triggers"] = _triggers(connection)
            return found
    finally:
        engine.dispose()


def _triggers(connection: sa.Connection) -> list[str]:
    if connection.dialect.name == "postgresql":
        query = (
            "SELECT tgrelid::regclass::text || ' ' || pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal ORDER BY 1"
        )
    else:
        query = "SELECT sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    return [str(row[0]) for row in connection.execute(sa.text(query))]


def psql(url: str, sql_text: str, tmp_path: Path) -> None:
    """Apply SQL text with psql, stopping at the first error (as a DBA would)."""
    script = tmp_path / "apply.sql"
    script.write_text(sql_text, encoding="utf-8")
    psql_file(url, script).check_returncode()


def psql_file(url: str, script: Path) -> subprocess.CompletedProcess[bytes]:
    """``psql -X -q -v ON_ERROR_STOP=1 -f script`` on the database of ``url``."""
    target = sa.make_url(url)
    return subprocess.run(
        [
            "psql",
            "-X",
            "-h",
            target.host or "127.0.0.1",
            "-p",
            str(target.port or 5432),
            "-U",
            target.username or "postgres",
            "-d",
            target.database or "",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            str(script),
        ],
        check=False,
        capture_output=True,
        env={**os.environ, "PGPASSWORD": target.password or ""},
    )
