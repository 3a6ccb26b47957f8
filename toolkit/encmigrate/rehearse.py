"""``rehearse``: the five steps and their downgrades on a throwaway PostgreSQL, for CI.

What a user's CI runs before the real migration. On a database created for
the occasion (:mod:`encmigrate.testdb`: ``ENCMIGRATE_TEST_DATABASE_URL``, a
testcontainers ``PostgresContainer`` when Docker answers, else a local
server) it applies the user's Alembic history, optionally loads a SQL file
and/or generated rows, then runs add-columns, migrate-data (dry run, then for
real), verify, create-views, drop-unencrypted, verify again, and every
downgrade back to where it started, with decrypt-back refilling the
plaintext. It ends by comparing the schema and the planned values with what
they were before add-columns: the round trip must be exact.

Nothing is written into the user's tree (DESIGN.md, "Where things are
found"): the Alembic script directory is copied to a temporary directory and
the revisions land there. The keys are a fresh :meth:`Keyring.generate`,
never the user's. Nothing here prints; :func:`rehearse` returns a
:class:`RehearsalReport` and reports each finished step to ``on_step``.

Generated rows (``rows``) fill every planned table: integer primary keys
(single or composite) numbered after the largest present, identity and
serial keys left to the database; planned columns get values of the plan's
type (written as text in text columns); other NOT NULL columns without a
default get a value of their SQL type (integers, numerics, floats, booleans,
dates, times, timestamps, strings, binary, JSON, UUIDs, enums). Foreign keys,
non-integer primary keys and other NOT NULL types are refused with a message
that says to use ``load`` instead.
"""

from __future__ import annotations

import configparser
import datetime as dt
import decimal
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError

from encmigrate import plan as plan_module
from encmigrate import revisions
from encmigrate.config import find_config
from encmigrate.errors import ConfigError, DatabaseError, EncmigrateError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate import MigrateOptions, connect, decrypt_back, migrate_data, verify
from encmigrate.migrate.verify import ColumnVerdict
from encmigrate.revisions.generate import alembic_config, quiet_config
from encmigrate.testdb import PostgresServer, create_database, drop_database, find_postgres_server
from encmigrate.tracking import failures

__all__ = ["RehearsalReport", "RehearseOptions", "StepResult", "rehearse"]

logger = logging.getLogger(__name__)

INSERT_ROWS = 5000
NULL_EVERY = 10  # every 10th generated value of a nullable planned column is NULL


@dataclass(frozen=True, slots=True)
class RehearseOptions:
    """What to rehearse with. ``production_rows`` only feeds the ETA."""

    load: Path | None = None
    rows: int = 0
    production_rows: int | None = None
    batch_size: int | None = None
    workers: int = 1
    seed: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: its name, how long it took, whether it passed, one line about it."""

    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class RehearsalReport:
    """Everything a rehearsal found. ``exit_code`` is 0 only when nothing went wrong."""

    server: str = ""
    steps: list[StepResult] = field(default_factory=list)
    rows: int = 0
    rows_migrated: int = 0
    rate: float = 0.0
    dry_run_rate: float = 0.0
    production_rows: int | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.problems

    @property
    def eta_seconds(self) -> float | None:
        """Time migrate-data would take on ``production_rows`` at the measured rate."""
        if self.production_rows is None or self.rate <= 0:
            return None
        return self.production_rows / self.rate

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


StepCallback = Callable[[StepResult], None]


class _StepFailedError(Exception):
    """A step found a problem; the rehearsal stops (later steps build on it)."""


def rehearse(
    config: str | os.PathLike[str] | None = None,
    *,
    options: RehearseOptions | None = None,
    server: PostgresServer | None = None,
    environ: Mapping[str, str] | None = None,
    on_step: StepCallback | None = None,
) -> RehearsalReport:
    """Rehearse the whole migration of the plan ``config`` on a throwaway database.

    ``server`` is found with :func:`find_postgres_server` when not given (and
    closed afterwards if it was started here). The database created on it is
    dropped at the end, whatever happened.
    """
    opts = options or RehearseOptions()
    env = dict(os.environ if environ is None else environ)
    found = find_config(config, environ=env)
    if found is None:
        raise ConfigError(
            "no plan found: create encmigrate.toml, add [tool.encmigrate] to pyproject.toml, "
            "or pass --config"
        )
    offline = plan_module.load(found, environ=env, check_database=False)
    owned = server is None
    target = server if server is not None else find_postgres_server()
    report = RehearsalReport(server=target.source, production_rows=opts.production_rows)
    try:
        url = create_database(target)
        try:
            with tempfile.TemporaryDirectory(prefix="encmigrate-rehearse-") as scratch:
                ini = _copy_alembic(offline.alembic_config, Path(scratch))
                run = _Rehearsal(found.path, url, ini, env, opts, report, on_step)
                run.run()
        finally:
            drop_database(target, url)
    finally:
        if owned:
            target.close()
    return report


class _Rehearsal:
    def __init__(
        self,
        plan_path: Path,
        url: str,
        ini: Path,
        environ: dict[str, str],
        options: RehearseOptions,
        report: RehearsalReport,
        on_step: StepCallback | None,
    ) -> None:
        self.plan_path = plan_path
        self.url = url
        self.ini = ini
        self.environ = environ
        self.opts = options
        self.report = report
        self.on_step = on_step
        self.keyring = Keyring.generate()  # throwaway: the user's keys never come near CI
        self.engine = connect(url, workers=options.workers)

    def plan(self) -> plan_module.Plan:
        """The plan checked against the rehearsal database, its Alembic config the copy."""
        loaded = plan_module.load(self.plan_path, database_url=self.url, environ=self.environ)
        return loaded.model_copy(update={"alembic_config": self.ini})

    def run(self) -> None:
        try:
            self._steps()
        except _StepFailedError:
            pass
        finally:
            self.engine.dispose()

    @contextmanager
    def step(self, name: str, *, quote_errors: bool = False) -> Iterator[list[str]]:
        """Time a step; an error ends the rehearsal with its message and exit code.

        Database messages can quote row values, so they are shown only for the
        steps that run the user's own DDL (``quote_errors``); otherwise the
        SQLSTATE and the error class.
        """
        detail: list[str] = []
        started = time.monotonic()
        failure: EncmigrateError | None = None
        try:
            yield detail
        except EncmigrateError as exc:
            failure = exc
        except sa.exc.SQLAlchemyError as exc:
            failure = DatabaseError(f"database error ({_error_kind(exc, quote_errors)})")
        except CommandError as exc:
            failure = ConfigError(f"alembic: {exc}")
        seconds = time.monotonic() - started
        if failure is None and not any(line.startswith("PROBLEM") for line in detail):
            self._record(StepResult(name, seconds, True, "; ".join(detail)))
            return
        if failure is not None:
            message = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
            self.report.exit_code = self.report.exit_code or failure.exit_code
        else:
            message = "; ".join(
                line.removeprefix("PROBLEM ") for line in detail if line.startswith("PROBLEM")
            )
            self.report.exit_code = self.report.exit_code or 1
        self.report.problems.append(f"{name}: {message}")
        self._record(StepResult(name, seconds, False, message))
        raise _StepFailedError(name)

    def _record(self, result: StepResult) -> None:
        self.report.steps.append(result)
        logger.info(
            "rehearse: %s %s in %.2fs", result.name, "ok" if result.ok else "FAILED", result.seconds
        )
        if self.on_step is not None:
            self.on_step(result)

    # -- the steps -----------------------------------------------------------------

    def _steps(self) -> None:
        with self.step("alembic upgrade head (your history)", quote_errors=True):
            config = quiet_config(self.ini)
            config.attributes[revisions.generate.ALEMBIC_URL_ATTRIBUTE] = self.url
            config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
            command.upgrade(config, "head")
        if self.opts.load is not None:
            with self.step(f"load {self.opts.load.name}"):
                _load_sql(self.engine, self.opts.load)
        offline = plan_module.load(self.plan_path, environ=self.environ, check_database=False)
        if self.opts.rows:
            with self.step(f"generate {self.opts.rows:,} rows per table"):
                rng = random.Random(self.opts.seed)  # noqa: S311  (test data, not keys)
                _generate_rows(self.engine, offline, self.opts.rows, rng)
        with self.step("plan check") as detail:
            plan = self.plan()
            self.report.warnings += [str(w) for w in plan.warnings]
            self.report.rows = _count_rows(self.engine, plan)
            detail.append(f"{len(plan.columns)} columns, {self.report.rows:,} rows")
            before = _snapshot(self.engine, plan)
        with self.step("add-columns --apply"):
            self._note(revisions.add_columns(self.plan(), apply=True))
        batch_size = self.opts.batch_size or plan.migration.batch_size
        options = MigrateOptions(batch_size=batch_size, workers=self.opts.workers)
        with self.step("migrate-data --dry-run") as detail:
            dry = migrate_data(
                self.plan(),
                self.engine,
                self.keyring,
                options=MigrateOptions(batch_size=batch_size, dry_run=True),
            )
            done = sum(r.rows_done for r in dry)
            seconds = sum(r.seconds for r in dry)
            self.report.dry_run_rate = done / seconds if seconds > 0 else 0.0
            detail.append(f"{done:,} rows rolled back, {self.report.dry_run_rate:,.0f} rows/s")
        with self.step("migrate-data") as detail:
            reports = migrate_data(self.plan(), self.engine, self.keyring, options=options)
            done = sum(r.rows_done for r in reports)
            seconds = sum(r.seconds for r in reports)
            self.report.rows_migrated = done
            self.report.rate = done / seconds if seconds > 0 else 0.0
            detail.append(f"{done:,} rows, {self.report.rate:,.0f} rows/s")
            failed = _failure_count(self.engine)
            if failed:
                detail.append(
                    f"PROBLEM {failed} values do not fit their planned type "
                    "(see encryption_migration_failures)"
                )
        with self.step("verify") as detail:
            detail += _verdict_lines(verify(self.plan(), self.engine, self.keyring))
        with self.step("create-views --apply"):
            self._note(revisions.create_views(self.plan(), apply=True))
        with self.step("drop-unencrypted --confirm --apply"):
            self._note(revisions.drop_unencrypted(self.plan(), confirm=True, apply=True))
        with self.step("verify (plaintext dropped)") as detail:
            detail += _verdict_lines(verify(self.plan(), self.engine, self.keyring))
        with self.step("downgrade drop-unencrypted, decrypt-back") as detail:
            command.downgrade(alembic_config(self.plan()), "-1")
            back = decrypt_back(self.plan(), self.engine, self.keyring, options=options)
            detail.append(f"{sum(r.rows_done for r in back):,} rows restored")
        with self.step("verify (plaintext restored)") as detail:
            detail += _verdict_lines(verify(self.plan(), self.engine, self.keyring))
        with self.step("downgrade create-views"):
            command.downgrade(alembic_config(self.plan()), "-1")
        with self.step("downgrade add-columns"):
            command.downgrade(alembic_config(self.plan()), "-1")
        with self.step("round trip (schema and values as before)") as detail:
            after = _snapshot(self.engine, plan)
            changed = sorted(
                key
                for key in before.schema.keys() | after.schema.keys()
                if before.schema.get(key) != after.schema.get(key)
            )
            if changed:
                detail.append(f"PROBLEM schema differs from before add-columns: {changed}")
            altered = sorted(t for t, v in before.values.items() if after.values.get(t) != v)
            if altered:
                detail.append(f"PROBLEM planned values differ from before add-columns: {altered}")

    def _note(self, result: revisions.RevisionResult) -> None:
        self.report.warnings += [n for n in result.notes if not n.startswith("then:")]


# -- the user's Alembic environment, copied --------------------------------------------


def _copy_alembic(ini: Path, into: Path) -> Path:
    """A copy of ``ini`` and its script directory under ``into``; the copy's ini path.

    Alembic writes revisions into the script directory (and its
    ``version_locations``): pointing the copied ini at copies keeps the
    user's tree untouched.
    """
    if not ini.is_file():
        raise ConfigError(
            f"no Alembic config at {ini}: run `encmigrate init`, or set [alembic] config"
        )
    parser = configparser.RawConfigParser()
    parser.read(ini, encoding="utf-8")
    if not parser.has_option("alembic", "script_location"):
        raise ConfigError(f"{ini}: [alembic] script_location is missing")
    here = str(ini.parent.resolve())

    def located(raw: str) -> Path:
        path = Path(raw.replace("%(here)s", here))
        if path.is_absolute():
            return path
        return path.resolve() if path.exists() else (ini.parent / path).resolve()

    source = located(parser.get("alembic", "script_location"))
    if not source.is_dir():
        raise ConfigError(f"{ini}: script_location {source} is not a directory")
    shutil.copytree(source, into / "script", ignore=shutil.ignore_patterns("__pycache__"))
    parser.set("alembic", "script_location", _escape(into / "script"))
    if parser.has_option("alembic", "version_locations"):
        separator = parser.get("alembic", "path_separator", fallback="space")
        raw = parser.get("alembic", "version_locations")
        parts = raw.split(os.pathsep) if separator == "os" else raw.replace(",", " ").split()
        copies = []
        for index, part in enumerate(p for p in parts if p.strip()):
            copy = into / f"versions_{index}"
            origin = located(part.strip())
            if origin.is_dir():
                shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                copy.mkdir()
            copies.append(_escape(copy))
        parser.set("alembic", "path_separator", "os")
        parser.set("alembic", "version_locations", os.pathsep.join(copies))
    copied = into / "alembic.ini"
    with copied.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return copied


def _escape(path: Path) -> str:
    return str(path).replace("%", "%%")


def _load_sql(engine: sa.Engine, path: Path) -> None:
    """Run a SQL file as one transaction (plain SQL; psql meta-commands are not supported)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # Without parameters psycopg uses the simple protocol: several statements at once.
        cursor.execute(text)
        cursor.close()
        raw.commit()
    except Exception as exc:
        raw.rollback()
        state = getattr(exc, "sqlstate", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: the SQL failed (SQLSTATE {state}): {first}") from None
    finally:
        raw.close()


# -- generated rows -----------------------------------------------------------------------


def _generate_rows(
    engine: sa.Engine, plan: plan_module.Plan, count: int, rng: random.Random
) -> None:
    for table_plan in plan.tables:
        try:
            table = sa.Table(
                table_plan.table_name,
                sa.MetaData(),
                schema=table_plan.schema_name,
                autoload_with=engine,
            )
        except sa.exc.NoSuchTableError:
            raise ConfigError(
                f"--rows: table {table_plan.table!r} does not exist after your Alembic history"
            ) from None
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                # None must be SQL NULL, not the JSON value null (which SQL sees as NOT NULL).
                column.type.none_as_null = True
        planned = {c.column: c.type for c in table_plan.columns}
        keys, makers = _makers(table, table_plan.table, planned, engine)
        with engine.begin() as conn:
            starts = {
                name: int(
                    conn.execute(
                        sa.select(sa.func.coalesce(sa.func.max(table.c[name]), 0))
                    ).scalar_one()
                )
                for name in keys
            }
            for first in range(0, count, INSERT_ROWS):
                batch = []
                for i in range(first, min(first + INSERT_ROWS, count)):
                    row = {name: start + i + 1 for name, start in starts.items()}
                    row.update({name: make(i, rng) for name, make in makers.items()})
                    batch.append(row)
                conn.execute(table.insert(), batch)


Maker = Callable[[int, random.Random], Any]


def _makers(
    table: sa.Table, name: str, planned: Mapping[str, str], engine: sa.Engine
) -> tuple[list[str], dict[str, Maker]]:
    """The key columns to number, and a value maker per other column that needs a value."""
    inspector = sa.inspect(engine)
    # serial (a nextval default) and identity columns are the database's to fill
    generated = {
        c["name"]
        for c in inspector.get_columns(table.name, schema=table.schema)
        if c.get("identity") or c.get("default") is not None
    }
    keys: list[str] = []
    makers: dict[str, Maker] = {}
    for column in table.columns:
        where = f"--rows: {name}.{column.name}"
        if column.name in generated:
            continue
        if column.primary_key:
            if not isinstance(column.type, sa.Integer):
                raise ConfigError(
                    f"{where}: only integer primary keys are generated; load rows with --load"
                )
            keys.append(column.name)
        elif column.name in planned:
            kind = planned[column.name]
            if kind == "binary" and isinstance(column.type, sa.String):
                raise ConfigError(f"{where}: binary values in a text column are not generated")
            maker = _maker_for(kind, column.type)
            makers[column.name] = _nullable(maker) if column.nullable else maker
        elif not column.nullable:
            if column.foreign_keys:
                raise ConfigError(f"{where}: foreign keys are not generated; load rows with --load")
            makers[column.name] = _maker_for(_kind_of(column.type, where), column.type)
    return keys, makers


def _nullable(maker: Maker) -> Maker:
    def make(i: int, rng: random.Random) -> Any:
        return None if i % NULL_EVERY == NULL_EVERY - 1 else maker(i, rng)

    return make


def _kind_of(column_type: sa.types.TypeEngine[Any], where: str) -> str:
    """The plan type name whose values fit a SQL type (for unplanned NOT NULL columns)."""
    for sql_type, kind in (
        (sa.Boolean, "boolean"),
        (sa.Enum, "enum"),
        (sa.Uuid, "uuid"),
        (sa.Integer, "integer"),
        (sa.Float, "float"),
        (sa.Numeric, "numeric"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.Time, "time"),
        (sa.String, "string"),
        (sa.LargeBinary, "binary"),
        (sa.JSON, "json"),
    ):
        if isinstance(column_type, sql_type):
            return kind
    raise ConfigError(
        f"{where}: NOT NULL column of type {column_type} is not generated; use --load"
    )


def _maker_for(kind: str, column_type: sa.types.TypeEngine[Any]) -> Maker:
    """Values of plan type ``kind`` that fit ``column_type`` (as text in a text column)."""
    length = getattr(column_type, "length", None) if isinstance(column_type, sa.String) else None
    scale = getattr(column_type, "scale", None)
    precision = getattr(column_type, "precision", None)
    digits = min((precision or 12) - (scale or 0), 9)
    places = 2 if scale is None else scale
    aware = bool(getattr(column_type, "timezone", False))
    small = isinstance(column_type, sa.SmallInteger)
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC if aware else None)

    def string(i: int, rng: random.Random) -> str:
        return f"user{i}.{rng.randrange(10**6)}@example.com"

    def numeric(i: int, rng: random.Random) -> decimal.Decimal:
        units = rng.randrange(-(10**digits) + 1, 10**digits)
        return decimal.Decimal(units).scaleb(-places) if places else decimal.Decimal(units)

    values: dict[str, Maker] = {
        "string": string,
        "text": string,
        "integer": lambda i, rng: (
            rng.randrange(-30000, 30000) if small else rng.randrange(-(2**31), 2**31)
        ),
        "bigint": lambda i, rng: rng.randrange(-(2**62), 2**62),
        "float": lambda i, rng: rng.uniform(-1e6, 1e6),
        "numeric": numeric,
        "boolean": lambda i, rng: rng.random() < 0.5,
        "date": lambda i, rng: dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(30_000)),
        "datetime": lambda i, rng: epoch + dt.timedelta(seconds=rng.randrange(10**9)),
        "time": lambda i, rng: dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60)),
        "binary": lambda i, rng: rng.randbytes(16),
        "json": lambda i, rng: {"n": i, "tags": [rng.choice(["a", "b", "c"]), i % 7]},
        "uuid": lambda i, rng: uuid.UUID(int=rng.getrandbits(128), version=4),
        "enum": lambda i, rng: rng.choice(list(getattr(column_type, "enums", []) or ["x"])),
    }
    maker = values[kind]
    if not isinstance(column_type, sa.String) or kind in ("string", "text", "enum"):
        if length is None:
            return maker
        return lambda i, rng: maker(i, rng)[:length]
    return lambda i, rng: _as_text(maker(i, rng))[: length or None]


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


# -- what the round trip compares ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    schema: dict[str, Any]
    values: dict[str, str]


def _snapshot(engine: sa.Engine, plan: plan_module.Plan) -> _Snapshot:
    """The schema of the database and a digest of every planned table's keys and values."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        schemas = sorted({t.schema_name for t in plan.tables}, key=lambda s: s or "")
        schema: dict[str, Any] = {}
        for name in schemas:
            for table in inspector.get_table_names(schema=name):
                if table == "alembic_version":
                    continue
                # Sorted: the drop's downgrade re-adds the plaintext columns at the end.
                schema[f"{name}.{table}"] = (
                    sorted(
                        (c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table, schema=name)
                    ),
                    sorted(
                        (str(i["name"]), tuple(i["column_names"]))
                        for i in inspector.get_indexes(table, schema=name)
                    ),
                )
            schema[f"{name} views"] = sorted(inspector.get_view_names(schema=name))
        schema["triggers"] = sorted(
            str(r[0])
            for r in conn.exec_driver_sql(
                "SELECT tgrelid::regclass::text || ' ' || tgname FROM pg_trigger "
                "WHERE NOT tgisinternal"
            )
        )
        values = {t.table: _digest(conn, t) for t in plan.tables}
    return _Snapshot(schema, values)


def _digest(conn: sa.Connection, table_plan: plan_module.TablePlan) -> str:
    table = sa.table(
        table_plan.table_name,
        *(sa.column(n) for n in (*table_plan.primary_key, *(c.column for c in table_plan.columns))),
        schema=table_plan.schema_name,
    )
    keys = [table.c[n] for n in table_plan.primary_key]
    digest = hashlib.sha256()
    rows = conn.execution_options(yield_per=INSERT_ROWS).execute(
        sa.select(*table.c).order_by(*keys)
    )
    for row in rows:
        digest.update(json.dumps([_canonical(v) for v in row], default=str).encode())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, memoryview | bytearray | bytes):
        return bytes(value).hex()
    return repr(value)


def _count_rows(engine: sa.Engine, plan: plan_module.Plan) -> int:
    with engine.connect() as conn:
        return sum(
            int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.table(t.table_name, schema=t.schema_name)
                    )
                ).scalar_one()
            )
            for t in plan.tables
        )


def _failure_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(failures)).scalar_one())


def _verdict_lines(verdicts: list[ColumnVerdict]) -> list[str]:
    checked = sum(v.rows_checked for v in verdicts)
    lines = [f"{len(verdicts)} columns, {checked:,} values checked"]
    lines += [f"PROBLEM {v.table}.{v.column}: {v.summary()}" for v in verdicts if not v.ok]
    return lines


def _error_kind(exc: BaseException, quote: bool) -> str:
    original = getattr(exc, "orig", None) or exc
    state = getattr(original, "sqlstate", None)
    kind = f"SQLSTATE {state} {type(original).__name__}" if state else type(original).__name__
    lines = str(original).strip().splitlines()
    return f"{kind}: {lines[0][:200]}" if quote and lines else kind
