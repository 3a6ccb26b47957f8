"""The five steps on MariaDB: what differs from PostgreSQL and SQLite.

MariaDB DDL is not transactional, so every generated revision must finish when
run again after failing halfway; its shadow trigger fires on every UPDATE (no
``UPDATE OF``) and compares values as bytes; the migrator marks its session
with a user variable; its views are updatable and fire the table's triggers.
The parametrized tests (test_five_steps_cli.py, test_writes_between_steps.py)
run the common path; these run what only MariaDB has.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import DatabaseError, Keyring, RefusedError, get_searchable_cipher
from encmigrate.migrate import (
    MigrateOptions,
    chunks,
    decrypt_back,
    key_versions,
    migrate_data,
    rewrap,
)
from encmigrate.migrate import connect as connect_engine
from encmigrate.migrate import mysql as mysql_write
from encmigrate.migrate import status as column_status
from encmigrate.migrate import verify as verify_columns
from encmigrate.plan import ColumnPhase
from encmigrate.revisions import add_columns, create_views, drop_unencrypted
from encmigrate.revisions.mysql_trigger import VIEW_WRITES_MARK, trigger_name
from support.cli import operator_env, run_cli
from support.revisions import Project, column, execute, make_project, rows

CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), "
    "email VARCHAR(255) NOT NULL DEFAULT 'none' COMMENT 'contact', phone VARCHAR(30))"
)
PLAN = column("customer", "email", searchable=True, normalize="lower") + column(
    "customer", "phone", storage="text"
)
OPTIONS = MigrateOptions(batch_size=2)
WRITER = "@`encmigrate.writer`"


@pytest.fixture
def project(tmp_path: Path, mariadb_url: str) -> Project:
    execute(
        mariadb_url,
        CUSTOMER,
        "INSERT INTO customer (id, name, email, phone) VALUES (1, 'Ann', 'Ann@example.com', "
        "'555-1'), (2, 'Bob', 'bob@example.com', NULL), (3, 'Cy', 'cy@example.com', '555-3')",
    )
    return make_project(tmp_path / "project", mariadb_url, PLAN)


def _schema(url: str) -> dict[str, Any]:
    """Tables, columns (type, nullability, default, comment), indexes, triggers and views."""
    queries = {
        "columns": "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, "
        "COLUMN_COMMENT, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'alembic_version' "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
        "indexes": "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME <> 'alembic_version' "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        "triggers": "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, "
        "ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() "
        "ORDER BY TRIGGER_NAME",
        "views": "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
    }
    return {name: rows(url, query) for name, query in queries.items()}


def _statements(script: str) -> list[str]:
    """The statements of a rendered revision (``--sql``), comments left out."""
    found = []
    for part in script.split(";\n\n"):
        lines = [line for line in part.strip().splitlines() if not line.startswith("--")]
        if lines[:1] == ["DELIMITER //"]:  # a compound statement (step 5's fence)
            lines = lines[1 : lines.index("//")]
        if lines:
            found.append("\n".join(lines).rstrip(";"))
    return found


def _run_first(url: str, statements: list[str], count: int) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements[:count]:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


# -- step 1: a revision that failed halfway finishes when run again ---------------------------


def test_add_columns_finishes_after_stopping_after_any_statement(project: Project) -> None:
    before = _schema(project.url)
    statements = _statements(add_columns(project.plan(), sql=True).sql or "")
    assert any("ALGORITHM=INSTANT" in s for s in statements)
    assert any("ALGORITHM=INPLACE LOCK=NONE" in s for s in statements)
    add_columns(project.plan())
    project.upgrade()
    after = _schema(project.url)
    assert [t[0] for t in after["triggers"]] == [trigger_name("customer")]
    project.downgrade()
    assert _schema(project.url) == before
    for count in range(1, len(statements) + 1):
        _run_first(project.url, statements, count)  # as if the revision failed there
        project.upgrade()
        assert _schema(project.url) == after, count
        project.downgrade()
        assert _schema(project.url) == before, count


def test_every_step_runs_again_after_it_was_applied_by_hand(project: Project) -> None:
    """Each revision's statements, applied once already (by a DBA, or by a failed run that
    got further than Alembic recorded), run again without an error."""
    keyring = Keyring.generate()
    engine = connect_engine(project.url)
    try:
        for step in (add_columns, create_views):
            statements = _statements(step(project.plan(), sql=True).sql or "")
            _run_first(project.url, statements, len(statements))
            done = _schema(project.url)
            step(project.plan())
            project.upgrade()
            assert _schema(project.url) == done, step.__name__
            if step is add_columns:
                migrate_data(project.plan(), engine, keyring, options=OPTIONS)
                assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
    finally:
        engine.dispose()


# -- the shadow trigger ------------------------------------------------------------------------


def _state(url: str, key: int) -> tuple[Any, ...]:
    return rows(
        url,
        f"SELECT email, email_encrypted IS NOT NULL, email_search IS NOT NULL, "
        f"phone, phone_encrypted IS NOT NULL FROM customer WHERE id = {key}",
    )[0]


@pytest.fixture
def migrated(project: Project) -> tuple[Project, Keyring]:
    keyring = Keyring.generate()
    add_columns(project.plan(), apply=True)
    engine = connect_engine(project.url)
    try:
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        # The migrator's batches reset the mark: the pooled connection carries nothing.
        with engine.connect() as connection:
            assert connection.exec_driver_sql(f"SELECT {WRITER}").scalar() is None
    finally:
        engine.dispose()
    return project, keyring


def test_trigger_clears_the_ciphertext_of_a_changed_plaintext(
    migrated: tuple[Project, Keyring],
) -> None:
    project, _ = migrated
    url = project.url
    assert _state(url, 1) == ("Ann@example.com", 1, 1, "555-1", 1)
    execute(url, "UPDATE customer SET name = 'Anne' WHERE id = 1")  # not planned: kept
    execute(url, "UPDATE customer SET email = email, phone = phone WHERE id = 1")  # no change
    assert _state(url, 1) == ("Ann@example.com", 1, 1, "555-1", 1)
    # Equal under the case-insensitive, PAD SPACE collation, yet a new plaintext.
    execute(url, "UPDATE customer SET email = 'ann@example.com' WHERE id = 1")
    assert _state(url, 1) == ("ann@example.com", 0, 0, "555-1", 1)
    execute(url, "UPDATE customer SET email = 'bob@example.com ' WHERE id = 2")
    assert _state(url, 2) == ("bob@example.com ", 0, 0, None, 0)
    execute(url, "UPDATE customer SET phone = NULL WHERE id = 3")  # a value to NULL
    assert _state(url, 3) == ("cy@example.com", 1, 1, None, 0)


def test_trigger_keeps_dual_writes_and_the_migrators_writes(
    migrated: tuple[Project, Keyring],
) -> None:
    project, keyring = migrated
    url = project.url
    email = get_searchable_cipher("customer.email", keyring=keyring)
    blob, token = email.seal("dual@example.com")
    execute(
        url,
        "UPDATE customer SET email = 'dual@example.com', email_encrypted = :c, "
        "email_search = :t WHERE id = 1",
        params={"c": blob, "t": token},
    )
    assert _state(url, 1)[:3] == ("dual@example.com", 1, 1)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET {WRITER} = 'migrator'")
            connection.exec_driver_sql("UPDATE customer SET email = 'm@example.com' WHERE id = 2")
            connection.exec_driver_sql(f"SET {WRITER} = NULL")
            # Another session's mark is not ours: user variables belong to one session.
            connection.exec_driver_sql("UPDATE customer SET email = 'n@example.com' WHERE id = 3")
    finally:
        engine.dispose()
    assert _state(url, 2)[:3] == ("m@example.com", 1, 1)
    assert _state(url, 3)[:3] == ("n@example.com", 0, 0)


def test_view_writes_fire_the_table_trigger(migrated: tuple[Project, Keyring]) -> None:
    project, keyring = migrated
    url = project.url
    create_views(project.plan(), apply=True)
    nullable = rows(
        url,
        "SELECT IS_NULLABLE, COLUMN_DEFAULT, COLUMN_COMMENT FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'customer' AND COLUMN_NAME = 'email'",
    )
    assert nullable == [("YES", "'none'", "contact")]  # NOT NULL gone, the rest kept
    email = get_searchable_cipher("customer.email", keyring=keyring)
    blob, token = email.seal("view@example.com")
    params = {"c": blob, "t": token}
    execute(
        url, "UPDATE customer_secure SET email = :c, email_search = :t WHERE id = 1", params=params
    )
    assert _state(url, 1)[:3] == (None, 1, 1)  # the ciphertext is the truth now
    engine = connect_engine(url)
    try:
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)  # catch-up run
        # The migrator leaves that row alone, and its mark kept the trigger off the rows
        # it wrote: every other plaintext is still there.
        assert rows(url, "SELECT id, email FROM customer ORDER BY id") == [
            (1, None), (2, "bob@example.com"), (3, "cy@example.com"),
        ]  # fmt: skip
        assert rows(url, "SELECT email_encrypted FROM customer WHERE id = 1") == [(blob,)]
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
    finally:
        engine.dispose()


# -- drop, status, rewrap, decrypt-back ---------------------------------------------------------


def test_drop_status_rewrap_and_decrypt_back(migrated: tuple[Project, Keyring]) -> None:
    project, keyring = migrated
    url = project.url
    engine = connect_engine(url)
    try:
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
        create_views(project.plan(), apply=True)
        # A plaintext changed after verify: the drop's own check refuses.
        execute(url, "UPDATE customer SET phone = '555-9' WHERE id = 1")
        with pytest.raises(RefusedError, match="plaintext and no ciphertext"):
            drop_unencrypted(project.plan(), confirm=True, apply=True)
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
        drop_unencrypted(project.plan(), confirm=True, apply=True, vacuum=True)
        assert all(c.phase is ColumnPhase.DROPPED for c in project.plan().columns)
        assert rows(url, "SELECT COUNT(*) FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = DATABASE()") == [(0,)]  # fmt: skip
        with engine.connect() as connection:
            email = project.plan().columns[0]
            assert key_versions(connection, email) == {1: 3}
        rotated = keyring.rotated()
        rewrap(project.plan(), engine, rotated, options=OPTIONS)
        with engine.connect() as connection:
            assert key_versions(connection, project.plan().columns[0]) == {2: 3}
            assert key_versions(connection, project.plan().columns[1]) == {2: 2}
        statuses = column_status(project.plan(), engine)
        assert {s.status for s in statuses} == {"dropped"}

        project.downgrade()  # the plaintext columns come back empty
        assert rows(url, "SELECT COUNT(*) FROM customer WHERE email IS NULL") == [(3,)]
        decrypt_back(project.plan(), engine, rotated, options=OPTIONS)
        assert rows(url, "SELECT id, email, phone FROM customer ORDER BY id") == [
            (1, "Ann@example.com", "555-9"),
            (2, "bob@example.com", None),
            (3, "cy@example.com", "555-3"),
        ]
    finally:
        engine.dispose()


def test_long_table_name_gets_a_trigger_within_64_characters(
    tmp_path: Path, mariadb_url: str
) -> None:
    table = "t" * 50  # encmigrate_shadow_ + 50 characters: 68
    execute(mariadb_url, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, secret VARCHAR(20))")
    project = make_project(tmp_path / "long", mariadb_url, column(table, "secret"))
    add_columns(project.plan(), apply=True)
    names = rows(mariadb_url, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                 "WHERE TRIGGER_SCHEMA = DATABASE()")  # fmt: skip
    assert names == [(trigger_name(table),)] and len(trigger_name(table)) <= 64


# -- what the trigger costs (reported, not asserted) --------------------------------------------


def test_trigger_cost_is_measured(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """UPDATEs of a column the plan does not name, with and without the shadow trigger."""
    url = project.url
    execute(
        url,
        "INSERT INTO customer (id, name, email) "
        "SELECT seq, 'n', CONCAT('u', seq, '@example.com') FROM seq_10_to_5009",
    )

    def timed() -> list[float]:
        engine = sa.create_engine(url)
        found = []
        try:
            with engine.connect() as connection:
                for round_ in range(7):
                    start = time.perf_counter()
                    connection.exec_driver_sql(f"UPDATE customer SET name = 'r{round_}'")
                    connection.commit()
                    found.append(time.perf_counter() - start)
        finally:
            engine.dispose()
        return found

    plain = timed()
    add_columns(project.plan(), apply=True)
    triggered = timed()
    with capsys.disabled():
        for label, runs in (("no trigger", plain), ("shadow trigger", triggered)):
            print(  # the measurement is the output of this test
                f"\nmariadb UPDATE of 5,003 rows, {label}: median "
                f"{statistics.median(runs) * 1000:.1f} ms "
                f"(min {min(runs) * 1000:.1f}, max {max(runs) * 1000:.1f}, 7 runs)"
            )


# -- DDL waits for the metadata lock a bounded time, then can finish later ---------------------


def test_ddl_behind_an_open_transaction_gives_up_then_finishes(
    tmp_path: Path, mariadb_url: str
) -> None:
    execute(mariadb_url, CUSTOMER, "INSERT INTO customer (id, email) VALUES (1, 'a@example.com')")
    project = make_project(
        tmp_path / "locked",
        mariadb_url,
        PLAN,
        extra='[migration]\nddl_lock_timeout = "1s"\nddl_retries = 1\n',
    )
    blocker = sa.create_engine(mariadb_url)
    try:
        with blocker.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM customer").all()  # holds its metadata lock
            start = time.monotonic()
            with pytest.raises(DatabaseError, match="customer is busy: lock timeout") as raised:
                add_columns(project.plan(), apply=True)
            assert time.monotonic() - start < 10  # 2 attempts of 1 s, and the backoff
            # The tracking tables were created before the ALTER waited: the file stays.
            assert "alembic upgrade head` finishes it" in str(raised.value)
            connection.rollback()
        project.upgrade()
        assert all(c.phase is ColumnPhase.SHADOWED for c in project.plan().columns)
    finally:
        blocker.dispose()


# -- the batch's one-statement write ------------------------------------------------------------


def test_one_statement_write_splits_keeps_stored_values_and_quotes_names(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_write, "MAX_STATEMENT_BYTES", 40)  # one row per statement
    engine = connect_engine(mariadb_url)
    try:
        with engine.begin() as connection:  # names no text() or driver formatting may parse
            connection.connection.cursor().execute(
                "CREATE TABLE `w%s` (a INTEGER, `b :x` VARCHAR(10), `c%s` LONGBLOB, "
                "s BINARY(32), PRIMARY KEY (a, `b :x`))"
            )
            connection.connection.cursor().execute(
                "INSERT INTO `w%s` (a, `b :x`, `c%s`) VALUES (1, 'x', 'old1'), (2, 'y', 'old2'), "
                "(3, 'z', NULL)"
            )
        table = sa.Table("w%s", sa.MetaData(), autoload_with=engine)
        blob, token = b"\x00new'\\%s", bytes(range(32))
        with engine.begin() as connection:
            assert mysql_write.one_statement_write(
                connection, [table.c["c%s"], table.c.s], [[blob, None, blob], [token] * 3]
            )
            mysql_write.write_rows(
                connection,
                table,
                list(table.primary_key.columns),
                [(1, "x"), (2, "y"), (3, "z")],
                [[blob, None, blob], [token, token, None]],
                [table.c["c%s"], table.c.s],
            )
        assert rows(mariadb_url, "SELECT a, `c%s`, s FROM `w%s` ORDER BY a") == [
            (1, blob, token), (2, b"old2", token), (3, blob, None),
        ]  # fmt: skip
    finally:
        engine.dispose()


# -- a second run on a table with a live run is refused; a dead run's chunks are taken over ------


def test_second_run_is_refused_while_the_first_connection_lives(
    migrated: tuple[Project, Keyring],
) -> None:
    project, keyring = migrated
    url = project.url
    execute(url, "UPDATE customer SET phone = '555-0' WHERE id = 1")  # work for a new run
    holder = sa.create_engine(url)
    engine = connect_engine(url)
    try:
        with holder.connect() as connection:
            own = connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
            # What a worker's session does on its first claim: hold its owner lock.
            connection.execute(
                sa.text("SELECT GET_LOCK(:name, 0)"),
                {"name": chunks.owner_lock_name("other", int(own))},
            )
            connection.exec_driver_sql(
                "UPDATE encryption_migration_chunks SET status = 'running', lease_owner = 'other', "
                "owner_pid = %s, lease_expires_at = UTC_TIMESTAMP() + INTERVAL 1 HOUR",
                (own,),
            )
            connection.commit()
            with pytest.raises(RefusedError, match="run is live"):
                migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        # The holder's connection is gone: its chunk is taken over at once, lease or not.
        holder.dispose()
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        assert _state(url, 1)[3:] == ("555-0", 1)
    finally:
        engine.dispose()
        holder.dispose()


# -- the commands around the steps, through the CLI ----------------------------------------------


def test_cli_rewrap_status_and_decrypt_back(tmp_path: Path, mariadb_url: str) -> None:
    execute(
        mariadb_url,
        CUSTOMER,
        "INSERT INTO customer (id, name, email, phone) VALUES (1, 'Ann', 'Ann@example.com', "
        "'555-1'), (2, 'Bob', 'bob@example.com', NULL), (3, 'Cy', 'cy@example.com', '555-3')",
    )
    env = operator_env(
        ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json", ENCMIGRATE_DATABASE_URL=mariadb_url
    )

    def ok(*args: str) -> str:
        done = run_cli(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    ok("init")
    with (tmp_path / "encmigrate.toml").open("a") as plan:
        plan.write(PLAN)
    ok("keys", "generate")
    ok("add-columns", "--apply")
    ok("migrate-data", "--batch-size", "2")
    ok("verify")
    ok("create-views", "--apply")
    ok("drop-unencrypted", "--confirm", "--apply")
    ok("keys", "rotate")
    ok("rewrap", "--batch-size", "2")
    state = json.loads(ok("--json", "status"))
    assert {s["column"]: s["key_versions"] for s in state} == {
        "email": {"2": 3},
        "phone": {"2": 2},
    }
    # The drop's downgrade, as a DBA runs it: the plaintext columns come back empty.
    downgrade = subprocess.run(
        [sys.executable, "-m", "alembic", "downgrade", "-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert downgrade.returncode == 0, downgrade.stderr
    ok("decrypt-back", "--batch-size", "2")
    assert rows(mariadb_url, "SELECT id, email, phone FROM customer ORDER BY id") == [
        (1, "Ann@example.com", "555-1"),
        (2, "bob@example.com", None),
        (3, "cy@example.com", "555-3"),
    ]


# -- step 5: a write between the check and the DROP is refused, never lost -------------------


def _is_the_drop_check(statement: str) -> bool:
    return statement.startswith("SELECT 1 FROM customer WHERE") and statement.endswith(" LIMIT 1")


def test_a_plaintext_write_after_the_drop_check_is_refused_not_lost(
    migrated: tuple[Project, Keyring],
) -> None:
    """An application UPDATE of a plaintext, on another connection, after the drop's check
    passed and before its first DROP: refused (or the drop refused), never accepted and lost."""
    project, keyring = migrated
    url = project.url
    engine = connect_engine(url)
    try:
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
    finally:
        engine.dispose()
    create_views(project.plan(), apply=True)
    before = rows(url, "SELECT phone_encrypted FROM customer WHERE id = 1")[0][0]
    application = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    checked: list[str] = []
    refused: list[str] = []
    accepted: list[bool] = []

    def between(connection: sa.Connection, cursor: Any, statement: str, *_: Any) -> None:
        if _is_the_drop_check(statement):
            checked.append(statement)
        if not checked or accepted or refused:
            return
        if not statement.startswith(("DROP TRIGGER", "ALTER TABLE")):
            return
        try:
            with application.connect() as other:
                other.exec_driver_sql("UPDATE customer SET phone = '555-7' WHERE id = 1")
            accepted.append(True)
        except sa.exc.DBAPIError as exc:
            refused.append(str(exc.orig))

    sa.event.listen(sa.Engine, "before_cursor_execute", between)
    try:
        dropped = True
        try:
            drop_unencrypted(project.plan(), confirm=True, apply=True)
        except RefusedError:
            dropped = False
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", between)
        application.dispose()
    assert accepted or refused, "the hook never ran: no DROP after the check"
    if accepted:
        assert not dropped, "write accepted, then the drop lost it"
        assert rows(url, "SELECT phone FROM customer WHERE id = 1") == [("555-7",)]
        return
    assert dropped
    assert "customer.phone is being dropped (step 5)" in refused[0], refused
    assert "customer_secure view" in refused[0]
    assert rows(url, "SELECT phone_encrypted FROM customer WHERE id = 1") == [(before,)]


def _verified_with_views(project: Project, keyring: Keyring) -> None:
    engine = connect_engine(project.url)
    try:
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
    finally:
        engine.dispose()
    create_views(project.plan(), apply=True)


def _triggers(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT TRIGGER_NAME, EVENT_MANIPULATION, LEFT(ACTION_STATEMENT, 34) "
                "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() "
                "ORDER BY TRIGGER_NAME")  # fmt: skip


def test_a_check_refused_behind_the_fence_lifts_it(migrated: tuple[Project, Keyring]) -> None:
    """A plaintext written after the first check and before the fence: the check behind the
    fence refuses, the fence comes down (the application writes again), nothing is dropped."""
    project, keyring = migrated
    url = project.url
    _verified_with_views(project, keyring)
    shadow = _triggers(url)
    assert shadow == [(trigger_name("customer"), "UPDATE", VIEW_WRITES_MARK)]
    application = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    written: list[str] = []

    def before_fence(connection: sa.Connection, cursor: Any, statement: str, *_: Any) -> None:
        if written or not statement.startswith("CREATE OR REPLACE TRIGGER encmigrate_fence"):
            return
        with application.connect() as other:
            other.exec_driver_sql("UPDATE customer SET phone = '555-8' WHERE id = 3")
        written.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", before_fence)
    try:
        with pytest.raises(RefusedError, match="plaintext and no ciphertext") as raised:
            drop_unencrypted(project.plan(), confirm=True, apply=True)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", before_fence)
    assert written
    assert "alembic upgrade head` finishes it" in str(raised.value)
    assert _triggers(url) == shadow  # the fence is down, the shadow trigger as it was
    try:
        with application.connect() as other:
            other.exec_driver_sql("UPDATE customer SET phone = '555-9' WHERE id = 3")
            other.exec_driver_sql("INSERT INTO customer (id, email) VALUES (4, 'd@example.com')")
    finally:
        application.dispose()
    assert all(c.phase is ColumnPhase.SHADOWED for c in project.plan().columns)
    engine = connect_engine(url)
    try:
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        assert all(v.ok for v in verify_columns(project.plan(), engine, keyring))
    finally:
        engine.dispose()
    project.upgrade()  # the kept revision runs again from its first statement
    assert all(c.phase is ColumnPhase.DROPPED for c in project.plan().columns)
    assert _triggers(url) == []


def test_drop_finishes_after_stopping_after_any_statement(
    migrated: tuple[Project, Keyring],
) -> None:
    project, keyring = migrated
    url = project.url
    _verified_with_views(project, keyring)
    statements = _statements(drop_unencrypted(project.plan(), confirm=True, sql=True).sql or "")
    assert any(s.startswith("CREATE TRIGGER encmigrate_fence_i_customer") for s in statements)
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    after = _schema(url)
    project.downgrade()  # the plaintext columns come back empty: every check passes
    down = _schema(url)
    for count in range(1, len(statements) + 1):
        _run_first(url, statements, count)  # as if the revision failed there
        project.upgrade()
        assert _schema(url) == after, count
        project.downgrade()
        assert _schema(url) == down, count


def test_the_fence_waits_for_an_open_transaction_then_the_check_sees_its_write(
    migrated: tuple[Project, Keyring],
) -> None:
    """A plaintext UPDATE not yet committed when the drop starts: the fence's CREATE TRIGGER
    waits for its transaction (metadata lock), so the check behind it sees the write."""
    project, keyring = migrated
    url = project.url
    _verified_with_views(project, keyring)
    application = sa.create_engine(url)
    try:
        with application.connect() as other:
            other.exec_driver_sql("UPDATE customer SET phone = '555-6' WHERE id = 1")
            timer = threading.Timer(0.5, other.commit)
            timer.start()
            try:
                with pytest.raises(RefusedError, match="plaintext and no ciphertext"):
                    drop_unencrypted(project.plan(), confirm=True, apply=True)
            finally:
                timer.join()
    finally:
        application.dispose()
    assert rows(url, "SELECT phone, phone_encrypted FROM customer WHERE id = 1") == [
        ("555-6", None)
    ]
    assert _triggers(url) == [(trigger_name("customer"), "UPDATE", VIEW_WRITES_MARK)]


def test_a_session_killed_under_the_migrators_mark_fails_as_a_lost_connection(
    mariadb_url: str,
) -> None:
    """KILL CONNECTION during a batch's write: the error is the lost connection (which the
    retry policy retries), not SQLAlchemy's refusal to reset the mark on a dead session."""
    engine = connect_engine(mariadb_url)
    admin = sa.create_engine(mariadb_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            own = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
            conn.commit()

            def killed_in_the_mark() -> None:
                with conn.begin(), mysql_write.marked_as_migrator(conn):
                    with admin.connect() as other:
                        other.exec_driver_sql(f"KILL CONNECTION {int(own)}")
                    conn.exec_driver_sql("SELECT 1")

            with pytest.raises(sa.exc.OperationalError, match=r"Lost connection|gone away"):
                killed_in_the_mark()
    finally:
        admin.dispose()
        engine.dispose()
