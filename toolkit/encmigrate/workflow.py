"""The five steps as one object, shared by ``encmigrate demo`` and ``encmigrate rehearse``.

A :class:`Workflow` knows what a run of the five steps needs (where the plan
and its Alembic project are, the engine, the keyring, the migrate options) and
runs one step (:meth:`Workflow.run`) or all of them (:meth:`Workflow.run_all`)
exactly as the commands ``add-columns --apply``, ``migrate-data``, ``verify``,
``create-views --apply`` and ``drop-unencrypted --confirm --apply`` do. Each
step returns a typed outcome; nothing here prints. What surrounds the steps
stays with the caller: the demo's sample table and rendering in ``cli/demo.py``,
the rehearsal's schema, rows, snapshots, checks and timing in ``rehearse/``.

The plan is read afresh for every step, because every step changes the live
schema it is checked against (a planned column goes from plain to shadowed to
dropped): a plan read before add-columns would refuse create-views. Alembic
is imported by the steps that write a revision, not with this module, so the
CLI can import it at start-up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from encmigrate import plan as plan_module
from encmigrate.migrate import MigrateOptions, TableReport, decrypt_back, migrate_data, verify

if TYPE_CHECKING:
    import sqlalchemy as sa

    from encmigrate.keys.keyring import Keyring
    from encmigrate.migrate.report import ProgressCallback
    from encmigrate.migrate.verify import ColumnVerdict
    from encmigrate.revisions import RevisionResult

__all__ = [
    "MigrateOutcome",
    "PlanSource",
    "RevisionOutcome",
    "Step",
    "StepOutcome",
    "VerifyOutcome",
    "Workflow",
]


class Step(enum.IntEnum):
    """The five steps, numbered as the docs and the commands number them."""

    ADD_COLUMNS = 1
    MIGRATE_DATA = 2
    VERIFY = 3
    CREATE_VIEWS = 4
    DROP_UNENCRYPTED = 5

    @property
    def command(self) -> str:
        """The command (without ``encmigrate``) that runs this step by hand: its shown name."""
        return _COMMANDS[self]


_COMMANDS: Final[dict[Step, str]] = {
    Step.ADD_COLUMNS: "add-columns --apply",
    Step.MIGRATE_DATA: "migrate-data",
    Step.VERIFY: "verify",
    Step.CREATE_VIEWS: "create-views --apply",
    Step.DROP_UNENCRYPTED: "drop-unencrypted --confirm --apply",
}


@dataclass(frozen=True, slots=True)
class PlanSource:
    """Where a workflow's plan is read from, and what it is checked against.

    ``database_url`` (None: the plan's own lookup) is the database the plan is
    checked against; ``alembic_config`` (None: the plan's) replaces the plan's
    Alembic project, as the rehearsal does to write into a temporary copy.
    The URL may hold a password: it is kept out of ``repr``.
    """

    path: Path
    environ: Mapping[str, str] = field(default_factory=dict)
    database_url: str | None = field(default=None, repr=False)
    alembic_config: Path | None = None

    def load(self) -> plan_module.Plan:
        """The plan as the live schema is now."""
        loaded = plan_module.load(self.path, database_url=self.database_url, environ=self.environ)
        if self.alembic_config is None:
            return loaded
        return loaded.model_copy(update={"alembic_config": self.alembic_config})


@dataclass(frozen=True, slots=True)
class RevisionOutcome:
    """Step 1, 4 or 5: the Alembic revision written and applied."""

    step: Step
    revision: RevisionResult


@dataclass(frozen=True, slots=True)
class MigrateOutcome:
    """A batch run (step 2, its dry run, or decrypt-back): one report per planned table."""

    reports: tuple[TableReport, ...]

    @property
    def rows_done(self) -> int:
        return sum(report.rows_done for report in self.reports)

    @property
    def seconds(self) -> float:
        return sum(report.seconds for report in self.reports)

    @property
    def rate(self) -> float:
        """Rows per second over the whole run (0 when it took no measurable time)."""
        seconds = self.seconds
        return self.rows_done / seconds if seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """Step 3: one verdict per planned column."""

    verdicts: tuple[ColumnVerdict, ...]

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.verdicts)

    @property
    def rows_checked(self) -> int:
        return sum(verdict.rows_checked for verdict in self.verdicts)


StepOutcome = RevisionOutcome | MigrateOutcome | VerifyOutcome
"""What :meth:`Workflow.run` returns: its type says which kind of step ran."""


@dataclass(frozen=True, slots=True)
class Workflow:
    """The five steps of one plan on one database, with one keyring and one set of options.

    ``options`` are the migrate options of step 2 and of decrypt-back; the
    dry run keeps only their batch size, as ``migrate-data --dry-run`` would.
    """

    source: PlanSource
    engine: sa.Engine
    keyring: Keyring
    options: MigrateOptions = field(default_factory=MigrateOptions)

    def plan(self) -> plan_module.Plan:
        """The plan, read now (see the module docstring)."""
        return self.source.load()

    def run(self, step: Step, progress: ProgressCallback | None = None) -> StepOutcome:
        """Run one step; ``progress`` is reported to by step 2 only."""
        if step is Step.ADD_COLUMNS:
            return self.add_columns()
        if step is Step.MIGRATE_DATA:
            return self.migrate_data(progress)
        if step is Step.VERIFY:
            return self.verify()
        if step is Step.CREATE_VIEWS:
            return self.create_views()
        return self.drop_unencrypted()

    def run_all(
        self,
        *,
        progress: ProgressCallback | None = None,
        on_step: Callable[[StepOutcome], None] | None = None,
    ) -> list[StepOutcome]:
        """Run the five steps in order, telling ``on_step`` after each; an error stops the run."""
        outcomes = []
        for step in Step:
            outcome = self.run(step, progress)
            outcomes.append(outcome)
            if on_step is not None:
                on_step(outcome)
        return outcomes

    # -- the steps ------------------------------------------------------------------

    def add_columns(self) -> RevisionOutcome:
        """Step 1: shadow columns, indexes, tracking tables and trigger, applied."""
        from encmigrate import revisions  # Alembic: imported when a revision is written

        return RevisionOutcome(Step.ADD_COLUMNS, revisions.add_columns(self.plan(), apply=True))

    def migrate_data(self, progress: ProgressCallback | None = None) -> MigrateOutcome:
        """Step 2: encrypt every pending value into the shadow columns."""
        reports = migrate_data(
            self.plan(), self.engine, self.keyring, options=self.options, progress=progress
        )
        return MigrateOutcome(tuple(reports))

    def dry_run(self) -> MigrateOutcome:
        """Step 2 rolled back: its rate, with nothing written."""
        options = MigrateOptions(batch_size=self.options.batch_size, dry_run=True)
        reports = migrate_data(self.plan(), self.engine, self.keyring, options=options)
        return MigrateOutcome(tuple(reports))

    def verify(self) -> VerifyOutcome:
        """Step 3: every ciphertext decrypts, to its plaintext while there is one."""
        return VerifyOutcome(tuple(verify(self.plan(), self.engine, self.keyring)))

    def create_views(self) -> RevisionOutcome:
        """Step 4: a ``<table>_secure`` view per table, applied."""
        from encmigrate import revisions

        return RevisionOutcome(Step.CREATE_VIEWS, revisions.create_views(self.plan(), apply=True))

    def drop_unencrypted(self) -> RevisionOutcome:
        """Step 5: the plaintext columns dropped, applied (refused while something needs them)."""
        from encmigrate import revisions

        result = revisions.drop_unencrypted(self.plan(), confirm=True, apply=True)
        return RevisionOutcome(Step.DROP_UNENCRYPTED, result)

    # -- the way back ---------------------------------------------------------------

    def downgrade(self) -> None:
        """Undo the last applied revision (``alembic downgrade -1`` on the plan's project)."""
        from alembic import command

        from encmigrate.revisions.generate import alembic_config

        command.downgrade(alembic_config(self.plan()), "-1")

    def decrypt_back(self) -> MigrateOutcome:
        """Refill plaintext columns re-added by a downgrade of step 5 from the ciphertext."""
        reports = decrypt_back(self.plan(), self.engine, self.keyring, options=self.options)
        return MigrateOutcome(tuple(reports))
