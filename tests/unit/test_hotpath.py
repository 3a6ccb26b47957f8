"""The per-value path of the column types agrees with FieldCipher on every input.

It may only skip work for values that are good: every bad value (tampered,
truncated, foreign, under a disabled version, in another context) must end in
the crypto core's one DecryptionError, and values under several key versions
must all open.
"""

from __future__ import annotations

import pytest

from encmigrate import DecryptionError, Keyring, KeyState, get_cipher, get_searchable_cipher
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import codec_for
from encmigrate.crypto.envelope import envelope_to_text
from encmigrate.crypto.hotpath import HotPath

FIRST = Keyring.generate()
ROTATED = FIRST.rotated()


def hot(ring: Keyring, context: str = "customer.email", type_name: str = "string") -> HotPath:
    return HotPath(get_cipher(context, type=type_name, keyring=ring))


def test_sealed_values_are_field_cipher_envelopes_and_back() -> None:
    path = hot(ROTATED)
    cipher = get_cipher("customer.email", keyring=ROTATED)
    sealed = path.seal("alice@example.com")
    assert sealed[:5] == b"\x02\x00\x00\x00\x02"
    assert cipher.decrypt(sealed) == "alice@example.com"
    assert path.open(cipher.encrypt("bob@example.com")) == "bob@example.com"


def test_values_under_different_readable_versions_all_open_in_any_order() -> None:
    old = get_cipher("customer.email", keyring=FIRST)
    new = get_cipher("customer.email", keyring=ROTATED)
    blobs = [
        old.encrypt("a"),
        new.encrypt("b"),
        old.encrypt("c"),
        old.encrypt("d"),
        new.encrypt("e"),
    ]
    path = hot(ROTATED)
    assert [path.open(b) for b in blobs] == ["a", "b", "c", "d", "e"]


def test_memoryview_bytearray_and_base64_text_open_too() -> None:
    path = hot(FIRST)
    sealed = path.seal("x")
    assert path.open(memoryview(sealed)) == "x"
    assert path.open(bytearray(sealed)) == "x"
    assert path.open(envelope_to_text(sealed)) == "x"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated tag
        lambda b: b[:20],
        lambda b: b"",
        lambda b: b[:17] + bytes([b[17] ^ 1]) + b[18:],  # tampered ciphertext
        lambda b: b"\x03" + b[1:],  # unknown format
        lambda b: b"\x01" + b[1:],  # format 2 rewritten as format 1 (no type check)
        lambda b: 12345,  # not bytes at all (SQLite stores what it is given)
        lambda b: b[:1] + b"\x00\x00\x00\x09" + b[5:],  # unknown version
        lambda b: b[:1] + b"\x00\x00\x00\x00" + b[5:],  # version 0
        lambda b: "not base64!",
    ],
)
def test_every_damaged_value_raises_decryption_error(damage: object) -> None:
    path = hot(FIRST)
    sealed = path.seal("secret value")
    with pytest.raises(DecryptionError) as caught:
        path.open(damage(sealed))  # type: ignore[operator]
    assert "secret value" not in str(caught.value)


def test_a_value_from_another_context_raises() -> None:
    other = hot(FIRST, context="customer.phone")
    with pytest.raises(DecryptionError, match=r"customer\.email"):
        hot(FIRST).open(other.seal("555"))


def test_a_value_under_a_disabled_version_raises_even_after_that_version_opened() -> None:
    old_value = get_cipher("customer.email", keyring=FIRST).encrypt("old")
    readable = hot(ROTATED)
    assert readable.open(old_value) == "old"
    disabled = hot(ROTATED.with_state(1, KeyState.DISABLED))
    with pytest.raises(DecryptionError) as caught:
        disabled.open(old_value)
    assert caught.value.version == 1


def test_a_value_written_as_another_type_raises() -> None:
    as_text = get_cipher("customer.age", type="string", keyring=FIRST).encrypt("x")
    with pytest.raises(DecryptionError, match="another context or type"):
        hot(FIRST, context="customer.age", type_name="binary").open(as_text)


def test_a_format_1_payload_that_does_not_decode_as_the_type_raises() -> None:
    keys = FIRST.derived_keys
    as_text = FieldCipher(keys, "customer.age", codec_for("string"), write_format=1).encrypt("xyz")
    with pytest.raises(DecryptionError, match="boolean"):
        hot(FIRST, context="customer.age", type_name="boolean").open(as_text)


def test_format_1_values_open_and_the_type_is_not_checked() -> None:
    old = FieldCipher(FIRST.derived_keys, "customer.email", codec_for("string"), write_format=1)
    path = hot(FIRST)
    assert path.open(old.encrypt("a")) == "a"
    assert path.open(path.seal("b")) == "b"  # format 2 after format 1: learned separately
    assert path.open(old.encrypt("c")) == "c"


def test_repr_names_context_and_type_only() -> None:
    text = repr(hot(FIRST))
    assert "customer.email" in text
    assert FIRST.versions[0].key is not None
    assert FIRST.versions[0].key.to_base64() not in text


def test_lookup_tokens_equal_the_searchable_cipher_s_under_every_readable_version() -> None:
    cipher = get_searchable_cipher("customer.email", normalize="lower", keyring=ROTATED)
    path = HotPath(cipher)
    assert path.lookup_tokens("Ann@X.org") == cipher.lookup_tokens("ann@x.org")
    assert len(path.lookup_tokens("Ann@X.org")) == 2
    assert path.lookup_tokens(None) == []
    only_current = HotPath(
        get_searchable_cipher(
            "customer.email", normalize="lower", keyring=ROTATED.with_state(1, KeyState.DISABLED)
        )
    )
    assert only_current.lookup_tokens("ann@x.org") == [cipher.token("ann@x.org")]


def test_lookup_tokens_need_a_searchable_cipher() -> None:
    with pytest.raises(TypeError, match="no search tokens"):
        hot(FIRST).lookup_tokens("x")
