"""The one loader of test-vector files: Wycheproof's and our own frozen format-1 vectors.

Wycheproof files (``tests/vectors/wycheproof/``, copied unchanged from upstream) have
``testGroups[].tests[]``; :func:`wycheproof_cases` flattens them into :class:`WycheproofCase`
values and :func:`as_params` turns those into pytest parameters with one id per ``tcId``.

Our own vectors (``tests/vectors/encmigrate_format1.json``, written by
``tests/vectors/make_format1.py``) are read by :func:`load_format1`. Plaintexts are stored in a
JSON-representable form plus the name of the rule that rebuilds the Python value
(:data:`VALUE_FROM`); :func:`json_form` is the inverse the generator uses, so both directions
live in one place.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "FORMAT1_FILE",
    "VALUE_FROM",
    "VECTORS_DIR",
    "WYCHEPROOF_DIR",
    "CounterNonces",
    "Format1Case",
    "Format1Vectors",
    "WycheproofCase",
    "as_params",
    "json_form",
    "load_format1",
    "rebuild_value",
    "wycheproof_cases",
]

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
WYCHEPROOF_DIR = VECTORS_DIR / "wycheproof"
FORMAT1_FILE = VECTORS_DIR / "encmigrate_format1.json"


# -- Wycheproof ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WycheproofCase:
    """One Wycheproof test with the attributes of its group (``ivSize``, ``tagSize``, ...)."""

    file: str
    group: Mapping[str, Any]
    test: Mapping[str, Any]

    @property
    def tc_id(self) -> int:
        return int(self.test["tcId"])

    @property
    def result(self) -> str:
        """``valid``, ``invalid`` or ``acceptable``."""
        return str(self.test["result"])

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(self.test.get("flags", ()))

    def data(self, field: str) -> bytes:
        """A hex-encoded field of the test (``key``, ``iv``, ``msg``, ...) as bytes."""
        return bytes.fromhex(self.test[field])

    def number(self, field: str) -> int:
        """An integer field of the test (``size``, ``iterationCount``, ``dkLen``)."""
        return int(self.test[field])

    def __str__(self) -> str:
        return f"{self.file} tcId {self.tc_id} ({self.result}; {', '.join(self.flags)})"


def wycheproof_cases(
    file_name: str, where: Callable[[Mapping[str, Any]], bool] | None = None
) -> list[WycheproofCase]:
    """Every test of ``wycheproof/<file_name>`` whose group satisfies ``where``.

    The file's own ``numberOfTests`` is checked against what was read, so a
    truncated or hand-edited copy is noticed before any test runs.
    """
    document = json.loads((WYCHEPROOF_DIR / file_name).read_text(encoding="utf-8"))
    cases: list[WycheproofCase] = []
    total = 0
    for raw_group in document["testGroups"]:
        group = {key: value for key, value in raw_group.items() if key != "tests"}
        total += len(raw_group["tests"])
        if where is not None and not where(group):
            continue
        cases.extend(WycheproofCase(file_name, group, test) for test in raw_group["tests"])
    if total != document["numberOfTests"]:
        raise ValueError(
            f"{file_name}: read {total} tests, the file says {document['numberOfTests']}"
        )
    return cases


def as_params(cases: Iterable[WycheproofCase]) -> list[Any]:
    """pytest parameters, one per case, each with the id ``tc<tcId>``."""
    return [pytest.param(case, id=f"tc{case.tc_id}") for case in cases]


# -- our own format-1 vectors ---------------------------------------------------

VALUE_FROM: dict[str, Callable[[Any], Any]] = {
    "str": str,
    "int": int,  # a decimal string: JSON numbers lose precision past 2**53 in many languages
    "float": float,  # the shortest repr that round-trips ("0.1", "-0.0", "inf")
    "decimal": decimal.Decimal,  # str(Decimal): "10.20", "-1E+3"
    "bool": bool,
    "date": dt.date.fromisoformat,
    "datetime": dt.datetime.fromisoformat,
    "time": dt.time.fromisoformat,
    "bytes_hex": bytes.fromhex,
    "json": lambda document: document,  # the JSON value itself, key order as written
}
"""How each ``value_from`` name in the vector file rebuilds the Python value."""


def rebuild_value(value_from: str, plaintext: Any) -> Any:
    """The Python value a case's ``plaintext`` stands for."""
    try:
        rebuild = VALUE_FROM[value_from]
    except KeyError:
        raise ValueError(f"unknown value_from {value_from!r}") from None
    return rebuild(plaintext)


def json_form(value: Any) -> tuple[str, Any]:
    """``(value_from, plaintext)`` for ``value``: the inverse of :func:`rebuild_value`."""
    # Order matters: bool is an int, datetime is a date.
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, float):
        return "float", repr(value)
    if isinstance(value, decimal.Decimal):
        return "decimal", str(value)
    if isinstance(value, dt.datetime):
        return "datetime", value.isoformat()
    if isinstance(value, dt.date):
        return "date", value.isoformat()
    if isinstance(value, dt.time):
        return "time", value.isoformat()
    if isinstance(value, bytes):
        return "bytes_hex", value.hex()
    if isinstance(value, str):
        return "str", value
    if isinstance(value, dict | list):
        return "json", value
    raise TypeError(f"no JSON form for {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Format1Case:
    """One frozen case: inputs, every intermediate value, and the outputs."""

    id: str
    kdf: str
    version: int
    context: str
    type: str
    value_from: str
    plaintext: Any
    normalize: str
    nonce: bytes
    encoded: bytes
    data_key: bytes
    search_key: bytes
    aad: bytes
    envelope: bytes
    envelope_base64: str
    token_input: bytes
    token: bytes

    @property
    def value(self) -> Any:
        """The Python value that was encrypted."""
        return rebuild_value(self.value_from, self.plaintext)


@dataclass(frozen=True, slots=True)
class Format1Vectors:
    """The whole vector file."""

    master_keys: Mapping[int, bytes]
    pbkdf2_iterations: int
    cases: tuple[Format1Case, ...]


_HEX_FIELDS = (
    "nonce",
    "encoded",
    "data_key",
    "search_key",
    "aad",
    "envelope",
    "token_input",
    "token",
)


def load_format1(path: Path = FORMAT1_FILE) -> Format1Vectors:
    """Read ``encmigrate_format1.json``."""
    document = json.loads(path.read_text(encoding="utf-8"))
    cases = tuple(_format1_case(raw) for raw in document["cases"])
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path.name}: case ids are not unique")
    return Format1Vectors(
        master_keys={int(v): bytes.fromhex(k) for v, k in document["master_keys"].items()},
        pbkdf2_iterations=int(document["pbkdf2_iterations"]),
        cases=cases,
    )


def _format1_case(raw: Mapping[str, Any]) -> Format1Case:
    fields: dict[str, Any] = dict(raw)
    for name in _HEX_FIELDS:
        fields[name] = bytes.fromhex(raw[name])
    return Format1Case(**fields)


class CounterNonces:
    """A deterministic nonce source for frozen vectors and tests, never for real data.

    Each 12-byte nonce is a big-endian counter, incremented per nonce, so a
    batch that asks for ``12 * n`` bytes gets the same nonces as ``n`` single
    calls would. Reusing a nonce under one key breaks GCM: this exists only so
    that tests can predict ciphertexts.
    """

    SIZE = 12

    def __init__(self, start: int = 0) -> None:
        self._next = start

    def __call__(self, size: int) -> bytes:
        if size % self.SIZE:
            raise ValueError(f"nonce requests must be multiples of {self.SIZE} bytes, got {size}")
        count = size // self.SIZE
        first, self._next = self._next, self._next + count
        return b"".join(
            (n % 2 ** (8 * self.SIZE)).to_bytes(self.SIZE, "big")
            for n in range(first, first + count)
        )
