"""Fuzzing the backup importer: only ConfigError (not a backup) or KeyConfigError.

Three layers of a real backup are mutated: its bytes, its outer JSON (the
clear summary and the token), and its encrypted content, re-sealed under the
real backup key so that the mutant authenticates and reaches the keyring
parser and the summary check behind the token. Random text is also tried as
a backup key.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import strategies as st

from encmigrate import Keyring
from encmigrate.errors import ConfigError, KeyConfigError
from encmigrate.keys.backup import BackupKey, create_backup, open_backup
from fuzz.harness import BUDGETS, Budget, fuzz, only
from fuzz.mutations import Shown, mutated_bytes, mutated_json, mutated_text, utf8

KEY = BackupKey.generate()
KEYRING = Keyring.generate().rotated()
SEED = create_backup(KEYRING, KEY)
OUTER = json.loads(SEED)
INNER = json.loads(KEY.decrypt(OUTER["token"].encode()))
DOCUMENTED = (ConfigError, KeyConfigError)


def test_the_seed_backup_opens() -> None:
    assert open_backup(SEED, KEY).keyring == KEYRING


def _resealed(inner: str) -> bytes:
    """A backup whose encrypted part is ``inner``, sealed under the real backup key."""
    token = KEY.encrypt(inner.encode("utf-8", "surrogatepass")).decode()
    return Shown(json.dumps({**OUTER, "token": token}).encode(), f"_resealed({inner!r})")


def _backups() -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_bytes(SEED),
        mutated_json(OUTER).map(utf8),
        mutated_json(INNER).map(_resealed),
        mutated_bytes(json.dumps(INNER).encode()).map(
            lambda inner: _resealed(inner.decode("utf-8", "surrogateescape"))
        ),
    )


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_backups_raise_only_their_documented_errors(budget: Budget) -> None:
    def check(data: bytes) -> str:
        return only(DOCUMENTED, lambda: open_backup(data, KEY))

    fuzz("backup (open_backup)", budget, _backups(), check, examples=200)


@pytest.mark.parametrize("budget", BUDGETS)
def test_garbage_backup_keys_raise_only_key_config_error(budget: Budget) -> None:
    keys = st.one_of(
        mutated_text(KEY.encoded().decode()), mutated_bytes(KEY.encoded()), st.text(max_size=60)
    )
    fuzz("backup key", budget, keys, lambda text: only((KeyConfigError,), lambda: BackupKey(text)))
