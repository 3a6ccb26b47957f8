"""Where the database URL comes from, and how it is shown.

:func:`resolve_database_url` is shared with the ``env.py`` that ``encmigrate
init`` writes, so that ``alembic upgrade`` and ``encmigrate ... --apply`` reach
the same database. :func:`safe_url` (which masks the password for messages and
logs) lives in :mod:`encmigrate.database` and is re-exported here.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

from encmigrate.config import ConfigFile, find_config
from encmigrate.database import NO_DATABASE_URL, safe_url
from encmigrate.errors import ConfigError

__all__ = ["DATABASE_URL_ENV", "resolve_database_url", "safe_url", "url_origin"]

DATABASE_URL_ENV = "ENCMIGRATE_DATABASE_URL"
# alembic init writes this placeholder; it names no database.
_ALEMBIC_PLACEHOLDER_URL = "driver://user:pass@localhost/dbname"


def resolve_database_url(
    explicit: str | None = None,
    *,
    config: ConfigFile | None = None,
    environ: Mapping[str, str] | None = None,
    alembic_ini: str | os.PathLike[str] | None = None,
    alembic_url: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    required: bool = True,
) -> str | None:
    """The database URL in force: the first of these places that has one.

    ``explicit`` (``--database-url``) > ``ENCMIGRATE_DATABASE_URL`` > the plan's
    ``[database] url`` > ``sqlalchemy.url`` of the Alembic config. ``alembic_url``
    is that last value when the caller already has it (``env.py`` passes its
    ``config.get_main_option("sqlalchemy.url")``); otherwise ``alembic_ini`` or the
    plan's ``[alembic] config`` (or ``./alembic.ini``) is read. ``config`` is
    looked up with :func:`find_config` when not given. Raises ConfigError naming
    the four places when none has a URL and ``required``.
    """
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    if env.get(DATABASE_URL_ENV):
        return env[DATABASE_URL_ENV]
    if config is None:
        config = find_config(environ=env, cwd=cwd)
    database = config.table.get("database") if config is not None else None
    if isinstance(database, Mapping) and isinstance(database.get("url"), str):
        url: str = database["url"]
        if url:
            return url
    if alembic_url is None:
        ini = _alembic_ini_path(config, alembic_ini, cwd)
        alembic_url = _read_alembic_url(ini)
    if alembic_url and alembic_url != _ALEMBIC_PLACEHOLDER_URL:
        return alembic_url
    if not required:
        return None
    raise ConfigError(NO_DATABASE_URL)


def _alembic_ini_path(
    config: ConfigFile | None,
    explicit: str | os.PathLike[str] | None,
    cwd: str | os.PathLike[str] | None,
) -> Path:
    if explicit is not None:
        return Path(explicit)
    if config is not None:
        alembic = config.table.get("alembic")
        name = alembic.get("config") if isinstance(alembic, Mapping) else None
        return config.directory / (name if isinstance(name, str) and name else "alembic.ini")
    return (Path.cwd() if cwd is None else Path(cwd)) / "alembic.ini"


def _read_alembic_url(ini: Path) -> str | None:
    if not ini.is_file():
        return None
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        return parser.get("alembic", "sqlalchemy.url", fallback=None) or None
    except configparser.Error:
        # Not the parser's text: it quotes the line, which holds the URL and its password
        # (a `%` in a password is a configparser interpolation error).
        raise ConfigError(
            f"{ini}: cannot read sqlalchemy.url (write a literal % as %%, or set "
            "ENCMIGRATE_DATABASE_URL instead)"
        ) from None


def url_origin(found: ConfigFile, url: str) -> str | None:
    """``<plan>: database.url`` when the URL is the plan's own, else None (set elsewhere)."""
    database = found.table.get("database")
    if isinstance(database, dict) and database.get("url") == url:
        return found.where("database.url")
    return None
