"""Structure-aware mutations of valid documents, and the odd values they splice in.

Every strategy starts from a real document (an envelope, a keyring, a backup,
an audit log, a plan) and breaks it a few ways at once:

* bytes: bit flips, truncation, deleted, inserted, duplicated and overwritten
  ranges, and tokens that trouble parsers (quotes, brackets, NUL, invalid and
  surrogate UTF-8, ``NaN``, ``1e999``);
* trees (JSON, TOML): a value replaced by one of another type, a huge or
  negative number, NaN or infinity, unicode (lone surrogates included), a
  structure nested 10 to 100,000 levels deep; a key removed or added;
* and, beside the mutants, plain random bytes and text.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "Mutant",
    "Shown",
    "mutated_bytes",
    "mutated_json",
    "mutated_text",
    "mutated_toml",
    "odd_values",
    "to_toml",
    "utf8",
]

PARSER_TOKENS = (
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff\xfe",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: not valid UTF-8
    b"\xc3",  # a truncated two-byte sequence
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"null",
    b"true",
    b'\\ud800"',
    b"=" * 4,
    b"\t",
)


@st.composite
def _mutant(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data))) if data else 0
        length = draw(st.integers(1, 32))
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "delete", "insert", "duplicate", "overwrite", "token"]
            )
        )
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + length]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=length))
        elif kind == "duplicate":
            data[at:at] = data[at : at + length]
        elif kind == "overwrite":
            data[at : at + 1] = draw(st.sampled_from([b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff"]))
        else:
            data[at:at] = draw(st.sampled_from(PARSER_TOKENS))
    return bytes(data)


def mutated_bytes(seed: bytes, *, random_size: int = 256) -> st.SearchStrategy[bytes]:
    """Mutants of ``seed`` (mostly) and random bytes."""
    return st.one_of(_mutant(seed), _mutant(seed), _mutant(seed), st.binary(max_size=random_size))


def mutated_text(seed: str) -> st.SearchStrategy[str]:
    """Mutants of ``seed`` as text (invalid UTF-8 replaced), and random text."""
    return st.one_of(
        mutated_bytes(seed.encode("utf-8")).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.text(max_size=200),
    )


# --- odd values ---------------------------------------------------------------------------


class Deep:
    """A stand-in for an array or a table nested ``depth`` levels deep, spliced in as text."""

    def __init__(self, depth: int, array: bool) -> None:
        self.depth = depth
        self.array = array

    def __repr__(self) -> str:  # Hypothesis prints a failing input with this, not the text
        return f"Deep({self.depth}, array={self.array})"

    def json(self) -> str:
        if self.array:
            return "[" * self.depth + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth

    def toml(self) -> str:
        if self.array:
            return "[" * self.depth + "]" * self.depth
        return "{a = " * self.depth + "1" + "}" * self.depth


DEEP = st.builds(Deep, st.sampled_from([10, 100, 1_000, 100_000]), st.booleans())
ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\u202e",
    "\ud800",
    "é" * 3,
    "😀",
    "active",
    "retired",
    "disabled",
    "destroyed",
    "hkdf-sha256",
    "pbkdf2-sha256",
    "encmigrate-keyring/1",
    "encmigrate-keyring-backup/1",
    base64.b64encode(bytes(32)).decode(),
    base64.b64encode(bytes(31)).decode(),
    base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("="),
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01",
    "2026-13-45T99:99:99",
    "+999999-01-01T00:00:00",
    "1e999",
    "x" * 5000,
    "string",
    "json",
    "a.b.c",
    '"; DROP TABLE x; --',
    "../../etc/passwd",
    "postgresql+psycopg://u:p@h:abc/db",
)
ODD_NUMBERS = (0, -1, 1, 2, 2**31, 2**32 - 1, 2**32, 2**63, 2**64, 10**30, -(10**30), 10**400)


def odd_values(*, toml: bool = False) -> st.SearchStrategy[Any]:
    """Values of every JSON (or TOML) type, chosen to trouble a validator."""
    scalars = st.one_of(
        st.booleans(),
        st.sampled_from(ODD_NUMBERS),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324]),
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=40),
        DEEP,
    )
    if toml:
        scalars = st.one_of(
            scalars,
            st.datetimes(timezones=st.sampled_from([None, dt.UTC])),
            st.dates(),
            st.times(),
        )
    else:
        scalars = st.one_of(st.none(), scalars)

    # A named function, not a multi-line lambda: Hypothesis reads the extend function's
    # source to check that it uses its argument, and warns when it cannot tell.
    def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        keys = st.sampled_from(ODD_STRINGS) | st.text(max_size=10)
        return st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4))

    return st.recursive(scalars, containers, max_leaves=8)


# --- tree mutations -----------------------------------------------------------------------


def _places(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value inside ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _places(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _places(value)


FIELD_NAMES = (
    "format",
    "kdf",
    "current",
    "versions",
    "version",
    "key",
    "state",
    "created",
    "destroyed",
    "rotation_days",
    "audit_head",
    "sha256",
    "lines",
    "token",
    "keyring",
    "prev",
    "columns",
    "table",
    "column",
    "type",
    "searchable",
    "normalize",
    "context",
    "storage",
    "unique_token",
    "database",
    "url",
    "keys",
    "provider",
    "path",
    "env_prefix",
    "cache_ttl",
    "vault",
    "aws",
    "migration",
    "batch_size",
    "sleep",
    "ddl_lock_timeout",
    "ddl_retries",
    "tables",
    "view",
    "alembic",
    "config",
)


@st.composite
def _mutated_tree(draw: st.DrawFn, document: Any, toml: bool) -> Any:
    tree = copy.deepcopy(document)
    values = odd_values(toml=toml)
    for _ in range(draw(st.integers(1, 3))):
        places = list(_places(tree))
        if not places:
            return draw(values) if not toml else {"x": draw(values)}
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "deep"]))
        if action == "replace":
            container[key] = draw(values)
        elif action == "deep":
            container[key] = draw(DEEP)
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            name = draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=12))
            container[name] = draw(values)
        else:
            container.append(draw(values))
    return tree


def _json_text(tree: Any, ascii_only: bool) -> str:
    spliced: dict[str, Deep] = {}

    def mark(node: Any) -> Any:
        if isinstance(node, Deep):
            name = f"\x00deep{len(spliced)}\x00"
            spliced[json.dumps(name)] = node
            return name
        if isinstance(node, dict):
            return {k: mark(v) for k, v in node.items()}
        if isinstance(node, list):
            return [mark(v) for v in node]
        return node

    text = json.dumps(mark(tree), ensure_ascii=ascii_only)
    for placeholder, deep in spliced.items():
        text = text.replace(placeholder, deep.json(), 1)
    return text


class Mutant(str):
    """The text of a mutated tree; its ``repr`` (what Hypothesis prints for a failing
    input) is the tree, where a 100,000-level nesting is one short ``Deep(...)``."""

    tree: Any

    def __new__(cls, text: str, tree: Any) -> Mutant:
        made = super().__new__(cls, text)
        made.tree = tree
        return made

    def __repr__(self) -> str:
        return f"Mutant({self.tree!r})"


class Shown(bytes):
    """Bytes made from a mutant, shown (in a failure report) by how they were made."""

    how: str

    def __new__(cls, data: bytes, how: str) -> Shown:
        made = super().__new__(cls, data)
        made.how = how
        return made

    def __repr__(self) -> str:
        return f"Shown({self.how})"


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates included (as invalid UTF-8), shown as ``text``."""
    return Shown(text.encode("utf-8", "surrogatepass"), f"utf8({text!r})")


def mutated_json(document: Any) -> st.SearchStrategy[str]:
    """JSON text of mutants of ``document`` (the whole document or one branch changed)."""
    return st.builds(
        lambda tree, ascii_only: Mutant(_json_text(tree, ascii_only), tree),
        _mutated_tree(document, toml=False),
        st.booleans(),
    )


# --- TOML ---------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")  # a surrogate escape is invalid TOML: on purpose
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Deep):
        return value.toml()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(document: dict[str, Any]) -> str:
    """A TOML document of ``document``, one inline ``key = value`` line per top-level key."""
    return "".join(f"{_toml_key(str(k))} = {_toml_value(v)}\n" for k, v in document.items())


def mutated_toml(document: dict[str, Any]) -> st.SearchStrategy[str]:
    """TOML text of mutants of ``document``, and byte-level mutants of its text."""
    trees = _mutated_tree(document, toml=True).map(
        lambda tree: Mutant(to_toml(tree) if isinstance(tree, dict) else _toml_value(tree), tree)
    )
    return st.one_of(trees, trees, mutated_text(to_toml(document)))
