"""What a rehearsal is asked to do (:class:`RehearseOptions`) and what it found (the report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from encmigrate.errors import ConfigError

__all__ = [
    "BACKENDS",
    "DEFAULT_ROWS",
    "RehearsalReport",
    "RehearseOptions",
    "StepCallback",
    "StepResult",
]

# Rows per table when the schema comes from a real database and no rows were asked for.
DEFAULT_ROWS: Final = 300


#: The kinds of throwaway database a rehearsal can run on.
BACKENDS: Final = ("postgresql", "mariadb")


@dataclass(frozen=True, slots=True)
class RehearseOptions:
    """What to rehearse with.

    The schema comes from the plan's Alembic history, or from a real database
    (``schema_from``, a PostgreSQL URL read with ``pg_dump --schema-only``) or
    a schema dump (``schema_file``). Rows come from ``load`` (a SQL file),
    ``rows`` generated ones per table, or ``sample_rows`` real rows per planned
    table copied from ``sample_from``. ``rows`` left at None means 0 with the
    history and :data:`DEFAULT_ROWS` with a schema source (unless ``load`` or
    ``sample_from`` brings the rows). ``production_rows`` only feeds the ETA.
    URLs may hold a password: they are kept out of ``repr``. ``backend`` is the
    throwaway database's kind (``postgresql`` or ``mariadb``); None: the family of
    the plan's database URL, PostgreSQL when it has none. The schema sources,
    ``load`` and ``sample_from`` need PostgreSQL.
    """

    load: Path | None = None
    rows: int | None = None
    production_rows: int | None = None
    batch_size: int | None = None
    workers: int = 1
    seed: int = 0
    schema_from: str | None = field(default=None, repr=False)
    schema_file: Path | None = None
    sample_from: str | None = field(default=None, repr=False)
    sample_rows: int = DEFAULT_ROWS
    backend: str | None = None

    def __post_init__(self) -> None:
        for name in ("load", "schema_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))  # a str from a Python caller
        if self.schema_from is not None and self.schema_file is not None:
            raise ConfigError("--schema-from and --schema-file both give the schema: pass one")
        if self.sample_from is not None and self.rows:
            raise ConfigError(
                "--rows and --sample-from both fill the tables: pass one (generated or real rows)"
            )
        if self.rows is not None and self.rows < 0:
            raise ConfigError("--rows must be 0 or more")
        if self.sample_rows < 1:
            raise ConfigError("--sample-rows must be 1 or more")
        if self.backend not in (None, *BACKENDS):
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}")
        needs_postgres = self.schema_source or self.load or self.sample_from
        if self.backend == "mariadb" and needs_postgres:
            raise ConfigError(
                "--schema-from, --schema-file, --load and --sample-from rehearse on PostgreSQL "
                "only: leave out --backend mariadb"
            )

    @property
    def schema_source(self) -> bool:
        """True when the schema comes from a database or a dump, not the Alembic history."""
        return self.schema_from is not None or self.schema_file is not None

    @property
    def generated_rows(self) -> int:
        """Rows to generate per table (the default applies to a schema source only)."""
        if self.rows is not None:
            return self.rows
        if self.schema_source and self.sample_from is None and self.load is None:
            return DEFAULT_ROWS
        return 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: its name, how long it took, whether it passed, one line about it."""

    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class RehearsalReport:
    """Everything a rehearsal found. ``exit_code`` is 0 only when nothing went wrong.

    ``database`` is the kind of throwaway database (``PostgreSQL``, ``MariaDB``) and
    ``server`` where it was found; ``schema`` says where the schema came from;
    ``alembic`` where the revisions were written (always a temporary directory).
    """

    database: str = ""
    server: str = ""
    schema: str = ""
    alembic: str = ""
    steps: list[StepResult] = field(default_factory=list)
    rows: int = 0
    rows_migrated: int = 0
    rate: float = 0.0
    dry_run_rate: float = 0.0
    production_rows: int | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.problems

    @property
    def eta_seconds(self) -> float | None:
        """Time migrate-data would take on ``production_rows`` at the measured rate."""
        if self.production_rows is None or self.rate <= 0:
            return None
        return self.production_rows / self.rate

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


StepCallback = Callable[[StepResult], None]
