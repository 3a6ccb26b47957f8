"""Where output goes: rich consoles for stdout and stderr, and the error line."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from rich.console import Console
from rich.markup import escape

from encmigrate.redaction import redact

__all__ = ["err", "fail", "out", "print_json", "print_verbatim"]

# rich honours NO_COLOR and turns styling off when the stream is not a terminal.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(problem: BaseException | str, *, show_traceback: bool = False) -> None:
    """Print one error line: what failed, where, what to do (all in the message)."""
    if show_traceback and isinstance(problem, BaseException):
        # A traceback quotes arguments and locals' reprs: masked like the debug log lines.
        sys.stderr.write(redact("".join(traceback.format_exception(problem))))
    text = str(problem) if str(problem) else type(problem).__name__
    first, *rest = text.splitlines()
    err.print(f"[bold red]error:[/] {escape(first)}", markup=True, soft_wrap=True)
    for line in rest:
        err.print(line, markup=False, soft_wrap=True)


def print_json(document: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_verbatim(text: str) -> None:
    """Text that must reach stdout byte for byte (SQL for psql): no wrapping, no markup.

    rich wraps long lines at the terminal's width (80 columns when redirected),
    which split ``--`` comments and string literals of ``--sql`` output.
    """
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
