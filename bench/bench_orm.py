"""ORM cost of the encrypted column types on PostgreSQL vs plaintext, a floor, sqlalchemy-utils.

One run, in a database it creates and drops:

* insert (``session.execute(insert(Model), rows)``) and select
  (``session.scalars(select(Model)).all()``) of ``--rows`` rows of a
  4-column model: two strings, one numeric, one plain int, as
  - plaintext columns;
  - the *floor*: a bare ``TypeDecorator`` doing one ``AESGCM.encrypt`` /
    ``decrypt`` per value and nothing else, the least per-field encryption
    can cost;
  - encmigrate's types (``EncryptedString``, ``EncryptedNumeric``), and the
    same with the first string searchable (token column filled per row);
  - sqlalchemy-utils ``StringEncryptedType`` with its ``AesGcmEngine``;
* ``--lookups`` indexed lookups by search token vs by plaintext value.

Targets (issue 4): encrypted insert and select <= 1.10x the floor, >= 2x
faster than sqlalchemy-utils, token lookups <= 1.3x plaintext lookups.

    python bench/bench_orm.py [--rows 100000] [--lookups 10000] [--repeat 3] [--url URL]

Each figure is the best of ``--repeat`` rounds, every round running all
models in turn, so a busy machine slows them alike.

Without ``--url`` the server is found as the test fixtures find it
(``encmigrate.testing``); a fresh ``encmigrate_test_<hex>`` database is used
and dropped at the end.
"""

from __future__ import annotations

import argparse
import decimal
import gc
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    Numeric,
    String,
    create_engine,
    insert,
    select,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from encmigrate import Keyring
from encmigrate.fields import (
    EncryptedNumeric,
    EncryptedSearchableString,
    EncryptedString,
    SearchTokenIndex,
)
from encmigrate.testing import create_database, drop_database, find_postgres_server

RING = Keyring.generate()
FLOOR_KEY = AESGCM(os.urandom(32))
UTILS_KEY = os.urandom(32).hex()


class FloorString(TypeDecorator[str]):
    """One AES-GCM call per value, nothing else: no header, no context, no codec."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        return nonce + FLOOR_KEY.encrypt(nonce, str(value).encode(), None)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return FLOOR_KEY.decrypt(value[:12], value[12:], None).decode()


class FloorNumeric(FloorString):
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        text = super().process_result_value(value, dialect)
        return None if text is None else decimal.Decimal(text)


class Base(DeclarativeBase):
    pass


def _utils_types() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sqlalchemy_utils import StringEncryptedType
        from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    return (
        StringEncryptedType(String, UTILS_KEY, AesGcmEngine),
        # Its Numeric round trip fails to parse its own output; String does the same work.
        StringEncryptedType(String, UTILS_KEY, AesGcmEngine),
    )


def model(name: str, string: Any, numeric: Any, *, search: bool = False) -> type[Any]:
    """A mapped class ``name``: id, name, email, balance, age."""
    columns: dict[str, Any] = {
        "__tablename__": name,
        "id": Column(Integer, primary_key=True),
        "name": Column(string() if callable(string) else string),
        "email": Column(string() if callable(string) else string),
        "balance": Column(numeric() if callable(numeric) else numeric),
        "age": Column(Integer),
    }
    if search:
        columns["email"] = Column(EncryptedSearchableString(keyring=RING))
        columns["email_search"] = Column(SearchTokenIndex("email"), index=True)
    return type(name.title().replace("_", ""), (Base,), columns)


def build_models() -> dict[str, type[Any]]:
    utils_string, utils_numeric = _utils_types()
    return {
        "plaintext": model("bench_plain", String(100), Numeric(12, 2)),
        "floor": model("bench_floor", FloorString, FloorNumeric),
        "encmigrate": model(
            "bench_enc",
            lambda: EncryptedString(keyring=RING),
            lambda: EncryptedNumeric(keyring=RING),
        ),
        "encmigrate+search": model(
            "bench_enc_search",
            lambda: EncryptedString(keyring=RING),
            lambda: EncryptedNumeric(keyring=RING),
            search=True,
        ),
        "sqlalchemy-utils": model("bench_utils", utils_string, utils_numeric),
    }


def rows(count: int) -> list[dict[str, Any]]:
    rng = random.Random(4)
    return [
        {
            "id": k,
            "name": f"Customer {k} {rng.randrange(10**6)}",
            "email": f"user{k}@example.com",
            "balance": decimal.Decimal(rng.randrange(10**8)) / 100,
            "age": rng.randrange(18, 99),
        }
        for k in range(1, count + 1)
    ]


@contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    gc.collect()
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def run_insert_select(
    engine: Engine, models: dict[str, type[Any]], data: list[Any], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best of ``repeat`` rounds; each round runs every model in turn (noise hits all alike)."""
    inserts: dict[str, float] = {}
    selects: dict[str, float] = {}
    for _ in range(repeat):
        for label, cls in models.items():
            with Session(engine) as session:
                session.execute(cls.__table__.delete())
                session.commit()
            took: dict[str, float] = {}
            with Session(engine) as session, timed(took, "insert"):
                session.execute(insert(cls), data)
                session.commit()
            with Session(engine) as session, timed(took, "select"):
                loaded = session.scalars(select(cls)).all()
            assert len(loaded) == len(data)
            assert loaded[0].email == data[loaded[0].id - 1]["email"]
            inserts[label] = min(inserts.get(label, float("inf")), took["insert"])
            selects[label] = min(selects.get(label, float("inf")), took["select"])
    for label in models:
        print(f"  {label:<18} insert {inserts[label]:7.2f} s   select {selects[label]:7.2f} s")
    return inserts, selects


def run_lookups(
    engine: Engine, models: dict[str, type[Any]], count: int, lookups: int, repeat: int
) -> dict[str, float]:
    plain, searchable = models["plaintext"], models["encmigrate+search"]
    rng = random.Random(7)
    wanted = [rng.randrange(1, count + 1) for _ in range(lookups)]
    results: dict[str, float] = {}

    def lookup(label: str, condition: Callable[[str], Any], cls: Any) -> None:
        took: dict[str, float] = {}
        with Session(engine) as session, timed(took, label):
            for k in wanted:
                found = session.scalars(select(cls.id).where(condition(f"user{k}@example.com")))
                assert found.one() == k
        results[label] = min(results.get(label, float("inf")), took[label])

    with Session(engine) as session:
        session.connection().exec_driver_sql("CREATE INDEX ON bench_plain (email)")
        session.commit()
        session.connection().exec_driver_sql("ANALYZE")
        session.commit()
    for _ in range(repeat):
        lookup("plaintext", lambda v: plain.email == v, plain)
        lookup("search token", lambda v: searchable.email.search == v, searchable)
    for label, took in results.items():
        print(f"  {label:<18} {lookups} lookups {took:7.2f} s")
    return results


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(inserts: dict[str, float], selects: dict[str, float], looks: dict[str, float]) -> bool:
    print("\nratios (lower is better)")
    checks: list[bool] = []
    for phase, times in (("insert", inserts), ("select", selects)):
        floor = times["floor"]
        print(f"  {phase}: floor / plaintext            {floor / times['plaintext']:5.2f}x")
        for label in ("encmigrate", "encmigrate+search"):
            ratio = times[label] / floor
            ok = ratio <= 1.10 or label != "encmigrate"
            target = "<= 1.10x" if label == "encmigrate" else "(info)  "
            if label == "encmigrate":
                checks.append(ok)
            print(
                f"  {phase}: {label:<18} / floor  {ratio:5.2f}x  {target} "
                f"{verdict(ok) if label == 'encmigrate' else ''}"
            )
        speedup = times["sqlalchemy-utils"] / times["encmigrate"]
        checks.append(speedup >= 2)
        print(
            f"  {phase}: sqlalchemy-utils / encmigrate {speedup:5.2f}x  >= 2x     "
            f"{verdict(speedup >= 2)}"
        )
    ratio = looks["search token"] / looks["plaintext"]
    checks.append(ratio <= 1.3)
    print(f"  lookup: token / plaintext           {ratio:5.2f}x  <= 1.30x {verdict(ratio <= 1.3)}")
    return all(checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--url", help="an empty PostgreSQL database to use (not dropped)")
    args = parser.parse_args(argv)

    server = None
    url = args.url
    if url is None:
        server = find_postgres_server()
        url = create_database(server)
    engine = create_engine(url)
    try:
        models = build_models()
        Base.metadata.create_all(engine)
        data = rows(args.rows)
        print(
            f"PostgreSQL, {args.rows} rows, ORM bulk insert and select of a 4-column model "
            f"(best of {args.repeat})"
        )
        inserts, selects = run_insert_select(engine, models, data, args.repeat)
        print(f"\nindexed lookups ({args.lookups}, best of {args.repeat})")
        looks = run_lookups(engine, models, args.rows, args.lookups, args.repeat)
        passed = report(inserts, selects, looks)
    finally:
        engine.dispose()
        if server is not None:
            drop_database(server, url)
            server.close()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
