"""``migrate-data``, ``rewrap`` and ``decrypt-back``: the public entry points.

Each selected table gets one :class:`~encmigrate.migrate.tablerun.TableRun`
of the operation; see that module for how a run works.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlalchemy as sa

from encmigrate.keys.keyring import Keyring
from encmigrate.migrate.bookkeeping import record_last_run
from encmigrate.migrate.pipeline import quick_gil_handover
from encmigrate.migrate.rekey import DECRYPT_BACK, ENCRYPT, Operation, rewrap_operation
from encmigrate.migrate.repair import REPAIR, require_readable
from encmigrate.migrate.report import (
    MigrateOptions,
    Progress,
    ProgressCallback,
    TableReport,
    eta_text,
    run_workers,
)
from encmigrate.migrate.table import TableWork
from encmigrate.migrate.tablerun import TableRun
from encmigrate.plan import Plan

__all__ = [
    "MigrateOptions",
    "Progress",
    "TableReport",
    "decrypt_back",
    "eta_text",
    "migrate_data",
    "rewrap",
]


def migrate_data(
    plan: Plan,
    engine: sa.Engine,
    keyring: Keyring,
    *,
    tables: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    options: MigrateOptions | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    repair: bool = False,
) -> list[TableReport]:
    """Backfill the shadow columns of the selected tables; see the module docstring.

    ``stop`` ends the run after the current batches (Ctrl-C): checkpoints are
    saved and the next invocation resumes. ``repair`` walks every row that has
    a ciphertext too and seals again each one that disagrees with its plaintext
    (see :mod:`encmigrate.migrate.repair`).
    """
    operation = REPAIR if repair else ENCRYPT
    return _run(operation, plan, engine, keyring, tables, columns, options, progress, stop)


def rewrap(
    plan: Plan,
    engine: sa.Engine,
    keyring: Keyring,
    *,
    tables: Sequence[str] | None = None,
    from_version: int | None = None,
    options: MigrateOptions | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> list[TableReport]:
    """Re-encrypt values under older key versions (or ``from_version``) to the current one."""
    operation = rewrap_operation(keyring.current, from_version)
    return _run(operation, plan, engine, keyring, tables, None, options, progress, stop)


def decrypt_back(
    plan: Plan,
    engine: sa.Engine,
    keyring: Keyring,
    *,
    tables: Sequence[str] | None = None,
    options: MigrateOptions | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> list[TableReport]:
    """Refill re-added plaintext columns from the ciphertext (the rollback path)."""
    return _run(DECRYPT_BACK, plan, engine, keyring, tables, None, options, progress, stop)


def _run(
    operation: Operation,
    plan: Plan,
    engine: sa.Engine,
    keyring: Keyring,
    tables: Sequence[str] | None,
    columns: Sequence[str] | None,
    options: MigrateOptions | None,
    progress: ProgressCallback | None,
    stop: threading.Event | None,
) -> list[TableReport]:
    opts = options or MigrateOptions()
    halt = stop or threading.Event()
    reports = []
    with quick_gil_handover(opts.gil_interval):
        for table_plan in plan.select(tables):
            work = TableWork(engine, table_plan, keyring, columns=columns)
            if operation is REPAIR:
                with engine.connect() as conn:
                    require_readable(conn, work)
            runner = TableRun(engine, work, keyring, opts, progress, halt, operation)
            report = runner.run()
            report.workers = run_workers(engine.dialect.name, opts.workers)
            reports.append(report)
            if operation is ENCRYPT and not report.dry_run:
                record_last_run(engine, report, opts)
            if halt.is_set():
                break
    return reports
