"""What most commands need: the plan, the keyring and a database engine.

The batch commands (``migrate-data``, ``rewrap``, ``decrypt-back``) start the
same way, in :func:`batch_command`: plan, keyring, engine, the SQLite
single-worker note, Ctrl-C handling, and their options built on the plan's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import sqlalchemy as sa
import typer

from encmigrate import plan as plan_module
from encmigrate.boundary import parse_database_url
from encmigrate.cli.progress import note_workers
from encmigrate.cli.state import state_of
from encmigrate.config import find_config
from encmigrate.database import connect, require_database_url
from encmigrate.keys import Keyring, load_keyring, resolve_key_setup
from encmigrate.migrate import MigrateOptions
from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL

__all__ = [
    "BatchCommand",
    "batch_command",
    "engine_for",
    "interruptible",
    "keyring_for",
    "plan_for",
    "url_origin",
]


def plan_for(ctx: typer.Context, *, check_database: bool = True) -> plan_module.Plan:
    state = state_of(ctx)
    if state.database_url:
        # Checked here, where its origin is known, before the plan check connects with it.
        parse_database_url(state.database_url, origin=_option_origin(state.database_url))
    return plan_module.load(
        state.config, database_url=state.database_url, check_database=check_database
    )


def keyring_for(ctx: typer.Context, plan: plan_module.Plan | None = None) -> Keyring:
    state = state_of(ctx)
    config = plan.source if plan is not None and plan.source is not None else state.config
    return load_keyring(resolve_key_setup(config))


def engine_for(ctx: typer.Context, plan: plan_module.Plan, *, workers: int = 1) -> sa.Engine:
    url = require_database_url(plan.database_url)
    # SQL logging is off even with --debug (ENCMIGRATE_DEBUG_LOGGERS=sqlalchemy.engine turns it
    # on; connect() hides the bound parameters).
    return connect(url, workers=workers, origin=url_origin(ctx, plan))


@dataclass(frozen=True, slots=True)
class BatchCommand:
    """What a batch command works with; ``stop`` is set by the first Ctrl-C."""

    plan: plan_module.Plan
    keyring: Keyring
    engine: sa.Engine
    workers: int
    json_output: bool
    stop: threading.Event

    def options(self, batch_size: int | None, **more: Any) -> MigrateOptions:
        """The run's options: ``--batch-size`` or the plan's, the workers, ``more``."""
        return MigrateOptions(
            batch_size=batch_size or self.plan.migration.batch_size,
            workers=self.workers,
            gil_interval=QUICK_SWITCH_INTERVAL,
            **more,
        )


@contextlib.contextmanager
def batch_command(ctx: typer.Context, *, workers: int) -> Iterator[BatchCommand]:
    """The plan, keyring and engine of a batch command, Ctrl-C caught; the engine disposed after.

    The SQLite note that ``--workers N`` runs one worker is shown before the work starts.
    """
    plan = plan_for(ctx)
    keyring = keyring_for(ctx, plan)
    engine = engine_for(ctx, plan, workers=workers)
    try:
        json_output = state_of(ctx).json
        note_workers(engine, workers, json_output)
        with interruptible() as stop:
            yield BatchCommand(plan, keyring, engine, workers, json_output, stop)
    finally:
        engine.dispose()


def url_origin(ctx: typer.Context, plan: plan_module.Plan) -> str:
    """Where the plan's database URL was set, for messages (never the URL itself)."""
    given = state_of(ctx).database_url
    if given:
        return _option_origin(given)
    found = find_config(plan.source) if plan.source is not None else None
    database = found.table.get("database") if found is not None else None
    if found is not None and isinstance(database, Mapping) and database.get("url"):
        return found.where("database.url")
    return f"{plan.alembic_config}: sqlalchemy.url"


def _option_origin(url: str) -> str:
    # typer reads ENCMIGRATE_DATABASE_URL into --database-url; an explicit option wins.
    env = plan_module.DATABASE_URL_ENV
    return env if os.environ.get(env) == url else "--database-url"


@contextlib.contextmanager
def interruptible() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C (the work stops after its current batch).

    A second Ctrl-C interrupts at once; whatever batch was open rolls back.
    """
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
