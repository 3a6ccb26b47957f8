"""The tracking tables the migrator writes and the generators check.

``add-columns`` creates them; the migrator (``migrate-data``, ``verify``)
writes them; ``drop-unencrypted`` refuses unless every selected column is
``verified`` here. docs/architecture.md ("The tracking tables") says what
each column means and who writes it. Primary keys are stored as JSON
arrays in key-column order, so composite keys fit the same columns.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = [
    "ALL_TABLES",
    "MIGRATOR_SETTING",
    "MIGRATOR_VARIABLE",
    "SQLITE_WRITER_TABLE",
    "TRACKING_TABLES",
    "ChunkStatus",
    "ControlState",
    "MigrationStatus",
    "chunks",
    "control",
    "failures",
    "metadata",
    "migrations",
    "workers",
]


class MigrationStatus(enum.StrEnum):
    """States of one (table, column) in ``encryption_migrations``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    VERIFIED = "verified"
    DROPPED = "dropped"


class ChunkStatus(enum.StrEnum):
    """States of one key-range chunk in ``encryption_migration_chunks``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def _status_check(name: str, states: type[enum.StrEnum]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{state.value}'" for state in states)
    return sa.CheckConstraint(f"status IN ({allowed})", name=name)


# MariaDB/MySQL's DATETIME keeps whole seconds unless asked for more: the control table
# compares a stop request with a run's start, which can fall in the same second.
_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _timestamp(name: str, **kwargs: object) -> sa.Column[object]:
    return sa.Column(name, _TIMESTAMP, **kwargs)  # type: ignore[arg-type]


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

migrations = sa.Table(
    "encryption_migrations",
    metadata,
    sa.Column("table_name", sa.String(255), primary_key=True),
    sa.Column("column_name", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("key_version", sa.Integer(), nullable=True),
    sa.Column("batch_size", sa.Integer(), nullable=True),
    sa.Column("last_primary_key", sa.JSON(), nullable=True),
    sa.Column("rows_total", sa.BigInteger(), nullable=True),
    sa.Column("rows_done", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("rows_failed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("worker", sa.String(255), nullable=True),
    _timestamp("heartbeat_at", nullable=True),
    _timestamp("started_at", nullable=True),
    _timestamp("updated_at", nullable=True),
    _timestamp("finished_at", nullable=True),
    _timestamp("verified_at", nullable=True),
    # The last backfill run's own figures, for the rate `status` shows. Added after the
    # first release: tracking tables created before them lack both (no rate is shown).
    sa.Column("last_run_rows", sa.BigInteger(), nullable=True),
    sa.Column("last_run_seconds", sa.Float(), nullable=True),
    _status_check("ck_encryption_migrations_status", MigrationStatus),
    comment="encmigrate: one row per encrypted (table, column): progress and verify status",
)
migrations.__doc__ = """One row per planned (table, column).

``table_name`` is written as the plan writes it (``sales.customer``); ``status``
takes :class:`MigrationStatus` values; ``last_primary_key`` is no longer written
(kept for tables created by older releases: each chunk of
``encryption_migration_chunks`` keeps its own cursor, in its batch's transaction);
``verified_at`` is set by a full, clean verify only; ``last_run_rows`` and
``last_run_seconds`` (nullable, absent from tables created by older releases)
are the rows the last backfill run encrypted and its duration.
"""

failures = sa.Table(
    "encryption_migration_failures",
    metadata,
    sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("column_name", sa.String(255), nullable=False),
    sa.Column("primary_key", sa.JSON(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    _timestamp("failed_at", nullable=False, server_default=sa.func.current_timestamp()),
    sa.Index("ix_encryption_migration_failures_column", "table_name", "column_name"),
    comment="encmigrate: rows that could not be encrypted, with their key and the reason",
)
failures.__doc__ = """Rows the migrator could not encrypt (e.g. a value that does not fit the
declared type). ``primary_key`` is a JSON array in key-column order; ``reason`` names
the problem, never the value.
"""

chunks = sa.Table(
    "encryption_migration_chunks",
    metadata,
    sa.Column("table_name", sa.String(255), primary_key=True),
    sa.Column("operation", sa.String(32), primary_key=True),
    sa.Column("chunk_id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("columns", sa.JSON(), nullable=False),
    sa.Column("lower_key", sa.JSON(), nullable=True),
    sa.Column("upper_key", sa.JSON(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("owner_pid", sa.Integer(), nullable=True),
    _timestamp("owner_backend_start", nullable=True),
    _timestamp("lease_expires_at", nullable=True),
    _timestamp("heartbeat_at", nullable=True),
    sa.Column("cursor", sa.JSON(), nullable=True),
    sa.Column("rows_done", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("rows_failed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    _timestamp("updated_at", nullable=True),
    _status_check("ck_encryption_migration_chunks_status", ChunkStatus),
    sa.Index("ix_encryption_migration_chunks_claim", "table_name", "operation", "status"),
    comment="encmigrate: key-range chunks leased by workers (FOR UPDATE SKIP LOCKED)",
)
chunks.__doc__ = """Key-range chunks of one table's run, shared by workers.

One run covers the planned ``columns`` (JSON list) of a table for one
``operation`` (``encrypt``, ``rewrap``, ``decrypt-back``): every column of a
row is written in the same UPDATE, so a row gets one new version, not one per
column. A worker claims a ``pending`` chunk, or a ``running`` one whose owner
is gone (its database session, ``owner_pid`` + ``owner_backend_start``, no
longer exists) or whose ``lease_expires_at`` has passed, with ``FOR UPDATE
SKIP LOCKED``, and renews the lease in every batch transaction.
``lower_key`` (exclusive) and ``upper_key`` (inclusive) are JSON arrays in
key-column order, NULL meaning unbounded; ``cursor`` is the last key done
inside the chunk, written in the same transaction as its batch.
"""


class ControlState(enum.StrEnum):
    """What ``encmigrate pause``, ``resume`` and ``stop`` ask of the runs of a table."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


#: The ``table_name`` of a control request for every table.
ALL_TABLES = "*"

control = sa.Table(
    "encryption_migration_control",
    metadata,
    sa.Column("table_name", sa.String(255), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="running"),
    sa.Column("requested_by", sa.String(255), nullable=True),
    _timestamp("requested_at", nullable=False, server_default=sa.func.current_timestamp()),
    sa.CheckConstraint(
        "state IN ({})".format(", ".join(f"'{s.value}'" for s in ControlState)),
        name="ck_encryption_migration_control_state",
    ),
    comment="encmigrate: pause, resume and stop requests for running migrations",
)
control.__doc__ = """One row per table a request names (``*``: every table); the newest of a
table's row and the ``*`` row applies. ``stopped`` ends the runs that started before
``requested_at`` (database time); ``paused`` holds every run until a ``resume``.
"""

workers = sa.Table(
    "encryption_migration_workers",
    metadata,
    sa.Column("worker", sa.String(255), primary_key=True),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("chunk_id", sa.Integer(), nullable=True),
    sa.Column("batch_size", sa.Integer(), nullable=True),
    _timestamp("started_at", nullable=True),
    _timestamp("last_batch_at", nullable=True),
    _timestamp("heartbeat_at", nullable=True),
    sa.Column("throttled_reason", sa.Text(), nullable=True),
    _timestamp("throttled_since", nullable=True),
    sa.Column("throttled_seconds", sa.Float(), nullable=False, server_default=sa.text("0")),
    comment="encmigrate: the live workers of migrate-data runs (heartbeats, throttling)",
)
workers.__doc__ = """One row per live worker of a run (``host:pid:tag/n``), written at most once a
second between batches and deleted when the worker ends; a row whose ``heartbeat_at``
is old belongs to a worker that died.
"""

TRACKING_TABLES: tuple[sa.Table, ...] = (migrations, failures, chunks, control, workers)

# How the migrator marks its own write transactions, so that the shadow trigger of
# step 4 does not take its ciphertext-only writes for writes through the view:
# PostgreSQL, a transaction-local setting (SET LOCAL); SQLite, which has no session
# settings, a row in this table for the length of its UPDATE, in its transaction;
# MariaDB/MySQL, the session's user variable MIGRATOR_VARIABLE around its UPDATE.
MIGRATOR_SETTING = "encmigrate.writer"
MIGRATOR_VARIABLE = "@`" + MIGRATOR_SETTING.replace("`", "``") + "`"
SQLITE_WRITER_TABLE = "encryption_migration_writer"
