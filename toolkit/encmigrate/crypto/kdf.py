"""Per-context key derivation from a master key (docs/FORMAT.md, "Keys").

Data key   = HKDF-SHA256(IKM = master key, no salt, info = b"encmigrate/1/data/" + context, L = 32)
Search key = the same with info b"encmigrate/1/search/" + context

A keyring may choose PBKDF2-HMAC-SHA256 instead (password = master key,
salt = the same label bytes, 100,000 iterations, L = 32).
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

__all__ = [
    "DATA_LABEL",
    "KEY_SIZE",
    "PBKDF2_ITERATIONS",
    "SEARCH_LABEL",
    "Kdf",
    "KeyPurpose",
    "derive_key",
    "label",
]

KEY_SIZE = 32
PBKDF2_ITERATIONS = 100_000
DATA_LABEL = b"encmigrate/1/data/"
SEARCH_LABEL = b"encmigrate/1/search/"


class Kdf(enum.StrEnum):
    """Key-derivation functions a keyring may name."""

    HKDF_SHA256 = "hkdf-sha256"
    PBKDF2_SHA256 = "pbkdf2-sha256"


class KeyPurpose(enum.StrEnum):
    """What a derived key is for; each purpose has its own label."""

    DATA = "data"
    SEARCH = "search"


def label(purpose: KeyPurpose, context: str) -> bytes:
    """The HKDF info (or PBKDF2 salt) for ``purpose`` in ``context``."""
    prefix = DATA_LABEL if purpose is KeyPurpose.DATA else SEARCH_LABEL
    return prefix + context.encode("utf-8")


def derive_key(master_key: bytes, purpose: KeyPurpose, context: str, kdf: Kdf) -> bytes:
    """Derive the 32-byte key for ``purpose`` in ``context`` from a master key."""
    info = label(purpose, context)
    if kdf is Kdf.HKDF_SHA256:
        return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(
            master_key
        )
    return PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=info, iterations=PBKDF2_ITERATIONS
    ).derive(master_key)
