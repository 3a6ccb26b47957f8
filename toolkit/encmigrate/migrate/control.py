"""Control of running migrations through the database: pause, resume, stop, and heartbeats.

``encmigrate pause|resume|stop`` write a request in
``encryption_migration_control`` from any host; no signal and no process list
is needed. Every worker reads it between batches (at most once a second,
:class:`RunControl`), so a batch in flight always finishes first:

* ``paused``: the worker waits, holding no row lock, its heartbeat and its
  chunk's lease kept fresh (a paused run is still the table's live run);
* ``stopped``: the worker ends after its batch and the run exits as after
  Ctrl-C, progress saved. A stop applies to the runs that started before it
  (database time): running ``migrate-data`` again is the way to resume.

The newest request of a table's own row and of the ``*`` row (every table)
applies, so ``pause`` then ``resume --table a`` runs ``a`` only.

Each worker keeps a row in ``encryption_migration_workers`` (host, pid,
chunk, last batch, throttled reason and since when), written at most once a
second between batches and deleted when it ends: what ``status`` shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.migrate.throttle import Throttle
from encmigrate.tracking import ALL_TABLES, ChunkStatus, ControlState, chunks, control, workers

__all__ = ["Request", "RunControl", "current_request", "ensure_tables", "request"]

#: Seconds between two reads of the control table, and between two heartbeats.
POLL_SECONDS = 1.0


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite and MariaDB give naive datetimes back: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def database_now(conn: sa.Connection) -> dt.datetime:
    """The database's clock (one clock for every host); UTC here on SQLite.

    On MariaDB/MySQL ``UTC_TIMESTAMP(6)``, kept to the microsecond by the tracking
    tables' ``DATETIME(6)``: a run's start and a stop request are compared at the same
    precision (a request stored in whole seconds fell before a run started in the same
    second, and its stop was taken for an earlier run's).
    """
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.select(sa.func.now())).scalar_one()
        return _utc(value) or dt.datetime.now(dt.UTC)
    if conn.dialect.name in MYSQL_DIALECTS:
        value = conn.execute(sa.select(sa.func.utc_timestamp(6))).scalar_one()
        return _utc(value) or dt.datetime.now(dt.UTC)
    return dt.datetime.now(dt.UTC)


def ensure_tables(engine: sa.Engine) -> None:
    """Create the control and workers tables when absent.

    Step 1 creates them with the other tracking tables; installations whose
    step 1 came before them get them here, on the first run.
    """
    for table in (control, workers):
        try:
            with engine.begin() as conn:
                table.create(conn, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another process created it between the check and the CREATE.
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(table.name):
                    raise


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """The request that applies to a table (``running`` when none was made)."""

    state: ControlState = ControlState.RUNNING
    requested_by: str | None = None
    requested_at: dt.datetime | None = None


def who() -> str:
    """``user@host:pid``: who asked, for status and the stopped run's report."""
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def request(engine: sa.Engine, state: ControlState, table: str | None) -> Request:
    """Record ``state`` for ``table`` (None: every table); creates the table when absent."""
    ensure_tables(engine)
    name = table or ALL_TABLES
    with engine.begin() as conn:
        now = database_now(conn)
        conn.execute(control.delete().where(control.c.table_name == name))
        conn.execute(
            control.insert().values(
                table_name=name, state=state.value, requested_by=who(), requested_at=now
            )
        )
    return Request(state, who(), now)


def current_request(conn: sa.Connection, table: str) -> Request:
    """The newest request of ``table``'s row and the ``*`` row (none: running)."""
    rows = conn.execute(
        sa.select(control.c.state, control.c.requested_by, control.c.requested_at).where(
            control.c.table_name.in_([table, ALL_TABLES])
        )
    ).all()
    newest = max(rows, key=lambda r: _utc(r.requested_at) or dt.datetime.min.replace(tzinfo=dt.UTC),
                 default=None)  # fmt: skip
    if newest is None:
        return Request()
    return Request(ControlState(newest.state), newest.requested_by, _utc(newest.requested_at))


@dataclasses.dataclass(slots=True)
class _Worker:
    chunk_id: int | None = None
    last_batch_at: dt.datetime | None = None
    beat_at: float | None = None


class RunControl:
    """One run's side of the control table, its workers' heartbeats and its throttle.

    ``between_batches`` is what ``TableRun.pause`` calls after each batch:
    a stop ends the run, a pause waits, a throttle waits; the heartbeat is
    written at most once a second per worker.
    """

    def __init__(
        self,
        engine: sa.Engine,
        table: str,
        operation: str,
        *,
        throttle: Throttle | None = None,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.table = table
        self.operation = operation
        self.throttle = throttle
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.stopped_by: str | None = None
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._request = Request()
        self._read_at: float | None = None
        with engine.connect() as conn:
            self.started_at = database_now(conn)

    # -- what the workers call ------------------------------------------------------

    def worker_started(self, worker: str) -> None:
        with self._lock:
            self._workers.setdefault(worker, _Worker())

    def worker_on(self, worker: str, chunk_id: int | None) -> None:
        """``worker`` now works ``chunk_id`` (None: a catch-up pass)."""
        with self._lock:
            self._workers.setdefault(worker, _Worker()).chunk_id = chunk_id

    def batch_committed(self, worker: str) -> None:
        with self._lock:
            self._workers.setdefault(worker, _Worker()).last_batch_at = dt.datetime.now(dt.UTC)

    def worker_ended(self, worker: str) -> None:
        """Delete the worker's row (best effort: a stale row shows an old heartbeat)."""
        with self._lock:
            self._workers.pop(worker, None)
        with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.worker == worker))

    def between_batches(
        self,
        stop: threading.Event,
        worker: str,
        batch_size: int,
        on_wait: Callable[[str, str], None] | None = None,
    ) -> None:
        """Stop, pause or throttle as asked; then beat. ``on_wait(state, reason)`` while waiting."""
        state = self._state(force=False)
        while not stop.is_set() and state is ControlState.PAUSED:
            reason = f"paused by {self._request.requested_by}"
            self._beat(worker, batch_size, "paused", reason, force=False)
            if on_wait is not None:
                on_wait("paused", reason)
            stop.wait(POLL_SECONDS)
            state = self._state(force=True)
        if state is ControlState.STOPPED:
            self.stopped_by = self._request.requested_by or "unknown"
            stop.set()
            return
        if self.throttle is not None and self.throttle.check() is not None:

            def waiting(reason: str) -> None:
                self._beat(worker, batch_size, "throttled", reason, force=False)
                if on_wait is not None:
                    on_wait("throttled", reason)

            self.throttle.wait(stop, waiting)
        self._beat(worker, batch_size, "running", None, force=False)

    # -- the control table ----------------------------------------------------------

    def _state(self, *, force: bool) -> ControlState:
        now = self.clock()
        if force or self._read_at is None or now - self._read_at >= POLL_SECONDS:
            self._read_at = now
            try:
                with self.engine.connect() as conn:
                    self._request = current_request(conn, self.table)
            except sa.exc.SQLAlchemyError:
                pass  # the last answer stands; the batch's own retries deal with the database
        found = self._request
        if found.state is ControlState.STOPPED and (
            found.requested_at is not None and found.requested_at < self.started_at
        ):
            return ControlState.RUNNING  # a stop of earlier runs, not of this one
        return found.state

    # -- heartbeats -----------------------------------------------------------------

    def _beat(
        self, worker: str, batch_size: int, state: str, reason: str | None, *, force: bool
    ) -> None:
        now = self.clock()
        with self._lock:
            entry = self._workers.setdefault(worker, _Worker())
            if not force and entry.beat_at is not None and now - entry.beat_at < POLL_SECONDS:
                return
            entry.beat_at = now
            chunk_id, last_batch_at = entry.chunk_id, entry.last_batch_at
        throttle = self.throttle
        since = None
        if throttle is not None and throttle.since is not None and state == "throttled":
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.clock() - throttle.since)
        values = {
            "table_name": self.table,
            "operation": self.operation,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": state,
            "chunk_id": chunk_id,
            "batch_size": batch_size,
            "started_at": self.started_at,
            "last_batch_at": last_batch_at,
            "heartbeat_at": dt.datetime.now(dt.UTC),
            "throttled_reason": reason,
            "throttled_since": since if state == "throttled" else None,
            "throttled_seconds": throttle.throttled_seconds if throttle is not None else 0.0,
        }
        try:
            with self.engine.begin() as conn:
                updated = conn.execute(
                    workers.update().where(workers.c.worker == worker).values(**values)
                ).rowcount
                if not updated:
                    conn.execute(workers.insert().values(worker=worker, **values))
                if state != "running" and chunk_id is not None:
                    self._keep_lease(conn, worker, chunk_id)
        except sa.exc.SQLAlchemyError:
            pass  # a heartbeat is advice for status; never a reason to fail a run

    def _keep_lease(self, conn: sa.Connection, worker: str, chunk_id: int) -> None:
        """A paused or throttled worker still owns its chunk: its lease must not run out."""
        now = dt.datetime.now(dt.UTC)
        conn.execute(
            chunks.update()
            .where(
                chunks.c.table_name == self.table,
                chunks.c.operation == self.operation,
                chunks.c.chunk_id == chunk_id,
                chunks.c.lease_owner == worker,
                chunks.c.status == ChunkStatus.RUNNING.value,
            )
            .values(
                lease_expires_at=now + dt.timedelta(seconds=self.lease_seconds), heartbeat_at=now
            )
        )
