"""``status``: where each planned column stands, from the database alone.

It reads through :func:`~encmigrate.migrate.database.read_only` (as
:mod:`encmigrate.migrate.next_step` does): on SQLite it takes no write lock,
so it answers while ``migrate-data`` runs, and holds no lock between
statements.

The key-version histogram reads the envelope header in SQL (no decryption,
no key needed), so an operator can tell when an old version can be retired
or destroyed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.envelope import HEADER_SIZE, HEADER_TEXT_SIZE, envelope_version
from encmigrate.errors import DatabaseError
from encmigrate.migrate import database
from encmigrate.migrate.control import current_request
from encmigrate.migrate.database import is_transient, read_only
from encmigrate.plan import ColumnPlan, Plan, TablePlan
from encmigrate.tracking import ChunkStatus, MigrationStatus, chunks, control, migrations, workers

__all__ = [
    "ColumnStatus",
    "RunState",
    "WorkerStatus",
    "key_versions",
    "live_columns",
    "reading",
    "run_states",
    "status",
    "tracking_columns",
]

# What status reads of a tracking row; the last two are absent from older tracking tables.
_TRACKED = (
    "status",
    "rows_total",
    "rows_done",
    "rows_failed",
    "key_version",
    "last_error",
    "worker",
    "heartbeat_at",
    "started_at",
    "finished_at",
    "verified_at",
    "last_run_rows",
    "last_run_seconds",
)


@dataclass(slots=True)
class ColumnStatus:
    table: str
    column: str
    status: str = "not started"
    rows_total: int | None = None
    rows_done: int = 0
    rows_failed: int = 0
    key_version: int | None = None
    last_error: str | None = None
    worker: str | None = None
    heartbeat_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    verified_at: dt.datetime | None = None
    last_run_rows: int | None = None
    last_run_seconds: float | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    versions: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float | None:
        """Rows per second of the last backfill run; None when none is recorded.

        The rate of one run, never rows over the time between separate runs.
        """
        if not self.last_run_rows or not self.last_run_seconds or self.last_run_seconds <= 0:
            return None
        return self.last_run_rows / self.last_run_seconds

    def as_dict(self) -> dict[str, Any]:
        last_run = None
        if self.last_run_rows is not None and self.last_run_seconds is not None:
            last_run = {"rows": self.last_run_rows, "seconds": round(self.last_run_seconds, 3)}
        return {
            "table": self.table,
            "column": self.column,
            "status": self.status,
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
            "rows_failed": self.rows_failed,
            "rate": self.rate,
            "last_run": last_run,
            "key_version": self.key_version,
            "last_error": self.last_error,
            "worker": self.worker,
            "chunks": {"done": self.chunks_done, "total": self.chunks_total},
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
            "key_versions": {str(v): n for v, n in sorted(self.versions.items())},
        }


def status(
    plan: Plan, engine: sa.Engine, *, tables: Sequence[str] | None = None
) -> list[ColumnStatus]:
    """Tracking state, chunk progress and key versions in use per planned column."""
    found: list[ColumnStatus] = []
    with reading(engine) as conn:
        inspector = sa.inspect(conn)
        tracked = tracking_columns(inspector)
        for table_plan in plan.select(tables):
            names = live_columns(inspector, table_plan)
            for column in table_plan.columns:
                entry = ColumnStatus(table_plan.table, column.column)
                if names is None:
                    entry.status = "table not found"
                elif tracked:
                    _read_tracking(conn, entry, tracked)
                if names and column.encrypted_column in names:
                    entry.versions = key_versions(conn, column)
                found.append(entry)
    return found


@contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """:func:`read_only`, with SQLite's "database is locked" said in one line."""
    try:
        with read_only(engine) as conn:
            yield conn
    except sa.exc.OperationalError as exc:
        if engine.dialect.name != "sqlite" or not is_transient(exc):
            raise
        waited = database.SQLITE_BUSY_TIMEOUT_MS / 1000
        raise DatabaseError(
            f"the database stayed locked by another connection for {waited:g} s (a commit in "
            "progress, or BEGIN EXCLUSIVE): run the command again in a moment"
        ) from None


def tracking_columns(inspector: sa.Inspector) -> frozenset[str]:
    """The columns of ``encryption_migrations`` as it exists (empty without the table)."""
    if not inspector.has_table(migrations.name):
        return frozenset()
    return frozenset(c["name"] for c in inspector.get_columns(migrations.name))


def live_columns(inspector: sa.Inspector, table: TablePlan) -> set[str] | None:
    """The columns of ``table`` in the database, or None when it has no such table."""
    if not inspector.has_table(table.table_name, schema=table.schema_name):
        return None
    return {c["name"] for c in inspector.get_columns(table.table_name, schema=table.schema_name)}


def _read_tracking(conn: sa.Connection, entry: ColumnStatus, tracked: frozenset[str]) -> None:
    names = [name for name in _TRACKED if name in tracked]
    row = (
        conn.execute(
            sa.select(*(migrations.c[name] for name in names)).where(
                migrations.c.table_name == entry.table, migrations.c.column_name == entry.column
            )
        )
        .mappings()
        .first()
    )
    if row is not None:
        for name in names:
            setattr(entry, name, row[name])
        entry.rows_done = entry.rows_done or 0
        entry.rows_failed = entry.rows_failed or 0
    counts = conn.execute(
        sa.select(chunks.c.status, sa.func.count(), sa.func.sum(chunks.c.rows_done))
        .where(chunks.c.table_name == entry.table, chunks.c.operation == "encrypt")
        .group_by(chunks.c.status)
    ).all()
    entry.chunks_total = sum(n for _, n, _ in counts)
    entry.chunks_done = sum(n for s, n, _ in counts if s == ChunkStatus.COMPLETED.value)
    if entry.status == MigrationStatus.RUNNING.value:
        entry.rows_done = max(entry.rows_done, int(sum(d or 0 for _, _, d in counts)))


def key_versions(conn: sa.Connection, column: ColumnPlan) -> Counter[int]:
    """How many values of ``column`` are under each key version, from the headers in SQL.

    SQL cuts the header off each value and counts the distinct ones; the
    envelope's own reader tells their versions (values that are not an envelope
    are not counted).
    """
    prep = conn.dialect.identifier_preparer
    table = prep.quote(column.table_name)
    if column.schema_name:
        table = f"{prep.quote_schema(column.schema_name)}.{table}"
    name = prep.quote(column.encrypted_column)
    # Text storage: the first base64 characters hold the header (and one nonce byte).
    size = HEADER_TEXT_SIZE if column.storage == "text" else HEADER_SIZE
    head = f"substr({name}, 1, {size})"
    sql = f"SELECT {head}, count(*) FROM {table} WHERE {name} IS NOT NULL GROUP BY {head}"
    found: Counter[int] = Counter()
    for stored, count in conn.exec_driver_sql(sql):
        version = envelope_version(stored)
        if version is not None:
            found[version] += count
    return found


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One live worker of a run, from its last heartbeat (at most a second old while it runs)."""

    worker: str
    host: str
    pid: int
    operation: str
    state: str  # running, paused, throttled
    chunk_id: int | None
    batch_size: int | None
    last_batch_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    throttled_reason: str | None
    throttled_since: dt.datetime | None
    throttled_seconds: float

    def as_dict(self) -> dict[str, Any]:
        def when(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "worker": self.worker,
            "host": self.host,
            "pid": self.pid,
            "operation": self.operation,
            "state": self.state,
            "chunk": self.chunk_id,
            "batch_size": self.batch_size,
            "last_batch_at": when(self.last_batch_at),
            "heartbeat_at": when(self.heartbeat_at),
            "throttled_reason": self.throttled_reason,
            "throttled_since": when(self.throttled_since),
            "throttled_seconds": round(self.throttled_seconds, 1),
        }


@dataclass(frozen=True, slots=True)
class RunState:
    """What a table's runs were asked (pause, stop) and who works on it now."""

    table: str
    control: str  # running, paused, stopped
    requested_by: str | None
    requested_at: dt.datetime | None
    workers: tuple[WorkerStatus, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.control,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
            "workers": [w.as_dict() for w in self.workers],
        }


def run_states(
    plan: Plan, engine: sa.Engine, *, tables: Sequence[str] | None = None
) -> dict[str, RunState]:
    """Per planned table: the control request in force and the workers' heartbeats.

    Empty when the control tables do not exist yet (no run of this release so far).
    """
    found: dict[str, RunState] = {}
    with reading(engine) as conn:
        inspector = sa.inspect(conn)
        if not (inspector.has_table(control.name) and inspector.has_table(workers.name)):
            return found
        for table_plan in plan.select(tables):
            request = current_request(conn, table_plan.table)
            rows = conn.execute(
                sa.select(workers)
                .where(workers.c.table_name == table_plan.table)
                .order_by(workers.c.worker)
            ).mappings()
            found[table_plan.table] = RunState(
                table_plan.table,
                request.state.value,
                request.requested_by,
                request.requested_at,
                tuple(_worker(row) for row in rows),
            )
    return found


def _worker(row: Any) -> WorkerStatus:
    def utc(value: dt.datetime | None) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value and value.tzinfo is None else value

    return WorkerStatus(
        worker=row["worker"],
        host=row["host"],
        pid=row["pid"],
        operation=row["operation"],
        state=row["state"],
        chunk_id=row["chunk_id"],
        batch_size=row["batch_size"],
        last_batch_at=utc(row["last_batch_at"]),
        heartbeat_at=utc(row["heartbeat_at"]),
        throttled_reason=row["throttled_reason"],
        throttled_since=utc(row["throttled_since"]),
        throttled_seconds=float(row["throttled_seconds"] or 0.0),
    )
