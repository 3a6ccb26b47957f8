"""``find`` and ``inspect``: rows by a searchable value, and envelopes without decrypting them."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from encmigrate.cli.console import err, out, print_json
from encmigrate.cli.context import engine_for, keyring_for, plan_for
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.errors import ConfigError, KeyConfigError
from encmigrate.inspect import (
    EnvelopeReport,
    decode_envelope_text,
    find_keys,
    inspect_envelope,
    key_text,
    planned_column,
    read_envelope,
)
from encmigrate.keys import Keyring

__all__ = ["find_command", "inspect_command"]


@reports_errors
def find_command(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="TABLE.COLUMN", help="A searchable column of the plan.")
    ],
    value: Annotated[
        str,
        typer.Argument(
            metavar="VALUE", help="The value to look for; '-' reads it from stdin (no history)."
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N keys.")] = 100,
) -> None:
    """Print the primary keys of the rows whose searchable column equals VALUE.

    The lookup compares search tokens under every readable key version, so it
    works across rotations; it never decrypts and never prints values.

    Example: [bold]encmigrate find customers.email alice@example.com[/]
    """
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    plan = plan_for(ctx, check_database=False)
    table, column = planned_column(plan, target)
    if not column.searchable:
        raise ConfigError(
            f"{table.table}.{column.column} is not searchable (it has no blind index); "
            "set searchable = true in the plan and run add-columns and migrate-data"
        )
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan)
    try:
        found = find_keys(engine, table, column, value, keyring, limit=limit)
    finally:
        engine.dispose()
    keys = found.as_dicts()
    if state_of(ctx).json:
        print_json(
            {
                "table": found.table,
                "column": found.column,
                "key_columns": list(found.key_columns),
                "keys": keys,
                "count": len(keys),
                "truncated": found.truncated,
            }
        )
        return
    for key in keys:
        out.print(key_text(key), markup=False, highlight=False)
    if not keys:
        err.print(f"No row of {escape(found.table)} matches.")
    elif found.truncated:
        shown = "the first key" if limit == 1 else f"the first {limit} keys"
        err.print(f"({shown}; pass --limit to see more)")


@reports_errors
def inspect_command(
    ctx: typer.Context,
    ciphertext: Annotated[
        str | None,
        typer.Argument(
            metavar="[HEX_OR_BASE64]", help="An envelope as hex (\\x… from psql) or base64."
        ),
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="Read the ciphertext from this planned table…")
    ] = None,
    column: Annotated[
        str | None, typer.Option("--column", help="…this planned column (its _encrypted value)…")
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="…in the row with this primary key (NAME=VALUE per column)."),
    ] = None,
) -> None:
    """Show an envelope's format, key version and sizes, and whether that version is readable.

    Nothing is decrypted: this is the first check when a value raises
    DecryptionError (wrong, disabled or destroyed key version). Exit 1 when
    the value is not an encmigrate envelope.

    Example: [bold]encmigrate inspect --table customers --column email --key 42[/]
    """
    by_row = table is not None or column is not None or key
    if (ciphertext is None) == (not by_row):
        raise ConfigError(
            "inspect needs either a ciphertext (hex or base64) or --table, --column and --key"
        )
    source: dict[str, Any] = {}
    if ciphertext is not None:
        blob, encoding = decode_envelope_text(ciphertext)
    else:
        if table is None or column is None or not key:
            raise ConfigError("inspect by row needs all of --table, --column and --key")
        plan = plan_for(ctx, check_database=False)
        table_plan, column_plan = planned_column(plan, f"{table}.{column}")
        engine = engine_for(ctx, plan)
        try:
            blob, typed_key = read_envelope(engine, table_plan, column_plan, key)
        finally:
            engine.dispose()
        encoding = "text" if column_plan.storage == "text" else "binary"
        source = {
            "table": table_plan.table,
            "column": column_plan.encrypted_column,
            "key": {name: str(value) for name, value in typed_key.items()},
            "context": column_plan.context,
        }
    keyring, keyring_problem = _keyring_or_problem(ctx)
    report = inspect_envelope(blob, keyring, encoding=encoding)
    if state_of(ctx).json:
        document = report.as_dict()
        document["keyring_problem"] = keyring_problem
        if source:
            document["source"] = source
        print_json(document)
        return
    _print_report(report, source, keyring_problem)


def _keyring_or_problem(ctx: typer.Context) -> tuple[Keyring | None, str | None]:
    """The configured keyring, or why there is none (inspect still reads the header)."""
    try:
        return keyring_for(ctx), None
    except KeyConfigError as exc:
        return None, str(exc).splitlines()[0]


def _print_report(report: EnvelopeReport, source: dict[str, Any], problem: str | None) -> None:
    if source:
        where = " ".join(f"{k}={v}" for k, v in source["key"].items())
        out.print(
            f"row          {escape(source['table'])}.{escape(source['column'])} at {escape(where)} "
            f"(context {escape(source['context'])})"
        )
    out.print(f"envelope     format {report.format}, {report.size} bytes ({report.encoding})")
    out.print(
        f"layout       header {report.header_size} + nonce {report.nonce_size} + "
        f"ciphertext {report.ciphertext_size} + tag {report.tag_size}"
    )
    out.print(f"key version  {report.key_version}: {_verdict(report, problem)}")


def _verdict(report: EnvelopeReport, problem: str | None) -> str:
    if report.key_state is None:
        return f"readability unknown: {escape(problem or 'no keyring')}"
    current = f"the current version is {report.current_version}"
    if report.key_state == "missing":
        return (
            f"[red]not in the keyring[/] ({current}): this value was written with another "
            "keyring, or a version was removed"
        )
    if report.readable:
        return f"{report.key_state}, [green]readable[/] ({current})"
    if report.key_state == "disabled":
        return (
            f"[red]disabled[/]: values under it do not decrypt until "
            f"`encmigrate keys enable {report.key_version}` ({current})"
        )
    return f"[red]{report.key_state}[/]: values under it can never be decrypted ({current})"
