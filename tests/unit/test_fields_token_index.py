"""SearchTokenIndex: which column it indexes, and the index it brings along.

The seed idiom ``email_search = Column(SearchTokenIndex("email"))`` must work
in every phase of the five steps: beside ``email`` before the drop, beside
``email_encrypted`` (alone, or with the plaintext ``email`` still there) once
the model maps the shadow column, and it must give the token column an index
without ``index=True``, named as ``add-columns`` names the one it creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from encmigrate import ConfigError, Keyring
from encmigrate.fields import EncryptedSearchableString, EncryptedString, SearchTokenIndex
from encmigrate.revisions.schema import index_name

RING = Keyring.generate()


@pytest.fixture
def engine() -> Iterator[Engine]:
    created = create_engine("sqlite://")
    yield created
    created.dispose()


def table_of(*columns: Column[Any], name: str = "customer", schema: str | None = None) -> Table:
    return Table(name, MetaData(), Column("id", Integer, primary_key=True), *columns, schema=schema)


def searchable() -> EncryptedSearchableString:
    return EncryptedSearchableString(normalize="lower", keyring=RING)


# -- which column the token indexes ----------------------------------------------------------


def test_the_planned_name_finds_the_shadow_column_after_the_drop() -> None:
    table = table_of(
        Column("email_encrypted", searchable()), Column("email_search", SearchTokenIndex("email"))
    )
    assert table.c.email_search.type.source_column() is table.c.email_encrypted


def test_the_planned_name_finds_the_shadow_column_beside_the_plaintext() -> None:
    table = table_of(
        Column("email", String(200)),
        Column("email_encrypted", searchable()),
        Column("email_search", SearchTokenIndex("email")),
    )
    assert table.c.email_search.type.source_column() is table.c.email_encrypted


def test_an_attribute_key_on_the_shadow_column_is_found_by_its_key() -> None:
    table = table_of(
        Column("email_encrypted", searchable(), key="email"),
        Column("email_search", SearchTokenIndex("email")),
    )
    assert table.c.email_search.type.source_column() is table.c.email


def test_the_shadow_column_s_own_name_still_works() -> None:
    table = table_of(
        Column("email_encrypted", searchable()),
        Column("email_search", SearchTokenIndex("email_encrypted")),
    )
    assert table.c.email_search.type.source_column() is table.c.email_encrypted


def test_a_missing_source_says_how_to_name_it() -> None:
    table = table_of(Column("mail_search", SearchTokenIndex("email")))
    with pytest.raises(ConfigError, match="not in the table: name the searchable column"):
        table.c.mail_search.type.source_column()


def test_a_plain_shadow_column_is_not_taken_for_a_searchable_one() -> None:
    table = table_of(
        Column("email_encrypted", EncryptedString(keyring=RING)),
        Column("email_search", SearchTokenIndex("email")),
    )
    with pytest.raises(ConfigError, match="not in the table"):
        table.c.email_search.type.source_column()


def test_model_on_the_dropped_table_writes_and_searches_with_the_seed_idiom(
    engine: Engine,
) -> None:
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customer"

        id: Mapped[int] = mapped_column(primary_key=True)
        email_encrypted = Column(searchable())
        email_search = Column(SearchTokenIndex("email"))

    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Customer(id=1, email_encrypted="Ann@Example.com"))
        session.commit()
        search = Customer.email_encrypted.search
        found = session.scalars(select(Customer.id).where(search == "ann@example.COM")).all()
    assert found == [1]


# -- the index -------------------------------------------------------------------------------


def indexes_of(table: Table) -> list[tuple[str, list[str]]]:
    return sorted((str(i.name), [c.name for c in i.columns]) for i in table.indexes)


def test_the_token_column_is_indexed_without_index_true() -> None:
    table = table_of(
        Column("email", searchable()), Column("email_search", SearchTokenIndex("email"))
    )
    assert indexes_of(table) == [("ix_customer_email_search", ["email_search"])]


@pytest.mark.parametrize(
    "token",
    [
        Column("email_search", SearchTokenIndex("email"), index=False),
        Column("email_search", SearchTokenIndex("email", index=False)),
        Column("email_search", SearchTokenIndex("email"), unique=True),
    ],
    ids=["column-index-false", "type-index-false", "unique"],
)
def test_index_false_or_unique_adds_no_index_of_ours(token: Column[Any]) -> None:
    table = table_of(Column("email", searchable()), token)
    assert table.indexes == set()


def test_index_true_gives_one_index_not_two() -> None:
    table = table_of(
        Column("email", searchable()), Column("email_search", SearchTokenIndex("email"), index=True)
    )
    assert [[c.name for c in i.columns] for i in table.indexes] == [["email_search"]]


def test_the_index_name_is_add_columns_s_even_in_a_schema_and_past_63_bytes() -> None:
    long_name = "customer_" + "x" * 60
    for name, schema in (("customer", "sales"), (long_name, None)):
        table = table_of(
            Column("email", searchable()),
            Column("email_search", SearchTokenIndex("email")),
            name=name,
            schema=schema,
        )
        [index] = table.indexes
        assert index.name == index_name(name, "email_search")


def test_copies_of_the_table_carry_exactly_one_index() -> None:
    table = table_of(
        Column("email", searchable()), Column("email_search", SearchTokenIndex("email"))
    )
    copy = table.to_metadata(MetaData())
    assert indexes_of(copy) == [("ix_customer_email_search", ["email_search"])]


def test_mixin_columns_are_indexed_in_each_table() -> None:
    class Base(DeclarativeBase):
        pass

    class Contact:
        email = Column(searchable())
        email_search = Column(SearchTokenIndex("email"))

    class Customer(Contact, Base):
        __tablename__ = "customer"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Supplier(Contact, Base):
        __tablename__ = "supplier"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert indexes_of(Customer.__table__) == [("ix_customer_email_search", ["email_search"])]  # type: ignore[arg-type]
    assert indexes_of(Supplier.__table__) == [("ix_supplier_email_search", ["email_search"])]  # type: ignore[arg-type]


def test_a_token_column_with_an_index_of_its_own_says_index_false() -> None:
    opted_out = table_of(
        Column("email", searchable()),
        Column("email_search", SearchTokenIndex("email"), index=False),
    )
    Index("my_token_index", opted_out.c.email_search)
    assert indexes_of(opted_out) == [("my_token_index", ["email_search"])]


def test_create_all_creates_the_index(engine: Engine) -> None:
    table = table_of(
        Column("email", searchable()), Column("email_search", SearchTokenIndex("email"))
    )
    table.metadata.create_all(engine)
    found = inspect(engine).get_indexes("customer")
    assert [(i["name"], i["column_names"]) for i in found] == [
        ("ix_customer_email_search", ["email_search"])
    ]


def test_the_short_form_gets_the_same_single_index() -> None:
    table = table_of(Column("email", EncryptedSearchableString(token_column=True, keyring=RING)))
    assert indexes_of(table) == [("ix_customer_email_search", ["email_search"])]


@pytest.mark.parametrize("index", [None, 1, "yes"])
def test_index_must_be_a_bool(index: Any) -> None:
    with pytest.raises(ValueError, match="index must be True or False"):
        SearchTokenIndex("email", index=index)
