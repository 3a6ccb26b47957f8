"""The shipped alert rules: structure, coverage of the seed guide's alerts, and metric names.

promtool is not available here, so the Prometheus rules are checked for their
structure, balanced expressions and metric names; the CloudWatch alarms are
validated against botocore's own PutMetricAlarm model and accepted by moto.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator
from moto import mock_aws
from prometheus_client import CollectorRegistry

from encmigrate.monitoring import Metrics
from encmigrate.monitoring.metrics import METRIC_NAMES

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts"
METRIC = re.compile(r"\bencmigrate_[a-z_]+\b")

# The seed guide's alerts, and what each must watch.
REQUIRED = {
    "failed key retrievals": "encmigrate_key_loads_total",
    "spike in decrypt failures": "encmigrate_decrypt_failures_total",
    "spike in key loads": "encmigrate_key_loads_total",
    "approaching rotation deadline": "encmigrate_key_days_until_rotation",
    "key version mismatch": "encmigrate_key_current_version",
    "migration stalled": "encmigrate_migration_lag_rows",
    "health check failing": "encmigrate_key_health_status",
}


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return Metrics(CollectorRegistry()).names()


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((ALERTS / "prometheus-rules.yml").read_text())
    assert isinstance(document, dict) and isinstance(document["groups"], list)
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def alarms() -> list[dict[str, Any]]:
    return list(json.loads((ALERTS / "cloudwatch-alarms.json").read_text())["alarms"])


def test_the_registry_exposes_every_documented_metric_name(exposed: set[str]) -> None:
    assert exposed >= METRIC_NAMES


def test_prometheus_rules_are_well_formed(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m"))
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        assert re.search(r"[<>]=?|==|!=", expr), f"{rule['alert']}: no comparison"


def test_every_metric_a_prometheus_rule_names_exists(
    rules: list[dict[str, Any]], exposed: set[str]
) -> None:
    named = {(rule["alert"], m) for rule in rules for m in METRIC.findall(rule["expr"])}
    assert named
    assert [pair for pair in named if pair[1] not in exposed] == []


def test_prometheus_rules_cover_the_seed_guides_alerts(rules: list[dict[str, Any]]) -> None:
    watched = {m for rule in rules for m in METRIC.findall(rule["expr"])}
    assert {need for need, metric in REQUIRED.items() if metric not in watched} == set()
    by_metric = " ".join(rule["expr"] for rule in rules)
    assert 'encmigrate_key_loads_total{outcome="failed"}' in by_metric


def _metric_names(alarm: dict[str, Any]) -> list[str]:
    if "MetricName" in alarm:
        return [alarm["MetricName"]]
    return [q["MetricStat"]["Metric"]["MetricName"] for q in alarm["Metrics"] if "MetricStat" in q]


def test_cloudwatch_alarms_match_the_put_metric_alarm_api(alarms: list[dict[str, Any]]) -> None:
    model = botocore.session.get_session().get_service_model("cloudwatch")
    shape = model.operation_model("PutMetricAlarm").input_shape
    for alarm in alarms:
        report = ParamValidator().validate(alarm, shape)
        assert not report.has_errors(), report.generate_report()
        assert alarm["AlarmName"].startswith("encmigrate-")


def test_every_metric_a_cloudwatch_alarm_names_exists(
    alarms: list[dict[str, Any]], exposed: set[str]
) -> None:
    named = {m for alarm in alarms for m in _metric_names(alarm)}
    assert named - exposed == set()
    assert {need for need, m in REQUIRED.items() if m not in named} == set()


def test_cloudwatch_accepts_every_alarm(
    alarms: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("cloudwatch")
        for alarm in alarms:
            client.put_metric_alarm(**alarm)
        stored = client.describe_alarms(AlarmNamePrefix="encmigrate-")
        assert len(stored["MetricAlarms"]) == len(alarms)
