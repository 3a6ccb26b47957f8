"""``encmigrate init``: an Alembic environment and a starter plan, adding only what is missing.

The Alembic environment comes from ``alembic.command.init`` (the ``generic``
template); its ``env.py`` is then replaced by :data:`ENV_PY`, which resolves the
database URL with :func:`encmigrate.plan.resolve_database_url` so that
``alembic upgrade`` and ``encmigrate ... --apply`` reach the same database. The
starter ``encmigrate.toml`` lists the database's tables as commented examples.
A file that exists is never overwritten.

The plan is written with a TOML writer (``tomlkit``), never by pasting text:
a table name is only ever a TOML string, even inside a comment, so a name
holding a newline and ``[[columns]]`` cannot add an entry to the plan. The
database URL is stored without its password (the plan is an ordinary,
world-readable file that often ends up in version control): the full URL
belongs in ``ENCMIGRATE_DATABASE_URL``, or the password in ``~/.pgpass`` or
``PGPASSWORD``, which the driver reads when the URL has none.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
import tomlkit
import tomlkit.items
from alembic import command
from alembic.util import CommandError

from encmigrate.boundary import mapped_errors
from encmigrate.database import connect, read_only
from encmigrate.errors import ConfigError
from encmigrate.plan import DATABASE_URL_ENV
from encmigrate.revisions.generate import quiet_config

__all__ = ["ENV_PY", "InitResult", "init", "starter_plan", "url_without_password"]

logger = logging.getLogger(__name__)

ENV_PY = '''"""Alembic environment, written by `encmigrate init`.

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
'''


@dataclass(frozen=True, slots=True)
class InitResult:
    """Files ``init`` created and files it left alone because they existed.

    ``notes`` are lines for the user, e.g. that the password was not stored.
    """

    directory: Path
    created: tuple[Path, ...] = field(default=())
    kept: tuple[Path, ...] = field(default=())
    tables: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


def init(directory: str | os.PathLike[str], *, database_url: str | None = None) -> InitResult:
    """Create ``alembic.ini``, ``alembic/`` and ``encmigrate.toml`` in ``directory``.

    ``database_url`` goes into the plan's ``[database] url`` without its password
    (``notes`` says so); when given, the database's tables are listed in the plan
    as commented examples.
    """
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    kept: list[Path] = []
    ini, scripts = root / "alembic.ini", root / "alembic"
    env_py = scripts / "env.py"
    if not scripts.exists():
        config = quiet_config(ini)
        if ini.exists():
            kept.append(ini)
        try:
            # command.init writes alembic.ini only when it is missing. Its template
            # copier ignores --quiet and writes to sys.stdout: nothing here prints.
            with contextlib.redirect_stdout(io.StringIO()):
                command.init(config, str(scripts), template="generic")
        except CommandError as exc:
            raise ConfigError(f"alembic init failed in {root}: {exc}") from None
        created += [p for p in (ini, scripts) if p not in kept]
        env_py.write_text(ENV_PY, encoding="utf-8")
        _set_placeholder_url_comment(ini)
    else:
        kept.append(scripts)
        if not ini.exists():
            ini.write_text(_minimal_ini(), encoding="utf-8")
            created.append(ini)
        else:
            kept.append(ini)
        for name, text in (("env.py", ENV_PY), ("script.py.mako", _script_template())):
            target = scripts / name
            if target.exists():
                kept.append(target)
            else:
                target.write_text(text, encoding="utf-8")
                created.append(target)
        versions = scripts / "versions"
        if not versions.exists():
            versions.mkdir()
            created.append(versions)
    plan_file = root / "encmigrate.toml"
    tables: tuple[str, ...] = ()
    notes: list[str] = []
    if plan_file.exists():
        kept.append(plan_file)
    else:
        tables = list_tables(database_url) if database_url else ()
        plan_file.write_text(starter_plan(database_url, tables), encoding="utf-8")
        created.append(plan_file)
        if database_url and url_without_password(database_url) != database_url:
            notes.append(
                f"the database password was not written to {plan_file.name}: set "
                f"{DATABASE_URL_ENV} to the full URL, or keep the password in ~/.pgpass "
                "or PGPASSWORD"
            )
    logger.info("init %s: created %d, kept %d", root, len(created), len(kept))
    return InitResult(root, tuple(created), tuple(kept), tables, tuple(notes))


def _set_placeholder_url_comment(ini: Path) -> None:
    """Blank the template's ``driver://`` URL: the plan or environment names the database."""
    text = ini.read_text(encoding="utf-8")
    placeholder = "sqlalchemy.url = driver://user:pass@localhost/dbname"
    if placeholder in text:
        text = text.replace(
            placeholder,
            "# encmigrate: the URL comes from ENCMIGRATE_DATABASE_URL or encmigrate.toml\n"
            "# [database] url; a URL set here is used when neither is set.\nsqlalchemy.url =",
        )
        ini.write_text(text, encoding="utf-8")


def _minimal_ini() -> str:
    return (
        "[alembic]\nscript_location = %(here)s/alembic\nprepend_sys_path = .\n"
        "path_separator = os\nsqlalchemy.url =\n"
    )


def _script_template() -> str:
    from importlib.resources import files

    template = files("alembic") / "templates" / "generic" / "script.py.mako"
    return template.read_text(encoding="utf-8")


def list_tables(database_url: str) -> tuple[str, ...]:
    """The user tables of the database, schema-qualified outside the default schema."""
    engine = connect(database_url)
    try:
        with mapped_errors(), read_only(engine) as connection:
            inspector = sa.inspect(connection)
            names = [name for name in inspector.get_table_names() if not _internal(name)]
            if connection.dialect.name == "postgresql":
                for schema in inspector.get_schema_names():
                    if schema in {"public", "information_schema"} or schema.startswith("pg_"):
                        continue
                    names += [f"{schema}.{t}" for t in inspector.get_table_names(schema=schema)]
    finally:
        engine.dispose()
    return tuple(names)


def _internal(name: str) -> bool:
    return name == "alembic_version" or name.startswith("encryption_migration")


def url_without_password(database_url: str) -> str:
    """``database_url`` with its password (in the userinfo or the query) removed.

    A URL SQLAlchemy cannot parse is returned as it is only if it holds no
    ``@`` (nothing that looks like credentials); otherwise ConfigError.
    """
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError:
        if "@" in database_url:
            raise ConfigError(
                "--database-url: not a SQLAlchemy URL (dialect+driver://user@host/database)"
            ) from None
        return database_url
    if url.password is None and "password" not in url.query:
        return database_url
    # URL.set() leaves a field alone when given None: _replace clears it.
    url = url._replace(password=None).difference_update_query(["password"])
    return url.render_as_string(hide_password=False)


def starter_plan(database_url: str | None, tables: tuple[str, ...] = ()) -> str:
    """The text of a starter ``encmigrate.toml`` (written by a TOML writer).

    ``database_url`` is stored without its password; ``tables`` are shown in
    comments, each as a TOML string, so that no name can become a key.
    """
    plan = tomlkit.document()
    plan.add(
        tomlkit.comment(
            "encmigrate plan: which columns to encrypt. Every key is documented in README.md."
        )
    )
    plan.add(tomlkit.nl())
    database = tomlkit.table()
    if database_url:
        database.add("url", url_without_password(database_url))
        database.add(
            tomlkit.comment(
                f"No password here: put the full URL in {DATABASE_URL_ENV} (it wins over "
                "this one), or the password in ~/.pgpass or PGPASSWORD."
            )
        )
    else:
        database.add(
            tomlkit.comment(
                'url = "postgresql+psycopg://user@host:5432/app"  # or ENCMIGRATE_DATABASE_URL'
            )
        )
    plan.add("database", database)
    plan.add("alembic", _table(config="alembic.ini"))
    keys = _table(provider="file", path="keyring.json")
    keys["provider"].comment("env | file")
    plan.add("keys", keys)
    migration = _table(batch_size=1000)
    migration.add(tomlkit.nl())
    for line in _COLUMN_EXAMPLE:
        migration.add(tomlkit.comment(line))
    if tables:
        migration.add(tomlkit.nl())
        migration.add(tomlkit.comment("Tables in the database:"))
        for name in tables:
            migration.add(tomlkit.comment(f"  table = {tomlkit.string(name).as_string()}"))
    plan.add("migration", migration)
    return tomlkit.dumps(plan)


_COLUMN_EXAMPLE = (
    "One [[columns]] entry per column to encrypt, for example:",
    "[[columns]]",
    'table = "customer"        # "schema.table" outside the default schema',
    'column = "email"',
    'type = "string"           # string text integer bigint float numeric boolean',
    "                          # date datetime time binary json",
    "searchable = true         # adds email_search, a blind index for equality lookups",
    'normalize = "lower"       # none lower casefold strip lower+strip',
)


def _table(**values: object) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key, value in values.items():
        table.add(key, value)
    return table
