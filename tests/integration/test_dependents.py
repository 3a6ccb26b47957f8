"""What depends on a planned plaintext column: found by plan check, refused by step 5, handled.

The PostgreSQL schema below has one object of every kind the catalogs record
(views, rules, indexes, constraints both ways, generated columns, triggers,
policies, publications, statistics, functions); each must be named by
``find_dependents``, by ``encmigrate plan check`` and by the refusal of
``drop-unencrypted``, and the drop must go through once the operator has dealt
with them. SQLite has the subset it supports. MariaDB finds views, triggers and
stored routines by their text: the search must keep to the plan's database (an
object in another one counts only when it names the plan's table qualified), and
a CHECK's effect must be what the server does with it, which the test asks it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import RefusedError
from encmigrate.dependents import Dependent, find_dependents
from encmigrate.plan import PlanError
from encmigrate.revisions import add_columns, drop_unencrypted
from encmigrate.testing import MariaDBServer, create_database, drop_database
from support.cli import operator_env, run_cli
from support.revisions import Project, column, execute, make_project, rows

Run = Callable[..., subprocess.CompletedProcess[str]]

PG_SCHEMA = (
    "CREATE TABLE region (name text PRIMARY KEY)",
    "INSERT INTO region VALUES ('eu'), ('us')",
    """CREATE TABLE customer (
        id integer PRIMARY KEY,
        email text NOT NULL,
        phone text,
        code text CONSTRAINT customer_code_key UNIQUE,
        region text CONSTRAINT customer_region_fkey REFERENCES region (name),
        note text CONSTRAINT customer_note_check CHECK (length(note) < 500),
        tag text,
        email_upper text GENERATED ALWAYS AS (upper(email)) STORED,
        CONSTRAINT customer_tag_excl EXCLUDE USING btree (tag WITH =)
    )""",
    "CREATE TABLE orders (id integer PRIMARY KEY, "
    "customer_code text CONSTRAINT orders_customer_code_fkey REFERENCES customer (code))",
    "CREATE INDEX ix_customer_phone ON customer (phone)",
    "CREATE UNIQUE INDEX customer_email_lower ON customer (lower(email))",
    "CREATE VIEW customer_emails AS SELECT id, email FROM customer",
    "CREATE MATERIALIZED VIEW customer_phones AS SELECT id, phone FROM customer",
    "CREATE RULE no_spam AS ON INSERT TO customer WHERE NEW.email LIKE '%spam%' DO INSTEAD NOTHING",
    "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
    "CREATE TRIGGER audit_phone AFTER UPDATE OF phone ON customer "
    "FOR EACH ROW EXECUTE FUNCTION audit()",
    "ALTER TABLE customer ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY own_rows ON customer USING (email = current_user)",
    "CREATE PUBLICATION customer_columns FOR TABLE customer (id, phone)",
    "CREATE PUBLICATION customer_whole FOR TABLE orders",
    "CREATE STATISTICS customer_stats ON phone, note FROM customer",
    "CREATE FUNCTION find_by_phone(wanted text) RETURNS SETOF integer LANGUAGE plpgsql AS "
    "$$BEGIN RETURN QUERY SELECT id FROM customer WHERE phone = wanted; END$$",
    "CREATE FUNCTION count_phones() RETURNS bigint LANGUAGE sql "
    "BEGIN ATOMIC SELECT count(phone) FROM customer; END",
    "INSERT INTO customer (id, email, phone, code, region, note, tag) "
    "SELECT i, 'user' || i || '@example.com', '555-' || i, 'C' || i, "
    "CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'note ' || i, 't' || i "
    "FROM generate_series(1, 20) AS i",
)

PG_PLAN = "".join(
    column("customer", name, **options)
    for name, options in [
        ("email", {"searchable": True, "normalize": "lower"}),
        ("phone", {}),
        ("code", {}),
        ("region", {}),
        ("note", {}),
        ("tag", {}),
    ]
)

# (column, kind, name, blocks step 5): every dependent of the schema above.
PG_EXPECTED = {
    ("email", "view", "public.customer_emails", True),
    ("email", "rule", "no_spam on public.customer", True),
    ("email", "unique index", "public.customer_email_lower", True),
    ("email", "generated column", "public.customer.email_upper", True),
    ("email", "policy", "own_rows on public.customer", True),
    ("phone", "index", "public.ix_customer_phone", False),
    ("phone", "materialized view", "public.customer_phones", True),
    ("phone", "trigger", "audit_phone on public.customer", True),
    ("phone", "publication", "customer_columns", True),
    ("phone", "statistics object", "public.customer_stats", False),
    ("phone", "function", "public.count_phones()", True),
    ("phone", "function", "public.find_by_phone(pg_catalog.text)", False),
    ("code", "unique constraint", "customer_code_key on public.customer", True),
    ("code", "referencing foreign key", "orders_customer_code_fkey on public.orders", True),
    ("region", "foreign key", "customer_region_fkey on public.customer", True),
    ("note", "check constraint", "customer_note_check on public.customer", True),
    ("note", "statistics object", "public.customer_stats", False),
    ("tag", "exclusion constraint", "customer_tag_excl on public.customer", True),
}

# What an operator runs to deal with every blocker but the unique constraint on code.
PG_FIXES = (
    "DROP VIEW customer_emails",
    "DROP MATERIALIZED VIEW customer_phones",
    "DROP RULE no_spam ON customer",
    "DROP INDEX customer_email_lower",
    "ALTER TABLE orders DROP CONSTRAINT orders_customer_code_fkey",
    "ALTER TABLE customer DROP CONSTRAINT customer_region_fkey, "
    "DROP CONSTRAINT customer_note_check, DROP CONSTRAINT customer_tag_excl, "
    "DROP COLUMN email_upper",
    "DROP TRIGGER audit_phone ON customer",
    "DROP POLICY own_rows ON customer",
    "ALTER PUBLICATION customer_columns SET TABLE customer (id)",
    "DROP FUNCTION count_phones()",
)


def _facts(found: list[Dependent]) -> set[tuple[str, str, str, bool]]:
    return {(d.column, d.kind, d.name, d.blocking) for d in found}


def _operator(tmp_path: Path, url: str) -> Run:
    """Run `encmigrate ...` (or `-m alembic ...`) as an operator does, in ``tmp_path``."""
    env = operator_env(
        ENCMIGRATE_KEYRING_FILE=tmp_path / "keys" / "keyring.json",
        ENCMIGRATE_DATABASE_URL=url,
        COLUMNS="400",
        NO_COLOR="1",
    )

    def run(*args: str, module: str = "encmigrate") -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env, module=module)

    return run


def _ok(run: Run, *args: str, module: str = "encmigrate") -> subprocess.CompletedProcess[str]:
    done = run(*args, module=module)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def _encrypt_and_verify(tmp_path: Path, run: Run, plan: str) -> None:
    """Steps 0 to 3 through the CLI: a project, a key, the plan, shadows, backfill, verify."""
    (tmp_path / "keys").mkdir(mode=0o700)
    _ok(run, "init")
    with (tmp_path / "encmigrate.toml").open("a", encoding="utf-8") as handle:
        handle.write("\n" + plan)
    _ok(run, "keys", "generate")
    _ok(run, "add-columns", "--apply")
    _ok(run, "migrate-data")
    _ok(run, "verify")


def _versions(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "alembic" / "versions").glob("*.py"))


def _faked_verified(project: Project, table: str, columns: list[str]) -> None:
    """What migrate-data and a clean verify leave: every ciphertext set, every column verified."""
    sets = ", ".join(f"{name}_encrypted = :c" for name in columns)
    execute(project.url, f"UPDATE {table} SET {sets}", params={"c": b"\x01"})
    for name in columns:
        execute(
            project.url,
            "INSERT INTO encryption_migrations (table_name, column_name, status) "
            "VALUES (:t, :c, 'verified')",
            params={"t": table, "c": name},
        )


# --- PostgreSQL: every kind ---------------------------------------------------------------


@pytest.mark.postgres
def test_find_dependents_names_every_kind_the_postgresql_catalogs_record(
    tmp_path: Path, pg_url: str
) -> None:
    execute(pg_url, *PG_SCHEMA)
    project = make_project(tmp_path / "p", pg_url, PG_PLAN)
    plan = project.plan()
    engine = project.engine()
    try:
        with engine.connect() as connection:
            found = find_dependents(connection, plan.tables)
    finally:
        engine.dispose()
    assert _facts(found) == PG_EXPECTED
    best_effort = [d for d in found if d.best_effort]
    assert [d.name for d in best_effort] == ["public.find_by_phone(pg_catalog.text)"]
    # Only unique indexes and constraints are what --allow-dropping-constraints lets go.
    assert {d.name for d in found if d.droppable} == {
        "public.customer_email_lower",
        "customer_code_key on public.customer",
    }
    # The plan carries them per column, and warns about each (blocking ones say so).
    assert {d for c in plan.columns for d in c.dependents} == set(found)
    refusing = [w for w in plan.warnings if "drop-unencrypted will refuse until" in w.message]
    assert len(refusing) == sum(1 for d in found if d.blocking)


@pytest.mark.postgres
def test_a_percent_sign_in_the_table_name_hides_no_dependent(tmp_path: Path, pg_url: str) -> None:
    # The table's name is a bound value for to_regclass: a `%` doubled by the dialect's quoting
    # named another (missing) table, and the view below went unreported.
    execute(
        pg_url,
        'CREATE TABLE "pct%b" (id integer PRIMARY KEY, email text)',
        'CREATE VIEW pct_emails AS SELECT id, email FROM "pct%b"',
    )
    project = make_project(tmp_path / "p", pg_url, column("pct%b", "email"))
    engine = project.engine()
    try:
        with engine.connect() as connection:
            found = find_dependents(connection, project.plan().tables)
    finally:
        engine.dispose()
    assert [(d.kind, d.name) for d in found] == [("view", "public.pct_emails")]


@pytest.mark.postgres
def test_plan_check_lists_dependents_and_drop_refuses_until_they_are_dealt_with(
    tmp_path: Path, pg_url: str
) -> None:
    execute(pg_url, *PG_SCHEMA)
    run = _operator(tmp_path, pg_url)
    _encrypt_and_verify(tmp_path, run, PG_PLAN)

    report = json.loads(_ok(run, "--json", "plan", "check").stdout)
    listed = {(d["column"], d["kind"], d["name"], d["blocking"]) for d in report["dependents"]}
    assert listed == PG_EXPECTED
    assert all(d["effect"] and d["action"] for d in report["dependents"])
    human = _ok(run, "plan", "check")
    for _, _kind, name, _ in PG_EXPECTED:
        assert name in human.stdout, name
    assert "function (best effort)" in human.stdout
    assert "14 of them block drop-unencrypted" in human.stdout

    written = _versions(tmp_path)
    refused = run("drop-unencrypted", "--confirm")
    assert refused.returncode == 5, refused.stderr
    assert "Traceback" not in refused.stderr
    for column_name, kind, name, blocking in PG_EXPECTED:
        line = f"{kind} '{name}' uses customer.{column_name}"
        assert (line in refused.stderr) is blocking, line
    assert "--allow-dropping-constraints" in refused.stderr
    assert _versions(tmp_path) == written  # nothing written

    execute(pg_url, *PG_FIXES)
    still = run("drop-unencrypted", "--confirm")
    assert still.returncode == 5
    assert "unique constraint 'customer_code_key on public.customer'" in still.stderr
    assert "customer_emails" not in still.stderr
    dropped = _ok(run, "drop-unencrypted", "--confirm", "--apply", "--allow-dropping-constraints")
    assert "customer_code_key on public.customer on customer.code is dropped" in dropped.stderr
    assert "public.find_by_phone" in dropped.stderr  # the best-effort finding, as a note
    remaining = {name for (name,) in rows(pg_url, "SELECT conname FROM pg_constraint")}
    assert "customer_code_key" not in remaining
    assert rows(pg_url, "SELECT count(*) FROM pg_statistic_ext") == [(0,)]
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'"
    left = {name for (name,) in rows(pg_url, columns)}
    assert not {"email", "phone", "code", "region", "note", "tag"} & left
    # Downgrade: the plaintext columns come back (empty) with their plain index and the
    # unique constraint that --allow-dropping-constraints let go.
    _ok(run, "downgrade", "-1", module="alembic")
    indexes = {name for (name,) in rows(pg_url, "SELECT indexname FROM pg_indexes")}
    assert {"ix_customer_phone", "customer_code_key"} <= indexes


@pytest.mark.postgres
def test_primary_key_and_partition_key_columns_are_plan_problems(
    tmp_path: Path, pg_url: str
) -> None:
    execute(
        pg_url,
        "CREATE TABLE events (id integer, kind text, note text, PRIMARY KEY (id, kind)) "
        "PARTITION BY LIST (kind)",
        "CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a')",
        "CREATE TABLE account (id text PRIMARY KEY, secret text)",
    )
    run = _operator(tmp_path, pg_url)
    _ok(run, "init")
    with (tmp_path / "encmigrate.toml").open("a", encoding="utf-8") as handle:
        handle.write(column("events", "kind") + column("events", "note") + column("account", "id"))
    checked = run("plan", "check")
    assert checked.returncode == 2, checked.stderr
    problems = [line for line in checked.stderr.splitlines() if "cannot be encrypted" in line]
    assert len(problems) == 3, checked.stderr
    assert any(
        "columns[0].column: 'kind' cannot be encrypted" in p and "partition key" in p
        for p in problems
    )
    assert any("columns[0].column" in p and "primary key events_pkey" in p for p in problems)
    assert any("columns[2].column: 'id'" in p and "primary key" in p for p in problems)


@pytest.mark.postgres
def test_partitions_and_inheritance_children_are_looked_through(
    tmp_path: Path, pg_url: str
) -> None:
    execute(
        pg_url,
        "CREATE TABLE events (id integer, kind text, note text, PRIMARY KEY (id, kind)) "
        "PARTITION BY LIST (kind)",
        "CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a')",
        "CREATE TABLE events_b PARTITION OF events FOR VALUES IN ('b')",
        "CREATE INDEX ix_events_note ON events (note)",  # one index per partition, attached
        "CREATE INDEX ix_events_a_note ON events_a (note, id)",  # on one partition only
        "CREATE VIEW b_notes AS SELECT note FROM events_b",
        "CREATE TABLE parent (id integer PRIMARY KEY, note text)",
        "CREATE TABLE child (extra text) INHERITS (parent)",
        "CREATE VIEW child_notes AS SELECT note FROM child",
    )
    project = make_project(tmp_path / "p", pg_url, column("events", "note"))
    engine = project.engine()
    try:
        with engine.connect() as connection:
            found = find_dependents(connection, project.plan().tables)
    finally:
        engine.dispose()
    assert _facts(found) == {
        ("note", "index", "public.ix_events_note", False),
        ("note", "index", "public.ix_events_a_note", False),
        ("note", "view", "public.b_notes", True),
    }
    (partition_only,) = [d for d in found if d.name == "public.ix_events_a_note"]
    assert partition_only.effect == "dropped with the column, not restored on downgrade"
    # The shadow trigger on the parent would not see the child's rows: refused.
    project.write_plan(column("parent", "note"))
    with pytest.raises(PlanError, match=r"'note' cannot be encrypted: note is inherited by 1 "):
        project.plan()
    # A column a child inherits is dropped through its parent, never on its own.
    project.write_plan(column("child", "note"))
    with pytest.raises(PlanError, match=r"'note' cannot be encrypted: DROP COLUMN fails: .*"
                       r"inherited from public\.parent"):  # fmt: skip
        project.plan()


# --- SQLite -------------------------------------------------------------------------------

SQLITE_SCHEMA = (
    "CREATE TABLE region (name TEXT PRIMARY KEY)",
    "INSERT INTO region VALUES ('eu')",
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, email TEXT, phone TEXT, region TEXT "
    "REFERENCES region (name), note TEXT, email_upper TEXT GENERATED ALWAYS AS (upper(email)) "
    "VIRTUAL, CONSTRAINT note_short CHECK (length(note) < 500))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, phone TEXT REFERENCES customer (phone))",
    "CREATE TABLE log (what TEXT)",
    "CREATE INDEX ix_customer_phone ON customer (phone)",
    "CREATE VIEW customer_emails AS SELECT id, email FROM customer",
    "CREATE TRIGGER audit_note AFTER UPDATE OF note ON customer "
    "BEGIN INSERT INTO log VALUES ('changed'); END",
    "INSERT INTO customer (id, email, phone, region, note) VALUES "
    "(1, 'ann@example.com', '555-1', 'eu', 'n1'), (2, 'bob@example.com', '555-2', 'eu', 'n2')",
)

SQLITE_EXPECTED = {
    ("email", "generated column", "customer.email_upper", True),
    ("email", "view", "customer_emails", True),
    ("phone", "index", "ix_customer_phone", False),
    ("phone", "index", "ix_customer_phone_lower", True),
    ("phone", "referencing foreign key", "orders(phone) REFERENCES customer(phone)", True),
    ("region", "foreign key", "customer(region) REFERENCES region(name)", True),
    ("note", "check constraint", "note_short", True),
    ("note", "trigger", "audit_note", True),
}


def test_sqlite_dependents_are_named_and_block_the_drop(tmp_path: Path, sqlite_url: str) -> None:
    execute(sqlite_url, *SQLITE_SCHEMA)
    project = make_project(
        tmp_path / "p",
        sqlite_url,
        column("customer", "email", searchable=True)
        + column("customer", "phone")
        + column("customer", "region")
        + column("customer", "note"),
    )
    add_columns(project.plan(), apply=True)
    _faked_verified(project, "customer", ["email", "phone", "region", "note"])
    # Created after add-columns: SQLAlchemy's SQLite reflection, which add-columns uses,
    # warns about expression indexes.
    execute(sqlite_url, "CREATE INDEX ix_customer_phone_lower ON customer (lower(phone))")
    plan = project.plan()
    assert _facts([d for c in plan.columns for d in c.dependents]) == SQLITE_EXPECTED
    written = project.revisions()
    with pytest.raises(RefusedError) as caught:
        drop_unencrypted(project.plan(), confirm=True)
    for column_name, kind, name, blocking in SQLITE_EXPECTED:
        assert (f"{kind} '{name}' uses customer.{column_name}" in str(caught.value)) is blocking
    assert project.revisions() == written


def test_sqlite_drop_goes_through_once_the_blockers_are_gone(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(
        sqlite_url,
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, email TEXT, phone TEXT)",
        "CREATE TABLE log (what TEXT)",
        "CREATE INDEX ix_customer_phone ON customer (phone)",
        "CREATE VIEW customer_emails AS SELECT id, email FROM customer",
        "CREATE TRIGGER audit_phone AFTER UPDATE OF phone ON customer "
        "BEGIN INSERT INTO log VALUES ('changed'); END",
        "INSERT INTO customer VALUES (1, 'ann@example.com', '555-1')",
    )
    project = make_project(
        tmp_path / "p", sqlite_url, column("customer", "email") + column("customer", "phone")
    )
    add_columns(project.plan(), apply=True)
    _faked_verified(project, "customer", ["email", "phone"])
    execute(sqlite_url, "CREATE INDEX ix_customer_phone_lower ON customer (lower(phone))")
    with pytest.raises(RefusedError, match="3 objects depend"):
        drop_unencrypted(project.plan(), confirm=True)
    execute(
        sqlite_url,
        "DROP VIEW customer_emails",
        "DROP TRIGGER audit_phone",
        "DROP INDEX ix_customer_phone_lower",
    )
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert rows(sqlite_url, "SELECT name FROM pragma_table_info('customer') ORDER BY cid") == [
        ("id",), ("email_encrypted",), ("phone_encrypted",),
    ]  # fmt: skip
    project.downgrade()  # the plain index on phone comes back with the column
    assert ("ix_customer_phone",) in rows(
        sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'index'"
    )


# --- uniqueness -----------------------------------------------------------------------------


def test_unique_token_keeps_uniqueness_of_the_normalized_value_after_step_5(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    execute(
        db_url,
        "CREATE TABLE customer (id integer PRIMARY KEY, email varchar(200))",
        "CREATE UNIQUE INDEX customer_email_key ON customer (email)",
        "INSERT INTO customer VALUES (1, 'ann@example.com'), (2, 'bob@example.com'), (3, NULL)",
    )
    run = _operator(tmp_path, db_url)
    plan = column("customer", "email", searchable=True, normalize="lower", unique_token=True)
    _encrypt_and_verify(tmp_path, run, plan)
    report = json.loads(_ok(run, "--json", "plan", "check").stdout)
    (unique,) = report["dependents"]
    assert (unique["kind"], unique["blocking"]) == ("unique index", False)
    assert "a unique index on email_search takes over" in unique["effect"]
    _ok(run, "drop-unencrypted", "--confirm", "--apply")

    engine = sa.create_engine(db_url)
    try:
        indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes("customer")}
        assert indexes["ux_customer_email_search"]["unique"]
        assert indexes["ux_customer_email_search"]["column_names"] == ["email_search"]
        from encmigrate import get_searchable_cipher
        from encmigrate.keys.resolve import default_keyring

        monkeypatch.chdir(tmp_path)
        keyring = default_keyring({"ENCMIGRATE_KEYRING_FILE": str(tmp_path / "keys/keyring.json")})
        cipher = get_searchable_cipher("customer.email", normalize="lower", keyring=keyring)
        sealed = cipher.seal("ANN@Example.com")  # the same value once normalized
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO customer VALUES (4, :blob, :token)"),
                {"blob": sealed.ciphertext, "token": sealed.token},
            )
        other = cipher.seal("carol@example.com")
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO customer VALUES (5, :blob, :token), (6, NULL, NULL)"),
                {"blob": other.ciphertext, "token": other.token},
            )
    finally:
        engine.dispose()
    # Downgrade: the token index goes, the plaintext's unique index comes back.
    _ok(run, "downgrade", "-1", module="alembic")
    engine = sa.create_engine(db_url)
    try:
        names = {i["name"]: i["unique"] for i in sa.inspect(engine).get_indexes("customer")}
    finally:
        engine.dispose()
    assert "ux_customer_email_search" not in names
    assert names["customer_email_key"]
    # The revision file runs on its own too (a fresh `alembic upgrade`, as in production).
    _ok(run, "upgrade", "head", module="alembic")
    engine = sa.create_engine(db_url)
    try:
        names = {i["name"]: i["unique"] for i in sa.inspect(engine).get_indexes("customer")}
    finally:
        engine.dispose()
    assert names["ux_customer_email_search"]
    assert "customer_email_key" not in names


def test_a_unique_index_on_the_plaintext_is_never_dropped_without_a_word(
    tmp_path: Path, db_url: str
) -> None:
    execute(
        db_url,
        "CREATE TABLE account (id integer PRIMARY KEY, email varchar(200))",
        "CREATE UNIQUE INDEX account_email_key ON account (email)",
        "INSERT INTO account VALUES (1, 'a@example.com'), (2, 'b@example.com')",
    )
    project = make_project(tmp_path / "p", db_url, column("account", "email", searchable=True))
    add_columns(project.plan(), apply=True)
    _faked_verified(project, "account", ["email"])
    written = project.revisions()
    with pytest.raises(RefusedError) as caught:
        drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert "unique index" in str(caught.value) and "account_email_key" in str(caught.value)
    assert "set unique_token = true on the column to enforce it on email_search" in str(
        caught.value
    )
    assert project.revisions() == written
    assert rows(db_url, "SELECT count(*) FROM account WHERE email IS NOT NULL") == [(2,)]
    result = drop_unencrypted(
        project.plan(), confirm=True, apply=True, allow_dropping_constraints=True
    )
    assert any("uniqueness is no longer enforced" in note for note in result.notes)


def test_unique_token_refuses_tokens_already_shared_by_several_rows(
    tmp_path: Path, db_url: str
) -> None:
    execute(
        db_url,
        "CREATE TABLE customer (id integer PRIMARY KEY, email varchar(200))",
        "INSERT INTO customer VALUES (1, 'ann@example.com'), (2, 'ANN@example.com')",
    )
    project = make_project(
        tmp_path / "p",
        db_url,
        column("customer", "email", searchable=True, normalize="lower", unique_token=True),
    )
    add_columns(project.plan(), apply=True)
    # Both rows' values are equal once lower-cased: the same token.
    execute(
        db_url,
        "UPDATE customer SET email_encrypted = :c, email_search = :t",
        "INSERT INTO encryption_migrations (table_name, column_name, status) "
        "VALUES ('customer', 'email', 'verified')",
        params={"c": b"\x01", "t": b"\x02same-token"},
    )
    written = project.revisions()
    with pytest.raises(RefusedError, match=r"customer\.email_search: 1 search tokens are each"):
        drop_unencrypted(project.plan(), confirm=True)
    assert project.revisions() == written


@pytest.mark.postgres
def test_allow_dropping_constraints_drops_a_unique_constraint_and_downgrade_restores_it(
    tmp_path: Path, pg_url: str
) -> None:
    execute(
        pg_url,
        "CREATE TABLE account (id integer PRIMARY KEY, code text CONSTRAINT account_code_key "
        "UNIQUE, email text, CONSTRAINT account_pair_key UNIQUE (code, email))",
        "INSERT INTO account VALUES (1, 'a', 'a@x'), (2, 'b', 'b@x')",
    )
    project = make_project(tmp_path / "p", pg_url, column("account", "code"))
    add_columns(project.plan(), apply=True)
    _faked_verified(project, "account", ["code"])
    with pytest.raises(RefusedError) as caught:
        drop_unencrypted(project.plan(), confirm=True)
    message = str(caught.value)
    assert "unique constraint 'account_code_key on public.account' uses account.code" in message
    assert "make the column searchable with unique_token = true" in message
    assert "unique constraint 'account_pair_key on public.account'" in message
    assert "unique_token carries only a single-column uniqueness" in message
    result = drop_unencrypted(
        project.plan(), confirm=True, apply=True, allow_dropping_constraints=True
    )
    assert sum("--allow-dropping-constraints" in note for note in result.notes) == 2
    constraints = (
        "SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'account'::regclass AND contype = 'u' ORDER BY 1"
    )
    assert rows(pg_url, constraints) == []
    project.downgrade()
    assert rows(pg_url, constraints) == [("account_code_key",), ("account_pair_key",)]


def test_sqlite_unique_constraint_still_blocks_with_the_flag(
    tmp_path: Path, sqlite_url: str
) -> None:
    execute(
        sqlite_url,
        "CREATE TABLE account (id INTEGER PRIMARY KEY, code TEXT UNIQUE, email TEXT)",
        "CREATE UNIQUE INDEX account_email_key ON account (email)",
    )
    project = make_project(
        tmp_path / "p", sqlite_url, column("account", "code") + column("account", "email")
    )
    add_columns(project.plan(), apply=True)
    _faked_verified(project, "account", ["code", "email"])
    with pytest.raises(RefusedError) as caught:
        drop_unencrypted(project.plan(), confirm=True, allow_dropping_constraints=True)
    # SQLite cannot drop a column with a UNIQUE constraint; a unique index it can.
    assert "SQLite cannot drop a column that has a UNIQUE constraint" in str(caught.value)
    assert "account_email_key" not in str(caught.value)


# --- MariaDB: what information_schema records -------------------------------------------------

MARIADB_SCHEMA = (
    "CREATE TABLE region (name VARCHAR(20) PRIMARY KEY)",
    "INSERT INTO region VALUES ('eu'), ('us')",
    """CREATE TABLE customer (
        id INT PRIMARY KEY,
        email VARCHAR(200) NOT NULL,
        phone VARCHAR(40),
        code VARCHAR(20),
        region VARCHAR(20),
        note VARCHAR(500) CHECK (note <> ''),
        tag VARCHAR(20),
        prefs JSON,
        active BOOLEAN,
        email_upper VARCHAR(200) AS (UPPER(email)) STORED,
        CONSTRAINT customer_code_key UNIQUE (code),
        CONSTRAINT customer_tag_code UNIQUE (tag, id),
        CONSTRAINT customer_region_fkey FOREIGN KEY (region) REFERENCES region (name),
        CONSTRAINT customer_tag_check CHECK (tag <> code)
    ) ENGINE=InnoDB""",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_code VARCHAR(20), "
    "CONSTRAINT orders_customer_code_fkey FOREIGN KEY (customer_code) REFERENCES customer (code))",
    "CREATE INDEX ix_customer_phone ON customer (phone)",
    "CREATE VIEW customer_emails AS SELECT id, email FROM customer",
    "CREATE TRIGGER audit_phone BEFORE UPDATE ON customer FOR EACH ROW "
    "SET NEW.phone = TRIM(NEW.phone)",
    "INSERT INTO customer (id, email, phone, code, region, note, tag, prefs, active) VALUES "
    "(1, 'a@example.com', '555-1', 'C1', 'eu', 'n', 't1', '{}', TRUE), "
    "(2, 'b@example.com', '555-2', 'C2', 'us', 'n', 't2', '[1]', FALSE)",
)
MARIADB_PLAN = "".join(
    column("customer", name, **options)
    for name, options in [
        ("email", {"searchable": True, "normalize": "lower"}),
        ("phone", {}),
        ("code", {}),
        ("region", {}),
        ("note", {}),
        ("tag", {}),
        ("prefs", {"type": "json"}),
        ("active", {"type": "boolean"}),
    ]
)


def _mariadb_expected(database: str) -> set[tuple[str, str, str, bool]]:
    """Every dependent of MARIADB_SCHEMA (views and foreign keys name their database)."""
    fk = f"on {database}.customer(region) REFERENCES {database}.region(name)"
    referencing = f"on {database}.orders(customer_code) REFERENCES {database}.customer(code)"
    return {
        ("email", "view", f"{database}.customer_emails", True),
        ("email", "generated column", "customer.email_upper", True),
        ("phone", "index", "ix_customer_phone", False),
        ("phone", "trigger", "audit_phone on customer", True),
        ("code", "unique index", "customer_code_key", True),
        ("code", "referencing foreign key", f"orders_customer_code_fkey {referencing}", True),
        ("code", "check constraint", "customer_tag_check", True),
        ("region", "foreign key", f"customer_region_fkey {fk}", True),
        ("region", "index", "customer_region_fkey", False),  # the index the key needs
        ("note", "check constraint", "note", True),  # column-level: goes with the column
        ("tag", "check constraint", "customer_tag_check", True),
        ("tag", "unique index", "customer_tag_code", True),  # shrinks to (id)
    }


def test_mariadb_dependents_are_found_and_listed_by_plan_check(
    tmp_path: Path, mariadb_url: str
) -> None:
    execute(mariadb_url, *MARIADB_SCHEMA)
    expected = _mariadb_expected(sa.make_url(mariadb_url).database or "")
    project = make_project(tmp_path / "p", mariadb_url, MARIADB_PLAN)
    plan = project.plan()  # the live check: the JSON (LONGTEXT) and BOOLEAN (TINYINT(1)) fit
    assert _facts([d for c in plan.columns for d in c.dependents]) == expected
    assert {d.name for c in plan.columns for d in c.dependents if d.droppable} == {
        "customer_code_key",
        "customer_tag_code",
    }
    # The same through the command line, against the live schema.
    run = _operator(tmp_path / "p", mariadb_url)
    report = json.loads(_ok(run, "--json", "plan", "check").stdout)
    listed = {(d["column"], d["kind"], d["name"], d["blocking"]) for d in report["dependents"]}
    assert listed == expected
    assert all(d["effect"] and d["action"] for d in report["dependents"])


def _mariadb_found(project: Project) -> list[Dependent]:
    return [d for c in project.plan().columns for d in c.dependents]


@pytest.fixture
def other_mariadb_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """A second fresh database on the same server, dropped after the test."""
    url = create_database(mariadb_server)
    try:
        yield url
    finally:
        drop_database(mariadb_server, url)


def test_mariadb_stored_routines_that_read_a_planned_column_are_best_effort_warnings(
    tmp_path: Path, mariadb_url: str
) -> None:
    # Routines are not in any dependency catalog: DROP COLUMN goes through, and the function
    # fails on its next call. Their bodies are searched for the table's and the column's names.
    execute(
        mariadb_url,
        "CREATE TABLE people (id BIGINT PRIMARY KEY, full_name TEXT, nickname TEXT)",
        "CREATE TABLE pets (id BIGINT PRIMARY KEY, full_name TEXT)",
        "INSERT INTO people VALUES (1, 'Ann Lee', 'Ann')",
        "CREATE FUNCTION label(i BIGINT) RETURNS TEXT READS SQL DATA "
        "RETURN (SELECT full_name FROM people WHERE id = i)",
        "CREATE PROCEDURE rename_person(i BIGINT, wanted TEXT) MODIFIES SQL DATA "
        "UPDATE people SET full_name = wanted WHERE id = i",
        "CREATE FUNCTION pet_label(i BIGINT) RETURNS TEXT READS SQL DATA "
        "RETURN (SELECT full_name FROM pets WHERE id = i)",
        "CREATE FUNCTION nick(i BIGINT) RETURNS TEXT READS SQL DATA "
        "RETURN (SELECT nickname FROM people WHERE id = i)",
    )
    database = sa.make_url(mariadb_url).database
    project = make_project(tmp_path / "p", mariadb_url, column("people", "full_name"))
    found = _mariadb_found(project)
    assert _facts(found) == {
        ("full_name", "function", f"{database}.label", False),
        ("full_name", "procedure", f"{database}.rename_person", False),
    }
    assert all(d.best_effort for d in found)
    assert {d.effect for d in found} == {
        "its body mentions full_name; if it reads the plaintext it fails at run time (error 1054)"
    }
    warnings = [w.message for w in project.plan().warnings if f"{database}.label" in w.message]
    assert len(warnings) == 1
    assert "(best effort: found by a text search)" in warnings[0]
    assert "drop-unencrypted will refuse" not in warnings[0]

    add_columns(project.plan(), apply=True)
    _faked_verified(project, "people", ["full_name"])
    result = drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert sum(f"{database}.label" in note for note in result.notes) == 1
    with pytest.raises(sa.exc.OperationalError, match="1054"):
        rows(mariadb_url, "SELECT label(1)")


def test_mariadb_objects_in_another_database_are_named_only_when_they_use_the_plans_table(
    tmp_path: Path, mariadb_url: str, other_mariadb_url: str
) -> None:
    # The other database has a customers table of its own, with a view, a trigger and a
    # function over it: none of them depends on this database's customers.email. Its view,
    # trigger and function over this database's table (qualified by its name) do.
    here = sa.make_url(mariadb_url).database
    there = sa.make_url(other_mariadb_url).database
    execute(
        mariadb_url,
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(200))",
        "INSERT INTO customers VALUES (1, 'ann@example.com')",
    )
    execute(
        other_mariadb_url,
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(200))",
        "CREATE VIEW contacts AS SELECT id, email FROM customers",
        "CREATE TRIGGER tidy BEFORE INSERT ON customers FOR EACH ROW "
        "SET NEW.email = LOWER(NEW.email)",
        "CREATE FUNCTION email_of(i BIGINT) RETURNS TEXT READS SQL DATA "
        "RETURN (SELECT email FROM customers WHERE id = i)",
        f"CREATE VIEW their_contacts AS SELECT id, email FROM {here}.customers",
        "CREATE TRIGGER copy_over AFTER INSERT ON customers FOR EACH ROW "
        f"INSERT INTO `{here}` . customers (id, email) VALUES (NEW.id + 1000, NEW.email)",
        "CREATE FUNCTION their_email(i BIGINT) RETURNS TEXT READS SQL DATA "
        f"RETURN (SELECT email FROM {here}.customers WHERE id = i)",
    )
    # In the plan's database, a view over the other database's customers is not one either.
    execute(mariadb_url, f"CREATE VIEW other_contacts AS SELECT id, email FROM {there}.customers")
    project = make_project(tmp_path / "p", mariadb_url, column("customers", "email"))
    assert _facts(_mariadb_found(project)) == {
        ("email", "view", f"{there}.their_contacts", True),
        ("email", "trigger", f"copy_over on {there}.customers", True),
        ("email", "function", f"{there}.their_email", False),
    }

    add_columns(project.plan(), apply=True)
    _faked_verified(project, "customers", ["email"])
    with pytest.raises(RefusedError, match="2 objects depend") as caught:
        drop_unencrypted(project.plan(), confirm=True)
    refusal = str(caught.value)
    assert f"view '{there}.their_contacts' uses customers.email" in refusal
    assert f"trigger 'copy_over on {there}.customers' uses customers.email" in refusal
    assert f"'{there}.contacts'" not in refusal and "tidy" not in refusal
    execute(other_mariadb_url, "DROP VIEW their_contacts", "DROP TRIGGER copy_over")
    drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert rows(other_mariadb_url, "SELECT count(*) FROM contacts") == [(0,)]
    assert rows(mariadb_url, "SELECT count(*) FROM other_contacts") == [(0,)]


def test_mariadb_check_constraints_say_what_drop_column_does_to_them(
    tmp_path: Path, mariadb_url: str
) -> None:
    # MariaDB drops a CHECK with the column when the column is all it uses (a column's own
    # CHECK goes with its column, whatever it reads); one that also uses a column that stays
    # makes DROP COLUMN fail. Every one of them blocks step 5: a lost rule is the operator's
    # decision. Then the server is asked, to show that the texts say what it does.
    execute(
        mariadb_url,
        "CREATE TABLE account (id INT PRIMARY KEY, "
        "a VARCHAR(20) CHECK (a <> id), b VARCHAR(20), c VARCHAR(20), k VARCHAR(20) "
        "CHECK (k <> b), d VARCHAR(20), e VARCHAR(20), CONSTRAINT only_b CHECK (b <> 'x'), "
        "CONSTRAINT b_c CHECK (b <> c), CONSTRAINT d_e CHECK (d <> e))",
    )
    plan = "".join(column("account", name) for name in ("a", "b", "d", "e"))
    project = make_project(tmp_path / "p", mariadb_url, plan)
    found = _mariadb_found(project)
    assert all(d.kind == "check constraint" and d.blocking for d in found)
    lost = "dropped with the column: its rule is no longer enforced"
    assert {(d.column, d.name): d.effect for d in found} == {
        ("a", "a"): lost,
        ("b", "only_b"): lost,
        ("b", "b_c"): "DROP COLUMN fails: the CHECK also uses c, which stays (error 1054)",
        ("b", "k"): "DROP COLUMN fails: the CHECK of column k uses b (error 1054)",
        ("d", "d_e"): "dropped with the columns d, e (step 5 drops them together): "
        "its rule is no longer enforced",
        ("e", "d_e"): "dropped with the columns d, e (step 5 drops them together): "
        "its rule is no longer enforced",
    }
    actions = {(d.column, d.name): d.action for d in found}
    assert "ALTER TABLE ... MODIFY a" in actions["a", "a"]
    assert "ALTER TABLE ... MODIFY k" in actions["b", "k"]

    drop = "ALTER TABLE account DROP COLUMN a, DROP COLUMN b, DROP COLUMN d, DROP COLUMN e"
    checks = (
        "SELECT CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = 'account' ORDER BY 1"
    )
    with pytest.raises(sa.exc.OperationalError, match="Unknown column 'b' in 'CHECK'"):
        execute(mariadb_url, drop)
    execute(mariadb_url, "ALTER TABLE account DROP CONSTRAINT b_c")
    with pytest.raises(sa.exc.OperationalError, match="Unknown column 'b' in 'CHECK'"):
        execute(mariadb_url, drop)  # k's own CHECK
    execute(mariadb_url, "ALTER TABLE account MODIFY k VARCHAR(20)")
    assert rows(mariadb_url, checks) == [("a",), ("d_e",), ("only_b",)]
    execute(mariadb_url, drop)
    assert rows(mariadb_url, checks) == []
