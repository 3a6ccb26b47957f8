"""``--workers N``: helper processes share the chunks, stop and die with the run.

On PostgreSQL and on MariaDB (the same helper processes; their batches are the
one-at-a-time loop there, the pipeline being PostgreSQL's).

Each test checks what the database and the process table show, not what the
run says about itself: the chunks' ``lease_owner`` (``host:pid:tag/n``) names
the process that worked them, ``psutil`` shows which helper processes exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from encmigrate.keys import FileProvider
from encmigrate.migrate import MigrateOptions, TableReport, migrate_data
from encmigrate.migrate.report import Progress
from reliability.conftest import Migration, Prepare, prepare  # noqa: F401 (the fixture)
from support import mariadb_shadow
from support.cli import operator_env, popen_cli, run_cli

ROWS = 30_000
# Small batches and chunks, a pause between batches: the run lasts seconds, long
# enough for a helper (about a second to import) to claim chunks beside this process.
OPTIONS = MigrateOptions(batch_size=50, rows_per_chunk=1000, sleep_ms=5, workers=2)
# The CLI has no --rows-per-chunk (its chunks hold 50,000 rows): the CLI test resumes a
# run paused after one batch, whose chunks were made this small by the library.
CLI_ROWS = 8000

LIVE_OWNERS = {
    "postgresql": """
SELECT count(*) FROM encryption_migration_chunks c
WHERE c.status = 'running' AND EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = c.owner_pid AND a.backend_start = c.owner_backend_start)
""",
    "mariadb": """
SELECT count(*) FROM encryption_migration_chunks c
WHERE c.status = 'running' AND EXISTS (
    SELECT 1 FROM information_schema.PROCESSLIST p WHERE p.ID = c.owner_pid)
""",
}


@pytest.fixture(params=mariadb_shadow.SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _owner_pid(lease_owner: str) -> int:
    """The process id in a worker id ``host:pid:tag/n``."""
    return int(lease_owner.rsplit(":", 2)[1])


def _owners(migration: Migration, status: str | None = None) -> set[int]:
    query = "SELECT lease_owner FROM encryption_migration_chunks WHERE lease_owner IS NOT NULL"
    params: dict[str, str] = {}
    if status is not None:
        query += " AND status = :status"
        params["status"] = status
    with migration.engine.connect() as conn:
        owners = conn.execute(sa.text(query), params).scalars().all()
    return {_owner_pid(owner) for owner in owners}


def _rows_done(migration: Migration) -> int:
    """Rows with their shadows written (balance is never NULL in the sample rows)."""
    query = "SELECT count(*) FROM customers WHERE balance_encrypted IS NOT NULL"
    return int(migration.scalar(query))


def _statuses(migration: Migration) -> set[str]:
    with migration.engine.connect() as conn:
        query = "SELECT DISTINCT status FROM encryption_migration_chunks"
        return set(conn.execute(sa.text(query)).scalars())


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _gone(process: psutil.Process) -> bool:
    """Exited (a zombie no one reaps counts: it runs no code and holds no session)."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_two_workers_share_the_chunks_with_a_helper_process(
    server: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prepare: Prepare,  # noqa: F811 (the fixture imported above)
) -> None:
    migration = mariadb_shadow.prepare_on(server, request, prepare, ROWS, tmp_path)
    before = _children()
    reports = migrate_data(migration.plan, migration.engine, migration.keyring, options=OPTIONS)
    ours = os.getpid()
    owners = _owners(migration, "completed")
    assert len(owners) >= 2 and owners - {ours}, f"completed chunks by {owners}, we are {ours}"
    assert ours in owners  # this process worked as one of the two workers
    report = reports[0]
    assert not report.interrupted
    assert report.rows_done == ROWS  # the helper's batches are counted by the parent
    assert _statuses(migration) == {"completed"}
    assert migration.scalar("SELECT sum(rows_done) FROM encryption_migration_chunks") == ROWS
    assert _children() - before == set()  # the helper exited with the run
    migration.check()


def test_stop_reaches_the_helper_processes(
    server: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prepare: Prepare,  # noqa: F811 (the fixture imported above)
) -> None:
    migration = mariadb_shadow.prepare_on(server, request, prepare, ROWS, tmp_path)
    before = _children()
    ours = os.getpid()
    stop = threading.Event()
    progressed = threading.Event()
    outcome: dict[str, list[TableReport] | BaseException] = {}

    def progress(_: Progress) -> None:
        progressed.set()

    def run() -> None:
        try:
            outcome["reports"] = migrate_data(
                migration.plan,
                migration.engine,
                migration.keyring,
                options=OPTIONS,
                progress=progress,
                stop=stop,
            )
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert progressed.wait(15), "no progress reported"
        _wait_for(lambda: bool(_owners(migration) - {ours}), 15, "a helper to claim a chunk")
        helpers = _children() - before
        assert helpers, "no helper process while a helper holds a chunk"
        stop.set()
        stopped_at = time.monotonic()
        runner.join(20)
        assert not runner.is_alive(), "the run did not return after stop"
        assert time.monotonic() - stopped_at < 10
    finally:
        stop.set()
        runner.join()
    assert "error" not in outcome, outcome.get("error")
    reports = outcome["reports"]
    assert isinstance(reports, list)
    report = reports[0]
    done = _rows_done(migration)
    assert report.interrupted
    assert 0 < done < ROWS  # a helper that kept going would have finished the table
    assert report.rows_done == done  # every committed batch counted, the helper's too
    assert migration.scalar(LIVE_OWNERS[server]) == 0
    assert "running" not in _statuses(migration)  # unfinished chunks were given back
    assert _children() - before == set()
    resumed = migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        options=MigrateOptions(batch_size=500),
    )
    assert not resumed[0].interrupted
    assert resumed[0].rows_done == ROWS - done  # resumed, nothing redone
    assert _rows_done(migration) == ROWS
    migration.check()


def test_sigkilled_cli_takes_its_helper_processes_along(
    server: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prepare: Prepare,  # noqa: F811 (the fixture imported above)
) -> None:
    migration = mariadb_shadow.prepare_on(server, request, prepare, CLI_ROWS, tmp_path)
    paused = MigrateOptions(batch_size=50, rows_per_chunk=1000, max_batches=1)
    migrate_data(migration.plan, migration.engine, migration.keyring, options=paused)
    assert "pending" in _statuses(migration)
    project = migration.plan_path.parent
    FileProvider(project / "keyring.json").save(migration.keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=project / "keyring.json")
    command = ["migrate-data", "--workers", "2", "--batch-size", "25", "--sleep", "30"]
    with (
        (project / "killed.log").open("w") as log,
        popen_cli(
            *command,
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as cli,
    ):
        try:
            parent = psutil.Process(cli.pid)
            _wait_for(lambda: bool(parent.children()), 15, "the CLI to start a helper")
            (helper,) = parent.children()
            _wait_for(
                lambda: helper.pid in _owners(migration, "running"),
                15,
                f"helper {helper.pid} to claim a chunk",
            )
        finally:
            cli.kill()
            cli.wait()
    assert cli.returncode == -9
    try:
        _wait_for(lambda: _gone(helper), 5, f"helper {helper.pid} to die with the CLI")
    finally:
        if not _gone(helper):  # the test failed: leave no orphan working on the database
            helper.kill()
    if sys.platform.startswith("linux"):
        # Killed by PR_SET_PDEATHSIG, not stopped after a batch (it would give its chunk
        # back): the chunk stays running under the dead helper, for the next run to reclaim.
        assert helper.pid in _owners(migration, "running")
    assert 0 < _rows_done(migration) < CLI_ROWS
    resumed = run_cli("migrate-data", cwd=project, env=env, warm=False)
    assert resumed.returncode == 0, resumed.stderr  # 5: refused, a live worker held a chunk
    assert _rows_done(migration) == CLI_ROWS
    migration.check()
