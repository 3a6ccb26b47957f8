"""The next step: what the operator runs next, decided from what is recorded.

:func:`next_step` is the one place that decides it, from the live schema
(shadow columns, views, the Alembic revision the database is at),
``encryption_migrations`` and the chunks of past runs. Every command that
names a next step asks it, after its own work. It reads as ``status`` does
(:func:`~encmigrate.migrate.status.reading`: no write lock on SQLite).
:func:`decide_next_step` is the decision alone, from standings a caller
builds, without a database.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.migrate.status import live_columns, reading, tracking_columns
from encmigrate.plan import ColumnPhase, ColumnPlan, Plan, TablePlan
from encmigrate.tracking import ChunkStatus, MigrationStatus, chunks, migrations

__all__ = ["ColumnStanding", "NextStep", "TableStanding", "decide_next_step", "next_step"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NextStep:
    """What to run next and why; ``command`` is None when there is nothing to run."""

    command: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ColumnStanding:
    """One planned column as recorded: its phase in the live schema and its tracking row."""

    column: str
    phase: ColumnPhase | None  # None: neither the plaintext nor <col>_encrypted exists
    status: str | None = None  # encryption_migrations.status; None without a row
    rows_failed: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TableStanding:
    """One planned table as recorded, with what its past runs left behind."""

    table: str
    columns: tuple[ColumnStanding, ...]
    view_exists: bool = False
    # A decrypt-back run that stopped before the end (chunks still pending or running).
    decrypt_back_open: bool = False
    # decrypt-back ran after the last encrypt or repair run: a rollback is under way.
    decrypt_back_last: bool = False
    # Every plaintext column of the table is empty while ciphertexts exist (checked only
    # when the database is behind its Alembic head): the drop was undone by a downgrade.
    plaintext_emptied: bool = False


def next_step(plan: Plan, engine: sa.Engine, *, tables: Sequence[str] | None = None) -> NextStep:
    """What to run next for the selected tables, decided from the recorded state alone."""
    selected = plan.select(tables)
    with reading(engine) as conn:
        behind = _behind_head(plan, conn)
        inspector = sa.inspect(conn)
        tracked = bool(tracking_columns(inspector))
        standings = [
            _standing(conn, inspector, table, tracked=tracked, look_for_rollback=bool(behind))
            for table in selected
        ]
    return decide_next_step(standings, behind_head=behind, tables=tables)


def decide_next_step(
    standings: Sequence[TableStanding],
    *,
    behind_head: bool | None = None,
    tables: Sequence[str] | None = None,
) -> NextStep:
    """The first step of the workflow some selected column has not passed.

    ``behind_head``: the database is not at its Alembic head (None: unknown, no
    Alembic config). ``tables``: the user's ``--table`` selection, repeated in
    the command shown.
    """
    suffix = "".join(f" --table {shlex.quote(t)}" for t in tables or ())

    def run(command: str, extra: str = "") -> str:
        return f"encmigrate {command}{suffix}{extra}"

    columns = [(t, c) for t in standings for c in t.columns]
    missing = [f"{t.table}.{c.column}" for t, c in columns if c.phase is None]
    if missing:
        return NextStep(
            "encmigrate plan check", _say(missing, "is", "are", "not in the database: fix the plan")
        )
    if any(t.decrypt_back_open for t in standings):
        return NextStep(run("decrypt-back"), "a decrypt-back run stopped before the end: resume it")
    if any(t.plaintext_emptied for t in standings):
        return NextStep(
            run("decrypt-back"),
            "the drop was undone and the plaintext columns are back, empty: "
            "refill them from the ciphertexts",
        )
    shadowed = [(t, c) for t, c in columns if c.phase is ColumnPhase.SHADOWED]
    rolled_back = [(t, c) for t, c in shadowed if t.decrypt_back_last]
    if rolled_back:
        return _rollback_step(rolled_back, run, behind_head=bool(behind_head))
    if behind_head:
        return NextStep(
            "alembic upgrade head",
            "the database is behind its Alembic head: a revision is not applied yet",
        )
    return _forward_step(columns, run)


def _rollback_step(
    rolled_back: list[tuple[TableStanding, ColumnStanding]],
    run: Callable[..., str],
    *,
    behind_head: bool,
) -> NextStep:
    if any(c.status != MigrationStatus.VERIFIED.value for _, c in rolled_back):
        return NextStep(run("verify"), "decrypt-back refilled the plaintext: check every value")
    if any(t.view_exists for t, _ in rolled_back):
        what = "removes the views and restores NOT NULL"
    else:
        what = "removes the shadow columns, the trigger and the tracking tables"
    forward = (
        "`alembic upgrade head`" if behind_head else f"`{run('drop-unencrypted', ' --confirm')}`"
    )
    return NextStep(
        "alembic downgrade -1",
        f"the rollback's next step {what}, see runbooks/rollback-decrypt-back.md; "
        f"{forward} goes forward again instead",
    )


def _forward_step(
    columns: list[tuple[TableStanding, ColumnStanding]], run: Callable[..., str]
) -> NextStep:
    def where(test: Callable[[TableStanding, ColumnStanding], bool]) -> list[str]:
        return [f"{t.table}.{c.column}" for t, c in columns if test(t, c)]

    plain = where(lambda _, c: c.phase is ColumnPhase.PLAIN)
    if plain:
        return NextStep(run("add-columns"), _say(plain, "has", "have", "no encrypted column yet"))
    shadowed = [(t, c) for t, c in columns if c.phase is ColumnPhase.SHADOWED]
    failed_rows = [f"{t.table}.{c.column}" for t, c in shadowed if c.rows_failed]
    if failed_rows:
        return NextStep(
            run("migrate-data"),
            _say(failed_rows, "has", "have", "rows that could not be encrypted: fix the values ")
            + "listed in encryption_migration_failures first",
        )
    verify_failed = [(t, c) for t, c in shadowed if _failed_verify(c)]
    unfinished = [
        f"{t.table}.{c.column}"
        for t, c in shadowed
        if c.status not in _PAST_STEP_2 and (t, c) not in verify_failed
    ]
    if unfinished:
        return NextStep(
            run("migrate-data"), _say(unfinished, "has", "have", "values still to encrypt")
        )
    if verify_failed:
        wrong = [f"{t.table}.{c.column}" for t, c in verify_failed if _wrong_values(c)]
        if wrong:
            return NextStep(
                run("migrate-data", " --repair"),
                f"verify found wrong ciphertexts in {_names(wrong)} "
                "(runbooks/verify-mismatches.md)",
            )
        return NextStep(
            run("migrate-data"),
            "verify found rows changed since the last run: encrypt them, then verify again",
        )
    unverified = [f"{t.table}.{c.column}" for t, c in shadowed if c.status == "completed"]
    if unverified:
        return NextStep(
            run("verify"), _say(unverified, "is", "are", "encrypted: compare with the plaintext")
        )
    viewless = sorted({t.table for t, _ in shadowed if not t.view_exists})
    if viewless:
        return NextStep(
            run("create-views"),
            "every column is verified; " + _say(viewless, "has", "have", "no view yet"),
        )
    if shadowed:
        return NextStep(
            run("drop-unencrypted", " --confirm"),
            "the views exist: once no reader uses the plaintext columns, drop them",
        )
    broken = where(lambda _, c: c.status == MigrationStatus.FAILED.value)
    if broken:
        return NextStep(
            None,
            f"verify found values of {_names(broken)} that do not decrypt: "
            "see runbooks/troubleshooting-decryption.md",
        )
    return NextStep(
        None,
        "every planned column is encrypted and its plaintext dropped (`encmigrate verify` "
        "checks that every ciphertext decrypts); rotate keys on schedule with "
        "`encmigrate keys rotate`, then `encmigrate rewrap`",
    )


# Statuses a shadowed column has once step 2 is done (``dropped`` only by a hand-made state).
_PAST_STEP_2 = frozenset(
    s.value for s in (MigrationStatus.COMPLETED, MigrationStatus.VERIFIED, MigrationStatus.DROPPED)
)
# What verify's summary (``last_error``) says of ciphertexts that are wrong, not missing.
_WRONG = ("mismatched", "wrong search token", "undecryptable", "undecodable")


def _failed_verify(column: ColumnStanding) -> bool:
    return column.status == MigrationStatus.FAILED.value and (column.last_error or "").startswith(
        "verify:"
    )


def _wrong_values(column: ColumnStanding) -> bool:
    return any(word in (column.last_error or "") for word in _WRONG)


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _say(names: Sequence[str], singular: str, plural: str, rest: str) -> str:
    """``a.x is rest`` or ``a.x, b.y are rest``."""
    return f"{_names(names)} {singular if len(names) == 1 else plural} {rest}"


def _standing(
    conn: sa.Connection,
    inspector: sa.Inspector,
    table: TablePlan,
    *,
    tracked: bool,
    look_for_rollback: bool,
) -> TableStanding:
    live = live_columns(inspector, table)
    if live is None:
        return TableStanding(
            table.table, tuple(ColumnStanding(c.column, None) for c in table.columns)
        )
    rows: dict[str, Any] = {}
    if tracked:
        query = sa.select(
            migrations.c.column_name,
            migrations.c.status,
            migrations.c.rows_failed,
            migrations.c.last_error,
        ).where(migrations.c.table_name == table.table)
        rows = {row.column_name: row for row in conn.execute(query)}
    columns = tuple(
        ColumnStanding(
            c.column,
            _phase(c, live),
            rows[c.column].status if c.column in rows else None,
            int(rows[c.column].rows_failed or 0) if c.column in rows else 0,
            rows[c.column].last_error if c.column in rows else None,
        )
        for c in table.columns
    )
    runs = _last_runs(conn, table) if tracked else {}
    decrypt_back = runs.get("decrypt-back")
    encrypt = max((runs[op] for op in ("encrypt", "repair") if op in runs), default=None)
    shadowed = [c for c in table.columns if _phase(c, live) is ColumnPhase.SHADOWED]
    return TableStanding(
        table.table,
        columns,
        view_exists=table.view in inspector.get_view_names(schema=table.schema_name),
        decrypt_back_open=tracked and _open_chunks(conn, table, "decrypt-back"),
        decrypt_back_last=decrypt_back is not None and (encrypt is None or decrypt_back > encrypt),
        plaintext_emptied=look_for_rollback and bool(shadowed) and _emptied(conn, table, shadowed),
    )


def _phase(column: ColumnPlan, live: set[str]) -> ColumnPhase | None:
    if column.column in live:
        return ColumnPhase.SHADOWED if column.encrypted_column in live else ColumnPhase.PLAIN
    return ColumnPhase.DROPPED if column.encrypted_column in live else None


def _last_runs(conn: sa.Connection, table: TablePlan) -> dict[str, dt.datetime]:
    """When each operation last wrote a chunk of ``table``."""
    query = (
        sa.select(chunks.c.operation, sa.func.max(chunks.c.updated_at))
        .where(chunks.c.table_name == table.table, chunks.c.updated_at.is_not(None))
        .group_by(chunks.c.operation)
    )
    return {operation: when for operation, when in conn.execute(query)}


def _open_chunks(conn: sa.Connection, table: TablePlan, operation: str) -> bool:
    query = sa.select(sa.literal(1)).where(
        chunks.c.table_name == table.table,
        chunks.c.operation == operation,
        chunks.c.status.in_([ChunkStatus.PENDING.value, ChunkStatus.RUNNING.value]),
    )
    return conn.execute(query.limit(1)).first() is not None


def _emptied(conn: sa.Connection, table: TablePlan, columns: Sequence[ColumnPlan]) -> bool:
    """No row has any planned plaintext, and some row has a ciphertext (EXISTS: stops early)."""
    target = sa.table(
        table.table_name,
        *(sa.column(c.column) for c in columns),
        *(sa.column(c.encrypted_column) for c in columns),
        schema=table.schema_name,
    )
    plain = sa.or_(*(target.c[c.column].is_not(None) for c in columns))
    sealed = sa.or_(*(target.c[c.encrypted_column].is_not(None) for c in columns))
    query = sa.select(
        ~sa.exists().where(plain).select_from(target),
        sa.exists().where(sealed).select_from(target),
    )
    empty, has_ciphertext = conn.execute(query).one()
    return bool(empty) and bool(has_ciphertext)


def _behind_head(plan: Plan, conn: sa.Connection) -> bool | None:
    """Whether the database is behind the head of the plan's Alembic scripts (None: unknown)."""
    if not plan.alembic_config.is_file():
        return None
    # Imported here: status and the data commands start without Alembic.
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        script = ScriptDirectory.from_config(Config(str(plan.alembic_config)))
        heads = set(script.get_heads())
        current = set(MigrationContext.configure(conn).get_current_heads())
    except (CommandError, OSError, ImportError, SyntaxError) as exc:
        # A revision file that does not load: Alembic itself will say so; the head is unknown.
        logger.warning("could not read the Alembic revisions (%s)", type(exc).__name__)
        return None
    return current != heads
