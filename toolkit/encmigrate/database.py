"""The one way encmigrate reaches a database: the URL it needs, the engine, how the URL is shown.

Every engine comes from :func:`connect`: the migrator's (batch work, with a
pool sized for its workers), the revision generators' and the plan check's
(through :func:`connection`, one short-lived engine). What differs between
database systems is in one place, the :class:`Backend` of each dialect in
:data:`BACKENDS`: the driver a bare URL gets, the engine options, what is set
up on each new connection and how a connection is made read-only. A new
dialect is one more entry there (and its faults in ``retry.py``).

Errors: a URL that does not parse, or names a dialect or driver that is not
installed, is a ConfigError naming where it was set (never the URL: it may
hold a password); database errors are translated by
:func:`encmigrate.boundary.mapped_errors`. A missing URL is the one
:data:`NO_DATABASE_URL` error of :func:`require_database_url`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from encmigrate.boundary import mapped_errors, parse_database_url
from encmigrate.errors import ConfigError

__all__ = [
    "BACKENDS",
    "MYSQL_DIALECTS",
    "MYSQL_URL_DEFAULTS",
    "NO_DATABASE_URL",
    "READ_ONLY_OPTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Backend",
    "backend_for",
    "connect",
    "connection",
    "driver_cursor",
    "read_only",
    "require_database_url",
    "safe_url",
]

NO_DATABASE_URL = (
    "no database URL: pass --database-url, set ENCMIGRATE_DATABASE_URL, "
    "add [database] url to encmigrate.toml, or set sqlalchemy.url in alembic.ini"
)
# How long a SQLite statement waits for another connection's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
# The execution option of read-only connections: on SQLite, no BEGIN at all.
READ_ONLY_OPTION = "encmigrate_read_only"
# MariaDB/MySQL: the connection character set when the URL names none. utf8mb4 holds every
# Unicode character (MySQL's "utf8" stops at 3 bytes: no emoji), so text round-trips.
MYSQL_URL_DEFAULTS: Mapping[str, str] = {"charset": "utf8mb4"}
# The SQLAlchemy dialect names of the MariaDB/MySQL family (one backend below).
MYSQL_DIALECTS: frozenset[str] = frozenset({"mysql", "mariadb"})


def _no_set_up(engine: sa.Engine) -> None:
    """Nothing to set up: the dialect's defaults serve."""


def _read_only_by_option(connection: sa.Connection) -> None:
    """Mark the connection so that :func:`_sqlite_set_up`'s ``begin`` issues nothing."""
    connection.execution_options(**{READ_ONLY_OPTION: True})


@dataclass(frozen=True, slots=True)
class Backend:
    """What encmigrate does differently on one database system.

    ``driver`` replaces a bare dialect name (``postgresql://``: SQLAlchemy's
    default driver is not the one installed); ``pool_options`` gives the
    engine's pool settings for a pool of the given size; ``engine_options``
    the other engine settings; ``url_defaults`` the URL query parameters set
    when the URL does not set them (the user's URL wins); ``set_up`` installs
    the engine's event hooks; ``make_read_only`` turns a connection, before
    its transaction begins, into one that cannot write (or take write locks).
    """

    driver: str | None = None
    pool_options: Callable[[int], Mapping[str, Any]] = field(default=lambda size: {})
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    url_defaults: Mapping[str, str] = field(default_factory=dict)
    set_up: Callable[[sa.Engine], None] = _no_set_up
    make_read_only: Callable[[sa.Connection], None] = _read_only_by_option


def _sqlite_set_up(engine: sa.Engine) -> None:
    """``BEGIN IMMEDIATE`` transactions and a busy timeout.

    The write lock is taken before a batch reads, so no other writer can slip
    between read and write; a read-only connection (:data:`READ_ONLY_OPTION`)
    opens no transaction at all and never takes it.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        if not connection.get_execution_options().get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgresql_pool(size: int) -> Mapping[str, Any]:
    return {"pool_size": size, "max_overflow": 2, "pool_pre_ping": True}


def _postgresql_read_only(connection: sa.Connection) -> None:
    connection.execution_options(postgresql_readonly=True)


def _mysql_pool(size: int) -> Mapping[str, Any]:
    # pool_recycle: the server closes a connection idle for wait_timeout (8 hours by default,
    # often lowered); a connection is replaced before an hour, and pre-ping catches the rest.
    return {"pool_size": size, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 3600}


def _mysql_set_up(engine: sa.Engine) -> None:
    """Read-only connections begin with ``START TRANSACTION READ ONLY``.

    The MySQL drivers begin transactions implicitly, at the first statement;
    a connection marked :data:`READ_ONLY_OPTION` begins its own, read-only, so
    a write in it fails (error 1792) instead of happening.
    """

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("START TRANSACTION READ ONLY")


# InnoDB's default, REPEATABLE READ, makes a locking read (the batch's SELECT ... FOR UPDATE)
# lock the gaps between the rows it scans too (next-key locks): the application's inserts
# into a key range being encrypted would wait for the batch, and deadlocks grow. READ
# COMMITTED locks only the rows read, as PostgreSQL's default does, which is the isolation
# the migrator is designed for (each batch re-reads what it writes, under its row locks).
_MYSQL = Backend(
    driver="pymysql",
    pool_options=_mysql_pool,
    engine_options={"isolation_level": "READ COMMITTED"},
    url_defaults=MYSQL_URL_DEFAULTS,
    set_up=_mysql_set_up,
)

BACKENDS: Mapping[str, Backend] = {
    "postgresql": Backend(
        driver="psycopg",
        pool_options=_postgresql_pool,
        make_read_only=_postgresql_read_only,
    ),
    "sqlite": Backend(set_up=_sqlite_set_up),
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
}
_OTHER = Backend()


def backend_for(url: sa.URL) -> Backend:
    """The :class:`Backend` of ``url``'s dialect; SQLAlchemy's defaults for one not listed."""
    return BACKENDS.get(url.get_backend_name(), _OTHER)


def require_database_url(url: str | None) -> str:
    """``url``, or the one ConfigError saying where a database URL can be given."""
    if not url:
        raise ConfigError(NO_DATABASE_URL)
    return url


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparseable database URL>"


def connect(
    url: str | sa.URL,
    *,
    workers: int = 1,
    pool_size: int | None = None,
    echo: bool = False,
    origin: str | None = None,
) -> sa.Engine:
    """An engine set up for encmigrate's work on ``url``'s database.

    SQLite gets ``BEGIN IMMEDIATE`` transactions and a busy timeout;
    PostgreSQL gets psycopg 3 and a pool sized for the workers (each reads on
    one connection while its writer thread commits on another; two more for
    claims, releases and bookkeeping); MariaDB/MySQL gets PyMySQL, utf8mb4,
    READ COMMITTED and the same pool. A URL that does not parse, or names a
    dialect or driver that is not installed, raises ConfigError naming
    ``origin`` (where it was set).
    """
    parsed = parse_database_url(url, origin=origin)
    backend = backend_for(parsed)
    if backend.driver is not None and parsed.drivername == parsed.get_backend_name():
        parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+{backend.driver}")
    missing = {k: v for k, v in backend.url_defaults.items() if k not in parsed.query}
    if missing:
        parsed = parsed.update_query_dict(missing)
    # hide_parameters: with --debug the SQL is logged, never the values bound to it.
    options: dict[str, Any] = {"echo": echo, "hide_parameters": True, **backend.engine_options}
    options.update(backend.pool_options(pool_size if pool_size is not None else 2 * workers + 2))
    try:
        engine = sa.create_engine(parsed, **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        # The message names the dialect or the missing module; SQLAlchemy's text never holds
        # the password here (the URL is parsed already), but it is not shown anyway.
        what = exc.name if isinstance(exc, ImportError) else parsed.drivername
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}the database URL names a dialect or driver that is not installed "
            f"({what}): install it or change the URL"
        ) from None
    backend.set_up(engine)
    return engine


@contextmanager
def read_only(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection that only reads, in one transaction, for ``status`` and the next step.

    On SQLite it opens no transaction (the engine's others start with ``BEGIN
    IMMEDIATE``, the write lock): each statement reads what is committed and
    holds SQLite's shared lock only while it runs. So it does not wait for a
    running ``migrate-data``, whose open batch holds the write lock, and a
    batch's commit waits for one statement at most, never for the whole
    command. The price: two statements may see two states of the database.
    A statement waits only while another connection commits (or holds ``BEGIN
    EXCLUSIVE``), for :data:`SQLITE_BUSY_TIMEOUT_MS` at most, then fails with
    "database is locked". On PostgreSQL and MariaDB/MySQL the transaction is
    ``READ ONLY``.
    """
    with engine.connect() as conn:
        backend_for(engine.url).make_read_only(conn)
        with conn.begin():
            yield conn


@contextmanager
def connection(url: str | None, *, origin: str | None = None) -> Iterator[sa.Connection]:
    """A connection of a short-lived engine that only inspects, its errors translated.

    For the revision generators, which read the schema and the Alembic
    revision while Alembic's own engine writes: on SQLite it opens no
    transaction, so it holds no lock that Alembic would wait for. The engine
    is disposed of on the way out. Raises :data:`NO_DATABASE_URL` without a URL.
    """
    engine = connect(require_database_url(url), origin=origin)
    try:
        with mapped_errors(), engine.connect() as conn:
            backend_for(engine.url).make_read_only(conn)
            yield conn
    finally:
        engine.dispose()


@contextmanager
def driver_cursor(conn: sa.Connection) -> Iterator[Any]:
    """A cursor of the driver's own connection under ``conn``, for the hot paths.

    The migrator's batch read and write on PostgreSQL go to psycopg directly
    (binary parameters, plain tuples). Its errors then reach us unwrapped, and
    SQLAlchemy never learns that the connection is lost: a retry would run on
    the dead connection again and fail with "the connection is closed". So a
    driver error that left the connection closed or broken invalidates ``conn``
    here, as SQLAlchemy does for the statements it runs, and the retry gets a
    new connection (``conn.invalidated`` is what the migrator checks).
    """
    raw: Any = conn.connection.dbapi_connection
    try:
        with raw.cursor() as cursor:
            yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        if raw.closed or getattr(raw, "broken", False):
            conn.invalidate(exc)
        raise
