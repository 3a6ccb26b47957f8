"""Where the CLI's log records go, at which level, and how secrets are masked on the way.

``--debug`` raises the ``encmigrate`` logger tree to DEBUG and nothing else:
the root logger and every third-party logger stay at WARNING. At DEBUG,
botocore logs whole HTTP bodies (a ``GetSecretValue`` answer is the keyring,
a KMS ``Decrypt`` answer is the data key) and urllib3, hvac, psycopg and
SQLAlchemy log requests and connections; none of that is shown unless the
operator names the logger in ``ENCMIGRATE_DEBUG_LOGGERS`` (comma-separated,
e.g. ``botocore,sqlalchemy.engine``), which raises it to DEBUG as well
(SQLAlchemy's to INFO: the SQL, not the result rows, which hold plaintext).

Every line goes through one handler on the root logger (stderr, looked up at
each write, so ``CliRunner`` captures it) whose
:class:`~encmigrate.redaction.RedactingFilter` masks secrets in the final
message and any traceback (the rules and their limits are in
:mod:`encmigrate.redaction`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping

from encmigrate.redaction import RedactingFilter

__all__ = ["DEBUG_LOGGERS_ENV", "QUIET_LOGGERS", "configure_logging"]

DEBUG_LOGGERS_ENV = "ENCMIGRATE_DEBUG_LOGGERS"
# Pinned at WARNING whatever the root logger or a library set before us.
QUIET_LOGGERS = (
    "alembic",
    "boto3",
    "botocore",
    "hvac",
    "psycopg",
    "requests",
    "s3transfer",
    "sqlalchemy",
    "urllib3",
)
FORMAT = "%(levelname)s %(name)s: %(message)s"

logger = logging.getLogger(__name__)


class _StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each record (``CliRunner`` swaps it per run)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_handler = _StderrHandler()
_handler.setFormatter(logging.Formatter(FORMAT))
_handler.addFilter(RedactingFilter())


def configure_logging(debug: bool, environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Set the levels for one CLI run and install the masking handler; returns the undo.

    Calling it again adds no second handler. The undo puts back the levels
    this call changed and removes the handler if this call added it, so
    in-process runs (tests, ``CliRunner``) leave the logging setup as they
    found it.
    """
    env = os.environ if environ is None else environ
    opted_in = _opted_in(env.get(DEBUG_LOGGERS_ENV, "")) if debug else []
    levels: dict[str, int] = {"": logging.WARNING, "encmigrate": logging.WARNING}
    levels.update(dict.fromkeys(QUIET_LOGGERS, logging.WARNING))
    if debug:
        levels["encmigrate"] = logging.DEBUG
        levels.update({name: _opt_in_level(name) for name in opted_in})
    previous = {name: logging.getLogger(name or None).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    root = logging.getLogger()
    added = _handler not in root.handlers
    if added:
        root.addHandler(_handler)
    # The handler's own level too: a logger below ``encmigrate`` may carry a level of its
    # own (``encmigrate.audit`` at INFO while metrics count its events), and its records
    # must not reach stderr unless --debug.
    handler_level = _handler.level
    _handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.debug(
        "debug logs from encmigrate; third-party loggers at WARNING except %s (set %s)",
        ", ".join(opted_in) or "none",
        DEBUG_LOGGERS_ENV,
    )

    def undo() -> None:
        _handler.setLevel(handler_level)
        if added:
            root.removeHandler(_handler)
        for name, level in previous.items():
            logging.getLogger(name or None).setLevel(level)

    return undo


def _opt_in_level(name: str) -> int:
    # SQLAlchemy's engine logs every result row at DEBUG: that is plaintext. INFO is the SQL
    # (the bound parameters are hidden by the engines we create).
    if name == "sqlalchemy" or name.startswith("sqlalchemy.engine") or name == "sqlalchemy.pool":
        return logging.INFO
    return logging.DEBUG


def _opted_in(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
