"""One line about a PostgreSQL error that never repeats a value from a row.

A server message can quote the row it refused (``invalid input syntax for type
date: "…"``, ``Key (email)=(…) already exists``), and rehearse may be copying
real rows. Only the error classes whose messages name objects, not values,
keep their first line (undefined or wrong objects, privileges, connections,
resources), and so do connection failures; a syntax error gives its position,
not the text near it; for the others the
SQLSTATE, the error class and the constraint, table and column names from the
error's diagnostics are all that is said.
"""

from __future__ import annotations

from typing import Final

import psycopg

__all__ = ["error_summary"]

# SQLSTATE classes whose primary message names objects only.
_NAMING_CLASSES: Final = frozenset({"08", "0A", "28", "3D", "3F", "42", "53", "54", "55", "57"})
_SYNTAX_ERROR: Final = "42601"
_MAX: Final = 200


def error_summary(exc: BaseException, password: str | None = None) -> str:
    """``SQLSTATE 23505 UniqueViolation (constraint customer_code_key)`` and the like.

    A connection failure (no SQLSTATE) keeps libpq's first line (host, port,
    what failed), with ``password`` masked should it ever appear.
    """
    original = getattr(exc, "orig", None) or exc
    state = getattr(original, "sqlstate", None)
    kind = type(original).__name__
    head = f"SQLSTATE {state} {kind}" if state else kind
    names: list[str] = []
    diag = original.diag if isinstance(original, psycopg.Error) else None
    if diag is not None:
        for label, value in (
            ("constraint", diag.constraint_name),
            ("table", diag.table_name),
            ("column", diag.column_name),
        ):
            if value:
                names.append(f"{label} {value}")
    if names:
        head += f" ({', '.join(names)})"
    if state == _SYNTAX_ERROR:
        # "syntax error at or near …" quotes the script's text, which may be a value.
        where = diag.statement_position if diag is not None else None
        return head + (f" at character {where}" if where else "")
    named = state is not None and state[:2] in _NAMING_CLASSES
    if named or (state is None and isinstance(original, psycopg.OperationalError)):
        primary = diag.message_primary if diag is not None else None
        lines = (primary or str(original)).strip().splitlines()
        if lines:
            head += f": {lines[0][:_MAX]}"
    return head.replace(password, "***") if password else head
