"""``encmigrate keys …``: the key manager's group, and the life of a version: generate,
rotate, status, retire, disable, enable, destroy.

The audit log and health commands are in :mod:`encmigrate.cli.keys_audit`; backup,
restore and emergency rotation in :mod:`encmigrate.cli.keys_backup`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from encmigrate.cli import keys_audit, keys_backup
from encmigrate.cli.console import err, out, print_json, report_table
from encmigrate.cli.keys_context import days_text, key_manager, say
from encmigrate.cli.options import Reason
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.config import MAX_ROTATION_DAYS
from encmigrate.crypto.kdf import Kdf
from encmigrate.errors import ConfigError, KeyConfigError
from encmigrate.keys import AuditLog, FileProvider, KeyManager, KeyStatus
from encmigrate.keys.manager import VersionUsage
from encmigrate.keys.resolve import AUDIT_FILE

__all__ = ["app"]

app = typer.Typer(
    help="Create, rotate, disable and destroy master-key versions; audit and health checks.",
    no_args_is_help=True,
)

Version = Annotated[int, typer.Argument(help="Key version number.", min=1)]


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
        int,
        typer.Option(
            "--rotation-days", min=1, max=MAX_ROTATION_DAYS, help="Rotation schedule in days."
        ),
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
            manager = key_manager(ctx)
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
    manager = key_manager(ctx)
    if if_due:
        result = manager.rotate_if_due(reason=reason or "scheduled")
        new_version = result.status.current
        if not result.rotated:
            days = result.status.days_until_rotation
            when = (
                f"rotates in {days_text(days)}"
                if days is not None
                else "has no creation time, so no schedule (a rotation starts one)"
            )
            say(
                ctx,
                {"rotated": False, "current": new_version, "days_until_rotation": days},
                f"Not due: version {new_version} {when}.",
            )
            return
    else:
        new_version = manager.rotate(reason=reason)
    say(
        ctx,
        {"rotated": True, "current": new_version},
        f"Rotated: version {new_version} is current. Old rows stay readable; run "
        "`encmigrate rewrap` to move them to the new version.",
    )


@app.command()
@reports_errors
def status(ctx: typer.Context) -> None:
    """Versions, states, ages and when the next rotation is due.

    Example: [bold]encmigrate --json keys status[/]
    """
    report = key_manager(ctx).status()
    if state_of(ctx).json:
        print_json(_status_document(report))
        return
    table = report_table(
        "version", "state", "created", "age (days)", title=f"Keyring ({report.provider})"
    )
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
        out.print(f"Rotation: [bold]overdue[/] (schedule {days_text(report.rotation_days)}).")
    else:
        out.print(
            f"Rotation: due in {days_text(report.days_until_rotation)} "
            f"(schedule {days_text(report.rotation_days)})."
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
    """Mark a version decrypt-only (what rotation does to the old current).

    Example: [bold]encmigrate keys retire 1 --reason "superseded"[/]
    """
    key_manager(ctx).retire(version, reason=reason)
    say(ctx, {"version": version, "state": "retired"}, f"Key version {version} is retired.")


@app.command()
@reports_errors
def disable(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Refuse decryption under a version (reversible with `keys enable`).

    Example: [bold]encmigrate keys disable 1 --reason "rewrap done"[/]
    """
    key_manager(ctx).disable(version, reason=reason)
    say(
        ctx,
        {"version": version, "state": "disabled"},
        f"Key version {version} is disabled: values under it no longer decrypt "
        f"(`encmigrate keys enable {version}` undoes this).",
    )


@app.command()
@reports_errors
def enable(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Make a disabled version readable again.

    Example: [bold]encmigrate keys enable 1 --reason "old backup restore"[/]
    """
    key_manager(ctx).enable(version, reason=reason)
    say(ctx, {"version": version, "state": "retired"}, f"Key version {version} is readable again.")


@app.command()
@reports_errors
def destroy(
    ctx: typer.Context,
    version: Version,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Required: destroying a version is permanent.")
    ] = False,
    reason: Reason = "",
    force: Annotated[
        bool, typer.Option("--force", help="Destroy even if `status` finds values under it.")
    ] = False,
) -> None:
    """Erase a version's material for good; refused while planned columns still use it.

    Example: [bold]encmigrate keys destroy 1 --confirm --reason "rewrap done"[/]
    """
    in_use = _values_in_use(ctx, version) if confirm and not force else None
    key_manager(ctx).destroy(
        version, confirm=confirm, reason=reason, in_use=in_use, force=force or in_use is None
    )
    say(
        ctx,
        {"version": version, "state": "destroyed"},
        f"Key version {version} is destroyed; values under it can never be decrypted again.",
    )


def _values_in_use(ctx: typer.Context, version: int) -> VersionUsage | None:
    """Counts of values per planned column under a version (envelope headers, no keys).

    ``None`` when there is nothing to count in: no plan (said on stderr), or a plan
    without a database.
    """
    from encmigrate.cli.context import engine_for, plan_for
    from encmigrate.migrate import status

    try:
        plan = plan_for(ctx, check_database=False)
    except ConfigError:
        err.print(
            f"warning: no plan found, so nothing checked whether key version {version} still "
            "protects data; `encmigrate status` shows the versions in use"
        )
        return None
    if plan.database_url is None:
        return None

    def count(version: int) -> dict[str, int]:
        engine = engine_for(ctx, plan)
        try:
            return {
                f"{s.table}.{s.column}": s.versions.get(version, 0) for s in status(plan, engine)
            }
        finally:
            engine.dispose()

    return count


# Registered after the lifecycle commands: `encmigrate keys --help` lists them in this order.
app.command()(keys_audit.audit)
app.command()(keys_audit.upgrade)
app.command()(keys_audit.health)
app.command()(keys_backup.export)
app.command("import")(keys_backup.import_)
app.command("emergency-rotate")(keys_backup.emergency_rotate)
