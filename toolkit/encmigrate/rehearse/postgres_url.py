"""A PostgreSQL URL as rehearse uses it: shown without its password, handed to libpq apart.

The source databases (``--schema-from``, ``--sample-from``) are only read:
``pg_dump`` gets the URL without its password on its command line (a command
line is visible to every user of the machine) and the password in
``PGPASSWORD``; psycopg gets it as a separate argument. Messages show
:attr:`PostgresUrl.display`, never the URL as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import psycopg
import sqlalchemy as sa

from encmigrate.errors import ConfigError

__all__ = ["PostgresUrl"]

CONNECT_TIMEOUT_S: Final = 10
APPLICATION_NAME: Final = "encmigrate rehearse"
_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"})


@dataclass(frozen=True)
class PostgresUrl:
    """A parsed ``postgresql://`` URL; ``option`` names where it came from, for messages."""

    url: sa.URL = field(repr=False)
    option: str

    @classmethod
    def parse(cls, raw: str, option: str) -> PostgresUrl:
        """Parse ``raw`` (given as ``option``); ConfigError, never echoing it, if it is not one."""
        try:
            url = sa.make_url(raw)
        except sa.exc.ArgumentError:
            raise ConfigError(
                f"{option} is not a database URL: give postgresql://user@host:port/database"
            ) from None
        if url.drivername not in _SCHEMES or not url.database:
            raise ConfigError(
                f"{option} must name a PostgreSQL database: postgresql://user@host:port/database"
            )
        return cls(url, option)

    @property
    def display(self) -> str:
        """The URL with its password masked."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)

    @property
    def libpq_uri(self) -> str:
        """The URL for libpq (pg_dump, psycopg), without the password."""
        return self.url.set(drivername="postgresql", password=None).render_as_string(
            hide_password=False
        )

    @property
    def password(self) -> str | None:
        return None if self.url.password is None else str(self.url.password)

    def connect(self, *, read_only: bool) -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg connection; ``read_only`` ones refuse every write (the server enforces it)."""
        connection = psycopg.connect(
            self.libpq_uri,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
            password=self.password,  # None: libpq's own sources (PGPASSWORD, ~/.pgpass)
        )
        if read_only:
            connection.read_only = True
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return connection

    def __repr__(self) -> str:
        return f"PostgresUrl({self.display!r}, option={self.option!r})"
