"""ORM cost of the encrypted column types on PostgreSQL vs plaintext, two floors, sqlalchemy-utils.

One run, in a database it creates and drops:

* insert (``session.execute(insert(Model), rows)`` + commit) and select
  (``session.scalars(select(Model)).all()``) of ``--rows`` rows of a model
  of id, two strings, one numeric and one plain int, as
  - plaintext columns;
  - the *closure floor* (the target's baseline): a bare ``TypeDecorator``
    (impl ``LargeBinary``) whose ``bind_processor`` / ``result_processor``
    return closures doing ``nonce = os.urandom(12); nonce +
    aes.encrypt(nonce, str(v).encode(), None)`` / ``aes.decrypt(v[:12],
    v[12:], None).decode()`` (``Decimal(...)`` for the numeric) and nothing
    else. Like encmigrate it hands ``bytes`` to psycopg as they are (no
    ``dbapi.Binary`` wrapping, see NATIVE_BYTES_DRIVERS), so it is the least
    per-field encryption can cost through SQLAlchemy's type system;
  - the *process_bind_param floor* (information): the same work written as
    ``process_bind_param`` / ``process_result_value``, which SQLAlchemy wraps
    in its own closures and ``LargeBinary``'s ``dbapi.Binary``;
  - encmigrate's types (``EncryptedString`` x2, ``EncryptedNumeric``), and the
    same with one string searchable (token column filled per row; information);
  - sqlalchemy-utils ``StringEncryptedType`` with its ``AesGcmEngine``;
* ``--lookups`` indexed lookups by search token vs by plaintext value.

Targets (issues 4 and 19): encmigrate insert and select <= 1.10x the closure
floor, >= 2x faster than sqlalchemy-utils, token lookups <= 1.3x plaintext.

    python bench/bench_orm.py [--rows 50000] [--lookups 10000] [--repeat 5] [--url URL]

Every round runs every model in turn, each on a freshly created table; each
ratio is computed within its round and its median (the verdict), minimum and
maximum over the ``--repeat`` rounds are printed with the medians of the
times (bench/_report.py says why). The garbage collector runs before and is
held off during each timed call, for every model.

Without ``--url`` the server is found as the test fixtures find it
(``encmigrate.testing``); a fresh ``encmigrate_test_<hex>`` database is used
and dropped at the end.
"""

from __future__ import annotations

import argparse
import decimal
import os
import random
import statistics
import sys
import warnings
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, Integer, LargeBinary, Numeric, String, create_engine, insert, select
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from _report import Ratio, Target, machine, machine_line, paired, ratio_line, time_once
from encmigrate import Keyring
from encmigrate.fields import (
    EncryptedNumeric,
    EncryptedSearchableString,
    EncryptedString,
    SearchTokenIndex,
)
from encmigrate.fields.encrypted import NATIVE_BYTES_DRIVERS
from encmigrate.testing import create_database, drop_database, find_postgres_server

RING = Keyring.generate()
FLOOR_KEY = AESGCM(AESGCM.generate_key(bit_length=256))
UTILS_KEY = os.urandom(32).hex()
Process = Callable[[Any], Any]

PLAIN = "plaintext"
CLOSURE = "floor (closures)"
PBP = "floor (process_bind_param)"
OURS = "encmigrate"
SEARCH = "encmigrate+search"
UTILS = "sqlalchemy-utils"


class ClosureFloorString(TypeDecorator[str]):
    """The closure floor: one nonce and one AES-GCM call per value, inside bare closures."""

    impl = LargeBinary
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Process | None:
        # As encmigrate does: bytes go to psycopg as they are; other drivers get the
        # impl's dbapi.Binary wrapping, so the floor never skips work ours must do.
        wrap = (
            None
            if dialect.driver in NATIVE_BYTES_DRIVERS
            else self.impl_instance.bind_processor(dialect)
        )
        encrypt, urandom = FLOOR_KEY.encrypt, os.urandom

        def process(value: Any) -> Any:
            if value is None:
                return None
            nonce = urandom(12)
            blob = nonce + encrypt(nonce, str(value).encode(), None)
            return blob if wrap is None else wrap(blob)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Process | None:
        start = self.impl_instance.result_processor(dialect, coltype)  # None on psycopg
        decrypt = FLOOR_KEY.decrypt

        def process(value: Any) -> Any:
            if start is not None:
                value = start(value)
            if value is None:
                return None
            return decrypt(value[:12], value[12:], None).decode()

        return process


class ClosureFloorNumeric(ClosureFloorString):
    """The closure floor of a numeric: the string's work, then ``Decimal(...)``."""

    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Process | None:
        start = self.impl_instance.result_processor(dialect, coltype)
        decrypt, convert = FLOOR_KEY.decrypt, decimal.Decimal

        def process(value: Any) -> Any:
            if start is not None:
                value = start(value)
            if value is None:
                return None
            return convert(decrypt(value[:12], value[12:], None).decode())

        return process


class PbpFloorString(TypeDecorator[str]):
    """The earlier floor: the same work through ``process_bind_param``/``_result_value``."""

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


class PbpFloorNumeric(PbpFloorString):
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        text = super().process_result_value(value, dialect)
        return None if text is None else decimal.Decimal(text)


class Base(DeclarativeBase):
    pass


def _utils_types() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sqlalchemy_utils import StringEncryptedType  # type: ignore[import-untyped]
        from sqlalchemy_utils.types.encrypted.encrypted_type import (  # type: ignore[import-untyped]
            AesGcmEngine,
        )

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
        PLAIN: model("bench_plain", String(100), Numeric(12, 2)),
        CLOSURE: model("bench_floor", ClosureFloorString, ClosureFloorNumeric),
        PBP: model("bench_floor_pbp", PbpFloorString, PbpFloorNumeric),
        OURS: model(
            "bench_enc",
            lambda: EncryptedString(keyring=RING),
            lambda: EncryptedNumeric(keyring=RING),
        ),
        SEARCH: model(
            "bench_enc_search",
            lambda: EncryptedString(keyring=RING),
            lambda: EncryptedNumeric(keyring=RING),
            search=True,
        ),
        UTILS: model("bench_utils", utils_string, utils_numeric),
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


def same_amount(loaded: Any, written: decimal.Decimal) -> bool:
    """sqlalchemy-utils' String column gives back the ``repr`` of the Decimal it was given."""
    if isinstance(loaded, str):
        return loaded in (str(written), repr(written))
    return bool(loaded == written)


def check_loaded(label: str, loaded: list[Any], data: list[dict[str, Any]]) -> None:
    """Every row came back as it went in (untimed)."""
    if len(loaded) != len(data):
        raise SystemExit(f"{label}: {len(loaded)} rows read back, {len(data)} written")
    for obj in loaded:
        row = data[obj.id - 1]
        same = (
            obj.name == row["name"]
            and obj.email == row["email"]
            and same_amount(obj.balance, row["balance"])
            and obj.age == row["age"]
        )
        if not same:
            raise SystemExit(f"{label}: row {obj.id} read back differs")


def insert_select_round(
    engine: Engine, models: dict[str, type[Any]], data: list[Any], times: dict[str, list[float]]
) -> None:
    """One round: every model in turn, on a freshly created table, insert then select."""
    for label, cls in models.items():
        cls.__table__.drop(engine, checkfirst=True)
        cls.__table__.create(engine)
        loaded: list[Any] = []

        def insert_rows(cls: Any = cls) -> None:
            with Session(engine) as session:
                session.execute(insert(cls), data)
                session.commit()

        def select_rows(cls: Any = cls, loaded: list[Any] = loaded) -> None:
            with Session(engine) as session:
                loaded.extend(session.scalars(select(cls)).all())

        times[f"{label} insert"].append(time_once(insert_rows))
        times[f"{label} select"].append(time_once(select_rows))
        check_loaded(label, loaded, data)


def lookup_round(
    engine: Engine, models: dict[str, type[Any]], wanted: list[int], times: dict[str, list[float]]
) -> None:
    """One round of indexed lookups: by plaintext value, then by search token."""
    plain, searchable = models[PLAIN], models[SEARCH]
    ways: dict[str, tuple[Any, Callable[[str], Any]]] = {
        "plaintext lookup": (plain, lambda v: plain.email == v),
        "token lookup": (searchable, lambda v: searchable.email.search == v),
    }
    for label, (cls, condition) in ways.items():

        def look(
            cls: Any = cls, condition: Callable[[str], Any] = condition, label: str = label
        ) -> None:
            with Session(engine) as session:
                for k in wanted:
                    found = session.scalars(select(cls.id).where(condition(f"user{k}@example.com")))
                    if found.one() != k:
                        raise SystemExit(f"{label}: user{k} not found")

        times[label].append(time_once(look))


def prepare_lookups(engine: Engine) -> None:
    with Session(engine) as session:
        session.connection().exec_driver_sql("CREATE INDEX ON bench_plain (email)")
        session.commit()
        session.connection().exec_driver_sql("ANALYZE")
        session.commit()


# (name, numerator, denominator, target): ratios of times (lower is faster), paired per round.
def ratio_specs(phase: str) -> list[tuple[str, str, str, Target | None]]:
    at_most_110 = Target(1.10, at_least=False)
    return [
        (f"{phase}: {OURS} / {CLOSURE}", OURS, CLOSURE, at_most_110),
        (f"{phase}: {SEARCH} / {CLOSURE}", SEARCH, CLOSURE, None),
        (f"{phase}: {OURS} / {PBP}", OURS, PBP, None),
        (f"{phase}: {CLOSURE} / {PLAIN}", CLOSURE, PLAIN, None),
        (f"{phase}: {PBP} / {PLAIN}", PBP, PLAIN, None),
        (f"{phase}: {UTILS} / {OURS} (speedup)", UTILS, OURS, Target(2.0, at_least=True)),
    ]


def ratios(times: dict[str, list[float]]) -> list[tuple[Ratio, Target | None]]:
    out: list[tuple[Ratio, Target | None]] = []
    for phase in ("insert", "select"):
        for name, top, bottom, target in ratio_specs(phase):
            out.append((paired(name, times[f"{top} {phase}"], times[f"{bottom} {phase}"]), target))
    lookup = paired("lookup: token / plaintext", times["token lookup"], times["plaintext lookup"])
    out.append((lookup, Target(1.3, at_least=False)))
    return out


def report(times: dict[str, list[float]], repeat: int) -> bool:
    width = max(map(len, times))
    print(f"\ntimes over {repeat} rounds (seconds)")
    for label, seconds in times.items():
        print(
            f"  {label:<{width}}  median {statistics.median(seconds):7.3f}  "
            f"min {min(seconds):7.3f}  max {max(seconds):7.3f}"
        )
    pairs = ratios(times)
    width = max(len(ratio.name) for ratio, _ in pairs)
    print("\nratios of times, paired within each round (lower is faster; verdict on the median)")
    for ratio, target in pairs:
        print(ratio_line(ratio, target, width=width))
    return all(target.passes(ratio) for ratio, target in pairs if target is not None)


def server_version(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.exec_driver_sql("SHOW server_version").scalar())


def run(engine: Engine, args: argparse.Namespace) -> bool:
    models = build_models()
    data = rows(args.rows)
    print(machine_line(machine("psycopg", "sqlalchemy-utils")))
    print(
        f"PostgreSQL {server_version(engine)} ({engine.dialect.driver}), {args.rows} rows, "
        f"ORM bulk insert and select of id + 2 strings + 1 numeric + 1 int, "
        f"{args.repeat} rounds, models in turn, fresh tables"
    )
    times: dict[str, list[float]] = {
        f"{label} {phase}": [] for phase in ("insert", "select") for label in models
    }
    for _ in range(args.repeat):
        insert_select_round(engine, models, data, times)
    prepare_lookups(engine)
    rng = random.Random(7)
    wanted = [rng.randrange(1, args.rows + 1) for _ in range(args.lookups)]
    times["plaintext lookup"], times["token lookup"] = [], []
    for _ in range(args.repeat):
        lookup_round(engine, models, wanted, times)
    print(f"lookups: {args.lookups} indexed lookups per round")
    return report(times, args.repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of every model")
    parser.add_argument("--url", help="an empty PostgreSQL database to use (not dropped)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.lookups < 1 or args.repeat < 1:
        parser.error("--rows, --lookups and --repeat must be at least 1")

    server = None
    url = args.url
    if url is None:
        server = find_postgres_server()
        url = create_database(server)
    engine = create_engine(url)
    try:
        passed = run(engine, args)
    finally:
        engine.dispose()
        if server is not None:
            drop_database(server, url)
            server.close()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
