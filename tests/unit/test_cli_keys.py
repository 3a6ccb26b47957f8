"""`encmigrate keys …` and `encmigrate demo` through the CLI, in-process and as a real process."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encmigrate.cli import app
from encmigrate.keys import FileProvider, KeyManager
from support.key_cli import key_plan_dir

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a plan whose [keys] point at keyring.json beside it."""
    return key_plan_dir(tmp_path, monkeypatch, actor="cli-test")


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_generate_status_rotate_and_json_output(project: Path) -> None:
    code, out, _ = _run("keys", "generate")
    assert code == 0 and "key version 1" in out
    code, out, _ = _run("--json", "keys", "status")
    assert code == 0
    status = json.loads(out)
    assert status["current"] == 1 and status["versions"][0]["state"] == "active"
    code, out, _ = _run("--json", "keys", "rotate", "--reason", "test")
    assert json.loads(out) == {"rotated": True, "current": 2}
    code, out, _ = _run("keys", "status")
    assert code == 0 and "retired" in out and "(current)" in out


def test_rotate_if_due_rotates_only_when_due(project: Path) -> None:
    _run("keys", "generate")
    code, out, _ = _run("--json", "keys", "rotate", "--if-due")
    assert code == 0 and json.loads(out)["rotated"] is False
    _run("keys", "generate", "--force", "--rotation-days", "1")
    provider = FileProvider(project / "keyring.json")
    keyring = provider.load()
    old = keyring.get(1).created
    assert old is not None
    aged = json.loads(keyring.to_json())
    aged["versions"][0]["created"] = "2020-01-01T00:00:00Z"
    provider.path.write_text(json.dumps(aged))
    code, out, _ = _run("--json", "keys", "rotate", "--if-due")
    assert code == 0 and json.loads(out) == {"rotated": True, "current": 2}


def test_days_until_rotation_count_a_partial_day_as_a_day(tmp_path: Path) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    provider = FileProvider(tmp_path / "keyring.json")
    KeyManager(provider, clock=lambda: created).generate(rotation_days=90)

    def after(elapsed: dt.timedelta) -> tuple[int | None, bool]:
        status = KeyManager(provider, clock=lambda: created + elapsed).status()
        return status.days_until_rotation, status.rotation_overdue

    assert after(dt.timedelta(0)) == (90, False)
    assert after(dt.timedelta(seconds=1)) == (90, False)  # rounding down said 89
    assert after(dt.timedelta(days=89.5)) == (1, False)  # rounding down said overdue
    assert after(dt.timedelta(days=90)) == (0, True)
    assert after(dt.timedelta(days=91.5))[1]


def _created(project: Path, ago: dt.timedelta) -> None:
    path = project / "keyring.json"
    keyring = json.loads(path.read_text())
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) - ago
    keyring["versions"][0]["created"] = when.isoformat().replace("+00:00", "Z")
    path.write_text(json.dumps(keyring))


def test_status_health_and_rotate_say_when_rotation_is_due(project: Path) -> None:
    _run("keys", "generate")
    _created(project, dt.timedelta(hours=1))
    assert "Rotation: due in 90 days (schedule 90 days)." in _run("keys", "status")[1]
    _created(project, dt.timedelta(days=89, hours=12))
    assert "Rotation: due in 1 day (schedule 90 days)." in _run("keys", "status")[1]
    code, out, _ = _run("keys", "health")
    assert code == 0 and "rotation schedule: due in 1 day" in out
    code, out, _ = _run("keys", "rotate", "--if-due")
    assert code == 0 and "Not due: version 1 rotates in 1 day." in out
    _created(project, dt.timedelta(days=91))
    assert "Rotation: overdue (schedule 90 days)." in _run("keys", "status")[1]
    assert _run("keys", "health")[0] == 1


def test_disable_enable_destroy_and_exit_codes(project: Path) -> None:
    _run("keys", "generate")
    _run("keys", "rotate")
    assert _run("keys", "disable", "1")[0] == 0
    assert _run("keys", "enable", "1")[0] == 0
    code, _, err = _run("keys", "destroy", "1")
    assert code == 5 and "--confirm" in err and "Traceback" not in err
    assert _run("keys", "destroy", "1", "--confirm")[0] == 0
    code, _, err = _run("keys", "enable", "1")
    assert code == 3 and "destroyed" in err
    code, _, err = _run("keys", "disable", "2")
    assert code == 3 and "current" in err


def test_audit_shows_events_and_verify_detects_tampering(project: Path) -> None:
    _run("keys", "generate")
    _run("keys", "rotate", "--reason", "quarterly")
    code, out, _ = _run("--json", "keys", "audit")
    events = json.loads(out)
    assert [e["action"] for e in events] == ["generate", "rotate"]
    assert events[0]["actor"] == "cli-test"
    assert _run("keys", "audit", "--verify")[0] == 0
    log = project / "encmigrate-audit.jsonl"
    log.write_text(log.read_text().replace("quarterly", "yearly"))
    code, out, _ = _run("keys", "audit", "--verify")
    assert code == 3 and "differs" in out


def test_health_exit_codes(project: Path) -> None:
    code, out, _ = _run("keys", "health")
    assert code == 3 and "unhealthy" in out
    _run("keys", "generate")
    code, out, _ = _run("--json", "keys", "health")
    report = json.loads(out)
    assert code == 0 and report["status"] == "healthy"
    _run("keys", "generate", "--force", "--rotation-days", "1")
    keyring_path = project / "keyring.json"
    aged = json.loads(keyring_path.read_text())
    aged["versions"][0]["created"] = "2020-01-01T00:00:00Z"
    keyring_path.write_text(json.dumps(aged))
    code, out, _ = _run("keys", "health")
    assert code == 1 and "degraded" in out


def test_missing_configuration_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    code, _, err = _run("keys", "status")
    assert code == 3
    assert err.startswith("error: no keyring configured")
    assert "Traceback" not in err
    code, _, err = _run("--config", str(tmp_path / "nope.toml"), "keys", "status")
    assert code == 2 and "does not exist" in err


def test_no_key_material_in_any_output(project: Path) -> None:
    outputs = [
        _run("keys", "generate"),
        _run("keys", "rotate"),
        _run("keys", "status"),
        _run("--json", "keys", "status"),
        _run("keys", "audit"),
        _run("keys", "health"),
    ]
    keyring = FileProvider(project / "keyring.json").load()
    secrets = []
    for version in (1, 2):
        material = keyring.master_key(version)
        secrets += [
            base64.b64encode(material).decode(),
            material.hex(),
            base64.urlsafe_b64encode(material).decode(),
        ]
    text = "".join(o + e for _, o, e in outputs)
    assert not [s for s in secrets if s in text]


def test_demo_runs_the_five_steps_and_starts_clean_when_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ENCMIGRATE_"):
            monkeypatch.delenv(name)
    for _ in range(2):
        code, out, err = _run("demo", "--rows", "300")
        assert code == 0, err
        assert "Step 5: drop-unencrypted" in out
        assert "v2: 300" in out  # every value rewrapped to the new key version
        assert "chain intact" in out and "FAILED" not in out
        # Not a terminal: rules span 80 columns, not the console's unbounded width.
        rules = [line for line in out.splitlines() if line.startswith("─")]
        assert rules and all(len(line) == 80 for line in rules)
    assert (tmp_path / "encmigrate-demo" / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "encmigrate-demo.db").exists()
