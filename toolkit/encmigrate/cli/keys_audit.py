"""``encmigrate keys audit``, ``upgrade`` and ``health``: checking the audit log, the
stored keyring's form, and whether the keys work."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from encmigrate.api import get_cipher
from encmigrate.cli.console import out, print_json, report_table
from encmigrate.cli.keys_context import days_text, key_manager, key_setup, say
from encmigrate.cli.options import Reason
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.errors import EncmigrateError, KeyConfigError
from encmigrate.keys import KeyManager, KeySetup, load_keyring, verify_audit_log

__all__ = ["audit", "health", "upgrade"]


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
    setup = key_setup(ctx)
    if setup.audit is None:
        raise KeyConfigError(
            "no audit log is configured for this keyring: set [keys] audit_log in encmigrate.toml"
        )
    if checkpoint:
        keyring = KeyManager(setup.provider, setup.audit).checkpoint(reason=reason)
        head = keyring.audit_head
        lines = head.lines if head is not None else 0
        say(
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


@reports_errors
def upgrade(ctx: typer.Context, reason: Reason = "") -> None:
    """Save the keyring again in the current form: authenticated, audit head anchored.

    A Vault Transit or AWS KMS keyring written by an older encmigrate is not
    authenticated, and is refused everywhere else; this reads it once, shows its
    versions, and stores it authenticated. Run it before deploying applications of
    this version (older ones read the upgraded keyring as before).

    Example: [bold]encmigrate keys upgrade --reason "authenticate the stored keyring"[/]
    """
    manager = key_manager(ctx)
    keyring = manager.upgrade(reason=reason)
    versions = ", ".join(f"{v.version} {v.state.value}" for v in keyring.versions)
    say(
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


@reports_errors
def health(ctx: typer.Context) -> None:
    """Check the provider, the current version and a test round trip (exit 0/1/3).

    Exit codes: 0 healthy, 1 degraded (rotation due), 3 key unreachable or broken.

    Example: [bold]encmigrate --json keys health[/]
    """
    checks: list[tuple[str, bool, str]] = []
    code = 0
    try:
        setup = key_setup(ctx)
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
                else f"due in {days_text(due.days_until_rotation)}"
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
