"""Key-range chunks shared by workers, with the database as the only coordinator.

A run of one operation on one table is a set of rows in
``encryption_migration_chunks``. Workers claim chunks with ``FOR UPDATE SKIP
LOCKED``; a claim records the worker's database session (backend pid and
start time), and every batch transaction re-proves ownership (``lease_owner
= me``) while it writes the chunk's cursor. A chunk whose owner's session is
gone (killed process, terminated backend) is reclaimed at once; one whose
lease expired (a host that hangs with its session open) after the lease.

MariaDB: the same, with the connection id (``CONNECTION_ID()``) for the
session; whether it is still open is a named lock (``GET_LOCK``) that the
session takes on its first claim or checkpoint for (worker, connection id)
and the server frees when the session ends: connection ids start again from
1 after a restart, so an id alone would let an unrelated session make a dead
run's chunk look live until its lease ran out. ``SKIP LOCKED`` from 10.6 on.
``--workers N`` and ``--join`` work as on PostgreSQL (helper processes, each
with its own sessions), and a second plain ``migrate-data`` on a table with a
live run is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import RefusedError
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.table import TableWork
from encmigrate.tracking import ChunkStatus, chunks

__all__ = [
    "Chunk",
    "LostLeaseError",
    "claim_chunk",
    "create_chunks",
    "live_holders",
    "new_worker_id",
    "plan_boundaries",
    "release_chunk",
    "save_progress",
]


class LostLeaseError(Exception):
    """This worker no longer owns the chunk it was writing (another worker took it).

    An internal signal of the migrator, not an EncmigrateError: the batch's
    transaction rolls back and ``TableRun.work_chunks`` logs it and claims the
    next chunk, so it never reaches a caller (errors.py lists it as internal).
    """


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: int
    lower: Cursor | None
    upper: Cursor | None
    cursor: Cursor | None

    @property
    def start(self) -> Cursor | None:
        return self.cursor if self.cursor is not None else self.lower


def new_worker_id(index: int = 0) -> str:
    """``host:pid:tag/n``: readable in `status`, unique per worker."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}/{index}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def plan_boundaries(conn: sa.Connection, work: TableWork, rows_per_chunk: int) -> list[Cursor]:
    """Upper keys of consecutive chunks of about ``rows_per_chunk`` rows each.

    Each boundary costs one index-only step of ``rows_per_chunk`` entries
    (OFFSET here samples the index once; the batches themselves never use it).
    """
    boundaries: list[Cursor] = []
    lower: Cursor | None = None
    while True:
        query = (
            sa.select(*work.primary_key)
            .where(*work.key_range(lower, None))
            .order_by(*work.primary_key)
            .offset(rows_per_chunk - 1)
            .limit(1)
        )
        row = conn.execute(query).first()
        if row is None:
            return boundaries
        lower = tuple(row)
        boundaries.append(lower)


def create_chunks(
    conn: sa.Connection, work: TableWork, operation: str, boundaries: Sequence[Cursor]
) -> int:
    """Replace the chunks of (table, operation) with fresh ones; returns their count."""
    conn.execute(
        chunks.delete().where(chunks.c.table_name == work.name, chunks.c.operation == operation)
    )
    edges: list[Cursor | None] = [None, *boundaries, None]
    rows = [
        {
            "table_name": work.name,
            "operation": operation,
            "chunk_id": i,
            "columns": work.column_names,
            "lower_key": work.keys.to_json(edges[i]),
            "upper_key": work.keys.to_json(edges[i + 1]),
            "status": ChunkStatus.PENDING.value,
            "updated_at": _now(),
        }
        for i in range(len(edges) - 1)
    ]
    conn.execute(chunks.insert(), rows)
    return len(rows)


#: Prefix of the named lock a MariaDB session holds while it may own chunks (the name is
#: capped at 64 characters: the prefix and a SHA-1 of "worker:connection id").
OWNER_LOCK_PREFIX = "encmigrate-owner:"


def owner_lock_name(worker: str, connection_id: int) -> str:
    """The named lock that proves (worker, connection id) is a live session on MariaDB."""
    digest = hashlib.sha1(f"{worker}:{connection_id}".encode(), usedforsecurity=False)
    return OWNER_LOCK_PREFIX + digest.hexdigest()


def _owner_alive(conn: sa.Connection) -> sa.ColumnElement[bool]:
    if conn.dialect.name in MYSQL_DIALECTS:
        # The holder's session still holds its named lock (owner_lock_name, computed from
        # the row); the server frees named locks when a session ends or it restarts.
        # Named locks are server-wide: no privilege is needed to see another user's.
        name = sa.func.concat(
            OWNER_LOCK_PREFIX,
            sa.func.sha1(sa.func.concat(chunks.c.lease_owner, ":", chunks.c.owner_pid)),
        )
        return sa.func.is_used_lock(name).is_not(None)
    if conn.dialect.name != "postgresql":
        return sa.false()
    activity = sa.table("pg_stat_activity", sa.column("pid"), sa.column("backend_start"))
    return sa.exists(
        sa.select(sa.literal(1))
        .select_from(activity)
        .where(
            activity.c.pid == chunks.c.owner_pid,
            activity.c.backend_start == chunks.c.owner_backend_start,
        )
    )


def _claimable(conn: sa.Connection, now: dt.datetime) -> sa.ColumnElement[bool]:
    running = chunks.c.status == ChunkStatus.RUNNING.value
    return sa.or_(
        chunks.c.status == ChunkStatus.PENDING.value,
        sa.and_(running, sa.or_(chunks.c.lease_expires_at < now, sa.not_(_owner_alive(conn)))),
    )


_SESSION = "encmigrate.session"
_OWNER_LOCKS = "encmigrate.owner_locks"  # workers whose owner lock the session holds


def _skip_locked(conn: sa.Connection) -> bool:
    """MariaDB 10.6+ has ``SKIP LOCKED`` (MySQL 8.0 too); older servers wait instead."""
    version = conn.dialect.server_version_info or ()
    minimum = (10, 6) if getattr(conn.dialect, "is_mariadb", False) else (8, 0)
    return conn.dialect.name in MYSQL_DIALECTS and tuple(version[:2]) >= minimum


def _hold_owner_lock(conn: sa.Connection, worker: str, connection_id: int | None) -> None:
    """On MariaDB, make ``conn``'s session hold ``worker``'s owner lock (once per session).

    ``GET_LOCK(name, 0)`` does not wait: the name is this session's own, and no other
    live session can hold it. Were it refused, the chunk would look abandoned and be
    taken over, which the next checkpoint finds (LostLeaseError): nothing is lost.
    """
    if connection_id is None or conn.dialect.name not in MYSQL_DIALECTS:
        return
    held: set[str] = conn.info.setdefault(_OWNER_LOCKS, set())
    if worker not in held:
        name = owner_lock_name(worker, connection_id)
        conn.execute(sa.text("SELECT GET_LOCK(:name, 0)"), {"name": name})
        held.add(worker)


def _session(conn: sa.Connection) -> tuple[int | None, dt.datetime | None]:
    """The database session (backend pid, start time) of ``conn``, asked once per connection.

    Kept in the pool's per-DBAPI-connection ``info``: a reconnected connection
    is a new session and asks again.
    """
    if conn.dialect.name in MYSQL_DIALECTS:
        # No session start time: connection ids restart from 1 with the server, and
        # whether the session lives is its owner lock (_hold_owner_lock).
        cached = conn.info.get(_SESSION)
        if cached is None:
            cached = conn.info[_SESSION] = (
                int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()),
                None,
            )
        return cached
    if conn.dialect.name != "postgresql":
        return None, None
    cached = conn.info.get(_SESSION)
    if cached is None:
        row = conn.exec_driver_sql(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).one()
        cached = conn.info[_SESSION] = (int(row[0]), row[1])
    return cached


def claim_chunk(
    conn: sa.Connection, work: TableWork, operation: str, worker: str, lease_seconds: float
) -> Chunk | None:
    """Lease the next claimable chunk to ``worker`` (in the caller's transaction)."""
    now = _now()
    query = (
        sa.select(chunks)
        .where(
            chunks.c.table_name == work.name,
            chunks.c.operation == operation,
            _claimable(conn, now),
        )
        .order_by(chunks.c.chunk_id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql" or _skip_locked(conn):
        query = query.with_for_update(skip_locked=True)
    elif conn.dialect.name in MYSQL_DIALECTS:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    pid, backend_start = _session(conn)
    _hold_owner_lock(conn, worker, pid)
    conn.execute(
        chunks.update()
        .where(
            chunks.c.table_name == work.name,
            chunks.c.operation == operation,
            chunks.c.chunk_id == row["chunk_id"],
        )
        .values(
            status=ChunkStatus.RUNNING.value,
            lease_owner=worker,
            owner_pid=pid,
            owner_backend_start=backend_start,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            attempts=chunks.c.attempts + 1,
            updated_at=now,
        )
    )
    return Chunk(
        chunk_id=row["chunk_id"],
        lower=work.keys.from_json(row["lower_key"]),
        upper=work.keys.from_json(row["upper_key"]),
        cursor=work.keys.from_json(row["cursor"]),
    )


def _progress_statement(with_cursor: bool, finished: bool) -> sa.Update:
    """The checkpoint UPDATE, built once per shape (a batch saves one; building it each
    time was most of its cost in Python); values are bound per call."""
    values: dict[str, Any] = {
        "rows_done": chunks.c.rows_done + sa.bindparam("p_done", type_=sa.BigInteger()),
        "rows_failed": chunks.c.rows_failed + sa.bindparam("p_failed", type_=sa.BigInteger()),
        "heartbeat_at": sa.bindparam("p_now", type_=chunks.c.heartbeat_at.type),
        "lease_expires_at": sa.bindparam("p_expires", type_=chunks.c.lease_expires_at.type),
        "owner_pid": sa.bindparam("p_pid", type_=chunks.c.owner_pid.type),
        "owner_backend_start": sa.bindparam(
            "p_backend_start", type_=chunks.c.owner_backend_start.type
        ),
        "updated_at": sa.bindparam("p_now", type_=chunks.c.updated_at.type),
    }
    if with_cursor:
        values["cursor"] = sa.bindparam("p_cursor", type_=chunks.c.cursor.type)
    if finished:
        values["status"] = ChunkStatus.COMPLETED.value
    return (
        chunks.update()
        .where(
            chunks.c.table_name == sa.bindparam("p_table", type_=chunks.c.table_name.type),
            chunks.c.operation == sa.bindparam("p_operation", type_=chunks.c.operation.type),
            chunks.c.chunk_id == sa.bindparam("p_chunk", type_=chunks.c.chunk_id.type),
            chunks.c.lease_owner == sa.bindparam("p_worker", type_=chunks.c.lease_owner.type),
            chunks.c.status == ChunkStatus.RUNNING.value,
        )
        .values(values)
    )


_PROGRESS = {
    (with_cursor, finished): _progress_statement(with_cursor, finished)
    for with_cursor in (False, True)
    for finished in (False, True)
}


def save_progress(
    conn: sa.Connection,
    work: TableWork,
    operation: str,
    chunk: Chunk,
    worker: str,
    *,
    cursor: Cursor | None,
    rows_done: int,
    rows_failed: int,
    finished: bool,
    lease_seconds: float,
) -> None:
    """The checkpoint, in the batch's own transaction; LostLeaseError if no longer ours."""
    now = _now()
    pid, backend_start = _session(conn)
    _hold_owner_lock(conn, worker, pid)
    params: dict[str, Any] = {
        "p_done": rows_done,
        "p_failed": rows_failed,
        "p_now": now,
        "p_expires": now + dt.timedelta(seconds=lease_seconds),
        "p_pid": pid,
        "p_backend_start": backend_start,
        "p_table": work.name,
        "p_operation": operation,
        "p_chunk": chunk.chunk_id,
        "p_worker": worker,
    }
    if cursor is not None:
        params["p_cursor"] = work.keys.to_json(cursor)
    updated = conn.execute(_PROGRESS[cursor is not None, finished], params)
    if updated.rowcount != 1:
        raise LostLeaseError(
            f"chunk {chunk.chunk_id} of {work.name} was taken over by another worker"
        )


def release_chunk(
    conn: sa.Connection, work: TableWork, operation: str, chunk: Chunk, worker: str
) -> None:
    """Give an unfinished chunk back (pending, cursor kept) if ``worker`` still holds it."""
    conn.execute(
        chunks.update()
        .where(
            chunks.c.table_name == work.name,
            chunks.c.operation == operation,
            chunks.c.chunk_id == chunk.chunk_id,
            chunks.c.lease_owner == worker,
            chunks.c.status == ChunkStatus.RUNNING.value,
        )
        .values(
            status=ChunkStatus.PENDING.value,
            lease_owner=None,
            owner_pid=None,
            owner_backend_start=None,
            lease_expires_at=None,
            updated_at=_now(),
        )
    )


def live_holders(conn: sa.Connection, work: TableWork, operation: str) -> list[dict[str, Any]]:
    """Chunks of (table, operation) held right now by a live worker."""
    now = _now()
    query = sa.select(chunks.c.chunk_id, chunks.c.lease_owner, chunks.c.heartbeat_at).where(
        chunks.c.table_name == work.name,
        chunks.c.operation == operation,
        chunks.c.status == ChunkStatus.RUNNING.value,
        chunks.c.lease_expires_at >= now,
    )
    if conn.dialect.name == "postgresql" or conn.dialect.name in MYSQL_DIALECTS:
        query = query.where(_owner_alive(conn))
    else:
        return []  # SQLite: one process at a time holds the write lock; leases only
    return [dict(row) for row in conn.execute(query).mappings()]


def chunk_counts(conn: sa.Connection, work: TableWork, operation: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(chunks.c.status, sa.func.count())
        .where(chunks.c.table_name == work.name, chunks.c.operation == operation)
        .group_by(chunks.c.status)
    ).all()
    return {status: count for status, count in rows}


def refuse_second_runner(holders: list[dict[str, Any]], work: TableWork, operation: str) -> None:
    if not holders:
        return
    who = "; ".join(f"chunk {h['chunk_id']} by {h['lease_owner']}" for h in holders[:5])
    raise RefusedError(
        f"{work.name}: another {operation} run is live ({who}); "
        "add workers with `encmigrate migrate-data --join`, or wait for it to finish"
    )
