"""A model mapped on the step-4 view reads under the table's contexts.

``create-views`` exposes each ciphertext under its plaintext's name in the
view ``<table>_secure``; those values were encrypted under ``<table>.<column>``.
A model on the view names the table it shows in ``Table.info[VIEW_OF]``;
without it, a value read through a view named ``<table>_secure`` fails with a
DecryptionError that says what to add.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import Engine

from encmigrate import ConfigError, DecryptionError, Keyring
from encmigrate.fields import EncryptedSearchableString, EncryptedString, SearchTokenIndex
from encmigrate.fields.context import VIEW_OF, view_hint
from encmigrate.plan import ColumnPlan
from encmigrate.plan.validation import group_tables

RING = Keyring.generate()


@pytest.fixture
def engine() -> Iterator[Engine]:
    created = create_engine("sqlite://")
    yield created
    created.dispose()


def table(name: str, *columns: Column[Any], **kwargs: Any) -> Table:
    return Table(name, MetaData(), Column("id", Integer, primary_key=True), *columns, **kwargs)


def test_a_model_named_like_the_plan_s_default_view_gets_the_view_hint() -> None:
    planned = ColumnPlan(table="customer", column="email", type="string", context="customer.email")
    (grouped,) = group_tables([planned], {})
    view = table(grouped.view, Column("email", EncryptedString(keyring=RING)))
    assert "customer" in view_hint(view.c.email)


def test_a_view_model_takes_the_contexts_of_the_table_it_shows() -> None:
    view = table(
        "customer_secure",
        Column("email", EncryptedSearchableString(keyring=RING)),
        Column("phone", EncryptedString(keyring=RING)),
        info={VIEW_OF: "customer"},
    )
    assert view.c.email.type.resolve_context() == "customer.email"
    assert view.c.phone.type.resolve_context() == "customer.phone"


def test_the_view_s_schema_qualifies_the_table_it_shows() -> None:
    view = table(
        "customer_secure",
        Column("email", EncryptedString(keyring=RING)),
        schema="sales",
        info={VIEW_OF: "customer"},
    )
    assert view.c.email.type.resolve_context() == "sales.customer.email"


def test_an_explicit_context_still_wins_on_a_view() -> None:
    view = table(
        "customer_secure",
        Column("email", EncryptedString(context="legacy.mail", keyring=RING)),
        info={VIEW_OF: "customer"},
    )
    assert view.c.email.type.resolve_context() == "legacy.mail"


@pytest.mark.parametrize("shows", ["", 42, None])
def test_a_view_of_that_is_not_a_table_name_is_refused(shows: Any) -> None:
    view = table(
        "customer_secure", Column("email", EncryptedString(keyring=RING)), info={VIEW_OF: shows}
    )
    if shows is None:  # None is "not a view": the table's own name
        assert view.c.email.type.resolve_context() == "customer_secure.email"
        return
    with pytest.raises(ConfigError, match=f"info\\['{VIEW_OF}'\\] must be the name of the table"):
        view.c.email.type.resolve_context()


def _customer_and_view(engine: Engine, view: Table) -> None:
    """customer(id, email_encrypted) written through its model, and the view over it."""
    base = table("customer", Column("email_encrypted", EncryptedString(keyring=RING)))
    base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(base.insert(), [{"id": 1, "email_encrypted": "ann@example.com"}])
        conn.execute(
            text(f"CREATE VIEW {view.name} AS SELECT id, email_encrypted AS email FROM customer")
        )


def test_a_view_model_reads_what_the_table_model_wrote(engine: Engine) -> None:
    view = table(
        "customer_secure",
        Column("email", EncryptedString(keyring=RING)),
        info={VIEW_OF: "customer"},
    )
    _customer_and_view(engine, view)
    with engine.connect() as conn:
        assert conn.execute(select(view.c.email)).scalar_one() == "ann@example.com"


def test_reading_a_secure_view_under_its_own_name_says_what_to_add(engine: Engine) -> None:
    view = table("customer_secure", Column("email", EncryptedString(keyring=RING)))
    _customer_and_view(engine, view)
    with engine.connect() as conn, pytest.raises(DecryptionError) as caught:
        conn.execute(select(view.c.email)).scalar_one()
    message = str(caught.value)
    assert "context 'customer_secure.email'" in message
    assert f"__table_args__ = {{'info': {{'{VIEW_OF}': 'customer'}}}}" in message
    assert "ann@example.com" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "context"),
    [("customer_view", None), ("customer_secure", "customer_secure.email")],
    ids=["other-name", "explicit-context"],
)
def test_no_view_hint_where_the_mistake_is_not_likely(
    engine: Engine, name: str, context: str | None
) -> None:
    view = table(name, Column("email", EncryptedString(context=context, keyring=RING)))
    _customer_and_view(engine, view)
    with engine.connect() as conn, pytest.raises(DecryptionError) as caught:
        conn.execute(select(view.c.email)).scalar_one()
    assert VIEW_OF not in str(caught.value)


def test_a_view_model_searches_with_the_table_s_tokens(engine: Engine) -> None:
    base = table(
        "customer",
        Column("email_encrypted", EncryptedSearchableString(normalize="lower", keyring=RING)),
        Column("email_search", SearchTokenIndex("email")),
        Column("name", String(20)),
    )
    base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(base.insert(), [{"id": 1, "email_encrypted": "Ann@Example.com", "name": "a"}])
        conn.execute(
            text(
                "CREATE VIEW customer_secure AS "
                "SELECT id, name, email_encrypted AS email, email_search FROM customer"
            )
        )
    view = table(
        "customer_secure",
        Column("name", String(20)),
        Column("email", EncryptedSearchableString(normalize="lower", keyring=RING)),
        Column("email_search", SearchTokenIndex("email")),
        info={VIEW_OF: "customer"},
    )
    with engine.connect() as conn:
        found = conn.execute(
            select(view.c.id, view.c.email).where(view.c.email.search == "ann@example.com")
        ).all()
    assert [tuple(row) for row in found] == [(1, "Ann@Example.com")]
