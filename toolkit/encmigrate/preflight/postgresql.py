"""The PostgreSQL checks: the role's privileges, sessions that would block, timeouts in effect.

Every query reads catalogs and settings only; the names of other sessions'
queries are never read (they may hold values), only their age, state and locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from encmigrate.plan import Plan, TablePlan
from encmigrate.preflight.disk import qualified
from encmigrate.preflight.model import Check, Verdict
from encmigrate.tracking import chunks, failures, migrations

__all__ = ["check_privileges", "check_sessions", "check_timeouts", "table_oids"]

_TRACKING = (migrations.name, failures.name, chunks.name)
# What step 2 does to the tracking tables: claims, checkpoints, failures, chunk resets.
_TRACKING_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def table_oids(conn: sa.Connection, tables: Sequence[TablePlan]) -> dict[str, int | None]:
    """Each planned table's oid (None when the table does not exist)."""
    return {
        t.table: conn.execute(
            sa.text("SELECT to_regclass(:name)::oid"), {"name": qualified(conn, t)}
        ).scalar()
        for t in tables
    }


def check_privileges(
    conn: sa.Connection, tables: Sequence[TablePlan], oids: dict[str, int | None], step: int
) -> Check:
    """The role may do what ``step`` does to the planned tables and the tracking tables."""
    role = conn.execute(sa.text("SELECT current_user")).scalar()
    missing: list[str] = []
    for table in tables:
        oid = oids[table.table]
        if oid is None:
            missing.append(f"{table.table}: table not found")
        elif step == 1:
            missing += _step1_missing(conn, table, oid)
        else:
            missing += _step2_missing(conn, table, oid)
    missing += _tracking_missing(conn, step)
    if missing:
        return Check(
            "privileges",
            Verdict.FAIL,
            f"role {role}: {len(missing)} missing",
            "; ".join(missing),
        )
    need = "ownership, CREATE on the schema" if step == 1 else "SELECT, UPDATE, tracking tables"
    return Check("privileges", Verdict.PASS, f"role {role}: {need} on {len(tables)} table(s)")


def _scalar(conn: sa.Connection, sql: str, **params: object) -> bool:
    return bool(conn.execute(sa.text(sql), params).scalar())


def _step1_missing(conn: sa.Connection, table: TablePlan, oid: int) -> list[str]:
    """Step 1 alters the table and creates a trigger (ownership), a function and views."""
    found: list[str] = []
    owner = (
        "SELECT pg_has_role(current_user, c.relowner, 'MEMBER') FROM pg_class c WHERE c.oid = :oid"
    )
    if not _scalar(conn, owner, oid=oid):
        found.append(f"{table.table}: not its owner (ALTER TABLE, CREATE TRIGGER need it)")
    schema = (
        "SELECT has_schema_privilege(c.relnamespace, 'CREATE') FROM pg_class c WHERE c.oid = :oid"
    )
    if not _scalar(conn, schema, oid=oid):
        found.append(f"{table.table}: no CREATE on its schema (trigger function, views)")
    return found


def _step2_missing(conn: sa.Connection, table: TablePlan, oid: int) -> list[str]:
    """Step 2 reads the plaintext and key columns and writes the shadow columns."""
    live = set(
        conn.execute(
            sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
                "AND NOT attisdropped"
            ),
            {"oid": oid},
        ).scalars()
    )
    key = conn.execute(
        sa.text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = :oid AND i.indisprimary"
        ),
        {"oid": oid},
    ).scalars()
    wanted: list[tuple[str, str]] = [(name, "SELECT") for name in key]
    for column in table.columns:
        # After step 5 the plaintext is gone (and step 2 has nothing left to do).
        if column.column in live:
            wanted.append((column.column, "SELECT"))
        for shadow in (column.encrypted_column, column.search_column):
            if shadow is not None:
                wanted += [(shadow, "SELECT"), (shadow, "UPDATE")]
    found: list[str] = []
    for name, privilege in dict.fromkeys(wanted):
        if name not in live:
            if privilege == "SELECT":
                found.append(f"{table.table}.{name}: no such column (apply step 1 first)")
            continue
        held = "SELECT has_column_privilege(:oid, :name, :privilege)"
        if not _scalar(conn, held, oid=oid, name=name, privilege=privilege):
            found.append(f"{table.table}.{name}: no {privilege}")
    return found


def _tracking_missing(conn: sa.Connection, step: int) -> list[str]:
    """The tracking tables: step 1 creates them when absent; step 2 reads and writes them."""
    found: list[str] = []
    absent: list[str] = []
    for name in _TRACKING:
        oid = conn.execute(sa.text("SELECT to_regclass(:name)::oid"), {"name": name}).scalar()
        if oid is None:
            absent.append(name)
            continue
        if step == 1:
            continue
        for privilege in _TRACKING_PRIVILEGES:
            held = "SELECT has_table_privilege(:oid, :privilege)"
            if not _scalar(conn, held, oid=oid, privilege=privilege):
                found.append(f"{name}: no {privilege}")
    create = "SELECT has_schema_privilege(current_schema(), 'CREATE')"
    if absent and not _scalar(conn, create):
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        found.append(f"{', '.join(absent)}: absent, and no CREATE on schema {schema}")
    return found


@dataclass(frozen=True, slots=True)
class _Session:
    pid: int
    state: str
    age: float
    holds_lock: bool

    def describe(self) -> str:
        held = ", holds a lock on a planned table" if self.holds_lock else ""
        return f"pid {self.pid} ({self.state}, {self.age:.0f} s{held})"


_SESSIONS = """
SELECT a.pid, a.state, EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start),
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.pid = a.pid AND l.granted AND l.relation = ANY(CAST(:oids AS oid[])))
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL
  AND (a.state LIKE 'idle in transaction%'
       OR a.xact_start < clock_timestamp() - make_interval(secs => :seconds))
ORDER BY a.xact_start
"""

# Sessions of other roles whose state this role may not see (no pg_read_all_stats).
_HIDDEN = """
SELECT count(*) FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND a.backend_type = 'client backend' AND a.state IS NULL
"""


def check_sessions(conn: sa.Connection, oids: Sequence[int], step: int, threshold: float) -> Check:
    """Open transactions older than ``threshold`` seconds, or idle in transaction.

    Step 1's DDL waits for every lock on its table, and the application's
    queries queue behind the waiting DDL: a session holding a lock on a planned
    table fails step 1's check. Otherwise such sessions warn: they hold back
    vacuum, and their row locks make the backfill's batches wait.
    """
    rows = conn.execute(sa.text(_SESSIONS), {"oids": list(oids), "seconds": threshold}).all()
    found = [_Session(int(r[0]), str(r[1]), float(r[2] or 0), bool(r[3])) for r in rows]
    hidden = int(conn.execute(sa.text(_HIDDEN)).scalar() or 0)
    note = (
        f"; {hidden} session(s) of other roles not visible (grant pg_read_all_stats to see them)"
        if hidden
        else ""
    )
    if not found:
        verdict = Verdict.WARN if hidden else Verdict.PASS
        return Check(
            "sessions", verdict, f"none over {threshold:g} s or idle in transaction", note[2:]
        )
    oldest = max(s.age for s in found)
    blocking = [s for s in found if s.holds_lock]
    figure = f"{len(found)} session(s), oldest {oldest:.0f} s"
    if blocking:
        figure += f", {len(blocking)} holding a lock on a planned table"
    detail = "; ".join(s.describe() for s in found) + note
    verdict = Verdict.FAIL if step == 1 and blocking else Verdict.WARN
    return Check("sessions", verdict, figure, detail)


def check_timeouts(conn: sa.Connection, plan: Plan, step: int) -> Check:
    """``statement_timeout`` and ``lock_timeout`` in effect for this role and database.

    Step 1's revision sets its own ``lock_timeout`` (``[migration]
    ddl_lock_timeout``), and step 2's batches set both for their transaction,
    so the figures matter where the steps do not: a ``statement_timeout`` can
    cancel step 1's index build (``CREATE INDEX CONCURRENTLY`` then leaves an
    invalid index) or its trigger install on a large table.
    """
    statement, lock = conn.execute(
        sa.text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
    ).one()
    figure = f"statement_timeout {statement}, lock_timeout {lock}"
    if step == 1:
        ddl = f"{plan.migration.ddl_lock_timeout:g} s"
        if statement != "0":
            return Check(
                "timeouts",
                Verdict.WARN,
                figure,
                "step 1's index build and trigger install may be cancelled: run it with "
                f"statement_timeout = 0 (its revision sets lock_timeout = {ddl} itself)",
            )
        return Check(
            "timeouts", Verdict.PASS, figure, f"step 1's revision sets lock_timeout = {ddl}"
        )
    return Check("timeouts", Verdict.PASS, figure, "step 2's batches set both for each transaction")
