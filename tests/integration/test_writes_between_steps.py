"""Application writes between the steps, and the migrator's runs after them: nothing is lost.

From step 4 on, the shadow trigger takes a write that changes a ciphertext
without its plaintext for a write through the view, and sets the plaintext to
NULL (the ciphertext is the truth from then on). The migrator's own writes
(catch-up, rewrap, repair, decrypt-back) change ciphertexts alone too: they
must never be taken for such a write, or a catch-up run after step 4 erases
the plaintext the application had just written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring, get_searchable_cipher
from encmigrate.migrate import MigrateOptions, migrate_data, rewrap, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.revisions import add_columns, create_views
from support.revisions import Project, column, execute, make_project, rows

# email is nullable so that SQLite gets the step-4 trigger too (it cannot drop NOT NULL
# without rebuilding the table, so create-views leaves NOT NULL columns without it).
CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(50), "
    "email VARCHAR(255), phone VARCHAR(30))"
)
OPTIONS = MigrateOptions(batch_size=2)
# Dialects whose <table>_secure view takes writes (SQLAlchemy names MariaDB "mysql").
UPDATABLE_VIEWS = ("postgresql", "mysql", "mariadb")


class App:
    """The application: writes plaintext to the table, or ciphertext (through the view)."""

    def __init__(self, url: str, keyring: Keyring) -> None:
        self.url = url
        self.email = get_searchable_cipher("customer.email", keyring=keyring)

    def sealed(self, value: str) -> dict[str, Any]:
        blob, token = self.email.seal(value)
        return {"c": blob, "t": token}

    def through_view(self, dialect: str, statement: str, value: str, **params: Any) -> None:
        """Write a ciphertext alone: to the view on PostgreSQL and MariaDB, to the table on
        SQLite (SQLite views are read-only; an application there writes the shadow columns)."""
        target = "customer_secure" if dialect in UPDATABLE_VIEWS else "customer"
        names = {"email": "email" if dialect in UPDATABLE_VIEWS else "email_encrypted"}
        execute(
            self.url,
            statement.format(target=target, **names),
            params={**self.sealed(value), **params},
        )


def _stored(url: str, keyring: Keyring) -> dict[int, tuple[str | None, str | None]]:
    """id -> (plaintext, decrypted ciphertext) of every row."""
    cipher = get_searchable_cipher("customer.email", keyring=keyring)
    found = rows(url, "SELECT id, email, email_encrypted FROM customer ORDER BY id")
    return {
        i: (plain, cipher.decrypt(blob) if blob is not None else None) for i, plain, blob in found
    }


@pytest.fixture
def project(tmp_path: Path, any_db_url: str) -> Project:
    execute(
        any_db_url,
        CUSTOMER,
        "INSERT INTO customer VALUES (1, 'Ann', 'ann@example.com', '555-1'), "
        "(2, 'Bob', 'bob@example.com', NULL), (3, 'Cy', 'cy@example.com', NULL)",
    )
    made = make_project(
        tmp_path / "project", any_db_url, column("customer", "email", searchable=True)
    )
    add_columns(made.plan(), apply=True)
    return made


def _all_verified(project: Project, engine: sa.Engine, keyring: Keyring) -> None:
    verdicts = verify(project.plan(), engine, keyring)
    assert all(v.ok for v in verdicts), [v.summary() for v in verdicts]


def test_catch_up_after_step_4_keeps_what_the_application_wrote(
    project: Project, any_db_url: str
) -> None:
    keyring = Keyring.generate()
    engine = connect_engine(any_db_url)
    try:
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        create_views(project.plan(), apply=True)
        dialect = engine.dialect.name
        app = App(any_db_url, keyring)
        # To the base table: a new plaintext (the trigger clears its stale ciphertext)
        # and a new row with a plaintext only. Both wait for the catch-up run.
        execute(any_db_url, "UPDATE customer SET email = 'ann@new.example' WHERE id = 1")
        execute(
            any_db_url, "INSERT INTO customer (id, name, email) VALUES (4, 'Di', 'di@example.com')"
        )
        # Through the view: a new ciphertext alone (plaintext becomes NULL), and an insert.
        app.through_view(
            dialect,
            "UPDATE {target} SET {email} = :c, email_search = :t WHERE id = 2",
            "bob@view.example",
        )
        if dialect in UPDATABLE_VIEWS:
            app.through_view(
                dialect,
                "INSERT INTO customer_secure (id, name, email, email_search) "
                "VALUES (5, 'Ed', :c, :t)",
                "ed@view.example",
            )
        assert _stored(any_db_url, keyring)[1] == ("ann@new.example", None)

        migrate_data(project.plan(), engine, keyring, options=OPTIONS)  # the catch-up run

        expected = {
            1: ("ann@new.example", "ann@new.example"),
            2: (None, "bob@view.example"),
            3: ("cy@example.com", "cy@example.com"),
            4: ("di@example.com", "di@example.com"),
        }
        if dialect in UPDATABLE_VIEWS:
            expected[5] = (None, "ed@view.example")
        assert _stored(any_db_url, keyring) == expected
        _all_verified(project, engine, keyring)

        # Rewrap after a rotation writes ciphertexts alone too: plaintexts stay.
        keyring = keyring.rotated()
        rewrap(project.plan(), engine, keyring, options=OPTIONS)
        assert _stored(any_db_url, keyring) == expected
        _all_verified(project, engine, keyring)
    finally:
        engine.dispose()


def test_writes_before_step_4_then_catch_up_then_step_4(project: Project, any_db_url: str) -> None:
    keyring = Keyring.generate()
    engine = connect_engine(any_db_url)
    try:
        execute(any_db_url, "UPDATE customer SET email = 'early@example.com' WHERE id = 3")
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        # Dual write (plaintext and ciphertext in one statement) keeps both.
        app = App(any_db_url, keyring)
        execute(
            any_db_url,
            "UPDATE customer SET email = 'dual@example.com', email_encrypted = :c, "
            "email_search = :t WHERE id = 2",
            params=app.sealed("dual@example.com"),
        )
        execute(any_db_url, "UPDATE customer SET email = 'late@example.com' WHERE id = 1")
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        create_views(project.plan(), apply=True)
        migrate_data(project.plan(), engine, keyring, options=OPTIONS)
        assert _stored(any_db_url, keyring) == {
            1: ("late@example.com", "late@example.com"),
            2: ("dual@example.com", "dual@example.com"),
            3: ("early@example.com", "early@example.com"),
        }
        _all_verified(project, engine, keyring)
    finally:
        engine.dispose()
