"""The crypto core: the envelope (formats 1 and 2), key derivation, codecs, field ciphers.

Nothing here knows where keys come from; :mod:`encmigrate.keys` supplies a
:class:`MasterKeySource`.
"""

from encmigrate.crypto.envelope import EnvelopeHeader, parse_header

# The public names of the crypto core (docs/architecture.md, "Public API"); the ciphers,
# codecs and key derivation are public through ``encmigrate`` or internal.
__all__ = ["EnvelopeHeader", "parse_header"]
