"""The audit log's hash chain detects every kind of edit."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from encmigrate.keys import AuditEvent, AuditLog, Keyring, verify_audit_log
from encmigrate.keys.audit import GENESIS


def _log(tmp_path: Path, lines: int = 5) -> tuple[AuditLog, object]:
    log = AuditLog(tmp_path / "audit.jsonl")
    head = None
    for i in range(lines):
        head = log.append(AuditEvent(action=f"op{i}", version=i + 1, actor="tester"))
    return log, head


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def test_intact_log_verifies_and_head_matches(tmp_path: Path) -> None:
    log, head = _log(tmp_path)
    report = verify_audit_log(log.path, head)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert report.lines == 5
    assert log.head() == head


def test_each_line_records_who_what_when_and_links_to_the_previous(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 2)
    first, second = (json.loads(line) for line in _lines(log))
    assert first["prev"] == GENESIS
    assert second["prev"] != GENESIS
    assert {"time", "actor", "action", "version", "outcome", "reason"} <= set(first)
    assert first["actor"] == "tester" and first["time"].endswith("Z")


def test_edited_line_is_detected(tmp_path: Path) -> None:
    log, head = _log(tmp_path)
    lines = _lines(log)
    lines[1] = lines[1].replace('"op1"', '"op9"')
    log.path.write_text("".join(lines))
    report = verify_audit_log(log.path, head)  # type: ignore[arg-type]
    assert not report.ok
    assert any(p.startswith("line 3: chain broken") for p in report.problems)


def test_edit_of_the_newest_line_is_caught_by_the_recorded_head(tmp_path: Path) -> None:
    log, head = _log(tmp_path)
    lines = _lines(log)
    lines[-1] = lines[-1].replace('"op4"', '"op0"')
    log.path.write_text("".join(lines))
    assert verify_audit_log(log.path).ok  # the chain alone cannot see it
    report = verify_audit_log(log.path, head)  # type: ignore[arg-type]
    assert any("differs from the line the keyring recorded" in p for p in report.problems)


@pytest.mark.parametrize("mutation", ["insert", "delete", "reorder"])
def test_inserted_deleted_or_reordered_lines_are_detected(tmp_path: Path, mutation: str) -> None:
    log, head = _log(tmp_path)
    lines = _lines(log)
    if mutation == "insert":
        lines.insert(2, lines[1])
    elif mutation == "delete":
        del lines[2]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    log.path.write_text("".join(lines))
    assert not verify_audit_log(log.path, head).ok  # type: ignore[arg-type]


def test_removing_the_newest_lines_is_detected_against_the_head(tmp_path: Path) -> None:
    log, head = _log(tmp_path)
    log.path.write_text("".join(_lines(log)[:3]))
    assert verify_audit_log(log.path).ok
    report = verify_audit_log(log.path, head)  # type: ignore[arg-type]
    assert any("newest lines were removed" in p for p in report.problems)


def test_lines_after_the_recorded_head_are_fine(tmp_path: Path) -> None:
    log, head = _log(tmp_path)
    log.append(AuditEvent(action="keyring.load", actor="app"))
    assert verify_audit_log(log.path, head).ok  # type: ignore[arg-type]


def test_garbage_line_is_reported(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 2)
    with log.path.open("a") as handle:
        handle.write("not json\n")
    assert "line 3: not an audit record" in verify_audit_log(log.path).problems


def test_log_file_is_private(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 1)
    assert log.path.stat().st_mode & 0o077 == 0


def test_a_keyed_line_ends_with_its_mac_over_the_rest_of_the_line(tmp_path: Path) -> None:
    keyring = Keyring.generate().rotated()
    log = AuditLog(tmp_path / "audit.jsonl")
    head = log.append(AuditEvent("rotate", version=2, actor="t"), keyring=keyring)
    raw = log.path.read_bytes()
    record = json.loads(raw)
    assert list(record)[-3:] == ["prev", "seal", "mac"] and record["seal"] is None
    assert record["mac"].startswith("2:")
    body = raw.rstrip(b"\n").rsplit(b',"mac":', 1)[0] + b"}"
    key = keyring.audit_key(2)
    assert key is not None
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    assert record["mac"] == f"2:{expected}"
    assert head.keyed is True and log.head() == head
    assert log.seal_path.stat().st_mode & 0o077 == 0


def test_a_keyed_log_verified_with_another_keyring_fails(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        log.append(AuditEvent(f"op{i}", actor="t"), keyring=Keyring.generate())
    report = verify_audit_log(log.path, Keyring.generate())
    assert not report.ok
    assert any("MAC does not verify" in p for p in report.problems)


def test_extra_fields_may_not_shadow_the_chain_or_the_mac() -> None:
    with pytest.raises(ValueError, match="mac"):
        AuditEvent("keyring.load", extra={"mac": "1:00"})
