"""Database access for long-running work: engines, transient faults, retries.

Only transient faults are retried, with capped backoff and jitter (see
docs/architecture.md, "The migrator"), by the one
:class:`~encmigrate.retry.RetryPolicy` (re-exported here, with
``is_transient``, which says which faults are transient).

Commands that only read (``status``, the next step shown after each command)
use :func:`read_only`: on SQLite they never take the write lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from encmigrate.boundary import parse_database_url, sqlstate
from encmigrate.errors import ConfigError
from encmigrate.retry import RetryPolicy
from encmigrate.retry import is_transient_database_fault as is_transient

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "RetryPolicy",
    "connect",
    "is_transient",
    "read_only",
    "sqlstate",
]

# How long a SQLite statement waits for another connection's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
# The execution option of read_only() connections: on SQLite, no BEGIN at all.
_READ_ONLY = "encmigrate_read_only"


def connect(
    url: str | sa.URL,
    *,
    workers: int = 1,
    pool_size: int | None = None,
    echo: bool = False,
    origin: str | None = None,
) -> sa.Engine:
    """An engine set up for batch work.

    SQLite gets ``BEGIN IMMEDIATE`` transactions (the write lock is taken
    before the batch reads, so no other writer can slip between read and
    write) and a busy timeout; PostgreSQL gets psycopg 3 and a pool sized for
    the workers. A URL that does not parse, or names a dialect or driver that
    is not installed, raises ConfigError naming ``origin`` (where it was set).
    """
    parsed = parse_database_url(url, origin=origin)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # hide_parameters: with --debug the SQL is logged, never the values bound to it.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if parsed.get_backend_name() == "postgresql":
        # Each worker reads on one connection while its writer thread commits on another;
        # two more for claims, releases and bookkeeping.
        size = pool_size if pool_size is not None else 2 * workers + 2
        kwargs.update(pool_size=size, max_overflow=2, pool_pre_ping=True)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        # The message names the dialect or the missing module; SQLAlchemy's text never holds
        # the password here (the URL is parsed already), but it is not shown anyway.
        what = exc.name if isinstance(exc, ImportError) else parsed.drivername
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}the database URL names a dialect or driver that is not installed "
            f"({what}): install it or change the URL"
        ) from None
    if engine.dialect.name == "sqlite":
        _sqlite_immediate(engine)
    return engine


def _sqlite_immediate(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        if not connection.get_execution_options().get(_READ_ONLY, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def read_only(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection that only reads, for ``status`` and the next step.

    On SQLite it opens no transaction (the engine's others start with ``BEGIN
    IMMEDIATE``, the write lock): each statement reads what is committed and
    holds SQLite's shared lock only while it runs. So it does not wait for a
    running ``migrate-data``, whose open batch holds the write lock, and a
    batch's commit waits for one statement at most, never for the whole
    command. The price: two statements may see two states of the database.
    A statement waits only while another connection commits (or holds ``BEGIN
    EXCLUSIVE``), for :data:`SQLITE_BUSY_TIMEOUT_MS` at most, then fails with
    "database is locked". On PostgreSQL the transaction is ``READ ONLY``.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(postgresql_readonly=True)
        else:
            conn.execution_options(**{_READ_ONLY: True})
        with conn.begin():
            yield conn
