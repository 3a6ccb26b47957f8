"""The rollback of step 5 gives back the stored bytes, or says before the drop what it cannot.

SQLite stores dates and times as text, spelled by whoever wrote them; the
ciphertext holds the value, not the spelling. decrypt-back used to write every
datetime with ``.000000`` (SQLAlchemy's spelling), so ``'1962-02-18 00:00:00'``
came back different, silently; NOT NULL and the column order were lost
without a word.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from encmigrate import Keyring, revisions
from encmigrate.migrate import connect, decrypt_back, migrate_data, verify
from support.revisions import column, execute, make_project, rows

STORED = [
    (1, "Ann", "1962-02-18 00:00:00"),  # SQLite's own spelling (datetime('now'))
    (2, "Bob", "1999-12-31 23:59:59.250000"),  # a fraction: the same both ways
    (3, "Cy", "2001-01-01 00:00:00.000000"),  # SQLAlchemy's spelling of a whole second
    (4, "Di", None),
]


def test_sqlite_rollback_restores_the_stored_text_and_names_what_it_cannot(
    sqlite_url: str, tmp_path: Path
) -> None:
    execute(
        sqlite_url,
        "CREATE TABLE person (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, "
        "born DATETIME, note TEXT)",
    )
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:  # raw text, as another program would have written it
        for key, name, born in STORED:
            conn.exec_driver_sql(
                "INSERT INTO person (id, name, born, note) VALUES (?, ?, ?, 'x')",
                (key, name, born),
            )
    engine.dispose()
    project = make_project(
        tmp_path / "p",
        sqlite_url,
        column("person", "name") + column("person", "born", type="datetime"),
    )
    keyring = Keyring.generate()
    revisions.add_columns(project.plan(), apply=True)
    migrate = connect(sqlite_url)
    migrate_data(project.plan(), migrate, keyring)
    assert all(v.ok for v in verify(project.plan(), migrate, keyring))
    migrate.dispose()
    revisions.create_views(project.plan(), apply=True)

    result = revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
    notes = "\n".join(result.notes)
    assert "person.name without NOT NULL" in notes
    assert "column order changes" in notes
    assert "1 value(s) of person.born are stored as text spelled otherwise" in notes

    project.downgrade("-1")
    migrate = connect(sqlite_url)
    decrypt_back(project.plan(), migrate, keyring)
    migrate.dispose()
    restored = dict(rows(sqlite_url, "SELECT id, CAST(born AS TEXT) FROM person"))
    assert restored[1] == "1962-02-18 00:00:00"  # byte for byte
    assert restored[2] == "1999-12-31 23:59:59.250000"
    assert restored[3] == "2001-01-01 00:00:00"  # the one the drop announced
    assert restored[4] is None
    assert dict(rows(sqlite_url, "SELECT id, name FROM person")) == {
        key: name for key, name, _ in STORED
    }


def test_postgres_full_rollback_gives_back_not_null(pg_url: str, tmp_path: Path) -> None:
    """create-views dropped NOT NULL (so that the view takes inserts): at step 5 the column
    is nullable already, and undoing step 4 after decrypt-back restores it."""
    execute(
        pg_url,
        "CREATE TABLE person (id integer PRIMARY KEY, name text NOT NULL, note text)",
        "INSERT INTO person VALUES (1, 'Ann', 'x'), (2, 'Bob', NULL)",
    )
    project = make_project(tmp_path / "p", pg_url, column("person", "name"))
    keyring = Keyring.generate()
    revisions.add_columns(project.plan(), apply=True)
    migrate = connect(pg_url)
    migrate_data(project.plan(), migrate, keyring)
    verify(project.plan(), migrate, keyring)
    revisions.create_views(project.plan(), apply=True)
    result = revisions.drop_unencrypted(project.plan(), confirm=True, apply=True)
    assert "NOT NULL" not in "\n".join(result.notes)
    project.downgrade("-1")
    migrate.dispose()
    migrate = connect(pg_url)
    decrypt_back(project.plan(), migrate, keyring)
    migrate.dispose()
    project.downgrade("-1")
    nullable = rows(
        pg_url,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'person' AND column_name = 'name'",
    )
    assert nullable == [("NO",)]
    assert rows(pg_url, "SELECT id, name FROM person ORDER BY id") == [(1, "Ann"), (2, "Bob")]
