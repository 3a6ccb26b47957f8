"""The warm interpreter the suite runs CLI commands in behaves like a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support import prefork


def _run(module: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*prefork.command(module), *args], capture_output=True, text=True, check=False, **kwargs
    )


def test_a_command_gets_its_own_stdin_stdout_and_exit_status() -> None:
    done = _run("json.tool", "--compact", input='{"a": [1, 2]}')
    assert (done.returncode, json.loads(done.stdout)) == (0, {"a": [1, 2]})
    failed = _run("json.tool", input="{not json")
    assert failed.returncode == 1 and "Expecting property name" in failed.stderr


def test_a_command_sees_its_own_environment_and_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMIGRATE_")}
    env["ENCMIGRATE_MASTER_KEY"] = "not base64!"
    done = _run("encmigrate", "keys", "status", env=env, cwd=tmp_path)
    assert done.returncode == 3 and "ENCMIGRATE_MASTER_KEY" in done.stderr
    (tmp_path / "encmigrate.toml").write_text("[[columns]]\ntable = 1\n", encoding="utf-8")
    checked = _run("encmigrate", "plan", "check", env=env, cwd=tmp_path)
    assert checked.returncode == 2 and "encmigrate.toml" in checked.stderr


def test_the_shims_run_the_same_commands() -> None:
    done = subprocess.run(
        [str(prefork.shared().bin_dir / "encmigrate"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("encmigrate ")
