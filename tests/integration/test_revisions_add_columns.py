"""Step 1: the add-columns revision, its trigger, and its SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from encmigrate import RefusedError
from encmigrate.plan import ColumnPhase
from encmigrate.revisions import add_columns
from support.revisions import Project, column, execute, make_project, psql, rows, schema_of

CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), "
    "email VARCHAR(255) NOT NULL, phone VARCHAR(30))"
)
PLAN = column("customer", "email", searchable=True, normalize="lower") + column(
    "customer", "phone", storage="text"
)


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    execute(
        db_url,
        CUSTOMER,
        "INSERT INTO customer VALUES (1, 'Ann', 'ann@example.com', '555-1'), "
        "(2, 'Bob', 'bob@example.com', '555-2')",
    )
    return make_project(tmp_path / "project", db_url, PLAN)


def _columns(url: str, table: str = "customer", schema: str | None = None) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns(table, schema=schema)]
    finally:
        engine.dispose()


def test_revision_upgrades_downgrades_and_upgrades_again(project: Project) -> None:
    before = schema_of(project.url)
    result = add_columns(project.plan())
    assert result.path is not None and result.path.parent.name == "versions"
    assert result.next_command == "alembic upgrade head"
    text = result.path.read_text()
    assert "op.install_shadow_trigger('customer'" in text
    assert "op.create_search_index('ix_customer_email_search'" in text
    assert "def downgrade() -> None:" in text

    project.upgrade()
    after = schema_of(project.url)
    assert _columns(project.url) == [
        "id", "name", "email", "phone", "email_encrypted", "email_search", "phone_encrypted",
    ]  # fmt: skip
    assert {"None.encryption_migrations", "None.encryption_migration_failures"} <= set(after)
    assert "None.encryption_migration_chunks" in after
    assert ("ix_customer_email_search", ("email_search",)) in after["None.customer"]["indexes"]
    assert len(after["triggers"]) == 2 if project.url.startswith("sqlite") else 1

    project.downgrade()
    assert schema_of(project.url) == before
    project.upgrade()
    assert schema_of(project.url) == after


def test_apply_runs_the_upgrade_and_names_the_next_step(project: Project) -> None:
    result = add_columns(project.plan(), apply=True)
    assert result.applied
    assert result.next_command == "encmigrate migrate-data"
    assert all(c.phase is ColumnPhase.SHADOWED for c in project.plan().columns)
    again = add_columns(project.plan())
    assert again.path is None
    assert "nothing to add" in again.notes[0]


def test_text_storage_makes_textual_shadow_columns(project: Project) -> None:
    add_columns(project.plan(), apply=True)
    engine = sa.create_engine(project.url)
    types = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("customer")}
    engine.dispose()
    assert isinstance(types["phone_encrypted"], sa.Text)
    assert isinstance(types["email_encrypted"], sa.LargeBinary)


def _seal_all(url: str) -> None:
    """What the migrator does: shadow-only writes, the plaintext untouched."""
    execute(
        url,
        "UPDATE customer SET email_encrypted = :c, email_search = :t, phone_encrypted = 'b64'",
        params={"c": b"\x01cipher", "t": b"\x02token"},
    )


def test_trigger_clears_shadows_when_the_plaintext_changes(project: Project) -> None:
    add_columns(project.plan(), apply=True)
    _seal_all(project.url)
    # The migrator's own write did not fire the trigger: the shadows are all there.
    assert rows(project.url, "SELECT count(*) FROM customer WHERE email_encrypted IS NULL") == [
        (0,)
    ]
    execute(project.url, "UPDATE customer SET email = 'ann@new.example' WHERE id = 1")
    execute(project.url, "UPDATE customer SET name = 'Robert' WHERE id = 2")
    execute(project.url, "UPDATE customer SET email = email WHERE id = 2")  # same value
    assert rows(
        project.url,
        "SELECT id, email_encrypted, email_search, phone_encrypted FROM customer ORDER BY id",
    ) == [(1, None, None, "b64"), (2, b"\x01cipher", b"\x02token", "b64")]


def test_trigger_keeps_a_dual_write_and_clears_only_the_changed_column(project: Project) -> None:
    add_columns(project.plan(), apply=True)
    _seal_all(project.url)
    execute(
        project.url,
        "UPDATE customer SET email = 'x@example.com', email_encrypted = :c WHERE id = 1",
        params={"c": b"\x09fresh"},
    )
    execute(project.url, "UPDATE customer SET phone = '555-9' WHERE id = 2")
    assert rows(
        project.url, "SELECT id, email_encrypted, phone_encrypted FROM customer ORDER BY id"
    ) == [(1, b"\x09fresh", "b64"), (2, b"\x01cipher", None)]


def test_generating_on_a_database_behind_the_head_is_refused(project: Project) -> None:
    add_columns(project.plan())
    with pytest.raises(RefusedError, match="alembic upgrade head"):
        add_columns(project.plan())


def test_planning_more_columns_later_extends_the_trigger(project: Project) -> None:
    project.write_plan(column("customer", "email"))
    add_columns(project.plan(), apply=True)
    project.write_plan(column("customer", "email") + column("customer", "name"))
    second = add_columns(project.plan(), apply=True)
    assert second.path is not None
    text = second.path.read_text()
    assert "create_table" not in text  # the tracking tables exist already
    assert "('name', 'name_encrypted', None)" in text
    execute(
        project.url,
        "UPDATE customer SET email_encrypted = :c, name_encrypted = :c",
        params={"c": b"\x01"},
    )
    execute(project.url, "UPDATE customer SET name = 'Zed' WHERE id = 1")
    assert rows(
        project.url, "SELECT email_encrypted, name_encrypted FROM customer WHERE id = 1"
    ) == [(b"\x01", None)]
    project.downgrade()
    execute(project.url, "UPDATE customer SET email = 'changed' WHERE id = 2")
    assert rows(project.url, "SELECT email_encrypted FROM customer WHERE id = 2") == [(None,)]


def test_sql_output_applied_by_hand_gives_the_same_schema(
    project: Project, tmp_path: Path, db_url: str
) -> None:
    result = add_columns(project.plan(), sql=True)
    assert result.path is None and result.sql is not None
    assert project.revisions() == []
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    if db_url.startswith("postgresql"):
        assert "CREATE INDEX CONCURRENTLY" in result.sql
        psql(project.url, result.sql, tmp_path)
    else:
        connection = sqlite3.connect(sa.make_url(project.url).database or "")
        connection.executescript(result.sql)
        connection.close()
    manual = schema_of(project.url)
    execute(
        project.url,
        "DROP TABLE encryption_migrations",
        "DROP TABLE encryption_migration_failures",
        "DROP TABLE encryption_migration_chunks",
    )
    # Undo by hand, then compare with the online upgrade of the revision.
    add_columns_undo(project)
    add_columns(project.plan(), apply=True)
    assert schema_of(project.url) == manual


def add_columns_undo(project: Project) -> None:
    trigger_drops = (
        ["DROP TRIGGER encmigrate_shadow ON customer", "DROP FUNCTION encmigrate_shadow_customer()"]
        if project.url.startswith("postgresql")
        else [
            "DROP TRIGGER encmigrate_shadow_customer_email",
            "DROP TRIGGER encmigrate_shadow_customer_phone",
        ]
    )
    execute(
        project.url,
        *trigger_drops,
        "DROP INDEX ix_customer_email_search",
        "ALTER TABLE customer DROP COLUMN email_search",
        "ALTER TABLE customer DROP COLUMN email_encrypted",
        "ALTER TABLE customer DROP COLUMN phone_encrypted",
    )


def test_alembic_upgrade_sql_renders_the_revision_offline(project: Project) -> None:
    add_columns(project.plan())
    config = project.alembic()
    buffer = io.StringIO()
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    rendered = buffer.getvalue()
    # PostgreSQL: IF NOT EXISTS, so that a revision whose index build failed can run again.
    assert re.search(r"ALTER TABLE customer ADD COLUMN (IF NOT EXISTS )?email_encrypted", rendered)
    assert "CREATE TRIGGER" in rendered
    assert "INSERT INTO alembic_version" in rendered
    assert rows(project.url, "SELECT count(*) FROM customer") == [(2,)]  # nothing ran


@pytest.mark.postgres
def test_schema_qualified_mixed_case_table_with_composite_key(tmp_path: Path, pg_url: str) -> None:
    execute(
        pg_url,
        'CREATE SCHEMA "Sales"',
        'CREATE TABLE "Sales"."Customer" ("Region" text, id int, "eMail" text NOT NULL, '
        'PRIMARY KEY ("Region", id))',
        """INSERT INTO "Sales"."Customer" VALUES ('eu', 1, 'a@x'), ('us', 1, 'b@x')""",
    )
    project = make_project(
        tmp_path / "p", pg_url, column("Sales.Customer", "eMail", searchable=True)
    )
    plan = project.plan()
    assert plan.tables[0].primary_key == ("Region", "id")
    result = add_columns(plan, apply=True)
    assert result.path is not None
    assert "schema='Sales'" in result.path.read_text()
    assert _columns(pg_url, "Customer", "Sales")[-2:] == ["eMail_encrypted", "eMail_search"]
    execute(pg_url, 'UPDATE "Sales"."Customer" SET "eMail_encrypted" = :c', params={"c": b"\x01"})
    execute(pg_url, """UPDATE "Sales"."Customer" SET "eMail" = 'new' WHERE "Region" = 'eu'""")
    assert rows(
        pg_url, 'SELECT "Region", "eMail_encrypted" FROM "Sales"."Customer" ORDER BY 1'
    ) == [
        ("eu", None),
        ("us", b"\x01"),
    ]
    project.downgrade()
    assert _columns(pg_url, "Customer", "Sales") == ["Region", "id", "eMail"]
    project.upgrade()
    assert _columns(pg_url, "Customer", "Sales")[-1] == "eMail_search"
