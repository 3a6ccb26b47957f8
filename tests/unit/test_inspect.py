"""Envelope inspection without decrypting: parsing, key-version states, the `inspect` command."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate import get_cipher
from encmigrate.cli import app
from encmigrate.crypto.envelope import NONCE_SIZE, TAG_SIZE
from encmigrate.errors import ConfigError
from encmigrate.inspect import (
    NotAnEnvelopeError,
    _key_values,
    decode_envelope_text,
    inspect_envelope,
    key_text,
)
from encmigrate.keys import FileProvider, Keyring, KeyState
from support.key_cli import isolated_cwd

runner = CliRunner()


def _blob(keyring: Keyring, value: str = "alice@example.com") -> bytes:
    blob = get_cipher("customers.email", keyring=keyring).encrypt(value)
    assert blob is not None
    return blob


def test_report_gives_format_version_and_sizes_without_decrypting() -> None:
    keyring = Keyring.generate().rotated()
    blob = _blob(keyring, "ab")
    report = inspect_envelope(blob, keyring)
    assert (report.format, report.key_version, report.size) == (2, 2, len(blob))
    assert (report.header_size, report.nonce_size, report.tag_size) == (5, NONCE_SIZE, TAG_SIZE)
    assert report.ciphertext_size == len(b"ab") == len(blob) - 33
    assert (report.key_state, report.readable, report.current_version) == ("active", True, 2)


@pytest.mark.parametrize(
    ("change", "state", "readable"),
    [
        (lambda k: k.rotated(), "retired", True),
        (lambda k: k.rotated().with_state(1, KeyState.DISABLED), "disabled", False),
        (lambda k: k.rotated().destroyed(1), "destroyed", False),
        (lambda k: Keyring.generate(), "active", True),  # another keyring: version 1 too
    ],
)
def test_key_state_comes_from_the_keyring_given(change, state, readable) -> None:  # type: ignore[no-untyped-def]
    blob = _blob(Keyring.generate())
    report = inspect_envelope(blob, change(Keyring.generate()))
    assert (report.key_state, report.readable) == (state, readable)


def test_version_missing_from_the_keyring_and_no_keyring_at_all() -> None:
    blob = _blob(Keyring.generate().rotated().rotated())
    report = inspect_envelope(blob, Keyring.generate())
    assert (report.key_version, report.key_state, report.readable) == (3, "missing", False)
    bare = inspect_envelope(blob)
    assert (bare.key_state, bare.readable, bare.current_version) == (None, None, None)


def test_text_forms_hex_psql_hex_base64_and_urlsafe_base64_all_parse() -> None:
    blob = _blob(Keyring.generate())
    forms = {
        blob.hex(): "hex",
        blob.hex().upper(): "hex",
        "\\x" + blob.hex(): "hex",
        "0x" + blob.hex(): "hex",
        base64.b64encode(blob).decode(): "base64",
        base64.urlsafe_b64encode(blob).decode().rstrip("="): "base64",
        " " + base64.b64encode(blob).decode() + "\n": "base64",
    }
    for text, encoding in forms.items():
        assert decode_envelope_text(text) == (blob, encoding), text


def test_values_that_are_not_envelopes_are_refused_without_echoing_them() -> None:
    plaintext = "alice@example.com"
    for text in (plaintext, base64.b64encode(plaintext.encode()).decode(), "00" * 40, ""):
        with pytest.raises(NotAnEnvelopeError) as info:
            decode_envelope_text(text)
        assert info.value.exit_code == 1
        assert plaintext not in str(info.value)
    with pytest.raises(NotAnEnvelopeError):
        inspect_envelope(_blob(Keyring.generate())[:32])
    version_zero = bytes([1, 0, 0, 0, 0]) + bytes(40)
    with pytest.raises(NotAnEnvelopeError):
        inspect_envelope(version_zero)


def _table(*key_columns: tuple[str, sa.types.TypeEngine[Any]]) -> list[sa.Column[Any]]:
    table = sa.Table(
        "t",
        sa.MetaData(),
        *(sa.Column(name, kind, primary_key=True) for name, kind in key_columns),
    )
    return list(table.primary_key.columns)


def test_key_arguments_become_typed_primary_key_values() -> None:
    single = _table(("id", sa.Integer()))
    assert _key_values(single, ["42"]) == {"id": 42}
    assert _key_values(single, ["id=42"]) == {"id": 42}
    composite = _table(("region", sa.String()), ("number", sa.Integer()))
    assert _key_values(composite, ["number=7", "region=eu"]) == {"region": "eu", "number": 7}
    assert key_text({"region": "eu", "number": 7}) == "region=eu number=7"
    assert key_text({"id": 42}) == "42"
    for bad in (["7"], ["region=eu"], ["region=eu", "nope=1"], ["region=eu", "region=us"]):
        with pytest.raises(ConfigError):
            _key_values(composite, bad)
    with pytest.raises(ConfigError, match="does not fit"):
        _key_values(single, ["forty-two"])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keyring:
    isolated_cwd(tmp_path, monkeypatch)
    keyring = Keyring.generate().rotated()
    FileProvider(tmp_path / "keyring.json").save(keyring)
    monkeypatch.setenv("ENCMIGRATE_KEYRING_FILE", str(tmp_path / "keyring.json"))
    return keyring


def test_inspect_command_reports_state_and_json_parses(project: Keyring) -> None:
    blob = _blob(project)
    result = runner.invoke(app, ["inspect", "\\x" + blob.hex()])
    assert result.exit_code == 0, result.stderr
    assert "key version  2: active" in result.stdout
    assert f"ciphertext {len(blob) - 33}" in result.stdout
    result = runner.invoke(app, ["--json", "inspect", base64.b64encode(blob).decode()])
    document = json.loads(result.stdout)
    assert document["key_version"] == 2 and document["readable"] is True
    assert (document["nonce"], document["tag"]) == (12, 16)
    old = _blob(Keyring.generate().rotated().rotated())  # version 3: not in this keyring
    result = runner.invoke(app, ["inspect", old.hex()])
    assert result.exit_code == 0 and "not in the keyring" in result.stdout


def test_inspect_command_without_a_keyring_still_reads_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    blob = _blob(Keyring.generate())
    result = runner.invoke(app, ["--json", "inspect", blob.hex()])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["key_version"] == 1 and document["readable"] is None
    assert "no keyring configured" in document["keyring_problem"]


def test_inspect_command_errors_are_one_line(project: Keyring) -> None:
    result = runner.invoke(app, ["inspect", "hello world"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 2 and "--table" in result.stderr
    result = runner.invoke(app, ["inspect", "AQ==", "--table", "customers"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["inspect", "--table", "customers", "--column", "email"])
    assert result.exit_code == 2 and "--key" in result.stderr
