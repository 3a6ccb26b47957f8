"""The top-level calls applications use (names from the seed guide).

``context`` defaults to ``"default"`` everywhere; ``keyring=None`` means the
keyring the configuration names (:func:`encmigrate.keys.default_keyring`).
"""

from __future__ import annotations

from typing import Any

from encmigrate.crypto.cipher import Blob, FieldCipher
from encmigrate.crypto.codecs import codec_for
from encmigrate.crypto.search import Normalize, Sealed, SearchableCipher
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.resolve import default_keyring

__all__ = [
    "decrypt_field",
    "encrypt_field",
    "get_cipher",
    "get_optimized_cipher",
    "get_searchable_cipher",
]

DEFAULT_CONTEXT = "default"


def get_cipher(
    context: str = DEFAULT_CONTEXT, *, type: str = "string", keyring: Keyring | None = None
) -> FieldCipher:
    """A cipher for values of ``type`` in ``context``."""
    ring = keyring if keyring is not None else default_keyring()
    return FieldCipher(ring.derived_keys, context, codec_for(type))


def get_optimized_cipher(
    context: str = DEFAULT_CONTEXT, *, type: str = "string", keyring: Keyring | None = None
) -> FieldCipher:
    """The batch path, under the seed guide's name: the same cipher as :func:`get_cipher`.

    Every cipher's ``batch_encrypt``/``batch_decrypt`` is the optimised path
    (one key lookup, nonces drawn in one call, no per-value checks in Python
    when all values share a key version). A pool of pre-drawn nonces for
    single ``encrypt`` calls was measured slower than ``os.urandom`` in
    CPython (bench/README.md), so there is no separate single-value path.
    """
    return get_cipher(context, type=type, keyring=keyring)


def get_searchable_cipher(
    context: str = DEFAULT_CONTEXT,
    *,
    normalize: Normalize | str = Normalize.NONE,
    type: str = "string",
    keyring: Keyring | None = None,
) -> SearchableCipher:
    """A cipher that also computes search tokens (``token``, ``lookup_tokens``)."""
    ring = keyring if keyring is not None else default_keyring()
    return SearchableCipher(ring.derived_keys, context, codec_for(type), normalize=normalize)


def encrypt_field(
    value: Any,
    *,
    searchable: bool = False,
    context: str = DEFAULT_CONTEXT,
    type: str = "string",
    normalize: Normalize | str = Normalize.NONE,
    keyring: Keyring | None = None,
) -> bytes | Sealed | None:
    """Encrypt one value.

    Returns the envelope bytes (``None`` for ``None``). With
    ``searchable=True`` it returns ``Sealed(ciphertext, token)``, a named
    tuple: ``blob, token = encrypt_field(v, searchable=True)``.
    """
    if searchable:
        cipher = get_searchable_cipher(context, normalize=normalize, type=type, keyring=keyring)
        return cipher.seal(value)
    return get_cipher(context, type=type, keyring=keyring).encrypt(value)


def decrypt_field(
    blob: Blob | str | None,
    *,
    context: str = DEFAULT_CONTEXT,
    type: str = "string",
    keyring: Keyring | None = None,
) -> Any:
    """Decrypt one envelope; raises :class:`~encmigrate.errors.DecryptionError` on any failure."""
    return get_cipher(context, type=type, keyring=keyring).decrypt(blob)
