"""The frozen format-1 vectors agree three ways: the file, the code and docs/FORMAT.md.

1. Each envelope decrypts through the public API to its value.
2. Re-encrypting the value with the case's nonce reproduces the envelope and token byte for byte.
3. Each envelope and token is recomputed from FORMAT.md's recipe with nothing but
   cryptography's HKDF / PBKDF2HMAC / AESGCM and the stdlib's hmac, never our cipher.

So a format change (encoding, key derivation, header, associated data, token) cannot slip in:
it fails here until the vectors are regenerated on purpose (tests/vectors/make_format1.py).
"""

from __future__ import annotations

import base64
import functools
import hmac
import importlib.util
import json
import struct
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from encmigrate import DecryptionError, Keyring, KeyState, decrypt_field, get_searchable_cipher
from encmigrate.crypto import CODECS, FieldCipher, SearchableCipher, codec_for
from encmigrate.keys.keyring import KeyVersion, MasterKey
from support.vectors import FORMAT1_FILE, VECTORS_DIR, Format1Case, load_format1

VECTORS = load_format1()
CASES = [pytest.param(case, id=case.id) for case in VECTORS.cases]


# -- the recipe of docs/FORMAT.md, written out with primitives only ----------------


def doc_derive(kdf: str, master_key: bytes, label: bytes) -> bytes:
    """FORMAT.md "Key derivation": HKDF info (or PBKDF2 salt) = label + context."""
    if kdf == "hkdf-sha256":
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master_key)
    assert kdf == "pbkdf2-sha256"
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=label, iterations=100_000).derive(
        master_key
    )


@functools.cache
def doc_keys(kdf: str, version: int, context: str) -> tuple[bytes, bytes]:
    master_key = VECTORS.master_keys[version]
    name = context.encode("utf-8")
    return (
        doc_derive(kdf, master_key, b"encmigrate/1/data/" + name),
        doc_derive(kdf, master_key, b"encmigrate/1/search/" + name),
    )


def doc_encode(type_name: str, value: Any) -> bytes:
    """FORMAT.md "Value encodings", one row per type."""
    if type_name in ("string", "text"):
        return bytes(value.encode("utf-8"))
    if type_name in ("integer", "bigint"):
        length = 1
        while not -(1 << (8 * length - 1)) <= value < 1 << (8 * length - 1):
            length += 1
        return bytes(value.to_bytes(length, "big", signed=True))
    if type_name == "float":
        return struct.pack(">d", value)
    if type_name == "numeric":
        return str(value).encode("ascii")
    if type_name == "boolean":
        return b"\x01" if value else b"\x00"
    if type_name in ("date", "datetime", "time"):
        return bytes(value.isoformat().encode("ascii"))
    if type_name == "binary":
        return bytes(value)
    assert type_name == "json"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


DOC_NORMALIZE: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "lower": str.lower,
    "casefold": str.casefold,
    "strip": str.strip,
    "lower+strip": lambda s: s.strip().lower(),
}


# -- keyrings holding the public test keys ------------------------------------------


@functools.cache
def single_version_ring(kdf: str, version: int) -> Keyring:
    """Encrypts under ``version``: the keyring each case was written with."""
    return Keyring.single(MasterKey(VECTORS.master_keys[version]), version, kdf=kdf)


@functools.cache
def both_versions_ring(kdf: str) -> Keyring:
    """Version 7 current and version 1 retired: reads every case of its KDF."""
    return Keyring.build(
        kdf=kdf,
        current=7,
        versions=[
            KeyVersion(version=1, key=MasterKey(VECTORS.master_keys[1]), state=KeyState.RETIRED),
            KeyVersion(version=7, key=MasterKey(VECTORS.master_keys[7]), state=KeyState.ACTIVE),
        ],
    )


def assert_same_value(actual: Any, expected: Any) -> None:
    """Equal, of the same type, and alike in what ``==`` ignores (-0.0, 10.20, offsets, order)."""
    assert type(actual) is type(expected)
    assert repr(actual) == repr(expected)


def replay(nonce: bytes) -> Any:
    """A nonce source that hands out exactly the case's nonce, once."""
    handed: list[bytes] = []

    def source(size: int) -> bytes:
        assert size == len(nonce) and not handed, "the cipher asked for an unexpected nonce"
        handed.append(nonce)
        return nonce

    return source


# -- the file itself ----------------------------------------------------------------


def test_vectors_cover_every_type_both_kdfs_both_versions_and_a_non_ascii_context() -> None:
    cases = VECTORS.cases
    assert {case.type for case in cases} == set(CODECS)
    assert {case.kdf for case in cases} == {"hkdf-sha256", "pbkdf2-sha256"}
    assert {(case.kdf, case.version) for case in cases} == {
        (kdf, version) for kdf in ("hkdf-sha256", "pbkdf2-sha256") for version in (1, 7)
    }
    assert any(not case.context.isascii() for case in cases)
    assert any(case.normalize != "none" and case.token_input != case.encoded for case in cases)
    assert VECTORS.pbkdf2_iterations == 100_000


def test_the_committed_file_is_exactly_what_the_generator_writes() -> None:
    generator = _load_generator()
    assert generator.render(generator.build_document()) == FORMAT1_FILE.read_text("utf-8")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_format1", VECTORS_DIR / "make_format1.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", CASES)
def test_header_shows_format_and_version_and_the_size_follows_the_encoding(
    case: Format1Case,
) -> None:
    envelope = case.envelope
    assert envelope[0] == 0x01
    assert int.from_bytes(envelope[1:5], "big") == case.version
    assert envelope[5:17] == case.nonce
    assert len(envelope) == 1 + 4 + 12 + len(case.encoded) + 16
    assert case.aad == envelope[:5] + case.context.encode("utf-8")
    assert base64.b64decode(case.envelope_base64, validate=True) == envelope


# -- 1. the code reads the file -------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_envelope_decrypts_to_its_value_through_the_public_api(case: Format1Case) -> None:
    ring = both_versions_ring(case.kdf)
    for stored in (case.envelope, case.envelope_base64):
        value = decrypt_field(stored, context=case.context, type=case.type, keyring=ring)
        assert_same_value(value, case.value)


@pytest.mark.parametrize("case", CASES)
def test_token_is_found_by_a_lookup_under_any_readable_version(case: Format1Case) -> None:
    ring = both_versions_ring(case.kdf)
    cipher = get_searchable_cipher(
        case.context, normalize=case.normalize, type=case.type, keyring=ring
    )
    assert case.token in cipher.lookup_tokens(case.value)


@pytest.mark.parametrize("case", CASES)
def test_envelope_does_not_decrypt_in_another_context(case: Format1Case) -> None:
    ring = both_versions_ring(case.kdf)
    with pytest.raises(DecryptionError):
        decrypt_field(case.envelope, context=case.context + ".x", type=case.type, keyring=ring)


# -- 2. the code writes the file --------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_encoding_is_the_codecs_output(case: Format1Case) -> None:
    assert codec_for(case.type).encode(case.value) == case.encoded


@pytest.mark.parametrize("case", CASES)
def test_re_encrypting_with_the_same_nonce_gives_the_same_envelope_and_token(
    case: Format1Case,
) -> None:
    keys = single_version_ring(case.kdf, case.version).derived_keys
    codec = codec_for(case.type)
    plain = FieldCipher(keys, case.context, codec, nonces=replay(case.nonce))
    assert plain.encrypt(case.value) == case.envelope
    searchable = SearchableCipher(
        keys, case.context, codec, normalize=case.normalize, nonces=replay(case.nonce)
    )
    sealed = searchable.seal(case.value)
    assert sealed.ciphertext == case.envelope
    assert sealed.token == case.token


# -- 3. the doc's recipe gives the file -------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_encoding_follows_the_documented_table(case: Format1Case) -> None:
    assert doc_encode(case.type, case.value) == case.encoded
    if case.normalize != "none":
        normalised = DOC_NORMALIZE[case.normalize](case.value)
        assert doc_encode(case.type, normalised) == case.token_input
    else:
        assert case.token_input == case.encoded


@pytest.mark.parametrize("case", CASES)
def test_envelope_and_token_follow_the_documented_recipe(case: Format1Case) -> None:
    data_key, search_key = doc_keys(case.kdf, case.version, case.context)
    assert data_key == case.data_key
    assert search_key == case.search_key

    header = bytes([0x01]) + case.version.to_bytes(4, "big")
    aad = header + case.context.encode("utf-8")
    sealed = AESGCM(data_key).encrypt(case.nonce, case.encoded, aad)  # ciphertext || tag
    assert header + case.nonce + sealed == case.envelope
    opened = AESGCM(data_key).decrypt(case.envelope[5:17], case.envelope[17:], aad)
    assert opened == case.encoded

    token = hmac.digest(search_key, case.token_input, "sha256")
    assert hmac.compare_digest(token, case.token)
