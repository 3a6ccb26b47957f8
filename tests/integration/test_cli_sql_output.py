"""``--sql`` output redirected to a file is valid SQL, byte for byte, for psql and sqlite3.

A DBA runs ``encmigrate add-columns --sql > step1.sql`` and applies the file with
``psql -v ON_ERROR_STOP=1 -f step1.sql``. rich wrapped long lines at 80 columns when
stdout was not a terminal, splitting ``--`` comments and string literals: the file
failed to apply. Long table and column names make every statement long here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import sqlalchemy as sa

from support.cli import cli_command, operator_env
from support.revisions import columns_of, execute, psql_file, rows

TABLE = "customer_accounts_with_a_long_name_for_wrapping"
EMAIL = "primary_email_address_of_record_for_account"
PHONE = "secondary_telephone_number_for_emergencies"

PLAN_COLUMNS = f"""
[[columns]]
table = "{TABLE}"
column = "{EMAIL}"
searchable = true
normalize = "lower"

[[columns]]
table = "{TABLE}"
column = "{PHONE}"
"""


def _apply(url: str, script: Path) -> None:
    """Apply a SQL file as a DBA would: stop at the first error."""
    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        command = ["sqlite3", "-bail", target.database or ""]
        with script.open("rb") as stdin:
            done = subprocess.run(command, stdin=stdin, capture_output=True, check=False)
    else:
        done = psql_file(url, script)
    assert done.returncode == 0, (script.read_text(), done.stderr.decode())


def test_every_sql_output_applies_with_the_databases_own_client(
    db_url: str, tmp_path: Path
) -> None:
    execute(
        db_url,
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, {EMAIL} VARCHAR(255), {PHONE} TEXT)",
        f"INSERT INTO {TABLE} VALUES (1, 'Ann@Example.com', '555-1'), (2, 'bob@example.com', NULL)",
    )
    env = operator_env(
        COLUMNS=None,
        ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json",
        ENCMIGRATE_DATABASE_URL=db_url,
    )

    def cli(*args: str, stdout: Path | None = None) -> str:
        with (stdout or tmp_path / "out.txt").open("wb") as sink:
            done = subprocess.run(
                [*cli_command(), *args],
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.PIPE,
                check=False,
            )
        assert done.returncode == 0, (args, done.stderr.decode())
        return (stdout or tmp_path / "out.txt").read_text(encoding="utf-8")

    cli("init")
    with (tmp_path / "encmigrate.toml").open("a", encoding="utf-8") as plan:
        plan.write(PLAN_COLUMNS)
    cli("keys", "generate")
    for step, args in [
        ("step1.sql", ("add-columns", "--sql")),
        ("step4.sql", ("create-views", "--sql")),
        ("step5.sql", ("drop-unencrypted", "--confirm", "--sql")),
    ]:
        script = tmp_path / step
        text = cli(*args, stdout=script)
        assert max(len(line) for line in text.splitlines()) > 80  # would have been wrapped
        _apply(db_url, script)
        if step == "step1.sql":
            cli("migrate-data")
            assert all(v["ok"] for v in json.loads(cli("--json", "verify")))
    names = set(columns_of(db_url, TABLE))
    assert EMAIL not in names and f"{EMAIL}_encrypted" in names
    assert len(rows(db_url, f"SELECT {EMAIL}_encrypted FROM {TABLE}")) == 2
