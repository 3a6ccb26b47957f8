"""The built wheel, installed alone in a clean virtual environment, is a working encmigrate.

The source tree is copied (tests included, so that leaving them out of the wheel is a real
check), built with ``pip wheel --no-deps`` and installed with its declared dependencies into a
new venv that has neither the checkout nor the test extras. Everything then runs from that venv:
``encmigrate --version``, the demo (which runs ``init``'s Alembic scaffolding and the five
steps), and a look at the installed metadata.

Marked slow (``make test-slow``): building and installing take 15-30 s on a 2-core machine,
and the dependencies come from the package index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
# Anything in the checkout that is not source: environments, caches, build output, demo files.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
    "*.db",
    "encmigrate-demo",
    ".demo",
)
pytestmark = pytest.mark.slow

TEST_TOOLS = {"pytest", "hypothesis", "ruff", "mypy", "moto", "boto3", "hvac", "testcontainers"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def encmigrate(self) -> Path:
        return self.venv / "bin" / "encmigrate"


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout: no PYTHONPATH, no encmigrate settings from this session."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        and not name.startswith("ENCMIGRATE_")
    }
    env["COLUMNS"] = "120"
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source, wheels, venv = work / "source", work / "wheels", work / "venv"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ".", cwd=source)
    (wheel,) = wheels.glob("encmigrate-*.whl")
    # No pip inside: the outer pip installs into it, so the venv holds the wheel and its
    # dependencies and nothing else.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    pip_into_venv = (sys.executable, "-m", "pip", "--python", venv / "bin" / "python")
    run(*pip_into_venv, "install", "--quiet", wheel, cwd=work)
    return Installed(wheel=wheel, venv=venv)


def test_wheel_holds_the_package_and_its_metadata_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(f"encmigrate-{VERSION}.dist-info/entry_points.txt").decode()
    assert {name.split("/")[0] for name in names} == {
        "encmigrate",
        f"encmigrate-{VERSION}.dist-info",
    }
    assert "encmigrate/py.typed" in names
    assert "encmigrate/cli/demo.py" in names
    assert not [name for name in names if "tests/" in name or "conftest" in name]
    assert "encmigrate = encmigrate.cli:main" in entry_points
    assert "[pytest11]\nencmigrate = encmigrate.testing" in entry_points


def test_installed_cli_reports_its_version(installed: Installed, tmp_path: Path) -> None:
    result = run(installed.encmigrate, "--version", cwd=tmp_path)
    assert result.stdout.strip() == f"encmigrate {VERSION}"


def test_installed_package_comes_from_the_venv_without_test_tools(
    installed: Installed, tmp_path: Path
) -> None:
    probe = (
        "import encmigrate, importlib.metadata as m, json\n"
        "print(json.dumps({\n"
        "    'package': encmigrate.__file__,\n"
        "    'plugins': [e.value for e in m.entry_points(group='pytest11')],\n"
        "    'distributions': [d.metadata['Name'].lower() for d in m.distributions()],\n"
        "}))\n"
    )
    found = json.loads(run(installed.python, "-c", probe, cwd=tmp_path).stdout)
    package = Path(found["package"]).resolve()
    assert package.is_relative_to(installed.venv.resolve())
    assert (package.parent / "py.typed").is_file()
    assert found["plugins"] == ["encmigrate.testing"]
    assert "encmigrate" in found["distributions"]
    assert TEST_TOOLS.isdisjoint(found["distributions"])


def test_demo_runs_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    result = run(installed.encmigrate, "demo", "--rows", "500", cwd=tmp_path)
    for column in ("email", "phone", "birth_date", "balance"):
        assert f"customers.{column}: 500 rows checked, ok" in result.stdout
    assert "chain intact" in result.stdout
    scaffold = tmp_path / "encmigrate-demo"
    assert (scaffold / "alembic" / "env.py").is_file()
    assert (scaffold / "alembic" / "script.py.mako").is_file()
    assert len(list((scaffold / "alembic" / "versions").glob("*.py"))) == 3
