"""The top-level API: names, call shapes and defaults users rely on."""

from __future__ import annotations

import base64
import importlib
import re
from decimal import Decimal
from pathlib import Path

import pytest

from encmigrate import (
    DecryptionError,
    Keyring,
    Sealed,
    ValueTypeError,
    decrypt_field,
    encrypt_field,
    get_cipher,
    get_optimized_cipher,
    get_searchable_cipher,
)
from encmigrate.keys import reset_default_keyring

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
EXACT_HEADING = "**Packages whose `__all__` is exactly the public names.**"
SINGLE_HEADING = "**Single names of other modules.**"
EXACT_MODULES = (
    "encmigrate",
    "encmigrate.crypto",
    "encmigrate.fields",
    "encmigrate.keys",
    "encmigrate.migrate",
    "encmigrate.monitoring",
)
_ROW = re.compile(r"^\| `(encmigrate[\w.]*)` \| ([^|]+) \|", re.MULTILINE)


def _documented(heading: str) -> dict[str, set[str]]:
    """Module -> names, from the table after ``heading`` in the page's "Public API" section."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text[text.index("## 12. Public API") :]
    table = section[section.index(heading) :]
    following = table.find("**", len(heading))
    table = table if following == -1 else table[:following]
    names: dict[str, set[str]] = {}
    for module, cell in _ROW.findall(table):
        names.setdefault(module, set()).update(re.findall(r"`(\w+)`", cell))
    return names


def test_public_api_section_lists_the_packages_users_import() -> None:
    exact = _documented(EXACT_HEADING)
    assert set(exact) == set(EXACT_MODULES)
    readme_calls = {"encrypt_field", "decrypt_field", "get_cipher", "get_searchable_cipher"}
    assert (
        readme_calls | {"DecryptionError", "DecryptionCause", "EncryptedString"}
        <= exact["encmigrate"]
    )
    assert {"render_item", "VIEW_OF", "SearchTokenIndex"} <= exact["encmigrate.fields"]
    assert {"reset_default_keyring", "KeyManager"} <= exact["encmigrate.keys"]
    assert {"migrate_data", "verify", "connect"} <= exact["encmigrate.migrate"]


@pytest.mark.parametrize("module_name", EXACT_MODULES)
def test_public_surface_is_exactly_the_documented_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == _documented(EXACT_HEADING)[module_name]
    assert len(module.__all__) == len(set(module.__all__)), "a name listed twice"
    for name in module.__all__:
        assert hasattr(module, name), name


def test_single_public_names_of_other_modules_exist() -> None:
    single = _documented(SINGLE_HEADING)
    assert "encmigrate.boundary" in single and "encmigrate.monitoring.metered" in single
    for module_name, names in single.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name}"


def test_get_optimized_cipher_is_an_alias_of_get_cipher() -> None:
    keyring = Keyring.generate()
    alias = get_optimized_cipher("c", type="integer", keyring=keyring)
    assert type(alias) is type(get_cipher("c", type="integer", keyring=keyring))
    assert get_cipher("c", type="integer", keyring=keyring).decrypt(alias.encrypt(7)) == 7
    assert "alias of :func:`get_cipher`" in (get_optimized_cipher.__doc__ or "")


@pytest.fixture
def env_keyring(monkeypatch: pytest.MonkeyPatch) -> Keyring:
    keyring = Keyring.generate()
    for name in (
        "ENCMIGRATE_MASTER_KEY",
        "ENCMIGRATE_KEYRING_FILE",
        "ENCMIGRATE_ENV_PREFIX",
        "ENCMIGRATE_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENCMIGRATE_KEYRING", keyring.to_json())
    reset_default_keyring()
    yield keyring
    reset_default_keyring()


def test_encrypt_and_decrypt_field_with_the_configured_keyring(env_keyring: Keyring) -> None:
    blob = encrypt_field("alice@example.com")
    assert isinstance(blob, bytes)
    assert decrypt_field(blob) == "alice@example.com"
    assert get_cipher(keyring=env_keyring).decrypt(blob) == "alice@example.com"


def test_searchable_encrypt_field_returns_ciphertext_and_token(env_keyring: Keyring) -> None:
    sealed = encrypt_field(
        "Alice@Example.com", searchable=True, context="customer.email", normalize="lower"
    )
    assert isinstance(sealed, Sealed)
    blob, token = sealed
    assert decrypt_field(blob, context="customer.email") == "Alice@Example.com"
    search = get_searchable_cipher("customer.email", normalize="lower")
    assert token == search.token("alice@example.com")
    assert token in search.lookup_tokens("ALICE@EXAMPLE.COM")


def test_typed_fields_round_trip(env_keyring: Keyring) -> None:
    blob = encrypt_field(Decimal("10.20"), type="numeric", context="acct.balance")
    assert decrypt_field(blob, type="numeric", context="acct.balance") == Decimal("10.20")
    assert str(decrypt_field(blob, type="numeric", context="acct.balance")) == "10.20"


def test_none_is_never_encrypted(env_keyring: Keyring) -> None:
    assert encrypt_field(None) is None
    assert decrypt_field(None) is None
    assert encrypt_field(None, searchable=True) == Sealed(None, None)


def test_context_binds_the_ciphertext_to_its_column() -> None:
    keyring = Keyring.generate()
    blob = get_cipher("customer.email", keyring=keyring).encrypt("a@b.c")
    with pytest.raises(DecryptionError) as caught:
        get_cipher("customer.phone", keyring=keyring).decrypt(blob)
    assert caught.value.context == "customer.phone" and caught.value.version == 1
    assert "a@b.c" not in str(caught.value)


def test_wrong_keyring_fails_with_decryption_error() -> None:
    blob = get_cipher(keyring=Keyring.generate()).encrypt("x")
    with pytest.raises(DecryptionError):
        get_cipher(keyring=Keyring.generate()).decrypt(blob)


def test_unknown_type_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="string, text, integer"):
        get_cipher(type="money", keyring=Keyring.generate())


def test_wrong_python_type_is_a_clear_error_that_hides_the_value() -> None:
    cipher = get_cipher("c", type="string", keyring=Keyring.generate())
    with pytest.raises(ValueTypeError, match="string field expects str, got int") as caught:
        cipher.encrypt(123456789)
    assert "123456789" not in str(caught.value)
    assert isinstance(caught.value, TypeError)


def test_batch_methods_agree_with_single_ones_and_keep_nones() -> None:
    keyring = Keyring.generate()
    cipher = get_cipher("c", keyring=keyring)
    values = ["a", None, "ü" * 100, "", None]
    blobs = cipher.batch_encrypt(values)
    assert [b is None for b in blobs] == [v is None for v in values]
    assert cipher.batch_decrypt(blobs) == values
    assert [cipher.decrypt(b) for b in blobs] == values
    assert cipher.batch_decrypt([]) == [] and cipher.batch_encrypt([]) == []


def test_batch_decrypt_reads_mixed_key_versions() -> None:
    keyring = Keyring.generate()
    old = get_cipher("c", keyring=keyring).batch_encrypt(["old1", "old2"])
    rotated = keyring.rotated()
    cipher = get_cipher("c", keyring=rotated)
    mixed = [cipher.encrypt("new1"), old[0], None, cipher.encrypt("new2"), old[1]]
    assert cipher.batch_decrypt(mixed) == ["new1", "old1", None, "new2", "old2"]


def test_batch_decrypt_raises_decryption_error_for_one_bad_value() -> None:
    cipher = get_cipher("c", keyring=Keyring.generate())
    blobs = cipher.batch_encrypt(["a", "b", "c"])
    broken = bytearray(blobs[1])  # type: ignore[arg-type]
    broken[-1] ^= 1
    with pytest.raises(DecryptionError):
        cipher.batch_decrypt([blobs[0], bytes(broken), blobs[2]])


def test_text_storage_base64_envelopes_decrypt() -> None:
    cipher = get_cipher("c", keyring=Keyring.generate())
    blob = cipher.encrypt("x")
    assert blob is not None
    assert cipher.decrypt(base64.b64encode(blob).decode()) == "x"
    with pytest.raises(DecryptionError, match="not an encmigrate envelope"):
        cipher.decrypt("%%% not base64 %%%")


def test_optimized_cipher_is_the_batch_path_of_the_same_format() -> None:
    keyring = Keyring.generate()
    fast = get_optimized_cipher("c", keyring=keyring)
    blobs = fast.batch_encrypt(["a", "b"])
    assert get_cipher("c", keyring=keyring).batch_decrypt(blobs) == ["a", "b"]
    nonces = {blob[5:17] for blob in fast.batch_encrypt(["v"] * 5000)}  # type: ignore[index]
    assert len(nonces) == 5000


def test_batch_decrypt_of_text_envelopes_and_bad_text() -> None:
    cipher = get_cipher("c", keyring=Keyring.generate())
    texts = [
        None if b is None else base64.b64encode(b).decode()
        for b in cipher.batch_encrypt(["x", None, "y"])
    ]
    assert cipher.batch_decrypt(texts) == ["x", None, "y"]
    with pytest.raises(DecryptionError, match="not an encmigrate envelope"):
        cipher.batch_decrypt([texts[0], "%%%"])


def test_lazily_exported_column_types_are_listed_consistently() -> None:
    import encmigrate.fields

    # The lazy names are derived from __all__: every column type of encmigrate.fields,
    # and nothing else, loads on first use.
    types = {n for n in encmigrate.fields.__all__ if n.startswith("Encrypted")}
    types = (types - {"EncryptedType"}) | {"SearchTokenIndex"}
    assert types == encmigrate._LAZY
    for name in types:
        assert getattr(encmigrate, name) is getattr(encmigrate.fields, name)


NOT_ENVELOPES = [12345, 1.5, object(), ["list"], {"k": "v"}, True]


@pytest.mark.parametrize("junk", NOT_ENVELOPES, ids=lambda j: type(j).__name__)
def test_batch_decrypt_of_anything_that_is_not_an_envelope_is_a_decryption_error(
    junk: object,
) -> None:
    cipher = get_cipher("c", keyring=Keyring.generate())
    blob = cipher.encrypt("x")
    for batch in ([junk, blob], [blob, junk], [None, junk], [junk]):
        with pytest.raises(DecryptionError, match="not an encmigrate envelope"):
            cipher.batch_decrypt(batch)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError, match="not an encmigrate envelope"):
        cipher.decrypt(junk)  # type: ignore[arg-type]


def test_a_value_read_as_another_type_is_a_decryption_error() -> None:
    keyring = Keyring.generate()
    as_int = get_cipher("customer.age", type="integer", keyring=keyring).encrypt(1)
    as_str = get_cipher("customer.age", type="string", keyring=keyring).encrypt("1")
    for type_name, blob in (("boolean", as_int), ("float", as_int), ("integer", as_str)):
        cipher = get_cipher("customer.age", type=type_name, keyring=keyring)
        with pytest.raises(DecryptionError, match="another context or type"):
            cipher.decrypt(blob)
        with pytest.raises(DecryptionError):
            cipher.batch_decrypt([blob, blob])
    # Types that share an encoding share the tag: widening a column keeps its values.
    assert get_cipher("customer.age", type="bigint", keyring=keyring).decrypt(as_int) == 1
    assert get_cipher("customer.age", type="text", keyring=keyring).decrypt(as_str) == "1"


SECRET = "1999-12-31 secret 4111-1111"


@pytest.mark.parametrize("type_name", ["date", "datetime", "time", "numeric", "json", "float"])
def test_a_payload_that_does_not_decode_never_echoes_the_value(type_name: str) -> None:
    """A format-1 string read as another type: the error names the type, never the value."""
    from encmigrate.crypto.cipher import FieldCipher
    from encmigrate.crypto.codecs import codec_for

    keyring = Keyring.generate()
    written = FieldCipher(keyring.derived_keys, "c", codec_for("string"), write_format=1)
    blob = written.encrypt(SECRET)
    cipher = get_cipher("c", type=type_name, keyring=keyring)
    for call in (cipher.decrypt, lambda b: cipher.batch_decrypt([b])):
        with pytest.raises(DecryptionError, match=f"does not decode as {type_name}") as caught:
            call(blob)
        error: BaseException | None = caught.value
        while error is not None:  # nor anything chained to it, which loggers print
            assert "secret" not in str(error) and "secret" not in repr(error)
            error = error.__cause__ or error.__context__


def test_argument_errors_do_not_repeat_the_argument() -> None:
    keyring = Keyring.generate()
    with pytest.raises(ValueError, match="type must be one of") as caught:
        get_cipher(type=SECRET, keyring=keyring)
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="normalize must be one of") as caught:
        get_searchable_cipher(normalize=SECRET, keyring=keyring)
    assert SECRET not in str(caught.value)
