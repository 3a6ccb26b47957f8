"""Write tests/vectors/encmigrate_format1.json, the frozen vectors of envelope format 1.

Run it once after a deliberate format change, review the diff, commit the output:

    .venv/bin/python tests/vectors/make_format1.py          # (re)write the file
    .venv/bin/python tests/vectors/make_format1.py --check  # exit 1 if the file is stale

Every value goes through the library's public pieces (``Keyring``,
``SearchableCipher``, the codecs, ``derive_key``) with a counter nonce source,
so the file records what the code does; tests/unit/test_format_vectors.py then
checks the file against the code and against docs/FORMAT.md's recipe.

The master keys are fixed and public: these are test vectors, never keys.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:  # run as a script: make `support` importable
    sys.path.insert(0, str(TESTS_DIR))

from encmigrate.crypto.codecs import codec_for  # noqa: E402
from encmigrate.crypto.envelope import HEADER_SIZE, NONCE_SIZE  # noqa: E402
from encmigrate.crypto.kdf import PBKDF2_ITERATIONS, Kdf, KeyPurpose, derive_key  # noqa: E402
from encmigrate.crypto.search import SearchableCipher  # noqa: E402
from encmigrate.keys.keyring import Keyring, MasterKey  # noqa: E402
from support.vectors import FORMAT1_FILE, CounterNonces, json_form  # noqa: E402

MASTER_KEYS = {1: bytes(range(32)), 7: bytes(range(0xE0, 0x100))}
NONCE_START = int.from_bytes(bytes(range(0xA0, 0xAC)), "big")

# How a search token's input is normalised (docs/FORMAT.md, "Search token"), written out
# here rather than taken from the library so that the file states the rule independently.
NORMALIZE: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "lower": str.lower,
    "casefold": str.casefold,
    "strip": str.strip,
    "lower+strip": lambda s: s.strip().lower(),
}

NON_ASCII_CONTEXT = "kunde.straße"
UTC_PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
UTC_MINUS_0800 = dt.timezone(dt.timedelta(hours=-8))


@dataclass(frozen=True)
class Spec:
    """One case to write: what is encrypted, where, under which key."""

    label: str
    type: str
    value: Any
    context: str = "default"
    kdf: str = "hkdf-sha256"
    version: int = 1
    normalize: str = "none"

    @property
    def id(self) -> str:
        kdf = self.kdf.split("-")[0]
        return f"{kdf}-v{self.version}-{self.type}-{self.label}"


SPECS: tuple[Spec, ...] = (
    # string and text: ASCII, empty, non-ASCII (2-, 3- and 4-byte UTF-8), a normalised token
    Spec("ascii", "string", "Hello, world"),
    Spec("empty", "string", "", context="customer.email"),
    Spec("non-ascii", "string", "Zoë Ångström, 東京 🙂", context="customer.name"),
    Spec(
        "normalised-token",
        "string",
        "  Ada.Lovelace@Example.COM ",
        context="customer.email",
        normalize="lower+strip",
    ),
    Spec("multiline", "text", "line one\nline two\ttabbed\r\n", context="customer.notes"),
    # integers: minimal two's complement, negative, past 64 bits
    Spec("zero", "integer", 0),
    Spec("255", "integer", 255),
    Spec("negative", "integer", -1234567890123, context="sales.customer.ssn"),
    Spec("beyond-64-bits", "integer", 2**64 + 5),
    Spec("int64-max", "bigint", 2**63 - 1),
    Spec("int64-min", "bigint", -(2**63)),
    # floats: IEEE binary64, including signed zero and infinity
    Spec("tenth", "float", 0.1),
    Spec("negative-zero", "float", -0.0),
    Spec("infinity", "float", float("inf")),
    # numeric: the exact Decimal string, trailing zeros and exponent kept
    Spec("trailing-zero", "numeric", decimal.Decimal("10.20")),
    Spec("exponent", "numeric", decimal.Decimal("-1E+3")),
    Spec("true", "boolean", True),
    Spec("false", "boolean", False),
    Spec("leap-day", "date", dt.date(2024, 2, 29)),
    Spec("naive", "datetime", dt.datetime(2024, 2, 29, 13, 45, 30, 123456)),
    Spec(
        "aware-microseconds",
        "datetime",
        dt.datetime(2024, 2, 29, 13, 45, 30, 1, tzinfo=UTC_PLUS_0530),
    ),
    Spec("aware-utc-whole-second", "datetime", dt.datetime(2024, 3, 1, 0, 0, 0, tzinfo=dt.UTC)),
    Spec("microseconds", "time", dt.time(23, 59, 59, 999999)),
    Spec("whole-second", "time", dt.time(8, 0)),
    Spec("bytes", "binary", b"\x00\xff\x10binary\x80"),
    Spec("nested-key-order", "json", {"b": 1, "a": {"z": [1, 2.5, "ü"], "y": None}, "c": True}),
    Spec("list", "json", [3, "three", {"k": False}]),
    # a non-ASCII context, and version 7 to show the version field
    Spec("non-ascii-context", "string", "Hauptstraße 1", context=NON_ASCII_CONTEXT),
    Spec("ascii", "string", "Hello, world", version=7),
    Spec("ssn", "string", "078-05-1120", context="sales.customer.ssn", version=7),
    Spec("negative", "integer", -42, context="sales.customer.ssn", version=7),
    Spec(
        "aware-microseconds",
        "datetime",
        dt.datetime(1999, 12, 31, 23, 59, 59, 5, UTC_MINUS_0800),
        version=7,
    ),
    # the PBKDF2 alternative, under both versions
    Spec("ascii", "string", "Hello, world", kdf="pbkdf2-sha256"),
    Spec(
        "non-ascii-context",
        "string",
        "Hauptstraße 1",
        context=NON_ASCII_CONTEXT,
        kdf="pbkdf2-sha256",
    ),
    Spec(
        "trailing-zero",
        "numeric",
        decimal.Decimal("10.20"),
        context="sales.customer.ssn",
        kdf="pbkdf2-sha256",
        version=7,
    ),
    Spec(
        "nested-key-order",
        "json",
        {"b": 1, "a": {"z": [1, 2.5, "ü"], "y": None}},
        kdf="pbkdf2-sha256",
        version=7,
    ),
)

VALUE_FROM_DOC = {
    "str": "the JSON string itself",
    "int": "a decimal integer string (JSON numbers lose precision past 2**53)",
    "float": "the shortest decimal string that round-trips: '0.1', '-0.0', 'inf'",
    "decimal": "the exact Decimal string: '10.20', '-1E+3'",
    "bool": "the JSON boolean",
    "date": "ISO 8601 date",
    "datetime": "ISO 8601 datetime as Python's isoformat() writes it",
    "time": "ISO 8601 time as Python's isoformat() writes it",
    "bytes_hex": "the bytes in hex",
    "json": "the JSON value itself, object keys in the order written",
}


def build_document() -> dict[str, Any]:
    """The vector file's content (deterministic: same code, same document)."""
    nonces = CounterNonces(NONCE_START)
    rings: dict[tuple[str, int], Keyring] = {}
    cases = []
    for spec in SPECS:
        ring = rings.get((spec.kdf, spec.version))
        if ring is None:
            key = MasterKey(MASTER_KEYS[spec.version])
            ring = rings[(spec.kdf, spec.version)] = Keyring.single(key, spec.version, kdf=spec.kdf)
        cases.append(_case(spec, ring, nonces))
    return {
        "description": (
            "Frozen vectors of the encmigrate ciphertext envelope, format 1, and of its search "
            "tokens. Specified byte by byte in docs/FORMAT.md. The master keys are public test "
            "values, never use them for data."
        ),
        "generator": "tests/vectors/make_format1.py",
        "spec": "docs/FORMAT.md",
        "envelope_format": 1,
        "pbkdf2_iterations": PBKDF2_ITERATIONS,
        "master_keys": {str(v): key.hex() for v, key in MASTER_KEYS.items()},
        "nonce_source": (
            "a 12-byte big-endian counter starting at "
            f"{NONCE_START.to_bytes(NONCE_SIZE, 'big').hex()}, one nonce per case in file order"
        ),
        "value_from": VALUE_FROM_DOC,
        "fields": {
            "encoded": "the value's encoding per type: the GCM plaintext",
            "data_key": "the AES-256-GCM key of (version, context)",
            "search_key": "the HMAC-SHA256 key of (version, context)",
            "aad": "GCM associated data: the 5 header bytes + the context in UTF-8",
            "envelope": "format byte || version || nonce || ciphertext || tag",
            "envelope_base64": "the envelope as stored in text columns",
            "token_input": "the encoding of the normalised value: the HMAC message",
            "token": "HMAC-SHA256(search_key, token_input)",
        },
        "cases": cases,
    }


def _case(spec: Spec, ring: Keyring, nonces: CounterNonces) -> dict[str, Any]:
    codec = codec_for(spec.type)
    kdf = Kdf(spec.kdf)
    cipher = SearchableCipher(
        ring.derived_keys,
        spec.context,
        codec,
        normalize=spec.normalize,
        nonces=nonces,
        write_format=1,  # writers default to format 2 (make_format2.py); this file is format 1
    )
    envelope, token = cipher.seal(spec.value)
    assert envelope is not None and token is not None
    master_key = MASTER_KEYS[spec.version]
    value_from, plaintext = json_form(spec.value)
    token_value = NORMALIZE[spec.normalize](spec.value) if spec.normalize != "none" else spec.value
    return {
        "id": spec.id,
        "kdf": spec.kdf,
        "version": spec.version,
        "context": spec.context,
        "type": spec.type,
        "value_from": value_from,
        "plaintext": plaintext,
        "normalize": spec.normalize,
        "nonce": envelope[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE].hex(),
        "encoded": codec.encode(spec.value).hex(),
        "data_key": derive_key(master_key, KeyPurpose.DATA, spec.context, kdf).hex(),
        "search_key": derive_key(master_key, KeyPurpose.SEARCH, spec.context, kdf).hex(),
        "aad": (envelope[:HEADER_SIZE] + spec.context.encode("utf-8")).hex(),
        "envelope": envelope.hex(),
        "envelope_base64": base64.b64encode(envelope).decode("ascii"),
        "token_input": codec.encode(token_value).hex(),
        "token": token.hex(),
    }


def render(document: dict[str, Any]) -> str:
    """The file's text: ASCII only (non-ASCII as \\u escapes, so no editor can renormalise it)."""
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, FORMAT1_FILE, build_document, len(SPECS), __doc__, __file__)


def write_or_check(
    argv: list[str] | None,
    default: Path,
    build: Callable[[], dict[str, Any]],
    cases: int,
    doc: str | None,
    script: str,
) -> int:
    """A vector script's command line: write the file, or ``--check`` that it is up to date."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=default)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run {Path(script).name} and review the diff")
            return 1
        print(f"{args.output} is up to date ({cases} cases)")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {cases} cases to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
