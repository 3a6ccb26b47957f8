"""The Alembic project a rehearsal writes its revisions into: always a temporary one.

With the Alembic history, the user's ``alembic.ini`` and script directory are
copied and the copy's ini points at the copies, so the revisions land in the
copy and the user's tree is left as it was. With a schema taken from a
database or a dump, the history is neither applied nor used (the schema is
already there): the revisions go into an empty project made like ``encmigrate
init`` makes one, so the first revision has no parent.
"""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

from encmigrate.errors import ConfigError
from encmigrate.scaffold import init

__all__ = ["copy_alembic", "empty_project"]


def empty_project(into: Path) -> Path:
    """A fresh Alembic environment (``encmigrate init``'s) under ``into``; its ini path."""
    init(into / "project")
    return into / "project" / "alembic.ini"


def copy_alembic(ini: Path, into: Path) -> Path:
    """A copy of ``ini`` and its script directory under ``into``; the copy's ini path.

    Alembic writes revisions into the script directory (and its
    ``version_locations``): pointing the copied ini at copies keeps the
    user's tree untouched.
    """
    if not ini.is_file():
        raise ConfigError(
            f"no Alembic config at {ini}: run `encmigrate init`, set [alembic] config, "
            "or take the schema from a database with --schema-from"
        )
    parser = configparser.RawConfigParser()
    parser.read(ini, encoding="utf-8")
    if not parser.has_option("alembic", "script_location"):
        raise ConfigError(f"{ini}: [alembic] script_location is missing")
    here = str(ini.parent.resolve())

    def located(raw: str) -> Path:
        path = Path(raw.replace("%(here)s", here))
        if path.is_absolute():
            return path
        return path.resolve() if path.exists() else (ini.parent / path).resolve()

    source = located(parser.get("alembic", "script_location"))
    if not source.is_dir():
        raise ConfigError(f"{ini}: script_location {source} is not a directory")
    shutil.copytree(source, into / "script", ignore=shutil.ignore_patterns("__pycache__"))
    parser.set("alembic", "script_location", _escape(into / "script"))
    if parser.has_option("alembic", "version_locations"):
        separator = parser.get("alembic", "path_separator", fallback="space")
        raw = parser.get("alembic", "version_locations")
        parts = raw.split(os.pathsep) if separator == "os" else raw.replace(",", " ").split()
        copies = []
        for index, part in enumerate(p for p in parts if p.strip()):
            copy = into / f"versions_{index}"
            origin = located(part.strip())
            if origin.is_dir():
                shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                copy.mkdir()
            copies.append(_escape(copy))
        parser.set("alembic", "path_separator", "os")
        parser.set("alembic", "version_locations", os.pathsep.join(copies))
    copied = into / "alembic.ini"
    with copied.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return copied


def _escape(path: Path) -> str:
    return str(path).replace("%", "%%")
