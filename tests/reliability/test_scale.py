"""Peak memory of migrate-data stays flat as the table grows.

The table is filled in SQL (``generate_series``), then migrate-data runs in
this process with two workers while a thread samples the resident set size
every 20 ms. Flat memory means the growth from the RSS after the first
batches to the peak is bounded, whatever the row count: the migrator holds
one batch per worker, never the table. Default: 200,000 rows. ``-m slow``:
``ENCMIGRATE_SCALE_ROWS`` rows (default 10,000,000; minutes).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import psutil
import pytest

from encmigrate.migrate import MigrateOptions, migrate_data
from encmigrate.migrate.runner import Progress
from reliability.conftest import Migration, Prepare

MIB = 1024 * 1024
GROWTH_BOUND = 64 * MIB  # after the first batches: pool, caches, a few batches in flight


@dataclass
class Sampler:
    """RSS of this process, sampled in a thread."""

    process: psutil.Process = field(default_factory=psutil.Process)
    peak: int = 0
    samples: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> int:
        value = int(self.process.memory_info().rss)
        self.peak = max(self.peak, value)
        return value

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.samples.append(self.rss())


def _fill(migration: Migration, rows: int) -> None:
    migration.execute(
        "TRUNCATE customers",
        "INSERT INTO customers (id, email, balance, born, profile) "
        "SELECT g, 'user' || g || '@example.com', (g % 1000000) / 100.0, "
        "DATE '1950-01-01' + (g % 20000), json_build_object('n', g, 'tier', 'gold') "
        f"FROM generate_series(1, {rows}) AS g",
        "ANALYZE customers",
    )


def _migrate_sampled(migration: Migration, rows: int) -> tuple[int, int, int]:
    """(RSS after the first batches, peak RSS, rows done)."""
    sampler = Sampler()
    baseline: list[int] = []

    def progress(event: Progress) -> None:
        if not baseline and event.rows_done >= 20_000:
            baseline.append(sampler.rss())

    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        reports = migrate_data(
            migration.plan,
            migration.engine,
            migration.keyring,
            progress=progress,
            options=MigrateOptions(batch_size=1000, workers=2, rows_per_chunk=50_000),
        )
    finally:
        sampler.stop.set()
        thread.join()
    return baseline[0], sampler.peak, reports[0].rows_done


def _report(rows: int, first: int, peak: int) -> str:
    return (
        f"{rows:,} rows: RSS after 20,000 rows {first / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, "
        f"growth {(peak - first) / MIB:.1f} MiB"
    )


def test_peak_memory_stays_flat_on_200_000_rows(
    pg_url: str, prepare: Prepare, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 200_000
    migration = prepare(pg_url, 0)
    _fill(migration, rows)
    first, peak, done = _migrate_sampled(migration, rows)
    assert done == rows
    with capsys.disabled():
        print("\n" + _report(rows, first, peak))
    assert peak - first < GROWTH_BOUND, _report(rows, first, peak)
    sample = migration.scalar(
        "SELECT count(*) FROM customers WHERE email_encrypted IS NULL OR profile_encrypted IS NULL"
    )
    assert sample == 0


@pytest.mark.slow
def test_peak_memory_stays_flat_on_10_million_rows(
    pg_url: str, prepare: Prepare, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = int(os.environ.get("ENCMIGRATE_SCALE_ROWS", "10000000"))
    migration = prepare(pg_url, 0)
    _fill(migration, rows)
    first, peak, done = _migrate_sampled(migration, rows)
    assert done == rows
    with capsys.disabled():
        print("\n" + _report(rows, first, peak))
    assert peak - first < GROWTH_BOUND, _report(rows, first, peak)
