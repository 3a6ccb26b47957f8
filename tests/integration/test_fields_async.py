"""The encrypted types and search through asyncio engines (psycopg 3 async, asyncmy, aiosqlite).

SQLAlchemy's asyncio layer needs ``greenlet`` (``sqlalchemy[asyncio]``); without
it this module is skipped. Each test drives its own event loop with
``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from typing import Any

import pytest

pytest.importorskip("greenlet", reason="SQLAlchemy asyncio needs greenlet (sqlalchemy[asyncio])")

from sqlalchemy import Column, Table, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from encmigrate import Keyring
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
    SearchTokenIndex,
)

RING = Keyring.generate()
UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))
FULL: dict[str, Any] = {
    "s": "Grüße ✓",
    "txt": "long " * 300,
    "i": 2**31 - 1,
    "bi": -(2**63),
    "f": 0.1,
    "n": decimal.Decimal("-0.000100"),
    "b": True,
    "d": dt.date(2000, 2, 29),
    "ts": dt.datetime(2026, 1, 2, 3, 4, 5, 6),
    "tz": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC_PLUS_2),
    "tm": dt.time(12, 0, 1),
    "bin": bytes(range(256)),
    "j": [1, {"k": "v"}, None],
}
EMPTY = dict.fromkeys(FULL)


class Base(DeclarativeBase):
    pass


class SearchBase(DeclarativeBase):
    pass


class Record(Base):
    __tablename__ = "async_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    s = Column(EncryptedString(keyring=RING))
    txt = Column(EncryptedText(keyring=RING, storage="text"))
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


RECORD: Table = Record.__table__  # type: ignore[assignment]


def read_all(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in FULL}


def assert_same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert found == expected
    assert found["tz"].utcoffset() == expected["tz"].utcoffset()


class Customer(SearchBase):
    __tablename__ = "async_customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    email = Column(EncryptedSearchableString(normalize="lower", keyring=RING))
    email_search = Column(SearchTokenIndex("email"), index=True)
    phone = Column(EncryptedString(keyring=RING))


def async_url(url: str) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    drivers = {
        "postgresql": "postgresql+psycopg_async",
        "mysql": "mysql+asyncmy",
        "sqlite": "sqlite+aiosqlite",
    }
    driver = drivers[backend]
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def test_every_type_round_trips_through_an_async_engine(any_db_url: str) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[Any]]:
        engine = create_async_engine(async_url(any_db_url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
                await conn.execute(insert(RECORD), [{"id": 3, **FULL}])
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            async with sessions() as session:
                session.add_all([Record(id=1, **FULL), Record(id=2, **EMPTY)])
                await session.commit()
            async with sessions() as session:
                found = (await session.scalars(select(Record).order_by(Record.id))).all()
                orm = [read_all(r) for r in found]
            async with engine.connect() as conn:
                core = (await conn.execute(select(RECORD).order_by(RECORD.c.id))).all()
            return orm, [read_all(r) for r in core]
        finally:
            await engine.dispose()

    orm, core = asyncio.run(scenario())
    for rows in (orm, core):
        assert_same(rows[0], FULL)
        assert rows[1] == EMPTY
        assert_same(rows[2], FULL)


def test_search_through_an_async_session_fills_and_finds_tokens(any_db_url: str) -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        engine = create_async_engine(async_url(any_db_url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(SearchBase.metadata.create_all)
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            async with sessions() as session:
                session.add(Customer(id=1, email="Alice@Example.com"))
                await session.execute(
                    insert(Customer), [{"id": 2, "email": "bob@x.org"}, {"id": 3, "email": None}]
                )
                await session.execute(update(Customer).where(Customer.id == 1).values(phone="1"))
                await session.commit()
                alice = (
                    await session.scalars(
                        select(Customer.id).where(Customer.email.search == "alice@example.com")
                    )
                ).all()
                both = (
                    await session.scalars(
                        select(Customer.id)
                        .where(Customer.email.search.in_(["ALICE@example.com", "Bob@X.org"]))
                        .order_by(Customer.id)
                    )
                ).all()
                none = (
                    await session.scalars(
                        select(Customer.id).where(Customer.email.search == "carol@x.org")
                    )
                ).all()
            return list(alice), list(both), list(none)
        finally:
            await engine.dispose()

    alice, both, none = asyncio.run(scenario())
    assert alice == [1]
    assert both == [1, 2]
    assert none == []
