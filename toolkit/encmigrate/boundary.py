"""Where other libraries' errors become encmigrate errors: here, and nowhere else.

:func:`mapped_errors` wraps a unit of work and :func:`translate` says what a
foreign exception means. The CLI wraps every command in it (through
``reports_errors``); Python callers may wrap their own calls the same way::

    with mapped_errors():
        migrate_data(plan, engine, keyring)

==========================================================  ====================
raised by                                                   becomes
==========================================================  ====================
SQLAlchemy ``ArgumentError`` about a URL, ``NoSuchModuleError``  ConfigError (2)
(unknown dialect or driver), ``ValueError`` from SQLAlchemy's
URL parser (a port that is not a number), a missing driver
SQLAlchemy ``NoSuchTableError``                             ConfigError (2)
SQLAlchemy ``DBAPIError`` (``OperationalError``,            DatabaseError (4)
``InterfaceError``, ``IntegrityError``, ...), the pool's
``TimeoutError``, psycopg, sqlite3 and MySQL driver
(PyMySQL, asyncmy) errors raised directly
any other exception                                         not translated (a bug)
==========================================================  ====================

A translated database error says what failed in one line: the SQLSTATE, the
driver's class name and, for the SQLSTATE classes whose first line names
only objects (tables, columns, constraints, users), that first line. It never
carries SQLAlchemy's own text (which appends the SQL and its bound
parameters, that is, values), PostgreSQL's ``DETAIL``/``CONTEXT`` lines (which
quote rows), the first line of a data exception (class 22 quotes the input it
could not convert) or a URL password.

MariaDB/MySQL errors carry an error number, and their SQLSTATEs are too coarse
to act on (a lock wait timeout is ``HY000``, like most errors). The numbers
that mean a condition encmigrate acts on are given the SQLSTATE PostgreSQL
gives the same condition (:data:`MYSQL_SQLSTATES`: 1205 lock wait timeout is
``55P03``, 1213 deadlock ``40P01``, 2006/2013 lost connection ``08006``,
1045 access denied ``28P01``, 1049 unknown database ``3D000``, ...), so that
:func:`sqlstate`, the retry policy and the messages treat them as
PostgreSQL's. Their message says ``MySQL error <number>`` and repeats the
server's first line only for the numbers of :data:`MYSQL_NAMING_ERRORS`
(others, such as 1062 duplicate entry or 1366 incorrect value, quote values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from encmigrate.errors import ConfigError, DatabaseError, EncmigrateError

__all__ = [
    "MYSQL_NAMING_ERRORS",
    "MYSQL_SQLSTATES",
    "URL_PLACES",
    "mapped_errors",
    "mysql_error_number",
    "parse_database_url",
    "sqlstate",
    "translate",
]

URL_PLACES = (
    "--database-url, ENCMIGRATE_DATABASE_URL, [database] url in the plan "
    "or sqlalchemy.url in alembic.ini"
)
_URL_FORM = "write it as dialect+driver://user:password@host:port/database"

# SQLSTATE classes whose primary message names objects, never a value: connection (08),
# integrity (23: the values are in DETAIL), transaction state (25), authorization (28),
# catalog and schema names (3D, 3F), rollbacks (40), syntax and undefined objects (42),
# resources (53), object state such as lock timeouts (55), operator intervention (57).
_NAMING_CLASSES = frozenset({"08", "23", "25", "28", "3D", "3F", "40", "42", "53", "55", "57"})

# MariaDB/MySQL error numbers -> the SQLSTATE PostgreSQL gives the same condition. First
# those whose first line names only objects (users, databases, tables, columns, hosts):
_MYSQL_NAMING_STATES: dict[int, str] = {
    1205: "55P03",  # lock wait timeout exceeded (innodb_lock_wait_timeout)
    1213: "40P01",  # deadlock found
    2002: "08001",  # cannot connect through the socket
    2003: "08001",  # cannot connect to the server (refused, unknown host)
    2006: "08006",  # server has gone away
    2013: "08006",  # lost connection during a query
    1927: "57P01",  # connection was killed (MariaDB's KILL CONNECTION)
    1053: "57P01",  # server shutdown in progress
    1040: "53300",  # too many connections
    1045: "28P01",  # access denied (user, host, password)
    1044: "42501",  # access denied to a database
    1142: "42501",  # command denied on a table
    1049: "3D000",  # unknown database
    1146: "42P01",  # table does not exist
    1054: "42703",  # unknown column
}
MYSQL_SQLSTATES: dict[int, str] = {
    **_MYSQL_NAMING_STATES,
    # Refusals of a value: never retried, and their message quotes the value.
    4025: "23514",  # CHECK constraint failed (MariaDB; MySQL's is 3819)
    3819: "23514",
    1062: "23505",  # duplicate entry for a unique key
    1452: "23503",  # foreign key: no parent row
    1048: "23502",  # column cannot be NULL
    1406: "22001",  # data too long for the column
}
# The numbers whose first line names only objects; 1792: a write in a READ ONLY transaction.
MYSQL_NAMING_ERRORS = frozenset(_MYSQL_NAMING_STATES) | {1792}
_MYSQL_MODULES = ("pymysql", "asyncmy", "aiomysql", "MySQLdb", "mariadb")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, through SQLAlchemy's wrapper.

    A MariaDB/MySQL error number of :data:`MYSQL_SQLSTATES` gives PostgreSQL's
    SQLSTATE of the same condition; other MySQL errors give None.
    """
    number = mysql_error_number(exc)
    if number is not None:
        return MYSQL_SQLSTATES.get(number)
    original = getattr(exc, "orig", exc)
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


def mysql_error_number(exc: BaseException) -> int | None:
    """The MariaDB/MySQL error number of a MySQL driver's error (``args[0]``), else None."""
    original = getattr(exc, "orig", None) or exc
    if not type(original).__module__.startswith(_MYSQL_MODULES):
        return None
    args: tuple[object, ...] = original.args
    return args[0] if args and isinstance(args[0], int) and not isinstance(args[0], bool) else None


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Raise foreign errors of the work inside as the encmigrate errors :func:`translate` gives.

    The translated error keeps the original's traceback (``--debug`` shows
    where it happened) but not its message: the original is reachable as
    ``__context__`` and is not printed with the traceback.
    """
    try:
        yield
    except EncmigrateError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped.with_traceback(exc.__traceback__) from None


def translate(exc: BaseException) -> EncmigrateError | None:
    """The encmigrate error that ``exc`` means, or None when it means a bug."""
    if isinstance(exc, EncmigrateError):
        return exc
    if isinstance(exc, sa.exc.NoSuchModuleError):
        return ConfigError(
            "the database URL names a dialect or driver SQLAlchemy does not know "
            f"(check {URL_PLACES})"
        )
    if isinstance(exc, sa.exc.ArgumentError) and "URL" in str(exc):
        return _bad_url("it cannot be parsed", None)
    if isinstance(exc, ValueError) and _raised_in(exc, "sqlalchemy.engine.url"):
        return _bad_url("its port is not a number", None)
    if isinstance(exc, ImportError) and _raised_in(exc, "sqlalchemy."):
        return ConfigError(
            f"the driver the database URL names is not installed ({exc.name or 'driver'}): "
            f"install it or change the URL ({URL_PLACES})"
        )
    if isinstance(exc, sa.exc.NoSuchTableError):
        return ConfigError(f"table {str(exc)!r} does not exist in the database")
    if isinstance(exc, sa.exc.TimeoutError):
        return DatabaseError("no database connection became free in time (the pool is exhausted)")
    if isinstance(exc, sa.exc.DBAPIError) or _is_driver_error(exc):
        return _database_error(exc)
    return None


def parse_database_url(url: str | sa.URL, *, origin: str | None = None) -> sa.URL:
    """``url`` parsed, or a ConfigError naming ``origin`` (where the URL was set), never the URL."""
    if isinstance(url, sa.URL):
        return url
    try:
        return make_url(url)
    except sa.exc.ArgumentError:
        raise _bad_url("it cannot be parsed", origin) from None
    except ValueError:
        raise _bad_url("its port is not a number", origin) from None


def _bad_url(problem: str, origin: str | None) -> ConfigError:
    if origin is None:
        return ConfigError(f"the database URL is not valid: {problem}; {_URL_FORM} ({URL_PLACES})")
    return ConfigError(f"{origin}: the database URL is not valid: {problem}; {_URL_FORM}")


def _raised_in(exc: BaseException, module: str) -> bool:
    """Whether the innermost frame of ``exc``'s traceback belongs to ``module`` (a prefix)."""
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(name, str) and name.startswith(module)


def _is_driver_error(exc: BaseException) -> bool:
    # Matched by module so that psycopg is never imported here (the CLI starts without it).
    module = type(exc).__module__
    is_driver = module.startswith(("psycopg", *_MYSQL_MODULES)) or module == "sqlite3"
    return is_driver and any(base.__name__ == "Error" for base in type(exc).__mro__)


def _database_error(exc: BaseException) -> DatabaseError:
    original = getattr(exc, "orig", None) or exc
    number = mysql_error_number(exc)
    if number is not None:
        return _mysql_error(exc, original, number)
    state = sqlstate(exc)
    kind = type(original).__name__
    if state is None and _is_connection_failure(exc, original):
        return DatabaseError(f"cannot reach the database: {_first_line(original) or kind}")
    label = f"SQLSTATE {state} {kind}" if state else kind
    said = _naming_message(original, state)
    text = f"database error ({label}): {said}" if said else f"database error ({label})"
    return DatabaseError(text, sqlstate=state)


def _mysql_error(exc: BaseException, original: BaseException, number: int) -> DatabaseError:
    """A MariaDB/MySQL error: its number, and its first line when that names only objects."""
    state = MYSQL_SQLSTATES.get(number)
    said = _mysql_message(original) if number in MYSQL_NAMING_ERRORS else ""
    lost = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    if lost or (state or "").startswith("08"):
        return DatabaseError(
            f"cannot reach the database: {said or type(original).__name__}", sqlstate=state
        )
    label = f"MySQL error {number} {type(original).__name__}"
    text = f"database error ({label}): {said}" if said else f"database error ({label})"
    return DatabaseError(text, sqlstate=state)


def _mysql_message(original: BaseException) -> str:
    """The server's message: ``args[1]`` of a MySQL driver's error, first line only."""
    args: tuple[object, ...] = original.args
    message = str(args[1]) if len(args) > 1 else ""
    lines = message.strip().splitlines()
    return lines[0].strip() if lines else ""


def _is_connection_failure(exc: BaseException, original: BaseException) -> bool:
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    module = type(original).__module__
    if module == "sqlite3":
        return "unable to open database" in str(original)
    # psycopg without a SQLSTATE: the server never answered (refused, unknown host, lost socket).
    return module.startswith("psycopg") and type(original).__name__ in {
        "OperationalError",
        "InterfaceError",
    }


def _naming_message(original: BaseException, state: str | None) -> str:
    """The driver's first line when it cannot quote a value, else ``""``."""
    if state is None:
        # SQLite's messages name tables and constraints ("UNIQUE constraint failed: t.c").
        return _first_line(original) if type(original).__module__ == "sqlite3" else ""
    if state[:2] not in _NAMING_CLASSES:
        return ""
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return primary.strip() if isinstance(primary, str) else _first_line(original)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""
