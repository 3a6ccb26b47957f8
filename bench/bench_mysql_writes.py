"""MariaDB: the candidates for writing a backfill batch in one statement (issue 17, step 2).

Issue 17 asks for the batch to be written in one statement and the candidates
measured; the product uses the first (``encmigrate/migrate/mysql.py``). On a table
``bench_writes(id, a, b, c, a_encrypted, b_encrypted, c_encrypted)`` of ``--rows``
rows (the values of ``bench_migrate_mariadb.py``: an e-mail, a 65-character text,
an amount; the shadows are seeded random bytes of the envelope's size, 33 + the
plaintext's length: about 55, 98 and 40 bytes), each round, each contender in turn
(the order rotated by one each round):

* sets the shadows back to NULL (one UPDATE, committed, not timed),
* on a new PyMySQL connection at READ COMMITTED (as the product's engine), writes
  every row in keyset batches of ``--batch-size``: ``SELECT id ... WHERE id > %s
  ORDER BY id LIMIT n FOR UPDATE``, the write, COMMIT. The whole loop is timed
  (``loop``), and so is the write alone, summed over the batches (``write``: from
  the batch's rows in hand to the last statement of the write returning, so the
  client's encoding is in it; ``prep`` is that encoding alone),
* then, not timed, reads every row back ``ORDER BY id`` and compares a digest with
  what was written: a contender that writes a wrong value fails the run.

Contenders:

* ``values``: ``UPDATE t JOIN (WITH u (k0, v0, v1, v2) AS (VALUES (...), ...)
  SELECT * FROM u) AS u ON t.id = u.k0 SET ...``, PyMySQL formatting the values
  into the statement (the product's form);
* ``json_table``: ``UPDATE t JOIN JSON_TABLE(%s, '$[*]' COLUMNS (...)) AS u ON ...
  SET t.a_encrypted = FROM_BASE64(u.v0), ...``, one parameter, the ciphertexts
  base64 (``--json-encoding hex``: ``UNHEX``) in a JSON array of arrays;
* ``temp_table``: a ``CREATE TEMPORARY TABLE`` (``--temp-engine``: Aria by default,
  measured faster than InnoDB here; MEMORY cannot hold BLOBs on 10.11) once per
  connection, per batch emptied with DELETE (TRUNCATE would commit the batch's
  transaction), filled by ``executemany`` (one multi-row INSERT) and joined:
  ``UPDATE t JOIN u``;
* ``odku``: ``INSERT INTO t (id, shadows) VALUES (...), ... ON DUPLICATE KEY
  UPDATE a_encrypted = VALUES(a_encrypted), ...``; every batch checks from the
  affected-rows count (2 per updated row, 1 per inserted one) that nothing was
  inserted;
* ``executemany``: ``UPDATE t SET ... WHERE id = %s`` per row (the product's path
  when the one-statement write does not apply), on the first ``--executemany-rows``
  rows only: it is about five times slower; rows/s stays comparable.

Ratios are rows/s over ``values``' in the same round (higher is faster), median,
min and max over the rounds (bench/_report.py says why). Then checks on small
tables of their own, not timed: what ODKU does with a NOT NULL column that has no
default, which triggers it fires, what it does to AUTO_INCREMENT counters, whether
another session can delete a row the batch holds; whether TRUNCATE of a temporary
table ends the transaction; whether MEMORY takes a LONGBLOB.

Run: ``.venv/bin/python bench/bench_mysql_writes.py [--url mysql://root@127.0.0.1:3306/encmigrate_bench]
[--rows N] [--batch-size N] [--executemany-rows N] [--repeat N] [--temp-engine Aria|InnoDB]
[--json-encoding base64|hex] [--json]``. The database is created if missing; the
tables are dropped after.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pymysql

from _report import Ratio, machine, machine_line, paired, ratio_json, ratio_line
from bench_mysql_drivers import Server, _server

TABLE = "bench_writes"
TEMP = "bench_writes_u"
SHADOWS = ("a_encrypted", "b_encrypted", "c_encrypted")
CREATE = (
    f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, a TEXT, b TEXT, c DECIMAL(14,2), "
    "a_encrypted LONGBLOB, b_encrypted LONGBLOB, c_encrypted LONGBLOB) ENGINE=InnoDB"
)
FILL = f"""
INSERT INTO {TABLE} (id, a, b, c)
SELECT g, CONCAT('user', g, '@example.com'), CONCAT(MD5(g), ' ', MD5(g * 7)),
       ((g * 7919) % 2000000 - 1000000) / 100
FROM (SELECT CAST(seq AS SIGNED) AS g FROM seq_1_to_{{rows}}) AS s
"""
RESET = f"UPDATE {TABLE} SET {', '.join(f'{c} = NULL' for c in SHADOWS)}"
LOCKED_BATCH = f"SELECT id FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s FOR UPDATE"
READ_BACK = f"SELECT id, {', '.join(SHADOWS)} FROM {TABLE} ORDER BY id"
SET_FROM_U = ", ".join(f"t.{c} = u.v{i}" for i, c in enumerate(SHADOWS))
ENVELOPE_OVERHEAD = 5 + 12 + 16  # header, nonce, tag

Row = tuple[int, bytes, bytes, bytes]


@dataclass(slots=True)
class Writer:
    """One contender: ``write(cur, batch)`` writes the batch's shadows and returns the
    seconds it spent encoding before its first statement; ``open(cur)`` runs once per
    connection, counted as write time."""

    key: str
    title: str
    write: Callable[[Any, list[Row]], float]
    open: Callable[[Any], None] | None = None


@dataclass(slots=True)
class Figures:
    loop: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)
    prep: list[float] = field(default_factory=list)
    rows: int = 0


# -- the contenders --------------------------------------------------------------------------


def _flat(batch: list[Row]) -> list[Any]:
    return [value for row in batch for value in row]


def write_values(cur: Any, batch: list[Row]) -> float:
    start = time.perf_counter()
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(batch))
    sql = (
        f"UPDATE {TABLE} AS t JOIN (WITH u (k0, v0, v1, v2) AS (VALUES {rows}) "
        f"SELECT * FROM u) AS u ON t.id = u.k0 SET {SET_FROM_U}"
    )
    params = _flat(batch)
    prep = time.perf_counter() - start
    _expect(cur.execute(sql, params), len(batch), "values")
    return prep


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def json_writer(encoding: str) -> Callable[[Any, list[Row]], float]:
    """JSON has no bytes: the ciphertexts go as base64 (``FROM_BASE64``) or hex (``UNHEX``)."""
    encode: Callable[[bytes], str]
    if encoding == "base64":
        encode, decode = _base64, "FROM_BASE64"
    else:
        encode, decode = bytes.hex, "UNHEX"
    columns = ", ".join(
        ["k0 BIGINT PATH '$[0]'"]
        + [f"v{i} VARCHAR(8192) CHARACTER SET ascii PATH '$[{i + 1}]'" for i in range(len(SHADOWS))]
    )
    sets = ", ".join(f"t.{c} = {decode}(u.v{i})" for i, c in enumerate(SHADOWS))
    sql = (
        f"UPDATE {TABLE} AS t JOIN JSON_TABLE(%s, '$[*]' COLUMNS ({columns})) AS u "
        f"ON t.id = u.k0 SET {sets}"
    )

    def write(cur: Any, batch: list[Row]) -> float:
        start = time.perf_counter()
        document = json.dumps(
            [[k, encode(a), encode(b), encode(c)] for k, a, b, c in batch],
            separators=(",", ":"),
        )
        prep = time.perf_counter() - start
        _expect(cur.execute(sql, (document,)), len(batch), "json_table")
        return prep

    return write


def temp_table_writer(
    engine: str,
) -> tuple[Callable[[Any], None], Callable[[Any, list[Row]], float]]:
    """TRUNCATE of a temporary table commits the open transaction (and so would drop the
    batch's row locks: see the checks); the table is emptied with DELETE inside it."""
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {TEMP} (k0 BIGINT PRIMARY KEY, "
        f"{', '.join(f'v{i} LONGBLOB' for i in range(len(SHADOWS)))}) ENGINE={engine}"
    )
    insert = f"INSERT INTO {TEMP} VALUES ({', '.join(['%s'] * (1 + len(SHADOWS)))})"
    update = f"UPDATE {TABLE} AS t JOIN {TEMP} AS u ON t.id = u.k0 SET {SET_FROM_U}"

    def open_(cur: Any) -> None:
        cur.execute(create)

    def write(cur: Any, batch: list[Row]) -> float:
        cur.execute(f"DELETE FROM {TEMP}")
        cur.executemany(insert, batch)
        _expect(cur.execute(update), len(batch), "temp_table")
        return 0.0

    return open_, write


def write_odku(cur: Any, batch: list[Row]) -> float:
    start = time.perf_counter()
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(batch))
    sql = (
        f"INSERT INTO {TABLE} (id, {', '.join(SHADOWS)}) VALUES {rows} ON DUPLICATE KEY "
        f"UPDATE {', '.join(f'{c} = VALUES({c})' for c in SHADOWS)}"
    )
    params = _flat(batch)
    prep = time.perf_counter() - start
    affected = cur.execute(sql, params)
    # 2 per row updated, 1 per row inserted (PyMySQL does not set CLIENT_FOUND_ROWS).
    inserted = 2 * len(batch) - affected
    if inserted:
        raise AssertionError(f"odku inserted {inserted} rows in a batch of {len(batch)}")
    return prep


def write_executemany(cur: Any, batch: list[Row]) -> float:
    start = time.perf_counter()
    params = [(a, b, c, k) for k, a, b, c in batch]
    prep = time.perf_counter() - start
    sets = ", ".join(f"{c} = %s" for c in SHADOWS)
    _expect(
        cur.executemany(f"UPDATE {TABLE} SET {sets} WHERE id = %s", params),
        len(batch),
        "executemany",
    )
    return prep


def _expect(affected: int, rows: int, name: str) -> None:
    if affected != rows:
        raise AssertionError(f"{name}: {affected} rows changed in a batch of {rows}")


def writers(temp_engine: str, json_encoding: str) -> list[Writer]:
    open_temp, write_temp = temp_table_writer(temp_engine)
    return [
        Writer("values", "UPDATE JOIN (WITH ... VALUES) (product)", write_values),
        Writer(
            "json_table",
            f"UPDATE JOIN JSON_TABLE ({json_encoding})",
            json_writer(json_encoding),
        ),
        Writer(
            "temp_table",
            f"temporary table ({temp_engine}) + UPDATE JOIN",
            write_temp,
            open_temp,
        ),
        Writer("odku", "INSERT ... ON DUPLICATE KEY UPDATE", write_odku),
        Writer("executemany", "UPDATE ... WHERE id = %s per row", write_executemany),
    ]


# -- one contender's round -------------------------------------------------------------------


@contextmanager
def session(server: Server) -> Iterator[Any]:
    """A connection as the product's engine has it: READ COMMITTED, no autocommit."""
    conn = pymysql.connect(**server.kwargs(), autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        yield conn
    finally:
        conn.close()


def reset(server: Server) -> None:
    with session(server) as conn, conn.cursor() as cur:
        cur.execute(RESET)
        conn.commit()


def run_writer(
    server: Server, writer: Writer, shadows: list[Row], limit: int, batch_size: int
) -> tuple[float, float, float]:
    """(loop, write, prep) seconds of writing the first ``limit`` rows."""
    with session(server) as conn, conn.cursor() as cur:
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            write = prep = 0.0
            if writer.open is not None:
                writer.open(cur)
                write = time.perf_counter() - start
            last, done = 0, 0
            while done < limit:
                cur.execute(LOCKED_BATCH, (last, min(batch_size, limit - done)))
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    break
                batch = [shadows[i - 1] for i in ids]
                began = time.perf_counter()
                prep += writer.write(cur, batch)
                write += time.perf_counter() - began
                conn.commit()
                last, done = ids[-1], done + len(ids)
            loop = time.perf_counter() - start
        finally:
            gc.enable()
    if done != limit:
        raise AssertionError(f"{writer.key}: wrote {done} rows, expected {limit}")
    return loop, write, prep


def digest(rows: Iterator[Sequence[Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(int(row[0]).to_bytes(8, "big"))
        for value in row[1:]:
            h.update(b"\x00" if value is None else b"\x01" + len(value).to_bytes(4, "big") + value)
    return h.hexdigest()


def expected_digest(shadows: list[Row], limit: int) -> str:
    unwritten = (None,) * len(SHADOWS)
    return digest(iter(row if row[0] <= limit else (row[0], *unwritten) for row in shadows))


def stored_digest(server: Server) -> str:
    conn = pymysql.connect(**server.kwargs(), cursorclass=pymysql.cursors.SSCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(READ_BACK)
            return digest(iter(cur))
    finally:
        conn.close()


# -- the table and the shadow values ---------------------------------------------------------


def prepare(server: Server, rows: int) -> None:
    conn = pymysql.connect(**{**server.kwargs(), "database": None}, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{server.database}`")
            cur.execute(f"USE `{server.database}`")
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(CREATE)
            cur.execute(FILL.format(rows=rows))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            cur.fetchall()
    finally:
        conn.close()


def make_shadows(server: Server, seed: int) -> list[Row]:
    """Random bytes of each plaintext's envelope size, one row per id (ids are 1..N)."""
    rng = random.Random(seed)
    conn = pymysql.connect(**server.kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, a, b, c FROM {TABLE} ORDER BY id")
            plain = cur.fetchall()
    finally:
        conn.close()
    shadows: list[Row] = []
    for index, (key, *values) in enumerate(plain, start=1):
        if key != index:
            raise AssertionError(f"ids are not 1..N: {key} at {index}")
        a, b, c = (rng.randbytes(ENVELOPE_OVERHEAD + len(str(v))) for v in values)
        shadows.append((key, a, b, c))
    return shadows


def clean(server: Server) -> None:
    conn = pymysql.connect(**server.kwargs(), autocommit=True)
    try:
        with conn.cursor() as cur:
            for name in (TABLE, *CHECK_TABLES):
                cur.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        conn.close()


def server_line(server: Server) -> dict[str, Any]:
    conn = pymysql.connect(**server.kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT VERSION(), @@log_bin, @@binlog_format, @@innodb_buffer_pool_size, "
                "@@innodb_flush_log_at_trx_commit, @@sql_mode, @@max_allowed_packet"
            )
            version, log_bin, binlog_format, pool, flush, sql_mode, packet = cur.fetchone()
    finally:
        conn.close()
    return {
        "version": version,
        "log_bin": bool(log_bin),
        "binlog_format": binlog_format,
        "innodb_buffer_pool_mib": int(pool) // 2**20,
        "innodb_flush_log_at_trx_commit": int(flush),
        "sql_mode": sql_mode,
        "max_allowed_packet_mib": int(packet) // 2**20,
    }


# -- the checks on small tables --------------------------------------------------------------

CHECK_TABLES = ("bench_writes_nn", "bench_writes_tr", "bench_writes_ai", "bench_writes_ai2")


def _error(cur: Any, sql: str) -> str:
    """``ok`` or the error number and message the statement got."""
    try:
        cur.execute(sql)
    except pymysql.err.MySQLError as exc:
        return f"error {exc.args[0]}: {exc.args[1]}"
    return "ok"


def _auto_increment(cur: Any, table: str) -> int:
    cur.execute(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        (table,),
    )
    return int(cur.fetchone()[0])


def checks(server: Server) -> dict[str, str]:
    """What makes a candidate usable or not, found on the server rather than assumed."""
    found: dict[str, str] = {}
    conn = pymysql.connect(**server.kwargs(), autocommit=True)
    other = pymysql.connect(**server.kwargs(), autocommit=False)
    try:
        cur, ocur = conn.cursor(), other.cursor()
        for name in CHECK_TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        odku = " ON DUPLICATE KEY UPDATE x = VALUES(x)"

        cur.execute(
            "CREATE TABLE bench_writes_nn (id BIGINT PRIMARY KEY, name TEXT NOT NULL, x LONGBLOB)"
        )
        cur.execute("INSERT INTO bench_writes_nn VALUES (1, 'a', NULL), (2, 'b', NULL)")
        found["odku, NOT NULL column without default, both rows exist (strict mode)"] = _error(
            cur, "INSERT INTO bench_writes_nn (id, x) VALUES (1, 'x'), (2, 'y')" + odku
        )
        cur.execute("ALTER TABLE bench_writes_nn ALTER COLUMN name SET DEFAULT ''")
        found["odku, the same column given a default"] = _error(
            cur, "INSERT INTO bench_writes_nn (id, x) VALUES (1, 'x'), (2, 'y')" + odku
        )

        cur.execute("CREATE TABLE bench_writes_tr (id BIGINT PRIMARY KEY, x LONGBLOB)")
        cur.execute("INSERT INTO bench_writes_tr VALUES (1, NULL), (2, NULL), (3, NULL)")
        events = ("BEFORE INSERT", "AFTER INSERT", "BEFORE UPDATE", "AFTER UPDATE")
        for number, event in enumerate(events):
            cur.execute(
                f"CREATE TRIGGER bench_writes_tr_{number} {event} ON bench_writes_tr "
                f"FOR EACH ROW SET @bench_writes_{number} = @bench_writes_{number} + 1"
            )
        cur.execute("SET " + ", ".join(f"@bench_writes_{n} = 0" for n in range(len(events))))
        affected = cur.execute(
            "INSERT INTO bench_writes_tr (id, x) VALUES (1, 'a'), (2, 'b'), (3, 'c')" + odku
        )
        cur.execute("SELECT " + ", ".join(f"@bench_writes_{n}" for n in range(len(events))))
        fired = cur.fetchone()
        found["odku of 3 existing rows: triggers fired"] = (
            ", ".join(f"{e} {n}" for e, n in zip(events, fired, strict=True))
            + f"; affected rows {affected}"
        )

        cur.execute(
            "SELECT @@innodb_autoinc_lock_mode",
        )
        lock_mode = cur.fetchone()[0]
        cur.execute(
            "CREATE TABLE bench_writes_ai (id BIGINT AUTO_INCREMENT PRIMARY KEY, x LONGBLOB)"
        )
        cur.execute("INSERT INTO bench_writes_ai (x) VALUES (NULL), (NULL), (NULL)")
        before = _auto_increment(cur, "bench_writes_ai")
        cur.execute(
            "INSERT INTO bench_writes_ai (id, x) VALUES (1, 'a'), (2, 'b'), (3, 'c')" + odku
        )
        found["odku of 3 rows, AUTO_INCREMENT primary key given"] = (
            f"counter {before} -> {_auto_increment(cur, 'bench_writes_ai')} "
            f"(innodb_autoinc_lock_mode {lock_mode})"
        )
        cur.execute(
            "CREATE TABLE bench_writes_ai2 (id BIGINT PRIMARY KEY, "
            "seq BIGINT AUTO_INCREMENT UNIQUE, x LONGBLOB)"
        )
        cur.execute("INSERT INTO bench_writes_ai2 (id) VALUES (1), (2), (3)")
        before = _auto_increment(cur, "bench_writes_ai2")
        cur.execute(
            "INSERT INTO bench_writes_ai2 (id, x) VALUES (1, 'a'), (2, 'b'), (3, 'c')" + odku
        )
        found["odku of 3 rows, AUTO_INCREMENT on another column"] = (
            f"counter {before} -> {_auto_increment(cur, 'bench_writes_ai2')}"
        )

        # Can a row vanish between the batch's locked read and its write?
        ocur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        ocur.execute("SELECT id FROM bench_writes_tr WHERE id > 0 ORDER BY id LIMIT 3 FOR UPDATE")
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        found["DELETE of a row the batch holds FOR UPDATE, from another session"] = _error(
            cur, "DELETE FROM bench_writes_tr WHERE id = 2"
        )
        other.rollback()
        affected = cur.execute("INSERT INTO bench_writes_tr (id, x) VALUES (4, 'd')" + odku)
        found["odku of an id that does not exist"] = f"affected rows {affected}: a row inserted"

        # A temporary table emptied with TRUNCATE inside the batch's transaction.
        ocur.execute(
            f"CREATE TEMPORARY TABLE {TEMP}_check (k0 BIGINT PRIMARY KEY, v0 LONGBLOB) "
            "ENGINE=InnoDB"
        )
        ocur.execute("SELECT id FROM bench_writes_tr WHERE id = 1 FOR UPDATE")
        ocur.execute(f"TRUNCATE TABLE {TEMP}_check")
        ocur.execute("SELECT @@in_transaction")
        open_after = ocur.fetchone()[0]
        lock = _error(cur, "DELETE FROM bench_writes_tr WHERE id = 1")
        found["TRUNCATE of a temporary table inside the batch's transaction"] = (
            f"@@in_transaction {open_after} after it; another session's DELETE of the "
            f"locked row: {lock}"
        )
        other.rollback()
        found["CREATE TEMPORARY TABLE ... LONGBLOB ENGINE=MEMORY"] = _error(
            ocur,
            f"CREATE TEMPORARY TABLE {TEMP}_memory (k0 BIGINT PRIMARY KEY, v0 LONGBLOB) "
            "ENGINE=MEMORY",
        )
    finally:
        other.close()
        conn.close()
    return found


# -- the run ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/encmigrate_bench")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--executemany-rows",
        type=int,
        default=20_000,
        help="rows the per-row executemany baseline writes (the first ones)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--temp-engine", choices=("Aria", "InnoDB"), default="Aria")
    parser.add_argument("--json-encoding", choices=("base64", "hex"), default="base64")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.rows, args.batch_size, args.executemany_rows, args.repeat) < 1:
        parser.error("--rows, --batch-size, --executemany-rows and --repeat must be at least 1")
    args.executemany_rows = min(args.executemany_rows, args.rows)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = _server(args.url)
    env = machine("pymysql")
    started = time.monotonic()
    prepare(server, args.rows)
    try:
        info = server_line(server)
        shadows = make_shadows(server, args.seed)
        contenders = writers(args.temp_engine, args.json_encoding)
        limits = {
            w.key: args.executemany_rows if w.key == "executemany" else args.rows
            for w in contenders
        }
        expected = {limit: expected_digest(shadows, limit) for limit in set(limits.values())}
        figures = {w.key: Figures(rows=limits[w.key]) for w in contenders}
        for number in range(args.repeat):
            shift = number % len(contenders)
            for writer in contenders[shift:] + contenders[:shift]:
                reset(server)
                loop, write, prep = run_writer(
                    server, writer, shadows, limits[writer.key], args.batch_size
                )
                if stored_digest(server) != expected[limits[writer.key]]:
                    raise AssertionError(
                        f"{writer.key}: the stored shadows differ from the written"
                    )
                figures[writer.key].loop.append(loop)
                figures[writer.key].write.append(write)
                figures[writer.key].prep.append(prep)
            if not args.json:
                print(
                    f"round {number + 1} of {args.repeat} done, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
        found = checks(server)
    finally:
        clean(server)
    total = time.monotonic() - started
    ratios = _ratios(figures)
    if args.json:
        document = {
            "machine": env,
            "server": info,
            "rows": args.rows,
            "batch_size": args.batch_size,
            "executemany_rows": args.executemany_rows,
            "rounds": args.repeat,
            "temp_engine": args.temp_engine,
            "json_encoding": args.json_encoding,
            "rows_per_second": {
                key: {
                    "rows": f.rows,
                    "loop": _spread([f.rows / s for s in f.loop]),
                    "write": _spread([f.rows / s for s in f.write]),
                    "prep_seconds_median": round(statistics.median(f.prep), 4),
                }
                for key, f in figures.items()
            },
            "ratios": [ratio_json(r) for r in ratios],
            "checks": found,
            "total_seconds": round(total),
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(machine_line(env))
    print(
        f"MariaDB {info['version']}: binlog {'on' if info['log_bin'] else 'off'} "
        f"(binlog_format {info['binlog_format']}), "
        f"buffer pool {info['innodb_buffer_pool_mib']} MiB, "
        f"innodb_flush_log_at_trx_commit {info['innodb_flush_log_at_trx_commit']}, "
        f"sql_mode {info['sql_mode']}"
    )
    print(
        f"{args.rows:,} rows, batches of {args.batch_size:,} read FOR UPDATE at READ COMMITTED, "
        f"{args.repeat} rounds (order rotated); executemany on the first "
        f"{args.executemany_rows:,} rows; total {total:.0f} s"
    )
    print("rows/s, median (min-max) over the rounds; prep = client-side encoding, median s")
    titles = {w.key: w.title for w in contenders}
    for key, f in figures.items():
        loop = [f.rows / s for s in f.loop]
        write = [f.rows / s for s in f.write]
        print(
            f"  {key:<12} loop {statistics.median(loop):8,.0f} "
            f"({min(loop):,.0f}-{max(loop):,.0f})  "
            f"write {statistics.median(write):9,.0f} ({min(write):,.0f}-{max(write):,.0f})  "
            f"prep {statistics.median(f.prep):6.3f} s  {titles[key]}"
        )
    print("ratios of rows/s to values', paired within each round (higher is faster)")
    for ratio in ratios:
        print(ratio_line(ratio, width=28))
    print("checks (small tables of their own)")
    for what, result in found.items():
        print(f"  {what}: {result}")
    return 0


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values)),
        "min": round(min(values)),
        "max": round(max(values)),
    }


def _ratios(figures: dict[str, Figures]) -> list[Ratio]:
    base = figures["values"]
    ratios: list[Ratio] = []
    for key, f in figures.items():
        if key == "values":
            continue
        for part in ("loop", "write"):
            mine = [f.rows / s for s in getattr(f, part)]
            theirs = [base.rows / s for s in getattr(base, part)]
            ratios.append(paired(f"{key} {part} / values", mine, theirs))
    return ratios


if __name__ == "__main__":
    raise SystemExit(main())
