"""``encmigrate --debug`` shows no key, data key, credential or database password.

Each key provider (environment, file, Vault through the in-repo fake, AWS
Secrets Manager and AWS KMS through moto) runs ``--debug keys generate``,
``keys rotate`` (where the provider writes) and ``keys status`` in-process.
Everything printed (stdout and stderr) is scanned for every encoding of every
master key, every KMS data key and the provider's credential; so is every
record, before masking, that logging emitted on the ``encmigrate`` tree and
the third-party loggers that know secrets (botocore, urllib3, hvac, ...).

Each run starts with no handler on the root logger, as a fresh ``encmigrate``
process does: with the old ``logging.basicConfig(level=DEBUG)`` the AWS runs
printed the keyring and the data key.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate import Keyring
from encmigrate.cli import app
from encmigrate.keys import FileProvider
from support.vault_fake import ROOT, VaultFake

REGION = "eu-west-1"
SECRET_ID = "encmigrate/keyring"
AWS_CREDENTIAL = "AWS-SECRET-CANARY-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
DB_PASSWORD = "s3cretpw"
# Third-party loggers that see request and response bodies, credentials or URLs.
WATCHED = ("boto3", "botocore", "s3transfer", "urllib3", "requests", "hvac", "psycopg",
           "sqlalchemy", "alembic")  # fmt: skip

runner = CliRunner()


def forms(secret: bytes) -> set[str]:
    """Every way a key could be written out."""
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return {
        secret.decode("latin-1"),
        secret.hex(),
        secret.hex().upper(),
        b64,
        b64.rstrip("="),
        url,
        url.rstrip("="),
        repr(secret)[2:-1],
    }


def master_keys(keyring: Keyring) -> set[str]:
    found: set[str] = set()
    for version in keyring.versions:
        if version.key is not None:
            found |= forms(keyring.master_key(version.version))
    return found


class _Records(logging.Handler):
    """Every record as emitted, before any filter of ours masks it."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, logging.Formatter().format(record)))


@dataclass
class Run:
    code: int
    stdout: str
    printed: str  # stdout and stderr
    records: list[tuple[str, str]]  # (logger, unmasked text) from encmigrate and WATCHED

    def from_logger(self, prefix: str) -> list[str]:
        return [text for name, text in self.records if name.split(".")[0] == prefix]


def cli(*args: str) -> Run:
    """``encmigrate *args`` in-process, logging set up as in a fresh process."""
    root = logging.getLogger()
    kept_handlers = root.handlers[:]
    names = ("encmigrate", *WATCHED)
    kept_levels = {name: logging.getLogger(name).level for name in (*names, "")}
    records = _Records()
    for name in names:
        logging.getLogger(name).addHandler(records)
    for handler in kept_handlers:  # pytest's capture handlers: put back below
        root.removeHandler(handler)
    try:
        result = runner.invoke(app, list(args))
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in kept_handlers:
            root.addHandler(handler)
        for name in names:
            logging.getLogger(name).removeHandler(records)
        for name, level in kept_levels.items():
            logging.getLogger(name or None).setLevel(level)
    return Run(result.exit_code, result.stdout, result.stdout + result.stderr, records.lines)


def assert_no_secret(runs: list[Run], secrets: set[str], *, raw_records: bool = True) -> None:
    assert secrets, "nothing to look for"
    for run in runs:
        texts = {"printed": run.printed}
        if raw_records:
            texts["logged"] = "\n".join(text for _, text in run.records)
        for where, text in texts.items():
            leaked = sorted(s for s in secrets if s in text)
            assert leaked == [], f"{where}: {len(leaked)} secret forms, e.g. {leaked[0]!r}"


def assert_debug_logs_shown(run: Run) -> None:
    """The scan is not vacuous: encmigrate's debug lines reached the captured stderr."""
    assert "DEBUG encmigrate.cli.logs: debug logs from encmigrate" in run.printed
    assert run.from_logger("encmigrate")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("ENCMIGRATE_", "AWS_", "VAULT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCMIGRATE_ACTOR", "debug-output-test")
    return tmp_path


def generate_rotate_status(*extra: str) -> list[Run]:
    runs = [
        cli("--debug", "keys", "generate"),
        cli("--debug", "keys", "rotate", "--reason", "test"),
        cli("--debug", "keys", "status"),
        cli("--debug", "--json", "keys", "status"),
    ]
    assert [run.code for run in runs] == [0, 0, 0, 0], [run.printed for run in runs]
    assert json.loads(runs[-1].stdout)["current"] == 2
    return runs


# -- environment and file ----------------------------------------------------------------


@pytest.mark.parametrize("variable", ["ENCMIGRATE_KEYRING", "ENCMIGRATE_MASTER_KEY"])
def test_environment_provider(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    keyring = Keyring.generate().rotated()
    if variable == "ENCMIGRATE_KEYRING":
        monkeypatch.setenv(variable, keyring.to_json())
    else:
        keyring = Keyring.generate()
        monkeypatch.setenv(variable, base64.b64encode(keyring.master_key(1)).decode())
    runs = [cli("--debug", "keys", "status"), cli("--debug", "--json", "keys", "status")]
    assert [run.code for run in runs] == [0, 0], runs[0].printed
    assert_no_secret(runs, master_keys(keyring))
    assert_debug_logs_shown(runs[0])


def test_file_provider(project: Path) -> None:
    (project / "encmigrate.toml").write_text('[keys]\nprovider = "file"\npath = "keyring.json"\n')
    runs = generate_rotate_status()
    assert_no_secret(runs, master_keys(FileProvider(project / "keyring.json").load()))
    assert_debug_logs_shown(runs[0])


# -- Vault -------------------------------------------------------------------------------


@pytest.fixture
def vault(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VaultFake, str]]:
    with VaultFake() as fake:
        token = fake.add_token([ROOT])
        monkeypatch.setenv("VAULT_ADDR", fake.url)
        monkeypatch.setenv("VAULT_TOKEN", token)
        monkeypatch.setenv("ENCMIGRATE_KEY_PROVIDER", "vault")
        monkeypatch.setenv("ENCMIGRATE_VAULT_PATH", f"debug/{uuid.uuid4().hex}")
        yield fake, token


@pytest.mark.parametrize("transit", [False, True], ids=["kv", "transit"])
def test_vault_provider(
    vault: tuple[VaultFake, str], monkeypatch: pytest.MonkeyPatch, transit: bool
) -> None:
    from encmigrate.config import VaultSettings
    from encmigrate.keys.vault import VaultProvider

    fake, token = vault
    if transit:
        monkeypatch.setenv("ENCMIGRATE_VAULT_TRANSIT_KEY", "encmigrate")
    runs = generate_rotate_status()
    keyring = VaultProvider.from_settings(VaultSettings(), os.environ, cache_ttl=0).load()
    secrets = master_keys(keyring) | {token, token.removeprefix("hvs.")}
    assert_no_secret(runs, secrets)
    assert_debug_logs_shown(runs[0])
    assert all(run.from_logger("urllib3") == [] for run in runs)  # stayed at WARNING
    assert any(method == "GET" for method, _, _ in fake.requests)  # the keyring was read

    monkeypatch.setenv("ENCMIGRATE_DEBUG_LOGGERS", "urllib3,hvac")
    opted_in = cli("--debug", "keys", "status")
    assert opted_in.code == 0
    assert "DEBUG urllib3.connectionpool:" in opted_in.printed
    assert_no_secret([opted_in], secrets, raw_records=False)


# -- AWS (moto, in-process) --------------------------------------------------------------


@pytest.fixture
def aws(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CREDENTIAL)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("ENCMIGRATE_AWS_SECRET_ID", SECRET_ID)
    with mock_aws():
        import boto3

        yield boto3


def test_aws_secrets_manager_provider(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from encmigrate.keys.aws import SecretsManagerProvider

    monkeypatch.setenv("ENCMIGRATE_KEY_PROVIDER", "aws-secrets-manager")
    runs = generate_rotate_status()
    provider = SecretsManagerProvider(SECRET_ID, region=REGION, cache_ttl=0)
    secrets = master_keys(provider.load()) | master_keys(provider.recover_previous())
    secrets.add(AWS_CREDENTIAL)
    assert_no_secret(runs, secrets)
    assert_debug_logs_shown(runs[0])
    assert all(run.from_logger("botocore") == [] for run in runs)  # stayed at WARNING

    monkeypatch.setenv("ENCMIGRATE_DEBUG_LOGGERS", "botocore")
    opted_in = cli("--debug", "keys", "status")
    assert opted_in.code == 0
    assert "DEBUG botocore.parsers: Response body:" in opted_in.printed
    assert '"SecretString": "***"' in opted_in.printed
    assert_no_secret([opted_in], secrets, raw_records=False)


@pytest.mark.parametrize("store", ["secrets-manager", "file"])
def test_aws_kms_provider(aws: Any, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    from encmigrate.keys.aws_kms import KmsProvider

    kms = aws.client("kms", region_name=REGION)
    key_id = kms.create_key(Description="debug output test")["KeyMetadata"]["KeyId"]
    monkeypatch.setenv("ENCMIGRATE_KEY_PROVIDER", "aws-kms")
    monkeypatch.setenv("ENCMIGRATE_KMS_KEY_ID", key_id)
    wrapped_file = Path("keyring.wrapped.json").resolve()
    if store == "file":
        monkeypatch.setenv("ENCMIGRATE_KMS_KEYRING_FILE", str(wrapped_file))
        provider = KmsProvider.with_file(key_id, wrapped_file, REGION, cache_ttl=0)
    else:
        provider = KmsProvider.with_secret(key_id, SECRET_ID, REGION, cache_ttl=0)

    data_keys: list[bytes] = []

    def remember_data_key() -> None:  # each save wraps under a fresh KMS data key
        document = json.loads(provider.store.read())
        blob = base64.b64decode(document["data_key"])
        answer = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"encmigrate": "keyring"})
        data_keys.append(answer["Plaintext"])

    runs = [cli("--debug", "keys", "generate")]
    remember_data_key()
    runs.append(cli("--debug", "keys", "rotate", "--reason", "test"))
    remember_data_key()
    runs += [cli("--debug", "keys", "status"), cli("--debug", "--json", "keys", "status")]
    assert [run.code for run in runs] == [0, 0, 0, 0], [run.printed for run in runs]
    assert len(set(data_keys)) == 2
    secrets = master_keys(provider.load()) | {AWS_CREDENTIAL}
    for data_key in data_keys:
        secrets |= forms(data_key)
    assert_no_secret(runs, secrets)
    assert_debug_logs_shown(runs[0])
    assert all(run.from_logger("botocore") == [] for run in runs)

    monkeypatch.setenv("ENCMIGRATE_DEBUG_LOGGERS", "botocore,urllib3")
    opted_in = cli("--debug", "keys", "status")
    assert opted_in.code == 0
    assert '"Plaintext": "***"' in opted_in.printed  # the Decrypt answer, masked
    assert_no_secret([opted_in], secrets, raw_records=False)


# -- the database URL ----------------------------------------------------------------------


def test_database_password_is_not_shown(
    pg_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sa.make_url(pg_url).set(drivername="postgresql+psycopg", password=DB_PASSWORD)
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, email text)"))
    finally:
        engine.dispose()
    (project / "encmigrate.toml").write_text('[[columns]]\ntable = "customers"\ncolumn = "email"\n')
    monkeypatch.setenv("ENCMIGRATE_DEBUG_LOGGERS", "psycopg,sqlalchemy.pool")
    written = url.render_as_string(hide_password=False)
    missing = url.set(database=f"encmigrate_missing_{uuid.uuid4().hex[:8]}")
    runs = [
        cli("--debug", "--database-url", written, "status"),
        cli("--debug", "--database-url", written, "plan", "check"),
        cli("--debug", "--database-url", missing.render_as_string(hide_password=False), "status"),
    ]
    monkeypatch.setenv("ENCMIGRATE_DATABASE_URL", written)
    runs.append(cli("--debug", "status"))
    assert [run.code for run in runs] == [0, 0, 4, 0], [run.printed for run in runs]
    assert DB_PASSWORD not in written.replace(f":{DB_PASSWORD}@", "")  # only as the password
    for run in runs:
        assert DB_PASSWORD not in run.printed
    assert "INFO sqlalchemy" in runs[0].printed  # the opted-in loggers were on (capped at INFO)
