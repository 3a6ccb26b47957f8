"""Runbook shell blocks: find them in the Markdown and run them in order, as an operator would.

A fenced block whose info string is ``sh runbook`` is executed; any other block
(``sh`` alone, ``toml``, ``text``...) is documentation only. An HTML comment
``<!-- pending: keys export -->`` just before a block says it waits for a command
that has not landed yet; such a block must not be marked ``runbook``.

All the runnable blocks of one runbook go to ONE ``bash`` process, in order,
under ``set -euo pipefail``: an operator pastes them into one terminal, so a
variable set in one block is there in the next. Before each block the script
records the block's index in a file, so a failure is reported against the
block that failed (``runbooks/x.md:42``), with the output so far.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Block",
    "RunbookRun",
    "extract_blocks",
    "ignored_negations",
    "libpq_url",
    "run_blocks",
    "runbook_environment",
]

# CommonMark fences: up to three spaces, then ``` or ~~~ (three or more), then the info string.
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_PENDING = re.compile(r"^\s*<!--\s*pending:\s*(?P<command>[^>]*?)\s*-->\s*$")
# Heredoc openers (<<'EOF', <<-EOF, <<"EOF"): their bodies are data, not shell statements.
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)\1")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of a runbook."""

    source: Path
    line: int  # 1-based line of the opening fence
    language: str
    flags: frozenset[str]
    code: str
    pending: str | None  # the command a preceding <!-- pending: ... --> waits for

    @property
    def runnable(self) -> bool:
        return self.language == "sh" and "runbook" in self.flags

    @property
    def where(self) -> str:
        return f"{self.source.name}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in document order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        words = opening["info"].split()
        body: list[str] = []
        end = index + 1
        # A closing fence uses the same character, at least as long, with no info string.
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(lines[end])
            end += 1
        blocks.append(
            Block(
                source=path,
                line=index + 1,
                language=words[0] if words else "",
                flags=frozenset(words[1:]),
                code="\n".join(body) + "\n",
                pending=_pending_before(lines, index),
            )
        )
        index = end + 1
    return blocks


def _pending_before(lines: list[str], fence_index: int) -> str | None:
    """The command named by a ``<!-- pending: ... -->`` on the last non-blank line above."""
    above = fence_index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    found = _PENDING.match(lines[above]) if above >= 0 else None
    return found["command"] if found else None


def ignored_negations(block: Block) -> list[str]:
    """Statements written ``! command``: ``set -e`` ignores their status, so they check nothing.

    A runbook that expects a refusal says which exit code it expects instead, e.g.
    ``status=0; encmigrate drop-unencrypted --confirm || status=$?; test "$status" -eq 5``.
    """
    found: list[str] = []
    heredoc_end: str | None = None
    for line in block.code.splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        if line.lstrip().startswith("! "):
            found.append(line.strip())
        opener = _HEREDOC.search(line)
        if opener is not None:
            heredoc_end = opener["word"]
    return found


def libpq_url(sqlalchemy_url: str) -> str:
    """The same database as a libpq URL (for ``psql``): the ``+driver`` part removed."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    if not sep:
        raise ValueError("not a database URL")
    return f"{scheme.split('+', 1)[0]}://{rest}"


def runbook_environment(*, database_url: str, keyring_file: Path, bin_dir: Path) -> dict[str, str]:
    """What an operator rehearsing on a scratch database has exported, and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCMIGRATE_")}
    env.update(
        ENCMIGRATE_DATABASE_URL=database_url,
        DATABASE_URL_PSQL=libpq_url(database_url),
        ENCMIGRATE_KEYRING_FILE=str(keyring_file),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
        PGCONNECT_TIMEOUT="10",
    )
    return env


@dataclass(frozen=True, slots=True)
class RunbookRun:
    """The outcome of running a runbook's blocks."""

    blocks: tuple[Block, ...]
    returncode: int
    failed_block: Block | None  # the block that was running when the script stopped
    output: str  # stdout and stderr together, with a header line before each block
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe_failure(self, tail_lines: int = 60) -> str:
        where = self.failed_block.where if self.failed_block is not None else "before any block"
        reason = "timed out" if self.timed_out else f"exit code {self.returncode}"
        tail = "\n".join(self.output.splitlines()[-tail_lines:])
        return f"runbook failed in the block at {where} ({reason}); output:\n{tail}"


def _script(blocks: list[Block], progress: Path) -> str:
    parts = ["set -euo pipefail"]
    for number, block in enumerate(blocks):
        parts.append(
            f"printf '%s\\n' {number} > '{progress}'\n"
            f"printf '\\n### %s\\n' '{block.where}'\n"
            f"{block.code}"
        )
    return "\n".join(parts) + "\n"


def run_blocks(
    blocks: list[Block], *, cwd: Path, env: dict[str, str], timeout: float
) -> RunbookRun:
    """Run ``blocks`` in order in one ``bash`` under ``set -euo pipefail``."""
    progress = cwd / ".runbook-block"
    script = cwd / ".runbook.sh"
    script.write_text(_script(blocks, progress), encoding="utf-8")
    started = time.monotonic()
    # A session of its own, so a timeout ends every process the runbook started.
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    seconds = time.monotonic() - started
    failed: Block | None = None
    if process.returncode != 0 or timed_out:
        text = progress.read_text(encoding="utf-8").strip() if progress.exists() else ""
        failed = blocks[int(text)] if text.isdigit() else None
    return RunbookRun(
        blocks=tuple(blocks),
        returncode=process.returncode,
        failed_block=failed,
        output=output,
        seconds=seconds,
        timed_out=timed_out,
    )
