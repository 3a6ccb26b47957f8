"""Partitioned tables: every row gets its own ciphertext, never a sibling partition's.

A ``ctid`` is unique only inside one partition (or one inheritance child): a
batch that matched its rows by ``ctid`` alone also wrote into the rows of
sibling partitions that happen to sit at the same address. These tests build
tables whose partitions hold rows at the same addresses and check, value by
value, that each row's ciphertext decrypts to its own plaintext.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import Keyring, get_cipher
from encmigrate import plan as plan_module
from encmigrate.migrate import MigrateOptions, decrypt_back, migrate_data, rewrap, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.revisions.triggers import ShadowColumn, install_trigger_statements
from encmigrate.tracking import metadata as tracking_metadata

ROWS = 2000

PLAN = """
[database]
url = "{url}"

[[columns]]
table = "pay"
column = "amount"
type = "numeric"

[[columns]]
table = "pay"
column = "note"
searchable = true
"""

SHADOWS = [
    ShadowColumn("amount", "amount_encrypted"),
    ShadowColumn("note", "note_encrypted", "note_search"),
]

# Each layout makes two or more physical tables under ``pay`` with rows at the same ctids.
LAYOUTS = {
    "range": [
        "CREATE TABLE pay (id int, d date, amount numeric NOT NULL, note text, "
        "PRIMARY KEY (d, id)) PARTITION BY RANGE (d)",
        "CREATE TABLE pay_2025 PARTITION OF pay FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        "CREATE TABLE pay_2026 PARTITION OF pay FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "CREATE TABLE pay_other PARTITION OF pay DEFAULT",
    ],
    "list": [
        "CREATE TABLE pay (id int, d date, amount numeric NOT NULL, note text, "
        "region text, PRIMARY KEY (region, id)) PARTITION BY LIST (region)",
        "CREATE TABLE pay_eu PARTITION OF pay FOR VALUES IN ('eu')",
        "CREATE TABLE pay_us PARTITION OF pay FOR VALUES IN ('us')",
        "CREATE TABLE pay_rest PARTITION OF pay DEFAULT",
    ],
    "hash": [
        "CREATE TABLE pay (id int, d date, amount numeric NOT NULL, note text, "
        "PRIMARY KEY (id)) PARTITION BY HASH (id)",
        *(
            f"CREATE TABLE pay_h{i} PARTITION OF pay FOR VALUES WITH (MODULUS 3, REMAINDER {i})"
            for i in range(3)
        ),
    ],
}


def _fill(conn: sa.Connection, layout: str) -> None:
    for statement in LAYOUTS[layout]:
        conn.exec_driver_sql(statement)
    for name in ("amount_encrypted", "note_encrypted", "note_search"):
        conn.exec_driver_sql(f"ALTER TABLE pay ADD COLUMN {name} bytea")
    for statement in install_trigger_statements(conn.dialect, "pay", SHADOWS):
        conn.exec_driver_sql(statement)
    regions = ["eu", "us", "ap"]
    years = ["2025-03-01", "2026-03-01", "2024-03-01"]
    rows = [
        {
            "id": i,
            "d": years[i % 3],
            "amount": Decimal(i) / 100,
            "note": None if i % 41 == 0 else f"note-{i}-ü",
            "region": regions[i % 3],
        }
        for i in range(1, ROWS + 1)
    ]
    if layout == "list":
        conn.execute(
            sa.text(
                "INSERT INTO pay (id, d, amount, note, region) "
                "VALUES (:id, :d, :amount, :note, :region)"
            ),
            rows,
        )
    else:
        conn.execute(
            sa.text("INSERT INTO pay (id, d, amount, note) VALUES (:id, :d, :amount, :note)"), rows
        )


@pytest.fixture(params=sorted(LAYOUTS))
def partitioned(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> Iterator[tuple[sa.Engine, plan_module.Plan, str]]:
    layout: str = request.param
    engine = connect_engine(pg_url)
    try:
        tracking_metadata.create_all(engine)
        with engine.begin() as conn:
            _fill(conn, layout)
        path = tmp_path / "encmigrate.toml"
        path.write_text(PLAN.format(url=pg_url))
        yield engine, plan_module.load(path, environ={}), layout
    finally:
        engine.dispose()


def _own_values(engine: sa.Engine, keyring: Keyring) -> tuple[int, int]:
    """(rows whose ciphertexts decrypt to their own plaintext, rows checked)."""
    amount = get_cipher("pay.amount", type="numeric", keyring=keyring)
    note = get_cipher("pay.note", keyring=keyring)
    good = checked = 0
    with engine.connect() as conn:
        for row in conn.execute(
            sa.text("SELECT amount, amount_encrypted, note, note_encrypted FROM pay")
        ):
            checked += 1
            same_amount = amount.decrypt(row.amount_encrypted) == row.amount
            same_note = (row.note is None and row.note_encrypted is None) or (
                note.decrypt(row.note_encrypted) == row.note
            )
            good += same_amount and same_note
    return good, checked


@pytest.mark.parametrize("workers", [1, 2])
def test_each_row_of_a_partitioned_table_gets_its_own_ciphertext(
    partitioned: tuple[sa.Engine, plan_module.Plan, str], workers: int
) -> None:
    engine, plan, _ = partitioned
    keyring = Keyring.generate()
    options = MigrateOptions(batch_size=150, workers=workers)
    reports = migrate_data(plan, engine, keyring, options=options)
    assert reports[0].rows_done == ROWS
    assert _own_values(engine, keyring) == (ROWS, ROWS)
    assert all(v.ok for v in verify(plan, engine, keyring)), [
        v.summary() for v in verify(plan, engine, keyring)
    ]


def test_rewrap_and_decrypt_back_keep_each_partitions_values(
    partitioned: tuple[sa.Engine, plan_module.Plan, str],
) -> None:
    engine, plan, _ = partitioned
    keyring = Keyring.generate()
    options = MigrateOptions(batch_size=150)
    migrate_data(plan, engine, keyring, options=options)
    keyring = keyring.rotated()
    rewrap(plan, engine, keyring, options=options)
    assert _own_values(engine, keyring) == (ROWS, ROWS)
    query = sa.text("SELECT id, amount::text, note FROM pay ORDER BY id")
    with engine.begin() as conn:
        before = conn.execute(query).all()
        # The state after the drop's downgrade: plaintext columns back, empty, no trigger.
        conn.exec_driver_sql("DROP TRIGGER encmigrate_shadow ON pay")
        conn.exec_driver_sql("ALTER TABLE pay ALTER COLUMN amount DROP NOT NULL")
        conn.exec_driver_sql("UPDATE pay SET amount = NULL, note = NULL")
    decrypt_back(plan, engine, keyring, options=options)
    with engine.connect() as conn:
        assert conn.execute(query).all() == before


def test_rows_moving_between_partitions_during_the_run_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """An application moves rows across partition bounds (and into and out of the default
    partition) while two workers encrypt: a moved row is deleted from one partition and
    inserted into another, behind or ahead of the cursors."""
    engine = connect_engine(pg_url)
    try:
        tracking_metadata.create_all(engine)
        with engine.begin() as conn:
            _fill(conn, "range")
        path = tmp_path / "encmigrate.toml"
        path.write_text(PLAN.format(url=pg_url))
        plan = plan_module.load(path, environ={})
        keyring = Keyring.generate()
        stop = threading.Event()
        moved: list[int] = []

        def application() -> None:
            rng = random.Random(7)
            years = ["2025-06-01", "2026-06-01", "2023-06-01"]
            with engine.connect() as conn:
                while not stop.is_set() and len(moved) < 400:
                    row_id = rng.randrange(1, ROWS + 1)
                    with conn.begin():
                        conn.execute(
                            sa.text("UPDATE pay SET d = :d, note = note || '+' WHERE id = :i"),
                            {"d": rng.choice(years), "i": row_id},
                        )
                    moved.append(row_id)

        writer = threading.Thread(target=application)
        writer.start()
        try:
            migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=50, workers=2))
        finally:
            stop.set()
            writer.join()
        migrate_data(plan, engine, keyring, options=MigrateOptions(batch_size=50))  # catch-up
        assert moved
        assert _own_values(engine, keyring) == (ROWS, ROWS)
        with engine.connect() as conn:
            per_partition = dict(
                conn.execute(
                    sa.text("SELECT tableoid::regclass::text, count(*) FROM pay GROUP BY 1")
                ).all()
            )
        assert per_partition.get("pay_other", 0) > 0 and sum(per_partition.values()) == ROWS
        assert all(v.ok for v in verify(plan, engine, keyring))
    finally:
        engine.dispose()


def test_step_1_builds_the_search_index_on_every_partition_without_blocking(
    pg_url: str, tmp_path: Path
) -> None:
    """CREATE INDEX CONCURRENTLY refuses a partitioned table: the revision builds the index
    on each leaf concurrently and attaches it, down a two-level tree, and undoes it."""
    from encmigrate.revisions import add_columns
    from support.revisions import column, execute, make_project, rows

    execute(
        pg_url,
        *LAYOUTS["range"][:3],
        "CREATE TABLE pay_other PARTITION OF pay DEFAULT PARTITION BY HASH (id)",
        "CREATE TABLE pay_other_0 PARTITION OF pay_other FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE pay_other_1 PARTITION OF pay_other FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        "INSERT INTO pay (id, d, amount, note) "
        "SELECT i, DATE '2024-06-01' + i, i, 'n' || i FROM generate_series(1, 900) AS i",
    )
    project = make_project(tmp_path / "p", pg_url, column("pay", "note", searchable=True))
    add_columns(project.plan(), apply=True)
    indexes = rows(
        pg_url,
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE a.attname = 'note_search' ORDER BY 1",
    )
    tables = {"pay", "pay_2025", "pay_2026", "pay_other", "pay_other_0", "pay_other_1"}
    assert len(indexes) == len(tables) and all(valid for _, valid in indexes)
    parents = rows(
        pg_url,
        "SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE a.attname = 'note_search'",
    )
    assert parents == [(len(tables) - 1,)]  # every index but the root's is attached
    plan = rows(
        pg_url,
        "EXPLAIN SELECT id FROM pay WHERE note_search = '\\x00'::bytea",
    )
    assert any("Index" in line for (line,) in plan) or any("Bitmap" in line for (line,) in plan)
    project.downgrade()
    assert rows(pg_url, "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%note_search%'") == [
        (0,)
    ]
    project.upgrade()
    assert len(rows(pg_url, "SELECT 1 FROM pg_indexes WHERE indexdef LIKE '%note_search%'")) == 6


def test_plan_check_refuses_a_table_with_inheritance_children(pg_url: str, tmp_path: Path) -> None:
    """The shadow trigger on an INHERITS parent does not fire for its children's rows: a
    child's plaintext could change and keep a stale ciphertext, lost at step 5."""
    engine = connect_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE pay (id int PRIMARY KEY, d date, amount numeric, note text)"
            )
            conn.exec_driver_sql("CREATE TABLE pay_child (PRIMARY KEY (id)) INHERITS (pay)")
    finally:
        engine.dispose()
    path = tmp_path / "encmigrate.toml"
    path.write_text(PLAN.format(url=pg_url))
    with pytest.raises(plan_module.PlanError, match="inherited by 1 child table"):
        plan_module.load(path, environ={})


def test_plan_check_refuses_unique_token_on_a_partitioned_table(
    pg_url: str, tmp_path: Path
) -> None:
    """A unique index of a partitioned table must include the partition key: one on the
    search token alone cannot exist, so step 5 could never carry the uniqueness over."""
    engine = connect_engine(pg_url)
    try:
        with engine.begin() as conn:
            for statement in LAYOUTS["range"]:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    path = tmp_path / "encmigrate.toml"
    path.write_text(
        PLAN.format(url=pg_url).replace(
            "searchable = true", "searchable = true\nunique_token = true"
        )
    )
    with pytest.raises(plan_module.PlanError, match="requires the partition key in every unique"):
        plan_module.load(path, environ={})
