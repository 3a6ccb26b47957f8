"""The append-only audit log of key operations and key access: hash-chained and keyed.

Each line is one JSON object::

    {"time": "2026-11-29T10:00:00.123456Z", "actor": "alice", "action": "rotate",
     "version": 3, "outcome": "ok", "reason": "", "prev": "<sha256 hex of the previous line>",
     "seal": "16:2:<hex>", "mac": "3:<hex>"}

* ``prev`` chains the lines: the SHA-256 of the previous line (64 zeros for the
  first), so editing, inserting, deleting or reordering a line breaks the chain.
* ``mac`` authenticates the line: HMAC-SHA256, under the audit key of the
  writer's current key version (:meth:`Keyring.audit_key`), of the line's
  bytes without the ``mac`` member. A chain anyone can recompute; a MAC only
  a holder of a master key can.
* The seal file (``<log>.seal``) holds the line count and newest hash, keyed
  the same way, and is rewritten after every append. Each line copies the
  seal its writer found (``seal``: count, key version, MAC), so cutting lines
  off the end shows even after later appends.

The keyring records the head (hash, count) at every key operation: the
anchor. :mod:`encmigrate.keys.audit_verify` checks all of this; docs/keys.md
says what it detects and what it cannot. Key material never enters the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from encmigrate.errors import AuditLogError
from encmigrate.keys.keyring import AuditHead, Keyring

__all__ = [
    "GENESIS",
    "SEAL_FORMAT",
    "AuditEvent",
    "AuditLog",
    "Seal",
    "current_actor",
    "line_hash",
    "mac_matches",
    "read_seal",
    "split_mac",
]

GENESIS = "0" * 64
SEAL_FORMAT = "encmigrate-audit-seal/1"
logger = logging.getLogger("encmigrate.audit")

_RESERVED = frozenset(
    {"time", "actor", "action", "version", "outcome", "reason", "prev", "seal", "mac"}
)
# The MAC is always the last member, so the signed bytes are the line with it cut out.
_MAC_TAIL = re.compile(rb',"mac":"([0-9]{1,10}):([0-9a-f]{64})"\}$')
_SEAL_FIELD = re.compile(r"^([0-9]{1,12}):([0-9]{1,10}):([0-9a-f]{64})$")


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

    def __post_init__(self) -> None:
        clash = sorted(_RESERVED & set(self.extra))
        if clash:
            raise ValueError(f"audit event extra fields may not be named {', '.join(clash)}")


# -- the pieces of a line and of the seal --------------------------------------------------


def line_hash(content: bytes) -> str:
    """SHA-256 of a line without its line end (what the next line's ``prev`` holds)."""
    return hashlib.sha256(content.rstrip(b"\n")).hexdigest()


def split_mac(content: bytes) -> tuple[bytes, int, bytes] | None:
    """``(signed bytes, key version, tag)`` of a keyed line; ``None`` for an unkeyed one."""
    match = _MAC_TAIL.search(content.rstrip(b"\n"))
    if match is None:
        return None
    body = content.rstrip(b"\n")[: match.start()] + b"}"
    return body, int(match.group(1)), bytes.fromhex(match.group(2).decode("ascii"))


def _tag(key: bytes, message: bytes) -> bytes:
    signer = HMAC(key, hashes.SHA256())
    signer.update(message)
    return signer.finalize()


def mac_matches(key: bytes, message: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is the HMAC-SHA256 of ``message`` under ``key`` (constant time)."""
    checker = HMAC(key, hashes.SHA256())
    checker.update(message)
    try:
        checker.verify(tag)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Seal:
    """The keyed (count, newest hash) of the log, as the seal file holds it."""

    lines: int
    sha256: str
    version: int
    tag: bytes

    @staticmethod
    def message(lines: int, sha256: str) -> bytes:
        """What a seal's MAC signs; the prefix keeps it apart from any log line."""
        return f"{SEAL_FORMAT}\0{lines}\0{sha256}".encode("ascii")

    @classmethod
    def make(cls, head: AuditHead, keyring: Keyring) -> Seal:
        key = keyring.audit_key(keyring.current)
        assert key is not None  # the current version is active: it has its material
        tag = _tag(key, cls.message(head.lines, head.sha256))
        return cls(head.lines, head.sha256, keyring.current, tag)

    @property
    def recorded(self) -> str:
        """The seal as a line records it: ``count:version:tag``."""
        return f"{self.lines}:{self.version}:{self.tag.hex()}"

    @staticmethod
    def parse_field(text: object) -> tuple[int, int, bytes] | None:
        """``(count, version, tag)`` of a line's ``seal`` member, ``None`` if malformed."""
        match = _SEAL_FIELD.match(text) if isinstance(text, str) else None
        if match is None:
            return None
        return int(match.group(1)), int(match.group(2)), bytes.fromhex(match.group(3))

    def to_json(self) -> str:
        document = {
            "format": SEAL_FORMAT,
            "lines": self.lines,
            "sha256": self.sha256,
            "mac": f"{self.version}:{self.tag.hex()}",
        }
        return json.dumps(document) + "\n"


def read_seal(path: Path) -> Seal | None:
    """The seal at ``path``; ``None`` when there is none; :class:`ValueError` when malformed."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    try:
        document = json.loads(text)
        version, tag = str(document["mac"]).split(":")
        lines, sha256 = int(document["lines"]), str(document["sha256"])
        seal = Seal(lines, sha256, int(version), bytes.fromhex(tag))
    except (ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError):
        raise ValueError("is not an audit seal") from None
    if document.get("format") != SEAL_FORMAT or seal.lines < 0 or len(seal.tag) != 32:
        raise ValueError("is not an audit seal")
    return seal


# -- the log --------------------------------------------------------------------------------


class AuditLog:
    """Appends events to a JSON-lines file under an exclusive lock.

    The lock (``flock`` on the log itself) makes read-tail, append and
    re-seal atomic across processes, so two writers never fork the chain.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    @property
    def seal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seal")

    def append(
        self, event: AuditEvent, *, now: dt.datetime | None = None, keyring: Keyring | None = None
    ) -> AuditHead:
        """Write ``event``; returns the new head (hash of the new line, line count).

        With ``keyring`` the line is keyed under its current version and the
        seal is renewed. Without one (an operation that failed before any
        keyring could be read) the line is unkeyed: the verifier reports it
        as not authenticated.
        """
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        record: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": event.actor,
            "action": event.action,
            "version": event.version,
            "outcome": event.outcome,
            "reason": event.reason,
            **event.extra,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise AuditLogError(f"cannot open audit log {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            previous, count, _, complete = _tail(fd)
            record["prev"] = previous
            if keyring is not None:
                record["seal"] = self._seal_field()
            line = _signed_line(record, keyring)
            # A cut last line stays as it is (the verifier reports it); ours starts on its own.
            _write_all(fd, line if complete else b"\n" + line)
            os.fsync(fd)
            head = AuditHead(
                sha256=line_hash(line), lines=count + 1, keyed=True if keyring is not None else None
            )
            if keyring is not None:
                self._reseal(Seal.make(head, keyring))
        except OSError as exc:
            raise AuditLogError(f"cannot write audit log {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        logger.info("key audit event", extra={"audit": record})
        return head

    def head(self) -> AuditHead:
        """Hash and count of the log as it stands (genesis for a missing log)."""
        if not self.path.exists():
            return AuditHead(sha256=GENESIS, lines=0)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            previous, count, keyed, _ = _tail(fd)
        finally:
            os.close(fd)
        return AuditHead(sha256=previous, lines=count, keyed=keyed or None)

    def events(self) -> Iterator[dict[str, Any]]:
        """The events in order (no verification: see :func:`verify_audit_log`).

        A line that is not an audit record raises :class:`AuditLogError`
        naming the line, never its content.
        """
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError):
                    record = None
                if not isinstance(record, dict):
                    raise AuditLogError(
                        f"audit log {self.path}: line {number} is not an audit record; "
                        "`encmigrate keys audit --verify` checks the whole log"
                    )
                yield record

    def _seal_field(self) -> str | None:
        try:
            seal = read_seal(self.seal_path)
        except ValueError:
            return None  # recorded as missing: the verifier reports it
        return seal.recorded if seal is not None else None

    def _reseal(self, seal: Seal) -> None:
        """Replace the seal file; a failure is logged, and shows as a stale seal later."""
        directory = self.seal_path.parent
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.seal_path.name}.", dir=directory)
        except OSError as exc:
            logger.warning("audit seal %s not renewed: %s", self.seal_path, exc.strerror)
            return
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(seal.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.seal_path)
        except OSError as exc:
            logger.warning("audit seal %s not renewed: %s", self.seal_path, exc.strerror)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _signed_line(record: dict[str, Any], keyring: Keyring | None) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    if keyring is None:
        return body + b"\n"
    key = keyring.audit_key(keyring.current)
    assert key is not None  # the current version is active: it has its material
    mac = f',"mac":"{keyring.current}:{_tag(key, body).hex()}"}}'.encode("ascii")
    return body[:-1] + mac + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tail(fd: int) -> tuple[str, int, bool, bool]:
    """Hash of the last line, the number of lines, whether the last is keyed and complete."""
    os.lseek(fd, 0, os.SEEK_SET)
    previous, count, keyed, complete = GENESIS, 0, False, True
    with os.fdopen(os.dup(fd), "rb") as handle:
        for raw in handle:
            previous, count = line_hash(raw), count + 1
            keyed, complete = split_mac(raw) is not None, raw.endswith(b"\n")
    return previous, count, keyed, complete
