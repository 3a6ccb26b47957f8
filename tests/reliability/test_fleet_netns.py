"""A fleet across a real (virtual) network: workers on hosts of their own, one link cut.

Two workers, each in its own network namespace (support/netns.py), reach a
throwaway PostgreSQL over veth links, as `migrate-data --join` processes on
two hosts would (docs/fleet.md). One worker's link is cut while it has a
batch open: its process lives on, but the server stops hearing from it. The
server's TCP keepalives (set short here, as docs/fleet.md advises) end its
session, which rolls its batch back and makes its chunk claimable; the other
worker reclaims the chunk and finishes it. The link comes back: the cut
worker notices that its session is gone and that its chunk is no longer its
own, and stops or goes on cleanly. Then: 0 lost, 0 stale, 0 mismatched, every
chunk completed, and every row encrypted exactly once (the committed counts
of the chunks add up to the table, never more).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate.keys import FileProvider
from reliability.conftest import Migration, Prepare
from support import cluster, netns
from support.cli import operator_env, run_cli

pytestmark = pytest.mark.slow

ROWS = 50_000
BATCH = "500"
# The server ends a session it has not heard from within ~5 s (2 s idle, then 3 probes 1 s
# apart; 3 s for data it sent and never saw acknowledged).
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "2",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "3000",
}
# The client side of the same, in the database URL (libpq parameters, passed through).
CLIENT_KEEPALIVES = (
    "connect_timeout=3&keepalives_idle=2&keepalives_interval=1&keepalives_count=3"
    "&tcp_user_timeout=3000"
)


@pytest.fixture
def fleet() -> Iterator[tuple[list[netns.VirtualHost], cluster.Cluster]]:
    for reason in (netns.unavailable(), cluster.available()):
        if reason is not None:
            pytest.skip(reason)
    with netns.virtual_hosts(2) as hosts:
        hba = [f"host all all {h.address}/32 trust" for h in hosts]
        server = cluster.Cluster(
            listen=[h.host_address for h in hosts], hba=hba, settings=SERVER_KEEPALIVES
        )
        with server:
            yield hosts, server


def _worker_url(server: cluster.Cluster, host: netns.VirtualHost) -> str:
    return f"{server.url('fleet', host=host.host_address)}?{CLIENT_KEEPALIVES}"


def _start_worker(host: netns.VirtualHost, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """A real interpreter inside the namespace; its output is read by ``communicate()`` at
    the end (a few kB of progress lines: the pipes never fill), which the output scan sees."""
    argv = [sys.executable, "-m", "encmigrate", "--json", "migrate-data", "--join",
            "--batch-size", BATCH, "--sleep", "100"]  # fmt: skip
    return subprocess.Popen(
        host.command(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _open_batch_of(migration: Migration, address: str) -> bool:
    """The worker at ``address`` has a transaction open (a batch under way) right now."""
    return bool(
        migration.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:a AS inet) "
            "AND xact_start IS NOT NULL AND backend_type = 'client backend'",
            a=address,
        )
    )


def _sessions_of(migration: Migration, address: str) -> int:
    return int(
        migration.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:a AS inet)",
            a=address,
        )
    )


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition()`` until true; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def _chunks(migration: Migration) -> list[dict[str, object]]:
    with migration.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT chunk_id, status, lease_owner, rows_done, attempts "
                "FROM encryption_migration_chunks ORDER BY chunk_id"
            )
        ).mappings()
        return [dict(row) for row in rows]


def _final_report(text: str) -> dict[str, object] | None:
    """The run's JSON report (the last document of a worker's output), if it got that far."""
    start = text.rfind("\n[")
    if start < 0:
        return None
    with contextlib.suppress(ValueError):
        return dict(json.loads(text[start:])[0])
    return None


def _owned_by(chunk: dict[str, object], worker: subprocess.Popen[str]) -> bool:
    """The lease owner is ``host:pid:tag/n``; ``ip netns exec`` keeps the pid."""
    return f":{worker.pid}:" in str(chunk["lease_owner"])


def _cut_mid_batch_and_restore(
    migration: Migration,
    cut_host: netns.VirtualHost,
    cut: subprocess.Popen[str],
    other: subprocess.Popen[str],
) -> int:
    """Cut the worker's link while it has a batch open, wait until its chunk changes hands,
    restore the link; returns the chunk it held."""
    _wait(
        lambda: any(
            c["status"] == "running" and _owned_by(c, cut) and int(str(c["rows_done"])) >= 1000
            for c in _chunks(migration)
        ),
        60,
        "the first worker's batches",
    )
    _wait(lambda: _open_batch_of(migration, cut_host.address), 10, "an open batch")
    cut_host.cut()
    held = [
        c["chunk_id"] for c in _chunks(migration) if c["status"] == "running" and _owned_by(c, cut)
    ]
    assert len(held) == 1
    ended = _wait(lambda: _sessions_of(migration, cut_host.address) == 0, 30, "its session to end")
    taken = _wait(
        lambda: any(
            c["chunk_id"] == held[0] and (c["status"] == "completed" or _owned_by(c, other))
            for c in _chunks(migration)
        ),
        30,
        "the other worker to take the chunk over",
    )
    print(f"the cut worker's session ended {ended:.1f} s after the cut; "
          f"its chunk was taken over {taken:.1f} s later")  # fmt: skip
    assert cut.poll() is None  # alive all along, only unreachable
    cut_host.restore()
    return int(str(held[0]))


def test_cut_worker_loses_its_chunk_to_the_other_host_and_no_row_is_done_twice(
    fleet: tuple[list[netns.VirtualHost], cluster.Cluster], prepare: Prepare, tmp_path: Path
) -> None:
    hosts, server = fleet
    migration = prepare(server.create_database("fleet"), ROWS)
    digest = migration.plaintext_digest()
    FileProvider(tmp_path / "keyring.json").save(migration.keyring)
    env = operator_env(ENCMIGRATE_KEYRING_FILE=tmp_path / "keyring.json")

    # The start (docs/fleet.md): chunks sized for the fleet, one batch, back to pending.
    started = run_cli("migrate-data", "--workers", "8", "--max-batches", "1",
                      "--batch-size", BATCH, cwd=tmp_path, env=env)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert len(_chunks(migration)) >= 8

    workers = [
        _start_worker(h, {**env, "ENCMIGRATE_DATABASE_URL": _worker_url(server, h)}, tmp_path)
        for h in hosts
    ]
    cut, other = workers
    try:
        held = _cut_mid_batch_and_restore(migration, hosts[0], cut, other)
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        hosts[0].restore()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()

    print("exit codes", cut.returncode, other.returncode, "; the cut worker said:", outputs[0][1])
    # The worker that kept its link finished the run; the cut one stopped or went on cleanly.
    assert other.returncode == 0, outputs[1][1]
    assert cut.returncode in (0, 4), outputs[0][1]
    assert not any("Traceback" in err for _, err in outputs)

    chunks = _chunks(migration)
    assert {c["status"] for c in chunks} == {"completed"}, chunks
    assert int(str(next(c for c in chunks if c["chunk_id"] == held)["attempts"])) >= 2
    # Each chunk's rows_done is committed with the rows it counts: more than the table
    # would mean a batch committed twice, fewer a batch lost.
    assert sum(int(str(c["rows_done"])) for c in chunks) == ROWS
    reports = [r for r in (_final_report(out) for out, _ in outputs) if r is not None]
    assert sum(int(str(r["catch_up_rows"])) for r in reports) == 0

    verified = run_cli("verify", cwd=tmp_path, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    migration.check()  # 0 missing, 0 mismatched, 0 stale tokens, 0 undecryptable
    assert migration.plaintext_digest() == digest  # 0 lost, no plaintext touched
