"""Write tests/vectors/encmigrate_format2.json, the frozen vectors of envelope format 2.

Run it once after a deliberate format change, review the diff, commit the output:

    .venv/bin/python tests/vectors/make_format2.py          # (re)write the file
    .venv/bin/python tests/vectors/make_format2.py --check  # exit 1 if the file is stale

Format 2 has format 1's byte layout with format byte 02, and binds the value's type tag
into the associated data (docs/FORMAT.md, sections 1 and 2). The cases are format 1's
(make_format1.SPECS: every type, both KDFs, versions 1 and 7, a non-ASCII context), sealed
through the library's writers as they are (format 2 is what they write) with nonces from
another counter than format 1's, so that no (key, nonce) pair of the two files repeats.

The file has format 1's fields plus ``type_tags`` (type name -> the tag bound into the
associated data), and each case's ``aad`` is the format-2 one. The master keys are fixed
and public: these are test vectors, never keys.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent
TESTS_DIR = VECTORS_DIR.parent
for directory in (TESTS_DIR, VECTORS_DIR):  # run as a script or loaded by a test
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

import make_format1 as format1  # noqa: E402

from encmigrate.crypto.codecs import CODECS, codec_for  # noqa: E402
from encmigrate.crypto.envelope import HEADER_SIZE, NONCE_SIZE  # noqa: E402
from encmigrate.crypto.kdf import PBKDF2_ITERATIONS, Kdf, KeyPurpose, derive_key  # noqa: E402
from encmigrate.crypto.search import SearchableCipher  # noqa: E402
from encmigrate.keys.keyring import Keyring, MasterKey  # noqa: E402
from support.vectors import CounterNonces, json_form  # noqa: E402

FORMAT2_FILE = VECTORS_DIR / "encmigrate_format2.json"
NONCE_START = int.from_bytes(bytes(range(0xB0, 0xBC)), "big")
SPECS = format1.SPECS


def build_document() -> dict[str, Any]:
    """The vector file's content (deterministic: same code, same document)."""
    nonces = CounterNonces(NONCE_START)
    rings: dict[tuple[str, int], Keyring] = {}
    cases = []
    for spec in SPECS:
        ring = rings.get((spec.kdf, spec.version))
        if ring is None:
            key = MasterKey(format1.MASTER_KEYS[spec.version])
            ring = rings[(spec.kdf, spec.version)] = Keyring.single(key, spec.version, kdf=spec.kdf)
        cases.append(_case(spec, ring, nonces))
    return {
        "description": (
            "Frozen vectors of the encmigrate ciphertext envelope, format 2 (the value's type "
            "bound into the associated data), and of its search tokens. Specified byte by byte "
            "in docs/FORMAT.md. The master keys are public test values, never use them for data."
        ),
        "generator": "tests/vectors/make_format2.py",
        "spec": "docs/FORMAT.md",
        "envelope_format": 2,
        "pbkdf2_iterations": PBKDF2_ITERATIONS,
        "master_keys": {str(v): key.hex() for v, key in format1.MASTER_KEYS.items()},
        "type_tags": {name: codec.tag for name, codec in CODECS.items()},
        "nonce_source": (
            "a 12-byte big-endian counter starting at "
            f"{NONCE_START.to_bytes(NONCE_SIZE, 'big').hex()}, one nonce per case in file order"
        ),
        "value_from": format1.VALUE_FROM_DOC,
        "fields": {
            "encoded": "the value's encoding per type: the GCM plaintext",
            "data_key": "the AES-256-GCM key of (version, context)",
            "search_key": "the HMAC-SHA256 key of (version, context)",
            "aad": (
                "GCM associated data: the 5 header bytes + the context in UTF-8 + one 00 byte "
                "+ the type's tag (type_tags) in ASCII"
            ),
            "envelope": "format byte 02 || version || nonce || ciphertext || tag",
            "envelope_base64": "the envelope as stored in text columns",
            "token_input": "the encoding of the normalised value: the HMAC message",
            "token": "HMAC-SHA256(search_key, token_input)",
        },
        "cases": cases,
    }


def _case(spec: format1.Spec, ring: Keyring, nonces: CounterNonces) -> dict[str, Any]:
    codec = codec_for(spec.type)
    kdf = Kdf(spec.kdf)
    cipher = SearchableCipher(
        ring.derived_keys, spec.context, codec, normalize=spec.normalize, nonces=nonces
    )
    envelope, token = cipher.seal(spec.value)
    assert envelope is not None and token is not None
    assert envelope[0] == 2, "the library's writers write format 2"
    master_key = format1.MASTER_KEYS[spec.version]
    value_from, plaintext = json_form(spec.value)
    normalise = format1.NORMALIZE[spec.normalize]
    token_value = normalise(spec.value) if spec.normalize != "none" else spec.value
    aad = envelope[:HEADER_SIZE] + spec.context.encode("utf-8") + b"\x00" + codec.tag.encode()
    return {
        "id": spec.id,
        "kdf": spec.kdf,
        "version": spec.version,
        "context": spec.context,
        "type": spec.type,
        "value_from": value_from,
        "plaintext": plaintext,
        "normalize": spec.normalize,
        "nonce": envelope[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE].hex(),
        "encoded": codec.encode(spec.value).hex(),
        "data_key": derive_key(master_key, KeyPurpose.DATA, spec.context, kdf).hex(),
        "search_key": derive_key(master_key, KeyPurpose.SEARCH, spec.context, kdf).hex(),
        "aad": aad.hex(),
        "envelope": envelope.hex(),
        "envelope_base64": base64.b64encode(envelope).decode("ascii"),
        "token_input": codec.encode(token_value).hex(),
        "token": token.hex(),
    }


render = format1.render


def main(argv: list[str] | None = None) -> int:
    return format1.write_or_check(argv, FORMAT2_FILE, build_document, len(SPECS), __doc__, __file__)


if __name__ == "__main__":
    raise SystemExit(main())
