"""Metrics and alerting support: Prometheus (text endpoint, textfile) and CloudWatch.

Importing this package does not import prometheus_client; creating
:class:`Metrics` does (``pip install 'encmigrate[metrics]'``).
"""

from encmigrate.monitoring.metrics import (
    METRIC_NAMES,
    AuditMetricsHandler,
    Metrics,
    decrypt_failure_reason,
    get_metrics,
)

__all__ = [
    "METRIC_NAMES",
    "AuditMetricsHandler",
    "Metrics",
    "decrypt_failure_reason",
    "get_metrics",
]
