"""Every way of tampering with the audit log makes `encmigrate keys audit --verify` exit 3.

The log under test is what a real deployment writes: key operations through the
CLI's manager (each one anchors the log's head in the keyring), then key *access*
lines written by applications after the last anchor. The one case that cannot be
detected by design (the log and its seal rolled back together to a copy taken after
the last anchor) is listed in docs/keys.md and pinned by a test here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.keys import AuditEvent, AuditLog, FileProvider, KeyManager, load_keyring
from encmigrate.keys.resolve import resolve_key_setup

runner = CliRunner()
ACCESS_LINES = 5  # after the 2 anchored key operations


@dataclass
class Project:
    root: Path
    log: Path
    seal: Path
    snapshot: bytes  # the log after the anchor and 2 access lines
    snapshot_seal: bytes

    def lines(self) -> list[bytes]:
        return self.log.read_bytes().splitlines(keepends=True)

    def write(self, lines: list[bytes]) -> None:
        self.log.write_bytes(b"".join(lines))

    def access(self) -> None:
        """An application loads the keyring: one key-access line, keyed, seal renewed."""
        load_keyring(resolve_key_setup(environ={}, cwd=self.root))


def _verify() -> tuple[int, str]:
    """Exit code, and the problems then the notes, one per line (JSON output: no wrapping)."""
    result = runner.invoke(app, ["--json", "keys", "audit", "--verify"])
    assert result.exit_code in (0, 3), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is (result.exit_code == 0)
    return result.exit_code, "\n".join([*report["problems"], *report["notes"]])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    (tmp_path / "encmigrate.toml").write_text('[keys]\nprovider = "file"\npath = "keyring.json"\n')
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENCMIGRATE_ACTOR", "operator")
    log = tmp_path / "encmigrate-audit.jsonl"
    manager = KeyManager(FileProvider(tmp_path / "keyring.json"), AuditLog(log))
    manager.generate()
    manager.rotate(reason="quarterly")
    found = Project(tmp_path, log, tmp_path / "encmigrate-audit.jsonl.seal", b"", b"")
    for _ in range(2):
        found.access()
    found.snapshot, found.snapshot_seal = log.read_bytes(), found.seal.read_bytes()
    for _ in range(ACCESS_LINES - 2):
        found.access()
    assert len(found.lines()) == 2 + ACCESS_LINES
    return found


def _hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _rechain(lines: list[bytes]) -> list[bytes]:
    """What a forger without the key can do: recompute every ``prev`` (MACs stay as they were)."""
    previous, out = "0" * 64, []
    for raw in lines:
        record = json.loads(raw)
        record["prev"] = previous
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        out.append(line)
        previous = _hash(line)
    return out


def _edit(line: bytes, pattern: str, replacement: str) -> bytes:
    edited = re.sub(pattern.encode(), replacement.encode(), line, count=1)
    assert edited != line
    return edited


def _forged_event(lines: list[bytes]) -> list[bytes]:
    record = {
        "time": "2030-01-01T00:00:00.000000Z",
        "actor": "operator",
        "action": "enable",
        "version": 1,
        "outcome": "ok",
        "reason": "",
        "prev": _hash(lines[-1]),
    }
    return [*lines, json.dumps(record, separators=(",", ":")).encode() + b"\n"]


Tamper = Callable[[Project], object]


def _on_lines(change: Callable[[list[bytes]], list[bytes]]) -> Tamper:
    return lambda p: p.write(change(p.lines()))


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[3], lines[4] = lines[4], lines[3]
    return lines


CASES: dict[str, tuple[Tamper, str]] = {
    "delete the first line": (_on_lines(lambda ls: ls[1:]), "line 1: chain broken"),
    "delete a middle line": (_on_lines(lambda ls: ls[:3] + ls[4:]), "line 4: chain broken"),
    "delete the last line": (_on_lines(lambda ls: ls[:-1]), "the newest lines were removed"),
    "delete the last N access lines": (
        _on_lines(lambda ls: ls[:-3]),
        "the newest lines were removed",
    ),
    "truncate the file mid-line": (
        lambda p: p.log.write_bytes(p.log.read_bytes()[:-40]),
        "incomplete (no line end)",
    ),
    "swap two lines": (_on_lines(_swap), "line 4: chain broken"),
    "duplicate a line": (_on_lines(lambda ls: ls[:4] + ls[3:]), "line 5: chain broken"),
    "edit a field (actor)": (
        _on_lines(
            lambda ls: [*ls[:5], _edit(ls[5], '"actor":"operator"', '"actor":"nobody"'), ls[6]]
        ),
        "line 6: MAC does not verify",
    ),
    "edit a timestamp": (
        _on_lines(lambda ls: [*ls[:6], _edit(ls[6], r'"time":"\d{4}', '"time":"2001')]),
        "line 7: MAC does not verify",
    ),
    "edit an event kind": (
        _on_lines(
            lambda ls: [ls[0], _edit(ls[1], '"action":"rotate"', '"action":"status"'), *ls[2:]]
        ),
        "line 2: differs from the line the keyring recorded",
    ),
    "delete a line and recompute the chain": (
        _on_lines(lambda ls: _rechain(ls[:4] + ls[5:])),
        "line 5: MAC does not verify",
    ),
    "rewrite all actors and recompute the chain": (
        _on_lines(lambda ls: _rechain([_edit(x, '"actor":"[^"]*"', '"actor":"x"') for x in ls])),
        "line 2: differs from the line the keyring recorded",
    ),
    "append a forged event with a recomputed chain": (
        _on_lines(_forged_event),
        "line 8: not keyed (no MAC)",
    ),
    "append a garbage line": (_on_lines(lambda ls: [*ls, b"garbage\n"]), "line 8: not an audit"),
    "replace the file with an empty one": (
        lambda p: p.log.write_bytes(b""),
        "the log has 0 lines but the keyring recorded 2",
    ),
    "replace the file with an older copy (rollback)": (
        lambda p: p.log.write_bytes(p.snapshot),
        "the log has 4 lines but its seal recorded 7",
    ),
    "insert a blank line": (
        _on_lines(lambda ls: [*ls[:4], b"\n", *ls[4:]]),
        "line 5: not an audit",
    ),
    "insert a non-JSON line": (
        _on_lines(lambda ls: [*ls[:4], b"{not json\n", *ls[4:]]),
        "line 5: not an audit",
    ),
}


def test_the_untouched_log_verifies(project: Project) -> None:
    result = runner.invoke(app, ["keys", "audit", "--verify"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    assert "7 lines, chain intact" in result.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_makes_verify_exit_3(project: Project, case: str) -> None:
    tamper, problem = CASES[case]
    tamper(project)
    code, out = _verify()
    assert code == 3, out
    assert problem in out


def test_cutting_lines_stays_visible_after_later_appends(project: Project) -> None:
    project.write(project.lines()[:-3])
    project.access()  # the next writer renews the seal: its line keeps the old seal's count
    code, out = _verify()
    assert code == 3
    assert "line 5: written after lines were cut off the log" in out


def test_a_removed_seal_is_detected(project: Project) -> None:
    project.write(project.lines()[:-1])
    project.seal.unlink()
    code, out = _verify()
    assert code == 3 and "seal file" in out and "is missing" in out


def test_a_forged_seal_is_detected(project: Project) -> None:
    lines = project.lines()[:-2]
    project.write(lines)
    document = json.loads(project.seal.read_text())
    document.update(lines=len(lines), sha256=_hash(lines[-1]))
    project.seal.write_text(json.dumps(document))
    code, out = _verify()
    assert code == 3 and "the seal file does not verify" in out


def test_rollback_of_log_and_seal_together_after_the_anchor_is_not_detected(
    project: Project,
) -> None:
    """The documented limit (docs/keys.md): only an anchor covers what a copy can roll back."""
    project.log.write_bytes(project.snapshot)
    project.seal.write_bytes(project.snapshot_seal)
    assert _verify()[0] == 0


def test_a_checkpoint_anchors_the_log_so_even_that_rollback_is_detected(
    project: Project,
) -> None:
    result = runner.invoke(app, ["keys", "audit", "--checkpoint"])
    assert result.exit_code == 0, result.stderr
    project.log.write_bytes(project.snapshot)
    project.seal.write_bytes(project.snapshot_seal)
    code, out = _verify()
    assert code == 3 and "the keyring recorded 8" in out


def test_a_checkpoint_refuses_to_anchor_a_damaged_log(project: Project) -> None:
    project.write(project.lines()[:-1])
    result = runner.invoke(app, ["keys", "audit", "--checkpoint"])
    assert result.exit_code == 5
    assert "does not verify" in result.stderr and "Traceback" not in result.stderr
    assert FileProvider(project.root / "keyring.json").load().audit_head.lines == 2  # type: ignore[union-attr]


def test_a_corrupt_log_is_one_line_and_exit_3_when_listed(project: Project) -> None:
    project.write([*project.lines(), b"\x00\xffnot json\n"])
    result = runner.invoke(app, ["keys", "audit"])
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0
    assert "line 8 is not an audit record" in result.stderr and "Traceback" not in result.stderr


def test_an_old_unkeyed_log_still_verifies_and_the_next_key_operation_keys_it(
    project: Project,
) -> None:
    """Upgrade path: a log and keyring written before lines were keyed."""
    for path in project.root.glob("encmigrate-audit.jsonl*"):
        path.unlink()
    old = AuditLog(project.log)
    for action in ("generate", "rotate", "keyring.load"):
        head = old.append(AuditEvent(action, actor="operator"))  # no keyring: unkeyed
    provider = FileProvider(project.root / "keyring.json")
    anchor = head.model_copy(
        update={"keyed": None, "lines": 2, "sha256": _hash(project.lines()[1])}
    )
    provider.save(provider.load().with_audit_head(anchor))
    code, out = _verify()
    assert code == 0, out
    assert "not keyed" in out  # noted, not failed
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 0  # anchors a keyed head
    project.write(_forged_event(project.lines()))
    code, out = _verify()
    assert code == 3 and "line 5: not keyed (no MAC)" in out
