"""Where output goes: rich consoles for stdout and stderr, and the error line."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from rich.align import AlignMethod
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.rule import Rule
from rich.style import Style
from rich.table import Table
from rich.text import Text

from encmigrate.redaction import redact

__all__ = [
    "UNCUT_WIDTH",
    "err",
    "fail",
    "out",
    "print_json",
    "print_traceback",
    "print_verbatim",
    "report_table",
]

# Wider than any line we print: what a pipe or a log reads is never cut or wrapped.
UNCUT_WIDTH = 10_000
# What a rule (a line across the screen) spans when there is no screen.
RULE_WIDTH = 80


class _Console(Console):
    """A rich console sized to the terminal, and never cut when it writes to anything else.

    rich sizes output to a terminal's width even when the stream is redirected
    (80 columns, or the width of the terminal stdin belongs to), so a piped
    ``verify`` table truncated its headers ("check…") and long file paths
    wrapped mid-name. When the stream is not a terminal (a pipe, a file, a CI
    log), every line keeps its full width, whatever COLUMNS says; tables are
    only as wide as their content. The stream is looked up at each write, so
    in-process runs (``CliRunner``) are judged by the stream they capture into.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNCUT_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def rule(
        self,
        title: str | Text = "",
        *,
        characters: str = "─",
        style: str | Style = "rule.line",
        align: AlignMethod = "center",
    ) -> None:
        """A rule as wide as the terminal; 80 columns (or the title's width) in a pipe or log."""
        line = Rule(title, characters=characters, style=style, align=align)
        if self.is_terminal:
            self.print(line)
        else:
            shown = Text.from_markup(title) if isinstance(title, str) else title
            self.print(line, width=max(RULE_WIDTH, shown.cell_len + 6))


# rich honours NO_COLOR and turns styling off when the stream is not a terminal.
out: Console = _Console(highlight=False)
err: Console = _Console(stderr=True, highlight=False)


def report_table(*columns: str, title: str | None = None) -> Table:
    """A table with these column headers whose title is one line, never wrapped or cut.

    A table's title is laid out in the table's own width, so a title naming a
    path wrapped mid-name even on the wide console; this one stays whole. The
    title is plain text: brackets in a path are not taken for markup.
    """
    heading = Text(title, no_wrap=True, overflow="ignore") if title is not None else None
    table = Table(title=heading)
    for column in columns:
        table.add_column(column)
    return table


def fail(problem: BaseException | str, *, show_traceback: bool = False) -> None:
    """Print one error line: what failed, where, what to do (all in the message)."""
    if show_traceback and isinstance(problem, BaseException):
        print_traceback(problem)
    text = str(problem) if str(problem) else type(problem).__name__
    first, *rest = text.splitlines()
    err.print(f"[bold red]error:[/] {escape(first)}", markup=True, soft_wrap=True)
    for line in rest:
        err.print(line, markup=False, soft_wrap=True)


def print_traceback(exc: BaseException) -> None:
    """``exc``'s traceback on stderr (``--debug``), masked like the debug log lines.

    A traceback quotes arguments and the reprs of locals.
    """
    sys.stderr.write(redact("".join(traceback.format_exception(exc))))


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
