"""The append-only, hash-chained audit log of key operations and key access.

Each line is one JSON object::

    {"time": "2026-11-29T10:00:00.123456Z", "actor": "alice", "action": "rotate",
     "version": 3, "outcome": "ok", "reason": "", "prev": "<sha256 hex of the previous line>"}

``prev`` of the first line is 64 zeros. Editing, inserting, deleting or
reordering a line breaks the chain at the next line. Removing the newest
lines is caught against the head (hash and line count) that the keyring
records at every key operation. Key material never enters the log.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encmigrate.errors import AuditLogError
from encmigrate.keys.keyring import AuditHead

__all__ = ["GENESIS", "AuditEvent", "AuditLog", "AuditReport", "current_actor", "verify_audit_log"]

GENESIS = "0" * 64
logger = logging.getLogger("encmigrate.audit")


def current_actor() -> str:
    """The OS user running this process (``ENCMIGRATE_ACTOR`` overrides)."""
    explicit = os.environ.get("ENCMIGRATE_ACTOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One key operation or key access, as written to the log."""

    action: str
    outcome: str = "ok"
    version: int | None = None
    reason: str = ""
    actor: str = field(default_factory=current_actor)
    extra: dict[str, Any] = field(default_factory=dict)


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """Appends events to a JSON-lines file under an exclusive lock.

    The lock (``flock`` on the log itself) makes read-last-hash-then-append
    atomic across processes, so two writers never fork the chain.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def append(self, event: AuditEvent, *, now: dt.datetime | None = None) -> AuditHead:
        """Write ``event``; returns the new head (hash of the new line, line count)."""
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        record: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": event.actor,
            "action": event.action,
            "version": event.version,
            "outcome": event.outcome,
            "reason": event.reason,
        }
        record.update(event.extra)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise AuditLogError(f"cannot open audit log {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            previous, count = _tail(fd)
            record["prev"] = previous
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            os.write(fd, line)
            os.fsync(fd)
        except OSError as exc:
            raise AuditLogError(f"cannot write audit log {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        logger.info("key audit event", extra={"audit": record})
        return AuditHead(sha256=_line_hash(line), lines=count + 1)

    def head(self) -> AuditHead:
        """Hash and count of the log as it stands (genesis for a missing log)."""
        if not self.path.exists():
            return AuditHead(sha256=GENESIS, lines=0)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            previous, count = _tail(fd)
        finally:
            os.close(fd)
        return AuditHead(sha256=previous, lines=count)

    def events(self) -> Iterator[dict[str, Any]]:
        """The events in order (no verification: see :func:`verify_audit_log`)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for raw in handle:
                yield json.loads(raw)


def _tail(fd: int) -> tuple[str, int]:
    """Hash of the last line and the number of lines, reading the file once."""
    os.lseek(fd, 0, os.SEEK_SET)
    previous, count = GENESIS, 0
    with os.fdopen(os.dup(fd), "rb") as handle:
        for raw in handle:
            previous, count = _line_hash(raw), count + 1
    return previous, count


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`verify_audit_log` found."""

    path: Path
    lines: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_audit_log(
    path: str | os.PathLike[str], expected_head: AuditHead | None = None
) -> AuditReport:
    """Check the hash chain of the log at ``path``.

    With ``expected_head`` (the keyring's ``audit_head``) it also checks that
    the line recorded at the last key operation is still there, unchanged, at
    its position: removing the newest lines is detected as well.
    """
    log_path = Path(path)
    problems: list[str] = []
    previous, count = GENESIS, 0
    hash_at_head: str | None = None
    recorded = expected_head.lines if expected_head is not None else 0
    if log_path.exists():
        with log_path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                problem = _chain_problem(raw, previous)
                if problem:
                    problems.append(f"line {number}: {problem}")
                previous, count = _line_hash(raw), number
                if number == recorded:
                    hash_at_head = previous
    if expected_head is not None and recorded:
        if count < recorded:
            problems.append(
                f"the log has {count} lines but the keyring recorded {recorded} at the last key "
                "operation: the newest lines were removed"
            )
        elif hash_at_head != expected_head.sha256:
            problems.append(
                f"line {recorded}: differs from the line the keyring recorded at the last key "
                "operation"
            )
    return AuditReport(log_path, count, tuple(problems))


def _chain_problem(raw: bytes, previous: str) -> str | None:
    try:
        claimed = json.loads(raw)["prev"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return "not an audit record"
    if claimed != previous:
        return "chain broken (a line before it was edited, inserted, removed or reordered)"
    return None
