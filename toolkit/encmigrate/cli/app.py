"""The root ``encmigrate`` command: global options and the command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from encmigrate import __version__
from encmigrate.cli import demo, keys, lookup, migrate, rehearse, schema
from encmigrate.cli.console import out
from encmigrate.cli.logs import configure_logging
from encmigrate.cli.state import CliState

__all__ = ["app", "main"]

app = typer.Typer(
    name="encmigrate",
    help=(
        "Add field-level AES-256-GCM encryption to a live database and migrate its plaintext "
        "without downtime.\n\nExample: [bold]encmigrate keys generate[/] then "
        "[bold]encmigrate demo[/]"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("init")(schema.init)
app.add_typer(schema.plan_app, name="plan")
app.command("add-columns")(schema.add_columns)
app.command("migrate-data")(migrate.migrate_data_command)
app.command("verify")(migrate.verify_command)
app.command("create-views")(schema.create_views)
app.command("drop-unencrypted")(schema.drop_unencrypted)
app.command("status")(migrate.status_command)
app.command("find")(lookup.find_command)
app.command("inspect")(lookup.inspect_command)
app.command("rewrap")(migrate.rewrap_command)
app.command("decrypt-back")(migrate.decrypt_back_command)
app.command("rehearse")(rehearse.rehearse_command)
app.add_typer(keys.app, name="keys")
app.command("demo")(demo.demo)


def _version(value: bool) -> None:
    if value:
        out.print(f"encmigrate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Plan file (default: ./encmigrate.toml or pyproject.toml).",
            envvar="ENCMIGRATE_CONFIG",
            show_envvar=True,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL of the database.",
            envvar="ENCMIGRATE_DATABASE_URL",
            show_envvar=True,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=(
                "Show tracebacks and encmigrate's debug logs, secrets masked. Third-party "
                "loggers stay at WARNING; name any to raise in ENCMIGRATE_DEBUG_LOGGERS "
                "(e.g. botocore,sqlalchemy.engine)."
            ),
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON output where a command reports.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Global options go before the command."""
    ctx.obj = CliState(config=config, database_url=database_url, debug=debug, json=json_output)
    ctx.call_on_close(configure_logging(debug))


def main() -> None:
    """Entry point of the ``encmigrate`` script."""
    app()
