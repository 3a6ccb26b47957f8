"""Backfill throughput of ``migrate_data`` on MariaDB vs the server alone, hand-written code
and a naive ORM loop, each on a fresh copy of the table.

The MariaDB counterpart of ``bench_migrate.py`` (PostgreSQL), whose child-process
machinery it imports (RSS sampler, timer, progress callback, verify, the naive loop's
bytes column) rather than copies. One run, in a database ``encmigrate_test_<hex>`` it
creates on the server the test fixtures find (``ENCMIGRATE_TEST_MARIADB_URL``, else
127.0.0.1:3306 as root) and drops at the end, even on Ctrl-C or SIGTERM.

A template ``bench_template(id bigint primary key, a text, b text, c decimal(14,2))`` of
``--rows`` rows (an e-mail, a ~65-character text, an amount; planned as string, string,
numeric) is built once. Before every contender of every round a fresh copy is made
(``CREATE TABLE bench_rows LIKE bench_template``, ``INSERT ... SELECT`` in slices of a
million rows), then what the contender's user would have run first (for everything that
writes the shadows: encmigrate's own step 1, the ``add-columns`` revision applied through
Alembic, so the LONGBLOB shadows, the tracking tables and the shadow trigger are the
product's), then ``ANALYZE TABLE`` and ``FLUSH TABLES bench_rows FOR EXPORT`` (MariaDB has
no ``CHECKPOINT``; this writes the copy's dirty pages out); only the contender is timed. Contenders:

* floor: the server alone, ``UPDATE bench_rows SET a2 = a, b2 = b, c2 = c`` into plain
  copy columns of the same types, no crypto, no trigger, one statement, committed;
* H1 / H2: the plain client code a user could write by hand, PyMySQL on 1 connection
  (H1) or in 2 processes each over half of the key range (H2), at READ COMMITTED (as our
  engine runs): keyset batches by ``id`` read ``FOR UPDATE``, AES-GCM of each value
  (``AESGCM``, ``os.urandom(12)`` nonce per value, nonce + ciphertext stored), one
  ``UPDATE ... JOIN (WITH u AS (VALUES ...))`` per batch, commit per batch; the time of
  each phase (read, seal, write, commit) is summed, to show where the time goes;
* b1 / b2: ``migrate_data`` with 1 and 2 workers, the options the CLI passes; the
  workers the report says ran are printed (MariaDB may run one whatever was asked);
* naive: an ORM loop with sqlalchemy-utils ``StringEncryptedType`` / ``AesGcmEngine``,
  committing every 1,000 rows, on the first ``--naive-rows`` rows (it is slow).

Memory stays flat with ``--rows``: the fill and the copies run on the server in slices,
the clients work in keyset batches, the naive loop stops at ``--naive-rows``.

    python bench/bench_migrate_mariadb.py [--rows 1000000] [--naive-rows 100000]
        [--repeat 3] [--batch-size 1000] [--only floor,h1,h2,b1,b2,naive] [--no-verify]
        [--json]

Targets (the MariaDB issue, medians of ratios paired within each round): b2 (2 workers)
>= 0.40x the floor and >= 10x the naive loop, peak RSS of b1 and b2 <= 150 MB. Exit
status 1 if a target misses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _report import Ratio, Target, machine, machine_line, paired, ratio_json, ratio_line
from bench_migrate import (
    COLUMNS,
    PLAN,
    RSS_LIMIT_MB,
    TABLE,
    TEMPLATE,
    FirstAndLast,
    _peak,
    _plan_and_keyring,
    _vm_hwm,
    describe,
    run_child,
    run_naive,  # the same ORM loop: SQLAlchemy and sqlalchemy-utils are dialect-neutral
    run_verify,
    timed,
)

SLICE = 1_000_000  # rows per INSERT ... SELECT of the fill and the copies


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    title: str
    setup: str  # "copy": plain copy columns a2, b2, c2; "step1": encmigrate's add-columns


CONTENDERS = (
    Contender("floor", "floor: UPDATE SET a2 = a, b2 = b, c2 = c (server alone)", "copy"),
    Contender("h1", "H1: hand-written PyMySQL + AESGCM, 1 connection", "step1"),
    Contender("h2", "H2: hand-written PyMySQL + AESGCM, 2 processes", "step1"),
    Contender("b1", "b1: migrate_data, 1 worker", "step1"),
    Contender("b2", "b2: migrate_data, 2 workers", "step1"),
    Contender("naive", "naive ORM loop, sqlalchemy-utils", "step1"),
)
KEYS = tuple(c.key for c in CONTENDERS)

FILL = f"""
INSERT INTO {TEMPLATE} (id, a, b, c)
SELECT g,
       CONCAT('user', g, '@example.com'),
       CONCAT(MD5(g), ' ', MD5(g * 7)),
       ((g * 7919) % 2000000 - 1000000) / 100
FROM (SELECT CAST(seq AS SIGNED) AS g FROM seq_{{low}}_to_{{high}}) AS s
"""
FLOOR = f"UPDATE {TABLE} SET a2 = a, b2 = b, c2 = c"
HAND_SELECT = (
    f"SELECT id, a, b, c FROM {TABLE} WHERE id > %s AND id <= %s ORDER BY id LIMIT %s FOR UPDATE"
)
HAND_UPDATE = (
    f"UPDATE {TABLE} AS t JOIN (WITH u (id, a, b, c) AS (VALUES {{rows}}) SELECT * FROM u) "
    "AS u ON t.id = u.id SET t.a_encrypted = u.a, t.b_encrypted = u.b, t.c_encrypted = u.c"
)
PHASES = ("read", "seal", "write", "commit")

# (name, top, bottom, target): ratios of rows/s, paired within each round.
RATIOS: tuple[tuple[str, str, str, Target | None], ...] = (
    ("b1 / floor", "b1", "floor", None),
    ("b2 / floor", "b2", "floor", Target(0.40, at_least=True)),
    ("b1 / H1 (hand-written, 1 connection)", "b1", "h1", None),
    ("b2 / H2 (hand-written, 2 processes)", "b2", "h2", None),
    ("b1 / naive", "b1", "naive", None),
    ("b2 / naive", "b2", "naive", Target(10.0, at_least=True)),
    ("b2 / b1", "b2", "b1", None),
    ("H2 / H1", "h2", "h1", None),
    ("H1 / floor", "h1", "floor", None),
    ("H2 / floor", "h2", "floor", None),
    ("b1 steady / floor (start-up excluded)", "b1 steady", "floor", None),
    ("b2 steady / floor (start-up excluded)", "b2 steady", "floor", None),
)


# -- the parent: database, fresh copies, one subprocess per contender, figures -------------


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill from a job runner cleans up like Ctrl-C
    from encmigrate.testdb import create_database, drop_database, find_mariadb_server

    server = find_mariadb_server()
    url = create_database(server)
    running: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_migrate_mariadb_") as workdir:
            return run(args, url, Path(workdir), running)
    except KeyboardInterrupt:
        print("\ninterrupted: dropping the benchmark database", file=sys.stderr)
        return 130
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        drop_database(server, url)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size")
    parser.add_argument(
        "--naive-rows", type=int, default=100_000, help="rows the naive ORM loop does"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--only", default=",".join(KEYS), help=f"subset of {','.join(KEYS)}")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all contenders")
    parser.add_argument("--no-verify", action="store_true", help="skip the verify after b")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(KEYS)
    if unknown:
        parser.error(f"--only: unknown contender(s) {', '.join(sorted(unknown))}")
    if min(args.rows, args.naive_rows, args.batch_size, args.repeat) < 1:
        parser.error("--rows, --naive-rows, --batch-size and --repeat must be at least 1")
    return args


def run(
    args: argparse.Namespace, url: str, workdir: Path, running: list[subprocess.Popen[str]]
) -> int:
    wanted = [c for c in CONTENDERS if c.key in args.only.split(",")]
    env = machine("pymysql", "sqlalchemy-utils", "alembic", "encmigrate")
    print(machine_line(env))
    server = print_server(url)
    started = time.monotonic()
    build(url, args.rows, workdir)
    print(f"template: {args.rows:,} rows built in {time.monotonic() - started:.1f} s\n")
    verify_after = next(
        (k for k in ("b2", "b1") if k in {c.key for c in wanted} and not args.no_verify), None
    )
    rounds: list[dict[str, dict[str, Any]]] = []
    extra: dict[str, Any] = {}
    for number in range(1, args.repeat + 1):
        print(f"round {number} of {args.repeat}")
        rounds.append({})
        for item in wanted:
            settled = prepare(url, workdir, item.setup, args.rows)
            title = item.title + (
                f", first {args.naive_rows:,} rows" if item.key == "naive" else ""
            )
            print(f"  {title} ... (load average {os.getloadavg()[0]:.1f}; {settled})", flush=True)
            result = contender(item.key, args, url, workdir, running)
            print("     " + describe_mariadb(result), flush=True)
            rounds[-1][item.key] = result
            if item.key == verify_after and number == 1:
                check = contender("verify", args, url, workdir, running)
                print(
                    f"     verify: {check['rows']:,} rows, every column matches, "
                    f"{check['seconds']:.1f} s",
                    flush=True,
                )
                extra["verify"] = check
            drop_copy(url)
    print()
    ratios = summarize(rounds, args)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        document = {
            "machine": env,
            "server": server,
            "rows": args.rows,
            "batch_size": args.batch_size,
            "rounds": rounds,
            "ratios": [ratio_json(r, t) for r, t in ratios],
            **extra,
        }
        print(json.dumps(document, indent=2))
    return 0 if all(t.passes(r) for r, t in ratios if t is not None) and _rss_ok(rounds) else 1


@contextmanager
def _admin(url: str, *, database: bool = True) -> Iterator[Any]:
    """A PyMySQL connection in autocommit (DDL commits by itself on MariaDB anyway)."""
    import pymysql

    conn = pymysql.connect(**connect_kwargs(url, database=database), autocommit=True)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def connect_kwargs(url: str, *, database: bool = True) -> dict[str, Any]:
    """The SQLAlchemy URL as PyMySQL's connection arguments (utf8mb4, as encmigrate uses)."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username or "root",
        "password": parsed.password or "",
        "charset": "utf8mb4",
    }
    if database:
        kwargs["database"] = parsed.database
    return kwargs


def print_server(url: str) -> dict[str, Any]:
    """The CPU model and the server settings that move the figures."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    names = (
        "version",
        "innodb_buffer_pool_size",
        "innodb_flush_log_at_trx_commit",
        "innodb_doublewrite",
        "innodb_log_file_size",
        "log_bin",
        "max_allowed_packet",
    )
    with _admin(url) as cursor:
        settings = {}
        for name in names:
            cursor.execute(f"SELECT @@GLOBAL.{name}")
            settings[name] = str(cursor.fetchone()[0])
    print(f"CPU: {cpu}; server and client share the cores")
    print("MariaDB on 127.0.0.1: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return {"cpu": cpu, **settings}


def build(url: str, rows: int, workdir: Path) -> None:
    """The template table, the plan, a keyring and an Alembic project for step 1."""
    from encmigrate.keys.keyring import Keyring
    from encmigrate.scaffold import init

    with _admin(url) as cursor:
        cursor.execute(
            f"CREATE TABLE {TEMPLATE} (id bigint NOT NULL PRIMARY KEY, a text, b text, "
            "c decimal(14, 2)) ENGINE=InnoDB"
        )
        for low in range(1, rows + 1, SLICE):
            cursor.execute(FILL.format(low=low, high=min(low + SLICE - 1, rows)))
        cursor.execute(f"ANALYZE TABLE {TEMPLATE}")
        cursor.fetchall()
    entries = "".join(
        f'\n[[columns]]\ntable = "{TABLE}"\ncolumn = "{name}"\ntype = "{kind}"\n'
        for name, kind in COLUMNS
    )
    (workdir / "encmigrate.toml").write_text(PLAN.format(url=url, columns=entries))
    (workdir / "keyring.json").write_text(Keyring.generate().to_json())
    init(workdir)  # alembic.ini and alembic/ beside the plan, which it keeps


def prepare(url: str, workdir: Path, setup: str, rows: int) -> str:
    """A fresh copy of the template, as a user's first run sees its table, then step 1;
    returns what the flush of the copy took."""
    with _admin(url) as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} LIKE {TEMPLATE}")
        for low in range(0, rows, SLICE):
            cursor.execute(
                f"INSERT INTO {TABLE} SELECT * FROM {TEMPLATE} WHERE id > %s AND id <= %s",
                (low, low + SLICE),
            )
        if setup == "copy":
            cursor.execute(
                f"ALTER TABLE {TABLE} ADD COLUMN a2 text, ADD COLUMN b2 text, "
                "ADD COLUMN c2 decimal(14, 2)"
            )
    if setup == "step1":
        step_one(workdir)
    with _admin(url) as cursor:
        cursor.execute(f"ANALYZE TABLE {TABLE}")
        cursor.fetchall()
        return settle(cursor)


def settle(cursor: Any) -> str:
    """Write the copy's dirty pages out, so a contender does not pay for the copy's writes:
    MariaDB has no CHECKPOINT, but ``FLUSH TABLES t FOR EXPORT`` flushes one InnoDB table
    to disk (waiting for the page cleaner does not: it flushes lazily, and the server is
    shared, so other sessions keep pages dirty)."""
    started = time.monotonic()
    cursor.execute(f"FLUSH TABLES {TABLE} FOR EXPORT")
    cursor.execute("UNLOCK TABLES")
    cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
    dirty = int(cursor.fetchone()[1])
    return f"copy flushed in {time.monotonic() - started:.1f} s, {dirty} pages dirty on the server"


def step_one(workdir: Path) -> None:
    """encmigrate's add-columns revision, written and applied (``--apply``)."""
    from encmigrate.revisions import add_columns

    plan, _ = _plan_and_keyring(workdir)
    result = add_columns(plan, apply=True)
    if not result.applied:
        raise SystemExit(f"add-columns did not apply: {result.notes}")


def drop_copy(url: str) -> None:
    """The copy and the tracking tables go, so the next step 1 is a first run again."""
    from encmigrate.tracking import metadata as tracking_metadata

    with _admin(url) as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        for table in reversed(tracking_metadata.sorted_tables):
            cursor.execute(f"DROP TABLE IF EXISTS {table.name}")


# A contender of this bench: the shared runner, on this script.
contender = partial(run_child, __file__)


def describe_mariadb(result: dict[str, Any]) -> str:
    """bench_migrate's line, plus the workers that ran and the hand-written phases."""
    text = describe(result)
    if "workers_asked" in result:
        text += f"; workers asked {result['workers_asked']}, ran {result['workers_ran']}"
        if result["workers_ran"] != result["workers_asked"]:
            text += " (the report says fewer workers ran than asked)"
    if "phases" in result:
        total = sum(result["phases"].values()) or 1.0
        text += "\n     client-side phases, summed over processes: " + ", ".join(
            f"{name} {seconds:.1f} s ({seconds / total:.0%})"
            for name, seconds in result["phases"].items()
        )
    return text


def summarize(
    rounds: list[dict[str, dict[str, Any]]], args: argparse.Namespace
) -> list[tuple[Ratio, Target | None]]:
    """Medians of the figures, the paired ratios with their targets, the RSS verdict."""
    figures = _figures(rounds)
    print(f"summary: {args.rows:,} rows, {len(rounds)} round(s), {os.cpu_count()} cores")
    print(f"  {'contender':<30} {'median rows/s':>14} {'min':>10} {'max':>10} {'peak RSS':>9}")
    for key, rates in figures.items():
        peak = max(_peak(r[key]) for r in rounds if key in r) if key in KEYS else None
        shown = f"{peak:6.0f} MB" if peak is not None else ""
        print(
            f"  {key:<30} {statistics.median(rates):>14,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f} {shown:>9}"
        )
    for key in ("b1", "b2"):
        runs = [r[key] for r in rounds if key in r]
        if runs:
            starts = [run["startup_seconds"] for run in runs]
            print(
                f"  {key} fixed start-up (call to first batch committed): median "
                f"{statistics.median(starts) * 1000:.0f} ms, rounds "
                + " ".join(f"{s * 1000:.0f}" for s in starts)
                + f"; workers ran: {sorted({run['workers_ran'] for run in runs})}"
            )
    for key in ("h1", "h2"):
        runs = [r[key] for r in rounds if key in r]
        if runs:
            shares = {
                name: statistics.median(
                    run["phases"][name] / sum(run["phases"].values()) for run in runs
                )
                for name in PHASES
            }
            print(
                f"  {key} client-side phases, median share: "
                + ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
            )
    ratios = [
        (paired(name, figures[top], figures[bottom]), target)
        for name, top, bottom, target in RATIOS
        if top in figures and bottom in figures
    ]
    if ratios:
        width = max(len(r.name) for r, _ in ratios)
        print("\nratios of rows/s, paired within each round (verdict on the median)")
        for ratio, target in ratios:
            print(ratio_line(ratio, target, width=width))
    for key in ("b1", "b2"):
        if any(key in r for r in rounds):
            peak = max(_peak(r[key]) for r in rounds if key in r)
            verdict = "PASS" if peak <= RSS_LIMIT_MB else "MISS"
            print(f"  peak RSS {key}: {peak:.0f} MB (<= {RSS_LIMIT_MB:.0f} MB)  {verdict}")
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"\n  load average {load:.1f} on {os.cpu_count()} cores now: other work shares "
            "the machine and slows the figures (most the ones that need both cores)"
        )
    return ratios


def _figures(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, list[float]]:
    """Rows/s per contender per round (and b's steady rows/s), for contenders in every round."""
    figures: dict[str, list[float]] = {}
    for key in KEYS:
        if rounds and all(key in r for r in rounds):
            figures[key] = [r[key]["rate"] for r in rounds]
            if "steady_rate" in rounds[0][key]:
                figures[f"{key} steady"] = [r[key]["steady_rate"] for r in rounds]
    return figures


def _rss_ok(rounds: list[dict[str, dict[str, Any]]]) -> bool:
    return all(_peak(r[k]) <= RSS_LIMIT_MB for r in rounds for k in ("b1", "b2") if k in r)


# -- the children: one contender each (the parent samples their RSS) ------------------------


def child(args: argparse.Namespace) -> int:
    work: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "floor": lambda a, _w: run_floor(a),
        "h1": lambda a, _w: run_hand(a, processes=1),
        "h2": lambda a, _w: run_hand(a, processes=2),
        "b1": lambda a, w: run_migrate(a, w, workers=1),
        "b2": lambda a, w: run_migrate(a, w, workers=2),
        "naive": run_naive,
        "verify": run_verify,
    }
    try:
        result = work[args.child](args, Path(args.workdir))
    except KeyboardInterrupt:
        return 130
    result["rate"] = result["rows"] / result["seconds"] if result["seconds"] > 0 else 0.0
    result["hwm_mb"] = _vm_hwm() / 2**20
    print(json.dumps(result))
    return 0


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    """One UPDATE by the server, one commit; connected before the clock starts."""
    import pymysql

    result: dict[str, Any] = {}
    conn = pymysql.connect(**connect_kwargs(args.url))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
            conn.commit()
            with timed(result):
                result["rows"] = cursor.execute(FLOOR)
                conn.commit()
    finally:
        conn.close()
    if result["rows"] != args.rows:
        raise SystemExit(f"the floor's UPDATE changed {result['rows']} rows")
    return result


def run_hand(args: argparse.Namespace, *, processes: int) -> dict[str, Any]:
    """The hand-written backfill, in this process (1) or in a pool of processes, one key
    range each (the pool's start-up is inside the timing, as b2's helper's would be)."""
    key = os.urandom(32)
    result: dict[str, Any] = {}
    with timed(result):
        with _admin(args.url) as cursor:
            cursor.execute(f"SELECT min(id) - 1, max(id) FROM {TABLE}")
            low, high = (int(v) for v in cursor.fetchone())
        step = -(-(high - low) // processes)
        ranges = [
            (
                connect_kwargs(args.url),
                key,
                low + i * step,
                min(low + (i + 1) * step, high),
                args.batch_size,
            )
            for i in range(processes)
        ]
        if processes == 1:
            done = [hand_backfill(*ranges[0])]
        else:
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                done = pool.starmap(hand_backfill, ranges)
    result["rows"] = sum(rows for rows, _ in done)
    result["phases"] = {name: sum(p[name] for _, p in done) for name in PHASES}
    if result["rows"] != args.rows:
        raise SystemExit(f"the hand-written loop updated {result['rows']} rows")
    return result


def hand_backfill(
    kwargs: dict[str, Any], key: bytes, low: int, high: int, batch_size: int
) -> tuple[int, dict[str, float]]:
    """Ids in (low, high]: read a locked batch, seal each value, one UPDATE, commit.

    Returns the rows done and the seconds spent in each phase (a perf_counter pair per
    phase and batch: negligible beside a round trip).
    """
    import pymysql
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)

    def seal(value: object) -> bytes | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, str(value).encode(), None)

    phases = dict.fromkeys(PHASES, 0.0)
    done = 0
    conn = pymysql.connect(**kwargs)
    try:
        cursor = conn.cursor()
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        last = low
        while True:
            t0 = time.perf_counter()
            cursor.execute(HAND_SELECT, (last, high, batch_size))
            rows = cursor.fetchall()
            t1 = time.perf_counter()
            phases["read"] += t1 - t0
            if not rows:
                conn.commit()
                return done, phases
            params: list[Any] = []
            for row in rows:
                params += (row[0], seal(row[1]), seal(row[2]), seal(row[3]))
            t2 = time.perf_counter()
            phases["seal"] += t2 - t1
            statement = HAND_UPDATE.format(rows=", ".join(["(%s, %s, %s, %s)"] * len(rows)))
            done += cursor.execute(statement, params)
            t3 = time.perf_counter()
            phases["write"] += t3 - t2
            conn.commit()
            phases["commit"] += time.perf_counter() - t3
            last = rows[-1][0]
            if len(rows) < batch_size:
                conn.commit()
                return done, phases
    finally:
        conn.close()


def run_migrate(args: argparse.Namespace, workdir: Path, *, workers: int) -> dict[str, Any]:
    """``migrate_data`` on ``connect(url, workers=...)`` with the options the CLI passes
    (cli/context.py BatchCommand.options); records how many workers the report says ran."""
    from encmigrate.migrate import MigrateOptions, connect, migrate_data
    from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL

    prep = time.perf_counter()
    plan, keyring = _plan_and_keyring(workdir)
    engine = connect(args.url, workers=workers)
    options = MigrateOptions(
        batch_size=args.batch_size, workers=workers, gil_interval=QUICK_SWITCH_INTERVAL
    )
    events = FirstAndLast()
    result: dict[str, Any] = {"prep_seconds": time.perf_counter() - prep}
    with timed(result):
        called = time.perf_counter()
        reports = migrate_data(plan, engine, keyring, options=options, progress=events)
        returned = time.perf_counter()
    engine.dispose()
    report = reports[0]
    if report.rows_done != args.rows or report.rows_failed or events.first is None:
        raise SystemExit(f"migrate_data did {report.rows_done} rows, {report.rows_failed} failed")
    assert events.last is not None
    (first_at, first_rows), (last_at, last_rows) = events.first, events.last
    steady = (last_rows - first_rows) / (last_at - first_at) if last_at > first_at else 0.0
    result.update(
        rows=report.rows_done,
        batches=report.batches,
        catch_up_rows=report.catch_up_rows,
        startup_seconds=first_at - called,
        steady_rate=steady,
        tail_seconds=returned - last_at,
        workers_asked=workers,
        workers_ran=report.workers,
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
