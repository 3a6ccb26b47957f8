"""Encrypted keyring backups and recovery from them (``keys export`` / ``keys import``).

A backup is a JSON document whose keyring is a Fernet token under a
*separate* backup key (never one of the keyring's own master keys)::

    {
      "format": "encmigrate-keyring-backup/1",
      "created": "2026-11-29T10:00:00Z",
      "keyring": {"current": 2, "kdf": "hkdf-sha256",
                  "versions": [{"version": 1, "state": "retired"},
                               {"version": 2, "state": "active"}]},
      "token": "gAAAAA..."
    }

``created`` and ``keyring`` are a summary in clear, for whoever has to pick
the right backup in a hurry; they hold no key material. The token encrypts
the same ``format`` and ``created`` together with the whole keyring
document, and reading a backup checks that the clear summary matches what
the token holds, so an edited summary is refused like an edited token.

There is no plaintext backup: without a backup key nothing is written. The
backup key is a Fernet key (``Fernet.generate_key()``: 32 random bytes,
urlsafe base64) from ``ENCMIGRATE_BACKUP_KEY`` or a file only its owner may
read. Both operations are key operations: they run under the provider's
lock and are recorded in the audit log (``keys.export``, ``keys.import``),
refusals and failures included.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hmac
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from encmigrate.errors import (
    ConfigError,
    EncmigrateError,
    KeyConfigError,
    KeyProviderError,
    KeyStateError,
    RefusedError,
)
from encmigrate.keys.audit import AuditEvent
from encmigrate.keys.files import fsync_directory, write_temporary
from encmigrate.keys.keyring import AuditHead, Keyring, KeyState
from encmigrate.keys.manager import KeyManager
from encmigrate.keys.providers import EnvProvider

__all__ = [
    "BACKUP_FORMAT",
    "BACKUP_KEY_ENV",
    "BackupKey",
    "BackupSummary",
    "ImportReport",
    "KeyringComparison",
    "Restored",
    "compare_keyrings",
    "create_backup",
    "export_backup",
    "import_backup",
    "load_backup_key",
    "open_backup",
    "write_new_backup_key",
]

BACKUP_FORMAT = "encmigrate-keyring-backup/1"
BACKUP_KEY_ENV = "ENCMIGRATE_BACKUP_KEY"
_FERNET_KEY_SIZE = 32
audit_logger = logging.getLogger("encmigrate.audit")

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the backup key -------------------------------------------------------------------------------


class BackupKey:
    """A Fernet key for keyring backups; ``repr`` never shows it."""

    __slots__ = ("_fernet", "_material", "source")

    def __init__(self, text: str | bytes, *, source: str = "backup key") -> None:
        raw = text.encode("ascii", "replace") if isinstance(text, str) else text
        cleaned = b"".join(raw.split())
        try:
            material = base64.urlsafe_b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != _FERNET_KEY_SIZE:
            raise KeyConfigError(
                f"{source} is not a Fernet key (32 bytes, urlsafe base64); create one with "
                "`encmigrate keys export --generate-backup-key --backup-key-file FILE --out BACKUP`"
            )
        self._material = material
        self._fernet = Fernet(base64.urlsafe_b64encode(material))
        self.source = source

    @classmethod
    def generate(cls) -> BackupKey:
        return cls(Fernet.generate_key(), source="new backup key")

    def encoded(self) -> bytes:
        """The key as Fernet writes it (urlsafe base64), for the key file."""
        return base64.urlsafe_b64encode(self._material)

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """The plaintext of ``token``; raises ``InvalidToken`` for every failure alike."""
        return self._fernet.decrypt(token)

    def is_master_key_of(self, keyring: Keyring) -> bool:
        """Whether this key is one of ``keyring``'s master keys (a backup under itself)."""
        return any(
            v.key is not None and hmac.compare_digest(v.key.reveal(), self._material)
            for v in keyring.versions
        )

    def __repr__(self) -> str:
        return f"BackupKey(<redacted>, source={self.source!r})"

    __str__ = __repr__


def load_backup_key(
    key_file: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> BackupKey:
    """The backup key from ``key_file`` if given, else ``ENCMIGRATE_BACKUP_KEY``.

    Raises :class:`KeyConfigError` (exit 3) naming both places when there is
    none: a backup is never written in plaintext.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        return BackupKey(_read_private(Path(key_file)), source=f"backup key file {key_file}")
    text = env.get(BACKUP_KEY_ENV, "")
    if text.strip():
        return BackupKey(text, source=BACKUP_KEY_ENV)
    raise KeyConfigError(
        f"no backup key: set {BACKUP_KEY_ENV} to a Fernet key or pass --backup-key-file FILE "
        "(`--generate-backup-key --backup-key-file FILE` creates one); "
        "a keyring backup is never written in plaintext"
    )


def write_new_backup_key(path: str | os.PathLike[str]) -> BackupKey:
    """Generate a backup key and write it to ``path`` (mode 0600; never replaces a file)."""
    key = BackupKey.generate()
    target = Path(path)
    if target.exists():
        raise RefusedError(
            f"backup key file {target} already exists; refusing to replace it (backups made "
            "with it would become unreadable); use it without --generate-backup-key"
        )
    _write_private(target, key.encoded() + b"\n", overwrite=False, what="backup key file")
    return BackupKey(key.encoded(), source=f"backup key file {target}")


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyConfigError(
            f"backup key file {path} does not exist; create one with "
            f"`encmigrate keys export --generate-backup-key --backup-key-file {path} --out BACKUP`"
        ) from None
    except OSError as exc:
        raise KeyProviderError(f"cannot read backup key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyProviderError(
                f"backup key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
            )
        return handle.read()


def _write_private(path: Path, data: bytes, *, overwrite: bool, what: str) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file in the same folder, are synced, and
    then take the final name in one step: a crash leaves the old file or the
    new one, never half of one. Without ``overwrite`` the final step is a
    hard link, which fails if the name exists, so a file that appeared since
    the caller looked is never replaced either.
    """
    try:
        temporary = write_temporary(path, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
        fsync_directory(path.parent)
    except FileExistsError:
        raise RefusedError(
            f"{what} {path} already exists; refusing to replace it (pass --force)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# -- the backup document --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup says in clear: when, and which versions in which states (no keys)."""

    created: dt.datetime
    current: int
    kdf: str
    versions: tuple[tuple[int, str], ...]

    @classmethod
    def of(cls, keyring: Keyring, created: dt.datetime) -> BackupSummary:
        return cls(
            created=created.astimezone(dt.UTC).replace(microsecond=0),
            current=keyring.current,
            kdf=keyring.kdf.value,
            versions=tuple((v.version, v.state.value) for v in keyring.versions),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "kdf": self.kdf,
            "versions": [{"version": n, "state": s} for n, s in self.versions],
        }


@dataclass(frozen=True, slots=True)
class Restored:
    """A backup that authenticated and holds a valid keyring."""

    keyring: Keyring = field(repr=False)
    summary: BackupSummary


def create_backup(keyring: Keyring, key: BackupKey, *, now: dt.datetime | None = None) -> bytes:
    """The backup document of ``keyring`` under ``key``.

    Refuses a backup key that is one of the keyring's own master keys: the
    backup would be encrypted under a key it contains.
    """
    if key.is_master_key_of(keyring):
        raise RefusedError(
            f"{key.source} is one of the keyring's own master keys; use a separate backup key"
        )
    summary = BackupSummary.of(keyring, now or _utcnow())
    created = _iso(summary.created)
    inner = {
        "format": BACKUP_FORMAT,
        "created": created,
        "keyring": json.loads(keyring.to_json()),
    }
    token = key.encrypt(json.dumps(inner, separators=(",", ":")).encode("utf-8"))
    document = {
        "format": BACKUP_FORMAT,
        "created": created,
        "keyring": summary.as_dict(),
        "token": token.decode("ascii"),
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def open_backup(data: bytes, key: BackupKey, *, source: str = "backup") -> Restored:
    """Authenticate and validate a backup document; nothing is trusted before both pass.

    Not a backup document: :class:`ConfigError` (exit 2). Token that does not
    authenticate under ``key`` (wrong key or an altered file, which Fernet
    cannot tell apart), a keyring that does not validate, or a clear summary
    that differs from the encrypted content: :class:`KeyConfigError` (exit 3).
    """
    outer = _json_object(data, source)
    if outer.get("format") != BACKUP_FORMAT or not isinstance(outer.get("token"), str):
        raise ConfigError(
            f"{source} is not an encmigrate keyring backup (expected format {BACKUP_FORMAT} "
            "and a token; `encmigrate keys export` writes one)"
        )
    try:
        plaintext = key.decrypt(outer["token"].encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        raise KeyConfigError(
            f"{source} does not authenticate under {key.source}: it was made with another "
            "backup key, or the file was altered"
        ) from None
    inner = _json_object(plaintext, f"{source} (encrypted part)")
    document = inner.get("keyring")
    if inner.get("format") != BACKUP_FORMAT or not isinstance(document, dict):
        raise KeyConfigError(f"{source}: the encrypted part is not a keyring backup")
    keyring = Keyring.from_json(json.dumps(document), source=f"{source} (keyring)")
    try:
        created = dt.datetime.fromisoformat(str(inner.get("created")))
    except ValueError:
        raise KeyConfigError(f"{source}: the encrypted creation time is malformed") from None
    if created.tzinfo is None:
        raise KeyConfigError(f"{source}: the encrypted creation time has no timezone")
    summary = BackupSummary.of(keyring, created)
    if outer.get("created") != inner.get("created") or outer.get("keyring") != summary.as_dict():
        raise KeyConfigError(
            f"{source}: the summary in clear does not match the encrypted keyring; "
            "the file was altered"
        )
    return Restored(keyring, summary)


def _json_object(data: bytes, source: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ConfigError(f"{source} is not an encmigrate keyring backup (not JSON)") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source} is not an encmigrate keyring backup (not a JSON object)")
    return document


# -- comparing a backup with the keyring it would replace --------------------------------------


@dataclass(frozen=True, slots=True)
class KeyringComparison:
    """What replacing ``current`` by a backup would change.

    ``lost``: versions the current keyring can still use (not destroyed) whose
    material the backup does not hold, or holds different material for;
    data under them would become unreadable. ``revived``: versions destroyed
    here whose material the backup still holds.
    """

    lost: tuple[int, ...] = ()
    revived: tuple[int, ...] = ()


def compare_keyrings(current: Keyring, backup: Keyring) -> KeyringComparison:
    lost: list[int] = []
    revived: list[int] = []
    for here in current.versions:
        there = backup.find(here.version)
        if here.state is KeyState.DESTROYED:
            if there is not None and there.key is not None:
                revived.append(here.version)
            continue
        if there is None or there.key is None or there.key != here.key:
            lost.append(here.version)
    return KeyringComparison(tuple(lost), tuple(revived))


# -- the operations --------------------------------------------------------------------------


def export_backup(
    manager: KeyManager,
    out: str | os.PathLike[str],
    key: BackupKey,
    *,
    overwrite: bool = False,
    reason: str = "",
    clock: Clock = _utcnow,
) -> BackupSummary:
    """Write an encrypted backup of the manager's keyring to ``out`` (mode 0600, atomic).

    Audited as ``keys.export``. With a writable provider the keyring then
    records the audit head, so removing the export's audit line is detected
    by ``keys audit --verify`` like any other key operation's.
    """
    target = Path(out)
    with _audited(manager, "keys.export", reason, {"out": str(target)}) as op:
        keyring = manager.provider.load()
        op.version, op.keyring = keyring.current, keyring
        if target.exists() and not overwrite:
            raise RefusedError(f"{target} already exists; refusing to replace it (pass --force)")
        if key.is_master_key_of(keyring):
            raise RefusedError(
                f"{key.source} is one of the keyring's own master keys; use a separate backup key"
            )
        head = op.commit()
        if head is not None and not isinstance(manager.provider, EnvProvider):
            keyring = keyring.with_audit_head(head)
            manager.provider.save(keyring)
        now = clock()
        _write_private(
            target, create_backup(keyring, key, now=now), overwrite=overwrite, what="backup"
        )
        return BackupSummary.of(keyring, now)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``keys import`` did."""

    destination: str
    summary: BackupSummary
    replaced: bool
    lost: tuple[int, ...] = ()
    revived: tuple[int, ...] = ()


def import_backup(
    manager: KeyManager,
    backup: str | os.PathLike[str],
    key: BackupKey,
    *,
    force: bool = False,
    reason: str = "",
) -> ImportReport:
    """Restore the manager's keyring from ``backup``, verifying the backup first.

    Refused (exit 5) without ``force`` when the provider already holds a
    keyring; the refusal names the versions the backup lacks, whose data
    would become unreadable. Audited as ``keys.import`` (refusals and
    failures too, such as a backup that does not authenticate).
    """
    path = Path(backup)
    if isinstance(manager.provider, EnvProvider):
        raise KeyProviderError(
            f"the keyring comes from the {manager.provider.describe()}, which cannot be "
            "written; restore into a keyring file (CLI: --path FILE) and point "
            "ENCMIGRATE_KEYRING_FILE or [keys] path at it"
        )
    with _audited(manager, "keys.import", reason, {"backup": str(path)}) as op:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read backup {path}: {exc.strerror}") from None
        restored = open_backup(data, key, source=f"backup {path}")
        op.version = restored.keyring.current
        replaced = manager.provider.exists()
        comparison = KeyringComparison()
        if replaced:
            comparison = _compare_with_existing(manager, restored.keyring)
            if not force:
                raise RefusedError(_replace_refusal(manager, comparison))
        op.extra.update(
            replaced=replaced,
            backup_created=_iso(restored.summary.created),
            lost_versions=list(comparison.lost),
            revived_versions=list(comparison.revived),
        )
        op.keyring = restored.keyring  # the line is keyed under the keyring it puts in place
        head = op.commit()
        keyring = restored.keyring if head is None else restored.keyring.with_audit_head(head)
        manager.provider.save(keyring)
        return ImportReport(
            destination=manager.provider.describe(),
            summary=restored.summary,
            replaced=replaced,
            lost=comparison.lost,
            revived=comparison.revived,
        )


def _compare_with_existing(manager: KeyManager, backup: Keyring) -> KeyringComparison:
    try:
        current = manager.provider.load()
    except KeyConfigError:
        # An unreadable keyring (corrupt, wrong mode) is the usual reason to restore one;
        # nothing can be compared, and --force is still required to replace it.
        return KeyringComparison()
    return compare_keyrings(current, backup)


def _replace_refusal(manager: KeyManager, comparison: KeyringComparison) -> str:
    text = f"{manager.provider.describe()} already holds a keyring; refusing to replace it"
    if comparison.lost:
        versions = ", ".join(str(v) for v in comparison.lost)
        text += (
            f": the backup lacks the key material of version(s) {versions}, so data under them "
            "would become unreadable"
        )
    return text + " (pass --force to replace it anyway)"


@dataclass(slots=True)
class _AuditedOperation:
    manager: KeyManager
    action: str
    reason: str
    extra: dict[str, Any]
    version: int | None = None
    keyring: Keyring | None = field(default=None, repr=False)

    def commit(self) -> AuditHead | None:
        """Record the operation as done; returns the audit head to store in the keyring."""
        return self._append("ok", self.reason)

    def fail(self, outcome: str, reason: str) -> None:
        """Record a refusal or failure, keyed if any keyring can be read."""
        if self.keyring is None and self.manager.audit is not None:
            with contextlib.suppress(EncmigrateError):
                self.keyring = self.manager.provider.load()
        self._append(outcome, reason)

    def _append(self, outcome: str, reason: str) -> AuditHead | None:
        event = AuditEvent(
            self.action, outcome, self.version, reason, self.manager.actor, dict(self.extra)
        )
        if self.manager.audit is None:
            # A keyring from the environment has no audit file unless one is named: the event
            # still reaches logging as a structured record, as key accesses do.
            record = {
                "actor": event.actor,
                "action": event.action,
                "version": event.version,
                "outcome": event.outcome,
                "reason": event.reason,
                **event.extra,
            }
            audit_logger.info("key audit event", extra={"audit": record})
            return None
        return self.manager.audit.append(event, keyring=self.keyring)


@contextlib.contextmanager
def _audited(
    manager: KeyManager, action: str, reason: str, extra: dict[str, Any]
) -> Iterator[_AuditedOperation]:
    """Hold the provider's lock; audit a refusal or failure, even after the "ok" line.

    As in :class:`KeyManager`, the "ok" line is written before the keyring is
    saved or the backup written, so the log holds every operation that took
    effect; one that then failed is followed by its "failed" line.
    """
    op = _AuditedOperation(manager, action, reason, extra)
    with manager.provider.lock():
        try:
            yield op
        except EncmigrateError as exc:
            refused = isinstance(exc, RefusedError | KeyStateError)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            op.fail("refused" if refused else "failed", first)
            raise
