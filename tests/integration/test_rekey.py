"""rewrap (old key versions -> current) and decrypt-back (the rollback) on real databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring
from encmigrate.errors import ConfigError
from encmigrate.migrate import (
    MigrateOptions,
    connect,
    decrypt_back,
    migrate_data,
    rewrap,
    status,
    verify,
)
from support import shadow_schema
from support.cli import operator_env, run_cli


@pytest.fixture
def migrated(any_db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine, plan_path = shadow_schema.build(any_db_url, 1500, tmp_path)
    engine.dispose()
    keyring = Keyring.generate()
    plan = shadow_schema.load_plan(plan_path)
    engine = connect(any_db_url)
    migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=200))
    yield engine, plan, keyring
    engine.dispose()


def _versions(engine: sa.Engine, plan: object) -> dict[str, dict[int, int]]:
    return {s.column: dict(s.versions) for s in status(plan, engine)}  # type: ignore[arg-type]


def test_rewrap_moves_every_value_to_the_current_version(migrated) -> None:  # type: ignore[no-untyped-def]
    engine, plan, keyring = migrated
    rotated = keyring.rotated()
    assert _versions(engine, plan)["balance"] == {1: 1500}
    reports = rewrap(plan, engine, rotated, options=MigrateOptions(batch_size=128))
    assert reports[0].rows_done == 1500
    versions = _versions(engine, plan)
    assert versions["balance"] == {2: 1500}
    assert versions["email"] == {2: 1500 - 1500 // 97}
    for verdict in verify(plan, engine, rotated):
        assert verdict.ok, verdict.summary()
        assert set(verdict.versions) == {2}
    # the old version can now go: nothing depends on it
    retired = rotated.destroyed(1)
    for verdict in verify(plan, engine, retired, record=False):
        assert verdict.ok


def test_rewrap_from_a_given_version_leaves_others(migrated) -> None:  # type: ignore[no-untyped-def]
    engine, plan, keyring = migrated
    two = keyring.rotated()
    with engine.begin() as conn:  # some rows re-encrypted under v2 by the application
        conn.execute(sa.text("UPDATE customers SET balance_encrypted = NULL WHERE id <= 100"))
    migrate_data(plan, engine, two)
    three = two.rotated()
    rewrap(plan, engine, three, from_version=1)
    balance = _versions(engine, plan)["balance"]
    assert balance == {2: 100, 3: 1400}


SNAPSHOT = "SELECT id, owner, balance, opened, prefs, CAST(meta AS TEXT) FROM accounts ORDER BY id"


def _comparable(row: Any) -> tuple[Any, ...]:
    """A snapshot row with the json column as its value: SQL NULL, JSON null, or the document
    (a json column keeps its text's spacing; decrypt-back writes the value, not the spacing)."""
    *head, meta = tuple(row)
    return (*head, "SQL NULL" if meta is None else ("json", json.loads(meta)))


def test_decrypt_back_after_drop_and_downgrade_restores_exact_values(
    db_url: str, tmp_path: Path
) -> None:
    """The rollback path for real: drop the plaintext, downgrade, decrypt-back, compare."""
    import datetime as dt
    from decimal import Decimal

    from encmigrate import revisions
    from support.revisions import make_project

    source = sa.create_engine(db_url)
    with source.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE accounts (id integer PRIMARY KEY, owner varchar(100), "
                "balance numeric(14, 2), opened timestamp, prefs text, meta json)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO accounts VALUES (:i, :o, :b, :t, :p, :m)"),
            [
                {
                    "i": i,
                    "o": f"Zoë O'Brien-Łukasz {i} ☃" if i % 5 else None,
                    "b": str(Decimal(i * 1001) / 100),
                    "t": dt.datetime(2020, 1, 1, 12, 0, i % 60, 123456).isoformat(sep=" "),
                    "p": "null" if i % 7 == 0 else '{"b":1,"a":[1,"ü"]}',
                    # JSON null (a value) and SQL NULL must both come back as they were
                    "m": None if i % 3 == 0 else ("null" if i % 3 == 1 else '{"k":[1,2]}'),
                }
                for i in range(1, 401)
            ],
        )
    source.dispose()
    columns = "".join(
        f'[[columns]]\ntable = "accounts"\ncolumn = "{name}"\ntype = "{kind}"\n'
        for name, kind in (
            ("owner", "string"),
            ("balance", "numeric"),
            ("opened", "datetime"),
            ("prefs", "json"),
            ("meta", "json"),
        )
    )
    project = make_project(tmp_path, db_url, columns)
    keyring = Keyring.generate()
    revisions.add_columns(project.plan(), apply=True)
    engine = connect(db_url)
    with engine.connect() as conn:
        before = conn.execute(sa.text(SNAPSHOT)).all()
    migrate_data(project.plan(), engine, keyring)
    assert all(v.ok for v in verify(project.plan(), engine, keyring))
    revisions.create_views(project.plan(), apply=True)
    revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
    project.downgrade("-1")  # re-adds the plaintext columns, empty
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(owner) FROM accounts")).scalar() == 0
    engine.dispose()
    engine = connect(db_url)
    reports = decrypt_back(project.plan(), engine, keyring, options=MigrateOptions(batch_size=64))
    assert reports[0].rows_done == 400
    with engine.connect() as conn:
        after = conn.execute(sa.text(SNAPSHOT)).all()
    assert [_comparable(r) for r in after] == [_comparable(r) for r in before]
    assert all(v.ok for v in verify(project.plan(), engine, keyring))
    engine.dispose()


def test_decrypt_back_refuses_when_the_plaintext_columns_are_gone(
    pg_url: str, tmp_path: Path
) -> None:
    engine, plan_path = shadow_schema.build(pg_url, 50, tmp_path)
    keyring = Keyring.generate()
    plan = shadow_schema.load_plan(plan_path)
    work_engine = connect(pg_url)
    migrate_data(plan, work_engine, keyring)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER encmigrate_shadow ON customers"))
        conn.execute(sa.text("ALTER TABLE customers DROP COLUMN balance"))
    engine.dispose()
    with pytest.raises(ConfigError, match="alembic downgrade"):
        decrypt_back(plan, work_engine, keyring)
    work_engine.dispose()


def test_cli_rotate_then_rewrap_then_status(pg_url: str, tmp_path: Path) -> None:
    import json

    from encmigrate.keys import FileProvider

    engine, _ = shadow_schema.build(pg_url, 600, tmp_path)
    engine.dispose()
    FileProvider(tmp_path / "keyring.json").save(Keyring.generate())
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")

    def run(*args: str) -> str:
        done = run_cli(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    run("migrate-data")
    run("keys", "rotate")
    run("rewrap", "--batch-size", "100")
    state = json.loads(run("--json", "status"))
    assert {s["column"]: s["key_versions"] for s in state}["balance"] == {"2": 600}


def test_keys_destroy_refuses_a_version_still_in_use(pg_url: str, tmp_path: Path) -> None:
    import subprocess

    from encmigrate.keys import FileProvider

    engine, _ = shadow_schema.build(pg_url, 200, tmp_path)
    engine.dispose()
    FileProvider(tmp_path / "keyring.json").save(Keyring.generate())
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env)

    assert run("migrate-data").returncode == 0
    assert run("keys", "rotate").returncode == 0
    refused = run("keys", "destroy", "1", "--confirm")
    assert refused.returncode == 5
    assert "customers.balance: 200" in refused.stderr and "rewrap" in refused.stderr
    assert run("rewrap").returncode == 0
    assert run("keys", "destroy", "1", "--confirm").returncode == 0


def test_destroy_from_python_is_refused_while_the_database_holds_values_under_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    from encmigrate.errors import RefusedError
    from encmigrate.keys import FileProvider, KeyManager

    engine, plan_path = shadow_schema.build(sqlite_url, 200, tmp_path)
    engine.dispose()
    plan = shadow_schema.load_plan(plan_path)
    manager = KeyManager(FileProvider(tmp_path / "keyring.json"))
    engine = connect(sqlite_url)
    try:
        migrate_data(plan, engine, manager.generate())
        manager.rotate()

        def in_use(version: int) -> dict[str, int]:
            return {
                f"{s.table}.{s.column}": s.versions.get(version, 0) for s in status(plan, engine)
            }

        with pytest.raises(RefusedError, match=r"customers\.balance: 200") as refused:
            manager.destroy(1, confirm=True, in_use=in_use)
        assert refused.value.exit_code == 5 and "rewrap" in str(refused.value)
        assert manager.load().get(1).key is not None
        rewrap(plan, engine, manager.load())
        manager.destroy(1, confirm=True, in_use=in_use)
        assert manager.load().get(1).key is None
    finally:
        engine.dispose()


JSON_VALUES = ['"hello"', '"1"', "1", "1.5", "true", "false", "null", '[1, "a"]', '{"k": "v"}']


def test_rewrap_and_decrypt_back_keep_every_kind_of_json_value(db_url: str, tmp_path: Path) -> None:
    """A decrypted JSON string is a Python str: sealing it again must not parse it as JSON
    text (rewrap failed such rows), and writing it back must store the JSON string."""
    from encmigrate import revisions
    from support.revisions import column, make_project

    kind = "jsonb" if db_url.startswith("postgresql") else "json"
    source = sa.create_engine(db_url)
    with source.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE docs (id integer PRIMARY KEY, body {kind})"))
        conn.execute(
            sa.text(f"INSERT INTO docs VALUES (:i, CAST(:b AS {kind}))"),
            [{"i": i, "b": v} for i, v in enumerate(JSON_VALUES, start=1)],
        )
        conn.execute(sa.text("INSERT INTO docs VALUES (100, NULL)"))
    source.dispose()
    project = make_project(tmp_path, db_url, column("docs", "body", type="json"))
    revisions.add_columns(project.plan(), apply=True)
    engine = connect(db_url)
    snapshot = sa.text("SELECT id, CAST(body AS TEXT) FROM docs ORDER BY id")
    try:
        with engine.connect() as conn:
            before = conn.execute(snapshot).all()
        keyring = Keyring.generate()
        migrate_data(project.plan(), engine, keyring)
        keyring = keyring.rotated()
        reports = rewrap(project.plan(), engine, keyring)
        assert (reports[0].rows_done, reports[0].rows_failed) == (len(JSON_VALUES), 0)
        assert all(v.ok for v in verify(project.plan(), engine, keyring))
        revisions.create_views(project.plan(), apply=True)
        revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
        project.downgrade("-1")
        engine.dispose()
        engine = connect(db_url)
        reports = decrypt_back(project.plan(), engine, keyring)
        assert (reports[0].rows_done, reports[0].rows_failed) == (len(JSON_VALUES), 0)
        with engine.connect() as conn:
            assert conn.execute(snapshot).all() == before
    finally:
        engine.dispose()


def test_rewrap_moves_format_1_values_to_format_2_bound_to_the_column_type(
    any_db_url: str, tmp_path: Path
) -> None:
    """Values written before format 2 carry no type; rewrap re-seals them with the column's."""
    from collections import Counter

    from encmigrate import DecryptionError, get_cipher
    from encmigrate.crypto.cipher import FieldCipher
    from encmigrate.crypto.codecs import codec_for

    engine, plan_path = shadow_schema.build(any_db_url, 120, tmp_path)
    engine.dispose()
    keyring = Keyring.generate()
    plan = shadow_schema.load_plan(plan_path)
    engine = connect(any_db_url)
    numeric = get_cipher("customers.balance", type="numeric", keyring=keyring)
    legacy = FieldCipher(
        keyring.derived_keys, "customers.balance", codec_for("numeric"), write_format=1
    )

    def formats() -> Counter[int]:
        with engine.connect() as conn:
            blobs = conn.execute(sa.text("SELECT balance_encrypted FROM customers")).scalars()
            return Counter(bytes(b)[0] for b in blobs)

    try:
        migrate_data(plan, engine, keyring)
        with engine.begin() as conn:
            stored = conn.execute(
                sa.text("SELECT id, balance_encrypted FROM customers WHERE id % 3 = 0")
            ).all()
            conn.execute(
                sa.text("UPDATE customers SET balance_encrypted = :c WHERE id = :i"),
                [{"c": legacy.encrypt(numeric.decrypt(blob)), "i": i} for i, blob in stored],
            )
        assert formats() == {1: 40, 2: 80}

        reports = rewrap(plan, engine, keyring, options=MigrateOptions(batch_size=32))
        assert reports[0].rows_done == 40  # only the format-1 rows: the others are current
        assert formats() == {2: 120}
        assert all(v.ok for v in verify(plan, engine, keyring, record=False))
        with engine.connect() as conn:
            blob = conn.execute(
                sa.text("SELECT balance_encrypted FROM customers WHERE id = 3")
            ).scalar_one()
        assert numeric.decrypt(blob) == numeric.decrypt(dict(stored)[3])
        with pytest.raises(DecryptionError):  # the numeric type is bound into it now
            get_cipher("customers.balance", type="string", keyring=keyring).decrypt(blob)
        assert rewrap(plan, engine, keyring)[0].rows_done == 0
    finally:
        engine.dispose()
