"""Fuzzing the keyring loader: a bad document is a KeyConfigError, never a crash.

Inputs: a real keyring (two versions, one destroyed, an audit head) mutated as
a JSON tree and as bytes, random bytes, parsed from text and loaded from a
file by the file provider.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import strategies as st

from encmigrate import FileProvider, Keyring
from encmigrate.errors import KeyConfigError
from encmigrate.keys.keyring import AuditHead
from fuzz.harness import BUDGETS, Budget, fuzz, only
from fuzz.mutations import mutated_bytes, mutated_json, utf8

SEED = Keyring.generate().rotated().rotated().destroyed(1)
SEED = SEED.with_audit_head(AuditHead(sha256="ab" * 32, lines=3))
SEED_TEXT = SEED.to_json()


def test_the_seed_keyring_loads() -> None:
    assert Keyring.from_json(SEED_TEXT) == SEED


def _documents() -> st.SearchStrategy[str | bytes]:
    return st.one_of(mutated_json(json.loads(SEED_TEXT)), mutated_bytes(SEED_TEXT.encode()))


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_keyring_documents_raise_only_key_config_errors(budget: Budget) -> None:
    fuzz(
        "keyring (JSON)",
        budget,
        _documents(),
        lambda text: only((KeyConfigError,), lambda: Keyring.from_json(text)),
        examples=200,
    )


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_file_provider_refuses_garbage_files_with_key_config_errors(
    budget: Budget, tmp_path: Path
) -> None:
    path = tmp_path / "keyring.json"

    def check(document: str | bytes) -> str:
        path.write_bytes(utf8(document) if isinstance(document, str) else document)
        os.chmod(path, 0o600)
        return only((KeyConfigError,), FileProvider(path).load)

    fuzz("keyring (file provider)", budget, _documents(), check, examples=50)
