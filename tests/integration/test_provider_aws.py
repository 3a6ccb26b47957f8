"""AWS Secrets Manager and KMS providers against moto (in-process, and moto.server for the CLI)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.authorization import enable_iam_authentication

from encmigrate import KeyConfigError, KeyProviderError, get_cipher
from encmigrate.keys import AuditLog, KeyManager, Keyring
from encmigrate.keys.aws import SecretsManagerProvider
from encmigrate.keys.aws_kms import KmsProvider
from encmigrate.keys.remote import KeyringCache, RetryPolicy
from encmigrate.keys.resolve import resolve_key_setup
from support.cli import run_cli
from support.cluster import free_port

REGION = "eu-west-1"
SECRET = "encmigrate/keyring"
CANARY = "AWS-SECRET-CANARY-0123456789abcdefghijklmnop"
POLICIES = Path(__file__).resolve().parents[2] / "docs" / "policies" / "aws"
FAST = RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.0)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "ENCMIGRATE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("ENCMIGRATE_ACTOR", "aws-test")
    with mock_aws():
        yield


def _provider(client: Any = None, **options: Any) -> SecretsManagerProvider:
    return SecretsManagerProvider(
        SECRET, region=REGION, client=client, retry=FAST, cache_ttl=0, **options
    )


class Flaky:
    """A real boto3 client whose chosen operations first fail with ``code`` ``times`` times.

    With ``after_call`` the real call runs before the failure is raised, as when
    a response is lost on the way back: the retry must not write twice.
    """

    def __init__(self, client: Any, operation: str, code: str, times: int, after_call: bool):
        self._client, self._operation, self._code = client, operation, code
        self.remaining, self._after_call = times, after_call
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._operation:
            return real

        def call(**params: Any) -> Any:
            self.calls += 1
            if self.remaining > 0:
                self.remaining -= 1
                if self._after_call:
                    real(**params)
                status = 400 if "Throttl" in self._code or "Denied" in self._code else 500
                raise ClientError(
                    {
                        "Error": {"Code": self._code, "Message": "injected"},
                        "ResponseMetadata": {"HTTPStatusCode": status},
                    },
                    name,
                )
            return real(**params)

        return call


def _calls_recorder(client: Any) -> list[str]:
    seen: list[str] = []
    client.meta.events.register(
        "before-call.*.*",
        lambda model, **_: seen.append(f"{model.service_model.signing_name}:{model.name}"),
    )
    return seen


def test_generate_rotate_and_read_back_through_secrets_manager(aws: None) -> None:
    manager = KeyManager(_provider())
    first = manager.generate()
    sealed = get_cipher("t.c", keyring=first).encrypt("v1 value")
    assert manager.rotate() == 2
    keyring = _provider().load()
    assert keyring.current == 2
    assert get_cipher("t.c", keyring=keyring).decrypt(sealed) == "v1 value"


def test_rotation_moves_awsprevious_so_the_old_keyring_is_recoverable(aws: None) -> None:
    provider = _provider()
    KeyManager(provider).generate()
    KeyManager(provider).rotate()
    assert provider.recover_previous().current == 1
    versions = boto3.client("secretsmanager").list_secret_version_ids(SecretId=SECRET)["Versions"]
    stages = sorted(tuple(v.get("VersionStages", [])) for v in versions)
    assert stages == [("AWSCURRENT",), ("AWSPREVIOUS",)]


def test_a_write_retried_after_a_lost_response_creates_one_version(aws: None) -> None:
    real = boto3.client("secretsmanager")
    KeyManager(_provider(real)).generate()
    flaky = Flaky(real, "put_secret_value", "ThrottlingException", times=1, after_call=True)
    KeyManager(_provider(flaky)).rotate()
    assert flaky.calls == 2
    versions = real.list_secret_version_ids(SecretId=SECRET)["Versions"]
    assert len(versions) == 2  # generate + one rotation, not two
    assert _provider(real).load().current == 2


def test_throttled_reads_are_retried_until_they_succeed(aws: None) -> None:
    real = boto3.client("secretsmanager")
    KeyManager(_provider(real)).generate()
    flaky = Flaky(real, "get_secret_value", "ThrottlingException", times=2, after_call=False)
    assert _provider(flaky).load().current == 1
    assert flaky.calls == 3


def test_throttling_that_persists_ends_in_a_clear_error(aws: None) -> None:
    real = boto3.client("secretsmanager")
    KeyManager(_provider(real)).generate()
    flaky = Flaky(real, "get_secret_value", "ThrottlingException", times=99, after_call=False)
    with pytest.raises(KeyProviderError, match="still failing after 3 attempts"):
        _provider(flaky).load()
    assert flaky.calls == 3


def test_access_denied_is_not_retried(aws: None) -> None:
    real = boto3.client("secretsmanager")
    KeyManager(_provider(real)).generate()
    flaky = Flaky(real, "get_secret_value", "AccessDeniedException", times=9, after_call=False)
    with pytest.raises(KeyProviderError, match="permission denied"):
        _provider(flaky).load()
    assert flaky.calls == 1


def test_missing_secret_says_how_to_create_one(aws: None) -> None:
    with pytest.raises(KeyConfigError, match="no keyring in AWS Secrets Manager secret") as info:
        _provider().load()
    assert "encmigrate keys generate" in str(info.value)
    assert not isinstance(info.value, KeyProviderError)


def test_two_operators_rotating_at_once_cannot_lose_a_version(aws: None) -> None:
    KeyManager(_provider()).generate()
    slow = _provider()
    with slow.lock():
        stale = slow.load()
        assert KeyManager(_provider()).rotate() == 2  # the other operator wins the race
        with pytest.raises(KeyProviderError, match="changed since it was read"):
            slow.save(stale.rotated())
    assert _provider().load().current == 2


def test_the_cache_serves_loads_within_the_ttl_and_refreshes_after(aws: None) -> None:
    client = boto3.client("secretsmanager")
    KeyManager(_provider(client)).generate()
    now = [0.0]
    provider = _provider(client)
    provider.cache = KeyringCache(60, clock=lambda: now[0])
    seen = _calls_recorder(client)
    first = provider.load()
    assert provider.load() is first
    now[0] = 61.0
    provider.load()
    assert seen.count("secretsmanager:GetSecretValue") == 2


def _policy(name: str) -> str:
    text = (POLICIES / f"{name}.json").read_text()
    for placeholder, value in {
        "REGION": REGION,
        "ACCOUNT_ID": "123456789012",
        "SECRET_NAME": SECRET,
        "KMS_KEY_ID": "*",
        "BACKUP_BUCKET": "backups",
        "AUDIT_LOG_GROUP": "encmigrate-audit",
    }.items():
        text = text.replace(placeholder, value)
    return text


def _client_for_role(role: str, service: str) -> Any:
    """A client signed as an IAM user holding the shipped policy of ``role``.

    moto evaluates a policy's actions, but it authorises Secrets Manager calls
    against the resource "*" and supplies no service condition keys
    (secretsmanager:VersionStage, kms:EncryptionContext:...). So the statements
    keep their actions and effects here, with Resource "*" and no Condition;
    test_shipped_iam_policies_are_least_privilege checks the files as shipped.
    """
    document = json.loads(_policy(role))
    for statement in document["Statement"]:
        statement.pop("Condition", None)
        statement["Resource"] = "*"
    iam = boto3.client("iam")
    iam.create_user(UserName=role)
    iam.put_user_policy(UserName=role, PolicyName=role, PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=role)["AccessKey"]
    return boto3.client(
        service,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def test_application_role_reads_the_keyring_and_calls_no_write_api(aws: None) -> None:
    KeyManager(_provider()).generate()
    app = _client_for_role("application", "secretsmanager")
    seen = _calls_recorder(app)
    with enable_iam_authentication():
        keyring = _provider(app).load()
        assert (
            get_cipher("t.c", keyring=keyring).decrypt(
                get_cipher("t.c", keyring=keyring).encrypt("x")
            )
            == "x"
        )
    assert seen == ["secretsmanager:GetSecretValue"]
    allowed = json.loads(_policy("application"))["Statement"][0]["Action"]
    assert {f"secretsmanager:{name.split(':')[1]}" for name in seen} <= {allowed}


def test_admin_commands_with_the_application_role_are_refused_clearly(aws: None) -> None:
    KeyManager(_provider()).generate()
    app = _client_for_role("application", "secretsmanager")
    with enable_iam_authentication(), pytest.raises(KeyProviderError) as info:
        KeyManager(_provider(app)).rotate()
    assert "permission denied: needs the key-administrator role" in str(info.value)


def test_key_administrator_role_can_rotate(aws: None) -> None:
    KeyManager(_provider()).generate()
    admin = _client_for_role("key-administrator", "secretsmanager")
    with enable_iam_authentication():
        assert KeyManager(_provider(admin)).rotate() == 2


def test_no_credential_in_repr_errors_or_logs(aws: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = _provider()
    texts = [repr(provider), provider.describe()]
    for attempt in (provider.load, KeyManager(_provider()).rotate):
        with pytest.raises(KeyConfigError) as info:
            attempt()
        texts.append(str(info.value))
    texts.append(caplog.text)
    assert all(CANARY not in text for text in texts)


def test_importing_encmigrate_imports_neither_boto3_nor_hvac() -> None:
    code = (
        "import sys, encmigrate, encmigrate.keys.aws, encmigrate.keys.vault, "
        "encmigrate.keys.aws_kms\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'hvac') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_without_boto3_the_error_names_the_extra_to_install(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(KeyConfigError, match=r"pip install 'encmigrate\[aws\]'"):
        SecretsManagerProvider(SECRET, region=REGION).load()


def test_plan_selects_secrets_manager_with_its_settings(aws: None, tmp_path: Path) -> None:
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(
        '[keys]\nprovider = "aws-secrets-manager"\ncache_ttl = 30\n'
        f'[keys.aws]\nsecret_id = "other/keyring"\nregion = "{REGION}"\n'
    )
    setup = resolve_key_setup(plan, environ={})
    assert isinstance(setup.provider, SecretsManagerProvider)
    assert setup.provider.store.secret_id == "other/keyring"
    assert setup.provider.cache.ttl == 30
    assert setup.audit is not None and setup.audit.path.parent == tmp_path


def test_environment_alone_selects_and_configures_the_provider(aws: None) -> None:
    env = {
        "ENCMIGRATE_KEY_PROVIDER": "aws-kms",
        "ENCMIGRATE_KMS_KEY_ID": "alias/encmigrate",
        "ENCMIGRATE_AWS_SECRET_ID": "x/y",
        "AWS_REGION": REGION,
    }
    setup = resolve_key_setup(None, environ=env, cwd="/")
    assert isinstance(setup.provider, KmsProvider)
    assert setup.provider.key_id == "alias/encmigrate"
    assert setup.rule == "ENCMIGRATE_KEY_PROVIDER"


def test_shipped_iam_policies_are_least_privilege() -> None:
    documents = {p.stem: json.loads(p.read_text()) for p in POLICIES.glob("*.json")}
    assert set(documents) == {"key-administrator", "application", "backup", "audit"}

    def actions(role: str, effect: str = "Allow") -> set[str]:
        found: set[str] = set()
        for statement in documents[role]["Statement"]:
            if statement["Effect"] == effect:
                listed = statement["Action"]
                found.update([listed] if isinstance(listed, str) else listed)
        return found

    for role, document in documents.items():
        assert document["Version"] == "2012-10-17"
        assert all("*" not in action for action in actions(role)), role
    assert actions("application") == {
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
        "cloudwatch:PutMetricData",
    }
    assert actions("backup") == {"s3:PutObject"}
    assert "s3:GetObject" in actions("backup", "Deny")
    assert {"secretsmanager:GetSecretValue", "kms:Decrypt"} <= actions("audit", "Deny")
    assert not {a for a in actions("audit") if a.startswith("secretsmanager:Get")}
    admin = actions("key-administrator")
    assert {"secretsmanager:PutSecretValue", "kms:GenerateDataKey"} <= admin


# -- the Lambda handler ---------------------------------------------------------------------


class _Context:
    aws_request_id = "req-123"


Handler = Any


@pytest.fixture(params=["encmigrate.lambda_rotation", "encmigrate.aws"])
def lambda_handler(request: pytest.FixtureRequest) -> Handler:
    """The handler under its name and under the deprecated name deployed functions still use."""
    return importlib.import_module(request.param).lambda_handler


def test_lambda_handler_rotates_only_when_due(
    aws: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lambda_handler: Handler,
) -> None:
    monkeypatch.setenv("ENCMIGRATE_AWS_SECRET_ID", SECRET)
    monkeypatch.delenv("ENCMIGRATE_ACTOR")  # so the actor names the Lambda request
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    KeyManager(_provider(), clock=lambda: long_ago).generate(rotation_days=90)
    caplog.set_level(logging.INFO, logger="encmigrate.audit")
    first = lambda_handler({}, _Context())
    assert first["rotated"] is True and first["current"] == 2
    assert first["days_until_rotation"] in (89, 90)
    second = lambda_handler({}, _Context())
    assert second == {**second, "rotated": False, "current": 2}
    forced = lambda_handler({"force": True, "reason": "incident 42"}, _Context())
    assert forced["rotated"] is True and forced["current"] == 3
    events = [r.audit for r in caplog.records if hasattr(r, "audit")]  # type: ignore[attr-defined]
    assert [e["action"] for e in events] == ["rotate", "rotate.not-due", "rotate"]
    assert events[2]["reason"] == "incident 42" and events[2]["actor"] == "lambda:req-123"
    assert _provider().load().current == 3


def test_lambda_handler_publishes_key_gauges_to_cloudwatch(
    aws: None, monkeypatch: pytest.MonkeyPatch, lambda_handler: Handler
) -> None:
    monkeypatch.setenv("ENCMIGRATE_AWS_SECRET_ID", SECRET)
    monkeypatch.setenv("ENCMIGRATE_CLOUDWATCH_METRICS", "1")
    KeyManager(_provider()).generate()
    assert lambda_handler(None, None)["rotated"] is False
    metrics = boto3.client("cloudwatch").list_metrics(Namespace="encmigrate")["Metrics"]
    assert "encmigrate_key_days_until_rotation" in {m["MetricName"] for m in metrics}


def test_lambda_handler_without_a_keyring_fails_with_a_key_error(
    aws: None, monkeypatch: pytest.MonkeyPatch, lambda_handler: Handler
) -> None:
    with pytest.raises(KeyConfigError, match="encmigrate keys generate"):
        lambda_handler({}, None)


def test_lambda_rotation_is_saved_even_when_cloudwatch_refuses_the_gauges(
    aws: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from encmigrate.lambda_rotation import lambda_handler

    monkeypatch.setenv("ENCMIGRATE_AWS_SECRET_ID", SECRET)
    monkeypatch.setenv("ENCMIGRATE_CLOUDWATCH_METRICS", "1")
    KeyManager(_provider()).generate()

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", _refusing("PutMetricData"))
    caplog.set_level(logging.WARNING, logger="encmigrate.lambda_rotation")
    result = lambda_handler({"force": True, "reason": "drill"}, None)
    assert result["rotated"] is True and _provider().load().current == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "key gauges not published to CloudWatch: CloudWatch namespace encmigrate: "
        "cloudwatch:PutMetricData failed (AccessDenied)"
    ]


def _refusing(operation: str) -> Any:
    """botocore's API call, refusing ``operation`` with AccessDenied and passing the others."""
    from botocore.client import BaseClient

    real = BaseClient._make_api_call

    def call(self: Any, name: str, params: Any) -> Any:
        if name == operation:
            raise ClientError({"Error": {"Code": "AccessDenied"}}, name)
        return real(self, name, params)

    return call


def test_an_unknown_provider_in_the_environment_is_refused(aws: None) -> None:
    with pytest.raises(KeyConfigError, match="ENCMIGRATE_KEY_PROVIDER: not a provider") as info:
        resolve_key_setup(None, environ={"ENCMIGRATE_KEY_PROVIDER": "vualt"}, cwd="/")
    assert "vualt" not in str(info.value)  # the field is named, the value never echoed


@pytest.mark.parametrize("ttl", ["-5", "soon", "nan"])
def test_a_bad_cache_ttl_is_a_one_line_key_error(aws: None, ttl: str) -> None:
    env = {"ENCMIGRATE_KEY_PROVIDER": "aws-secrets-manager", "ENCMIGRATE_KEY_CACHE_TTL": ttl}
    with pytest.raises(KeyConfigError) as info:
        resolve_key_setup(None, environ=env, cwd="/")
    assert str(info.value) == "ENCMIGRATE_KEY_CACHE_TTL: must be a number of seconds (0 or more)"


# -- KMS ---------------------------------------------------------------------------------


def _kms_key() -> str:
    return str(
        boto3.client("kms").create_key(Description="encmigrate test")["KeyMetadata"]["KeyId"]
    )


def test_kms_stores_only_wrapped_keys_and_unwraps_them_in_memory(aws: None, tmp_path: Path) -> None:
    key_id = _kms_key()
    path = tmp_path / "keyring.wrapped.json"
    provider = KmsProvider.with_file(key_id, path, REGION, cache_ttl=0, retry=FAST)
    generated = KeyManager(provider).generate()
    KeyManager(provider).rotate()
    stored = path.read_text()
    for version in (1, 2):
        material = provider.load().get(version).key
        assert material is not None and material.to_base64() not in stored
    assert generated.master_key(1) == provider.load().master_key(1)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_kms_keyring_in_secrets_manager_round_trips(aws: None) -> None:
    key_id = _kms_key()
    provider = KmsProvider.with_secret(key_id, SECRET, REGION, cache_ttl=0, retry=FAST)
    KeyManager(provider).generate()
    text = boto3.client("secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"]
    assert json.loads(text)["format"] == "encmigrate-wrapped-keyring/1"
    assert KmsProvider.with_secret(key_id, SECRET, REGION).load().current == 1


def test_kms_read_path_calls_decrypt_only(aws: None, tmp_path: Path) -> None:
    key_id = _kms_key()
    path = tmp_path / "k.json"
    KeyManager(KmsProvider.with_file(key_id, path, REGION, retry=FAST)).generate()
    client = boto3.client("kms")
    seen = _calls_recorder(client)
    KmsProvider.with_file(key_id, path, REGION, client=client).load()
    assert seen == ["kms:Decrypt"]


def test_kms_tampered_wrapped_key_does_not_unwrap(aws: None, tmp_path: Path) -> None:
    key_id = _kms_key()
    path = tmp_path / "k.json"
    KeyManager(KmsProvider.with_file(key_id, path, REGION, retry=FAST)).generate()
    document = json.loads(path.read_text())
    wrapped = document["keyring"]["versions"][0]["key"]
    document["keyring"]["versions"][0]["key"] = wrapped[:-4] + (
        "AAAA" if wrapped[-4:] != "AAAA" else "BBBB"
    )
    path.write_text(json.dumps(document))
    with pytest.raises(KeyConfigError, match="does not authenticate"):
        KmsProvider.with_file(key_id, path, REGION, cache_ttl=0).load()


def _revive_version_1(document: dict[str, Any]) -> None:
    """The attack: make disabled version 1 active and current again, no KMS rights needed."""
    ring = document["keyring"]
    ring["current"] = 1
    ring["versions"][0]["state"] = "active"
    ring["versions"][1]["state"] = "retired"


def _edit_state(document: dict[str, Any]) -> None:
    document["keyring"]["versions"][0]["state"] = "retired"


def _add_version(document: dict[str, Any]) -> None:
    versions = document["keyring"]["versions"]
    versions.append({**versions[1], "version": 3, "state": "retired"})


def _remove_version(document: dict[str, Any]) -> None:
    del document["keyring"]["versions"][0]


def _edit_audit_head(document: dict[str, Any]) -> None:
    document["keyring"]["audit_head"] = {"sha256": "0" * 64, "lines": 0}


def _edit_outer_field(document: dict[str, Any]) -> None:
    document["keyring"]["rotation_days"] = 9999


EDITS = {
    "disabled version made active and current": _revive_version_1,
    "state": _edit_state,
    "add a version": _add_version,
    "remove a version": _remove_version,
    "audit head": _edit_audit_head,
    "rotation schedule": _edit_outer_field,
}


def _kms_keyring_with_version_1_disabled(path: Path) -> KmsProvider:
    provider = KmsProvider.with_file(_kms_key(), path, REGION, cache_ttl=0, retry=FAST)
    manager = KeyManager(provider, AuditLog(path.parent / "audit.jsonl"))
    manager.generate()
    manager.rotate()
    manager.disable(1, reason="leaked")
    return provider


@pytest.mark.parametrize("edit", list(EDITS))
def test_kms_editing_the_stored_keyring_without_kms_is_refused(
    aws: None, tmp_path: Path, edit: str
) -> None:
    path = tmp_path / "k.json"
    provider = _kms_keyring_with_version_1_disabled(path)
    document = json.loads(path.read_text())
    EDITS[edit](document)
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(KeyConfigError, match="the stored keyring does not authenticate") as info:
        provider.load()
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def test_kms_keyring_in_secrets_manager_is_authenticated_too(aws: None) -> None:
    key_id = _kms_key()
    provider = KmsProvider.with_secret(key_id, SECRET, REGION, cache_ttl=0, retry=FAST)
    manager = KeyManager(provider)
    manager.generate()
    manager.rotate()
    manager.disable(1)
    client = boto3.client("secretsmanager")
    document = json.loads(client.get_secret_value(SecretId=SECRET)["SecretString"])
    _revive_version_1(document)
    client.put_secret_value(SecretId=SECRET, SecretString=json.dumps(document))
    with pytest.raises(KeyConfigError, match="does not authenticate"):
        provider.load()


def test_kms_document_of_an_older_encmigrate_is_refused_until_keys_upgrade(
    aws: None, tmp_path: Path
) -> None:
    path = tmp_path / "k.json"
    provider = _kms_keyring_with_version_1_disabled(path)
    document = json.loads(path.read_text())
    del document["mac"]  # what the previous version wrote: no authentication
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(KeyConfigError, match="not authenticated") as info:
        provider.load()
    assert "encmigrate keys upgrade" in str(info.value)
    upgraded = KeyManager(provider, AuditLog(tmp_path / "audit.jsonl")).upgrade(reason="test")
    assert [v.state.value for v in upgraded.versions] == ["disabled", "active"]
    assert "mac" in json.loads(path.read_text())
    assert provider.load().current == 2


def test_kms_upgrade_does_not_accept_a_document_whose_mac_fails(aws: None, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    provider = _kms_keyring_with_version_1_disabled(path)
    document = json.loads(path.read_text())
    _revive_version_1(document)
    path.write_text(json.dumps(document))
    with pytest.raises(KeyConfigError, match="does not authenticate"):
        KeyManager(provider).upgrade()


def test_kms_destroy_keeps_the_cached_keyring_working(aws: None, tmp_path: Path) -> None:
    provider = KmsProvider.with_file(_kms_key(), tmp_path / "k.json", REGION, retry=FAST)
    manager = KeyManager(provider)
    manager.generate()
    manager.rotate()
    manager.destroy(1, confirm=True, force=True)
    cached = provider.load()  # within cache_ttl: the keyring the destroy saved
    assert cached.get(1).key is None
    assert len(cached.master_key(2)) == 32  # not "master key material was wiped"


def test_kms_old_wrapped_file_is_zeroed_when_replaced(aws: None, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    provider = KmsProvider.with_file(_kms_key(), path, REGION, cache_ttl=0, retry=FAST)
    KeyManager(provider).generate()
    os.link(path, tmp_path / "copy-by-hard-link.json")
    before = path.read_bytes()
    KeyManager(provider).rotate()
    kept = (tmp_path / "copy-by-hard-link.json").read_bytes()
    assert len(kept) == len(before) and set(kept) == {0}


def test_kms_refusing_the_data_key_is_a_clear_provider_error(aws: None, tmp_path: Path) -> None:
    key_id = _kms_key()
    path = tmp_path / "k.json"
    KeyManager(KmsProvider.with_file(key_id, path, REGION, retry=FAST)).generate()
    document = json.loads(path.read_text())
    document["data_key"] = base64.b64encode(b"not a KMS ciphertext blob").decode()
    path.write_text(json.dumps(document))
    with pytest.raises(KeyProviderError, match=r"kms:Decrypt failed \(InvalidCiphertextException"):
        KmsProvider.with_file(key_id, path, REGION, cache_ttl=0, retry=FAST).load()


def test_wrapped_keyring_is_refused_by_a_provider_with_another_kms_key(
    aws: None, tmp_path: Path
) -> None:
    path = tmp_path / "k.json"
    KeyManager(KmsProvider.with_file(_kms_key(), path, REGION)).generate()
    with pytest.raises(KeyConfigError, match="configured for"):
        KmsProvider.with_file(_kms_key(), path, REGION).load()


# -- the CLI against moto.server -----------------------------------------------------------


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_cli_generate_rotate_and_status_in_a_subprocess_against_moto_server(
    moto_server: str, tmp_path: Path
) -> None:
    (tmp_path / "encmigrate.toml").write_text(
        '[keys]\nprovider = "aws-secrets-manager"\n'
        f'[keys.aws]\nsecret_id = "{SECRET}"\nregion = "{REGION}"\n'
    )
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ENCMIG"))
    }
    env.update(
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="AKIATESTING",
        AWS_SECRET_ACCESS_KEY=CANARY,
        ENCMIGRATE_ACTOR="cli-subprocess",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--json", "keys", *args, cwd=tmp_path, env=env, timeout=120)

    missing = run("status")
    assert missing.returncode == 3 and "encmigrate keys generate" in missing.stderr
    assert run("generate").returncode == 0
    rotated = run("rotate", "--reason", "test")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"rotated": True, "current": 2}
    not_due = run("rotate", "--if-due")
    assert json.loads(not_due.stdout)["rotated"] is False
    status = run("status")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["current"] == 2 and "AWS Secrets Manager" in document["provider"]
    assert [v["state"] for v in document["versions"]] == ["retired", "active"]
    health = run("health")
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "healthy"
    log = (tmp_path / "encmigrate-audit.jsonl").read_text().splitlines()
    audit = [json.loads(line) for line in log]
    assert [e["action"] for e in audit if e["action"] in ("generate", "rotate")] == [
        "generate",
        "rotate",
    ]
    secret = boto3.client(
        "secretsmanager",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id="AKIATESTING",
        aws_secret_access_key=CANARY,
    ).get_secret_value(SecretId=SECRET)
    assert Keyring.from_json(secret["SecretString"]).current == 2
    for result in (missing, rotated, status, health):
        assert CANARY not in result.stdout + result.stderr
