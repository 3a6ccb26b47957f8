"""The per-process cache of keys derived from a keyring's master keys."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encmigrate.crypto.kdf import Kdf, KeyPurpose, derive_key

__all__ = ["DeriveHook", "DerivedKeys", "MasterKeySource"]


class MasterKeySource(Protocol):
    """What the crypto core needs from a keyring.

    ``master_key`` raises :class:`~encmigrate.errors.KeyConfigError` (or a
    subclass) for a version that is unknown or may not be read.
    """

    @property
    def kdf(self) -> Kdf: ...

    @property
    def current_version(self) -> int: ...

    def readable_versions(self) -> tuple[int, ...]: ...

    def master_key(self, version: int) -> bytes: ...


DeriveHook = Callable[[int, str, KeyPurpose], None]
"""Called once per (version, context, purpose) the first time it is derived."""


class DerivedKeys:
    """Data and search keys per (version, context), derived once and kept.

    Holding the cache on the keyring object (not globally) means a keyring
    that changed (a version disabled, destroyed) comes with a fresh cache.
    """

    __slots__ = ("_aeads", "_lock", "_on_derive", "_search", "_source")

    def __init__(self, source: MasterKeySource, on_derive: DeriveHook | None = None) -> None:
        self._source = source
        self._on_derive = on_derive
        self._aeads: dict[tuple[int, str], AESGCM] = {}
        self._search: dict[tuple[int, str], bytes] = {}
        self._lock = threading.Lock()

    @property
    def current_version(self) -> int:
        return self._source.current_version

    def readable_versions(self) -> tuple[int, ...]:
        return self._source.readable_versions()

    def aead(self, version: int, context: str) -> AESGCM:
        """The AES-256-GCM instance for data in ``context`` under ``version``."""
        found = self._aeads.get((version, context))
        if found is None:
            found = AESGCM(self._derive(version, context, KeyPurpose.DATA))
            self._aeads[(version, context)] = found
        return found

    def search_key(self, version: int, context: str) -> bytes:
        """The HMAC key for search tokens in ``context`` under ``version``."""
        found = self._search.get((version, context))
        if found is None:
            found = self._derive(version, context, KeyPurpose.SEARCH)
            self._search[(version, context)] = found
        return found

    def clear(self) -> None:
        """Forget every derived key (after a version was disabled or destroyed)."""
        with self._lock:
            self._aeads.clear()
            self._search.clear()

    def _derive(self, version: int, context: str, purpose: KeyPurpose) -> bytes:
        with self._lock:
            key = derive_key(self._source.master_key(version), purpose, context, self._source.kdf)
            if self._on_derive is not None:
                self._on_derive(version, context, purpose)
            return key

    def __repr__(self) -> str:
        return f"DerivedKeys(cached={len(self._aeads) + len(self._search)})"
