"""Throwaway PostgreSQL databases, outside pytest too (``rehearse``, the pytest plugin).

The server is looked for in this order:

1. ``ENCMIGRATE_TEST_DATABASE_URL`` (``postgresql://``, ``postgres://`` or
   ``postgresql+psycopg://``; always driven through psycopg 3). It is the user's
   explicit choice, so if it is malformed or does not answer, that is an error
   naming it; there is no silent fallback to another server.
2. A ``testcontainers`` ``PostgresContainer`` (postgres:16) when a Docker engine
   answers at ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``).
3. A server at 127.0.0.1:5432, user ``postgres``, trust authentication.

``find_postgres_server`` raises ``PostgresUnavailableError`` (a ``DatabaseError``)
carrying the reason. Importing this module connects to nothing, and SQLAlchemy is
imported only when needed.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from encmigrate.errors import DatabaseError, PostgresUnavailableError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = [
    "PostgresServer",
    "PostgresUnavailableError",
    "create_database",
    "drop_database",
    "find_postgres_server",
]

logger = logging.getLogger(__name__)

ENV_URL: Final = "ENCMIGRATE_TEST_DATABASE_URL"
CONTAINER_IMAGE: Final = "postgres:16"
DEFAULT_LOCAL: Final = ("127.0.0.1", 5432)
DATABASE_PREFIX: Final = "encmigrate_test_"

_CONNECT_TIMEOUT_S: Final = 3  # libpq's minimum useful value is 2
_DOCKER_SOCKET_TIMEOUT_S: Final = 1.0
_DOCKER_PING_TIMEOUT_S: Final = 3
_OWN_DATABASE: Final = re.compile(r"encmigrate_test_[0-9a-f]{16}")


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server to create test databases on.

    ``admin_url`` is a ``postgresql+psycopg://`` URL of a maintenance database (it may
    hold a password: show ``display_url`` instead); ``source`` says where it was found:
    ``ENCMIGRATE_TEST_DATABASE_URL``, ``testcontainers`` or ``local <host>:<port>``.
    """

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

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresServer(admin_url={self.display_url!r}, source={self.source!r})"


def find_postgres_server(*, local: tuple[str, int] = DEFAULT_LOCAL) -> PostgresServer:
    """Find a PostgreSQL server: the environment URL, else Docker, else ``local``.

    Raises ``PostgresUnavailableError`` with a one-line reason when none answers. Call
    ``close()`` on the result (or use it as a context manager) to stop a container.
    """
    configured = os.environ.get(ENV_URL, "").strip()
    if configured:
        return _server_from_env(configured)
    tried = [f"{ENV_URL} not set"]
    from_docker = _server_from_docker()
    if isinstance(from_docker, PostgresServer):
        return from_docker
    tried.append(from_docker)
    host, port = local
    admin = _url("postgresql+psycopg", username="postgres", host=host, port=port)
    failure = _probe(admin)
    if failure is None:
        return _found(_render(admin), f"local {host}:{port}")
    tried.append(f"local {host}:{port}: {failure}")
    raise PostgresUnavailableError(f"no PostgreSQL server found ({'; '.join(tried)})")


def create_database(server: PostgresServer) -> str:
    """Create an empty database ``encmigrate_test_<hex>`` and return its URL."""
    name = DATABASE_PREFIX + secrets.token_hex(8)
    _admin_execute(server, f'CREATE DATABASE "{name}"', "create a test database")
    from sqlalchemy.engine import make_url

    return _render(make_url(server.admin_url).set(database=name))


def drop_database(server: PostgresServer, url: str) -> None:
    """Drop a database made by ``create_database``, closing its sessions (PostgreSQL 13+).

    Refuses (``ValueError``) any database whose name ``create_database`` could not have
    chosen, so a wrong URL can never drop real data.
    """
    from sqlalchemy.engine import make_url

    name = make_url(url).database or ""
    if not _OWN_DATABASE.fullmatch(name):
        raise ValueError(f"drop_database only drops {DATABASE_PREFIX}<hex> databases, not {name!r}")
    _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "drop a test database")


# -- where a server comes from ------------------------------------------------------------


def _server_from_env(raw: str) -> PostgresServer:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        # The message of ArgumentError repeats the URL, password included: drop it.
        raise PostgresUnavailableError(f"{ENV_URL} is not a database URL", explicit=True) from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise PostgresUnavailableError(
            f"{ENV_URL} names a {backend} database, not PostgreSQL", explicit=True
        )
    url = url.set(drivername="postgresql+psycopg", database=url.database or "postgres")
    failure = _probe(url)
    if failure is not None:
        shown = url.render_as_string(hide_password=True)
        raise PostgresUnavailableError(
            f"{ENV_URL} ({shown}) does not answer: {failure}", explicit=True
        )
    return _found(_render(url), ENV_URL)


def _server_from_docker() -> PostgresServer | str:
    """A fresh postgres:16 container, or why there is none (one short phrase)."""
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
            return _start_container()
        except ImportError:
            return "Docker answers but testcontainers is not installed"
        except Exception as exc:  # pull, start or readiness failures all mean "no container"
            return f"postgres container did not start: {_first_line(exc)}"


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


def _start_container() -> PostgresServer:
    try:
        module = importlib.import_module("testcontainers.community.postgres")
    except ImportError:  # testcontainers before 4.15 kept it at the top level
        module = importlib.import_module("testcontainers.postgres")
    password = secrets.token_hex(16)
    container = module.PostgresContainer(
        CONTAINER_IMAGE, username="postgres", password=password, dbname="postgres", driver=None
    )
    container.start()  # if this fails, testcontainers' reaper (Ryuk) removes the rest
    try:
        admin = _url(
            "postgresql+psycopg",
            username="postgres",
            password=password,
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(5432)),
        )
        failure = _wait_until_ready(admin)
        if failure is not None:
            raise RuntimeError(failure)
    except BaseException:
        container.stop()
        raise
    return _found(_render(admin), "testcontainers", container)


def _wait_until_ready(admin: URL, attempts: int = 10) -> str | None:
    # The container reports ready from inside; the published port can lag a moment.
    failure = _probe(admin)
    for _ in range(attempts - 1):
        if failure is None:
            break
        time.sleep(0.5)
        failure = _probe(admin)
    return failure


def _found(admin_url: str, source: str, container: Any = None) -> PostgresServer:
    server = PostgresServer(admin_url, source, container)
    logger.info("using PostgreSQL from %s: %s", source, server.display_url)
    return server


# -- talking to the server ----------------------------------------------------------------


def _probe(url: URL) -> str | None:
    """None if the server answers and is PostgreSQL 13 or newer, else why not."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            version = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
    except SQLAlchemyError as exc:
        return _first_line(exc, url.password)
    finally:
        engine.dispose()
    if version < 130000:
        return f"PostgreSQL {version // 10000} is too old (13 or newer needed)"
    return None


def _admin_execute(server: PostgresServer, statement: str, doing: str) -> None:
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


def _url(drivername: str, **parts: Any) -> URL:
    from sqlalchemy.engine import URL

    return URL.create(drivername, database="postgres", **parts)


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
