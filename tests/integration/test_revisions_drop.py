"""Step 5: drop-unencrypted: refusals, the in-revision check, the drop and its undo."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from alembic import command

from encmigrate import RefusedError
from encmigrate.plan import ColumnPhase
from encmigrate.revisions import add_columns, create_views, drop_unencrypted
from support.revisions import (
    Project,
    column,
    columns_of,
    execute,
    make_project,
    psql,
    rows,
    schema_of,
)

VERIFIED_EMAIL = (
    "INSERT INTO encryption_migrations (table_name, column_name, status) "
    "VALUES ('customer', 'email', 'verified')"
)
CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), "
    "email VARCHAR(255), phone VARCHAR(30))"
)


def _encrypted_and_verified(project: Project) -> None:
    """What migrate-data and a clean full verify leave behind."""
    execute(
        project.url,
        "UPDATE customer SET email_encrypted = :c, email_search = :t, phone_encrypted = :c",
        params={"c": b"\x01cipher", "t": b"\x02token"},
    )
    execute(
        project.url,
        "INSERT INTO encryption_migrations (table_name, column_name, status) VALUES "
        "('customer', 'email', 'verified'), ('customer', 'phone', 'verified')",
    )


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    execute(
        db_url,
        CUSTOMER,
        "CREATE INDEX ix_customer_email ON customer (email)",
        "INSERT INTO customer VALUES (1, 'Ann', 'ann@example.com', '555-1'), "
        "(2, 'Bob', 'bob@example.com', '555-2')",
    )
    made = make_project(
        tmp_path / "project",
        db_url,
        column("customer", "email", searchable=True) + column("customer", "phone"),
    )
    add_columns(made.plan(), apply=True)
    return made


def _columns(url: str) -> list[str]:
    return columns_of(url, "customer")


def test_drop_without_confirm_is_refused(project: Project) -> None:
    _encrypted_and_verified(project)
    with pytest.raises(RefusedError, match="--confirm") as caught:
        drop_unencrypted(project.plan())
    assert caught.value.exit_code == 5


def test_unverified_column_is_refused_and_no_revision_is_written(project: Project) -> None:
    execute(
        project.url,
        "INSERT INTO encryption_migrations (table_name, column_name, status) VALUES "
        "('customer', 'email', 'verified'), ('customer', 'phone', 'completed')",
    )
    written = project.revisions()
    with pytest.raises(RefusedError, match=r"customer\.phone \(completed\)") as caught:
        drop_unencrypted(project.plan(), confirm=True)
    assert "customer.email" not in str(caught.value)
    assert project.revisions() == written


def test_drop_upgrades_downgrades_empty_and_upgrades_again(project: Project) -> None:
    _encrypted_and_verified(project)
    before = schema_of(project.url)
    result = drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert result.applied
    assert any("VACUUM FULL" in note for note in result.notes)
    assert _columns(project.url) == [
        "id", "name", "email_encrypted", "email_search", "phone_encrypted",
    ]  # fmt: skip
    assert rows(project.url, "SELECT status FROM encryption_migrations") == [
        ("dropped",),
        ("dropped",),
    ]
    assert all(c.phase is ColumnPhase.DROPPED for c in project.plan().columns)
    text = result.path.read_text() if result.path else ""
    assert "encmigrate decrypt-back" in text

    project.downgrade()
    restored = schema_of(project.url)
    assert sorted(restored["None.customer"]["columns"]) == sorted(
        before["None.customer"]["columns"]
    )
    assert restored["None.customer"]["indexes"] == before["None.customer"]["indexes"]
    assert restored["triggers"] == before["triggers"]
    assert rows(project.url, "SELECT count(*) FROM customer WHERE email IS NOT NULL") == [(0,)]
    assert rows(project.url, "SELECT DISTINCT status FROM encryption_migrations") == [("verified",)]
    project.upgrade()
    assert "email" not in _columns(project.url)


def test_in_revision_check_aborts_on_a_ciphertext_cleared_after_verify(
    project: Project,
) -> None:
    _encrypted_and_verified(project)
    result = drop_unencrypted(project.plan(), confirm=True)
    # After verify, an application changes a plaintext: the trigger clears its ciphertext.
    execute(project.url, "UPDATE customer SET email = 'late@example.com' WHERE id = 2")
    with pytest.raises(Exception, match="plaintext and no ciphertext"):
        project.upgrade()
    assert "email" in _columns(project.url)
    assert rows(project.url, "SELECT email FROM customer WHERE id = 2") == [("late@example.com",)]
    # Once the row is encrypted again, the same revision goes through.
    execute(
        project.url, "UPDATE customer SET email_encrypted = :c WHERE id = 2", params={"c": b"\x03"}
    )
    project.upgrade()
    assert "email" not in _columns(project.url)
    assert result.path is not None


def test_apply_maps_the_check_failure_to_a_refusal(project: Project) -> None:
    _encrypted_and_verified(project)
    execute(project.url, "INSERT INTO customer (id, name, email) VALUES (3, 'New', 'n@x')")
    with pytest.raises(RefusedError, match="customer has rows with plaintext"):
        drop_unencrypted(project.plan(), confirm=True, apply=True)


def test_drop_after_create_views_keeps_the_view_working(project: Project) -> None:
    _encrypted_and_verified(project)
    create_views(project.plan(), apply=True)
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert rows(project.url, "SELECT id, email FROM customer_secure ORDER BY id") == [
        (1, b"\x01cipher"),
        (2, b"\x01cipher"),
    ]
    project.downgrade()
    project.upgrade()
    assert rows(project.url, "SELECT count(*) FROM customer_secure") == [(2,)]


def test_vacuum_rewrites_the_table_after_the_drop(project: Project) -> None:
    _encrypted_and_verified(project)
    result = drop_unencrypted(project.plan(), confirm=True, apply=True, vacuum=True)
    assert result.path is not None
    assert "op.rewrite_table('customer')" in result.path.read_text()
    assert not [note for note in result.notes if "old pages" in note]  # --vacuum rewrote them
    assert "email" not in _columns(project.url)


def test_sqlite_views_and_triggers_on_the_table_survive_the_drop(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(
        sqlite_url,
        CUSTOMER,
        "CREATE TABLE log (what TEXT)",
        "CREATE VIEW names AS SELECT id, name FROM customer",
        "CREATE TRIGGER audit_name AFTER UPDATE OF name ON customer "
        "BEGIN INSERT INTO log VALUES (NEW.name); END",
        "INSERT INTO customer VALUES (1, 'Ann', 'a@x', NULL)",
    )
    project = make_project(tmp_path / "p", sqlite_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(sqlite_url, "UPDATE customer SET email_encrypted = :c", params={"c": b"\x01"})
    execute(
        sqlite_url,
        VERIFIED_EMAIL,
    )
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    execute(sqlite_url, "UPDATE customer SET name = 'Anna'")
    assert rows(sqlite_url, "SELECT name FROM names") == [("Anna",)]
    assert rows(sqlite_url, "SELECT what FROM log") == [("Anna",)]


def test_sqlite_refuses_when_a_view_reads_the_plaintext(tmp_path: Path, sqlite_url: str) -> None:
    execute(sqlite_url, CUSTOMER, "CREATE VIEW emails AS SELECT email FROM customer")
    project = make_project(tmp_path / "p", sqlite_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(
        sqlite_url,
        VERIFIED_EMAIL,
    )
    with pytest.raises(Exception, match=r"view 'emails' uses customer\.email"):
        drop_unencrypted(project.plan(), confirm=True)


def test_sqlite_sql_output_says_the_check_must_be_run_by_hand(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(sqlite_url, CUSTOMER)
    project = make_project(tmp_path / "p", sqlite_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(
        sqlite_url,
        VERIFIED_EMAIL,
    )
    sql = drop_unencrypted(project.plan(), confirm=True, sql=True).sql or ""
    assert "-- encmigrate: SQLite cannot abort a script by itself" in sql
    assert "-- SELECT 1 FROM customer WHERE (email IS NOT NULL AND email_encrypted IS NULL);" in sql
    assert sql.index("SQLite cannot abort") < sql.index("ALTER TABLE customer DROP COLUMN email")


@pytest.mark.postgres
def test_postgres_sql_output_applied_with_psql_matches_and_aborts_on_stale_rows(
    tmp_path: Path, pg_url: str
) -> None:
    execute(pg_url, CUSTOMER, "INSERT INTO customer VALUES (1, 'Ann', 'a@x', '1')")
    project = make_project(tmp_path / "p", pg_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(
        pg_url,
        VERIFIED_EMAIL,
    )
    sql = drop_unencrypted(project.plan(), confirm=True, sql=True).sql or ""
    assert "DO $encmigrate$" in sql
    with pytest.raises(Exception, match="returned non-zero"):
        psql(pg_url, sql, tmp_path)  # row 1 has no ciphertext: the DO block raises
    assert "email" in _columns(pg_url)
    execute(pg_url, "UPDATE customer SET email_encrypted = :c", params={"c": b"\x01"})
    psql(pg_url, sql, tmp_path)
    manual = schema_of(pg_url)
    # Back to before the drop, then the same drop through a revision.
    execute(pg_url, "ALTER TABLE customer ADD COLUMN email VARCHAR(255)")
    project.downgrade()
    project.upgrade()
    execute(pg_url, "UPDATE customer SET email_encrypted = :c", params={"c": b"\x01"})
    execute(pg_url, VERIFIED_EMAIL)
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert schema_of(pg_url) == manual


@pytest.mark.postgres
def test_alembic_upgrade_sql_renders_the_do_block(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, CUSTOMER)
    project = make_project(tmp_path / "p", pg_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(
        pg_url,
        VERIFIED_EMAIL,
    )
    drop_unencrypted(project.plan(), confirm=True)
    config = project.alembic()
    config.output_buffer = buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    rendered = buffer.getvalue()
    assert rendered.index("RAISE EXCEPTION") < rendered.index("DROP COLUMN email")


@pytest.mark.postgres
def test_all_steps_on_a_schema_qualified_mixed_case_table_with_a_composite_key(
    tmp_path: Path, pg_url: str
) -> None:
    table = '"Sales"."Customer"'
    execute(
        pg_url,
        'CREATE SCHEMA "Sales"',
        f'CREATE TABLE {table} ("Region" text, id int, "eMail" text NOT NULL, note text, '
        'PRIMARY KEY ("Region", id))',
        f"INSERT INTO {table} VALUES ('eu', 1, 'a@x', 'n'), ('us', 1, 'b@x', 'm')",
    )
    project = make_project(
        tmp_path / "p", pg_url, column("Sales.Customer", "eMail", searchable=True)
    )
    add_columns(project.plan(), apply=True)
    execute(
        pg_url,
        f'UPDATE {table} SET "eMail_encrypted" = :c, "eMail_search" = :t',
        "INSERT INTO encryption_migrations (table_name, column_name, status) "
        "VALUES ('Sales.Customer', 'eMail', 'verified')",
        params={"c": b"\x01", "t": b"\x02"},
    )
    create_views(project.plan(), apply=True)
    execute(
        pg_url,
        """UPDATE "Sales"."Customer_secure" SET "eMail" = :c WHERE "Region" = 'us'""",
        params={"c": b"\x09"},
    )
    execute(pg_url, f"""UPDATE {table} SET "eMail" = 'b@x' WHERE "Region" = 'us'""")  # refill
    execute(
        pg_url,
        f"""UPDATE {table} SET "eMail_encrypted" = :c WHERE "Region" = 'us'""",
        params={"c": b"\x09"},
    )
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert rows(pg_url, 'SELECT "Region", "eMail" FROM "Sales"."Customer_secure" ORDER BY 1') == [
        ("eu", b"\x01"),
        ("us", b"\x09"),
    ]
    project.downgrade()  # drop-unencrypted: the plaintext comes back empty
    assert rows(pg_url, f'SELECT count(*) FROM {table} WHERE "eMail" IS NULL') == [(2,)]
    # decrypt-back's job: a dual write (plaintext + fresh ciphertext), or the trigger
    # would clear the ciphertext of a row whose plaintext changes.
    execute(
        pg_url,
        f"""UPDATE {table} SET "eMail" = 'refilled', "eMail_encrypted" = :c""",
        params={"c": b"\x0a"},
    )
    project.downgrade()  # create-views: NOT NULL restored
    project.upgrade()
    assert rows(pg_url, 'SELECT count(*) FROM "Sales"."Customer_secure"') == [(2,)]
    assert "eMail" not in [
        name
        for (name,) in rows(
            pg_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'Customer'",
        )
    ]
