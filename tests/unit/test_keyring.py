"""The keyring document, its states, and what each operation does to readability."""

from __future__ import annotations

import base64
import json
import os

import pytest

from encmigrate import DecryptionError, KeyConfigError, KeyStateError, get_cipher
from encmigrate.keys import Keyring, KeyState
from encmigrate.keys.keyring import decode_master_key

KEY = bytes(range(32))


def test_generated_keyring_has_one_active_random_version() -> None:
    first, second = Keyring.generate(), Keyring.generate()
    assert first.current == 1
    assert [v.state for v in first.versions] == [KeyState.ACTIVE]
    assert first.master_key(1) != second.master_key(1)
    assert len(first.master_key(1)) == 32


def test_json_round_trip_keeps_everything() -> None:
    keyring = Keyring.generate().rotated()
    again = Keyring.from_json(keyring.to_json())
    assert again.current == 2
    assert again.master_key(1) == keyring.master_key(1)
    assert again.master_key(2) == keyring.master_key(2)
    assert [v.state for v in again.versions] == [KeyState.RETIRED, KeyState.ACTIVE]


def test_rotation_keeps_old_ciphertext_readable_and_encrypts_with_new_version() -> None:
    keyring = Keyring.generate()
    old_blob = get_cipher("t.c", keyring=keyring).encrypt("before")
    rotated = keyring.rotated()
    cipher = get_cipher("t.c", keyring=rotated)
    assert cipher.decrypt(old_blob) == "before"
    new_blob = cipher.encrypt("after")
    assert new_blob[1:5] == (2).to_bytes(4, "big")
    assert cipher.decrypt(new_blob) == "after"


def test_disable_refuses_decryption_and_enable_restores_it() -> None:
    keyring = Keyring.generate()
    blob = get_cipher("t.c", keyring=keyring).encrypt("secret value")
    disabled = keyring.rotated().with_state(1, KeyState.DISABLED)
    with pytest.raises(DecryptionError) as caught:
        get_cipher("t.c", keyring=disabled).decrypt(blob)
    assert caught.value.version == 1
    assert "disabled" in str(caught.value)
    enabled = disabled.with_state(1, KeyState.RETIRED)
    assert get_cipher("t.c", keyring=enabled).decrypt(blob) == "secret value"


def test_destroy_is_permanent() -> None:
    keyring = Keyring.generate()
    blob = get_cipher("t.c", keyring=keyring).encrypt("gone")
    destroyed = keyring.rotated().destroyed(1)
    assert destroyed.get(1).key is None
    assert '"key": null' in destroyed.to_json()
    with pytest.raises(DecryptionError):
        get_cipher("t.c", keyring=destroyed).decrypt(blob)
    with pytest.raises(KeyStateError, match="destroyed"):
        destroyed.with_state(1, KeyState.RETIRED)
    with pytest.raises(KeyStateError, match="already destroyed"):
        destroyed.destroyed(1)


def test_current_version_cannot_be_disabled_or_destroyed() -> None:
    keyring = Keyring.generate()
    with pytest.raises(KeyStateError, match="current"):
        keyring.with_state(1, KeyState.DISABLED)
    with pytest.raises(KeyStateError, match="rotate"):
        keyring.destroyed(1)


def test_wipe_zeroes_material_in_memory() -> None:
    keyring = Keyring.generate()
    entry = keyring.get(1)
    keyring.wipe()
    with pytest.raises(KeyStateError, match="wiped"):
        keyring.master_key(1)
    assert entry.key is not None and not any(entry.key._buffer)


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
    ],
    ids=["standard", "urlsafe", "urlsafe-unpadded"],
)
def test_master_key_accepts_standard_and_urlsafe_base64(encode: object) -> None:
    material = bytes([0xFB, 0xFF] * 16)  # produces + / or - _ in the encodings
    text = encode(material).decode()  # type: ignore[operator]
    assert decode_master_key(text).reveal() == material


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (base64.b64encode(os.urandom(16)).decode(), "32 bytes, got 16"),
        ("not base64!!", "not valid base64"),
        ("", "empty"),
    ],
    ids=["short", "not-base64", "empty"],  # the same ids in every process (pytest -n)
)
def test_bad_master_keys_are_refused_without_echoing_them(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        decode_master_key(text)
    if text:
        assert text not in str(caught.value)


def _document(**changes: object) -> str:
    doc: dict[str, object] = {
        "format": "encmigrate-keyring/1",
        "kdf": "hkdf-sha256",
        "current": 1,
        "versions": [
            {
                "version": 1,
                "key": base64.b64encode(KEY).decode(),
                "state": "active",
                "created": "2026-01-05T10:00:00Z",
            }
        ],
    }
    doc.update(changes)
    return json.dumps(doc)


def test_every_field_problem_is_reported_at_once_with_its_location() -> None:
    short = base64.b64encode(b"x" * 16).decode()
    text = _document(
        kdf="md5",
        versions=[
            {"version": 1, "key": short, "state": "active"},
            {"version": 2, "key": None, "state": "weird"},
        ],
    )
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_json(text, source="keyring.json")
    message = str(caught.value)
    assert "keyring.json: 3 problems" in message
    assert "kdf:" in message
    assert "versions[0].key" in message and "32 bytes" in message
    assert "versions[1].state" in message
    assert short not in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"versions": []}, "at least one version"),
        ({"current": 2}, "current version 2 is not in versions"),
        (
            {
                "versions": [
                    {"version": 1, "key": base64.b64encode(KEY).decode(), "state": "active"},
                    {"version": 1, "key": base64.b64encode(KEY).decode(), "state": "retired"},
                ]
            },
            "duplicate versions: 1",
        ),
        (
            {
                "versions": [
                    {"version": 1, "key": base64.b64encode(KEY).decode(), "state": "retired"}
                ]
            },
            "exactly one version must be active",
        ),
        (
            {
                "versions": [
                    {"version": 1, "key": base64.b64encode(KEY).decode(), "state": "destroyed"}
                ]
            },
            "destroyed version must have key null",
        ),
        ({"format": "other/2"}, "format"),
        # 10**9 days loaded, then `keys status` overflowed computing the due date.
        ({"rotation_days": 10**9}, "rotation_days"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_inconsistent_keyrings_are_refused(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(KeyConfigError, match=expected):
        Keyring.from_json(_document(**changes))


def test_unreadable_json_is_refused_clearly() -> None:
    with pytest.raises(KeyConfigError, match="not valid JSON"):
        Keyring.from_json("{nope", source="k.json")
    with pytest.raises(KeyConfigError, match="expected a JSON object"):
        Keyring.from_json("[1, 2]")


def test_repr_and_str_never_show_key_material() -> None:
    keyring = Keyring.generate().rotated()
    material = [base64.b64encode(keyring.master_key(v)).decode() for v in (1, 2)]
    texts = [
        repr(keyring),
        str(keyring),
        repr(keyring.versions),
        repr(keyring.derived_keys),
        repr(get_cipher("a.b", keyring=keyring)),
    ]
    for text in texts:
        for secret in material:
            assert secret not in text
        assert keyring.master_key(1).hex() not in text


def test_pbkdf2_keyring_derives_different_keys_than_hkdf() -> None:
    hkdf = Keyring.from_json(_document())
    pbkdf2 = Keyring.from_json(_document(kdf="pbkdf2-sha256"))
    blob = get_cipher("t.c", keyring=hkdf).encrypt("v")
    with pytest.raises(DecryptionError):
        get_cipher("t.c", keyring=pbkdf2).decrypt(blob)
    assert (
        get_cipher("t.c", keyring=pbkdf2).decrypt(get_cipher("t.c", keyring=pbkdf2).encrypt("v"))
        == "v"
    )


def test_master_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from encmigrate.keys import master_key as master_key_module

    calls: list[tuple[bytes, bytes]] = []
    real = master_key_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(master_key_module.hmac, "compare_digest", spy)
    one = decode_master_key(base64.b64encode(KEY).decode())
    same = decode_master_key(base64.b64encode(KEY).decode())
    other = decode_master_key(base64.b64encode(bytes(32)).decode())
    assert one == same and one != other
    assert calls == [(KEY, KEY), (KEY, bytes(32))]


def test_deeply_nested_keyring_json_is_refused_in_one_line() -> None:
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_json('{"versions":' * 100_000 + "1" + "}" * 100_000)
    assert str(caught.value) == (
        "keyring: nested too deeply to be a keyring; expected an encmigrate-keyring/1 document"
    )


def test_audit_key_is_derived_per_version_and_absent_once_destroyed() -> None:
    keyring = Keyring.generate().rotated()
    first, second = keyring.audit_key(1), keyring.audit_key(2)
    assert first is not None and second is not None and first != second
    assert first not in (keyring.master_key(1), keyring.master_key(2))
    assert keyring.with_state(1, KeyState.DISABLED).audit_key(1) == first
    assert keyring.destroyed(1).audit_key(1) is None and keyring.audit_key(9) is None
