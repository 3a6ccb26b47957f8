"""encmigrate: field-level AES-256-GCM encryption for live databases.

The public surface is what ``__all__`` lists here and in ``encmigrate.fields``,
``encmigrate.keys`` and ``encmigrate.migrate`` (docs/architecture.md, "Public API");
every other module is internal and may change.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from encmigrate.api import (
    decrypt_field,
    encrypt_field,
    get_cipher,
    get_optimized_cipher,
    get_searchable_cipher,
)
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.kdf import Kdf
from encmigrate.crypto.search import Normalize, Sealed, SearchableCipher
from encmigrate.errors import (
    AuditLogError,
    ConfigError,
    DatabaseError,
    DecryptionCause,
    DecryptionError,
    EncmigrateError,
    KeyConfigError,
    KeyProviderError,
    KeyStateError,
    RefusedError,
    ValueTypeError,
)
from encmigrate.keys import (
    EnvProvider,
    FileProvider,
    KeyManager,
    Keyring,
    KeyState,
    verify_audit_log,
)

if TYPE_CHECKING:
    from encmigrate.fields import (
        EncryptedBigInteger,
        EncryptedBinary,
        EncryptedBoolean,
        EncryptedDate,
        EncryptedDateTime,
        EncryptedFloat,
        EncryptedInteger,
        EncryptedJSON,
        EncryptedNumeric,
        EncryptedSearchableBigInteger,
        EncryptedSearchableBinary,
        EncryptedSearchableDate,
        EncryptedSearchableInteger,
        EncryptedSearchableString,
        EncryptedSearchableText,
        EncryptedString,
        EncryptedText,
        EncryptedTime,
        SearchTokenIndex,
    )

try:
    __version__ = version("encmigrate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AuditLogError",
    "ConfigError",
    "DatabaseError",
    "DecryptionCause",
    "DecryptionError",
    "EncmigrateError",
    "EncryptedBigInteger",
    "EncryptedBinary",
    "EncryptedBoolean",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedFloat",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedNumeric",
    "EncryptedSearchableBigInteger",
    "EncryptedSearchableBinary",
    "EncryptedSearchableDate",
    "EncryptedSearchableInteger",
    "EncryptedSearchableString",
    "EncryptedSearchableText",
    "EncryptedString",
    "EncryptedText",
    "EncryptedTime",
    "EnvProvider",
    "FieldCipher",
    "FileProvider",
    "Kdf",
    "KeyConfigError",
    "KeyManager",
    "KeyProviderError",
    "KeyState",
    "KeyStateError",
    "Keyring",
    "Normalize",
    "RefusedError",
    "Sealed",
    "SearchTokenIndex",
    "SearchableCipher",
    "ValueTypeError",
    "__version__",
    "decrypt_field",
    "encrypt_field",
    "get_cipher",
    "get_optimized_cipher",
    "get_searchable_cipher",
    "verify_audit_log",
]

# The column types import SQLAlchemy; they load on first use, so ``import encmigrate``
# (and the pytest plugin, which every test run of an installing project imports) stays light.
# They are the names of __all__ not imported above (listed once more for type checkers only).
_LAZY = frozenset(name for name in __all__ if name not in globals())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module("encmigrate.fields"), name)
    raise AttributeError(f"module 'encmigrate' has no attribute {name!r}")
