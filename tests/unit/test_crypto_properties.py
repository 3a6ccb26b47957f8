"""Properties of the crypto core, checked with Hypothesis.

* Every type round-trips through encrypt/decrypt, as bytes and as base64 text.
* Any truncation, extension or bit flip of a valid envelope, any bytes, text or other object
  that is not an envelope, and any envelope read as a type with another tag, raise
  ``DecryptionError``: never another exception, never a value.
* The batch methods agree with the single-value ones, with ``None`` mixed in and with several
  key versions in one ``batch_decrypt``.
* Search tokens are equal exactly when the normalised values are, and differ across contexts.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from encmigrate import DecryptionError, Keyring, KeyState
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import TYPE_NAMES, codec_for
from encmigrate.crypto.search import Normalize, SearchableCipher
from support.vectors import CounterNonces

PROPERTY = settings(max_examples=100, deadline=None)

RING = Keyring.generate()
ROTATED = RING.rotated()  # version 1 retired, version 2 current: reads both

# -- a strategy per type ------------------------------------------------------------------

# Whole seconds: the codecs refuse sub-second offsets (test_codecs.py), which no zone has.
FIXED_OFFSETS = st.integers(min_value=-86_399, max_value=86_399).map(
    lambda seconds: dt.timezone(dt.timedelta(seconds=seconds))
)
# Named zones are kept as their offset only; the wall time and the offset must survive.
DATETIME_ZONES = st.none() | FIXED_OFFSETS | st.timezones()
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a multi-line lambda: Hypothesis reads the extend function's
    # source to check that it uses its argument, and warns when it cannot tell.
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON_DOCUMENTS = st.recursive(JSON_LEAVES, _json_containers, max_leaves=12)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(),
    "text": st.text(min_size=0, max_size=2000),
    "integer": st.integers() | st.integers(min_value=-(2**200), max_value=2**200),
    "bigint": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "float": st.floats(),  # NaN and infinities too: they must survive bit for bit
    "numeric": st.decimals(),  # NaN, sNaN, infinities, any exponent
    "boolean": st.booleans(),
    "date": st.dates(),
    "datetime": st.datetimes(timezones=DATETIME_ZONES),
    "time": st.times(timezones=st.none() | FIXED_OFFSETS),
    "binary": st.binary(),
    "json": JSON_DOCUMENTS.filter(lambda v: v is not None),
}


def typed_values(type_name: str) -> st.SearchStrategy[tuple[str, Any]]:
    return VALUES[type_name].map(lambda value: (type_name, value))


ANY_TYPED_VALUE = st.sampled_from(TYPE_NAMES).flatmap(typed_values)


def assert_same(type_name: str, actual: Any, expected: Any) -> None:
    """``actual`` is ``expected``, including what ``==`` does not see."""
    if type_name == "float":
        assert struct.pack(">d", actual) == struct.pack(">d", expected)
    elif type_name == "numeric":
        assert actual.as_tuple() == expected.as_tuple()
    elif type_name in ("datetime", "time"):
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None)
        assert actual.utcoffset() == expected.utcoffset()
        assert (actual.tzinfo is None) == (expected.utcoffset() is None)
    elif type_name == "json":
        assert json.dumps(actual) == json.dumps(expected)  # key order included
    else:
        assert type(actual) is type(expected)
        assert actual == expected


def cipher(type_name: str, ring: Keyring = RING, context: str = "prop.field") -> FieldCipher:
    return FieldCipher(ring.derived_keys, context, codec_for(type_name))


def text_of(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@PROPERTY
@given(data=st.data())
def test_every_type_round_trips_as_bytes_and_as_text(type_name: str, data: st.DataObject) -> None:
    value = data.draw(VALUES[type_name], label="value")
    field = cipher(type_name)
    blob = field.encrypt(value)
    assert blob is not None
    assert_same(type_name, field.decrypt(blob), value)
    assert_same(type_name, field.decrypt(text_of(blob)), value)
    assert_same(type_name, field.decrypt(bytearray(blob)), value)
    assert_same(type_name, field.decrypt(memoryview(blob)), value)


@PROPERTY
@given(typed=ANY_TYPED_VALUE)
def test_encrypting_twice_gives_different_envelopes_of_the_same_value(
    typed: tuple[str, Any],
) -> None:
    type_name, value = typed
    field = cipher(type_name)
    first, second = field.encrypt(value), field.encrypt(value)
    assert first != second
    assert_same(type_name, field.decrypt(first), field.decrypt(second))


# -- tampering and garbage ------------------------------------------------------------------


def assert_refused(field: FieldCipher, blob: Any, valid: bytes) -> None:
    """``blob`` is refused alone, in a batch after a valid envelope, and as base64 text."""
    with pytest.raises(DecryptionError):
        field.decrypt(blob)
    # A valid envelope first sends batch_decrypt down its fast path for that version.
    with pytest.raises(DecryptionError):
        field.batch_decrypt([valid, blob])
    with pytest.raises(DecryptionError):
        field.batch_decrypt([blob, valid])
    with pytest.raises(DecryptionError):  # neither the first nor the last
        field.batch_decrypt([valid, blob, valid])
    if isinstance(blob, bytes):
        with pytest.raises(DecryptionError):
            field.decrypt(text_of(blob))


@PROPERTY
@given(typed=ANY_TYPED_VALUE)
def test_every_truncation_of_an_envelope_is_refused(typed: tuple[str, Any]) -> None:
    type_name, value = typed
    field = cipher(type_name)
    blob = field.encrypt(value)
    assert blob is not None
    for length in range(len(blob)):
        assert_refused(field, blob[:length], blob)


@PROPERTY
@given(typed=ANY_TYPED_VALUE, data=st.data())
def test_any_bit_flip_in_an_envelope_is_refused(
    typed: tuple[str, Any], data: st.DataObject
) -> None:
    type_name, value = typed
    field = cipher(type_name)
    blob = field.encrypt(value)
    assert blob is not None
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(blob) - 1), label="bit")
    flipped = bytearray(blob)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert_refused(field, bytes(flipped), blob)


@PROPERTY
@given(typed=ANY_TYPED_VALUE, tail=st.binary(min_size=1, max_size=64))
def test_any_extension_of_an_envelope_is_refused(typed: tuple[str, Any], tail: bytes) -> None:
    type_name, value = typed
    field = cipher(type_name)
    blob = field.encrypt(value)
    assert blob is not None
    assert_refused(field, blob + tail, blob)


@pytest.mark.parametrize("type_name", ["string", "json", "integer"])
@PROPERTY
@given(data=st.data())
def test_a_header_rewritten_to_another_version_or_format_is_refused(
    type_name: str, data: st.DataObject
) -> None:
    field = cipher(type_name, ROTATED)
    value = data.draw(VALUES[type_name], label="value")
    blob = field.encrypt(value)
    assert blob is not None
    header = data.draw(st.binary(min_size=5, max_size=5).filter(lambda h: h != blob[:5]))
    assert_refused(field, header + blob[5:], blob)


@PROPERTY
@given(garbage=st.binary(max_size=200))
@example(garbage=b"")
@example(garbage=b"\x01" + bytes(32))  # format byte, version 0
@example(garbage=b"\x01\x00\x00\x00\x01" + bytes(28))  # a real version, zero tag
def test_arbitrary_bytes_are_refused_with_decryption_error_only(garbage: bytes) -> None:
    field = cipher("string")
    valid = field.encrypt("x")
    assert valid is not None
    assert_refused(field, garbage, valid)
    with pytest.raises(DecryptionError):
        field.batch_decrypt([garbage])


@PROPERTY
@given(garbage=st.text(max_size=200) | st.binary(max_size=200).map(text_of))
@example(garbage="AQAAAAE=\n")
@example(garbage="é")
def test_arbitrary_text_is_refused_with_decryption_error_only(garbage: str) -> None:
    field = cipher("string")
    valid = field.encrypt("x")
    assert valid is not None
    assert_refused(field, garbage, valid)
    with pytest.raises(DecryptionError):
        field.batch_decrypt([garbage, None])


@PROPERTY
@given(typed=ANY_TYPED_VALUE)
def test_an_envelope_is_refused_in_another_context(typed: tuple[str, Any]) -> None:
    type_name, value = typed
    blob = cipher(type_name, context="customer.email").encrypt(value)
    with pytest.raises(DecryptionError):
        cipher(type_name, context="customer.phone").decrypt(blob)


@PROPERTY
@given(typed=ANY_TYPED_VALUE, data=st.data())
def test_an_envelope_is_refused_as_a_type_with_another_tag(
    typed: tuple[str, Any], data: st.DataObject
) -> None:
    """Format 2 binds the type: no value comes back as another type, whatever its bytes."""
    type_name, value = typed
    blob = cipher(type_name).encrypt(value)
    tag = codec_for(type_name).tag
    other = data.draw(st.sampled_from([t for t in TYPE_NAMES if codec_for(t).tag != tag]))
    reader = cipher(other)
    with pytest.raises(DecryptionError):
        reader.decrypt(blob)
    with pytest.raises(DecryptionError):
        reader.batch_decrypt([blob, None, blob])


NOT_ENVELOPES = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.binary(max_size=40), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.builds(object),
    st.tuples(st.binary(max_size=40)),
)


@PROPERTY
@given(junk=NOT_ENVELOPES, position=st.integers(0, 3), text=st.booleans())
def test_any_object_in_a_batch_is_refused_with_decryption_error_only(
    junk: Any, position: int, text: bool
) -> None:
    field = cipher("string")
    blobs: list[Any] = list(field.batch_encrypt(["a", "b", "c"]))
    if text:  # a text column: base64 envelopes first, then the same rule
        blobs = [text_of(b) for b in blobs]
    blobs.insert(position, junk)
    with pytest.raises(DecryptionError):
        field.batch_decrypt(blobs)
    with pytest.raises(DecryptionError):
        field.decrypt(junk)


# -- batches ----------------------------------------------------------------------------------


def with_nones(type_name: str) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.none() | VALUES[type_name], max_size=12)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_batch_encrypt_writes_what_single_encrypts_write_with_the_same_nonces(
    type_name: str, data: st.DataObject
) -> None:
    values = data.draw(with_nones(type_name), label="values")
    keys = RING.derived_keys
    batch = FieldCipher(keys, "prop.batch", codec_for(type_name), nonces=CounterNonces(7))
    single = FieldCipher(keys, "prop.batch", codec_for(type_name), nonces=CounterNonces(7))
    assert batch.batch_encrypt(values) == [single.encrypt(v) for v in values]


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_batch_decrypt_reads_what_single_decrypts_read(type_name: str, data: st.DataObject) -> None:
    values = data.draw(with_nones(type_name), label="values")
    field = cipher(type_name)
    blobs = field.batch_encrypt(values)
    assert [b is None for b in blobs] == [v is None for v in values]
    batch = field.batch_decrypt(blobs)
    singles = [field.decrypt(b) for b in blobs]
    for got, one, value in zip(batch, singles, values, strict=True):
        if value is None:
            assert got is None and one is None
        else:
            assert_same(type_name, got, value)
            assert_same(type_name, one, value)


@PROPERTY
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(["old", "new", "null"]), st.text(max_size=20), st.booleans()),
        max_size=16,
    )
)
def test_one_batch_decrypt_reads_envelopes_of_several_key_versions(
    entries: list[tuple[str, str, bool]],
) -> None:
    old, new = cipher("string", RING), cipher("string", ROTATED)
    blobs: list[Any] = []
    expected: list[str | None] = []
    for kind, value, as_text in entries:
        if kind == "null":
            blobs.append(None)
            expected.append(None)
            continue
        blob = (old if kind == "old" else new).encrypt(value)
        assert blob is not None
        blobs.append(text_of(blob) if as_text else blob)
        expected.append(value)
    assert new.batch_decrypt(blobs) == expected


@PROPERTY
@given(values=st.lists(st.text(max_size=10), min_size=1, max_size=8), position=st.integers(0, 8))
def test_a_batch_with_an_envelope_under_a_disabled_version_is_refused(
    values: list[str], position: int
) -> None:
    blobs: list[Any] = cipher("string", ROTATED).batch_encrypt(values)
    old_blob = cipher("string", RING).encrypt("under version 1")
    blobs.insert(min(position, len(blobs)), old_blob)
    disabled = ROTATED.with_state(1, KeyState.DISABLED)
    with pytest.raises(DecryptionError) as caught:
        cipher("string", disabled).batch_decrypt(blobs)
    assert caught.value.version == 1


# -- search tokens -------------------------------------------------------------------------

NORMALIZERS: dict[Normalize, Callable[[str], str]] = {
    Normalize.NONE: lambda s: s,
    Normalize.LOWER: str.lower,
    Normalize.CASEFOLD: str.casefold,
    Normalize.STRIP: str.strip,
    Normalize.LOWER_STRIP: lambda s: s.strip().lower(),
}


def searchable(
    normalize: Normalize = Normalize.NONE,
    context: str = "prop.search",
    ring: Keyring = RING,
    type_name: str = "string",
) -> SearchableCipher:
    return SearchableCipher(ring.derived_keys, context, codec_for(type_name), normalize=normalize)


@st.composite
def look_alike(draw: st.DrawFn, text: str) -> str:
    """``text`` with some letters' case changed and whitespace around it: often equal once
    normalised, sometimes not."""
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    pad = st.sampled_from(["", " ", "\t", "  \n"])
    return draw(pad) + cased + draw(pad)


@pytest.mark.parametrize("mode", list(Normalize))
@PROPERTY
@given(data=st.data())
def test_tokens_are_equal_exactly_when_the_normalised_values_are(
    mode: Normalize, data: st.DataObject
) -> None:
    first = data.draw(st.text(max_size=30), label="first")
    second = data.draw(look_alike(first) | st.text(max_size=30), label="second")
    field = searchable(mode)
    normalise = NORMALIZERS[mode]
    same_tokens = field.token(first) == field.token(second)
    assert same_tokens == (normalise(first) == normalise(second))
    assert field.batch_tokens([first, None, second]) == [
        field.token(first),
        None,
        field.token(second),
    ]


@PROPERTY
@given(typed=ANY_TYPED_VALUE)
def test_a_token_is_deterministic_while_the_ciphertext_is_not(typed: tuple[str, Any]) -> None:
    type_name, value = typed
    field = searchable(type_name=type_name)
    first, second = field.seal(value), field.seal(value)
    assert first.token == second.token
    assert first.token is not None and len(first.token) == 32
    assert first.ciphertext != second.ciphertext


@PROPERTY
@given(
    value=st.text(max_size=30),
    contexts=st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=2, unique=True),
)
def test_tokens_of_one_value_differ_across_contexts(value: str, contexts: list[str]) -> None:
    first, second = (searchable(context=c).token(value) for c in contexts)
    assert first != second


@PROPERTY
@given(value=st.text(max_size=30))
def test_a_lookup_after_rotation_finds_tokens_written_before_and_after(value: str) -> None:
    before = searchable(ring=RING).token(value)
    after = searchable(ring=ROTATED).token(value)
    assert before != after
    lookup = searchable(ring=ROTATED).lookup_tokens(value)
    assert lookup == [after, before]  # newest version first
    disabled = searchable(ring=ROTATED.with_state(1, KeyState.DISABLED))
    assert disabled.lookup_tokens(value) == [after]
