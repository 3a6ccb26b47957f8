"""Passes of one worker over a whole table, outside the chunks: catch-up and dry run.

* catch-up: after every chunk is done, rows changed or inserted behind the
  cursors still need work; the shadow trigger cleared the ciphertext of every
  row whose plaintext changed after its batch, so the operation's pending
  filter finds them all;
* dry run: every batch for real, each rolled back: nothing changes and the
  rate is measured.

Each batch is one transaction, as in the chunks (without a checkpoint: a pass
starts over from the first key, and the pending filter skips what is done).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from encmigrate.migrate.batch import BatchResult, set_timeouts
from encmigrate.migrate.keyset import Cursor

if TYPE_CHECKING:
    from encmigrate.migrate.rekey import Operation
    from encmigrate.migrate.tablerun import TableRun

__all__ = ["catch_up", "dry_run"]


def catch_up(run: TableRun) -> None:
    """Passes until one writes nothing (rows that keep failing do not count as written)."""
    operation = run.op.catch_up or run.op
    for _ in range(run.opts.catch_up_passes):
        if not _anything_pending(run, operation):
            return
        written = _pass(run, operation, phase="catch-up")
        run.report.catch_up_rows += written
        if written == 0 or run.halted():
            return


def dry_run(run: TableRun) -> None:
    """Every batch for real, each rolled back: nothing changes, the rate is measured."""
    with run.engine.connect() as conn:
        run.report.rows_total = conn.execute(run.count_pending()).scalar_one()
    _pass(run, run.op, phase="dry-run", commit=False)


def _anything_pending(run: TableRun, operation: Operation) -> bool:
    """One cheap probe before walking the whole key range again."""
    probe = (
        sa.select(sa.literal(1))
        .select_from(run.work.table)
        .where(operation.pending(run.work))
        .limit(1)
    )
    with run.engine.connect() as conn:
        return conn.execute(probe).first() is not None


def _pass(run: TableRun, operation: Operation, *, phase: str, commit: bool = True) -> int:
    written = 0
    cursor: Cursor | None = None
    opts = run.opts
    with run.connection() as connection:
        while not run.halted():
            if not run.take_batch():
                break
            start = cursor

            def one_batch(start: Cursor | None = start) -> BatchResult:
                conn = run.usable(connection)
                transaction = conn.begin()
                try:
                    set_timeouts(conn, opts.lock_timeout_ms, opts.statement_timeout_ms)
                    result = operation.batch(conn, run.work, start, None, opts.batch_size)
                except BaseException:
                    transaction.rollback()
                    raise
                if commit:
                    transaction.commit()
                else:
                    transaction.rollback()
                return result

            result = opts.retry.run(one_batch)
            if result.rows_read:
                run.tally.add(result)
                written += result.rows_written
                run.emit(phase)
            if result.rows_read < opts.batch_size:
                break
            cursor = result.last_key
            run.pause()
    return written
