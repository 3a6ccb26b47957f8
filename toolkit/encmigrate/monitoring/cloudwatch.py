"""Sending the metrics to Amazon CloudWatch with ``put_metric_data`` (boto3).

Counters are sent as the increase since the previous publish (CloudWatch sums
data points; sending running totals would count them again), gauges as their
value. Labels become dimensions, and each sample is also sent rolled up (see
:func:`_rollups`) so alarms can watch totals without naming every label.
Call :meth:`CloudWatchPublisher.publish` on a schedule (a thread, cron, the
Lambda handler); the alarms in docs/alerts/cloudwatch-alarms.json read what
it sends.

Metrics are not key material: this module uses boto3 directly, with
botocore's own retries (standard mode: throttling, 5xx and connection
failures, capped exponential backoff with jitter), and none of the key
providers' plumbing, so a failed publish is never reported as a key error.
boto3 is imported when a publisher is made.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from encmigrate.errors import ConfigError, EncmigrateError
from encmigrate.monitoring.metrics import Metrics

__all__ = ["NAMESPACE", "CloudWatchPublisher"]

NAMESPACE = "encmigrate"
_BATCH = 500  # put_metric_data takes up to 1000 metrics (and 1 MB) per call
_ATTEMPTS = 5
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
        max_attempts: int = _ATTEMPTS,
    ) -> None:
        """``client``: a boto3 CloudWatch client (its own retry settings apply); by default
        one for ``region`` retrying up to ``max_attempts`` times."""
        self.metrics = metrics
        self.namespace = namespace
        self._client = client or _cloudwatch_client(region, max_attempts)
        self._sent: dict[tuple[str, Dimensions], float] = {}

    def __repr__(self) -> str:
        return f"CloudWatchPublisher(namespace={self.namespace!r})"

    def publish(self, now: dt.datetime | None = None) -> int:
        """Send every sample; returns how many data points were sent."""
        when = now or dt.datetime.now(dt.UTC)
        data = list(self._data(when))
        for start in range(0, len(data), _BATCH):
            self._put(data[start : start + _BATCH])
        logger.debug("published %d data points to CloudWatch %s", len(data), self.namespace)
        return len(data)

    def _put(self, data: list[dict[str, Any]]) -> None:
        from botocore import exceptions  # type: ignore[import-untyped]

        where = f"CloudWatch namespace {self.namespace}: cloudwatch:PutMetricData"
        try:
            self._client.put_metric_data(Namespace=self.namespace, MetricData=data)
        except exceptions.NoCredentialsError:
            raise ConfigError(
                f"{where}: no AWS credentials found (environment, profile, or instance/task role)"
            ) from None
        except exceptions.ClientError as exc:
            # The code only: AWS messages can quote request details that do not belong in logs.
            code = exc.response.get("Error", {}).get("Code") or type(exc).__name__
            raise EncmigrateError(f"{where} failed ({code})") from None
        except exceptions.BotoCoreError as exc:
            raise EncmigrateError(f"{where} failed ({type(exc).__name__})") from None

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


def _cloudwatch_client(region: str | None, max_attempts: int) -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import NoRegionError  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "publishing metrics to CloudWatch needs the boto3 package: "
            "pip install 'encmigrate[aws]'"
        ) from None
    config = Config(retries={"total_max_attempts": max_attempts, "mode": "standard"})
    try:
        return boto3.session.Session(region_name=region).client("cloudwatch", config=config)
    except NoRegionError:
        raise ConfigError("no AWS region for CloudWatch: set AWS_REGION") from None


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
