"""``migrate-data --repair``: the way back from a verify that found wrong ciphertexts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.errors import KeyConfigError
from encmigrate.migrate import MigrateOptions, migrate_data, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.plan import Plan
from support import shadow_schema

ROWS = 600
OPTIONS = MigrateOptions(batch_size=100)


def _migrate(url: str, directory: Path) -> Iterator[tuple[sa.Engine, Plan, Keyring]]:
    engine, plan_path = shadow_schema.build(url, ROWS, directory)
    engine.dispose()
    engine = connect_engine(url)
    plan = shadow_schema.load_plan(plan_path)
    keyring = Keyring.generate()
    migrate_data(plan, engine, keyring, options=OPTIONS)
    yield engine, plan, keyring
    engine.dispose()


@pytest.fixture
def migrated(db_url: str, tmp_path: Path) -> Iterator[tuple[sa.Engine, Plan, Keyring]]:
    yield from _migrate(db_url, tmp_path)


@pytest.fixture
def pg_migrated(pg_url: str, tmp_path: Path) -> Iterator[tuple[sa.Engine, Plan, Keyring]]:
    yield from _migrate(pg_url, tmp_path)


def _shadows(engine: sa.Engine) -> dict[int, tuple[object, ...]]:
    query = (
        "SELECT id, email_encrypted, email_search, balance_encrypted, born_encrypted, "
        "profile_encrypted FROM customers ORDER BY id"
    )
    with engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(sa.text(query))}


def _corrupt(engine: sa.Engine) -> None:
    """What verify must flag: swapped values, a tampered envelope, a stale token, bad json."""
    shadows = _shadows(engine)
    with engine.begin() as conn:
        swap = sa.text("UPDATE customers SET balance_encrypted = :b WHERE id = :i")
        conn.execute(swap, [{"i": 10, "b": shadows[11][2]}, {"i": 11, "b": shadows[10][2]}])
        tampered = bytearray(shadows[20][3])
        tampered[-1] ^= 1
        conn.execute(
            sa.text("UPDATE customers SET born_encrypted = :b WHERE id = 20"),
            {"b": bytes(tampered)},
        )
        conn.execute(
            sa.text("UPDATE customers SET email_search = :t WHERE id = 30"), {"t": shadows[31][1]}
        )
        conn.execute(
            sa.text("UPDATE customers SET profile_encrypted = :p WHERE id = 40"),
            {"p": shadows[41][4]},
        )


def _problems(plan: Plan, engine: sa.Engine, keyring: Keyring) -> dict[str, int]:
    return {
        v.column: v.mismatches + v.undecryptable + v.token_mismatches
        for v in verify(plan, engine, keyring)
    }


def test_repair_re_encrypts_exactly_the_rows_verify_flags(
    migrated: tuple[sa.Engine, Plan, Keyring],
) -> None:
    engine, plan, keyring = migrated
    _corrupt(engine)
    flagged = {"email": 1, "balance": 2, "born": 1, "profile": 1}
    assert _problems(plan, engine, keyring) == flagged
    # The plain backfill touches rows without a ciphertext only: nothing fixes them.
    migrate_data(plan, engine, keyring, options=OPTIONS)
    migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=100, restart=True))
    assert _problems(plan, engine, keyring) == flagged

    before = _shadows(engine)
    reports = migrate_data(plan, engine, keyring, options=OPTIONS, repair=True)
    assert reports[0].rows_done == 5  # rows 10, 11, 20, 30, 40
    assert _problems(plan, engine, keyring) == dict.fromkeys(flagged, 0)
    after = _shadows(engine)
    changed = {i for i in before if before[i] != after[i]}
    assert changed == {10, 11, 20, 30, 40}  # the right rows keep their exact bytes


def test_repair_with_two_workers_after_an_application_write(
    pg_migrated: tuple[sa.Engine, Plan, Keyring],
) -> None:
    engine, plan, keyring = pg_migrated
    _corrupt(engine)
    with engine.begin() as conn:  # changed after the corruption: the trigger clears it
        conn.execute(sa.text("UPDATE customers SET email = 'new@example.com' WHERE id = 30"))
    options = MigrateOptions(batch_size=50, workers=2, rows_per_chunk=100)
    migrate_data(plan, engine, keyring, options=options, repair=True)
    assert set(_problems(plan, engine, keyring).values()) == {0}
    assert all(v.missing == 0 for v in verify(plan, engine, keyring))


def test_repair_refuses_a_keyring_that_opens_nothing(
    migrated: tuple[sa.Engine, Plan, Keyring],
) -> None:
    engine, plan, _ = migrated
    before = _shadows(engine)
    with pytest.raises(KeyConfigError, match="decrypts none"):
        migrate_data(plan, engine, Keyring.generate(), options=OPTIONS, repair=True)
    assert _shadows(engine) == before


def test_each_operation_names_the_command_to_run_again_after_a_failure() -> None:
    from encmigrate.migrate.rekey import DECRYPT_BACK, ENCRYPT, rewrap_operation
    from encmigrate.migrate.repair import REPAIR

    assert [op.command for op in (ENCRYPT, REPAIR, rewrap_operation(2), DECRYPT_BACK)] == [
        "migrate-data",
        "migrate-data --repair",
        "rewrap",
        "decrypt-back",
    ]
