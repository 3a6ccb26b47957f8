"""`encmigrate preflight` on a real PostgreSQL: keys, canary, privileges, sessions, exit codes.

One planned table of 200 rows; the commands run as an operator runs them
(support/cli.py), once as the superuser of the test server, once as a role
that owns nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate import plan as plan_module
from encmigrate.keys import Keyring
from encmigrate.migrate import connect
from encmigrate.preflight import Check, Verdict, run_preflight
from encmigrate.preflight.keys import CANARY
from support.cli import operator_env, run_cli
from support.output_scan import canary

ROWS = 200
EMAIL = "preflight-user{}@example.com"


def _write_keyring(path: Path, keyring: Keyring) -> Path:
    path.write_text(keyring.to_json())
    path.chmod(0o600)
    return path


class Site:
    """A plan of one table ``customers`` (``email`` searchable), its keyring and database."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.keyring = Keyring.generate()
        _write_keyring(root / "keyring.json", self.keyring)
        (root / "encmigrate.toml").write_text(
            '[[columns]]\ntable = "customers"\ncolumn = "email"\nsearchable = true\n'
        )

    def run(self, *args: str, url: str | None = None) -> tuple[int, str, str]:
        env = operator_env(ENCMIGRATE_DATABASE_URL=url or self.url)
        done = run_cli(*args, cwd=self.root, env=env)
        return done.returncode, done.stdout, done.stderr

    def report(self, *args: str, url: str | None = None) -> tuple[int, dict[str, Any]]:
        """The exit code and the checks by name (the whole document under ``_doc``)."""
        code, stdout, stderr = self.run("--json", "preflight", *args, url=url)
        assert stdout.startswith("{"), (code, stdout, stderr)
        document = json.loads(stdout)
        return code, {c["check"]: c for c in document["checks"]} | {"_doc": document}

    def checks(
        self, step: int, *, url: str | None = None, app_keyring: Keyring | None = None
    ) -> dict[str, Check]:
        """The checks by name, through the Python API (quicker than a CLI run)."""
        plan = plan_module.load(
            self.root / "encmigrate.toml", database_url=url or self.url, check_database=False
        )
        engine = connect(url or self.url)
        try:
            report = run_preflight(plan, engine, self.keyring, step=step, app_keyring=app_keyring)
        finally:
            engine.dispose()
        return {c.name: c for c in report.checks}

    def app_config(self, keyring: Keyring) -> Path:
        folder = self.root / "app"
        folder.mkdir(exist_ok=True)
        _write_keyring(folder / "app-keyring.json", keyring)
        (folder / "encmigrate.toml").write_text('[keys]\npath = "app-keyring.json"\n')
        return folder / "encmigrate.toml"


@pytest.fixture
def site(pg_url: str, tmp_path: Path) -> Site:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE customers (id integer PRIMARY KEY, email text)")
            conn.execute(
                sa.text("INSERT INTO customers VALUES (:i, :e)"),
                [{"i": i, "e": EMAIL.format(i)} for i in range(1, ROWS + 1)],
            )
    finally:
        engine.dispose()
    canary(CANARY, EMAIL.format(7))
    return Site(tmp_path, pg_url)


@pytest.fixture
def limited(site: Site) -> Iterator[tuple[str, sa.Engine]]:
    """A login role that owns nothing (its URL), and a superuser engine to grant to it."""
    role = f"preflight_{secrets.token_hex(4)}"
    admin = sa.create_engine(site.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    try:
        yield (
            sa.make_url(site.url)
            .set(username=role, password=None)
            .render_as_string(hide_password=False),
            admin,
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {name: c["verdict"] for name, c in report.items() if name != "_doc"}


def test_everything_passes_as_the_superuser(site: Site) -> None:
    code, report = site.report("--step", "1")
    assert code == 0, report
    assert _verdicts(report) == {
        "keys": "pass",
        "canary": "warn",  # no --app-config: not checked
        "privileges": "pass",
        "disk": "pass",
        "sessions": "pass",
        "timeouts": "pass",
    }
    assert report["_doc"]["step"] == 1 and report["_doc"]["ok"] is True
    assert "estimate" in report["disk"]["figure"]
    # Step 2 before step 1: the shadow columns do not exist yet.
    privileges = site.checks(2)["privileges"]
    assert privileges.verdict is Verdict.FAIL
    assert "email_encrypted: no such column (apply step 1 first)" in privileges.detail


def test_a_role_that_owns_nothing_fails_step_1_and_step_2_follows_its_grants(
    site: Site, limited: tuple[str, sa.Engine]
) -> None:
    url, admin = limited
    role = sa.make_url(url).username
    privileges = site.checks(1, url=url)["privileges"]
    assert privileges.verdict is Verdict.FAIL
    assert "customers: not its owner" in privileges.detail
    assert "no CREATE on schema public" in privileges.detail
    with admin.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE customers ADD COLUMN email_encrypted bytea")
        conn.exec_driver_sql("ALTER TABLE customers ADD COLUMN email_search bytea")
        conn.exec_driver_sql(f"GRANT SELECT ON customers TO {role}")
    privileges = site.checks(2, url=url)["privileges"]
    assert privileges.verdict is Verdict.FAIL
    assert "customers.email_encrypted: no UPDATE" in privileges.detail
    assert "customers.email_search: no UPDATE" in privileges.detail
    assert "customers.email: no SELECT" not in privileges.detail
    with admin.connect() as conn:
        conn.exec_driver_sql(f"GRANT UPDATE (email_encrypted, email_search) ON customers TO {role}")
        conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {role}")
    checks = site.checks(2, url=url)
    assert checks["privileges"].verdict is Verdict.PASS, checks["privileges"]
    assert not any(c.verdict is Verdict.FAIL for c in checks.values()), checks


def test_an_idle_transaction_holding_a_lock_fails_step_1_and_warns_step_2(site: Site) -> None:
    holder = sa.create_engine(site.url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM customers").scalar()  # now idle in txn
            sessions = site.checks(1)["sessions"]
            assert sessions.verdict is Verdict.FAIL
            assert sessions.figure.startswith("1 session(s), oldest ")
            assert "holding a lock on a planned table" in sessions.figure
            assert "idle in transaction" in sessions.detail
            assert site.checks(2)["sessions"].verdict is Verdict.WARN
            code, report = site.report("--step", "1", "--long-transaction-seconds", "3600")
            assert code == 1
            # Idle in transaction counts whatever its age.
            assert report["sessions"]["verdict"] == "fail"
            conn.rollback()
    finally:
        holder.dispose()
    assert site.checks(1)["sessions"].verdict is Verdict.PASS


def test_the_canary_needs_the_applications_keyring_to_read_this_hosts(site: Site) -> None:
    canary_check = site.checks(1, app_keyring=Keyring.generate())["canary"]
    assert canary_check.verdict is Verdict.FAIL
    assert "different master key" in canary_check.detail
    assert site.checks(1, app_keyring=site.keyring)["canary"].verdict is Verdict.PASS
    # This host at version 2, the application still at version 1 only: it cannot read it.
    application = site.keyring
    site.keyring = site.keyring.rotated()
    canary_check = site.checks(1, app_keyring=application)["canary"]
    assert canary_check.verdict is Verdict.FAIL
    assert "has no key version 2" in canary_check.detail


def test_the_table_says_each_verdict_and_prints_no_secret(site: Site) -> None:
    other = site.app_config(Keyring.generate())
    code, stdout, stderr = site.run("preflight", "--app-config", str(other))
    output = stdout + stderr
    assert code == 3
    for check in ("keys", "canary", "privileges", "disk", "sessions", "timeouts"):
        assert check in output
    assert "A check failed" in output
    assert "different master key" in output
    assert CANARY not in output
    assert EMAIL.format(7) not in output
    secrets_here = [
        site.keyring.current_entry.key,
        Keyring.from_json((site.root / "app" / "app-keyring.json").read_text()).current_entry.key,
    ]
    for key in secrets_here:
        assert key is not None
        raw = key.reveal()
        assert base64.b64encode(raw).decode() not in output
        assert raw.hex() not in output


def test_a_keyring_that_does_not_load_is_the_keys_checks_failure(site: Site) -> None:
    os.remove(site.root / "keyring.json")
    code, report = site.report()
    assert code == 3
    assert report["keys"]["verdict"] == "fail"
    assert report["keys"]["figure"] == "keyring not loaded"
