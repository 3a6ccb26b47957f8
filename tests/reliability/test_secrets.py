"""No key material, derived key or plaintext in anything logged, printed or tracked.

A migrate + verify + failure scenario runs through the library (with the
``encmigrate`` logger at DEBUG) and through the CLI with ``--debug``; then
everything captured, plus every row of the tracking tables, is scanned for
the master key (standard and urlsafe base64, hex), every derived data and
search key (hex and base64) and every plaintext test value. The repr/str of
each public object holding a key is checked the same way, and key files are
created 0600.
"""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import Keyring, get_cipher, get_searchable_cipher
from encmigrate.crypto.kdf import KeyPurpose, derive_key
from encmigrate.keys import EnvProvider, FileProvider
from encmigrate.keys.audit import AuditLog
from encmigrate.keys.manager import KeyManager
from encmigrate.migrate import migrate_data, status, verify
from encmigrate.migrate.columns import ColumnWork
from reliability.conftest import Migration, Prepare
from support.cli import operator_env, run_cli
from support.shadow_schema import install_trigger

SENTINELS = ("sentinel-plain-8c1f@example.com", "sentinel-bad-date-93b1")


def _forms(secret: bytes) -> set[str]:
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return {b64, b64.rstrip("="), url, url.rstrip("="), secret.hex(), secret.hex().upper()}


def _secrets(migration: Migration) -> set[str]:
    keyring = migration.keyring
    master = keyring.master_key(keyring.current)
    found = _forms(master)
    for column in migration.plan.columns:
        for purpose in KeyPurpose:
            found |= _forms(derive_key(master, purpose, column.context, keyring.kdf))
    return found


def _plaintexts(migration: Migration) -> set[str]:
    with migration.engine.connect() as conn:
        emails = conn.execute(sa.text("SELECT email FROM customers WHERE email IS NOT NULL"))
        return {str(e) for (e,) in emails} | set(SENTINELS)


def _tracking(migration: Migration) -> str:
    with migration.engine.connect() as conn:
        return "\n".join(
            str(row[0])
            for table in (
                "encryption_migrations",
                "encryption_migration_chunks",
                "encryption_migration_failures",
            )
            for row in conn.execute(sa.text(f"SELECT row_to_json(t)::text FROM {table} t"))
        )


def _scan(text: str, forbidden: set[str]) -> list[str]:
    return sorted(s for s in forbidden if s in text)


def test_logs_output_and_tracking_tables_hold_no_key_and_no_plaintext(
    pg_url: str, prepare: Prepare, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migration = prepare(pg_url, 400)
    migration.execute(
        "DROP TRIGGER encmigrate_shadow ON customers",
        "ALTER TABLE customers ALTER COLUMN born TYPE text",
    )
    with migration.engine.begin() as conn:
        install_trigger(conn)
        conn.execute(
            sa.text("UPDATE customers SET email = :e, born = :b WHERE id = 3"),
            {"e": SENTINELS[0], "b": SENTINELS[1]},  # a plaintext, and a value that fails
        )
    from encmigrate.plan import load

    migration.plan = load(migration.plan_path, environ={})
    caplog.set_level(logging.DEBUG, logger="encmigrate")
    # SQL statements too (INFO: statements and their hidden parameters; DEBUG would add the
    # result rows, which SQLAlchemy logs by design and our --debug never turns on)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    reports = migrate_data(migration.plan, migration.engine, migration.keyring)
    assert reports[0].rows_failed == 1
    verdicts = verify(migration.plan, migration.engine, migration.keyring)
    assert not all(v.ok for v in verdicts)  # the failed value is missing: a failure recorded
    status(migration.plan, migration.engine)

    FileProvider(tmp_path / "keyring.json").save(migration.keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")
    printed = []
    for command in (
        ["--debug", "migrate-data", "--restart"],
        ["--debug", "verify"],
        ["--debug", "--json", "verify"],
        ["--debug", "status"],
        ["--debug", "find", "--table", "customers", "--column", "email", SENTINELS[0]],
    ):
        done = run_cli(*command, cwd=tmp_path, env=env)
        printed.append(done.stdout + done.stderr)
    env["ENCMIGRATE_KEYRING"] = Keyring.generate().to_json()  # the wrong key: exit 3
    done = run_cli("--debug", "verify", cwd=tmp_path, env=env)
    assert done.returncode == 3
    printed.append(done.stdout + done.stderr)

    logged = "\n".join(r.getMessage() for r in caplog.records)
    everything = {"logs": logged, "printed": "\n".join(printed), "tracking": _tracking(migration)}
    assert len(logged) > 1000 and "UPDATE" in logged  # the debug logs were captured
    assert "sentinel" not in SENTINELS[0].split("@")[1]
    secrets = _secrets(migration)
    plaintexts = _plaintexts(migration)
    assert len(plaintexts) > 300
    for where, text in everything.items():
        assert _scan(text, secrets) == [], where
        assert _scan(text, plaintexts) == [], where


def test_repr_and_str_of_every_object_holding_a_key_show_no_key(tmp_path: Path) -> None:
    keyring = Keyring.generate().rotated()
    master = keyring.master_key(keyring.current)
    secrets = _forms(master) | {repr(master), str(list(master))}
    for version in keyring.readable_versions():
        secrets |= _forms(keyring.master_key(version))
    secrets |= _forms(derive_key(master, KeyPurpose.DATA, "c.x", keyring.kdf))
    secrets |= _forms(derive_key(master, KeyPurpose.SEARCH, "c.x", keyring.kdf))
    cipher = get_cipher("c.x", keyring=keyring)
    searchable = get_searchable_cipher("c.x", keyring=keyring)
    searchable.token("warm the derived-key cache")
    cipher.encrypt("warm the cache")
    provider = FileProvider(tmp_path / "keyring.json")
    provider.save(keyring)
    env = EnvProvider(environ={"ENCMIGRATE_KEYRING": keyring.to_json()})
    from encmigrate.plan import ColumnPlan

    column = ColumnWork(ColumnPlan(table="c", column="x", type="string", context="c.x"), keyring)
    objects = [
        keyring,
        keyring.versions[0],
        keyring.versions[1],
        keyring.versions[1].key,
        keyring.derived_keys,
        cipher,
        searchable,
        provider,
        env,
        env.load(),
        KeyManager(provider, AuditLog(tmp_path / "audit.jsonl")),
        column,
        column.cipher,
    ]
    for item in objects:
        for text in (repr(item), str(item)):
            assert _scan(text, secrets) == [], type(item).__name__


def test_key_files_are_created_0600(tmp_path: Path) -> None:
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")
    done = run_cli("keys", "generate", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    FileProvider(tmp_path / "library.json").save(Keyring.generate())
    keyrings = [tmp_path / "keyring.json", tmp_path / "library.json"]
    for path in keyrings:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in tmp_path.iterdir():
        if path.suffix == ".json" or "backup" in path.name:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
