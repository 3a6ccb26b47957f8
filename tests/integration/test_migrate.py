"""migrate-data and verify on real databases: correctness, races, faults, resume."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.keys import FileProvider
from encmigrate.migrate import MigrateOptions, RetryPolicy, migrate_data, status, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.tracking import failures, migrations
from support import mariadb_shadow, shadow_schema
from support.cli import operator_env, popen_cli, run_cli

_ENGINES: list[sa.Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> object:
    yield
    while _ENGINES:
        _ENGINES.pop().dispose()


def _engine(url: str) -> sa.Engine:
    engine = connect_engine(url)
    _ENGINES.append(engine)
    return engine


@pytest.fixture(params=mariadb_shadow.SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL or MariaDB database: the tests that run on both."""
    fixture = "pg_url" if request.param == "postgresql" else "mariadb_url"
    return str(request.getfixturevalue(fixture))


def _setup(url: str, tmp_path: Path, rows: int) -> tuple[sa.Engine, object, Keyring]:
    if url.startswith(("mysql", "mariadb")):
        plan_path = mariadb_shadow.build(url, rows, tmp_path)
    else:
        engine, plan_path = shadow_schema.build(url, rows, tmp_path)
        engine.dispose()
    keyring = Keyring.generate()
    return _engine(url), shadow_schema.load_plan(plan_path), keyring


def _all_ok(plan: object, engine: sa.Engine, keyring: Keyring) -> list[object]:
    verdicts = verify(plan, engine, keyring)  # type: ignore[arg-type]
    for v in verdicts:
        assert v.ok, v.summary()
    return verdicts


def test_migrate_then_verify_every_column(db_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(db_url, tmp_path, 3000)
    reports = migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=250))  # type: ignore[arg-type]
    assert reports[0].rows_done == 3000
    verdicts = _all_ok(plan, engine, keyring)
    email = next(v for v in verdicts if v.column == "email")  # type: ignore[attr-defined]
    assert email.matches == 3000 - 3000 // 97 and email.both_null == 3000 // 97
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(migrations.c.column_name, migrations.c.status)).all())
    assert set(states.values()) == {"verified"}
    found = status(plan, engine)  # type: ignore[arg-type]
    assert {s.column: dict(s.versions) for s in found}["balance"] == {1: 3000}


def test_values_written_by_the_migrator_are_the_library_format(db_url: str, tmp_path: Path) -> None:
    from encmigrate import get_cipher, get_searchable_cipher

    engine, plan, keyring = _setup(db_url, tmp_path, 50)
    migrate_data(plan, engine, keyring)  # type: ignore[arg-type]
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT email, email_encrypted, email_search, balance, balance_encrypted "
                "FROM customers WHERE id = 1"
            )
        ).one()
    assert get_cipher("customers.email", keyring=keyring).decrypt(row.email_encrypted) == row.email
    search = get_searchable_cipher("customers.email", normalize="lower", keyring=keyring)
    assert row.email_search in search.lookup_tokens(row.email.upper())
    value = get_cipher("customers.balance", type="numeric", keyring=keyring).decrypt(
        row.balance_encrypted
    )
    assert value == Decimal(str(row.balance))


def test_dry_run_changes_nothing_and_reports_a_rate(db_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(db_url, tmp_path, 1200)
    reports = migrate_data(
        plan,
        engine,
        keyring,
        options=MigrateOptions(  # type: ignore[arg-type]
            batch_size=200, dry_run=True
        ),
    )
    assert reports[0].rows_done == 1200 and reports[0].rate > 0
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL")
            ).scalar()
            == 0
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(migrations)).scalar() == 0


def test_values_that_do_not_fit_go_to_the_failures_table(pg_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(pg_url, tmp_path, 500)
    with engine.begin() as conn:  # born planned as date; store it as text with one bad value
        conn.execute(sa.text("DROP TRIGGER encmigrate_shadow ON customers"))
        conn.execute(sa.text("ALTER TABLE customers ALTER COLUMN born TYPE text"))
        shadow_schema.install_trigger(conn)
        conn.execute(sa.text("UPDATE customers SET born = 'not a date' WHERE id = 42"))
    plan = shadow_schema.load_plan(plan.source)  # type: ignore[attr-defined]
    reports = migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=100))  # type: ignore[arg-type]
    assert reports[0].rows_failed == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(failures)).mappings().all()
        assert [(r["column_name"], r["primary_key"]) for r in rows] == [("born", [42])]
        assert "not a date" not in rows[0]["reason"]
        done = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE born_encrypted IS NOT NULL")
        ).scalar()
        assert done == 499
        email_done = conn.execute(
            sa.text("SELECT email_encrypted IS NOT NULL FROM customers WHERE id = 42")
        ).scalar()
        assert email_done  # the other columns of the row are still encrypted


def test_concurrent_writer_leaves_no_stale_ciphertext(pg_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(pg_url, tmp_path, 6000)
    stop = threading.Event()
    changes = {"updates": 0, "inserts": 0}

    def writer() -> None:
        rng = random.Random(5)
        writer_engine = sa.create_engine(pg_url)
        next_id = 100_000
        with writer_engine.connect() as conn:
            while not stop.is_set():
                key = rng.randrange(1, 6001)
                conn.execute(
                    sa.text("UPDATE customers SET email = :e, balance = balance + 1 WHERE id = :k"),
                    {"e": f"changed.{key}.{rng.random()}@x.io", "k": key},
                )
                next_id += 1
                conn.execute(
                    sa.text("INSERT INTO customers (id, email, balance) VALUES (:k, :e, 7)"),
                    {"k": next_id, "e": f"new{next_id}@x.io"},
                )
                conn.commit()
                changes["updates"] += 1
                changes["inserts"] += 1
        writer_engine.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        migrate_data(
            plan,
            engine,
            keyring,
            options=MigrateOptions(  # type: ignore[arg-type]
                batch_size=100, workers=2, rows_per_chunk=1000, sleep_ms=2
            ),
        )
    finally:
        stop.set()
        thread.join()
    assert changes["updates"] > 50
    verdicts = verify(plan, engine, keyring)  # type: ignore[arg-type]
    assert sum(v.mismatches + v.token_mismatches + v.undecryptable for v in verdicts) == 0
    migrate_data(plan, engine, keyring)  # type: ignore[arg-type]  # catches up the last writes
    _all_ok(plan, engine, keyring)


# The migrator's sessions, seen from another connection, and how that one ends each.
_SESSIONS = {
    "postgresql": (
        "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()",
        "SELECT pg_terminate_backend({})",
    ),
    "mysql": (
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = :d AND ID <> CONNECTION_ID()",
        "KILL CONNECTION {}",
    ),
}


def test_terminated_connection_is_recovered_automatically(server_url: str, tmp_path: Path) -> None:
    """Every session of the run killed from another connection (pg_terminate_backend,
    KILL CONNECTION), three times: the run recovers within its retry budget."""
    engine, plan, keyring = _setup(server_url, tmp_path, 4000)
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    database = engine.url.database
    find, end = _SESSIONS[engine.dialect.name]
    killed = []

    def progress(_: object) -> None:
        if len(killed) < 3:
            with admin.connect() as conn:
                ids = conn.execute(sa.text(find), {"d": database}).scalars().all()
                for session in ids:
                    with contextlib.suppress(sa.exc.DBAPIError):  # gone meanwhile
                        conn.exec_driver_sql(end.format(int(session)))
                killed.append(len(ids))

    reports = migrate_data(
        plan,
        engine,
        keyring,
        progress=progress,
        options=MigrateOptions(  # type: ignore[arg-type]
            batch_size=200, retry=RetryPolicy(attempts=10, initial=0.01, maximum=0.2)
        ),
    )
    admin.dispose()
    assert sum(killed) >= 3
    assert reports[0].rows_done >= 4000
    _all_ok(plan, engine, keyring)


def test_lock_timeout_is_retried_until_the_competing_lock_goes(pg_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(pg_url, tmp_path, 1000)
    blocker = sa.create_engine(pg_url)
    conn = blocker.connect()
    transaction = conn.begin()
    conn.execute(sa.text("SELECT 1 FROM customers WHERE id = 500 FOR UPDATE"))
    retries: list[int] = []
    release = threading.Timer(1.0, transaction.rollback)
    release.start()

    class CountingPolicy(RetryPolicy):
        """The policy, noting each retry (RetryPolicy is frozen: it is subclassed, not patched)."""

        def run(self, work, *, on_retry=None, **kwargs):  # type: ignore[no-untyped-def]
            return super().run(work, on_retry=lambda e, n: retries.append(n), **kwargs)

    policy = CountingPolicy(attempts=30, initial=0.05, maximum=0.2)
    migrate_data(
        plan,
        engine,
        keyring,
        options=MigrateOptions(  # type: ignore[arg-type]
            batch_size=100, lock_timeout_ms=100, retry=policy
        ),
    )
    release.join()
    conn.close()
    blocker.dispose()
    assert retries, "the lock should have timed out at least once"
    _all_ok(plan, engine, keyring)


def test_second_plain_runner_is_refused_while_join_shares_the_work(
    server_url: str, tmp_path: Path
) -> None:
    from encmigrate.errors import RefusedError

    engine, plan, keyring = _setup(server_url, tmp_path, 4000)
    started = threading.Event()
    checked = threading.Event()

    def slow_progress(_: object) -> None:
        started.set()
        checked.wait(10)
        time.sleep(0.02)

    runner = threading.Thread(
        target=migrate_data,
        args=(plan, engine, keyring),
        kwargs={
            "progress": slow_progress,
            "options": MigrateOptions(batch_size=100, rows_per_chunk=1000),
        },
    )
    runner.start()
    assert started.wait(10)
    try:
        with pytest.raises(RefusedError, match="--join"):
            migrate_data(plan, _engine(server_url), keyring)  # type: ignore[arg-type]
        checked.set()
        joined = migrate_data(
            plan,  # type: ignore[arg-type]
            _engine(server_url),
            keyring,
            options=MigrateOptions(batch_size=100, join=True),
        )
        assert joined[0].rows_done > 0
    finally:
        checked.set()
        runner.join()
    _all_ok(plan, engine, keyring)


def test_a_dead_workers_chunk_is_reclaimed_at_once(pg_url: str, tmp_path: Path) -> None:
    """A chunk left 'running' by a session that no longer exists is not waited for."""
    from encmigrate.tracking import chunks

    engine, plan, keyring = _setup(pg_url, tmp_path, 2000)
    options = MigrateOptions(batch_size=100, rows_per_chunk=1000, max_batches=3)
    migrate_data(plan, engine, keyring, options=options)  # type: ignore[arg-type]
    with engine.begin() as conn:  # as if its worker was SIGKILLed: running, owner session gone
        conn.execute(
            chunks.update().values(
                status="running",
                lease_owner="dead:1:x/0",
                owner_pid=999_999,
                lease_expires_at=sa.func.now() + sa.text("interval '1 hour'"),
            )
        )
    started = time.monotonic()
    migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=100))  # type: ignore[arg-type]
    assert time.monotonic() - started < 30
    _all_ok(plan, engine, keyring)


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return popen_cli("--json", *args, cwd=cwd, env=env)


def _cli_env(tmp_path: Path, keyring: Keyring) -> dict[str, str]:
    FileProvider(tmp_path / "keyring.json").save(keyring)
    return operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")


# One seed in `make test` (the seeded SIGKILL trials of reliability/test_crash_consistency.py
# and test_mariadb_faults.py kill at many more points); the other two with `-m slow`.
@pytest.mark.parametrize(
    "seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
def test_sigkill_at_a_random_batch_then_resume_loses_nothing(
    server_url: str, tmp_path: Path, seed: int
) -> None:
    engine, plan, keyring = _setup(server_url, tmp_path, 5000)
    env = _cli_env(tmp_path, keyring)
    kill_after = random.Random(seed).randrange(2, 20)
    batches = 0
    command = ["migrate-data", "--batch-size", "100", "--workers", "2", "--sleep", "5"]
    with _cli(command, tmp_path, env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if '"event": "progress"' in line:
                batches += 1
                if batches >= kill_after:
                    process.kill()
                    break
        process.wait()
    assert process.returncode == -9
    with engine.connect() as conn:
        done = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL")
        ).scalar()
    assert 0 < done < 5000
    resumed = run_cli(
        "--json", "migrate-data", "--batch-size", "100", cwd=tmp_path, env=env, warm=False
    )
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("["))
    report = json.loads("\n".join(lines[start:]))
    assert report[0]["rows_done"] < 5000  # resumed, not redone
    _all_ok(plan, engine, keyring)


def test_cli_verify_exit_codes(pg_url: str, tmp_path: Path) -> None:
    engine, _, keyring = _setup(pg_url, tmp_path, 300)
    env = _cli_env(tmp_path, keyring)
    done = run_cli("verify", cwd=tmp_path, env=env)
    assert done.returncode == 1  # nothing migrated yet: missing
    assert run_cli("migrate-data", cwd=tmp_path, env=env).returncode == 0
    done = run_cli("--json", "verify", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert all(v["ok"] for v in json.loads(done.stdout))
    with engine.begin() as conn:  # tamper with one value
        conn.execute(
            sa.text(
                "UPDATE customers SET balance_encrypted = "
                "set_byte(balance_encrypted, 20, get_byte(balance_encrypted, 20) # 1) "
                "WHERE id = 7"
            )
        )
    done = run_cli("--json", "verify", cwd=tmp_path, env=env)
    assert done.returncode == 1
    balance = next(v for v in json.loads(done.stdout) if v["column"] == "balance")
    assert balance["undecryptable"] == 1 and balance["problem_keys"][0]["key"] == [7]
    env["ENCMIGRATE_KEYRING"] = Keyring.generate().to_json()  # the wrong key altogether
    done = run_cli("verify", cwd=tmp_path, env=env)
    assert done.returncode == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_after_the_batch_saves_progress_and_exits_130(
    pg_url: str, tmp_path: Path, workers: int
) -> None:
    import signal

    engine, _, keyring = _setup(pg_url, tmp_path, 5000)
    env = _cli_env(tmp_path, keyring)
    command = ["migrate-data", "--batch-size", "100", "--sleep", "20", "--workers", str(workers)]
    with _cli(command, tmp_path, env) as process:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            if '"event": "progress"' in line:
                process.send_signal(signal.SIGINT)
                break
        remaining = process.stdout.read()
        errors = process.stderr.read()
        process.wait()
    assert process.returncode == 130, errors
    assert "progress is saved" in errors and "Traceback" not in errors
    assert '"interrupted": true' in remaining
    with engine.connect() as conn:
        done = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE email_encrypted IS NOT NULL")
        ).scalar()
        saved = conn.execute(
            sa.text("SELECT coalesce(sum(rows_done), 0) FROM encryption_migration_chunks")
        ).scalar()
        running = conn.execute(
            sa.text("SELECT count(*) FROM encryption_migration_chunks WHERE status = 'running'")
        ).scalar()
        written = conn.execute(  # balance is never NULL in the sample rows
            sa.text("SELECT count(*) FROM customers WHERE balance_encrypted IS NOT NULL")
        ).scalar()
    assert 0 < done < 5000
    assert saved == written  # every written row's batch was checkpointed, the helper's too
    assert running == 0  # every worker gave its chunk back


def test_metrics_file_reports_migration_rows_and_lag(pg_url: str, tmp_path: Path) -> None:
    _, _, keyring = _setup(pg_url, tmp_path, 800)
    env = _cli_env(tmp_path, keyring)
    metrics = tmp_path / "encmigrate.prom"
    done = run_cli(
        "migrate-data", "--batch-size", "200", "--metrics-file", str(metrics), cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    text = metrics.read_text()
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("encmigrate_migration_rows_total{") and 'column="email"' in line
    ]
    assert rows and float(rows[0].split()[-1]) == 800
    lag = [
        line
        for line in text.splitlines()
        if line.startswith("encmigrate_migration_lag_rows{") and 'column="email"' in line
    ]
    assert lag and float(lag[0].split()[-1]) == 0


def test_debug_output_shows_sql_but_never_values_or_keys(pg_url: str, tmp_path: Path) -> None:
    import base64

    engine, _, keyring = _setup(pg_url, tmp_path, 120)
    env = _cli_env(tmp_path, keyring)
    env["ENCMIGRATE_DEBUG_LOGGERS"] = "sqlalchemy.engine"  # SQL is shown only on request
    with engine.connect() as conn:
        emails = (
            conn.execute(sa.text("SELECT email FROM customers WHERE email IS NOT NULL"))
            .scalars()
            .all()
        )
    done = run_cli("--debug", "migrate-data", "--batch-size", "50", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "UPDATE" in output or "SELECT" in output  # the SQL is there
    assert not [e for e in emails if e in output]
    material = keyring.master_key(1)
    assert base64.b64encode(material).decode() not in output and material.hex() not in output


def test_a_fixed_value_clears_its_failure_on_the_next_run(db_url: str, tmp_path: Path) -> None:
    engine, plan, keyring = _setup(db_url, tmp_path, 300)
    with engine.begin() as conn:  # profile is planned as json: plant text that is not JSON
        conn.execute(sa.text("UPDATE customers SET profile = NULL WHERE id = 5"))
    migrate_data(plan, engine, keyring)  # type: ignore[arg-type]
    # Text that does not parse as the declared type goes to the failures table.
    with engine.begin() as conn:
        conn.execute(
            failures.insert().values(
                table_name="customers",
                column_name="born",
                primary_key=[9],
                reason="value does not parse",
            )
        )
        conn.execute(sa.text("UPDATE customers SET born_encrypted = NULL WHERE id = 9"))
    reports = migrate_data(plan, engine, keyring)  # type: ignore[arg-type]
    assert reports[0].rows_failed == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(failures)).scalar() == 0
        row = conn.execute(
            sa.select(migrations.c.rows_done, migrations.c.rows_total).where(
                migrations.c.column_name == "born"
            )
        ).one()
    assert tuple(row) == (300, 300)


def _tracked_counts(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(migrations.c.column_name, migrations.c.rows_done, migrations.c.rows_total)
        ).all()
    return {str(column): (int(done), int(total)) for column, done, total in rows}


def _table_counts(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    counts = {}
    with engine.connect() as conn:
        for column in ("email", "balance", "born", "profile"):
            done, total = conn.execute(
                sa.text(
                    f"SELECT count({column}_encrypted), count(CASE WHEN {column} IS NOT NULL "
                    f"OR {column}_encrypted IS NOT NULL THEN 1 END) FROM customers"
                )
            ).one()
            counts[column] = (int(done), int(total))
    return counts


@pytest.mark.parametrize("write_behind", [False, True], ids=["quiet", "catch-up-writes"])
def test_tracked_counts_are_the_tables_after_a_run(
    server_url: str, tmp_path: Path, write_behind: bool
) -> None:
    """rows_done / rows_total come from one census of the table after the catch-up, or from
    a count after it when the catch-up wrote rows: either way they are the table's own."""
    engine, plan, keyring = _setup(server_url, tmp_path, 1200)
    with engine.begin() as conn:  # values to leave alone: NULL plaintexts
        conn.execute(sa.text("UPDATE customers SET email = NULL, balance = NULL WHERE id <= 30"))
    writes: list[int] = []

    def progress(event: object) -> None:
        if write_behind and getattr(event, "phase", "") == "chunks" and len(writes) < 5:
            writes.append(1)
            with engine.begin() as conn:  # behind the cursor: the trigger clears the shadow
                conn.execute(
                    sa.text("UPDATE customers SET email = concat('new.', email) WHERE id = :k"),
                    {"k": 40 + len(writes)},
                )

    reports = migrate_data(plan, engine, keyring, progress=progress)  # type: ignore[arg-type]
    assert (reports[0].catch_up_rows > 0) is write_behind
    counts = _table_counts(engine)
    with engine.connect() as conn:
        emails = conn.execute(sa.text("SELECT count(email) FROM customers")).scalar_one()
    assert 0 < emails <= 1170 and counts["email"] == (emails, emails)
    assert _tracked_counts(engine) == counts
    _all_ok(plan, engine, keyring)
