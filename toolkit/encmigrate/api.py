"""The top-level calls applications use (names from the seed guide).

``context`` defaults to ``"default"`` everywhere; ``keyring=None`` means the
keyring the configuration names (:func:`encmigrate.keys.default_keyring`),
followed for the life of the cipher: a cipher built without a keyring asks
for the configured keyring again at most every :data:`REFRESH_SECONDS`
(a clock read per call in between), so a version disabled or destroyed, or
a rotation, made by another process is in force here within that period
plus the keyring's own cache lifetime (``default_keyring``). A cipher given
``keyring=`` keeps that keyring object for its life: keyrings are immutable,
so it sees no later change; build a new cipher to pick one up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from encmigrate.crypto.cipher import Blob, FieldCipher, KeysSource
from encmigrate.crypto.derived import DerivedKeys
from encmigrate.crypto.search import Normalize, Sealed, SearchableCipher
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.resolve import default_keyring, holds_default_keyring
from encmigrate.spec import ColumnSpec, normalize_mode

__all__ = [
    "DEFAULT_KEYRING",
    "REFRESH_SECONDS",
    "DefaultKeyring",
    "decrypt_field",
    "encrypt_field",
    "get_cipher",
    "get_optimized_cipher",
    "get_searchable_cipher",
]

DEFAULT_CONTEXT = "default"

REFRESH_SECONDS = 1.0
"""How long the configured keyring is used before ``default_keyring()`` is asked again."""


class DefaultKeyring:
    """The configured keyring, asked for again at most every ``refresh_seconds``.

    In between, a call costs a clock read and an identity check, cheap enough
    for every value: ``default_keyring()`` itself reads the environment and
    the keyring file's metadata. After
    :func:`encmigrate.keys.reset_default_keyring` the next call asks again at
    once. ``clock`` (monotonic seconds) is the tests' seam.
    """

    __slots__ = ("_lock", "_state", "clock", "refresh_seconds")

    def __init__(
        self,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._lock = threading.Lock()
        # (keyring, its derived keys, when to ask again)
        self._state: tuple[Keyring, DerivedKeys, float] | None = None

    # Both lookups run per value: the check is written out in each (no helper call), and
    # is by identity, not ``==``: an equal keyring reloaded after a reset is a new object
    # with a fresh derived-key cache, and comparing pydantic models would cost more than
    # the encryption.

    def keyring(self) -> Keyring:
        """The keyring in force now."""
        state = self._state
        if state is not None and self.clock() < state[2] and holds_default_keyring(state[0]):
            return state[0]
        return self._reload()[0]

    def derived_keys(self) -> DerivedKeys:
        """The derived keys of the keyring in force now (a :data:`KeysSource`)."""
        state = self._state
        if state is not None and self.clock() < state[2] and holds_default_keyring(state[0]):
            return state[1]
        return self._reload()[1]

    def _reload(self) -> tuple[Keyring, DerivedKeys, float]:
        with self._lock:
            ring = default_keyring()
            state = (ring, ring.derived_keys, self.clock() + self.refresh_seconds)
            self._state = state
            return state

    def __repr__(self) -> str:
        return f"DefaultKeyring(refresh_seconds={self.refresh_seconds})"


DEFAULT_KEYRING = DefaultKeyring()
"""The one follower of the configured keyring that ciphers and column types share."""


def _keys(keyring: Keyring | None) -> DerivedKeys | KeysSource:
    if keyring is not None:
        return keyring.derived_keys
    DEFAULT_KEYRING.keyring()  # nothing configured: fail here, not at the first value
    return DEFAULT_KEYRING.derived_keys


def get_cipher(
    context: str = DEFAULT_CONTEXT, *, type: str = "string", keyring: Keyring | None = None
) -> FieldCipher:
    """A cipher for values of ``type`` in ``context``.

    Without ``keyring`` it follows the configured keyring (see the module
    docstring): safe to keep for the life of a process. With ``keyring`` it
    uses that keyring object, as it is, for its life.
    """
    keys = _keys(keyring)
    return ColumnSpec(context, type).cipher(keys)


def get_optimized_cipher(
    context: str = DEFAULT_CONTEXT, *, type: str = "string", keyring: Keyring | None = None
) -> FieldCipher:
    """An alias of :func:`get_cipher`, kept for the seed guide's name: same arguments, same cipher.

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
    """A cipher that also computes search tokens (``token``, ``lookup_tokens``).

    Follows the configured keyring like :func:`get_cipher` when ``keyring`` is None.
    """
    keys = _keys(keyring)
    spec = ColumnSpec(context, type, searchable=True, normalize=normalize_mode(normalize))
    cipher = spec.cipher(keys)
    assert isinstance(cipher, SearchableCipher)
    return cipher


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
