"""A throwaway MariaDB server that a test may stop, crash and restart (server-side faults).

The MariaDB counterpart of support/cluster.py. ``mariadb-install-db`` makes a
data directory in a temporary directory and ``mariadbd`` serves it directly
(``--no-defaults``: no /etc/mysql configuration is read), on 127.0.0.1 at a
free port, ``root`` without a password. As root the server runs as the
``mysql`` OS user (``--user=mysql``), which owns the directory; otherwise as
the current user. ``available()`` says why there is none (no server binaries,
no ``mysql`` user) so tests can skip with that reason.

``stop()`` is a real shutdown (SIGTERM: every session ends, InnoDB shuts down
cleanly); ``kill()`` is a crash (SIGKILL: InnoDB recovers on the next
``start()``). The server and its directory go on exit.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

from support.cluster import free_port

__all__ = ["Server", "available", "binaries"]

# Durability traded for speed where a test loses nothing by it; crash recovery still runs.
_SPEED = {
    "skip-log-bin": None,
    "skip-name-resolve": None,
    "innodb-flush-log-at-trx-commit": "2",
    "innodb-buffer-pool-size": "64M",
    "innodb-log-file-size": "16M",
    "innodb-buffer-pool-dump-at-shutdown": "0",
    "innodb-buffer-pool-load-at-startup": "0",
}


def binaries() -> tuple[Path, Path] | None:
    """``(mariadb-install-db, mariadbd)``, or None."""
    install = shutil.which("mariadb-install-db")
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/libexec")
    if install is None or server is None:
        return None
    return Path(install), Path(server)


def available() -> str | None:
    """None when a server can be made here, else the reason it cannot."""
    if binaries() is None:
        return "no MariaDB server binaries (mariadb-install-db/mariadbd) found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("mysql")
        except KeyError:
            return "running as root and there is no mysql OS user (mariadbd refuses root)"
    return None


def _flags(options: Mapping[str, str | None]) -> list[str]:
    return [
        f"--{name}" if value is None else f"--{name}={value}" for name, value in options.items()
    ]


class Server:
    """``with Server() as server:`` a running server; ``server.url(db)`` to reach it."""

    def __init__(self, *, settings: Mapping[str, str | None] | None = None) -> None:
        """``settings``: extra ``--name=value`` server options (``None``: a bare ``--name``)."""
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        found = binaries()
        assert found is not None
        self.install_db, self.mariadbd = found
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="encmigrate-mariadb-"))
        self.data = self.root / "data"
        # A tmpdir of its own: at start-up mariadbd deletes every "#sql*" file in its tmpdir,
        # and with the default (/tmp) those are the on-disk temporary tables the machine's
        # own server is using at that moment (the batch UPDATE's derived table of BLOB
        # values is one): a test of the shared server then failed with MySQL error 6
        # (EE_DELETE) whenever a throwaway server started beside it.
        self.tmp = self.root / "tmp"
        self.tmp.mkdir()
        self.log = self.root / "server.log"
        self.settings = {**_SPEED, **(settings or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("mysql")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            os.chown(self.tmp, account.pw_uid, account.pw_gid)
            self.user = ["--user=mysql"]
        os.chmod(self.root, 0o700)

    @property
    def pid(self) -> int | None:
        """The running ``mariadbd``'s process id (a new one after each restart), or None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}?charset=utf8mb4"

    def _server_options(self) -> list[str]:
        return [
            "--no-defaults",  # first, or mariadbd reads /etc/mysql anyway
            f"--datadir={self.data}",
            f"--tmpdir={self.tmp}",
            f"--socket={self.root / 'server.sock'}",
            f"--pid-file={self.root / 'server.pid'}",
            f"--log-error={self.log}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            *self.user,
            *_flags(self.settings),
        ]

    def start(self, timeout: float = 60) -> None:
        """Start ``mariadbd`` and wait until it answers; RuntimeError (with its log) if not."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server is already running")
        self.process = subprocess.Popen(
            [str(self.mariadbd), *self._server_options()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # a Ctrl-C at the terminal is the test run's, not the server's
        )
        try:
            self.wait_until_up(timeout)
        except (sa.exc.OperationalError, RuntimeError):
            self.kill()
            raise RuntimeError("mariadbd did not come up: " + self._log_tail()) from None

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return " | ".join(lines[-5:])

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        engine = sa.create_engine(
            self.url(), poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2}
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"mariadbd exited with code {self.process.returncode}")
                try:
                    with engine.connect():
                        return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            engine.dispose()

    def _signal(self, signum: int, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"mariadbd ignored signal {signum} for {timeout} s") from None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): every session ends; returns once the server exited."""
        self._signal(signal.SIGTERM, 60)

    def kill(self) -> None:
        """A crash (SIGKILL): no shutdown; the next start runs InnoDB crash recovery."""
        self._signal(signal.SIGKILL, 10)

    def restart(self, *, crash: bool = False) -> None:
        """``stop()`` (``kill()`` with ``crash``), then start again.

        The start is retried a few times: right after a stop the port can still be
        held for a moment on a busy machine. A start that keeps failing reports the
        end of the server log.
        """
        if crash:
            self.kill()
        else:
            self.stop()
        for attempt in range(5):
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        finally:
            engine.dispose()
        return self.url(name)

    def __enter__(self) -> Server:
        try:
            done = subprocess.run(
                [
                    str(self.install_db),
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    f"--datadir={self.data}",
                    f"--tmpdir={self.tmp}",
                    *self.user,
                    "--innodb-log-file-size=16M",
                ],
                capture_output=True,
                text=True,
                check=False,
                cwd=self.root,
            )
            if done.returncode != 0:
                output = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
                raise RuntimeError("mariadb-install-db failed: " + " | ".join(output))
            self.start()
        except BaseException:
            self.kill()
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # killed instead: the directory goes anyway
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
