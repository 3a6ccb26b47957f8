"""``verify`` (step 3) and ``status``: the data commands that only read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.markup import escape

from encmigrate.cli.console import out, print_json, report_table
from encmigrate.cli.context import engine_for, keyring_for, plan_for
from encmigrate.cli.migrate import next_step_line, show_next_step
from encmigrate.cli.options import TableOption
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.migrate import status, verify
from encmigrate.migrate.next_step import next_step
from encmigrate.migrate.status import RunState, run_states
from encmigrate.migrate.verify import ColumnVerdict

__all__ = ["status_command", "verify_command"]


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
        runs = run_states(plan, engine, tables=table)
        step = None if json_output else next_step(plan, engine, tables=table)
    finally:
        engine.dispose()
    if json_output:
        print_json([_with_run(s.as_dict(), runs.get(s.table)) for s in found])
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
    _runs_table(list(runs.values()))
    if step is not None:
        out.print(next_step_line(step), markup=False)


def _with_run(document: dict[str, Any], run: RunState | None) -> dict[str, Any]:
    """A column's status document with its table's control state and live workers."""
    document["run"] = run.as_dict() if run is not None else None
    return document


def _ago(when: dt.datetime | None) -> str:
    """``3s ago``; ``-`` when never."""
    if when is None:
        return "-"
    seconds = max((dt.datetime.now(dt.UTC) - when).total_seconds(), 0.0)
    return f"{seconds:,.0f}s ago"


def _runs_table(runs: list[RunState]) -> None:
    """Paused or stopped tables, and every live worker: host, pid, chunk, last batch, throttle."""
    shown = [r for r in runs if r.workers or r.control != "running"]
    if not shown:
        return
    grid = report_table(
        "table", "state", "worker", "host", "pid", "chunk", "last batch", "waiting", title="runs"
    )
    for run in shown:
        state = run.control + (f" by {run.requested_by}" if run.control != "running" else "")
        if not run.workers:
            grid.add_row(escape(run.table), escape(state), "-", "-", "-", "-", "-", "-")
        for w in run.workers:
            waiting = "-"
            if w.state == "throttled" and w.throttled_reason:
                waiting = f"throttled: {w.throttled_reason} (for {_ago(w.throttled_since)[:-4]})"
            elif w.state == "paused":
                waiting = "paused"
            grid.add_row(
                escape(run.table),
                escape(state),
                escape(w.worker),
                escape(w.host),
                str(w.pid),
                "-" if w.chunk_id is None else str(w.chunk_id),
                _ago(w.last_batch_at),
                escape(waiting),
            )
    out.print(grid)


def _last_run(rows: int | None, rate: float | None) -> str:
    """``1,200 rows, 4,000 rows/s``; ``-`` when no run is recorded."""
    if rows is None:
        return "-"
    return f"{rows:,} rows" + (f", {rate:,.0f} rows/s" if rate is not None else "")
