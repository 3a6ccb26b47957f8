"""Running against a live primary: pause/resume/stop through the database, the throttle,
worker heartbeats in status, and catch-up passes that end under any write rate."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.errors import ConfigError
from encmigrate.migrate import MigrateOptions, TableReport, migrate_data, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.migrate.control import request
from encmigrate.migrate.status import run_states
from encmigrate.migrate.throttle import MYSQL_LOAD_PROBES
from encmigrate.tracking import ControlState
from support import mariadb_shadow, shadow_schema

ROWS = 3000


@pytest.fixture
def setup(pg_url: str, tmp_path: Path) -> Any:
    engine, plan_path = shadow_schema.build(pg_url, ROWS, tmp_path)
    engine.dispose()
    engine = connect_engine(pg_url)
    yield engine, shadow_schema.load_plan(plan_path), Keyring.generate()
    engine.dispose()


@pytest.fixture
def maria(mariadb_url: str, tmp_path: Path) -> Any:
    plan_path = mariadb_shadow.build(mariadb_url, ROWS, tmp_path)
    engine = connect_engine(mariadb_url)
    yield engine, shadow_schema.load_plan(plan_path), Keyring.generate()
    engine.dispose()


@pytest.fixture(params=mariadb_shadow.SERVERS)
def on_server(request: pytest.FixtureRequest) -> Any:
    """``setup`` on PostgreSQL, ``maria`` on MariaDB: the tests that run on both."""
    return request.getfixturevalue("setup" if request.param == "postgresql" else "maria")


def _committed(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT coalesce(sum(rows_done), 0) FROM encryption_migration_chunks"
            ).scalar_one()
        )


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Background:
    """migrate_data in a thread; its reports (or error) once joined."""

    def __init__(self, engine: sa.Engine, plan: Any, keyring: Keyring, **options: Any) -> None:
        self.reports: list[TableReport] = []
        self.error: BaseException | None = None
        opts = MigrateOptions(**{"batch_size": 50, "sleep_ms": 20, **options})

        def run() -> None:
            try:
                self.reports = migrate_data(plan, engine, keyring, options=opts)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120.0) -> list[TableReport]:
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.reports


def _all_ok(plan: Any, engine: sa.Engine, keyring: Keyring) -> None:
    for verdict in verify(plan, engine, keyring):
        assert verdict.ok, verdict.summary()


def test_pause_holds_every_batch_until_resume(on_server: Any) -> None:
    engine, plan, keyring = on_server
    run = Background(engine, plan, keyring)
    _until(lambda: _committed(engine) > 0)
    request(engine, ControlState.PAUSED, None)
    time.sleep(1.5)  # every worker notices within a second, after its batch
    held = _committed(engine)
    time.sleep(1.5)
    assert _committed(engine) == held  # no batch committed while paused
    workers = run_states(plan, engine)["customers"].workers
    assert workers and all(w.state == "paused" for w in workers)
    assert run_states(plan, engine)["customers"].control == "paused"
    request(engine, ControlState.RUNNING, "customers")  # the table's newer request wins
    reports = run.join()
    assert reports[0].rows_done == ROWS and not reports[0].interrupted
    assert run_states(plan, engine)["customers"].workers == ()  # rows deleted at the end
    _all_ok(plan, engine, keyring)


def test_stop_ends_the_run_cleanly_and_a_new_run_resumes(on_server: Any) -> None:
    engine, plan, keyring = on_server
    # Slow enough to outlast the workers' reading of the control table (once a second).
    run = Background(engine, plan, keyring, sleep_ms=60)
    _until(lambda: _committed(engine) > 0)
    request(engine, ControlState.STOPPED, "customers")
    report = run.join()[0]
    assert report.interrupted and report.stopped_by and "@" in report.stopped_by
    assert 0 < report.rows_done < ROWS
    # The stop applied to the runs started before it: a new run resumes and finishes.
    again = migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=500))[0]
    assert not again.interrupted and report.rows_done + again.rows_done == ROWS
    _all_ok(plan, engine, keyring)


def test_status_shows_the_workers_and_the_throttle_query_holds_the_run(on_server: Any) -> None:
    engine, plan, keyring = on_server
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE throttle_flag (v int)")
        conn.exec_driver_sql("INSERT INTO throttle_flag VALUES (1)")
    run = Background(
        engine, plan, keyring, throttle_query="SELECT v FROM throttle_flag", throttle_interval=0.2
    )

    def throttled() -> bool:
        workers = run_states(plan, engine)["customers"].workers
        return bool(workers) and workers[0].state == "throttled"

    _until(throttled)
    held = _committed(engine)
    time.sleep(1.0)
    assert _committed(engine) == held
    worker = run_states(plan, engine)["customers"].workers[0]
    assert worker.throttled_reason == "throttle query 1 > 0"
    assert worker.throttled_since is not None and worker.pid > 0 and worker.host
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE throttle_flag SET v = 0")
    report = run.join()[0]
    assert report.rows_done == ROWS and report.throttled_seconds >= 1.0
    _all_ok(plan, engine, keyring)


def test_adaptive_batches_record_the_sizes_chosen(on_server: Any) -> None:
    engine, plan, keyring = on_server
    options = MigrateOptions(
        batch_size=20, target_batch_seconds=0.2, min_batch_size=10, max_batch_size=400
    )
    report = migrate_data(plan, engine, keyring, options=options)[0]
    assert report.rows_done == ROWS
    assert len(report.batch_sizes) > 1 and report.batch_sizes[0] == 20
    assert all(10 <= size <= 400 for size in report.batch_sizes)
    _all_ok(plan, engine, keyring)


def test_catch_up_ends_under_a_writer_faster_than_the_worker(setup: Any, pg_url: str) -> None:
    engine, plan, keyring = setup
    stop = threading.Event()
    updates = [0]

    def writer() -> None:
        rng = random.Random(3)
        writer_engine = sa.create_engine(pg_url)
        with writer_engine.connect() as conn:
            while not stop.is_set():
                keys = [rng.randrange(1, ROWS + 1) for _ in range(50)]
                conn.execute(
                    sa.text("UPDATE customers SET email = 'w' || random() WHERE id = ANY(:k)"),
                    {"k": keys},
                )
                conn.commit()
                updates[0] += len(keys)
        writer_engine.dispose()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        options = MigrateOptions(batch_size=50, sleep_ms=5, lock_timeout_ms=200)
        report = migrate_data(plan, engine, keyring, options=options)[0]
    finally:
        stop.set()
        thread.join()
    assert updates[0] > ROWS  # the writer outpaced the worker
    assert report.rows_left > 0 and report.left_reason  # the run ended and says what is left
    assert not report.interrupted
    migrate_data(plan, engine, keyring)  # writes have stopped: the next run finishes them
    _all_ok(plan, engine, keyring)


def test_throttle_options_are_refused_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    engine, plan_path = shadow_schema.build(sqlite_url, 10, tmp_path)
    try:
        with pytest.raises(ConfigError, match="not available on sqlite"):
            migrate_data(
                shadow_schema.load_plan(plan_path),
                engine,
                Keyring.generate(),
                options=MigrateOptions(throttle_query="SELECT 1"),
            )
    finally:
        engine.dispose()


# -- MariaDB: --max-load there; the replica lag is PostgreSQL's ----------------------------------


@pytest.mark.mariadb
def test_max_load_holds_a_mariadb_run_while_other_sessions_are_busy(
    maria: Any, mariadb_url: str
) -> None:
    engine, plan, keyring = maria
    busy = sa.create_engine(mariadb_url, poolclass=sa.pool.NullPool)
    sleeper = threading.Thread(
        target=lambda: busy.connect().exec_driver_sql("SELECT SLEEP(4)").all(), daemon=True
    )
    sleeper.start()
    _until(lambda: _active_others(engine) >= 1)
    started = time.monotonic()
    try:
        report = migrate_data(
            plan,
            engine,
            keyring,
            options=MigrateOptions(
                batch_size=500, max_load=(("active_sessions", 0.0),), throttle_interval=0.2
            ),
        )[0]
    finally:
        sleeper.join()
        busy.dispose()
    # Held while the other session's statement ran (about 4 s), then done.
    assert report.throttled_seconds >= 1.0 and time.monotonic() - started >= 2.0
    assert report.rows_done == ROWS
    _all_ok(plan, engine, keyring)


def _active_others(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(MYSQL_LOAD_PROBES["active_sessions"]).scalar_one())


@pytest.mark.mariadb
def test_replica_lag_options_say_what_to_use_on_mariadb(maria: Any) -> None:
    engine, plan, keyring = maria
    with pytest.raises(ConfigError, match="--throttle-query"):
        migrate_data(plan, engine, keyring, options=MigrateOptions(max_replica_lag=5.0))
