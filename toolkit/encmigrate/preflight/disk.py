"""The disk check: what the shadow columns, token indexes and WAL will take, against free space.

The figures come from a sample of each planned table (its first
:data:`SAMPLE_ROWS` rows) and the row count the database keeps (PostgreSQL's
``reltuples``; a count on SQLite), so the check stays quick on a large table.
Free space is measured where this host can see the database's files: the
SQLite file's folder, or a PostgreSQL data directory on this host that this
user may read. A remote server's disk is not visible from a client.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from encmigrate.plan import TablePlan
from encmigrate.preflight.model import Check, Verdict
from encmigrate.preflight.size import (
    ColumnSample,
    SizeEstimate,
    TableSample,
    estimate,
    human_bytes,
)

__all__ = ["LOCAL_HOSTS", "SAMPLE_ROWS", "check_disk", "qualified", "readable", "sample_table"]

SAMPLE_ROWS = 10_000
# Hosts that are this machine: only then may a PostgreSQL data directory be looked at here.
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
# Above this share of the free space the check warns: old row versions and the next
# step's indexes need room too.
WARN_SHARE = 0.5


def qualified(conn: sa.Connection, table: TablePlan) -> str:
    prep = conn.dialect.identifier_preparer
    name = prep.quote(table.table_name)
    return f"{prep.quote_schema(table.schema_name)}.{name}" if table.schema_name else name


def readable(conn: sa.Connection, table: TablePlan) -> bool:
    """Whether ``table`` exists and this role may read it (a refused read ends the transaction)."""
    if not sa.inspect(conn).has_table(table.table_name, schema=table.schema_name):
        return False
    if conn.dialect.name != "postgresql":
        return True
    return bool(
        conn.execute(
            sa.text("SELECT has_table_privilege(:name, 'SELECT')"),
            {"name": qualified(conn, table)},
        ).scalar()
    )


def sample_table(conn: sa.Connection, table: TablePlan) -> TableSample:
    """Rows, row width and per-column figures of ``table`` (which :func:`readable` allows)."""
    name = qualified(conn, table)
    prep = conn.dialect.identifier_preparer
    postgres = conn.dialect.name == "postgresql"
    # The plaintext of a dropped column is gone: it has nothing to backfill.
    live = {c["name"] for c in sa.inspect(conn).get_columns(table.table_name, table.schema_name)}
    columns = [c for c in table.columns if c.column in live]
    parts = ["count(*)", "avg(pg_column_size(s.*))" if postgres else "0"]
    for column in columns:
        quoted = "s." + prep.quote(column.column)
        length = (
            f"octet_length(CAST({quoted} AS text))"
            if postgres
            else (f"length(CAST({quoted} AS BLOB))")
        )
        parts += [f"count({quoted})", f"avg({length})"]
    sql = f"SELECT {', '.join(parts)} FROM (SELECT * FROM {name} LIMIT {SAMPLE_ROWS}) AS s"
    found = conn.exec_driver_sql(sql).one()
    sampled = int(found[0])
    samples = tuple(
        ColumnSample(
            non_null=int(found[2 + 2 * i]) / sampled if sampled else 0.0,
            average_bytes=float(found[3 + 2 * i] or 0),
            searchable=column.searchable,
            text=column.storage == "text",
        )
        for i, column in enumerate(columns)
    )
    return TableSample(_rows(conn, name, sampled), float(found[1] or 0), samples)


def _rows(conn: sa.Connection, name: str, sampled: int) -> int:
    """The table's rows: the sample when it is the whole table, else the planner's count."""
    if sampled < SAMPLE_ROWS:
        return sampled
    if conn.dialect.name == "postgresql":
        kept = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
            {"name": name},
        ).scalar()
        if kept is not None and kept > 0:
            return int(kept)
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() or 0)


def check_disk(conn: sa.Connection, tables: Sequence[TablePlan], url: sa.URL) -> Check:
    """The estimate, compared with the free space when this host can see it."""
    total = SizeEstimate()
    unread: list[str] = []
    for table in tables:
        if readable(conn, table):
            total += estimate(sample_table(conn, table))
        else:
            unread.append(table.table)
    postgres = conn.dialect.name == "postgresql"
    # SQLite's journal holds one batch at a time: the file grows by the shadows and indexes.
    needed = total.total if postgres else total.shadow + total.indexes
    figure = (
        f"estimate {human_bytes(needed)}: shadow columns {human_bytes(total.shadow)}, "
        f"token indexes {human_bytes(total.indexes)}"
        + (f", WAL {human_bytes(total.wal)}" if postgres else "")
    )
    if unread:
        figure += f" (without {', '.join(unread)}: not found or not readable)"
    where = _postgres_directory(conn, url) if postgres else _sqlite_directory(url)
    if where is None:
        return Check(
            "disk",
            Verdict.PASS,
            figure,
            "an estimate; free disk not visible from the client: check the server's disk "
            "(and that old row versions, kept until vacuum, fit too)",
        )
    free = shutil.disk_usage(where).free
    figure += f"; free {human_bytes(free)}"
    if needed > free:
        return Check("disk", Verdict.FAIL, figure, "the estimate exceeds the free space")
    if needed > free * WARN_SHARE:
        return Check(
            "disk",
            Verdict.WARN,
            figure,
            f"the estimate is over {WARN_SHARE:.0%} of the free space",
        )
    return Check("disk", Verdict.PASS, figure, "an estimate")


def _sqlite_directory(url: sa.URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    folder = Path(database).resolve().parent
    return folder if folder.is_dir() else None


def _postgres_directory(conn: sa.Connection, url: sa.URL) -> Path | None:
    """The server's data directory when it is on this host and readable here, else None.

    ``pg_settings`` shows ``data_directory`` only to roles allowed to read it;
    the directory's ``PG_VERSION`` must name the server's major version, so a
    path that merely exists here (a server in a container) is not taken for it.
    """
    host = url.host or ""
    if host not in LOCAL_HOSTS and not host.startswith("/"):
        return None
    found = conn.execute(
        sa.text(
            "SELECT setting, current_setting('server_version_num') FROM pg_settings "
            "WHERE name = 'data_directory'"
        )
    ).first()
    if found is None:
        return None
    directory = Path(found[0])
    try:
        marker = (directory / "PG_VERSION").read_text().strip()
    except OSError:
        return None
    return directory if marker == str(int(found[1]) // 10000) else None
