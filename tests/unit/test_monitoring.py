"""Metrics: metered ciphers, audit-event counters, gauges, textfile, endpoint and CloudWatch."""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from encmigrate import ConfigError, DecryptionError, get_cipher
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import codec_for
from encmigrate.keys import AuditEvent, AuditLog, FileProvider, KeyManager, Keyring, KeyState
from encmigrate.keys.remote import audit_load_failure
from encmigrate.keys.resolve import KeySetup, load_keyring
from encmigrate.monitoring import Metrics
from encmigrate.monitoring.cloudwatch import CloudWatchPublisher
from encmigrate.monitoring.metered import FLUSH_EVERY, MeteredCipher
from encmigrate.monitoring.metrics import new_registry

CONTEXT = "customer.email"


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    found = Metrics(CollectorRegistry())
    yield found
    found.stop_counting_audit_events()


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    metrics.flush()
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_batches_are_counted_once_per_batch(metrics: Metrics) -> None:
    cipher = MeteredCipher(get_cipher(CONTEXT, keyring=Keyring.generate()), metrics)
    blobs = cipher.batch_encrypt([f"v{i}" for i in range(250)])
    assert cipher.batch_decrypt(blobs)[7] == "v7"
    assert _value(metrics, "encmigrate_values_encrypted_total", context=CONTEXT) == 250
    assert _value(metrics, "encmigrate_values_decrypted_total", context=CONTEXT) == 250


def test_single_calls_are_tallied_locally_and_reach_the_counter_before_a_scrape(
    metrics: Metrics,
) -> None:
    cipher = MeteredCipher(get_cipher(CONTEXT, keyring=Keyring.generate()), metrics)
    for i in range(10):
        cipher.decrypt(cipher.encrypt(f"v{i}"))
    # Nothing touched the counter per value (reading it through the registry would flush).
    assert metrics.encrypted.labels(CONTEXT)._value.get() == 0
    exposed = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics.text())
        for sample in family.samples
        if sample.labels.get("context") == CONTEXT
    }
    assert exposed["encmigrate_values_encrypted_total"] == 10
    assert exposed["encmigrate_values_decrypted_total"] == 10


def test_single_calls_flush_by_themselves_every_so_often(metrics: Metrics) -> None:
    cipher = MeteredCipher(get_cipher(CONTEXT, keyring=Keyring.generate()), metrics)
    for _ in range(FLUSH_EVERY):
        cipher.encrypt("x")
    raw = metrics.registry.get_sample_value(
        "encmigrate_values_encrypted_total", {"context": CONTEXT}
    )
    assert raw == FLUSH_EVERY


def test_decrypt_failures_are_counted_by_reason(metrics: Metrics) -> None:
    keyring = Keyring.generate().rotated()
    old = get_cipher(CONTEXT, keyring=Keyring.generate()).encrypt("x")
    cipher = MeteredCipher(get_cipher(CONTEXT, keyring=keyring), metrics)
    sealed = cipher.encrypt("x")
    assert sealed is not None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    disabled = get_cipher(CONTEXT, keyring=keyring.with_state(1, KeyState.DISABLED))
    as_date = MeteredCipher(get_cipher(CONTEXT, type="date", keyring=keyring), metrics)
    # Format 2 binds the type (a string read as a date fails authentication); a format-1
    # envelope carries no type, so the date codec is what refuses it.
    format1 = FieldCipher(keyring.derived_keys, CONTEXT, codec_for("string"), write_format=1)
    untyped = format1.encrypt("x")
    cases = [
        (cipher, tampered, "auth"),
        (cipher, b"not an envelope at all", "not_envelope"),
        (as_date, untyped, "decode"),
        (MeteredCipher(disabled, metrics), old, "key_unavailable"),
    ]
    for metered, blob, _reason in cases:
        with pytest.raises(DecryptionError):
            metered.decrypt(blob)
    for _, _, reason in cases:
        assert (
            _value(metrics, "encmigrate_decrypt_failures_total", context=CONTEXT, reason=reason)
            == 1
        ), reason


def test_audit_events_count_key_loads_derivations_operations_and_failures(
    metrics: Metrics, tmp_path: Path
) -> None:
    metrics.count_audit_events()
    provider = FileProvider(tmp_path / "keyring.json")
    audit = AuditLog(tmp_path / "audit.jsonl")
    manager = KeyManager(provider, audit)
    manager.generate()
    manager.rotate()
    with pytest.raises(Exception, match="is the current version"):
        manager.disable(2)
    keyring = load_keyring(KeySetup(provider, audit, "ENCMIGRATE_", "test"))
    get_cipher(CONTEXT, keyring=keyring).encrypt("x")
    audit_load_failure("vault", "Vault http://x secret a/b", RuntimeError("sealed"))
    assert _value(metrics, "encmigrate_key_operations_total", action="rotate", outcome="ok") == 1
    refused = {"action": "disable", "outcome": "refused"}
    assert _value(metrics, "encmigrate_key_operations_total", **refused) == 1
    assert _value(metrics, "encmigrate_key_loads_total", provider="file", outcome="ok") == 1
    assert _value(metrics, "encmigrate_key_loads_total", provider="vault", outcome="failed") == 1
    assert _value(metrics, "encmigrate_key_derivations_total", purpose="data") == 1


def test_every_audit_event_reaches_logging_as_a_structured_json_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="encmigrate.audit")
    AuditLog(tmp_path / "audit.jsonl").append(AuditEvent("rotate", version=3, reason="why"))
    provider = FileProvider(tmp_path / "keyring.json")
    KeyManager(provider).generate()
    load_keyring(KeySetup(provider, None, "ENCMIGRATE_", "test"))  # no audit file: logging only
    events = [r.audit for r in caplog.records if r.name == "encmigrate.audit"]  # type: ignore[attr-defined]
    assert [e["action"] for e in events] == ["rotate", "keyring.load"]
    assert (
        events[0]["version"] == 3 and events[0]["reason"] == "why" and len(events[0]["prev"]) == 64
    )
    assert events[1]["provider"] == "file" and events[1]["outcome"] == "ok"
    for event in events:
        assert json.loads(json.dumps(event)) == event
    assert all("key" not in event for event in events)


def test_key_status_health_and_migration_gauges(metrics: Metrics, tmp_path: Path) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    provider = FileProvider(tmp_path / "keyring.json")
    KeyManager(provider, clock=lambda: created).generate(rotation_days=90)
    status = KeyManager(provider, clock=lambda: created + dt.timedelta(days=80)).status()
    metrics.observe_key_status(status)
    metrics.observe_health("degraded")
    metrics.observe_migration("customer", "email", rows=500, seconds=0.25, lag_rows=1500)
    assert _value(metrics, "encmigrate_key_current_version") == 1
    assert _value(metrics, "encmigrate_key_rotation_age_days") == 80
    assert _value(metrics, "encmigrate_key_days_until_rotation") == 10
    assert _value(metrics, "encmigrate_key_health_status") == 1
    assert time.time() - _value(metrics, "encmigrate_key_health_last_check_timestamp_seconds") < 60
    labels = {"table": "customer", "column": "email"}
    assert _value(metrics, "encmigrate_migration_rows_total", **labels) == 500
    assert _value(metrics, "encmigrate_migration_rows_per_second", **labels) == 2000
    assert _value(metrics, "encmigrate_migration_lag_rows", **labels) == 1500


def test_textfile_export_is_valid_exposition_text(metrics: Metrics, tmp_path: Path) -> None:
    metrics.observe_health("healthy")
    target = tmp_path / "encmigrate.prom"
    metrics.write_textfile(target)
    names = {f.name for f in text_string_to_metric_families(target.read_text())}
    assert {"encmigrate_key_health_status", "encmigrate_values_encrypted"} <= names


def test_http_endpoint_serves_the_metrics(metrics: Metrics) -> None:
    metrics.observe_health("unhealthy")
    server = metrics.serve(0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "encmigrate_key_health_status 3.0" in body


def test_cloudwatch_receives_counter_increases_and_gauges(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with mock_aws():
        client = boto3.client("cloudwatch")
        sent: list[dict[tuple[str, str], float]] = []
        client.meta.events.register(
            "provide-client-params.cloudwatch.PutMetricData",
            lambda params, **_: sent.append(
                {
                    (d["MetricName"], json.dumps(d["Dimensions"])): d["Value"]
                    for d in params["MetricData"]
                }
            ),
        )
        publisher = CloudWatchPublisher(metrics, client=client)
        cipher = MeteredCipher(get_cipher(CONTEXT, keyring=Keyring.generate()), metrics)
        cipher.batch_encrypt(["a"] * 30)
        metrics.observe_health("healthy")
        assert publisher.publish() > 0
        cipher.batch_encrypt(["a"] * 12)
        publisher.publish()
        names = {m["MetricName"] for m in client.list_metrics(Namespace="encmigrate")["Metrics"]}
        assert {"encmigrate_values_encrypted_total", "encmigrate_key_health_status"} <= names

        def total(dimensions: list[dict[str, str]]) -> float:
            stats = client.get_metric_statistics(
                Namespace="encmigrate",
                MetricName="encmigrate_values_encrypted_total",
                Dimensions=dimensions,
                StartTime=start - dt.timedelta(minutes=5),
                EndTime=start + dt.timedelta(minutes=5),
                Period=600,
                Statistics=["Sum"],
            )["Datapoints"]
            return float(sum(point["Sum"] for point in stats))

        assert total([{"Name": "context", "Value": CONTEXT}]) == 42  # 30 + 12, not 30 + 42
        rollup = ("encmigrate_values_encrypted_total", "[]")  # the total the alarms read
        assert [points[rollup] for points in sent] == [30, 12]
        assert sent[0][("encmigrate_key_health_status", "[]")] == 0


def test_cloudwatch_publishing_uses_none_of_the_key_providers_plumbing() -> None:
    """A failed publish is a metrics failure, never reported as a key provider's error."""
    source = Path(__file__).resolve().parents[2] / "toolkit/encmigrate/monitoring/cloudwatch.py"
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name and name.startswith("encmigrate.keys")}


def test_metering_a_batch_touches_the_counter_once_not_per_value(metrics: Metrics) -> None:
    # What keeps metering cheap is structural: one counter update per batch (and per
    # FLUSH_EVERY single calls), never one per value (timings are not asserted in tests).
    bare = get_cipher(CONTEXT, keyring=Keyring.generate())
    metered = MeteredCipher(bare, metrics)
    updates: list[float] = []
    counter = metered._encrypted
    original = counter.inc
    counter.inc = lambda amount=1: (updates.append(amount), original(amount))[1]  # type: ignore[method-assign]
    metered.batch_encrypt([f"user{i}@example.com" for i in range(1000)])
    assert updates == [1000]
    for i in range(FLUSH_EVERY - 1):
        metered.encrypt(f"one{i}")
    assert updates == [1000]
    metered.encrypt("the last before a flush")
    assert updates == [1000, FLUSH_EVERY]


def test_without_prometheus_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install 'encmigrate\[metrics\]'"):
        Metrics(CollectorRegistry())
    # The Lambda rotation handler's publishing step too (it raised a bare ImportError).
    with pytest.raises(ConfigError, match=r"pip install 'encmigrate\[metrics\]'"):
        new_registry()
