"""The five steps through the real `encmigrate` commands, as an operator runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import sqlalchemy as sa

from support import output_scan
from support.cli import operator_env, run_cli

PLAN_COLUMNS = """
[[columns]]
table = "customers"
column = "email"
searchable = true
normalize = "lower"

[[columns]]
table = "customers"
column = "balance"
type = "numeric"
"""


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=tmp_path, env=env)


def test_five_steps_end_to_end(any_db_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(any_db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE customers (id integer PRIMARY KEY, "
                "email varchar(200) NOT NULL, balance numeric(12, 2))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO customers VALUES (:i, :e, :b)"),
            [
                {"i": i, "e": f"User{i}@Example.com", "b": f"{i * 7 % 10000}.{i % 100:02d}"}
                for i in range(1, 1501)
            ],
        )
    # Every email, as stored and as normalised for the blind index: no command may print one.
    output_scan.canary(
        *(e for i in range(1, 1501) for e in (f"User{i}@Example.com", f"user{i}@example.com"))
    )
    env = operator_env(
        ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json", ENCMIGRATE_DATABASE_URL=any_db_url
    )

    def ok(*args: str) -> subprocess.CompletedProcess[str]:
        done = _run(tmp_path, env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    ok("init")
    with (tmp_path / "encmigrate.toml").open("a") as plan:
        plan.write(PLAN_COLUMNS)
    ok("keys", "generate")
    ok("plan", "check")
    assert "Wrote and applied" in ok("add-columns", "--apply").stdout
    refused = _run(tmp_path, env, "drop-unencrypted", "--confirm")
    assert refused.returncode == 5 and "Traceback" not in refused.stderr
    assert _run(tmp_path, env, "verify").returncode == 1  # nothing encrypted yet
    ok("migrate-data", "--batch-size", "200")
    report = json.loads(ok("--json", "verify").stdout)
    assert [v["ok"] for v in report] == [True, True]
    ok("create-views", "--apply")
    ok("drop-unencrypted", "--confirm", "--apply")
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("customers")}
    assert "email" not in columns and "email_encrypted" in columns
    after = json.loads(ok("--json", "verify").stdout)
    assert all(v["ok"] and v["ciphertext_only"] == 1500 for v in after)
    state = json.loads(ok("--json", "status").stdout)
    assert {s["status"] for s in state} == {"dropped"}
    assert state[0]["key_versions"] == {"1": 1500}
    engine.dispose()
