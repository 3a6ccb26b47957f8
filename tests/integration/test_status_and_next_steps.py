"""`status` only reads, says the last run's rate, and every command names the right next step.

The commands run in-process (CliRunner) on a project ``encmigrate init`` made,
with three planned tables of 599 rows each, as a new user's first try.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from click.testing import Result
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.migrate import connect, database
from encmigrate.migrate.database import read_only
from encmigrate.migrate.next_step import (
    ColumnStanding,
    NextStep,
    TableStanding,
    decide_next_step,
)
from encmigrate.migrate.report import run_workers, single_worker_note
from encmigrate.plan import ColumnPhase

TABLES = ("a", "b", "c")
ROWS = 599


class Project:
    """A directory with encmigrate.toml, alembic/ and a keyring, and its database."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.env = {
            "ENCMIGRATE_DATABASE_URL": url,
            "ENCMIGRATE_KEYRING_FILE": str(root / "keyring.json"),
        }
        self.runner = CliRunner()

    def run(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(app, list(args), env=self.env)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    def next_line(self, *args: str, code: int = 0) -> str:
        """The one line that names the next step (or says there is none)."""
        lines = [
            line
            for line in self.run(*args, code=code).stdout.splitlines()
            if line.startswith(("Next:", "Nothing to run:"))
        ]
        assert len(lines) == 1, (args, lines)
        return lines[0]

    def alembic(self, verb: str, target: str) -> None:
        config = Config(str(self.root / "alembic.ini"))
        getattr(command, verb)(config, target)

    def sql(self, statement: str) -> None:
        engine = sa.create_engine(self.url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(statement))
        finally:
            engine.dispose()


@pytest.fixture
def project(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    return _project(tmp_path, sqlite_url, monkeypatch)


def _project(root: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    # The env.py `encmigrate init` writes reads the URL from here when Alembic runs in-process.
    monkeypatch.setenv("ENCMIGRATE_DATABASE_URL", url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY, email text)"))
                conn.execute(
                    sa.text(f"INSERT INTO {table} VALUES (:i, :e)"),
                    [{"i": i, "e": f"user{i}@example.com"} for i in range(1, ROWS + 1)],
                )
    finally:
        engine.dispose()
    project = Project(root, url)
    project.run("init")
    with (root / "encmigrate.toml").open("a") as plan:
        for table in TABLES:
            plan.write(f'\n[[columns]]\ntable = "{table}"\ncolumn = "email"\n')
    project.run("keys", "generate")
    return project


# -- status only reads ------------------------------------------------------------------


def test_status_of_three_tables_answers(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, db_url, monkeypatch)
    project.run("add-columns", "--apply")
    report = json.loads(project.run("--json", "status").stdout)
    assert [(s["table"], s["status"]) for s in report] == [(t, "not started") for t in TABLES]
    text = project.run("status").stdout
    assert "database is locked" not in text
    assert "Next: `encmigrate migrate-data`" in text


def test_status_answers_while_another_connection_holds_a_write_transaction(
    project: Project, tmp_path: Path
) -> None:
    project.run("add-columns", "--apply")
    project.run("migrate-data")
    # What a migrate-data batch holds on SQLite: BEGIN IMMEDIATE and uncommitted writes.
    writer = sqlite3.connect(tmp_path / "test.db", timeout=0, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE a SET email = 'changed@example.com' WHERE id = 1")
        report = json.loads(project.run("--json", "status").stdout)
        assert [s["status"] for s in report] == ["completed"] * 3
        assert [s["rows_done"] for s in report] == [ROWS] * 3
        assert "Next: `encmigrate verify`" in project.run("status").stdout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_read_leaves_the_write_lock_to_the_migrator(sqlite_url: str, tmp_path: Path) -> None:
    engine = connect(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id integer PRIMARY KEY)"))
        with read_only(engine) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 0
            # timeout=0: a lock held by the read would fail this at once.
            writer = sqlite3.connect(tmp_path / "test.db", timeout=0, isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t VALUES (1)")
                writer.execute("COMMIT")
            finally:
                writer.close()
    finally:
        engine.dispose()


def test_status_waits_at_most_the_busy_timeout_then_says_so_in_one_line(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.run("add-columns", "--apply")
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 50)
    # A commit in progress (or BEGIN EXCLUSIVE) is the one thing a SQLite read waits for.
    writer = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        result = project.run("status", code=4)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "locked by another connection" in lines[0] and "again" in lines[0]


# -- --workers on SQLite --------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate-data", "rewrap", "decrypt-back"])
def test_workers_on_sqlite_say_one_worker_runs(project: Project, command: str) -> None:
    project.run("add-columns", "--apply")
    if command != "migrate-data":
        project.run("migrate-data")
    result = project.run(command, "--workers", "3", "--table", "a")
    note = "SQLite runs one worker (one writer at a time): --workers 3 is ignored"
    assert result.stderr.count(note) == 1
    output = project.run("--json", command, "--workers", "3", "--table", "a").stdout
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {"event": "note", "message": note} in events
    start = output.index("\n[") + 1
    assert [r["workers"] for r in json.loads(output[start:])] == [1]
    assert "ignored" not in project.run(command, "--table", "a").stderr


def test_workers_are_kept_on_postgresql() -> None:
    assert run_workers("postgresql", 4) == 4 and single_worker_note("postgresql", 4) is None
    assert run_workers("sqlite", 1) == 1 and single_worker_note("sqlite", 1) is None


# -- the rate is the last run's -------------------------------------------------------


def test_status_rate_is_the_last_runs_not_rows_over_the_time_between_runs(
    project: Project,
) -> None:
    project.run("add-columns", "--apply")
    project.run("migrate-data", "--table", "a", "--batch-size", "100", "--max-batches", "1")
    # The first run was long ago: rows over the time since then is no rate of anything.
    project.sql("UPDATE encryption_migrations SET started_at = '2020-01-01 00:00:00.000000'")
    project.run("migrate-data", "--table", "a", "--batch-size", "100")
    a = json.loads(project.run("--json", "status", "--table", "a").stdout)[0]
    assert a["rows_done"] == ROWS
    assert a["last_run"]["rows"] == ROWS - 100  # the second run's rows only
    # The JSON rounds the seconds to milliseconds: on a run of ~0.1 s that is a few per cent.
    seconds = a["last_run"]["seconds"]
    low, high = (ROWS - 100) / (seconds + 0.0005), (ROWS - 100) / max(seconds - 0.0005, 1e-6)
    assert low <= a["rate"] <= high
    assert a["rate"] > 1  # rows over the years since the first run would be far below 1/s
    shown = project.run("status", "--table", "a").stdout
    assert f"{ROWS - 100} rows, " in shown


def test_status_shows_no_rate_before_any_run(project: Project) -> None:
    project.run("add-columns", "--apply")
    report = json.loads(project.run("--json", "status").stdout)
    assert [(s["rate"], s["last_run"]) for s in report] == [(None, None)] * 3


def test_a_tracking_table_from_before_the_rate_columns_keeps_working(project: Project) -> None:
    project.run("add-columns", "--apply")
    project.sql("ALTER TABLE encryption_migrations DROP COLUMN last_run_rows")
    project.sql("ALTER TABLE encryption_migrations DROP COLUMN last_run_seconds")
    project.run("migrate-data")
    report = json.loads(project.run("--json", "status").stdout)
    assert [(s["status"], s["rows_done"]) for s in report] == [("completed", ROWS)] * 3
    assert [(s["rate"], s["last_run"]) for s in report] == [(None, None)] * 3


# -- the next step, through the commands ----------------------------------------------


def test_every_command_names_the_next_step_of_the_recorded_state(project: Project) -> None:
    assert project.next_line("add-columns") == (
        "Next: `alembic upgrade head` (the revision is written, not applied)"
    )
    assert project.next_line("status").startswith("Next: `alembic upgrade head`")
    project.alembic("upgrade", "head")
    assert project.next_line("status").startswith("Next: `encmigrate migrate-data`")
    assert project.next_line("migrate-data", "--table", "a") == (
        "Next: `encmigrate verify --table a` (a.email is encrypted: compare with the plaintext)"
    )
    assert project.next_line("status").startswith(
        "Next: `encmigrate migrate-data` (b.email, c.email have values still to encrypt"
    )
    assert project.next_line("migrate-data").startswith("Next: `encmigrate verify`")
    assert project.next_line("verify").startswith("Next: `encmigrate create-views`")
    assert project.next_line("create-views", "--apply").startswith(
        "Next: `encmigrate drop-unencrypted --confirm`"
    )
    # The views exist: verify again must not send the user back to create-views.
    assert project.next_line("verify").startswith("Next: `encmigrate drop-unencrypted --confirm`")
    assert project.next_line("create-views").startswith(
        "Next: `encmigrate drop-unencrypted --confirm`"
    )
    done = project.next_line("drop-unencrypted", "--confirm", "--apply")
    assert done.startswith("Nothing to run: every planned column is encrypted and its plaintext")
    assert project.next_line("verify") == done
    assert project.next_line("status") == done

    # The rollback (runbooks/rollback-decrypt-back.md).
    project.alembic("downgrade", "-1")
    assert project.next_line("status").startswith("Next: `encmigrate decrypt-back` (the drop")
    assert project.next_line("decrypt-back").startswith("Next: `encmigrate verify` (decrypt-back")
    after_verify = project.next_line("verify")
    assert after_verify.startswith("Next: `alembic downgrade -1` (the rollback's next step")
    assert "removes the views" in after_verify
    project.alembic("downgrade", "-1")
    after_views = project.next_line("status")
    assert after_views.startswith("Next: `alembic downgrade -1`")
    assert "removes the shadow columns" in after_views


def test_an_interrupted_decrypt_back_is_resumed(project: Project) -> None:
    project.run("add-columns", "--apply")
    project.run("migrate-data")
    project.run("verify")
    project.run("create-views", "--apply")
    project.run("drop-unencrypted", "--confirm", "--apply")
    project.alembic("downgrade", "-1")
    project.run("decrypt-back", "--table", "a", "--batch-size", "100")
    project.sql("UPDATE encryption_migration_chunks SET status = 'pending' WHERE table_name = 'a'")
    assert project.next_line("status").startswith(
        "Next: `encmigrate decrypt-back` (a decrypt-back run stopped before the end"
    )


def test_failed_rows_and_failed_verify_lead_back_to_migrate_data(project: Project) -> None:
    project.run("add-columns", "--apply")
    project.run("migrate-data")
    project.sql(
        "UPDATE encryption_migrations SET status = 'failed', "
        "last_error = 'verify: 599 rows checked, 2 mismatched' WHERE table_name = 'b'"
    )
    assert project.next_line("status") == (
        "Next: `encmigrate migrate-data --repair` (verify found wrong ciphertexts in b.email "
        "(runbooks/verify-mismatches.md))"
    )
    project.sql("UPDATE encryption_migrations SET rows_failed = 3 WHERE table_name = 'c'")
    assert project.next_line("status").startswith(
        "Next: `encmigrate migrate-data` (c.email has rows that could not be encrypted"
    )


# -- the decision, state by state -------------------------------------------------------


def _table(
    status: str | None,
    phase: ColumnPhase | None = ColumnPhase.SHADOWED,
    *,
    last_error: str | None = None,
    rows_failed: int = 0,
    **flags: bool,
) -> TableStanding:
    column = ColumnStanding("email", phase, status, rows_failed, last_error)
    return TableStanding("customers", (column,), **flags)


@pytest.mark.parametrize(
    ("standing", "behind_head", "command", "reason"),
    [
        (_table(None, None), False, "encmigrate plan check", "not in the database"),
        (_table(None, ColumnPhase.PLAIN), False, "encmigrate add-columns", "no encrypted column"),
        (_table(None, ColumnPhase.PLAIN), True, "alembic upgrade head", "not applied"),
        (_table(None), False, "encmigrate migrate-data", "values still to encrypt"),
        (_table("running"), False, "encmigrate migrate-data", "values still to encrypt"),
        (_table("failed", last_error="DatabaseError"), False, "encmigrate migrate-data", "still"),
        (_table("completed", rows_failed=2), False, "encmigrate migrate-data", "fix the values"),
        (
            _table("failed", last_error="verify: 10 rows checked, 1 missing"),
            False,
            "encmigrate migrate-data",
            "changed since the last run",
        ),
        (
            _table("failed", last_error="verify: 10 rows checked, 1 undecryptable"),
            False,
            "encmigrate migrate-data --repair",
            "wrong ciphertexts",
        ),
        (_table("completed"), False, "encmigrate verify", "compare with the plaintext"),
        (_table("completed"), None, "encmigrate verify", "compare with the plaintext"),
        (_table("verified"), False, "encmigrate create-views", "no view yet"),
        (
            _table("verified", view_exists=True),
            False,
            "encmigrate drop-unencrypted --confirm",
            "the views exist",
        ),
        (_table("dropped", ColumnPhase.DROPPED), False, None, "plaintext dropped"),
        (
            _table("failed", ColumnPhase.DROPPED, last_error="verify: 1 undecryptable"),
            False,
            None,
            "troubleshooting-decryption.md",
        ),
        (
            _table("verified", view_exists=True, plaintext_emptied=True),
            True,
            "encmigrate decrypt-back",
            "the drop was undone",
        ),
        (
            _table("verified", view_exists=True, decrypt_back_open=True),
            True,
            "encmigrate decrypt-back",
            "stopped before the end",
        ),
        (
            _table("completed", view_exists=True, decrypt_back_last=True),
            True,
            "encmigrate verify",
            "decrypt-back refilled",
        ),
        (
            _table("verified", view_exists=True, decrypt_back_last=True),
            True,
            "alembic downgrade -1",
            "removes the views",
        ),
        (
            _table("verified", decrypt_back_last=True),
            True,
            "alembic downgrade -1",
            "removes the shadow columns",
        ),
        (
            _table("verified", view_exists=True, decrypt_back_last=True),
            False,
            "alembic downgrade -1",
            "`encmigrate drop-unencrypted --confirm` goes forward",
        ),
        (_table("verified", view_exists=True), True, "alembic upgrade head", "not applied"),
    ],
)
def test_next_step_for_each_recorded_state(
    standing: TableStanding, behind_head: bool | None, command: str | None, reason: str
) -> None:
    step = decide_next_step([standing], behind_head=behind_head)
    assert step.command == command
    assert reason in step.reason


def test_the_earliest_unfinished_step_wins_and_keeps_the_table_selection() -> None:
    done = _table("verified", view_exists=True)
    behind = TableStanding(
        "sales.customer", (ColumnStanding("email", ColumnPhase.SHADOWED, "completed"),)
    )
    step = decide_next_step([done, behind], tables=["customers", "sales.customer"])
    assert step == NextStep(
        "encmigrate verify --table customers --table sales.customer",
        "sales.customer.email is encrypted: compare with the plaintext",
    )
    odd = decide_next_step([behind], tables=["it's"])
    assert odd.command == "encmigrate verify --table 'it'\"'\"'s'"
