"""Table, column, schema and view names: what a plan may name, and how a name is shown.

A name in the plan ends up in SQL (quoted by the dialect), in generated Alembic
revision files (as Python string literals only) and in messages. Two rules keep
a hostile name from doing anything but name something:

* :func:`name_problem` refuses, at plan load, every character that is not
  printable (``str.isprintable``: control characters such as newlines and
  ESC, format characters such as bidirectional overrides, line and paragraph
  separators, and every space but U+0020), and a name whose longest derived
  identifier (``<column>_encrypted``, ``<table>_secure``) would exceed the
  dialect's limit in UTF-8 **bytes**: PostgreSQL silently truncates an
  identifier past 63 bytes, so two shadow columns could end up as one.
  Quotes, backslashes, ``%``, ``$``, ``--``, ``;`` and multi-byte letters are
  allowed: the SQL quotes them and the revision files hold them as literals.
* :func:`shown` renders a name for places that are not string literals (the
  revision's docstring, comments, one-line messages): every character that
  could end a docstring, a comment or a line, or start an escape sequence
  (quotes, backslashes, anything not printable) becomes ``?``.

:func:`quote` and :func:`qualified` write a name into SQL text: quoted where
the dialect needs it, with ``%`` kept single (the dialect's own preparer doubles
it for psycopg, which is right only in text the driver formats, and wrong in a
value such as the argument of ``to_regclass``).

The generated names that would grow past the limit (search indexes, trigger
functions, partition indexes) are shortened with a hash by their makers, with
:func:`truncate_utf8`, and need no check here.
"""

from __future__ import annotations

import hashlib
import unicodedata

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "POSTGRESQL_MAX_BYTES",
    "index_name",
    "max_identifier_bytes",
    "name_problem",
    "qualified",
    "quote",
    "shown",
    "truncate_utf8",
    "utf8_length",
]

# NAMEDATALEN - 1: PostgreSQL keeps the first 63 bytes of a longer identifier.
POSTGRESQL_MAX_BYTES = 63
# Characters that would close or escape a string or docstring if shown as they are.
_UNSAFE_SHOWN = frozenset("\"'\\`")
_KINDS = {
    "Cc": "control character",
    "Cf": "format character",
    "Cs": "surrogate",
    "Co": "private-use character",
    "Cn": "unassigned code point",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Zs": "space other than U+0020",
}


def utf8_length(name: str) -> int:
    """The length of ``name`` in UTF-8 bytes, the unit of PostgreSQL's identifier limit."""
    return len(name.encode("utf-8", errors="surrogatepass"))


def max_identifier_bytes(database_url: str | None) -> int | None:
    """The identifier limit in bytes of the database behind ``database_url``.

    SQLite has none. Without a URL, or for a database encmigrate does not know,
    PostgreSQL's limit applies: a plan that fits it fits everywhere.
    """
    if database_url is None:
        return POSTGRESQL_MAX_BYTES
    try:
        backend = sa.make_url(database_url).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):  # the URL is checked, and reported, elsewhere
        return POSTGRESQL_MAX_BYTES
    return None if backend == "sqlite" else POSTGRESQL_MAX_BYTES


def name_problem(name: str, *, suffix: str = "", limit: int | None = None) -> str | None:
    """Why ``name`` cannot be used, or None; ``suffix`` is the longest one encmigrate adds.

    The reason never contains the name: it may hold characters a terminal would
    act on. Characters are named by their code point and position.
    """
    for position, char in enumerate(name, start=1):
        if not char.isprintable():
            kind = _KINDS.get(unicodedata.category(char), "non-printable character")
            return (
                f"contains U+{ord(char):04X}, a {kind}, at character {position}; encmigrate "
                "accepts printable characters only: rename it in the database, then here"
            )
    if limit is not None:
        length = utf8_length(name + suffix)
        if length > limit:
            derived = f"with the suffix {suffix} it would be" if suffix else "it is"
            return (
                f"is {utf8_length(name)} bytes in UTF-8 and {derived} {length} bytes, over "
                f"PostgreSQL's identifier limit of {limit} bytes (a longer name is silently "
                f"truncated): use a name of at most {limit - utf8_length(suffix)} bytes"
            )
    return None


def shown(name: str) -> str:
    """``name`` made safe outside a string literal: unsafe characters become ``?``.

    Safe in a Python docstring or comment, a SQL comment and a one-line message,
    whatever the name holds; the name itself only ever appears as a literal.
    """
    return "".join("?" if c in _UNSAFE_SHOWN or not c.isprintable() else c for c in name)


def truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit`` bytes in UTF-8."""
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def quote(dialect: Dialect, name: str) -> str:
    """``name`` quoted where the dialect needs it (mixed case kept), ``%`` left single."""
    quoted = dialect.identifier_preparer.quote(name)
    if dialect.paramstyle in ("format", "pyformat"):
        # The preparer doubled every % for the driver's formatting; undo it.
        quoted = quoted.replace("%%", "%")
    return quoted


def qualified(dialect: Dialect, table: str, schema: str | None) -> str:
    """``"schema"."table"`` quoted as the dialect needs (only where needed), ``%`` single."""
    name = quote(dialect, table)
    return f"{quote(dialect, schema)}.{name}" if schema else name


def index_name(table: str, column: str) -> str:
    """``ix_<table>_<column>``, shortened with a hash past PostgreSQL's 63 bytes.

    The name ``add-columns`` gives a token column's index, and the one the column
    types declare, so Alembic's autogenerate sees the same index on both sides.
    """
    name = f"ix_{table}_{column}"
    if utf8_length(name) <= POSTGRESQL_MAX_BYTES:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{truncate_utf8(name, POSTGRESQL_MAX_BYTES - 11)}_{digest}"
