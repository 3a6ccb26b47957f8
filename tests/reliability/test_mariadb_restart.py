"""The MariaDB server restarted, crashed or down under a run (issue 17).

The MariaDB forms of test_database_faults.py's restart tests, on a throwaway
server (support/mariadb_cluster.py) that the test stops with SIGTERM (a clean
shutdown: every session ends with 1053 or 2013, new ones are refused with
2003 until it is back) or kills with SIGKILL (a crash: InnoDB recovers on the
next start). Each run either recovers within its retry budget (then verify is
clean) or fails with ``DatabaseError`` (exit 4 from the CLI, one line that
says progress is saved) having committed no partial batch: what it wrote
checks out, and a resume finishes the job with a clean verify, plaintext
unchanged.

Set ``ENCMIGRATE_REQUIRE_MARIADB=1`` to fail instead of skipping when the
server binaries are missing.
"""

from __future__ import annotations

import gc
import os
import pwd
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate.errors import DatabaseError
from encmigrate.keys import FileProvider
from encmigrate.migrate import MigrateOptions, RetryPolicy, migrate_data
from encmigrate.migrate.runner import Progress
from reliability.conftest import Migration, cli_outlived_by_an_outage
from reliability.test_mariadb_faults import _digest as plaintext_digest
from support import mariadb_cluster, mariadb_shadow
from support.cli import operator_env, popen_cli

pytestmark = pytest.mark.mariadb

ROWS = 3000
BATCH = 50
# A restart takes seconds on a loaded 2-core machine: the budget must outlast it.
RESTART_RETRY = RetryPolicy(attempts=40, initial=0.05, maximum=0.5)
REQUIRE = "ENCMIGRATE_REQUIRE_MARIADB"

Prepare = Callable[[str], Migration]


@pytest.fixture(scope="module")
def server() -> Iterator[mariadb_cluster.Server]:
    reason = mariadb_cluster.available()
    if reason is not None:
        if os.environ.get(REQUIRE, "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} [{REQUIRE}=1]", pytrace=False)
        pytest.skip(reason)
    with mariadb_cluster.Server() as running:
        yield running


@pytest.fixture
def prepare(server: mariadb_cluster.Server, tmp_path: Path) -> Iterator[Prepare]:
    """``prepare(name)``: database ``name`` on the throwaway server, customers at step 1."""
    made: list[Migration] = []

    def make(name: str) -> Migration:
        migration = mariadb_shadow.migration(server.create_database(name), ROWS, tmp_path)
        made.append(migration)
        return migration

    yield make
    gc.collect()  # tracebacks kept by pytest.raises hold pooled connections
    for migration in made:
        mariadb_shadow.dispose(migration)


def _two_workers() -> MigrateOptions:
    """The main process and one helper process, each with its own sessions."""
    return MigrateOptions(batch_size=BATCH, workers=2, rows_per_chunk=500, retry=RESTART_RETRY)


def _resume_and_verify(migration: Migration, digest: str) -> None:
    migration.check(complete=False)  # committed batches are whole; nothing half-written
    resumed = migrate_data(migration.plan, migration.engine, migration.keyring)
    assert not resumed[0].interrupted
    verdicts = migration.check()
    assert all(v.rows_checked == ROWS for v in verdicts)
    assert plaintext_digest(migration) == digest


def test_a_throwaway_server_leaves_the_shared_servers_temporary_tables_alone(
    server: mariadb_cluster.Server,
) -> None:
    """mariadbd deletes every ``#sql*`` file of its tmpdir when it starts.

    With the default tmpdir (/tmp, the machine's server's too) each start of a
    throwaway server deleted the on-disk temporary tables that tests on the
    shared server were using, which then failed with MySQL error 6.
    """
    sentinel = Path(tempfile.gettempdir()) / f"#sql-encmigrate-sentinel-{os.getpid()}.MAI"
    sentinel.touch()
    try:
        if os.geteuid() == 0:  # the server runs as mysql: make the file one it could delete
            account = pwd.getpwnam("mysql")
            os.chown(sentinel, account.pw_uid, account.pw_gid)
        server.restart()
        assert sentinel.exists()
    finally:
        sentinel.unlink(missing_ok=True)


def test_server_restarted_twice_mid_run_is_recovered_with_two_workers(
    server: mariadb_cluster.Server, prepare: Prepare
) -> None:
    migration = prepare("restart_recovers")
    digest = plaintext_digest(migration)
    servers = [server.pid]
    seen = [0]
    restart_at = sorted(random.Random(7).sample(range(3, ROWS // BATCH - 10), 2))

    def progress(_: Progress) -> None:
        seen[0] += 1
        if restart_at and seen[0] >= restart_at[0]:
            restart_at.pop(0)
            server.restart()  # SIGTERM: every session of the run dies, helpers' too
            servers.append(server.pid)

    reports = migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        progress=progress,
        options=_two_workers(),
    )
    assert None not in servers and len(set(servers)) == 3, servers  # each a new mariadbd
    assert not reports[0].interrupted and reports[0].rows_done >= ROWS
    verdicts = migration.check()
    assert all(v.rows_checked == ROWS for v in verdicts)
    assert plaintext_digest(migration) == digest


def test_server_crash_mid_run_recovers_or_fails_cleanly_and_resumes(
    server: mariadb_cluster.Server, prepare: Prepare
) -> None:
    migration = prepare("crash")
    digest = plaintext_digest(migration)
    crashed: list[int] = []
    seen = [0]

    def progress(_: Progress) -> None:
        seen[0] += 1
        if seen[0] == 12:
            server.kill()  # SIGKILL: the batches in flight die with the server
            crashed.append(seen[0])
            time.sleep(0.5)  # down a moment: new sessions are refused
            server.start()  # InnoDB crash recovery

    try:
        migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            progress=progress,
            options=_two_workers(),
        )
    except DatabaseError as exc:
        message = str(exc)
        assert "\n" not in message and "progress is saved" in message, message
    assert crashed == [12]
    migration.engine.dispose()  # its pooled sessions died with the server
    _resume_and_verify(migration, digest)


def test_server_down_longer_than_the_budget_exits_4_with_one_line_and_resumes(
    server: mariadb_cluster.Server, prepare: Prepare, tmp_path: Path
) -> None:
    migration = prepare("restart_fails")
    digest = plaintext_digest(migration)
    cli_outlived_by_an_outage(
        migration, tmp_path, stop=server.stop, start=server.start, batch_size=BATCH
    )
    done = migration.scalar("SELECT count(*) FROM customers WHERE balance_encrypted IS NOT NULL")
    assert 500 <= done < ROWS
    _resume_and_verify(migration, digest)


def test_a_dead_runs_chunk_is_taken_over_after_a_restart_reuses_its_connection_id(
    server: mariadb_cluster.Server, prepare: Prepare, tmp_path: Path
) -> None:
    """Connection ids start again from 1 with the server: an unrelated session that gets
    the dead run's id must not make its chunk look live (a resume would be refused, and
    no ``--join`` worker could take the chunk, until the lease ran out)."""
    migration = prepare("id_reused")
    digest = plaintext_digest(migration)
    FileProvider(tmp_path / "keyring.json").save(migration.keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")
    command = ["--json", "migrate-data", "--batch-size", str(BATCH), "--sleep", "10"]
    with popen_cli(*command, cwd=tmp_path, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if '"rows_done": 500' in line:
                break
        process.kill()  # the chunk stays running, its lease a minute long
        process.wait()
    server.restart()
    migration.engine.dispose()
    owners = migration.scalar(
        "SELECT max(owner_pid) FROM encryption_migration_chunks WHERE status = 'running'"
    )
    assert owners is not None
    others = sa.create_engine(migration.url, poolclass=sa.pool.NullPool)
    held: list[sa.Connection] = []
    try:
        while True:  # unrelated sessions until one has the dead owner's connection id
            conn = others.connect()
            held.append(conn)
            session = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
            assert session <= int(owners), "the ids went past the dead owner's"
            if session == int(owners):
                break
        started = time.monotonic()
        resumed = migrate_data(migration.plan, migration.engine, migration.keyring)
        assert time.monotonic() - started < 30  # taken over, not waited out (60 s lease)
    finally:
        for conn in held:
            conn.close()
        others.dispose()
    assert not resumed[0].interrupted
    migration.check()
    assert plaintext_digest(migration) == digest
