"""The application's model in each phase of the five steps, exactly as the README declares it.

README.md ("Encrypted columns in your models") shows four models of the
table ``customer`` for a plan that encrypts ``email`` (searchable, lower),
``phone`` and ``balance`` (numeric): before step 1, during steps 1 to 4
(dual write), on the ``customer_secure`` view, and after step 5. This test
walks the five steps through the Python API on PostgreSQL and SQLite and, in
each phase, inserts, reads back and searches through those models, run from
the README's own code blocks, so the README cannot drift from what is tested
(keyring: the configured default, as an application has it). ``verify`` after
each phase proves that what the models wrote and what ``migrate-data`` wrote
are interchangeable.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Numeric, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, validates

from encmigrate import (
    EncryptedNumeric,
    EncryptedSearchableString,
    EncryptedString,
    Keyring,
    SearchTokenIndex,
)
from encmigrate.keys import reset_default_keyring
from encmigrate.migrate import MigrateOptions, migrate_data, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.revisions import add_columns, create_views, drop_unencrypted
from support.revisions import Project, column, columns_of, make_project, rows

# -- the README's models, taken from the README itself ----------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Encrypted columns in your models (SQLAlchemy)\n"
# What the README's snippets use without importing it.
NAMES: dict[str, Any] = {
    "Any": Any,
    "Column": Column,
    "DeclarativeBase": DeclarativeBase,
    "Decimal": Decimal,
    "EncryptedNumeric": EncryptedNumeric,
    "EncryptedSearchableString": EncryptedSearchableString,
    "EncryptedString": EncryptedString,
    "Mapped": Mapped,
    "Numeric": Numeric,
    "SearchTokenIndex": SearchTokenIndex,
    "String": String,
    "mapped_column": mapped_column,
    "validates": validates,
}


def readme_snippets() -> list[str]:
    """The Python blocks of the README's model section, dedented, in order."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) + len(SECTION) :]
    section = section[: section.index("\n### ")]
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", section, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(code) for _, code in blocks]


def declared(snippet: str, name: str) -> Any:
    """Run a README snippet on a declarative base of its own and return the class ``name``."""

    class Base(DeclarativeBase):
        pass

    namespace = {**NAMES, "Base": Base}
    # dont_inherit: not this module's postponed annotations, which the ORM would have to resolve.
    code = compile(snippet, str(README), "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102 - the README's own model code, under test
    return namespace[name]


def readme_models() -> tuple[Any, Any, Any, Any, Any]:
    """The new-table model, then the four phase models (before, dual write, view, after)."""
    fresh, before, dual, view, after = readme_snippets()
    # The first snippet goes on with queries on a session: its model is what comes before.
    model = fresh[: fresh.index("\nsession.")]
    return (
        declared(model, "Customer"),
        declared(before, "Customer"),
        declared(dual, "Customer"),
        declared(view, "CustomerSecure"),
        declared(after, "Customer"),
    )


CustomerNew, CustomerBefore, CustomerDualWrite, CustomerSecure, CustomerAfter = readme_models()


# -- the walk -----------------------------------------------------------------------------

PLAN = (
    column("customer", "email", searchable=True, normalize="lower")
    + column("customer", "phone")
    + column("customer", "balance", type="numeric")
)
Row = tuple[str, str | None, str | None, Decimal | None]  # name, email, phone, balance


@pytest.fixture
def keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[Keyring]:
    """The application's configured keyring, which the models use (they pass none)."""
    for name in ("ENCMIGRATE_MASTER_KEY", "ENCMIGRATE_KEYRING_FILE", "ENCMIGRATE_ENV_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    ring = Keyring.generate()
    monkeypatch.setenv("ENCMIGRATE_KEYRING", ring.to_json())
    reset_default_keyring()
    yield ring
    reset_default_keyring()


class Walk:
    """The database, the project and what every row must read as."""

    def __init__(self, url: str, project: Project, keyring: Keyring) -> None:
        self.url = url
        self.project = project
        self.keyring = keyring
        self.app = sa.create_engine(url)
        self.migrator = connect_engine(url)
        self.expected: dict[int, Row] = {}

    @property
    def dialect(self) -> str:
        return self.app.dialect.name

    def close(self) -> None:
        self.app.dispose()
        self.migrator.dispose()

    def migrate(self) -> None:
        migrate_data(self.project.plan(), self.migrator, self.keyring, options=MigrateOptions())

    def assert_verified(self) -> None:
        verdicts = verify(self.project.plan(), self.migrator, self.keyring)
        assert all(v.ok for v in verdicts), [v.summary() for v in verdicts]

    def read(self, model: Any, email: Any, phone: Any, balance: Any) -> dict[int, Row]:
        with Session(self.app) as session:
            found = session.execute(
                select(model.id, model.name, email, phone, balance).order_by(model.id)
            ).all()
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in found}


@pytest.fixture
def walk(db_url: str, tmp_path: Path, keyring: Keyring) -> Iterator[Walk]:
    project = make_project(tmp_path / "project", db_url, PLAN)
    made = Walk(db_url, project, keyring)
    yield made
    made.close()


def _before_step_1(walk: Walk) -> None:
    CustomerBefore.metadata.create_all(walk.app)
    people: dict[int, Row] = {
        1: ("Ann", "Ann@Example.com", "555-0101", Decimal("12.50")),
        2: ("Bob", "bob@example.com", None, Decimal("-3.00")),
        3: ("Cy", None, "555-0103", None),
    }
    with Session(walk.app) as session:
        for key, (name, email, phone, balance) in people.items():
            session.add(
                CustomerBefore(id=key, name=name, email=email, phone=phone, balance=balance)
            )
        session.commit()
        found = session.scalars(
            select(CustomerBefore.id).where(func.lower(CustomerBefore.email) == "ann@example.com")
        ).all()
    walk.expected.update(people)
    m = CustomerBefore
    assert walk.read(m, m.email, m.phone, m.balance) == walk.expected
    assert found == [1]


def _steps_1_to_4(walk: Walk) -> None:
    add_columns(walk.project.plan(), apply=True)
    m = CustomerDualWrite
    with Session(walk.app) as session:
        session.add(
            m(id=4, name="Di", email="Di@Example.com", phone="555-0104", balance=Decimal("7.25"))
        )
        ann = session.get(m, 1)
        assert ann is not None
        ann.phone = "555-0111"
        session.commit()
        # Only rows written by this model are encrypted yet: Ann's email is not.
        assert session.scalars(
            select(m.id).where(m.email_encrypted.search == "di@EXAMPLE.com")
        ).all() == [4]
        assert (
            session.scalars(select(m.id).where(m.email_encrypted.search == "ann@example.com")).all()
            == []
        )
    walk.expected[4] = ("Di", "Di@Example.com", "555-0104", Decimal("7.25"))
    walk.expected[1] = ("Ann", "Ann@Example.com", "555-0111", Decimal("12.50"))
    # The model of before step 1 keeps working: it writes the plaintext alone.
    with Session(walk.app) as session:
        session.add(
            CustomerBefore(id=5, name="Ed", email="ed@example.com", phone=None, balance=None)
        )
        session.commit()
    walk.expected[5] = ("Ed", "ed@example.com", None, None)

    walk.migrate()  # step 2
    plain = walk.read(m, m.email, m.phone, m.balance)
    shadows = walk.read(m, m.email_encrypted, m.phone_encrypted, m.balance_encrypted)
    assert plain == shadows == walk.expected
    with Session(walk.app) as session:
        search = m.email_encrypted.search
        assert session.scalars(select(m.id).where(search == "ANN@example.com")).all() == [1]
        assert session.scalars(
            select(m.id).where(search.in_(["ed@example.com", "di@example.com"])).order_by(m.id)
        ).all() == [4, 5]
    walk.assert_verified()  # step 3: the dual writes are what migrate-data writes


def _on_the_view(walk: Walk) -> None:
    create_views(walk.project.plan(), apply=True)  # step 4
    v = CustomerSecure
    assert walk.read(v, v.email, v.phone, v.balance) == walk.expected
    with Session(walk.app) as session:
        assert session.scalars(select(v.id).where(v.email.search == "bob@EXAMPLE.com")).all() == [2]
        if walk.dialect == "postgresql":
            session.add(
                v(id=6, name="Fay", email="Fay@Example.com", phone=None, balance=Decimal("1.00"))
            )
            bob = session.get(v, 2)
            assert bob is not None
            bob.email = "bob@view.example"
            session.commit()
            walk.expected[6] = ("Fay", "Fay@Example.com", None, Decimal("1.00"))
            walk.expected[2] = ("Bob", "bob@view.example", None, Decimal("-3.00"))
            found = session.scalars(
                select(v.id).where(v.email.search.in_(["fay@example.com", "BOB@view.example"]))
            ).all()
            assert sorted(found) == [2, 6]
        else:
            session.add(v(id=6, name="Fay", email="fay@example.com", phone=None, balance=None))
            with pytest.raises(sa.exc.OperationalError, match="view"):
                session.commit()  # SQLite views are read-only
            session.rollback()
    assert walk.read(v, v.email, v.phone, v.balance) == walk.expected


def _after_step_4_before_step_5(walk: Walk) -> None:
    """The after-drop model deployed early: it writes ciphertexts alone."""
    c = CustomerAfter
    with Session(walk.app) as session:
        session.add(c(id=7, name="Gus", email="gus@example.com", phone="555-0107", balance=None))
        cy = session.get(c, 3)
        assert cy is not None
        cy.phone = "555-0113"
        session.commit()
    walk.expected[7] = ("Gus", "gus@example.com", "555-0107", None)
    walk.expected[3] = ("Cy", None, "555-0113", None)
    # The step-4 trigger took the ciphertext for the truth: no stale plaintext is left.
    assert rows(walk.url, "SELECT id, phone FROM customer WHERE id IN (3, 7) ORDER BY id") == [
        (3, None),
        (7, None),
    ]
    walk.migrate()  # the catch-up run keeps what the application wrote
    assert walk.read(c, c.email, c.phone, c.balance) == walk.expected
    walk.assert_verified()


def _after_step_5(walk: Walk) -> None:
    drop_unencrypted(walk.project.plan(), confirm=True, apply=True)
    assert "email" not in columns_of(walk.url, "customer")
    c = CustomerAfter
    with Session(walk.app) as session:
        session.add(
            c(id=8, name="Hal", email="Hal@Example.com", phone=None, balance=Decimal("0.10"))
        )
        session.commit()
        search = c.email.search
        assert session.scalars(select(c.id).where(search == "hal@example.com")).all() == [8]
        assert session.scalars(select(c.id).where(search == "ann@EXAMPLE.com")).all() == [1]
    walk.expected[8] = ("Hal", "Hal@Example.com", None, Decimal("0.10"))
    assert walk.read(c, c.email, c.phone, c.balance) == walk.expected
    v = CustomerSecure
    assert walk.read(v, v.email, v.phone, v.balance) == walk.expected
    with Session(walk.app) as session:
        assert session.scalars(select(v.id).where(v.email.search == "HAL@example.com")).all() == [8]
    walk.assert_verified()


def test_the_readme_models_insert_read_and_search_in_every_phase(walk: Walk) -> None:
    _before_step_1(walk)
    _steps_1_to_4(walk)
    _on_the_view(walk)
    _after_step_4_before_step_5(walk)
    _after_step_5(walk)


def test_the_readme_new_table_model_creates_an_indexed_token_and_searches(
    db_url: str, keyring: Keyring
) -> None:
    engine = sa.create_engine(db_url)
    try:
        CustomerNew.metadata.create_all(engine)
        indexes = sa.inspect(engine).get_indexes("customer")
        with Session(engine) as session:
            session.add_all(
                [
                    CustomerNew(id=1, phone="555-0101", balance=Decimal("10.20"), email="A@x.org"),
                    CustomerNew(id=2, phone=None, balance=None, email="b@x.org"),
                ]
            )
            session.commit()
            one = session.scalars(
                select(CustomerNew).where(CustomerNew.email.search == "a@X.org")
            ).one()
            both = session.scalars(
                select(CustomerNew.id)
                .where(CustomerNew.email.search.in_(["a@x.org", "B@x.org"]))
                .order_by(CustomerNew.id)
            ).all()
            assert (one.id, one.phone, one.balance, one.email) == (
                1,
                "555-0101",
                Decimal("10.20"),
                "A@x.org",
            )
    finally:
        engine.dispose()
    assert [(i["name"], i["column_names"]) for i in indexes] == [
        ("ix_customer_email_search", ["email_search"])
    ]
    assert both == [1, 2]
