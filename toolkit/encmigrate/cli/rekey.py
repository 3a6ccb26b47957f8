"""``rewrap`` and ``decrypt-back``: batch runs over values already encrypted, moving them to
the current key version or back into the plaintext columns."""

from __future__ import annotations

from typing import Annotated

import typer

from encmigrate.cli.console import err, out, print_json
from encmigrate.cli.context import batch_command
from encmigrate.cli.migrate import show_next_step
from encmigrate.cli.options import BatchSize, Sleep, TableOption, Workers
from encmigrate.cli.progress import Reporter, rows_text
from encmigrate.cli.state import reports_errors
from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.migrate import decrypt_back, rewrap
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
    with batch_command(ctx, workers=workers) as run, Reporter(run.json_output) as reporter:
        reports = rewrap(
            run.plan,
            run.engine,
            run.keyring,
            tables=table,
            from_version=from_version,
            options=run.options(batch_size, sleep_ms=sleep),
            progress=reporter,
            stop=run.stop,
        )
    keyring, json_output = run.keyring, run.json_output
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
    with batch_command(ctx, workers=workers) as run, Reporter(run.json_output) as reporter:
        reports = decrypt_back(
            run.plan,
            run.engine,
            run.keyring,
            tables=table,
            options=run.options(batch_size),
            progress=reporter,
            stop=run.stop,
        )
    plan, json_output = run.plan, run.json_output
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
