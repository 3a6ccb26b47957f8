"""Sending the metrics to Amazon CloudWatch with ``put_metric_data`` (boto3).

Counters are sent as the increase since the previous publish (CloudWatch sums
data points; sending running totals would count them again), gauges as their
value. Labels become dimensions, and each sample is also sent rolled up (see
:func:`_rollups`) so alarms can watch totals without naming every label.
Call :meth:`CloudWatchPublisher.publish` on a schedule (a thread, cron, the
Lambda handler); the alarms in docs/alerts/cloudwatch-alarms.json read what
it sends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from encmigrate.keys.aws import AwsCalls, aws_client
from encmigrate.keys.remote import RetryPolicy
from encmigrate.monitoring.metrics import Metrics

__all__ = ["NAMESPACE", "CloudWatchPublisher"]

NAMESPACE = "encmigrate"
_BATCH = 500  # put_metric_data takes up to 1000 metrics (and 1 MB) per call
_ROLLUP_LABELS = ("outcome", "reason")
Dimensions = tuple[tuple[str, str], ...]
logger = logging.getLogger(__name__)


class CloudWatchPublisher:
    """Publishes one :class:`Metrics` registry to a CloudWatch namespace."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        namespace: str = NAMESPACE,
        region: str | None = None,
        client: Any = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.metrics = metrics
        self.namespace = namespace
        self._calls = AwsCalls(
            client or aws_client("cloudwatch", region),
            "cloudwatch",
            f"CloudWatch namespace {namespace}",
            retry or RetryPolicy(),
        )
        self._sent: dict[tuple[str, Dimensions], float] = {}

    def __repr__(self) -> str:
        return f"CloudWatchPublisher(namespace={self.namespace!r})"

    def publish(self, now: dt.datetime | None = None) -> int:
        """Send every sample; returns how many data points were sent."""
        when = now or dt.datetime.now(dt.UTC)
        data = list(self._data(when))
        for start in range(0, len(data), _BATCH):
            self._calls(
                "put_metric_data", Namespace=self.namespace, MetricData=data[start : start + _BATCH]
            )
        logger.debug("published %d data points to CloudWatch %s", len(data), self.namespace)
        return len(data)

    def _data(self, when: dt.datetime) -> Iterator[dict[str, Any]]:
        self.metrics.flush()
        points: dict[tuple[str, Dimensions], float] = {}
        kinds: dict[str, str] = {}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if not sample.name.startswith("encmigrate_") or sample.name.endswith("_created"):
                    continue
                kinds[sample.name] = family.type
                for dimensions in _rollups(sample.labels):
                    key = (sample.name, dimensions)
                    if family.type == "counter":
                        points[key] = points.get(key, 0.0) + float(sample.value)
                    else:
                        points[key] = max(points.get(key, float("-inf")), float(sample.value))
        for (name, dimensions), total in points.items():
            value = total
            if kinds[name] == "counter":
                value = total - self._sent.get((name, dimensions), 0.0)
                self._sent[(name, dimensions)] = total
            yield {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v or "-"} for k, v in dimensions],
                "Timestamp": when,
                "Value": value,
                "Unit": "Count" if kinds[name] == "counter" else "None",
            }


def _rollups(labels: Mapping[str, str]) -> list[Dimensions]:
    """The dimension sets a sample is published under.

    Its own labels; none at all (counters summed, gauges at their maximum), so
    an alarm can watch the total; and ``outcome`` or ``reason`` alone, so an
    alarm can watch failures of any provider or context.
    """
    full = tuple(sorted(labels.items()))
    sets = [full, ()]
    sets += [((key, labels[key]),) for key in _ROLLUP_LABELS if key in labels]
    return list(dict.fromkeys(sets))
