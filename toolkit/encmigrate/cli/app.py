"""The root ``encmigrate`` command: global options and the command groups."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from encmigrate import __version__
from encmigrate.cli import (
    control,
    demo,
    keys,
    lookup,
    migrate,
    preflight,
    rehearse,
    rekey,
    schema,
    verify,
)
from encmigrate.cli.console import out
from encmigrate.cli.logs import configure_logging
from encmigrate.cli.state import CliState

__all__ = ["GlobalOptionsGroup", "app", "main"]


class GlobalOptionsGroup(TyperGroup):
    """The root command, whose options (the global ones) may also follow any command.

    ``encmigrate status --json`` and ``encmigrate keys status --config x.toml``
    read as ``encmigrate --json status`` and ``encmigrate --config x.toml keys
    status``, as users of gh, kubectl and pgroll type them. Before parsing,
    every global option found after the command name (``--opt value`` and
    ``--opt=value``) is moved in front of it. The walk knows each command's own
    options, so a value is never taken for an option (``--reason --json`` keeps
    its value) and a command's own option of the same name stays its own (``init
    --database-url``); everything after ``--`` is left alone.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        names = ", ".join(self.global_options())
        note = f"Global options ({names}) may also follow the command."
        for command in _subcommands(self):
            if not command.epilog:
                command.epilog = note
            elif note not in command.epilog:
                command.epilog += f"\n\n{note}"

    def global_options(self) -> dict[str, int]:
        """Each global option's names and how many values it takes (``--version`` excepted)."""
        return {
            name: arity
            for param in self.params
            if isinstance(param, TyperOption) and not param.is_eager
            for name, arity in _arities(param).items()
        }

    def main(self, args: Sequence[str] | None = None, *more: Any, **extra: Any) -> Any:
        given = sys.argv[1:] if args is None else list(args)
        reordered = self.global_options_first(given)
        return super().main(args if reordered == given else reordered, *more, **extra)

    def global_options_first(self, args: list[str]) -> list[str]:
        """``args`` with the global options that follow a command name moved in front."""
        moved: list[str] = []
        kept: list[str] = []
        command: _Command = self
        position = 0
        while position < len(args):
            arg = args[position]
            if arg == "--":
                kept += args[position:]
                break
            position += 1
            if not arg.startswith("-") or arg == "-":
                kept.append(arg)
                if isinstance(command, TyperGroup):  # a group's first argument: its command
                    found = command.commands.get(arg)
                    if not isinstance(found, TyperCommand | TyperGroup):
                        kept += args[position:]  # an unknown command: the parser says so
                        break
                    command = found
                continue
            arity, attached = _option_arg(arg, _option_arities(command))
            target = kept
            if arity is None and command is not self:
                arity, attached = _option_arg(arg, self.global_options())
                target = moved if arity is not None else kept
            values = 0 if attached or arity is None else arity
            target += args[position - 1 : position + values]
            position += values
        return moved + kept


_Command = TyperCommand | TyperGroup


def _option_arg(arg: str, arities: dict[str, int]) -> tuple[int | None, bool]:
    """How many values the option ``arg`` names takes (None: not one of ``arities``), and
    whether its value is in the same argument (``--config=x.toml``, ``-tcustomers``)."""
    name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
    attached = "=" in arg if arg.startswith("--") else len(arg) > 2
    return arities.get(name), attached


def _arities(option: TyperOption) -> dict[str, int]:
    arity = 0 if option.is_flag or option.count else option.nargs
    return dict.fromkeys(option.opts, arity) | dict.fromkeys(option.secondary_opts, 0)


def _option_arities(command: _Command) -> dict[str, int]:
    found: dict[str, int] = {}
    for param in command.params:
        if isinstance(param, TyperOption):
            found |= _arities(param)
    return found


def _subcommands(group: TyperGroup) -> list[_Command]:
    found: list[_Command] = []
    for command in group.commands.values():
        if isinstance(command, TyperCommand | TyperGroup):
            found.append(command)
        if isinstance(command, TyperGroup):
            found += _subcommands(command)
    return found


app = typer.Typer(
    cls=GlobalOptionsGroup,
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
app.command("preflight")(preflight.preflight_command)
app.command("add-columns")(schema.add_columns)
app.command("migrate-data")(migrate.migrate_data_command)
app.command("verify")(verify.verify_command)
app.command("create-views")(schema.create_views)
app.command("drop-unencrypted")(schema.drop_unencrypted)
app.command("status")(verify.status_command)
app.command("pause")(control.pause_command)
app.command("resume")(control.resume_command)
app.command("stop")(control.stop_command)
app.command("find")(lookup.find_command)
app.command("inspect")(lookup.inspect_command)
app.command("rewrap")(rekey.rewrap_command)
app.command("decrypt-back")(rekey.decrypt_back_command)
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
    """Global options go before or after the command."""
    ctx.obj = CliState(config=config, database_url=database_url, debug=debug, json=json_output)
    ctx.call_on_close(configure_logging(debug))


def main() -> None:
    """Entry point of the ``encmigrate`` script."""
    app()
