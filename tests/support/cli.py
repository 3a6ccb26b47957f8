"""Running the ``encmigrate`` CLI (or ``alembic``) as a separate process, as an operator does.

``operator_env`` is the environment an operator's shell would give it: this
process's environment without any ``ENCMIGRATE_*`` setting of the test run,
plus the overrides. ``run_cli`` runs one command to the end in the warm
interpreter (support/prefork.py); ``warm=False`` starts a real interpreter,
which tests that signal or kill the CLI or its helper processes need.
``popen_cli`` starts one without waiting (always a real interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from support import prefork

__all__ = ["cli_command", "operator_env", "popen_cli", "run_cli"]


def operator_env(**overrides: str | Path | None) -> dict[str, str]:
    """``os.environ`` without ``ENCMIGRATE_*``, then ``overrides`` (``None`` removes a name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMIGRATE_")}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def cli_command(module: str = "encmigrate", *, warm: bool = True) -> list[str]:
    """The argv prefix that runs ``python -m module``: warm, or a real interpreter."""
    return prefork.command(module) if warm else [sys.executable, "-m", module]


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    warm: bool = True,
    timeout: float | None = None,
    module: str = "encmigrate",
) -> subprocess.CompletedProcess[str]:
    """Run ``module args...`` to the end; its exit status and text output, never raising."""
    return subprocess.run(
        [*cli_command(module, warm=warm), *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout: int | IO[Any] = subprocess.PIPE,
    stderr: int | IO[Any] = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``encmigrate args...`` in a real interpreter (the caller may signal or kill it)."""
    return subprocess.Popen(
        [*cli_command(warm=False), *args],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
