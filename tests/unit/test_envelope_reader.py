"""The envelope reader: the one place that reads a stored value's format byte and key version.

``read_header`` / ``envelope_version`` take what a column holds (bytes, bytearray,
memoryview, or base64 text) and answer None for anything that is not an envelope header,
so verify, rewrap, repair, status and the demo can hand them any column value.
"""

from __future__ import annotations

import array
import base64
from typing import Any

import pytest

from encmigrate.crypto.envelope import (
    FORMAT_1,
    FORMAT_2,
    HEADER_SIZE,
    HEADER_TEXT_SIZE,
    MAX_VERSION,
    MIN_SIZE,
    envelope_version,
    header_bytes,
    parse_header,
    read_header,
)
from support.vectors import FORMAT1_FILE, VECTORS_DIR, Format1Case, load_format1

CASES = [
    pytest.param(fmt, case, id=f"f{fmt}-{case.id}")
    for fmt, path in ((FORMAT_1, FORMAT1_FILE), (FORMAT_2, VECTORS_DIR / "encmigrate_format2.json"))
    for case in load_format1(path).cases
]


@pytest.mark.parametrize(("fmt", "case"), CASES)
def test_every_frozen_vector_reads_as_its_format_and_version(fmt: int, case: Format1Case) -> None:
    envelope = case.envelope
    assert read_header(envelope) == (fmt, case.version)
    for stored in (
        envelope,
        bytearray(envelope),
        memoryview(envelope),
        memoryview(b"xx" + envelope)[2:],  # a view that does not start at its buffer's start
        case.envelope_base64,  # text storage
    ):
        assert envelope_version(stored) == case.version, type(stored).__name__


@pytest.mark.parametrize("fmt", [FORMAT_1, FORMAT_2])
@pytest.mark.parametrize("version", [1, 7, 2**31, MAX_VERSION])
def test_the_version_is_four_unsigned_big_endian_bytes(fmt: int, version: int) -> None:
    blob = header_bytes(version, fmt) + bytes(MIN_SIZE - HEADER_SIZE)
    assert read_header(blob) == (fmt, version)
    header = parse_header(blob)
    assert header is not None
    assert (header.format, header.version) == (fmt, version)


def test_only_the_header_is_read() -> None:
    """Five bytes are enough for the version; parse_header also wants a whole envelope."""
    head = header_bytes(3, FORMAT_2)
    assert envelope_version(head) == 3
    assert parse_header(head) is None
    assert parse_header(head + bytes(MIN_SIZE - HEADER_SIZE)) is not None


def test_version_zero_is_read_as_written_but_is_no_envelope() -> None:
    blob = bytes((FORMAT_2, 0, 0, 0, 0)) + bytes(MIN_SIZE - HEADER_SIZE)
    assert envelope_version(blob) == 0
    assert parse_header(blob) is None


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(b"", id="empty"),
        pytest.param(header_bytes(5)[:-1], id="4-bytes"),
        pytest.param(b"\x00\x00\x00\x00\x05" + bytes(40), id="format-0"),
        pytest.param(b"\x03\x00\x00\x00\x05" + bytes(40), id="format-3"),
        pytest.param(b"\xff" * 64, id="garbage"),
        pytest.param(memoryview(b"\x02\x00"), id="short-memoryview"),
        pytest.param("not base64!", id="text-not-base64"),
        pytest.param(base64.b64encode(header_bytes(5)[:4]).decode(), id="text-too-short"),
        pytest.param(base64.b64encode(b"\x09" * 40).decode(), id="text-unknown-format"),
        pytest.param(None, id="none"),
        pytest.param(5, id="int"),
        pytest.param(1.5, id="float"),
        pytest.param([2, 0, 0, 0, 5], id="list"),
        pytest.param(object(), id="object"),
    ],
)
def test_anything_that_is_not_an_envelope_header_reads_as_none(stored: Any) -> None:
    assert read_header(stored) is None
    assert envelope_version(stored) is None


def test_a_memoryview_of_wider_items_is_read_as_its_bytes() -> None:
    raw = header_bytes(9, FORMAT_1) + bytes(31)  # 36 bytes: nine 4-byte items
    wide = memoryview(raw).cast("I")
    assert wide.itemsize == 4
    assert read_header(wide) == (FORMAT_1, 9)
    assert read_header(memoryview(array.array("I", [0]))) is None  # 4 bytes: too short


@pytest.mark.parametrize("fmt", [FORMAT_1, FORMAT_2])
def test_the_first_header_text_size_characters_of_text_storage_hold_the_header(fmt: int) -> None:
    """What status's SQL cuts off a text column is enough for the reader."""
    blob = header_bytes(MAX_VERSION - 1, fmt) + bytes(range(40))
    text = base64.b64encode(blob).decode("ascii")
    assert envelope_version(text[:HEADER_TEXT_SIZE]) == MAX_VERSION - 1
    assert envelope_version(text[: HEADER_TEXT_SIZE - 4]) is None
