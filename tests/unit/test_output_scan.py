"""The output scan (tests/support/output_scan.py) finds secrets in CLI output, and only those."""

from __future__ import annotations

import base64
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from encmigrate import Keyring
from encmigrate.keys import FileProvider, MasterKey
from support.output_scan import cli_name, find_leaks, key_secret, secrets_of, text_secret

NO_SECRET = "Key health: ok\nversion 1: active, created 2026-01-05\n"
# Standard and urlsafe base64 differ for this key (it encodes to '+' and '/').
FIXED_KEY = bytes([0xFB, 0xEF, 0xFF]) * 10 + b"ok"


@pytest.fixture
def keyring_file(tmp_path: Path) -> tuple[Path, bytes]:
    """A keyring file of two versions; the newest version's material."""
    keyring = Keyring.generate().rotated()
    path = tmp_path / "secrets" / "ring.json"
    path.parent.mkdir()
    FileProvider(path).save(keyring)
    return path, keyring.master_key(2)


def test_the_base64_of_a_key_from_the_runs_keyring_file_is_a_hit(
    tmp_path: Path, keyring_file: tuple[Path, bytes]
) -> None:
    path, material = keyring_file
    secrets = secrets_of({"ENCMIGRATE_KEYRING_FILE": str(path)}, tmp_path, ["keys", "status"])
    leaked = f"{NO_SECRET}debug: loaded {base64.b64encode(material).decode()}\n"
    hits = find_leaks(leaked, secrets)
    assert [(s.kind, encoding) for s, encoding in hits] == [
        ("master key version 2 (keyring file ring.json)", "base64")
    ]
    assert find_leaks(NO_SECRET, secrets) == []
    assert base64.b64encode(material).decode() not in repr(secrets)


def _wrapped(material: bytes) -> str:
    """Base64 folded at 20 characters, as a narrow table cell shows it."""
    return "\n".join(textwrap.wrap(base64.b64encode(material).decode(), 20))


ENCODINGS: dict[str, tuple[Callable[[bytes], str], str]] = {
    "hex": (bytes.hex, "hex"),
    "HEX": (lambda m: m.hex().upper(), "upper-case hex"),
    "urlsafe": (
        lambda m: base64.urlsafe_b64encode(m).decode().rstrip("="),
        "urlsafe base64 without padding",
    ),
    "repr": (repr, "bytes repr"),
    "wrapped": (_wrapped, "base64, wrapped"),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_every_encoding_of_a_key_is_found(name: str, tmp_path: Path) -> None:
    encode, encoding = ENCODINGS[name]
    FileProvider(tmp_path / "keyring.json").save(Keyring.single(MasterKey(FIXED_KEY)))
    secrets = secrets_of({}, tmp_path)  # ./keyring.json
    output = f"{NO_SECRET}{encode(FIXED_KEY)}\n"
    assert [e for _, e in find_leaks(output, secrets)] == [encoding]


def test_keys_in_variables_and_a_plans_keyring_are_secrets(tmp_path: Path) -> None:
    from_env, from_plan = bytes(range(32)), bytes(range(32, 64))
    FileProvider(tmp_path / "keys" / "k.json").save(Keyring.single(MasterKey(from_plan)))
    (tmp_path / "encmigrate.toml").write_text('[keys]\npath = "keys/k.json"\n', encoding="utf-8")
    env = {"ALPHAPULSE_ENCRYPTION_MASTER_KEY": base64.urlsafe_b64encode(from_env).decode()}
    secrets = secrets_of(env, tmp_path)
    output = f"{from_env.hex()} {base64.b64encode(from_plan).decode()}"
    assert sorted(s.kind for s, _ in find_leaks(output, secrets)) == [
        "master key version 1 (keyring file k.json)",
        "the key in ALPHAPULSE_ENCRYPTION_MASTER_KEY",
    ]


def test_database_passwords_are_secrets_unless_too_short(tmp_path: Path) -> None:
    env = {"ENCMIGRATE_DATABASE_URL": "postgresql+psycopg://app:pw@db/x"}
    args = ["--database-url", "postgresql://app:Tr0ub4dor%26x@db/x", "status"]
    secrets = secrets_of(env, tmp_path, args)
    assert [s.kind for s in secrets] == ["the database password of --database-url"]
    hits = find_leaks("could not connect as app (password Tr0ub4dor&x)", secrets)
    assert [e for _, e in hits] == ["verbatim"]
    assert find_leaks("error: pw is wrong; postgresql://app:***@db/x", secrets) == []


def test_among_many_canaries_each_one_printed_is_found(tmp_path: Path) -> None:
    emails = [f"User{i}@Example.com" for i in range(1, 501)]
    canaries = [text_secret(e, f"canary {e[:6]}", "canary") for e in emails]
    secrets = [s for s in canaries if s is not None] + [key_secret(FIXED_KEY, "the key")]
    output = f"{NO_SECRET}row 57: User57@Example.com\n{FIXED_KEY.hex().upper()}\nUser5@"
    hits = find_leaks(output, secrets)
    assert [(s.kind, e) for s, e in hits] == [
        ("canary User57", "verbatim"),
        ("the key", "upper-case hex"),
    ]
    assert find_leaks(NO_SECRET + "User5 @Example.com", secrets) == []


def test_cli_commands_are_told_from_other_processes() -> None:
    python = sys.executable
    assert cli_name([python, "-m", "encmigrate", "--debug", "verify"]) == (
        "encmigrate",
        ("--debug", "verify"),
    )
    client = [python, "-I", "-S", "/x/tests/support/prefork.py", "run", "/tmp/s", "alembic"]
    assert cli_name([*client, "upgrade", "head"]) == ("alembic", ("upgrade", "head"))
    assert cli_name(["/tmp/p/bin/encmigrate", "status"]) == ("encmigrate", ("status",))
    assert cli_name([python, "-m", "json.tool"]) is None
    assert cli_name([python, "-c", "import encmigrate"]) is None
    assert cli_name(["bash", "/tmp/w/.runbook.sh"]) is None
