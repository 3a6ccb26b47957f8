"""The keyring: versioned master keys and their states (docs/keys.md).

A :class:`Keyring` is an immutable value. Key operations (rotate, disable,
destroy, ...) return a new keyring, which comes with a fresh cache of derived
keys, so a version that was disabled can never be served from a stale cache.
The key material lives in :mod:`encmigrate.keys.master_key` and a version's
fields in :mod:`encmigrate.keys.key_version`; their names are importable from
here too.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from encmigrate.config import MAX_ROTATION_DAYS
from encmigrate.crypto.derived import DerivedKeys, DeriveHook
from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.crypto.kdf import Kdf
from encmigrate.errors import (
    DecryptionCause,
    KeyConfigError,
    KeyStateError,
    UnreadableVersionError,
)
from encmigrate.keys.key_version import (
    AuditHead,
    KeyState,
    KeyVersion,
    evolve,
    format_validation_error,
    utc_now,
)
from encmigrate.keys.master_key import MasterKey, decode_master_key

__all__ = [
    "AUDIT_KEY_LABEL",
    "KEYRING_FORMAT",
    "AuditHead",
    "KeyState",
    "KeyVersion",
    "Keyring",
    "MasterKey",
    "decode_master_key",
    "format_validation_error",
]

KEYRING_FORMAT = "encmigrate-keyring/1"
# HKDF info of the key that authenticates audit log lines (docs/FORMAT.md, "The audit log"):
# distinct from every data and search label, which all start "encmigrate/1/data/" or ".../search/".
AUDIT_KEY_LABEL = b"encmigrate/1/audit-log"


class Keyring(BaseModel):
    """Versioned master keys; implements the crypto core's ``MasterKeySource``."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    format: Literal["encmigrate-keyring/1"] = "encmigrate-keyring/1"
    kdf: Kdf = Kdf.HKDF_SHA256
    current: int = Field(ge=1, le=MAX_VERSION)
    rotation_days: int = Field(default=90, ge=1, le=MAX_ROTATION_DAYS)
    audit_head: AuditHead | None = None
    versions: tuple[KeyVersion, ...]

    _derived: DerivedKeys | None = PrivateAttr(default=None)
    _on_derive: DeriveHook | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Keyring:
        if not self.versions:
            raise ValueError("versions: a keyring needs at least one version")
        numbers = [v.version for v in self.versions]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate versions: {', '.join(map(str, duplicates))}")
        active = [v.version for v in self.versions if v.state is KeyState.ACTIVE]
        if self.current not in numbers:
            raise ValueError(f"current version {self.current} is not in versions")
        if active != [self.current]:
            raise ValueError(
                f"exactly one version must be active and it must be current ({self.current}); "
                f"active: {active or 'none'}"
            )
        return self

    # -- construction ----------------------------------------------------

    @classmethod
    def generate(
        cls,
        *,
        kdf: Kdf | str = Kdf.HKDF_SHA256,
        rotation_days: int = 90,
        now: dt.datetime | None = None,
    ) -> Keyring:
        """A new keyring with one fresh random version, 1, active."""
        first = KeyVersion(
            version=1, key=MasterKey.generate(), state=KeyState.ACTIVE, created=now or utc_now()
        )
        return cls.build(kdf=Kdf(kdf), current=1, rotation_days=rotation_days, versions=[first])

    @classmethod
    def single(
        cls, key: MasterKey, version: int = 1, *, kdf: Kdf | str = Kdf.HKDF_SHA256
    ) -> Keyring:
        """A keyring holding one active version, as the environment provider gives."""
        only = KeyVersion(version=version, key=key, state=KeyState.ACTIVE)
        return cls.build(kdf=Kdf(kdf), current=version, versions=[only])

    @classmethod
    def build(cls, **fields: Any) -> Keyring:
        """Validate ``fields`` as a keyring, reporting every problem at once."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise KeyConfigError(format_validation_error("keyring", exc)) from None

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "keyring") -> Keyring:
        """Parse a keyring document; the error lists every problem with its location."""
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KeyConfigError(
                f"{source}: not valid JSON (line {getattr(exc, 'lineno', '?')}); "
                "expected an encmigrate-keyring/1 document"
            ) from None
        except RecursionError:
            raise KeyConfigError(
                f"{source}: nested too deeply to be a keyring; "
                "expected an encmigrate-keyring/1 document"
            ) from None
        if not isinstance(document, dict):
            raise KeyConfigError(f"{source}: expected a JSON object, got {type(document).__name__}")
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise KeyConfigError(format_validation_error(source, exc)) from None

    def to_json(self) -> str:
        """The keyring document (contains key material: write it only to safe places)."""
        document = self.model_dump(mode="json", exclude_none=True)
        for entry in document["versions"]:
            entry.setdefault("key", None)
        return json.dumps(document, indent=2) + "\n"

    # -- MasterKeySource --------------------------------------------------

    @property
    def current_version(self) -> int:
        return self.current

    def readable_versions(self) -> tuple[int, ...]:
        """Versions that may decrypt, newest first."""
        return tuple(
            v.version for v in sorted(self.versions, key=lambda v: -v.version) if v.readable
        )

    def master_key(self, version: int) -> bytes:
        """The version's material; UnreadableVersionError (with its cause) if it may not be read."""
        entry = self.find(version)
        if entry is None:
            raise UnreadableVersionError(
                f"key version {version} is not in the keyring",
                version=version,
                cause=DecryptionCause.UNKNOWN_VERSION,
            )
        if not entry.readable or entry.key is None:
            cause = (
                DecryptionCause.DESTROYED
                if entry.state is KeyState.DESTROYED
                else DecryptionCause.DISABLED
            )
            raise UnreadableVersionError(
                f"key version {version} is {entry.state.value}", version=version, cause=cause
            )
        return entry.key.reveal()

    def audit_key(self, version: int) -> bytes | None:
        """The key that authenticates audit lines written under ``version``.

        HKDF-SHA256(IKM = the version's master key, no salt, info =
        ``encmigrate/1/audit-log``, L = 32). A disabled version still has one,
        so lines written before it was disabled stay verifiable; a destroyed
        or unknown version has none (``None``).
        """
        entry = self.find(version)
        if entry is None or entry.key is None:
            return None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=AUDIT_KEY_LABEL).derive(
            entry.key.reveal()
        )

    @property
    def derived_keys(self) -> DerivedKeys:
        """The cache of keys derived from this keyring (one per keyring object)."""
        if self._derived is None:
            self._derived = DerivedKeys(self, self._on_derive)
        return self._derived

    def observe_derivations(self, hook: DeriveHook | None) -> None:
        """Call ``hook`` at each first derivation of a (version, context) key."""
        self._on_derive = hook
        self._derived = None

    # -- reading ----------------------------------------------------------

    def find(self, version: int) -> KeyVersion | None:
        return next((v for v in self.versions if v.version == version), None)

    def get(self, version: int) -> KeyVersion:
        entry = self.find(version)
        if entry is None:
            known = ", ".join(str(v.version) for v in self.versions)
            raise KeyStateError(f"key version {version} is not in the keyring (versions: {known})")
        return entry

    @property
    def current_entry(self) -> KeyVersion:
        return self.get(self.current)

    # -- operations (each returns a new keyring) ---------------------------

    def rotated(self, now: dt.datetime | None = None) -> Keyring:
        """A new random version becomes current; the old current is retired."""
        when = now or utc_now()
        new_number = max(v.version for v in self.versions) + 1
        if new_number > MAX_VERSION:
            raise KeyStateError("no key version numbers left")
        versions = [
            evolve(v, state=KeyState.RETIRED, retired=when) if v.version == self.current else v
            for v in self.versions
        ]
        versions.append(
            KeyVersion(
                version=new_number, key=MasterKey.generate(), state=KeyState.ACTIVE, created=when
            )
        )
        return self._replace(current=new_number, versions=versions)

    def with_state(self, version: int, state: KeyState, now: dt.datetime | None = None) -> Keyring:
        """``version`` moved to ``state`` (retired, disabled, or back to retired by enable)."""
        entry = self.get(version)
        when = now or utc_now()
        if entry.state is KeyState.DESTROYED:
            raise KeyStateError(f"key version {version} is destroyed; nothing can bring it back")
        if version == self.current:
            raise KeyStateError(
                f"key version {version} is the current version; rotate first, then change it"
            )
        if state not in (KeyState.RETIRED, KeyState.DISABLED):
            raise KeyStateError(f"cannot move a version to {state.value} this way")
        stamp = (
            {"disabled": when} if state is KeyState.DISABLED else {"retired": entry.retired or when}
        )
        return self._replace_version(evolve(entry, state=state, **stamp))

    def destroyed(self, version: int, now: dt.datetime | None = None) -> Keyring:
        """``version`` with its material erased from the new keyring."""
        entry = self.get(version)
        if version == self.current:
            raise KeyStateError(
                f"key version {version} is the current version; rotate before destroying it"
            )
        if entry.state is KeyState.DESTROYED:
            raise KeyStateError(f"key version {version} is already destroyed")
        gone = evolve(entry, state=KeyState.DESTROYED, key=None, destroyed=now or utc_now())
        return self._replace_version(gone)

    def with_audit_head(self, head: AuditHead) -> Keyring:
        return self._replace(audit_head=head)

    def wipe(self) -> None:
        """Overwrite this keyring's material in memory (it is unusable afterwards).

        Keyrings made from this one by an operation share the key objects of
        the versions they kept: wiping this one wipes theirs too. After a key
        operation, use :meth:`wipe_version` for the version that went away.
        """
        if self._derived is not None:
            self._derived.clear()
        for entry in self.versions:
            if entry.key is not None:
                entry.key.wipe()

    def wipe_version(self, version: int) -> None:
        """Overwrite one version's material in memory, and forget every derived key.

        Only that version's key object is touched, so keyrings that share the
        other versions' key objects (the one an operation returned, a
        provider's cached copy) keep working.
        """
        if self._derived is not None:
            self._derived.clear()
        entry = self.find(version)
        if entry is not None and entry.key is not None:
            entry.key.wipe()

    def _replace_version(self, replacement: KeyVersion) -> Keyring:
        versions = [replacement if v.version == replacement.version else v for v in self.versions]
        return self._replace(versions=versions)

    def _replace(self, **changes: Any) -> Keyring:
        fields: dict[str, Any] = {
            "format": self.format,
            "kdf": self.kdf,
            "current": self.current,
            "rotation_days": self.rotation_days,
            "audit_head": self.audit_head,
            "versions": self.versions,
        }
        fields.update(changes)
        new = Keyring.build(**fields)
        new._on_derive = self._on_derive
        return new

    def __repr__(self) -> str:
        states = ", ".join(f"{v.version}:{v.state.value}" for v in self.versions)
        return f"Keyring(current={self.current}, kdf={self.kdf.value!r}, versions=[{states}])"

    __str__ = __repr__
