"""The operator runbooks run as written, so a runbook that drifts from the CLI fails the suite.

Every ```` ```sh runbook ```` block of every runbook runs, in order, in one
``bash -euo pipefail`` per runbook, in a scratch directory, against a fresh
PostgreSQL database and a keyring in a temporary directory, with ``encmigrate``
(this virtualenv's), ``alembic``, ``psql`` and ``python3`` on ``PATH``. Each
runbook creates its own sample table in its setup block. The runbooks check
their own steps with commands (exit codes, ``--json`` output, SQL counts); this
test asserts only that the whole runbook exits 0.

The runbooks run side by side, one per core, each in its own database, and
the per-runbook tests report the results. The harness itself is tested first:
a runbook that fails must fail, and say where.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encmigrate.cli.app import app
from encmigrate.testing import PostgresServer, create_database, drop_database
from support.prefork import Prefork
from support.runbook import (
    Block,
    RunbookRun,
    extract_blocks,
    ignored_negations,
    libpq_url,
    run_blocks,
    runbook_environment,
)

RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "runbooks"
RUNBOOKS = sorted(p for p in RUNBOOK_DIR.glob("*.md") if p.name != "README.md")
BIN_DIR = Path(sys.executable).parent
TIMEOUT_SECONDS = 120.0
# Each runbook spends most of its time starting Python processes: one thread per core.
PARALLEL = max(2, min(4, os.cpu_count() or 2))
REQUIRED_SECTIONS = ("## Purpose", "## Preconditions", "## Steps", "## Roll back")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# -- the runbooks as documents ------------------------------------------------------------


def test_the_runbooks_the_issue_asks_for_exist() -> None:
    names = {p.name for p in RUNBOOKS}
    assert names >= {
        "first-encryption.md",
        "key-rotation.md",
        "emergency-rotation.md",
        "backup-recovery.md",
        "resume-migration.md",
        "retire-destroy.md",
        "rollback-decrypt-back.md",
        "troubleshooting-decryption.md",
    }


def test_the_index_links_every_runbook() -> None:
    index = (RUNBOOK_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in RUNBOOKS if f"]({p.name})" not in index]
    assert not missing


@pytest.mark.parametrize("path", RUNBOOKS, ids=_ids(RUNBOOKS))
def test_runbook_has_purpose_preconditions_steps_and_rollback(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    missing = [s for s in REQUIRED_SECTIONS if f"\n{s}\n" not in text]
    assert not missing, f"{path.name} lacks {missing}"


@pytest.mark.parametrize("path", RUNBOOKS, ids=_ids(RUNBOOKS))
def test_runbook_starts_with_a_runnable_setup_and_checks_its_steps(path: Path) -> None:
    runnable = [b for b in extract_blocks(path) if b.runnable]
    assert runnable, f"{path.name} has no ```sh runbook block"
    assert "psql" in runnable[0].code, f"{path.name}: the first block must create its table"
    # A runbook that only runs commands and never checks anything proves little.
    checks = [b for b in runnable if "python3 -c" in b.code or "grep -q" in b.code]
    assert len(checks) >= 2, f"{path.name} checks fewer than two steps with a command"


@pytest.mark.parametrize("path", RUNBOOKS, ids=_ids(RUNBOOKS))
def test_runbook_expects_failures_by_exit_code_not_by_negation(path: Path) -> None:
    # `set -e` ignores the status of `! command`, so such a line would pass either way.
    found = {b.where: ignored_negations(b) for b in extract_blocks(path) if b.runnable}
    assert not {where: lines for where, lines in found.items() if lines}


@pytest.mark.parametrize("path", RUNBOOKS, ids=_ids(RUNBOOKS))
def test_pending_blocks_wait_for_commands_that_have_not_landed(path: Path) -> None:
    """A block marked ``<!-- pending: CMD -->`` must become ``sh runbook`` once CMD exists."""
    runner = CliRunner()
    flip: list[str] = []
    for block in extract_blocks(path):
        if block.pending is None:
            continue
        assert not block.runnable, f"{block.where}: a pending block cannot run"
        result = runner.invoke(app, [*block.pending.split(), "--help"])
        if result.exit_code == 0:
            flip.append(f"{block.where} (`encmigrate {block.pending}` exists now)")
    assert not flip, f"fence these as sh runbook, drop their pending comment: {flip}"


# -- the harness ----------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sample.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_extractor_keeps_runbook_blocks_in_order_and_skips_the_rest(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# T\n\n```sh runbook\necho one\n```\n\n```toml\nx = 1\n```\n\n"
        "<!-- pending: keys export -->\n```sh\nencmigrate keys export\n```\n\n"
        "~~~sh runbook\necho '```'\n~~~\n",
    )
    blocks = extract_blocks(path)
    assert [(b.language, b.runnable, b.pending) for b in blocks] == [
        ("sh", True, None),
        ("toml", False, None),
        ("sh", False, "keys export"),
        ("sh", True, None),
    ]
    assert blocks[3].code == "echo '```'\n"
    assert blocks[0].where == "sample.md:3"


def test_negation_lint_flags_statements_but_not_heredoc_bodies(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "```sh runbook\n! encmigrate verify\ncat <<'EOF'\n! not a statement\nEOF\n```\n",
    )
    assert ignored_negations(extract_blocks(path)[0]) == ["! encmigrate verify"]


def test_libpq_url_drops_the_driver() -> None:
    assert libpq_url("postgresql+psycopg://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_runner_reports_the_block_that_failed_and_shares_shell_state(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '```sh runbook\nanswer=42\n```\n\n```sh runbook\ntest "$answer" -eq 42\n```\n\n'
        "```sh runbook\nfalse | true\nfalse\necho never\n```\n\n```sh runbook\necho after\n```\n",
    )
    blocks = [b for b in extract_blocks(path) if b.runnable]
    run = run_blocks(blocks, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert not run.ok
    assert run.failed_block is blocks[2]
    assert "never" not in run.output and "after" not in run.output


def test_runner_stops_a_runbook_that_hangs(tmp_path: Path) -> None:
    path = _write(tmp_path, "```sh runbook\nsleep 30\n```\n")
    blocks = extract_blocks(path)
    run = run_blocks(blocks, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=1)
    assert run.timed_out and run.failed_block is blocks[0] and run.seconds < 10


# -- the runbooks, run ----------------------------------------------------------------------


def _run_one(server: PostgresServer, path: Path, root: Path, warm: Prefork) -> RunbookRun:
    workdir = root / path.stem
    keyring = root / f"{path.stem}-secrets" / "keyring.json"
    workdir.mkdir(parents=True)
    url = create_database(server)
    try:
        env = runbook_environment(database_url=url, keyring_file=keyring, bin_dir=BIN_DIR)
        # `encmigrate` and `alembic` run in the warm interpreter (support/prefork.py).
        env["PATH"] = f"{warm.bin_dir}{os.pathsep}{env['PATH']}"
        blocks: list[Block] = [b for b in extract_blocks(path) if b.runnable]
        return run_blocks(blocks, cwd=workdir, env=env, timeout=TIMEOUT_SECONDS)
    finally:
        drop_database(server, url)


@pytest.fixture(scope="module")
def runbook_runs(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
    warm_cli: Prefork,
) -> Iterator[dict[str, RunbookRun]]:
    # Only the runbooks whose test was selected (`-k first_encryption` runs one).
    wanted = {
        item.callspec.params["path"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_runbook_runs_as_written_on_a_scratch_database"
    }
    selected = [p for p in RUNBOOKS if p in wanted]
    root = tmp_path_factory.mktemp("runbooks")
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {
            p.name: pool.submit(_run_one, postgres_server, p, root, warm_cli) for p in selected
        }
        yield {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("path", RUNBOOKS, ids=_ids(RUNBOOKS))
def test_runbook_runs_as_written_on_a_scratch_database(
    runbook_runs: dict[str, RunbookRun], path: Path
) -> None:
    run = runbook_runs[path.name]
    assert run.ok, run.describe_failure()
