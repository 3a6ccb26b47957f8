"""A master key's 32 bytes: kept in a buffer that can be wiped, and never shown.

:func:`decode_master_key` reads the base64 forms operators paste (``openssl
rand -base64 32``, Fernet-style urlsafe keys), with errors that describe the
text without repeating it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from encmigrate.crypto.kdf import KEY_SIZE
from encmigrate.errors import KeyStateError

__all__ = ["MasterKey", "decode_master_key"]


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
