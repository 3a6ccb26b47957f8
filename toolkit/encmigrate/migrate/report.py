"""What a run takes and gives: options, progress events and per-table reports."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from encmigrate.database import MYSQL_DIALECTS
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
    # Throttling on a live primary (migrate/throttle.py): wait between batches while the
    # slowest standby's replay lags more than this many seconds (from the primary's
    # pg_stat_replication, or from each ``replica_urls`` standby), while a ``max_load``
    # probe (name, limit) is above its limit, or while ``throttle_query`` returns > 0.
    # The probes run at most every ``throttle_interval`` seconds.
    max_replica_lag: float | None = None
    replica_urls: tuple[str, ...] = ()
    max_load: tuple[tuple[str, float], ...] = ()
    throttle_query: str | None = None
    throttle_interval: float = 1.0
    # Adaptive batches: move the size from ``batch_size`` toward batches of this many
    # seconds, within min_batch_size and max_batch_size (None: a fixed batch size).
    target_batch_seconds: float | None = None
    min_batch_size: int | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after every batch (and at phase changes); never holds values."""

    table: str
    phase: str  # "chunks", "catch-up", "paused", "throttled", "done"
    rows_done: int
    rows_total: int
    rows_failed: int
    elapsed: float
    throttled_seconds: float = 0.0  # waited for the throttle so far in this run
    reason: str | None = None  # why it waits ("replica lag 12 s > 5 s"), while it waits

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
    stopped_by: str | None = None  # who ran `encmigrate stop` (the run ended on request)
    throttled_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)  # sizes chosen, with adaptive batches
    rows_left: int = 0  # still pending after the catch-up passes gave up
    left_reason: str | None = None  # why they were left

    @property
    def rate(self) -> float:
        return self.rows_done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


# The databases whose runs use several workers (each with its own connection and chunks).
_PARALLEL = frozenset({"postgresql", *MYSQL_DIALECTS})


def run_workers(dialect: str, workers: int) -> int:
    """How many workers a run may use: SQLite has one writer at a time, so one."""
    return workers if dialect in _PARALLEL else 1


def single_worker_note(dialect: str, workers: int) -> str | None:
    """What to tell a user who asked for more workers than the database can use."""
    if run_workers(dialect, workers) == workers:
        return None
    if dialect == "sqlite":
        return f"SQLite runs one worker (one writer at a time): --workers {workers} is ignored"
    return f"{dialect} runs one worker here: --workers {workers} is ignored"


def eta_text(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "unknown"
    return str(dt.timedelta(seconds=int(seconds)))
