"""The data commands: ``migrate-data`` and ``verify`` (steps 2 and 3), ``status``, ``rewrap``
and ``decrypt-back``, and the next-step line every command ends with."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from encmigrate.cli.console import err, out, print_json, report_table
from encmigrate.cli.context import engine_for, interruptible, keyring_for, plan_for
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.errors import EncmigrateError
from encmigrate.migrate import (
    MigrateOptions,
    decrypt_back,
    migrate_data,
    rewrap,
    status,
    verify,
)
from encmigrate.migrate.next_step import NextStep, next_step
from encmigrate.migrate.report import single_worker_note
from encmigrate.migrate.runner import Progress as RunProgress
from encmigrate.migrate.runner import TableReport, eta_text
from encmigrate.migrate.verify import ColumnVerdict
from encmigrate.plan import Plan

__all__ = [
    "decrypt_back_command",
    "migrate_data_command",
    "next_step_line",
    "rewrap_command",
    "show_next_step",
    "status_command",
    "verify_command",
]

logger = logging.getLogger(__name__)

TableOption = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable).")
]


class _MetricsSink:
    """Feeds migration progress to Prometheus metrics written to a textfile (node exporter)."""

    def __init__(self, path: Path, columns: dict[str, list[str]]) -> None:
        from encmigrate.monitoring import get_metrics

        self.path = path
        self.metrics = get_metrics()
        self.columns = columns
        self.seen: dict[str, tuple[int, float]] = {}
        self.written = 0.0

    def __call__(self, event: RunProgress) -> None:
        rows, elapsed = self.seen.get(event.table, (0, 0.0))
        delta, seconds = event.rows_done - rows, event.elapsed - elapsed
        self.seen[event.table] = (event.rows_done, event.elapsed)
        lag = max(event.rows_total - event.rows_done, 0)
        for column in self.columns.get(event.table, []):
            self.metrics.observe_migration(
                event.table, column, rows=max(delta, 0), seconds=seconds, lag_rows=lag
            )
        now = time.monotonic()
        if now - self.written >= 5 or event.phase in ("done", "interrupted", "paused"):
            self.written = now
            self.metrics.write_textfile(self.path)


class _Reporter:
    """Progress as a rich bar on a terminal, plain lines otherwise, JSON lines with --json."""

    def __init__(self, json_lines: bool, sink: _MetricsSink | None = None) -> None:
        self.json = json_lines
        self.tty = sys.stderr.isatty() and not json_lines
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self._last_line = 0.0
        self.sink = sink

    def __enter__(self) -> _Reporter:
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
                description=f"{event.table} ({event.phase})",
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
                }
            )
        elif now - self._last_line >= 1.0 or event.phase in ("done", "interrupted"):
            self._last_line = now
            err.print(
                f"{event.table}: {event.phase} {event.rows_done:,}/{event.rows_total:,} rows, "
                f"{event.rate:,.0f} rows/s, ETA {eta_text(event.eta_seconds)}",
                markup=False,
                highlight=False,
            )


def print_json_line(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def next_step_line(step: NextStep) -> str:
    """``Next: `command` (why)``, or why there is nothing to run."""
    if step.command is None:
        return f"Nothing to run: {step.reason}."
    return f"Next: `{step.command}` ({step.reason})"


def show_next_step(ctx: typer.Context, plan: Plan, tables: Sequence[str] | None) -> None:
    """Print what to run next, read from the database after the command's own work.

    Only advice: a database that cannot be read now leaves the line out, never
    fails a command that did its work.
    """
    try:
        engine = engine_for(ctx, plan)
        try:
            step = next_step(plan, engine, tables=tables)
        finally:
            engine.dispose()
    except (EncmigrateError, sa.exc.SQLAlchemyError) as exc:
        logger.warning("could not read the next step (%s)", type(exc).__name__)
        return
    out.print(next_step_line(step), markup=False)


def _note_workers(engine: sa.Engine, workers: int, json_output: bool) -> None:
    """Say, on stderr and in the JSON events, that SQLite ignores --workers N."""
    note = single_worker_note(engine.dialect.name, workers)
    if note is None:
        return
    err.print(f"note: {note}", markup=False)
    if json_output:
        print_json_line({"event": "note", "message": note})


@reports_errors
def migrate_data_command(
    ctx: typer.Context,
    table: TableOption = None,
    column: Annotated[
        list[str] | None, typer.Option("--column", "-c", help="Only this column (repeatable).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Rows per batch (default: plan).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Workers (PostgreSQL: N-1 helper processes; SQLite: one)."
        ),
    ] = 1,
    join: Annotated[
        bool, typer.Option("--join", help="Add workers to a run another process started.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Run every batch and roll it back; print the ETA.")
    ] = False,
    sleep: Annotated[int, typer.Option("--sleep", min=0, help="Pause between batches, ms.")] = 0,
    lock_timeout: Annotated[
        int, typer.Option("--lock-timeout", min=1, help="lock_timeout per batch, ms.")
    ] = 2000,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", min=1, help="Stop after N batches.")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the checkpoints and start over.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Also check every row that has a ciphertext and re-encrypt the ones that "
            "disagree with their plaintext (what verify reports as mismatches).",
        ),
    ] = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            help="Write Prometheus metrics (rows, rate, lag) to this textfile while running.",
        ),
    ] = None,
) -> None:
    """Step 2: encrypt the existing plaintext into the shadow columns, in resumable batches.

    Example: [bold]encmigrate migrate-data --batch-size 1000 --workers 2[/]
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan, workers=workers)
    options = MigrateOptions(
        batch_size=batch_size or plan.migration.batch_size,
        workers=workers,
        dry_run=dry_run,
        sleep_ms=sleep or int(plan.migration.sleep * 1000),
        lock_timeout_ms=lock_timeout,
        max_batches=max_batches,
        restart=restart,
        join=join,
    )
    json_output = state_of(ctx).json
    _note_workers(engine, workers, json_output)
    sink = None
    if metrics_file is not None:
        sink = _MetricsSink(
            metrics_file, {t.table: [c.column for c in t.columns] for t in plan.tables}
        )
    with interruptible() as stop, _Reporter(json_output, sink) as reporter:
        reports = migrate_data(
            plan,
            engine,
            keyring,
            tables=table,
            columns=column,
            options=options,
            progress=reporter,
            stop=stop,
            repair=repair,
        )
    engine.dispose()
    _report_migration(reports, json_output, repair=repair)
    if reports and not json_output and not any(r.dry_run or r.interrupted for r in reports):
        show_next_step(ctx, plan, table)
    if any(r.interrupted for r in reports):
        err.print("Interrupted: progress is saved. Run the same command again to resume.")
        raise typer.Exit(130)
    if any(r.rows_failed for r in reports):
        raise typer.Exit(1)


def _report_migration(
    reports: list[TableReport], json_output: bool, *, repair: bool = False
) -> None:
    if json_output:
        print_json(
            [
                {
                    "table": r.table,
                    "columns": r.columns,
                    "rows_total": r.rows_total,
                    "rows_done": r.rows_done,
                    "rows_failed": r.rows_failed,
                    "batches": r.batches,
                    "seconds": round(r.seconds, 3),
                    "rate": round(r.rate, 1),
                    "dry_run": r.dry_run,
                    "interrupted": r.interrupted,
                    "catch_up_rows": r.catch_up_rows,
                    "workers": r.workers,
                }
                for r in reports
            ]
        )
        return
    for r in reports:
        if r.dry_run:
            eta = r.rows_total / r.rate if r.rate else None
            out.print(
                f"{r.table}: dry run of {r.rows_done:,} rows ({r.rows_total:,} need encrypting) "
                f"at {r.rate:,.0f} rows/s; nothing was changed. "
                f"Estimated time for the table: {eta_text(eta)}.",
                markup=False,
            )
            continue
        done = (
            f"checked {r.rows_total:,} rows with a ciphertext and re-encrypted {r.rows_done:,}"
            if repair
            else f"encrypted {r.rows_done:,} rows"
        )
        out.print(
            f"{r.table}: {done} ({', '.join(r.columns)}) in "
            f"{r.seconds:.1f}s, {r.rate:,.0f} rows/s"
            + (f"; {r.catch_up_rows:,} caught up after changes" if r.catch_up_rows else ""),
            markup=False,
        )
        if r.rows_failed:
            out.print(
                f"{r.table}: {_rows(r.rows_failed)} could not be encrypted; they are listed in "
                "encryption_migration_failures. Fix the values and run migrate-data again.",
                markup=False,
            )


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


@reports_errors
def verify_command(
    ctx: typer.Context,
    table: TableOption = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="Check a random sample of N rows.")
    ] = None,
) -> None:
    """Step 3: decrypt every shadow value and compare it with the plaintext (exit 1 on problems).

    Example: [bold]encmigrate verify --table customers[/]
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan)
    verdicts = verify(plan, engine, keyring, tables=table, sample=sample)
    engine.dispose()
    if state_of(ctx).json:
        print_json([_verdict_document(v) for v in verdicts])
    else:
        _verdict_table(verdicts, sampled=sample is not None)
        if not any(v.key_problem for v in verdicts):
            show_next_step(ctx, plan, table)
    if any(v.key_problem for v in verdicts):
        raise typer.Exit(3)
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


def _verdict_document(v: ColumnVerdict) -> dict[str, Any]:
    return {
        "table": v.table,
        "column": v.column,
        "ok": v.ok,
        "sampled": v.sampled,
        "rows_checked": v.rows_checked,
        "matches": v.matches,
        "both_null": v.both_null,
        "ciphertext_only": v.ciphertext_only,
        "missing": v.missing,
        "mismatches": v.mismatches,
        "token_mismatches": v.token_mismatches,
        "undecryptable": v.undecryptable,
        "undecodable": v.undecodable,
        "key_versions": {str(k): n for k, n in sorted(v.versions.items())},
        "problem_keys": [{"problem": kind, "key": key} for kind, key in v.problem_keys],
    }


def _verdict_table(verdicts: list[ColumnVerdict], *, sampled: bool) -> None:
    table = report_table(
        "table",
        "column",
        "checked",
        "ok",
        "missing",
        "mismatched",
        "token",
        "undecryptable",
        "undecodable",
        "result",
        title="verify" + (" (sample)" if sampled else ""),
    )
    for v in verdicts:
        table.add_row(
            escape(v.table),
            escape(v.column),
            f"{v.rows_checked:,}",
            f"{v.matches + v.ciphertext_only:,}",
            str(v.missing),
            str(v.mismatches),
            str(v.token_mismatches),
            str(v.undecryptable),
            str(v.undecodable),
            "[green]ok[/]" if v.ok else "[red]FAILED[/]",
        )
    out.print(table)
    for v in verdicts:
        for kind, key in v.problem_keys:
            out.print(f"  {escape(v.table)}.{escape(v.column)}: {kind} at key {escape(str(key))}")
    if not all(v.ok for v in verdicts):
        return
    if sampled:
        out.print("The sample is clean; only a full verify (without --sample) lets step 5 go on.")
    elif all(v.plaintext_dropped for v in verdicts):
        out.print("Every ciphertext decrypts (the plaintext columns are dropped).")
    else:
        out.print("Every column verified.")


@reports_errors
def status_command(ctx: typer.Context, table: TableOption = None) -> None:
    """Per column: tracking state, rows done/total, last run's rate, last error, key versions.

    Only reads: on SQLite it answers while migrate-data runs. Ends with the next step.

    Example: [bold]encmigrate --json status[/]
    """
    plan = plan_for(ctx, check_database=False)
    json_output = state_of(ctx).json
    engine = engine_for(ctx, plan)
    try:
        found = status(plan, engine, tables=table)
        step = None if json_output else next_step(plan, engine, tables=table)
    finally:
        engine.dispose()
    if json_output:
        print_json([s.as_dict() for s in found])
        return
    grid = report_table(
        "table",
        "column",
        "status",
        "rows",
        "last run",
        "key versions",
        "last error",
        title="encmigrate status",
    )
    for s in found:
        rows = (
            f"{s.rows_done:,}/{s.rows_total:,}" if s.rows_total is not None else f"{s.rows_done:,}"
        )
        versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(s.versions.items())) or "-"
        grid.add_row(
            escape(s.table),
            escape(s.column),
            s.status,
            rows,
            _last_run(s.last_run_rows, s.rate),
            versions,
            escape(s.last_error or ""),
        )
    out.print(grid)
    if step is not None:
        out.print(next_step_line(step), markup=False)


def _last_run(rows: int | None, rate: float | None) -> str:
    """``1,200 rows, 4,000 rows/s``; ``-`` when no run is recorded."""
    if rows is None:
        return "-"
    return f"{rows:,} rows" + (f", {rate:,.0f} rows/s" if rate is not None else "")


BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, help="Rows per batch.")]
Workers = Annotated[
    int,
    typer.Option(
        "--workers", min=1, help="Workers (PostgreSQL: N-1 helper processes; SQLite: one)."
    ),
]


@reports_errors
def rewrap_command(
    ctx: typer.Context,
    table: TableOption = None,
    from_version: Annotated[
        int | None,
        typer.Option(
            "--from-version", min=1, max=MAX_VERSION, help="Only values under this version."
        ),
    ] = None,
    batch_size: BatchSize = None,
    workers: Workers = 1,
    sleep: Annotated[int, typer.Option("--sleep", min=0, help="Pause between batches, ms.")] = 0,
) -> None:
    """Re-encrypt values under older key versions to the current one (after `keys rotate`).

    Example: [bold]encmigrate rewrap --from-version 1[/]
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan, workers=workers)
    options = MigrateOptions(
        batch_size=batch_size or plan.migration.batch_size, workers=workers, sleep_ms=sleep
    )
    json_output = state_of(ctx).json
    _note_workers(engine, workers, json_output)
    with interruptible() as stop, _Reporter(json_output) as reporter:
        reports = rewrap(
            plan,
            engine,
            keyring,
            tables=table,
            from_version=from_version,
            options=options,
            progress=reporter,
            stop=stop,
        )
    engine.dispose()
    _report_rekey(reports, json_output, f"moved to key version {keyring.current}")
    if not json_output and not any(r.interrupted for r in reports):
        out.print(
            "Check the key versions in use with `encmigrate status` before retiring old versions."
        )


@reports_errors
def decrypt_back_command(
    ctx: typer.Context,
    table: TableOption = None,
    batch_size: BatchSize = None,
    workers: Workers = 1,
) -> None:
    """Rollback: refill re-added plaintext columns from the ciphertext.

    Run `alembic downgrade -1` first to undo drop-unencrypted (it re-adds the
    plaintext columns, empty). Example: [bold]encmigrate decrypt-back --table customers[/]
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan, workers=workers)
    options = MigrateOptions(batch_size=batch_size or plan.migration.batch_size, workers=workers)
    json_output = state_of(ctx).json
    _note_workers(engine, workers, json_output)
    with interruptible() as stop, _Reporter(json_output) as reporter:
        reports = decrypt_back(
            plan, engine, keyring, tables=table, options=options, progress=reporter, stop=stop
        )
    engine.dispose()
    _report_rekey(reports, json_output, "refilled from the ciphertext")
    if reports and not json_output:
        show_next_step(ctx, plan, table)


def _report_rekey(reports: list[TableReport], json_output: bool, what: str) -> None:
    if json_output:
        print_json(
            [
                {
                    "table": r.table,
                    "columns": r.columns,
                    "rows_done": r.rows_done,
                    "rows_failed": r.rows_failed,
                    "seconds": round(r.seconds, 3),
                    "interrupted": r.interrupted,
                    "workers": r.workers,
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            out.print(
                f"{r.table}: {_rows(r.rows_done)} {what} in {r.seconds:.1f}s"
                + (f"; {_rows(r.rows_failed)} failed" if r.rows_failed else ""),
                markup=False,
            )
    if any(r.interrupted for r in reports):
        err.print("Interrupted: progress is saved. Run the same command again to resume.")
        raise typer.Exit(130)
    if any(r.rows_failed for r in reports):
        raise typer.Exit(1)
