"""``status``: where each planned column stands, read from the database alone.

The key-version histogram reads the envelope header in SQL (no decryption,
no key needed), so an operator can tell when an old version can be retired
or destroyed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.envelope import envelope_from_text
from encmigrate.plan import ColumnPlan, Plan
from encmigrate.tracking import chunks, migrations

__all__ = ["ColumnStatus", "key_versions", "status"]


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
    chunks_done: int = 0
    chunks_total: int = 0
    versions: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float | None:
        """Rows per second over the run so far (None before it started)."""
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at
        if end is None:
            return None
        seconds = (end - self.started_at).total_seconds()
        return self.rows_done / seconds if seconds > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "status": self.status,
            "rows_total": self.rows_total,
            "rows_done": self.rows_done,
            "rows_failed": self.rows_failed,
            "rate": self.rate,
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
    inspector = sa.inspect(engine)
    tracked = inspector.has_table(migrations.name)
    with engine.connect() as conn:
        for table_plan in plan.select(tables):
            names = {
                c["name"]
                for c in inspector.get_columns(table_plan.table_name, schema=table_plan.schema_name)
            }
            for column in table_plan.columns:
                entry = ColumnStatus(table_plan.table, column.column)
                if tracked:
                    _read_tracking(conn, entry)
                if column.encrypted_column in names:
                    entry.versions = key_versions(conn, column)
                found.append(entry)
    return found


def _read_tracking(conn: sa.Connection, entry: ColumnStatus) -> None:
    row = (
        conn.execute(
            sa.select(migrations).where(
                migrations.c.table_name == entry.table, migrations.c.column_name == entry.column
            )
        )
        .mappings()
        .first()
    )
    if row is not None:
        for name in (
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
        ):
            setattr(entry, name, row[name])
        entry.rows_done = entry.rows_done or 0
        entry.rows_failed = entry.rows_failed or 0
    counts = conn.execute(
        sa.select(chunks.c.status, sa.func.count(), sa.func.sum(chunks.c.rows_done))
        .where(chunks.c.table_name == entry.table, chunks.c.operation == "encrypt")
        .group_by(chunks.c.status)
    ).all()
    entry.chunks_total = sum(n for _, n, _ in counts)
    entry.chunks_done = sum(n for s, n, _ in counts if s == "completed")
    if entry.status == "running":
        entry.rows_done = max(entry.rows_done, int(sum(d or 0 for _, _, d in counts)))


def key_versions(conn: sa.Connection, column: ColumnPlan) -> Counter[int]:
    """How many values of ``column`` are under each key version, from the headers in SQL."""
    dialect = conn.dialect.name
    prep = conn.dialect.identifier_preparer
    table = prep.quote(column.table_name)
    if column.schema_name:
        table = f"{prep.quote_schema(column.schema_name)}.{table}"
    name = prep.quote(column.encrypted_column)
    found: Counter[int] = Counter()
    if column.storage == "text":
        # The first 8 base64 characters are the 5 header bytes and one nonce byte.
        head = f"substr({name}, 1, 8)"
        sql = f"SELECT {head}, count(*) FROM {table} WHERE {name} IS NOT NULL GROUP BY {head}"
        for prefix, count in conn.exec_driver_sql(sql):
            raw = envelope_from_text(prefix)
            if raw is not None and len(raw) >= 5:
                found[int.from_bytes(raw[1:5], "big")] += count
        return found
    if dialect == "postgresql":
        version = (
            f"(get_byte({name}, 1)::bigint << 24) + (get_byte({name}, 2) << 16) "
            f"+ (get_byte({name}, 3) << 8) + get_byte({name}, 4)"
        )
        sql = (
            f"SELECT {version}, count(*) FROM {table} "
            f"WHERE {name} IS NOT NULL AND length({name}) >= 5 GROUP BY 1"
        )
        for value, count in conn.exec_driver_sql(sql):
            found[int(value)] += count
    else:
        sql = (
            f"SELECT hex(substr({name}, 2, 4)), count(*) FROM {table} "
            f"WHERE {name} IS NOT NULL GROUP BY 1"
        )
        for value, count in conn.exec_driver_sql(sql):
            if value:
                found[int(value, 16)] += count
    return found
