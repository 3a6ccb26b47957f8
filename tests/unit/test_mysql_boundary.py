"""MariaDB/MySQL at the database boundary: the engine's settings, its errors, which are transient.

Without a server: engines are created, never connected, and the driver's errors are
built by hand as PyMySQL raises them (``(number, message)``).
"""

from __future__ import annotations

import pymysql
import pytest
import sqlalchemy as sa

from encmigrate.boundary import MYSQL_SQLSTATES, mysql_error_number, sqlstate, translate
from encmigrate.database import BACKENDS, READ_ONLY_OPTION, connect
from encmigrate.errors import DatabaseError
from encmigrate.migrate.bookkeeping import database_failure
from encmigrate.retry import is_transient_database_fault


def wrapped(number: int, message: str, kind: type[Exception] | None = None) -> sa.exc.DBAPIError:
    """A PyMySQL error as SQLAlchemy hands it on (statement and values in its own text)."""
    original = (kind or pymysql.err.OperationalError)(number, message)
    return sa.exc.OperationalError("UPDATE t SET a = %s", ("secret-value",), original)


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_bare_mysql_and_mariadb_urls_get_pymysql_utf8mb4_and_read_committed(scheme: str) -> None:
    engine = connect(f"{scheme}://app:pw@db.example:3306/shop", workers=3)
    try:
        assert engine.url.drivername == f"{scheme}+pymysql"
        assert engine.url.query["charset"] == "utf8mb4"
        assert BACKENDS[scheme].engine_options == {"isolation_level": "READ COMMITTED"}
        assert engine.pool.size() == 8  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_the_urls_own_charset_wins() -> None:
    engine = connect("mysql+pymysql://app@db.example/shop?charset=latin1")
    try:
        assert engine.url.query["charset"] == "latin1"
    finally:
        engine.dispose()


def test_read_only_connections_begin_a_read_only_transaction() -> None:
    class Connection:
        """What the engine's begin hook reads and calls, recorded."""

        def __init__(self, read_only: bool) -> None:
            self.options = {READ_ONLY_OPTION: True} if read_only else {}
            self.sent: list[str] = []

        def get_execution_options(self) -> dict[str, bool]:
            return self.options

        def exec_driver_sql(self, statement: str) -> None:
            self.sent.append(statement)

    engine = connect("mariadb://app@db.example/shop")
    reader, writer = Connection(read_only=True), Connection(read_only=False)
    try:
        for conn in (reader, writer):
            engine.dispatch.begin(conn)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert reader.sent == ["START TRANSACTION READ ONLY"]
    assert writer.sent == []


@pytest.mark.parametrize(
    ("number", "state", "transient"),
    [
        (1205, "55P03", True),
        (1213, "40P01", True),
        (2006, "08006", True),
        (2013, "08006", True),
        (1927, "57P01", True),
        (1040, "53300", True),
        (1045, "28P01", False),
        (1049, "3D000", False),
        (1062, "23505", False),
        (4025, "23514", False),
        (1064, None, False),
    ],
)
def test_mysql_error_numbers_map_to_postgresqls_sqlstates(
    number: int, state: str | None, transient: bool
) -> None:
    error = wrapped(number, "message")
    assert mysql_error_number(error) == number
    assert sqlstate(error) == state
    assert is_transient_database_fault(error) is transient


def test_a_deadlock_says_its_number_and_message_never_the_statement_or_values() -> None:
    error = translate(wrapped(1213, "Deadlock found when trying to get lock; try restarting"))
    assert isinstance(error, DatabaseError)
    assert error.sqlstate == "40P01"
    assert str(error) == (
        "database error (MySQL error 1213 OperationalError): "
        "Deadlock found when trying to get lock; try restarting"
    )


def test_errors_that_quote_values_are_named_by_number_only() -> None:
    duplicate = wrapped(1062, "Duplicate entry 'ann@example.com' for key 'email'")
    error = translate(duplicate)
    assert str(error) == "database error (MySQL error 1062 OperationalError)"
    assert "ann@example.com" not in str(error)


def test_a_refused_value_fails_the_run_without_after_retries_and_without_the_value() -> None:
    check = wrapped(4025, "CONSTRAINT `doc` failed for `shop`.`t`: 'hello'")
    lock = wrapped(1205, "Lock wait timeout exceeded; try restarting transaction")
    refused = database_failure("t", check, "decrypt-back")
    waited = database_failure("t", lock, "migrate-data")
    assert refused == (
        "t: database error (SQLSTATE 23514 MySQL error 4025 OperationalError); progress is "
        "saved: fix the cause and run `encmigrate decrypt-back` again"
    )
    assert waited.startswith("t: database error after retries (SQLSTATE 55P03 MySQL error 1205")
    assert "hello" not in refused and "Lock wait" not in waited


def test_lost_and_refused_connections_say_the_database_cannot_be_reached() -> None:
    lost = translate(wrapped(2013, "Lost connection to MySQL server during query"))
    refused = translate(wrapped(2003, "Can't connect to MySQL server on 'db.example' (111)"))
    assert str(lost) == "cannot reach the database: Lost connection to MySQL server during query"
    assert str(refused).startswith("cannot reach the database: Can't connect")


def test_access_denied_and_unknown_database_are_named() -> None:
    denied = translate(
        wrapped(1045, "Access denied for user 'app'@'10.0.0.1' (using password: YES)")
    )
    unknown = translate(wrapped(1049, "Unknown database 'shop'"))
    assert "Access denied for user 'app'" in str(denied)
    assert (
        str(unknown)
        == "database error (MySQL error 1049 OperationalError): Unknown database 'shop'"
    )


def test_a_driver_error_raised_directly_is_translated_too() -> None:
    error = translate(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"))
    assert isinstance(error, DatabaseError)
    assert error.sqlstate == "55P03"
    assert MYSQL_SQLSTATES[1205] == "55P03"
