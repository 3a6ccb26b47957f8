"""A model mapped onto migrate-data's shadow columns reads and writes the migrator's values.

``add-columns`` creates ``<col>_encrypted`` (and ``<col>_search``); the
migrator encrypts into them under the planned column's context,
``<table>.<col>``. The types drop the ``_encrypted`` suffix when they derive
their context, so both sides agree without ``context=``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from encmigrate import Keyring
from encmigrate.fields import (
    EncryptedDateTime,
    EncryptedSearchableString,
    SearchTokenIndex,
    column_context,
)
from encmigrate.migrate.columns import ColumnWork
from encmigrate.plan import ColumnPlan

RING = Keyring.generate()


class Base(DeclarativeBase):
    pass


class Customer(Base):
    """The table during steps 1-4: plaintext beside the shadow columns."""

    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email = Column(String(200))
    email_encrypted = Column(EncryptedSearchableString(normalize="lower", keyring=RING))
    email_search = Column(SearchTokenIndex("email_encrypted"), index=True)
    seen_encrypted = Column(EncryptedDateTime(timezone=True, storage="text", keyring=RING))


TABLE = Customer.__table__
# The same table as the migrator sees it: plain binary and text shadow columns.
SHADOWS = Table(
    "customer",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("email", String(200)),
    Column("email_encrypted", LargeBinary),
    Column("email_search", LargeBinary),
    Column("seen_encrypted", Text, key="seen"),
)
EMAIL = ColumnWork(
    ColumnPlan(
        table="customer",
        column="email",
        type="string",
        searchable=True,
        normalize="lower",
        context="customer.email",
    ),
    RING,
)
SEEN = ColumnWork(
    ColumnPlan(
        table="customer", column="seen", type="datetime", context="customer.seen", storage="text"
    ),
    RING,
)
WHEN = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    created = create_engine(db_url)
    Base.metadata.create_all(created)
    yield created
    created.dispose()


def test_a_model_on_the_plan_s_shadow_column_takes_the_plan_s_context() -> None:
    planned = ColumnPlan(table="customer", column="email", type="string", context="customer.email")
    shadow = TABLE.c[planned.encrypted_column]  # type: ignore[attr-defined]
    assert column_context(shadow) == planned.context


def test_the_model_reads_and_searches_what_the_migrator_wrote(engine: Engine) -> None:
    emails = ["Alice@Example.com", "bob@example.com", None]
    sealed = EMAIL.seal(emails)
    seen = SEEN.seal([WHEN, None, WHEN])
    assert sealed.tokens is not None
    rows = [
        {"id": key, "email": plain, "email_encrypted": blob, "email_search": token, "seen": when}
        for key, (plain, blob, token, when) in enumerate(
            zip(emails, sealed.ciphertexts, sealed.tokens, seen.ciphertexts, strict=True), 1
        )
    ]
    with engine.begin() as conn:  # as the migrator writes: raw shadow values
        conn.execute(insert(SHADOWS), rows)
    with Session(engine) as session:
        found = session.execute(
            select(Customer.email_encrypted, Customer.seen_encrypted).order_by(Customer.id)
        ).all()
        matches = session.scalars(
            select(Customer.id).where(Customer.email_encrypted.search == "ALICE@example.com")
        ).all()
    assert [tuple(r) for r in found] == [(emails[0], WHEN), (emails[1], None), (None, WHEN)]
    assert matches == [1]


def test_the_migrator_verifies_what_the_model_wrote(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Customer(id=1, email="a@x.org", email_encrypted="a@x.org", seen_encrypted=WHEN))
        session.commit()
    with engine.connect() as conn:
        raw = conn.execute(select(SHADOWS)).one()
    assert EMAIL.cipher.decrypt(raw.email_encrypted) == "a@x.org"
    assert bytes(raw.email_search) == EMAIL.token_of("a@x.org", RING.current)
    assert SEEN.cipher.decrypt(raw.seen) == WHEN
