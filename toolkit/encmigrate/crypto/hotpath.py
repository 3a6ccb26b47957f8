"""The per-value path of the bind and result processors.

SQLAlchemy calls a type's processors once per value, even for an
executemany of 100,000 rows, so whatever is done per value is the cost of
the types. :class:`HotPath` does per value only what the envelope needs and
everything else once per (type, keyring):

* sealing: the header, the associated data and the AES-GCM instance of the
  current version are fixed for a keyring object (keyrings are immutable:
  a rotation is a new keyring), so a value costs one encode, one nonce and
  one ``AESGCM.encrypt``, with its nonce from ``os.urandom`` as the
  crypto core draws it.
* opening: a value whose 5 header bytes equal those of the previous value
  is opened with that version's AES-GCM instance and associated data; any
  other header is looked up (and learned) once per format and version, by
  the lookup the cipher's batch path uses (:meth:`FieldCipher.opener`).
  Anything else (text input, a value that is not bytes, an unknown or
  unreadable version, a failed tag, a payload that does not decode) goes
  to :meth:`FieldCipher.decrypt`, which checks everything and raises the one
  :class:`~encmigrate.errors.DecryptionError`: the fast path never decides
  that a value is bad, it only skips work for values that are good.

The bytes are exactly :class:`FieldCipher`'s (tests decrypt each with the other).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from encmigrate.crypto.cipher import FieldCipher, Opener
from encmigrate.crypto.envelope import HEADER_SIZE, NONCE_SIZE
from encmigrate.crypto.search import SearchableCipher

__all__ = ["HotPath", "Opening", "Sealing"]

Sealing = tuple[bytes, bytes, Callable[[bytes, bytes, bytes], bytes], Callable[[Any], bytes]]
"""Header, associated data, AES-GCM ``encrypt`` and encoder of the current version."""
Opening = tuple[bytes, Callable[[bytes, bytes, bytes], bytes], bytes, Callable[[bytes], Any]]
"""Header, AES-GCM ``decrypt``, associated data and raw parser of the current version."""

assert (HEADER_SIZE, HEADER_SIZE + NONCE_SIZE) == (5, 17), "open_ uses these offsets"


class HotPath:
    """Seal and open values of one type in one context under one keyring object."""

    __slots__ = (
        "_current_header",
        "_decode",
        "_openers",
        "_readable",
        "cipher",
        "open",
        "opening",
        "seal",
        "sealing",
    )

    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher
        header, aad, encrypt = cipher.sealer()
        encode = cipher.codec.encode
        nonces = os.urandom
        # The raw parser: a failure goes to the full path, which raises the one error.
        self._decode = cipher.codec.parse
        self._openers: dict[bytes, Opener] = {}
        self._current_header = header
        self._readable: tuple[int, ...] | None = None

        def seal(value: Any) -> bytes:
            nonce = nonces(NONCE_SIZE)
            return header + nonce + encrypt(nonce, encode(value), aad)

        self.seal = seal
        self.sealing: Sealing = (header, aad, encrypt, encode)
        """What :attr:`seal` does, as parts, for callers that inline it in their own loop."""
        current = self._learn(header)
        assert current is not None  # the current version is always readable
        self.opening: Opening = (header, current[0], current[1], self._decode)
        """The current version's header, ``decrypt``, associated data and parser, for
        callers that inline the fast path and fall back to :attr:`open` for anything else."""
        self.open = self._make_open()

    def _make_open(self) -> Callable[[Any], Any]:
        decode = self._decode
        slow = self.cipher.decrypt
        learn = self._learn
        # The version that opened the previous value is tried first. Its
        # associated data is built from its header, so the value's own header
        # must equal that header: a value whose format byte or version was
        # rewritten would otherwise open under the old one (FieldCipher's
        # batch path makes the same check).
        header = self._current_header
        current = learn(header)
        assert current is not None  # the current version is always readable
        decrypt, aad = current

        # Literal offsets (HEADER_SIZE, HEADER_SIZE + NONCE_SIZE): this runs per value.
        def open_(blob: Any) -> Any:
            try:
                if blob[:5] == header:
                    return decode(decrypt(blob[5:17], blob[17:], aad))
            except Exception:  # a bad tag or payload, or no bytes at all: the full path names it
                return slow(blob)
            return open_other(blob)

        def open_other(blob: Any) -> Any:
            nonlocal header, decrypt, aad
            opener = learn(bytes(blob[:5])) if isinstance(blob, bytes | bytearray) else None
            if opener is None:
                return slow(blob)
            try:
                value = decode(opener[0](blob[5:17], blob[17:], opener[1]))
            except Exception:
                return slow(blob)
            header, (decrypt, aad) = bytes(blob[:5]), opener
            return value

        return open_

    def _learn(self, header: bytes) -> Opener | None:
        """The opener of ``header``'s key version (learned once), if that version may be read."""
        found = self._openers.get(header)
        if found is None:
            found = self.cipher.opener(header, self.cipher.keys)
            if found is not None:
                self._openers[header] = found
        return found

    def lookup_tokens(self, value: Any) -> list[bytes]:
        """``SearchableCipher.lookup_tokens`` with the readable versions listed once.

        Sorting the keyring's versions costs more than the HMACs; the list
        cannot change for one keyring object.
        """
        cipher = self.cipher
        if not isinstance(cipher, SearchableCipher):
            raise TypeError(f"{cipher!r} computes no search tokens")
        if value is None:
            return []
        versions = self._readable
        if versions is None:
            versions = self._readable = cipher.keys.readable_versions()
        token_under = cipher.token_under
        return [token for v in versions if (token := token_under(value, v)) is not None]

    def __repr__(self) -> str:
        return f"HotPath({self.cipher!r})"
