"""Backfill throughput of ``migrate_data`` on PostgreSQL vs the server alone, hand-written code
and a naive ORM loop, each on a fresh copy of the table.

One run, in a database it creates and drops (even on Ctrl-C). A template table of
``--rows`` rows (``id bigint``, ``a text``, ``b text``, ``c numeric(14,2)``: an e-mail,
a ~65-character text, an amount; planned as string, string, numeric) is built once.
Before every contender of every round a fresh copy is made (``CREATE TABLE bench_rows AS
TABLE bench_template``, primary key), then what the contender's user would have run
first (for everything that writes the shadows: encmigrate's own step 1, the
``add-columns`` revision applied through Alembic, so the shadows, the tracking tables
and the trigger are the product's), then ``VACUUM ANALYZE`` and ``CHECKPOINT``; only
the contender is timed, and the copy is dropped after. Contenders:

* floor A (the issue's floor): the server alone, ``UPDATE bench_rows SET a2 = a, b2 = b,
  c2 = c`` into plain copy columns of the same types, no crypto, no trigger;
* floor B (information, the floor of earlier runs): the server alone writing the bytea
  shadows with ``convert_to(...)`` in one ``UPDATE``, the product's trigger present;
* H1 / H2: the plain client code a user could write by hand, psycopg 3 on 1 connection
  (H1) or in 2 processes each over half the key range (H2): keyset batches by ``id``
  read ``FOR NO KEY UPDATE`` (the lock our batches take), AES-GCM of each value
  (``AESGCM``, ``os.urandom(12)`` nonce per value, nonce + ciphertext stored), one
  ``UPDATE … FROM unnest(…)`` per batch with binary parameters (psycopg's own dumpers),
  commit per batch with ``synchronous_commit = off`` for the session (as our batches
  set it), no checkpoint table, no retries;
* b1 / b2: ``migrate_data`` with one worker / two workers, the options the CLI passes
  (b4, four workers, only when named in ``--only``: how far more workers help);
* naive: an ORM loop with sqlalchemy-utils ``StringEncryptedType`` / ``AesGcmEngine``,
  committing every 1,000 rows, on the first ``--naive-rows`` rows (it is slow).

Each contender runs in its own subprocess, so its peak RSS (psutil sampled every
50 ms, the kernel's ``VmHWM``) is its own. For b1/b2 the fixed start-up cost (call
to the first batch committed, from the progress callback) is reported apart from
the steady rows/s. A full ``verify`` runs after b2 in round 1, outside the timing.

    python bench/bench_migrate.py [--rows 1000000] [--naive-rows 100000] [--repeat 3]
                                  [--batch-size 1000] [--only floor-a,h1,b1,...]
                                  [--profile FILE] [--no-verify] [--json]

``--backend mariadb`` runs the same contenders on MariaDB instead (bench_migrate_mariadb.py,
which takes the same options but ``--profile``; its floor is floor A's statement).

Targets (issue 19, medians of ratios paired within each round): b1 >= 0.30x floor A,
b2 >= 0.45x floor A, b1 and b2 >= 1.0x H1 and H2 (never slower than hand-written
code), b >= 10x naive, peak RSS of b <= 150 MB. Exit status 1 if a target misses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _report import Ratio, Target, machine, machine_line, paired, ratio_json, ratio_line

TEMPLATE = "bench_template"
TABLE = "bench_rows"
COLUMNS = (("a", "string"), ("b", "string"), ("c", "numeric"))
NAIVE_COMMIT_EVERY = 1000
RSS_LIMIT_MB = 150.0


@dataclass(frozen=True, slots=True)
class Contender:
    key: str
    title: str
    setup: str  # "copy": plain copy columns a2, b2, c2; "step1": encmigrate's add-columns


CONTENDERS = (
    Contender("floor-a", "floor A: UPDATE SET a2 = a, b2 = b, c2 = c (server alone)", "copy"),
    Contender("floor-b", "floor B: UPDATE SET a_encrypted = convert_to(a), ... + trigger", "step1"),
    Contender("h1", "H1: hand-written psycopg + AESGCM, 1 connection", "step1"),
    Contender("h2", "H2: hand-written psycopg + AESGCM, 2 processes", "step1"),
    Contender("b1", "b1: migrate_data, 1 worker", "step1"),
    Contender("b2", "b2: migrate_data, 2 workers", "step1"),
    Contender("b4", "b4: migrate_data, 4 workers (information; not run by default)", "step1"),
    Contender("naive", "naive ORM loop, sqlalchemy-utils", "step1"),
)
KEYS = tuple(c.key for c in CONTENDERS)
DEFAULT_KEYS = tuple(key for key in KEYS if key != "b4")

PLAN = """
[database]
url = "{url}"
{columns}
"""

# The data: emails of ~24 characters, a ~65-character text, an exact amount.
FILL = f"""
INSERT INTO {TEMPLATE} (id, a, b, c)
SELECT g,
       'user' || g || '@example.com',
       md5(g::text) || ' ' || md5((g * 7)::text),
       ((g * 7919) %% 2000000 - 1000000)::numeric / 100
FROM generate_series(1::bigint, %(rows)s) AS g
"""

FLOOR_A = f"UPDATE {TABLE} SET a2 = a, b2 = b, c2 = c"
FLOOR_B = f"""
UPDATE {TABLE} SET a_encrypted = convert_to(a, 'UTF8'),
                   b_encrypted = convert_to(b, 'UTF8'),
                   c_encrypted = convert_to(c::text, 'UTF8')
"""
HAND_SELECT = (
    f"SELECT id, a, b, c FROM {TABLE} WHERE id > %s AND id <= %s ORDER BY id LIMIT %s "
    "FOR NO KEY UPDATE"
)
HAND_UPDATE = f"""
UPDATE {TABLE} AS t SET a_encrypted = u.a, b_encrypted = u.b, c_encrypted = u.c
FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[], %b::bytea[]) AS u(id, a, b, c)
WHERE t.id = u.id
"""

# (name, top, bottom, target): ratios of rows/s, paired within each round.
RATIOS: tuple[tuple[str, str, str, Target | None], ...] = (
    ("b1 / floor A", "b1", "floor-a", Target(0.30, at_least=True)),
    ("b2 / floor A", "b2", "floor-a", Target(0.45, at_least=True)),
    ("b1 / H1 (hand-written, 1 connection)", "b1", "h1", Target(1.0, at_least=True)),
    ("b2 / H2 (hand-written, 2 processes)", "b2", "h2", Target(1.0, at_least=True)),
    ("b1 / naive", "b1", "naive", Target(10.0, at_least=True)),
    ("b2 / naive", "b2", "naive", Target(10.0, at_least=True)),
    ("b2 / floor B (information)", "b2", "floor-b", None),
    ("b2 / b1", "b2", "b1", None),
    ("b4 / b2", "b4", "b2", None),
    ("H1 / floor A", "h1", "floor-a", None),
    ("H2 / floor A", "h2", "floor-a", None),
    ("floor B / floor A", "floor-b", "floor-a", None),
    ("b1 steady / floor A (start-up excluded)", "b1 steady", "floor-a", None),
    ("b2 steady / floor A (start-up excluded)", "b2 steady", "floor-a", None),
)


# -- the parent: database, fresh copies, one subprocess per contender, figures -------------


BACKENDS = ("postgresql", "mariadb")


def main() -> int:
    backend, rest = _backend(sys.argv[1:])
    if backend == "mariadb":
        import bench_migrate_mariadb  # imports this module: only now, not at the top

        sys.argv = [bench_migrate_mariadb.__file__, *rest]
        return bench_migrate_mariadb.main()
    args = parse_args()
    if args.child:
        return child(args)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill from a job runner cleans up like Ctrl-C
    from encmigrate.testdb import create_database, drop_database, find_postgres_server

    server = find_postgres_server()
    url = create_database(server)
    running: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_migrate_") as workdir:
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


def _backend(argv: list[str]) -> tuple[str, list[str]]:
    """``--backend`` and the other arguments, for the MariaDB run to parse its own."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=BACKENDS, default="postgresql")
    known, rest = parser.parse_known_args(argv)
    return str(known.backend), rest


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=BACKENDS, default="postgresql", help="the server to measure on"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size")
    parser.add_argument(
        "--naive-rows", type=int, default=100_000, help="rows the naive ORM loop does"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--only", default=",".join(DEFAULT_KEYS), help=f"subset of {','.join(KEYS)}"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all contenders")
    parser.add_argument("--profile", help="also run b1 under cProfile; stats to this file")
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
    env = machine("psycopg", "sqlalchemy-utils", "encmigrate")
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
            prepare(url, workdir, item.setup)
            title = item.title + (
                f", first {args.naive_rows:,} rows" if item.key == "naive" else ""
            )
            print(f"  {title} ... (load average {os.getloadavg()[0]:.1f})", flush=True)
            result = contender(item.key, args, url, workdir, running)
            print("     " + describe(result), flush=True)
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
    if args.profile:
        prepare(url, workdir, "step1")
        print(f"\nprofile of b1 under cProfile (slower than the timed run) -> {args.profile}")
        extra["profile"] = contender("profile", args, url, workdir, running)
        drop_copy(url)
        print_profile(args.profile)
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


def print_server(url: str) -> dict[str, Any]:
    """The CPU model and the server's settings that move the figures."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    names = ("server_version", "shared_buffers", "synchronous_commit", "fsync", "max_wal_size")
    with _admin(url) as conn:
        settings = {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}
    print(f"CPU: {cpu}; server and client share the cores")
    print("PostgreSQL on 127.0.0.1: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return {"cpu": cpu, **settings}


@contextmanager
def _admin(url: str) -> Iterator[Any]:
    """A psycopg connection in autocommit (VACUUM and CHECKPOINT need it)."""
    import psycopg

    conn = psycopg.connect(conninfo(url), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def conninfo(url: str) -> str:
    """The SQLAlchemy URL as a libpq URL for psycopg."""
    import sqlalchemy as sa

    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def build(url: str, rows: int, workdir: Path) -> None:
    """The template table, the plan, a keyring and an Alembic project for step 1."""
    from encmigrate.keys.keyring import Keyring
    from encmigrate.scaffold import init

    with _admin(url) as conn:
        conn.execute(f"CREATE TABLE {TEMPLATE} (id bigint, a text, b text, c numeric(14, 2))")
        conn.execute(FILL, {"rows": rows})
        conn.execute(f"VACUUM ANALYZE {TEMPLATE}")
    entries = "".join(
        f'\n[[columns]]\ntable = "{TABLE}"\ncolumn = "{name}"\ntype = "{kind}"\n'
        for name, kind in COLUMNS
    )
    (workdir / "encmigrate.toml").write_text(PLAN.format(url=url, columns=entries))
    (workdir / "keyring.json").write_text(Keyring.generate().to_json())
    init(workdir)  # alembic.ini and alembic/ beside the plan, which it keeps


def prepare(url: str, workdir: Path, setup: str) -> None:
    """A fresh copy of the template, as a user's first run sees its table, then step 1."""
    with _admin(url) as conn:
        conn.execute(f"CREATE TABLE {TABLE} AS TABLE {TEMPLATE}")
        conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        if setup == "copy":
            conn.execute(
                f"ALTER TABLE {TABLE} ADD COLUMN a2 text, ADD COLUMN b2 text, "
                "ADD COLUMN c2 numeric(14, 2)"
            )
    if setup == "step1":
        step_one(workdir)
    with _admin(url) as conn:
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        conn.execute("CHECKPOINT")


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

    with _admin(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        for table in reversed(tracking_metadata.sorted_tables):
            conn.execute(f"DROP TABLE IF EXISTS {table.name}")


def describe(result: dict[str, Any]) -> str:
    text = (
        f"{result['rows']:,} rows in {result['seconds']:.2f} s = {result['rate']:,.0f} rows/s; "
        f"peak RSS {result['peak_rss_mb']:.0f} MB (psutil), {result['hwm_mb']:.0f} MB (VmHWM)"
    )
    if "helper_rss_mb" in result:
        text += f", helper processes {result['helper_rss_mb']:.0f} MB"
    if "startup_seconds" in result:
        text += (
            f"\n     start-up {result['startup_seconds'] * 1000:.0f} ms (call to first batch "
            f"committed), steady {result['steady_rate']:,.0f} rows/s, "
            f"end {result['tail_seconds'] * 1000:.0f} ms (catch-up, finish); "
            f"plan + keyring + engine before the call {result['prep_seconds'] * 1000:.0f} ms"
        )
    if "cpu_seconds" in result:
        text += f"\n     client CPU {result['cpu_seconds']:.1f} s"
        if result.get("helper_cpu"):
            text += f" + helpers {result['helper_cpu']:.1f} s"
    if "machine_cpu" in result:
        capacity = result["seconds"] * (os.cpu_count() or 1)
        text += f", machine CPU {result['machine_cpu']:.1f} s of {capacity:.1f}"
    if "batches" in result:
        text += f"; {result['batches']:,} batches, {result['catch_up_rows']} caught up"
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
    for key in ("b1", "b2", "b4"):
        starts = [r[key]["startup_seconds"] for r in rounds if key in r]
        if starts:
            print(
                f"  {key} fixed start-up (call to first batch committed): median "
                f"{statistics.median(starts) * 1000:.0f} ms, rounds "
                + " ".join(f"{s * 1000:.0f}" for s in starts)
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
    for key in ("b1", "b2", "b4"):
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


def _peak(result: dict[str, Any]) -> float:
    return float(max(result["peak_rss_mb"], result["hwm_mb"], result.get("helper_rss_mb", 0.0)))


def _rss_ok(rounds: list[dict[str, dict[str, Any]]]) -> bool:
    return all(_peak(r[k]) <= RSS_LIMIT_MB for r in rounds for k in ("b1", "b2") if k in r)


def print_profile(path: str) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


# -- the children: one contender each (the parent samples their RSS) ------------------------


class PeakRss:
    """The resident set size of a contender's process and of its helper processes (b2's
    worker, H2's pool), sampled every 50 ms by a thread of *this* process.

    The sampler runs in the parent, not in the contender: psutil's scan of /proc for
    children held the contender's interpreter lock for about 7% of the time of b2's
    main process (py-spy), and only the contenders whose work runs in that process
    (b1, b2) paid it; H2's work runs in its pool, beside an idle parent.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(pid)
        self.peak = 0
        self.helper_peak = 0  # the largest helper process seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
                helpers = self._process.children(recursive=True)
            except self._psutil.Error:  # the contender ended
                return
            for helper in helpers:
                try:
                    self.helper_peak = max(self.helper_peak, helper.memory_info().rss)
                except self._psutil.Error:  # it ended meanwhile
                    continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def run_child(
    script: str,
    name: str,
    args: argparse.Namespace,
    url: str,
    workdir: Path,
    running: list[subprocess.Popen[str]],
) -> dict[str, Any]:
    """Run contender ``name`` in a process of ``script`` (this bench or the MariaDB one);
    its JSON result, with the peak RSS sampled from here."""
    command = [
        sys.executable,
        *(f"-W{option}" for option in sys.warnoptions),
        script,
        *("--child", name, "--url", url, "--workdir", str(workdir)),
        *("--rows", str(args.rows), "--naive-rows", str(args.naive_rows)),
        *("--batch-size", str(args.batch_size)),
    ]
    if getattr(args, "profile", None):
        command += ["--profile", args.profile]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    running.append(process)
    sampler = PeakRss(process.pid)
    try:
        out, _ = process.communicate()
    finally:
        sampler.close()
        running.remove(process)
    if process.returncode != 0:
        raise SystemExit(f"contender {name} failed (exit {process.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    # The kernel's high-water mark (read by the child at its end) bounds what 50 ms missed.
    result["peak_rss_mb"] = max(sampler.peak / 2**20, result["hwm_mb"])
    if sampler.helper_peak:
        result["helper_rss_mb"] = sampler.helper_peak / 2**20
    return result


# A contender of this bench: run_child(name, args, url, workdir, running) on this script.
contender = partial(run_child, __file__)


def child(args: argparse.Namespace) -> int:
    work: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "floor-a": lambda a, _w: run_floor(a, FLOOR_A),
        "floor-b": lambda a, _w: run_floor(a, FLOOR_B),
        "h1": lambda a, _w: run_hand(a, processes=1),
        "h2": lambda a, _w: run_hand(a, processes=2),
        "b1": lambda a, w: run_migrate(a, w, workers=1),
        "b2": lambda a, w: run_migrate(a, w, workers=2),
        "b4": lambda a, w: run_migrate(a, w, workers=4),
        "profile": run_profile,
        "naive": run_naive,
        "verify": run_verify,
    }
    try:
        result = work[args.child](args, Path(args.workdir))
    except KeyboardInterrupt:
        return 130
    result["rate"] = result["rows"] / result["seconds"] if result["seconds"] > 0 else 0.0
    result["hwm_mb"] = _vm_hwm() / 2**20
    # Linux carries ru_maxrss across fork+exec: it can show the parent's RSS at the fork.
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    print(json.dumps(result))
    return 0


def _vm_hwm() -> int:
    """The kernel's high-water mark of this process's RSS (fresh at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_busy() -> float:
    """CPU seconds spent so far by every process on the machine (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextmanager
def timed(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Wall seconds, this process's CPU seconds and the machine's CPU seconds of the block."""
    started, cpu, busy = time.perf_counter(), time.process_time(), machine_busy()
    helpers = _children_cpu()
    yield result
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu
    result["machine_cpu"] = machine_busy() - busy
    result["helper_cpu"] = _children_cpu() - helpers


def _children_cpu() -> float:
    """CPU seconds of this process's helper processes that have ended (b2's, H2's pool)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_floor(args: argparse.Namespace, statement: str) -> dict[str, Any]:
    """One UPDATE by the server, one commit; connected before the clock starts."""
    import psycopg

    result: dict[str, Any] = {}
    with psycopg.connect(conninfo(args.url)) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        with timed(result):
            result["rows"] = conn.execute(statement).rowcount
            conn.commit()
    return result


def run_hand(args: argparse.Namespace, *, processes: int) -> dict[str, Any]:
    """The hand-written backfill, in this process (1) or in a pool of processes, one key
    range each (the pool's start-up is inside the timing, as b2's helper's is)."""
    key = os.urandom(32)
    result: dict[str, Any] = {}
    with timed(result):
        with _admin(args.url) as conn:
            low, high = conn.execute(f"SELECT min(id) - 1, max(id) FROM {TABLE}").fetchone()
        step = -(-(high - low) // processes)
        ranges = [
            (
                conninfo(args.url),
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
    result["rows"] = sum(done)
    if result["rows"] != args.rows:
        raise SystemExit(f"the hand-written loop updated {result['rows']} rows")
    return result


def hand_backfill(dsn: str, key: bytes, low: int, high: int, batch_size: int) -> int:
    """Ids in (low, high]: read a locked batch, seal each value, one UPDATE, commit."""
    import psycopg
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)

    def seal(value: object) -> bytes | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, str(value).encode(), None)

    done = 0
    with psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        last = low
        while True:
            rows = conn.execute(HAND_SELECT, (last, high, batch_size)).fetchall()
            if not rows:
                conn.commit()
                return done
            ids = [r[0] for r in rows]
            params = (
                ids,
                [seal(r[1]) for r in rows],
                [seal(r[2]) for r in rows],
                [seal(r[3]) for r in rows],
            )
            done += conn.execute(HAND_UPDATE, params).rowcount
            conn.commit()
            last = ids[-1]
            if len(rows) < batch_size:
                return done


def _plan_and_keyring(workdir: Path) -> tuple[Any, Any]:
    from encmigrate import plan as plan_module
    from encmigrate.keys.keyring import Keyring

    plan = plan_module.load(workdir / "encmigrate.toml", environ={})
    keyring = Keyring.from_json((workdir / "keyring.json").read_text())
    return plan, keyring


class FirstAndLast:
    """The progress callback: when the first batch was committed, and the last of the
    chunk phase (what follows is the catch-up pass and the bookkeeping)."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def __call__(self, event: Any) -> None:
        if event.phase == "chunks" and event.rows_done > 0:
            now = (time.perf_counter(), event.rows_done)
            if self.first is None:
                self.first = now
            self.last = now


def run_migrate(args: argparse.Namespace, workdir: Path, *, workers: int) -> dict[str, Any]:
    from encmigrate.migrate import MigrateOptions, connect, migrate_data
    from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL

    prep = time.perf_counter()
    plan, keyring = _plan_and_keyring(workdir)
    engine = connect(args.url, workers=workers)
    # What the CLI passes (cli/context.py BatchCommand.options).
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
    )
    return result


def run_profile(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    result = run_migrate(args, workdir, workers=1)
    profiler.disable()
    profiler.dump_stats(args.profile)
    return result


def run_verify(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from encmigrate.migrate import connect, verify

    plan, keyring = _plan_and_keyring(workdir)
    engine = connect(args.url)
    started = time.perf_counter()
    verdicts = verify(plan, engine, keyring)
    seconds = time.perf_counter() - started
    engine.dispose()
    bad = [v.summary() for v in verdicts if not v.ok]
    if bad or len(verdicts) != len(COLUMNS):
        raise SystemExit("verify failed: " + "; ".join(bad))
    return {"rows": args.rows, "seconds": seconds}


def run_naive(args: argparse.Namespace, _workdir: Path) -> dict[str, Any]:
    """What a user writes by hand: load a page of objects, assign, commit every 1,000."""
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Session
    from sqlalchemy_utils import StringEncryptedType
    from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    key = os.urandom(32).hex()

    def encrypted() -> sa.Column[Any]:
        # The shadow columns are bytea; the type produces base64 text, stored as its bytes.
        return sa.Column(_BytesColumn(StringEncryptedType(sa.String, key, AesGcmEngine)))

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = TABLE
        id = sa.Column(sa.BigInteger, primary_key=True)
        a = sa.Column(sa.Text)
        b = sa.Column(sa.Text)
        c = sa.Column(sa.Numeric(14, 2))
        a_encrypted = encrypted()
        b_encrypted = encrypted()
        c_encrypted = encrypted()

    limit = min(args.naive_rows, args.rows)
    done = 0
    last = 0
    engine = sa.create_engine(args.url)
    result: dict[str, Any] = {}
    with timed(result), Session(engine) as session:
        while True:
            page = session.scalars(
                sa.select(Row)
                .where(Row.id > last, Row.id <= limit)
                .order_by(Row.id)
                .limit(NAIVE_COMMIT_EVERY)
            ).all()
            if not page:
                break
            for row in page:
                row.a_encrypted = row.a
                row.b_encrypted = row.b
                row.c_encrypted = None if row.c is None else str(row.c)
            last = page[-1].id
            done += len(page)
            session.commit()
    engine.dispose()
    result["rows"] = done
    return result


def _BytesColumn(inner: Any) -> Any:  # noqa: N802 - reads as a type in the model above
    """``inner`` (a text-producing TypeDecorator) stored in a bytea column as ASCII bytes."""
    import sqlalchemy as sa

    class BytesOf(sa.types.TypeDecorator[str]):
        impl = sa.LargeBinary
        cache_ok = True

        def process_bind_param(self, value: Any, dialect: Any) -> bytes | None:
            text = inner.process_bind_param(value, dialect)
            return None if text is None else text.encode("ascii")

        def process_result_value(self, value: Any, dialect: Any) -> str | None:
            if value is None:
                return None
            result: str | None = inner.process_result_value(bytes(value).decode("ascii"), dialect)
            return result

    return BytesOf()


if __name__ == "__main__":
    sys.exit(main())
