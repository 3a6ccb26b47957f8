"""What the round trip compares: the schema, and a digest of every planned table's values."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from encmigrate import plan as plan_module
from encmigrate.tracking import failures

__all__ = ["Snapshot", "count_rows", "failure_count", "snapshot"]

READ_ROWS: Final = 5000


@dataclass(frozen=True, slots=True)
class Snapshot:
    schema: dict[str, Any]
    values: dict[str, str]

    def schema_changes(self, after: Snapshot) -> list[str]:
        """The names whose definition differs in ``after``."""
        keys = self.schema.keys() | after.schema.keys()
        return sorted(k for k in keys if self.schema.get(k) != after.schema.get(k))

    def value_changes(self, after: Snapshot) -> list[str]:
        """The planned tables whose values differ in ``after``."""
        return sorted(t for t, v in self.values.items() if after.values.get(t) != v)


def snapshot(engine: sa.Engine, plan: plan_module.Plan) -> Snapshot:
    """The schema of the database and a digest of every planned table's keys and values."""
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.exc.SAWarning)  # types SQLAlchemy does not know
        inspector = sa.inspect(conn)
        schemas = sorted({t.schema_name for t in plan.tables}, key=lambda s: s or "")
        schema: dict[str, Any] = {}
        for name in schemas:
            for table in inspector.get_table_names(schema=name):
                if table == "alembic_version":
                    continue
                # Sorted: the drop's downgrade re-adds the plaintext columns at the end.
                schema[f"{name}.{table}"] = (
                    sorted(
                        (c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table, schema=name)
                    ),
                    sorted(
                        (str(i["name"]), tuple(i["column_names"]))
                        for i in inspector.get_indexes(table, schema=name)
                    ),
                )
            schema[f"{name} views"] = sorted(inspector.get_view_names(schema=name))
        schema["triggers"] = sorted(str(r[0]) for r in conn.exec_driver_sql(_triggers(conn)))
        values = {t.table: _digest(conn, t) for t in plan.tables}
    return Snapshot(schema, values)


def _triggers(conn: sa.Connection) -> str:
    """The query of every trigger as ``table name``, per dialect."""
    if conn.dialect.name == "postgresql":
        return (
            "SELECT tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal"
        )
    return (  # MariaDB and MySQL: this database's triggers
        "SELECT CONCAT(EVENT_OBJECT_TABLE, ' ', TRIGGER_NAME) FROM information_schema.TRIGGERS "
        "WHERE TRIGGER_SCHEMA = DATABASE()"
    )


def _digest(conn: sa.Connection, table_plan: plan_module.TablePlan) -> str:
    table = sa.table(
        table_plan.table_name,
        *(sa.column(n) for n in (*table_plan.primary_key, *(c.column for c in table_plan.columns))),
        schema=table_plan.schema_name,
    )
    keys = [table.c[n] for n in table_plan.primary_key]
    digest = hashlib.sha256()
    rows = conn.execution_options(yield_per=READ_ROWS).execute(sa.select(*table.c).order_by(*keys))
    for row in rows:
        digest.update(json.dumps([_canonical(v) for v in row], default=str).encode())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, memoryview | bytearray | bytes):
        return bytes(value).hex()
    return repr(value)


def count_rows(engine: sa.Engine, plan: plan_module.Plan) -> int:
    """Rows in the planned tables."""
    with engine.connect() as conn:
        return sum(
            int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.table(t.table_name, schema=t.schema_name)
                    )
                ).scalar_one()
            )
            for t in plan.tables
        )


def failure_count(engine: sa.Engine) -> int:
    """Rows in the failures table (values that did not fit their planned type)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(failures)).scalar_one())
