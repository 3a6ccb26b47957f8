"""JSON columns through the drop's rollback: every kind of JSON value comes back as JSON.

migrate-data reads a json column as its text and parses it, so the ciphertext
holds the parsed value: the document ``"hello"`` encrypts the Python string
``hello``. decrypt-back wrote such a string as it was into any column the
database does not encode JSON for itself (MariaDB's JSON is a LONGTEXT with a
``json_valid`` check; a text column planned as json on every database), so
``"hello"`` came back as ``hello``: no longer JSON, and verify failed. And the
drop's downgrade re-added MariaDB's JSON column as a plain ``longtext``, without
the check that made the server refuse a value that is not JSON. create-views,
which restates a NOT NULL column's definition to drop NOT NULL, failed on a NOT
NULL JSON column (MariaDB refuses to change it in place to a ``longtext``) and
silently dropped any other column's own CHECK.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import Keyring, revisions
from encmigrate.migrate import connect, decrypt_back, migrate_data, verify
from support.revisions import Project, column, execute, make_project, rows

# Every kind of JSON document, as stored text.
DOCUMENTS = [
    '"hello"',
    '""',
    '"5"',  # a string that reads as a number
    '"line\\nbreak, \\"quoted\\", back\\\\slash"',
    '"żółć ☃ 😀"',
    "5",
    "-0.5",
    "12345678901234567890",
    "true",
    "false",
    "null",
    '{"a": 1, "b": [true, null]}',
    '[1, "two", {"three": 3.5}, []]',
    '{"nested": {"deeper": {"list": [[], {}], "ü": "☃"}}}',
]
# doc: the database's own JSON type, NOT NULL; note: a text column planned as json too
# (on MariaDB with a json_valid check of its own, in the database's collation: not JSON).
TABLES = {
    "mysql": "CREATE TABLE doc_store (id BIGINT PRIMARY KEY, doc JSON NOT NULL, "
    "note LONGTEXT CHECK (json_valid(note)))",
    "postgresql": "CREATE TABLE doc_store (id bigint PRIMARY KEY, doc jsonb NOT NULL, note text)",
    "sqlite": "CREATE TABLE doc_store (id INTEGER PRIMARY KEY, doc JSON NOT NULL, note TEXT)",
}
PLAN = column("doc_store", "doc", type="json") + column("doc_store", "note", type="json")
SQL_NULL_NOTE = len(DOCUMENTS)  # the last row's note is SQL NULL, not a JSON null


def _same(text: str) -> str:
    """A document in one spelling: ``true`` is not ``1``, ``"5"`` is not ``5``."""
    return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)


def _backend(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def _stored(url: str) -> list[tuple[int, str, str | None]]:
    cast = "::text" if _backend(url) == "postgresql" else ""  # jsonb: its text, not parsed
    return [
        (int(key), str(doc), None if note is None else str(note))
        for key, doc, note in rows(url, f"SELECT id, doc{cast}, note FROM doc_store ORDER BY id")
    ]


def _columns(url: str, table: str = "doc_store", names: tuple[str, ...] = ("doc", "note")) -> Any:
    """Planned columns' types (MariaDB: collation, nullability and CHECK constraints too).

    Elsewhere NOT NULL comes back only by hand (test_rollback_fidelity.py)."""
    if _backend(url) == "mysql":
        listed = ", ".join(f"'{name}'" for name in names)
        found = rows(
            url,
            "SELECT COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME, IS_NULLABLE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = '{table}' AND COLUMN_NAME IN ({listed})",
        )
        checks = rows(
            url,
            "SELECT CONSTRAINT_NAME, LEVEL, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            f"WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'",
        )
        return {"columns": sorted(found), "checks": sorted(checks)}
    engine = sa.create_engine(url)
    try:
        return {
            c["name"]: str(c["type"])
            for c in sa.inspect(engine).get_columns(table)
            if c["name"] in names
        }
    finally:
        engine.dispose()


def _project(url: str, directory: Path) -> Project:
    execute(url, TABLES[_backend(url)])
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # as text, as the application wrote it
        for key, document in enumerate(DOCUMENTS, start=1):
            connection.execute(
                sa.text("INSERT INTO doc_store (id, doc, note) VALUES (:id, :doc, :note)"),
                {"id": key, "doc": document, "note": document},
            )
        connection.execute(
            sa.text("UPDATE doc_store SET note = NULL WHERE id = :id"), {"id": SQL_NULL_NOTE}
        )
    engine.dispose()
    return make_project(directory, url, PLAN)


def _encrypt_and_view(project: Project, url: str, keyring: Keyring) -> None:
    """Steps 1 to 4: shadows, backfill (every column verified), the secure views."""
    revisions.add_columns(project.plan(), apply=True)
    engine = connect(url)
    try:
        migrate_data(project.plan(), engine, keyring)
        assert all(v.ok for v in verify(project.plan(), engine, keyring))
    finally:
        engine.dispose()
    revisions.create_views(project.plan(), apply=True)


def test_every_json_value_comes_back_as_json_after_the_drop_is_rolled_back(
    any_db_url: str, tmp_path: Path
) -> None:
    url = any_db_url
    project = _project(url, tmp_path / "p")
    before = _stored(url)
    keyring = Keyring.generate()
    _encrypt_and_view(project, url, keyring)
    defined = _columns(url)
    result = revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
    # Announced while the plaintext is there: the last three documents, spaced between their
    # items, come back compact where the database keeps the text (jsonb, SQLite's JSON: not
    # counted). The last row's note is SQL NULL.
    notes = "\n".join(result.notes)
    assert "2 value(s) of doc_store.note are stored as text spelled otherwise" in notes
    assert ("3 value(s) of doc_store.doc are" in notes) == (_backend(url) == "mysql")
    project.downgrade("-1")
    assert _columns(url) == defined
    engine = connect(url)
    try:
        (report,) = decrypt_back(project.plan(), engine, keyring)
        assert (report.rows_done, report.rows_failed) == (len(DOCUMENTS), 0)
        verdicts = verify(project.plan(), engine, keyring)
    finally:
        engine.dispose()
    assert [(v.column, v.ok, v.matches) for v in verdicts] == [
        ("doc", True, len(DOCUMENTS)),
        ("note", True, len(DOCUMENTS) - 1),
    ]
    after = _stored(url)
    assert [key for key, _, _ in after] == [key for key, _, _ in before]
    for (key, doc, note), (_, doc_was, note_was) in zip(after, before, strict=True):
        assert _same(doc) == _same(doc_was), key
        assert (note is None) == (note_was is None), key
        if note is not None and note_was is not None:
            assert _same(note) == _same(note_was), key


CHECKED = (
    "CREATE TABLE checked (id BIGINT PRIMARY KEY, doc JSON NOT NULL, "
    "note LONGTEXT CHECK (json_valid(note)))"
)
CHECKED_PLAN = column("checked", "doc", type="json") + column("checked", "note", type="json")


def _refused(url: str, assignment: str) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="CONSTRAINT"):
        execute(url, f"UPDATE checked SET {assignment} WHERE id = 1")


def test_mariadb_columns_keep_their_checks_through_create_views_and_the_rollback(
    mariadb_url: str, tmp_path: Path
) -> None:
    """A NOT NULL JSON column loses NOT NULL at create-views and nothing else (it was
    refused: MariaDB cannot MODIFY it in place to a ``longtext``); the drop's downgrade
    re-adds it as JSON, and a text column with a json_valid check of its own with that
    check (MariaDB 10.11 refuses, error 1846, step 1's instant ADD COLUMN on a table
    with such a check on a TEXT or MEDIUMTEXT column: a LONGTEXT here)."""
    url = mariadb_url
    execute(
        url,
        CHECKED,
        "INSERT INTO checked VALUES (1, '\"hello\"', '\"x\"'), (2, '{\"a\": [1]}', 'null')",
    )
    project = make_project(tmp_path / "p", url, CHECKED_PLAN)
    original = _columns(url, "checked")["checks"]
    assert original == [
        ("doc", "Column", "json_valid(`doc`)"),
        ("note", "Column", "json_valid(`note`)"),
    ]
    keyring = Keyring.generate()
    _encrypt_and_view(project, url, keyring)
    defined = _columns(url, "checked")
    assert defined["checks"] == original
    assert {name for name, *_, nullable in defined["columns"] if nullable == "NO"} == set()
    result = revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert _columns(url, "checked")["checks"] == []
    assert result.path is not None
    assert "ADD COLUMN IF NOT EXISTS doc json NULL," in result.path.read_text(encoding="utf-8")
    project.downgrade("-1")
    assert _columns(url, "checked") == defined
    (create,) = rows(url, "SHOW CREATE TABLE checked")
    assert (
        "`doc` longtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL CHECK" in create[1]
    )
    engine = connect(url)
    try:
        (report,) = decrypt_back(project.plan(), engine, keyring)
        assert (report.rows_done, report.rows_failed) == (2, 0)
        assert all(v.ok for v in verify(project.plan(), engine, keyring))
    finally:
        engine.dispose()
    assert rows(url, "SELECT id, doc, note FROM checked ORDER BY id") == [
        (1, '"hello"', '"x"'),
        (2, '{"a":[1]}', "null"),
    ]
    _refused(url, "doc = 'hello'")
    _refused(url, "note = 'hello'")


def test_mariadb_create_views_keeps_a_not_null_columns_own_check(
    mariadb_url: str, tmp_path: Path
) -> None:
    """create-views restates a NOT NULL column to drop NOT NULL: MariaDB drops a column's
    own CHECK from a MODIFY that does not restate it too. (Step 5 refuses such a column
    until its check is gone: dependents/mysql.py.)"""
    url = mariadb_url
    execute(
        url,
        "CREATE TABLE checked (id BIGINT PRIMARY KEY, n INT NOT NULL CHECK (n > 0))",
        "INSERT INTO checked VALUES (1, 5)",
    )
    project = make_project(tmp_path / "p", url, column("checked", "n", type="integer"))
    revisions.add_columns(project.plan(), apply=True)
    before = _columns(url, "checked", ("n",))
    assert before["checks"] == [("n", "Column", "`n` > 0")]
    revisions.create_views(project.plan(), apply=True)
    dropped = _columns(url, "checked", ("n",))
    assert dropped["columns"] == [("n", "int(11)", None, "YES")]
    assert dropped["checks"] == before["checks"]
    _refused(url, "n = -1")
    project.downgrade("-1")
    assert _columns(url, "checked", ("n",)) == before
