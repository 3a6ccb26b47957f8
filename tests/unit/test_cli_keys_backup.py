"""`encmigrate keys export|import|emergency-rotate`, in-process and as a real process."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from encmigrate import get_cipher
from encmigrate.errors import DecryptionError
from encmigrate.keys import FileProvider
from support.key_cli import (
    assert_no_secrets,
    key_project,
    keyring_of,
    run,
    secret_forms,
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plan whose [keys] point at keyring.json beside it, with a keyring and a backup key."""
    return key_project(tmp_path, monkeypatch)


def _events(project: Path) -> list[dict[str, object]]:
    lines = (project / "encmigrate-audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_export_without_a_backup_key_refuses_and_writes_nothing(project: Path) -> None:
    code, _, err = run("keys", "export", "--out", "keyring.backup")
    assert code == 3
    assert "ENCMIGRATE_BACKUP_KEY" in err and "--backup-key-file" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (project / "keyring.backup").exists()


def test_generate_backup_key_needs_a_file_and_never_prints_the_key(project: Path) -> None:
    code, _, err = run("keys", "export", "--out", "b", "--generate-backup-key")
    assert code == 2 and "--backup-key-file" in err
    code, out, _ = run(
        "--json",
        "keys",
        "export",
        "--out",
        "b",
        "--generate-backup-key",
        "--backup-key-file",
        "backup.key",
    )
    assert code == 0
    report = json.loads(out)
    assert report["backup_key_generated"] is True and report["current"] == 1
    key_text = (project / "backup.key").read_text().strip()
    assert (project / "backup.key").stat().st_mode & 0o777 == 0o600
    assert (project / "b").stat().st_mode & 0o777 == 0o600
    assert_no_secrets(
        secret_forms(keyring_of(project), extra=(base64.urlsafe_b64decode(key_text),))
    )


def test_backup_round_trip_recovers_a_destroyed_keyring_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_key = Fernet.generate_key()
    monkeypatch.setenv("ENCMIGRATE_BACKUP_KEY", backup_key.decode())
    under_v1 = get_cipher("customers.email", keyring=keyring_of(project)).encrypt("ann@x.org")
    run("keys", "rotate")
    before = keyring_of(project)
    under_v2 = get_cipher("customers.email", keyring=before).encrypt("ben@x.org")
    assert run("keys", "export", "--out", "keyring.backup")[0] == 0
    (project / "keyring.json").unlink()
    assert run("keys", "status")[0] == 3  # the keyring is gone
    code, out, err = run("--json", "keys", "import", "keyring.backup")
    assert code == 0, err
    report = json.loads(out)
    assert report["replaced"] is False and report["current"] == 2
    after = keyring_of(project)
    cipher = get_cipher("customers.email", keyring=after)
    assert cipher.decrypt(under_v1) == "ann@x.org"
    assert cipher.decrypt(under_v2) == "ben@x.org"
    code, out, _ = run("keys", "audit", "--verify")
    assert code == 0 and "chain intact" in out
    key_events = [e for e in _events(project) if str(e["action"]).startswith("keys.")]
    assert [e["action"] for e in key_events] == ["keys.export", "keys.import"]
    assert {e["actor"] for e in key_events} == {"backup-cli-test"}
    assert_no_secrets(secret_forms(before, extra=(base64.urlsafe_b64decode(backup_key),)))


def test_tampered_backup_and_wrong_backup_key_are_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCMIGRATE_BACKUP_KEY", Fernet.generate_key().decode())
    assert run("keys", "export", "--out", "b")[0] == 0
    (project / "keyring.json").unlink()
    document = json.loads((project / "b").read_text())
    (project / "tampered").write_text(
        json.dumps({**document, "token": document["token"][:-12] + "A" * 12})
    )
    code, _, err = run("keys", "import", "tampered")
    assert code == 3 and "does not authenticate" in err and "Traceback" not in err
    monkeypatch.setenv("ENCMIGRATE_BACKUP_KEY", Fernet.generate_key().decode())
    code, _, err = run("keys", "import", "b")
    assert code == 3 and "another backup key" in err
    assert not (project / "keyring.json").exists()
    code, _, err = run("keys", "import", "encmigrate.toml")
    assert code == 2 and "not an encmigrate keyring backup" in err


def test_import_over_an_existing_keyring_needs_force_and_reports_lost_versions(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCMIGRATE_BACKUP_KEY", Fernet.generate_key().decode())
    assert run("keys", "export", "--out", "b")[0] == 0
    run("keys", "rotate")
    code, _, err = run("keys", "import", "b")
    assert code == 5 and "version(s) 2" in err and "--force" in err
    assert keyring_of(project).current == 2
    code, out, _ = run("--json", "keys", "import", "b", "--force", "--reason", "drill")
    assert code == 0
    assert json.loads(out)["lost_versions"] == [2]
    assert keyring_of(project).current == 1
    last = _events(project)[-1]
    assert (last["action"], last["reason"], last["lost_versions"]) == ("keys.import", "drill", [2])


def test_import_into_a_fresh_path_without_a_plan(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key_file = project / "backup.key"
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(0o600)
    assert run("keys", "export", "--out", "b", "--backup-key-file", str(key_file))[0] == 0
    elsewhere = tmp_path_factory.mktemp("fresh")
    target = elsewhere / "keyring.json"
    code, _, err = run(
        "keys",
        "import",
        str(project / "b"),
        "--backup-key-file",
        str(key_file),
        "--path",
        str(target),
    )
    assert code == 0, err
    assert FileProvider(target).load().get(1).key == keyring_of(project).get(1).key
    assert (elsewhere / "encmigrate-audit.jsonl").exists()


def test_emergency_rotate_keeps_the_old_version_readable_until_rewrap(project: Path) -> None:
    before = keyring_of(project)
    blob = get_cipher("customers.email", keyring=before).encrypt("bob@example.com")
    code, out, _ = run("--json", "keys", "emergency-rotate", "--reason", "key in a CI log")
    assert code == 0
    report = json.loads(out)
    assert (report["current"], report["old_version"], report["old_state"]) == (2, 1, "retired")
    assert report["follow_up"][0].startswith("encmigrate rewrap")
    assert any(step.startswith("encmigrate keys disable 1") for step in report["follow_up"])
    after = keyring_of(project)
    assert get_cipher("customers.email", keyring=after).decrypt(blob) == "bob@example.com"
    events = _events(project)
    emergency = next(e for e in events if e["action"] == "emergency-rotate")
    assert emergency["reason"] == "key in a CI log" and emergency["version"] == 1
    assert "after `encmigrate rewrap`" in str(emergency["follow_up"])
    rotate = events[-1]
    assert (rotate["action"], rotate["reason"]) == ("rotate", "emergency: key in a CI log")
    code, out, _ = run("keys", "audit", "--verify")
    assert code == 0, out  # the keyring's audit head covers the emergency line
    code, out, _ = run("keys", "emergency-rotate", "--reason", "again")
    assert code == 0 and "encmigrate rewrap" in out and "keys destroy 2" in out
    assert_no_secrets(secret_forms(after, keyring_of(project)))


def test_emergency_rotate_with_disable_now_stops_reads_at_once(project: Path) -> None:
    blob = get_cipher("customers.email", keyring=keyring_of(project)).encrypt("eve@example.com")
    code, out, _ = run("keys", "emergency-rotate", "--reason", "laptop stolen", "--disable-now")
    assert code == 0 and "disabled" in out
    keyring = keyring_of(project)
    assert keyring.get(1).state.value == "disabled" and keyring.current == 2
    with pytest.raises(DecryptionError):
        get_cipher("customers.email", keyring=keyring).decrypt(blob)
    disable = _events(project)[-1]
    assert (disable["action"], disable["version"], disable["reason"]) == (
        "disable",
        1,
        "emergency: laptop stolen",
    )


def test_emergency_rotate_needs_a_reason(project: Path) -> None:
    code, _, err = run("keys", "emergency-rotate")
    assert code == 2
    code, _, err = run("keys", "emergency-rotate", "--reason", "  ")
    assert code == 2 and "--reason" in err and "Traceback" not in err
    assert keyring_of(project).current == 1
