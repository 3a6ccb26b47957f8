"""The rehearsal itself: the schema, the rows, the five steps and every downgrade, timed.

Each step runs inside :meth:`Rehearsal.step`, which times it, records a
:class:`StepResult` and, on an error or a ``PROBLEM`` line, records the
problem and ends the rehearsal (later steps build on earlier ones). One
exception: when drop-unencrypted is *refused* (something depends on a
plaintext column, as the real run would find), nothing was written, so the
rehearsal goes on with the downgrades of create-views and add-columns and the
round trip, and still exits 5.

The five steps themselves are run by :class:`encmigrate.workflow.Workflow`,
the object ``encmigrate demo`` runs too; what this module puts around them
(the schema and rows, the dry run, the checks, the downgrades) is the
rehearsal's own.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import assert_never

import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError

from encmigrate import plan as plan_module
from encmigrate.errors import ConfigError, DatabaseError, EncmigrateError, RefusedError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate import MigrateOptions, connect
from encmigrate.migrate.pipeline import QUICK_SWITCH_INTERVAL
from encmigrate.rehearse.generated_rows import generate_rows
from encmigrate.rehearse.postgres_url import PostgresUrl
from encmigrate.rehearse.report import RehearsalReport, RehearseOptions, StepCallback, StepResult
from encmigrate.rehearse.sampled_rows import copy_sample
from encmigrate.rehearse.schema_source import dump_schema, read_schema_file
from encmigrate.rehearse.snapshot import count_rows, failure_count, snapshot
from encmigrate.rehearse.sql_script import read_script, run_script
from encmigrate.revisions.generate import ALEMBIC_URL_ATTRIBUTE, quiet_config
from encmigrate.workflow import (
    MigrateOutcome,
    PlanSource,
    RevisionOutcome,
    Step,
    StepOutcome,
    VerifyOutcome,
    Workflow,
)

__all__ = ["Rehearsal"]

logger = logging.getLogger(__name__)


class _StepFailedError(Exception):
    """A step found a problem; the rehearsal stops (later steps build on it)."""


class Rehearsal:
    """One rehearsal on the database at ``url``, with its Alembic project at ``ini``."""

    def __init__(
        self,
        plan_path: Path,
        url: str,
        ini: Path,
        environ: dict[str, str],
        options: RehearseOptions,
        report: RehearsalReport,
        on_step: StepCallback | None,
    ) -> None:
        self.plan_path = plan_path
        self.url = url
        self.ini = ini
        self.environ = environ
        self.source = PlanSource(plan_path, environ, url, ini)
        self.opts = options
        self.report = report
        self.on_step = on_step
        self.keyring = Keyring.generate()  # throwaway: the user's keys never come near CI
        self.engine = connect(url, workers=options.workers)
        self.failure: EncmigrateError | None = None

    @functools.cached_property
    def target(self) -> PostgresUrl:
        """The rehearsal database for ``psql`` (schema files, ``--load``, samples): PostgreSQL."""
        if self.engine.dialect.name != "postgresql":
            raise ConfigError(
                "--schema-from, --schema-file, --load and --sample-from rehearse on PostgreSQL "
                f"only; this rehearsal runs on {self.engine.dialect.name}"
            )
        return PostgresUrl.parse(self.url, "the rehearsal database")

    def plan(self) -> plan_module.Plan:
        """The plan checked against the rehearsal database, its Alembic config the copy."""
        return self.source.load()

    def run(self) -> None:
        try:
            self._steps()
        except _StepFailedError:
            pass
        finally:
            self.engine.dispose()

    @contextmanager
    def step(self, name: str, *, quote_errors: bool = False) -> Iterator[list[str]]:
        """Time a step; an error ends the rehearsal with its message and exit code.

        Database messages can quote row values, so they are shown only for the
        steps that run the user's own DDL (``quote_errors``); otherwise the
        SQLSTATE and the error class.
        """
        detail: list[str] = []
        started = time.monotonic()
        failure: EncmigrateError | None = None
        try:
            yield detail
        except EncmigrateError as exc:
            failure = exc
        except sa.exc.SQLAlchemyError as exc:
            failure = DatabaseError(f"database error ({_error_kind(exc, quote_errors)})")
        except CommandError as exc:
            failure = ConfigError(f"alembic: {exc}")
        seconds = time.monotonic() - started
        if failure is None and not any(line.startswith("PROBLEM") for line in detail):
            self._record(StepResult(name, seconds, True, "; ".join(detail)))
            return
        self.failure = failure
        if failure is not None:
            message = _message(failure)
            self.report.exit_code = self.report.exit_code or failure.exit_code
        else:
            message = "; ".join(
                line.removeprefix("PROBLEM ") for line in detail if line.startswith("PROBLEM")
            )
            self.report.exit_code = self.report.exit_code or 1
        self.report.problems.append(f"{name}: {message}")
        self._record(StepResult(name, seconds, False, message))
        raise _StepFailedError(name)

    def _record(self, result: StepResult) -> None:
        self.report.steps.append(result)
        logger.info(
            "rehearse: %s %s in %.2fs", result.name, "ok" if result.ok else "FAILED", result.seconds
        )
        if self.on_step is not None:
            self.on_step(result)

    # -- the steps -----------------------------------------------------------------

    def _steps(self) -> None:
        self._schema()
        self._rows()
        with self.step("plan check") as detail:
            plan = self.plan()
            self.report.warnings += [str(w) for w in plan.warnings]
            self.report.rows = count_rows(self.engine, plan)
            detail.append(f"{len(plan.columns)} columns, {self.report.rows:,} rows")
            before = snapshot(self.engine, plan)
        options = MigrateOptions(
            batch_size=self.opts.batch_size or plan.migration.batch_size,
            workers=self.opts.workers,
            gil_interval=QUICK_SWITCH_INTERVAL,  # as the CLI's migrate-data runs
        )
        flow = Workflow(self.source, self.engine, self.keyring, options)
        if self._five_steps(flow):
            with self.step("verify (plaintext dropped)") as detail:
                detail += _verdict_lines(flow.verify())
            with self.step("downgrade drop-unencrypted, decrypt-back") as detail:
                flow.downgrade()
                detail.append(f"{flow.decrypt_back().rows_done:,} rows restored")
            with self.step("verify (plaintext restored)") as detail:
                detail += _verdict_lines(flow.verify())
        with self.step("downgrade create-views"):
            flow.downgrade()
        with self.step("downgrade add-columns"):
            flow.downgrade()
        with self.step("round trip (schema and values as before)") as detail:
            after = snapshot(self.engine, plan)
            changed = before.schema_changes(after)
            if changed:
                detail.append(f"PROBLEM schema differs from before add-columns: {changed}")
            altered = before.value_changes(after)
            if altered:
                detail.append(f"PROBLEM planned values differ from before add-columns: {altered}")

    def _five_steps(self, flow: Workflow) -> bool:
        """The five steps, each timed; False when step 5 was refused (the downgrades follow)."""
        for step in Step:
            if step is Step.MIGRATE_DATA:
                self._dry_run(flow)
            try:
                with self.step(step.command) as detail:
                    detail += self._detail(flow.run(step))
            except _StepFailedError:
                if step is Step.DROP_UNENCRYPTED and isinstance(self.failure, RefusedError):
                    return False
                raise
        return True

    def _detail(self, outcome: StepOutcome) -> list[str]:
        """A step's detail lines (``PROBLEM`` ones fail it), recording what the report keeps."""
        match outcome:
            case RevisionOutcome(revision=result):
                self.report.warnings += [n for n in result.notes if not n.startswith("then:")]
                return []
            case MigrateOutcome():
                self.report.rows_migrated = outcome.rows_done
                self.report.rate = outcome.rate
                lines = [f"{outcome.rows_done:,} rows, {self.report.rate:,.0f} rows/s"]
                failed = failure_count(self.engine)
                if failed:
                    lines.append(
                        f"PROBLEM {failed} values do not fit their planned type "
                        "(see encryption_migration_failures)"
                    )
                return lines
            case VerifyOutcome():
                return _verdict_lines(outcome)
            case _:
                assert_never(outcome)

    def _dry_run(self, flow: Workflow) -> None:
        with self.step("migrate-data --dry-run") as detail:
            dry = flow.dry_run()
            self.report.dry_run_rate = dry.rate
            detail.append(f"{dry.rows_done:,} rows rolled back, {dry.rate:,.0f} rows/s")

    def _schema(self) -> None:
        """The schema: the user's Alembic history, or a real database's, or a dump's."""
        if self.opts.schema_from is not None:
            source = PostgresUrl.parse(self.opts.schema_from, "--schema-from")
            with self.step(
                f"schema from {source.display} (pg_dump --schema-only)", quote_errors=True
            ):
                run_script(self.target, dump_schema(source, self.environ), "--schema-from")
        elif self.opts.schema_file is not None:
            path = self.opts.schema_file
            with self.step(f"schema from {path.name}", quote_errors=True):
                run_script(self.target, read_schema_file(path), "--schema-file")
        else:
            with self.step("alembic upgrade head (your history)", quote_errors=True):
                config = quiet_config(self.ini)
                config.attributes[ALEMBIC_URL_ATTRIBUTE] = self.url
                config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
                command.upgrade(config, "head")

    def _rows(self) -> None:
        """The rows: a SQL file, then generated rows or a sample of real ones."""
        if self.opts.load is not None:
            with self.step(f"load {self.opts.load.name}"):
                run_script(self.target, read_script(self.opts.load, "--load"), "--load")
        offline = plan_module.load(self.plan_path, environ=self.environ, check_database=False)
        count = self.opts.generated_rows
        if count:
            with self.step(f"generate {count:,} rows per table"):
                rng = random.Random(self.opts.seed)  # noqa: S311  (test data, not keys)
                self.report.warnings += generate_rows(self.engine, offline, count, rng)
        if self.opts.sample_from is not None:
            source = PostgresUrl.parse(self.opts.sample_from, "--sample-from")
            wanted = self.opts.sample_rows
            with self.step(
                f"sample {wanted:,} rows per planned table from {source.display}"
            ) as detail:
                sample = copy_sample(
                    source, self.target, self.engine, offline, wanted, seed=self.opts.seed
                )
                detail.append(
                    f"{sample.total:,} real rows copied, {sample.referenced:,} of them "
                    "referenced by others"
                )


def _message(failure: EncmigrateError) -> str:
    """One line; a refusal keeps every line (it lists what the real run would hit)."""
    lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
    if not lines:
        return type(failure).__name__
    if isinstance(failure, RefusedError):
        return " ".join(lines)
    return lines[0]


def _verdict_lines(outcome: VerifyOutcome) -> list[str]:
    lines = [f"{len(outcome.verdicts)} columns, {outcome.rows_checked:,} values checked"]
    lines += [f"PROBLEM {v.table}.{v.column}: {v.summary()}" for v in outcome.verdicts if not v.ok]
    return lines


def _error_kind(exc: BaseException, quote: bool) -> str:
    original = getattr(exc, "orig", None) or exc
    state = getattr(original, "sqlstate", None)
    kind = f"SQLSTATE {state} {type(original).__name__}" if state else type(original).__name__
    lines = str(original).strip().splitlines()
    return f"{kind}: {lines[0][:200]}" if quote and lines else kind
