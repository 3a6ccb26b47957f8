"""Shared set-up of the reliability suite: a customers table at step 1, and its checks.

The table, trigger and tracking tables come from ``support.shadow_schema`` (the
product's own DDL). ``Migration.check`` is the full verify every fault test
ends with: 0 lost (row count and plaintext unchanged), 0 mismatched, 0 wrong
tokens, 0 undecryptable, and (``complete``) 0 missing.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.migrate import connect, verify
from encmigrate.migrate.verify import ColumnVerdict
from encmigrate.plan import Plan
from support import shadow_schema

PLAINTEXT = ("email", "balance", "born", "profile")
SHADOWS = ("email_encrypted", "email_search", "balance_encrypted", "born_encrypted",
           "profile_encrypted")  # fmt: skip


@dataclass
class Migration:
    url: str
    plan_path: Path
    plan: Plan
    keyring: Keyring
    engine: sa.Engine
    engines: list[sa.Engine] = field(default_factory=list)

    def new_engine(self, **options: Any) -> sa.Engine:
        engine = connect(self.url, **options)
        self.engines.append(engine)
        return engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def execute(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))

    def plaintext_digest(self) -> str:
        """Digest of every row's key and plaintext: the migrator must never change them."""
        digest = hashlib.sha256()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, email, balance, born, profile::text FROM customers ORDER BY id")
            )
            for row in rows:
                digest.update(repr(tuple(row)).encode())
        return digest.hexdigest()

    def verdicts(self) -> list[ColumnVerdict]:
        return verify(self.plan, self.engine, self.keyring, record=False)

    def check(self, *, complete: bool = True) -> list[ColumnVerdict]:
        """No stale, wrong or undecryptable shadow value; with ``complete`` none missing."""
        verdicts = self.verdicts()
        for v in verdicts:
            assert v.mismatches == v.token_mismatches == v.undecryptable == 0, (
                v.column,
                v.summary(),
            )
            if complete:
                assert v.missing == 0, (v.column, v.summary(), v.problem_keys)
        return verdicts

    def reset(self) -> None:
        """Back to step 1: shadows empty, no tracking rows (the plaintext untouched)."""
        self.execute(
            "UPDATE customers SET " + ", ".join(f"{c} = NULL" for c in SHADOWS),
            "DELETE FROM encryption_migration_chunks",
            "DELETE FROM encryption_migrations",
            "DELETE FROM encryption_migration_failures",
        )


Prepare = Callable[..., Migration]


@pytest.fixture
def prepare(tmp_path: Path) -> Iterator[Prepare]:
    """``prepare(url, rows)``: the customers table at step 1 with ``rows`` rows."""
    made: list[Migration] = []

    def make(url: str, rows: int = 2000, *, seed: int = 1) -> Migration:
        builder, plan_path = shadow_schema.build(url, rows, tmp_path, seed=seed)
        builder.dispose()
        migration = Migration(
            url=url,
            plan_path=plan_path,
            plan=shadow_schema.load_plan(plan_path),
            keyring=Keyring.generate(),
            engine=connect(url, pool_size=6),
        )
        made.append(migration)
        return migration

    yield make
    # Tracebacks kept by pytest.raises hold pooled connections in reference cycles: free
    # them while their engines can still close them.
    gc.collect()
    for migration in made:
        migration.engine.dispose()
        for engine in migration.engines:
            engine.dispose()
