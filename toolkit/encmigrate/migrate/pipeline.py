"""A worker's batches on PostgreSQL: batch N is written while batch N + 1 is read and encrypted.

One batch after the other leaves a core idle half the time: the server waits
while the client encrypts, the client waits while the server updates. A
worker therefore holds two connections and a writer thread::

    main thread     lock+read N | encrypt N | lock+read N+1 | encrypt N+1 | lock+read N+2 ...
    writer thread                           | update N, checkpoint N, COMMIT | update N+1 ...

Every batch is still one transaction on one connection that locks its rows,
writes them and its checkpoint, and commits (backfill rules 3 and 4 in
docs/architecture.md). Two rules keep the checkpoints a prefix of the key range:

* batch N + 1 is handed to the writer only after batch N committed, so
  commits happen in key order; a batch's rows come after the previous
  batch's cursor, so two open transactions never lock the same row;
* when anything fails, every transaction not yet committed is rolled back
  and the work goes on from the last committed cursor (after the retry
  policy's backoff when the fault is transient and nothing was committed
  since the last fault).

The writer thread spends its time waiting on the server, the main thread
encrypting; each time the writer's reply arrives it must win the GIL back
from a thread that never blocks, which by default takes up to 5 ms
(``sys.getswitchinterval()``): three times per batch, a third of the batch.
:func:`quick_gil_handover` shortens that interval while a run lasts, when the
caller asks for it with ``MigrateOptions.gil_interval`` (the CLI does: one
worker on 1,000,000 rows: 51k -> 76k rows/s, bench/bench_migrate.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa

from encmigrate.migrate import chunks as chunking
from encmigrate.migrate.batch import BatchResult, PreparedBatch, set_timeouts
from encmigrate.migrate.database import is_transient
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.loop import BatchLoop

__all__ = ["QUICK_SWITCH_INTERVAL", "Pipeline", "quick_gil_handover"]

logger = logging.getLogger(__name__)

# Seconds; Python's default is 0.005. The CLI passes it as MigrateOptions.gil_interval.
QUICK_SWITCH_INTERVAL = 0.0001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


@contextlib.contextmanager
def quick_gil_handover(interval: float | None = QUICK_SWITCH_INTERVAL) -> Iterator[None]:
    """A GIL switch interval of at most ``interval`` while at least one run is in this block.

    The interval is process-wide: other threads of the process switch more
    often too while a run lasts (a few percent more overhead for pure-Python
    threads that compete for the GIL, none for a single thread). That is the
    command line's choice to make, not a library's: runs pass
    ``MigrateOptions.gil_interval``, None by default, and None leaves the
    interpreter alone. Nested and concurrent runs restore the previous value
    when the last one leaves.
    """
    if interval is None:
        yield
        return
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
        if interval < sys.getswitchinterval():  # never longer; and setting it again drifts
            sys.setswitchinterval(interval)
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class _FaultAfterProgressError(Exception):
    """A transient fault after some batches committed: go on from the last checkpoint."""


class Pipeline:
    """One worker's pass over one claimed chunk, two batches in flight."""

    def __init__(
        self,
        loop: BatchLoop,
        slots: tuple[list[sa.Connection], list[sa.Connection]],
        writer: ThreadPoolExecutor,
        worker: str,
        chunk: chunking.Chunk,
    ) -> None:
        self.loop = loop
        self.slots = slots
        self.writer = writer
        self.worker = worker
        self.chunk = chunk
        self.committed: Cursor | None = chunk.start  # cursor of the last committed batch
        self.held = 0  # units of the --max-batches budget taken by batches not yet committed

    def run(self) -> None:
        """Work the chunk to its end (or until stopped); raise what cannot be retried."""
        while True:
            try:
                # A fresh retry budget after every fault that followed committed work.
                self.loop.opts.retry.run(self._stretch)
            except _FaultAfterProgressError:
                continue
            return

    def _stretch(self) -> None:
        """Batches from the last committed cursor until the chunk ends, a stop or a fault."""
        loop = self.loop
        cursor = self.committed
        in_flight: Future[BatchResult] | None = None
        opened: tuple[sa.Connection, sa.RootTransaction] | None = None
        progressed = False
        turn = 0
        try:
            while not loop.stop.is_set() and loop.take_batch():
                self.held += 1
                conn = loop.usable(self.slots[turn])
                turn ^= 1
                opened = (conn, conn.begin())
                set_timeouts(conn, loop.opts.lock_timeout_ms, loop.opts.statement_timeout_ms)
                prepared = loop.op.prepare(
                    conn, loop.work, cursor, self.chunk.upper, size := loop.batch_limit(self.worker)
                )
                if in_flight is not None:
                    self._settle(in_flight.result())
                    in_flight, progressed = None, True
                in_flight = self.writer.submit(self._commit, conn, opened[1], prepared)
                opened = None
                if prepared.result.rows_read < size:
                    break
                cursor = prepared.result.last_key
                loop.pause()
            if in_flight is not None:
                self._settle(in_flight.result())
        except BaseException as exc:
            if in_flight is not None:
                with contextlib.suppress(BaseException):  # its own error is the same fault
                    self._settle(in_flight.result())
                    progressed = True
            if opened is not None:
                _rollback(*opened)
            loop.give_back_batches(self.held)  # --max-batches counts committed batches only
            self.held = 0
            if progressed and isinstance(exc, Exception) and is_transient(exc):
                logger.warning(
                    "transient database fault (%s); going on from the last checkpoint",
                    type(exc).__name__,
                )
                raise _FaultAfterProgressError from exc
            raise

    def _commit(
        self, conn: sa.Connection, transaction: sa.RootTransaction, prepared: PreparedBatch
    ) -> BatchResult:
        """In the writer thread: the batch's rows, its checkpoint, COMMIT (or roll back)."""
        try:
            result = self.loop.commit_batch(conn, prepared, self.chunk, self.worker)
            transaction.commit()
        except BaseException:
            _rollback(conn, transaction)
            raise
        return result

    def _settle(self, result: BatchResult) -> None:
        self.held -= 1
        self.committed = result.last_key if result.last_key is not None else self.committed
        self.loop.batch_done(result)


def _rollback(conn: sa.Connection, transaction: sa.RootTransaction) -> None:
    """Give the rows back; a connection the fault broke is replaced on its next use."""
    with contextlib.suppress(sa.exc.SQLAlchemyError, conn.dialect.loaded_dbapi.Error):
        if transaction.is_active:
            transaction.rollback()
