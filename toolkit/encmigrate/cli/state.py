"""Global options, shared by every command through ``typer.Context.obj``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from encmigrate.cli.console import fail
from encmigrate.errors import EncmigrateError

__all__ = ["CliState", "reports_errors", "state_of"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class CliState:
    config: Path | None = None
    database_url: str | None = None
    debug: bool = False
    json: bool = False


def state_of(ctx: typer.Context) -> CliState:
    found = ctx.find_root().obj
    return found if isinstance(found, CliState) else CliState()


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an :class:`EncmigrateError` into one line on stderr and its exit code.

    With ``--debug`` the traceback is shown as well. Used on every command,
    so ``CliRunner`` tests and the installed script behave the same.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except EncmigrateError as exc:
            debug = logging.getLogger("encmigrate").isEnabledFor(logging.DEBUG)
            fail(exc, show_traceback=debug)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            fail("interrupted")
            raise typer.Exit(130) from None

    return wrapper
