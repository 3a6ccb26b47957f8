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

* :mod:`encmigrate.plan.model`: the plan, its tables and columns, the entry models;
* :mod:`encmigrate.plan.validation`: the file's own rules;
* :mod:`encmigrate.plan.live`: the checks against the live schema;
* :mod:`encmigrate.plan.database_url`: where the database URL comes from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from encmigrate.boundary import parse_database_url
from encmigrate.config import ConfigFile, KeysSettings, find_config
from encmigrate.database import NO_DATABASE_URL
from encmigrate.errors import ConfigError, DatabaseError, PlanError
from encmigrate.identifiers import max_identifier_bytes
from encmigrate.plan.database_url import (
    DATABASE_URL_ENV,
    resolve_database_url,
    safe_url,
    url_origin,
)
from encmigrate.plan.live import LEAK_MAX_DISTINCT as LEAK_MAX_DISTINCT
from encmigrate.plan.live import LEAK_MAX_RATIO as LEAK_MAX_RATIO
from encmigrate.plan.live import LEAK_SAMPLE_ROWS as LEAK_SAMPLE_ROWS
from encmigrate.plan.live import check_live_schema
from encmigrate.plan.live import type_fits as type_fits
from encmigrate.plan.model import AlembicSettings as AlembicSettings
from encmigrate.plan.model import ColumnEntry as ColumnEntry
from encmigrate.plan.model import (
    ColumnPhase,
    ColumnPlan,
    Plan,
    PlanWarning,
    TablePlan,
)
from encmigrate.plan.model import DatabaseSettings as DatabaseSettings
from encmigrate.plan.model import MigrationSettings as MigrationSettings
from encmigrate.plan.model import TableSettings as TableSettings
from encmigrate.plan.validation import (
    group_tables,
    validate_columns,
    validate_default_views,
    validate_sections,
    validate_tables,
)

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

logger = logging.getLogger(__name__)


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
        parse_database_url(url, origin=url_origin(found, url))
    # Names are checked against the identifier limit (in bytes) of the database they go to.
    limit = max_identifier_bytes(url)
    problems: list[str] = []
    sections = validate_sections(found, problems)
    view_names = validate_tables(found, problems, limit)
    columns = validate_columns(found, problems, limit)
    tables = validate_default_views(
        found, group_tables(columns, view_names), view_names, problems, limit
    )
    warnings: list[PlanWarning] = []
    if check_database and url is None:
        problems.append(f"{found.path}: {NO_DATABASE_URL} (the plan is checked against it)")
    elif check_database and url is not None and tables:
        try:
            tables = check_live_schema(found, url, tables, problems, warnings)
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
