"""The keyring backup document: writing one, and trusting nothing in it before it authenticates.

A backup is a JSON document whose keyring is a Fernet token under the backup
key (:mod:`encmigrate.keys.backup_key`)::

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
:func:`compare_keyrings` says what restoring a backup would lose or revive.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken

from encmigrate.errors import ConfigError, KeyConfigError, RefusedError
from encmigrate.keys.backup_key import BackupKey
from encmigrate.keys.keyring import Keyring, KeyState

__all__ = [
    "BACKUP_FORMAT",
    "BackupSummary",
    "KeyringComparison",
    "Restored",
    "compare_keyrings",
    "create_backup",
    "iso",
    "open_backup",
    "utcnow",
]

BACKUP_FORMAT = "encmigrate-keyring-backup/1"


def utcnow() -> dt.datetime:
    """Now in UTC, to the second: the precision a backup records."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(value: dt.datetime) -> str:
    """``value`` as a backup spells it: UTC, to the second, with ``Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    summary = BackupSummary.of(keyring, now or utcnow())
    created = iso(summary.created)
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
    """What replacing ``current`` by ``backup`` would lose and revive, by version."""
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
