"""Every encrypted column type round-trips on SQLite, PostgreSQL and MariaDB, by ORM and Core.

Values written through the types are the bytes ``get_cipher(context, type=...)``
produces, and the other way round: the ORM and the batch migrator read each
other's values. The asyncio engines are covered in test_fields_async.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from encmigrate import DecryptionError, Keyring, get_cipher
from encmigrate.crypto.envelope import envelope_from_text, envelope_to_text, parse_header
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
    EncryptedString,
    EncryptedText,
    EncryptedTime,
)

RING = Keyring.generate()
BERLIN = dt.timezone(dt.timedelta(hours=2))

# column -> (type name, a value that exercises the encoding)
VALUES: dict[str, tuple[str, Any]] = {
    "s": ("string", "Grüße, ✓ \x00 end"),
    "txt": ("text", "long text " * 200),
    "i": ("integer", -(2**31)),
    "bi": ("bigint", 2**63 - 1),
    "f": ("float", -1.5e300),
    "n": ("numeric", decimal.Decimal("10.20")),
    "b": ("boolean", False),
    "d": ("date", dt.date(1999, 12, 31)),
    "ts": ("datetime", dt.datetime(2026, 3, 29, 2, 30, 0, 123456)),
    "tz": ("datetime", dt.datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN)),
    "tm": ("time", dt.time(23, 59, 59, 999999)),
    "bin": ("binary", b"\x00\xff\x01 bytes"),
    "j": ("json", {"a": [1, 2.5, None, True], "é": {"z": "y"}}),
    "s_text": ("string", "stored as base64"),
}


class Base(DeclarativeBase):
    pass


class Record(Base):
    __tablename__ = "record"

    id: Mapped[int] = mapped_column(primary_key=True)
    s = Column(EncryptedString(100, keyring=RING))
    txt = Column(EncryptedText(keyring=RING))
    i = Column(EncryptedInteger(keyring=RING))
    bi = Column(EncryptedBigInteger(keyring=RING))
    f = Column(EncryptedFloat(keyring=RING))
    n = Column(EncryptedNumeric(keyring=RING))
    b = Column(EncryptedBoolean(keyring=RING))
    d = Column(EncryptedDate(keyring=RING))
    ts = Column(EncryptedDateTime(keyring=RING))
    tz = Column(EncryptedDateTime(timezone=True, keyring=RING))
    tm = Column(EncryptedTime(keyring=RING))
    bin = Column(EncryptedBinary(keyring=RING))
    j = Column(EncryptedJSON(keyring=RING))
    s_text = Column(EncryptedString(keyring=RING, storage="text"))


RECORD: Table = Record.__table__  # type: ignore[assignment]
FULL = {name: value for name, (_type, value) in VALUES.items()}
EMPTY = dict.fromkeys(VALUES)


def read_all(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in VALUES}


def assert_same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert found == expected
    if expected["tz"] is not None:  # equal aware datetimes may differ in offset: check it
        assert found["tz"].utcoffset() == expected["tz"].utcoffset()
        assert found["ts"].tzinfo is None


@pytest.fixture
def engine(any_db_url: str) -> Any:
    created = create_engine(any_db_url)
    Base.metadata.create_all(created)
    yield created
    created.dispose()


def test_every_type_round_trips_through_the_orm_with_nulls(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all([Record(id=1, **FULL), Record(id=2, **EMPTY)])
        session.commit()
    with Session(engine) as session:
        full, empty = session.scalars(select(Record).order_by(Record.id)).all()
        assert_same(read_all(full), FULL)
        assert read_all(empty) == EMPTY


def test_every_type_round_trips_through_core_with_nulls(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(RECORD), [{"id": 1, **FULL}, {"id": 2, **EMPTY}])
        conn.execute(update(RECORD).where(RECORD.c.id == 2).values(s="changed"))
    with engine.connect() as conn:
        rows = conn.execute(select(RECORD).order_by(RECORD.c.id)).all()
    assert_same(read_all(rows[0]), FULL)
    assert read_all(rows[1]) == {**EMPTY, "s": "changed"}


def test_orm_bulk_insert_of_many_rows_reads_back_in_order(engine: Engine) -> None:
    rows = [{"id": k, "s": f"name {k}", "n": decimal.Decimal(k) / 100} for k in range(1, 2001)]
    with Session(engine) as session:
        session.execute(insert(Record), rows)
        session.commit()
        found = session.execute(select(Record.id, Record.s, Record.n).order_by(Record.id)).all()
    assert [tuple(r) for r in found] == [(r["id"], r["s"], r["n"]) for r in rows]


def test_stored_values_are_envelopes_that_get_cipher_decrypts(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Record(id=1, **FULL))
        session.commit()
    columns = ", ".join(VALUES)
    with engine.connect() as conn:
        raw = conn.execute(text(f"SELECT {columns} FROM record")).one()._mapping
    for name, (type_name, value) in VALUES.items():
        stored = raw[name]
        blob = envelope_from_text(stored) if name == "s_text" else bytes(stored)
        assert blob is not None
        header = parse_header(blob)
        assert header is not None
        assert header.version == RING.current
        cipher = get_cipher(f"record.{name}", type=type_name, keyring=RING)
        assert cipher.decrypt(stored) == value


def test_values_written_by_get_cipher_read_back_through_the_model(engine: Engine) -> None:
    # The migrator writes with get_cipher into plain binary/text columns.
    raw = Table(
        "record",
        MetaData(),
        Column("id", Integer, primary_key=True),
        *(Column(name, Text if name == "s_text" else LargeBinary) for name in VALUES),
    )
    written: dict[str, Any] = {"id": 7}
    for name, (type_name, value) in VALUES.items():
        blob = get_cipher(f"record.{name}", type=type_name, keyring=RING).encrypt(value)
        assert blob is not None
        written[name] = envelope_to_text(blob) if name == "s_text" else blob
    with engine.begin() as conn:
        conn.execute(insert(raw), written)
    with Session(engine) as session:
        assert_same(read_all(session.get_one(Record, 7)), FULL)


def test_a_ciphertext_copied_to_another_column_does_not_decrypt(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Record(id=1, s="secret", txt="other"))
        session.commit()
    with engine.begin() as conn:
        conn.execute(text("UPDATE record SET txt = s"))
    with Session(engine) as session, pytest.raises(DecryptionError) as caught:
        session.scalars(select(Record.txt)).one()
    assert "record.txt" in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.postgres
def test_context_includes_the_schema_when_the_table_names_one(pg_engine: Engine) -> None:
    metadata = MetaData(schema="sales")
    customer = Table(
        "customer",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", EncryptedString(keyring=RING)),
    )
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA sales"))
        metadata.create_all(conn)
        conn.execute(insert(customer), {"id": 1, "email": "a@example.com"})
        stored = conn.execute(text("SELECT email FROM sales.customer")).scalar_one()
    assert get_cipher("sales.customer.email", keyring=RING).decrypt(stored) == "a@example.com"
    with pytest.raises(DecryptionError):
        get_cipher("customer.email", keyring=RING).decrypt(stored)
