"""A customers table in the state step 1 leaves it: plaintext, shadow columns, trigger, tracking.

The shadow columns and the trigger come from the product's own code
(``encmigrate.revisions.triggers`` and ``encmigrate.tracking``), so the
migrator is tested against exactly what ``add-columns`` installs.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from encmigrate import plan as plan_module
from encmigrate.revisions.triggers import ShadowColumn, install_trigger_statements
from encmigrate.tracking import metadata as tracking_metadata

PLAN = """
[database]
url = "{url}"

[[columns]]
table = "customers"
column = "email"
type = "string"
searchable = true
normalize = "lower"

[[columns]]
table = "customers"
column = "balance"
type = "numeric"

[[columns]]
table = "customers"
column = "born"
type = "date"

[[columns]]
table = "customers"
column = "profile"
type = "json"
"""

SHADOWS = [
    ShadowColumn("email", "email_encrypted", "email_search"),
    ShadowColumn("balance", "balance_encrypted"),
    ShadowColumn("born", "born_encrypted"),
    ShadowColumn("profile", "profile_encrypted"),
]


def customers_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(200)),
        sa.Column("balance", sa.Numeric(14, 2)),
        sa.Column("born", sa.Date),
        sa.Column("profile", sa.JSON),
        sa.Column("email_encrypted", sa.LargeBinary),
        sa.Column("email_search", sa.LargeBinary, index=True),
        sa.Column("balance_encrypted", sa.LargeBinary),
        sa.Column("born_encrypted", sa.LargeBinary),
        sa.Column("profile_encrypted", sa.LargeBinary),
    )


def sample_row(i: int, rng: random.Random) -> dict[str, Any]:
    names = ["zoë", "łukasz", "amélie", "søren", "chidi", "mei"]
    return {
        "id": i,
        "email": None if i % 97 == 0 else f"{rng.choice(names)}.{i}@Example.com",
        "balance": Decimal(rng.randrange(-10_000_00, 10_000_00)) / 100,
        "born": dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20_000)),
        "profile": {"tier": rng.choice(["gold", "free"]), "tags": [i % 3, "ü"]},
    }


def install_trigger(conn: sa.Connection) -> None:
    for statement in install_trigger_statements(conn.dialect, "customers", SHADOWS):
        conn.exec_driver_sql(statement)


def build(
    url: str,
    rows: int,
    directory: Path,
    *,
    seed: int = 1,
    make_table: Callable[[sa.MetaData], sa.Table] | None = None,
) -> tuple[sa.Engine, Path]:
    """Create and fill the table (``make_table``: another database's column types); returns
    an engine and the plan file's path."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = (make_table or customers_table)(metadata)
    metadata.create_all(engine)
    tracking_metadata.create_all(engine)
    rng = random.Random(seed)
    with engine.begin() as conn:
        install_trigger(conn)
        for start in range(1, rows + 1, 5000):
            conn.execute(
                table.insert(),
                [sample_row(i, rng) for i in range(start, min(start + 5000, rows + 1))],
            )
    path = directory / "encmigrate.toml"
    path.write_text(PLAN.format(url=url))
    return engine, path


def load_plan(path: Path) -> plan_module.Plan:
    return plan_module.load(path, environ={})
