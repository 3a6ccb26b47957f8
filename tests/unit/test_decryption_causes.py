"""DecryptionError.cause: each kind of decrypt failure, from a real failure, on every path.

One error type for every failure stays the rule; ``cause`` only sorts them, and
``AUTHENTICATION`` covers a tampered value, another context, another type and
another key alike (AES-GCM cannot tell them apart). The message is unchanged:
it names the version and the context, never the cause's name or the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from encmigrate import DecryptionError, KeyConfigError, Keyring, KeyState, KeyStateError, get_cipher
from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import codec_for
from encmigrate.crypto.envelope import envelope_to_text
from encmigrate.crypto.hotpath import HotPath
from encmigrate.errors import DecryptionCause, UnreadableVersionError
from encmigrate.monitoring.metrics import decrypt_failure_reason

CONTEXT = "customer.email"
SECRET = "alice@example.com"
FIRST = Keyring.generate()
ROTATED = FIRST.rotated()  # versions 1 (retired) and 2 (current)
OLD = get_cipher(CONTEXT, keyring=FIRST).encrypt(SECRET)  # under version 1
NEW = get_cipher(CONTEXT, keyring=ROTATED).encrypt(SECRET)  # under version 2
assert OLD is not None and NEW is not None


def _flipped(blob: bytes, index: int) -> bytes:
    damaged = bytearray(blob)
    damaged[index] ^= 1
    return bytes(damaged)


# (cipher that reads, stored value, expected cause, expected version in the error)
CASES: dict[str, tuple[FieldCipher, Any, DecryptionCause, int | None]] = {
    "not bytes": (get_cipher(CONTEXT, keyring=ROTATED), 12345, DecryptionCause.NOT_ENVELOPE, None),
    "not an envelope": (
        get_cipher(CONTEXT, keyring=ROTATED),
        b"plain text that was never encrypted",
        DecryptionCause.NOT_ENVELOPE,
        None,
    ),
    "text that is not base64": (
        get_cipher(CONTEXT, keyring=ROTATED),
        "%%% not base64 %%%",
        DecryptionCause.NOT_ENVELOPE,
        None,
    ),
    "unknown version": (
        get_cipher(CONTEXT, keyring=FIRST),
        NEW,
        DecryptionCause.UNKNOWN_VERSION,
        2,
    ),
    "disabled version": (
        get_cipher(CONTEXT, keyring=ROTATED.with_state(1, KeyState.DISABLED)),
        OLD,
        DecryptionCause.DISABLED,
        1,
    ),
    "destroyed version": (
        get_cipher(CONTEXT, keyring=ROTATED.destroyed(1)),
        OLD,
        DecryptionCause.DESTROYED,
        1,
    ),
    "tampered ciphertext": (
        get_cipher(CONTEXT, keyring=ROTATED),
        _flipped(NEW, -1),
        DecryptionCause.AUTHENTICATION,
        2,
    ),
    "truncated": (
        get_cipher(CONTEXT, keyring=ROTATED),
        NEW[:-1],
        DecryptionCause.AUTHENTICATION,
        2,
    ),
    "another context": (
        get_cipher("customer.phone", keyring=ROTATED),
        NEW,
        DecryptionCause.AUTHENTICATION,
        2,
    ),
    "another type": (
        get_cipher(CONTEXT, type="date", keyring=ROTATED),
        NEW,
        DecryptionCause.AUTHENTICATION,
        2,
    ),
    "another key of the same version": (
        get_cipher(CONTEXT, keyring=Keyring.generate()),
        OLD,
        DecryptionCause.AUTHENTICATION,
        1,
    ),
    # A format-1 envelope carries no type: the date codec is what refuses the string.
    "payload of another type": (
        get_cipher(CONTEXT, type="date", keyring=ROTATED),
        FieldCipher(ROTATED.derived_keys, CONTEXT, codec_for("string"), write_format=1).encrypt(
            SECRET
        ),
        DecryptionCause.UNDECODABLE,
        None,
    ),
}

GOOD: dict[str, object] = {"string": "good", "date": dt.date(2024, 2, 29)}
LABELS = {
    DecryptionCause.NOT_ENVELOPE: "not_envelope",
    DecryptionCause.UNDECODABLE: "decode",
    DecryptionCause.UNKNOWN_VERSION: "key_unavailable",
    DecryptionCause.DISABLED: "key_unavailable",
    DecryptionCause.DESTROYED: "key_unavailable",
    DecryptionCause.AUTHENTICATION: "auth",
}


def _failure(read: Callable[[], object]) -> DecryptionError:
    with pytest.raises(DecryptionError) as caught:
        read()
    return caught.value


def test_every_cause_is_produced_by_some_real_failure() -> None:
    assert {cause for _, _, cause, _ in CASES.values()} == set(DecryptionCause)


@pytest.mark.parametrize("case", CASES)
def test_decrypt_sets_the_cause_and_keeps_the_message(case: str) -> None:
    cipher, stored, cause, version = CASES[case]
    error = _failure(lambda: cipher.decrypt(stored))
    assert error.cause is cause
    assert error.version == version and error.context == cipher.context
    # The message is what it was before causes: version, context and reason, no value.
    assert str(error) == str(DecryptionError(error.context, error.version, error.reason))
    assert str(error).startswith("cannot decrypt value (") and SECRET not in str(error)


@pytest.mark.parametrize("case", CASES)
def test_batch_decrypt_sets_the_same_cause(case: str) -> None:
    cipher, stored, cause, _ = CASES[case]
    good = cipher.encrypt(GOOD[cipher.codec.name])
    batches: list[list[Any]] = [[stored], [stored, stored], [good, stored], [stored, None]]
    for batch in batches:
        assert _failure(partial(cipher.batch_decrypt, batch)).cause is cause, batch


@pytest.mark.parametrize("case", CASES)
def test_the_column_types_hot_path_sets_the_same_cause(case: str) -> None:
    cipher, stored, cause, _ = CASES[case]
    path = HotPath(cipher)
    assert _failure(lambda: path.open(stored)).cause is cause


ENVELOPES = [
    case
    for case, (_, stored, cause, _) in CASES.items()
    if isinstance(stored, bytes) and cause is not DecryptionCause.NOT_ENVELOPE
]


@pytest.mark.parametrize("case", ENVELOPES)
def test_base64_text_storage_sets_the_same_cause(case: str) -> None:
    cipher, stored, cause, _ = CASES[case]
    assert _failure(lambda: cipher.decrypt(envelope_to_text(stored))).cause is cause


@pytest.mark.parametrize("case", CASES)
def test_the_metrics_label_comes_from_the_cause(case: str) -> None:
    cipher, stored, cause, _ = CASES[case]
    assert decrypt_failure_reason(_failure(lambda: cipher.decrypt(stored))) == LABELS[cause]


def test_every_cause_has_a_metrics_label() -> None:
    for cause in DecryptionCause:
        error = DecryptionError(CONTEXT, 1, "", cause=cause)
        assert decrypt_failure_reason(error) == LABELS[cause]


def test_the_three_argument_form_still_builds_and_means_authentication() -> None:
    error = DecryptionError(CONTEXT, 3, "why")
    assert error.cause is DecryptionCause.AUTHENTICATION
    assert str(error) == f"cannot decrypt value (key version 3, context {CONTEXT!r}): why"
    assert DecryptionError(CONTEXT).version is None


@pytest.mark.parametrize(
    ("ring", "version", "cause"),
    [
        (FIRST, 2, DecryptionCause.UNKNOWN_VERSION),
        (ROTATED.with_state(1, KeyState.DISABLED), 1, DecryptionCause.DISABLED),
        (ROTATED.destroyed(1), 1, DecryptionCause.DESTROYED),
    ],
)
def test_the_keyring_says_why_it_refuses_a_version(
    ring: Keyring, version: int, cause: DecryptionCause
) -> None:
    with pytest.raises(UnreadableVersionError) as caught:
        ring.master_key(version)
    refused = caught.value
    assert refused.cause is cause and refused.version == version
    # Still the errors callers catch today.
    assert isinstance(refused, KeyStateError) and isinstance(refused, KeyConfigError)
