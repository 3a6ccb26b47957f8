"""What the batch loops see of a run: the narrow interface of passes, pipeline and processes.

A run of one operation over one table (``tablerun.TableRun``) holds much more
than a batch loop needs: its report, progress callback, keyring, bookkeeping
and the setup of its chunks. The code that walks batches (``passes.py``, the
``pipeline.py`` of a worker, the helper processes of ``processes.py``) sees
only :class:`BatchLoop`: the operation and its table, the options, the stop
signal, the ``--max-batches`` budget, a worker's connection slot, and where a
committed batch goes. That keeps them free of ``tablerun.py`` (which imports
them) and tells a reader exactly what a pass may touch.

These are ``typing.Protocol`` classes: a check for the type checker only, with
no wrapper between a loop and its run, so nothing is added to the per-batch path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

import sqlalchemy as sa

from encmigrate.keys.keyring import Keyring
from encmigrate.migrate.batch import BatchResult, PreparedBatch
from encmigrate.migrate.chunks import Chunk
from encmigrate.migrate.rekey import Operation
from encmigrate.migrate.report import MigrateOptions, ProgressCallback
from encmigrate.migrate.table import TableWork

__all__ = ["BatchLoop", "ChunkWorker", "ChunkWorkerFactory"]


class BatchLoop(Protocol):
    """One run's batch loop: what a pass over the table or over a chunk uses, and no more."""

    @property
    def op(self) -> Operation:
        """The operation: which rows are pending, how a batch reads and computes them."""

    @property
    def work(self) -> TableWork:
        """The table and its selected columns."""

    @property
    def opts(self) -> MigrateOptions:
        """Batch size, timeouts, retry policy, throttle options."""

    @property
    def stop(self) -> threading.Event:
        """Set to end the run after the current batches (Ctrl-C, a failing worker)."""

    def halted(self) -> bool:
        """Stopped, or the ``--max-batches`` budget is spent."""

    def take_batch(self) -> bool:
        """One unit of the ``--max-batches`` budget; False when it is spent."""

    def give_back_batches(self, count: int) -> None:
        """Return budget units of batches that were rolled back."""

    def connection(self, *, open_now: bool = True) -> AbstractContextManager[list[sa.Connection]]:
        """A worker's connection slot, closed on leaving (see :meth:`usable`)."""

    def usable(self, connection: list[sa.Connection]) -> sa.Connection:
        """The slot's connection, replaced when a fault invalidated it."""

    def pause(self) -> None:
        """Between batches: the ``--sleep``, pause/stop requests, the throttle (control.py).

        Cut short by a stop; a ``stop`` request sets the stop signal.
        """

    def batch_limit(self, worker: str | None = None) -> int:
        """The next batch's size: ``--batch-size``, or the adaptive size (migrate/throttle.py)."""

    def commit_batch(
        self, conn: sa.Connection, prepared: PreparedBatch, chunk: Chunk, worker: str
    ) -> BatchResult:
        """Write a prepared batch and the chunk's checkpoint, in the batch's transaction."""

    def batch_done(self, result: BatchResult, phase: str = "chunks") -> None:
        """Count a committed (or, in a dry run, rolled-back) batch and report progress."""


class ChunkWorker(BatchLoop, Protocol):
    """The run of a helper process: it works chunks and reports each batch through ``on_batch``."""

    on_batch: Callable[[BatchResult], None] | None

    def work_chunks(self, worker: str) -> None:
        """Claim and work chunks until none is left (or the run halts)."""


#: How a helper process builds its run (``TableRun`` itself: engine, table, keyring,
#: options, progress callback, stop signal, operation).
ChunkWorkerFactory = Callable[
    [
        sa.Engine,
        TableWork,
        Keyring,
        MigrateOptions,
        ProgressCallback | None,
        threading.Event,
        Operation,
    ],
    ChunkWorker,
]
