"""The whole workflow through the CLI, with and without ``--debug``, prints no secret.

The output scan (tests/support/output_scan.py) searches every CLI run of the
suite for the run's master keys, database password and the plaintext a test
registered. Here it gets the full set on purpose: the five steps plus
``status``, ``find``, ``inspect``, ``keys status``, ``keys rotate``, ``rewrap``,
``alembic downgrade`` and ``decrypt-back``, and three refusals (a column that
is not searchable, a key that decrypts nothing, an unreachable database),
once plain and once with ``--debug``, on SQLite and on PostgreSQL with a
password in the database URL; every plaintext value of the table is a
canary. The test then checks the scan saw every run with those secrets, so a
clean result is not an empty one.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.keys import FileProvider
from support import output_scan
from support.cli import run_cli

ROWS = 24
PLAN_COLUMNS = """
[[columns]]
table = "customers"
column = "email"
searchable = true
normalize = "lower"

[[columns]]
table = "customers"
column = "phone"
"""
runner = CliRunner()


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (the local server trusts every connection)."""
    return sa.make_url(url).set(password=password).render_as_string(hide_password=False)


def _fill(url: str) -> list[tuple[str, str]]:
    """The customers table with ROWS rows of fresh values; (email, phone) of each."""
    values = [
        (f"Customer.{i:02d}.{secrets.token_hex(4)}@Example.org", f"+44 7700 {secrets.token_hex(3)}")
        for i in range(1, ROWS + 1)
    ]
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE customers (id integer PRIMARY KEY, "
                    "email varchar(200) NOT NULL, phone varchar(40))"
                )
            )
            conn.execute(
                sa.text("INSERT INTO customers VALUES (:i, :e, :p)"),
                [{"i": i, "e": e, "p": p} for i, (e, p) in enumerate(values, 1)],
            )
    finally:
        engine.dispose()
    return values


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_every_command_of_the_workflow_prints_no_key_password_or_plaintext(
    db_url: str, debug: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    url = _with_password(db_url, password) if db_url.startswith("postgresql") else db_url
    values = _fill(url)
    output_scan.canary(*(v for row in values for v in row), *(e.lower() for e, _ in values))
    for name in [n for n in os.environ if n.startswith("ENCMIGRATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {
        "ENCMIGRATE_DATABASE_URL": url,
        "ENCMIGRATE_KEYRING_FILE": str(tmp_path / "keyring.json"),
    }
    first = ["--debug"] if debug else []

    def cli(*args: str, code: int = 0, **more_env: str) -> str:
        result = runner.invoke(app, [*first, *args], env={**env, **more_env})
        assert result.exit_code == code, (args, result.output)
        return result.stdout

    cli("init")
    with (tmp_path / "encmigrate.toml").open("a") as plan:
        plan.write(PLAN_COLUMNS)
    cli("keys", "generate")
    cli("plan", "check")
    cli("add-columns", "--apply")
    cli("migrate-data", "--batch-size", "10")
    cli("verify")
    cli("--database-url", url, "status")
    email = values[4][0]
    assert cli("find", "customers.email", email.upper()).split() == ["5"]
    cli("find", "customers.phone", values[4][1], code=2)  # not searchable
    cli("inspect", "--table", "customers", "--column", "email", "--key", "5")
    cli("keys", "status")
    wrong_key = base64.b64encode(secrets.token_bytes(32)).decode()
    cli("verify", code=3, ENCMIGRATE_MASTER_KEY=wrong_key)
    cli("keys", "rotate", "--reason", "output scan test")
    cli("rewrap")
    cli("verify")
    cli("create-views", "--apply")
    cli("drop-unencrypted", "--confirm", "--apply")
    downgrade = run_cli(
        "downgrade", "-1", cwd=tmp_path, env={**os.environ, **env}, module="alembic"
    )
    assert downgrade.returncode == 0, downgrade.stderr
    cli("decrypt-back")
    cli("status")
    if url != db_url:
        unreachable = _with_password("postgresql+psycopg://postgres@127.0.0.1:1/none", password)
        cli("--database-url", unreachable, "status", code=4)

    runs = output_scan.current_runs()
    commands = 20 + (url != db_url)  # 19 encmigrate commands or 20, and alembic
    assert len(runs) == commands
    assert [r.cli for r in runs].count("alembic") == 1
    assert sum(r.debug for r in runs) == (commands - 1 if debug else 0)
    assert not [leak for run in runs for leak in run.leaks]
    if debug:  # --debug did show encmigrate's debug logs: there was something to scan
        assert any("DEBUG encmigrate" in r.output for r in runs)
    kinds = {secret.kind for run in runs for secret in run.secrets}
    ring = FileProvider(tmp_path / "keyring.json").load()
    assert ring.current == 2
    assert {f"master key version {v} (keyring file keyring.json)" for v in (1, 2)} <= kinds
    assert "the key in ENCMIGRATE_MASTER_KEY" in kinds
    if url != db_url:
        assert "the database password of ENCMIGRATE_DATABASE_URL" in kinds
        assert "the database password of --database-url" in kinds
