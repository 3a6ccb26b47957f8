"""Fuzzing the envelope parser and the decryptors: one DecryptionError, whatever comes in.

Inputs: real envelopes of every field type (binary and base64 text), mutated;
batches mixing good, mutated, NULL and non-envelope values; random bytes and
text; and payloads that authenticate (format 1, written as ``binary`` in the
same context) but are not an encoding of the type they are read as, which
reach the codecs behind the tag check.
"""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import strategies as st

from encmigrate import Keyring, get_cipher
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import TYPE_NAMES, codec_for
from encmigrate.errors import DecryptionError, ValueTypeError
from fuzz.harness import BUDGETS, Budget, fuzz
from fuzz.mutations import mutated_bytes, mutated_text

CONTEXT = "fuzz.secret"
KEYRING = Keyring.generate().rotated()  # two readable versions
VALUES: dict[str, Any] = {
    "string": "zoë@example.com",
    "text": "a longer text ✓",
    "integer": -42,
    "bigint": 2**40 + 3,
    "float": 1.5,
    "numeric": Decimal("12.340"),
    "boolean": True,
    "date": dt.date(2024, 2, 29),
    "datetime": dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC),
    "time": dt.time(23, 59, 1),
    "binary": b"\x00\x01\xff",
    "json": {"a": [1, "b", None]},
}
CIPHERS = {name: get_cipher(CONTEXT, type=name, keyring=KEYRING) for name in TYPE_NAMES}
SEALED = {name: CIPHERS[name].encrypt(value) for name, value in VALUES.items()}


def test_the_seeds_cover_every_type_and_decrypt() -> None:
    assert set(VALUES) == set(TYPE_NAMES)
    for name, blob in SEALED.items():
        assert blob is not None and CIPHERS[name].decrypt(blob) == VALUES[name]


def _decrypts_to_the_original(name: str, blob: Any) -> str:
    try:
        value = CIPHERS[name].decrypt(blob)
    except DecryptionError:
        return "DecryptionError"
    # Only an input that carries the original envelope may open (GCM authenticates it all).
    assert value == VALUES[name]
    return "accepted"


def _sealed_mutants() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        *(mutated_bytes(blob).map(lambda b, n=name: (n, b)) for name, blob in SEALED.items())
    )


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_envelopes_raise_only_decryption_error(budget: Budget) -> None:
    def check(case: tuple[str, bytes]) -> str:
        name, blob = case
        outcome = _decrypts_to_the_original(name, blob)
        assert outcome == "DecryptionError" or blob == SEALED[name]
        return outcome

    fuzz("envelope (bytes)", budget, _sealed_mutants(), check, examples=300)


def _text_mutants() -> st.SearchStrategy[tuple[str, str]]:
    texts = {name: base64.b64encode(blob).decode() for name, blob in SEALED.items()}
    return st.one_of(
        *(mutated_text(text).map(lambda t, n=name: (n, t)) for name, text in texts.items())
    )


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_base64_envelopes_raise_only_decryption_error(budget: Budget) -> None:
    fuzz("envelope (base64 text)", budget, _text_mutants(), lambda c: _decrypts_to_the_original(*c))


NOT_ENVELOPES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40).map(memoryview),
    st.lists(st.integers(), max_size=3),
    st.just(object()),
)


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_batches_raise_only_decryption_error(budget: Budget) -> None:
    name = "string"
    good = SEALED[name]
    item = st.one_of(st.just(good), st.just(None), mutated_bytes(good), NOT_ENVELOPES)
    batches = st.lists(item, min_size=1, max_size=8)

    def check(batch: list[Any]) -> str:
        try:
            values = CIPHERS[name].batch_decrypt(batch)
        except DecryptionError:
            return "DecryptionError"
        assert values == [None if b is None else VALUES[name] for b in batch]
        return "accepted"

    fuzz("envelope (batches)", budget, batches, check)


@pytest.mark.parametrize("budget", BUDGETS)
def test_authenticated_garbage_raises_only_decryption_error(budget: Budget) -> None:
    # Format 1 binds no type: a binary value sealed in the same context opens as any type,
    # so the codecs themselves get garbage.
    raw = FieldCipher(KEYRING.derived_keys, CONTEXT, codec_for("binary"), write_format=1)
    payloads = st.one_of(
        st.binary(max_size=64),
        st.sampled_from([codec_for(n).encode(v) for n, v in VALUES.items()]).flatmap(mutated_bytes),
    )
    cases = st.tuples(st.sampled_from(TYPE_NAMES), payloads)

    def check(case: tuple[str, bytes]) -> str:
        name, payload = case
        blob = raw.encrypt(payload)
        try:
            CIPHERS[name].decrypt(blob)
            CIPHERS[name].batch_decrypt([blob, blob])
        except DecryptionError:
            return "DecryptionError"
        return "accepted"

    fuzz("codecs (authenticated garbage)", budget, cases, check)


@pytest.mark.parametrize("budget", BUDGETS)
def test_codecs_decode_garbage_with_value_type_error_only(budget: Budget) -> None:
    cases = st.tuples(st.sampled_from(TYPE_NAMES), st.binary(max_size=64))

    def check(case: tuple[str, bytes]) -> str:
        name, payload = case
        try:
            codec_for(name).decode(payload)
        except ValueTypeError:
            return "ValueTypeError"
        return "accepted"

    fuzz("codecs (decode)", budget, cases, check)
