"""What a run takes and gives: options, progress events and per-table reports."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from encmigrate.retry import RetryPolicy

__all__ = [
    "MigrateOptions",
    "Progress",
    "ProgressCallback",
    "TableReport",
    "eta_text",
    "run_workers",
    "single_worker_note",
]


@dataclass(frozen=True, slots=True)
class MigrateOptions:
    batch_size: int = 1000
    workers: int = 1
    dry_run: bool = False
    sleep_ms: int = 0
    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 60_000
    max_batches: int | None = None
    restart: bool = False
    join: bool = False
    rows_per_chunk: int = 50_000
    lease_seconds: float = 60.0
    catch_up_passes: int = 5
    # --workers N on PostgreSQL: N - 1 helper processes beside this one (False: threads).
    worker_processes: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy.for_database)
    # Seconds: the process-wide GIL switch interval while the run lasts (the CLI sets
    # QUICK_SWITCH_INTERVAL, see migrate/pipeline.py); None leaves the interpreter alone.
    gil_interval: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after every batch (and at phase changes); never holds values."""

    table: str
    phase: str  # "chunks", "catch-up", "done"
    rows_done: int
    rows_total: int
    rows_failed: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.rows_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        left = max(self.rows_total - self.rows_done, 0)
        return left / self.rate if self.rate > 0 else None


@dataclass(slots=True)
class TableReport:
    table: str
    columns: list[str]
    rows_total: int = 0
    rows_done: int = 0
    rows_failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    interrupted: bool = False
    catch_up_rows: int = 0
    workers: int = 1  # at most this many ran (SQLite: always 1)

    @property
    def rate(self) -> float:
        return self.rows_done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


def run_workers(dialect: str, workers: int) -> int:
    """How many workers a run may use: SQLite has one writer at a time, so one."""
    return workers if dialect == "postgresql" else 1


def single_worker_note(dialect: str, workers: int) -> str | None:
    """What to tell a user who asked for more workers than the database can use."""
    if run_workers(dialect, workers) == workers:
        return None
    return f"SQLite runs one worker (one writer at a time): --workers {workers} is ignored"


def eta_text(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "unknown"
    return str(dt.timedelta(seconds=int(seconds)))
