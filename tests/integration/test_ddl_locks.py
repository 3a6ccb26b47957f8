"""Schema revisions under a lock_timeout: they give up and retry instead of blocking the table.

An ``ALTER TABLE`` waiting for its ACCESS EXCLUSIVE lock behind a long transaction
makes every later query on the table queue behind it. These tests hold such a lock
(or an old snapshot, which a concurrent index build waits for) from another
session on the real PostgreSQL, and check what ``--apply`` does about it: each
wait is bounded, other sessions' reads keep flowing, a retry succeeds once the
lock goes, and a run that never gets the lock leaves nothing behind.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext

from encmigrate import DatabaseError, RefusedError
from encmigrate.plan import PlanError, load
from encmigrate.revisions import add_columns, drop_unencrypted
from support.cli import operator_env, run_cli
from support.revisions import Project, column, columns_of, execute, make_project, rows

CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), email VARCHAR(255))",
    "INSERT INTO customer VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com')",
)
PLAN = column("customer", "email", searchable=True)
LOCK_TIMEOUT_S = 0.2
INDEX = "ix_customer_email_search"


def _settings(retries: int) -> str:
    return f'[migration]\nddl_lock_timeout = "200ms"\nddl_retries = {retries}\n'


@pytest.fixture
def project(tmp_path: Path, pg_url: str) -> Project:
    execute(pg_url, *CUSTOMER)
    return make_project(tmp_path / "project", pg_url, PLAN, _settings(3))


class Holder:
    """Another session, in an open transaction, holding what ``statements`` took."""

    def __init__(self, url: str, *statements: str, isolation: str = "READ COMMITTED") -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.connection = self.engine.connect().execution_options(isolation_level=isolation)
        for statement in statements:
            self.connection.exec_driver_sql(statement)
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self.connection.closed:
                self.connection.rollback()
                self.connection.close()
                self.engine.dispose()


@contextmanager
def holding(
    url: str, *statements: str, release_after: float | None = None, **kw: Any
) -> Iterator[Holder]:
    holder = Holder(url, *statements, **kw)
    timer = threading.Timer(release_after, holder.release) if release_after else None
    if timer is not None:
        timer.start()
    try:
        yield holder
    finally:
        if timer is not None:
            timer.cancel()
        holder.release()


def table_lock(url: str, **kw: Any) -> Any:
    """ACCESS SHARE on customer: what any SELECT in an open transaction holds."""
    return holding(url, "LOCK TABLE customer IN ACCESS SHARE MODE", "SELECT 1", **kw)


def old_snapshot(url: str, **kw: Any) -> Any:
    """A REPEATABLE READ transaction with a snapshot, touching no table of the plan."""
    return holding(url, "SELECT count(*) FROM pg_class", isolation="REPEATABLE READ", **kw)


class ReadProbe(threading.Thread):
    """A third session reading the table in a loop; records the slowest read."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.stopping = threading.Event()
        self.slowest = 0.0
        self.reads = 0

    def run(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SET statement_timeout = '20s'")
            while not self.stopping.is_set():
                started = time.monotonic()
                connection.exec_driver_sql("SELECT count(*) FROM customer").all()
                connection.rollback()
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.reads += 1
                self.stopping.wait(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        self.engine.dispose()


def _columns(url: str) -> list[str]:
    return columns_of(url, "customer")


def _heads(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = operator_env(
        COLUMNS="400",  # one line per message
        PYTHONDONTWRITEBYTECODE=None,  # Alembic's load of the revision writes its .pyc
    )
    config = ("--config", str(project.plan_file))
    return run_cli(*config, *args, cwd=project.directory, env=env, timeout=60)


def _retry_logs(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and "SQLSTATE 55P03" in r.getMessage()]


# --- (1) a lock held for a while: bounded waits, reads keep flowing, a retry succeeds ---------


def test_add_columns_waits_at_most_the_lock_timeout_per_attempt_and_never_stalls_readers(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    project.write_plan(PLAN, _settings(8))
    plan = project.plan()
    caplog.set_level(logging.INFO, logger="encmigrate.revisions.generate")
    release_after = 2.0
    probe = ReadProbe(project.url)
    with table_lock(project.url, release_after=release_after):
        probe.start()
        started = time.monotonic()
        try:
            result = add_columns(plan, apply=True)
        finally:
            elapsed = time.monotonic() - started
            probe.stop()
    # Reads queued behind a waiting ALTER TABLE for one lock_timeout at most, not for the
    # two seconds the lock was held (bounded sanity, not a tight timing assertion).
    assert probe.reads >= 10
    assert probe.slowest < 5 * LOCK_TIMEOUT_S < release_after
    # It did wait for the lock to go, over several attempts, each one logged; then it went in.
    assert elapsed >= release_after - 0.1
    retried = _retry_logs(caplog, "encmigrate.revisions.generate")
    assert len(retried) >= 2 and all(r.levelno == logging.INFO for r in retried)
    assert result.applied and "email_encrypted" in _columns(project.url)


# --- (2) a lock held throughout: exit 4, nothing left behind, the next run just works ---------


def test_a_lock_held_throughout_exits_4_leaving_no_revision_file_and_no_schema_change(
    project: Project,
) -> None:
    execute(project.url, "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    before = _heads(project.url)
    compiled = project.directory / "alembic" / "versions" / "__pycache__"
    with table_lock(project.url):
        done = _cli(project, "add-columns", "--apply")
    assert done.returncode == 4, done.stderr
    message = " ".join(done.stderr.split())
    for expected in (
        "customer is busy",
        "lock timeout (SQLSTATE 55P03)",
        "on the last of 4 attempts",
        "pg_stat_activity",
        "pg_locks",
        "ddl_lock_timeout",
        "the revision file was removed; nothing was applied",
    ):
        assert expected in message, (expected, message)
    assert project.revisions() == []
    assert list(compiled.glob("*.pyc")) == []
    assert _heads(project.url) == before
    assert _columns(project.url) == ["id", "name", "email"]
    assert rows(project.url, "SELECT to_regclass('encryption_migrations')") == [(None,)]

    # The long transaction gone, the same command goes through without any cleanup.
    again = _cli(project, "add-columns", "--apply")
    assert again.returncode == 0, again.stderr
    assert len(project.revisions()) == 1
    assert list(compiled.glob("*.pyc"))  # a loaded revision does leave one: removal mattered
    assert "email_encrypted" in _columns(project.url)


def test_a_drop_refused_by_its_in_sql_check_leaves_no_revision_and_a_retry_needs_no_cleanup(
    tmp_path: Path, db_url: str
) -> None:
    execute(db_url, *CUSTOMER)
    project = make_project(tmp_path / "project", db_url, PLAN, _settings(3))
    add_columns(project.plan(), apply=True)
    execute(
        project.url,
        "UPDATE customer SET email_encrypted = :c, email_search = :t",
        "INSERT INTO encryption_migrations (table_name, column_name, status) "
        "VALUES ('customer', 'email', 'verified')",
        params={"c": b"\x01cipher", "t": b"\x02token"},
    )
    # Written after verify: its ciphertext is missing, so the drop must refuse.
    execute(project.url, "INSERT INTO customer (id, name, email) VALUES (3, 'New', 'n@x')")
    written = project.revisions()
    with pytest.raises(RefusedError, match="plaintext and no ciphertext") as caught:
        drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert "the revision file was removed; nothing was applied" in str(caught.value)
    assert project.revisions() == written
    assert "email" in _columns(project.url)

    execute(
        project.url, "UPDATE customer SET email_encrypted = :c WHERE id = 3", params={"c": b"\x03"}
    )
    result = drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert result.applied and "email" not in _columns(project.url)


# --- (3) the timeout is in the revision file and in the SQL ----------------------------------


def _body(text: str, function: str) -> list[str]:
    start = text.index(f"def {function}() -> None:")
    end = text.find("\ndef ", start + 1)
    lines = text[start : end if end != -1 else None].splitlines()[1:]
    return [s for s in map(str.strip, lines) if s and not s.startswith(("#", '"""'))]


def test_the_revision_sets_the_lock_timeout_first_and_resets_it_last_both_ways(
    project: Project,
) -> None:
    result = add_columns(project.plan())
    assert result.path is not None
    text = result.path.read_text()
    for function in ("upgrade", "downgrade"):
        body = _body(text, function)
        assert body[0] == "op.set_ddl_timeouts(lock_timeout_ms=200)", (function, body)
        assert body[-1] == "op.reset_ddl_timeouts()", (function, body)
    project.upgrade()
    project.downgrade()
    assert _columns(project.url) == ["id", "name", "email"]


def test_the_sql_output_sets_the_lock_timeout_before_any_ddl(project: Project) -> None:
    sql = add_columns(project.plan(), sql=True).sql
    assert sql is not None
    statements = [line for line in sql.splitlines() if line and not line.startswith("--")]
    set_at = statements.index("SET lock_timeout = '200ms';")
    alter_at = next(i for i, s in enumerate(statements) if s.startswith("ALTER TABLE customer"))
    index_at = next(i for i, s in enumerate(statements) if "CREATE INDEX CONCURRENTLY" in s)
    reset_at = statements.index("RESET lock_timeout;")
    assert statements[:2] == ["BEGIN;", "SET lock_timeout = '200ms';"]
    assert set_at < alter_at < index_at < reset_at


def test_sqlite_revisions_carry_no_lock_timeout(tmp_path: Path, sqlite_url: str) -> None:
    execute(sqlite_url, *CUSTOMER)
    made = make_project(tmp_path / "project", sqlite_url, PLAN, _settings(3))
    sql = add_columns(made.plan(), sql=True).sql
    assert sql is not None and "lock_timeout" not in sql
    result = add_columns(made.plan(), apply=True)
    assert result.path is not None and "ddl_timeouts" not in result.path.read_text()


# --- (4) a concurrent index build that timed out leaves an INVALID index: rebuilt ------------


def _index_valid(url: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname = '{INDEX}'",
    )


def test_an_index_build_timed_out_by_an_old_snapshot_is_rebuilt_valid_on_retry(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    project.write_plan(PLAN, _settings(8))
    plan = project.plan()
    caplog.set_level(logging.INFO, logger="encmigrate.revisions.ops")
    # CREATE INDEX CONCURRENTLY waits for every older snapshot: this one, until released.
    with old_snapshot(project.url, release_after=1.5):
        result = add_columns(plan, apply=True)
    assert result.applied
    messages = [r.getMessage() for r in caplog.records if r.name == "encmigrate.revisions.ops"]
    assert any("dropping the INVALID index" in m for m in messages), messages
    assert _retry_logs(caplog, "encmigrate.revisions.ops")
    assert _index_valid(project.url) == [(True,)]
    assert _heads(project.url) == {result.revision}


def test_an_index_build_that_never_gets_through_keeps_the_partly_committed_revision(
    project: Project,
) -> None:
    with old_snapshot(project.url), pytest.raises(DatabaseError) as caught:
        add_columns(project.plan(), apply=True)
    message = str(caught.value)
    assert "customer is busy" in message and "SQLSTATE 55P03" in message
    assert "was committed before the failure" in message and "was kept" in message
    # The columns were committed when the concurrent build began: the file accounts for them.
    assert "email_encrypted" in _columns(project.url)
    assert len(project.revisions()) == 1
    assert _index_valid(project.url) in ([], [(False,)])
    # Every statement of the revision can run again: once the old snapshot is gone, a plain
    # `alembic upgrade head` finishes it (the columns and tables exist, the index is built).
    assert "`alembic upgrade head` finishes it" in message
    project.upgrade()
    assert _index_valid(project.url) == [(True,)]
    assert _heads(project.url) == {project.revisions()[0].name.split("_")[0]}


# --- (5) the settings ------------------------------------------------------------------------


def _plan_file(tmp_path: Path, migration: str) -> Path:
    path = tmp_path / "encmigrate.toml"
    path.write_text(f"[migration]\n{migration}\n{PLAN}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "milliseconds"),
    [('"2s"', 2000), ('"150ms"', 150), ('"0.5s"', 500), ("1.5", 1500), ("3", 3000)],
)
def test_ddl_lock_timeout_takes_ms_or_s_or_a_number_of_seconds(
    tmp_path: Path, written: str, milliseconds: int
) -> None:
    path = _plan_file(tmp_path, f"ddl_lock_timeout = {written}")
    plan = load(path, environ={}, check_database=False)
    assert plan.migration.ddl_lock_timeout_ms == milliseconds
    assert plan.migration.ddl_retries == 10


def test_ddl_settings_default_to_two_seconds_and_ten_retries(tmp_path: Path) -> None:
    plan = load(_plan_file(tmp_path, ""), environ={}, check_database=False)
    assert (plan.migration.ddl_lock_timeout_ms, plan.migration.ddl_retries) == (2000, 10)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ('ddl_lock_timeout = "soon"', "must be a duration"),
        ('ddl_lock_timeout = "2 min"', "must be a duration"),
        ('ddl_lock_timeout = "-1s"', "must be a duration"),
        ("ddl_lock_timeout = true", "must be a duration"),
        ("ddl_lock_timeout = 0", "greater than 0"),
        ("ddl_lock_timeout = 2000", "less than or equal to 600"),
        ("ddl_retries = -1", "greater than or equal to 0"),
    ],
)
def test_bad_ddl_settings_are_reported_at_their_location(
    tmp_path: Path, written: str, problem: str
) -> None:
    path = _plan_file(tmp_path, written)
    with pytest.raises(PlanError) as caught:
        load(path, environ={}, check_database=False)
    key = written.split(" = ")[0]
    assert [p for p in caught.value.problems if f"{path}: migration.{key}" in p and problem in p]
    assert caught.value.exit_code == 2
