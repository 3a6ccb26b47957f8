"""Taking a revision's locks without blocking the application.

``op.set_ddl_timeouts`` sets a session ``lock_timeout``, so that DDL queued
behind a long transaction gives up instead of making every later query on the
table queue behind it; ``op.reset_ddl_timeouts`` undoes it. A lock timeout or a
deadlock rolls the transaction back and can succeed later: :func:`ddl_retrying`
is the retry policy both ``--apply`` and the concurrent index build use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from encmigrate.boundary import sqlstate
from encmigrate.database import MYSQL_DIALECTS

__all__ = [
    "DDL_RETRIES_ATTRIBUTE",
    "LOCK_FAILURES",
    "ResetDDLTimeoutsOp",
    "SetDDLTimeoutsOp",
    "ddl_retrying",
    "lock_failure",
]

# The Alembic Config attribute encmigrate sets to the plan's [migration] ddl_retries;
# a plain `alembic upgrade` has no plan and gets the default.
DDL_RETRIES_ATTRIBUTE = "encmigrate.ddl_retries"
# SQLSTATEs after which the same DDL can succeed later: the lock was not granted in time,
# or PostgreSQL broke a deadlock by cancelling us. Either way our transaction rolled back.
LOCK_FAILURES = {"55P03": "lock timeout", "40P01": "deadlock"}
# Backoff between attempts: 0.25 s doubling to 10 s, plus up to 0.25 s of jitter so that
# two waiting migrators (or a migrator and the blocking job's own retries) fall out of step.
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 10.0


def lock_failure(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` is a lock timeout or a deadlock, else None.

    MariaDB's error numbers count as the SQLSTATE of the same condition (1205 lock
    wait timeout, metadata locks included, is 55P03; 1213 deadlock is 40P01).
    """
    state = sqlstate(exc) if getattr(exc, "orig", None) is not None else None
    return state if state in LOCK_FAILURES else None


def ddl_retrying(
    retries: int,
    *,
    log: logging.Logger,
    what: str,
    retryable: Callable[[BaseException], bool] = lambda exc: lock_failure(exc) is not None,
) -> Retrying:
    """Up to ``retries`` more attempts after a lock failure, with capped backoff and jitter.

    Each retry is logged at INFO on ``log``; the last error is re-raised as it is.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        code = lock_failure(error) if error is not None else None
        log.info(
            "%s: %s (SQLSTATE %s) on attempt %d of %d; trying again in %.1f s",
            what,
            LOCK_FAILURES.get(code or "", "error"),
            code,
            state.attempt_number,
            retries + 1,
            state.next_action.sleep if state.next_action is not None else 0.0,
        )

    return Retrying(
        retry=retry_if_exception(retryable),
        wait=wait_exponential(multiplier=_BACKOFF_FIRST, max=_BACKOFF_MAX)
        + wait_random(0, _BACKOFF_FIRST),
        stop=stop_after_attempt(retries + 1),
        before_sleep=before_sleep,
        reraise=True,
    )


@Operations.register_operation("set_ddl_timeouts")
class SetDDLTimeoutsOp(MigrateOperation):
    """``SET lock_timeout`` for the rest of the session (PostgreSQL), ``lock_wait_timeout``
    (MariaDB, rounded up to whole seconds); nothing on SQLite.

    A session-level ``SET``, not ``SET LOCAL``: the statements Alembic runs in an
    ``autocommit_block()`` (``CREATE INDEX CONCURRENTLY``, ``VACUUM FULL``) run
    outside the revision's transaction and must be bounded too.
    """

    def __init__(self, *, lock_timeout_ms: int) -> None:
        self.lock_timeout_ms = int(lock_timeout_ms)

    @classmethod
    def set_ddl_timeouts(cls, operations: Operations, *, lock_timeout_ms: int) -> Any:
        """Make every later lock wait of this session give up after ``lock_timeout_ms``."""
        return operations.invoke(cls(lock_timeout_ms=lock_timeout_ms))

    def reverse(self) -> ResetDDLTimeoutsOp:
        return ResetDDLTimeoutsOp()


@Operations.register_operation("reset_ddl_timeouts")
class ResetDDLTimeoutsOp(MigrateOperation):
    """``RESET lock_timeout``: back to the session's default (PostgreSQL; nothing on SQLite)."""

    @classmethod
    def reset_ddl_timeouts(cls, operations: Operations) -> Any:
        """Undo ``set_ddl_timeouts``, so a connection handed in by the caller is left as it was."""
        return operations.invoke(cls())

    def reverse(self) -> MigrateOperation:
        return self  # nothing to restore: the next set_ddl_timeouts sets its own value


@Operations.implementation_for(SetDDLTimeoutsOp)
def _set_ddl_timeouts(operations: Operations, op: SetDDLTimeoutsOp) -> None:
    dialect = operations.get_context().dialect.name
    if dialect == "postgresql":
        operations.execute(f"SET lock_timeout = '{op.lock_timeout_ms}ms'")
    elif dialect in MYSQL_DIALECTS:
        # MariaDB's DDL waits for the table's metadata lock up to lock_wait_timeout (whole
        # seconds, default a year), and every query on the table queues behind it meanwhile.
        operations.execute(f"SET SESSION lock_wait_timeout = {_seconds(op.lock_timeout_ms)}")


@Operations.implementation_for(ResetDDLTimeoutsOp)
def _reset_ddl_timeouts(operations: Operations, op: ResetDDLTimeoutsOp) -> None:
    dialect = operations.get_context().dialect.name
    if dialect == "postgresql":
        operations.execute("RESET lock_timeout")
    elif dialect in MYSQL_DIALECTS:
        operations.execute("SET SESSION lock_wait_timeout = DEFAULT")


def _seconds(milliseconds: int) -> int:
    """lock_wait_timeout in whole seconds, at least 1 (0 is not accepted)."""
    return max(1, -(-int(milliseconds) // 1000))


@renderers.dispatch_for(SetDDLTimeoutsOp)
def _render_set_timeouts(autogen_context: AutogenContext, op: SetDDLTimeoutsOp) -> str:
    return f"op.set_ddl_timeouts(lock_timeout_ms={op.lock_timeout_ms})"


@renderers.dispatch_for(ResetDDLTimeoutsOp)
def _render_reset_timeouts(autogen_context: AutogenContext, op: ResetDDLTimeoutsOp) -> str:
    return "op.reset_ddl_timeouts()"
