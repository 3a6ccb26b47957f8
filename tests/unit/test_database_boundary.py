"""The one database boundary: URL checks, the one engine factory, its dialects, the retry policy.

Fast and without a server: SQLite files and URLs only (PostgreSQL engines are
created, never connected).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import database
from encmigrate.database import (
    BACKENDS,
    NO_DATABASE_URL,
    SQLITE_BUSY_TIMEOUT_MS,
    backend_for,
    connect,
    connection,
    read_only,
    require_database_url,
    safe_url,
)
from encmigrate.errors import ConfigError, DatabaseError
from encmigrate.migrate import database as migrate_database
from encmigrate.plan import database_url as plan_database_url
from encmigrate.retry import RetryPolicy

PASSWORD = "hunter2-not-shown"


def test_one_message_when_no_url_is_anywhere() -> None:
    for missing in (None, ""):
        with pytest.raises(ConfigError) as raised:
            require_database_url(missing)
        assert str(raised.value) == NO_DATABASE_URL
    assert require_database_url("sqlite://") == "sqlite://"
    for place in ("--database-url", "ENCMIGRATE_DATABASE_URL", "[database] url", "alembic.ini"):
        assert place in NO_DATABASE_URL


def test_resolving_no_url_raises_the_same_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^no database URL") as raised:
        plan_database_url.resolve_database_url(environ={}, cwd=tmp_path)
    assert str(raised.value) == NO_DATABASE_URL


def test_a_connection_without_url_raises_the_same_message() -> None:
    with pytest.raises(ConfigError) as raised, connection(None):
        pass
    assert str(raised.value) == NO_DATABASE_URL


def test_safe_url_masks_the_password_and_never_raises() -> None:
    shown = safe_url(f"postgresql+psycopg://u:{PASSWORD}@db.example/app")
    assert PASSWORD not in shown and "db.example" in shown
    assert safe_url("not a url") == "<unparseable database URL>"
    assert safe_url(f"postgresql://u:{PASSWORD}@db:abc/app") == "<unparseable database URL>"


def test_the_old_homes_re_export_the_one_definitions() -> None:
    assert plan_database_url.safe_url is safe_url
    assert migrate_database.connect is connect
    assert migrate_database.read_only is read_only
    assert migrate_database.SQLITE_BUSY_TIMEOUT_MS == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"not a url:{PASSWORD}@x", "it cannot be parsed"),
        (f"postgresql+psycopg://u:{PASSWORD}@db:abc/app", "its port is not a number"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_its_origin(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        connect(url, origin="--database-url")
    message = str(raised.value)
    assert message.startswith("--database-url: the database URL is not valid")
    assert problem in message and PASSWORD not in message


def test_an_unknown_driver_is_a_config_error_without_the_url() -> None:
    with pytest.raises(ConfigError, match="not installed") as raised:
        connect(f"sqlite+nosuchdriver://u:{PASSWORD}@/x", origin="the plan")
    assert str(raised.value).startswith("the plan: ")
    assert PASSWORD not in str(raised.value)


def test_postgresql_gets_psycopg_and_a_pool_sized_for_the_workers() -> None:
    engine = connect(f"postgresql://u:{PASSWORD}@127.0.0.1:1/app", workers=3)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool.size() == 2 * 3 + 2  # type: ignore[attr-defined]
        assert engine.hide_parameters
    finally:
        engine.dispose()
    sized = connect("postgresql+psycopg://u@127.0.0.1:1/app", pool_size=5)
    try:
        assert sized.pool.size() == 5  # type: ignore[attr-defined]
    finally:
        sized.dispose()


def test_each_dialect_is_one_backend_entry() -> None:
    assert set(BACKENDS) == {"postgresql", "sqlite", "mysql", "mariadb"}
    assert backend_for(sa.make_url("sqlite://")) is BACKENDS["sqlite"]
    assert backend_for(sa.make_url("postgresql://u@h/d")) is BACKENDS["postgresql"]
    assert backend_for(sa.make_url("mariadb://u@h/d")) is BACKENDS["mariadb"]
    other = backend_for(sa.make_url("mssql+pyodbc://u@h/d"))
    assert other.driver is None and dict(other.pool_options(4)) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        BACKENDS["sqlite"].driver = "x"  # type: ignore[misc]


def test_sqlite_batches_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    engine = connect(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert busy == SQLITE_BUSY_TIMEOUT_MS
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id integer primary key)")
            # BEGIN IMMEDIATE: the write lock is held before anything is written.
            other = sqlite3.connect(path, timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_sqlite_read_only_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite3.connect(path).execute("CREATE TABLE t (id integer primary key)").connection.close()
    engine = connect(f"sqlite:///{path}")
    try:
        with read_only(engine) as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # free: the reader holds no write lock
                other.execute("ROLLBACK")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_an_inspecting_connection_translates_errors_and_disposes(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with connection(f"sqlite:///{path}") as conn:
        assert sa.inspect(conn).get_table_names() == []
    with pytest.raises(DatabaseError, match="no such table"), connection(f"sqlite:///{path}") as c:
        c.exec_driver_sql("SELECT * FROM nosuch")


def test_an_unreachable_database_is_a_database_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "app.db"
    unreachable = connection(f"sqlite:///{missing}")
    with pytest.raises(DatabaseError, match="cannot reach the database"), unreachable:
        pass


def test_the_retry_policy_is_frozen() -> None:
    policy = RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 10  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.run = lambda work, **kwargs: work()  # type: ignore[method-assign]
    assert dataclasses.asdict(policy) == {"attempts": 3, "initial_wait": 0.0, "max_wait": 0.0}
    assert hash(policy) == hash(RetryPolicy(attempts=3, initial=0.0, maximum=0.0))


def test_a_subclass_observes_the_retries() -> None:
    noted: list[int] = []
    calls = iter([sqlite3.OperationalError("database is locked"), None])

    class Noting(RetryPolicy):
        def run(self, work, **kwargs):  # type: ignore[no-untyped-def]
            return super().run(work, on_retry=lambda e, n: noted.append(n), **kwargs)

    def work() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "done"

    assert Noting(attempts=3, initial_wait=0.0, max_wait=0.0).run(work) == "done"
    assert noted == [1]


def test_the_database_module_is_layer_one() -> None:
    # Its imports stay below plan/, migrate/ and revisions/ (they all build on it).
    source = Path(database.__file__).read_text(encoding="utf-8")
    for upper in (
        "encmigrate.plan",
        "encmigrate.migrate",
        "encmigrate.revisions",
        "encmigrate.cli",
    ):
        assert f"from {upper}" not in source and f"import {upper}" not in source
