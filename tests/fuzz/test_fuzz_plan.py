"""Fuzzing the plan loader: a bad plan is a ConfigError that says where, never a crash.

Inputs: a real plan using every section and option, mutated as a TOML tree
(values of the wrong type, huge numbers, NaN, unicode, deep nesting, keys
removed and added) and as text, and random text. Each is loaded without a
database (``check_database=False``: the schema checks need one) and its
``[keys]`` table read the way the key resolver reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from encmigrate.config import find_config, keys_settings
from encmigrate.errors import ConfigError, EncmigrateError
from encmigrate.plan import load
from fuzz.harness import BUDGETS, Budget, fuzz
from fuzz.mutations import mutated_toml, to_toml, utf8

SEED: dict[str, Any] = {
    "database": {"url": "sqlite:///app.db"},
    "alembic": {"config": "alembic.ini"},
    "keys": {
        "provider": "file",
        "path": "keyring.json",
        "audit_log": "audit.jsonl",
        "env_prefix": "APP_",
        "rotation_days": 90,
        "cache_ttl": 300.0,
        "vault": {"mount": "secret", "path": "app/keyring"},
        "aws": {"region": "eu-west-1", "store": "file"},
    },
    "migration": {"batch_size": 500, "sleep": 0.0, "ddl_lock_timeout": "2s", "ddl_retries": 3},
    "tables": {"sales.customer": {"view": "customer_secure"}},
    "columns": [
        {
            "table": "sales.customer",
            "column": "email",
            "type": "string",
            "searchable": True,
            "normalize": "lower",
            "storage": "text",
            "unique_token": True,
        },
        {"table": "sales.customer", "column": "born", "type": "date", "context": "c.born"},
        {"table": "orders", "column": "total", "type": "numeric"},
    ],
}


def _load(path: Path) -> str:
    try:
        load(path, environ={}, cwd=path.parent, check_database=False)
        keys_settings(find_config(path, environ={}, cwd=path.parent))
    except ConfigError as exc:
        # Every problem says where: the plan file, and within it the key.
        problems = getattr(exc, "problems", None) or [str(exc)]
        assert all(str(path) in problem for problem in problems), problems
        return type(exc).__name__
    except EncmigrateError as exc:  # pragma: no cover - reported with the input
        raise AssertionError(f"{type(exc).__name__} is not a plan error") from exc
    return "accepted"


def test_the_seed_plan_loads(tmp_path: Path) -> None:
    path = tmp_path / "encmigrate.toml"
    path.write_text(to_toml(SEED), encoding="utf-8")
    assert _load(path) == "accepted"


@pytest.mark.parametrize("budget", BUDGETS)
def test_mutated_plans_raise_only_located_config_errors(budget: Budget, tmp_path: Path) -> None:
    path = tmp_path / "encmigrate.toml"

    def check(text: str) -> str:
        path.write_bytes(utf8(text))
        return _load(path)

    fuzz("plan (TOML)", budget, mutated_toml(SEED), check, examples=200)
