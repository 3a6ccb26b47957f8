"""``rehearse``: the five steps and their downgrades on a throwaway PostgreSQL, for CI.

What a user's CI runs before the real migration. On a database created for
the occasion (:mod:`encmigrate.testdb`: ``ENCMIGRATE_TEST_DATABASE_URL``, a
testcontainers ``PostgresContainer`` when Docker answers, else a local
server) it puts the schema, then rows, then runs add-columns, migrate-data
(dry run, then for real), verify, create-views, drop-unencrypted, verify
again, and every downgrade back to where it started, with decrypt-back
refilling the plaintext. It ends by comparing the schema and the planned
values with what they were before add-columns: the round trip must be exact.

The schema comes from the user's Alembic history (``alembic upgrade head``),
or, for a database Alembic never managed, from the database itself
(``schema_from``: ``pg_dump --schema-only``, never a row) or from a schema
dump (``schema_file``). The rows come from a SQL file (``load``), generated
rows that the schema accepts (``rows``; see :mod:`.generated_rows`), or a
sample of real rows (``sample_from``; see :mod:`.sampled_rows`), which stay
in the throwaway database and go when it is dropped.

Nothing is written into the user's tree: the revisions land in a temporary
Alembic project (:mod:`.alembic_project`), a copy of the user's with the
history, an empty one with a schema source. The keys are a fresh
:meth:`Keyring.generate`, never the user's. The source databases are only
read. Nothing here prints; :func:`rehearse` returns a
:class:`RehearsalReport` and reports each finished step to ``on_step``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from encmigrate import plan as plan_module
from encmigrate.boundary import parse_database_url
from encmigrate.config import find_config
from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import ConfigError
from encmigrate.rehearse.report import (
    DEFAULT_ROWS,
    RehearsalReport,
    RehearseOptions,
    StepCallback,
    StepResult,
)
from encmigrate.testdb import (
    MariaDBServer,
    TestServer,
    create_database,
    drop_database,
    find_mariadb_server,
    find_postgres_server,
)

__all__ = ["DEFAULT_ROWS", "RehearsalReport", "RehearseOptions", "StepResult", "rehearse"]


def rehearse(
    config: str | os.PathLike[str] | None = None,
    *,
    options: RehearseOptions | None = None,
    server: TestServer | None = None,
    environ: Mapping[str, str] | None = None,
    on_step: StepCallback | None = None,
) -> RehearsalReport:
    """Rehearse the whole migration of the plan ``config`` on a throwaway database.

    ``server`` is found with :func:`find_postgres_server` (or
    :func:`find_mariadb_server`: ``options.backend``, else the family of the plan's
    database URL) when not given, and closed afterwards if it was started here.
    The database created on it is dropped at the end, whatever happened.
    """
    # Alembic and psycopg are imported here, not with the package: the CLI imports
    # encmigrate.rehearse.report at start-up and must stay quick.
    from encmigrate.rehearse.alembic_project import copy_alembic, empty_project
    from encmigrate.rehearse.steps import Rehearsal

    opts = options or RehearseOptions()
    env = dict(os.environ if environ is None else environ)
    found = find_config(config, environ=env)
    if found is None:
        raise ConfigError(
            "no plan found: create encmigrate.toml, add [tool.encmigrate] to pyproject.toml, "
            "or pass --config"
        )
    offline = plan_module.load(found, environ=env, check_database=False)
    report = RehearsalReport(production_rows=opts.production_rows)
    report.schema, report.alembic = _sources(opts)
    owned = server is None
    target = server if server is not None else _find_server(opts.backend, offline)
    report.server = target.source
    report.database = "MariaDB" if isinstance(target, MariaDBServer) else "PostgreSQL"
    try:
        url = create_database(target)
        try:
            with tempfile.TemporaryDirectory(prefix="encmigrate-rehearse-") as scratch:
                if opts.schema_source:
                    ini = empty_project(Path(scratch))
                else:
                    ini = copy_alembic(offline.alembic_config, Path(scratch))
                Rehearsal(found.path, url, ini, env, opts, report, on_step).run()
        finally:
            drop_database(target, url)
    finally:
        if owned:
            target.close()
    return report


def _find_server(backend: str | None, plan: plan_module.Plan) -> TestServer:
    """The throwaway server of ``backend``; without one, of the plan's database family."""
    if backend is None and plan.database_url is not None:
        family = parse_database_url(plan.database_url).get_backend_name()
        backend = "mariadb" if family in MYSQL_DIALECTS else "postgresql"
    if backend == "mariadb":
        return find_mariadb_server()
    return find_postgres_server()


def _sources(opts: RehearseOptions) -> tuple[str, str]:
    """Where the schema comes from and where the revisions go, checking the URLs first."""
    from encmigrate.rehearse.postgres_url import PostgresUrl

    if opts.sample_from is not None:
        PostgresUrl.parse(opts.sample_from, "--sample-from")
    if opts.schema_from is not None:
        shown = PostgresUrl.parse(opts.schema_from, "--schema-from").display
        return f"{shown} (pg_dump --schema-only)", "a temporary empty Alembic project"
    if opts.schema_file is not None:
        return str(opts.schema_file), "a temporary empty Alembic project"
    return "your Alembic history", "a temporary copy of your Alembic project"
