"""How the workers of one run pace themselves on a live primary.

A run's batches go as fast as the database allows unless the operator asks
otherwise. Three things slow or hold them, all between two batches (never
inside one, so no row lock is held while waiting):

* the adaptive batch size (``--target-batch-seconds``, throttle.BatchSizer):
  each batch's size is handed out here and its duration observed, from the
  end of the previous wait to the batch's commit, so time spent throttled or
  paused is not taken for a slow batch;
* the throttle (``--max-replica-lag``, ``--max-load``, ``--throttle-query``,
  throttle.Throttle);
* the operator's pause and stop requests, and the worker's heartbeat
  (control.RunControl), created on first use because a helper process starts
  its work without the run's setup.

Workers are threads of this process (and of helper processes, which build
their own run and so their own :class:`Pacing`): the worker a call is about is
the calling thread's, set by :meth:`Pacing.worker`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from encmigrate.migrate import control
from encmigrate.migrate.report import MigrateOptions
from encmigrate.migrate.throttle import BatchSizer, build_throttle

__all__ = ["Pacing"]


class Pacing:
    """Batch sizes, throttle waits, pause/stop requests and heartbeats of one run's workers."""

    def __init__(
        self, engine: sa.Engine, table: str, operation: str, options: MigrateOptions
    ) -> None:
        self.sizer = BatchSizer(
            options.batch_size,
            target=options.target_batch_seconds,
            minimum=options.min_batch_size,
            maximum=options.max_batch_size,
        )
        self.throttle = None if options.dry_run else build_throttle(engine, options)
        self.control: control.RunControl | None = None
        self._engine = engine
        self._table = table
        self._operation = operation
        self._lease_seconds = options.lease_seconds
        self._lock = threading.Lock()
        self._local = threading.local()  # the calling thread's worker id and batch clock

    def start(self) -> None:
        """Read pause/stop requests and write heartbeats from now on (tables made if absent)."""
        with self._lock:
            if self.control is not None:
                return
            control.ensure_tables(self._engine)
            self.control = control.RunControl(
                self._engine,
                self._table,
                self._operation,
                throttle=self.throttle,
                lease_seconds=self._lease_seconds,
            )

    @contextlib.contextmanager
    def worker(self, worker: str) -> Iterator[None]:
        """The calling thread works as ``worker`` until the block ends (its heartbeat row too)."""
        self._local.worker = worker
        self._local.batch_began = None
        try:
            yield
        finally:
            self._local.worker = None
            if self.control is not None:
                self.control.worker_ended(worker)

    def _current(self) -> str | None:
        worker: str | None = getattr(self._local, "worker", None)
        return worker

    def on_chunk(self, worker: str, chunk_id: int) -> None:
        if self.control is not None:
            self.control.worker_on(worker, chunk_id)

    def limit(self, worker: str | None = None) -> int:
        """The next batch's size: ``--batch-size``, or the adaptive size."""
        return self.sizer.hand_out(worker or self._current())

    def is_last(self, worker: str, rows_read: int) -> bool:
        """Whether a batch that read ``rows_read`` rows was its chunk's last (fewer than asked)."""
        return rows_read < self.sizer.limit_of(worker)

    def committed(self, rows_read: int) -> None:
        """A batch of the calling thread's worker committed: its duration, the heartbeat."""
        worker = self._current()
        if worker is None:  # a helper process's batch, reported to this process
            return
        began: float | None = getattr(self._local, "batch_began", None)
        now = time.monotonic()
        if began is not None:
            self.sizer.observe(rows_read, now - began)
        self._local.batch_began = now
        if self.control is not None:
            self.control.batch_committed(worker)

    def between_batches(self, stop: threading.Event, emit: Callable[[str, str], None]) -> None:
        """Wait while paused or throttled (``stop`` cuts it short); ``emit`` reports why."""
        worker = self._current()
        if self.control is not None and worker is not None:
            self.control.between_batches(stop, worker, self.sizer.size, emit)
        self._local.batch_began = time.monotonic()

    @property
    def throttled_seconds(self) -> float:
        return self.throttle.throttled_seconds if self.throttle is not None else 0.0

    @property
    def stopped_by(self) -> str | None:
        """Who asked the run to stop (``encmigrate stop``), if anyone did."""
        return self.control.stopped_by if self.control is not None else None

    @property
    def batch_sizes(self) -> list[int]:
        """The adaptive sizes chosen, in order (empty without ``--target-batch-seconds``)."""
        return list(self.sizer.sizes) if self.sizer.target else []
