"""``rewrap`` and ``decrypt-back``: batch runs over values already encrypted, moving them to
the current key version or back into the plaintext columns."""

from __future__ import annotations

from typing import Annotated

import typer

from encmigrate.cli.console import err, out, print_json
from encmigrate.cli.context import engine_for, interruptible, keyring_for, plan_for
from encmigrate.cli.migrate import show_next_step
from encmigrate.cli.options import BatchSize, Sleep, TableOption, Workers
from encmigrate.cli.progress import Reporter, note_workers, rows_text
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.migrate import MigrateOptions, decrypt_back, rewrap
from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL
from encmigrate.migrate.runner import TableReport

__all__ = ["decrypt_back_command", "rewrap_command"]


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
    sleep: Sleep = 0,
) -> None:
    """Re-encrypt values under older key versions to the current one (after `keys rotate`).

    Example: [bold]encmigrate rewrap --from-version 1[/]
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan, workers=workers)
    options = MigrateOptions(
        batch_size=batch_size or plan.migration.batch_size,
        workers=workers,
        sleep_ms=sleep,
        gil_interval=QUICK_SWITCH_INTERVAL,
    )
    json_output = state_of(ctx).json
    note_workers(engine, workers, json_output)
    with interruptible() as stop, Reporter(json_output) as reporter:
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
    options = MigrateOptions(
        batch_size=batch_size or plan.migration.batch_size,
        workers=workers,
        gil_interval=QUICK_SWITCH_INTERVAL,
    )
    json_output = state_of(ctx).json
    note_workers(engine, workers, json_output)
    with interruptible() as stop, Reporter(json_output) as reporter:
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
                f"{r.table}: {rows_text(r.rows_done)} {what} in {r.seconds:.1f}s"
                + (f"; {rows_text(r.rows_failed)} failed" if r.rows_failed else ""),
                markup=False,
            )
    if any(r.interrupted for r in reports):
        err.print("Interrupted: progress is saved. Run the same command again to resume.")
        raise typer.Exit(130)
    if any(r.rows_failed for r in reports):
        raise typer.Exit(1)
