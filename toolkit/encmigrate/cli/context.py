"""What most commands need: the plan, the keyring and a database engine."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from types import FrameType

import sqlalchemy as sa
import typer

from encmigrate import plan as plan_module
from encmigrate.boundary import parse_database_url
from encmigrate.cli.state import state_of
from encmigrate.config import find_config
from encmigrate.errors import ConfigError
from encmigrate.keys import Keyring, load_keyring, resolve_key_setup
from encmigrate.migrate import connect

__all__ = ["engine_for", "interruptible", "keyring_for", "plan_for", "url_origin"]


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
    if plan.database_url is None:
        raise ConfigError(
            "no database URL: pass --database-url, set ENCMIGRATE_DATABASE_URL "
            "or add [database] url to encmigrate.toml"
        )
    # SQL logging is off even with --debug (ENCMIGRATE_DEBUG_LOGGERS=sqlalchemy.engine turns it
    # on; connect() hides the bound parameters).
    return connect(plan.database_url, workers=workers, origin=url_origin(ctx, plan))


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
