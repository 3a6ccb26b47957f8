"""The crypto core: the envelope (formats 1 and 2), key derivation, codecs, field ciphers.

Nothing here knows where keys come from; :mod:`encmigrate.keys` supplies a
:class:`MasterKeySource`.
"""

from encmigrate.crypto.cipher import Blob, FieldCipher, KeysSource, NonceSource
from encmigrate.crypto.codecs import CODECS, TYPE_NAMES, Codec, codec_for
from encmigrate.crypto.derived import DerivedKeys, MasterKeySource
from encmigrate.crypto.envelope import EnvelopeHeader, parse_header
from encmigrate.crypto.kdf import Kdf, KeyPurpose, derive_key
from encmigrate.crypto.search import Normalize, Sealed, SearchableCipher

__all__ = [
    "CODECS",
    "TYPE_NAMES",
    "Blob",
    "Codec",
    "DerivedKeys",
    "EnvelopeHeader",
    "FieldCipher",
    "Kdf",
    "KeyPurpose",
    "KeysSource",
    "MasterKeySource",
    "NonceSource",
    "Normalize",
    "Sealed",
    "SearchableCipher",
    "codec_for",
    "derive_key",
    "parse_header",
]
