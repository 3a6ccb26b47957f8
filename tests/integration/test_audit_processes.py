"""Audit-log writers in several processes at once keep one unbroken chain.

Moved from tests/unit/test_audit.py (tests/unit starts no process): these fork writers.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from encmigrate.keys import AuditEvent, AuditLog, Keyring, verify_audit_log


def _append_many(path: str, count: int) -> None:
    log = AuditLog(path)
    for i in range(count):
        log.append(AuditEvent(action=f"w{i}", actor="proc"))


def test_concurrent_writers_never_fork_the_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, 40)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    report = verify_audit_log(path)
    assert report.ok, report.problems[:3]
    assert report.lines == 160


def _append_many_keyed(path: str, keyring_json: str, count: int) -> None:
    log, keyring = AuditLog(path), Keyring.from_json(keyring_json)
    for i in range(count):
        log.append(AuditEvent(action=f"w{i}", actor="proc"), keyring=keyring)


def test_concurrent_keyed_writers_keep_chain_macs_and_seal_consistent(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    path = str(tmp_path / "audit.jsonl")
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_append_many_keyed, args=(path, keyring.to_json(), 25)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    report = verify_audit_log(path, keyring)
    assert report.ok, report.problems[:3]
    assert report.lines == 100 and report.notes == ()
