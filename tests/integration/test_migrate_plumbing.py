"""The migrator's plumbing: binary array parameters, the GIL switch interval, operation specs.

The array framing is checked by the server itself: PostgreSQL parses what we
send and sends it back, so a framing mistake (length, NULL flag, element type)
is an error or a different value, never a silent pass.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from encmigrate.migrate import pgarrays
from encmigrate.migrate.pipeline import quick_gil_handover
from encmigrate.migrate.rekey import (
    DECRYPT_BACK,
    ENCRYPT,
    operation_from_spec,
    rewrap_operation,
)


def _driver_url(pg_url: str) -> str:
    return sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _echo(pg_url: str, sql: str, value: Any) -> Any:
    with psycopg.connect(_driver_url(pg_url)) as conn:
        pgarrays.register(conn.adapters)
        row = conn.execute(sql, [value]).fetchone()
        assert row is not None
        return row[0]


BYTEA_CASES = [
    [b"\x00\x01\x02", b"", b"\xff" * 300],
    [None, b"a", None],
    [None],
    [bytes(range(256))] * 3,
]


@pytest.mark.parametrize("values", BYTEA_CASES, ids=["plain", "nulls", "only-null", "all-bytes"])
def test_bytea_arrays_reach_the_server_unchanged(pg_url: str, values: list[bytes | None]) -> None:
    back = _echo(pg_url, "SELECT %b::bytea[]", pgarrays.ByteaArray(values))
    assert back == values


def test_random_bytea_arrays_reach_the_server_unchanged(pg_url: str) -> None:
    rng = random.Random(6)
    with psycopg.connect(_driver_url(pg_url)) as conn:
        pgarrays.register(conn.adapters)
        for _ in range(50):
            values = [
                None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 200))
                for _ in range(rng.randrange(1, 60))
            ]
            row = conn.execute(
                "SELECT %b::bytea[], cardinality(%b::bytea[])",
                [pgarrays.ByteaArray(values), pgarrays.ByteaArray(values)],
            ).fetchone()
            assert row == (values, len(values))


def test_text_arrays_keep_unicode_nulls_and_cast_to_tid(pg_url: str) -> None:
    values = ["(0,1)", None, "zoë ✓ 日本", ""]
    assert _echo(pg_url, "SELECT %b::text[]", pgarrays.TextArray(values)) == values
    tids = pgarrays.TextArray(["(0,1)", "(12,7)"])
    assert _echo(pg_url, "SELECT %b::text[]::tid[]::text[]", tids) == ["(0,1)", "(12,7)"]


def test_an_empty_array_is_an_empty_array(pg_url: str) -> None:
    assert _echo(pg_url, "SELECT cardinality(%b::bytea[])", pgarrays.ByteaArray([])) == 0


def test_gil_switch_interval_is_short_during_runs_and_restored_after() -> None:
    before = sys.getswitchinterval()
    inner_seen: list[float] = []
    with quick_gil_handover():
        outer = sys.getswitchinterval()
        with quick_gil_handover():  # a nested (or concurrent) run
            inner_seen.append(sys.getswitchinterval())
        assert sys.getswitchinterval() == outer  # the inner run's end does not restore it
        done = threading.Event()

        def concurrent() -> None:
            with quick_gil_handover():
                inner_seen.append(sys.getswitchinterval())
            done.set()

        threading.Thread(target=concurrent).start()
        assert done.wait(5)
        assert sys.getswitchinterval() == outer
    assert outer < before
    assert inner_seen == [outer, outer]
    assert sys.getswitchinterval() == before


def test_gil_switch_interval_is_restored_when_the_run_fails() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), quick_gil_handover():
        raise RuntimeError("the run failed")
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("from_version", [None, 2])
def test_a_rewrap_spec_rebuilds_the_same_operation(from_version: int | None) -> None:
    original = rewrap_operation(3, from_version)
    rebuilt = operation_from_spec(list(original.spec))  # as it arrives through JSON
    assert rebuilt.spec == original.spec == ("rewrap", 3, from_version)
    assert rebuilt.name == "rewrap"
    assert rebuilt.needs_plaintext is False


def test_the_fixed_operations_rebuild_from_their_specs() -> None:
    assert operation_from_spec(["encrypt"]) is ENCRYPT
    assert operation_from_spec(["decrypt-back"]) is DECRYPT_BACK
    with pytest.raises(KeyError):
        operation_from_spec(["drop-everything"])
