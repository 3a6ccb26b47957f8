"""The plan: every problem reported at once, checks against the live schema, URL resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate import ConfigError, DatabaseError
from encmigrate.plan import (
    ColumnPhase,
    PlanError,
    load,
    resolve_database_url,
    type_fits,
)
from encmigrate.plan import Plan as PlanModel


def _database(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


def _plan_file(directory: Path, url: str | None, body: str) -> Path:
    path = directory / "encmigrate.toml"
    header = f'[database]\nurl = "{url}"\n' if url else ""
    path.write_text(header + body, encoding="utf-8")
    return path


CUSTOMER = (
    "CREATE TABLE customer (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL, "
    "age INTEGER, status VARCHAR(10), active BOOLEAN)"
)


@pytest.fixture
def customer_db(sqlite_url: str) -> str:
    _database(sqlite_url, CUSTOMER, "CREATE TABLE audit (happened TEXT, what TEXT)")
    statuses = ["new", "active", "gone", "vip", "held"]
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO customer VALUES (:id, :email, :age, :status, :active)"),
            [
                {
                    "id": i,
                    "email": f"user{i}@example.com",
                    "age": 20 + i % 50,
                    "status": statuses[i % 5],
                    "active": i % 2,
                }
                for i in range(1, 201)
            ],
        )
    engine.dispose()
    return sqlite_url


def test_a_valid_plan_loads_with_live_facts(tmp_path: Path, customer_db: str) -> None:
    path = _plan_file(
        tmp_path,
        customer_db,
        '[[columns]]\ntable = "customer"\ncolumn = "email"\nsearchable = true\n'
        'normalize = "lower"\n\n[[columns]]\ntable = "customer"\ncolumn = "age"\n'
        'type = "integer"\n',
    )
    plan = load(path, environ={})
    (table,) = plan.tables
    assert table.table == "customer"
    assert table.view == "customer_secure"
    assert table.primary_key == ("id",)
    assert [c.column for c in table.columns] == ["email", "age"]
    assert [c.context for c in plan.columns] == ["customer.email", "customer.age"]
    assert all(c.phase is ColumnPhase.PLAIN for c in plan.columns)
    assert plan.columns[0].search_column == "email_search"
    assert plan.columns[1].search_column is None
    assert plan.warnings == ()
    assert plan.alembic_config == (tmp_path / "alembic.ini").resolve()


def test_every_problem_is_reported_in_one_error(tmp_path: Path, customer_db: str) -> None:
    path = _plan_file(
        tmp_path,
        customer_db,
        "[colums]\nx = 1\n"
        "[migration]\nbatch_size = 0\n"
        '[[columns]]\ntable = "customer"\ncolumn = "email"\ntype = "strng"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "email"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "age"\ntype = "date"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "phone"\n'
        '[[columns]]\ntable = "nowhere"\ncolumn = "x"\n'
        '[[columns]]\ntable = "audit"\ncolumn = "what"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "id"\ntype = "integer"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "status"\nsearchabel = true\n',
    )
    with pytest.raises(PlanError) as caught:
        load(path, environ={})
    problems = caught.value.problems
    text = "\n".join(problems)
    expected = {
        "colums": "unknown key",
        "migration.batch_size": "greater than or equal to 1",
        "columns[0].type": "unknown type 'strng'",
        "columns[1]": "duplicate of columns[0]",
        "columns[2].type": "does not fit",
        "columns[3].column": "'phone' does not exist",
        "columns[4].table": "'nowhere' does not exist",
        "columns[5].table": "no primary key",
        "columns[6].column": "part of the primary key",
        "columns[7].searchabel": "unknown key",
    }
    for key, what in expected.items():
        assert any(f"{path}: {key}" in p and what in p for p in problems), (key, text)
    assert len(problems) == len(expected)
    assert caught.value.exit_code == 2


def test_problems_in_the_file_are_reported_before_an_unreachable_database(
    tmp_path: Path,
) -> None:
    path = _plan_file(
        tmp_path,
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        '[[columns]]\ntable = "customer"\ncolumn = "email"\ntype = "nope"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "age"\n',
    )
    with pytest.raises(PlanError) as caught:
        load(path, environ={})
    assert any("unknown type 'nope'" in p for p in caught.value.problems)
    assert any("database checks were skipped" in p for p in caught.value.problems)


def test_an_unreachable_database_is_a_database_error(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        "postgresql+psycopg://nobody:secret@127.0.0.1:1/none",
        '[[columns]]\ntable = "customer"\ncolumn = "email"\n',
    )
    with pytest.raises(DatabaseError) as caught:
        load(path, environ={})
    assert caught.value.exit_code == 4
    assert "secret" not in str(caught.value)


def test_searchable_column_with_few_values_warns_with_the_figure(
    tmp_path: Path, customer_db: str
) -> None:
    path = _plan_file(
        tmp_path,
        customer_db,
        '[[columns]]\ntable = "customer"\ncolumn = "status"\nsearchable = true\n'
        '[[columns]]\ntable = "customer"\ncolumn = "active"\ntype = "boolean"\n'
        "searchable = true\n"
        '[[columns]]\ntable = "customer"\ncolumn = "email"\nsearchable = true\n',
    )
    plan = load(path, environ={})
    status, active = plan.warnings
    assert "columns[0].searchable" in status.where
    assert "5 distinct values in 200 non-null rows" in status.message
    assert "ratio 0.025" in status.message
    assert "columns[1].searchable" in active.where
    assert "boolean" in active.message


def test_schema_qualified_and_mixed_case_names_set_the_context(
    tmp_path: Path, customer_db: str
) -> None:
    path = _plan_file(
        tmp_path,
        None,
        '[[columns]]\ntable = "sales.Customer"\ncolumn = "eMail"\n'
        '[[columns]]\ntable = "sales.Customer"\ncolumn = "note"\ncontext = "notes"\n'
        '[tables."sales.Customer"]\nview = "customer_view"\n',
    )
    plan = load(path, environ={}, check_database=False)
    (table,) = plan.tables
    assert (table.schema_name, table.table_name, table.view) == (
        "sales",
        "Customer",
        "customer_view",
    )
    assert [c.context for c in plan.columns] == ["sales.Customer.eMail", "notes"]
    assert plan.columns[0].encrypted_column == "eMail_encrypted"
    assert all(c.phase is ColumnPhase.UNCHECKED for c in plan.columns)


def test_a_dropped_plaintext_is_not_a_missing_column(tmp_path: Path, sqlite_url: str) -> None:
    _database(sqlite_url, "CREATE TABLE t (id INTEGER PRIMARY KEY, secret_encrypted BLOB)")
    path = _plan_file(tmp_path, sqlite_url, '[[columns]]\ntable = "t"\ncolumn = "secret"\n')
    assert load(path, environ={}).columns[0].phase is ColumnPhase.DROPPED


def test_composite_primary_key_is_recorded(tmp_path: Path, sqlite_url: str) -> None:
    _database(
        sqlite_url,
        "CREATE TABLE line (region TEXT, id INTEGER, note TEXT, PRIMARY KEY (region, id))",
    )
    path = _plan_file(tmp_path, sqlite_url, '[[columns]]\ntable = "line"\ncolumn = "note"\n')
    assert load(path, environ={}).tables[0].primary_key == ("region", "id")


def test_pyproject_tool_table_is_a_plan(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.encmigrate]\ncolumns = [{table = "t", column = "c", '
        'type = "nope"}]\n',
        encoding="utf-8",
    )
    with pytest.raises(PlanError) as caught:
        load(cwd=tmp_path, environ={}, check_database=False)
    assert f"{tmp_path / 'pyproject.toml'}: tool.encmigrate.columns[0].type" in str(caught.value)


def test_no_plan_at_all_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="encmigrate init"):
        load(cwd=tmp_path, environ={})


def test_a_url_with_a_bad_port_is_a_plan_problem_that_never_shows_the_password(
    tmp_path: Path,
) -> None:
    path = _plan_file(
        tmp_path,
        "postgresql+psycopg://app:hunter2@db:port/app",
        '[[columns]]\ntable = "t"\ncolumn = "c"\n',
    )
    with pytest.raises(ConfigError, match="its port is not a number") as raised:
        load(path, environ={})
    assert "hunter2" not in str(raised.value)
    assert "database.url" in str(raised.value)


def test_plan_repr_hides_the_database_password(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        "postgresql+psycopg://app:hunter2@db/app",
        '[[columns]]\ntable = "t"\ncolumn = "c"\n',
    )
    plan = load(path, environ={}, check_database=False)
    assert "hunter2" not in repr(plan)
    assert plan.safe_database_url == "postgresql+psycopg://app:***@db/app"
    assert isinstance(plan, PlanModel)


def test_an_unreadable_alembic_url_is_reported_without_quoting_it(tmp_path: Path) -> None:
    # configparser's own message quotes the line: part of the password was printed.
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nsqlalchemy.url = postgresql://app:s3cr%PW0rd@db/app\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"cannot read sqlalchemy\.url") as raised:
        resolve_database_url(environ={}, cwd=tmp_path)
    assert "PW0rd" not in str(raised.value) and "s3cr" not in str(raised.value)


def test_database_url_order_is_flag_then_environment_then_plan_then_alembic(
    tmp_path: Path,
) -> None:
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic\nsqlalchemy.url = sqlite:///ini.db\n",
        encoding="utf-8",
    )
    env = {"ENCMIGRATE_DATABASE_URL": "sqlite:///env.db"}
    assert resolve_database_url(environ={}, cwd=tmp_path) == "sqlite:///ini.db"
    _plan_file(tmp_path, "sqlite:///plan.db", "")
    assert resolve_database_url(environ={}, cwd=tmp_path) == "sqlite:///plan.db"
    assert resolve_database_url(environ=env, cwd=tmp_path) == "sqlite:///env.db"
    assert resolve_database_url("sqlite:///flag.db", environ=env, cwd=tmp_path) == (
        "sqlite:///flag.db"
    )


def test_alembic_placeholder_url_counts_as_no_url(tmp_path: Path) -> None:
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nsqlalchemy.url = driver://user:pass@localhost/dbname\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="ENCMIGRATE_DATABASE_URL"):
        resolve_database_url(environ={}, cwd=tmp_path)
    assert resolve_database_url(environ={}, cwd=tmp_path, required=False) is None


@pytest.mark.parametrize(
    ("plan_type", "sql_type", "fits"),
    [
        ("string", sa.VARCHAR(10), True),
        ("integer", sa.TEXT(), True),
        ("datetime", sa.String(), True),
        ("integer", sa.BigInteger(), True),
        ("bigint", sa.Integer(), True),
        ("numeric", sa.Numeric(10, 2), True),
        ("numeric", sa.Float(), False),
        ("float", sa.Float(), True),
        ("boolean", sa.Integer(), False),
        ("date", sa.DateTime(), False),
        ("binary", sa.LargeBinary(), True),
        ("json", sa.JSON(), True),
        ("string", sa.Integer(), False),
        ("time", sa.types.NullType(), True),
    ],
)
def test_declared_type_must_fit_the_column(
    plan_type: str, sql_type: sa.types.TypeEngine[object], fits: bool
) -> None:
    assert type_fits(plan_type, sql_type) is fits


def test_sqlite_without_rowid_table_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    _database(sqlite_url, "CREATE TABLE k (id TEXT PRIMARY KEY, secret TEXT) WITHOUT ROWID")
    path = _plan_file(tmp_path, sqlite_url, '[[columns]]\ntable = "k"\ncolumn = "secret"\n')
    with pytest.raises(PlanError, match="WITHOUT ROWID"):
        load(path, environ={})


def test_unique_token_applies_only_to_searchable_columns(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        None,
        '[[columns]]\ntable = "customer"\ncolumn = "email"\nunique_token = true\n'
        '[[columns]]\ntable = "customer"\ncolumn = "code"\nsearchable = true\n'
        "unique_token = true\n",
    )
    with pytest.raises(PlanError) as caught:
        load(path, environ={}, check_database=False)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: columns[0].unique_token: only applies to searchable")
    path.write_text(path.read_text().replace('"email"\n', '"email"\nsearchable = true\n'))
    plan = load(path, environ={}, check_database=False)
    assert [c.unique_token for c in plan.columns] == [True, True]


def test_a_view_on_a_planned_column_warns_that_step_5_will_refuse(
    tmp_path: Path, customer_db: str
) -> None:
    _database(
        customer_db,
        "CREATE VIEW adults AS SELECT id, email FROM customer WHERE age >= 18",
        "CREATE INDEX ix_customer_status ON customer (status)",
    )
    path = _plan_file(
        tmp_path,
        customer_db,
        '[[columns]]\ntable = "customer"\ncolumn = "status"\n'
        '[[columns]]\ntable = "customer"\ncolumn = "email"\n',
    )
    plan = load(path, environ={})
    status, email = plan.columns
    assert [(d.kind, d.name, d.blocking) for d in status.dependents] == [
        ("index", "ix_customer_status", False)
    ]
    assert [(d.kind, d.name, d.blocking) for d in email.dependents] == [("view", "adults", True)]
    index_warning, view_warning = plan.warnings
    assert index_warning.where == f"{path}: columns[0].column"
    assert "dropped with the column, restored on downgrade" in index_warning.message
    assert "refuse" not in index_warning.message
    assert view_warning.where == f"{path}: columns[1].column"
    assert view_warning.message.startswith("view adults depends on customer.email: ")
    assert "drop-unencrypted will refuse until you recreate it over the customer_secure view" in (
        view_warning.message
    )


PG_URL = "postgresql+psycopg://nobody@127.0.0.1:9/none"  # sets the limit; never reached


def test_name_lengths_are_counted_in_bytes_with_the_suffix_for_postgresql(tmp_path: Path) -> None:
    # 27 x "é" is 27 characters (the old check passed it) but 54 bytes: with
    # "_encrypted" 64, and PostgreSQL would silently truncate the shadow column's name.
    path = _plan_file(tmp_path, PG_URL, '[[columns]]\ntable = "t"\ncolumn = "' + "é" * 27 + '"\n')
    with pytest.raises(PlanError) as caught:
        load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: columns[0].column: the column name is 54 bytes")
    assert "64 bytes" in problem and "at most 53 bytes" in problem
    # SQLite has no identifier limit.
    path.write_text(path.read_text().replace(PG_URL, "sqlite:///x.db"))
    assert load(path, environ={}, check_database=False).columns[0].column == "é" * 27


def test_the_default_view_name_must_fit_too(tmp_path: Path) -> None:
    table = "t" * 57  # fits as a table; "<table>_secure" is 64 bytes
    path = _plan_file(tmp_path, PG_URL, f'[[columns]]\ntable = "{table}"\ncolumn = "c"\n')
    with pytest.raises(PlanError) as caught:
        load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: columns[0].table: the table name is 57 bytes")
    assert "_secure" in problem and 'view = "..."' in problem
    path.write_text(path.read_text() + f'[tables."{table}"]\nview = "short"\n')
    assert load(path, environ={}, check_database=False).tables[0].view == "short"


def test_control_characters_are_refused_in_one_line_per_name(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        PG_URL,
        '[[columns]]\ntable = "t"\ncolumn = "x\\nDROP TABLE victim;--"\n'
        '[[columns]]\ntable = "sch\\u001b[2J.t"\ncolumn = "ok"\n'
        '[tables."v\\rw"]\nview = "fine"\n'
        '[tables."t"]\nview = "bad\\u202eview"\n',
    )
    with pytest.raises(PlanError) as caught:
        load(path, environ={})
    problems = caught.value.problems
    assert [p.split(": the ")[0] for p in problems] == [
        f"{path}: tables.v?w",
        f"{path}: tables.t.view",
        f"{path}: columns[0].column",
        f"{path}: columns[1].table",
    ]
    assert "U+000A, a control character, at character 2" in problems[2]
    assert "the schema name contains U+001B" in problems[3]
    assert all(p.isprintable() for p in problems)
    assert "DROP TABLE" not in str(caught.value)
