"""docs/architecture.md says what the code is: every name in it exists, and its import rule holds.

The product's documentation stands alone: no file of the repository refers to a design
document that only its authors have.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from encmigrate.tracking import TRACKING_TABLES, ChunkStatus, MigrationStatus

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "toolkit" / "encmigrate"
DOC = REPO / "docs" / "architecture.md"
TEXT = DOC.read_text(encoding="utf-8")

# Dotted names in the page that are not modules.
NOT_MODULES = {
    "encmigrate.audit": "the logger of key events",
    "encmigrate.toml": "the plan file",
    "encmigrate.writer": "the PostgreSQL setting that marks the migrator's transactions",
}

_CODE = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"[\w.-]+(?:/[\w.-]*)+|[\w-]+\.py")
_PACKAGE_PATH = re.compile(r"toolkit/encmigrate/[\w/]+\.py")
_MODULE_ATTRIBUTE = re.compile(r"`([\w/]+)\.py` `(\w+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _section(number: int) -> str:
    """The text of ``## <number>. ...`` up to the next second-level heading."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", TEXT, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/architecture.md has no section {number}"
    return match.group(0)


def _code_spans() -> list[str]:
    return _CODE.findall(TEXT)


def _module_of(path: str) -> str:
    """``migrate/batch.py`` -> ``encmigrate.migrate.batch``."""
    parts = [p for p in path.removesuffix(".py").split("/") if p and p != "__init__"]
    return ".".join(["encmigrate", *parts])


# -- every name exists ---------------------------------------------------------------


def test_every_path_named_exists() -> None:
    paths = {span for span in _code_spans() if _PATH.fullmatch(span)}
    paths |= set(_PACKAGE_PATH.findall(TEXT))
    paths = {p for p in paths if not p.startswith("./")}  # the user's working folder
    assert len(paths) > 50, "the page names modules: the pattern must find them"
    missing = sorted(p for p in paths if not ((REPO / p).exists() or (PACKAGE / p).exists()))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_dotted_module_named_exists() -> None:
    dotted = {s for s in _code_spans() if re.fullmatch(r"encmigrate(\.\w+)+", s)}
    missing = []
    for name in sorted(dotted - set(NOT_MODULES)):
        try:
            importlib.import_module(name)
        except ImportError:
            parent, _, attribute = name.rpartition(".")
            if not hasattr(importlib.import_module(parent), attribute):
                missing.append(name)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_name_given_with_its_module_is_in_that_module() -> None:
    pairs = set(_MODULE_ATTRIBUTE.findall(TEXT))
    assert len(pairs) > 20
    missing = [
        f"{path}.py {name}"
        for path, name in sorted(pairs)
        if not path.startswith("tests/")
        and not hasattr(importlib.import_module(_module_of(path)), name)
    ]
    assert not missing, f"docs/architecture.md puts names in the wrong module: {missing}"


def test_every_link_resolves() -> None:
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", TEXT, flags=re.MULTILINE)}
    broken = []
    for target in _LINK.findall(TEXT):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        found = (DOC.parent / path).exists() if path else anchor in headings
        if not found:
            broken.append(target)
    assert not broken, f"docs/architecture.md has broken links: {broken}"


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_tracking_column_and_state_is_documented() -> None:
    section = _section(5)
    names = [f"`{table.name}`" for table in TRACKING_TABLES]
    names += [f"`{column.name}`" for table in TRACKING_TABLES for column in table.columns]
    names += [f"`{state.value}`" for state in (*MigrationStatus, *ChunkStatus)]
    undocumented = [name for name in names if name not in section]
    assert not undocumented, f"section 5 of docs/architecture.md lacks {undocumented}"


# -- the import rule -----------------------------------------------------------------


def _layers() -> dict[str, int]:
    """Top-level module -> layer, from the table of section 1."""
    found: dict[str, int] = {}
    for line in _section(1).splitlines():
        row = re.match(r"\| (\d+) \| (.+?) \|", line)
        if row is None:
            continue
        for name in _CODE.findall(row.group(2)):
            top = name.rstrip("/").removesuffix(".py")
            assert top not in found, f"{name} is in two layers"
            found[top] = int(row.group(1))
    return found


def _top_level_modules() -> set[str]:
    files = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return files | packages


def _top_of(file: Path) -> str:
    relative = file.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all but the bodies of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_tops(node: ast.Import | ast.ImportFrom, tops: set[str]) -> set[str]:
    """The top-level encmigrate modules an import statement reaches."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert node.level == 0, "the package uses absolute imports only"
        names = [f"{node.module}.{alias.name}" for alias in node.names]
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "encmigrate":
            continue
        found.add(parts[1] if len(parts) > 1 and parts[1] in tops else "__init__")
    return found


def test_the_layer_table_places_every_top_level_module() -> None:
    layers = _layers()
    assert set(layers) == _top_level_modules(), (
        "section 1 of docs/architecture.md must place every module of the package, once"
    )


def test_imports_go_to_the_same_layer_or_below() -> None:
    layers = _layers()
    tops = _top_level_modules()
    checked = 0
    upward = []
    for file in sorted(PACKAGE.rglob("*.py")):
        source = _top_of(file)
        for node in _runtime_imports(ast.parse(file.read_text(encoding="utf-8"))):
            for target in _imported_tops(node, tops) - {source}:
                checked += 1
                if layers[target] > layers[source]:
                    where = f"{file.relative_to(PACKAGE)}:{node.lineno}"
                    upward.append(f"{where} ({source}, layer {layers[source]}) imports {target}")
    assert checked > 100, "the walk must see the package's imports"
    assert not upward, "imports against the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_revisions_and_migrate_never_import_each_other() -> None:
    tops = _top_level_modules()
    crossing = []
    for one, other in (("revisions", "migrate"), ("migrate", "revisions")):
        for file in sorted((PACKAGE / one).rglob("*.py")):
            for node in _runtime_imports(ast.parse(file.read_text(encoding="utf-8"))):
                if other in _imported_tops(node, tops):
                    crossing.append(f"{file.relative_to(PACKAGE)}:{node.lineno}")
    assert not crossing


def test_nothing_below_the_cli_prints() -> None:
    printing = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if _top_of(file) == "cli":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                printing.append(f"{file.relative_to(PACKAGE)}:{node.lineno}")
    assert not printing, f"only encmigrate.cli prints: {printing}"


# -- the docs stand alone ------------------------------------------------------------

# Spelled in two halves, so that this file does not name them itself.
PRIVATE_REFERENCES = ("design" + ".md", "../" + "shared")
_SKIPPED_FOLDERS = {
    ".git",
    ".venv",
    ".hypothesis",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    "build",
    "dist",
}


def _repository_files() -> list[Path]:
    """Tracked files and untracked ones git does not ignore; every file when git cannot say."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file()
            and not _SKIPPED_FOLDERS.intersection(p.relative_to(REPO).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)
        ]
    return [REPO / name for name in listed.decode().split("\0") if name]


def _private_mentions(files: list[Path], root: Path) -> list[str]:
    mentions = []
    for file in files:
        text = file.read_bytes().decode("utf-8", errors="replace").lower()
        mentions += [
            f"{file.relative_to(root)}: {ref}" for ref in PRIVATE_REFERENCES if ref in text
        ]
    return mentions


def test_no_file_refers_to_a_document_outside_the_repository() -> None:
    files = [f for f in _repository_files() if f.is_file()]
    assert len(files) > 100
    assert Path(__file__).resolve() in files
    mentions = _private_mentions(files, REPO)
    assert not mentions, "files refer to a document users never see:\n" + "\n".join(mentions)


@pytest.mark.parametrize("reference", PRIVATE_REFERENCES)
def test_a_mention_is_found_whatever_its_case(reference: str, tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text(f"See {reference.upper()} for details.\n", encoding="utf-8")
    (tmp_path / "other.md").write_text("Nothing to see.\n", encoding="utf-8")
    found = _private_mentions(sorted(tmp_path.iterdir()), tmp_path)
    assert found == [f"note.md: {reference}"]
