"""``init``, ``plan check`` and the schema steps 1, 4 and 5 (Alembic revisions)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
import typer
from rich.markup import escape

from encmigrate.cli.console import err, out, print_json, print_verbatim, report_table
from encmigrate.cli.context import engine_for, plan_for
from encmigrate.cli.migrate import next_step_line
from encmigrate.cli.options import TableOption
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.dependents import Dependent, warning_message
from encmigrate.errors import EncmigrateError
from encmigrate.migrate.next_step import NextStep, next_step
from encmigrate.plan import Plan

if TYPE_CHECKING:
    from encmigrate.revisions import RevisionResult

# Alembic (and the revisions built on it) is imported by the commands that use it, not at
# start-up: every other command starts about 0.15 s sooner.

__all__ = ["add_columns", "create_views", "drop_unencrypted", "init", "plan_app"]

logger = logging.getLogger(__name__)

Apply = Annotated[bool, typer.Option("--apply", help="Also run `alembic upgrade head`.")]
Sql = Annotated[bool, typer.Option("--sql", help="Print the SQL; write no revision file.")]


def _show(
    ctx: typer.Context, result: RevisionResult, plan: Plan, tables: Sequence[str] | None
) -> None:
    step = _next(ctx, result, plan, tables)
    if state_of(ctx).json:
        print_json(
            {
                "step": result.step,
                "revision": result.revision,
                "path": str(result.path) if result.path else None,
                "applied": result.applied,
                "next_command": step.command,
                "next_reason": step.reason,
                "notes": list(result.notes),
                "sql": result.sql,
            }
        )
        return
    if result.sql is not None:
        print_verbatim(result.sql)
    elif result.path is not None:
        verb = "Wrote and applied" if result.applied else "Wrote"
        out.print(f"{verb} revision {result.revision}: {result.path}", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
    if result.sql is None:
        out.print(next_step_line(step), markup=False)


def _next(
    ctx: typer.Context, result: RevisionResult, plan: Plan, tables: Sequence[str] | None
) -> NextStep:
    """The next step: from the database once it holds the step's outcome (applied, or
    nothing to do); the generator's own word for SQL to apply by hand or a revision file
    not applied yet."""
    if result.sql is None and (result.applied or result.path is None):
        try:
            engine = engine_for(ctx, plan)
            try:
                return next_step(plan, engine, tables=tables)
            finally:
                engine.dispose()
        except (EncmigrateError, sa.exc.SQLAlchemyError) as exc:
            logger.warning("could not read the next step (%s)", type(exc).__name__)
    if result.sql is not None:
        return NextStep(result.next_command, "the SQL is not applied by encmigrate")
    if result.path is not None and not result.applied:
        return NextStep(result.next_command, "the revision is written, not applied")
    return NextStep(result.next_command, f"after {result.step}")


@reports_errors
def add_columns(
    ctx: typer.Context, table: TableOption = None, apply: Apply = False, sql: Sql = False
) -> None:
    """Step 1: a revision adding <col>_encrypted / <col>_search, tracking tables and the trigger.

    Example: [bold]encmigrate add-columns --apply[/]
    """
    plan = plan_for(ctx)
    _warn(plan.warnings)
    from encmigrate import revisions

    _show(ctx, revisions.add_columns(plan, tables=table, apply=apply, sql=sql), plan, table)


@reports_errors
def create_views(
    ctx: typer.Context, table: TableOption = None, apply: Apply = False, sql: Sql = False
) -> None:
    """Step 4: a revision creating <table>_secure views over the ciphertext.

    Example: [bold]encmigrate create-views --apply[/]
    """
    plan = plan_for(ctx)
    _warn(plan.warnings)  # among them what will keep step 5 from dropping the plaintext
    from encmigrate import revisions

    _show(ctx, revisions.create_views(plan, tables=table, apply=apply, sql=sql), plan, table)


@reports_errors
def drop_unencrypted(
    ctx: typer.Context,
    table: TableOption = None,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Required: the plaintext columns are dropped.")
    ] = False,
    apply: Apply = False,
    sql: Sql = False,
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Rewrite the table afterwards (VACUUM FULL / VACUUM).")
    ] = False,
    allow_dropping_constraints: Annotated[
        bool,
        typer.Option(
            "--allow-dropping-constraints",
            help="Drop unique indexes and constraints on the plaintext with it (no longer "
            "enforced).",
        ),
    ] = False,
) -> None:
    """Step 5: drop the plaintext columns; refused unless every column is verified clean.

    Also refused while objects depend on a plaintext column (`encmigrate plan check`
    lists them with what to do).

    Example: [bold]encmigrate drop-unencrypted --confirm --apply[/]
    """
    from encmigrate import revisions

    plan = plan_for(ctx)
    result = revisions.drop_unencrypted(
        plan,
        tables=table,
        confirm=confirm,
        apply=apply,
        sql=sql,
        vacuum=vacuum,
        allow_dropping_constraints=allow_dropping_constraints,
    )
    _show(ctx, result, plan, table)


@reports_errors
def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Project directory.")] = Path("."),
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Written into the plan's [database] url, without its password.",
        ),
    ] = None,
) -> None:
    """Create alembic.ini, alembic/ and a starter encmigrate.toml (only what is missing).

    The plan gets the database URL without its password: keep the full URL in
    ENCMIGRATE_DATABASE_URL (or the password in ~/.pgpass or PGPASSWORD).

    Example: [bold]encmigrate init --database-url postgresql://app@db/app[/]
    """
    url = database_url or state_of(ctx).database_url
    from encmigrate import scaffold

    result = scaffold.init(directory, database_url=url)
    if state_of(ctx).json:
        print_json(
            {
                "created": [str(p) for p in result.created],
                "kept": [str(p) for p in result.kept],
                "tables": list(result.tables),
                "notes": list(result.notes),
            }
        )
        return
    for path in result.created:
        out.print(f"created {path}", markup=False)
    for path in result.kept:
        out.print(f"kept    {path}", markup=False)
    for note in result.notes:
        err.print(f"note: {escape(note)}")
    out.print("Next: list the columns to encrypt in encmigrate.toml, then `encmigrate plan check`")


plan_app = typer.Typer(help="Check the plan (encmigrate.toml).", no_args_is_help=True)


@plan_app.command("check")
@reports_errors
def check(
    ctx: typer.Context,
    offline: Annotated[
        bool, typer.Option("--offline", help="Check the file only, not the live schema.")
    ] = False,
) -> None:
    """Validate the plan against its rules and the live schema; list every problem at once.

    Example: [bold]encmigrate plan check[/]
    """
    plan = plan_for(ctx, check_database=not offline)
    dependents = [d for c in plan.columns for d in c.dependents]
    if state_of(ctx).json:
        print_json(
            {
                "source": str(plan.source),
                "database": plan.safe_database_url,
                "columns": [_column_document(c) for c in plan.columns],
                "dependents": [_dependent_document(d) for d in dependents],
                "warnings": [{"where": w.where, "message": w.message} for w in plan.warnings],
            }
        )
        return
    grid = report_table(
        "table", "column", "type", "searchable", "context", "state", title=f"plan {plan.source}"
    )
    for c in plan.columns:
        grid.add_row(
            escape(c.table),
            escape(c.column),
            c.type,
            f"yes ({c.normalize.value})" if c.searchable else "no",
            escape(c.context),
            c.phase.value,
        )
    out.print(grid)
    _show_dependents(dependents)
    # The table above says what each dependent's warning would: not twice.
    shown = {warning_message(d) for d in dependents}
    _warn([w for w in plan.warnings if w.message not in shown])
    columns, tables = len(plan.columns), len(plan.tables)
    out.print(
        f"Plan OK: {columns} column{'' if columns == 1 else 's'} "
        f"in {tables} table{'' if tables == 1 else 's'}."
    )


def _column_document(c: Any) -> dict[str, Any]:
    return {
        "table": c.table,
        "column": c.column,
        "type": c.type,
        "searchable": c.searchable,
        "normalize": c.normalize.value,
        "context": c.context,
        "storage": c.storage,
        "phase": c.phase.value,
    }


def _dependent_document(d: Dependent) -> dict[str, Any]:
    return {
        "table": d.table,
        "column": d.column,
        "kind": d.kind,
        "name": d.name,
        "effect": d.effect,
        "action": d.action,
        "blocking": d.blocking,
        "best_effort": d.best_effort,
    }


def _show_dependents(dependents: list[Dependent]) -> None:
    """One short block per object: names are never cut, whatever the terminal's width."""
    if not dependents:
        return
    out.print("\n[bold]Objects that depend on planned plaintext columns[/]")
    for d in dependents:
        kind = d.kind + (" (best effort)" if d.best_effort else "")
        flag = " [red]blocks step 5[/]" if d.blocking else ""
        out.print(
            f"- {escape(d.table)}.{escape(d.column)}: {escape(kind)} {escape(d.name)}{flag}",
            soft_wrap=True,
        )
        out.print(f"    at step 5: {escape(d.effect)}", soft_wrap=True)
        out.print(f"    what to do: {escape(d.action)}", soft_wrap=True)
    blocking = sum(1 for d in dependents if d.blocking)
    if blocking:
        out.print(
            f"{blocking} of them {'blocks' if blocking == 1 else 'block'} drop-unencrypted "
            "until dealt with (see 'what to do').",
            markup=False,
        )


def _warn(warnings: Any) -> None:
    for warning in warnings:
        err.print(f"warning: {escape(warning.where)}: {escape(warning.message)}")
