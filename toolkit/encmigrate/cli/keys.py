"""``encmigrate keys …``: the key manager's operations and health check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from encmigrate.api import get_cipher
from encmigrate.cli.console import err, out, print_json, report_table
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.config import MAX_ROTATION_DAYS
from encmigrate.crypto.kdf import Kdf
from encmigrate.errors import ConfigError, EncmigrateError, KeyConfigError
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
from encmigrate.keys.backup import (
    BACKUP_KEY_ENV,
    export_backup,
    import_backup,
    load_backup_key,
    write_new_backup_key,
)
from encmigrate.keys.manager import VersionUsage
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
    if if_due:
        result = manager.rotate_if_due(reason=reason or "scheduled")
        new_version = result.status.current
        if not result.rotated:
            days = result.status.days_until_rotation
            when = (
                f"rotates in {_days(days)}"
                if days is not None
                else "has no creation time, so no schedule (a rotation starts one)"
            )
            _say(
                ctx,
                {"rotated": False, "current": new_version, "days_until_rotation": days},
                f"Not due: version {new_version} {when}.",
            )
            return
    else:
        new_version = manager.rotate(reason=reason)
    _say(
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
    report = _manager(ctx).status()
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
        out.print(f"Rotation: [bold]overdue[/] (schedule {_days(report.rotation_days)}).")
    else:
        out.print(
            f"Rotation: due in {_days(report.days_until_rotation)} "
            f"(schedule {_days(report.rotation_days)})."
        )


def _days(count: int) -> str:
    return "1 day" if count == 1 else f"{count} days"


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
    _manager(ctx).retire(version, reason=reason)
    _say(ctx, {"version": version, "state": "retired"}, f"Key version {version} is retired.")


@app.command()
@reports_errors
def disable(ctx: typer.Context, version: Version, reason: Reason = "") -> None:
    """Refuse decryption under a version (reversible with `keys enable`).

    Example: [bold]encmigrate keys disable 1 --reason "rewrap done"[/]
    """
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
    """Make a disabled version readable again.

    Example: [bold]encmigrate keys enable 1 --reason "old backup restore"[/]
    """
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
    force: Annotated[
        bool, typer.Option("--force", help="Destroy even if `status` finds values under it.")
    ] = False,
) -> None:
    """Erase a version's material for good; refused while planned columns still use it.

    Example: [bold]encmigrate keys destroy 1 --confirm --reason "rewrap done"[/]
    """
    in_use = _values_in_use(ctx, version) if confirm and not force else None
    _manager(ctx).destroy(
        version, confirm=confirm, reason=reason, in_use=in_use, force=force or in_use is None
    )
    _say(
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


@app.command()
@reports_errors
def audit(
    ctx: typer.Context,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the chain, MACs, seal and anchor.")
    ] = False,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint",
            help="Verify, then anchor the log's head in the stored keyring (schedule it).",
        ),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show the last N events.")] = 20,
    reason: Reason = "",
) -> None:
    """Show the audit log; --verify checks it (exit 3 if not intact); --checkpoint anchors it.

    --verify checks the hash chain, each line's MAC (keyed under the master keys), the
    seal, and the head the keyring recorded at its last key operation. --checkpoint is a
    key operation: it refuses (exit 5) a log that does not verify.

    Example: [bold]encmigrate keys audit --verify[/]
    """
    setup = _setup(ctx)
    if setup.audit is None:
        raise KeyConfigError(
            "no audit log is configured for this keyring: set [keys] audit_log in encmigrate.toml"
        )
    if checkpoint:
        keyring = KeyManager(setup.provider, setup.audit).checkpoint(reason=reason)
        head = keyring.audit_head
        lines = head.lines if head is not None else 0
        _say(
            ctx,
            {"anchored": True, "lines": lines},
            f"Audit log {setup.audit.path}: verified, and its {lines} lines are anchored in "
            f"{setup.provider.describe()}.",
        )
        return
    if verify:
        _verify_audit(ctx, setup)
        return
    events = list(setup.audit.events())[-limit:] if limit else []
    if state_of(ctx).json:
        print_json(events)
        return
    columns = ("time", "actor", "action", "version", "outcome", "reason")
    table = report_table(*columns, title=str(setup.audit.path))
    for event in events:
        table.add_row(
            *(escape(str(event.get(k) if event.get(k) is not None else "")) for k in columns)
        )
    out.print(table)


def _verify_audit(ctx: typer.Context, setup: KeySetup) -> None:
    assert setup.audit is not None
    report = verify_audit_log(setup.audit.path, setup.provider.load())
    if state_of(ctx).json:
        print_json(
            {
                "path": str(report.path),
                "lines": report.lines,
                "ok": report.ok,
                "problems": list(report.problems),
                "notes": list(report.notes),
            }
        )
    else:
        if report.ok:
            out.print(
                f"Audit log {report.path}: {report.lines} lines, chain intact; MACs, seal and "
                "anchor verified.",
                markup=False,
            )
        else:
            where = escape(str(report.path))
            out.print(f"Audit log {where}: [bold red]{len(report.problems)} problems[/]")
        for problem in report.problems:
            out.print(f"  {problem}", markup=False)
        for note in report.notes:
            out.print(f"  note: {note}", markup=False)
    if not report.ok:
        raise typer.Exit(3)


@app.command()
@reports_errors
def upgrade(ctx: typer.Context, reason: Reason = "") -> None:
    """Save the keyring again in the current form: authenticated, audit head anchored.

    A Vault Transit or AWS KMS keyring written by an older encmigrate is not
    authenticated, and is refused everywhere else; this reads it once, shows its
    versions, and stores it authenticated. Run it before deploying applications of
    this version (older ones read the upgraded keyring as before).

    Example: [bold]encmigrate keys upgrade --reason "authenticate the stored keyring"[/]
    """
    manager = _manager(ctx)
    keyring = manager.upgrade(reason=reason)
    versions = ", ".join(f"{v.version} {v.state.value}" for v in keyring.versions)
    _say(
        ctx,
        {
            "upgraded": manager.provider.describe(),
            "current": keyring.current,
            "versions": [{"version": v.version, "state": v.state.value} for v in keyring.versions],
        },
        escape(
            f"Upgraded {manager.provider.describe()}: versions {versions}; current "
            f"{keyring.current}. If these are not the states you expect, the stored keyring was "
            "changed before the upgrade: set them right with `encmigrate keys disable`/`destroy`."
        ),
    )


@app.command()
@reports_errors
def health(ctx: typer.Context) -> None:
    """Check the provider, the current version and a test round trip (exit 0/1/3).

    Exit codes: 0 healthy, 1 degraded (rotation due), 3 key unreachable or broken.

    Example: [bold]encmigrate --json keys health[/]
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
                else f"due in {_days(due.days_until_rotation)}"
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


# -- backup, recovery and emergency rotation -------------------------------------------------

BackupKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--backup-key-file",
        help=f"File holding the Fernet backup key (default: ${BACKUP_KEY_ENV}).",
    ),
]


@app.command()
@reports_errors
def export(
    ctx: typer.Context,
    out_file: Annotated[Path, typer.Option("--out", help="Backup file to write (mode 0600).")],
    backup_key_file: BackupKeyFile = None,
    generate_backup_key: Annotated[
        bool,
        typer.Option(
            "--generate-backup-key",
            help="Create a new backup key in --backup-key-file (never printed) and use it.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    reason: Reason = "",
) -> None:
    """Write a backup of the keyring, encrypted under a separate Fernet backup key.

    The backup key comes from ENCMIGRATE_BACKUP_KEY or --backup-key-file; without one
    nothing is written (a plaintext backup is never made). Keep the backup and its key apart.

    Example: [bold]encmigrate keys export --out keyring.backup --backup-key-file backup.key[/]
    """
    if generate_backup_key:
        if backup_key_file is None:
            raise ConfigError(
                "--generate-backup-key needs --backup-key-file FILE: the new key is written "
                "to that file only, never printed"
            )
        backup_key = write_new_backup_key(backup_key_file)
    else:
        backup_key = load_backup_key(backup_key_file)
    summary = export_backup(_manager(ctx), out_file, backup_key, overwrite=force, reason=reason)
    document = {
        "out": str(out_file),
        "created": summary.created.isoformat(),
        **summary.as_dict(),
        "backup_key_file": str(backup_key_file) if backup_key_file else None,
        "backup_key_generated": generate_backup_key,
    }
    versions = ", ".join(f"{n} {s}" for n, s in summary.versions)
    text = (
        f"Wrote encrypted keyring backup {out_file} (versions: {versions}; current "
        f"{summary.current}). Store it apart from its backup key; restore with "
        f"`encmigrate keys import {out_file}`."
    )
    if generate_backup_key:
        text += (
            f"\nThe new backup key is in {backup_key_file} (mode 0600): without it the "
            "backup cannot be read."
        )
    _say(ctx, document, escape(text))


@app.command("import")
@reports_errors
def import_(
    ctx: typer.Context,
    backup_file: Annotated[Path, typer.Argument(metavar="FILE", help="A `keys export` backup.")],
    backup_key_file: BackupKeyFile = None,
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Keyring file to restore into (default: what the plan names)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing keyring (even if versions are lost)."),
    ] = False,
    reason: Reason = "",
) -> None:
    """Restore the keyring from an encrypted backup, after verifying it.

    The backup must authenticate under the backup key and hold a valid keyring before
    anything is written. An existing keyring is replaced only with --force; the refusal
    names the versions the backup lacks (data under them would become unreadable).

    Example: [bold]encmigrate keys import keyring.backup --backup-key-file backup.key[/]
    """
    backup_key = load_backup_key(backup_key_file)
    if path is not None:
        manager = KeyManager(FileProvider(path), AuditLog(path.parent / AUDIT_FILE))
    else:
        manager = _manager(ctx)
    report = import_backup(manager, backup_file, backup_key, force=force, reason=reason)
    summary = report.summary
    document = {
        "restored": report.destination,
        "backup": str(backup_file),
        "backup_created": summary.created.isoformat(),
        "replaced": report.replaced,
        "lost_versions": list(report.lost),
        "revived_versions": list(report.revived),
        **summary.as_dict(),
    }
    versions = ", ".join(f"{n} {s}" for n, s in summary.versions)
    lines = [
        f"Restored {report.destination} from {backup_file} (made {summary.created.isoformat()}): "
        f"versions {versions}; current {summary.current}."
    ]
    if report.lost:
        lost = ", ".join(map(str, report.lost))
        lines.append(f"Versions no longer in the keyring: {lost} (data under them is unreadable).")
    for version in report.revived:
        lines.append(
            f"Version {version} was destroyed here but the backup still holds it: "
            f"`encmigrate keys destroy {version} --confirm` to destroy it again."
        )
    lines.append("Check it: `encmigrate keys health` and `encmigrate verify --sample 1000`.")
    _say(ctx, document, escape("\n".join(lines)))


@app.command("emergency-rotate")
@reports_errors
def emergency_rotate(
    ctx: typer.Context,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required; recorded in the audit log).")
    ],
    disable_now: Annotated[
        bool,
        typer.Option(
            "--disable-now",
            help="Also disable the old version at once (rows under it stop decrypting).",
        ),
    ] = False,
) -> None:
    """Rotate now after a suspected key leak; disable the old version now or after rewrap.

    Without --disable-now the old version stays readable so `encmigrate rewrap` can move
    its rows; the audit log records that it must be disabled once rewrap completes, and
    the follow-up steps are printed.

    Example: [bold]encmigrate keys emergency-rotate --reason "key seen in a CI log"[/]
    """
    if not reason.strip():
        raise ConfigError("--reason must say why (it is recorded in the audit log)")
    done = _manager(ctx).emergency_rotate(reason, disable_now=disable_now)
    old, new = done.old_version, done.new_version
    steps = _emergency_steps(old, new, reason, disabled=disable_now)
    document = {
        "rotated": True,
        "current": new,
        "old_version": old,
        "old_state": "disabled" if disable_now else "retired",
        "follow_up": steps,
    }
    state = "disabled: values under it no longer decrypt" if disable_now else "retired"
    text = [f"Emergency rotation: version {new} is current; version {old} is {state}."]
    text.append("Follow-up, in order:")
    text += [f"  {i}. {step}" for i, step in enumerate(steps, start=1)]
    _say(ctx, document, escape("\n".join(text)))


def _emergency_steps(old: int, new: int, reason: str, *, disabled: bool) -> list[str]:
    quoted = '"' + reason.replace('"', "'") + '"'
    steps = []
    if disabled:
        steps.append(
            f"encmigrate status   (rows still under version {old} cannot be read; to move them, "
            f"`encmigrate keys enable {old}`, then rewrap and verify, then disable it again)"
        )
    else:
        steps += [
            f"encmigrate rewrap   (re-encrypts rows under version {old} with version {new})",
            f"encmigrate verify   (every value decrypts; `encmigrate status`: no rows under {old})",
            f"encmigrate keys disable {old} --reason {quoted}",
        ]
    steps += [
        f"encmigrate keys destroy {old} --confirm --reason {quoted}   (once nothing uses it)",
        "encmigrate keys export --out FILE   (a backup of the new keyring; old backups hold "
        f"version {old})",
    ]
    return steps
