"""Options that several commands take, defined once so their names and help agree."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["BatchSize", "Reason", "Sleep", "TableOption", "Workers"]

TableOption = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable).")
]
BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, help="Rows per batch.")]
Workers = Annotated[
    int,
    typer.Option(
        "--workers", min=1, help="Workers (PostgreSQL: N-1 helper processes; SQLite: one)."
    ),
]
Sleep = Annotated[int, typer.Option("--sleep", min=0, help="Pause between batches, ms.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")]
