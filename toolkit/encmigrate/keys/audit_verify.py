"""Checking the audit log: chain, MACs, the seal, and the anchor the keyring recorded.

What proves what (docs/keys.md, "The audit log", lists the cases):

* Lines up to the *anchor* (the head the keyring recorded at its last key
  operation) are proved by the anchor: the hash chain ties every one of them
  to the anchored line, and the keyring is written only by key operations.
* Lines after the anchor are proved by their own MACs: without a master key
  nobody can write a line that verifies. An unkeyed line there is accepted
  only as the record of an operation that failed before any keyring could be
  read (reported as not authenticated), or in a log that was never keyed.
* The seal on disk, and the copy of it each line carries, show that lines
  were cut off the end, unless the seal was rolled back together with the
  log to a copy taken when the log was that short.

MACs are checked from the last ``generate`` or ``keys.import`` at or before
the anchor on: those replace the keyring, and lines before them may be keyed
under master keys it no longer holds (the anchor covers them).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encmigrate.keys.audit import GENESIS, Seal, mac_matches, read_seal, split_mac
from encmigrate.keys.keyring import AuditHead, Keyring

__all__ = ["AuditReport", "verify_audit_log"]

# Operations that put a different keyring in place: MACs before them may be under other keys.
_KEYRING_REPLACED = frozenset({"generate", "keys.import"})
_UNKEYED_FAILURES = frozenset({"failed", "refused"})


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`verify_audit_log` found: ``problems`` fail it, ``notes`` do not."""

    path: Path
    lines: int
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_audit_log(
    path: str | os.PathLike[str], anchor: Keyring | AuditHead | None = None
) -> AuditReport:
    """Check the log at ``path`` against ``anchor``.

    Pass the keyring: its ``audit_head`` is the anchor and its master keys
    check the MACs. A bare :class:`AuditHead` checks the chain, the anchor and
    the seal's position but no MAC (a note says so); ``None`` checks the chain
    and the seal's position only.
    """
    keyring = anchor if isinstance(anchor, Keyring) else None
    head = keyring.audit_head if keyring is not None else anchor
    assert head is None or isinstance(head, AuditHead)
    return _Check(Path(path), keyring, head).run()


@dataclass
class _Line:
    number: int
    raw: bytes
    record: dict[str, Any] | None
    mac: tuple[bytes, int, bytes] | None


@dataclass
class _Check:
    path: Path
    keyring: Keyring | None
    head: AuditHead | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hashes: bytearray = field(default_factory=bytearray)  # 32 bytes per line
    keyed_so_far: array[int] = field(default_factory=lambda: array("Q", [0]))
    unkeyed_before_keys: int = 0
    mac_from: int = 1  # first line whose MACs this keyring can judge
    _keys: dict[int, bytes | None] = field(default_factory=dict)

    @property
    def anchored(self) -> int:
        return self.head.lines if self.head is not None else 0

    @property
    def strict(self) -> bool:
        """A keyed anchor: every line after it must be keyed."""
        return self.head is not None and self.head.keyed is True

    def run(self) -> AuditReport:
        lines = self._read()
        self.mac_from = self._last_keyring_replacement(lines)
        for line in lines:
            self._check(line)
        count = len(lines)
        self._check_anchor(count)
        self._check_seal_file(count)
        if self.keyring is None and self.keyed_so_far[-1]:
            self.notes.append("MACs not checked: give the keyring to check them")
        if self.unkeyed_before_keys:
            self.notes.append(
                f"{self.unkeyed_before_keys} line(s) are not keyed (written before the log was "
                "keyed): only the hash chain protects them until a key operation anchors them"
            )
        return AuditReport(self.path, count, tuple(self.problems), tuple(self.notes))

    # -- reading --------------------------------------------------------------------------

    def _read(self) -> list[_Line]:
        if not self.path.exists():
            return []
        lines = []
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                lines.append(_Line(number, raw, _record(raw), split_mac(raw)))
        return lines

    def _last_keyring_replacement(self, lines: list[_Line]) -> int:
        start = 1
        for line in lines[: self.anchored]:
            record = line.record or {}
            if _text(record, "action") in _KEYRING_REPLACED and _text(record, "outcome") == "ok":
                start = line.number
        return start

    # -- one line -------------------------------------------------------------------------

    def _check(self, line: _Line) -> None:
        number, previous = line.number, self._hash_at(line.number - 1)
        if not line.raw.endswith(b"\n"):
            self.problems.append(f"line {number}: incomplete (no line end): the file was cut")
        if line.record is None:
            self.problems.append(f"line {number}: not an audit record")
        elif line.record.get("prev") != previous:
            self.problems.append(
                f"line {number}: chain broken (a line before it was edited, inserted, removed "
                "or reordered)"
            )
        if line.mac is not None:
            self._check_mac(line)
            self._check_recorded_seal(line)
        elif line.record is not None:
            self._check_unkeyed(line)
        self.hashes += hashlib.sha256(line.raw.rstrip(b"\n")).digest()
        self.keyed_so_far.append(self.keyed_so_far[-1] + (line.mac is not None))

    def _check_mac(self, line: _Line) -> None:
        assert line.mac is not None
        body, version, tag = line.mac
        if self.keyring is None or line.number < self.mac_from:
            return
        key = self._key(version)
        if key is None:
            if line.number > self.anchored:
                self.problems.append(
                    f"line {line.number}: keyed under key version {version}, which this keyring "
                    "does not hold (destroyed or unknown): it cannot be authenticated"
                )
        elif not mac_matches(key, body, tag):
            self.problems.append(
                f"line {line.number}: MAC does not verify (the line was edited, or written "
                "without the key)"
            )

    def _check_recorded_seal(self, line: _Line) -> None:
        """The seal the writer found: cut lines show here even after later appends."""
        number = line.number
        recorded = (line.record or {}).get("seal")
        if recorded is None:
            if self.keyed_so_far[-1] > 0:
                self.problems.append(
                    f"line {number}: written while the seal file was missing or unreadable "
                    "(removed or replaced?)"
                )
            return
        parsed = Seal.parse_field(recorded)
        if parsed is None:
            self.problems.append(f"line {number}: its seal member is malformed")
            return
        sealed, version, tag = parsed
        if sealed > number - 1:
            self.problems.append(
                f"line {number}: written after lines were cut off the log: its writer found a "
                f"seal for {sealed} lines, but only {number - 1} were left"
            )
            return
        missed = self.keyed_so_far[number - 1] - self.keyed_so_far[sealed]
        if missed > 1:
            self.problems.append(
                f"line {number}: the seal had not followed the last {missed} keyed lines "
                "(it was replaced by an older copy, or kept from being written)"
            )
        # The first line of a replaced keyring found a seal made under the keyring before it.
        if self.keyring is None or number <= self.mac_from:
            return
        self._check_seal_mac(sealed, version, tag, f"line {number}: the seal it found", number)

    def _check_unkeyed(self, line: _Line) -> None:
        assert line.record is not None
        number = line.number
        if number <= self.anchored:
            if not self.keyed_so_far[-1]:
                self.unkeyed_before_keys += 1
            return
        outcome = _text(line.record, "outcome")
        if not self.strict and not self.keyed_so_far[-1]:
            self.unkeyed_before_keys += 1
        elif outcome in _UNKEYED_FAILURES:
            self.notes.append(
                f"line {number}: a {outcome} operation recorded without the key (no keyring "
                "could be read); not authenticated"
            )
        else:
            self.problems.append(
                f"line {number}: not keyed (no MAC): forged, or written without the keyring"
            )

    # -- the whole log --------------------------------------------------------------------

    def _check_anchor(self, count: int) -> None:
        if self.head is None or not self.anchored:
            return
        if count < self.anchored:
            self.problems.append(
                f"the log has {count} lines but the keyring recorded {self.anchored} at the last "
                "key operation: the newest lines were removed"
            )
        elif self._hash_at(self.anchored) != self.head.sha256:
            self.problems.append(
                f"line {self.anchored}: differs from the line the keyring recorded at the last "
                "key operation"
            )

    def _check_seal_file(self, count: int) -> None:
        seal_path = self.path.with_name(self.path.name + ".seal")
        try:
            seal = read_seal(seal_path)
        except ValueError as exc:
            self.problems.append(f"the seal file {seal_path} {exc}")
            return
        if seal is None:
            if self.keyed_so_far[-1]:
                self.problems.append(
                    f"the seal file {seal_path} is missing: lines may have been cut off the end "
                    "(a log moved or restored needs its .seal beside it)"
                )
            return
        if seal.lines > count:
            self.problems.append(
                f"the log has {count} lines but its seal recorded {seal.lines}: the newest lines "
                "were removed"
            )
            return
        if self._hash_at(seal.lines) != seal.sha256:
            self.problems.append(f"the seal file does not match line {seal.lines} of the log")
            return
        if self.keyring is not None:
            self._check_seal_mac(seal.lines, seal.version, seal.tag, "the seal file", count + 1)
        behind = self.keyed_so_far[count] - self.keyed_so_far[seal.lines]
        if behind > 1:
            self.problems.append(
                f"the seal file is {behind} keyed lines behind the log (replaced by an older "
                "copy, or kept from being written)"
            )
        elif behind == 1:
            self.notes.append(
                "the seal file is one line behind (a writer stopped between its append and the "
                "seal)"
            )

    def _check_seal_mac(self, lines: int, version: int, tag: bytes, what: str, at: int) -> None:
        key = self._key(version)
        if key is None:
            if at > self.anchored:
                self.problems.append(
                    f"{what} is keyed under key version {version}, which this keyring does not "
                    "hold: it cannot be authenticated"
                )
            return
        if not mac_matches(key, Seal.message(lines, self._hash_at(lines)), tag):
            self.problems.append(f"{what} does not verify (forged, or from another log)")

    # -- helpers --------------------------------------------------------------------------

    def _hash_at(self, number: int) -> str:
        if number == 0:
            return GENESIS
        return bytes(self.hashes[32 * (number - 1) : 32 * number]).hex()

    def _key(self, version: int) -> bytes | None:
        if version not in self._keys:
            assert self.keyring is not None
            self._keys[version] = self.keyring.audit_key(version)
        return self._keys[version]


def _text(record: dict[str, Any], name: str) -> str | None:
    """A member that must be a string (anything else in an edited line counts as absent)."""
    value = record.get(name)
    return value if isinstance(value, str) else None


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("prev"), str):
        return None
    return record
