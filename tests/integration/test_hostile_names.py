"""Hostile table and column names through the five steps: they name things and do nothing else.

A name is the user's (or an attacker's) text. It may hold quotes of every
kind, backslashes, ``%``, ``$encmigrate$``, ``--``, ``/*``, ``;``, ``:x``,
multi-byte letters, and be as long as the database allows in bytes: then every
step works, nothing outside the plan changes, the values decrypt back, and
the generated revision files hold the name only inside string literals.
Names with characters that are not printable, or too long in bytes, are
refused when the plan is loaded, with one line naming where.
"""

from __future__ import annotations

import ast
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import tomlkit
from alembic.migration import MigrationContext
from alembic.operations import Operations
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from encmigrate import Keyring, RefusedError, get_cipher
from encmigrate import plan as plan_module
from encmigrate.migrate import MigrateOptions, migrate_data, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.plan import PlanError
from encmigrate.revisions import add_columns, create_views, drop_unencrypted
from encmigrate.revisions.generate import render_sql
from encmigrate.revisions.ops import CheckEncryptedOp
from encmigrate.scaffold import init

# Set by a revision file that runs code smuggled in a name. Never set otherwise.
SENTINEL = "EMXR"
# The audit's table name (issue 14) with the sentinel as payload; no "." (schema.table).
BREAKOUT_TABLE = f'T""";vars(__import__("os"))["environ"]["{SENTINEL}"]="1";"""'
BREAKOUT_COLUMN = "C''';\\\"\"\"; :x%b$encmigrate$'''--/*\\"
# Budgets in UTF-8 bytes: "<column>_encrypted" and "<table>_secure" must fit 63.
COLUMN_BYTES = 63 - len("_encrypted")
TABLE_BYTES = 63 - len("_secure")
VALUES = ["ann@example.com", "O'Brien \\ 100% $$", None, "日本語 😀", "x" * 150]
OURS = ("alembic_version", "encryption_migration")

FRAGMENTS = [
    '"', "'", '"""', "'''", "\\", "%", "%b", "%%", "%(x)s", "$encmigrate$", "$$", "$1",
    "--", "/*", "*/", ";", ":x", " :y", "::", "?", "é", "日本", "😀", " ", "`", "{x}",
    "${message}", "\\N", "#", "[[columns]]", "é" * 5,
]  # fmt: skip
_piece = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=4),
)


def _fits(budget: int) -> Any:
    return lambda name: len(name.encode()) <= budget


def _padded(budget: int) -> Any:
    """The name grown with 2-byte letters to exactly ``budget`` bytes (PostgreSQL's edge)."""

    def pad(name: str) -> str:
        room = budget - len(name.encode())
        return name + "é" * (room // 2) + "x" * (room % 2)

    return pad


def _names(marker: str, budget: int, extra: list[str]) -> st.SearchStrategy[str]:
    # Every name starts with its marker: a column name can never occur inside a table name
    # (or in the revision's code by chance), which the checks below rely on.
    pieces = st.one_of(_piece, st.sampled_from(extra)) if extra else _piece
    base = st.lists(pieces, min_size=1, max_size=6).map(lambda p: marker + "".join(p))
    fitting = base.filter(_fits(budget))
    return st.one_of(fitting, fitting.map(_padded(budget)))


TABLES = _names("§T", TABLE_BYTES, [])
COLUMNS = _names("§C", COLUMN_BYTES, [".", "_encrypted"])


# --- accepted names: the five steps --------------------------------------------------------


def _database(dialect: str, pg_url: str | None, directory: Path) -> str:
    """An empty database for one example: a new SQLite file, or the test's PostgreSQL
    database emptied (quicker than a new database per example)."""
    if dialect == "sqlite":
        return f"sqlite:///{directory / 'test.db'}"
    assert pg_url is not None
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        engine.dispose()
    return pg_url


def _write_plan(directory: Path, url: str, table: str, column: str, searchable: bool) -> Path:
    plan = tomlkit.document()
    plan["database"] = {"url": url}
    entries = tomlkit.aot()
    entries.append(
        tomlkit.table().add("table", table).add("column", column).add("searchable", searchable)
    )
    plan["columns"] = entries
    path = directory / "encmigrate.toml"
    path.write_text(tomlkit.dumps(plan), encoding="utf-8")
    return path


def _setup(url: str, table: str, column: str) -> None:
    engine = sa.create_engine(url)
    q = engine.dialect.identifier_preparer.quote
    statements = [
        f"CREATE TABLE {q(table)} (pk INTEGER PRIMARY KEY, {q(column)} VARCHAR(200), kept TEXT)",
        "CREATE TABLE victim (id INTEGER PRIMARY KEY, note TEXT)",
        "INSERT INTO victim VALUES (1, 'keep me'), (2, 'and me')",
        "CREATE VIEW victim_view AS SELECT id, note FROM victim",
        # A view on the planned table that does not read the plaintext: it must survive
        # the drop (SQLite drops and recreates it around DROP COLUMN).
        f"CREATE VIEW {q(table + '_other')} AS SELECT pk, kept FROM {q(table)}",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("CREATE FUNCTION victim_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)  # quote() doubled "%" for psycopg
            target = sa.table(table, sa.column("pk"), sa.column(column), sa.column("kept"))
            connection.execute(
                target.insert(),
                [{"pk": i, column: v, "kept": f"k{i}"} for i, v in enumerate(VALUES, start=1)],
            )
    finally:
        engine.dispose()


def _outside(url: str, table: str) -> dict[str, Any]:
    """Everything in the database that the plan does not own, with its contents."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            found: dict[str, Any] = {}
            for name in inspector.get_table_names():
                if name == table or name.startswith(OURS):
                    continue
                reflected = sa.Table(name, sa.MetaData(), autoload_with=connection)
                rows = connection.execute(
                    sa.select(reflected).order_by(*reflected.primary_key.columns)
                ).all()
                found[f"table {name}"] = (repr(inspector.get_columns(name)), rows)
            for name in inspector.get_view_names():
                if name != table + "_secure":
                    found[f"view {name}"] = inspector.get_view_definition(name)
            planned = sa.table(table, sa.column("pk"), sa.column("kept"))
            found["pk and kept"] = connection.execute(
                sa.select(planned).order_by(planned.c.pk)
            ).all()
            if connection.dialect.name == "postgresql":
                found["functions"] = connection.exec_driver_sql(
                    "SELECT proname, prosrc FROM pg_proc JOIN pg_namespace n "
                    "ON n.oid = pronamespace WHERE nspname = 'public' "
                    "AND proname NOT LIKE 'encmigrate\\_shadow\\_%%' ORDER BY 1"
                ).all()
            return found
    finally:
        engine.dispose()


def _assert_names_only_in_literals(path: Path, names: list[str]) -> None:
    """The revision is Python whose every occurrence of a name is inside a string constant."""
    source = path.read_bytes()
    tree = ast.parse(source, filename=str(path))  # a name that broke the file fails here
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    spans = []
    literals = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.end_lineno is not None and node.end_col_offset is not None
            start = line_starts[node.lineno - 1] + node.col_offset  # offsets are UTF-8 bytes
            end = line_starts[node.end_lineno - 1] + node.end_col_offset
            spans.append((start, end))
            literals.append(node.value)
    for name in names:
        needle = name.encode()
        at = source.find(needle)
        while at != -1:
            assert any(s <= at and at + len(needle) <= e for s, e in spans), (path.name, name)
            at = source.find(needle, at + 1)
    assert any(names[0] in literal for literal in literals), "the table is named in a literal"
    # Code smuggled into the file would be a statement other than these: the docstring,
    # imports, the revision identifiers, and upgrade()/downgrade() calling op.* only.
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef):
            assert statement.name in ("upgrade", "downgrade")
            for inner in statement.body:
                assert isinstance(inner, ast.Expr), ast.dump(inner)
                call = inner.value
                if isinstance(call, ast.Constant):
                    continue  # the function's docstring
                assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                assert isinstance(call.func.value, ast.Name) and call.func.value.id == "op"
            continue
        assert isinstance(statement, ast.Expr | ast.Import | ast.ImportFrom | ast.AnnAssign)
        assert not isinstance(statement, ast.Expr) or isinstance(statement.value, ast.Constant)


def _five_steps(url: str, directory: Path, table: str, column: str, searchable: bool) -> None:
    os.environ.pop(SENTINEL, None)
    _setup(url, table, column)
    before = _outside(url, table)
    init(directory)
    plan_file = _write_plan(directory, url, table, column, searchable)

    def plan() -> plan_module.Plan:
        return plan_module.load(plan_file, environ={})

    keyring = Keyring.generate()
    rendered = add_columns(plan(), sql=True).sql
    assert rendered is not None
    if "postgresql" in url:
        shadow = postgresql.dialect(paramstyle="named").identifier_preparer.quote(
            column + "_encrypted"
        )
        assert shadow in rendered  # as written: no doubled "%"
    add_columns(plan(), apply=True)
    engine = connect_engine(url)
    try:
        migrate_data(plan(), engine, keyring, options=MigrateOptions(batch_size=2))
        verdicts = verify(plan(), engine, keyring)
        assert all(v.ok for v in verdicts), [v.summary() for v in verdicts]
        create_views(plan(), apply=True)
        assert drop_unencrypted(plan(), confirm=True, sql=True).sql
        drop_unencrypted(plan(), confirm=True, apply=True)
        after = verify(plan(), engine, keyring)
        assert all(v.ok for v in after), [v.summary() for v in after]
    finally:
        engine.dispose()
    # Alembic imported every revision file in this process: smuggled code would have run.
    assert SENTINEL not in os.environ
    target = sa.table(table, sa.column("pk"), sa.column(column + "_encrypted"))
    cipher = get_cipher(f"{table}.{column}", keyring=keyring)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(sa.select(target).order_by(target.c.pk)).all()
            columns = [c["name"] for c in sa.inspect(connection).get_columns(table)]
    finally:
        engine.dispose()
    assert column not in columns and column + "_encrypted" in columns
    decrypted = [cipher.decrypt(blob) if blob is not None else None for _, blob in stored]
    assert decrypted == VALUES
    assert _outside(url, table) == before
    revisions = sorted((directory / "alembic" / "versions").glob("*.py"))
    assert len(revisions) == 3
    for path in revisions:
        _assert_names_only_in_literals(path, [table, column])


def _run_example(
    dialect: str, pg_url: str | None, table: str, column: str, searchable: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        directory = Path(scratch)
        _five_steps(_database(dialect, pg_url, directory), directory, table, column, searchable)


HOSTILE = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    # Each example empties the database it is given (_database): the fixture is reusable.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
# The audit's names; and names as long as PostgreSQL allows, in 2-byte letters.
BREAKOUT = {"table": BREAKOUT_TABLE, "column": BREAKOUT_COLUMN, "searchable": True}
LONGEST = {
    "table": _padded(TABLE_BYTES)("§T a :b%"),
    "column": _padded(COLUMN_BYTES)("§C"),
    "searchable": True,
}


@HOSTILE
@given(table=TABLES, column=COLUMNS, searchable=st.booleans())
@example(**BREAKOUT)
@example(**LONGEST)
def test_hostile_names_only_name_things_on_sqlite(
    table: str, column: str, searchable: bool
) -> None:
    _run_example("sqlite", None, table, column, searchable)


@HOSTILE
@given(table=TABLES, column=COLUMNS, searchable=st.booleans())
@example(**BREAKOUT)
@example(**LONGEST)
def test_hostile_names_only_name_things_on_postgresql(
    pg_url: str, table: str, column: str, searchable: bool
) -> None:
    _run_example("postgresql", pg_url, table, column, searchable)


@pytest.mark.parametrize("names", [BREAKOUT, LONGEST], ids=["breakout", "longest"])
def test_hostile_names_only_name_things_on_mariadb(
    mariadb_url: str, tmp_path: Path, names: dict[str, Any]
) -> None:
    """The two fixed examples (MariaDB refuses a name that ends with a space, which the
    generated names may do, so they run on SQLite and PostgreSQL only)."""
    _five_steps(mariadb_url, tmp_path, names["table"], names["column"], names["searchable"])


@pytest.mark.slow
@settings(HOSTILE, max_examples=60)
@given(
    dialect=st.sampled_from(["sqlite", "postgresql"]),
    table=TABLES,
    column=COLUMNS,
    searchable=st.booleans(),
)
def test_many_hostile_names_only_name_things(
    pg_url: str, dialect: str, table: str, column: str, searchable: bool
) -> None:
    _run_example(dialect, pg_url, table, column, searchable)


# --- refused names: one line at plan load --------------------------------------------------

NOT_PRINTABLE = st.sampled_from(
    ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u200b"]
)


@st.composite
def _refused(draw: st.DrawFn) -> tuple[str, str]:
    """(field, name): a name with a character that is not printable, or too long in bytes."""
    field = draw(st.sampled_from(["table", "column"]))
    budget = TABLE_BYTES if field == "table" else COLUMN_BYTES
    name = draw(_names("§", budget, []))
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(name)))
        name = name[:at] + draw(NOT_PRINTABLE) + name[at:]
    else:
        name += draw(st.sampled_from(["é", "x", "日"]))
        name += "é" * ((budget - len(name.encode())) // 2 + 1)
        assert len(name.encode()) > budget
    return field, name


@settings(max_examples=40, deadline=None, derandomize=True)
@given(_refused())
@example(("column", "x\nDROP TABLE victim;--"))
@example(("table", 'nl\n[[columns]]\ntable = "victim'))
@example(("column", "é" * 27))
def test_names_that_must_be_refused_are_refused_at_plan_load(refused: tuple[str, str]) -> None:
    field, name = refused
    names = {"table": "customer", "column": "email", field: name}
    with tempfile.TemporaryDirectory(prefix="refused-") as scratch:
        # A PostgreSQL URL sets the byte limit; nothing connects: the file is refused first.
        path = _write_plan(
            Path(scratch), "postgresql+psycopg://nobody@127.0.0.1:9/none", **names, searchable=True
        )
        with pytest.raises(PlanError) as raised:
            plan_module.load(path, environ={})
    assert len(raised.value.problems) == 1
    problem = raised.value.problems[0]
    assert f"columns[0].{field}: the {field} name " in problem
    assert problem.isprintable()  # one line, with no character of the name that is not
    assert name not in problem


def test_sqlite_drop_check_in_sql_output_stays_a_comment_even_for_a_refused_name() -> None:
    # The plan refuses such a name; the --sql rendering must not depend on it.
    check = CheckEncryptedOp("t", [("x\nDROP TABLE victim;--", "x\nDROP TABLE victim;--_e")])
    rendered = render_sql([check], "sqlite")
    lines = [line for line in rendered.splitlines() if line.strip()]
    assert lines and all(line.startswith("--") for line in lines), rendered


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_the_drop_check_refuses_with_its_message_whatever_the_name(
    pg_url: str, conforming: str
) -> None:
    """The DO block of step 5 aborts on an unencrypted row; the name in its message is a
    literal that holds whatever standard_conforming_strings says about backslashes."""
    table, column = "§T'\\$encmigrate$ :x%b\\", "§C$$'\\"
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as connection:
            q = engine.dialect.identifier_preparer.quote
            connection.exec_driver_sql(
                f"CREATE TABLE {q(table)} (pk int PRIMARY KEY, {q(column)} text, "
                f"{q(column + '_encrypted')} bytea)"
            )
            target = sa.table(table, sa.column("pk"), sa.column(column))
            connection.execute(target.insert().values(pk=1, **{column: "plain"}))
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET standard_conforming_strings = {conforming}")
            operations = Operations(MigrationContext.configure(connection))
            with pytest.raises(sa.exc.DBAPIError) as raised:
                operations.invoke(CheckEncryptedOp(table, [(column, column + "_encrypted")]))
            connection.rollback()
    finally:
        engine.dispose()
    message = str(raised.value.orig)
    assert message.startswith(f"encmigrate: {table} has rows with plaintext and no ciphertext")


def test_the_sqlite_drop_check_refuses_whatever_the_name(sqlite_url: str) -> None:
    table, column = '§T" :x%b?', "§C :y"
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            q = engine.dialect.identifier_preparer.quote
            connection.exec_driver_sql(
                f"CREATE TABLE {q(table)} (pk INTEGER PRIMARY KEY, {q(column)} TEXT, "
                f"{q(column + '_encrypted')} BLOB)"
            )
            connection.execute(
                sa.table(table, sa.column("pk"), sa.column(column))
                .insert()
                .values(pk=1, **{column: "plain"})
            )
            operations = Operations(MigrationContext.configure(connection))
            with pytest.raises(RefusedError, match="has rows with plaintext and no ciphertext"):
                operations.invoke(CheckEncryptedOp(table, [(column, column + "_encrypted")]))
    finally:
        engine.dispose()
