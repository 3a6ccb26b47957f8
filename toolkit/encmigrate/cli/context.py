"""What most commands need: the plan, the keyring and a database engine."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import sqlalchemy as sa
import typer

from encmigrate import plan as plan_module
from encmigrate.cli.state import state_of
from encmigrate.errors import ConfigError
from encmigrate.keys import Keyring, load_keyring, resolve_key_setup
from encmigrate.migrate import connect

__all__ = ["engine_for", "interruptible", "keyring_for", "plan_for"]


def plan_for(ctx: typer.Context, *, check_database: bool = True) -> plan_module.Plan:
    state = state_of(ctx)
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
    if state_of(ctx).debug:
        # SQL to stderr through logging (``echo`` would print to stdout and break --json);
        # bound parameters are hidden by connect().
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    return connect(plan.database_url, workers=workers)


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
