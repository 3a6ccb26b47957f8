"""The CLI and its imports as real processes: what only a fresh interpreter can show.

Moved from tests/unit (which starts no process): the real-process checks of
`keys`, `keys export|import|emergency-rotate`, `inspect`, NO_COLOR, what start-up
imports, and the output scan of a CLI run by a test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from encmigrate import get_cipher
from encmigrate.keys import FileProvider, Keyring
from support.cli import operator_env, run_cli
from support.key_cli import (
    OUTPUTS,
    assert_no_secrets,
    isolated_cwd,
    key_plan_dir,
    key_project,
    keyring_of,
    secret_forms,
)

runner = CliRunner()


# --- NO_COLOR and what start-up imports (from test_cli_contract, test_monitoring) -----------


def test_no_color_turns_colours_off_even_on_a_forced_terminal(tmp_path: Path) -> None:
    import re

    colour = re.compile(r"\x1b\[(?:3[0-7]|9[0-7]|38;)")  # foreground colours, not bold/italic
    env = operator_env(FORCE_COLOR="1", TERM="xterm-256color", COLUMNS="120")
    generated = run_cli("keys", "generate", "--path", "k.json", cwd=tmp_path, env=env)
    assert generated.returncode == 0
    env["ENCMIGRATE_KEYRING_FILE"] = "k.json"
    coloured = run_cli("keys", "health", cwd=tmp_path, env=env)
    assert colour.search(coloured.stdout)  # the check is able to see colours
    plain = run_cli("keys", "health", cwd=tmp_path, env={**env, "NO_COLOR": "1"})
    assert plain.returncode == 0
    assert not colour.search(plain.stdout + plain.stderr)


def test_cli_start_up_leaves_alembic_and_the_driver_to_the_commands_that_use_them() -> None:
    # Every CLI call pays for what `encmigrate.cli.app` imports: Alembic and psycopg are
    # imported by the commands that need them (about a third of the start-up time).
    code = (
        "import sys, encmigrate.cli.app\n"
        "print(sorted(m for m in ('alembic', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_crypto_and_keys_do_not_import_prometheus() -> None:
    code = (
        "import sys, encmigrate, encmigrate.crypto, encmigrate.keys, encmigrate.monitoring\n"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    crypto = Path(__file__).resolve().parents[2] / "toolkit" / "encmigrate" / "crypto"
    assert not [p.name for p in crypto.glob("*.py") if "prometheus" in p.read_text()]


# --- `keys` (from test_cli_keys) ---------------------------------------------------------


@pytest.fixture
def keys_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a plan whose [keys] point at keyring.json beside it."""
    return key_plan_dir(tmp_path, monkeypatch, actor="cli-test")


def test_installed_script_runs_as_a_real_process(keys_project: Path) -> None:
    env = operator_env()
    done = run_cli("--json", "keys", "generate", cwd=keys_project, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1
    done = run_cli("keys", "destroy", "1", cwd=keys_project, env=env)
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# --- `keys export|import|emergency-rotate` (from test_cli_keys_backup) ---------------------


@pytest.fixture
def backup_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plan whose [keys] point at keyring.json beside it, with a keyring and a backup key."""
    return key_project(tmp_path, monkeypatch)


def _process(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=project, env=env)


def test_export_import_and_emergency_rotate_as_real_processes(backup_project: Path) -> None:
    backup_key = Fernet.generate_key()
    env = operator_env()
    missing = _process(backup_project, env, "keys", "export", "--out", "b")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1
    env["ENCMIGRATE_BACKUP_KEY"] = backup_key.decode()
    exported = _process(backup_project, env, "--json", "keys", "export", "--out", "b")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["current"] == 1
    before = keyring_of(backup_project)
    (backup_project / "keyring.json").unlink()
    imported = _process(backup_project, env, "--json", "keys", "import", "b")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["replaced"] is False
    refused = _process(backup_project, env, "keys", "import", "b")
    assert refused.returncode == 5 and "Traceback" not in refused.stderr
    rotated = _process(
        backup_project, env, "--json", "keys", "emergency-rotate", "--reason", "drill"
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["current"] == 2
    OUTPUTS.extend(p.stdout + p.stderr for p in (missing, exported, imported, refused, rotated))
    assert_no_secrets(
        secret_forms(
            before, keyring_of(backup_project), extra=(base64.urlsafe_b64decode(backup_key),)
        )
    )


# --- `inspect` (from test_inspect) -------------------------------------------------------


@pytest.fixture
def inspect_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keyring:
    isolated_cwd(tmp_path, monkeypatch)
    keyring = Keyring.generate().rotated()
    FileProvider(tmp_path / "keyring.json").save(keyring)
    monkeypatch.setenv("ENCMIGRATE_KEYRING_FILE", str(tmp_path / "keyring.json"))
    return keyring


def _blob(keyring: Keyring, value: str = "alice@example.com") -> bytes:
    blob = get_cipher("customers.email", keyring=keyring).encrypt(value)
    assert blob is not None
    return blob


def test_inspect_runs_as_a_real_process_and_prints_no_key_material(
    inspect_project: Keyring,
) -> None:
    blob = _blob(inspect_project)
    env = dict(os.environ)  # the fixture left only ENCMIGRATE_KEYRING_FILE of ours
    done = run_cli("--json", "inspect", blob.hex(), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key_state"] == "active"
    bad = run_cli("inspect", "0102", env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    text = done.stdout + done.stderr + bad.stdout + bad.stderr
    for version in (1, 2):
        raw = inspect_project.master_key(version)
        for form in (base64.b64encode(raw).decode(), raw.hex()):
            assert form not in text


# --- the output scan of a CLI run by a test (from test_output_scan) -------------------------


@pytest.fixture
def keyring_file(tmp_path: Path) -> tuple[Path, bytes]:
    """A keyring file of two versions; the newest version's material."""
    keyring = Keyring.generate().rotated()
    path = tmp_path / "secrets" / "ring.json"
    path.parent.mkdir()
    FileProvider(path).save(keyring)
    return path, keyring.master_key(2)


def test_a_test_whose_cli_run_prints_a_secret_fails_naming_the_command_not_the_secret(
    pytester: pytest.Pytester, keyring_file: tuple[Path, bytes]
) -> None:
    path, material = keyring_file
    fake = pytester.path / "bin" / "encmigrate"  # prints its keyring file, as a buggy CLI would
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ntest "$1" = leak && cat "$ENCMIGRATE_KEYRING_FILE"\necho ok\n')
    fake.chmod(0o755)
    pytester.makepyfile(
        f"""
        import os, subprocess
        from typer.testing import CliRunner
        from encmigrate import __version__
        from encmigrate.cli import app
        from support import output_scan

        ENV = {{**os.environ, "ENCMIGRATE_KEYRING_FILE": {str(path)!r}}}

        def run(*args):
            return subprocess.run([{str(fake)!r}, *args], env=ENV, capture_output=True, text=True)

        def test_leaks():
            assert run("leak", "--debug").returncode == 0

        def test_clean():
            assert run("status").stdout == "ok\\n"
            assert [r.leaks for r in output_scan.current_runs()] == [[]]

        def test_canary_in_process():
            output_scan.canary("encmigrate " + __version__)
            assert CliRunner().invoke(app, ["--version"]).exit_code == 0
        """
    )
    result = pytester.runpytest("-p", "support.output_scan")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*`encmigrate leak --debug` printed master key version 2 (keyring file ring.json)*",
            "*`encmigrate --version` printed plaintext canary #1 (verbatim)*",
            "output scan: 3 CLI runs (1 with --debug), 3 secrets, 3 hits",
        ]
    )
    text = result.stdout.str()
    assert base64.b64encode(material).decode() not in text and material.hex() not in text
