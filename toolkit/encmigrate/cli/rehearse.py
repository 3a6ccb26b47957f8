"""``rehearse``: the whole migration on a throwaway PostgreSQL, as a CI step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from encmigrate.cli.console import err, out, print_json, report_table
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.migrate.runner import eta_text
from encmigrate.rehearse.report import DEFAULT_ROWS

if TYPE_CHECKING:
    from encmigrate.rehearse import RehearsalReport, StepResult

__all__ = ["rehearse_command"]


@reports_errors
def rehearse_command(
    ctx: typer.Context,
    schema_from: Annotated[
        str | None,
        typer.Option(
            "--schema-from",
            envvar="ENCMIGRATE_SCHEMA_FROM",
            help="PostgreSQL URL whose schema (never its rows) is copied with pg_dump "
            "--schema-only instead of applying your Alembic history. Read only. "
            "Env: ENCMIGRATE_SCHEMA_FROM (keeps the password off the command line).",
            show_envvar=False,
        ),
    ] = None,
    schema_file: Annotated[
        Path | None,
        typer.Option(
            "--schema-file",
            exists=True,
            dir_okay=False,
            help="Plain SQL schema dump (pg_dump --schema-only) to start from instead of "
            "your Alembic history.",
        ),
    ] = None,
    load: Annotated[
        Path | None,
        typer.Option("--load", exists=True, dir_okay=False, help="SQL file run after the schema."),
    ] = None,
    rows: Annotated[
        int | None,
        typer.Option(
            "--rows",
            min=0,
            help="Generated rows per table (planned tables and the tables they reference), "
            f"respecting types, NOT NULL, unique, foreign keys and simple CHECKs. Default: "
            f"{DEFAULT_ROWS} with --schema-from/--schema-file, else 0.",
        ),
    ] = None,
    sample_from: Annotated[
        str | None,
        typer.Option(
            "--sample-from",
            envvar="ENCMIGRATE_SAMPLE_FROM",
            help="PostgreSQL URL to copy a sample of REAL rows from (instead of --rows): "
            "--sample-rows per planned table plus the rows they reference. Read only. The "
            "real rows stay in the throwaway database, which is dropped at the end. "
            "Env: ENCMIGRATE_SAMPLE_FROM.",
            show_envvar=False,
        ),
    ] = None,
    sample_rows: Annotated[
        int,
        typer.Option("--sample-rows", min=1, help="Real rows per planned table (--sample-from)."),
    ] = DEFAULT_ROWS,
    production_rows: Annotated[
        int | None,
        typer.Option("--production-rows", min=1, help="Rows in production, for the ETA."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Rows per batch (default: plan).")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Workers (PostgreSQL: N-1 helper processes).")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated rows.")] = 0,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="postgresql or mariadb: the throwaway database's kind (default: that of "
            "the plan's database URL, else postgresql). MariaDB rehearses from your Alembic "
            "history with generated rows.",
        ),
    ] = None,
) -> None:
    """Rehearse every step and downgrade on a throwaway database; exit non-zero on any problem.

    The database comes from ENCMIGRATE_TEST_DATABASE_URL (MariaDB:
    ENCMIGRATE_TEST_MARIADB_URL), else a testcontainers container (Docker), else
    a local server; it is dropped afterwards. The schema
    is your Alembic history, or with --schema-from/--schema-file the schema of a
    database Alembic never managed. The revisions go to a temporary Alembic
    project (a copy of yours, or an empty one with a schema source), never into
    your tree, and the keys are throwaway ones.

    Example: [bold]encmigrate rehearse --rows 20000 --production-rows 40000000[/]

    Legacy schema: [bold]ENCMIGRATE_SCHEMA_FROM=postgresql://ro@db/app encmigrate rehearse[/]
    """
    state = state_of(ctx)
    from encmigrate.rehearse import RehearseOptions, rehearse  # Alembic: imported when used

    options = RehearseOptions(
        load=load,
        rows=rows,
        production_rows=production_rows,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        schema_from=schema_from,
        schema_file=schema_file,
        sample_from=sample_from,
        sample_rows=sample_rows,
        backend=backend,
    )
    report = rehearse(state.config, options=options, on_step=None if state.json else _show_step)
    if state.json:
        print_json(_document(report))
    else:
        _summary(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _show_step(step: StepResult) -> None:
    mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
    detail = f"  {escape(step.detail)}" if step.detail else ""
    err.print(f"{mark} {escape(step.name)} ({step.seconds:.2f}s){detail}")


def _summary(report: RehearsalReport) -> None:
    grid = report_table(
        "step",
        "seconds",
        "result",
        "detail",
        title=f"encmigrate rehearse ({report.database} from {report.server})",
    )
    out.print(f"schema: {escape(report.schema)}; revisions written to {escape(report.alembic)}")
    for step in report.steps:
        grid.add_row(
            escape(step.name),
            f"{step.seconds:.2f}",
            "[green]ok[/]" if step.ok else "[red]FAILED[/]",
            escape(step.detail),
        )
    out.print(grid)
    out.print(
        f"{report.rows_migrated:,} rows migrated at {report.rate:,.0f} rows/s "
        f"(dry run {report.dry_run_rate:,.0f} rows/s); total {report.seconds:.1f}s"
    )
    if report.production_rows is not None:
        out.print(
            f"ETA for {report.production_rows:,} production rows: {eta_text(report.eta_seconds)} "
            "(migrate-data at the rate measured here; production hardware and load differ)"
        )
    for warning in report.warnings:
        err.print(f"warning: {escape(warning)}")
    for problem in report.problems:
        err.print(f"[bold red]problem:[/] {escape(problem)}")
    out.print("Rehearsal passed." if report.ok else "[red]Rehearsal FAILED.[/]")


def _document(report: RehearsalReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "exit_code": report.exit_code,
        "database": report.database,
        "server": report.server,
        "schema": report.schema,
        "alembic": report.alembic,
        "rows": report.rows,
        "rows_migrated": report.rows_migrated,
        "rate": round(report.rate, 1),
        "dry_run_rate": round(report.dry_run_rate, 1),
        "production_rows": report.production_rows,
        "eta_seconds": None if report.eta_seconds is None else round(report.eta_seconds, 1),
        "seconds": round(report.seconds, 3),
        "steps": [
            {"name": s.name, "seconds": round(s.seconds, 3), "ok": s.ok, "detail": s.detail}
            for s in report.steps
        ],
        "warnings": report.warnings,
        "problems": report.problems,
    }
