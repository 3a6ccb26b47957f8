"""Every failure encmigrate reports on purpose.

::

    EncmigrateError                    (1)  base; ``exit_code`` is what the CLI exits with
    ├── NotAnEnvelopeError             (1)  ``inspect``: the bytes given are not an envelope
    ├── ConfigError                    (2)  bad plan, settings file or argument
    │   └── PlanError                  (2)  the plan has problems; ``problems`` lists each one
    ├── ValueTypeError                 (2)  a value does not fit the declared type (a TypeError too)
    ├── KeyConfigError                 (3)  key material missing, malformed or unreachable
    │   ├── KeyProviderError           (3)  the provider refused or failed (file mode, I/O)
    │   └── KeyStateError              (3)  an operation not allowed in a version's state
    │       └── UnreadableVersionError (3)  a version's key refused: unknown, disabled, destroyed
    ├── DecryptionError                (3)  any failure to decrypt a value; ``cause`` tells the kind
    ├── AuditLogError                  (3)  the audit log cannot be written or its chain is broken
    ├── DatabaseError                  (4)  database unreachable, or failing after retries
    │   └── TestServerUnavailableError (4)  no database server for the test fixtures
    │       ├── PostgresUnavailableError   (4)  no PostgreSQL server
    │       └── MariaDBUnavailableError    (4)  no MariaDB (or MySQL) server
    └── RefusedError                   (5)  a precondition is not met (e.g. destroy without confirm)

All of them are defined here; ``PlanError``, ``NotAnEnvelopeError``,
``PostgresUnavailableError`` and ``MariaDBUnavailableError`` are also importable
from the modules that raise them (:mod:`encmigrate.plan`, :mod:`encmigrate.inspect`,
:mod:`encmigrate.testdb`).

:class:`DecryptionError` stays one error for every decrypt failure. Its
``cause`` (a :class:`DecryptionCause`) sorts failures for metrics and
runbooks: not an envelope, a key version that is unknown, disabled or
destroyed, a payload that does not decode, or failed authentication, which by
design covers a tampered value, another context, another type and another key
alike (AES-GCM cannot tell them apart, and neither can a caller or an attacker).

Messages name what failed, where, and what to do. They never contain key
material, derived keys or plaintext values.

Internal signals are not part of the tree: each is raised and caught inside
one package, so it never reaches a caller, and it stays private to that package:

* ``encmigrate.migrate.chunks.LostLeaseError``: another worker took over the
  chunk a batch was checkpointing; the batch rolls back and
  ``TableRun.work_chunks`` logs it and claims the next chunk.
* ``encmigrate.migrate.pipeline._FaultAfterProgressError``: a transient fault
  after committed batches; the pipeline goes on from its last checkpoint.
* ``encmigrate.rehearse.steps._StepFailedError``: a rehearsal step found a
  problem (already in the report); the rehearsal stops.

A test walks every module of the package and fails on any other exception
class defined outside this tree.

Errors of other libraries (SQLAlchemy, psycopg, sqlite3, a bad database URL)
are translated into these in one place, :mod:`encmigrate.boundary`, which the
CLI applies to every command and Python callers may apply to theirs. The CLI
prints one line and exits with ``exit_code``; 130 after Ctrl-C. Any other
exception is a bug in encmigrate: the CLI prints one line naming its class and
where it was raised (never its message, which could hold a value), asks for a
re-run with ``--debug`` (which adds the traceback), and exits with
:data:`UNEXPECTED_EXIT_CODE` (70, ``EX_SOFTWARE`` of sysexits.h), so that a
crash is never mistaken for exit 1, "verification found problems".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = [
    "UNEXPECTED_EXIT_CODE",
    "AuditLogError",
    "ConfigError",
    "DatabaseError",
    "DecryptionCause",
    "DecryptionError",
    "EncmigrateError",
    "KeyConfigError",
    "KeyProviderError",
    "KeyStateError",
    "MariaDBUnavailableError",
    "NotAnEnvelopeError",
    "PlanError",
    "PostgresUnavailableError",
    "RefusedError",
    "TestServerUnavailableError",
    "UnreadableVersionError",
    "ValueTypeError",
]

UNEXPECTED_EXIT_CODE = 70


class EncmigrateError(Exception):
    """Base of every error encmigrate raises on purpose."""

    exit_code: int = 1


class NotAnEnvelopeError(EncmigrateError):
    """The bytes given are not an envelope (exit 1). The message never shows them."""

    exit_code = 1


class ConfigError(EncmigrateError):
    """The plan, a settings file or an argument is wrong."""

    exit_code = 2


class PlanError(ConfigError):
    """The plan has problems; ``problems`` lists each one (file, key, what to do)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = "the plan has 1 problem" if count == 1 else f"the plan has {count} problems"
        super().__init__(heading + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class ValueTypeError(EncmigrateError, TypeError):
    """A value cannot be encoded as the declared field type.

    The message names the declared type and the Python type received, never
    the value itself.
    """

    exit_code = 2


class KeyConfigError(EncmigrateError):
    """Key material is missing, malformed or unreachable."""

    exit_code = 3


class KeyProviderError(KeyConfigError):
    """A key provider refused or failed an operation."""


class KeyStateError(KeyConfigError):
    """A key operation is not allowed for a version in its current state."""


class DecryptionCause(enum.StrEnum):
    """Why a value did not decrypt (:attr:`DecryptionError.cause`)."""

    NOT_ENVELOPE = "not_envelope"  # not bytes or base64 text in the envelope format at all
    UNKNOWN_VERSION = "unknown_version"  # the keyring has no such key version
    DISABLED = "disabled"  # the version is disabled: it refuses to decrypt until enabled
    DESTROYED = "destroyed"  # the version's key was erased: the value is lost
    # Tampered, truncated, another context, another type or another key: indistinguishable.
    AUTHENTICATION = "authentication"
    UNDECODABLE = "undecodable"  # authenticated, but the payload is not a value of the type


class UnreadableVersionError(KeyStateError):
    """A key version's key may not be read: not in the keyring, disabled or destroyed.

    ``cause`` is what a decryption under ``version`` fails with:
    ``UNKNOWN_VERSION``, ``DISABLED`` or ``DESTROYED``.
    """

    def __init__(self, message: str, *, version: int, cause: DecryptionCause) -> None:
        self.version = version
        self.cause = cause
        super().__init__(message)


class DecryptionError(EncmigrateError):
    """A value could not be decrypted.

    Raised for every cause alike (unknown, disabled or destroyed key version,
    wrong context, tampering, truncation, not an envelope at all). The message
    names the key version and the context when they are known, and ``reason``
    in words; ``cause`` (a :class:`DecryptionCause`) says which kind of failure
    it was, for metrics and handlers, never more than the message already does:
    ``AUTHENTICATION`` does not tell a tampered value from a wrong key.
    """

    exit_code = 3

    def __init__(
        self,
        context: str,
        version: int | None = None,
        reason: str = "",
        *,
        cause: DecryptionCause = DecryptionCause.AUTHENTICATION,
    ) -> None:
        self.context = context
        self.version = version
        self.reason = reason
        self.cause = cause
        where = f"key version {version}" if version is not None else "unknown key version"
        text = f"cannot decrypt value ({where}, context {context!r})"
        if reason:
            text = f"{text}: {reason}"
        super().__init__(text)


class AuditLogError(EncmigrateError):
    """The audit log cannot be written, or its hash chain does not verify."""

    exit_code = 3


class DatabaseError(EncmigrateError):
    """The database is unreachable, or an operation failed after its retries.

    ``sqlstate`` is the server's SQLSTATE when it gave one (``"55P03"``), else None.
    """

    exit_code = 4

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class TestServerUnavailableError(DatabaseError):
    """No usable server for the test fixtures; ``reason`` is one line naming what was tried.

    ``explicit`` is true when the user named the server (``ENCMIGRATE_TEST_DATABASE_URL``,
    ``ENCMIGRATE_TEST_MARIADB_URL``): the fixtures then fail instead of skipping, since a
    skip would hide a broken setup.
    """

    __test__ = False  # not a test class, whatever pytest's name pattern says

    def __init__(self, reason: str, *, explicit: bool = False) -> None:
        self.reason = " ".join(reason.split())
        self.explicit = explicit
        super().__init__(self.reason)


class PostgresUnavailableError(TestServerUnavailableError):
    """No usable PostgreSQL server."""


class MariaDBUnavailableError(TestServerUnavailableError):
    """No usable MariaDB (or MySQL) server."""


class RefusedError(EncmigrateError):
    """A precondition of the requested operation is not met."""

    exit_code = 5
