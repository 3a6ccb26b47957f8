"""A real, throwaway PostgreSQL, MariaDB (or SQLite) database for each test: the pytest plugin.

Registered through the ``pytest11`` entry point, so every project that installs
encmigrate (and its CI) gets these fixtures without a conftest:

    postgres_server  session   PostgresServer(admin_url, source): the server found
    pg_url           function  URL of a fresh database ``encmigrate_test_<hex>``, dropped after
    pg_module_url    module    the same, shared by the tests of one module
    pg_engine        function  a SQLAlchemy Engine on ``pg_url``, disposed after
    sqlite_url       function  ``sqlite:///<tmp_path>/test.db``; ``sqlite_engine`` beside it
    db_url           function  parametrized: ids ``sqlite`` and ``postgresql``
    mariadb_server   session   MariaDBServer(admin_url, source): the MariaDB server found
    mariadb_url      function  URL (``mysql+pymysql://``) of a fresh database, dropped after
    any_db_url       function  parametrized: ids ``sqlite``, ``postgresql`` and ``mariadb``

The server is looked for in this order, once per session and only when a test
asks for it:

1. ``ENCMIGRATE_TEST_DATABASE_URL`` (``postgresql://``, ``postgres://`` or
   ``postgresql+psycopg://``; always driven through psycopg 3). It is the user's
   explicit choice, so if it is malformed or does not answer the PostgreSQL tests
   *fail* naming it; there is no silent fallback to another server.
2. A ``testcontainers`` ``PostgresContainer`` (postgres:16) when a Docker engine
   answers at ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``); stopped at
   session end.
3. A server at 127.0.0.1:5432, user ``postgres``, trust authentication (the ini
   option ``encmigrate_local_postgres = host:port`` moves it).

If none answers, the PostgreSQL tests are skipped with a one-line reason naming
the three places tried; with ``ENCMIGRATE_REQUIRE_PG=1`` they fail instead.
Every test that uses a PostgreSQL fixture is marked ``postgres``.

MariaDB is looked for the same way: ``ENCMIGRATE_TEST_MARIADB_URL`` (``mysql://``
or ``mariadb://``, driven through PyMySQL; it fails, not skips, when it does not
answer), a ``mariadb:10.11`` container, then 127.0.0.1:3306 as ``root`` without a
password (the ini option ``encmigrate_local_mariadb`` moves it). Its tests skip
when none answers, and fail with ``ENCMIGRATE_REQUIRE_MARIADB=1``; they are
marked ``mariadb``. ``any_db_url`` is for the code that works on all three
(the column types, search, ``plan check``); ``db_url`` stays on the two that
every step supports.

The server lookup lives in :mod:`encmigrate.testdb` (usable without pytest).
Importing this module connects to nothing, and SQLAlchemy is imported only when
needed, because pytest imports the plugin in every run of every project that
installs encmigrate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

import pytest

from encmigrate.errors import TestServerUnavailableError
from encmigrate.testdb import (
    DEFAULT_LOCAL,
    MARIADB_LOCAL,
    MariaDBServer,
    MariaDBUnavailableError,
    PostgresServer,
    PostgresUnavailableError,
    TestServer,
    create_database,
    drop_database,
    find_mariadb_server,
    find_postgres_server,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "MARIADB_FIXTURES",
    "POSTGRES_FIXTURES",
    "MariaDBServer",
    "MariaDBUnavailableError",
    "PostgresServer",
    "PostgresUnavailableError",
    "create_database",
    "drop_database",
    "find_mariadb_server",
    "find_postgres_server",
]

ENV_REQUIRE: Final = "ENCMIGRATE_REQUIRE_PG"
ENV_REQUIRE_MARIADB: Final = "ENCMIGRATE_REQUIRE_MARIADB"
POSTGRES_FIXTURES: Final = frozenset({"postgres_server", "pg_url", "pg_module_url", "pg_engine"})
MARIADB_FIXTURES: Final = frozenset({"mariadb_server", "mariadb_url"})
_INI_LOCAL: Final = "encmigrate_local_postgres"
_INI_LOCAL_MARIADB: Final = "encmigrate_local_mariadb"
_Server = TypeVar("_Server", bound=TestServer)
_SERVER_USED: Final = pytest.StashKey[str]()
_MARIADB_USED: Final = pytest.StashKey[str]()


# -- the pytest plugin --------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI_LOCAL,
        "host:port of the local PostgreSQL server encmigrate.testing tries last",
        default=f"{DEFAULT_LOCAL[0]}:{DEFAULT_LOCAL[1]}",
    )
    parser.addini(
        _INI_LOCAL_MARIADB,
        "host:port of the local MariaDB server encmigrate.testing tries last",
        default=f"{MARIADB_LOCAL[0]}:{MARIADB_LOCAL[1]}",
    )


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "postgres" not in registered:
        config.addinivalue_line(
            "markers", "postgres: needs a real PostgreSQL server (see encmigrate.testing)"
        )
    if "mariadb" not in registered:
        config.addinivalue_line(
            "markers", "mariadb: needs a real MariaDB server (see encmigrate.testing)"
        )


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked during collection, before `-m` deselects, so `-m postgres` sees the mark.
    fixtures = getattr(item, "fixturenames", ())
    if POSTGRES_FIXTURES.intersection(fixtures):
        item.add_marker(pytest.mark.postgres)
    if MARIADB_FIXTURES.intersection(fixtures):
        item.add_marker(pytest.mark.mariadb)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    used = config.stash.get(_SERVER_USED, None)
    if used is not None:
        terminalreporter.write_line(f"encmigrate.testing: PostgreSQL from {used}")
    used = config.stash.get(_MARIADB_USED, None)
    if used is not None:
        terminalreporter.write_line(f"encmigrate.testing: MariaDB from {used}")


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """The PostgreSQL server for this session; skips (or fails) the test when there is none."""
    yield from _session_server(request, find_postgres_server, _INI_LOCAL, _SERVER_USED, ENV_REQUIRE)


@pytest.fixture(scope="session")
def mariadb_server(request: pytest.FixtureRequest) -> Iterator[MariaDBServer]:
    """The MariaDB server for this session; skips (or fails) the test when there is none."""
    yield from _session_server(
        request, find_mariadb_server, _INI_LOCAL_MARIADB, _MARIADB_USED, ENV_REQUIRE_MARIADB
    )


def _session_server(
    request: pytest.FixtureRequest,
    find: Callable[..., _Server],
    ini: str,
    used: pytest.StashKey[str],
    require: str,
) -> Iterator[_Server]:
    """The server ``find`` finds near the ini option's host:port, kept for the session."""
    try:
        server = find(local=_parse_host_port(str(request.config.getini(ini)), ini))
    except ValueError as exc:
        pytest.fail(f"encmigrate.testing: {exc}", pytrace=False)
    except TestServerUnavailableError as exc:
        _absent(exc.reason, exc.explicit, require)
    request.config.stash[used] = f"{server.source} ({server.display_url})"
    with server:
        yield server


def _absent(reason: str, explicit: bool, require: str) -> NoReturn:
    """Fail when the user named the server or ``require`` is set; skip otherwise."""
    if explicit:
        pytest.fail(reason, pytrace=False)
    if os.environ.get(require, "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} [{require}=1]", pytrace=False)
    pytest.skip(reason)


def _parse_host_port(value: str, option: str = _INI_LOCAL) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{option} must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def _fresh_database(server: TestServer) -> Iterator[str]:
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(server, url)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    yield from _fresh_database(postgres_server)


@pytest.fixture
def mariadb_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """URL of a fresh, empty MariaDB database (utf8mb4), dropped after the test."""
    yield from _fresh_database(mariadb_server)


@pytest.fixture(scope="module")
def pg_module_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh PostgreSQL database shared by one test module, dropped after it."""
    yield from _fresh_database(postgres_server)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A SQLAlchemy Engine on ``pg_url``, disposed after the test."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite database file under ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    """A SQLAlchemy Engine on ``sqlite_url``, disposed after the test."""
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh database of each kind; the PostgreSQL case skips like ``pg_url``."""
    fixture = "pg_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def any_db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh database of each kind encmigrate's column types support."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}
    return str(request.getfixturevalue(fixture[request.param]))
