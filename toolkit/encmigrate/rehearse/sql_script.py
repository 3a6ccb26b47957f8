"""Running a plain SQL script (a schema dump, ``--load``) on the rehearsal database.

The script runs as one transaction through psycopg's simple query protocol
(several statements in one call, ``$$`` bodies and all), on a connection of
its own that is closed afterwards: a ``pg_dump`` script empties
``search_path`` for its session, which must not leak into a pooled connection
the later steps use. psql meta-commands and ``COPY … FROM stdin`` data blocks
are not supported (``pg_dump --inserts`` writes rows as INSERTs), except the
``\\restrict``/``\\unrestrict`` lines that recent ``pg_dump`` releases write
around a dump, which only guard psql and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import psycopg

from encmigrate.errors import ConfigError, DatabaseError
from encmigrate.rehearse.database_errors import error_summary
from encmigrate.rehearse.postgres_url import PostgresUrl

__all__ = ["read_script", "run_script"]

_RESTRICT: Final = re.compile(r"^\\(?:un)?restrict\b[^\n]*$", re.MULTILINE)
_CUSTOM_FORMAT: Final = b"PGDMP"
_COPY_FROM_STDIN: Final = re.compile(r"^COPY\b[^;]*\bFROM stdin;\s*$", re.MULTILINE | re.IGNORECASE)


def read_script(path: Path, option: str) -> str:
    """The text of the SQL script ``path`` (given as ``option``), or ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from None
    if data.startswith(_CUSTOM_FORMAT):
        raise ConfigError(
            f"{option}: {path} is a pg_dump archive, not SQL: turn it into SQL with "
            f"`pg_restore --schema-only --no-owner --no-privileges -f schema.sql {path.name}`"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{option}: {path} is not UTF-8 text") from None


def run_script(target: PostgresUrl, text: str, what: str) -> None:
    """Run ``text`` on ``target`` in one transaction; ``what`` names it in errors."""
    text = _RESTRICT.sub("", text)
    if not text.strip():
        raise ConfigError(f"{what} holds no SQL")
    if _COPY_FROM_STDIN.search(text):
        raise ConfigError(
            f"{what}: COPY ... FROM stdin blocks (pg_dump's default for data) need psql: "
            "dump the rows with pg_dump --inserts instead"
        )
    try:
        with target.connect(read_only=False) as connection:
            # Without parameters psycopg uses the simple protocol: several statements at once.
            connection.execute(text.encode("utf-8"))
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):
            raise DatabaseError(
                f"{what}: lost the rehearsal database ({error_summary(exc)})"
            ) from None
        raise ConfigError(f"{what}: the SQL failed ({error_summary(exc)})") from None
    except psycopg.Error as exc:
        raise ConfigError(f"{what}: the SQL failed ({error_summary(exc)})") from None
