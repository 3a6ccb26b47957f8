"""Fuzzing the audit-log verifier: a report (or AuditLogError), never a crash, never a miss.

Inputs: a real five-line keyed log and its seal, mutated as bytes and line by
line (one record's JSON changed), and random bytes. Checked against the
keyring that recorded its head, a log passes only if it still begins with
every recorded line unchanged: an edit anywhere in them is found. Reading the
events of a mutated log raises AuditLogError or yields records.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import strategies as st

from encmigrate import Keyring
from encmigrate.errors import AuditLogError
from encmigrate.keys import AuditEvent, AuditLog, verify_audit_log
from fuzz.harness import BUDGETS, Budget, fuzz
from fuzz.mutations import Shown, mutated_bytes, mutated_json, utf8


def _seed(directory: Path) -> tuple[AuditLog, Keyring]:
    log = AuditLog(directory / "seed.jsonl")
    keyring = Keyring.generate()
    start = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    for number, action in enumerate(["generate", "rotate", "retire", "export", "rotate"]):
        event = AuditEvent(action=action, version=number + 1, actor="fuzz", reason="é ✓")
        head = log.append(event, now=start + dt.timedelta(days=number), keyring=keyring)
    return log, keyring.with_audit_head(head)


def _logs(seed: bytes) -> st.SearchStrategy[bytes]:
    lines = seed.splitlines(keepends=True)

    def with_line(index: int) -> st.SearchStrategy[bytes]:
        record = json.loads(lines[index])
        return mutated_json(record).map(
            lambda text: Shown(
                b"".join([*lines[:index], utf8(text) + b"\n", *lines[index + 1 :]]),
                f"line {index + 1} = {text!r}",
            )
        )

    return st.one_of(mutated_bytes(seed), st.sampled_from(range(len(lines))).flatmap(with_line))


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_audit_logs_give_a_report_and_every_edit_is_found(
    budget: Budget, tmp_path: Path
) -> None:
    seed_log, keyring = _seed(tmp_path)
    assert verify_audit_log(seed_log.path, keyring).ok
    seed, seal = seed_log.path.read_bytes(), seed_log.seal_path.read_bytes()
    log = AuditLog(tmp_path / "audit.jsonl")
    log.seal_path.write_bytes(seal)

    def check(data: bytes) -> str:
        log.path.write_bytes(data)
        try:
            report = verify_audit_log(log.path, keyring)
            verify_audit_log(log.path, keyring.audit_head)
            verify_audit_log(log.path)
        except AuditLogError:
            return "AuditLogError"
        if report.ok:
            # Lines may follow the recorded ones (a newer operation); nothing else may change.
            assert data.startswith(seed[:-1]), data
        try:
            list(log.events())
        except AuditLogError:
            return f"{'accepted' if report.ok else 'problems reported'}, events: AuditLogError"
        return "accepted" if report.ok else "problems reported"

    fuzz("audit log (verify, events)", budget, _logs(seed), check, examples=200)


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_audit_seals_give_a_report(budget: Budget, tmp_path: Path) -> None:
    seed_log, keyring = _seed(tmp_path)
    seal = seed_log.seal_path.read_bytes()

    def check(data: bytes) -> str:
        seed_log.seal_path.write_bytes(data)
        try:
            report = verify_audit_log(seed_log.path, keyring)
        except AuditLogError:
            return "AuditLogError"
        return "accepted" if report.ok else "problems reported"

    fuzz("audit seal (verify)", budget, mutated_bytes(seal), check, examples=100)
