"""Alembic environment, written by `encmigrate init`.

The database URL is resolved the way encmigrate resolves it
(encmigrate.plan.resolve_database_url): a URL handed over by encmigrate itself, then
ENCMIGRATE_DATABASE_URL, then the plan's [database] url, then sqlalchemy.url
below in alembic.ini. `alembic upgrade` and `encmigrate ... --apply` therefore
reach the same database. A caller may also pass an open connection in
config.attributes["connection"] (Alembic's cookbook recipe).
"""

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from encmigrate.plan import resolve_database_url

config = context.config

# encmigrate runs Alembic in-process and keeps its own logging setup.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Point this at your models' MetaData to use `alembic revision --autogenerate`.
target_metadata = None


def database_url() -> str:
    handed_over = config.attributes.get("encmigrate.database_url")
    if handed_over:
        return str(handed_over)
    url = resolve_database_url(alembic_url=config.get_main_option("sqlalchemy.url"))
    assert url is not None  # resolve_database_url raises when no URL is found
    return url


def run_migrations_offline() -> None:
    """Render the SQL (alembic upgrade --sql) without a database connection."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_with(given)
        return
    engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
