"""``pause``, ``resume``, ``stop`` of running migrations; ``migrate-data``'s live-primary options.

The commands only write a request in the database (migrate/control.py): the
workers of every host read it between batches, so they work from anywhere the
database is reachable, with no signal and no process list.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from encmigrate.cli.console import out, print_json
from encmigrate.cli.context import engine_for, plan_for
from encmigrate.cli.state import reports_errors, state_of
from encmigrate.migrate import control
from encmigrate.migrate.throttle import parse_max_load
from encmigrate.tracking import ControlState

__all__ = [
    "MaxBatchSize",
    "MaxLoad",
    "MaxReplicaLag",
    "MinBatchSize",
    "Replica",
    "TargetBatchSeconds",
    "ThrottleInterval",
    "ThrottleQuery",
    "live_options",
    "pause_command",
    "resume_command",
    "stop_command",
]

ControlTable = Annotated[
    str | None, typer.Option("--table", "-t", help="Only this table (default: every table).")
]
MaxReplicaLag = Annotated[
    float | None,
    typer.Option(
        "--max-replica-lag",
        min=0,
        help="Wait between batches while a standby's replay lags more than SECONDS "
        "(PostgreSQL: pg_stat_replication on the primary, or the --replica standbys).",
    ),
]
Replica = Annotated[
    list[str] | None,
    typer.Option("--replica", help="A standby's URL to read its replay position (repeatable)."),
]
MaxLoad = Annotated[
    list[str] | None,
    typer.Option(
        "--max-load",
        help="Wait while a probe is above its limit: NAME=LIMIT, NAME active_sessions or "
        "waiting_sessions (repeatable).",
    ),
]
ThrottleQuery = Annotated[
    str | None,
    typer.Option("--throttle-query", help="SQL returning a number: wait while it is above 0."),
]
ThrottleInterval = Annotated[
    float, typer.Option("--throttle-interval", min=0.05, help="Seconds between throttle probes.")
]
TargetBatchSeconds = Annotated[
    float | None,
    typer.Option(
        "--target-batch-seconds",
        min=0.01,
        help="Adapt the batch size (from --batch-size) toward batches of this duration.",
    ),
]
MinBatchSize = Annotated[
    int | None, typer.Option("--min-batch-size", min=1, help="Smallest adaptive batch size.")
]
MaxBatchSize = Annotated[
    int | None, typer.Option("--max-batch-size", min=1, help="Largest adaptive batch size.")
]


def live_options(
    *,
    max_replica_lag: float | None,
    replica: list[str] | None,
    max_load: list[str] | None,
    throttle_query: str | None,
    throttle_interval: float,
    target_batch_seconds: float | None,
    min_batch_size: int | None,
    max_batch_size: int | None,
) -> dict[str, Any]:
    """The ``MigrateOptions`` fields of the throttle and adaptive-batch options."""
    return {
        "max_replica_lag": max_replica_lag,
        "replica_urls": tuple(replica or ()),
        "max_load": parse_max_load(max_load or ()),
        "throttle_query": throttle_query,
        "throttle_interval": throttle_interval,
        "target_batch_seconds": target_batch_seconds,
        "min_batch_size": min_batch_size,
        "max_batch_size": max_batch_size,
    }


def _request(ctx: typer.Context, state: ControlState, table: str | None) -> None:
    plan = plan_for(ctx, check_database=False)
    if table is not None:
        plan.select([table])  # an unknown table is a usage error, not a silent no-op
    engine = engine_for(ctx, plan)
    try:
        made = control.request(engine, state, table)
    finally:
        engine.dispose()
    where = f"table {table}" if table else "every table"
    if state_of(ctx).json:
        print_json(
            {
                "table": table or "*",
                "state": made.state.value,
                "requested_by": made.requested_by,
                "requested_at": made.requested_at.isoformat() if made.requested_at else None,
            }
        )
        return
    said = {
        ControlState.PAUSED: f"Paused {where}: workers wait after their current batch "
        "(`encmigrate resume` to go on).",
        ControlState.RUNNING: f"Resumed {where}.",
        ControlState.STOPPED: f"Stop requested for {where}: runs end after their current batch, "
        "progress saved (run migrate-data again to resume).",
    }
    out.print(said[state], markup=False)


@reports_errors
def pause_command(ctx: typer.Context, table: ControlTable = None) -> None:
    """Pause running migrations: workers finish their batch and wait (from any host).

    Example: [bold]encmigrate pause --table customers[/]
    """
    _request(ctx, ControlState.PAUSED, table)


@reports_errors
def resume_command(ctx: typer.Context, table: ControlTable = None) -> None:
    """Resume paused migrations.

    Example: [bold]encmigrate resume[/]
    """
    _request(ctx, ControlState.RUNNING, table)


@reports_errors
def stop_command(ctx: typer.Context, table: ControlTable = None) -> None:
    """Stop running migrations after their current batch; progress is saved (exit 130).

    Example: [bold]encmigrate stop --table customers[/]
    """
    _request(ctx, ControlState.STOPPED, table)
