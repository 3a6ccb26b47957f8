"""Blind-index search tokens: equality lookups over encrypted values.

token = HMAC-SHA256(search key of (version, context), encoded normalised value)

A lookup computes the token under every version the keyring can still read
and matches any of them, so search keeps working after a rotation and before
``rewrap`` has moved old rows to the new version.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from encmigrate.crypto.cipher import FieldCipher, KeysSource, NonceSource
from encmigrate.crypto.codecs import Codec
from encmigrate.crypto.derived import DerivedKeys
from encmigrate.crypto.envelope import HEADER_SIZE, WRITE_FORMAT

__all__ = ["Normalize", "Sealed", "SearchableCipher"]

TOKEN_SIZE = 32


class Normalize(enum.StrEnum):
    """How a string is normalised before its token is computed."""

    NONE = "none"
    LOWER = "lower"
    CASEFOLD = "casefold"
    STRIP = "strip"
    LOWER_STRIP = "lower+strip"


_NORMALIZERS: dict[Normalize, Callable[[str], str]] = {
    Normalize.LOWER: str.lower,
    Normalize.CASEFOLD: str.casefold,
    Normalize.STRIP: str.strip,
    Normalize.LOWER_STRIP: lambda s: s.strip().lower(),
}


class Sealed(NamedTuple):
    """What ``encrypt_field(..., searchable=True)`` returns."""

    ciphertext: bytes | None
    token: bytes | None


class SearchableCipher(FieldCipher):
    """A :class:`FieldCipher` that also computes search tokens.

    Only the token is deterministic; the ciphertext stays randomised. Equal
    normalised values give equal tokens within one (version, context), and
    unrelated tokens across contexts.
    """

    __slots__ = ("_normalize",)

    def __init__(
        self,
        keys: DerivedKeys | KeysSource,
        context: str,
        codec: Codec,
        *,
        normalize: Normalize | str = Normalize.NONE,
        nonces: NonceSource = os.urandom,
        write_format: int = WRITE_FORMAT,
    ) -> None:
        super().__init__(keys, context, codec, nonces=nonces, write_format=write_format)
        try:
            mode = Normalize(normalize)
        except ValueError:
            choices = ", ".join(m.value for m in Normalize)
            raise ValueError(f"normalize must be one of {choices}") from None
        if mode is not Normalize.NONE and codec.name not in ("string", "text"):
            raise ValueError(f"normalize={mode.value!r} applies to string fields, not {codec.name}")
        self._normalize = _NORMALIZERS.get(mode)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + ", searchable=True)"

    def token(self, value: Any) -> bytes | None:
        """The search token of ``value`` under the current key version."""
        return self.token_under(value, self.keys.current_version)

    def token_under(self, value: Any, version: int) -> bytes | None:
        """The search token of ``value`` under key ``version`` (it must be readable)."""
        if value is None:
            return None
        key = self.keys.search_key(version, self._context)
        return hmac.digest(key, self._search_bytes(value), "sha256")

    def batch_tokens(self, values: Sequence[Any]) -> list[bytes | None]:
        """Tokens of ``values`` under the current version; ``None`` stays ``None``."""
        keys = self.keys
        key = keys.search_key(keys.current_version, self._context)
        encode = self._search_bytes
        digest = hmac.digest
        return [None if v is None else digest(key, encode(v), "sha256") for v in values]

    def lookup_tokens(self, value: Any) -> list[bytes]:
        """One token per readable key version, for ``token IN (...)`` lookups."""
        if value is None:
            return []
        data = self._search_bytes(value)
        keys = self.keys
        return [
            hmac.digest(keys.search_key(version, self._context), data, "sha256")
            for version in keys.readable_versions()
        ]

    def seal(self, value: Any) -> Sealed:
        """Ciphertext and token of one value (under the same keyring)."""
        blob = self.encrypt(value)
        if blob is None:
            return Sealed(None, None)
        # The token under the version the envelope names, even if a following
        # cipher's keyring rotated between the two.
        return Sealed(blob, self.token_under(value, int.from_bytes(blob[1:HEADER_SIZE], "big")))

    def _search_bytes(self, value: Any) -> bytes:
        if self._normalize is not None and isinstance(value, str):
            value = self._normalize(value)
        return self._codec.encode(value)
