"""``--workers N`` (PostgreSQL, MariaDB): this process works as one worker, N - 1 helpers join.

Threads share one interpreter lock, and a worker's client work (reading rows,
encrypting, framing parameters) is Python: two worker threads were no faster
than one (bench/bench_migrate.py). Helpers are separate Python processes that
do exactly what ``migrate-data --join`` does from another host: claim chunks in
``encryption_migration_chunks`` and work them with their own connections. The
database stays the only coordinator, so everything the chunk rules guarantee
(leases, session liveness, checkpoints) holds for helpers unchanged.

A helper is a new interpreter (``sys.executable``) that runs the entry code its
caller gives, which calls :func:`main` with a constructor of the helper's run
(``tablerun.py`` passes ``TableRun``: this module sees only the narrow
``loop.ChunkWorker`` and never imports the run). It reads one JSON document from
stdin (the database URL, the table's plan, the keyring, the options; key material
travels only through this pipe) and writes one JSON line per committed batch to
stdout, then a last line with its outcome. It:

* dies with its parent (``PR_SET_PDEATHSIG`` on Linux; elsewhere it stops when
  its stdin closes), so a SIGKILLed run leaves no worker behind and the next
  invocation reclaims every chunk at once;
* runs in its own process group (and ignores SIGINT): a Ctrl-C at the terminal
  reaches the parent only, which asks its helpers to stop after their current
  batch by writing ``stop``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import sqlalchemy as sa

from encmigrate import errors
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate import chunks as chunking
from encmigrate.migrate.batch import BatchResult
from encmigrate.migrate.bookkeeping import database_failure, failure_line
from encmigrate.migrate.database import RetryPolicy, connect, is_transient
from encmigrate.migrate.loop import BatchLoop, ChunkWorkerFactory
from encmigrate.migrate.pipeline import quick_gil_handover
from encmigrate.migrate.rekey import Operation, operation_from_spec
from encmigrate.migrate.report import MigrateOptions
from encmigrate.migrate.table import TableWork
from encmigrate.plan import TablePlan
from encmigrate.redaction import RedactingFilter

__all__ = ["Helpers", "helper_document", "main"]

logger = logging.getLogger(__name__)

_STOP = b"stop\n"


# -- the parent's side ------------------------------------------------------------


@dataclass
class _Helper:
    process: subprocess.Popen[bytes]
    outcome: dict[str, Any] = field(default_factory=dict)
    reader: threading.Thread | None = None


class Helpers:
    """Helper processes working the chunks of one run beside this process.

    Each runs ``entry`` (Python code that calls :func:`main`) and gets ``document``
    (:func:`helper_document`) on its stdin; its batches are counted in ``loop``.
    They may be started before the document exists (:meth:`send` gives it later),
    so that their imports (about a second each) overlap the run's own setup.
    """

    def __init__(
        self, loop: BatchLoop, count: int, *, entry: str, document: bytes | None = None
    ) -> None:
        self.loop = loop
        self.helpers: list[_Helper] = []
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        for index in range(1, count + 1):
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and code)
                [sys.executable, "-c", entry],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # Its own process group: a Ctrl-C at the terminal reaches only this process,
                # which tells its helpers to stop after their batch (even one still starting).
                process_group=0,
                env={
                    **os.environ,
                    "ENCMIGRATE_WORKER_INDEX": str(index),
                    "ENCMIGRATE_WORKER_PARENT": str(os.getpid()),
                },
            )
            self.helpers.append(_Helper(process))
        if document is not None:
            self.send(document, count)

    def send(self, document: bytes, count: int) -> None:
        """Give the first ``count`` helpers the run; the others leave at once (no chunk left)."""
        spare = self.helpers[count:]
        self.helpers = self.helpers[:count]
        for helper in spare:
            _dismiss(helper)
        for helper in self.helpers:
            assert helper.process.stdin is not None
            helper.process.stdin.write(document)
            helper.process.stdin.flush()
            helper.reader = threading.Thread(target=self._read, args=(helper,), daemon=True)
            helper.reader.start()
        self._watcher = threading.Thread(target=self._watch_stop, daemon=True)
        self._watcher.start()

    def dismiss(self) -> None:
        """Let helpers that were never given the run leave (the run failed or needs none)."""
        for helper in self.helpers:
            if helper.reader is None:
                _dismiss(helper)

    def _read(self, helper: _Helper) -> None:
        assert helper.process.stdout is not None
        for line in helper.process.stdout:
            message = json.loads(line)
            if "batch" in message:
                rows_read, written, failed = message["batch"]
                self.loop.batch_done(
                    BatchResult(rows_read=rows_read, rows_written=written, rows_failed=failed)
                )
            else:
                helper.outcome = message
                if "error" in message:
                    self.loop.stop.set()  # as a failing worker thread would: everyone stops

    def _watch_stop(self) -> None:
        while not self._stopped.is_set():
            if self.loop.stop.wait(0.1):
                self.stop()
                return

    def stop(self) -> None:
        """Ask every helper to stop after its current batch."""
        for helper in self.helpers:
            with contextlib.suppress(OSError, ValueError):
                assert helper.process.stdin is not None
                helper.process.stdin.write(_STOP)
                helper.process.stdin.flush()

    def join(self) -> None:
        """Wait until every helper ran out of chunks (or stopped); raise the first one's error."""
        failure: errors.EncmigrateError | None = None
        for helper in self.helpers:
            code = helper.process.wait()
            with contextlib.suppress(OSError, ValueError):
                assert helper.process.stdin is not None
                helper.process.stdin.close()
            if helper.reader is not None:
                helper.reader.join()
            if helper.process.stdout is not None:
                helper.process.stdout.close()
            if failure is None:
                failure = _failure(helper, code, self.loop.op.command)
        self._stopped.set()
        if self._watcher is not None:
            self._watcher.join()
        if failure is not None:
            raise failure


def _dismiss(helper: _Helper) -> None:
    """Close a helper's stdin before it got the run: it reads nothing and exits 0."""
    with contextlib.suppress(OSError, ValueError):
        assert helper.process.stdin is not None
        helper.process.stdin.close()
    helper.process.wait()
    if helper.process.stdout is not None:
        helper.process.stdout.close()


def helper_document(
    engine: sa.Engine,
    work: TableWork,
    keyring: Keyring,
    options: MigrateOptions,
    operation: Operation,
) -> bytes:
    """What a helper needs to rebuild the run: the stdin line of every helper of it."""
    fields = asdict(options)
    retry = fields.pop("retry")  # asdict: the policy's fields (attempts, initial_wait, max_wait)
    document = {
        "url": engine.url.render_as_string(hide_password=False),
        "log_sql": logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO),
        "table": work.plan.model_dump(mode="json"),
        "columns": work.column_names,
        "keyring": keyring.to_json(),
        "options": fields,
        "retry": retry,
        "operation": list(operation.spec),
        "log_level": logging.getLogger("encmigrate").getEffectiveLevel(),
    }
    return json.dumps(document).encode() + b"\n"


def _failure(helper: _Helper, code: int, command: str) -> errors.EncmigrateError | None:
    outcome = helper.outcome
    if code == 0 and outcome.get("ok"):
        return None
    if "error" in outcome:
        kind = getattr(errors, str(outcome.get("class")), errors.EncmigrateError)
        if not (isinstance(kind, type) and issubclass(kind, errors.EncmigrateError)):
            kind = errors.EncmigrateError
        error: errors.EncmigrateError = kind(str(outcome["error"]))
        return error
    return errors.DatabaseError(
        f"a worker process exited with code {code}; progress is saved: "
        f"run `encmigrate {command}` again"
    )


# -- the helper's side ------------------------------------------------------------


def _command(document: dict[str, Any]) -> str:
    """The command to run again, for the operation this helper was given."""
    try:
        return operation_from_spec(document["operation"]).command
    except (KeyError, IndexError, TypeError, ValueError):
        return "migrate-data"


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux: the signal follows the thread that started us,
    which waits for its helpers in ``Helpers.join``); exit now if it already died."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _listen(stdin: IO[bytes], stop: threading.Event) -> None:
    """Stop after the current batch on ``stop`` or when the parent closes the pipe."""
    for line in stdin:
        if line == _STOP:
            break
    stop.set()


def _serve(
    document: dict[str, Any],
    stop: threading.Event,
    say: Callable[[object], None],
    make_run: ChunkWorkerFactory,
) -> None:
    if document["log_sql"]:  # --debug: SQL to stderr (bound parameters stay hidden)
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    engine = connect(document["url"])
    try:
        keyring = Keyring.from_json(document["keyring"])
        plan = TablePlan.model_validate(document["table"])
        options = MigrateOptions(**document["options"], retry=RetryPolicy(**document["retry"]))

        def reflect() -> TableWork:
            try:
                return TableWork(engine, plan, keyring, columns=document["columns"])
            except errors.DatabaseError as exc:
                cause = exc.__context__  # a server restarting as the helper starts: retried
                if cause is not None and is_transient(cause):
                    raise cause from None
                raise

        work = options.retry.run(reflect)
        run = make_run(
            engine, work, keyring, options, None, stop, operation_from_spec(document["operation"])
        )
        run.on_batch = lambda r: say({"batch": [r.rows_read, r.rows_written, r.rows_failed]})
        index = int(os.environ.get("ENCMIGRATE_WORKER_INDEX", "1"))
        with quick_gil_handover(options.gil_interval):
            run.work_chunks(chunking.new_worker_id(index))
    finally:
        engine.dispose()


def _from_database(exc: BaseException) -> bool:
    import psycopg  # only here: importing the migrator must not import the driver

    return isinstance(exc, sa.exc.SQLAlchemyError | psycopg.Error)


def main(make_run: ChunkWorkerFactory) -> int:
    """Entry point of a helper process; exits the interpreter itself (see the end).

    ``make_run`` builds the helper's run from the document (``tablerun.TableRun``):
    passed in by the entry code, so that this module never imports the run's.
    """
    code = _main(make_run)
    # The thread listening on stdin may still be blocked in a read: leave without the
    # interpreter's shutdown, which would wait on that read's lock (_main flushed its output).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(make_run: ChunkWorkerFactory) -> int:
    _die_with_parent(int(os.environ.get("ENCMIGRATE_WORKER_PARENT", os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    if not line:  # dismissed before it was given a run (Helpers.dismiss)
        return 0
    document = json.loads(line)
    # Only encmigrate's own loggers follow the parent's level (as the CLI's --debug does):
    # third-party loggers at DEBUG would print connection details; every line is masked.
    logging.basicConfig(
        level=logging.WARNING,
        format=f"encmigrate worker {os.getpid()}: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    logging.getLogger("encmigrate").setLevel(int(document.get("log_level", logging.WARNING)))
    stop = threading.Event()
    threading.Thread(target=_listen, args=(sys.stdin.buffer, stop), daemon=True).start()
    # The parent reads our stdout as the protocol: keep a handle on it for the protocol and
    # send anything else that writes to standard output to standard error instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    lock = threading.Lock()

    def say(message: object) -> None:
        with lock, contextlib.suppress(OSError):  # the parent is gone: stop (stdin says so)
            out.write(json.dumps(message) + "\n")
            out.flush()

    try:
        _serve(document, stop, say, make_run)
    except errors.EncmigrateError as exc:
        say({"error": str(exc), "class": type(exc).__name__})
        return 1
    except Exception as exc:
        # The batch write runs on the raw driver cursor, so driver errors arrive unwrapped.
        # Only the class and SQLSTATE travel: a message can quote values.
        logger.debug("worker failed", exc_info=True)
        table, command = document["table"]["table"], _command(document)
        if _from_database(exc):
            line = database_failure(table, exc, command)
        else:
            line = failure_line(table, "error in a worker", exc, command)
        say({"error": line, "class": "DatabaseError"})
        return 1
    say({"ok": True})
    return 0
