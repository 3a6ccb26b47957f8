"""Every failure encmigrate reports on purpose.

::

    EncmigrateError                 base; ``exit_code`` is what the CLI exits with
    ├── ConfigError            (2)  bad plan, settings file or argument
    ├── ValueTypeError         (2)  a value does not fit the declared type (also a TypeError)
    ├── KeyConfigError         (3)  key material missing, malformed or unreachable
    │   ├── KeyProviderError   (3)  the provider refused or failed (file mode, read-only, I/O)
    │   └── KeyStateError      (3)  an operation not allowed in a version's state
    ├── DecryptionError        (3)  any failure to decrypt a value: one opaque error
    ├── AuditLogError          (3)  the audit log cannot be written or its chain is broken
    ├── DatabaseError          (4)  database unreachable, or failing after retries
    └── RefusedError           (5)  a precondition is not met (e.g. destroy without confirm)

Messages name what failed, where, and what to do. They never contain key
material, derived keys or plaintext values.

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

__all__ = [
    "UNEXPECTED_EXIT_CODE",
    "AuditLogError",
    "ConfigError",
    "DatabaseError",
    "DecryptionError",
    "EncmigrateError",
    "KeyConfigError",
    "KeyProviderError",
    "KeyStateError",
    "RefusedError",
    "ValueTypeError",
]

UNEXPECTED_EXIT_CODE = 70


class EncmigrateError(Exception):
    """Base of every error encmigrate raises on purpose."""

    exit_code: int = 1


class ConfigError(EncmigrateError):
    """The plan, a settings file or an argument is wrong."""

    exit_code = 2


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


class DecryptionError(EncmigrateError):
    """A value could not be decrypted.

    Raised for every cause alike (unknown, disabled or destroyed key version,
    wrong context, tampering, truncation, not an envelope at all), so that a
    caller, or an attacker, cannot tell them apart. The message names the key
    version and the context when they are known.
    """

    exit_code = 3

    def __init__(self, context: str, version: int | None = None, reason: str = "") -> None:
        self.context = context
        self.version = version
        self.reason = reason
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


class RefusedError(EncmigrateError):
    """A precondition of the requested operation is not met."""

    exit_code = 5
