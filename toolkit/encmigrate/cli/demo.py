"""``encmigrate demo``: the five steps on a sample table, through the real code paths.

On an embedded SQLite file (``./encmigrate-demo.db``; ``--database-url``
for PostgreSQL) it creates a ``customers`` table with realistic data, a
keyring, an Alembic environment and a plan in ``./encmigrate-demo/``, then
runs add-columns, migrate-data, verify, create-views and drop-unencrypted
as :class:`~encmigrate.workflow.Workflow` runs them (the functions the
commands call; ``rehearse`` runs the same object), searches by email,
rotates the key, rewraps and verifies again. Re-running starts clean.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
import typer

from encmigrate import plan as plan_module
from encmigrate.api import get_cipher, get_searchable_cipher
from encmigrate.cli.console import out, report_table
from encmigrate.cli.progress import Reporter
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.crypto.envelope import envelope_version
from encmigrate.errors import RefusedError
from encmigrate.keys import AuditLog, FileProvider, KeyManager, load_keyring, verify_audit_log
from encmigrate.keys.resolve import AUDIT_FILE, KeySetup
from encmigrate.migrate import MigrateOptions, connect, rewrap, status, verify
from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL
from encmigrate.tracking import TRACKING_TABLES
from encmigrate.workflow import (
    MigrateOutcome,
    PlanSource,
    RevisionOutcome,
    Step,
    StepOutcome,
    VerifyOutcome,
    Workflow,
)

if TYPE_CHECKING:
    from encmigrate.migrate.verify import ColumnVerdict
    from encmigrate.revisions import RevisionResult

__all__ = ["demo"]

FIRST = [
    "Zoë",
    "Łukasz",
    "Amélie",
    "Søren",
    "Chidi",
    "Mei",
    "José",
    "Ana",
    "Björn",
    "Priya",
    "Oluwaseun",
    "Ngọc",
    "Ævar",
    "Dagný",
    "Renée",
]
LAST = [
    "Müller",
    "O'Brien",
    "Nakamura",
    "García",
    "Okafor",
    "Kowalski",
    "Dubois",
    "Singh",
    "Ångström",
    "Nguyễn",
]
PLAN = """
[database]
url = "{url}"

[keys]
path = "keyring.json"

[migration]
batch_size = 1000

[[columns]]
table = "customers"
column = "email"
searchable = true
normalize = "lower"

[[columns]]
table = "customers"
column = "phone"

[[columns]]
table = "customers"
column = "birth_date"
type = "date"

[[columns]]
table = "customers"
column = "balance"
type = "numeric"
"""


def _customers(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    rows = []
    for i in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append(
            {
                "id": i,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower().replace(chr(39), '')}.{i}@example.com",
                "phone": f"+{rng.randrange(1, 99)} {rng.randrange(10**9):09d}",
                "birth_date": dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(25_000)),
                "balance": Decimal(rng.randrange(-50_000_00, 500_000_00)) / 100,
            }
        )
    return rows


@reports_errors
def demo(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Sample customers.")] = 20_000,
    workdir: Annotated[
        Path, typer.Option("--dir", help="Where the demo's plan, keyring and Alembic files go.")
    ] = Path("encmigrate-demo"),
    reset: Annotated[
        bool, typer.Option("--reset", help="On PostgreSQL: drop the demo's tables first.")
    ] = False,
) -> None:
    """The five steps on a sample customers table, then search, rotate, rewrap, verify.

    Example: [bold]encmigrate demo --rows 5000[/]  (PostgreSQL: add --database-url URL --reset)
    """
    url = state_of(ctx).database_url or "sqlite:///encmigrate-demo.db"
    started = time.monotonic()
    directory = _fresh_directory(workdir)
    engine = connect(url)
    try:
        _fresh_database(engine, reset)
        _run(engine, url, directory, rows)
    finally:
        engine.dispose()
    out.rule(f"Done in {time.monotonic() - started:.1f}s")
    out.print(
        f"Files: {directory}/ (plan, keyring, audit log, Alembic revisions). "
        "Try `encmigrate --config "
        f"{directory / 'encmigrate.toml'} status`."
    )


def _fresh_directory(workdir: Path) -> Path:
    directory = workdir.resolve()
    if directory.exists():
        if not (directory / "encmigrate.toml").exists() and any(directory.iterdir()):
            raise RefusedError(f"{directory} exists and is not a demo directory; pass --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def _fresh_database(engine: sa.Engine, reset: bool) -> None:
    inspector = sa.inspect(engine)
    present = inspector.has_table("customers")
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            engine.dispose()
            Path(database).unlink(missing_ok=True)
        return
    if present and not reset:
        raise RefusedError(
            "this database already has a customers table; pass --reset to let the demo drop "
            "customers, its view, the tracking tables and alembic_version"
        )
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW IF EXISTS customers_secure")
        for table in ("customers", "alembic_version", *(t.name for t in TRACKING_TABLES)):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")


def _run(engine: sa.Engine, url: str, directory: Path, count: int) -> None:
    out.rule("Setup: a live table, a keyring, a plan")
    sample = _fill_customers(engine, count)
    out.print(f"customers: {count:,} rows with names, emails, phones, birth dates, balances")
    setup, manager, flow = _setup(engine, url, directory)
    for step in Step:
        out.rule(f"Step {step.value}: {step.command}")
        _show(_run_step(flow, step))
    plan = flow.plan()
    _status(plan, engine)

    out.rule("Search by email (blind index)")
    target = str(sample[count // 2]["email"]).upper()
    _search(engine, flow.keyring, target)

    out.rule("Rotate the key, then rewrap")
    new_version = manager.rotate(reason="demo")
    keyring = load_keyring(setup)
    out.print(f"key version {new_version} is current; version 1 is retired (decrypt only)")
    _search(engine, keyring, target)
    with Reporter(False) as reporter:
        rewrapped = rewrap(plan, engine, keyring, progress=reporter)[0]
    out.print(
        f"rewrapped {rewrapped.rows_done:,} rows to version {new_version} "
        f"in {rewrapped.seconds:.1f}s"
    )
    _status(plan, engine)

    out.rule("Final verify and audit")
    _verify(verify(plan, engine, keyring))
    report_audit = verify_audit_log(directory / AUDIT_FILE, manager.load())
    out.print(
        f"audit log: {report_audit.lines} events, chain {'intact' if report_audit.ok else 'BROKEN'}"
    )


def _fill_customers(engine: sa.Engine, count: int) -> list[dict[str, Any]]:
    """The live table the demo migrates, with ``count`` sample rows; the rows."""
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(40)),
        sa.Column("birth_date", sa.Date),
        sa.Column("balance", sa.Numeric(14, 2)),
    )
    metadata.create_all(engine)
    sample = _customers(count)
    with engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(customers.insert(), sample[start : start + 5000])
    return sample


def _setup(engine: sa.Engine, url: str, directory: Path) -> tuple[KeySetup, KeyManager, Workflow]:
    """The Alembic environment, plan and keyring in ``directory``; the steps' workflow."""
    from encmigrate import scaffold  # Alembic: imported when used

    scaffold.init(directory)
    plan_path = directory / "encmigrate.toml"
    plan_path.write_text(PLAN.format(url=url), encoding="utf-8")
    setup = KeySetup(
        FileProvider(directory / "keyring.json"),
        AuditLog(directory / AUDIT_FILE),
        "ENCMIGRATE_",
        "demo",
    )
    manager = KeyManager(setup.provider, setup.audit, actor="demo")
    manager.generate()
    out.print(f"keyring: {directory / 'keyring.json'} (mode 0600), key version 1")
    source = PlanSource(plan_path)
    for warning in source.load().warnings:
        out.print(f"warning: {warning.message}", markup=False)
    options = MigrateOptions(batch_size=1000, gil_interval=QUICK_SWITCH_INTERVAL)
    return setup, manager, Workflow(source, engine, load_keyring(setup), options)


def _run_step(flow: Workflow, step: Step) -> StepOutcome:
    """One step; migrate-data shows its progress while it runs."""
    if step is not Step.MIGRATE_DATA:
        return flow.run(step)
    with Reporter(False) as reporter:
        return flow.run(step, progress=reporter)


def _show(outcome: StepOutcome) -> None:
    match outcome:
        case RevisionOutcome(revision=result):
            _revision(result)
        case MigrateOutcome(reports=reports):
            report = reports[0]
            out.print(
                f"encrypted {report.rows_done:,} rows x {len(report.columns)} columns in "
                f"{report.seconds:.1f}s ({report.rate:,.0f} rows/s)"
            )
        case VerifyOutcome(verdicts=verdicts):
            _verify(verdicts)


def _revision(result: RevisionResult) -> None:
    out.print(f"applied revision {result.revision}: {result.path}", markup=False)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)


def _verify(verdicts: Iterable[ColumnVerdict]) -> None:
    for v in verdicts:
        state = "[green]ok[/]" if v.ok else "[red]FAILED[/]"
        out.print(f"{v.table}.{v.column}: {v.rows_checked:,} rows checked, {state}")


def _status(plan: plan_module.Plan, engine: sa.Engine) -> None:
    grid = report_table("column", "status", "rows", "key versions")
    for s in status(plan, engine):
        versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(s.versions.items()))
        grid.add_row(s.column, s.status, f"{s.rows_done:,}", versions)
    out.print(grid)


def _search(engine: sa.Engine, keyring: Any, value: str) -> None:
    search = get_searchable_cipher("customers.email", normalize="lower", keyring=keyring)
    email = get_cipher("customers.email", keyring=keyring)
    table = sa.table(
        "customers", sa.column("id"), sa.column("email_encrypted"), sa.column("email_search")
    )
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(table.c.id, table.c.email_encrypted).where(
                table.c.email_search.in_(search.lookup_tokens(value))
            )
        ).all()
    for row in found:
        version = envelope_version(row.email_encrypted)
        out.print(
            f"find {value!r}: id {row.id} (key version {version}) -> "
            f"{email.decrypt(row.email_encrypted)!r}",
            markup=False,
        )
    if not found:
        out.print(f"find {value!r}: no match", markup=False)
