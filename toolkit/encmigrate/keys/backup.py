"""Encrypted keyring backups and recovery from them (``keys export`` / ``keys import``).

Both operations are key operations: they run under the provider's lock and are
recorded in the audit log (``keys.export``, ``keys.import``), refusals and
failures included. The backup key lives in :mod:`encmigrate.keys.backup_key`
and the document's format in :mod:`encmigrate.keys.backup_document`; their
names are importable from here too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encmigrate.errors import (
    ConfigError,
    EncmigrateError,
    KeyConfigError,
    KeyProviderError,
    KeyStateError,
    RefusedError,
)
from encmigrate.keys.audit import AuditEvent
from encmigrate.keys.backup_document import (
    BACKUP_FORMAT,
    BackupSummary,
    KeyringComparison,
    Restored,
    compare_keyrings,
    create_backup,
    iso,
    open_backup,
    utcnow,
)
from encmigrate.keys.backup_key import (
    BACKUP_KEY_ENV,
    BackupKey,
    load_backup_key,
    write_new_backup_key,
    write_private,
)
from encmigrate.keys.keyring import AuditHead, Keyring
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

audit_logger = logging.getLogger("encmigrate.audit")

Clock = Callable[[], dt.datetime]


def export_backup(
    manager: KeyManager,
    out: str | os.PathLike[str],
    key: BackupKey,
    *,
    overwrite: bool = False,
    reason: str = "",
    clock: Clock = utcnow,
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
        write_private(
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
            backup_created=iso(restored.summary.created),
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
