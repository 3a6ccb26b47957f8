"""Encrypted keyring backups: the document, the backup key, export and import with their audit."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from encmigrate import get_cipher
from encmigrate.errors import (
    ConfigError,
    KeyConfigError,
    KeyProviderError,
    RefusedError,
)
from encmigrate.keys import (
    AuditLog,
    EnvProvider,
    FileProvider,
    KeyManager,
    Keyring,
    KeyState,
    verify_audit_log,
)
from encmigrate.keys.backup import (
    BACKUP_FORMAT,
    BACKUP_KEY_ENV,
    BackupKey,
    compare_keyrings,
    create_backup,
    export_backup,
    import_backup,
    load_backup_key,
    open_backup,
    write_new_backup_key,
)


def _secrets(keyring: Keyring) -> list[str]:
    """Every text form a master key of ``keyring`` could take in output."""
    found = []
    for entry in keyring.versions:
        if entry.key is not None:
            raw = entry.key.reveal()
            found += [
                base64.b64encode(raw).decode(),
                base64.urlsafe_b64encode(raw).decode(),
                raw.hex(),
            ]
    return found


def _manager(directory: Path) -> KeyManager:
    return KeyManager(
        FileProvider(directory / "keyring.json"),
        AuditLog(directory / "audit.jsonl"),
        actor="backup-test",
    )


@pytest.fixture
def key() -> BackupKey:
    return BackupKey(Fernet.generate_key())


def test_backup_round_trip_restores_every_version_and_state(key: BackupKey) -> None:
    keyring = Keyring.generate().rotated().rotated()
    keyring = keyring.with_state(1, KeyState.DISABLED)
    restored = open_backup(create_backup(keyring, key), key)
    assert restored.keyring.current == 3
    assert [(v.version, v.state.value) for v in restored.keyring.versions] == [
        (1, "disabled"),
        (2, "retired"),
        (3, "active"),
    ]
    for version in (1, 2, 3):
        assert restored.keyring.get(version).key == keyring.get(version).key


def test_backup_document_shows_a_summary_and_no_key_material(key: BackupKey) -> None:
    keyring = Keyring.generate().rotated()
    data = create_backup(keyring, key)
    document = json.loads(data)
    assert document["format"] == BACKUP_FORMAT
    assert document["keyring"] == {
        "current": 2,
        "kdf": "hkdf-sha256",
        "versions": [{"version": 1, "state": "retired"}, {"version": 2, "state": "active"}],
    }
    assert document["created"].endswith("Z")
    text = data.decode()
    assert not [s for s in _secrets(keyring) if s in text]


def test_altered_token_is_refused(key: BackupKey) -> None:
    document = json.loads(create_backup(Keyring.generate(), key))
    token = document["token"]
    middle = len(token) // 2
    document["token"] = (
        token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    )
    with pytest.raises(KeyConfigError, match="another backup key, or the file was altered") as info:
        open_backup(json.dumps(document).encode(), key)
    assert info.value.exit_code == 3


def test_altered_clear_summary_is_refused(key: BackupKey) -> None:
    document = json.loads(create_backup(Keyring.generate().rotated(), key))
    document["keyring"]["versions"][0]["state"] = "destroyed"
    with pytest.raises(KeyConfigError, match="summary in clear does not match"):
        open_backup(json.dumps(document).encode(), key)
    document = json.loads(create_backup(Keyring.generate(), key))
    document["created"] = "2020-01-01T00:00:00Z"
    with pytest.raises(KeyConfigError, match="altered"):
        open_backup(json.dumps(document).encode(), key)


def test_wrong_backup_key_is_refused(key: BackupKey) -> None:
    data = create_backup(Keyring.generate(), key)
    with pytest.raises(KeyConfigError, match="does not authenticate"):
        open_backup(data, BackupKey(Fernet.generate_key()))


def test_a_file_that_is_not_a_backup_is_a_usage_error(key: BackupKey) -> None:
    for data in (b"not json", b"[1, 2]", Keyring.generate().to_json().encode()):
        with pytest.raises(ConfigError, match="not an encmigrate keyring backup") as info:
            open_backup(data, key)
        assert info.value.exit_code == 2


def test_a_master_key_of_the_keyring_is_refused_as_backup_key() -> None:
    keyring = Keyring.generate()
    own = BackupKey(base64.urlsafe_b64encode(keyring.master_key(1)))
    with pytest.raises(RefusedError, match="own master keys"):
        create_backup(keyring, own)


def test_backup_key_never_shows_in_repr_or_errors() -> None:
    text = Fernet.generate_key().decode()
    key = BackupKey(text)
    assert text not in repr(key) and text not in str(key)
    with pytest.raises(KeyConfigError) as info:
        BackupKey(text[:-8], source=BACKUP_KEY_ENV)
    assert text[:-8] not in str(info.value) and BACKUP_KEY_ENV in str(info.value)


def test_backup_key_comes_from_the_file_first_then_the_environment(tmp_path: Path) -> None:
    in_env, in_file = Fernet.generate_key(), Fernet.generate_key()
    key_file = tmp_path / "backup.key"
    key_file.write_bytes(in_file + b"\n")
    key_file.chmod(0o600)
    data = create_backup(Keyring.generate(), BackupKey(in_file))
    chosen = load_backup_key(key_file, environ={BACKUP_KEY_ENV: in_env.decode()})
    assert open_backup(data, chosen).keyring.current == 1
    from_env = load_backup_key(None, environ={BACKUP_KEY_ENV: in_file.decode()})
    assert open_backup(data, from_env).keyring.current == 1


def test_missing_backup_key_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match=BACKUP_KEY_ENV) as info:
        load_backup_key(None, environ={})
    assert "never written in plaintext" in str(info.value) and info.value.exit_code == 3
    with pytest.raises(KeyConfigError, match="does not exist"):
        load_backup_key(tmp_path / "absent.key", environ={})


def test_backup_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "backup.key"
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(0o644)
    with pytest.raises(KeyProviderError, match="chmod 600"):
        load_backup_key(key_file, environ={})


def test_new_backup_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "backup.key"
    key = write_new_backup_key(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert load_backup_key(key_file, environ={}).encoded() == key.encoded()
    with pytest.raises(RefusedError, match="already exists"):
        write_new_backup_key(key_file)
    assert load_backup_key(key_file, environ={}).encoded() == key.encoded()


def test_export_writes_a_private_file_and_audits_it_under_the_keyring_head(
    tmp_path: Path, key: BackupKey
) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    out = tmp_path / "keyring.backup"
    summary = export_backup(manager, out, key, reason="weekly")
    assert summary.current == 1
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    events = list(manager.audit.events())  # type: ignore[union-attr]
    assert [(e["action"], e["outcome"], e["reason"]) for e in events][-1] == (
        "keys.export",
        "ok",
        "weekly",
    )
    head = manager.load().audit_head
    assert head is not None and head.lines == len(events)
    assert verify_audit_log(tmp_path / "audit.jsonl", head).ok
    assert open_backup(out.read_bytes(), key).keyring.current == 1


def test_export_refuses_to_replace_a_file_unless_told(tmp_path: Path, key: BackupKey) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    out = tmp_path / "keyring.backup"
    out.write_text("precious")
    with pytest.raises(RefusedError, match="already exists"):
        export_backup(manager, out, key)
    assert out.read_text() == "precious"
    events = list(manager.audit.events())  # type: ignore[union-attr]
    assert (events[-1]["action"], events[-1]["outcome"]) == ("keys.export", "refused")
    export_backup(manager, out, key, overwrite=True)
    assert open_backup(out.read_bytes(), key).keyring.current == 1


def test_import_restores_a_lost_keyring_and_old_data_decrypts(
    tmp_path: Path, key: BackupKey
) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    manager.rotate()
    blob = get_cipher("customers.email", keyring=manager.load()).encrypt("alice@example.com")
    export_backup(manager, tmp_path / "b", key)
    (tmp_path / "keyring.json").unlink()
    report = import_backup(manager, tmp_path / "b", key)
    assert report.replaced is False and report.lost == ()
    restored = manager.load()
    assert get_cipher("customers.email", keyring=restored).decrypt(blob) == "alice@example.com"
    assert (tmp_path / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert restored.audit_head is not None
    assert verify_audit_log(tmp_path / "audit.jsonl", restored.audit_head).ok


def test_import_refuses_to_replace_a_keyring_and_names_versions_that_would_be_lost(
    tmp_path: Path, key: BackupKey
) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    export_backup(manager, tmp_path / "b", key)
    manager.rotate()
    before = (tmp_path / "keyring.json").read_bytes()
    with pytest.raises(RefusedError, match=r"version\(s\) 2") as info:
        import_backup(manager, tmp_path / "b", key)
    assert info.value.exit_code == 5
    assert (tmp_path / "keyring.json").read_bytes() == before
    events = list(manager.audit.events())  # type: ignore[union-attr]
    assert (events[-1]["action"], events[-1]["outcome"]) == ("keys.import", "refused")
    report = import_backup(manager, tmp_path / "b", key, force=True)
    assert report.replaced and report.lost == (2,)
    assert manager.load().current == 1
    last = list(manager.audit.events())[-1]  # type: ignore[union-attr]
    assert last["outcome"] == "ok" and last["lost_versions"] == [2]


def test_import_of_a_tampered_backup_is_audited_and_changes_nothing(
    tmp_path: Path, key: BackupKey
) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    export_backup(manager, tmp_path / "b", key)
    (tmp_path / "keyring.json").unlink()
    document = json.loads((tmp_path / "b").read_text())
    document["token"] = document["token"][:-10] + "AAAAAAAAAA"
    (tmp_path / "b").write_text(json.dumps(document))
    with pytest.raises(KeyConfigError):
        import_backup(manager, tmp_path / "b", key)
    assert not (tmp_path / "keyring.json").exists()
    events = list(manager.audit.events())  # type: ignore[union-attr]
    assert (events[-1]["action"], events[-1]["outcome"]) == ("keys.import", "failed")


def test_compare_finds_lost_changed_and_revived_versions() -> None:
    old = Keyring.generate().rotated()
    newer = old.rotated()
    assert compare_keyrings(newer, old).lost == (3,)
    assert compare_keyrings(old, newer).lost == ()
    other = Keyring.generate().rotated()
    assert compare_keyrings(old, other).lost == (1, 2)  # same numbers, different material
    destroyed_here = newer.destroyed(1)
    assert compare_keyrings(destroyed_here, newer).revived == (1,)
    assert compare_keyrings(destroyed_here, destroyed_here).revived == ()


def test_import_over_an_unreadable_keyring_needs_force(tmp_path: Path, key: BackupKey) -> None:
    manager = _manager(tmp_path)
    manager.generate()
    export_backup(manager, tmp_path / "b", key)
    (tmp_path / "keyring.json").write_text("{ corrupt")
    os.chmod(tmp_path / "keyring.json", 0o600)
    with pytest.raises(RefusedError):
        import_backup(manager, tmp_path / "b", key)
    assert import_backup(manager, tmp_path / "b", key, force=True).replaced
    assert manager.load().current == 1


def test_environment_keyring_exports_with_a_logged_event_but_cannot_be_imported_into(
    tmp_path: Path, key: BackupKey, caplog: pytest.LogCaptureFixture
) -> None:
    material = Keyring.generate().master_key(1)
    environ = {"ENCMIGRATE_MASTER_KEY": base64.b64encode(material).decode()}
    manager = KeyManager(EnvProvider(environ=environ), None, actor="env-test")
    with caplog.at_level("INFO", logger="encmigrate.audit"):
        export_backup(manager, tmp_path / "b", key)
    records = [getattr(r, "audit", {}) for r in caplog.records]
    assert [(r["action"], r["outcome"]) for r in records] == [("keys.export", "ok")]
    assert open_backup((tmp_path / "b").read_bytes(), key).keyring.master_key(1) == material
    with pytest.raises(KeyProviderError, match="--path"):
        import_backup(manager, tmp_path / "b", key, force=True)


def test_a_deeply_nested_backup_is_refused_in_one_line() -> None:
    key = BackupKey(Fernet.generate_key())
    with pytest.raises(ConfigError) as caught:
        open_backup(b"[" * 200_000 + b"]" * 200_000, key, source="backup b.json")
    assert str(caught.value) == "backup b.json is not an encmigrate keyring backup (not JSON)"
