"""The encrypted column types: contexts, keyrings, misuse errors and reprs.

Uses in-memory SQLite where a database is needed; the same behaviour on
PostgreSQL is covered by tests/integration/test_fields_*.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, literal, select
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import CompileError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column

from encmigrate import ConfigError, DecryptionError, Keyring, ValueTypeError, get_cipher
from encmigrate.fields import (
    EncryptedBigInteger,
    EncryptedBinary,
    EncryptedBoolean,
    EncryptedDate,
    EncryptedDateTime,
    EncryptedFloat,
    EncryptedInteger,
    EncryptedJSON,
    EncryptedNumeric,
    EncryptedSearchableString,
    EncryptedString,
    EncryptedText,
    EncryptedTime,
    EncryptedType,
    SearchTokenIndex,
    column_context,
)
from encmigrate.keys import reset_default_keyring

RING = Keyring.generate()
ALL_TYPES: list[type[EncryptedType[Any]]] = [
    EncryptedString,
    EncryptedText,
    EncryptedInteger,
    EncryptedBigInteger,
    EncryptedFloat,
    EncryptedNumeric,
    EncryptedBoolean,
    EncryptedDate,
    EncryptedDateTime,
    EncryptedTime,
    EncryptedBinary,
    EncryptedJSON,
    EncryptedSearchableString,
]


def one_column_table(type_: Any, name: str = "value", schema: str | None = None) -> Table:
    return Table(
        "thing",
        MetaData(schema=schema),
        Column("id", Integer, primary_key=True),
        Column(name, type_),
    )


@pytest.fixture
def engine() -> Iterator[Engine]:
    created = create_engine("sqlite://")
    yield created
    created.dispose()


def write(engine: Engine, type_: Any, value: Any) -> Any:
    """Insert ``value`` into a fresh one-column table and read it back."""
    table = one_column_table(type_)
    table.metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), {"id": 1, "value": value})
            return conn.execute(select(table.c.value)).scalar_one()
    finally:
        table.metadata.drop_all(engine)


def refusal(engine: Engine, type_: Any, value: Any) -> BaseException:
    """The error SQLAlchemy raises for ``value``: a StatementError wrapping ours."""
    with pytest.raises(StatementError) as caught:
        write(engine, type_, value)
    assert isinstance(caught.value.orig, ValueTypeError)
    return caught.value.orig


# -- contexts -----------------------------------------------------------------


def test_default_context_is_table_dot_column() -> None:
    table = one_column_table(EncryptedString(keyring=RING), name="Email")
    assert table.c.Email.type.resolve_context() == "thing.Email"
    assert column_context(table.c.Email) == "thing.Email"


def test_default_context_names_the_schema_when_the_table_has_one() -> None:
    table = one_column_table(EncryptedString(keyring=RING), schema="sales")
    assert table.c.value.type.resolve_context() == "sales.thing.value"


def test_explicit_context_wins_over_the_column() -> None:
    table = one_column_table(EncryptedString(context="legacy.mail", keyring=RING))
    assert table.c.value.type.resolve_context() == "legacy.mail"


def test_one_type_instance_shared_by_two_columns_gets_two_contexts(engine: Engine) -> None:
    shared = EncryptedString(keyring=RING)
    table = Table(
        "pair",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("a", shared),
        Column("b", shared),
    )
    assert table.c.a.type.resolve_context() == "pair.a"
    assert table.c.b.type.resolve_context() == "pair.b"
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), {"id": 1, "a": "x", "b": "y"})
        raw = conn.exec_driver_sql("SELECT a, b FROM pair").one()
    assert get_cipher("pair.a", keyring=RING).decrypt(raw[0]) == "x"
    assert get_cipher("pair.b", keyring=RING).decrypt(raw[1]) == "y"


def test_columns_copied_from_a_mixin_take_each_table_s_context() -> None:
    class Base(DeclarativeBase):
        pass

    class HasEmail:
        @declared_attr
        def id(cls) -> Mapped[int]:  # noqa: N805 - declared_attr takes the class
            return mapped_column(primary_key=True)

        email = Column(EncryptedString(keyring=RING))

    class Left(HasEmail, Base):
        __tablename__ = "left_side"

    class Right(HasEmail, Base):
        __tablename__ = "right_side"

    left: Any = Left.__table__
    right: Any = Right.__table__
    assert left.c.email.type.resolve_context() == "left_side.email"
    assert right.c.email.type.resolve_context() == "right_side.email"


def test_to_metadata_copies_bind_to_the_new_table() -> None:
    table = one_column_table(EncryptedString(keyring=RING))
    copy = table.to_metadata(MetaData(), schema="archive")
    assert copy.c.value.type.resolve_context() == "archive.thing.value"
    assert table.c.value.type.resolve_context() == "thing.value"


def test_a_type_outside_any_table_needs_an_explicit_context(engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(StatementError) as caught:
            conn.execute(select(literal("x", EncryptedString(keyring=RING))))
        assert isinstance(caught.value.orig, ConfigError)
        assert "context=" in str(caught.value.orig)
        typed = EncryptedString(context="adhoc", keyring=RING)
        assert conn.execute(select(literal("x", typed))).scalar_one() == "x"


# -- reading values ------------------------------------------------------------


@pytest.mark.parametrize("storage", ["binary", "text"])
@pytest.mark.parametrize("first", ["older", "current", "rewritten", "garbage"])
def test_every_value_read_is_checked_whatever_the_first_one_was(storage: str, first: str) -> None:
    """The result processor fetches its parts on the first value: whichever value that is,
    every later one is opened under its own version or refused (a header rewritten to
    another version fails even where its ciphertext would open under the current one)."""
    older = Keyring.generate()
    current = older.rotated()  # version 2 current, version 1 still readable
    dialect = psycopg_dialect()
    kind = EncryptedString(keyring=current, context="t.c", storage=storage)
    process = kind.dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None
    old = get_cipher("t.c", keyring=older).encrypt("old")
    new = get_cipher("t.c", keyring=current).encrypt("new")
    assert old is not None and new is not None and old[:5] != new[:5]
    values: dict[str, bytes] = {
        "older": old,
        "current": new,
        "rewritten": new[:1] + old[1:5] + new[5:],  # says version 1, sealed under 2
        "garbage": b"\x01\x00\x00\x00\x02" + bytes(40),  # the current header, no valid tag
    }
    stored: Any = (
        {k: base64.b64encode(v).decode() for k, v in values.items()}
        if storage == "text"
        else values
    )
    order = [first, *(k for k in ("older", "current", "rewritten", "garbage") if k != first)]
    for key in [*order, *order]:
        if key in ("rewritten", "garbage"):
            with pytest.raises(DecryptionError):
                process(stored[key])
        else:
            assert process(stored[key]) == {"older": "old", "current": "new"}[key]
    assert process(None) is None


# -- keyrings -----------------------------------------------------------------


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Any]:
    for name in (
        "ENCMIGRATE_KEYRING",
        "ENCMIGRATE_MASTER_KEY",
        "ENCMIGRATE_KEYRING_FILE",
        "ENCMIGRATE_CONFIG",
        "ENCMIGRATE_ENV_PREFIX",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no plan file around either

    def use(ring: Keyring) -> None:
        monkeypatch.setenv("ENCMIGRATE_KEYRING", ring.to_json())
        reset_default_keyring()

    reset_default_keyring()
    yield use
    reset_default_keyring()


def test_default_keyring_is_resolved_at_first_use_not_at_definition(
    engine: Engine, configured: Any
) -> None:
    type_ = EncryptedString()  # nothing configured yet: defining the column is fine
    table = one_column_table(type_)
    ring = Keyring.generate()
    configured(ring)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), {"id": 1, "value": "v"})
        raw = conn.exec_driver_sql("SELECT value FROM thing").scalar_one()
    assert get_cipher("thing.value", keyring=ring).decrypt(raw) == "v"


def test_a_changed_default_keyring_is_picked_up_after_reset(
    engine: Engine, configured: Any
) -> None:
    first = Keyring.generate()
    configured(first)
    table = one_column_table(EncryptedString())
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), {"id": 1, "value": "one"})
        configured(first.rotated())
        conn.execute(insert(table), {"id": 2, "value": "two"})
        raw = conn.exec_driver_sql("SELECT value FROM thing ORDER BY id").scalars().all()
        assert conn.execute(select(table.c.value).order_by(table.c.id)).scalars().all() == [
            "one",
            "two",
        ]
    assert [blob[1:5] for blob in raw] == [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"]


# -- misuse ----------------------------------------------------------------------


def test_writing_an_int_to_a_string_column_is_refused(engine: Engine) -> None:
    error = refusal(engine, EncryptedString(keyring=RING), 42)
    assert "expects str, got int" in str(error)


def test_a_string_longer_than_declared_is_refused(engine: Engine) -> None:
    assert "longer than 3" in str(refusal(engine, EncryptedString(3, keyring=RING), "abcd"))
    assert write(engine, EncryptedString(3, keyring=RING), "abc") == "abc"


def test_a_naive_datetime_in_a_timezone_column_is_refused(engine: Engine) -> None:
    error = refusal(engine, EncryptedDateTime(timezone=True, keyring=RING), dt.datetime(2026, 1, 1))
    assert "naive" in str(error)


def test_an_aware_datetime_in_a_naive_column_is_refused(engine: Engine) -> None:
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert "aware" in str(refusal(engine, EncryptedDateTime(keyring=RING), aware))
    zoned_time = dt.time(1, 2, tzinfo=dt.UTC)
    assert "aware" in str(refusal(engine, EncryptedTime(keyring=RING), zoned_time))


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (EncryptedInteger, 2**31),
        (EncryptedInteger, -(2**31) - 1),
        (EncryptedBigInteger, 2**63),
        (EncryptedBigInteger, -(2**63) - 1),
    ],
)
def test_an_integer_out_of_the_declared_range_is_refused(
    engine: Engine, type_: type[EncryptedInteger], value: int
) -> None:
    error = refusal(engine, type_(keyring=RING), value)
    assert "out of range" in str(error)
    assert str(value) not in str(error)


def test_integer_range_limits_are_inclusive(engine: Engine) -> None:
    assert write(engine, EncryptedInteger(keyring=RING), 2**31 - 1) == 2**31 - 1
    assert write(engine, EncryptedBigInteger(keyring=RING), -(2**63)) == -(2**63)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (EncryptedNumeric, 1.5),
        (EncryptedInteger, True),
        (EncryptedBoolean, 1),
        (EncryptedDate, dt.datetime(2026, 1, 1)),
        (EncryptedBinary, "text"),
        (EncryptedJSON, {1, 2}),
    ],
)
def test_values_of_the_wrong_python_type_are_refused(
    engine: Engine, type_: type[EncryptedType[Any]], value: Any
) -> None:
    refusal(engine, type_(keyring=RING), value)


def test_comparing_an_encrypted_column_with_a_value_is_refused() -> None:
    table = one_column_table(EncryptedString(keyring=RING))
    with pytest.raises(ValueTypeError, match=r"thing\.value is encrypted.*\.search"):
        table.c.value == "x"  # noqa: B015
    with pytest.raises(ValueTypeError):
        table.c.value.in_(["x", "y"])
    assert str(table.c.value.is_(None)) == "thing.value IS NULL"
    assert str(table.c.value == None) == "thing.value IS NULL"  # noqa: E711


def test_searching_a_column_that_is_not_searchable_is_refused() -> None:
    table = one_column_table(EncryptedString(keyring=RING))
    with pytest.raises(ValueTypeError, match="not searchable"):
        table.c.value.search  # noqa: B018


def test_a_searchable_column_without_token_column_says_what_is_missing() -> None:
    table = one_column_table(EncryptedSearchableString(keyring=RING))
    with pytest.raises(ConfigError, match=r"SearchTokenIndex\('value'\)"):
        table.c.value.search == "x"  # noqa: B015


def test_a_token_index_naming_a_plain_column_is_refused() -> None:
    table = Table(
        "wrong",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("email", EncryptedString(keyring=RING)),
        Column("email_search", SearchTokenIndex("email")),
    )
    with pytest.raises(ConfigError, match="not an EncryptedSearchable"):
        table.c.email_search.type.source_column()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: EncryptedString(storage="hex"), "storage must be"),
        (lambda: EncryptedString(context=""), "context must be"),
        (lambda: EncryptedSearchableString(normalize="upper"), "normalize must be"),
        (lambda: EncryptedString(0), "length must be"),
    ],
)
def test_bad_arguments_are_refused_at_definition(factory: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_a_keyring_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="keyring must be a Keyring"):
        EncryptedString(keyring="not a keyring")  # type: ignore[arg-type]


def test_literal_rendering_of_encrypted_values_is_refused() -> None:
    typed = EncryptedString(context="c", keyring=RING)
    statement = select(literal("plain", typed))
    with pytest.raises(CompileError) as caught:
        statement.compile(compile_kwargs={"literal_binds": True})
    assert isinstance(caught.value.__cause__, ValueTypeError)
    assert "SQL literals" in str(caught.value.__cause__)


# -- reprs ----------------------------------------------------------------------


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_repr_shows_no_key_material(type_: type[EncryptedType[Any]]) -> None:
    table = one_column_table(type_(keyring=RING))
    column_type = table.c.value.type
    column_type.cipher()  # derive keys: a repr must not show them either
    material = [v.key.reveal() for v in RING.versions if v.key is not None]
    for text in (repr(column_type), str(column_type.cipher()), repr(column_type.cipher())):
        for key in material:
            assert base64.b64encode(key).decode() not in text
            assert key.hex() not in text
            assert repr(key) not in text
        assert "Keyring" not in text


def test_repr_is_the_constructor_call_without_defaults() -> None:
    assert repr(EncryptedString()) == "EncryptedString()"
    assert repr(EncryptedString(255, storage="text")) == "EncryptedString(255, storage='text')"
    assert repr(EncryptedDateTime(timezone=True)) == "EncryptedDateTime(timezone=True)"
    assert (
        repr(EncryptedSearchableString(normalize="lower", context="c", keyring=RING))
        == "EncryptedSearchableString(context='c', normalize='lower')"
    )
    assert repr(SearchTokenIndex("email")) == "SearchTokenIndex('email')"


def test_python_types_are_declared() -> None:
    assert EncryptedNumeric().python_type is decimal.Decimal
    assert EncryptedDateTime().python_type is dt.datetime
    assert EncryptedBinary().python_type is bytes


def test_separate_keyrings_on_same_named_tables_do_not_share_compiled_processors(
    engine: Engine,
) -> None:
    other = Keyring.generate()
    first = one_column_table(EncryptedString(keyring=RING))
    second = one_column_table(EncryptedString(keyring=other))
    first.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(first), {"id": 1, "value": "a"})
        conn.execute(insert(second), {"id": 2, "value": "b"})
        raw = conn.exec_driver_sql("SELECT value FROM thing ORDER BY id").scalars().all()
    assert get_cipher("thing.value", keyring=RING).decrypt(raw[0]) == "a"
    assert get_cipher("thing.value", keyring=other).decrypt(raw[1]) == "b"


def test_orm_flush_of_a_wrong_value_names_the_type_not_the_value(engine: Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "person"
        id: Mapped[int] = mapped_column(primary_key=True)
        age = Column(EncryptedInteger(keyring=RING))

    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Person(id=1, age="forty-two"))
        with pytest.raises(StatementError) as caught:
            session.flush()
    assert isinstance(caught.value.orig, ValueTypeError)
    assert "forty-two" not in str(caught.value.orig)
