"""Per-type value encodings (part of the on-disk format) and how misuse is refused."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from typing import Any

import pytest

from encmigrate.crypto.codecs import CODECS, TYPE_NAMES, codec_for
from encmigrate.errors import ValueTypeError

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

# (type, value, the exact bytes encrypted): changing any row changes every stored ciphertext.
ENCODINGS: list[tuple[str, Any, bytes]] = [
    ("string", "", b""),
    ("string", "abc", b"abc"),
    ("string", "Zoë 東 🙂", "Zoë 東 🙂".encode()),
    ("text", "line\nbreak", b"line\nbreak"),
    ("integer", 0, b"\x00"),
    ("integer", 1, b"\x01"),
    ("integer", 127, b"\x7f"),
    ("integer", 128, b"\x00\x80"),
    ("integer", 255, b"\x00\xff"),
    ("integer", 256, b"\x01\x00"),
    ("integer", -1, b"\xff"),
    ("integer", -128, b"\x80"),
    ("integer", -129, b"\xff\x7f"),
    ("integer", -32768, b"\x80\x00"),
    ("integer", 2**64, b"\x01" + bytes(8)),
    ("integer", -(2**64), b"\xff" + bytes(8)),
    ("bigint", 2**63 - 1, b"\x7f" + b"\xff" * 7),
    ("bigint", -(2**63), b"\x80" + bytes(7)),
    ("float", 1.0, bytes.fromhex("3ff0000000000000")),
    ("float", -0.0, bytes.fromhex("8000000000000000")),
    ("float", 0.1, bytes.fromhex("3fb999999999999a")),
    ("float", float("inf"), bytes.fromhex("7ff0000000000000")),
    ("float", 3, bytes.fromhex("4008000000000000")),  # an int is widened to a float
    ("numeric", decimal.Decimal("10.20"), b"10.20"),
    ("numeric", decimal.Decimal("-1E+3"), b"-1E+3"),
    ("numeric", decimal.Decimal("0.000001"), b"0.000001"),
    ("numeric", decimal.Decimal("1E-7"), b"1E-7"),
    ("numeric", decimal.Decimal("-0"), b"-0"),
    ("numeric", 42, b"42"),  # an int is exact, so numeric takes it
    ("boolean", True, b"\x01"),
    ("boolean", False, b"\x00"),
    ("date", dt.date(2024, 2, 29), b"2024-02-29"),
    ("date", dt.date(1, 1, 1), b"0001-01-01"),
    ("datetime", dt.datetime(2024, 2, 29, 13, 45, 30), b"2024-02-29T13:45:30"),
    ("datetime", dt.datetime(2024, 2, 29, 13, 45, 30, 1), b"2024-02-29T13:45:30.000001"),
    (
        "datetime",
        dt.datetime(2024, 2, 29, 13, 45, 30, 120000, tzinfo=IST),
        b"2024-02-29T13:45:30.120000+05:30",
    ),
    ("datetime", dt.datetime(2024, 3, 1, tzinfo=dt.UTC), b"2024-03-01T00:00:00+00:00"),
    ("time", dt.time(8, 0), b"08:00:00"),
    ("time", dt.time(23, 59, 59, 999999), b"23:59:59.999999"),
    ("time", dt.time(8, 0, tzinfo=IST), b"08:00:00+05:30"),
    ("binary", b"\x00\xffraw", b"\x00\xffraw"),
    ("binary", bytearray(b"ab"), b"ab"),
    ("binary", memoryview(b"cd"), b"cd"),
    ("json", {"b": 1, "a": [True, None, 2.5]}, b'{"b":1,"a":[true,null,2.5]}'),
    ("json", {"ü": "東"}, '{"ü":"東"}'.encode()),
    ("json", [], b"[]"),
]


def test_the_type_names_are_the_documented_ones() -> None:
    assert TYPE_NAMES == (
        "string",
        "text",
        "integer",
        "bigint",
        "float",
        "numeric",
        "boolean",
        "date",
        "datetime",
        "time",
        "binary",
        "json",
    )
    assert all(codec_for(name).name == name for name in TYPE_NAMES)


def test_an_unknown_type_name_is_refused_with_the_valid_names_without_repeating_it() -> None:
    with pytest.raises(ValueError, match="string, text, integer") as caught:
        codec_for("varchar")
    assert "varchar" not in str(caught.value)  # a misplaced argument could be a value


def test_every_type_has_encoding_examples() -> None:
    assert {type_name for type_name, _, _ in ENCODINGS} == set(CODECS)


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    ENCODINGS,
    ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(ENCODINGS)],
)
def test_value_encodes_to_exactly_these_bytes_and_back(
    type_name: str, value: Any, expected: bytes
) -> None:
    codec = codec_for(type_name)
    encoded = codec.encode(value)
    assert type(encoded) is bytes
    assert encoded == expected
    decoded = codec.decode(encoded)
    assert codec.encode(decoded) == expected


@pytest.mark.parametrize(
    "text", ["10.20", "-1E+3", "1E-7", "0.000", "123456789012345678901234567890.000000001"]
)
def test_numeric_keeps_the_exact_decimal_including_trailing_zeros_and_exponent(text: str) -> None:
    codec = codec_for("numeric")
    decoded = codec.decode(codec.encode(decimal.Decimal(text)))
    assert isinstance(decoded, decimal.Decimal)
    assert str(decoded) == text
    assert decoded.as_tuple() == decimal.Decimal(text).as_tuple()


def test_numeric_does_not_round_under_a_low_decimal_context_precision() -> None:
    codec = codec_for("numeric")
    with decimal.localcontext(decimal.Context(prec=3)):
        decoded = codec.decode(codec.encode(decimal.Decimal("3.14159265358979")))
    assert str(decoded) == "3.14159265358979"


def test_naive_datetime_stays_naive() -> None:
    codec = codec_for("datetime")
    decoded = codec.decode(codec.encode(dt.datetime(2024, 1, 2, 3, 4, 5, 6)))
    assert decoded == dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    assert decoded.tzinfo is None


@pytest.mark.parametrize(
    "offset", [dt.timedelta(0), dt.timedelta(hours=-8), dt.timedelta(hours=13)]
)
def test_aware_datetime_keeps_its_offset_and_microseconds(offset: dt.timedelta) -> None:
    codec = codec_for("datetime")
    original = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(offset))
    decoded = codec.decode(codec.encode(original))
    assert decoded == original
    assert decoded.utcoffset() == offset
    assert decoded.microsecond == 6


def test_aware_time_keeps_its_offset() -> None:
    codec = codec_for("time")
    decoded = codec.decode(codec.encode(dt.time(8, 30, tzinfo=IST)))
    assert decoded.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_float_round_trips_bit_for_bit() -> None:
    codec = codec_for("float")
    for value in (-0.0, 5e-324, 1.7976931348623157e308, float("nan"), float("-inf")):
        assert struct.pack(">d", codec.decode(codec.encode(value))) == struct.pack(">d", value)


def test_json_keeps_key_order_at_every_level() -> None:
    codec = codec_for("json")
    value = {"z": 1, "a": {"y": 2, "b": 3}, "m": [{"k2": 0, "k1": 0}]}
    decoded = codec.decode(codec.encode(value))
    assert list(decoded) == ["z", "a", "m"]
    assert list(decoded["a"]) == ["y", "b"]
    assert list(decoded["m"][0]) == ["k2", "k1"]


# -- misuse: the wrong Python type for the declared type ----------------------------------

SECRET = "4111-1111-1111-1111"


def assert_hides_secret(error: BaseException) -> None:
    """Neither the error nor anything chained to it quotes the secret (loggers print chains)."""
    seen: BaseException | None = error
    while seen is not None:
        assert SECRET not in str(seen) and SECRET not in repr(seen)
        assert "4111" not in str(seen)
        seen = seen.__cause__ or seen.__context__


REFUSED: list[tuple[str, Any]] = [
    ("string", b"bytes are not text"),
    ("string", 12345),
    ("integer", True),  # bool is an int subclass, but a boolean column is not an integer one
    ("integer", False),
    ("integer", 1.0),
    ("integer", decimal.Decimal(1)),
    ("integer", "12345"),
    ("bigint", True),
    ("float", True),
    ("float", decimal.Decimal("1.5")),
    ("float", "1.5"),
    ("numeric", 1.5),  # a float is inexact: numeric refuses it rather than guess
    ("numeric", True),
    ("numeric", "10.20"),
    ("boolean", 1),
    ("boolean", "true"),
    ("date", dt.datetime(2024, 1, 1, 12, 0)),  # a datetime is a date subclass: refused
    ("date", "2024-01-01"),
    ("datetime", dt.date(2024, 1, 1)),
    ("datetime", "2024-01-01T00:00:00"),
    ("time", dt.datetime(2024, 1, 1, 12, 0)),
    ("binary", "text is not bytes"),
    ("json", None),
    ("json", {1, 2}),
    ("json", {"card": {SECRET}}),  # not serialisable, deep inside
    ("json", {"amount": float("nan")}),  # not valid JSON
]


@pytest.mark.parametrize(
    ("type_name", "value"),
    REFUSED,
    ids=[f"{t}-{type(v).__name__}-{i}" for i, (t, v) in enumerate(REFUSED)],
)
def test_a_value_of_the_wrong_python_type_is_refused_with_value_type_error(
    type_name: str, value: Any
) -> None:
    with pytest.raises(ValueTypeError) as caught:
        codec_for(type_name).encode(value)
    assert isinstance(caught.value, TypeError)  # callers catching TypeError see it too


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("string", SECRET.encode()),
        ("integer", SECRET),
        ("float", SECRET),
        ("numeric", SECRET),
        ("boolean", SECRET),
        ("date", SECRET),
        ("datetime", SECRET),
        ("time", SECRET),
        ("binary", SECRET),
        ("json", {"card": {SECRET}}),
        ("json", [SECRET, float("nan")]),
    ],
)
def test_refusal_message_names_the_types_but_never_the_value(type_name: str, value: Any) -> None:
    with pytest.raises(ValueTypeError) as caught:
        codec_for(type_name).encode(value)
    message = str(caught.value)
    assert type_name in message
    assert_hides_secret(caught.value)


def test_refusal_message_says_what_was_expected_and_what_was_given() -> None:
    with pytest.raises(ValueTypeError) as caught:
        codec_for("integer").encode(True)
    assert str(caught.value) == "integer field expects int, got bool"


@pytest.mark.parametrize("type_name", ["string", "text"])
def test_a_lone_surrogate_is_refused_without_quoting_the_text(type_name: str) -> None:
    with pytest.raises(ValueTypeError, match="surrogate") as caught:
        codec_for(type_name).encode("card \ud83d " + SECRET)
    assert_hides_secret(caught.value)
    assert "\\ud83d" not in str(caught.value)


@pytest.mark.parametrize("value", [{"note": "\udc00" + SECRET}, {"\ud800" + SECRET: 1}])
def test_a_lone_surrogate_inside_json_is_refused_without_quoting_the_text(value: Any) -> None:
    with pytest.raises(ValueTypeError) as caught:
        codec_for("json").encode(value)
    assert_hides_secret(caught.value)
    assert "\\ud800" not in str(caught.value) and "\\udc00" not in str(caught.value)


def test_a_float_too_large_for_binary64_is_refused() -> None:
    with pytest.raises(ValueTypeError, match="too large"):
        codec_for("float").encode(10**400)


@pytest.mark.parametrize("payload", [b"", b"\x02", b"\x00\x01", b"1"])
def test_boolean_decoding_accepts_only_one_byte_zero_or_one(payload: bytes) -> None:
    with pytest.raises(ValueTypeError, match="boolean payload does not decode"):
        codec_for("boolean").decode(payload)
    with pytest.raises(ValueError, match="0x00 or 0x01"):
        codec_for("boolean").parse(payload)  # the raw parser, for callers that wrap it


@pytest.mark.parametrize(
    ("type_name", "payload"),
    [
        ("date", SECRET.encode()),
        ("datetime", SECRET.encode()),
        ("time", SECRET.encode()),
        ("numeric", SECRET.encode()),
        ("json", SECRET.encode()),
        ("string", b"\xff" + SECRET.encode()),
        ("float", SECRET.encode()),
    ],
)
def test_decode_failure_names_the_type_never_the_payload(type_name: str, payload: bytes) -> None:
    """``Invalid isoformat string: '<the value>'`` and its kind must not come through."""
    with pytest.raises(ValueTypeError) as caught:
        codec_for(type_name).decode(payload)
    assert type_name in str(caught.value)
    assert_hides_secret(caught.value)


@pytest.mark.parametrize("type_name", ["datetime", "time"])
def test_a_sub_second_utc_offset_is_refused_since_it_would_not_round_trip(type_name: str) -> None:
    odd = dt.timezone(dt.timedelta(microseconds=1))
    value = (
        dt.datetime(2020, 1, 1, tzinfo=odd) if type_name == "datetime" else dt.time(0, tzinfo=odd)
    )
    with pytest.raises(ValueTypeError, match="whole number of seconds"):
        CODECS[type_name].encode(value)
    lmt = dt.timezone(dt.timedelta(seconds=561))  # Dublin mean time: seconds are fine
    fine = value.replace(tzinfo=lmt)
    assert CODECS[type_name].decode(CODECS[type_name].encode(fine)) == fine
