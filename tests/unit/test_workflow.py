"""The five-step workflow that ``demo`` and ``rehearse`` share, on a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from encmigrate.keys import Keyring
from encmigrate.migrate import MigrateOptions
from encmigrate.workflow import (
    MigrateOutcome,
    PlanSource,
    RevisionOutcome,
    Step,
    StepOutcome,
    VerifyOutcome,
    Workflow,
)
from support.revisions import column, execute, make_project

ROWS = 40


@pytest.fixture
def flow(tmp_path: Path, sqlite_url: str) -> Iterator[Workflow]:
    """A ``people`` table of ``ROWS`` rows, planned for two columns, at step 0."""
    execute(
        sqlite_url,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL, note TEXT)",
        *(
            f"INSERT INTO people VALUES ({i}, 'p{i}@example.com', "
            f"{'NULL' if i % 4 == 0 else repr(f'note {i}')})"
            for i in range(1, ROWS + 1)
        ),
    )
    project = make_project(
        tmp_path / "project",
        sqlite_url,
        column("people", "email", searchable=True, normalize="lower") + column("people", "note"),
    )
    engine = sa.create_engine(sqlite_url)
    try:
        yield Workflow(
            PlanSource(project.plan_file), engine, Keyring.generate(), MigrateOptions(batch_size=15)
        )
    finally:
        engine.dispose()


def _columns(flow: Workflow) -> set[str]:
    return {c["name"] for c in sa.inspect(flow.engine).get_columns("people")}


def _rows(flow: Workflow) -> list[tuple[object, ...]]:
    with flow.engine.connect() as connection:
        return [tuple(r) for r in connection.exec_driver_sql("SELECT id, email, note FROM people")]


def test_the_five_steps_run_in_order_and_tell_each_outcome(flow: Workflow) -> None:
    before = _rows(flow)
    told: list[StepOutcome] = []
    outcomes = flow.run_all(on_step=told.append)

    assert told == outcomes
    assert [type(o) for o in outcomes] == [
        RevisionOutcome,
        MigrateOutcome,
        VerifyOutcome,
        RevisionOutcome,
        RevisionOutcome,
    ]
    revisions = [o for o in outcomes if isinstance(o, RevisionOutcome)]
    assert [o.step for o in revisions] == [
        Step.ADD_COLUMNS,
        Step.CREATE_VIEWS,
        Step.DROP_UNENCRYPTED,
    ]
    assert all(o.revision.applied and o.revision.revision for o in revisions)
    migrated = outcomes[1]
    assert isinstance(migrated, MigrateOutcome)
    assert migrated.rows_done == ROWS and migrated.rate >= 0
    verified = outcomes[2]
    assert isinstance(verified, VerifyOutcome)
    assert verified.ok and verified.rows_checked == 2 * ROWS
    assert {"email", "note"}.isdisjoint(_columns(flow))
    assert {"email_encrypted", "email_search", "note_encrypted"} <= _columns(flow)

    # The way back: the drop's downgrade re-adds the columns empty, decrypt-back refills them.
    flow.downgrade()
    assert flow.decrypt_back().rows_done == ROWS
    assert flow.verify().ok
    assert _rows(flow) == before


def test_a_dry_run_measures_step_2_and_writes_nothing(flow: Workflow) -> None:
    assert flow.run(Step.ADD_COLUMNS).step is Step.ADD_COLUMNS
    dry = flow.dry_run()
    assert dry.rows_done == ROWS
    with flow.engine.connect() as connection:
        written = connection.exec_driver_sql(
            "SELECT count(*) FROM people WHERE email_encrypted IS NOT NULL"
        ).scalar_one()
    assert written == 0
    assert isinstance(flow.run(Step.MIGRATE_DATA), MigrateOutcome)


def test_a_step_reads_the_plan_as_the_schema_is_now(flow: Workflow) -> None:
    """A plan read before add-columns would refuse create-views: each step reads its own."""
    flow.add_columns()
    flow.migrate_data()
    flow.verify()
    assert flow.create_views().step is Step.CREATE_VIEWS


def test_the_plan_source_can_replace_the_alembic_project(flow: Workflow, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "alembic.ini"
    source = PlanSource(flow.source.path, alembic_config=copy)
    assert source.load().alembic_config == copy
    assert flow.plan().alembic_config != copy


def test_each_step_is_named_by_its_command() -> None:
    assert [step.command for step in Step] == [
        "add-columns --apply",
        "migrate-data",
        "verify",
        "create-views --apply",
        "drop-unencrypted --confirm --apply",
    ]
