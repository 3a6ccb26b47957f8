"""The schema of a real database (``--schema-from``) or of a dump (``--schema-file``). Never data.

``--schema-from`` runs ``pg_dump --schema-only --no-owner --no-privileges``
against the source (``ENCMIGRATE_PG_DUMP`` names the binary, else ``pg_dump``
on ``PATH``; it must be at least the server's major version, as pg_dump
itself insists). Only the schema is read: tables, partitions, views,
functions, triggers, constraints, indexes, sequences, types, extensions and
publications; never a row. Subscriptions (which would connect to their
publisher from the rehearsal database), tablespaces and security labels
(which need things the test server may not have) are left out.
``--lock-wait-timeout`` keeps pg_dump from queueing behind a long lock on the
source: it fails instead, and the message says so.

The source is read, never written: pg_dump opens a read-only transaction.
The password goes to pg_dump in ``PGPASSWORD``, never on its command line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from encmigrate.errors import ConfigError, DatabaseError
from encmigrate.rehearse.postgres_url import APPLICATION_NAME, CONNECT_TIMEOUT_S, PostgresUrl
from encmigrate.rehearse.sql_script import read_script

__all__ = ["PG_DUMP_ENV", "PG_DUMP_OPTIONS", "dump_schema", "read_schema_file"]

PG_DUMP_ENV: Final = "ENCMIGRATE_PG_DUMP"
LOCK_WAIT_TIMEOUT_MS: Final = 10_000
PG_DUMP_OPTIONS: Final = (
    "--schema-only",
    "--no-owner",
    "--no-privileges",
    "--no-subscriptions",
    "--no-tablespaces",
    "--no-security-labels",
    f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT_MS}",
)


def dump_schema(source: PostgresUrl, environ: Mapping[str, str]) -> str:
    """The SQL of ``source``'s schema, from pg_dump; ConfigError or DatabaseError on failure."""
    binary = environ.get(PG_DUMP_ENV) or shutil.which("pg_dump", path=environ.get("PATH"))
    if not binary:
        raise ConfigError(
            f"{source.option}: pg_dump was not found on PATH: install the PostgreSQL client "
            f"(as new as the server), set {PG_DUMP_ENV}, or dump the schema yourself and "
            "pass --schema-file"
        )
    env = dict(environ)
    env.pop("PGPASSWORD", None)
    if source.password is not None:
        env["PGPASSWORD"] = source.password
    env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
    env["PGAPPNAME"] = APPLICATION_NAME
    try:
        done = subprocess.run(  # noqa: S603  (a fixed argument list, no shell)
            [binary, *PG_DUMP_OPTIONS, f"--dbname={source.libpq_uri}"],
            env=env,
            capture_output=True,
            check=False,
        )
    except OSError as exc:
        raise ConfigError(f"{source.option}: cannot run {binary}: {exc.strerror}") from None
    if done.returncode != 0:
        reason = _reason(done.stderr.decode("utf-8", "replace"), source.password)
        if "version mismatch" in reason:
            raise ConfigError(
                f"{source.option}: {reason}: use a pg_dump at least as new as the server "
                f"({PG_DUMP_ENV}=/usr/lib/postgresql/<version>/bin/pg_dump)"
            )
        raise DatabaseError(f"{source.option}: pg_dump of {source.display} failed: {reason}")
    return done.stdout.decode("utf-8")


def read_schema_file(path: Path) -> str:
    """The SQL of a plain-format schema dump."""
    return read_script(path, "--schema-file")


def _reason(stderr: str, password: str | None) -> str:
    """pg_dump's error and detail lines, one line, the password masked if it ever shows."""
    lines = [
        line.split(": ", 1)[1] if ": " in line else line
        for line in stderr.splitlines()
        if "error:" in line or "detail:" in line
    ]
    text = "; ".join(lines) or (stderr.strip().splitlines() or ["no message"])[-1]
    if password:
        text = text.replace(password, "***")
    return text[:300]
