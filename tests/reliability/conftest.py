"""Shared set-up of the reliability suite: a customers table at step 1, and its checks.

The table, trigger and tracking tables come from ``support.shadow_schema`` (the
product's own DDL). ``Migration.check`` is the full verify every fault test
ends with: 0 lost (row count and plaintext unchanged), 0 mismatched, 0 wrong
tokens, 0 undecryptable, and (``complete``) 0 missing.

``prepare(url, rows, payments=N)`` adds, on PostgreSQL, a ``payments`` table
range-partitioned by date (three ranges and a DEFAULT partition) whose primary
key ``(paid_on, id)`` includes the partition key, with two planned columns:
row identity there is the composite key, never a physical address alone (each
partition numbers its rows' ``ctid`` from the start).
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.keys import FileProvider
from encmigrate.migrate import connect, verify
from encmigrate.migrate.verify import ColumnVerdict
from encmigrate.plan import Plan
from encmigrate.revisions.triggers import ShadowColumn, install_trigger_statements
from support import realistic_schema, shadow_schema
from support.cli import operator_env, popen_cli

PLAINTEXT = ("email", "balance", "born", "profile")
SHADOWS = ("email_encrypted", "email_search", "balance_encrypted", "born_encrypted",
           "profile_encrypted")  # fmt: skip
PAYMENT_SHADOWS = [
    ShadowColumn("card_last4", "card_last4_encrypted"),
    ShadowColumn("amount", "amount_encrypted"),
]
PAYMENTS_PLAN = """
[[columns]]
table = "payments"
column = "card_last4"

[[columns]]
table = "payments"
column = "amount"
type = "numeric"
"""


@dataclass
class Migration:
    url: str
    plan_path: Path
    plan: Plan
    keyring: Keyring
    engine: sa.Engine
    engines: list[sa.Engine] = field(default_factory=list)
    payments: int = 0  # rows of the partitioned payments table (0: no such table)

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
            if self.payments:
                rows = conn.execute(
                    sa.text(
                        "SELECT tableoid::regclass::text, paid_on, id, card_last4, amount "
                        "FROM payments ORDER BY paid_on, id"
                    )
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
        payments = [
            "UPDATE payments SET " + ", ".join(f"{c.ciphertext} = NULL" for c in PAYMENT_SHADOWS)
        ]
        self.execute(
            "UPDATE customers SET " + ", ".join(f"{c} = NULL" for c in SHADOWS),
            *(payments if self.payments else []),
            "DELETE FROM encryption_migration_chunks",
            "DELETE FROM encryption_migrations",
            "DELETE FROM encryption_migration_failures",
        )


Prepare = Callable[..., Migration]


def build_payments(engine: sa.Engine, rows: int, plan_path: Path, *, seed: int) -> None:
    """The partitioned payments table at step 1 (shadows, trigger), in the plan too.

    Dates span 2022-07 to 2026-06: the DEFAULT partition holds rows at both ends of
    the key order, the three range partitions those in between.
    """
    ranges = realistic_schema.PAYMENT_RANGES
    rng = random.Random(seed)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE payments (id bigint NOT NULL, paid_on date NOT NULL, "
            "card_last4 text, amount numeric(12, 2), "
            "card_last4_encrypted bytea, amount_encrypted bytea, "
            "PRIMARY KEY (paid_on, id)) PARTITION BY RANGE (paid_on)"
        )
        for name, start, end in ranges:
            conn.exec_driver_sql(
                f"CREATE TABLE {name} PARTITION OF payments "
                f"FOR VALUES FROM ('{start}') TO ('{end}')"
            )
        conn.exec_driver_sql(
            f"CREATE TABLE {realistic_schema.PAYMENT_DEFAULT} PARTITION OF payments DEFAULT"
        )
        for statement in install_trigger_statements(conn.dialect, "payments", PAYMENT_SHADOWS):
            conn.exec_driver_sql(statement)
        conn.execute(
            sa.text("INSERT INTO payments VALUES (:i, :d, :c, :a, NULL, NULL)"),
            [
                {
                    "i": i,
                    "d": realistic_schema.PAID_FROM
                    + dt.timedelta(days=rng.randrange(realistic_schema.PAID_DAYS)),
                    "c": None if i % 7 == 0 else f"{rng.randrange(10_000):04d}",
                    "a": None if i % 23 == 0 else Decimal(rng.randrange(-5_000, 10**6)).scaleb(-2),
                }
                for i in range(1, rows + 1)
            ],
        )
    with plan_path.open("a") as plan:
        plan.write(PAYMENTS_PLAN)


@pytest.fixture
def prepare(tmp_path: Path) -> Iterator[Prepare]:
    """``prepare(url, rows, payments=0)``: the customers table at step 1 with ``rows`` rows,
    and with ``payments`` > 0 (PostgreSQL) the partitioned payments table too."""
    made: list[Migration] = []

    def make(url: str, rows: int = 2000, *, seed: int = 1, payments: int = 0) -> Migration:
        builder, plan_path = shadow_schema.build(url, rows, tmp_path, seed=seed)
        if payments:
            build_payments(builder, payments, plan_path, seed=seed)
        builder.dispose()
        migration = Migration(
            url=url,
            plan_path=plan_path,
            plan=shadow_schema.load_plan(plan_path),
            keyring=Keyring.generate(),
            engine=connect(url, pool_size=6),
            payments=payments,
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


def cli_outlived_by_an_outage(
    migration: Migration,
    directory: Path,
    *,
    stop: Callable[[], None],
    start: Callable[[], None],
    batch_size: int = 50,
) -> None:
    """``migrate-data`` through the CLI until 500 rows are done, then the server down (``stop``)
    until the CLI gives up, then up again (``start``): exit 4 with one line, no traceback."""
    FileProvider(directory / "keyring.json").save(migration.keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=directory / "keyring.json")
    command = ["--json", "migrate-data", "--batch-size", str(batch_size), "--sleep", "10"]
    with popen_cli(*command, cwd=directory, env=env) as process:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            if '"rows_done": 500' in line:
                break
        stop()
        try:
            process.stdout.read()
            errors = process.stderr.read()
            process.wait(timeout=60)
        finally:
            start()
    assert process.returncode == 4, errors
    assert "Traceback" not in errors
    last = errors.strip().splitlines()[-1]
    assert last.startswith("error: customers: database error after retries (")
    assert last.endswith("progress is saved: fix the cause and run `encmigrate migrate-data` again")
    migration.engine.dispose()  # its pooled sessions died with the server
