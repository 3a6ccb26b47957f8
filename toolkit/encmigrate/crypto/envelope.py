"""The ciphertext envelope, formats 1 and 2 (docs/FORMAT.md).

::

    offset  size  field
    0       1     format byte: 0x02 (written), or 0x01 (still read)
    1       4     master-key version, unsigned big-endian
    5       12    nonce
    17      n     AES-256-GCM ciphertext of the encoded value
    17+n    16    GCM tag

:func:`read_header` and :func:`envelope_version` are the one reader of this
header; the SQL that reads it (``status``, ``rewrap``) takes its first
:data:`HEADER_SIZE` bytes (:data:`HEADER_TEXT_SIZE` characters of base64 text)
and hands them to the same reader.

Both formats have this layout; they differ only in the associated data:

* format 1: the 5 header bytes, then the context in UTF-8;
* format 2: the same, then one ``00`` byte and the value's type tag in ASCII
  (``string``, ``integer``, ``float``, ...; see :attr:`Codec.tag`).

Neither the context nor the type is stored: the reader supplies both, so a
value moved to another column fails authentication, and so does a format-2
value read as another type (a format-1 value read as another type decodes
as whatever its bytes mean in that type: format 1 predates the type tag).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = [
    "FORMATS",
    "FORMAT_1",
    "FORMAT_2",
    "HEADER_SIZE",
    "HEADER_TEXT_SIZE",
    "MAX_VERSION",
    "MIN_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "TYPE_SEPARATOR",
    "VERSION_OFFSET",
    "VERSION_SIZE",
    "WRITE_FORMAT",
    "EnvelopeHeader",
    "associated_data",
    "envelope_from_text",
    "envelope_to_text",
    "envelope_version",
    "header_bytes",
    "parse_header",
    "read_header",
]

FORMAT_1 = 0x01
FORMAT_2 = 0x02
FORMATS = frozenset({FORMAT_1, FORMAT_2})
"""The format bytes a reader accepts."""
WRITE_FORMAT = FORMAT_2
"""The format every writer uses unless told otherwise."""
TYPE_SEPARATOR = b"\x00"
VERSION_OFFSET = 1
VERSION_SIZE = 4
HEADER_SIZE = VERSION_OFFSET + VERSION_SIZE
HEADER_TEXT_SIZE = 4 * -(-HEADER_SIZE // 3)
"""Base64 characters that hold the header in text storage (8: the header and one nonce byte)."""
NONCE_SIZE = 12
TAG_SIZE = 16
MIN_SIZE = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
MAX_VERSION = 2**32 - 1


def header_bytes(version: int, format: int = WRITE_FORMAT) -> bytes:
    """The 5 header bytes of an envelope under ``version`` in ``format``."""
    if format not in FORMATS:
        raise ValueError(f"envelope format must be one of {sorted(FORMATS)}")
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"key version must be between 1 and {MAX_VERSION}, got {version}")
    return bytes((format,)) + version.to_bytes(VERSION_SIZE, "big")


def associated_data(header: bytes, context: str, type_tag: str | None = None) -> bytes:
    """GCM associated data of an envelope with ``header``, in ``context``, of ``type_tag``.

    Format 1: header || UTF-8(context). Format 2: header || UTF-8(context) ||
    00 || ASCII(type_tag). The tag is read back from the end (type tags hold
    no 00 byte), so the framing is unambiguous even for a context that holds one.
    """
    if header[0] == FORMAT_1:
        return header + context.encode("utf-8")
    if type_tag is None:
        raise ValueError("a format-2 envelope binds its type: pass type_tag")
    return header + context.encode("utf-8") + TYPE_SEPARATOR + type_tag.encode("ascii")


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


def read_header(stored: object) -> tuple[int, int] | None:
    """``(format, version)`` from the header of a stored envelope, or None when it has none.

    ``stored`` is what a column holds: bytes, bytearray or memoryview in binary
    storage, base64 text in text storage (as :meth:`FieldCipher.decrypt` takes
    it). Anything else, text that is not base64, fewer than 5 bytes, or an
    unknown format byte gives None, so callers may pass any column value.

    Only the 5 header bytes are read: the version is returned as written (0,
    which no writer writes, included), and nothing says the rest of the value
    is whole (:func:`parse_header` checks the length) or authentic (only
    decryption does).
    """
    if isinstance(stored, str):
        stored = envelope_from_text(stored)
    if isinstance(stored, memoryview) and stored.itemsize != 1:
        stored = stored.tobytes()
    if not isinstance(stored, bytes | bytearray | memoryview) or len(stored) < HEADER_SIZE:
        return None
    head = bytes(stored[:HEADER_SIZE])
    if head[0] not in FORMATS:
        return None
    return head[0], int.from_bytes(head[VERSION_OFFSET:HEADER_SIZE], "big")


def envelope_version(stored: object) -> int | None:
    """The key version a stored envelope's header names; None as for :func:`read_header`."""
    fields = read_header(stored)
    return None if fields is None else fields[1]


def parse_header(blob: bytes | bytearray | memoryview) -> EnvelopeHeader | None:
    """The header of a format-1 or format-2 envelope, or None when ``blob`` is not one.

    This checks shape only (format byte, length, a version of at least 1);
    authenticity is known only after decryption.
    """
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) < MIN_SIZE:
        return None
    fields = read_header(blob)
    if fields is None or fields[1] == 0:
        return None
    return EnvelopeHeader(format=fields[0], version=fields[1], size=len(blob))


def envelope_to_text(blob: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4), for text columns."""
    return base64.b64encode(blob).decode("ascii")


def envelope_from_text(text: str) -> bytes | None:
    """The envelope bytes of base64 text, or None when it is not base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
