"""Global options, shared by every command through ``typer.Context.obj``."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from encmigrate.boundary import mapped_errors
from encmigrate.cli.console import fail, print_traceback
from encmigrate.errors import UNEXPECTED_EXIT_CODE, EncmigrateError

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
    """Turn any failure into one line on stderr and its exit code (errors.py).

    Foreign errors are translated first (:mod:`encmigrate.boundary`); an
    exception nothing translates is a bug: one line naming its class and
    where it happened, a hint to re-run with ``--debug``, and
    :data:`UNEXPECTED_EXIT_CODE`. With ``--debug`` the traceback is shown as
    well. Used on every command, so ``CliRunner`` tests and the installed
    script behave the same.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = logging.getLogger("encmigrate").isEnabledFor(logging.DEBUG)
        try:
            with mapped_errors():
                return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors
        except EncmigrateError as exc:
            fail(exc, show_traceback=debug)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            fail("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            fail(_unexpected(exc), show_traceback=False)
            if debug:
                print_traceback(exc)
            raise typer.Exit(UNEXPECTED_EXIT_CODE) from None

    return wrapper


def _unexpected(exc: Exception) -> str:
    # The class and the place, never the message: a bug's message can hold anything.
    return (
        f"unexpected {type(exc).__name__}{_where(exc)}: this is a bug in encmigrate; "
        "re-run with --debug for the traceback and report it"
    )


def _where(exc: Exception) -> str:
    """`` at encmigrate/x.py:12``: the innermost frame of ours, else the innermost of all."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).name not in _BOUNDARY_FILES
    ]
    ours = [f for f in frames if "encmigrate" in Path(f.filename).parts]
    if not (ours or frames):
        return ""
    frame = (ours or frames)[-1]
    parts = Path(frame.filename).parts
    shown = "/".join(parts[parts.index("encmigrate") :]) if ours else parts[-1]
    return f" at {shown}:{frame.lineno}"


# The frames every command passes through on its way out (the wrapper, the boundary).
_BOUNDARY_FILES = frozenset({"state.py", "boundary.py", "contextlib.py"})
