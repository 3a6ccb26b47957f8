"""Names in the plan: what is refused, how they are shown, how the SQL around them is built."""

from __future__ import annotations

import ast
import textwrap

import pytest
import sqlalchemy as sa
from alembic.autogenerate import render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from encmigrate.identifiers import (
    POSTGRESQL_MAX_BYTES,
    max_identifier_bytes,
    name_problem,
    shown,
    truncate_utf8,
    utf8_length,
)
from encmigrate.revisions.generate import render_sql, revision_message
from encmigrate.revisions.ops import ExecuteVerbatimOp, NoteOp
from encmigrate.revisions.schema import index_name
from encmigrate.revisions.sqltext import (
    dollar_quoted,
    qualified,
    quote,
    sql_comment,
    string_literal,
    verbatim,
)
from encmigrate.revisions.triggers import check_statement, pg_function_name

PSYCOPG = postgresql.dialect()  # pyformat: its preparer doubles "%"
SQLITE = sqlite.dialect()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("x\nDROP TABLE victim;--", "U+000A"),
        ("carriage\rreturn", "U+000D"),
        ("tab\there", "U+0009"),
        ("nul\x00", "U+0000"),
        ("escape\x1b[31m", "U+001B"),
        ("delete\x7f", "U+007F"),
        ("next line\x85", "U+0085"),
        ("line\u2028separator", "U+2028"),
        ("right-to-left\u202eoverride", "U+202E"),
        ("zero\u200bwidth", "U+200B"),
        ("no-break\u00a0space", "U+00A0"),
    ],
)
def test_non_printable_characters_are_refused_without_echoing_them(name: str, code: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert code in problem
    assert problem.isprintable()  # one line, nothing a terminal would act on
    assert name not in problem


@pytest.mark.parametrize(
    "name",
    [
        'd""";getattr(__import__("os"),"system")("id>PWNED");"""',
        "'''",
        "back\\slash\\",
        "pct%b",
        "a$encmigrate$b",
        "$$",
        "x -- y",
        "/* c */",
        "semi;colon",
        "a :b",
        "spaces inside ",
        "é" * 20,
        "日本語",
        "emoji 😀",
        "`tick`",
    ],
)
def test_hostile_but_printable_names_are_accepted(name: str) -> None:
    assert name_problem(name, limit=POSTGRESQL_MAX_BYTES) is None


def test_the_length_limit_counts_utf8_bytes_with_the_suffix() -> None:
    fits = "é" * 26 + "x"  # 53 bytes: "<name>_encrypted" is exactly 63
    assert utf8_length(fits + "_encrypted") == 63
    assert name_problem(fits, suffix="_encrypted", limit=63) is None
    over = "é" * 27  # 27 characters but 54 bytes: 64 with the suffix
    problem = name_problem(over, suffix="_encrypted", limit=63)
    assert problem is not None
    assert "54 bytes" in problem and "64 bytes" in problem and "at most 53 bytes" in problem
    assert name_problem(over, suffix="_encrypted", limit=None) is None  # SQLite: no limit


def test_the_limit_follows_the_database() -> None:
    assert max_identifier_bytes("sqlite:///x.db") is None
    assert max_identifier_bytes("postgresql+psycopg://u@h/d") == POSTGRESQL_MAX_BYTES
    assert max_identifier_bytes(None) == POSTGRESQL_MAX_BYTES
    assert max_identifier_bytes("not a url") == POSTGRESQL_MAX_BYTES


@given(st.text())
def test_a_shown_name_cannot_end_a_docstring_a_string_or_a_line(name: str) -> None:
    text = shown(name)
    assert len(text) == len(name)
    assert text.isprintable()
    assert not set(text) & set("\"'\\`")
    # Safe inside any of the quotes a script.py.mako might put around the message.
    for quote_ in ('"""', "'''", '"', "'"):
        assert ast.literal_eval(f"{quote_}{text}{quote_}") == text


@given(st.lists(st.text(min_size=1), min_size=1, max_size=3))
def test_the_revision_message_is_a_safe_docstring(names: list[str]) -> None:
    message = revision_message("add-columns", names)
    module = ast.parse(f'"""{message}\n\nRevision ID: abc\n"""\nrevision = "abc"\n')
    assert isinstance(module.body[0], ast.Expr)
    assert len(module.body) == 2  # the docstring, then the assignment: nothing was injected


@given(st.text(), st.integers(min_value=0, max_value=80))
def test_truncate_utf8_keeps_whole_characters_within_the_limit(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert text.startswith(cut)
    assert utf8_length(cut) <= limit
    if utf8_length(text) <= limit:
        assert cut == text


@given(st.text(min_size=1, max_size=70), st.text(min_size=1, max_size=70))
def test_generated_names_fit_postgresql_in_bytes(table: str, column: str) -> None:
    assert utf8_length(index_name(table, column)) <= POSTGRESQL_MAX_BYTES
    assert utf8_length(pg_function_name(table)) <= POSTGRESQL_MAX_BYTES


def test_a_long_multibyte_table_gets_a_hashed_function_name_not_a_truncated_one() -> None:
    table = "é" * 30  # 30 characters (fits the old character check), 60 bytes
    assert len(f"encmigrate_shadow_{table}") <= 63  # the old check counted characters
    assert utf8_length(pg_function_name(table)) <= POSTGRESQL_MAX_BYTES


@given(st.text(max_size=200))
def test_the_dollar_quote_tag_never_occurs_in_the_body(body: str) -> None:
    quoted = dollar_quoted(body)
    tag = quoted[: quoted.index("$", 1) + 1]
    assert quoted == f"{tag}\n{body}\n{tag}"
    assert tag not in body


def test_a_body_holding_the_default_tag_gets_another() -> None:
    body = 'NEW."a$encmigrate$b" := NULL; NEW."$encmigrate_1$" := NULL;'
    assert dollar_quoted(body).startswith("$encmigrate_2$\n")
    assert dollar_quoted("BEGIN END").startswith("$encmigrate$\n")


def test_the_drop_check_block_uses_a_tag_absent_from_the_names() -> None:
    block = check_statement(PSYCOPG, "t", [("a$encmigrate$b", "a$encmigrate$b_encrypted")], None)
    assert block.startswith("DO $encmigrate_1$\n")
    assert block.count("$encmigrate_1$") == 2


def test_quote_keeps_percent_single_for_every_driver() -> None:
    assert quote(PSYCOPG, "pct%b") == '"pct%b"'
    assert quote(SQLITE, "pct%b") == '"pct%b"'
    assert quote(PSYCOPG, 'a"b') == '"a""b"'
    assert quote(PSYCOPG, "plain") == "plain"
    assert qualified(PSYCOPG, "t%", "s%") == '"s%"."t%"'


@pytest.mark.parametrize("dialect", [PSYCOPG, SQLITE, postgresql.dialect(paramstyle="named")])
def test_verbatim_compiles_to_the_statement_as_written(dialect: sa.Dialect) -> None:
    statement = 'CREATE VIEW "v :x" AS SELECT "pct%b", \':30\' FROM "a :b"'
    compiled = str(verbatim(statement).compile(dialect=dialect))
    expected = statement.replace("%", "%%") if dialect.paramstyle == "pyformat" else statement
    assert compiled == expected  # pyformat drivers get %% and turn it back into %


@given(st.text())
def test_a_sql_comment_stays_a_comment(text: str) -> None:
    comment = sql_comment(text)
    for line in comment.split("\n"):
        assert line.startswith("-- ")
        assert "\r" not in line and line.isprintable()


def test_string_literals_survive_backslashes_and_quotes() -> None:
    assert string_literal(PSYCOPG, "a'b\\") == "E'a''b\\\\'"
    assert string_literal(SQLITE, "a'b\\") == "'a''b\\'"


def test_a_note_stays_a_comment_in_the_revision_file_and_the_sql() -> None:
    note = NoteOp(["a\nvictim = 1", "b\rc\u2028d = 2"])
    code = render_python_code(ops.UpgradeOps(ops=[note]))
    tree = ast.parse(textwrap.dedent("\n".join(code.splitlines()[1:])))
    assert tree.body == []  # comments only
    assert all(line.lstrip().startswith("#") for line in code.splitlines())
    sql = render_sql([note], "postgresql")
    assert [line for line in sql.splitlines() if "victim" in line] == ["-- victim = 1"]


def test_execute_verbatim_renders_a_literal_and_runs_the_text_as_written() -> None:
    statement = 'CREATE VIEW "v :x" AS SELECT 1 AS "pct%b"'
    code = render_python_code(ops.UpgradeOps(ops=[ExecuteVerbatimOp(statement)]))
    (call,) = ast.parse(textwrap.dedent("\n".join(code.splitlines()[1:-1]))).body
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    assert ast.literal_eval(call.value.args[0]) == statement
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as connection:
            operations = Operations(MigrationContext.configure(connection))
            operations.invoke(ExecuteVerbatimOp(statement))
            assert connection.exec_driver_sql('SELECT "pct%b" FROM "v :x"').scalar() == 1
    finally:
        engine.dispose()
    assert 'CREATE VIEW "v :x" AS SELECT 1 AS "pct%b";' in render_sql(
        [ExecuteVerbatimOp(statement)], "postgresql"
    )
