"""Writers inserting, updating planned columns and deleting while migrate-data runs.

Four writer threads change the table throughout a two-worker run. Right
after it: no stale ciphertext (every shadow value decrypts to its row's
current plaintext, tokens included). After a final catch-up run: none
missing either, and no deleted row has come back. On PostgreSQL and on
MariaDB (two worker processes there too).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate.migrate import MigrateOptions, migrate_data
from reliability.conftest import Migration, Prepare
from support import mariadb_shadow

WRITERS = 4
ROWS = 4000


@pytest.fixture(params=mariadb_shadow.SERVERS)
def migration(request: pytest.FixtureRequest, prepare: Prepare, tmp_path: Path) -> Migration:
    """The customers table at step 1 with ROWS rows, on each server."""
    return mariadb_shadow.prepare_on(request.param, request, prepare, ROWS, tmp_path)


def test_writers_during_a_two_worker_run_leave_nothing_stale_or_missing(
    migration: Migration,
) -> None:
    json_value = "CAST(:p AS json)" if migration.engine.dialect.name == "postgresql" else ":p"
    stop = threading.Event()
    counts = {"insert": 0, "update": 0, "delete": 0}
    deleted: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        rng = random.Random(index)
        engine = migration.new_engine()
        next_id = 1_000_000 * (index + 1)
        try:
            with engine.connect() as conn:
                while not stop.is_set():
                    action = rng.choice(["insert", "update", "update", "delete"])
                    key = rng.randrange(1, ROWS + 1)
                    if action == "insert":
                        next_id += 1
                        conn.execute(
                            sa.text(
                                "INSERT INTO customers (id, email, balance, born) "
                                "VALUES (:k, :e, :b, DATE '2001-02-03')"
                            ),
                            {"k": next_id, "e": f"new.{next_id}@x.io", "b": rng.randrange(999)},
                        )
                    elif action == "update":
                        conn.execute(
                            sa.text(
                                "UPDATE customers SET email = :e, balance = balance + 1, "
                                f"profile = {json_value} WHERE id = :k"
                            ),
                            {"e": f"upd.{key}.{rng.random()}@x.io", "p": '{"v": 1}', "k": key},
                        )
                    else:
                        conn.execute(sa.text("DELETE FROM customers WHERE id = :k"), {"k": key})
                        with lock:
                            deleted.add(key)
                    conn.commit()
                    with lock:
                        counts[action] += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            options=MigrateOptions(batch_size=50, workers=2, rows_per_chunk=500, sleep_ms=2),
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert min(counts.values()) >= 20, counts
    migration.check(complete=False)  # 0 stale: what is there matches the current plaintext
    migrate_data(migration.plan, migration.engine, migration.keyring)  # the final catch-up
    verdicts = migration.check(complete=True)  # and 0 missing
    inserted = counts["insert"]
    rows = migration.scalar("SELECT count(*) FROM customers")
    assert rows == ROWS + inserted - len(deleted)
    assert all(v.rows_checked == rows for v in verdicts)
    with migration.engine.connect() as conn:
        gone = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": sorted(deleted)},
        ).scalar()
    assert gone == 0
