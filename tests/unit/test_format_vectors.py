"""The frozen vectors of formats 1 and 2 agree three ways: the files, the code and docs/FORMAT.md.

1. Each envelope decrypts through the public API to its value.
2. Re-encrypting the value with the case's nonce (in the file's format) reproduces the envelope
   and token byte for byte.
3. Each envelope and token is recomputed from FORMAT.md's recipe with nothing but
   cryptography's HKDF / PBKDF2HMAC / AESGCM and the stdlib's hmac, never our cipher.

So a format change (encoding, key derivation, header, associated data, token) cannot slip in:
it fails here until the vectors are regenerated on purpose (tests/vectors/make_format1.py,
make_format2.py). Format 2 also binds the value's type: every format-2 envelope is refused
when read as a type with another tag, and when its format byte is rewritten to 01.
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
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from encmigrate import DecryptionError, Keyring, KeyState, decrypt_field, get_searchable_cipher
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import CODECS, TYPE_NAMES, codec_for
from encmigrate.crypto.search import SearchableCipher
from encmigrate.keys.keyring import KeyVersion, MasterKey
from support.vectors import FORMAT1_FILE, VECTORS_DIR, Format1Case, load_format1

FORMAT2_FILE = VECTORS_DIR / "encmigrate_format2.json"
VECTORS = load_format1()
VECTORS2 = load_format1(FORMAT2_FILE)  # the same fields: the loader reads both files
FILES = {1: (FORMAT1_FILE, VECTORS), 2: (FORMAT2_FILE, VECTORS2)}
CASES = [
    pytest.param(fmt, case, id=f"f{fmt}-{case.id}")
    for fmt, (_, vectors) in FILES.items()
    for case in vectors.cases
]
CASES2 = [pytest.param(case, id=case.id) for case in VECTORS2.cases]


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


DOC_TYPE_TAGS = {
    "string": "string",
    "text": "string",
    "integer": "integer",
    "bigint": "integer",
    "float": "float",
    "numeric": "numeric",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "binary": "binary",
    "json": "json",
}
"""FORMAT.md section 2: the tag format 2 binds; types that share an encoding share a tag."""


def doc_aad(envelope_format: int, version: int, context: str, type_name: str) -> bytes:
    """FORMAT.md section 2: header || UTF-8(context) [|| 00 || ASCII(type tag) in format 2]."""
    header = bytes([envelope_format]) + version.to_bytes(4, "big")
    aad = header + context.encode("utf-8")
    if envelope_format == 2:
        aad += b"\x00" + DOC_TYPE_TAGS[type_name].encode("ascii")
    return aad


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


# -- the files themselves -----------------------------------------------------------


@pytest.mark.parametrize("envelope_format", sorted(FILES))
def test_vectors_cover_every_type_both_kdfs_both_versions_and_a_non_ascii_context(
    envelope_format: int,
) -> None:
    vectors = FILES[envelope_format][1]
    cases = vectors.cases
    assert {case.type for case in cases} == set(CODECS)
    assert {case.kdf for case in cases} == {"hkdf-sha256", "pbkdf2-sha256"}
    assert {(case.kdf, case.version) for case in cases} == {
        (kdf, version) for kdf in ("hkdf-sha256", "pbkdf2-sha256") for version in (1, 7)
    }
    assert any(not case.context.isascii() for case in cases)
    assert any(case.normalize != "none" and case.token_input != case.encoded for case in cases)
    assert vectors.pbkdf2_iterations == 100_000


@pytest.mark.parametrize("envelope_format", sorted(FILES))
def test_the_committed_file_is_exactly_what_the_generator_writes(envelope_format: int) -> None:
    generator = _load_generator(f"make_format{envelope_format}")
    path = FILES[envelope_format][0]
    assert generator.render(generator.build_document()) == path.read_text("utf-8")


def test_the_format_2_file_lists_the_documented_type_tags() -> None:
    document = json.loads(FORMAT2_FILE.read_text("utf-8"))
    assert document["envelope_format"] == 2
    assert document["type_tags"] == DOC_TYPE_TAGS
    assert {name: codec.tag for name, codec in CODECS.items()} == DOC_TYPE_TAGS


def test_no_nonce_of_the_format_2_file_repeats_one_of_format_1_under_the_same_key() -> None:
    used = {(c.kdf, c.version, c.context, c.nonce) for c in VECTORS.cases}
    assert not any((c.kdf, c.version, c.context, c.nonce) in used for c in VECTORS2.cases)


def _load_generator(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, VECTORS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_header_shows_format_and_version_and_the_size_follows_the_encoding(
    envelope_format: int, case: Format1Case
) -> None:
    envelope = case.envelope
    assert envelope[0] == envelope_format
    assert int.from_bytes(envelope[1:5], "big") == case.version
    assert envelope[5:17] == case.nonce
    assert len(envelope) == 1 + 4 + 12 + len(case.encoded) + 16
    assert case.aad == doc_aad(envelope_format, case.version, case.context, case.type)
    assert base64.b64decode(case.envelope_base64, validate=True) == envelope


# -- 1. the code reads the files ------------------------------------------------------


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_envelope_decrypts_to_its_value_through_the_public_api(
    envelope_format: int, case: Format1Case
) -> None:
    ring = both_versions_ring(case.kdf)
    for stored in (case.envelope, case.envelope_base64):
        value = decrypt_field(stored, context=case.context, type=case.type, keyring=ring)
        assert_same_value(value, case.value)


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_token_is_found_by_a_lookup_under_any_readable_version(
    envelope_format: int, case: Format1Case
) -> None:
    ring = both_versions_ring(case.kdf)
    cipher = get_searchable_cipher(
        case.context, normalize=case.normalize, type=case.type, keyring=ring
    )
    assert case.token in cipher.lookup_tokens(case.value)


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_envelope_does_not_decrypt_in_another_context(
    envelope_format: int, case: Format1Case
) -> None:
    ring = both_versions_ring(case.kdf)
    with pytest.raises(DecryptionError):
        decrypt_field(case.envelope, context=case.context + ".x", type=case.type, keyring=ring)


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_envelope_with_its_format_byte_swapped_does_not_decrypt(
    envelope_format: int, case: Format1Case
) -> None:
    """No downgrade to format 1 (which has no type check), nor the other way round."""
    ring = both_versions_ring(case.kdf)
    swapped = bytes([3 - envelope_format]) + case.envelope[1:]
    with pytest.raises(DecryptionError):
        decrypt_field(swapped, context=case.context, type=case.type, keyring=ring)


@pytest.mark.parametrize("case", CASES2)
def test_format_2_envelope_is_refused_as_any_type_with_another_tag(case: Format1Case) -> None:
    ring = both_versions_ring(case.kdf)
    own_tag = DOC_TYPE_TAGS[case.type]
    for other in TYPE_NAMES:
        if DOC_TYPE_TAGS[other] == own_tag:
            value = decrypt_field(case.envelope, context=case.context, type=other, keyring=ring)
            assert_same_value(value, case.value)  # text/string, bigint/integer: one encoding
            continue
        with pytest.raises(DecryptionError):
            decrypt_field(case.envelope, context=case.context, type=other, keyring=ring)


def test_format_1_is_read_without_a_type_check_as_documented() -> None:
    """FORMAT.md: a format-1 value read as another type decodes as what its bytes mean there."""
    case = next(c for c in VECTORS.cases if c.id == "hkdf-v1-integer-zero")
    ring = both_versions_ring(case.kdf)
    assert decrypt_field(case.envelope, context=case.context, type="boolean", keyring=ring) is False
    twin = next(c for c in VECTORS2.cases if c.id == case.id)
    with pytest.raises(DecryptionError):
        decrypt_field(twin.envelope, context=twin.context, type="boolean", keyring=ring)


# -- 2. the code writes the files ---------------------------------------------------------


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_encoding_is_the_codecs_output(envelope_format: int, case: Format1Case) -> None:
    assert codec_for(case.type).encode(case.value) == case.encoded


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_re_encrypting_with_the_same_nonce_gives_the_same_envelope_and_token(
    envelope_format: int, case: Format1Case
) -> None:
    keys = single_version_ring(case.kdf, case.version).derived_keys
    codec = codec_for(case.type)
    plain = FieldCipher(
        keys, case.context, codec, nonces=replay(case.nonce), write_format=envelope_format
    )
    assert plain.encrypt(case.value) == case.envelope
    searchable = SearchableCipher(
        keys,
        case.context,
        codec,
        normalize=case.normalize,
        nonces=replay(case.nonce),
        write_format=envelope_format,
    )
    sealed = searchable.seal(case.value)
    assert sealed.ciphertext == case.envelope
    assert sealed.token == case.token


@pytest.mark.parametrize("case", CASES2)
def test_writers_write_format_2_by_default(case: Format1Case) -> None:
    keys = single_version_ring(case.kdf, case.version).derived_keys
    cipher = FieldCipher(keys, case.context, codec_for(case.type), nonces=replay(case.nonce))
    assert cipher.encrypt(case.value) == case.envelope


# -- 3. the doc's recipe gives the files --------------------------------------------------


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_encoding_follows_the_documented_table(envelope_format: int, case: Format1Case) -> None:
    assert doc_encode(case.type, case.value) == case.encoded
    if case.normalize != "none":
        normalised = DOC_NORMALIZE[case.normalize](case.value)
        assert doc_encode(case.type, normalised) == case.token_input
    else:
        assert case.token_input == case.encoded


@pytest.mark.parametrize(("envelope_format", "case"), CASES)
def test_envelope_and_token_follow_the_documented_recipe(
    envelope_format: int, case: Format1Case
) -> None:
    data_key, search_key = doc_keys(case.kdf, case.version, case.context)
    assert data_key == case.data_key
    assert search_key == case.search_key

    header = bytes([envelope_format]) + case.version.to_bytes(4, "big")
    aad = doc_aad(envelope_format, case.version, case.context, case.type)
    sealed = AESGCM(data_key).encrypt(case.nonce, case.encoded, aad)  # ciphertext || tag
    assert header + case.nonce + sealed == case.envelope
    opened = AESGCM(data_key).decrypt(case.envelope[5:17], case.envelope[17:], aad)
    assert opened == case.encoded

    token = hmac.digest(search_key, case.token_input, "sha256")
    assert hmac.compare_digest(token, case.token)


@pytest.mark.parametrize("case", CASES2)
def test_format_2_tag_check_holds_with_bare_primitives(case: Format1Case) -> None:
    """The recipe's AAD with any other tag fails GCM authentication: the type is bound."""
    data_key = doc_keys(case.kdf, case.version, case.context)[0]
    own_tag = DOC_TYPE_TAGS[case.type]
    for tag in sorted(set(DOC_TYPE_TAGS.values()) - {own_tag}):
        header = case.envelope[:5]
        aad = header + case.context.encode("utf-8") + b"\x00" + tag.encode("ascii")
        with pytest.raises(InvalidTag):
            AESGCM(data_key).decrypt(case.envelope[5:17], case.envelope[17:], aad)


@pytest.mark.parametrize("envelope_format", sorted(FILES))
def test_the_worked_example_of_format_md_is_the_first_case_of_each_file(
    envelope_format: int,
) -> None:
    """Section 9 quotes these bytes: a regenerated file must come with an updated doc."""
    text = (VECTORS_DIR.parents[1] / "docs" / "FORMAT.md").read_text("utf-8")
    case = FILES[envelope_format][1].cases[0]
    assert case.id == "hkdf-v1-string-ascii"
    envelope = case.envelope
    quoted = " ".join(f"`{part.hex()}`" for part in (envelope[:5], case.nonce))
    assert quoted + f" `{envelope[17:-16].hex()}` `{envelope[-16:].hex()}`" in text
    assert f"`{case.envelope_base64}`" in text
