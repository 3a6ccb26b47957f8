"""A warm interpreter that runs ``encmigrate`` and ``alembic`` commands for the tests.

The suite runs several hundred CLI commands as separate processes (the runbooks
alone run about 150). Each fresh interpreter spends ~0.4 s of CPU importing
SQLAlchemy, Alembic, psycopg, pydantic, rich and typer before the command
starts; on a 2-core machine that was a quarter of the suite's time.

Here one server process imports those libraries once (never encmigrate itself,
so every command imports our code fresh and reads its environment as a new
process would) and forks a child per command. A small client, started with
``python -I -S`` (no site-packages: ~10 ms), hands the child its argv, its
environment, its working directory and its stdin/stdout/stderr file
descriptors (``SCM_RIGHTS``), forwards SIGINT/SIGTERM/SIGHUP to it, and exits
with its exit status. If the client dies (a runbook timeout kills its process
group), the child is killed. What a command sees is what a fresh process sees:
its own argv, environment, cwd, standard streams, default signal handlers and
exit status; only the pre-imported third-party modules are shared.

Tests that kill the CLI process itself (SIGKILL trials, worker processes)
keep starting real processes. ``ENCMIGRATE_TEST_PREFORK=0`` turns the warm
interpreter off everywhere: every command then starts a real process.

Run as a script: ``prefork.py serve SOCKET`` (the server) or
``prefork.py run SOCKET MODULE ARGS...`` (the client).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Prefork", "command", "enabled", "shared", "start"]

_PRELOAD = (
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.ext.asyncio",
    "alembic.command",
    "alembic.config",
    "alembic.operations",
    "alembic.runtime.migration",
    "alembic.autogenerate",
    "psycopg",
    "pydantic",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.kdf.hkdf",
    "tenacity",
    "typer",
    "click",
    "rich.console",
    "rich.table",
    "rich.progress",
    "rich.markup",
    "tomllib",
)
_KILLED = 128 + signal.SIGKILL


def enabled() -> bool:
    return os.environ.get("ENCMIGRATE_TEST_PREFORK", "1") != "0"


_shared: Prefork | None = None


def shared() -> Prefork:
    """The test session's server, started on first use and stopped when the session ends."""
    global _shared
    if _shared is None:
        import atexit
        import tempfile

        # A short directory name: a Unix socket path holds at most 107 bytes.
        _shared = start(Path(tempfile.mkdtemp(prefix="encmigrate-prefork-")))
        atexit.register(_shared.stop)
    return _shared


def command(module: str = "encmigrate") -> list[str]:
    """The argv prefix that runs ``python -m module`` (warm unless ENCMIGRATE_TEST_PREFORK=0)."""
    return shared().command(module)


class Prefork:
    """A running server; ``command(module)`` is the argv prefix that runs ``module``."""

    def __init__(self, process: subprocess.Popen[bytes] | None, directory: Path) -> None:
        self._process = process
        self.directory = directory
        self.socket = directory / "prefork.sock"
        self.bin_dir = directory / "bin"

    def command(self, module: str = "encmigrate") -> list[str]:
        if self._process is None:
            return [sys.executable, "-m", module]
        return [sys.executable, "-I", "-S", __file__, "run", str(self.socket), module]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


def start(directory: Path) -> Prefork:
    """Start the server in ``directory`` and write ``bin/encmigrate`` and ``bin/alembic`` shims.

    With the warm interpreter off, the shims exec the real scripts instead.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    process = None
    if enabled():
        process = subprocess.Popen(
            [sys.executable, __file__, "serve", str(directory / "prefork.sock")],
            stdin=subprocess.DEVNULL,
        )
    server = Prefork(process, directory)
    real = Path(sys.executable).parent
    for module in ("encmigrate", "alembic"):
        shim = bin_dir / module
        if process is None:
            shim.write_text(f'#!/bin/sh\nexec "{real / module}" "$@"\n')
        else:
            prefix = " ".join(f'"{part}"' for part in server.command(module))
            shim.write_text(f'#!/bin/sh\nexec {prefix} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if process is not None:
        deadline = time.monotonic() + 60
        while not server.socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the prefork server did not start")
            time.sleep(0.02)
    return server


# -- the server ------------------------------------------------------------------------------


def _serve(path: str) -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the client may connect once the name exists
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _child(connection)  # never returns
        connection.close()


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, 65536, 3)
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        more = connection.recv(65536)
        if not more:
            raise EOFError
        data += more
    return json.loads(data[4:]), fds


def _child(connection: socket.socket) -> None:
    code = 1
    try:
        request, fds = _receive(connection)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        env: dict[str, str] = request["env"]
        os.environ.clear()
        os.environ.update(env)
        # What the interpreter reads from the environment at start-up, read again.
        sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
        os.chdir(str(request["cwd"]))
        encoding = env.get("PYTHONIOENCODING") or sys.getfilesystemencoding()
        sys.stdin = open(0, encoding=encoding, closefd=False)  # noqa: SIM115
        line = 1 if os.isatty(1) else -1
        sys.stdout = open(1, "w", buffering=line, encoding=encoding, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False)  # noqa: SIM115
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        _die_with(connection)
        code = _run(request["module"], request["argv"])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
                stream.flush()
        try:
            connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
        finally:
            os._exit(code)


def _run(module: str, argv: list[str]) -> int:
    import runpy

    sys.argv = [module, *argv]
    sys.path[0] = os.getcwd() if module != "encmigrate" else str(Path(sys.executable).parent)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        status = exit_.code
        if status is None:
            return 0
        if isinstance(status, int):
            return status
        print(status, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 0


def _die_with(connection: socket.socket) -> None:
    """Kill this child when the client goes away (nothing else is ever sent)."""
    import threading

    def watch() -> None:
        try:
            connection.recv(1)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


# -- the client ------------------------------------------------------------------------------


def _client(path: str, module: str, argv: list[str]) -> int:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
    body = json.dumps(
        {"module": module, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
    ).encode()
    message = len(body).to_bytes(4, "big") + body
    sent = socket.send_fds(connection, [message], [0, 1, 2])
    connection.sendall(message[sent:])
    replies = connection.makefile("rb")
    started = replies.readline()
    if not started:
        return _KILLED
    pid = json.loads(started)["pid"]
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda signum, _frame: os.kill(pid, signum))
    finished = replies.readline()
    return int(json.loads(finished)["exit"]) if finished else _KILLED


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve(sys.argv[2])
    else:
        sys.exit(_client(sys.argv[2], sys.argv[3], sys.argv[4:]))
