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
"""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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

import encmigrate.revisions.ops  # noqa: F401  (registers the custom operations)
from encmigrate.errors import ConfigError, DatabaseError, RefusedError
from encmigrate.plan import Plan, safe_url

__all__ = [
    "ALEMBIC_URL_ATTRIBUTE",
    "RevisionResult",
    "alembic_config",
    "connect",
    "emit",
    "quiet_config",
]

ALEMBIC_URL_ATTRIBUTE = "encmigrate.database_url"
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
    return config


def quiet_config(path: Path) -> Config:
    """An Alembic Config that prints nothing (Alembic's ``--quiet``); logging still works."""
    config = Config(str(path), stdout=io.StringIO())
    config.cmd_opts = argparse.Namespace(quiet=True, x=[])
    # env.py files written by `encmigrate init` then leave the caller's logging alone.
    config.attributes["configure_logger"] = False
    return config


@contextmanager
def connect(plan: Plan) -> Iterator[sa.Connection]:
    """A connection to the plan's database, with errors mapped to DatabaseError."""
    if plan.database_url is None:
        raise ConfigError("no database URL: set one in the plan or pass --database-url")
    engine = sa.create_engine(plan.database_url)
    try:
        with engine.connect() as connection:
            yield connection
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"database error on {safe_url(plan.database_url)}: "
            f"{type(exc.orig).__name__ if exc.orig is not None else 'error'}"
        ) from None
    finally:
        engine.dispose()


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
    """Write the revision (or render its SQL), and upgrade when ``apply``."""
    if sql:
        return RevisionResult(
            step=step,
            next_command="review the SQL, apply it with your SQL client, then " + next_command,
            sql=render_sql(upgrade, dialect),
            notes=tuple(notes),
        )
    path, revision = write_revision(config, message, upgrade, downgrade)
    if apply:
        upgrade_head(config)
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


def upgrade_head(config: Config) -> None:
    """``alembic upgrade head``, with database errors mapped to encmigrate's."""
    try:
        command.upgrade(config, "head")
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig) if exc.orig is not None else ""
        if "encmigrate:" in text:
            raise RefusedError(text.splitlines()[0]) from None
        raise DatabaseError(
            f"alembic upgrade head failed: {type(exc.orig).__name__ if exc.orig else 'error'}: "
            f"{text.splitlines()[0] if text else ''}"
        ) from None
    except CommandError as exc:
        raise ConfigError(f"alembic upgrade head failed: {exc}") from None


def render_sql(operations: Sequence[MigrateOperation], dialect: str) -> str:
    """The SQL of ``operations`` as ``alembic upgrade --sql`` would print it."""
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": buffer}
    )
    runner = Operations(context)
    if context.impl.transactional_ddl:
        context.impl.emit_begin()
    for operation in operations:
        runner.invoke(operation)
    if context.impl.transactional_ddl:
        context.impl.emit_commit()
    return buffer.getvalue()
