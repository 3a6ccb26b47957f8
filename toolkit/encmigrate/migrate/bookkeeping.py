"""What a run records in ``encryption_migrations`` and ``encryption_migration_failures``.

The tracking rows say where each column stands; they never hold a value,
and a database error is recorded by its SQLSTATE and class only, since its
message can quote the row it failed on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.boundary import mysql_error_number
from encmigrate.errors import EncmigrateError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate import chunks as chunking
from encmigrate.migrate.database import is_transient, sqlstate
from encmigrate.migrate.rekey import DECRYPT_BACK, ENCRYPT, Operation
from encmigrate.migrate.report import MigrateOptions, TableReport
from encmigrate.migrate.table import TableWork
from encmigrate.tracking import MigrationStatus, failures, migrations

__all__ = [
    "Census",
    "census",
    "database_failure",
    "error_kind",
    "failure_line",
    "mark_failed",
    "mark_running",
    "one_line",
    "record_finish",
    "record_last_run",
]

logger = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def mark_running(
    conn: sa.Connection,
    work: TableWork,
    operation: Operation,
    keyring: Keyring,
    options: MigrateOptions,
    rows_total: int,
) -> None:
    """The columns' rows at the start of a run (created when missing)."""
    now = _now()
    worker = chunking.new_worker_id()
    if not operation.backfill:  # rewrap and decrypt-back leave the step's status alone
        conn.execute(
            migrations.update()
            .where(
                migrations.c.table_name == work.name,
                migrations.c.column_name.in_(work.column_names),
            )
            .values(worker=worker, heartbeat_at=now, updated_at=now)
        )
        return
    for column in work.column_names:
        key = {"table_name": work.name, "column_name": column}
        values = {
            "status": MigrationStatus.RUNNING.value,
            "key_version": keyring.current,
            "batch_size": options.batch_size,
            "rows_total": rows_total,
            "worker": worker,
            "heartbeat_at": now,
            "updated_at": now,
            "last_error": None,
        }
        updated = conn.execute(
            migrations.update()
            .where(migrations.c.table_name == work.name, migrations.c.column_name == column)
            .values(
                **values,
                attempts=migrations.c.attempts + 1,
                started_at=sa.func.coalesce(migrations.c.started_at, now),
                rows_done=0 if options.restart else migrations.c.rows_done,
            )
        )
        if updated.rowcount == 0:
            conn.execute(migrations.insert().values(**key, **values, attempts=1, started_at=now))


@dataclass(frozen=True, slots=True)
class Census:
    """One scan of the table at the end of a backfill: rows the catch-up must still do, and
    each column's ``rows_done`` / ``rows_total`` (values encrypted / values to encrypt)."""

    pending: int
    columns: Mapping[str, Mapping[str, int]]


def census(conn: sa.Connection, work: TableWork, pending: sa.ColumnElement[bool]) -> Census:
    """Count the rows matching ``pending`` and every column's values, in one scan.

    On a table of a million rows each full scan costs a second or more on MariaDB:
    one scan here, where a count per column and one for the catch-up took four.
    """
    aggregates: list[sa.ColumnElement[Any]] = [sa.func.count(sa.case((pending, 1)))]
    for shadow in work.shadows:
        present = [shadow.ciphertext.is_not(None)]
        if shadow.plaintext is not None:
            present.append(shadow.plaintext.is_not(None))
        # count(CASE WHEN ... THEN 1 END), not count(*) FILTER (WHERE ...): the same rows
        # (count skips NULLs), and MariaDB has no FILTER.
        aggregates += [
            sa.func.count(shadow.ciphertext),
            sa.func.count(sa.case((sa.or_(*present), 1))),
        ]
    row = conn.execute(sa.select(*aggregates).select_from(work.table)).one()
    columns = {
        shadow.work.plan.column: {
            "rows_done": int(row[1 + 2 * i]),
            "rows_total": int(row[2 + 2 * i]),
        }
        for i, shadow in enumerate(work.shadows)
    }
    return Census(int(row[0]), columns)


def record_finish(
    conn: sa.Connection,
    work: TableWork,
    operation: Operation,
    keyring: Keyring,
    counts: Census | None = None,
) -> int:
    """The columns' rows at the end of a run; returns how many rows still fail.

    ``counts``: a backfill's census taken since its last write, else the table is counted.
    """
    now = _now()
    forget_resolved_failures(conn, work, operation)
    failed_rows: int = conn.execute(
        sa.select(sa.func.count(sa.distinct(sa.cast(failures.c.primary_key, sa.Text)))).where(
            failures.c.table_name == work.name,
            failures.c.column_name.in_(work.column_names),
        )
    ).scalar_one()
    if operation.backfill and counts is None:
        counts = census(conn, work, ENCRYPT.pending(work))
    for column in work.column_names:
        failed = conn.execute(
            sa.select(sa.func.count())
            .select_from(failures)
            .where(failures.c.table_name == work.name, failures.c.column_name == column)
        ).scalar_one()
        values = _final_values(operation, keyring, now, failed)
        if counts is not None:
            values.update(counts.columns[column])
        conn.execute(
            migrations.update()
            .where(migrations.c.table_name == work.name, migrations.c.column_name == column)
            .values(values)
        )
    return failed_rows


def forget_resolved_failures(conn: sa.Connection, work: TableWork, operation: Operation) -> None:
    """Drop failure entries whose row is gone or no longer needs this operation.

    A value fixed by the application and encrypted by a later run must not
    keep the column "failed" (and the command's exit code 1) forever.
    """
    entries = conn.execute(
        sa.select(failures.c.id, failures.c.primary_key).where(
            failures.c.table_name == work.name,
            failures.c.column_name.in_(work.column_names),
        )
    ).all()
    # A repair's failures are the backfill's (values that do not fit the type).
    pending = ENCRYPT.pending(work) if operation.backfill else operation.pending(work)
    resolved = []
    for entry_id, document in entries:
        key = work.keys.from_json(document)
        if key is None:
            continue
        match = [c == v for c, v in zip(work.primary_key, key, strict=True)]
        still = conn.execute(
            sa.select(sa.literal(1)).select_from(work.table).where(*match, pending)
        ).first()
        if still is None:
            resolved.append(entry_id)
    if resolved:
        conn.execute(failures.delete().where(failures.c.id.in_(resolved)))


def _final_values(
    operation: Operation, keyring: Keyring, now: dt.datetime, failed: int
) -> dict[str, Any]:
    problem = (
        f"{failed} rows could not be processed: see encryption_migration_failures"
        if failed
        else None
    )
    common: dict[str, Any] = {"updated_at": now, "heartbeat_at": now, "last_error": problem}
    if operation.backfill:
        return {
            **common,
            "status": MigrationStatus.COMPLETED.value,
            "rows_failed": failed,
            "finished_at": now,
        }
    if operation is DECRYPT_BACK:  # plaintext and ciphertext both present again
        return {**common, "status": MigrationStatus.COMPLETED.value, "finished_at": now}
    return {**common, "key_version": keyring.current}  # rewrap


def mark_failed(engine: sa.Engine, work: TableWork, error: BaseException) -> None:
    """Record a failed run on its columns (best effort: the database may be the problem)."""
    try:
        with engine.begin() as conn:
            conn.execute(
                migrations.update()
                .where(
                    migrations.c.table_name == work.name,
                    migrations.c.column_name.in_(work.column_names),
                )
                .values(
                    status=MigrationStatus.FAILED.value,
                    last_error=one_line(error)[:2000],
                    updated_at=_now(),
                )
            )
    except sa.exc.SQLAlchemyError:
        logger.warning("could not record the failure of %s", work.name)


def error_kind(exc: BaseException) -> str:
    """SQLSTATE (MySQL: error number) and class of a database error, never its message
    (which can quote values)."""
    original = getattr(exc, "orig", None) or exc
    state = sqlstate(exc)
    kind = type(original).__name__
    number = mysql_error_number(exc)
    if number is not None:
        kind = f"MySQL error {number} {kind}"
    return f"SQLSTATE {state} {kind}" if state else kind


def database_failure(table: str, exc: BaseException, command: str) -> str:
    """The one line a run that failed on a database error ends with (no value in it).

    "after retries" only where the error was one the retry policy retries: a refusal
    (a CHECK, a duplicate key) fails the batch at once.
    """
    what = "database error after retries" if is_transient(exc) else "database error"
    return failure_line(table, what, exc, command)


def failure_line(table: str, what: str, exc: BaseException, command: str) -> str:
    """``table: what (error kind); progress is saved: ...``, the end of a failed run."""
    return (
        f"{table}: {what} ({error_kind(exc)}); progress is saved: fix the cause and run "
        f"`encmigrate {command}` again"
    )


def one_line(exc: BaseException) -> str:
    if isinstance(exc, EncmigrateError):
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return error_kind(exc)


def record_last_run(engine: sa.Engine, report: TableReport, options: MigrateOptions) -> None:
    """This run's rows and seconds, for the rate ``status`` shows (best effort).

    Written after the run, interrupted ones too. Tracking tables created before
    these columns existed do not have them: nothing is written there.
    """

    def record() -> None:
        with engine.begin() as conn:
            names = {c["name"] for c in sa.inspect(conn).get_columns(migrations.name)}
            if not {"last_run_rows", "last_run_seconds"} <= names:
                return
            conn.execute(
                migrations.update()
                .where(
                    migrations.c.table_name == report.table,
                    migrations.c.column_name.in_(report.columns),
                )
                .values(last_run_rows=report.rows_done, last_run_seconds=report.seconds)
            )

    try:
        options.retry.run(record)
    except sa.exc.SQLAlchemyError as exc:
        logger.warning(
            "could not record the run's rate for %s (%s)", report.table, type(exc).__name__
        )
