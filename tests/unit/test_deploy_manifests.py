"""The fleet's deployment files (deploy/, docs/fleet.md) are valid and run what they say.

* the Kubernetes manifest validates against the Kubernetes JSON schemas (strict: an
  unknown or misspelt field fails), offline, with kubernetes-validate; its Jobs'
  podFailurePolicy names the exit codes the product really uses for errors that a retry
  would hit again, and never the transient one;
* the systemd units pass ``systemd-analyze verify`` and never restart on those codes;
* the shell loop parses, restarts a worker on a transient exit only and forwards Ctrl-C;
* the command of the workers' Job, with its plan (the ConfigMap) and its environment
  variables, runs for real with ``--dry-run`` against PostgreSQL and exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from encmigrate import Keyring
from encmigrate.errors import (
    UNEXPECTED_EXIT_CODE,
    ConfigError,
    DatabaseError,
    EncmigrateError,
    KeyConfigError,
    RefusedError,
)
from support import shadow_schema
from support.cli import operator_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "encmigrate-backfill.yaml"
SYSTEMD = ROOT / "deploy" / "systemd"
SHELL_LOOP = ROOT / "deploy" / "shell" / "backfill-workers.sh"
KUBERNETES = "1.30.0"  # the oldest release whose schema has every field used (FailIndex: 1.29+)

# Exit codes that every retry would hit again (docs/architecture.md section 8): rows that
# could not be encrypted (1), usage or plan (2), keys (3), refused (5), a bug (70).
ROWS_FAILED = EncmigrateError.exit_code
PERMANENT = {
    ROWS_FAILED,
    ConfigError.exit_code,
    KeyConfigError.exit_code,
    RefusedError.exit_code,
    UNEXPECTED_EXIT_CODE,
}
TRANSIENT = DatabaseError.exit_code


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _rules(job: dict[str, Any]) -> dict[str, set[int]]:
    """Exit codes per podFailurePolicy action."""
    codes: dict[str, set[int]] = {}
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["operator"] == "In"
            codes.setdefault(rule["action"], set()).update(rule["onExitCodes"]["values"])
    return codes


def test_every_document_validates_against_the_kubernetes_schema() -> None:
    documents = _documents()
    assert [d["kind"] for d in documents] == ["ServiceAccount", "ConfigMap", "Job", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    # Strict indeed: a misspelt field is refused.
    job = _kind("Job", "encmigrate-backfill")
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_the_workers_are_an_indexed_job_of_joiners_that_fail_fast_on_permanent_errors() -> None:
    job = _kind("Job", "encmigrate-backfill")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["backoffLimit"] > 0 and spec["backoffLimitPerIndex"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    (container,) = pod["containers"]
    assert container["command"] == ["encmigrate"]
    assert "--join" in container["args"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    rules = _rules(job)
    assert rules["FailJob"] | rules["FailIndex"] == PERMANENT
    assert rules["FailIndex"] == {ROWS_FAILED}  # the other pods finish the table
    assert TRANSIENT not in set().union(*rules.values())
    disruption = [r for r in spec["podFailurePolicy"]["rules"] if "onPodConditions" in r]
    assert disruption[0]["action"] == "Ignore"
    assert disruption[0]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_the_start_job_cuts_chunks_for_as_many_workers_as_the_indexed_job_runs() -> None:
    start = _kind("Job", "encmigrate-backfill-start")
    workers = _kind("Job", "encmigrate-backfill")
    (container,) = start["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--join" not in args and args[args.index("--max-batches") + 1] == "1"
    assert int(args[args.index("--workers") + 1]) == workers["spec"]["parallelism"]
    assert _rules(start)["FailJob"] == PERMANENT
    assert start["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_manifest_sets_only_variables_the_product_reads() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "toolkit" / "encmigrate").rglob("*.py"))
    for job in ("encmigrate-backfill-start", "encmigrate-backfill"):
        (container,) = _kind("Job", job)["spec"]["template"]["spec"]["containers"]
        names = [variable["name"] for variable in container["env"]]
        assert {"ENCMIGRATE_CONFIG", "ENCMIGRATE_DATABASE_URL", "ENCMIGRATE_KEYRING"} <= set(names)
        for name in names:
            suffix = name.removeprefix("ENCMIGRATE_")
            assert f'"{name}"' in source or f'"{suffix}"' in source, name


def test_the_workers_command_dry_runs_against_a_real_database(pg_url: str, tmp_path: Path) -> None:
    """The exact args of the workers' Job, with the ConfigMap's plan and the Job's variables."""
    builder, _ = shadow_schema.build(pg_url, 3000, tmp_path)
    builder.dispose()
    plan = tmp_path / "etc" / "encmigrate.toml"
    plan.parent.mkdir()
    plan.write_text(_kind("ConfigMap", "encmigrate-plan")["data"]["encmigrate.toml"])
    (container,) = _kind("Job", "encmigrate-backfill")["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    env.update(
        ENCMIGRATE_CONFIG=str(plan),
        ENCMIGRATE_DATABASE_URL=pg_url,
        ENCMIGRATE_KEYRING=Keyring.generate().to_json(),
    )
    work = tmp_path / "work"  # the pod's working directory: no plan there
    work.mkdir()
    done = run_cli(*container["args"], "--dry-run", cwd=work, env=operator_env(**env))
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"dry_run": true' in done.stdout and '"rows_total": 3000' in done.stdout


def _unit(name: str) -> dict[str, dict[str, str]]:
    """``[Section] Key=value`` of a unit file (the last value of a repeated key)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def test_the_systemd_units_restart_on_transient_exits_only() -> None:
    worker = _unit("encmigrate-backfill@.service")["Service"]
    assert worker["Restart"] == "on-failure"
    assert {int(c) for c in worker["RestartPreventExitStatus"].split()} == PERMANENT
    assert "--join" in worker["ExecStart"].split()
    assert worker["EnvironmentFile"].startswith("/")
    assert worker["KillSignal"] == "SIGINT"  # a stop is a Ctrl-C: the batch finishes
    start = _unit("encmigrate-backfill-start.service")["Service"]
    assert start["Type"] == "oneshot" and "--max-batches 1" in start["ExecStart"]
    assert start["SuccessExitStatus"] == str(RefusedError.exit_code)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as installed: the instance ``@1`` of the template, the executable path
    pointed at this venv's ``encmigrate`` (verify refuses a command that does not exist)."""
    executable = shutil.which("encmigrate", path=str(Path(sys.executable).parent))
    assert executable is not None
    for unit in SYSTEMD.glob("*.service"):
        text = unit.read_text().replace("/opt/encmigrate/bin/encmigrate", executable)
        (tmp_path / unit.name.replace("@.", "@1.")).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


FAKE = """#!/usr/bin/env bash
# A stand-in for encmigrate: logs its arguments; --join runs exit with $FAKE_CODES in turn.
echo "$*" >> "$FAKE_LOG"
case "$*" in
  *--join*)
    n=$(grep -c -- --join "$FAKE_LOG")
    code=$(echo "$FAKE_CODES" | cut -d' ' -f"$n")
    if [ "$code" = wait ]; then
      trap 'kill $!; exit 130' INT
      sleep 30 &
      echo trapped >> "$FAKE_LOG.ready"
      wait
      exit 0
    fi
    exit "${code:-0}" ;;
  *) exit "${FAKE_START:-0}" ;;
esac
"""


def _shell_loop(
    tmp_path: Path, workers: int, codes: str, start: int = 0
) -> tuple[subprocess.Popen[str], Path]:
    fake = tmp_path / "encmigrate"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "ENCMIGRATE": str(fake),
        "FAKE_LOG": str(log),
        "FAKE_CODES": codes,
        "FAKE_START": str(start),
        "RESTART_DELAY": "0",
    }
    process = subprocess.Popen(
        ["bash", str(SHELL_LOOP), str(workers), "--batch-size", "500"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell cannot trap a signal ignored when it started: whatever this test process
        # inherited (a background job ignores SIGINT), the loop starts as a terminal would.
        preexec_fn=_default_sigint,
    )
    return process, log


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_shell_loop_parses() -> None:
    done = subprocess.run(["bash", "-n", str(SHELL_LOOP)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("codes", "start", "expected", "joins"),
    [
        (f"{TRANSIENT} {TRANSIENT} 0", 0, 0, 3),  # restarted after each transient exit
        (f"{ConfigError.exit_code}", 0, ConfigError.exit_code, 1),  # never restarted
        ("0", RefusedError.exit_code, 0, 1),  # the run is already live: join it
    ],
)
def test_the_shell_loop_restarts_on_transient_exits_only(
    tmp_path: Path, codes: str, start: int, expected: int, joins: int
) -> None:
    process, log = _shell_loop(tmp_path, 1, codes, start)
    process.communicate(timeout=30)
    assert process.returncode == expected
    calls = log.read_text().splitlines()
    assert calls[0] == "migrate-data --workers 1 --max-batches 1 --batch-size 500"
    assert calls[1:] == ["--json migrate-data --join --batch-size 500"] * joins


def test_the_shell_loop_forwards_ctrl_c_to_every_worker(tmp_path: Path) -> None:
    process, log = _shell_loop(tmp_path, 2, "wait wait")
    ready = log.with_name(log.name + ".ready")  # each worker says so once its trap is set
    deadline = time.monotonic() + 30
    while ready.read_text().count("trapped") < 2 if ready.exists() else True:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=10)
    assert process.returncode == 130
    assert errors.count("exit 130") == 2
