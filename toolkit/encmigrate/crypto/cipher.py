"""Field encryption: one value or a batch of values of one type in one context."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encmigrate.crypto.codecs import Codec
from encmigrate.crypto.derived import DerivedKeys
from encmigrate.crypto.envelope import (
    FORMAT_1,
    FORMAT_2,
    FORMATS,
    HEADER_SIZE,
    MIN_SIZE,
    NONCE_SIZE,
    TYPE_SEPARATOR,
    WRITE_FORMAT,
    envelope_from_text,
    header_bytes,
)
from encmigrate.errors import (
    DecryptionCause,
    DecryptionError,
    EncmigrateError,
    UnreadableVersionError,
)

__all__ = [
    "TAG_FAILED",
    "Blob",
    "FieldCipher",
    "KeysSource",
    "NonceSource",
    "Opener",
    "has_none",
]

Blob = bytes | bytearray | memoryview
NonceSource = Callable[[int], bytes]
"""Returns that many random bytes. ``os.urandom`` outside the frozen-vector tests."""
KeysSource = Callable[[], DerivedKeys]
"""Returns the derived keys of the keyring in force now; asked at every operation, so it
must be cheap (it bounds its own cache lifetime, e.g. a clock check)."""

Opener = tuple[Callable[[bytes, bytes, bytes], bytes], bytes]
"""An AES-GCM ``decrypt`` and the associated data of one envelope header (format and version)."""

_BODY = HEADER_SIZE + NONCE_SIZE
assert (HEADER_SIZE, _BODY) == (5, 17), "the fast paths use these offsets as literals"
TAG_FAILED = "the value was altered, or belongs to another context or type"


def has_none(values: Iterable[Any]) -> bool:
    """Whether ``values`` holds a None, by identity, without a Python frame per value.

    ``None in values`` compares with ``==``: a Decimal's ``__eq__`` asks whether
    None is a ``numbers.Rational`` (an ABC check), 140 ns a value, about a fifth
    of what sealing the value costs.
    """
    return any(map(operator.is_, values, repeat(None)))


class FieldCipher:
    """Encrypts and decrypts values of one type in one context.

    ``encrypt`` always uses the keyring's current version; ``decrypt`` reads
    any version the keyring can still read. ``None`` is never encrypted and
    comes back as ``None``. Every failure to decrypt raises
    :class:`DecryptionError`, whatever the input.

    ``keys`` is either one keyring's :class:`DerivedKeys`, used for the
    cipher's life (keyrings are immutable: a disable or a rotation made
    elsewhere is not seen), or a :data:`KeysSource` asked at every operation,
    so that a long-lived cipher follows the keyring in force (what
    ``get_cipher()`` without a keyring builds).

    Envelopes are written in format 2, which binds the type's tag into the
    associated data, so a value read as another type fails like a tampered
    one; ``write_format=1`` writes the older format (readers from before
    format 2, and the frozen format-1 vectors). Both formats are read.

    The batch methods do the same work for many values at once: the key is
    looked up once, nonces are drawn from the OS in one call, and the common
    case (every value under one header) runs without per-value checks in
    Python, since the header is authenticated as associated data anyway.
    """

    __slots__ = (
        "_aad_tails",
        "_codec",
        "_context",
        "_fixed",
        "_format",
        "_nonces",
        "_source",
        "_state",
    )

    def __init__(
        self,
        keys: DerivedKeys | KeysSource,
        context: str,
        codec: Codec,
        *,
        nonces: NonceSource = os.urandom,
        write_format: int = WRITE_FORMAT,
    ) -> None:
        if not isinstance(context, str) or not context:
            raise ValueError("context must be a non-empty string")
        if write_format not in FORMATS:
            raise ValueError(f"write_format must be one of {sorted(FORMATS)}")
        if isinstance(keys, DerivedKeys):
            fixed = keys
            self._fixed: DerivedKeys | None = keys
            self._source: KeysSource = lambda: fixed
        else:
            self._fixed = None
            self._source = keys
        self._context = context
        self._codec = codec
        self._nonces = nonces
        self._format = write_format
        # What follows the header in the associated data, per format (section 2 of
        # docs/FORMAT.md; envelope.associated_data is the reference this must equal).
        name = context.encode("utf-8")
        self._aad_tails = {
            FORMAT_1: name,
            FORMAT_2: name + TYPE_SEPARATOR + codec.tag.encode("ascii"),
        }
        # (keys, version, header, aad, aead) of the current version, recomputed when the
        # keys object (a reloaded keyring) or its current version (a rotation) changes.
        self._state: tuple[DerivedKeys, int, bytes, bytes, AESGCM] | None = None

    @property
    def context(self) -> str:
        return self._context

    @property
    def type_name(self) -> str:
        return self._codec.name

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def write_format(self) -> int:
        return self._format

    @property
    def follows_keyring(self) -> bool:
        """Whether this cipher asks a :data:`KeysSource` for the keys in force at each call."""
        return self._fixed is None

    @property
    def keys(self) -> DerivedKeys:
        """The derived keys in force now (for a following cipher, those of this moment)."""
        return self._fixed or self._source()

    def __repr__(self) -> str:
        # A following cipher does not ask its source here: repr must not load a keyring.
        keys = (
            "keyring='in force'" if self._fixed is None else f"version={self.keys.current_version}"
        )
        return (
            f"{type(self).__name__}(context={self._context!r}, type={self._codec.name!r}, {keys})"
        )

    # -- encryption ------------------------------------------------------

    def encrypt(self, value: Any) -> bytes | None:
        """The envelope of ``value`` under the current key version."""
        if value is None:
            return None
        data = self._codec.encode(value)
        _keys, _version, header, aad, aead = self._current()
        nonce = self._nonces(NONCE_SIZE)
        return header + nonce + aead.encrypt(nonce, data, aad)

    def batch_encrypt(self, values: Sequence[Any]) -> list[bytes | None]:
        """Envelopes of ``values`` in order; ``None`` stays ``None``."""
        values = values if isinstance(values, list | tuple) else list(values)
        if has_none(values):
            return self._encrypt_with_nulls(values)
        return self._seal_all(self._encode_all(values))

    def _encrypt_with_nulls(self, values: Sequence[Any]) -> list[bytes | None]:
        present = [i for i, v in enumerate(values) if v is not None]
        sealed = self._seal_all(self._encode_all([values[i] for i in present]))
        out: list[bytes | None] = [None] * len(values)
        for i, blob in zip(present, sealed, strict=True):
            out[i] = blob
        return out

    def _encode_all(self, values: Sequence[Any]) -> list[bytes]:
        """The payloads of ``values`` (none of them None).

        A codec with a C-level ``bulk_encode`` (strings: ``str.encode``) encodes
        the batch without a Python frame per value; any failure there (a value
        of another type, a lone surrogate) is left for the codec's own
        ``encode``, which names the problem without quoting the value.
        """
        bulk = self._codec.bulk_encode
        if bulk is not None:
            try:
                return list(map(bulk, values))
            except Exception:  # noqa: S110 - the codec's encode below raises the one error
                pass
        return list(map(self._codec.encode, values))

    def _seal_all(self, datas: list[bytes]) -> list[bytes | None]:
        if not datas:
            return []
        _keys, _version, header, aad, aead = self._current()
        seal = aead.encrypt
        pool = self._nonces(NONCE_SIZE * len(datas))
        nonces = [pool[i : i + NONCE_SIZE] for i in range(0, len(pool), NONCE_SIZE)]
        return [
            header + nonce + seal(nonce, data, aad)
            for nonce, data in zip(nonces, datas, strict=True)
        ]

    def sealer(self) -> tuple[bytes, bytes, Callable[[bytes, bytes, bytes], bytes]]:
        """The header, associated data and AES-GCM ``encrypt`` of the current version now.

        What the fast paths seal with: ``header + nonce + encrypt(nonce, data, aad)``.
        """
        _keys, _version, header, aad, aead = self._current()
        return header, aad, aead.encrypt

    def _current(self) -> tuple[DerivedKeys, int, bytes, bytes, AESGCM]:
        """Keys, version, header, associated data and AES-GCM of the current version."""
        keys = self._fixed or self._source()
        state = self._state
        if state is None or state[0] is not keys or state[1] != keys.current_version:
            version = keys.current_version
            header = header_bytes(version, self._format)
            aad = header + self._aad_tails[self._format]
            state = (keys, version, header, aad, keys.aead(version, self._context))
            self._state = state
        return state

    # -- decryption ------------------------------------------------------

    def decrypt(self, blob: Blob | str | None) -> Any:
        """The value sealed in ``blob``; raises :class:`DecryptionError` on any failure."""
        if blob is None:
            return None
        return self._decode(self._open(blob, self._fixed or self._source()))

    def batch_decrypt(self, blobs: Sequence[Blob | str | None]) -> list[Any]:
        """Values of ``blobs`` in order; raises :class:`DecryptionError` on the first that fails.

        Any element that is not an envelope (bytes, or base64 text) fails that way too.
        """
        blobs = blobs if isinstance(blobs, list | tuple) else list(blobs)
        if not blobs:
            return []
        first = next((b for b in blobs if b is not None), None)
        if isinstance(first, str):  # text storage: base64 first, then the same fast path
            blobs = self._from_text(blobs)
            first = next(b for b in blobs if b is not None)
        if first is None:
            return [None] * len(blobs)
        keys = self._fixed or self._source()  # one keyring for the whole batch
        values = self._open_same_header(blobs, first, keys)
        if values is not None:
            return values
        plaintexts = [None if b is None else self._open(b, keys) for b in blobs]
        decode = self._codec.parse
        try:
            return [None if p is None else decode(p) for p in plaintexts]
        except Exception:
            error = self._undecodable()
        raise error  # outside the handler: the parser's message can quote the payload

    def _from_text(self, blobs: Sequence[Blob | str | None]) -> list[bytes | None]:
        raw = [None if b is None else _as_bytes(b) for b in blobs]
        if any(r is None and b is not None for r, b in zip(raw, blobs, strict=True)):
            raise self._not_an_envelope()
        return raw

    def _open_same_header(
        self, blobs: Sequence[Any], first: Any, keys: DerivedKeys
    ) -> list[Any] | None:
        """The fast path: the values of every blob under ``first``'s header, or None to go slow.

        The associated data is built once, from ``first``'s header, so each
        blob's own header must equal it: otherwise a blob whose format byte or
        version was rewritten would still open under ``first``'s. A blob under
        another version or format, a truncated one, one that is not bytes or
        whose payload does not parse sends us to the slow path, which checks
        and reports each value. ``None`` stays ``None``.
        """
        if (
            not isinstance(first, bytes | bytearray | memoryview)
            or len(first) < MIN_SIZE
            or first[0] not in FORMATS
        ):
            return None
        header = bytes(first[:HEADER_SIZE])
        opener = self.opener(header, keys)
        if opener is None:
            return None
        unseal, aad = opener
        parse = self._codec.parse
        try:
            # The common case, bytes only under one header. Values sharing a prefix are
            # one interval of the bytes order, so the least and the greatest starting
            # with ``header`` means every value does: two C-level passes that copy
            # nothing (cheaper than a bytes.startswith per value), then one
            # comprehension (cheaper than chained maps of itemgetters).
            if min(blobs).startswith(header) and max(blobs).startswith(header):
                return [parse(unseal(b[5:17], b[17:], aad)) for b in blobs]
            return None
        except TypeError:  # a None, or bytes-like values that are not bytes: one pass per value
            pass
        except Exception:  # InvalidTag, a short value, a payload that does not parse
            return None
        # A blob under another header gets associated data no envelope is sealed with
        # (b""), so its tag fails and the slow path reports it. Literal offsets
        # (HEADER_SIZE, _BODY): globals cost a lookup each, per value.
        try:
            return [
                None
                if b is None
                else parse(unseal(b[5:17], b[17:], aad if b[:5] == header else b""))
                for b in blobs
            ]
        except Exception:  # InvalidTag, a short or foreign value, a payload that does not parse
            return None

    def opener(self, header: bytes, keys: DerivedKeys) -> Opener | None:
        """What opens envelopes under ``header`` with ``keys``: the fast paths' one lookup.

        None when ``header`` is not a header this cipher may read (not 5 bytes,
        an unknown format, version 0, a version the keys cannot read): the
        caller then goes to the full path (:meth:`decrypt`), which checks the
        value and raises the one :class:`DecryptionError`. The fast paths
        (the batch path here, the per-value one of
        :class:`~encmigrate.crypto.hotpath.HotPath`) only skip work for values
        that are good; they never decide that one is bad.
        """
        if len(header) != HEADER_SIZE or header[0] not in FORMATS:
            return None
        version = int.from_bytes(header[1:], "big")
        if version == 0:
            return None
        try:
            aead = keys.aead(version, self._context)
        except EncmigrateError:
            return None
        return aead.decrypt, header + self._aad_tails[header[0]]

    def _open(self, blob: Any, keys: DerivedKeys) -> bytes:
        """Authenticate and decrypt one envelope, checking everything."""
        raw = _as_bytes(blob)
        if raw is None or len(raw) < MIN_SIZE or raw[0] not in FORMATS:
            raise self._not_an_envelope()
        version = int.from_bytes(raw[1:HEADER_SIZE], "big")
        try:
            aead = keys.aead(version, self._context)
        except UnreadableVersionError as exc:
            # The message names the version and its state, never key material.
            reason, cause = str(exc), exc.cause
        except EncmigrateError as exc:  # any other refusal of the key source: no key to be had
            reason, cause = str(exc), DecryptionCause.UNKNOWN_VERSION
        else:
            aad = raw[:HEADER_SIZE] + self._aad_tails[raw[0]]
            try:
                return aead.decrypt(raw[HEADER_SIZE:_BODY], raw[_BODY:], aad)
            except InvalidTag:
                reason, cause = TAG_FAILED, DecryptionCause.AUTHENTICATION
        raise DecryptionError(self._context, version, reason, cause=cause)

    def _decode(self, data: bytes) -> Any:
        try:
            return self._codec.parse(data)
        except Exception:
            error = self._undecodable()
        raise error  # outside the handler: the parser's message can quote the payload

    def _not_an_envelope(self) -> DecryptionError:
        return DecryptionError(
            self._context, None, "not an encmigrate envelope", cause=DecryptionCause.NOT_ENVELOPE
        )

    def _undecodable(self) -> DecryptionError:
        return DecryptionError(
            self._context,
            None,
            f"payload does not decode as {self._codec.name}",
            cause=DecryptionCause.UNDECODABLE,
        )


def _as_bytes(blob: object) -> bytes | None:
    """Bytes of a stored value: raw bytes, or base64 text from a text column."""
    if isinstance(blob, bytes):
        return blob
    if isinstance(blob, bytearray | memoryview):
        return bytes(blob)
    if isinstance(blob, str):
        return envelope_from_text(blob)
    return None
