"""MariaDB/MySQL drivers on encmigrate's kind of work: binary columns written and read in bulk.

Issue 17 asks for the driver to be chosen with measurements. Each contender, in
turn within a round, on the same seeded values:

* empties ``bench_drivers`` (id, three ``VARBINARY(96)`` columns, ciphertext-sized values),
* inserts ``--rows`` rows with one ``executemany`` and commits (``insert``),
* selects them all back and fetches them (``select``).

Contenders: PyMySQL (pure Python), the MariaDB Connector/Python (when importable),
mysqlclient (when importable: it builds only against the MariaDB/MySQL client
headers, ``mariadb_config``/``mysql_config``), and for asyncio aiomysql (PyMySQL
underneath) and asyncmy (Cython). Every ratio is the contender's time over
PyMySQL's in the same round (lower is faster), median/min/max over the rounds
(bench/_report.py says why).

Run: ``.venv/bin/python bench/bench_mysql_drivers.py [--url mysql://root@127.0.0.1:3306/encmigrate_bench]
[--rows N] [--repeat N] [--json]``. The database is created if missing; the table is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from _report import Ratio, machine, machine_line, paired, ratio_json, ratio_line, time_once

TABLE = "bench_drivers"
CREATE = (
    f"CREATE TABLE {TABLE} (id INT PRIMARY KEY AUTO_INCREMENT, "
    "a VARBINARY(96), b VARBINARY(96), c VARBINARY(96)) ENGINE=InnoDB"
)
SELECT = f"SELECT id, a, b, c FROM {TABLE}"
Rows = list[tuple[bytes, bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    database: str

    def kwargs(self, *, db_key: str = "database", mysqldb: bool = False) -> dict[str, Any]:
        """Connection arguments; mysqlclient spells the password ``passwd``."""
        secret = "passwd" if mysqldb else "password"
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            secret: self.password,
            db_key: self.database,
        }


@dataclass(frozen=True, slots=True)
class Contender:
    """One driver: ``run(rows)`` returns the (insert, select) seconds of one round."""

    name: str
    run: Callable[[Rows], tuple[float, float]]


def _placeholder_insert(mark: str) -> str:
    return f"INSERT INTO {TABLE} (a, b, c) VALUES ({mark}, {mark}, {mark})"


def _sync_round(connect: Callable[[], Any], mark: str, rows: Rows) -> tuple[float, float]:
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(f"TRUNCATE TABLE {TABLE}")
        conn.commit()

        def insert() -> None:
            cur.executemany(_placeholder_insert(mark), rows)
            conn.commit()

        def select() -> int:
            cur.execute(SELECT)
            got = cur.fetchall()
            conn.commit()
            return len(got)

        inserted = time_once(insert)
        selected = time_once(select)
        cur.close()
        return inserted, selected
    finally:
        conn.close()


async def _async_round(connect: Callable[[], Any], rows: Rows) -> tuple[float, float]:
    import time

    conn = await connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"TRUNCATE TABLE {TABLE}")
            await conn.commit()
            start = time.perf_counter()
            await cur.executemany(_placeholder_insert("%s"), rows)
            await conn.commit()
            inserted = time.perf_counter() - start
            start = time.perf_counter()
            await cur.execute(SELECT)
            got = await cur.fetchall()
            await conn.commit()
            selected = time.perf_counter() - start
            assert len(got) == len(rows)
        return inserted, selected
    finally:
        closing = conn.close()
        if asyncio.iscoroutine(closing):
            await closing


def _contenders(server: Server) -> tuple[list[Contender], list[str]]:
    found: list[Contender] = []
    absent: list[str] = []

    def optional(module: str) -> Any:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            absent.append(f"{module}: {exc}")
            return None

    pymysql = importlib.import_module("pymysql")
    found.append(
        Contender(
            "PyMySQL",
            lambda rows: _sync_round(lambda: pymysql.connect(**server.kwargs()), "%s", rows),
        )
    )
    mariadb = optional("mariadb")
    if mariadb is not None:
        found.append(
            Contender(
                "MariaDB Connector/Python",
                lambda rows: _sync_round(lambda: mariadb.connect(**server.kwargs()), "?", rows),
            )
        )
    mysqldb = optional("MySQLdb")
    if mysqldb is not None:
        found.append(
            Contender(
                "mysqlclient",
                lambda rows: _sync_round(
                    lambda: mysqldb.connect(**server.kwargs(db_key="db", mysqldb=True)),
                    "%s",
                    rows,
                ),
            )
        )
    aiomysql = optional("aiomysql")
    if aiomysql is not None:
        found.append(
            Contender(
                "aiomysql (async)",
                lambda rows: asyncio.run(
                    _async_round(lambda: aiomysql.connect(**server.kwargs(db_key="db")), rows)
                ),
            )
        )
    asyncmy = optional("asyncmy")
    if asyncmy is not None:
        found.append(
            Contender(
                "asyncmy (async)",
                lambda rows: asyncio.run(
                    _async_round(lambda: asyncmy.connect(**server.kwargs()), rows)
                ),
            )
        )
    return found, absent


def _working(contenders: list[Contender], absent: list[str]) -> list[Contender]:
    """The contenders that write and read 10 rows without an error; the rest noted in ``absent``."""
    kept: list[Contender] = []
    for contender in contenders:
        try:
            contender.run(_values(10))
        except Exception as exc:  # a driver that fails here is reported, not measured
            absent.append(f"{contender.name}: fails: {type(exc).__name__}: {exc}")
        else:
            kept.append(contender)
    return kept


def _server(url: str) -> Server:
    parts = urlsplit(url)
    return Server(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or "encmigrate_bench",
    )


def _prepare(server: Server) -> None:
    import pymysql

    conn = pymysql.connect(**{**server.kwargs(), "database": None})
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{server.database}`")
            cur.execute(f"USE `{server.database}`")
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(CREATE)
        conn.commit()
    finally:
        conn.close()


def _clean(server: Server) -> None:
    import pymysql

    conn = pymysql.connect(**server.kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    finally:
        conn.close()


def _values(count: int) -> Rows:
    rng = random.Random(17)
    # Ciphertext-sized: a 28-byte header and tag plus a 32-byte value.
    return [tuple(rng.randbytes(60) for _ in range(3)) for _ in range(count)]  # type: ignore[misc]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/encmigrate_bench")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = _server(args.url)
    env = machine("pymysql", "mariadb", "mysqlclient", "aiomysql", "asyncmy")
    _prepare(server)
    contenders, absent = _contenders(server)
    contenders = _working(contenders, absent)
    rows = _values(args.rows)
    figures: dict[str, list[tuple[float, float]]] = {c.name: [] for c in contenders}
    try:
        for _ in range(args.repeat):
            for contender in contenders:
                figures[contender.name].append(contender.run(rows))
    finally:
        _clean(server)
    base = figures["PyMySQL"]
    ratios: list[Ratio] = []
    for name, rounds in figures.items():
        ratios.append(
            paired(f"{name} insert / PyMySQL", [r[0] for r in rounds], [b[0] for b in base])
        )
        ratios.append(
            paired(f"{name} select / PyMySQL", [r[1] for r in rounds], [b[1] for b in base])
        )
    if args.json:
        document = {
            "machine": env,
            "rows": args.rows,
            "rounds": args.repeat,
            "absent": absent,
            "median_seconds": {
                name: {
                    "insert": round(statistics.median(r[0] for r in rounds), 4),
                    "select": round(statistics.median(r[1] for r in rounds), 4),
                }
                for name, rounds in figures.items()
            },
            "ratios": [ratio_json(r) for r in ratios],
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(machine_line(env))
    print(f"{args.rows:,} rows x 3 VARBINARY columns, {args.repeat} rounds; time / PyMySQL's")
    for name, rounds in figures.items():
        insert = statistics.median(r[0] for r in rounds)
        select = statistics.median(r[1] for r in rounds)
        print(
            f"  {name:<28} insert {insert * 1000:8.1f} ms ({args.rows / insert:9,.0f} rows/s)  "
            f"select {select * 1000:8.1f} ms ({args.rows / select:9,.0f} rows/s)"
        )
    for ratio in ratios:
        print(ratio_line(ratio, width=44))
    for line in absent:
        print(f"  not measured: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
