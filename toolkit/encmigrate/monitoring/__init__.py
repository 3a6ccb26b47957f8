"""Metrics and alerting support: Prometheus (text endpoint, textfile) and CloudWatch.

Importing this package does not import prometheus_client; creating
:class:`Metrics` does (``pip install 'encmigrate[metrics]'``).
"""

from encmigrate.monitoring.metrics import Metrics, get_metrics

# The public names (docs/architecture.md, "Public API"); the rest of metrics.py is internal.
__all__ = ["Metrics", "get_metrics"]
