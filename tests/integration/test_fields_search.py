"""Searchable encrypted columns on SQLite, PostgreSQL and MariaDB.

The token column is filled by every write path (ORM unit of work, ORM bulk,
Core with parameters, Core ``.values()``), left alone by writes that do not
touch the searchable column, and ``.search`` finds rows written under any
readable key version, and no others.

MariaDB runs a representative subset (:data:`TWO_BACKENDS` marks the others):
its per-test database and tables cost about 0.5 s, and what differs there is
the storage (``BINARY(32)``/``VARCHAR(44)`` tokens, their index) and the
driver, not the token writers, which are the same SQLAlchemy events everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Table,
    bindparam,
    create_engine,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from encmigrate import ConfigError, DecryptionError, Keyring, KeyState, get_searchable_cipher
from encmigrate.crypto.envelope import parse_header
from encmigrate.fields import (
    EncryptedSearchableInteger,
    EncryptedSearchableString,
    EncryptedString,
    SearchTokenIndex,
)
from encmigrate.keys import reset_default_keyring

RING = Keyring.generate()
# Tests that need not run on MariaDB too: SQLite and PostgreSQL only.
TWO_BACKENDS = pytest.mark.parametrize(
    "any_db_url",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
    indirect=True,
)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    email = Column(EncryptedSearchableString(normalize="lower", keyring=RING))
    email_search = Column(SearchTokenIndex("email"), index=True)
    phone = Column(EncryptedString(keyring=RING))


class Account(Base):
    """The short form: the type adds the indexed ``<name>_search`` columns itself."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    login = Column(
        EncryptedSearchableString(normalize="lower+strip", token_column=True, keyring=RING)
    )
    number = Column(
        EncryptedSearchableInteger(token_column="number_token", storage="text", keyring=RING)
    )


class Member(Base):
    """Uses the configured (default) keyring, for the rotation tests."""

    __tablename__ = "member"

    id: Mapped[int] = mapped_column(primary_key=True)
    email = Column(EncryptedSearchableString())
    email_search = Column(SearchTokenIndex("email"), index=True)


CUSTOMER: Table = Customer.__table__  # type: ignore[assignment]


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Engine]:
    created = create_engine(any_db_url)
    Base.metadata.create_all(created)
    yield created
    created.dispose()


def token(value: str, *, keyring: Keyring = RING, context: str = "customer.email") -> bytes:
    cipher = get_searchable_cipher(context, normalize="lower", keyring=keyring)
    found = cipher.token(value)
    assert found is not None
    return found


def stored_tokens(engine: Engine) -> dict[int, bytes | None]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, email_search FROM customer ORDER BY id")).all()
    return {row[0]: None if row[1] is None else bytes(row[1]) for row in rows}


def search_ids(engine: Engine, condition: Any, model: Any = Customer) -> list[int]:
    with Session(engine) as session:
        return list(session.scalars(select(model.id).where(condition).order_by(model.id)))


def test_orm_writes_fill_the_token_and_search_matches_after_normalisation(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            [
                Customer(id=1, email="Alice@Example.com"),
                Customer(id=2, email="bob@example.com"),
                Customer(id=3),
            ]
        )
        session.commit()
    assert stored_tokens(engine) == {
        1: token("alice@example.com"),
        2: token("bob@example.com"),
        3: None,
    }
    assert search_ids(engine, Customer.email.search == "ALICE@example.COM") == [1]
    assert search_ids(engine, Customer.email.search == "carol@example.com") == []
    assert search_ids(engine, Customer.email.search.in_(["bob@EXAMPLE.com", "alice@x"])) == [2]
    assert search_ids(engine, Customer.email.search == None) == [3]  # noqa: E711


@TWO_BACKENDS
def test_orm_update_of_the_searchable_column_replaces_its_token(engine: Engine) -> None:
    with Session(engine) as session:
        customer = Customer(id=1, email="old@example.com")
        session.add(customer)
        session.commit()
        customer.email = "new@example.com"
        session.flush()
        # The ORM does not keep a stale token on the instance.
        assert customer.email_search == token("new@example.com")
        session.commit()
    assert search_ids(engine, Customer.email.search == "new@example.com") == [1]
    assert search_ids(engine, Customer.email.search == "old@example.com") == []


@TWO_BACKENDS
def test_writes_that_do_not_touch_the_searchable_column_keep_its_token(engine: Engine) -> None:
    with Session(engine) as session:
        customer = Customer(id=1, email="keep@example.com", phone="1")
        session.add(customer)
        session.commit()
        customer.phone = "2"
        session.commit()
        session.execute(update(Customer).where(Customer.id == 1).values(phone="3"))
        session.execute(update(Customer), [{"id": 1, "phone": "4"}])
        session.commit()
    with engine.begin() as conn:
        conn.execute(update(CUSTOMER).where(CUSTOMER.c.id == 1), {"phone": "5"})
    assert stored_tokens(engine) == {1: token("keep@example.com")}
    assert search_ids(engine, Customer.email.search == "keep@example.com") == [1]


def test_core_and_bulk_writes_fill_the_token(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(CUSTOMER), {"id": 1, "email": "a@x.org"})
        conn.execute(insert(CUSTOMER), [{"id": 2, "email": "b@x.org"}, {"id": 3, "email": None}])
        conn.execute(insert(CUSTOMER).values(id=4, email="d@x.org"))
        conn.execute(
            insert(CUSTOMER).values([{"id": 5, "email": "e@x.org"}, {"id": 6, "email": None}])
        )
    with Session(engine) as session:
        session.execute(insert(Customer), [{"id": 7, "email": "g@x.org"}])
        session.commit()
    assert stored_tokens(engine) == {
        1: token("a@x.org"),
        2: token("b@x.org"),
        3: None,
        4: token("d@x.org"),
        5: token("e@x.org"),
        6: None,
        7: token("g@x.org"),
    }


@TWO_BACKENDS
def test_core_and_bulk_updates_of_the_searchable_column_replace_its_token(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(CUSTOMER), [{"id": k, "email": f"{k}@old"} for k in range(1, 6)])
        conn.execute(update(CUSTOMER).where(CUSTOMER.c.id == 1), {"email": "1@new"})
        conn.execute(update(CUSTOMER).where(CUSTOMER.c.id == 2).values(email="2@new"))
        conn.execute(
            update(CUSTOMER)
            .where(CUSTOMER.c.id == bindparam("key"))
            .values(email=bindparam("address")),
            [{"key": 3, "address": "3@new"}, {"key": 4, "address": None}],
        )
    with Session(engine) as session:
        session.execute(update(Customer), [{"id": 5, "email": "5@new"}])
        session.commit()
    assert stored_tokens(engine) == {
        1: token("1@new"),
        2: token("2@new"),
        3: token("3@new"),
        4: None,
        5: token("5@new"),
    }


@TWO_BACKENDS
def test_search_works_on_an_alias(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all([Customer(id=1, email="a@x.org"), Customer(id=2, email="b@x.org")])
        session.commit()
        other = aliased(Customer)
        found = session.execute(
            select(Customer.id, other.id)
            .join(other, other.id != Customer.id)
            .where(other.email.search == "b@x.org")
        ).all()
    assert [tuple(row) for row in found] == [(1, 2)]


def test_short_form_creates_an_indexed_token_column_and_fills_it(engine: Engine) -> None:
    columns = {c["name"] for c in inspect(engine).get_columns("account")}
    indexed = {tuple(i["column_names"]) for i in inspect(engine).get_indexes("account")}
    assert {"login_search", "number_token"} <= columns
    assert {("login_search",), ("number_token",)} <= indexed
    with Session(engine) as session:
        session.add_all([Account(id=1, login="  Ann ", number=42), Account(id=2, number=7)])
        session.commit()
    assert search_ids(engine, Account.login.search == "ann", Account) == [1]
    assert search_ids(engine, Account.number.search.in_([7, 42, 99]), Account) == [1, 2]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT number_token FROM account WHERE id = 2")).scalar_one()
    assert isinstance(stored, str)  # storage="text": base64 tokens


@pytest.fixture
def keyring_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Sets the configured keyring, as an operator's rotate/disable would."""

    def use(ring: Keyring) -> None:
        monkeypatch.setenv("ENCMIGRATE_KEYRING", ring.to_json())
        reset_default_keyring()

    yield use
    reset_default_keyring()


def test_search_finds_rows_under_every_readable_version_after_rotate(
    engine: Engine, keyring_env: Any
) -> None:
    first = Keyring.generate()
    keyring_env(first)
    with Session(engine) as session:
        session.add_all([Member(id=1, email="before@x.org"), Member(id=2, email="both@x.org")])
        session.commit()
    rotated = first.rotated()
    keyring_env(rotated)
    with Session(engine) as session:
        session.add_all([Member(id=3, email="after@x.org"), Member(id=4, email="both@x.org")])
        session.commit()
    with engine.connect() as conn:
        versions = {
            row[0]: parse_header(bytes(row[1])).version  # type: ignore[union-attr]
            for row in conn.execute(text("SELECT id, email FROM member"))
        }
    assert versions == {1: 1, 2: 1, 3: 2, 4: 2}
    assert search_ids(engine, Member.email.search == "before@x.org", Member) == [1]
    assert search_ids(engine, Member.email.search == "after@x.org", Member) == [3]
    assert search_ids(engine, Member.email.search == "both@x.org", Member) == [2, 4]
    with Session(engine) as session:
        found = {row[0]: row[1] for row in session.execute(select(Member.id, Member.email))}
    assert found == {1: "before@x.org", 2: "both@x.org", 3: "after@x.org", 4: "both@x.org"}


@TWO_BACKENDS
def test_rows_under_a_disabled_version_are_not_found_and_do_not_decrypt(
    engine: Engine, keyring_env: Any
) -> None:
    first = Keyring.generate()
    keyring_env(first)
    with Session(engine) as session:
        session.add(Member(id=1, email="old@x.org"))
        session.commit()
    rotated = first.rotated()
    keyring_env(rotated)
    with Session(engine) as session:
        session.add(Member(id=2, email="old@x.org"))
        session.commit()
    keyring_env(rotated.with_state(1, KeyState.DISABLED))
    assert search_ids(engine, Member.email.search == "old@x.org", Member) == [2]
    with Session(engine) as session:
        assert session.scalars(select(Member.email).where(Member.id == 2)).one() == "old@x.org"
        with pytest.raises(DecryptionError) as caught:
            session.scalars(select(Member.email).where(Member.id == 1)).one()
    assert caught.value.version == 1
    assert "old@x.org" not in str(caught.value)


@TWO_BACKENDS
def test_writes_the_token_cannot_follow_are_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(CUSTOMER), {"id": 1, "email": "a@x.org"})
    with engine.connect() as conn:
        with pytest.raises(ConfigError, match="SQL expression"):
            conn.execute(update(CUSTOMER).values(email=CUSTOMER.c.phone))
        with pytest.raises(ConfigError, match="ordered_values"):
            conn.execute(update(CUSTOMER).ordered_values((CUSTOMER.c.email, "b@x.org")))
    assert stored_tokens(engine) == {1: token("a@x.org")}


def test_on_mariadb_tokens_are_binary_32_or_ascii_varchar_and_ciphertexts_longblob(
    mariadb_url: str,
) -> None:
    """A BLOB/TEXT token could not be indexed without a prefix; a TEXT ciphertext can overflow."""
    created = create_engine(mariadb_url)
    try:
        Base.metadata.create_all(created)
        with created.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME "
                    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                )
            ).all()
    finally:
        created.dispose()
    types = {(row[0], row[1]): (row[2], row[3]) for row in rows}
    assert types[("customer", "email_search")] == ("binary(32)", None)
    assert types[("account", "number_token")] == ("varchar(44)", "ascii_bin")
    assert types[("customer", "email")] == ("longblob", None)
    assert types[("account", "number")] == ("longtext", "ascii_bin")
