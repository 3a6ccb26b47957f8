"""Field encryption: one value or a batch of values of one type in one context."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encmigrate.crypto.codecs import Codec
from encmigrate.crypto.derived import DerivedKeys
from encmigrate.crypto.envelope import (
    FORMAT_1,
    HEADER_SIZE,
    MIN_SIZE,
    NONCE_SIZE,
    associated_data,
    envelope_from_text,
    header_bytes,
)
from encmigrate.errors import DecryptionError, EncmigrateError

__all__ = ["Blob", "FieldCipher", "NonceSource"]

Blob = bytes | bytearray | memoryview
NonceSource = Callable[[int], bytes]
"""Returns that many random bytes. ``os.urandom`` outside the frozen-vector tests."""

_BODY = HEADER_SIZE + NONCE_SIZE


class FieldCipher:
    """Encrypts and decrypts values of one type in one context.

    ``encrypt`` always uses the keyring's current version; ``decrypt`` reads
    any version the keyring can still read. ``None`` is never encrypted and
    comes back as ``None``. Every failure to decrypt raises
    :class:`DecryptionError`, whatever the input bytes.

    The batch methods do the same work for many values at once: the key is
    looked up once, nonces are drawn from the OS in one call, and the common
    case (every value under one key version) runs without per-value checks
    in Python, since the header is authenticated as associated data anyway.
    """

    __slots__ = ("_codec", "_context", "_keys", "_nonces", "_state")

    def __init__(
        self,
        keys: DerivedKeys,
        context: str,
        codec: Codec,
        *,
        nonces: NonceSource = os.urandom,
    ) -> None:
        if not isinstance(context, str) or not context:
            raise ValueError("context must be a non-empty string")
        self._keys = keys
        self._context = context
        self._codec = codec
        self._nonces = nonces
        # (version, header, aad, aead) for the current version, recomputed on rotation.
        self._state: tuple[int, bytes, bytes, AESGCM] | None = None

    @property
    def context(self) -> str:
        return self._context

    @property
    def type_name(self) -> str:
        return self._codec.name

    @property
    def keys(self) -> DerivedKeys:
        return self._keys

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(context={self._context!r}, type={self._codec.name!r}, "
            f"version={self._keys.current_version})"
        )

    # -- encryption ------------------------------------------------------

    def encrypt(self, value: Any) -> bytes | None:
        """The envelope of ``value`` under the current key version."""
        if value is None:
            return None
        data = self._codec.encode(value)
        _version, header, aad, aead = self._current()
        nonce = self._nonces(NONCE_SIZE)
        return header + nonce + aead.encrypt(nonce, data, aad)

    def batch_encrypt(self, values: Sequence[Any]) -> list[bytes | None]:
        """Envelopes of ``values`` in order; ``None`` stays ``None``."""
        values = values if isinstance(values, list | tuple) else list(values)
        if None in values:
            return self._encrypt_with_nulls(values)
        datas = list(map(self._codec.encode, values))
        return self._seal_all(datas)

    def _encrypt_with_nulls(self, values: Sequence[Any]) -> list[bytes | None]:
        present = [i for i, v in enumerate(values) if v is not None]
        sealed = self._seal_all([self._codec.encode(values[i]) for i in present])
        out: list[bytes | None] = [None] * len(values)
        for i, blob in zip(present, sealed, strict=True):
            out[i] = blob
        return out

    def _seal_all(self, datas: list[bytes]) -> list[bytes | None]:
        if not datas:
            return []
        _version, header, aad, aead = self._current()
        seal = aead.encrypt
        pool = self._nonces(NONCE_SIZE * len(datas))
        nonces = [pool[i : i + NONCE_SIZE] for i in range(0, len(pool), NONCE_SIZE)]
        return [
            header + nonce + seal(nonce, data, aad)
            for nonce, data in zip(nonces, datas, strict=True)
        ]

    def _current(self) -> tuple[int, bytes, bytes, AESGCM]:
        version = self._keys.current_version
        state = self._state
        if state is None or state[0] != version:
            header = header_bytes(version)
            aead = self._keys.aead(version, self._context)
            state = (version, header, associated_data(header, self._context), aead)
            self._state = state
        return state

    # -- decryption ------------------------------------------------------

    def decrypt(self, blob: Blob | str | None) -> Any:
        """The value sealed in ``blob``; raises :class:`DecryptionError` on any failure."""
        if blob is None:
            return None
        return self._decode(self._open(blob))

    def batch_decrypt(self, blobs: Sequence[Blob | str | None]) -> list[Any]:
        """Values of ``blobs`` in order; raises on the first that fails."""
        blobs = blobs if isinstance(blobs, list | tuple) else list(blobs)
        if not blobs:
            return []
        first = next((b for b in blobs if b is not None), None)
        if isinstance(first, str):  # text storage: base64 first, then the same fast path
            blobs = self._from_text(blobs)
            first = next(b for b in blobs if b is not None)
        if first is None:
            return [None] * len(blobs)
        plaintexts = self._open_same_version(blobs, first)
        if plaintexts is None:
            plaintexts = [None if b is None else self._open(b) for b in blobs]
        decode = self._codec.decode
        try:
            if None in plaintexts:
                return [None if p is None else decode(p) for p in plaintexts]
            return list(map(decode, plaintexts))
        except Exception:
            raise DecryptionError(
                self._context, None, f"payload does not decode as {self._codec.name}"
            ) from None

    def _from_text(self, blobs: Sequence[Blob | str | None]) -> list[bytes | None]:
        raw = [None if b is None else _as_bytes(b) for b in blobs]
        if any(r is None and b is not None for r, b in zip(raw, blobs, strict=True)):
            raise DecryptionError(self._context, None, "not an encmigrate envelope")
        return raw

    def _open_same_version(self, blobs: Sequence[Any], first: Any) -> list[Any] | None:
        """The fast path: every blob under ``first``'s version, or None to go slow.

        The associated data is built once, from ``first``'s header, so each
        blob's own header must equal it: otherwise a blob whose format byte or
        version was rewritten would still open under ``first``'s. A blob under
        another version, another format or a truncated one sends us to the
        slow path, which checks and reports each value.
        """
        if isinstance(first, str) or len(first) < MIN_SIZE or first[0] != FORMAT_1:
            return None
        version = int.from_bytes(bytes(first[1:HEADER_SIZE]), "big")
        if version == 0:
            return None
        try:
            aead = self._keys.aead(version, self._context)
        except EncmigrateError:
            return None
        header = header_bytes(version)
        aad = associated_data(header, self._context)
        unseal = aead.decrypt
        try:
            if any(b[:HEADER_SIZE] != header for b in blobs):
                return None
            return [unseal(b[HEADER_SIZE:_BODY], b[_BODY:], aad) for b in blobs]
        except Exception:  # InvalidTag, or a None / short / foreign value
            return None

    def _open(self, blob: Blob | str) -> bytes:
        """Authenticate and decrypt one envelope, checking everything."""
        raw = _as_bytes(blob)
        if raw is None or len(raw) < MIN_SIZE or raw[0] != FORMAT_1:
            raise DecryptionError(self._context, None, "not an encmigrate envelope")
        version = int.from_bytes(raw[1:HEADER_SIZE], "big")
        try:
            aead = self._keys.aead(version, self._context)
        except EncmigrateError as exc:
            raise DecryptionError(self._context, version, str(exc)) from None
        aad = associated_data(raw[:HEADER_SIZE], self._context)
        try:
            return aead.decrypt(raw[HEADER_SIZE:_BODY], raw[_BODY:], aad)
        except InvalidTag:
            raise DecryptionError(self._context, version) from None

    def _decode(self, data: bytes) -> Any:
        try:
            return self._codec.decode(data)
        except Exception:
            raise DecryptionError(
                self._context, None, f"payload does not decode as {self._codec.name}"
            ) from None


def _as_bytes(blob: object) -> bytes | None:
    """Bytes of a stored value: raw bytes, or base64 text from a text column."""
    if isinstance(blob, bytes):
        return blob
    if isinstance(blob, bytearray | memoryview):
        return bytes(blob)
    if isinstance(blob, str):
        return envelope_from_text(blob)
    return None
