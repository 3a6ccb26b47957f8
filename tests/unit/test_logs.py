"""encmigrate.cli.logs: which loggers --debug raises, and what the masking filter hides."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.cli.logs import QUIET_LOGGERS, configure_logging
from encmigrate.redaction import RedactingFilter, redact

KEY = bytes(range(7, 39))  # 32 bytes whose base64 mixes cases, as random keys do
KEY_FORMS = {
    base64.b64encode(KEY).decode(),
    base64.b64encode(KEY).decode().rstrip("="),
    base64.urlsafe_b64encode(KEY).decode(),
    KEY.hex(),
    KEY.hex().upper(),
    repr(KEY)[2:-1],
}
DATA_KEY = os.urandom(32)


def _leaks(text: str, *secrets: bytes) -> list[str]:
    found = set(KEY_FORMS)
    for secret in secrets:
        b64 = base64.b64encode(secret).decode()
        found |= {b64, b64.rstrip("="), secret.hex(), secret.hex().upper()}
    return sorted(s for s in found if s in text)


def test_a_botocore_body_keeps_its_shape_and_loses_plaintext_and_secret_string() -> None:
    keyring = json.dumps({"versions": [{"version": 1, "key": base64.b64encode(KEY).decode()}]})
    body = json.dumps(
        {
            "KeyId": "arn:aws:kms:eu-west-1:123456789012:key/1234",
            "Plaintext": base64.b64encode(DATA_KEY).decode(),
            "CiphertextBlob": "AQIDAHh" + "x" * 20,
            "Name": "encmigrate/keyring",
            "SecretString": keyring,
        }
    )
    shown = redact(f"Response body:\nb'{body}'")
    assert _leaks(shown, DATA_KEY) == []
    assert '"Plaintext": "***"' in shown and '"SecretString": "***"' in shown
    assert '"CiphertextBlob": "***"' in shown
    assert '"KeyId": "arn:aws:kms:eu-west-1:123456789012:key/1234"' in shown
    assert '"Name": "encmigrate/keyring"' in shown


def test_a_keyring_quoted_inside_a_json_string_is_masked() -> None:
    inner = json.dumps({"key": base64.b64encode(KEY).decode(), "state": "active"})
    shown = redact(json.dumps({"data": {"keyring": inner}}))
    assert _leaks(shown) == []
    assert '\\"key\\": \\"***\\"' in shown and '\\"state\\": \\"active\\"' in shown


def test_url_password_and_named_credentials_are_masked() -> None:
    url = "postgresql+psycopg://postgres:s3cretpw@127.0.0.1:5432/test"
    assert redact(f"connecting to {url}") == (
        "connecting to postgresql+psycopg://postgres:***@127.0.0.1:5432/test"
    )
    headers = "{'X-Vault-Token': 'hvs.abc', 'Authorization': 'AWS4 Credential=AKIA/x'}"
    assert redact(headers) == "{'X-Vault-Token': '***', 'Authorization': '***'}"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("ENCMIGRATE_MASTER_KEY=abc password=pw&next=1") == (
        "ENCMIGRATE_MASTER_KEY=*** password=***&next=1"
    )
    assert redact("VaultAuth(token='t0k', role_id='r')") == "VaultAuth(token='***', role_id='r')"


def test_key_material_outside_a_named_field_is_masked_in_every_encoding() -> None:
    for form in KEY_FORMS - {repr(KEY)[2:-1]}:  # escapes are masked inside b'...' (below)
        assert redact(f"unwrapped {form} for version 2") == "unwrapped *** for version 2", form
    assert redact(f"raw {KEY!r}") == "raw b'***'"


def test_ordinary_debug_text_is_left_readable() -> None:
    for text in (
        "wrote /tmp/pytest-of-root/pytest-12/test_debug_output_for_env0/keyring.json",
        "customers.email: key_version=3 primary_key=(id,) 1,000 rows",
        '{"key": null, "state": "destroyed", "version": 1}',
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:encmigrate/keyring-AbCdEf",
        "http://127.0.0.1:8200/v1/secret/data/encmigrate/keyring",
        "b'short bytes \\x00\\x01'",
    ):
        assert redact(text) == text


def _emit_through_filter(record: logging.LogRecord) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.handle(record)
    return stream.getvalue()


def test_the_filter_masks_the_formatted_message_and_the_traceback() -> None:
    secret = base64.b64encode(KEY).decode()
    try:
        raise ValueError(f"cannot use {secret}")
    except ValueError:
        record = logging.getLogger("botocore.parsers").makeRecord(
            "botocore.parsers", logging.DEBUG, __file__, 1, "body %s", (secret,), None
        )
        record.exc_info = sys.exc_info()
    shown = _emit_through_filter(record)
    assert "body ***" in shown and "ValueError: cannot use ***" in shown
    assert _leaks(shown) == []
    assert record.args is None  # the record itself was rewritten


@pytest.fixture
def clean_levels() -> Iterator[None]:
    names = ("", "encmigrate", "botocore", "sqlalchemy.engine", *QUIET_LOGGERS)
    kept = {name: logging.getLogger(name or None).level for name in names}
    handlers = logging.getLogger().handlers[:]
    yield
    for name, level in kept.items():
        logging.getLogger(name or None).setLevel(level)
    assert logging.getLogger().handlers == handlers


def test_debug_raises_encmigrate_only_and_third_party_loggers_stay_at_warning(
    clean_levels: None,
) -> None:
    logging.getLogger().setLevel(logging.DEBUG)  # as an embedding program might have
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    undo = configure_logging(True, environ={})
    try:
        assert logging.getLogger("encmigrate.keys.aws").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger().level == logging.WARNING
        for name in ("botocore.parsers", "boto3", "urllib3.connectionpool", "hvac", "psycopg",
                     "sqlalchemy.engine.Engine", "alembic", "s3transfer", "requests"):  # fmt: skip
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    finally:
        undo()
    assert logging.getLogger("botocore").level == logging.DEBUG  # put back as found
    assert logging.getLogger().level == logging.DEBUG


def test_named_third_party_loggers_are_raised_on_request_only_with_debug(
    clean_levels: None,
) -> None:
    environ = {"ENCMIGRATE_DEBUG_LOGGERS": " botocore, sqlalchemy.engine ,"}
    undo = configure_logging(True, environ=environ)
    try:
        assert logging.getLogger("botocore.parsers").getEffectiveLevel() == logging.DEBUG
        # SQLAlchemy's DEBUG logs result rows (plaintext): INFO, the SQL only.
        assert logging.getLogger("sqlalchemy.engine").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
    finally:
        undo()
    undo = configure_logging(False, environ=environ)
    try:
        assert logging.getLogger("botocore").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("encmigrate").getEffectiveLevel() == logging.WARNING
    finally:
        undo()


def test_configuring_twice_installs_one_handler_and_undo_removes_it(clean_levels: None) -> None:
    before = len(logging.getLogger().handlers)
    first = configure_logging(True, environ={})
    second = configure_logging(True, environ={})
    assert len(logging.getLogger().handlers) == before + 1
    second()
    assert len(logging.getLogger().handlers) == before + 1
    first()
    assert len(logging.getLogger().handlers) == before


def test_a_cli_run_logs_to_its_own_stderr_and_leaves_logging_as_it_was(
    clean_levels: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCMIGRATE_KEYRING", "not json " + base64.b64encode(KEY).decode())
    levels = {name: logging.getLogger(name).level for name in ("encmigrate", "botocore")}
    result = CliRunner().invoke(app, ["--debug", "keys", "status"])
    assert result.exit_code == 3
    assert "DEBUG encmigrate.cli.logs: debug logs from encmigrate" in result.stderr
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_a_logger_below_encmigrate_with_its_own_level_prints_nothing_without_debug(
    clean_levels: None,
) -> None:
    # As counting audit events for metrics leaves it: encmigrate.audit at INFO.
    audit = logging.getLogger("encmigrate.audit")
    kept = audit.level
    audit.setLevel(logging.INFO)
    stderr = io.StringIO()
    try:
        for debug, shown in ((False, False), (True, True)):
            undo = configure_logging(debug, environ={})
            try:
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(sys, "stderr", stderr)
                    audit.info("key audit event")
            finally:
                undo()
            assert ("INFO encmigrate.audit: key audit event" in stderr.getvalue()) is shown
    finally:
        audit.setLevel(kept)
