"""`encmigrate find` and `encmigrate inspect --table/--column/--key` on real databases."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.keys import FileProvider, Keyring, KeyState
from encmigrate.migrate import MigrateOptions, migrate_data
from encmigrate.migrate import connect as connect_engine
from support import output_scan, shadow_schema
from support.cli import run_cli

ROWS = 300
DUPLICATE = "Shared.Inbox@Example.com"
runner = CliRunner()


class Project:
    """A migrated customers table, its plan and its keyring file; every CLI output kept."""

    def __init__(self, plan: Path, keyring_file: Path, url: str) -> None:
        self.plan = plan
        self.keyring_file = keyring_file
        self.url = url
        self.outputs: list[str] = []

    def run(self, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--config", str(self.plan), *args])
        self.outputs.append(result.stdout + result.stderr)
        return result.exit_code, result.stdout, result.stderr

    def email(self, row_id: int) -> str:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.text("SELECT email FROM customers WHERE id = :i"), {"i": row_id}
                ).scalar_one()
        finally:
            engine.dispose()
        assert isinstance(found, str)
        return found

    def keyring(self) -> Keyring:
        return FileProvider(self.keyring_file).load()


@pytest.fixture
def project(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    engine, plan_path = shadow_schema.build(db_url, ROWS, tmp_path)
    with engine.begin() as conn:  # three rows sharing one address, for --limit
        conn.execute(
            sa.text("UPDATE customers SET email = :e WHERE id IN (10, 20, 30)"), {"e": DUPLICATE}
        )
        emails = conn.execute(sa.text("SELECT email FROM customers")).scalars().all()
    output_scan.canary(*(f(e) for e in emails if e for f in (str, str.upper, str.lower)))
    engine.dispose()
    keyring = Keyring.generate()
    keyring_file = tmp_path / "keyring.json"
    FileProvider(keyring_file).save(keyring)
    worker = connect_engine(db_url)
    try:
        migrate_data(
            shadow_schema.load_plan(plan_path), worker, keyring, options=MigrateOptions(200)
        )
    finally:
        worker.dispose()
    monkeypatch.setenv("ENCMIGRATE_KEYRING_FILE", str(keyring_file))
    monkeypatch.chdir(tmp_path)
    return Project(plan_path, keyring_file, db_url)


def test_find_prints_the_primary_key_of_the_matching_row(project: Project) -> None:
    email = project.email(42)
    code, out, err = project.run("find", "customers.email", email.upper())  # normalize = lower
    assert code == 0, err
    assert out.split() == ["42"]
    code, out, _ = project.run("--json", "find", "customers.email", email)
    document = json.loads(out)
    assert document["keys"] == [{"id": 42}] and document["count"] == 1
    assert document["truncated"] is False and document["key_columns"] == ["id"]
    assert not [o for o in project.outputs if email in o or email.upper() in o]


def test_find_returns_every_match_in_key_order_and_honours_limit(project: Project) -> None:
    code, out, _ = project.run("find", "customers.email", DUPLICATE.lower())
    assert code == 0 and out.split() == ["10", "20", "30"]
    code, out, _ = project.run("--json", "find", "customers.email", DUPLICATE, "--limit", "2")
    document = json.loads(out)
    assert document["keys"] == [{"id": 10}, {"id": 20}] and document["truncated"] is True


def test_find_without_a_match_prints_no_key_and_exits_zero(project: Project) -> None:
    code, out, err = project.run("find", "customers.email", "nobody@example.com")
    assert code == 0 and out == "" and "No row" in err


def test_find_keeps_working_after_rotation_and_stops_at_a_disabled_version(
    project: Project,
) -> None:
    email = project.email(7)
    provider = FileProvider(project.keyring_file)
    provider.save(project.keyring().rotated())
    assert project.run("find", "customers.email", email)[1].split() == ["7"]
    provider.save(project.keyring().with_state(1, KeyState.DISABLED))
    code, out, _ = project.run("find", "customers.email", email)
    assert code == 0 and out == ""


def test_find_refuses_columns_it_cannot_search(project: Project) -> None:
    for target, needle in [
        ("customers.balance", "not searchable"),
        ("customers.nope", "not in the plan"),
        ("orders.email", "not in the plan"),
        ("email", "TABLE.COLUMN"),
    ]:
        code, _, err = project.run("find", target, "x")
        assert code == 2, target
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_find_on_an_unreachable_database_exits_4(project: Project) -> None:
    code, _, err = project.run(
        "--database-url", "postgresql://postgres@127.0.0.1:1/none", "find", "customers.email", "x"
    )
    assert code == 4 and "Traceback" not in err and err.count("\n") == 1


def test_inspect_by_row_reads_the_stored_ciphertext(project: Project) -> None:
    code, out, err = project.run(
        "--json", "inspect", "--table", "customers", "--column", "email", "--key", "42"
    )
    assert code == 0, err
    document = json.loads(out)
    assert (document["key_version"], document["key_state"], document["readable"]) == (
        1,
        "active",
        True,
    )
    assert document["ciphertext"] == len(project.email(42).encode())
    assert document["source"] == {
        "table": "customers",
        "column": "email_encrypted",
        "key": {"id": "42"},
        "context": "customers.email",
    }
    code, out, _ = project.run(
        "inspect", "--table", "customers", "--column", "born", "--key", "id=5"
    )
    assert code == 0 and "key version  1: active" in out


def test_inspect_by_row_tells_a_missing_row_from_a_null_value(project: Project) -> None:
    code, _, err = project.run(
        "inspect", "--table", "customers", "--column", "email", "--key", str(ROWS + 1)
    )
    assert code == 2 and "no row" in err
    code, _, err = project.run(
        "inspect", "--table", "customers", "--column", "email", "--key", "97"
    )
    assert code == 1 and "NULL" in err  # sample_row leaves every 97th email NULL
    code, _, err = project.run(
        "inspect", "--table", "customers", "--column", "email", "--key", "abc"
    )
    assert code == 2 and "does not fit" in err


def test_find_and_inspect_run_as_real_processes(project: Project) -> None:
    env = dict(os.environ)
    env["ENCMIGRATE_DEBUG_LOGGERS"] = "sqlalchemy.engine"  # SQL is shown only on request
    email = project.email(3)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "--config", str(project.plan), *args, input=email + "\n", env=env, warm=False
        )

    found = run("--json", "find", "customers.email", "-")  # the value from stdin
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["keys"] == [{"id": 3}]
    debug = run("--debug", "find", "customers.email", "-")  # SQL logged: tokens, no value
    assert debug.returncode == 0 and "sqlalchemy" in debug.stdout + debug.stderr
    shown = run("inspect", "--table", "customers", "--column", "email", "--key", "3")
    assert shown.returncode == 0, shown.stderr
    assert "key version  1: active" in shown.stdout
    refused = run("find", "customers.balance", "1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    project.outputs += [p.stdout + p.stderr for p in (found, debug, shown, refused)]
    text = "".join(project.outputs)
    assert email not in text
    raw = project.keyring().master_key(1)
    assert base64.b64encode(raw).decode() not in text and raw.hex() not in text
