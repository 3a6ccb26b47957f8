"""Throttling a run on a live primary: replica lag and load probes, and the adaptive batch size.

A run that writes as fast as it can takes I/O, WAL and replica replay from the
application. Between batches (``TableRun.pause``) the run asks its
:class:`Throttle` whether a limit is exceeded, and waits while one is:

* ``--max-replica-lag SECONDS``: how long the oldest WAL a standby has not
  replayed has existed (:class:`LsnLag`). The primary's ``replay_lag`` column
  is not used: it is NULL once a standby caught up and, while replay is
  paused, keeps the last value measured instead of growing, and
  ``now() - pg_last_xact_replay_timestamp()`` on a standby grows on an idle
  primary. Comparing LSNs has neither fault: the probe remembers when the
  primary's ``pg_current_wal_lsn()`` passed each position and reports the
  age of the first one the slowest standby has not replayed (0 when it
  replayed everything): precise to the probe interval, which is enough;
* ``--max-load NAME=LIMIT``: built-in counts (:data:`LOAD_PROBES`);
* ``--throttle-query SQL``: any number; the run waits while it is above 0.

A probe is only a callable returning a number; the PostgreSQL ones are built by
:func:`postgresql_probes`. On MariaDB/MySQL ``--max-load`` (:data:`MYSQL_LOAD_PROBES`)
and ``--throttle-query`` work the same way; the replica lag is PostgreSQL's (its WAL
positions): there, a ``--throttle-query`` reads the replicas' lag.
Probes run at most once per ``--throttle-interval`` (1 s), so the per-batch
cost is a clock read. A probe that fails throttles too (its error class is
the reason): a lag that cannot be read is not taken to be small.

:class:`BatchSizer` is the other half of running politely: with
``--target-batch-seconds`` the batch size moves toward batches of about that
duration (GitLab's batch optimizer: only when a batch took under 90 % or over
95 % of the target, by a damped factor), within ``--min-batch-size`` and
``--max-batch-size``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import ConfigError
from encmigrate.migrate.report import MigrateOptions

__all__ = [
    "LOAD_PROBES",
    "MYSQL_LOAD_PROBES",
    "BatchSizer",
    "Limit",
    "LsnLag",
    "Probe",
    "Throttle",
    "build_throttle",
    "parse_lsn",
    "parse_max_load",
    "postgresql_probes",
]

#: A probe: reads one number (seconds of lag, sessions, the throttle query's value).
Probe = Callable[[], float]

#: ``--max-load`` names and the query each one runs on a PostgreSQL primary.
LOAD_PROBES: dict[str, str] = {
    "active_sessions": (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ),
    "waiting_sessions": (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'"
    ),
}
#: The same names on MariaDB/MySQL: statements running in other client sessions (the
#: server's own threads are ``Daemon``), and InnoDB transactions waiting for a row lock.
MYSQL_LOAD_PROBES: dict[str, str] = {
    "active_sessions": (
        "SELECT count(*) FROM information_schema.PROCESSLIST "
        "WHERE COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump') AND ID <> CONNECTION_ID()"
    ),
    "waiting_sessions": (
        "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
    ),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """One probe and the value above which the run waits."""

    name: str
    probe: Probe
    limit: float
    unit: str = ""

    def reason(self, value: float) -> str:
        """``replica lag 12 s > 5 s``: what status shows while it throttles."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name} {value:g}{unit} > {self.limit:g}{unit}"


def parse_lsn(text: str) -> int:
    """``16/B374D848`` as the byte position it names."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class LsnLag:
    """Seconds since the primary wrote the oldest WAL a standby has not replayed.

    ``current`` reads the primary's WAL position, ``replayed`` the slowest
    standby's replay position (None: no standby to wait for). Each call
    remembers when the primary reached its position; the lag is the age of
    the oldest remembered position beyond the replayed one.
    """

    def __init__(
        self,
        current: Callable[[], int],
        replayed: Callable[[], int | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.current = current
        self.replayed = replayed
        self.clock = clock
        self.seen: deque[tuple[int, float]] = deque()  # (position, first seen), increasing

    def __call__(self) -> float:
        now = self.clock()
        position = self.current()
        if not self.seen or position > self.seen[-1][0]:
            self.seen.append((position, now))
        replayed = self.replayed()
        if replayed is None:
            return 0.0
        while self.seen and self.seen[0][0] <= replayed:
            self.seen.popleft()
        return now - self.seen[0][1] if self.seen else 0.0


def parse_max_load(pairs: Iterable[str]) -> tuple[tuple[str, float], ...]:
    """``active_sessions=50`` pairs, checked against :data:`LOAD_PROBES`."""
    parsed: list[tuple[str, float]] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in LOAD_PROBES:
            names = ", ".join(sorted(LOAD_PROBES))
            raise ConfigError(f"--max-load {pair!r}: expected NAME=LIMIT with NAME one of {names}")
        try:
            parsed.append((name.strip(), float(value)))
        except ValueError:
            raise ConfigError(f"--max-load {pair!r}: the limit is not a number") from None
    return tuple(parsed)


def _scalar(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def _number(engine: sa.Engine, sql: str) -> float:
    value = _scalar(engine, sql)
    return float(value) if value is not None else 0.0  # type: ignore[arg-type]


def postgresql_probes(
    engine: sa.Engine,
    *,
    max_replica_lag: float | None,
    replica_engines: Sequence[sa.Engine] = (),
    max_load: Sequence[tuple[str, float]] = (),
    throttle_query: str | None = None,
) -> list[Limit]:
    """The limits of a run on a PostgreSQL primary (``engine``)."""
    limits: list[Limit] = []

    def current() -> int:
        return parse_lsn(str(_scalar(engine, "SELECT pg_current_wal_lsn()::text")))

    if max_replica_lag is not None and not replica_engines:

        def replayed() -> int | None:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT replay_lsn::text FROM pg_stat_replication WHERE replay_lsn IS NOT NULL"
                ).all()
            return min((parse_lsn(r[0]) for r in rows), default=None)

        limits.append(Limit("replica lag", LsnLag(current, replayed), max_replica_lag, "s"))
    for index, replica in enumerate(replica_engines, 1):

        def replica_replayed(replica: sa.Engine = replica) -> int | None:
            value = _scalar(replica, "SELECT pg_last_wal_replay_lsn()::text")
            return parse_lsn(str(value)) if value is not None else None

        name = "replica lag" if len(replica_engines) == 1 else f"replica {index} lag"
        lag = LsnLag(current, replica_replayed)
        limits.append(Limit(name, lag, max_replica_lag if max_replica_lag is not None else 0, "s"))
    return limits + _load_limits(engine, LOAD_PROBES, max_load, throttle_query)


def _load_limits(
    engine: sa.Engine,
    probes: dict[str, str],
    max_load: Sequence[tuple[str, float]],
    throttle_query: str | None,
) -> list[Limit]:
    """``--max-load`` with the server family's ``probes``, and ``--throttle-query``."""
    limits = [
        Limit(name.replace("_", " "), _query_probe(engine, probes[name]), limit)
        for name, limit in max_load
    ]
    if throttle_query:
        limits.append(Limit("throttle query", _query_probe(engine, throttle_query), 0))
    return limits


def _query_probe(engine: sa.Engine, sql: str) -> Probe:
    """A probe that runs ``sql`` on the primary and reads its number (NULL: 0)."""

    def probe() -> float:
        return _number(engine, sql)

    return probe


def build_throttle(engine: sa.Engine, options: MigrateOptions) -> Throttle | None:
    """The run's throttle from its options (None: none asked); SQLite refuses them."""
    asked = (
        options.max_replica_lag is not None
        or options.replica_urls
        or options.max_load
        or options.throttle_query
    )
    if not asked:
        return None
    max_load = [(name, float(limit)) for name, limit in options.max_load]
    if engine.dialect.name in MYSQL_DIALECTS:
        if options.max_replica_lag is not None or options.replica_urls:
            raise ConfigError(
                "--max-replica-lag and --replica read PostgreSQL's WAL positions: on "
                f"{engine.dialect.name}, throttle on your replicas' lag with --throttle-query "
                "(a query that returns how far over the limit they are, 0 when they are not)"
            )
        limits = _load_limits(engine, MYSQL_LOAD_PROBES, max_load, options.throttle_query)
        return Throttle(limits, interval=options.throttle_interval)
    if engine.dialect.name != "postgresql":
        raise ConfigError(
            "--max-replica-lag, --replica, --max-load and --throttle-query read the server's "
            f"statistics: they are not available on {engine.dialect.name}"
        )
    if options.replica_urls and options.max_replica_lag is None:
        raise ConfigError("--replica needs --max-replica-lag SECONDS (the lag to wait below)")
    replicas = [
        sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
        for url in options.replica_urls
    ]
    limits = postgresql_probes(
        engine,
        max_replica_lag=options.max_replica_lag,
        replica_engines=replicas,
        max_load=max_load,
        throttle_query=options.throttle_query,
    )
    return Throttle(limits, interval=options.throttle_interval)


class Throttle:
    """Waits between batches while a limit is exceeded; counts the seconds it waited.

    Shared by the worker threads of one run: one probe round at a time, at
    most once per ``interval`` seconds; the others use its answer.
    """

    def __init__(
        self,
        limits: Sequence[Limit],
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = list(limits)
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reason: str | None = None
        self.throttled_seconds = 0.0
        self.since: float | None = None  # clock value when the current throttling began

    @property
    def reason(self) -> str | None:
        """Why the run waits now (None: it does not)."""
        return self._reason

    def check(self) -> str | None:
        """The reason to wait, probing again when the last answer is ``interval`` old."""
        if not self.limits:
            return None
        with self._lock:
            now = self.clock()
            if self._checked_at is None or now - self._checked_at >= self.interval:
                self._checked_at = now
                self._reason = self._probe()
                if self._reason is None:
                    self.since = None
                elif self.since is None:
                    self.since = now
            return self._reason

    def _probe(self) -> str | None:
        for limit in self.limits:
            try:
                value = limit.probe()
            except Exception as exc:  # a lag that cannot be read is not taken to be small
                return f"{limit.name} probe failed ({type(exc).__name__})"
            if value > limit.limit:
                return limit.reason(value)
        return None

    def wait(self, stop: threading.Event, on_wait: Callable[[str], None] | None = None) -> float:
        """Block while a limit is exceeded (cut short by ``stop``); the seconds waited.

        ``on_wait`` is told the reason at every probe round while waiting (the
        run's heartbeat and progress event).
        """
        waited = 0.0
        while not stop.is_set():
            reason = self.check()
            if reason is None:
                break
            if on_wait is not None:
                on_wait(reason)
            start = self.clock()
            stop.wait(min(self.interval, 1.0))
            spent = self.clock() - start
            waited += spent
            with self._lock:
                self.throttled_seconds += spent
        return waited


class BatchSizer:
    """The batch size, moved toward batches of ``target`` seconds (None: a fixed size).

    After each full batch the size is multiplied by ``target * 0.925 /
    duration`` when the batch took under 90 % or over 95 % of the target,
    the factor kept within 0.5 and 1.2 (damped: one slow batch does not
    halve the size twice, a fast one grows it by a fifth), the size within
    ``minimum`` and ``maximum``. Every size chosen is recorded in ``sizes``.
    """

    LOW, HIGH = 0.90, 0.95
    SHRINK, GROW = 0.5, 1.2

    def __init__(
        self, start: int, *, target: float | None, minimum: int | None, maximum: int | None
    ) -> None:
        self.minimum = max(1, minimum if minimum is not None else min(start, 100))
        self.maximum = max(self.minimum, maximum if maximum is not None else max(start, 10_000))
        self.target = target
        self.size = start if target is None else min(max(start, self.minimum), self.maximum)
        self.sizes: list[int] = [self.size]
        self._lock = threading.Lock()
        self._given: dict[str, deque[int]] = {}

    def observe(self, rows: int, seconds: float) -> int:
        """One committed batch of ``rows`` that took ``seconds``; the size from now on."""
        if self.target is None or seconds <= 0:
            return self.size
        with self._lock:
            if rows < self.size // 2:  # a chunk's short last batch says nothing of the rate
                return self.size
            efficiency = seconds * self.size / rows / self.target  # as a full batch
            if self.LOW <= efficiency <= self.HIGH:
                return self.size
            factor = min(max((self.LOW + self.HIGH) / 2 / efficiency, self.SHRINK), self.GROW)
            size = min(max(int(self.size * factor), self.minimum), self.maximum)
            if size != self.size:
                self.size = size
                self.sizes.append(size)
            return self.size

    def hand_out(self, worker: str | None) -> int:
        """The size of ``worker``'s next batch, remembered until its commit (see ``limit_of``)."""
        size = self.size
        if self.target is not None and worker is not None:
            with self._lock:
                self._given.setdefault(worker, deque(maxlen=2)).append(size)
        return size

    def limit_of(self, worker: str) -> int:
        """A size no larger than that of ``worker``'s batch being committed.

        A worker has at most two batches in flight (pipeline.py), and the size
        may change between them: the smaller of its last two sizes. A chunk's
        last batch is the one that read fewer rows than its size; taking the
        smaller size can only leave a finished chunk open (the next claim reads
        nothing and closes it), never close one that is not finished.
        """
        if self.target is None:
            return self.size
        with self._lock:
            given = self._given.get(worker)
            return min(given) if given else self.minimum
