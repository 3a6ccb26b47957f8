"""Passes of one worker over a whole table, outside the chunks: catch-up and dry run.

* catch-up: after every chunk is done, rows changed or inserted behind the
  cursors still need work; the shadow trigger cleared the ciphertext of every
  row whose plaintext changed after its batch, so the operation's pending
  filter finds them all. Each pass is bounded to the keys that existed when
  it started (rows inserted meanwhile wait for the next pass), and the passes
  end when one makes no progress (as many rows pending after it as before:
  the application clears rows as fast as the pass writes them): a run under
  any write rate ends, and reports the rows it left and why (they stay
  pending for the next run, and verify counts them as missing);
* dry run: every batch for real, each rolled back: nothing changes and the
  rate is measured.

Each batch is one transaction, as in the chunks (without a checkpoint: a pass
starts over from the first key, and the pending filter skips what is done).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.migrate.batch import BatchResult, set_timeouts
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.loop import BatchLoop
from encmigrate.migrate.rekey import Operation

__all__ = ["CatchUp", "catch_up", "dry_run"]

#: Why rows were left when the passes stopped making progress.
OUTPACED = (
    "the application changed rows as fast as the catch-up passes encrypted them; "
    "run migrate-data again when writes are quieter"
)
NO_PASSES_LEFT = "the catch-up passes were used up while rows were still changing"


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What the catch-up passes did: rows written, rows left pending and why (None: none)."""

    written: int = 0
    left: int = 0
    reason: str | None = None


def catch_up(loop: BatchLoop, *, pending: int | None = None) -> CatchUp:
    """Bounded passes until nothing is pending, a pass writes nothing or makes no progress.

    ``pending``: the rows the catch-up operation has to do, counted just before by the
    caller (else counted here). Rows that keep failing do not count as written; they are
    reported as failed, not as left.
    """
    operation = loop.op.catch_up or loop.op
    total = 0
    if pending is None:
        pending = _count_pending(loop, operation)
    for _ in range(loop.opts.catch_up_passes):
        if not pending:
            return CatchUp(total)
        written = _pass(loop, operation, phase="catch-up", upper=_last_key(loop))
        total += written
        if loop.halted():
            return CatchUp(total)
        left = _count_pending(loop, operation)
        if written == 0:  # what is left keeps failing (or was locked past every retry)
            return CatchUp(total)
        if left >= pending:
            return CatchUp(total, left, OUTPACED)
        pending = left
    return CatchUp(total, pending, NO_PASSES_LEFT if pending else None)


def dry_run(loop: BatchLoop) -> None:
    """Every batch for real, each rolled back: nothing changes, the rate is measured."""
    _pass(loop, loop.op, phase="dry-run", commit=False)


def _count_pending(loop: BatchLoop, operation: Operation) -> int:
    """Rows the operation still has to do: the measure of a pass's progress."""
    count = (
        sa.select(sa.func.count()).select_from(loop.work.table).where(operation.pending(loop.work))
    )
    with loop.connection() as connection:
        return int(connection[0].execute(count).scalar_one())


def _last_key(loop: BatchLoop) -> Cursor | None:
    """The largest key now: a pass ends there, whatever is inserted after it started."""
    key = loop.work.primary_key
    last = sa.select(*key).order_by(*(c.desc() for c in key)).limit(1)
    with loop.connection() as connection:
        row: Any = connection[0].execute(last).first()
    return tuple(row) if row is not None else None


def _pass(
    loop: BatchLoop,
    operation: Operation,
    *,
    phase: str,
    commit: bool = True,
    upper: Cursor | None = None,
) -> int:
    written = 0
    cursor: Cursor | None = None
    opts = loop.opts
    with loop.connection() as connection:
        while not loop.halted():
            if not loop.take_batch():
                break
            start = cursor
            limit = loop.batch_limit()

            def one_batch(start: Cursor | None = start, limit: int = limit) -> BatchResult:
                conn = loop.usable(connection)
                transaction = conn.begin()
                try:
                    set_timeouts(conn, opts.lock_timeout_ms, opts.statement_timeout_ms)
                    result = operation.batch(conn, loop.work, start, upper, limit)
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
            if result.rows_read < limit:
                break
            cursor = result.last_key
            loop.pause()
    return written
