"""``encmigrate keys …``: the key manager's operations and health check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from encmigrate.api import get_cipher
from encmigrate.cli.console import out, print_json
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.crypto.kdf import Kdf
from encmigrate.errors import EncmigrateError, KeyConfigError
from encmigrate.keys import (
    AuditLog,
    FileProvider,
    KeyManager,
    KeySetup,
    KeyStatus,
    load_keyring,
    resolve_key_setup,
    verify_audit_log,
)
from encmigrate.keys.resolve import AUDIT_FILE

__all__ = ["app"]

app = typer.Typer(
    help="Create, rotate, disable and destroy master-key versions; audit and health checks.",
    no_args_is_help=True,
)

Version = Annotated[int, typer.Argument(help="Key version number.", min=1)]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")]


def _setup(ctx: typer.Context) -> KeySetup:
    return resolve_key_setup(state_of(ctx).config)


def _manager(ctx: typer.Context) -> KeyManager:
    setup = _setup(ctx)
    return KeyManager(setup.provider, setup.audit)


@app.command()
@reports_errors
def generate(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Keyring file to create (default: what the plan names)."),
    ] = None,
    kdf: Annotated[Kdf, typer.Option("--kdf", help="Key-derivation function.")] = Kdf.HKDF_SHA256,
    rotation_days: Annotated[
        int, typer.Option("--rotation-days", min=1, help="Rotation schedule in days.")
    ] = 90,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing keyring (its keys are lost).")
    ] = False,
) -> None:
    """Create a keyring with one fresh random version.

    Example: [bold]encmigrate keys generate --path keyring.json[/]
    """
    if path is not None:
        manager = KeyManager(FileProvider(path), AuditLog(path.parent / AUDIT_FILE))
    else:
        try:
            manager = _manager(ctx)
        except KeyConfigError:
            default = Path("keyring.json")
            manager = KeyManager(FileProvider(default), AuditLog(default.parent / AUDIT_FILE))
    keyring = manager.generate(kdf=kdf, rotation_days=rotation_days, overwrite=force)
    where = manager.provider.describe()
    if state_of(ctx).json:
        print_json({"created": where, "version": keyring.current, "kdf": keyring.kdf.value})
        return
    out.print(f"Created {where} with key version {keyring.current} ({keyring.kdf.value}).")
    if isinstance(manager.provider, FileProvider):
        out.print(
            "Keep it readable only by its owner (mode 0600) and back it up with "
            "`encmigrate keys export`. Point encmigrate at it with \\[keys] path in "
            f"encmigrate.toml or ENCMIGRATE_KEYRING_FILE={manager.provider.path}"
        )


@app.command()
@reports_errors
def rotate(
    ctx: typer.Context,
    if_due: Annotated[
        bool, typer.Option("--if-due", help="Rotate only when the schedule says so (for cron).")
    ] = False,
    reason: Reason = "",
) -> None:
    """Make a fresh version current; older versions stay readable.

    Example: [bold]encmigrate keys rotate --if-due[/]
    """
    manager = _manager(ctx)
    if if_due and not manager.rotation_due():
        status = manager.status()
        _say(
            ctx,
            {
                "rotated": False,
                "current": status.current,
                "days_until_rotation": status.days_until_rotation,
            },
            f"Not due: version {status.current} rotates in {status.days_until_rotation} days.",
        )
        return
    new_version = manager.rotate(reason=reason or ("scheduled" if if_due else ""))
    _say(
        ctx,
        {"rotated": True, "current": new_version},
        f"Rotated: version {new_version} is current. Old rows stay readable; run "
        "`encmigrate rewrap` to move them to the new version.",
    )


@app.command()
@reports_errors
def status(ctx: typer.Context) -> None:
    """Versions, states, ages and when the next rotation is due."""
    report = _manager(ctx).status()
    if state_of(ctx).json:
        print_json(_status_document(report))
        return
    table = Table(title=f"Keyring ({report.provider})")
    for column in ("version", "state", "created", "age (days)"):
        table.add_column(column)
    for v in report.versions:
        marker = " (current)" if v.current else ""
        table.add_row(
            str(v.version),
            f"{v.state.value}{marker}",
            v.created.isoformat() if v.created else "unknown",
            "" if v.age_days is None else str(v.age_days),
        )
    out.print(table)
    if report.days_until_rotation is None:
        out.print(
            "Rotation: the current version has no creation time; rotate to start the schedule."
        )
    elif report.rotation_overdue:
        out.print(f"Rotation: [bold]overdue[/] (schedule {report.rotation_days} days).")
    else:
        out.print(
            f"Rotation: due in {report.days_until_rotation} days "
            f"(schedule {report.rotation_days} days)."
        )


def _status_document(report: KeyStatus) -> dict[str, Any]:
    return {
        "provider": report.provider,
        "kdf": report.kdf.value,
        "current": report.current,
        "rotation_days": report.rotation_days,
        "rotation_due": report.rotation_due.isoformat() if report.rotation_due else None,
        "days_until_rotation": report.days_until_rotation,
        "versions": [
            {
                "version": v.version,
                "state": v.state.value,
                "current": v.current,
                "created": v.created.isoformat() if v.created else None,
                "age_days": v.age_days,
            }
            for v in report.versions
        ],
    }


@app.command()
@reports_errors
def retire(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Mark a version decrypt-only (what rotation does to the old current)."""
    _manager(ctx).retire(version, reason=reason)
    _say(ctx, {"version": version, "state": "retired"}, f"Key version {version} is retired.")


@app.command()
@reports_errors
def disable(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Refuse decryption under a version (reversible with `keys enable`)."""
    _manager(ctx).disable(version, reason=reason)
    _say(
        ctx,
        {"version": version, "state": "disabled"},
        f"Key version {version} is disabled: values under it no longer decrypt "
        f"(`encmigrate keys enable {version}` undoes this).",
    )


@app.command()
@reports_errors
def enable(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Make a disabled version readable again."""
    _manager(ctx).enable(version, reason=reason)
    _say(ctx, {"version": version, "state": "retired"}, f"Key version {version} is readable again.")


@app.command()
@reports_errors
def destroy(
    ctx: typer.Context,
    version: Version,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Required: destroying a version is permanent.")
    ] = False,
    reason: Reason = "",
) -> None:
    """Erase a version's material for good.

    Example: [bold]encmigrate keys destroy 1 --confirm --reason "rewrap done"[/]
    """
    _manager(ctx).destroy(version, confirm=confirm, reason=reason)
    _say(
        ctx,
        {"version": version, "state": "destroyed"},
        f"Key version {version} is destroyed; values under it can never be decrypted again.",
    )


@app.command()
@reports_errors
def audit(
    ctx: typer.Context,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hash chain.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show the last N events.")] = 20,
) -> None:
    """Show the audit log; with --verify check its hash chain (exit 3 if broken)."""
    setup = _setup(ctx)
    if setup.audit is None:
        raise KeyConfigError(
            "no audit log is configured for this keyring: set [keys] audit_log in encmigrate.toml"
        )
    if verify:
        expected = setup.provider.load().audit_head
        report = verify_audit_log(setup.audit.path, expected)
        if state_of(ctx).json:
            print_json(
                {
                    "path": str(report.path),
                    "lines": report.lines,
                    "ok": report.ok,
                    "problems": list(report.problems),
                }
            )
        elif report.ok:
            out.print(f"Audit log {report.path}: {report.lines} lines, chain intact.")
        else:
            out.print(f"Audit log {report.path}: [bold red]{len(report.problems)} problems[/]")
            for problem in report.problems:
                out.print(f"  {problem}", markup=False)
        if not report.ok:
            raise typer.Exit(3)
        return
    events = list(setup.audit.events())[-limit:] if limit else []
    if state_of(ctx).json:
        print_json(events)
        return
    table = Table(title=str(setup.audit.path))
    for column in ("time", "actor", "action", "version", "outcome", "reason"):
        table.add_column(column)
    for event in events:
        table.add_row(
            *(
                str(event.get(k) if event.get(k) is not None else "")
                for k in ("time", "actor", "action", "version", "outcome", "reason")
            )
        )
    out.print(table)


@app.command()
def health(ctx: typer.Context) -> None:
    """Check the provider, the current version and a test round trip (exit 0/1/3).

    Exit codes: 0 healthy, 1 degraded (rotation due), 3 key unreachable or broken.
    """
    checks: list[tuple[str, bool, str]] = []
    code = 0
    try:
        setup = _setup(ctx)
        keyring = load_keyring(setup)
        checks.append(("provider reachable", True, setup.provider.describe()))
        cipher = get_cipher("encmigrate.health", keyring=keyring)
        probe = "encmigrate health probe"
        ok = cipher.decrypt(cipher.encrypt(probe)) == probe
        checks.append(("test encrypt/decrypt", ok, f"version {keyring.current}"))
        code = 0 if ok else 3
        due = KeyManager(setup.provider, None).status(setup.rotation_days)
        overdue = due.rotation_overdue
        checks.append(
            (
                "rotation schedule",
                not overdue,
                "overdue"
                if overdue
                else f"due in {due.days_until_rotation} days"
                if due.days_until_rotation is not None
                else "no creation time",
            )
        )
        if overdue and code == 0:
            code = 1
    except EncmigrateError as exc:
        checks.append(("keyring", False, str(exc).splitlines()[0]))
        code = 3
    status_word = {0: "healthy", 1: "degraded", 3: "unhealthy"}[code]
    if state_of(ctx).json:
        print_json(
            {
                "status": status_word,
                "checks": [
                    {"check": name, "ok": ok, "detail": detail} for name, ok, detail in checks
                ],
            }
        )
    else:
        for name, ok, detail in checks:
            mark = "[green]ok[/]" if ok else "[red]FAIL[/]"
            out.print(f"{mark}  {name}: {escape(detail)}")
        out.print(f"Key health: {status_word}")
    raise typer.Exit(code)


def _say(ctx: typer.Context, document: dict[str, Any], text: str) -> None:
    if state_of(ctx).json:
        print_json(document)
    else:
        out.print(text)
