"""A throwaway primary and a streaming standby (``pg_basebackup -R``) for replica-lag tests.

Built on support/cluster.py's :class:`Cluster`: the primary is one with
``wal_level=replica`` and replication allowed from 127.0.0.1; the standby is
a base backup of it (``-R`` writes ``standby.signal`` and the connection
settings) started on another port. As root the tools run as the ``postgres``
OS user, as Cluster runs initdb.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from support.cluster import Cluster, free_port

__all__ = ["Replicated"]


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Replicated:
    """``with Replicated() as pair:``: ``pair.primary`` (a Cluster) and its standby."""

    def __init__(self) -> None:
        self.primary = Cluster(
            hba=["host replication all 127.0.0.1/32 trust"],
            settings={"wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"},
        )
        self.standby_port = free_port()
        self.standby_data = self.primary.root / "standby"
        self.standby_log = self.primary.root / "standby.log"

    def _tool(self, tool: str, *args: str) -> None:
        assert self.primary.bin is not None
        done = subprocess.run(
            [*_as_postgres(), str(self.primary.bin / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.primary.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def standby_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.standby_port}/{database}"

    def start_standby(self) -> None:
        """Base backup of the primary as it is now, started as a streaming standby."""
        self._tool("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                   "-U", "postgres", "-D", str(self.standby_data), "-R", "-X", "stream",
                   "-c", "fast")  # fmt: skip
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.standby_data, user.pw_uid, user.pw_gid)
        os.chmod(self.standby_data, 0o700)
        options = (f"-p {self.standby_port} -k {self.primary.root} "
                   "-c listen_addresses=127.0.0.1 -c fsync=off -c hot_standby=on")  # fmt: skip
        self._tool("pg_ctl", "-D", str(self.standby_data), "-l", str(self.standby_log),
                   "-w", "-t", "60", "-o", options, "start")  # fmt: skip
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 30) -> None:
        engine = sa.create_engine(self.primary.url(), poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with engine.connect() as conn:
                    state = conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                    ).scalar_one()
                if state:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not start streaming")
                time.sleep(0.1)
        finally:
            engine.dispose()

    def standby_sql(self, sql: str) -> object:
        engine = sa.create_engine(self.standby_url(), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql(sql).scalar()
        finally:
            engine.dispose()

    def __enter__(self) -> Replicated:
        self.primary.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if (self.standby_data / "postmaster.pid").exists():
                self._tool("pg_ctl", "-D", str(self.standby_data), "-w", "-m", "immediate", "stop")
        except RuntimeError:
            pass
        finally:
            self.primary.__exit__(*exc_info)
            shutil.rmtree(Path(self.primary.root), ignore_errors=True)
