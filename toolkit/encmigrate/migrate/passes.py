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

import sqlalchemy as sa

from encmigrate.migrate.batch import BatchResult, set_timeouts
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.loop import BatchLoop
from encmigrate.migrate.rekey import Operation

__all__ = ["catch_up", "dry_run"]


def catch_up(loop: BatchLoop) -> int:
    """Passes until one writes nothing (rows that keep failing do not count as written).

    Returns the rows written, for the run's report.
    """
    operation = loop.op.catch_up or loop.op
    total = 0
    for _ in range(loop.opts.catch_up_passes):
        if not _anything_pending(loop, operation):
            break
        written = _pass(loop, operation, phase="catch-up")
        total += written
        if written == 0 or loop.halted():
            break
    return total


def dry_run(loop: BatchLoop) -> None:
    """Every batch for real, each rolled back: nothing changes, the rate is measured."""
    _pass(loop, loop.op, phase="dry-run", commit=False)


def _anything_pending(loop: BatchLoop, operation: Operation) -> bool:
    """One cheap probe before walking the whole key range again."""
    probe = (
        sa.select(sa.literal(1))
        .select_from(loop.work.table)
        .where(operation.pending(loop.work))
        .limit(1)
    )
    with loop.connection() as connection:
        return connection[0].execute(probe).first() is not None


def _pass(loop: BatchLoop, operation: Operation, *, phase: str, commit: bool = True) -> int:
    written = 0
    cursor: Cursor | None = None
    opts = loop.opts
    with loop.connection() as connection:
        while not loop.halted():
            if not loop.take_batch():
                break
            start = cursor

            def one_batch(start: Cursor | None = start) -> BatchResult:
                conn = loop.usable(connection)
                transaction = conn.begin()
                try:
                    set_timeouts(conn, opts.lock_timeout_ms, opts.statement_timeout_ms)
                    result = operation.batch(conn, loop.work, start, None, opts.batch_size)
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
                loop.batch_done(result, phase)
                written += result.rows_written
            if result.rows_read < opts.batch_size:
                break
            cursor = result.last_key
            loop.pause()
    return written
