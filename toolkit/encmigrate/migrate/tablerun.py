"""One run of one operation (encrypt, rewrap, decrypt-back) over one table.

The run goes through the table's chunks with any number of workers (this
process, its helper processes for ``--workers`` (processes.py), processes
elsewhere that ``--join``), then through catch-up passes (passes.py) that
finish the rows the trigger cleared behind the cursors (rows updated during
the run) and rows inserted meanwhile. Each batch is one short transaction
that locks its rows, writes their shadows and its checkpoint together; on
PostgreSQL a worker overlaps one batch's write with the next one's read and
encryption (pipeline.py).

passes.py, pipeline.py and processes.py see a run only as a ``loop.BatchLoop``
and never import this module: a helper process builds its run by :func:`helper_main`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from encmigrate.errors import DatabaseError, EncmigrateError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate import bookkeeping, mysql, passes, processes
from encmigrate.migrate import chunks as chunking
from encmigrate.migrate.batch import BatchResult, PreparedBatch, set_timeouts
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.pacing import Pacing
from encmigrate.migrate.pipeline import Pipeline
from encmigrate.migrate.rekey import ENCRYPT, Operation
from encmigrate.migrate.report import (
    MigrateOptions,
    Progress,
    ProgressCallback,
    TableReport,
    run_workers,
)
from encmigrate.migrate.table import TableWork

__all__ = ["TableRun", "helper_main"]

logger = logging.getLogger(__name__)

# The code a helper process runs (processes.py): it rebuilds this run as a TableRun.
_HELPER_ENTRY = (
    "import sys; from encmigrate.migrate.tablerun import helper_main; sys.exit(helper_main())"
)


class _Tally:
    """Counters shared by the workers of one run (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows_done = 0
        self.rows_failed = 0
        self.batches = 0

    def add(self, result: BatchResult) -> None:
        with self._lock:
            self.rows_done += result.rows_written
            self.rows_failed += result.rows_failed
            self.batches += 1


class TableRun:
    """One run of one operation over one table: chunks, catch-up, bookkeeping (a BatchLoop)."""

    def __init__(
        self,
        engine: sa.Engine,
        work: TableWork,
        keyring: Keyring,
        options: MigrateOptions,
        progress: ProgressCallback | None,
        stop: threading.Event,
        operation: Operation = ENCRYPT,
    ) -> None:
        self.op = operation
        self.engine = engine
        self.work = work
        self.keyring = keyring
        self.opts = options
        self.progress = progress
        self.stop = stop
        self.tally = _Tally()
        self.report = TableReport(work.name, work.column_names, dry_run=options.dry_run)
        self.started = time.monotonic()
        self.batches_left = options.max_batches
        self._budget_lock = threading.Lock()
        self.failed_rows: int | None = None  # from the failures table, once the run is done
        self.census: bookkeeping.Census | None = None  # the end-of-run count, when current
        self.on_batch: Callable[[BatchResult], None] | None = None  # a worker process reports
        self.pacing = Pacing(engine, work.name, operation.name, options)

    # -- the whole run -----------------------------------------------------------

    def run(self) -> TableReport:
        try:
            if self.opts.dry_run:
                with self.engine.connect() as conn:
                    self.report.rows_total = conn.execute(self.count_pending()).scalar_one()
                passes.dry_run(self)
            else:
                # Helper processes start first: their imports overlap this process's setup.
                helpers = self._start_helpers()
                try:
                    self._setup()
                    self.pacing.start()
                    self._run_chunks(helpers)
                finally:
                    if helpers is not None:
                        helpers.dismiss()
                if self.opts.join and self._others_live():
                    pass  # the run's owner waits for every chunk, then catches up and finishes
                else:
                    self._wait_for_other_workers()
                    if not self.halted():
                        self._catch_up()
                    self._finish()
        except EncmigrateError as exc:
            self._record_failure(exc)
            raise
        except Exception as exc:
            # The batch write runs on the raw driver cursor (binary parameters), so the
            # driver's own errors arrive unwrapped by SQLAlchemy: both mean "database error".
            if not isinstance(exc, sa.exc.SQLAlchemyError | self.engine.dialect.loaded_dbapi.Error):
                raise
            error = DatabaseError(
                bookkeeping.database_failure(self.work.name, exc, self.op.command)
            )
            self._record_failure(error)
            raise error from None
        self.report.rows_done = self.tally.rows_done
        self.report.rows_failed = (
            self.tally.rows_failed if self.failed_rows is None else self.failed_rows
        )
        self.report.batches = self.tally.batches
        self.report.seconds = time.monotonic() - self.started
        self.report.interrupted = self.stop.is_set()
        self.report.stopped_by = self.pacing.stopped_by
        self.report.throttled_seconds = self.pacing.throttled_seconds
        self.report.batch_sizes = self.pacing.batch_sizes
        return self.report

    def halted(self) -> bool:
        return self.stop.is_set() or self.batches_left == 0

    def take_batch(self) -> bool:
        """One unit of the --max-batches budget; False when it is spent."""
        with self._budget_lock:
            if self.batches_left is None:
                return True
            if self.batches_left <= 0:
                return False
            self.batches_left -= 1
            return True

    def give_back_batches(self, count: int) -> None:
        """Return budget units of batches that were rolled back."""
        with self._budget_lock:
            if self.batches_left is not None:
                self.batches_left += count

    def emit(self, phase: str, reason: str | None = None) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    table=self.work.name,
                    phase=phase,
                    rows_done=self.tally.rows_done,
                    rows_total=self.report.rows_total,
                    rows_failed=self.tally.rows_failed,
                    elapsed=time.monotonic() - self.started,
                    throttled_seconds=self.pacing.throttled_seconds,
                    reason=reason,
                )
            )

    # -- setup -------------------------------------------------------------------

    def _setup(self) -> None:
        # Two invocations starting together must not both create chunks: PostgreSQL takes
        # an advisory lock in the setup's transaction, MariaDB a session lock around it.
        key = f"encmigrate:{self.work.name}:{self.op.name}"

        def setup() -> None:
            with self.engine.connect() as conn, self._setup_lock(conn, key), conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
                holders = chunking.live_holders(conn, self.work, self.op.name)
                if not self.opts.join:
                    chunking.refuse_second_runner(holders, self.work, self.op.name)
                counts = chunking.chunk_counts(conn, self.work, self.op.name)
                open_chunks = counts.get("pending", 0) + counts.get("running", 0)
                self.report.rows_total = conn.execute(self.count_pending()).scalar_one()
                if self.opts.restart or (not open_chunks and not self.opts.join):
                    boundaries = chunking.plan_boundaries(conn, self.work, self._chunk_rows())
                    chunking.create_chunks(conn, self.work, self.op.name, boundaries)
                    logger.info("%s: %d chunks", self.work.name, len(boundaries) + 1)
                bookkeeping.mark_running(
                    conn, self.work, self.op, self.keyring, self.opts, self.report.rows_total
                )

        self.opts.retry.run(setup)

    @staticmethod
    def _setup_lock(conn: sa.Connection, key: str) -> contextlib.AbstractContextManager[None]:
        return mysql.setup_lock(conn, key) if mysql.is_mysql(conn) else contextlib.nullcontext()

    def count_pending(self) -> sa.Select[int]:
        return (
            sa.select(sa.func.count())
            .select_from(self.work.table)
            .where(self.op.pending(self.work))
        )

    def _chunk_rows(self) -> int:
        """Rows per chunk: ``rows_per_chunk``, but at least four chunks per worker when the
        table is small, so that every worker gets some (and never under ten batches)."""
        floor = self.opts.batch_size * 10
        rows = max(self.opts.rows_per_chunk, floor)
        if self.opts.workers > 1:
            rows = min(rows, max(floor, -(-self.report.rows_total // (4 * self.opts.workers))))
        return rows

    def _worker_count(self) -> int:
        return max(1, run_workers(self.engine.dialect.name, self.opts.workers))

    def _start_helpers(self) -> processes.Helpers | None:
        """Helper processes for ``--workers N`` (N - 1), started before the run is set up.

        Worker processes instead of threads (processes.py says why); ``--max-batches``
        keeps threads, whose budget is shared in this process. They get the run, or are
        dismissed, once the chunks exist (:meth:`_run_chunks`).
        """
        count = self._worker_count()
        if count > 1 and self.opts.worker_processes and self.batches_left is None:
            return processes.Helpers(self, count - 1, entry=_HELPER_ENTRY)
        return None

    def _run_chunks(self, helpers: processes.Helpers | None = None) -> None:
        count = self._worker_count()
        errors: list[BaseException] = []
        if helpers is not None:
            with self.engine.connect() as conn:
                open_chunks = chunking.chunk_counts(conn, self.work, self.op.name).get("pending", 0)
            # A helper without a chunk would only wait: it is dismissed.
            document = processes.helper_document(
                self.engine, self.work, self.keyring, self.opts, self.op
            )
            helpers.send(document, max(0, min(count, open_chunks) - 1))
            count = 1

        def worker(index: int) -> None:
            try:
                self.work_chunks(chunking.new_worker_id(index))
            except BaseException as exc:  # reported by the caller after join
                errors.append(exc)
                self.stop.set()

        if count == 1:
            worker(0)
        else:
            threads = [
                threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if helpers is not None:
            try:
                helpers.join()
            except EncmigrateError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _others_live(self) -> bool:
        with self.engine.connect() as conn:
            return bool(chunking.live_holders(conn, self.work, self.op.name))

    def _wait_for_other_workers(self) -> None:
        """Joined workers elsewhere may still hold chunks: wait, reclaiming dead ones."""
        while not self.halted():
            with self.engine.connect() as conn:
                counts = chunking.chunk_counts(conn, self.work, self.op.name)
            if not counts.get("pending", 0) and not counts.get("running", 0):
                return
            self.work_chunks(chunking.new_worker_id(99))
            time.sleep(0.5)

    def _catch_up(self) -> None:
        census = self._census() if self.op.backfill else None
        with self.pacing.worker(chunking.new_worker_id(0)):
            caught = passes.catch_up(self, pending=census.pending if census else None)
        # Nothing written since the census: its counts are the table's, no second scan.
        self.census = census if caught.written == 0 else None
        self.report.catch_up_rows += caught.written
        self.report.rows_left, self.report.left_reason = caught.left, caught.reason
        if caught.reason is not None:
            logger.warning("%s: %d rows left: %s", self.work.name, caught.left, caught.reason)

    def _census(self) -> bookkeeping.Census:
        pending = (self.op.catch_up or self.op).pending(self.work)

        def count() -> bookkeeping.Census:
            with self.engine.connect() as conn:
                return bookkeeping.census(conn, self.work, pending)

        return self.opts.retry.run(count)

    def work_chunks(self, worker: str) -> None:
        if not self.opts.dry_run:
            self.pacing.start()  # a helper process's run starts here, not in run()
        with self.pacing.worker(worker):
            self._work_chunks(worker)

    def _work_chunks(self, worker: str) -> None:
        pipelined = self.engine.dialect.name == "postgresql"
        with (
            self.connection() as first,
            self.connection(open_now=pipelined) as second,
            ThreadPoolExecutor(1, thread_name_prefix="encmigrate-writer") as writer,
        ):
            while not self.halted():
                chunk = self.opts.retry.run(lambda: self._claim(first, worker))
                if chunk is None:
                    return
                self.pacing.on_chunk(worker, chunk.chunk_id)
                try:
                    if pipelined:
                        Pipeline(self, (first, second), writer, worker, chunk).run()
                    else:
                        self._work_chunk(first, worker, chunk)
                except chunking.LostLeaseError as lost:
                    logger.warning("%s", lost)
                finally:
                    # A chunk left unfinished (error, stop, --max-batches) goes back to pending:
                    # the session that claimed it may live on in the pool, and a resume from
                    # this same process would otherwise be refused until the lease expires.
                    self._release(chunk, worker)

    def _release(self, chunk: chunking.Chunk, worker: str) -> None:
        try:
            with self.engine.begin() as conn:
                chunking.release_chunk(conn, self.work, self.op.name, chunk, worker)
        except sa.exc.SQLAlchemyError:
            logger.warning("could not release chunk %d of %s", chunk.chunk_id, self.work.name)

    @contextlib.contextmanager
    def connection(self, *, open_now: bool = True) -> Iterator[list[sa.Connection]]:
        """A worker's connection slot; the replacement made after a fault is closed too."""
        connection = [self.engine.connect()] if open_now else []
        try:
            yield connection
        finally:
            if connection:
                connection[0].close()

    def _claim(self, connection: list[sa.Connection], worker: str) -> chunking.Chunk | None:
        conn = self.usable(connection)
        with conn.begin():
            return chunking.claim_chunk(
                conn, self.work, self.op.name, worker, self.opts.lease_seconds
            )

    def usable(self, connection: list[sa.Connection]) -> sa.Connection:
        """The worker's connection, replaced when a fault invalidated it."""
        conn = connection[0]
        if conn.invalidated or conn.closed:
            conn.close()
            connection[0] = self.engine.connect()
        return connection[0]

    def _work_chunk(
        self, connection: list[sa.Connection], worker: str, chunk: chunking.Chunk
    ) -> None:
        """One batch after the other (SQLite: a single writer, nothing to overlap)."""
        cursor = chunk.start
        while not self.stop.is_set():
            if not self.take_batch():
                return
            start = cursor
            limit = self.batch_limit(worker)

            def one_batch(start: Cursor | None = start, limit: int = limit) -> BatchResult:
                conn = self.usable(connection)
                with conn.begin():
                    set_timeouts(conn, self.opts.lock_timeout_ms, self.opts.statement_timeout_ms)
                    prepared = self.op.prepare(conn, self.work, start, chunk.upper, limit)
                    return self.commit_batch(conn, prepared, chunk, worker)

            result = self.opts.retry.run(one_batch)
            self.batch_done(result)
            if result.rows_read < limit:
                return
            cursor = result.last_key
            self.pause()

    def commit_batch(
        self,
        conn: sa.Connection,
        prepared: PreparedBatch,
        chunk: chunking.Chunk,
        worker: str,
    ) -> BatchResult:
        """Write a prepared batch and the chunk's checkpoint, in the batch's transaction."""
        result = prepared.write(conn)
        chunking.save_progress(
            conn,
            self.work,
            self.op.name,
            chunk,
            worker,
            cursor=result.last_key,
            rows_done=result.rows_written,
            rows_failed=result.rows_failed,
            finished=self.pacing.is_last(worker, result.rows_read),
            lease_seconds=self.opts.lease_seconds,
        )
        return result

    def batch_done(self, result: BatchResult, phase: str = "chunks") -> None:
        self.tally.add(result)
        self.emit(phase)
        if self.on_batch is not None:
            self.on_batch(result)
        self.pacing.committed(result.rows_read)

    def batch_limit(self, worker: str | None = None) -> int:
        """The next batch's size: ``--batch-size``, or the adaptive size (pacing.py)."""
        return self.pacing.limit(worker)

    def pause(self) -> None:
        """Between batches: ``--sleep``, then pause/stop requests and the throttle.

        The time spent here is not part of a batch's duration for the adaptive size.
        """
        if self.opts.sleep_ms:
            self.stop.wait(self.opts.sleep_ms / 1000)
        self.pacing.between_batches(self.stop, self.emit)

    # -- bookkeeping ----------------------------------------------------------------

    def _finish(self) -> None:
        if self.halted():
            self.emit("interrupted" if self.stop.is_set() else "paused")
            return

        def finish() -> None:
            with self.engine.begin() as conn:
                self.failed_rows = bookkeeping.record_finish(
                    conn, self.work, self.op, self.keyring, self.census
                )

        self.opts.retry.run(finish)
        self.emit("done")

    def _record_failure(self, error: BaseException) -> None:
        if not self.opts.dry_run:
            bookkeeping.mark_failed(self.engine, self.work, error)


def helper_main() -> int:
    """Entry point of a helper process for ``--workers``: its run is a TableRun."""
    return processes.main(TableRun)
