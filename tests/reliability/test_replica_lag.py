"""--max-replica-lag against a real streaming standby whose replay is paused."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from encmigrate import Keyring
from encmigrate.migrate import MigrateOptions, TableReport, migrate_data, verify
from encmigrate.migrate import connect as connect_engine
from encmigrate.migrate.status import run_states
from support import cluster, shadow_schema
from support.replica import Replicated

# In `make test` (about 12 s): the proof that the throttle holds a real backfill.
pytestmark = pytest.mark.skipif(cluster.available() is not None, reason=str(cluster.available()))

ROWS = 4000


def test_backfill_waits_while_replay_is_paused_and_finishes_after(tmp_path: Path) -> None:
    with Replicated() as pair:
        url = pair.primary.create_database("app")
        built, plan_path = shadow_schema.build(url, ROWS, tmp_path)
        built.dispose()
        pair.start_standby()
        plan, keyring, engine = shadow_schema.load_plan(plan_path), Keyring.generate(), None
        engine = connect_engine(url)
        try:
            pair.standby_sql("SELECT pg_wal_replay_pause()")
            options = MigrateOptions(
                batch_size=20, sleep_ms=20, max_replica_lag=0.5, throttle_interval=0.1
            )
            reports: list[TableReport] = []
            thread = threading.Thread(
                target=lambda: reports.extend(migrate_data(plan, engine, keyring, options=options)),
                daemon=True,
            )
            thread.start()

            def worker_state() -> tuple[str, str | None]:
                workers = run_states(plan, engine)["customers"].workers
                return (workers[0].state, workers[0].throttled_reason) if workers else ("", None)

            deadline = time.monotonic() + 20
            while worker_state()[0] != "throttled":
                assert time.monotonic() < deadline, "the run never throttled"
                time.sleep(0.1)
            reason = worker_state()[1]
            assert reason is not None and reason.startswith("replica lag ")

            def done() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.exec_driver_sql(
                            "SELECT coalesce(sum(rows_done), 0) FROM encryption_migration_chunks"
                        ).scalar_one()
                    )

            held = done()
            time.sleep(2.0)
            assert done() == held < ROWS  # no batch commits while the standby lags
            pair.standby_sql("SELECT pg_wal_replay_resume()")
            thread.join(120)
            assert not thread.is_alive()
            report = reports[0]
            assert report.rows_done == ROWS and report.throttled_seconds >= 2.0
            for verdict in verify(plan, engine, keyring):
                assert verdict.ok and verdict.missing == 0, verdict.summary()
        finally:
            engine.dispose()
