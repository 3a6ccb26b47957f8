"""The customers table of ``support.shadow_schema`` on MariaDB, at step 1.

:func:`prepare_on` gives the reliability suite's ``Migration`` on either server,
for tests parametrized over ``SERVERS``.

The same columns, rows, plan and trigger (the product's own), with the column
types ``add-columns`` gives on MariaDB: ``LONGBLOB`` ciphertexts and a
``BINARY(32)`` search token (an index on a ``BLOB`` needs a prefix length,
which the generic table of shadow_schema.py does not give).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from encmigrate import Keyring
from encmigrate.migrate import connect
from reliability.conftest import Migration, Prepare
from support import shadow_schema
from support.shadow_schema import load_plan

__all__ = ["SERVERS", "build", "customers_table", "dispose", "migration", "prepare_on"]


def customers_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(200)),
        sa.Column("balance", sa.Numeric(14, 2)),
        sa.Column("born", sa.Date),
        sa.Column("profile", sa.JSON),
        sa.Column("email_encrypted", mysql.LONGBLOB),
        sa.Column("email_search", mysql.BINARY(32), index=True),
        sa.Column("balance_encrypted", mysql.LONGBLOB),
        sa.Column("born_encrypted", mysql.LONGBLOB),
        sa.Column("profile_encrypted", mysql.LONGBLOB),
    )


def build(url: str, rows: int, directory: Path, *, seed: int = 1) -> Path:
    """Create and fill the table on the MariaDB database at ``url``; the plan file's path."""
    engine, path = shadow_schema.build(url, rows, directory, seed=seed, make_table=customers_table)
    engine.dispose()
    return path


def migration(url: str, rows: int, directory: Path) -> Migration:
    """The reliability suite's ``Migration`` of the table built at ``url`` (a new keyring);
    the caller disposes its engines (:func:`dispose`)."""
    plan_path = build(url, rows, directory)
    return Migration(
        url=url,
        plan_path=plan_path,
        plan=load_plan(plan_path),
        keyring=Keyring.generate(),
        engine=connect(url, pool_size=6),
    )


def dispose(made: Migration) -> None:
    for engine in (made.engine, *made.engines):
        engine.dispose()


def prepare_on(
    server: str, request: pytest.FixtureRequest, prepare: Prepare, rows: int, directory: Path
) -> Migration:
    """The customers table at step 1 on ``server`` ("postgresql" through the reliability
    suite's ``prepare``, "mariadb" here), with ``rows`` rows; engines disposed at teardown."""
    if server == "postgresql":
        return prepare(request.getfixturevalue("pg_url"), rows)
    made = migration(str(request.getfixturevalue("mariadb_url")), rows, directory)
    request.addfinalizer(lambda: dispose(made))
    return made


SERVERS = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
