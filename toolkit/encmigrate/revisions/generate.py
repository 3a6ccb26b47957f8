"""Turning a list of Alembic operations into a revision file, SQL text, or an upgrade.

The generators (``add_columns``, ``create_views``, ``drop_unencrypted``) decide
*what* to change from the plan and the live schema; this module writes it the
Alembic way: ``alembic.command.revision`` with ``process_revision_directives``
filling the new revision's upgrade and downgrade operations, so the file is an
ordinary revision chained on the current head. ``sql=True`` renders the same
operations through an offline ``MigrationContext`` instead, without a file.

The live schema must be at the Alembic head before a revision is generated
(as Alembic's autogenerate demands): the generators read the schema as it will
be when the new revision runs, and a pending revision would make that wrong.

Every PostgreSQL revision starts its upgrade and its downgrade with
``op.set_ddl_timeouts``: an ``ALTER TABLE`` queued behind a long transaction
would otherwise make every later query on the table queue behind it. With a
``lock_timeout`` it gives up instead, the transaction rolls back, and
``--apply`` tries the whole upgrade again later (``[migration] ddl_lock_timeout``
and ``ddl_retries``). A failed ``--apply`` leaves no revision file the database
has not run: the file is removed when nothing was applied, and kept (the error
says so) when part of it was committed before the failure.

A revision's message becomes the file's docstring (Alembic's stock
``script.py.mako`` opens the docstring and writes ``${message}`` into it as it
is): :func:`revision_message` shows the table names with every quote, backslash
and non-printable character replaced by ``?``, so that no name can end the
docstring. The names themselves are in the file only as string literals
(``repr``).
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from encmigrate import database
from encmigrate.boundary import mysql_error_number, sqlstate, translate
from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import ConfigError, DatabaseError, EncmigrateError, RefusedError
from encmigrate.identifiers import shown
from encmigrate.plan import MigrationSettings, Plan
from encmigrate.revisions.ops import (
    DDL_RETRIES_ATTRIBUTE,
    LOCK_FAILURES,
    ResetDDLTimeoutsOp,
    SetDDLTimeoutsOp,
    ddl_retrying,
    lock_failure,
)

__all__ = [
    "ALEMBIC_URL_ATTRIBUTE",
    "DDL_LOCK_TIMEOUT_ATTRIBUTE",
    "RevisionResult",
    "alembic_config",
    "connect",
    "emit",
    "quiet_config",
    "revision_message",
    "upgrade_head",
]

ALEMBIC_URL_ATTRIBUTE = "encmigrate.database_url"
DDL_LOCK_TIMEOUT_ATTRIBUTE = "encmigrate.ddl_lock_timeout_ms"
REVISION_IMPORT = "import encmigrate.revisions.ops  # noqa: F401  (op.install_shadow_trigger & co.)"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevisionResult:
    """What a generator did and what the user runs next.

    ``path``/``revision`` name the revision file (None with ``sql=True`` or when
    there was nothing to do); ``sql`` holds the rendered SQL with ``sql=True``;
    ``applied`` says whether ``alembic upgrade head`` ran; ``notes`` are lines
    the CLI shows (e.g. the warning that dropped plaintext stays in old pages).
    """

    step: str
    next_command: str
    path: Path | None = None
    revision: str | None = None
    sql: str | None = None
    applied: bool = False
    notes: tuple[str, ...] = field(default=())


def alembic_config(plan: Plan) -> Config:
    """The plan's Alembic Config, pointed at the plan's database."""
    if not plan.alembic_config.is_file():
        raise ConfigError(
            f"no Alembic config at {plan.alembic_config}: run `encmigrate init`, or set "
            "[alembic] config in the plan"
        )
    config = quiet_config(plan.alembic_config)
    if plan.database_url is not None:
        # env.py files written by `encmigrate init` read the attribute; any other
        # env.py reads sqlalchemy.url ('%' is configparser's interpolation sign).
        config.attributes[ALEMBIC_URL_ATTRIBUTE] = plan.database_url
        config.set_main_option("sqlalchemy.url", plan.database_url.replace("%", "%%"))
    config.attributes[DDL_LOCK_TIMEOUT_ATTRIBUTE] = plan.migration.ddl_lock_timeout_ms
    config.attributes[DDL_RETRIES_ATTRIBUTE] = plan.migration.ddl_retries
    return config


def revision_message(step: str, names: Sequence[str]) -> str:
    """``encmigrate <step>: a, b``: safe as a docstring, a comment or a string's content."""
    return f"encmigrate {step}: " + ", ".join(shown(name) for name in names)


def _ddl_settings(config: Config) -> tuple[int, int]:
    """(lock_timeout in ms, retries) from the plan, or the defaults for a bare Config."""
    defaults = MigrationSettings()
    timeout = config.attributes.get(DDL_LOCK_TIMEOUT_ATTRIBUTE, defaults.ddl_lock_timeout_ms)
    retries = config.attributes.get(DDL_RETRIES_ATTRIBUTE, defaults.ddl_retries)
    return int(timeout), int(retries)


def quiet_config(path: Path) -> Config:
    """An Alembic Config that prints nothing (Alembic's ``--quiet``); logging still works."""
    config = Config(str(path), stdout=io.StringIO())
    config.cmd_opts = argparse.Namespace(quiet=True, x=[])
    # env.py files written by `encmigrate init` then leave the caller's logging alone.
    config.attributes["configure_logger"] = False
    return config


def connect(plan: Plan) -> AbstractContextManager[sa.Connection]:
    """A connection to the plan's database that only inspects, its errors translated.

    :func:`encmigrate.database.connection`: on SQLite it opens no transaction, so
    Alembic's own engine never waits for it.
    """
    return database.connection(plan.database_url)


def require_head(config: Config, connection: sa.Connection) -> None:
    """Refuse when the database is not at the head of the revision chain."""
    script = ScriptDirectory.from_config(config)
    current = set(MigrationContext.configure(connection).get_current_heads())
    heads = set(script.get_heads())
    if current != heads:
        raise RefusedError(
            "the database is not at the latest revision "
            f"(at {', '.join(sorted(current)) or 'none'}, head {', '.join(sorted(heads))}): "
            "run `alembic upgrade head` first"
        )


def emit(
    config: Config,
    *,
    step: str,
    message: str,
    upgrade: Sequence[MigrateOperation],
    downgrade: Sequence[MigrateOperation],
    dialect: str,
    apply: bool,
    sql: bool,
    next_command: str,
    notes: Sequence[str] = (),
) -> RevisionResult:
    """Write the revision (or render its SQL), and upgrade when ``apply``.

    On PostgreSQL the upgrade and the downgrade are wrapped in ``set_ddl_timeouts``
    / ``reset_ddl_timeouts`` (the ``--sql`` output too, for a DBA applying it by hand).
    """
    if dialect in ("postgresql", *MYSQL_DIALECTS):
        lock_timeout_ms, _ = _ddl_settings(config)
        upgrade = _with_timeouts(upgrade, lock_timeout_ms)
        downgrade = _with_timeouts(downgrade, lock_timeout_ms)
    if sql:
        return RevisionResult(
            step=step,
            next_command="review the SQL, apply it with your SQL client, then " + next_command,
            sql=render_sql(upgrade, dialect),
            notes=tuple(notes),
        )
    path, revision = write_revision(config, message, upgrade, downgrade)
    if apply:
        _apply(config, dialect, path, revision)
        return RevisionResult(
            step, next_command, path=path, revision=revision, applied=True, notes=tuple(notes)
        )
    return RevisionResult(
        step,
        "alembic upgrade head",
        path=path,
        revision=revision,
        notes=(*notes, f"then: {next_command}"),
    )


def _with_timeouts(
    operations: Sequence[MigrateOperation], lock_timeout_ms: int
) -> list[MigrateOperation]:
    return [
        SetDDLTimeoutsOp(lock_timeout_ms=lock_timeout_ms),
        *operations,
        ResetDDLTimeoutsOp(),
    ]


def _apply(config: Config, dialect: str, path: Path, revision: str) -> None:
    """Upgrade to the new revision; on failure leave no file the database has not run.

    A revision file left behind unapplied makes every later generator refuse (the
    database is not at the head) although the cause is fixed; so it goes, unless
    part of it was committed, in which case removing it would leave schema changes
    no revision accounts for.
    """
    changes = _Changes(config, dialect)
    try:
        upgrade_head(config, changes)
    except BaseException as exc:
        if changes.applied():
            outcome = (
                f"part of revision {revision} was committed before the failure (statements "
                "before an autocommit block such as CREATE INDEX CONCURRENTLY, and SQLite DDL, "
                f"commit as they go): the revision file {path} was kept. "
                + (
                    "Every statement of it can run again: once the cause is fixed, "
                    "`alembic upgrade head` finishes it"
                    if dialect in ("postgresql", *MYSQL_DIALECTS)
                    else "Once the cause is fixed, run what remains of it by hand and "
                    "`alembic stamp head`, or undo what was committed and delete the file"
                )
            )
        else:
            _remove_revision(path)
            outcome = "the revision file was removed; nothing was applied"
        if isinstance(exc, EncmigrateError):
            exc.args = (f"{exc}; {outcome}",)
        else:
            logger.warning("alembic upgrade head failed: %s", outcome)
        raise


def _remove_revision(path: Path) -> None:
    path.unlink(missing_ok=True)
    # A stale .pyc of the same name would not be loaded without its .py, but a new
    # revision written later under the same file name must not meet it either.
    for compiled in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        compiled.unlink(missing_ok=True)
    logger.info("removed revision file %s: its upgrade failed and nothing was applied", path)


# Statements that change nothing: what MariaDB runs before its first DDL statement.
_READS = ("SELECT", "SET", "SHOW", "DESCRIBE", "EXPLAIN")


class _Changes:
    """Whether a failed upgrade left anything behind in the database.

    PostgreSQL runs the upgrade in one transaction, so nothing stays unless a
    commit happened first: Alembic commits when an ``autocommit_block()`` begins
    (CREATE INDEX CONCURRENTLY, VACUUM). A commit listener on every Engine counts
    the commits made on this thread; other threads (the application, a test's
    helpers) commit too and must not count. SQLite DDL commits as it goes
    (pysqlite opens no transaction for it), so there the schema in sqlite_master
    is compared before and after.
    """

    def __init__(self, config: Config, dialect: str) -> None:
        url = config.attributes.get(ALEMBIC_URL_ATTRIBUTE) or config.get_main_option(
            "sqlalchemy.url"
        )
        self._sqlite_url = str(url) if dialect == "sqlite" and url else None
        # MariaDB commits every DDL statement by itself, without a COMMIT event: statements
        # that completed are counted instead (a failed one changed nothing: atomic DDL).
        self._mysql = dialect in MYSQL_DIALECTS
        self._statement_listener = self._on_statement
        self.statements = 0
        self._thread = threading.get_ident()
        self._listener = self._on_commit  # one bound method, so that remove() finds it
        self._before: list[tuple[Any, ...]] | None = None
        self.commits = 0

    def __enter__(self) -> _Changes:
        if self._sqlite_url is not None:
            self._before = self._sqlite_schema()
        sa.event.listen(sa.Engine, "commit", self._listener)
        if self._mysql:
            sa.event.listen(sa.Engine, "after_cursor_execute", self._statement_listener)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sa.event.remove(sa.Engine, "commit", self._listener)
        if self._mysql:
            sa.event.remove(sa.Engine, "after_cursor_execute", self._statement_listener)

    def _on_statement(
        self, connection: sa.Connection, cursor: Any, statement: str, *_: Any
    ) -> None:
        words = statement.lstrip().split(None, 1)
        if threading.get_ident() == self._thread and words and words[0].upper() not in _READS:
            self.statements += 1

    def rerunnable(self) -> bool:
        """Whether the whole upgrade may run again after a failure: MariaDB revisions
        are written to (every statement IF [NOT] EXISTS or OR REPLACE)."""
        return self._mysql

    def _on_commit(self, connection: sa.Connection) -> None:
        if threading.get_ident() == self._thread:
            self.commits += 1

    def applied(self) -> bool:
        """Whether something may have been committed (when unsure: yes)."""
        if self.commits or self.statements:
            return True
        if self._before is None:
            return False
        try:
            return self._sqlite_schema() != self._before
        except sa.exc.SQLAlchemyError:
            return True

    def _sqlite_schema(self) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(str(self._sqlite_url), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
                return [tuple(row) for row in connection.exec_driver_sql(query)]
        finally:
            engine.dispose()


def write_revision(
    config: Config,
    message: str,
    upgrade: Sequence[MigrateOperation],
    downgrade: Sequence[MigrateOperation],
) -> tuple[Path, str]:
    """Write a revision file chained on the head; its path and revision id."""

    def directives(context: Any, revision: Any, scripts: list[alembic_ops.MigrationScript]) -> None:
        script = scripts[0]
        script.upgrade_ops = alembic_ops.UpgradeOps(ops=list(upgrade))
        script.downgrade_ops = alembic_ops.DowngradeOps(ops=list(downgrade))
        script.imports.add(REVISION_IMPORT)

    # process_revision_directives only runs inside env.py: have Alembic run it.
    config.set_main_option("revision_environment", "true")
    try:
        made = command.revision(config, message=message, process_revision_directives=directives)
    except CommandError as exc:
        raise ConfigError(f"alembic could not write the revision: {exc}") from None
    if made is None or isinstance(made, list):
        raise ConfigError("alembic wrote no single revision; is the script directory branched?")
    logger.info("wrote revision %s at %s", made.revision, made.path)
    return Path(made.path), made.revision


def upgrade_head(config: Config, changes: _Changes | None = None) -> None:
    """``alembic upgrade head``, retried after a lock timeout or deadlock; errors mapped.

    A retry re-runs the whole upgrade: PostgreSQL rolled the failed attempt back.
    Not after a commit (see :class:`_Changes`): the revision's first statements are
    in the database then and would fail a second time; the concurrent index build
    that follows such a commit retries by itself (``op.create_search_index``).
    """
    lock_timeout_ms, retries = _ddl_settings(config)
    watch = changes if changes is not None else _Changes(config, "")
    try:
        with watch:
            for attempt in ddl_retrying(
                retries,
                log=logger,
                what="alembic upgrade head",
                retryable=lambda exc: (
                    lock_failure(exc) is not None and (watch.rerunnable() or not watch.applied())
                ),
            ):
                with attempt:
                    command.upgrade(config, "head")
    except sa.exc.DBAPIError as exc:
        code = lock_failure(exc)
        if code is not None:
            raise DatabaseError(_busy(exc, code, lock_timeout_ms, retries)) from None
        text = str(exc.orig) if exc.orig is not None else ""
        if "encmigrate:" in text:
            raise RefusedError(text.splitlines()[0]) from None
        # The boundary's words: the driver's text only when it cannot quote a value.
        raise DatabaseError(
            f"alembic upgrade head failed: {translate(exc)}", sqlstate=sqlstate(exc)
        ) from None
    except CommandError as exc:
        raise ConfigError(f"alembic upgrade head failed: {exc}") from None


# The table a DDL statement waits for: ALTER TABLE t, VACUUM FULL t, CREATE INDEX ... ON t.
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|[\w$]+)'
_LOCKED_TABLE = re.compile(
    rf"\b(?:ALTER TABLE|VACUUM FULL|ON|FROM)\s+({_IDENTIFIER}(?:\.{_IDENTIFIER})?)"
)


def _busy(exc: sa.exc.DBAPIError, code: str, lock_timeout_ms: int, retries: int) -> str:
    """What a lock failure after every retry means and what to do; no values, only names."""
    found = _LOCKED_TABLE.search(str(exc.statement or ""))
    table = found.group(1) if found else None
    literal = (table or "<table>").replace("'", "''")
    if mysql_error_number(exc) is not None:
        return (
            f"{table or 'a table'} is busy: {LOCK_FAILURES[code]} (MySQL error "
            f"{mysql_error_number(exc)}) on the last of {retries + 1} attempts, each waiting up "
            f"to {max(1, -(-lock_timeout_ms // 1000))} s (lock_wait_timeout) for the table's "
            "metadata lock. Another session has the table open in a transaction, usually a "
            "long or idle one: find it with SELECT * FROM information_schema.METADATA_LOCK_INFO "
            "(plugin metadata_lock_info) or SELECT id, time, state, info FROM "
            "information_schema.PROCESSLIST ORDER BY time DESC; end it or let it finish, then "
            "run the command again, or raise [migration] ddl_lock_timeout (the table's queries "
            "wait behind the DDL for up to that long on each attempt)"
        )
    return (
        f"{table or 'a table'} is busy: {LOCK_FAILURES[code]} (SQLSTATE {code}) on the last of "
        f"{retries + 1} attempts, each waiting up to {lock_timeout_ms} ms for its lock. "
        "Another session holds a conflicting lock or an old snapshot, usually a long or idle "
        "transaction: find it with SELECT pid, state, xact_start, query FROM pg_stat_activity "
        f"WHERE pid IN (SELECT pid FROM pg_locks WHERE relation = '{literal}'::regclass) OR "
        "xact_start < now() - interval '1 minute'; end it or let it finish, then run the "
        "command again, or raise [migration] ddl_lock_timeout (the table's queries wait "
        "behind the DDL for up to that long on each attempt)"
    )


def render_sql(operations: Sequence[MigrateOperation], dialect: str) -> str:
    """The SQL of ``operations`` as ``alembic upgrade --sql`` would print it."""
    buffer = io.StringIO()
    # As Alembic's offline env.py renders: a named paramstyle (no driver doubles "%" in
    # the text) and values as literals.
    context = MigrationContext.configure(
        dialect_name=dialect,
        dialect_opts={"paramstyle": "named"},
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    runner = Operations(context)
    if context.impl.transactional_ddl:
        context.impl.emit_begin()
    for operation in operations:
        runner.invoke(operation)
    if context.impl.transactional_ddl:
        context.impl.emit_commit()
    return buffer.getvalue()
