"""Prometheus metrics for key operations, encryption and migrations.

Where the numbers come from, and why there:

* Key loads, derivations and key operations are counted from the structured
  audit events on the ``encmigrate.audit`` logger (:class:`AuditMetricsHandler`):
  ``keys`` already emits one per event, so ``keys`` needs no import of this
  module and the dependency direction stays ``crypto <- keys <- monitoring``.
* Encrypt/decrypt counts come from :class:`~encmigrate.monitoring.metered.MeteredCipher`,
  a wrapper that counts once per batch (and folds single calls into a local
  tally), so ``crypto`` never imports prometheus and its hot path is untouched.
* Key status, health and migration progress are gauges set by whoever knows
  them: :meth:`Metrics.observe_key_status`, :meth:`Metrics.observe_health`,
  :meth:`Metrics.observe_migration` (the migrator calls the last one per batch).

prometheus_client is an optional extra (``encmigrate[metrics]``), imported here
only: ``import encmigrate`` does not need it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from encmigrate.errors import ConfigError, DecryptionCause, DecryptionError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from encmigrate.keys.manager import KeyStatus

__all__ = [
    "METRIC_NAMES",
    "AuditMetricsHandler",
    "Metrics",
    "decrypt_failure_reason",
    "get_metrics",
    "new_registry",
]

logger = logging.getLogger(__name__)
HEALTH_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 3}

# Every metric this module defines (the names alert rules may use; a test checks them).
METRIC_NAMES = frozenset(
    {
        "encmigrate_values_encrypted_total",
        "encmigrate_values_decrypted_total",
        "encmigrate_encrypt_failures_total",
        "encmigrate_decrypt_failures_total",
        "encmigrate_key_loads_total",
        "encmigrate_key_derivations_total",
        "encmigrate_key_operations_total",
        "encmigrate_key_current_version",
        "encmigrate_key_rotation_age_days",
        "encmigrate_key_days_until_rotation",
        "encmigrate_key_health_status",
        "encmigrate_key_health_last_check_timestamp_seconds",
        "encmigrate_migration_rows_total",
        "encmigrate_migration_rows_per_second",
        "encmigrate_migration_lag_rows",
        "encmigrate_migration_last_progress_timestamp_seconds",
    }
)


class Flushable(Protocol):
    def flush(self) -> None: ...


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "metrics need the prometheus-client package: pip install 'encmigrate[metrics]'"
        ) from None
    return prometheus_client


def new_registry() -> CollectorRegistry:
    """An empty registry of its own (a ConfigError naming the extra when it is not installed)."""
    registry: CollectorRegistry = _prometheus().CollectorRegistry()
    return registry


# The ``reason`` label of each decryption cause: few values, so alert rules stay simple.
_FAILURE_LABELS: Final = {
    DecryptionCause.NOT_ENVELOPE: "not_envelope",
    DecryptionCause.UNDECODABLE: "decode",
    DecryptionCause.UNKNOWN_VERSION: "key_unavailable",
    DecryptionCause.DISABLED: "key_unavailable",
    DecryptionCause.DESTROYED: "key_unavailable",
    DecryptionCause.AUTHENTICATION: "auth",
}


def decrypt_failure_reason(error: DecryptionError) -> str:
    """A coarse, label-safe cause: ``not_envelope``, ``decode``, ``key_unavailable``, ``auth``.

    Read from ``error.cause``. ``key_unavailable`` is a key version that is
    unknown, disabled or destroyed; ``auth`` (authentication failed) covers a
    wrong context, a wrong type, tampering and a wrong key alike: the envelope
    cannot tell them apart, by design.
    """
    return _FAILURE_LABELS[error.cause]


class Metrics:
    """The counters and gauges, in one registry (the default one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.REGISTRY
        self._pending: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._audit_handler: AuditMetricsHandler | None = None
        self._audit_level = logging.NOTSET
        self.registry.register(_FlushBeforeCollect(self))
        counter, gauge = prom.Counter, prom.Gauge
        r = self.registry
        self.encrypted = counter(
            "encmigrate_values_encrypted", "Values encrypted.", ["context"], registry=r
        )
        self.decrypted = counter(
            "encmigrate_values_decrypted", "Values decrypted.", ["context"], registry=r
        )
        self.encrypt_failures = counter(
            "encmigrate_encrypt_failures", "Encrypt calls that failed.", ["context"], registry=r
        )
        self.decrypt_failures = counter(
            "encmigrate_decrypt_failures",
            "Decrypt calls that failed, by coarse reason.",
            ["context", "reason"],
            registry=r,
        )
        self.key_loads = counter(
            "encmigrate_key_loads",
            "Keyring retrievals from the provider, by outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self.key_derivations = counter(
            "encmigrate_key_derivations",
            "First derivations of a (version, context) key in a process.",
            ["purpose"],
            registry=r,
        )
        self.key_operations = counter(
            "encmigrate_key_operations",
            "Key operations (rotate, disable, destroy, ...) by outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.current_version = gauge(
            "encmigrate_key_current_version", "Current master-key version.", registry=r
        )
        self.rotation_age = gauge(
            "encmigrate_key_rotation_age_days", "Age of the current version in days.", registry=r
        )
        self.days_until_rotation = gauge(
            "encmigrate_key_days_until_rotation",
            "Days until the rotation schedule is due (negative: overdue).",
            registry=r,
        )
        self.health = gauge(
            "encmigrate_key_health_status",
            "Last key health check: 0 healthy, 1 degraded, 3 unhealthy.",
            registry=r,
        )
        self.health_checked = gauge(
            "encmigrate_key_health_last_check_timestamp_seconds",
            "When the key health was last checked.",
            registry=r,
        )
        self.migration_rows = counter(
            "encmigrate_migration_rows",
            "Rows encrypted by the migrator.",
            ["table", "column"],
            registry=r,
        )
        self.migration_rate = gauge(
            "encmigrate_migration_rows_per_second",
            "Migrator throughput over its last batch.",
            ["table", "column"],
            registry=r,
        )
        self.migration_lag = gauge(
            "encmigrate_migration_lag_rows",
            "Rows still to encrypt (plaintext set, ciphertext missing).",
            ["table", "column"],
            registry=r,
        )
        self.migration_throttled = counter(
            "encmigrate_migration_throttled_seconds",
            "Seconds the migrator waited for its throttle (replica lag, load, throttle query).",
            ["table", "column"],
            registry=r,
        )
        self.migration_progress = gauge(
            "encmigrate_migration_last_progress_timestamp_seconds",
            "When the migrator last committed a batch.",
            ["table", "column"],
            registry=r,
        )

    # -- updates ------------------------------------------------------------------

    def observe_key_status(self, status: KeyStatus) -> None:
        """Gauges from ``KeyManager.status()``: current version, age, days to rotation."""
        self.current_version.set(status.current)
        current = next((v for v in status.versions if v.current), None)
        if current is not None and current.age_days is not None:
            self.rotation_age.set(current.age_days)
        if status.days_until_rotation is not None:
            self.days_until_rotation.set(status.days_until_rotation)

    def observe_health(self, status: str | int) -> None:
        """Record a health check result (``healthy``/``degraded``/``unhealthy`` or 0/1/3)."""
        code = HEALTH_CODES[status] if isinstance(status, str) else int(status)
        self.health.set(code)
        self.health_checked.set(time.time())

    def observe_migration(
        self,
        table: str,
        column: str,
        *,
        rows: int,
        seconds: float,
        lag_rows: int | None = None,
        throttled_seconds: float = 0.0,
    ) -> None:
        """One committed batch of ``rows`` that took ``seconds`` (called by the migrator);
        ``throttled_seconds``: the time waited for the throttle since the last call."""
        self.migration_throttled.labels(table, column).inc(throttled_seconds)
        self.migration_rows.labels(table, column).inc(rows)
        if seconds > 0:
            self.migration_rate.labels(table, column).set(rows / seconds)
        if lag_rows is not None:
            self.migration_lag.labels(table, column).set(lag_rows)
        self.migration_progress.labels(table, column).set(time.time())

    def track(self, source: Flushable) -> None:
        """Flush ``source``'s local tallies before every collection (metered ciphers)."""
        with self._lock:
            self._pending.add(source)

    def flush(self) -> None:
        with self._lock:
            sources = list(self._pending)
        for source in sources:
            source.flush()

    # -- the audit hook -----------------------------------------------------------

    def count_audit_events(self) -> AuditMetricsHandler:
        """Count key loads, derivations and operations from the ``encmigrate.audit`` logger.

        The logger is set to INFO if it has no level, so its events are
        emitted (they then also propagate to the application's log handlers).
        """
        if self._audit_handler is None:
            handler = AuditMetricsHandler(self)
            audit = logging.getLogger("encmigrate.audit")
            self._audit_level = audit.level
            if audit.level == logging.NOTSET:
                audit.setLevel(logging.INFO)
            audit.addHandler(handler)
            self._audit_handler = handler
        return self._audit_handler

    def stop_counting_audit_events(self) -> None:
        """Remove the handler and give the logger back the level it had."""
        if self._audit_handler is not None:
            audit = logging.getLogger("encmigrate.audit")
            audit.removeHandler(self._audit_handler)
            audit.setLevel(self._audit_level)
            self._audit_handler = None

    # -- export --------------------------------------------------------------------

    def write_textfile(self, path: str | Path) -> None:
        """Write the metrics for node_exporter's textfile collector (atomically)."""
        _prometheus().write_to_textfile(str(path), self.registry)

    def serve(self, port: int, address: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` over HTTP in a daemon thread; returns the server (``.shutdown()``)."""
        answer = _prometheus().start_http_server(port, addr=address, registry=self.registry)
        return answer[0] if isinstance(answer, tuple) else answer

    def text(self) -> str:
        """The exposition text (what the endpoint serves)."""
        return str(_prometheus().generate_latest(self.registry).decode())

    def names(self) -> set[str]:
        """Every sample name the registry can expose, counters with their ``_total``."""
        found: set[str] = set()
        for family in self.registry.collect():
            found.add(family.name)
            found.update(sample.name for sample in family.samples)
            if family.type == "counter":
                found.add(family.name + "_total")
        return found


class AuditMetricsHandler(logging.Handler):
    """A logging handler that turns structured audit events into counters."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.DEBUG)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "audit", None)
        if not isinstance(event, dict):
            return
        action = str(event.get("action", ""))
        outcome = str(event.get("outcome") or "ok")
        if action == "keyring.load":
            self.metrics.key_loads.labels(str(event.get("provider", "unknown")), outcome).inc()
        elif action.startswith("key.derive."):
            self.metrics.key_derivations.labels(action.removeprefix("key.derive.")).inc()
        elif action:
            self.metrics.key_operations.labels(action, outcome).inc()


class _FlushBeforeCollect:
    """A collector with no metrics of its own: it flushes local tallies before a scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = weakref.ref(metrics)

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics()
        if metrics is not None:
            metrics.flush()
        return iter(())

    def describe(self) -> Iterable[Metric]:
        return ()


_default: Metrics | None = None
_default_lock = threading.Lock()


def get_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's default registry."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default
