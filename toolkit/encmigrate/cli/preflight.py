"""``preflight``: before step 1 or 2, check that the keys, the role and the database are ready."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from encmigrate.cli.console import out, print_json, report_table
from encmigrate.cli.context import engine_for, keyring_for, plan_for
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.keys import Keyring, load_keyring, resolve_key_setup
from encmigrate.preflight import (
    DEFAULT_LONG_TRANSACTION_SECONDS,
    PreflightReport,
    Verdict,
    run_preflight,
)

__all__ = ["preflight_command"]

_STYLES = {
    Verdict.PASS: "green",
    Verdict.WARN: "yellow",
    Verdict.FAIL: "bold red",
    Verdict.SKIP: "dim",
}
# The variables that choose this host's keyring: never the application's.
_HOST_KEY_PREFIX = "ENCMIGRATE_"


@reports_errors
def preflight_command(
    ctx: typer.Context,
    step: Annotated[
        int, typer.Option("--step", min=1, max=2, help="The step about to run: 1 or 2.")
    ] = 1,
    app_config: Annotated[
        Path | None,
        typer.Option(
            "--app-config",
            help="The application's encmigrate.toml: its [keys] must read what this host writes.",
        ),
    ] = None,
    long_transaction_seconds: Annotated[
        float,
        typer.Option(
            "--long-transaction-seconds",
            min=0,
            help="A transaction open longer than this is reported.",
        ),
    ] = DEFAULT_LONG_TRANSACTION_SECONDS,
) -> None:
    """Check the keys, the role's privileges, disk, blocking sessions and timeouts.

    Each check says pass, warn or fail with its figure; exits 1 when a check
    fails, 3 when the failure is the keys' (as verify).

    Example: [bold]encmigrate preflight --step 1 --app-config ../app/encmigrate.toml[/]
    """
    # The plan's own check reads the tables: a role without SELECT is this command's finding.
    plan = plan_for(ctx, check_database=False)
    engine = engine_for(ctx, plan)
    try:
        report = run_preflight(
            plan,
            engine,
            lambda: keyring_for(ctx, plan),
            step=step,
            app_keyring=(lambda: _app_keyring(app_config)) if app_config is not None else None,
            long_transaction_seconds=long_transaction_seconds,
        )
    finally:
        engine.dispose()
    if state_of(ctx).json:
        print_json(report.as_dict())
    else:
        _show(report)
    if report.key_failed:
        raise typer.Exit(3)
    if report.failed:
        raise typer.Exit(1)


def _app_keyring(path: Path) -> Keyring:
    """The keyring ``path``'s settings name, found without this host's key variables.

    This host's ``ENCMIGRATE_*`` variables would otherwise win over the file's
    ``[keys]`` and stand in for the application's keyring; variables under the
    application's own ``env_prefix`` still count.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_KEY_PREFIX)}
    return load_keyring(resolve_key_setup(path, environ=environ))


def _show(report: PreflightReport) -> None:
    table = report_table(
        "check", "verdict", "figure", "detail", title=f"preflight: step {report.step}"
    )
    for check in report.checks:
        style = _STYLES[check.verdict]
        table.add_row(
            check.name,
            f"[{style}]{check.verdict.value}[/]",
            escape(check.figure),
            # One finding a line: a failed privilege check may list several.
            escape(check.detail.replace("; ", "\n")),
        )
    out.print(table)
    if report.failed:
        out.print("A check failed: fix it before running the step.")
    elif any(c.verdict is Verdict.WARN for c in report.checks):
        out.print("No check failed; read the warnings before running the step.")
    else:
        out.print("Every check passed.")
