"""Step 4: the create-views revision: the secure view, writes through it, and its undo."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import RefusedError
from encmigrate.revisions import add_columns, create_views
from support.revisions import Project, column, execute, make_project, psql, rows, schema_of

CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), "
    "email VARCHAR(255) NOT NULL, phone VARCHAR(30))"
)


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    execute(
        db_url,
        CUSTOMER,
        "INSERT INTO customer VALUES (1, 'Ann', 'ann@example.com', '555-1'), "
        "(2, 'Bob', 'bob@example.com', NULL)",
    )
    made = make_project(
        tmp_path / "project",
        db_url,
        column("customer", "email", searchable=True) + column("customer", "phone"),
    )
    add_columns(made.plan(), apply=True)
    execute(
        db_url,
        "UPDATE customer SET email_encrypted = :c, email_search = :t, "
        "phone_encrypted = CASE WHEN phone IS NULL THEN NULL ELSE :c END",
        params={"c": b"\x01cipher", "t": b"\x02token"},
    )
    return made


def _view_columns(url: str, view: str = "customer_secure") -> list[str]:
    engine = sa.create_engine(url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns(view)]
    finally:
        engine.dispose()


def test_view_shows_ciphertexts_under_the_original_names(project: Project) -> None:
    result = create_views(project.plan(), apply=True)
    assert result.applied
    assert _view_columns(project.url) == ["id", "name", "email", "phone", "email_search"]
    assert rows(project.url, "SELECT id, email, phone FROM customer_secure ORDER BY id") == [
        (1, b"\x01cipher", b"\x01cipher"),
        (2, b"\x01cipher", None),
    ]


def test_revision_upgrades_downgrades_and_upgrades_again(project: Project) -> None:
    before = schema_of(project.url)
    create_views(project.plan(), apply=True)
    after = schema_of(project.url)
    assert "view None.customer_secure" in after
    project.downgrade()
    assert schema_of(project.url) == before
    project.upgrade()
    assert schema_of(project.url) == after


def test_views_are_refused_before_add_columns(tmp_path: Path, sqlite_url: str) -> None:
    execute(sqlite_url, "CREATE TABLE t (id INTEGER PRIMARY KEY, secret TEXT)")
    project = make_project(tmp_path / "p", sqlite_url, column("t", "secret"))
    with pytest.raises(RefusedError, match="add-columns"):
        create_views(project.plan())


def test_view_name_is_configurable_per_table(project: Project) -> None:
    project.write_plan(
        column("customer", "email", searchable=True) + column("customer", "phone"),
        extra='[tables.customer]\nview = "customer_v"\n',
    )
    create_views(project.plan(), apply=True)
    assert _view_columns(project.url, "customer_v")[2] == "email"


@pytest.mark.postgres
def test_postgres_view_takes_inserts_and_updates_and_nulls_the_plaintext(
    tmp_path: Path, pg_url: str
) -> None:
    execute(pg_url, CUSTOMER, "INSERT INTO customer VALUES (1, 'Ann', 'ann@x', '555-1')")
    project = make_project(tmp_path / "p", pg_url, column("customer", "email", searchable=True))
    add_columns(project.plan(), apply=True)
    execute(pg_url, "UPDATE customer SET email_encrypted = :c", params={"c": b"\x01"})
    create_views(project.plan(), apply=True)

    execute(
        pg_url,
        "INSERT INTO customer_secure (id, name, email, email_search) VALUES (2, 'Eve', :c, :t)",
        "UPDATE customer_secure SET email = :n WHERE id = 1",
        params={"c": b"\x05", "t": b"\x06", "n": b"\x07"},
    )
    assert rows(pg_url, "SELECT id, email, email_encrypted FROM customer ORDER BY id") == [
        (1, None, b"\x07"),
        (2, None, b"\x05"),
    ]
    # An old-style write of the plaintext alone still clears the stale ciphertext.
    execute(pg_url, "UPDATE customer SET email = 'back@x' WHERE id = 2")
    assert rows(pg_url, "SELECT email, email_encrypted FROM customer WHERE id = 2") == [
        ("back@x", None)
    ]

    execute(pg_url, "UPDATE customer SET email = 'refilled' WHERE email IS NULL")
    project.downgrade()
    engine = sa.create_engine(pg_url)
    email = next(c for c in sa.inspect(engine).get_columns("customer") if c["name"] == "email")
    engine.dispose()
    assert email["nullable"] is False
    execute(pg_url, "UPDATE customer SET email_encrypted = :c WHERE id = 1", params={"c": b"\x08"})
    assert rows(pg_url, "SELECT email FROM customer WHERE id = 1") == [("refilled",)]


@pytest.mark.postgres
def test_sql_output_applied_with_psql_gives_the_same_schema(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, CUSTOMER)
    project = make_project(tmp_path / "p", pg_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    result = create_views(project.plan(), sql=True)
    assert result.sql is not None and "CREATE VIEW customer_secure" in result.sql
    before = len(project.revisions())
    psql(pg_url, result.sql, tmp_path)
    manual = schema_of(pg_url)
    assert len(project.revisions()) == before
    execute(
        pg_url,
        "DROP VIEW customer_secure",
        "ALTER TABLE customer ALTER COLUMN email SET NOT NULL",
    )
    project.downgrade()
    project.upgrade()
    create_views(project.plan(), apply=True)
    assert schema_of(pg_url) == manual


def test_generated_columns_computed_from_a_plaintext_stay_out_of_the_view(
    tmp_path: Path, db_url: str
) -> None:
    """A column computed from the plaintext (the e-mail's domain) would show part of it
    through the view that exists to hide it; one computed from other columns stays."""
    sqlite = db_url.startswith("sqlite")
    domain = "substr(email, instr(email, '@') + 1)" if sqlite else "split_part(email, '@', 2)"
    stored = "" if sqlite else " STORED"
    execute(
        db_url,
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), email VARCHAR(255), "
        f"email_domain TEXT GENERATED ALWAYS AS ({domain}){stored}, "
        f"name_upper TEXT GENERATED ALWAYS AS (upper(name)){stored})",
        "INSERT INTO customer (id, name, email) VALUES (1, 'Ann', 'ann@example.com')",
    )
    project = make_project(tmp_path / "p", db_url, column("customer", "email"))
    add_columns(project.plan(), apply=True)
    execute(db_url, "UPDATE customer SET email_encrypted = :c", params={"c": b"\x01"})
    create_views(project.plan(), apply=True)
    assert _view_columns(db_url) == ["id", "name", "email", "name_upper"]
