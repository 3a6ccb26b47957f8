"""The migrator's view of the database: engines, transient faults, retries.

Engines come from the one factory, :func:`encmigrate.database.connect`
(``BEGIN IMMEDIATE`` and a busy timeout on SQLite, psycopg 3 and a pool sized
for the workers on PostgreSQL). Only transient faults are retried, with
capped backoff and jitter (see docs/architecture.md, "The migrator"), by the
one :class:`~encmigrate.retry.RetryPolicy`; ``is_transient`` says which faults
are transient; :func:`driver_cursor` is the psycopg cursor of the hot paths,
which invalidates a connection its error left broken. All are re-exported
here, where the migrator's modules and Python callers have always found them.

Commands that only read (``status``, the next step shown after each command)
use :func:`read_only`: on SQLite they never take the write lock.
"""

from __future__ import annotations

from encmigrate.boundary import sqlstate
from encmigrate.database import SQLITE_BUSY_TIMEOUT_MS, connect, driver_cursor, read_only
from encmigrate.retry import RetryPolicy
from encmigrate.retry import is_transient_database_fault as is_transient

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "RetryPolicy",
    "connect",
    "driver_cursor",
    "is_transient",
    "read_only",
    "sqlstate",
]
