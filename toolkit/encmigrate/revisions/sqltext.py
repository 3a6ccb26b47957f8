"""SQL text built from names, executed as written.

The generated revisions build DDL from table and column names, which may hold
any printable character (see :mod:`encmigrate.identifiers`). Three traps of the
usual tools, each of which a name like ``pct%b`` or ``a :b`` fell into:

* the dialect's ``identifier_preparer.quote`` doubles ``%`` for drivers with
  ``format``/``pyformat`` parameters (psycopg), expecting the driver to undo it;
  :func:`~encmigrate.identifiers.quote` (re-exported here) keeps the name as it
  is, and :func:`verbatim` doubles once;
* ``op.execute("...")`` wraps the string in ``text()``, which takes ``:b`` in
  ``"a :b"`` for a bind parameter; :func:`verbatim` executes a ``DDL`` element,
  which parses no parameters (online, and offline with ``--sql``);
* a name inside a ``--`` comment ends the comment at a line break; inside a
  ``$tag$`` string it ends the string if it holds the tag. :func:`sql_comment`
  and :func:`dollar_quoted` make both impossible.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.identifiers import qualified, quote

__all__ = [
    "dollar_quoted",
    "printable",
    "qualified",
    "quote",
    "sql_comment",
    "string_literal",
    "verbatim",
]


def verbatim(statement: str) -> sa.ExecutableDDLElement:
    """``statement`` as an executable that runs exactly this text.

    A ``DDL`` element: no bind parameters are parsed (``text()`` would take
    ``:name`` inside a quoted identifier for one); its ``%`` formatting is
    escaped here, and the compiler doubles ``%`` again only for drivers that
    need it.
    """
    return sa.DDL(statement.replace("%", "%%"))  # type: ignore[no-untyped-call]


def sql_comment(text: str) -> str:
    """``text`` as ``--`` comment lines: no character of it can end the comment early.

    Each line is split off and prefixed (PostgreSQL and SQLite end a ``--``
    comment at CR or LF), and characters that are not printable are replaced.
    """
    return "\n".join(f"-- {printable(line)}" for line in text.splitlines() or [""])


def printable(line: str) -> str:
    """``line`` with every character that is not printable replaced by ``?``.

    What stays can neither end a line (SQL or Python comment) nor hide text
    (bidirectional overrides are format characters, not printable).
    """
    return "".join(c if c.isprintable() else "?" for c in line)


def dollar_quoted(body: str, tag: str = "encmigrate") -> str:
    """``body`` between ``$tag$`` quotes, with a tag that does not occur in ``body``.

    A dollar-quoted string ends at the first ``$tag$``: a quoted identifier in
    the body holding it (a column named ``a$encmigrate$b``) would end the
    function early. The tag becomes ``encmigrate_1``, ``encmigrate_2``, ...
    until it is absent. ``body`` is put on lines of its own, so it cannot run
    into the tags either.
    """
    candidate, number = tag, 0
    while f"${candidate}$" in body:
        number += 1
        candidate = f"{tag}_{number}"
    return f"${candidate}$\n{body}\n${candidate}$"


def string_literal(dialect: Dialect, value: str) -> str:
    """``value`` as a SQL string literal of the dialect.

    PostgreSQL gets an escape string (``E'...'``, backslashes doubled), which
    reads the same whatever ``standard_conforming_strings`` says; SQLite has no
    backslash escapes. MariaDB reads backslashes as escapes, so they are
    doubled (a server whose ``sql_mode`` has ``NO_BACKSLASH_ESCAPES`` would keep
    both: a column comment holding a backslash comes back with two there). A
    string literal is the only spelling ``COMMENT`` takes.
    """
    doubled = value.replace("'", "''")
    if dialect.name == "postgresql":
        return "E'" + doubled.replace("\\", "\\\\") + "'"
    if dialect.name in MYSQL_DIALECTS:
        return "'" + doubled.replace("\\", "\\\\") + "'"
    return "'" + doubled + "'"
