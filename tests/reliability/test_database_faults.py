"""Server-side faults: terminated sessions, a restarted server, lock and statement timeouts.

Each run either recovers within its retry budget (then verify is clean) or
fails with ``DatabaseError`` (exit 4 from the CLI, one line that says
progress is saved) having committed no partial batch: what it wrote checks
out, and a resume finishes the job with a clean verify.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from encmigrate.database import connect
from encmigrate.errors import DatabaseError
from encmigrate.migrate import MigrateOptions, RetryPolicy, migrate_data
from encmigrate.migrate.database import driver_cursor, is_transient
from encmigrate.migrate.runner import Progress
from reliability.conftest import Migration, Prepare, cli_outlived_by_an_outage
from support import cluster

FAST_RETRY = RetryPolicy(attempts=10, initial=0.02, maximum=0.3)
SHORT_BUDGET = RetryPolicy(attempts=3, initial=0.01, maximum=0.05)
# A restart takes seconds on a loaded 2-core machine: the budget must outlast it.
RESTART_RETRY = RetryPolicy(attempts=40, initial=0.05, maximum=0.5)


@pytest.fixture(scope="module")
def throwaway_cluster() -> object:
    reason = cluster.available()
    if reason is not None:
        pytest.skip(reason)
    with cluster.Cluster() as running:
        yield running


def _terminate_others(admin: sa.Engine) -> int:
    with admin.connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
        conn.commit()
    return len(pids)


def _status(migration: Migration) -> tuple[str, str | None]:
    with migration.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT status, last_error FROM encryption_migrations WHERE column_name = 'email'"
            )
        ).one()
    return str(row[0]), row[1]


def test_a_session_lost_under_the_driver_cursor_is_transient_and_replaced(pg_url: str) -> None:
    """The batch's read and write use psycopg's cursor, under SQLAlchemy's back.

    A session terminated there must still be a transient fault (retried, and
    "after retries" in the final message) and must invalidate the SQLAlchemy
    connection, so that the retry opens a new one instead of failing on the
    dead one with "the connection is closed" (no SQLSTATE).
    """
    engine = connect(pg_url)
    admin = connect(pg_url)
    try:
        with engine.connect() as conn:
            conn.begin()
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.begin() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            raw = conn.connection.dbapi_connection
            errors: list[Exception] = []
            for _ in range(2):  # the termination notice, then the closed socket
                try:
                    with driver_cursor(conn) as cursor:
                        cursor.execute("SELECT 1")
                except psycopg.Error as exc:
                    errors.append(exc)
                if conn.invalidated:
                    break
            assert errors, "a terminated session answered"
            assert all(is_transient(e) for e in errors), [type(e).__name__ for e in errors]
            assert conn.invalidated
            assert raw is not None and raw.closed
            # What the retry does with an invalidated connection: a new one that works.
            conn.rollback()
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
        with pytest.raises(psycopg.OperationalError) as closed, raw.cursor() as cursor:
            cursor.execute("SELECT 1")  # the dead connection itself: no SQLSTATE at all
        assert is_transient(closed.value), str(closed.value)
    finally:
        engine.dispose()
        admin.dispose()


def test_sessions_terminated_server_side_are_recovered_with_two_workers(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, 3000)
    admin = migration.new_engine()
    terminated: list[int] = []
    seen = [0]

    def progress(_: Progress) -> None:
        seen[0] += 1
        if seen[0] % 4 == 0 and len(terminated) < 8:
            terminated.append(_terminate_others(admin))

    reports = migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        progress=progress,
        options=MigrateOptions(batch_size=50, workers=2, rows_per_chunk=500, retry=FAST_RETRY),
    )
    assert len(terminated) == 8 and sum(terminated) >= 8
    assert reports[0].rows_done >= 3000
    migration.check()


def test_terminations_beyond_the_retry_budget_fail_cleanly_and_resume(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, 2000)
    admin = migration.new_engine()
    seen = [0]

    def progress(_: Progress) -> None:
        seen[0] += 1
        if seen[0] >= 5:
            # Every session of the run dies right after each batch: no retry can get through.
            stop.set()

    stop = threading.Event()

    def killer() -> None:
        while not done.is_set():
            if stop.is_set():
                _terminate_others(admin)
            done.wait(0.002)

    done = threading.Event()
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(DatabaseError) as raised:
            migrate_data(
                migration.plan,
                migration.engine,
                migration.keyring,
                progress=progress,
                options=MigrateOptions(batch_size=50, retry=SHORT_BUDGET),
            )
    finally:
        done.set()
        thread.join()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("customers: database error after retries (")
    assert "progress is saved" in message
    # (the failure is not always recorded: the killer ends that session too)
    migration.check(complete=False)  # committed batches are whole; nothing half-written
    migrate_data(migration.plan, migration.engine, migration.keyring)
    migration.check()


def test_server_restarted_mid_run_is_recovered(
    throwaway_cluster: cluster.Cluster, prepare: Prepare
) -> None:
    url = throwaway_cluster.create_database("restart_recovers")
    migration = prepare(url, 3000)
    digest = migration.plaintext_digest()
    restarts: list[int] = []
    seen = [0]
    rng = random.Random(7)
    restart_at = sorted(rng.sample(range(3, 50), 2))

    def progress(_: Progress) -> None:
        seen[0] += 1
        if restart_at and seen[0] >= restart_at[0]:
            restart_at.pop(0)
            throwaway_cluster.restart()  # pg_ctl restart -m fast: every session dies
            restarts.append(seen[0])

    migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        progress=progress,
        options=MigrateOptions(batch_size=50, workers=2, rows_per_chunk=500, retry=RESTART_RETRY),
    )
    assert len(restarts) == 2
    migration.check()
    assert migration.plaintext_digest() == digest


def test_server_down_longer_than_the_budget_exits_4_with_one_line_and_resumes(
    throwaway_cluster: cluster.Cluster, prepare: Prepare, tmp_path: Path
) -> None:
    url = throwaway_cluster.create_database("restart_fails")
    migration = prepare(url, 3000)
    cli_outlived_by_an_outage(
        migration, tmp_path, stop=throwaway_cluster.stop, start=throwaway_cluster.start
    )
    migration.check(complete=False)
    migrate_data(migration.plan, migration.engine, migration.keyring)
    migration.check()


def test_lock_held_past_the_budget_fails_with_lock_timeout_and_no_partial_batch(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, 1000)
    blocker = migration.new_engine()
    conn = blocker.connect()
    transaction = conn.begin()
    conn.execute(sa.text("SELECT 1 FROM customers WHERE id BETWEEN 420 AND 430 FOR UPDATE"))
    try:
        with pytest.raises(DatabaseError, match="SQLSTATE 55P03"):
            migrate_data(
                migration.plan,
                migration.engine,
                migration.keyring,
                options=MigrateOptions(batch_size=100, lock_timeout_ms=50, retry=SHORT_BUDGET),
            )
    finally:
        transaction.rollback()
        conn.close()
    done = migration.scalar("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL")
    assert 0 < done < 1000
    # Whole batches only: the batch holding row 420 (401-500) wrote nothing.
    assert (
        migration.scalar(
            "SELECT count(*) FROM customers WHERE id BETWEEN 401 AND 500 "
            "AND balance_encrypted IS NOT NULL"
        )
        == 0
    )
    assert "55P03" in (_status(migration)[1] or "")
    migration.check(complete=False)
    migrate_data(migration.plan, migration.engine, migration.keyring)
    migration.check()


def test_lock_released_within_the_budget_is_waited_out(pg_url: str, prepare: Prepare) -> None:
    migration = prepare(pg_url, 1000)
    blocker = migration.new_engine()
    conn = blocker.connect()
    transaction = conn.begin()
    conn.execute(sa.text("SELECT 1 FROM customers WHERE id % 97 = 3 FOR UPDATE"))
    retried: list[int] = []
    timed_out = threading.Event()

    def release_after_a_few_timeouts() -> None:
        timed_out.wait(10)
        time.sleep(0.3)  # a few more lock timeouts and retries
        transaction.rollback()

    release = threading.Thread(target=release_after_a_few_timeouts)
    release.start()

    def noted(error: BaseException, attempt: int) -> None:
        retried.append(attempt)
        timed_out.set()

    class NotingPolicy(RetryPolicy):
        """The policy, noting each retry (RetryPolicy is frozen: it is subclassed, not patched)."""

        def run(self, work, *, on_retry=None, **kwargs):  # type: ignore[no-untyped-def]
            return super().run(work, on_retry=noted, **kwargs)

    policy = NotingPolicy(attempts=40, initial=0.02, maximum=0.1)
    migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        options=MigrateOptions(batch_size=100, workers=2, lock_timeout_ms=50, retry=policy),
    )
    release.join()
    conn.close()
    assert retried
    migration.check()


def test_statement_timeout_fails_the_run_without_a_partial_batch(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, 1000)
    # A trigger that sleeps on one row's update makes that batch's UPDATE outlast the timeout.
    migration.execute(
        "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.id = 650 THEN PERFORM pg_sleep(0.5); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER slow_row BEFORE UPDATE ON customers "
        "FOR EACH ROW EXECUTE FUNCTION slow_row()",
    )
    with pytest.raises(DatabaseError, match="SQLSTATE 57014") as raised:
        migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            options=MigrateOptions(batch_size=100, statement_timeout_ms=150, retry=SHORT_BUDGET),
        )
    assert "progress is saved" in str(raised.value)
    assert (
        migration.scalar(
            "SELECT count(*) FROM customers WHERE id BETWEEN 601 AND 700 "
            "AND email_encrypted IS NOT NULL"
        )
        == 0
    )
    assert migration.scalar("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL") > 0
    status, error = _status(migration)
    assert status == "failed" and "57014" in (error or "")
    migration.check(complete=False)
    migration.execute("DROP TRIGGER slow_row ON customers")
    migrate_data(migration.plan, migration.engine, migration.keyring)
    migration.check()
