"""Throwaway PostgreSQL and MariaDB databases, outside pytest too (``rehearse``, the pytest plugin).

The server is looked for in this order:

1. ``ENCMIGRATE_TEST_DATABASE_URL`` (``postgresql://``, ``postgres://`` or
   ``postgresql+psycopg://``; always driven through psycopg 3). It is the user's
   explicit choice, so if it is malformed or does not answer, that is an error
   naming it; there is no silent fallback to another server.
2. A ``testcontainers`` ``PostgresContainer`` (postgres:16) when a Docker engine
   answers at ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``).
3. A server at 127.0.0.1:5432, user ``postgres``, trust authentication.

``find_postgres_server`` raises ``PostgresUnavailableError`` (a ``DatabaseError``)
carrying the reason. :func:`find_mariadb_server` looks for MariaDB the same way:
``ENCMIGRATE_TEST_MARIADB_URL`` (``mysql://`` or ``mariadb://``, driven through
PyMySQL), a ``mariadb:10.11`` container, then 127.0.0.1:3306 as ``root`` without a
password; it raises :class:`MariaDBUnavailableError`. :func:`create_database` and
:func:`drop_database` serve both kinds. Importing this module connects to nothing,
and SQLAlchemy is imported only when needed.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

from encmigrate.errors import (
    DatabaseError,
    MariaDBUnavailableError,
    PostgresUnavailableError,
    TestServerUnavailableError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = [
    "MariaDBServer",
    "MariaDBUnavailableError",
    "PostgresServer",
    "PostgresUnavailableError",
    "TestServer",
    "create_database",
    "drop_database",
    "find_mariadb_server",
    "find_postgres_server",
]

logger = logging.getLogger(__name__)

ENV_URL: Final = "ENCMIGRATE_TEST_DATABASE_URL"
CONTAINER_IMAGE: Final = "postgres:16"
DEFAULT_LOCAL: Final = ("127.0.0.1", 5432)
DATABASE_PREFIX: Final = "encmigrate_test_"
MARIADB_ENV_URL: Final = "ENCMIGRATE_TEST_MARIADB_URL"
MARIADB_IMAGE: Final = "mariadb:10.11"
MARIADB_LOCAL: Final = ("127.0.0.1", 3306)

_CONNECT_TIMEOUT_S: Final = 3  # libpq's minimum useful value is 2
_DOCKER_SOCKET_TIMEOUT_S: Final = 1.0
_DOCKER_PING_TIMEOUT_S: Final = 3
_OWN_DATABASE: Final = re.compile(r"encmigrate_test_[0-9a-f]{16}")


@dataclass(frozen=True)
class TestServer:
    """A server to create test databases on (:class:`PostgresServer`, :class:`MariaDBServer`).

    ``admin_url`` is a URL without the test database (it may hold a password: show
    ``display_url`` instead); ``source`` says where it was found: the environment
    variable, ``testcontainers`` or ``local <host>:<port>``.
    """

    __test__ = False  # not a pytest test class, whatever its name

    admin_url: str
    source: str
    _container: Any = field(default=None, compare=False)

    @property
    def display_url(self) -> str:
        """``admin_url`` with the password masked, for messages and logs."""
        return _display(self.admin_url)

    def close(self) -> None:
        """Stop the container this server runs in, if it was started for us."""
        if self._container is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._container.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(admin_url={self.display_url!r}, source={self.source!r})"


class PostgresServer(TestServer):
    """A PostgreSQL server: ``admin_url`` is a ``postgresql+psycopg://`` URL of ``postgres``."""


class MariaDBServer(TestServer):
    """A MariaDB (or MySQL) server: ``admin_url`` is a ``mysql+pymysql://`` URL, no database."""


@dataclass(frozen=True)
class _Kind:
    """What differs between looking for a PostgreSQL and a MariaDB server."""

    title: str  # in messages: "PostgreSQL"
    env: str  # the environment variable naming the server
    backends: tuple[str, ...]  # the URL backends that variable may name
    server: type[TestServer]
    error: type[TestServerUnavailableError]
    admin_url: Callable[..., URL]  # username=, password=, host=, port=
    adopt: Callable[[URL], URL]  # the admin URL of a URL the user gave
    user: str  # the local server's user (trust authentication, or no password)
    check: Callable[[Any], str | None]  # on a connection: None if usable, else why not
    start_container: Callable[[], tuple[URL, Any]]  # (admin URL, the container)


def find_postgres_server(*, local: tuple[str, int] = DEFAULT_LOCAL) -> PostgresServer:
    """Find a PostgreSQL server: the environment URL, else Docker, else ``local``.

    Raises ``PostgresUnavailableError`` with a one-line reason when none answers. Call
    ``close()`` on the result (or use it as a context manager) to stop a container.
    """
    server = _find(_POSTGRES, local)
    assert isinstance(server, PostgresServer)
    return server


def find_mariadb_server(*, local: tuple[str, int] = MARIADB_LOCAL) -> MariaDBServer:
    """Find a MariaDB server: ``ENCMIGRATE_TEST_MARIADB_URL``, else Docker, else ``local``.

    Raises ``MariaDBUnavailableError`` with a one-line reason when none answers.
    """
    server = _find(_MARIADB, local)
    assert isinstance(server, MariaDBServer)
    return server


def _find(kind: _Kind, local: tuple[str, int]) -> TestServer:
    configured = os.environ.get(kind.env, "").strip()
    if configured:
        return _server_from_env(kind, configured)
    tried = [f"{kind.env} not set"]
    from_docker = _server_from_docker(kind)
    if isinstance(from_docker, TestServer):
        return from_docker
    tried.append(from_docker)
    host, port = local
    admin = kind.admin_url(username=kind.user, host=host, port=port)
    failure = _probe(kind, admin)
    if failure is None:
        return _found(kind, admin, f"local {host}:{port}")
    tried.append(f"local {host}:{port}: {failure}")
    raise kind.error(f"no {kind.title} server found ({'; '.join(tried)})")


def create_database(server: TestServer) -> str:
    """Create an empty database ``encmigrate_test_<hex>`` and return its URL."""
    name = DATABASE_PREFIX + secrets.token_hex(8)
    if isinstance(server, MariaDBServer):
        statement = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    else:
        statement = f'CREATE DATABASE "{name}"'
    _admin_execute(server, statement, "create a test database")
    from sqlalchemy.engine import make_url

    return _render(make_url(server.admin_url).set(database=name))


def drop_database(server: TestServer, url: str) -> None:
    """Drop a database made by ``create_database``, closing its sessions (PostgreSQL 13+).

    Refuses (``ValueError``) any database whose name ``create_database`` could not have
    chosen, so a wrong URL can never drop real data.
    """
    from sqlalchemy.engine import make_url

    name = make_url(url).database or ""
    if not _OWN_DATABASE.fullmatch(name):
        raise ValueError(f"drop_database only drops {DATABASE_PREFIX}<hex> databases, not {name!r}")
    if isinstance(server, MariaDBServer):
        # No WITH (FORCE): a session still in the database does not stop the drop; one
        # holding a metadata lock on a table makes it wait (the test's engine is disposed).
        _admin_execute(server, f"DROP DATABASE IF EXISTS `{name}`", "drop a test database")
        return
    _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "drop a test database")


# -- where a server comes from ------------------------------------------------------------


def _server_from_env(kind: _Kind, raw: str) -> TestServer:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        # The message of ArgumentError repeats the URL, password included: drop it.
        raise kind.error(f"{kind.env} is not a database URL", explicit=True) from None
    backend = url.get_backend_name()
    if backend not in kind.backends:
        raise kind.error(f"{kind.env} names a {backend} database, not {kind.title}", explicit=True)
    admin = kind.adopt(url)
    failure = _probe(kind, admin)
    if failure is not None:
        shown = admin.render_as_string(hide_password=True)
        raise kind.error(f"{kind.env} ({shown}) does not answer: {failure}", explicit=True)
    return _found(kind, admin, kind.env)


def _server_from_docker(kind: _Kind) -> TestServer | str:
    """A fresh container of ``kind``, or why there is none (one short phrase)."""
    docker_host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not _docker_socket_answers(docker_host):
        return f"no Docker engine at {_display_docker_host(docker_host)}"
    # Imported only now, and quietly: pytest runs with filterwarnings=error, and
    # docker/testcontainers raise deprecation warnings on import and start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            docker = importlib.import_module("docker")
            docker.from_env(timeout=_DOCKER_PING_TIMEOUT_S).ping()
        except ImportError:
            return "Docker answers but testcontainers is not installed"
        except Exception as exc:  # any failure of the engine means "no usable Docker"
            return f"Docker engine did not answer: {_first_line(exc)}"
        try:
            admin, container = kind.start_container()
        except ImportError:
            return "Docker answers but testcontainers is not installed"
        except Exception as exc:  # pull, start or readiness failures all mean "no container"
            return f"{kind.title} container did not start: {_first_line(exc)}"
    return _found(kind, admin, "testcontainers", container)


def _docker_socket_answers(docker_host: str) -> bool:
    """Cheap check before importing docker: does anything accept a connection there?"""
    parts = urlsplit(docker_host)
    if parts.scheme == "unix":
        if not Path(parts.path).exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(_DOCKER_SOCKET_TIMEOUT_S)
            try:
                probe.connect(parts.path)
            except OSError:
                return False
        return True
    if parts.scheme in ("tcp", "http", "https") and parts.hostname:
        address = (parts.hostname, parts.port or 2375)
        try:
            socket.create_connection(address, timeout=_DOCKER_SOCKET_TIMEOUT_S).close()
        except OSError:
            return False
        return True
    return True  # ssh://, npipe://: the docker client's own timeout decides


def _display_docker_host(docker_host: str) -> str:
    parts = urlsplit(docker_host)
    if parts.password:
        return docker_host.replace(parts.password, "***")
    return docker_host


def _start_postgres_container() -> tuple[URL, Any]:
    try:
        module = importlib.import_module("testcontainers.community.postgres")
    except ImportError:  # testcontainers before 4.15 kept it at the top level
        module = importlib.import_module("testcontainers.postgres")
    password = secrets.token_hex(16)
    container = module.PostgresContainer(
        CONTAINER_IMAGE, username="postgres", password=password, dbname="postgres", driver=None
    )
    return _ready(_POSTGRES, container, password, 5432)


def _start_mariadb_container() -> tuple[URL, Any]:
    try:
        module = importlib.import_module("testcontainers.community.mysql")
    except ImportError:
        module = importlib.import_module("testcontainers.mysql")
    password = secrets.token_hex(16)
    container = module.MySqlContainer(
        MARIADB_IMAGE, username="root", password=password, dbname="mysql", dialect="pymysql"
    )
    return _ready(_MARIADB, container, password, 3306)


def _ready(kind: _Kind, container: Any, password: str, port: int) -> tuple[URL, Any]:
    """Start ``container`` and wait until its published port answers (stopped on failure)."""
    container.start()  # if this fails, testcontainers' reaper (Ryuk) removes the rest
    try:
        admin = kind.admin_url(
            username=kind.user,
            password=password,
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(port)),
        )
        # The container reports ready from inside; the published port can lag a moment.
        failure = _probe(kind, admin)
        for _ in range(9):
            if failure is None:
                break
            time.sleep(0.5)
            failure = _probe(kind, admin)
        if failure is not None:
            raise RuntimeError(failure)
    except BaseException:
        container.stop()
        raise
    return admin, container


def _found(kind: _Kind, admin: URL, source: str, container: Any = None) -> TestServer:
    server = kind.server(_render(admin), source, container)
    logger.info("using %s from %s: %s", kind.title, source, server.display_url)
    return server


# -- talking to the server ----------------------------------------------------------------


def _probe(kind: _Kind, url: URL) -> str | None:
    """None if the server answers and ``kind`` can use it, else why not."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return kind.check(connection)
    except SQLAlchemyError as exc:
        return _first_line(exc, url.password)
    finally:
        engine.dispose()


def _postgres_check(connection: Any) -> str | None:
    """PostgreSQL 13 or newer (``DROP DATABASE ... WITH (FORCE)``)."""
    version = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
    if version < 130000:
        return f"PostgreSQL {version // 10000} is too old (13 or newer needed)"
    return None


def _mariadb_check(connection: Any) -> str | None:
    connection.exec_driver_sql("SELECT VERSION()").scalar_one()
    return None


def _postgres_url(**parts: Any) -> URL:
    from sqlalchemy.engine import URL

    return URL.create("postgresql+psycopg", database="postgres", **parts)


def _mariadb_url(**parts: Any) -> URL:
    from sqlalchemy.engine import URL

    return URL.create("mysql+pymysql", query={"charset": "utf8mb4"}, **parts)


def _adopt_postgres(url: URL) -> URL:
    """Always psycopg 3; the user's options (``sslmode``, ...) kept."""
    return url.set(drivername="postgresql+psycopg", database=url.database or "postgres")


def _adopt_mariadb(url: URL) -> URL:
    """PyMySQL in utf8mb4, without a database (the tests create theirs)."""
    return _mariadb_url(username=url.username, password=url.password, host=url.host, port=url.port)


_POSTGRES: Final = _Kind(
    title="PostgreSQL",
    env=ENV_URL,
    backends=("postgresql", "postgres"),
    server=PostgresServer,
    error=PostgresUnavailableError,
    admin_url=_postgres_url,
    adopt=_adopt_postgres,
    user="postgres",
    check=_postgres_check,
    start_container=_start_postgres_container,
)
_MARIADB: Final = _Kind(
    title="MariaDB",
    env=MARIADB_ENV_URL,
    backends=("mysql", "mariadb"),
    server=MariaDBServer,
    error=MariaDBUnavailableError,
    admin_url=_mariadb_url,
    adopt=_adopt_mariadb,
    user="root",
    check=_mariadb_check,
    start_container=_start_mariadb_container,
)


def _admin_execute(server: TestServer, statement: str, doing: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(server.admin_url)
    engine = _engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot {doing} on {server.display_url}: {_first_line(exc, url.password)}"
        ) from None
    finally:
        engine.dispose()


def _engine(url: URL, **options: Any) -> Engine:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S}, **options
    )


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _display(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException, password: str | None = None) -> str:
    """A short, one-line, password-free description of a driver or Docker error."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if password:
        line = line.replace(password, "***")
    return line[:200]
