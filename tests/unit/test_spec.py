"""The column spec: the one place the context rule, codec, search settings and names live.

The point of the spec is that the column types, the plan (and so the migrator,
verify, status and inspect) and ``api.py`` describe a column alike; these
tests build the same column from each side and compare.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from encmigrate import Keyring, get_searchable_cipher
from encmigrate.crypto.search import Normalize, SearchableCipher
from encmigrate.fields import EncryptedNumeric, EncryptedSearchableString, EncryptedString
from encmigrate.plan import ColumnPlan
from encmigrate.spec import ColumnSpec, default_context, planned_name

RING = Keyring.generate()


def test_the_context_rule() -> None:
    assert default_context("customer", "email") == "customer.email"
    assert default_context("customer", "email", schema="sales") == "sales.customer.email"
    assert default_context("sales.customer", "email") == "sales.customer.email"
    assert default_context("Customer", "E-Mail") == "Customer.E-Mail"  # case and characters kept


def test_a_shadow_column_stands_for_its_planned_column() -> None:
    assert planned_name("email_encrypted") == "email"
    assert planned_name("email") == "email"
    assert planned_name("_encrypted") == "_encrypted"  # nothing left to stand for


def test_names_derived_from_the_planned_column() -> None:
    spec = ColumnSpec("customer.email", searchable=True, column="email")
    assert (spec.shadow_column, spec.search_column) == ("email_encrypted", "email_search")
    assert ColumnSpec("customer.email", column="email").search_column is None
    with pytest.raises(ValueError, match="names no column"):
        _ = ColumnSpec("customer.email").shadow_column


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context": ""}, "context must be a non-empty string"),
        ({"type_name": "money"}, "type must be one of"),
        ({"storage": "hex"}, "storage must be 'binary' or 'text'"),
        ({"normalize": "upper", "searchable": True}, "normalize must be one of"),
        ({"normalize": "lower"}, "searchable columns only"),
        ({"normalize": "lower", "searchable": True, "type_name": "integer"}, "string fields"),
    ],
)
def test_a_spec_refuses_what_no_party_could_encrypt(kwargs: dict[str, str], message: str) -> None:
    values = {"context": "t.c", **kwargs}
    with pytest.raises(ValueError, match=message):
        ColumnSpec(**values)  # type: ignore[arg-type]


def test_normalize_given_as_text_is_stored_as_the_enum() -> None:
    spec = ColumnSpec("t.c", searchable=True, normalize="lower")  # type: ignore[arg-type]
    assert spec.normalize is Normalize.LOWER


def _model_column(type_: object, name: str = "email", schema: str | None = "sales") -> Column[str]:
    table = Table("customer", MetaData(), Column("id", Integer, primary_key=True), schema=schema)
    column: Column[str] = Column(name, type_)  # type: ignore[arg-type]
    table.append_column(column)
    return column


def test_a_model_on_the_shadow_column_and_the_plan_describe_the_same_column() -> None:
    column = _model_column(
        EncryptedSearchableString(normalize="lower", storage="text"), name="email_encrypted"
    )
    planned = ColumnPlan(
        table="sales.customer",
        column="email",
        type="string",
        searchable=True,
        normalize=Normalize.LOWER,
        context="sales.customer.email",
        storage="text",
    )
    assert column.type.spec() == planned.spec  # type: ignore[attr-defined]


def test_plain_and_numeric_types_give_their_type_name_and_no_search() -> None:
    assert _model_column(EncryptedString()).type.spec() == ColumnSpec(  # type: ignore[attr-defined]
        "sales.customer.email", column="email"
    )
    spec = _model_column(EncryptedNumeric(), name="balance").type.spec()  # type: ignore[attr-defined]
    assert (spec.type_name, spec.searchable, spec.column) == ("numeric", False, "balance")


def test_an_explicit_context_outside_a_table_has_no_column() -> None:
    assert EncryptedString(context="billing.card").spec() == ColumnSpec("billing.card")


def test_the_spec_s_cipher_reads_and_searches_what_api_s_cipher_wrote() -> None:
    spec = ColumnSpec("c.email", searchable=True, normalize=Normalize.LOWER, column="email")
    mine = spec.cipher(RING.derived_keys)
    theirs = get_searchable_cipher("c.email", normalize="lower", keyring=RING)
    assert isinstance(mine, SearchableCipher)
    assert mine.decrypt(theirs.encrypt("A@x.org")) == "A@x.org"
    assert mine.token("a@X.org") == theirs.token("A@x.org")
    assert type(ColumnSpec("c.email").cipher(RING.derived_keys)) is not SearchableCipher
