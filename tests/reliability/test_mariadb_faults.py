"""Faults on MariaDB: sessions killed under a two-worker run, the migrator SIGKILLed mid-batch,
two invocations setting up at once.

The PostgreSQL forms of the first two are tests/integration/test_migrate.py (parametrized onto
MariaDB too: KILL CONNECTION of a one-worker run, SIGKILL of the CLI) and
test_crash_consistency.py; here the MariaDB specifics: helper processes' sessions killed
with ``KILL CONNECTION`` (found in information_schema.PROCESSLIST), a kill that lands inside
a batch (its one-statement write and checkpoint commit together or not at all), and the
``GET_LOCK`` that serialises a run's setup. Each ends with a full verify: 0 missing,
0 mismatched, plaintext unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from encmigrate.migrate import MigrateOptions, RetryPolicy, migrate_data
from encmigrate.migrate import mysql as mysql_migrate
from encmigrate.migrate.database import is_transient
from reliability.conftest import Migration
from reliability.test_crash_consistency import CHILD
from support import mariadb_shadow

pytestmark = pytest.mark.mariadb

ROWS = 2000
BATCH = 50
# The SIGKILL trials: 20 batches of 50 per trial, in 2 chunks (a trial takes about 2 s, most
# of it the child interpreter starting); as many as PostgreSQL's in `make test`.
# ENCMIGRATE_CRASH_TRIALS sets the -m slow count.
CRASH_ROWS = 1000
TRIALS = 12
SLOW_TRIALS = 200


def _prepared(url: str, directory: Path, rows: int) -> Iterator[Migration]:
    made = mariadb_shadow.migration(url, rows, directory)
    yield made
    mariadb_shadow.dispose(made)


@pytest.fixture
def migration(mariadb_url: str, tmp_path: Path) -> Iterator[Migration]:
    yield from _prepared(mariadb_url, tmp_path, ROWS)


@pytest.fixture
def crash_migration(mariadb_url: str, tmp_path: Path) -> Iterator[Migration]:
    """The table the SIGKILL trials run on: ``CRASH_ROWS`` rows."""
    yield from _prepared(mariadb_url, tmp_path, CRASH_ROWS)


def _digest(migration: Migration) -> str:
    """Every row's key and plaintext: the migrator must never change them."""
    digest = hashlib.sha256()
    with migration.engine.connect() as conn:
        for row in conn.exec_driver_sql(
            "SELECT id, email, balance, born, profile FROM customers ORDER BY id"
        ):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def _sessions(admin: sa.Connection, database: str) -> list[tuple[int, int]]:
    """(session id, client port) of every other session on ``database``."""
    query = (
        "SELECT ID, HOST FROM information_schema.PROCESSLIST "
        "WHERE DB = :d AND ID <> CONNECTION_ID()"
    )
    found = admin.execute(sa.text(query), {"d": database}).all()
    return [(int(i), int(str(host).rpartition(":")[2] or 0)) for i, host in found]


def _our_ports() -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.laddr}


# -- a session lost between the batch's write and its checkpoint ------------------------------


def test_a_session_killed_after_the_write_fails_the_batch_with_a_transient_error(
    mariadb_url: str,
) -> None:
    """The write runs marked as the migrator's; unmarking is the batch's last statement.

    When the session is killed after the write, before the unmarking, the
    unmarking's lost-connection error must reach the retry. It was swallowed,
    and the checkpoint that followed failed with SQLAlchemy's
    PendingRollbackError, which no retry takes: the run (a helper process's,
    under KILL CONNECTION) ended in "database error".
    """
    engine = sa.create_engine(mariadb_url)
    admin = sa.create_engine(mariadb_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn, admin.connect() as other:
            transaction = conn.begin()
            session = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
            with pytest.raises(sa.exc.DBAPIError) as raised, mysql_migrate.marked_as_migrator(conn):
                other.exec_driver_sql(f"KILL CONNECTION {int(session)}")
            assert is_transient(raised.value)
            assert conn.invalidated  # the retry takes a new connection
            transaction.rollback()  # what the batch's `with conn.begin()` does on the error
    finally:
        engine.dispose()
        admin.dispose()


# -- KILL CONNECTION of every session, helper processes' included -----------------------------


def test_kill_connection_of_every_worker_session_mid_run_recovers(migration: Migration) -> None:
    admin = sa.create_engine(migration.url, isolation_level="AUTOCOMMIT")
    database = str(migration.engine.url.database)
    killed: list[int] = []
    helpers_killed: list[int] = []  # sessions whose client port is not this process's
    batches: list[int] = []

    def progress(_: object) -> None:
        batches.append(1)
        if len(batches) % 5 or len(killed) >= 3:
            return
        with admin.connect() as conn:
            found = _sessions(conn, database)
            ours = _our_ports()
            helpers = [session for session, port in found if port not in ours]
            if not helpers:
                return  # the helper process is not connected yet: the next time
            for session, _ in found:
                with contextlib.suppress(sa.exc.DBAPIError):  # ended meanwhile
                    conn.exec_driver_sql(f"KILL CONNECTION {session}")
            helpers_killed.extend(helpers)
            killed.append(len(found))

    digest = _digest(migration)
    try:
        reports = migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            progress=progress,
            options=MigrateOptions(
                batch_size=BATCH,
                rows_per_chunk=500,
                workers=2,
                sleep_ms=20,  # long enough for the helper process to start and claim
                retry=RetryPolicy(attempts=10, initial=0.01, maximum=0.2),
            ),
        )
    finally:
        admin.dispose()
    assert len(killed) == 3, killed
    assert helpers_killed, "no helper process's session was killed"
    assert not reports[0].interrupted
    verdicts = migration.check(complete=True)
    assert all(v.rows_checked == ROWS for v in verdicts)
    assert _digest(migration) == digest


# -- SIGKILL at a random point, inside a batch or between two ---------------------------------


def _kill_at_random(migration: Migration, rng: random.Random) -> bool:
    """Run migrate-data in a child and SIGKILL it at a random point; whether it was live."""
    workers = rng.choice([1, 2])
    kill_after = rng.randrange(1, CRASH_ROWS // BATCH)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, migration.url, str(migration.plan_path), str(workers),
         str(BATCH)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(migration.keyring.to_json())
    child.stdin.close()
    finished = False
    for seen, line in enumerate(child.stdout, start=1):
        if line.startswith("finished"):
            finished = True
            break
        if seen >= kill_after:
            time.sleep(rng.uniform(0, 0.01))  # sometimes mid-batch, sometimes between
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return not finished


def _trials(migration: Migration, count: int) -> int:
    digest = _digest(migration)
    killed = 0
    for seed in range(count):
        migration.reset()
        killed += _kill_at_random(migration, random.Random(seed))
        migration.check(complete=False)  # what the killed run committed is right
        resumed = migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            options=MigrateOptions(batch_size=BATCH, rows_per_chunk=500),
        )
        assert not resumed[0].interrupted
        verdicts = migration.check(complete=True)
        assert all(v.rows_checked == CRASH_ROWS for v in verdicts), seed
        assert _digest(migration) == digest, seed
    return killed


def test_sigkilled_migration_resumes_without_loss(crash_migration: Migration) -> None:
    assert _trials(crash_migration, TRIALS) >= TRIALS - 1


@pytest.mark.slow
def test_sigkilled_migration_resumes_without_loss_long_mode(crash_migration: Migration) -> None:
    count = int(os.environ.get("ENCMIGRATE_CRASH_TRIALS", str(SLOW_TRIALS)))
    assert _trials(crash_migration, count) >= count * 0.8


# -- two invocations setting up at once --------------------------------------------------------


def test_setup_waits_for_another_invocations_setup_lock(migration: Migration) -> None:
    """While another session holds the setup lock of (customers, encrypt), a run creates no
    chunk; it goes on once the lock is released."""
    holder = sa.create_engine(migration.url)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.extend(migrate_data(migration.plan, migration.engine, migration.keyring))
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    try:
        with holder.connect() as conn:
            with mysql_migrate.setup_lock(conn, "encmigrate:customers:encrypt"):
                runner = threading.Thread(target=run)
                runner.start()
                time.sleep(1.0)
                chunks = migration.scalar("SELECT count(*) FROM encryption_migration_chunks")
                assert chunks == 0 and runner.is_alive()  # waiting in GET_LOCK
            runner.join(60)
    finally:
        holder.dispose()
    assert not runner.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    migration.check(complete=True)
