"""How a batch run (``migrate-data``, ``rewrap``, ``decrypt-back``) shows its progress: a rich
bar on a terminal, plain lines otherwise, JSON lines with --json, and Prometheus metrics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from encmigrate.cli.console import err
from encmigrate.migrate.report import single_worker_note
from encmigrate.migrate.runner import Progress as RunProgress
from encmigrate.migrate.runner import eta_text

__all__ = ["MetricsSink", "Reporter", "note_workers", "print_json_line", "rows_text"]


class MetricsSink:
    """Feeds migration progress to Prometheus metrics written to a textfile (node exporter)."""

    def __init__(self, path: Path, columns: dict[str, list[str]]) -> None:
        from encmigrate.monitoring import get_metrics

        self.path = path
        self.metrics = get_metrics()
        self.columns = columns
        self.seen: dict[str, tuple[int, float]] = {}
        self.throttled: dict[str, float] = {}  # throttled seconds already counted, per table
        self.written = 0.0

    def __call__(self, event: RunProgress) -> None:
        rows, elapsed = self.seen.get(event.table, (0, 0.0))
        delta, seconds = event.rows_done - rows, event.elapsed - elapsed
        self.seen[event.table] = (event.rows_done, event.elapsed)
        lag = max(event.rows_total - event.rows_done, 0)
        throttled = event.throttled_seconds - self.throttled.get(event.table, 0.0)
        self.throttled[event.table] = event.throttled_seconds
        for column in self.columns.get(event.table, []):
            self.metrics.observe_migration(
                event.table,
                column,
                rows=max(delta, 0),
                seconds=seconds,
                lag_rows=lag,
                throttled_seconds=max(throttled, 0.0),
            )
        now = time.monotonic()
        if now - self.written >= 5 or event.phase in ("done", "interrupted", "paused"):
            self.written = now
            self.metrics.write_textfile(self.path)


class Reporter:
    """Progress as a rich bar on a terminal, plain lines otherwise, JSON lines with --json."""

    def __init__(self, json_lines: bool, sink: MetricsSink | None = None) -> None:
        self.json = json_lines
        self.tty = sys.stderr.isatty() and not json_lines
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self._last_line = 0.0
        self.sink = sink

    def __enter__(self) -> Reporter:
        if self.tty:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10} rows/s"),
                TimeRemainingColumn(),
                console=err,
            )
            self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: RunProgress) -> None:
        if self.sink is not None:
            self.sink(event)
        if self.bar is not None:
            task = self.tasks.get(event.table)
            if task is None:
                task = self.bar.add_task(event.table, total=event.rows_total or None, rate="")
                self.tasks[event.table] = task
            self.bar.update(
                task,
                completed=event.rows_done,
                total=max(event.rows_total, event.rows_done),
                rate=f"{event.rate:,.0f}",
                description=f"{event.table} ({event.reason or event.phase})",
            )
            return
        now = time.monotonic()
        if self.json:
            print_json_line(
                {
                    "event": "progress",
                    "table": event.table,
                    "phase": event.phase,
                    "rows_done": event.rows_done,
                    "rows_total": event.rows_total,
                    "rows_failed": event.rows_failed,
                    "rate": round(event.rate, 1),
                    "throttled_seconds": round(event.throttled_seconds, 1),
                    "reason": event.reason,
                }
            )
        elif now - self._last_line >= 1.0 or event.phase in ("done", "interrupted"):
            self._last_line = now
            waiting = f" ({event.reason})" if event.reason else ""
            err.print(
                f"{event.table}: {event.phase}{waiting} {event.rows_done:,}/{event.rows_total:,} "
                f"rows, {event.rate:,.0f} rows/s, ETA {eta_text(event.eta_seconds)}",
                markup=False,
                highlight=False,
            )


def print_json_line(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def note_workers(engine: sa.Engine, workers: int, json_output: bool) -> None:
    """Say, on stderr and in the JSON events, that SQLite ignores --workers N."""
    note = single_worker_note(engine.dialect.name, workers)
    if note is None:
        return
    err.print(f"note: {note}", markup=False)
    if json_output:
        print_json_line({"event": "note", "message": note})


def rows_text(count: int) -> str:
    """``1 row``, ``1,200 rows``."""
    return f"{count:,} row" + ("" if count == 1 else "s")
