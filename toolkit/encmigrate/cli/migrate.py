"""``migrate-data`` (step 2), and the next-step line every command ends with.

``verify`` and ``status`` are in :mod:`encmigrate.cli.verify`, ``rewrap`` and
``decrypt-back`` in :mod:`encmigrate.cli.rekey`, the progress display in
:mod:`encmigrate.cli.progress`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from encmigrate.cli import control
from encmigrate.cli.console import err, out, print_json
from encmigrate.cli.context import batch_command, engine_for
from encmigrate.cli.options import Sleep, TableOption, Workers
from encmigrate.cli.progress import MetricsSink, Reporter, rows_text
from encmigrate.cli.state import reports_errors
from encmigrate.errors import EncmigrateError
from encmigrate.migrate import migrate_data
from encmigrate.migrate.next_step import NextStep, next_step
from encmigrate.migrate.runner import TableReport, eta_text
from encmigrate.plan import Plan

__all__ = ["migrate_data_command", "next_step_line", "show_next_step"]

logger = logging.getLogger(__name__)


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
    workers: Workers = 1,
    join: Annotated[
        bool, typer.Option("--join", help="Add workers to a run another process started.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Run every batch and roll it back; print the ETA.")
    ] = False,
    sleep: Sleep = 0,
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
    max_replica_lag: control.MaxReplicaLag = None,
    replica: control.Replica = None,
    max_load: control.MaxLoad = None,
    throttle_query: control.ThrottleQuery = None,
    throttle_interval: control.ThrottleInterval = 1.0,
    target_batch_seconds: control.TargetBatchSeconds = None,
    min_batch_size: control.MinBatchSize = None,
    max_batch_size: control.MaxBatchSize = None,
) -> None:
    """Step 2: encrypt the existing plaintext into the shadow columns, in resumable batches.

    Example: [bold]encmigrate migrate-data --batch-size 1000 --workers 2[/]
    """
    with (
        batch_command(ctx, workers=workers) as run,
        Reporter(run.json_output, _metrics_sink(metrics_file, run.plan)) as reporter,
    ):
        options = run.options(
            batch_size,
            dry_run=dry_run,
            sleep_ms=sleep or int(run.plan.migration.sleep * 1000),
            lock_timeout_ms=lock_timeout,
            max_batches=max_batches,
            restart=restart,
            join=join,
            **control.live_options(
                max_replica_lag=max_replica_lag,
                replica=replica,
                max_load=max_load,
                throttle_query=throttle_query,
                throttle_interval=throttle_interval,
                target_batch_seconds=target_batch_seconds,
                min_batch_size=min_batch_size,
                max_batch_size=max_batch_size,
            ),
        )
        reports = migrate_data(
            run.plan,
            run.engine,
            run.keyring,
            tables=table,
            columns=column,
            options=options,
            progress=reporter,
            stop=run.stop,
            repair=repair,
        )
    plan, json_output = run.plan, run.json_output
    _report_migration(reports, json_output, repair=repair)
    if reports and not json_output and not any(r.dry_run or r.interrupted for r in reports):
        show_next_step(ctx, plan, table)
    if any(r.interrupted for r in reports):
        stopped = next((r.stopped_by for r in reports if r.stopped_by), None)
        why = f"Stopped by `encmigrate stop` ({stopped})" if stopped else "Interrupted"
        err.print(f"{why}: progress is saved. Run the same command again to resume.", markup=False)
        raise typer.Exit(130)
    if any(r.rows_failed for r in reports):
        raise typer.Exit(1)


def _metrics_sink(metrics_file: Path | None, plan: Plan) -> MetricsSink | None:
    """The Prometheus textfile of ``--metrics-file``, listing the plan's columns."""
    if metrics_file is None:
        return None
    return MetricsSink(metrics_file, {t.table: [c.column for c in t.columns] for t in plan.tables})


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
                    "stopped_by": r.stopped_by,
                    "throttled_seconds": round(r.throttled_seconds, 1),
                    "batch_sizes": r.batch_sizes,
                    "rows_left": r.rows_left,
                    "left_reason": r.left_reason,
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
        _report_live(r)
        if r.rows_failed:
            out.print(
                f"{r.table}: {rows_text(r.rows_failed)} could not be encrypted; they are listed "
                "in encryption_migration_failures. Fix the values and run migrate-data again.",
                markup=False,
            )


def _report_live(r: TableReport) -> None:
    """Throttling, adaptive batch sizes and rows the catch-up left, when there are any."""
    if r.throttled_seconds >= 0.05:
        out.print(f"{r.table}: throttled for {r.throttled_seconds:,.1f}s", markup=False)
    if len(r.batch_sizes) > 1:
        sizes = " -> ".join(f"{size:,}" for size in r.batch_sizes[-8:])
        out.print(f"{r.table}: batch sizes {sizes}", markup=False)
    if r.rows_left:
        out.print(
            f"{r.table}: {rows_text(r.rows_left)} left pending: {r.left_reason}.", markup=False
        )
