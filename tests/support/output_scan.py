"""Every CLI run of the test session, scanned for the secrets it could have printed.

A pytest plugin (``pytest_plugins`` in tests/conftest.py). For the whole
session it wraps the three ways the suite runs the command line:

* processes: ``subprocess.Popen`` (so ``subprocess.run`` too) whose argv is an
  ``encmigrate`` or ``alembic`` command (``-m encmigrate``, the warm
  interpreter's client of support/prefork.py, a path ending in ``/encmigrate``),
  scanned when ``communicate()`` hands back their captured output;
* in-process runs: ``typer.testing.CliRunner.invoke`` of encmigrate's ``app``;
* runbooks: ``support.runbook.run_blocks`` (the whole bash script's output),
  when a block runs ``encmigrate`` or ``alembic``.

Right after each run it gathers what that run could leak, from its environment
(the ``env=`` given, else ``os.environ``), its argv and its files:

* master keys: ``*MASTER_KEY`` variables (any prefix), ``*KEYRING`` documents,
  the keyring files of ``*KEYRING_FILE``, of the plan's ``[keys] path`` (plan
  from ``--config``, ``ENCMIGRATE_CONFIG``, ``./encmigrate.toml`` or
  ``[tool.encmigrate]`` in ``./pyproject.toml``), of ``./keyring.json`` and of
  ``keys import --path``; a runbook's ``*.json`` keyrings in its folder and
  the keyring file's folder (one level down too);
* backup keys: ``*BACKUP_KEY`` variables, ``--backup-key-file``, a runbook's ``*.key`` files;
* database passwords: of every ``*DATABASE_URL*`` variable, ``--database-url``
  and the plan's ``[database] url``;
* plaintext canaries the test registered with :func:`canary`.

The output (stdout and stderr) is searched for each key in every encoding a
program could print it in: raw bytes (latin-1), hex in both cases, standard
and urlsafe base64 with and without padding, Python's bytes ``repr``; keys
are searched again with all whitespace removed, since a table may wrap a long
key. Passwords and canaries are searched verbatim (a password also
percent-encoded). Values shorter than 6 characters are ignored: test
passwords such as ``pw`` would match everywhere. Every secret of any run of a
test, and every canary it registered (before or after the run), is searched
for in all of that test's runs: a key that ``keys destroy`` erased from the
file is still looked for in the output of the commands that ran after it.

A hit fails the test that made the run (in the phase the run happened in:
setup, call or teardown), naming the command and the kind of secret, never the
secret. The session summary gives the figures: ``output scan: N CLI runs (M
with --debug), K secrets, H hits``, then K by kind, the runs by way (a
runbook counts as one run) and the CLI processes that could not be scanned.

Not scanned (the summary counts the first kind): output a test reads from a
process's pipes itself instead of through ``communicate()``, output not
captured at all or written to a file; helper processes' logs. Not searched
for: derived data and search keys, the keys a KMS returns, Vault and AWS
credentials, plaintext no test registered.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import inspect
import json
import os
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

__all__ = [
    "MIN_SECRET_LENGTH",
    "CliRun",
    "Leak",
    "Secret",
    "SecretFinder",
    "canary",
    "cli_name",
    "current_runs",
    "find_leaks",
    "key_secret",
    "secrets_of",
]

MIN_SECRET_LENGTH = 6
CLI_MODULES = frozenset({"encmigrate", "alembic"})
_MAX_FILE = 1 << 20  # a keyring is a few KB; larger JSON files are something else


# -- secrets and where they are found --------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A value no CLI output may hold, and the forms it could take there."""

    category: str  # "key", "password" or "canary"
    kind: str  # what it is and where it came from, never the value
    forms: tuple[tuple[str, str], ...]  # (encoding, text), most specific first

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.forms[0][1].encode("utf-8", "surrogatepass")).hexdigest()

    def __repr__(self) -> str:
        return f"Secret({self.kind!r})"


@dataclass(frozen=True, slots=True)
class Leak:
    """A secret found in a run's output."""

    command: str  # secrets masked
    kind: str
    encoding: str

    def describe(self) -> str:
        return f"`{self.command}` printed {self.kind} ({self.encoding})"


def _forms(candidates: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """(encoding, text) pairs, each text once, under the first encoding that gives it."""
    first: dict[str, str] = {}
    for encoding, text in candidates:
        first.setdefault(text, encoding)
    return tuple((encoding, text) for text, encoding in first.items())


def key_secret(material: bytes, kind: str) -> Secret:
    """Key material in every encoding a program could print it in."""
    std = base64.b64encode(material).decode("ascii")
    url = base64.urlsafe_b64encode(material).decode("ascii")
    forms = [
        ("base64", std),
        ("base64 without padding", std.rstrip("=")),
        ("urlsafe base64", url),
        ("urlsafe base64 without padding", url.rstrip("=")),
        ("hex", material.hex()),
        ("upper-case hex", material.hex().upper()),
        ("bytes repr", repr(material)[2:-1]),
        ("raw bytes", material.decode("latin-1")),
    ]
    return Secret("key", kind, _forms(forms))


def text_secret(value: str, kind: str, category: str, *spellings: str) -> Secret | None:
    """A password or plaintext, searched verbatim, percent-encoded and as ``spellings``.

    ``None`` when it is too short to search for.
    """
    if len(value) < MIN_SECRET_LENGTH:
        return None
    others = [("percent-encoded", text) for text in (*spellings, quote(value, safe=""))]
    return Secret(category, kind, _forms([("verbatim", value), *others]))


def _decode_key_text(text: str) -> bytes | None:
    """Key material from standard or urlsafe base64, padded or not (as encmigrate reads it)."""
    cleaned = "".join(text.split())
    padded = cleaned + "=" * (-len(cleaned) % 4)
    altchars = b"-_" if ("-" in cleaned or "_" in cleaned) else b"+/"
    try:
        raw = base64.b64decode(padded.encode("ascii"), altchars=altchars, validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if len(raw) >= MIN_SECRET_LENGTH else None


def _encoded_key(text: str, kind: str) -> list[Secret]:
    """A key given as base64 text: the key's encodings, and the text itself if it is no key."""
    raw = _decode_key_text(text)
    if raw is not None:
        return [key_secret(raw, kind)]
    verbatim = text_secret(text.strip(), kind, "key")
    return [verbatim] if verbatim is not None else []


def _keyring_document(text: str, where: str) -> list[Secret]:
    """Every version's material in a keyring document (docs/FORMAT.md, "The keyring")."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return []
    versions = document.get("versions") if isinstance(document, dict) else None
    found: list[Secret] = []
    for entry in versions if isinstance(versions, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            found += _encoded_key(
                entry["key"], f"master key version {entry.get('version')} {where}"
            )
    return found


def _password(url: str, where: str) -> list[Secret]:
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return []
    if not password:
        return []
    kind = f"the database password of {where}"
    found = text_secret(unquote(password), kind, "password", password)
    return [found] if found is not None else []


_file_cache: dict[tuple[str, str, int, int, int], Any] = {}
_file_lock = threading.Lock()


def _read_once(path: Path, parse: Callable[[str], Any], what: str) -> Any:
    """``parse(text)`` of a file, once per version of the file (path, inode, size, mtime)."""
    try:
        status = path.stat()
    except OSError:
        return None
    if not path.is_file() or status.st_size > _MAX_FILE:
        return None
    stamp = (what, str(path), status.st_ino, status.st_size, status.st_mtime_ns)
    with _file_lock:
        if stamp in _file_cache:
            return _file_cache[stamp]
    try:
        parsed = parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    with _file_lock:
        _file_cache[stamp] = parsed
    return parsed


def _keyring_file(path: Path) -> list[Secret]:
    where = f"(keyring file {path.name})"
    found = _read_once(path, lambda text: tuple(_keyring_document(text, where)), "keyring")
    return list(found or ())


def _backup_key_file(path: Path) -> list[Secret]:
    where = f"backup key (file {path.name})"
    found = _read_once(path, lambda text: tuple(_encoded_key(text, where)), "backup key")
    return list(found or ())


def _plan_secrets(path: Path) -> tuple[list[Path], list[Secret]]:
    """The keyring file a plan names (``[keys] path``) and its database URL's password."""

    def parse(text: str) -> tuple[str, tuple[Secret, ...]] | None:
        try:
            document = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError):
            return None
        table = document
        if path.name == "pyproject.toml":
            table = document.get("tool", {}).get("encmigrate")
            if not isinstance(table, dict):
                return None
        keys, database = table.get("keys"), table.get("database")
        keyring = keys.get("path") if isinstance(keys, dict) else None
        url = database.get("url") if isinstance(database, dict) else None
        secrets = _password(url, f"the plan {path.name}") if isinstance(url, str) else []
        return (keyring if isinstance(keyring, str) else "keyring.json"), tuple(secrets)

    found = _read_once(path, parse, "plan")
    if found is None:
        return [], []
    keyring, secrets = found
    return [path.parent / keyring], list(secrets)


def _option(args: Sequence[str], name: str) -> list[str]:
    """Every value of ``--name VALUE`` / ``--name=VALUE`` in ``args``."""
    values = []
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith(name + "="):
            values.append(arg[len(name) + 1 :])
    return values


def secrets_of(
    env: Mapping[str, str],
    cwd: Path,
    args: Sequence[str] = (),
    *,
    search_dirs: Iterable[Path] = (),
) -> list[Secret]:
    """What a run with this environment, folder and arguments could leak (files read now)."""
    found: list[Secret] = []
    keyrings: list[Path] = [cwd / "keyring.json"]
    for name, value in env.items():
        if name.endswith("MASTER_KEY") or name.endswith("BACKUP_KEY"):
            found += _encoded_key(value, f"the key in {name}")
        elif name.endswith("KEYRING"):
            found += _keyring_document(value, f"(in {name})")
        elif name.endswith("KEYRING_FILE") and value:
            keyrings.append(cwd / value)
        elif "DATABASE_URL" in name:
            found += _password(value, name)
    for url in _option(args, "--database-url"):
        found += _password(url, "--database-url")
    configs = _option(args, "--config") or [
        env.get("ENCMIGRATE_CONFIG") or "encmigrate.toml",
        "pyproject.toml",  # [tool.encmigrate], when there is no encmigrate.toml
    ]
    for config in configs:
        plan_keyrings, plan_secrets = _plan_secrets(cwd / config)
        keyrings += plan_keyrings
        found += plan_secrets
    keyrings += [cwd / p for p in _option(args, "--path")]
    for directory in search_dirs:
        keyrings += [*directory.glob("*.json"), *directory.glob("*/*.json")]
        for key_file in [*directory.glob("*.key"), *directory.glob("*/*.key")]:
            found += _backup_key_file(key_file)
    for named in _option(args, "--backup-key-file"):
        found += _backup_key_file(cwd / named)
    for unique in dict.fromkeys(os.path.normpath(p) for p in keyrings):
        found += _keyring_file(Path(unique))
    return found


class _Matcher:
    """For each secret, the first of its forms found in a text.

    With few forms, one ``in`` per form. With many (a test's canaries), one pass
    over the text: each position's next 6 characters pick the candidate forms,
    so the cost grows with the text, not with the number of secrets.
    """

    def __init__(self, secrets: Sequence[Secret]) -> None:
        self.secrets = secrets
        self.by_prefix: dict[str, list[tuple[int, int, str]]] = {}
        for number, secret in enumerate(secrets):
            for rank, (_, text) in enumerate(secret.forms):
                self.by_prefix.setdefault(text[:MIN_SECRET_LENGTH], []).append((number, rank, text))
        self.few = sum(len(secret.forms) for secret in secrets) <= 64

    def first_forms(self, text: str) -> dict[int, int]:
        """Secret number -> rank of its first form found in ``text``."""
        found: dict[int, int] = {}
        if self.few:
            for number, secret in enumerate(self.secrets):
                ranks = (rank for rank, (_, form) in enumerate(secret.forms) if form in text)
                if (rank := next(ranks, None)) is not None:
                    found[number] = rank
            return found
        lookup = self.by_prefix.get
        for start in range(len(text) - MIN_SECRET_LENGTH + 1):
            for number, rank, form in lookup(text[start : start + MIN_SECRET_LENGTH], ()):
                if rank < found.get(number, rank + 1) and text.startswith(form, start):
                    found[number] = rank
        return found


class SecretFinder:
    """Searches outputs for a fixed set of secrets (built once, used for many runs)."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self.secrets = list(secrets)
        self._all = _Matcher(self.secrets)
        self._keys = _Matcher([s for s in self.secrets if s.category == "key"])

    def search(self, output: str) -> list[tuple[Secret, str]]:
        """The secrets found in ``output``, each with the encoding it was found in."""
        hits = [
            (self.secrets[number], self.secrets[number].forms[rank][0])
            for number, rank in sorted(self._all.first_forms(output).items())
        ]
        if self._keys.secrets:  # a key a table wrapped over lines
            compact = "".join(output.split())
            for number, rank in sorted(self._keys.first_forms(compact).items()):
                secret = self._keys.secrets[number]
                if all(secret is not found for found, _ in hits):
                    hits.append((secret, f"{secret.forms[rank][0]}, wrapped"))
        return hits


def find_leaks(output: str, secrets: Iterable[Secret]) -> list[tuple[Secret, str]]:
    """The secrets found in ``output``, each with the encoding it was found in."""
    return SecretFinder(secrets).search(output)


def _unique(secrets: Iterable[Secret]) -> list[Secret]:
    return list({secret.fingerprint: secret for secret in secrets}.values())


# -- runs ----------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class CliRun:
    """One CLI run: what ran, how, its output, and the secrets it could have leaked."""

    cli: str  # "encmigrate", "alembic" or "runbook"
    args: tuple[str, ...]  # after the program name; for a runbook, its file names
    via: str  # "process", "CliRunner" or "runbook"
    debug: bool
    output: str
    secrets: list[Secret]
    leaks: list[Leak] = field(default_factory=list)
    scanned: bool = False

    def command(self, secrets: Iterable[Secret] = ()) -> str:
        """The command line for messages, every secret in it masked."""
        text = " ".join([self.cli, *(shlex.quote(a) for a in self.args)])
        for secret in [*self.secrets, *secrets]:
            for _, form in secret.forms:
                text = text.replace(form, "<secret>")
        return text if len(text) <= 200 else text[:197] + "..."

    def __repr__(self) -> str:
        return f"CliRun({self.command()!r}, via={self.via}, debug={self.debug})"


def cli_name(argv: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """``(program, args)`` when ``argv`` runs the encmigrate or alembic command line."""
    for index, arg in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if arg == "-m" and following in CLI_MODULES:
            return following, tuple(argv[index + 2 :])
        if arg.endswith("prefork.py") and following == "run" and len(argv) > index + 3:
            module = argv[index + 3]
            return (module, tuple(argv[index + 4 :])) if module in CLI_MODULES else None
    if argv and os.path.basename(argv[0]) in CLI_MODULES:
        return os.path.basename(argv[0]), tuple(argv[1:])
    return None


class OutputScan:
    """The session's record: runs per test, canaries per test, the totals for the summary."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.runs: dict[str | None, list[CliRun]] = {}
        self.canaries: dict[str | None, list[Secret]] = {}
        self.unreported: dict[str | None, list[Leak]] = {}
        self.total_runs = 0
        self.debug_runs = 0
        self.by_way: dict[str, int] = {}
        self.hits = 0
        self.processes_started = 0
        self.processes_scanned = 0
        self.fingerprints: dict[str, set[str]] = {"key": set(), "password": set(), "canary": set()}
        self.outside: list[str] = []  # leaks outside any test, reported by xdist workers
        self._lock = threading.Lock()

    def record(self, run: CliRun) -> None:
        with self._lock:
            self.runs.setdefault(self.current, []).append(run)

    def add_canaries(self, values: Iterable[str]) -> None:
        with self._lock:
            registered = self.canaries.setdefault(self.current, [])
            for value in values:
                kind = f"plaintext canary #{len(registered) + 1}"
                secret = text_secret(value, kind, "canary")
                if secret is not None:
                    registered.append(secret)

    def settle(self, nodeid: str | None) -> None:
        """Scan the test's runs not scanned yet, against every secret the test has seen."""
        runs = self.runs_of(nodeid)
        with self._lock:
            canaries = list(self.canaries.get(nodeid, []))
        pending = [run for run in runs if not run.scanned]
        if not pending:
            return
        secrets = _unique([*canaries, *(s for run in runs for s in run.secrets)])
        finder = SecretFinder(secrets)
        for run in pending:
            for secret, encoding in finder.search(run.output):
                run.leaks.append(Leak(run.command(secrets), secret.kind, encoding))
            run.scanned = True
        with self._lock:
            for secret in secrets:
                self.fingerprints[secret.category].add(secret.fingerprint)
            for run in pending:
                self.total_runs += 1
                self.debug_runs += run.debug
                self.by_way[run.via] = self.by_way.get(run.via, 0) + 1
                self.hits += len(run.leaks)
                self.unreported.setdefault(nodeid, []).extend(run.leaks)

    def runs_of(self, nodeid: str | None) -> list[CliRun]:
        with self._lock:
            return list(self.runs.get(nodeid, []))

    def forget(self, nodeid: str | None) -> None:
        with self._lock:
            self.runs.pop(nodeid, None)
            self.canaries.pop(nodeid, None)

    # -- hooks --

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self.current = item.nodeid
        try:
            return (yield)
        finally:
            self.current = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        self.settle(item.nodeid)
        with self._lock:
            leaks = self.unreported.pop(item.nodeid, [])
        if leaks:
            _fail(report, leaks)
        if call.when == "teardown":
            self.forget(item.nodeid)
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.settle(None)
        if self.unreported.get(None) or self.outside:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        output = getattr(session.config, "workeroutput", None)
        if output is not None:  # a pytest-xdist worker: the controller prints the summary
            output["output_scan"] = self.tally()

    def tally(self) -> dict[str, Any]:
        """The counts of this session, as plain data (sent by a pytest-xdist worker)."""
        with self._lock:
            return {
                "runs": self.total_runs,
                "debug_runs": self.debug_runs,
                "by_way": dict(self.by_way),
                "hits": self.hits,
                "started": self.processes_started,
                "scanned": self.processes_scanned,
                "fingerprints": {k: sorted(v) for k, v in self.fingerprints.items()},
                "outside": [leak.describe() for leak in self.unreported.get(None, [])],
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """pytest-xdist's controller: add a worker's counts to this session's."""
        tally = getattr(node, "workeroutput", {}).get("output_scan")
        if tally is None:
            return
        with self._lock:
            self.total_runs += tally["runs"]
            self.debug_runs += tally["debug_runs"]
            for way, count in tally["by_way"].items():
                self.by_way[way] = self.by_way.get(way, 0) + count
            self.hits += tally["hits"]
            self.processes_started += tally["started"]
            self.processes_scanned += tally["scanned"]
            for category, prints in tally["fingerprints"].items():
                self.fingerprints[category].update(prints)
            self.outside.extend(tally["outside"])

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        write = terminalreporter.write_line
        found = {category: len(prints) for category, prints in self.fingerprints.items()}
        write(
            f"output scan: {self.total_runs} CLI runs ({self.debug_runs} with --debug), "
            f"{sum(found.values())} secrets, {self.hits} hits"
        )
        ways = ", ".join(f"{count} {way}" for way, count in sorted(self.by_way.items()))
        write(
            f"output scan: {found['key']} keys, {found['password']} database passwords, "
            f"{found['canary']} plaintext canaries; runs: {ways or 'none'}; "
            f"{self.processes_started - self.processes_scanned} CLI processes not scanned "
            "(output not captured, or read without communicate())"
        )
        for text in [leak.describe() for leak in self.unreported.get(None, [])] + self.outside:
            write(f"output scan: outside any test, {text}", red=True)


def _fail(report: pytest.TestReport, leaks: list[Leak]) -> None:
    text = "output scan: secrets in CLI output:\n" + "\n".join(
        f"  {leak.describe()}" for leak in leaks
    )
    if report.failed:
        report.sections.append(("output scan", text))
        return
    report.outcome = "failed"
    report.longrepr = text


# -- the active scan, and the functions tests call ---------------------------------------------

_scans: list[OutputScan] = []  # innermost last (pytester runs pytest inside pytest)


def _active() -> OutputScan | None:
    return _scans[-1] if _scans else None


def canary(*values: str) -> None:
    """Plaintext values the current test's CLI runs must never print (6 characters or more).

    Every run of the test is searched, those made before the call too. Without
    the plugin loaded this does nothing.
    """
    scan = _active()
    if scan is not None:
        scan.add_canaries(values)


def current_runs() -> list[CliRun]:
    """The current test's CLI runs so far, scanned (each with its ``leaks``)."""
    scan = _active()
    if scan is None:
        raise RuntimeError(
            'the output scan plugin is not loaded: add "support.output_scan" to '
            "pytest_plugins in tests/conftest.py"
        )
    scan.settle(scan.current)
    return scan.runs_of(scan.current)


# -- the wrappers --------------------------------------------------------------------------

_PENDING = "_output_scan_pending"


@dataclass(frozen=True, slots=True)
class _Started:
    scan: OutputScan
    cli: str
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


def _argv(args: Any) -> list[str]:
    if isinstance(args, str):
        try:
            return shlex.split(args)
        except ValueError:
            return args.split()
    if isinstance(args, bytes | os.PathLike):
        return [os.fsdecode(args)]
    return [os.fsdecode(a) for a in args]


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    # UTF-8 for text, and latin-1 byte for byte so raw key bytes are found too.
    return data.decode("utf-8", "replace") + "\n" + data.decode("latin-1")


def _popen_init(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def init(self: subprocess.Popen[Any], args: Any, *more: Any, **options: Any) -> None:
        original(self, args, *more, **options)
        scan = _active()
        found = cli_name(_argv(args)) if scan is not None else None
        if scan is None or found is None:
            return
        env = options.get("env")
        cwd = options.get("cwd")
        scan.processes_started += 1
        setattr(
            self,
            _PENDING,
            _Started(
                scan,
                found[0],
                found[1],
                dict(os.environ if env is None else env),
                Path(os.fsdecode(cwd)) if cwd is not None else Path.cwd(),
            ),
        )

    return init


def _popen_communicate(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        stdout, stderr = original(self, *args, **kwargs)
        started: _Started | None = getattr(self, _PENDING, None)
        if started is not None and (stdout is not None or stderr is not None):
            setattr(self, _PENDING, None)
            started.scan.processes_scanned += 1
            started.scan.record(
                CliRun(
                    cli=started.cli,
                    args=started.args,
                    via="process",
                    debug="--debug" in started.args,
                    output=_text(stdout) + "\n" + _text(stderr),
                    secrets=secrets_of(started.env, started.cwd, started.args),
                )
            )
        return stdout, stderr

    return communicate


def _cli_runner_invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def invoke(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        scan = _active()
        bound = signature.bind(self, *args, **kwargs).arguments
        root = getattr(sys.modules.get("encmigrate.cli.app"), "app", None)
        if scan is None or root is None or bound.get("app") is not root:
            return result
        cli_args = tuple(_argv(bound.get("args") or ()))
        env = dict(os.environ)
        for name, value in (bound.get("env") or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        scan.record(
            CliRun(
                cli="encmigrate",
                args=cli_args,
                via="CliRunner",
                debug="--debug" in cli_args,
                output=result.output,
                secrets=secrets_of(env, Path.cwd(), cli_args),
            )
        )
        return result

    return invoke


def _runbook_run_blocks(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def run_blocks(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        scan = _active()
        bound = signature.bind(*args, **kwargs).arguments
        blocks, cwd, env = bound["blocks"], Path(bound["cwd"]), dict(bound["env"])
        if scan is None or not any(m in b.code for b in blocks for m in CLI_MODULES):
            return result  # no runbook of ours: the harness's own tests
        dirs = [cwd, *(Path(v).parent for k, v in env.items() if k.endswith("KEYRING_FILE"))]
        scan.record(
            CliRun(
                cli="runbook",
                args=tuple(sorted({block.source.name for block in blocks})),
                via="runbook",
                debug=any("--debug" in block.code for block in blocks),
                output=result.output,
                secrets=secrets_of(env, cwd, search_dirs=dirs),
            )
        )
        return result

    return run_blocks


_saved: list[tuple[Any, str, Any]] = []


def _install() -> None:
    import typer.testing

    from support import runbook

    for owner, name, wrapper in (
        (subprocess.Popen, "__init__", _popen_init),
        (subprocess.Popen, "communicate", _popen_communicate),
        (typer.testing.CliRunner, "invoke", _cli_runner_invoke),
        (runbook, "run_blocks", _runbook_run_blocks),
    ):
        original = owner.__dict__[name]
        _saved.append((owner, name, original))
        setattr(owner, name, wrapper(original))


def _uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


_STASH = pytest.StashKey[OutputScan]()


def pytest_configure(config: pytest.Config) -> None:
    scan = OutputScan()
    config.stash[_STASH] = scan
    config.pluginmanager.register(scan, "output-scan")
    if not _scans:
        _install()
    _scans.append(scan)


def pytest_unconfigure(config: pytest.Config) -> None:
    scan = config.stash.get(_STASH, None)
    if scan in _scans:
        _scans.remove(scan)
    if not _scans:
        _uninstall()
