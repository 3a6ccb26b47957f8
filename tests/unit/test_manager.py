"""KeyManager: each operation changes the keyring as promised and is audited."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from encmigrate import (
    ConfigError,
    DecryptionError,
    KeyProviderError,
    KeyStateError,
    RefusedError,
    get_cipher,
)
from encmigrate.keys import (
    AuditEvent,
    AuditLog,
    FileProvider,
    KeyManager,
    Keyring,
    KeyState,
    verify_audit_log,
)


@pytest.fixture
def manager(tmp_path: Path) -> KeyManager:
    m = KeyManager(
        FileProvider(tmp_path / "keyring.json"), AuditLog(tmp_path / "audit.jsonl"), actor="alice"
    )
    m.generate()
    return m


def _events(manager: KeyManager) -> list[dict[str, object]]:
    assert manager.audit is not None
    return list(manager.audit.events())


def test_generate_writes_a_private_keyring_and_refuses_to_overwrite(manager: KeyManager) -> None:
    assert isinstance(manager.provider, FileProvider)
    assert manager.provider.path.stat().st_mode & 0o777 == 0o600
    assert manager.get_current_key_version() == 1
    with pytest.raises(RefusedError, match="already holds a keyring"):
        manager.generate()
    assert _events(manager)[-1]["outcome"] == "refused"


def test_rotate_adds_a_version_and_old_data_stays_readable(manager: KeyManager) -> None:
    blob = get_cipher("c.x", keyring=manager.load()).encrypt("value")
    assert manager.rotate_keys() == 2
    keyring = manager.load()
    assert keyring.current == 2
    assert keyring.get(1).state is KeyState.RETIRED
    assert get_cipher("c.x", keyring=keyring).decrypt(blob) == "value"


def test_disable_enable_destroy_through_the_manager(manager: KeyManager) -> None:
    blob = get_cipher("c.x", keyring=manager.load()).encrypt("value")
    manager.rotate()
    manager.disable(1, reason="suspected leak")
    with pytest.raises(DecryptionError):
        get_cipher("c.x", keyring=manager.load()).decrypt(blob)
    manager.enable(1)
    assert get_cipher("c.x", keyring=manager.load()).decrypt(blob) == "value"
    with pytest.raises(RefusedError, match="confirm"):
        manager.destroy(1)
    assert manager.load().get(1).key is not None
    manager.destroy(1, confirm=True, reason="rewrap done", in_use=lambda version: {})
    with pytest.raises(DecryptionError):
        get_cipher("c.x", keyring=manager.load()).decrypt(blob)
    with pytest.raises(KeyStateError):
        manager.enable(1)


def test_destroy_erases_material_from_the_file(manager: KeyManager, tmp_path: Path) -> None:
    manager.rotate()
    old = base64.b64encode(manager.load().master_key(1)).decode()
    manager.destroy(1, confirm=True, force=True)
    text = (tmp_path / "keyring.json").read_text()
    assert old not in text
    assert json.loads(text)["versions"][0]["key"] is None
    assert not (tmp_path / "keyring.json.shred").exists()


def test_destroy_refuses_a_version_still_protecting_values_without_the_cli(
    manager: KeyManager,
) -> None:
    manager.rotate()
    counted: list[int] = []

    def in_use(version: int) -> dict[str, int]:
        counted.append(version)
        return {"customers.email": 1200, "customers.phone": 0}

    with pytest.raises(RefusedError, match=r"still protects values \(customers\.email: 1,200\)"):
        manager.destroy(1, confirm=True, in_use=in_use)
    with pytest.raises(RefusedError, match="nothing counted the values"):
        manager.destroy(1, confirm=True)  # no count given: refused too, never skipped
    assert counted == [1]
    assert manager.load().get(1).key is not None
    assert [e["outcome"] for e in _events(manager)[-2:]] == ["refused", "refused"]
    assert RefusedError("x").exit_code == 5
    manager.destroy(1, confirm=True, in_use=in_use, force=True)  # the CLI's --force
    assert manager.load().get(1).state is KeyState.DESTROYED
    assert counted == [1]  # force does not count


def test_destroy_goes_ahead_once_nothing_is_under_the_version(manager: KeyManager) -> None:
    manager.rotate()
    manager.destroy(1, confirm=True, in_use=lambda version: {"customers.email": 0})
    assert manager.load().get(1).state is KeyState.DESTROYED


def test_rotate_if_due_reads_the_schedule_and_rotates_under_one_lock(tmp_path: Path) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    provider = LockCountingProvider(tmp_path / "keyring.json")
    KeyManager(provider, clock=lambda: created).generate(rotation_days=30)
    early = KeyManager(provider, clock=lambda: created + dt.timedelta(days=29))
    provider.locks = 0
    result = early.rotate_if_due()
    assert (result.rotated, result.status.current, result.status.days_until_rotation) == (
        False,
        1,
        1,
    )
    provider.unlocked_loads = 0  # generate checked for an existing keyring first
    late = KeyManager(provider, clock=lambda: created + dt.timedelta(days=30))
    result = late.rotate_if_due()
    assert (result.rotated, result.status.current) == (True, 2)
    assert result.status.days_until_rotation == 30  # the keyring's schedule, not a default 90
    assert provider.locks == 2  # one hold each, the schedule read inside it
    assert provider.unlocked_loads == 0
    assert early.rotate_if_due(force=True, reason="incident").rotated
    assert provider.load().current == 3


def test_emergency_rotate_records_the_incident_then_rotates_and_disables(
    manager: KeyManager,
) -> None:
    done = manager.emergency_rotate("key in a CI log", disable_now=True)
    assert (done.old_version, done.new_version, done.disabled) == (1, 2, True)
    assert manager.load().get(1).state is KeyState.DISABLED
    events = _events(manager)[-3:]
    assert [(e["action"], e["version"]) for e in events] == [
        ("emergency-rotate", 1),
        ("rotate", 2),
        ("disable", 1),
    ]
    assert events[0]["follow_up"] == "disable now: version 1"
    assert manager.audit is not None
    assert verify_audit_log(manager.audit.path, manager.load().audit_head).ok
    with pytest.raises(ConfigError, match="needs a reason"):
        manager.emergency_rotate("  ")
    assert manager.load().current == 2


def test_every_operation_is_audited_with_actor_and_the_chain_verifies(manager: KeyManager) -> None:
    manager.rotate(reason="quarterly")
    manager.retire(1)
    manager.disable(1)
    manager.enable(1)
    with pytest.raises(RefusedError):
        manager.destroy(1)
    events = _events(manager)
    assert [e["action"] for e in events] == [
        "generate",
        "rotate",
        "retire",
        "disable",
        "enable",
        "destroy",
    ]
    assert [e["outcome"] for e in events][-1] == "refused"
    assert all(e["actor"] == "alice" for e in events)
    assert events[1]["reason"] == "quarterly"
    assert manager.audit is not None
    assert verify_audit_log(manager.audit.path, manager.load().audit_head).ok


def test_keyring_records_the_audit_head_at_each_operation(manager: KeyManager) -> None:
    manager.rotate()
    assert manager.audit is not None
    assert manager.load().audit_head == manager.audit.head()


def test_no_key_material_in_the_audit_log(manager: KeyManager) -> None:
    manager.rotate()
    keyring = manager.load()
    assert manager.audit is not None
    log = manager.audit.path.read_text()
    for version in (1, 2):
        material = keyring.master_key(version)
        assert base64.b64encode(material).decode() not in log
        assert material.hex() not in log


def test_status_reports_ages_and_rotation_schedule(tmp_path: Path) -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    m = KeyManager(FileProvider(tmp_path / "k.json"), None, clock=lambda: now[0])
    m.generate(rotation_days=30)
    now[0] += dt.timedelta(days=10)
    status = m.status()
    assert status.current == 1 and status.days_until_rotation == 20
    assert status.versions[0].age_days == 10
    assert not m.rotation_due()
    now[0] += dt.timedelta(days=25)
    assert m.rotation_due()
    m.rotate()
    assert not m.rotation_due()


def test_operation_on_unknown_version_is_refused_and_audited(manager: KeyManager) -> None:
    with pytest.raises(KeyStateError, match="not in the keyring"):
        manager.disable(7)
    assert _events(manager)[-1]["outcome"] == "refused"


def test_failed_save_leaves_the_previous_keyring_and_is_audited(
    manager: KeyManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (tmp_path / "keyring.json").read_text()

    def broken_replace(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyProviderError, match="cannot write keyring"):
        manager.rotate()
    monkeypatch.undo()
    assert (tmp_path / "keyring.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.seal",
        "keyring.json",
        "keyring.json.lock",
    ]
    assert _events(manager)[-1]["outcome"] == "failed"


class LockCountingProvider(FileProvider):
    """A file provider that counts holds of its lock and loads made outside one."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.locks = 0
        self.held = False
        self.unlocked_loads = 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with super().lock():
            self.locks += 1
            self.held = True
            try:
                yield
            finally:
                self.held = False

    def load(self) -> Keyring:
        self.unlocked_loads += not self.held
        return super().load()


class CachingProvider(FileProvider):
    """A file provider that serves what it saved, like the Vault and AWS providers' TTL cache."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.cached: Keyring | None = None

    def load(self) -> Keyring:
        if self.cached is None:
            self.cached = super().load()
        return self.cached

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        super().save(keyring, erase_previous=erase_previous)
        self.cached = keyring


def test_destroy_wipes_only_the_destroyed_version_so_a_cached_keyring_keeps_working(
    tmp_path: Path,
) -> None:
    provider = CachingProvider(tmp_path / "keyring.json")
    manager = KeyManager(provider, AuditLog(tmp_path / "audit.jsonl"))
    manager.generate()
    manager.rotate()
    held = provider.load()  # what an application got before the destroy
    blob = get_cipher("c.x", keyring=held).encrypt("value")
    manager.destroy(1, confirm=True, force=True)
    assert get_cipher("c.x", keyring=provider.load()).decrypt(blob) == "value"
    assert len(held.master_key(2)) == 32
    with pytest.raises(KeyStateError, match="wiped"):
        held.master_key(1)  # the destroyed version's material is gone from memory


@pytest.mark.parametrize("operation", ["rotate", "disable", "destroy"])
def test_every_save_zeroes_the_replaced_keyring_which_hard_links_see(
    manager: KeyManager, tmp_path: Path, operation: str
) -> None:
    manager.rotate()
    path = tmp_path / "keyring.json"
    link = tmp_path / "hard-link.json"
    os.link(path, link)
    before = path.read_bytes()
    old_key = base64.b64encode(manager.load().master_key(1))
    if operation == "destroy":
        manager.destroy(1, confirm=True, force=True)
    else:
        getattr(manager, operation)(*(() if operation == "rotate" else (1,)))
    kept = link.read_bytes()
    assert len(kept) == len(before) and set(kept) == {0}
    assert old_key not in kept and path.read_bytes() != before
    assert not (tmp_path / "keyring.json.shred").exists()
    assert manager.load().current >= 2  # the new keyring is intact


def test_a_keyring_without_hard_link_support_is_still_zeroed(
    manager: KeyManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keyring.json"
    handle = path.open("rb")  # sees the old inode, as a hard link would

    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    manager.rotate()
    monkeypatch.undo()
    kept = handle.read()
    handle.close()
    assert kept and set(kept) == {0}
    assert manager.load().current == 2


def test_checkpoint_anchors_the_head_and_is_audited(manager: KeyManager) -> None:
    assert manager.audit is not None
    manager.audit.append(AuditEvent("keyring.load"), keyring=manager.load())
    keyring = manager.checkpoint(reason="daily")
    assert keyring.audit_head == manager.audit.head()
    assert keyring.audit_head is not None and keyring.audit_head.lines == 3
    assert _events(manager)[-1]["action"] == "audit.checkpoint"
