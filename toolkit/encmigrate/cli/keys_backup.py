"""``encmigrate keys export``, ``import`` and ``emergency-rotate``: backup and recovery of
the keyring, and rotation after a suspected leak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from encmigrate.cli.keys_context import key_manager, say
from encmigrate.cli.options import Reason
from encmigrate.cli.state import reports_errors
from encmigrate.errors import ConfigError
from encmigrate.keys import AuditLog, FileProvider, KeyManager
from encmigrate.keys.backup import (
    BACKUP_KEY_ENV,
    export_backup,
    import_backup,
    load_backup_key,
    write_new_backup_key,
)
from encmigrate.keys.resolve import AUDIT_FILE

__all__ = ["emergency_rotate", "export", "import_"]

BackupKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--backup-key-file",
        help=f"File holding the Fernet backup key (default: ${BACKUP_KEY_ENV}).",
    ),
]


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
    summary = export_backup(key_manager(ctx), out_file, backup_key, overwrite=force, reason=reason)
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
    say(ctx, document, escape(text))


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
        manager = key_manager(ctx)
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
    say(ctx, document, escape("\n".join(lines)))


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
    done = key_manager(ctx).emergency_rotate(reason, disable_now=disable_now)
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
    say(ctx, document, escape("\n".join(text)))


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
