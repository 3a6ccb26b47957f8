"""Long-lived ciphers observe key operations made elsewhere, within a bounded time.

A cipher from ``get_cipher()`` / ``get_optimized_cipher()`` / ``get_searchable_cipher()``
without a keyring follows the configured keyring: it asks ``default_keyring()`` again at most
every ``REFRESH_SECONDS`` (and at once after ``reset_default_keyring()``), so a version
disabled or destroyed, or a rotation, written to the keyring file by a ``KeyManager`` (another
process, in production) is in force in the same cipher object after that period. The
injectable clock of the shared follower is advanced instead of sleeping. A cipher given
``keyring=`` keeps that keyring for its life (documented).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import (
    DecryptionError,
    KeyConfigError,
    get_cipher,
    get_optimized_cipher,
    get_searchable_cipher,
)
from encmigrate.api import DEFAULT_KEYRING, REFRESH_SECONDS
from encmigrate.fields import EncryptedString
from encmigrate.keys import AuditLog, FileProvider, KeyManager, reset_default_keyring

KEY_VARIABLES = (
    "ENCMIGRATE_KEYRING",
    "ENCMIGRATE_MASTER_KEY",
    "ENCMIGRATE_KEY_VERSION",
    "ENCMIGRATE_ENV_PREFIX",
    "ENCMIGRATE_CONFIG",
    "ENCMIGRATE_KEY_PROVIDER",
)


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(DEFAULT_KEYRING, "clock", fake)  # the follower's documented seam
    return fake


@pytest.fixture
def manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> Iterator[KeyManager]:
    """A keyring file that the configuration names, and the manager that changes it."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no plan file around
    path = tmp_path / "keyring.json"
    monkeypatch.setenv("ENCMIGRATE_KEYRING_FILE", str(path))
    keys = KeyManager(FileProvider(path), AuditLog(tmp_path / "audit.jsonl"), actor="ops")
    keys.generate()
    reset_default_keyring()
    yield keys
    reset_default_keyring()


def after_the_refresh_period(clock: FakeClock) -> None:
    clock.advance(REFRESH_SECONDS + 0.001)


def version_of(blob: Any) -> int:
    return int.from_bytes(blob[1:5], "big")


def test_a_kept_cipher_refuses_a_version_disabled_in_the_file_after_the_refresh_period(
    manager: KeyManager, clock: FakeClock
) -> None:
    cipher = get_cipher("customer.email")
    old = cipher.encrypt("under version 1")
    assert version_of(old) == 1

    manager.rotate()
    after_the_refresh_period(clock)
    new = cipher.encrypt("under version 2")
    assert version_of(new) == 2  # the same object encrypts under the new current version
    assert cipher.decrypt(old) == "under version 1"  # retired: still readable

    manager.disable(1, reason="suspected leak")
    assert cipher.decrypt(old) == "under version 1"  # within the period: the bound, not zero
    after_the_refresh_period(clock)
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(old)
    assert caught.value.version == 1
    with pytest.raises(DecryptionError):
        cipher.batch_decrypt([new, old])
    assert cipher.batch_decrypt([new]) == ["under version 2"]


def test_a_kept_batch_cipher_refuses_a_destroyed_version_and_follows_each_rotation(
    manager: KeyManager, clock: FakeClock
) -> None:
    cipher = get_optimized_cipher("orders.note")
    old = cipher.batch_encrypt(["a", "b"])
    manager.rotate()
    manager.rotate()
    after_the_refresh_period(clock)
    assert {version_of(b) for b in cipher.batch_encrypt(["c", "d"])} == {3}

    manager.destroy(1, confirm=True, reason="rewrap done", force=True)
    after_the_refresh_period(clock)
    with pytest.raises(DecryptionError):
        cipher.batch_decrypt(old)
    with pytest.raises(DecryptionError):
        cipher.decrypt(old[0])


def test_a_kept_searchable_cipher_stops_looking_up_a_disabled_version(
    manager: KeyManager, clock: FakeClock
) -> None:
    cipher = get_searchable_cipher("customer.email", normalize="lower")
    written = cipher.seal("Ann@Example.org")
    manager.rotate()
    after_the_refresh_period(clock)
    assert written.token in cipher.lookup_tokens("ann@example.org")  # both versions
    sealed = cipher.seal("bob@example.org")
    assert version_of(sealed.ciphertext) == 2
    assert sealed.token == cipher.token_under("bob@example.org", 2)

    manager.disable(1)
    after_the_refresh_period(clock)
    assert written.token not in cipher.lookup_tokens("ann@example.org")
    assert len(cipher.lookup_tokens("ann@example.org")) == 1


def test_a_reset_is_seen_at_once(manager: KeyManager, clock: FakeClock) -> None:
    cipher = get_cipher("customer.email")
    old = cipher.encrypt("v")
    manager.rotate()
    manager.disable(1)
    reset_default_keyring()  # what an in-process key operation does: no waiting
    with pytest.raises(DecryptionError):
        cipher.decrypt(old)


def test_a_cipher_given_a_keyring_keeps_that_keyring(manager: KeyManager, clock: FakeClock) -> None:
    """Documented: ``keyring=`` pins the keyring object; build a new cipher to see changes."""
    pinned = get_cipher("customer.email", keyring=manager.load())
    old = pinned.encrypt("v")
    manager.rotate()
    manager.disable(1)
    after_the_refresh_period(clock)
    assert pinned.decrypt(old) == "v"
    assert version_of(pinned.encrypt("w")) == 1
    with pytest.raises(DecryptionError):
        get_cipher("customer.email", keyring=manager.load()).decrypt(old)


def test_column_types_share_the_follower_and_its_period(
    manager: KeyManager, clock: FakeClock
) -> None:
    table = sa.Table(
        "customer",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", EncryptedString()),
    )
    engine = sa.create_engine("sqlite://")
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), {"id": 1, "email": "a@example.org"})
        manager.rotate()
        manager.disable(1)
        with engine.connect() as conn:  # within the period
            assert conn.execute(sa.select(table.c.email)).scalar_one() == "a@example.org"
        after_the_refresh_period(clock)
        with engine.connect() as conn, pytest.raises(DecryptionError):
            conn.execute(sa.select(table.c.email)).scalar_one()
    finally:
        engine.dispose()


def test_without_a_configured_keyring_get_cipher_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following the keyring does not postpone the error to the first value."""
    for name in (*KEY_VARIABLES, "ENCMIGRATE_KEYRING_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    reset_default_keyring()
    try:
        with pytest.raises(KeyConfigError, match="no keyring configured"):
            get_cipher("customer.email")
    finally:
        reset_default_keyring()


def test_a_following_cipher_says_so_and_its_repr_loads_nothing(manager: KeyManager) -> None:
    following = get_cipher("customer.email")
    pinned = get_cipher("customer.email", keyring=manager.load())
    assert following.follows_keyring and not pinned.follows_keyring
    assert repr(following) == (
        "FieldCipher(context='customer.email', type='string', keyring='in force')"
    )
    assert repr(pinned) == "FieldCipher(context='customer.email', type='string', version=1)"
