"""The parts of a keyring document: one version, its state, the audit head.

:class:`KeyVersion` checks that a version's key material matches its state
(a destroyed version has none, every other one has its key);
:func:`format_validation_error` turns pydantic's errors about a document into
one line per problem, located and without the input values (which may be keys).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.keys.master_key import MasterKey, decode_master_key

__all__ = [
    "READABLE_STATES",
    "AuditHead",
    "KeyState",
    "KeyVersion",
    "evolve",
    "format_validation_error",
    "utc_now",
]


class KeyState(enum.StrEnum):
    """The life of a master-key version."""

    ACTIVE = "active"  # the current version: the only one that encrypts
    RETIRED = "retired"  # decrypt only; what rotation makes of the old current
    DISABLED = "disabled"  # refuses to decrypt; reversible with enable
    DESTROYED = "destroyed"  # material erased, forever


READABLE_STATES = frozenset({KeyState.ACTIVE, KeyState.RETIRED})


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


def evolve(entry: KeyVersion, **changes: Any) -> KeyVersion:
    """``entry`` with ``changes``, validated again like a new version."""
    fields = {name: getattr(entry, name) for name in KeyVersion.model_fields}
    fields.update(changes)
    return KeyVersion(**fields)


def utc_now() -> dt.datetime:
    """Now in UTC, to the second: the precision a keyring records."""
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
