"""The key checks: this host's keyring encrypts, and the application's keyring reads it.

The canary is a fixed, non-secret text: a failure message may name its key
version and context, never the text itself nor any key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from encmigrate.crypto.cipher import FieldCipher
from encmigrate.crypto.codecs import codec_for
from encmigrate.errors import DecryptionCause, DecryptionError, EncmigrateError
from encmigrate.keys import Keyring, KeyState
from encmigrate.plan import ColumnPlan
from encmigrate.preflight.model import Check, Verdict

__all__ = ["CANARY", "KeyringSource", "check_canary", "check_keys", "contexts", "obtain"]

CANARY = "encmigrate-preflight"
# The context of the round trip when the plan has no columns (never one a column uses).
_NO_COLUMN_CONTEXT = "encmigrate.preflight"

# A keyring, or how to load it: a load that fails is the check's failure, not an exception.
KeyringSource = Keyring | Callable[[], Keyring]


def obtain(source: KeyringSource) -> Keyring | EncmigrateError:
    """The keyring, or the encmigrate error its load raised (already free of key material)."""
    if isinstance(source, Keyring):
        return source
    try:
        return source()
    except EncmigrateError as exc:
        return exc


def contexts(columns: Sequence[ColumnPlan]) -> list[str]:
    """The distinct contexts of the planned columns, in plan order."""
    return list(dict.fromkeys(c.context for c in columns)) or [_NO_COLUMN_CONTEXT]


def check_keys(keyring: Keyring | EncmigrateError, columns: Sequence[ColumnPlan]) -> Check:
    """The keyring loads, its current version is active, and it encrypts and decrypts."""
    if isinstance(keyring, EncmigrateError):
        return Check("keys", Verdict.FAIL, "keyring not loaded", str(keyring))
    entry = keyring.current_entry
    if entry.state is not KeyState.ACTIVE:
        return Check(
            "keys",
            Verdict.FAIL,
            f"current version {entry.version} is {entry.state.value}",
            "only an active version encrypts: `encmigrate keys rotate`",
        )
    found = contexts(columns)
    for context in found:
        cipher = _cipher(keyring, context)
        try:
            same = cipher.decrypt(cipher.encrypt(CANARY)) == CANARY
        except DecryptionError as exc:
            return Check("keys", Verdict.FAIL, "round trip failed", str(exc))
        if not same:
            return Check("keys", Verdict.FAIL, "round trip failed", f"context {context!r}")
    return Check(
        "keys",
        Verdict.PASS,
        f"version {entry.version} active; round trip ok in {len(found)} context(s)",
    )


def check_canary(
    keyring: Keyring | EncmigrateError,
    app_keyring: Keyring | EncmigrateError | None,
    columns: Sequence[ColumnPlan],
) -> Check:
    """A value this host encrypts is readable with the application's key configuration.

    The failure this catches: a backfill that writes ciphertext the application
    cannot read (another master key, a version it does not hold yet).
    """
    if app_keyring is None:
        return Check(
            "canary",
            Verdict.WARN,
            "not checked",
            "give --app-config (the application's encmigrate.toml) to check that the "
            "application reads what this host writes",
        )
    if isinstance(app_keyring, EncmigrateError):
        return Check("canary", Verdict.FAIL, "application keyring not loaded", str(app_keyring))
    if isinstance(keyring, EncmigrateError):
        return Check("canary", Verdict.SKIP, "not checked", "this host's keyring did not load")
    found = contexts(columns)
    for context in found:
        sealed = _cipher(keyring, context).encrypt(CANARY)
        try:
            read = _cipher(app_keyring, context).decrypt(sealed)
        except DecryptionError as exc:
            return Check(
                "canary",
                Verdict.FAIL,
                f"unreadable by the application ({exc.cause.value})",
                _advice(exc, keyring.current),
            )
        if read != CANARY:
            return Check("canary", Verdict.FAIL, "read back differs", f"context {context!r}")
    return Check(
        "canary",
        Verdict.PASS,
        f"version {keyring.current} readable by the application in {len(found)} context(s)",
    )


def _cipher(keyring: Keyring, context: str) -> FieldCipher:
    return FieldCipher(keyring.derived_keys, context, codec_for("string"))


def _advice(exc: DecryptionError, version: int) -> str:
    """What the cause of the application's refusal means for the backfill."""
    if exc.cause is DecryptionCause.UNKNOWN_VERSION:
        return (
            f"the application's keyring has no key version {version}: deploy this keyring "
            "(or its new version) to the application before writing with it"
        )
    if exc.cause in (DecryptionCause.DISABLED, DecryptionCause.DESTROYED):
        return (
            f"key version {version} is {exc.cause.value.lower()} in the application's keyring: "
            "bring the two keyrings in line"
        )
    return (
        f"the application's key version {version} is a different master key (or KDF): "
        "both must use the same keyring"
    )
