"""The ciphertext envelope, format 1 (docs/FORMAT.md).

::

    offset  size  field
    0       1     format byte, 0x01
    1       4     master-key version, unsigned big-endian
    5       12    nonce
    17      n     AES-256-GCM ciphertext of the encoded value
    17+n    16    GCM tag

The associated data is the 5 header bytes followed by the context in UTF-8.
The context is never stored: the reader supplies it, so a value moved to
another column fails authentication.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = [
    "FORMAT_1",
    "HEADER_SIZE",
    "MAX_VERSION",
    "MIN_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "EnvelopeHeader",
    "associated_data",
    "envelope_from_text",
    "envelope_to_text",
    "header_bytes",
    "parse_header",
]

FORMAT_1 = 0x01
HEADER_SIZE = 5
NONCE_SIZE = 12
TAG_SIZE = 16
MIN_SIZE = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
MAX_VERSION = 2**32 - 1


def header_bytes(version: int) -> bytes:
    """The 5 header bytes of a format-1 envelope under ``version``."""
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"key version must be between 1 and {MAX_VERSION}, got {version}")
    return bytes((FORMAT_1,)) + version.to_bytes(4, "big")


def associated_data(header: bytes, context: str) -> bytes:
    """GCM associated data: the header followed by the context in UTF-8."""
    return header + context.encode("utf-8")


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """What can be read from an envelope without any key."""

    format: int
    version: int
    size: int

    @property
    def plaintext_size(self) -> int:
        """Length of the encoded value (the ciphertext without nonce and tag)."""
        return self.size - MIN_SIZE


def parse_header(blob: bytes | bytearray | memoryview) -> EnvelopeHeader | None:
    """The header of a format-1 envelope, or None when ``blob`` is not one.

    This checks shape only (format byte, length); authenticity is known only
    after decryption.
    """
    if len(blob) < MIN_SIZE or blob[0] != FORMAT_1:
        return None
    version = int.from_bytes(bytes(blob[1:HEADER_SIZE]), "big")
    if version == 0:
        return None
    return EnvelopeHeader(format=FORMAT_1, version=version, size=len(blob))


def envelope_to_text(blob: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4), for text columns."""
    return base64.b64encode(blob).decode("ascii")


def envelope_from_text(text: str) -> bytes | None:
    """The envelope bytes of base64 text, or None when it is not base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
