"""The keyring: versioned master keys and their states (docs/keys.md).

A :class:`Keyring` is an immutable value. Key operations (rotate, disable,
destroy, ...) return a new keyring, which comes with a fresh cache of derived
keys, so a version that was disabled can never be served from a stale cache.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hmac
import json
import os
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from encmigrate.config import MAX_ROTATION_DAYS
from encmigrate.crypto.derived import DerivedKeys, DeriveHook
from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.crypto.kdf import KEY_SIZE, Kdf
from encmigrate.errors import (
    DecryptionCause,
    KeyConfigError,
    KeyStateError,
    UnreadableVersionError,
)

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


class KeyState(enum.StrEnum):
    """The life of a master-key version."""

    ACTIVE = "active"  # the current version: the only one that encrypts
    RETIRED = "retired"  # decrypt only; what rotation makes of the old current
    DISABLED = "disabled"  # refuses to decrypt; reversible with enable
    DESTROYED = "destroyed"  # material erased, forever


READABLE_STATES = frozenset({KeyState.ACTIVE, KeyState.RETIRED})


class MasterKey:
    """32 bytes of master-key material, kept in a buffer that can be wiped.

    ``repr`` and ``str`` never show the material.
    """

    __slots__ = ("_buffer",)

    def __init__(self, material: bytes | bytearray) -> None:
        if len(material) != KEY_SIZE:
            raise ValueError(f"master key must be {KEY_SIZE} bytes, got {len(material)}")
        self._buffer = bytearray(material)

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_SIZE))

    def reveal(self) -> bytes:
        """The material, for key derivation and for writing the keyring."""
        if not any(self._buffer):
            raise KeyStateError("master key material was wiped")
        return bytes(self._buffer)

    def to_base64(self) -> str:
        return base64.b64encode(self.reveal()).decode("ascii")

    def wipe(self) -> None:
        """Overwrite the buffer with zeros (copies made by ``reveal`` are not reachable)."""
        for i in range(len(self._buffer)):
            self._buffer[i] = 0

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Constant time: comparing keys must not leak how many leading bytes match.
        return isinstance(other, MasterKey) and hmac.compare_digest(self._buffer, other._buffer)

    def __hash__(self) -> int:
        return id(self)


def decode_master_key(text: str) -> MasterKey:
    """A master key from standard or urlsafe base64, padded or not.

    Accepts ``openssl rand -base64 32`` and Fernet-style keys alike. The error
    says what is wrong with the text, never what the text is.
    """
    cleaned = "".join(text.split())
    if not cleaned:
        raise ValueError("master key is empty")
    padded = cleaned + "=" * (-len(cleaned) % 4)
    alphabet = b"-_" if ("-" in cleaned or "_" in cleaned) else b"+/"
    try:
        raw = base64.b64decode(padded.encode("ascii"), altchars=alphabet, validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("master key is not valid base64 (standard or urlsafe)") from None
    if len(raw) != KEY_SIZE:
        raise ValueError(f"master key must decode to {KEY_SIZE} bytes, got {len(raw)}")
    return MasterKey(raw)


def _parse_master_key(value: Any) -> Any:
    if isinstance(value, str):
        return decode_master_key(value)
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a timezone (use Z for UTC)")
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


KeyMaterial = Annotated[
    MasterKey,
    BeforeValidator(_parse_master_key),
    PlainSerializer(lambda key: key.to_base64(), return_type=str),
]
Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(lambda v: _utc(dt.datetime.fromisoformat(v)) if isinstance(v, str) else v),
    PlainSerializer(_iso, return_type=str),
]


class KeyVersion(BaseModel):
    """One master-key version."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    version: int = Field(ge=1, le=MAX_VERSION)
    key: KeyMaterial | None
    state: KeyState
    created: Timestamp | None = None
    retired: Timestamp | None = None
    disabled: Timestamp | None = None
    destroyed: Timestamp | None = None

    @model_validator(mode="after")
    def _material_matches_state(self) -> KeyVersion:
        if self.state is KeyState.DESTROYED and self.key is not None:
            raise ValueError("a destroyed version must have key null")
        if self.state is not KeyState.DESTROYED and self.key is None:
            raise ValueError(f"a {self.state.value} version needs its key")
        return self

    @property
    def readable(self) -> bool:
        return self.state in READABLE_STATES


class AuditHead(BaseModel):
    """The audit log's newest line at the last key operation (hash and count).

    ``keyed`` is true when that line carries a MAC: from such an anchor on,
    every later line must be keyed too (docs/keys.md, "The audit log").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    lines: int = Field(ge=0)
    keyed: bool | None = None


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
            version=1, key=MasterKey.generate(), state=KeyState.ACTIVE, created=now or _now()
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
        when = now or _now()
        new_number = max(v.version for v in self.versions) + 1
        if new_number > MAX_VERSION:
            raise KeyStateError("no key version numbers left")
        versions = [
            _evolve(v, state=KeyState.RETIRED, retired=when) if v.version == self.current else v
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
        when = now or _now()
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
        return self._replace_version(_evolve(entry, state=state, **stamp))

    def destroyed(self, version: int, now: dt.datetime | None = None) -> Keyring:
        """``version`` with its material erased from the new keyring."""
        entry = self.get(version)
        if version == self.current:
            raise KeyStateError(
                f"key version {version} is the current version; rotate before destroying it"
            )
        if entry.state is KeyState.DESTROYED:
            raise KeyStateError(f"key version {version} is already destroyed")
        gone = _evolve(entry, state=KeyState.DESTROYED, key=None, destroyed=now or _now())
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


def _evolve(entry: KeyVersion, **changes: Any) -> KeyVersion:
    fields = {name: getattr(entry, name) for name in KeyVersion.model_fields}
    fields.update(changes)
    return KeyVersion(**fields)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def format_validation_error(source: str, exc: ValidationError) -> str:
    """Every problem of ``exc`` on its own line, with its location and without input values."""
    problems = [
        f"  {_location(error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]
    count = len(problems)
    return f"{source}: {count} problem{'s' if count != 1 else ''}\n" + "\n".join(problems)


def _location(parts: Iterable[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"
