"""The SQL the revisions' custom operations emit, rendered offline: no database server.

Each operation is run through an offline ``MigrationContext`` configured as
``alembic upgrade --sql`` renders (named paramstyle, literal values), so these
tests see the text a reviewer reads and a database would run. Names are
chosen to break naive SQL building: ``%``, ``:b``, quotes, line breaks and
the dollar-quote tag.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.migration import MigrationContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy.dialects import postgresql, sqlite

import encmigrate.revisions.ops  # noqa: F401  (registers op.install_shadow_trigger & co.)
from encmigrate.revisions.ops import (
    CheckEncryptedOp,
    CreateSearchIndexOp,
    CreateSecureViewOp,
    ExecuteVerbatimOp,
    InstallShadowTriggerOp,
    NoteOp,
    RewriteTableOp,
    SetMigrationStatusOp,
    lock_failure,
)
from encmigrate.revisions.ops.index import (
    _create_partitioned_index,
    _Partition,
    _partition_index_name,
)
from encmigrate.revisions.triggers import (
    ShadowColumn,
    check_statement,
    install_trigger_statements,
    missing_rows_query,
    pg_function_name,
)

HOSTILE_TABLE = "pct%b"
HOSTILE_COLUMN = "a :b"


def render(dialect: str, run: Callable[[Operations], object]) -> str:
    """What ``run`` prints under ``alembic upgrade --sql`` for ``dialect``."""
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=dialect,
        dialect_opts={"paramstyle": "named"},
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    run(Operations(context))
    return buffer.getvalue()


def statements(text: str) -> list[str]:
    """The SQL statements of rendered output, without comment lines or blank ones."""
    lines = [line for line in text.splitlines() if not line.startswith("--")]
    # Alembic ends each statement with ";" and a blank line; a trigger body has no blank line.
    return [s.strip().removesuffix(";") for s in "\n".join(lines).split(";\n\n") if s.strip()]


# -- add-columns: the shadow columns -------------------------------------------------------------


def test_shadow_columns_of_a_schema_qualified_table_are_added_idempotently() -> None:
    text = render(
        "postgresql",
        lambda op: op.add_column(
            "orders",
            sa.Column("card number_encrypted", sa.LargeBinary(), nullable=True),
            schema="Billing",
            if_not_exists=True,
        ),
    )
    assert (
        'ALTER TABLE "Billing".orders ADD COLUMN IF NOT EXISTS "card number_encrypted" BYTEA'
        in (text)
    )


def test_the_search_index_is_built_concurrently_and_offline_says_how_to_clear_a_leftover() -> None:
    text = render(
        "postgresql",
        lambda op: op.create_search_index(
            "ix_orders_card_search", "orders", "card_search", schema="Billing", unique=True
        ),
    )
    comment, _, sql = text.partition("CREATE UNIQUE INDEX")
    assert 'DROP INDEX CONCURRENTLY "Billing".ix_orders_card_search;' in comment
    assert sql.strip().startswith('CONCURRENTLY ix_orders_card_search ON "Billing".orders')
    # No IF NOT EXISTS offline: it would keep an INVALID leftover for good.
    assert "IF NOT EXISTS" not in text
    # CONCURRENTLY cannot run in a transaction: the autocommit block ends it first.
    assert text.index("COMMIT;") < text.index("CREATE UNIQUE INDEX")


def test_dropping_the_search_index_is_concurrent_on_postgresql_and_plain_on_sqlite() -> None:
    pg = render("postgresql", lambda op: op.drop_search_index("ix", "t", "c_search", schema="s"))
    lite = render("sqlite", lambda op: op.drop_search_index("ix", "t", "c_search"))
    assert "DROP INDEX CONCURRENTLY s.ix;" in pg
    assert statements(lite) == ["DROP INDEX ix"]


# -- add-columns on a partitioned table ----------------------------------------------------------


class _RecordingOperations:
    """Just enough of ``Operations`` for the partitioned index build: it records the SQL."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        self._context = SimpleNamespace(dialect=dialect)
        no_invalid_index = SimpleNamespace(scalar=lambda: None)
        self._bind = SimpleNamespace(execute=lambda *args, **kwargs: no_invalid_index)

    def get_context(self) -> Any:
        return self._context

    def get_bind(self) -> Any:
        return self._bind

    def execute(self, statement: Any) -> None:
        self.executed.append(str(statement.statement).replace("%%", "%"))


def test_a_partitioned_table_gets_its_index_only_on_itself_and_concurrently_on_each_leaf() -> None:
    tree = [
        _Partition("s", "events", None, False),
        _Partition("s", "events_2026", ("s", "events"), False),
        _Partition("s", "events_2026_01", ("s", "events_2026"), True),
        _Partition("s", "events_old", ("s", "events"), True),
    ]
    operations = _RecordingOperations()
    op = CreateSearchIndexOp("ix_events_c_search", "events", "c_search", schema="s")
    _create_partitioned_index(operations, op, tree, retries=0)  # type: ignore[arg-type]
    sub = _partition_index_name("ix_events_c_search", "events_2026")
    leaf = _partition_index_name("ix_events_c_search", "events_2026_01")
    old = _partition_index_name("ix_events_c_search", "events_old")
    assert operations.executed == [
        "CREATE INDEX IF NOT EXISTS ix_events_c_search ON ONLY s.events (c_search)",
        f"CREATE INDEX IF NOT EXISTS {sub} ON ONLY s.events_2026 (c_search)",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {leaf} ON s.events_2026_01 (c_search)",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {old} ON s.events_old (c_search)",
        f"ALTER INDEX s.ix_events_c_search ATTACH PARTITION s.{sub}",
        f"ALTER INDEX s.{sub} ATTACH PARTITION s.{leaf}",
        f"ALTER INDEX s.ix_events_c_search ATTACH PARTITION s.{old}",
    ]


def test_partition_index_names_fit_postgresql_and_differ_per_partition() -> None:
    index = "ix_" + "é" * 40 + "_search"
    names = {_partition_index_name(index, f"partition_{'ü' * 20}_{n}") for n in range(50)}
    assert len(names) == 50
    assert all(len(name.encode("utf-8")) <= 63 for name in names)


# -- the shadow trigger --------------------------------------------------------------------------


def test_the_postgresql_trigger_survives_percent_colon_and_the_dollar_tag_in_names() -> None:
    text = render(
        "postgresql",
        lambda op: op.install_shadow_trigger(
            HOSTILE_TABLE,
            [(HOSTILE_COLUMN, f"{HOSTILE_COLUMN}_encrypted", "tok$encmigrate$")],
            schema="My Schema",
        ),
    )
    function = '"My Schema"."encmigrate_shadow_pct%b"()'
    found = statements(text)
    assert found[0] == 'DROP TRIGGER IF EXISTS encmigrate_shadow ON "My Schema"."pct%b"'
    assert found[1].startswith(f"CREATE OR REPLACE FUNCTION {function} RETURNS trigger")
    # The body's dollar quote uses a tag that no name in it contains.
    tag = re.search(r"AS (\$\w*\$)", found[1])
    assert tag is not None and tag.group(1) != "$encmigrate$"
    assert found[1].endswith(tag.group(1))
    assert 'NEW."a :b_encrypted" := NULL;' in found[1]
    assert "NEW.tok$encmigrate$ := NULL;" in found[1]
    # Only the plaintext is watched: the migrator's ciphertext-only writes do not fire it.
    assert found[2] == (
        'CREATE TRIGGER encmigrate_shadow BEFORE UPDATE OF "a :b" ON "My Schema"."pct%b" '
        f"FOR EACH ROW EXECUTE FUNCTION {function}"
    )


def test_with_view_writes_the_trigger_also_watches_the_ciphertext_and_nulls_the_plaintext() -> None:
    columns = [ShadowColumn("email", "email_encrypted", None)]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    plain = install_trigger_statements(dialect, "users", columns)
    both = install_trigger_statements(dialect, "users", columns, view_writes=True)
    assert "BEFORE UPDATE OF email ON users" in plain[-1]
    assert "BEFORE UPDATE OF email, email_encrypted ON users" in both[-1]
    assert "NEW.email := NULL;" not in plain[-2]
    assert "ELSIF NEW.email_encrypted IS DISTINCT FROM OLD.email_encrypted THEN" in both[-2]
    assert "NEW.email := NULL;" in both[-2]
    # The migrator's own writes are recognised before anything is cleared.
    assert both[-2].index("'migrator' THEN") < both[-2].index("NEW.email := NULL;")


def test_the_sqlite_trigger_is_one_per_column_and_updates_by_rowid() -> None:
    text = render(
        "sqlite",
        lambda op: op.install_shadow_trigger(
            "users", [("email", "email_encrypted", "email_search"), ("phone", "phone_encrypted")]
        ),
    )
    found = statements(text)
    assert found[:2] == [
        "DROP TRIGGER IF EXISTS encmigrate_shadow_users_email",
        "DROP TRIGGER IF EXISTS encmigrate_shadow_users_phone",
    ]
    assert found[2].startswith(
        "CREATE TRIGGER encmigrate_shadow_users_email AFTER UPDATE OF email ON users"
    )
    assert "SET email_encrypted = NULL, email_search = NULL WHERE rowid = NEW.rowid" in found[2]
    assert "SET phone_encrypted = NULL WHERE rowid = NEW.rowid" in found[3]


def test_the_trigger_function_name_stays_within_63_bytes() -> None:
    long = "ß" * 60
    assert len(pg_function_name(long).encode("utf-8")) <= 63
    assert pg_function_name(long) != pg_function_name(long + "x")
    assert pg_function_name("users") == "encmigrate_shadow_users"


# -- secure views --------------------------------------------------------------------------------


def test_the_view_renames_columns_and_quotes_a_hostile_view_name() -> None:
    text = render(
        "postgresql",
        lambda op: op.create_secure_view(
            'users_secure"; DROP TABLE users; --',
            "users",
            [("id", "id"), ("email", "email_encrypted"), ("Mixed Case", "Mixed Case_encrypted")],
            schema="app",
        ),
    )
    assert statements(text) == [
        'CREATE VIEW app."users_secure""; DROP TABLE users; --" AS\n'
        "SELECT\n"
        "    id,\n"
        "    email_encrypted AS email,\n"
        '    "Mixed Case_encrypted" AS "Mixed Case"\n'
        "FROM app.users",
    ]


def test_dropping_the_view_reverses_into_the_same_view() -> None:
    create = CreateSecureViewOp("v", "t", [("a", "a_encrypted")], schema="s")
    drop = create.reverse()
    assert render("sqlite", lambda op: op.invoke(drop)).count("DROP VIEW IF EXISTS s.v;") == 1
    again = drop.reverse()
    assert (again.view, again.table, again.columns, again.schema) == (
        "v",
        "t",
        [("a", "a_encrypted")],
        "s",
    )


# -- the drop's guard and bookkeeping -----------------------------------------------------------


def test_the_postgresql_guard_aborts_the_revision_from_a_do_block() -> None:
    text = render(
        "postgresql",
        lambda op: op.check_encrypted(
            "o'rders", [("card", "card_encrypted"), ("cvv", "cvv_encrypted")], schema="s"
        ),
    )
    assert "DO $encmigrate$" in text
    assert (
        'IF EXISTS (SELECT 1 FROM s."o\'rders" WHERE (card IS NOT NULL AND card_encrypted IS '
        "NULL) OR (cvv IS NOT NULL AND cvv_encrypted IS NULL)) THEN"
    ) in text
    # The quote in the name is doubled inside the message's string literal.
    assert "RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = " in text
    assert "s.o''rders has rows with plaintext and no ciphertext" in text


def test_the_guard_block_holds_no_dollar_tag_a_name_can_close() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statement = check_statement(dialect, "t$encmigrate$", [("c", "c_encrypted")], None)
    tag = re.match(r"DO (\$\w*\$)", statement)
    assert tag is not None
    assert statement.count(tag.group(1)) == 2  # the opening and the closing tag only


def test_the_sqlite_guard_is_a_comment_offline_that_a_line_break_in_a_name_cannot_end() -> None:
    text = render(
        "sqlite",
        lambda op: op.check_encrypted("t\nDROP TABLE users", [("c", "c_encrypted")]),
    )
    body = [line for line in text.splitlines() if line.strip()]
    assert body and all(line.startswith("-- ") for line in body)
    assert "DROP TABLE users" in text
    assert statements(text) == []


def test_the_sqlite_guard_query_finds_rows_with_plaintext_and_no_ciphertext() -> None:
    engine = sa.create_engine("sqlite://")
    query = missing_rows_query(
        sqlite.dialect(),  # type: ignore[no-untyped-call]
        "t",
        [("c", "c_encrypted")],
        None,
    )
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (c TEXT, c_encrypted BLOB)")
        connection.exec_driver_sql("INSERT INTO t VALUES (NULL, NULL), ('x', X'01')")
        assert connection.exec_driver_sql(query).all() == []
        connection.exec_driver_sql("INSERT INTO t VALUES ('y', NULL)")
        assert connection.exec_driver_sql(query).all() == [(1,)]
    engine.dispose()


def test_the_status_update_renders_names_as_escaped_literals() -> None:
    text = render(
        "postgresql",
        lambda op: op.set_migration_status([("o'brien", "c"), ("t", "x")], "dropped"),
    )
    assert "UPDATE encryption_migrations SET status='dropped'" in text
    assert "encryption_migrations.table_name = 'o''brien'" in text
    assert "encryption_migrations.column_name = 'x'" in text
    assert ":" not in text.split("SET", 1)[1].replace("::", "")  # no bind parameter left


def test_the_status_is_refused_unless_it_is_a_known_one() -> None:
    with pytest.raises(ValueError, match="bogus"):
        SetMigrationStatusOp([("t", "c")], "bogus")


def test_the_table_rewrite_runs_outside_the_transaction() -> None:
    pg = render("postgresql", lambda op: op.rewrite_table("t", schema="Big Schema"))
    lite = render("sqlite", lambda op: op.rewrite_table("t"))
    assert pg.index("COMMIT;") < pg.index('VACUUM FULL "Big Schema".t;') < pg.index("BEGIN;")
    assert "VACUUM;" in lite


# -- locks, comments and verbatim SQL -----------------------------------------------------------


def test_ddl_timeouts_are_set_on_postgresql_only() -> None:
    assert "SET lock_timeout = '1500ms';" in render(
        "postgresql", lambda op: op.set_ddl_timeouts(lock_timeout_ms=1500)
    )
    assert "RESET lock_timeout;" in render("postgresql", lambda op: op.reset_ddl_timeouts())
    assert statements(render("sqlite", lambda op: op.set_ddl_timeouts(lock_timeout_ms=1500))) == []


@pytest.mark.parametrize(
    ("sqlstate", "expected"), [("55P03", "55P03"), ("40P01", "40P01"), ("23505", None)]
)
def test_only_lock_timeouts_and_deadlocks_are_retried(sqlstate: str, expected: str | None) -> None:
    error = SimpleNamespace(orig=SimpleNamespace(sqlstate=sqlstate))
    assert lock_failure(error) == expected  # type: ignore[arg-type]
    assert lock_failure(ValueError("no sqlstate")) is None


def test_verbatim_sql_keeps_percent_and_colon_as_written() -> None:
    statement = 'UPDATE "pct%b" SET "a :b" = \'12 :30\''
    assert statements(render("sqlite", lambda op: op.execute_verbatim(statement))) == [statement]


# -- the revision file ---------------------------------------------------------------------------


def _rendered(op: MigrateOperation) -> str:
    migration = MigrationContext.configure(dialect_name="sqlite")
    context = AutogenContext(migration, opts={}, autogenerate=False)
    result = renderers.dispatch(op)(context, op)
    return "\n".join(result) if isinstance(result, list) else str(result)


def test_the_revision_file_spells_names_as_python_literals_and_notes_as_comments() -> None:
    install = InstallShadowTriggerOp(
        "t'\"", [("a\nb", "a\nb_encrypted", None)], schema="s", view_writes=True
    )
    assert _rendered(install) == (
        "op.install_shadow_trigger('t\\'\"', [('a\\nb', 'a\\nb_encrypted', None)], "
        "schema='s', view_writes=True)"
    )
    check = CheckEncryptedOp("t", [("c", "c_encrypted")])
    assert _rendered(check) == "op.check_encrypted('t', [('c', 'c_encrypted')])"
    assert _rendered(RewriteTableOp("t", schema="s")) == "op.rewrite_table('t', schema='s')"
    note = _rendered(NoteOp(["two\nlines", "bell \a"]))
    assert note.splitlines() == ["# two", "# lines", "# bell ?"]
    assert _rendered(ExecuteVerbatimOp("SELECT ':x'")) == "op.execute_verbatim(\"SELECT ':x'\")"
