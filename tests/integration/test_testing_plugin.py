"""The encmigrate.testing pytest plugin, against a real PostgreSQL server.

Tests that need to see what happens *after* a test (a database dropped, a skip
reported) run an inner pytest session with ``pytester``; the inner session is pointed
at the same server as this one through ENCMIGRATE_TEST_DATABASE_URL.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as sa_psycopg
from sqlalchemy.engine import make_url

from encmigrate.testing import (
    PostgresServer,
    PostgresUnavailableError,
    drop_database,
    find_postgres_server,
)

# pytester's in-process runs drop every module first imported during the inner run; if
# psycopg were first loaded there, SQLAlchemy would keep a stale copy and stop wrapping its
# errors. Loading both here keeps them across inner runs, whatever order the tests run in.
assert psycopg.Error is sa_psycopg.PGDialect_psycopg.import_dbapi().Error

ENV_URL = "ENCMIGRATE_TEST_DATABASE_URL"
REQUIRE = "ENCMIGRATE_REQUIRE_PG"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_exists(server: PostgresServer, name: str) -> bool:
    engine = sa.create_engine(server.admin_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
    finally:
        engine.dispose()
    return found is not None


def run_inner(
    pytester: pytest.Pytester, local: str = "127.0.0.1:5432", *args: str
) -> pytest.RunResult:
    pytester.makeini(
        f"""
        [pytest]
        filterwarnings = error
        addopts = --strict-markers -p no:cacheprovider
        encmigrate_local_postgres = {local}
        """
    )
    return pytester.runpytest("-rs", *args)


RECORD_NAMES = """
    from pathlib import Path
    from sqlalchemy.engine import make_url

    def record(url):
        with Path({names!r}).open("a") as names:
            names.write(make_url(url).database + "\\n")
"""


@pytest.fixture
def names_file(pytester: pytest.Pytester) -> Path:
    return pytester.path / "names.txt"


@pytest.fixture
def inner_uses_this_server(
    monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer
) -> PostgresServer:
    monkeypatch.setenv(ENV_URL, postgres_server.admin_url)
    return postgres_server


@pytest.fixture
def nothing_reachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """No env URL, no Docker engine, and a closed port for the local fallback."""
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(REQUIRE, raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    return f"127.0.0.1:{closed_port()}"


# -- the fixtures, used directly -------------------------------------------------------------


def test_pg_url_is_an_empty_database_that_exists_during_the_test(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    name = make_url(pg_url).database
    assert name is not None
    assert name.startswith("encmigrate_test_")
    assert database_exists(postgres_server, name)
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT current_database()")).scalar() == name
            tables = connection.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert tables == 0


def test_pg_engine_is_connected_to_the_pg_url_database(pg_engine: sa.Engine, pg_url: str) -> None:
    assert pg_engine.dialect.driver == "psycopg"
    with pg_engine.connect() as connection:
        current = connection.execute(sa.text("SELECT current_database()")).scalar()
    assert current == make_url(pg_url).database


def test_db_url_is_a_fresh_database_of_the_kind_in_its_id(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.id
    url = make_url(db_url)
    assert url.get_backend_name() == kind
    engine = sa.create_engine(db_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE probe (id integer PRIMARY KEY)"))
    finally:
        engine.dispose()
    if kind == "postgresql":
        assert (url.database or "").startswith("encmigrate_test_")


def test_sqlite_engine_writes_a_file_under_tmp_path(
    sqlite_url: str, sqlite_engine: sa.Engine, tmp_path: Path
) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path / 'test.db'}"
    with sqlite_engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE probe (id integer PRIMARY KEY)"))
    assert (tmp_path / "test.db").stat().st_size > 0


def test_drop_database_refuses_a_database_it_did_not_create(
    postgres_server: PostgresServer,
) -> None:
    with pytest.raises(ValueError, match="only drops encmigrate_test_"):
        drop_database(postgres_server, postgres_server.admin_url)
    assert database_exists(postgres_server, make_url(postgres_server.admin_url).database or "")


def test_server_repr_and_display_url_hide_the_password() -> None:
    server = PostgresServer("postgresql+psycopg://app:s3cret-pw@db.example:5432/postgres", "x")
    assert "s3cret-pw" not in repr(server)
    assert "s3cret-pw" not in server.display_url
    assert "db.example" in repr(server)


# -- lifetime of the databases (inner pytest runs) ------------------------------------------


def test_pg_url_database_is_dropped_after_the_test_and_each_test_gets_its_own(
    pytester: pytest.Pytester, inner_uses_this_server: PostgresServer, names_file: Path
) -> None:
    pytester.makepyfile(
        RECORD_NAMES.format(names=str(names_file))
        + """
    def test_one(pg_url):
        record(pg_url)

    def test_two(pg_engine, pg_url):
        record(pg_url)
    """
    )
    run_inner(pytester).assert_outcomes(passed=2)
    first, second = names_file.read_text().split()
    assert first != second
    assert not database_exists(inner_uses_this_server, first)
    assert not database_exists(inner_uses_this_server, second)


def test_pg_module_url_is_shared_within_a_module_and_dropped_after_it(
    pytester: pytest.Pytester, inner_uses_this_server: PostgresServer, names_file: Path
) -> None:
    body = (
        RECORD_NAMES.format(names=str(names_file))
        + """
    def test_one(pg_module_url):
        record(pg_module_url)

    def test_two(pg_module_url):
        record(pg_module_url)
    """
    )
    pytester.makepyfile(test_module_a=body, test_module_b=body)
    run_inner(pytester).assert_outcomes(passed=4)
    a1, a2, b1, b2 = names_file.read_text().split()
    assert a1 == a2
    assert b1 == b2
    assert a1 != b1
    assert not database_exists(inner_uses_this_server, a1)
    assert not database_exists(inner_uses_this_server, b1)


# -- the postgres marker ---------------------------------------------------------------------

MARKER_CASES = """
    import pytest

    @pytest.fixture
    def schema(pg_url):
        return pg_url

    def test_pg_url(pg_url): pass
    def test_pg_engine(pg_engine): pass
    def test_server(postgres_server): pass
    def test_module(pg_module_url): pass
    def test_indirect(schema): pass
    def test_db(db_url): pass
    def test_sqlite(sqlite_url, sqlite_engine): pass
    def test_plain(): pass
"""


def collected(result: pytest.RunResult) -> set[str]:
    return {line.split("::")[1] for line in result.outlines if "::" in line}


def test_postgres_marker_is_added_to_every_test_using_a_postgres_fixture(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(MARKER_CASES)
    selected = run_inner(pytester, "127.0.0.1:5432", "--collect-only", "-q", "-m", "postgres")
    assert collected(selected) == {
        "test_pg_url",
        "test_pg_engine",
        "test_server",
        "test_module",
        "test_indirect",
        "test_db[postgresql]",
    }
    rest = run_inner(pytester, "127.0.0.1:5432", "--collect-only", "-q", "-m", "not postgres")
    assert collected(rest) == {"test_db[sqlite]", "test_sqlite", "test_plain"}


def test_nothing_is_looked_up_when_no_postgres_fixture_is_used(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unreachable explicit URL fails every PostgreSQL test; here none runs, so none fails.
    monkeypatch.setenv(ENV_URL, f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    pytester.makepyfile(MARKER_CASES)
    result = run_inner(pytester, "127.0.0.1:5432", "-m", "not postgres")
    result.assert_outcomes(passed=3, deselected=6)
    assert ENV_URL not in result.stdout.str()
    assert "encmigrate.testing: PostgreSQL from" not in result.stdout.str()


# -- where the server comes from -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "names_database"),
    [
        ("postgresql", True),
        ("postgres", True),
        ("postgresql+psycopg", True),
        ("postgresql", False),
    ],
)
def test_environment_url_wins_and_is_driven_through_psycopg3(
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
    scheme: str,
    names_database: bool,
) -> None:
    admin = make_url(postgres_server.admin_url)
    # The same server spelt differently, with the local fallback closed, proves the env won.
    host = "localhost" if admin.host == "127.0.0.1" else admin.host
    database = admin.database if names_database else None
    spelt = sa.URL.create(
        scheme,
        username=admin.username,
        password=admin.password,
        host=host,
        port=admin.port,
        database=database,
    )
    monkeypatch.setenv(ENV_URL, spelt.render_as_string(hide_password=False))
    with find_postgres_server(local=("127.0.0.1", closed_port())) as server:
        found = make_url(server.admin_url)
    assert server.source == ENV_URL
    assert found.drivername == "postgresql+psycopg"
    assert found.host == host
    assert found.database == (database or "postgres")


def test_unreachable_environment_url_fails_naming_it_without_falling_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REQUIRE, raising=False)
    port = closed_port()
    monkeypatch.setenv(ENV_URL, f"postgresql://app:s3cret-pw@127.0.0.1:{port}/postgres")
    pytester.makepyfile("def test_needs_pg(pg_url): pass\n")
    # The local fallback (default 127.0.0.1:5432) answers on this machine: a fallback would pass.
    result = run_inner(pytester)
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert f"{ENV_URL} (postgresql+psycopg://app:***@127.0.0.1:{port}/postgres) does not" in output
    assert "s3cret-pw" not in output


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sqlite:///app.db", "names a sqlite database, not PostgreSQL"),
        ("not a url at all", "is not a database URL"),
    ],
    ids=["sqlite-url", "not-a-url"],
)
def test_environment_url_that_is_not_postgresql_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv(ENV_URL, value)
    with pytest.raises(PostgresUnavailableError, match=reason) as refused:
        find_postgres_server()
    assert refused.value.explicit
    assert ENV_URL in refused.value.reason


def test_nothing_reachable_skips_with_a_one_line_reason_naming_the_three_places(
    pytester: pytest.Pytester, nothing_reachable: str
) -> None:
    pytester.makepyfile(
        """
        def test_needs_pg(pg_url): pass
        def test_each_kind(db_url): pass
        def test_plain(): pass
        """
    )
    result = run_inner(pytester, nothing_reachable)
    result.assert_outcomes(passed=2, skipped=2)
    skipped = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert len(skipped) == 2
    for line in skipped:
        assert f"no PostgreSQL server found ({ENV_URL} not set;" in line
        assert "; no Docker engine at unix:///nonexistent/docker.sock;" in line
        assert f"; local {nothing_reachable}: connection failed" in line


def test_nothing_reachable_fails_when_postgres_is_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, nothing_reachable: str
) -> None:
    monkeypatch.setenv(REQUIRE, "1")
    pytester.makepyfile(
        """
        def test_needs_pg(pg_url): pass
        def test_each_kind(db_url): pass
        """
    )
    result = run_inner(pytester, nothing_reachable)
    result.assert_outcomes(passed=1, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert f"no PostgreSQL server found ({ENV_URL} not set;" in output
    assert f"[{REQUIRE}=1]" in output


@pytest.mark.parametrize(
    "docker_host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"]
)
def test_lookup_without_a_docker_engine_is_quick_and_quiet(
    monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder, docker_host: str
) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.setenv("DOCKER_HOST", docker_host.format(port=closed_port()))
    started = time.perf_counter()
    with pytest.raises(PostgresUnavailableError, match="no Docker engine at") as missing:
        find_postgres_server(local=("127.0.0.1", closed_port()))
    assert time.perf_counter() - started < 2.0
    assert not missing.value.explicit
    assert len(recwarn) == 0


def test_importing_the_plugin_leaves_sqlalchemy_unimported() -> None:
    probe = "import sys, encmigrate.testing; print('sqlalchemy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
