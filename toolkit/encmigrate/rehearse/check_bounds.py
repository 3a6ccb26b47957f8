"""What simple CHECK constraints allow, read from their definition (``pg_get_constraintdef``).

Legacy schemas guard many columns with CHECKs of a few shapes: a range
(``score BETWEEN 0 AND 100``, ``amount > 0``), a list (``status IN ('open',
'closed')``), a length (``length(code) = 2``), on the table or on the
column's domain (``VALUE > 0``). Those, joined by AND, are read into an
:class:`~encmigrate.rehearse.allowed_values.Allowed` per column so that
generated values satisfy them. Anything else (OR, expressions over several
columns, function calls) is not read: the database is left to refuse the
rows that break it, and they are generated again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.rehearse.allowed_values import Allowed, typed_literal

__all__ = ["allowed_by_checks", "check_definitions"]

_IDENT: Final = r'(?P<col>[A-Za-z_][\w$]*|"(?:[^"]|"")+")'
_LITERAL: Final = r"(?P<lit>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|'(?:[^']|'')*')"
_OPERATOR: Final = r"(?P<op>>=|<=|<>|!=|>|<|=)"
_COMPARE: Final = re.compile(rf"^{_IDENT}\s*{_OPERATOR}\s*{_LITERAL}$")
_COMPARE_REVERSED: Final = re.compile(rf"^{_LITERAL}\s*{_OPERATOR}\s*{_IDENT}$")
_ANY: Final = re.compile(rf"^{_IDENT}\s*=\s*ANY\s*\(\s*\(?\s*ARRAY\[(?P<items>.*)\]\s*\)?\s*\)$")
_LENGTH: Final = re.compile(
    rf"^(?:char_length|character_length|length)\({_IDENT}\)\s*{_OPERATOR}\s*(?P<n>\d+)$"
)
_ITEM: Final = re.compile(_LITERAL)
_CAST: Final = re.compile(
    r'::(?:"[^"]*"|[A-Za-z_][\w.]*)'
    r"(?:\s+(?:varying|precision|with(?:out)?\s+time\s+zone))*"
    r"(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])*"
)
_SIMPLE_IN_PARENS: Final = re.compile(
    r"""(?<![\w$])\(\s*([A-Za-z_][\w$]*|"(?:[^"]|"")+"|-?\d+(?:\.\d+)?|'(?:[^']|'')*')\s*\)"""
)
_FLIPPED: Final = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "=": "=", "<>": "<>", "!=": "!="}


def check_definitions(connection: sa.Connection, table: sa.Table) -> list[tuple[str | None, str]]:
    """``(column or None, definition)`` of the table's CHECKs and its columns' domains' CHECKs.

    ``column`` is set for a domain's CHECK (whose ``VALUE`` is that column). MariaDB
    (no domains) keeps its CHECK clauses in ``information_schema.CHECK_CONSTRAINTS``.
    """
    schema = table.schema
    if connection.dialect.name in MYSQL_DIALECTS:
        found = connection.execute(
            sa.text(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = coalesce(:schema, DATABASE()) AND TABLE_NAME = :table"
            ),
            {"table": table.name, "schema": schema},
        )
        return [(None, f"CHECK ({row[0]})") for row in found]
    rows = connection.execute(
        sa.text(
            "SELECT NULL, pg_get_constraintdef(con.oid) FROM pg_constraint con "
            "JOIN pg_class c ON c.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE con.contype = 'c' AND c.relname = :table "
            "AND n.nspname = coalesce(:schema, current_schema()) "
            "UNION ALL "
            "SELECT a.attname, pg_get_constraintdef(con.oid) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_constraint con ON con.contypid = a.atttypid AND con.contype = 'c' "
            "WHERE c.relname = :table AND n.nspname = coalesce(:schema, current_schema()) "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"table": table.name, "schema": schema},
    )
    return [(row[0], str(row[1])) for row in rows]


def allowed_by_checks(
    definitions: Iterable[tuple[str | None, str]], table: sa.Table
) -> dict[str, Allowed]:
    """An :class:`Allowed` per column that a readable CHECK restricts."""
    found: dict[str, Allowed] = {}
    for domain_column, definition in definitions:
        body = definition.removeprefix("CHECK ").removesuffix(" NOT VALID")
        for column, allowed in _atoms(_normalised(body), domain_column, table):
            found[column] = found[column] & allowed if column in found else allowed
    return found


def _normalised(body: str) -> str:
    """``body`` without casts and without parentheses around a single name or literal."""
    parts = re.split(r"('(?:[^']|'')*')", body)
    body = "".join(p if p.startswith("'") else _CAST.sub("", p) for p in parts)
    previous = None
    while previous != body:
        previous, body = body, _SIMPLE_IN_PARENS.sub(r"\1", body)
    return body


def _conjuncts(text: str) -> list[str]:
    """The parts of ``text`` joined by a top-level AND; none if an OR joins them."""
    text = _unwrapped(text.strip())
    parts: list[str] = []
    depth, start, quoted, index = 0, 0, False, 0
    while index < len(text):
        char = text[index]
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0:
            if text.startswith(" OR ", index):
                return []
            if text.startswith(" AND ", index):
                parts.append(text[start:index])
                start = index + len(" AND ")
                index = start
                continue
        index += 1
    parts.append(text[start:])
    if len(parts) == 1:
        return parts
    return [atom for part in parts for atom in _conjuncts(part)]


def _unwrapped(text: str) -> str:
    """``text`` without parentheses that enclose all of it."""
    while text.startswith("(") and text.endswith(")") and _closes_at_end(text):
        text = text[1:-1].strip()
    return text


def _closes_at_end(text: str) -> bool:
    depth, quoted = 0, False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0 and index < len(text) - 1:
                return False
    return True


def _atoms(body: str, domain_column: str | None, table: sa.Table) -> list[tuple[str, Allowed]]:
    atoms: list[tuple[str, Allowed]] = []
    for part in _conjuncts(body):
        part = _unwrapped(part)
        if match := _COMPARE.match(part) or _COMPARE_REVERSED.match(part):
            op = match["op"] if match.re is _COMPARE else _FLIPPED[match["op"]]
            column = _column(match["col"], domain_column, table)
            if column is not None:
                value = typed_literal(_literal(match["lit"]), table.c[column].type)
                allowed = _compared(op, value)
                if allowed is not None:
                    atoms.append((column, allowed))
        elif match := _ANY.match(part):
            column = _column(match["col"], domain_column, table)
            if column is not None:
                kind = table.c[column].type
                items = [
                    typed_literal(_literal(m[0]), kind) for m in _ITEM.finditer(match["items"])
                ]
                if items and None not in items:
                    atoms.append((column, Allowed(choices=tuple(items))))
        elif match := _LENGTH.match(part):
            column = _column(match["col"], domain_column, table)
            allowed = _length(match["op"], int(match["n"]))
            if column is not None and allowed is not None:
                atoms.append((column, allowed))
    return atoms


def _column(raw: str, domain_column: str | None, table: sa.Table) -> str | None:
    if domain_column is not None:
        return domain_column if raw.upper() == "VALUE" else None
    name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw
    return name if name in table.c else None


def _literal(raw: str) -> str:
    return raw[1:-1].replace("''", "'") if raw.startswith("'") else raw


def _compared(op: str, value: Any) -> Allowed | None:
    if value is None:
        return None
    return {
        ">=": Allowed(low=value),
        ">": Allowed(low=value, low_open=True),
        "<=": Allowed(high=value),
        "<": Allowed(high=value, high_open=True),
        "=": Allowed(choices=(value,)),
    }.get(op)


def _length(op: str, n: int) -> Allowed | None:
    return {
        ">=": Allowed(min_length=n),
        ">": Allowed(min_length=n + 1),
        "<=": Allowed(max_length=n),
        "<": Allowed(max_length=max(n - 1, 0)),
        "=": Allowed(min_length=n, max_length=n),
    }.get(op)
