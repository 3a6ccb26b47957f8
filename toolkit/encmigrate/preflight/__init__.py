"""``preflight``: what must hold before step 1 or step 2, checked without changing anything.

Each check says pass, warn or fail with the figure it measured
(:mod:`encmigrate.preflight.model`): the keys (:mod:`~encmigrate.preflight.keys`),
the disk (:mod:`~encmigrate.preflight.disk`) and, on PostgreSQL, the role's
privileges, blocking sessions and timeouts
(:mod:`~encmigrate.preflight.postgresql`). The database is read in one
read-only transaction; the keys are used on a fixed, non-secret canary.
"""

from __future__ import annotations

import sqlalchemy as sa

from encmigrate.migrate.status import reading
from encmigrate.plan import Plan
from encmigrate.preflight.disk import check_disk
from encmigrate.preflight.keys import KeyringSource, check_canary, check_keys, obtain
from encmigrate.preflight.model import Check, PreflightReport, Verdict
from encmigrate.preflight.postgresql import (
    check_privileges,
    check_sessions,
    check_timeouts,
    table_oids,
)

__all__ = [
    "DEFAULT_LONG_TRANSACTION_SECONDS",
    "Check",
    "PreflightReport",
    "Verdict",
    "run_preflight",
]

DEFAULT_LONG_TRANSACTION_SECONDS = 60.0
_POSTGRES_ONLY = ("privileges", "sessions", "timeouts")


def run_preflight(
    plan: Plan,
    engine: sa.Engine,
    keyring: KeyringSource,
    *,
    step: int,
    app_keyring: KeyringSource | None = None,
    long_transaction_seconds: float = DEFAULT_LONG_TRANSACTION_SECONDS,
) -> PreflightReport:
    """The checks for ``step`` (1: add-columns, 2: migrate-data), in order.

    ``keyring`` and ``app_keyring`` may be callables that load them: a load
    that fails is the keys (or canary) check's failure, reported with the
    others, not an exception.
    """
    if step not in (1, 2):
        raise ValueError("step must be 1 or 2")
    columns = plan.columns
    mine = obtain(keyring)
    theirs = obtain(app_keyring) if app_keyring is not None else None
    checks = [check_keys(mine, columns), check_canary(mine, theirs, columns)]
    with reading(engine) as conn:
        if conn.dialect.name == "postgresql":
            oids = table_oids(conn, plan.tables)
            checks.append(check_privileges(conn, plan.tables, oids, step))
            checks.append(check_disk(conn, plan.tables, engine.url))
            known = [oid for oid in oids.values() if oid is not None]
            checks.append(check_sessions(conn, known, step, long_transaction_seconds))
            checks.append(check_timeouts(conn, plan, step))
        else:
            checks.append(check_disk(conn, plan.tables, engine.url))
            name = conn.dialect.name
            checks += [Check(c, Verdict.SKIP, f"not checked on {name}") for c in _POSTGRES_ONLY]
    return PreflightReport(step, tuple(checks))
