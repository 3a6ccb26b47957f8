"""The migrator SIGKILLed at random points, then resumed: nothing lost, stale or torn.

Each trial runs migrate-data in a child process (the library, as the CLI
calls it), kills it with SIGKILL after a seeded random number of progress
lines plus a random few milliseconds (so the kill lands between batches as
well as inside one), checks at once that no committed shadow value is wrong
(a batch commits whole or not at all), resumes in-process and runs a full
verify: 0 missing, 0 mismatched, 0 stale, plaintext and row count unchanged.

The trial schema has two tables: customers (2,000 rows, integer key) and
payments (800 rows), range-partitioned by date with a DEFAULT partition and
the composite key ``(paid_on, id)``. A kill can land in either table's run, and
every check covers both: a partitioned table's rows are told apart by their
whole key, and a batch written to the wrong partition's rows shows up as
mismatches (or as changed plaintext, with the partition of each row).

Default run: ``CRASH_TRIALS`` (12) trials, batch 50.
Long mode (``-m slow``): ``ENCMIGRATE_CRASH_TRIALS`` trials (default 200).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from encmigrate.migrate import MigrateOptions, migrate_data
from reliability.conftest import Migration, Prepare

CRASH_TRIALS = 12
ROWS = 2000
PAYMENTS = 800  # rows of the partitioned table
BATCH = 50

CHILD = """
import sys
from encmigrate import Keyring, plan
from encmigrate.migrate import MigrateOptions, connect, migrate_data
url, plan_path, workers, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
keyring = Keyring.from_json(sys.stdin.read())
engine = connect(url, workers=workers)
options = MigrateOptions(batch_size=batch, workers=workers, rows_per_chunk=500)
def progress(event):
    print(event.phase, event.rows_done, flush=True)
migrate_data(plan.load(plan_path, environ={}), engine, keyring, options=options, progress=progress)
print("finished", flush=True)
"""


def _kill_at_random(migration: Migration, rng: random.Random) -> tuple[int, bool]:
    """Start a migrating child, SIGKILL it at a random point; (lines seen, finished first)."""
    workers = rng.choice([1, 2])
    kill_after = rng.randrange(1, (ROWS + PAYMENTS) // BATCH)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            migration.url,
            str(migration.plan_path),
            str(workers),
            str(BATCH),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(migration.keyring.to_json())
    child.stdin.close()
    seen = 0
    finished = False
    for line in child.stdout:
        if line.startswith("finished"):
            finished = True
            break
        seen += 1
        if seen >= kill_after:
            time.sleep(rng.uniform(0, 0.01))  # sometimes mid-batch, sometimes between
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return seen, finished


def _trial(migration: Migration, seed: int, digest: str) -> bool:
    migration.reset()
    rng = random.Random(seed)
    _, finished = _kill_at_random(migration, rng)
    migration.check(complete=False)  # what the killed run committed is right, whole batches
    resumed = migrate_data(
        migration.plan,
        migration.engine,
        migration.keyring,
        options=MigrateOptions(batch_size=BATCH, rows_per_chunk=500),
    )
    assert not resumed[0].interrupted
    verdicts = migration.check(complete=True)
    checked = {(v.table, v.column): v.rows_checked for v in verdicts}
    assert checked[("customers", "email")] == ROWS  # no row lost
    assert checked[("payments", "amount")] == PAYMENTS  # in the partitioned table either
    assert migration.plaintext_digest() == digest  # no plaintext touched, no row moved
    return not finished


def _run_trials(migration: Migration, count: int) -> int:
    digest = migration.plaintext_digest()
    killed = sum(_trial(migration, seed, digest) for seed in range(count))
    return killed


def test_sigkilled_migration_resumes_without_loss_over_seeded_trials(
    pg_url: str, prepare: Prepare
) -> None:
    migration = prepare(pg_url, ROWS, payments=PAYMENTS)
    killed = _run_trials(migration, CRASH_TRIALS)
    assert killed >= CRASH_TRIALS * 0.8  # nearly every trial killed a live run


@pytest.mark.slow
def test_sigkilled_migration_resumes_without_loss_long_mode(pg_url: str, prepare: Prepare) -> None:
    count = int(os.environ.get("ENCMIGRATE_CRASH_TRIALS", "200"))
    migration = prepare(pg_url, ROWS, payments=PAYMENTS)
    killed = _run_trials(migration, count)
    assert killed >= count * 0.8
