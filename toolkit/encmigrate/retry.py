"""The one retry policy: capped exponential backoff with jitter, for transient failures only.

The migrator retries transient database faults with it (``MigrateOptions.retry``,
:func:`is_transient_database_fault`: the default of :meth:`RetryPolicy.run`),
the networked key providers retry throttling and lost connections with it
(``keys/remote.py`` :func:`~encmigrate.keys.remote.call_with_retries`, which
passes the provider's own ``transient``). Anything else is raised at once:
retrying a permission error or a bad statement only delays a clear answer.

The database faults retried: lock timeout (55P03), deadlock (40P01),
serialization failure (40001), admin shutdown and friends (57P01-57P03), too
many connections (53300), a lost connection (class 08, or a closed socket),
and SQLite's "database is locked" or busy. MariaDB/MySQL errors are read by
their number (``encmigrate.boundary.MYSQL_SQLSTATES`` gives each the SQLSTATE
PostgreSQL gives the same condition): 1205 lock wait timeout, 1213 deadlock,
2002/2003/2006/2013 lost or refused connection, 1927 connection killed, 1053
server shutdown and 1040 too many connections are transient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

__all__ = ["TRANSIENT_SQLSTATES", "RetryPolicy", "is_transient_database_fault"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_SQLSTATES = frozenset({"55P03", "40P01", "40001", "57P01", "57P02", "57P03", "53300"})


def is_transient_database_fault(exc: BaseException) -> bool:
    """Whether running the same database work again later can succeed."""
    # Imported here: `import encmigrate` (an application's, the key providers') must not
    # pull SQLAlchemy in for a policy that may never see a database error.
    import sqlalchemy as sa

    from encmigrate.boundary import sqlstate

    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state is not None:
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    original = getattr(exc, "orig", exc)
    name = type(original).__module__ + "." + type(original).__name__
    text = str(original).lower()
    if name.startswith("sqlite3.") and ("locked" in text or "busy" in text):
        return True
    if name.startswith("psycopg."):
        # Through SQLAlchemy or straight from psycopg (the migrator's hot paths use its
        # cursor): a lost connection has no SQLSTATE, only libpq's words.
        import psycopg

        lost = ("connection", "server closed", "terminat", "could not send", "could not receive")
        return isinstance(original, psycopg.OperationalError) and any(w in text for w in lost)
    return False


@dataclass(frozen=True, init=False)
class RetryPolicy:
    """How often and how long to retry a transient failure (waits in seconds).

    The wait before retry ``n`` is ``initial_wait * 2 ** (n - 1)``, capped at
    ``max_wait``, plus up to ``initial_wait`` of jitter so that clients failing
    together do not retry together. ``initial`` and ``maximum`` are the
    migrator's spelling of ``initial_wait`` and ``max_wait``. The defaults are
    the key providers'; :meth:`for_database` gives the migrator's.

    Frozen: one policy is shared by every worker of a run (and sent to worker
    processes), so none may change it under the others. To observe or alter
    the retries, pass ``on_retry`` to :meth:`run` or subclass.
    """

    attempts: int
    initial_wait: float
    max_wait: float

    def __init__(
        self,
        attempts: int = 5,
        initial_wait: float | None = None,
        max_wait: float | None = None,
        *,
        initial: float | None = None,
        maximum: float | None = None,
    ) -> None:
        if initial is not None and initial_wait is not None:
            raise TypeError("give initial_wait or initial, not both")
        if maximum is not None and max_wait is not None:
            raise TypeError("give max_wait or maximum, not both")
        # Frozen: the fields are set once, here, past the dataclass's __setattr__.
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "initial_wait", _first_given(initial_wait, initial, 0.2))
        object.__setattr__(self, "max_wait", _first_given(max_wait, maximum, 5.0))
        if self.attempts < 1:
            raise ValueError("attempts must be 1 or more")
        if self.initial_wait < 0 or self.max_wait < 0:
            raise ValueError("initial_wait and max_wait must be 0 or more seconds")

    @classmethod
    def for_database(cls) -> RetryPolicy:
        """The migrator's default: database faults clear quickly (a lock released, a deadlock)."""
        return cls(attempts=8, initial_wait=0.05, max_wait=5.0)

    @property
    def initial(self) -> float:
        """``initial_wait``, as the migrator spells it."""
        return self.initial_wait

    @property
    def maximum(self) -> float:
        """``max_wait``, as the migrator spells it."""
        return self.max_wait

    def run(
        self,
        work: Callable[[], T],
        *,
        transient: Callable[[BaseException], bool] = is_transient_database_fault,
        what: str = "database",
        on_retry: Callable[[BaseException, int], None] | None = None,
    ) -> T:
        """``work()``, retried while it raises an error ``transient`` accepts; the last error wins.

        ``what`` names the work in the log line of each retry (never a value);
        ``on_retry`` hears of each retry (the error, the attempt that failed).
        """

        def before_sleep(state: RetryCallState) -> None:
            from encmigrate.boundary import sqlstate  # SQLAlchemy only once something failed

            error = state.outcome.exception() if state.outcome else None
            if error is None:
                return
            logger.warning(
                "%s: transient failure (%s) on attempt %d of %d, retrying",
                what,
                sqlstate(error) or type(error).__name__,
                state.attempt_number,
                self.attempts,
            )
            if on_retry is not None:
                on_retry(error, state.attempt_number)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.initial_wait, max=self.max_wait)
            + wait_random(0, self.initial_wait),
            retry=retry_if_exception(transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(work)


def _first_given(value: float | None, alias: float | None, default: float) -> float:
    if value is not None:
        return value
    return alias if alias is not None else default
