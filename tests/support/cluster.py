"""A throwaway PostgreSQL cluster that a test may stop and restart (server-side faults).

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the
``postgres`` OS user through ``runuser -u postgres --``. The cluster lives in a
temporary data directory, listens on 127.0.0.1 at a free port with trust
authentication, and is stopped and deleted on exit. ``available()`` says why
there is none (no server binaries, no ``postgres`` user) so tests can skip
with that reason.

A test that reaches the server from elsewhere (workers in network namespaces,
support/netns.py) adds listen addresses, ``pg_hba.conf`` lines and server
settings (``Cluster(listen=[...], hba=[...], settings={...})``); without them
the cluster is the loopback-only one above.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa

__all__ = ["Cluster", "available", "bindir", "free_port"]


def bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def available() -> str | None:
    """None when a cluster can be made here, else the reason it cannot."""
    if bindir() is None:
        return "no PostgreSQL server binaries (initdb/pg_ctl) found"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (initdb refuses root)"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user (initdb refuses root)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (for a throwaway server to listen on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """``with Cluster() as cluster:`` a running server; ``cluster.url(db)`` to reach it."""

    def __init__(
        self,
        *,
        listen: Sequence[str] = (),
        hba: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``listen``: addresses to listen on besides 127.0.0.1 (they must exist when the
        server starts); ``hba``: lines appended to pg_hba.conf (e.g. ``host all all
        10.201.0.0/16 trust``); ``settings``: extra ``-c name=value`` server settings."""
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        self.bin = bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="encmigrate-cluster-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.listen = ["127.0.0.1", *listen]
        self.hba = list(hba)
        self.settings = dict(settings or {})
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin is not None
        done = subprocess.run(
            [*_as_postgres(), str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def url(self, database: str = "postgres", *, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", self._options(), "start")  # fmt: skip

    def _options(self) -> str:
        extra = "".join(f" -c {name}={value}" for name, value in self.settings.items())
        listen = ",".join(self.listen)
        return f"-p {self.port} -k {self.root} -c listen_addresses={listen} -c fsync=off{extra}"

    def restart(self) -> None:
        """Stop with ``-m fast`` (every session is terminated), then start again.

        The start is retried a few times: right after a fast stop the port can
        still be held for a moment on a busy machine. A start that keeps failing
        reports the end of the server log.
        """
        self.stop()
        for attempt in range(5):
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 4:
                    tail = self.log.read_text(errors="replace").splitlines()[-5:]
                    raise RuntimeError("server did not come back: " + " | ".join(tail)) from None
                time.sleep(0.5 * (attempt + 1))

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def __enter__(self) -> Cluster:
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8")  # fmt: skip
            if self.hba:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write("".join(f"{line}\n" for line in self.hba))
            self.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped, or never came up: the directory goes anyway
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        engine = sa.create_engine(self.url(), poolclass=sa.pool.NullPool)
        try:
            while True:
                try:
                    with engine.connect():
                        return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            engine.dispose()
