"""status's key-version histogram reads headers in SQL and agrees with the envelope reader.

The SQL cuts ``HEADER_SIZE`` bytes (``HEADER_TEXT_SIZE`` base64 characters) off each value;
the versions are told by ``envelope_version``, on PostgreSQL and SQLite, for both storages.
"""

from __future__ import annotations

import base64
from collections import Counter

import sqlalchemy as sa

from encmigrate.crypto.envelope import (
    FORMAT_1,
    FORMAT_2,
    MAX_VERSION,
    envelope_version,
    header_bytes,
)
from encmigrate.migrate import connect, key_versions
from encmigrate.plan import ColumnPlan

BODY = bytes(range(28))  # nonce, a few ciphertext bytes, tag: the SQL reads none of it

STORED = [
    header_bytes(1, FORMAT_1) + BODY,
    header_bytes(1, FORMAT_2) + BODY,
    header_bytes(2, FORMAT_2) + BODY,
    header_bytes(2, FORMAT_2) + BODY[::-1],
    header_bytes(MAX_VERSION, FORMAT_2) + BODY,  # above 2**31: unsigned
    b"\x07\x00\x00\x00\x01" + BODY,  # an unknown format byte: not an envelope
    b"\x02\x00",  # too short for a header
    None,
]
EXPECTED = Counter({1: 2, 2: 2, MAX_VERSION: 1})


def test_key_versions_counts_what_the_reader_reads(db_url: str) -> None:
    engine = connect(db_url)
    blob_type = "bytea" if engine.dialect.name == "postgresql" else "BLOB"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE t (id integer PRIMARY KEY, b_encrypted {blob_type}, "
                "s_encrypted text)"
            )
            conn.execute(
                sa.text("INSERT INTO t VALUES (:i, :b, :s)"),
                [
                    {
                        "i": i,
                        "b": blob,
                        "s": None if blob is None else base64.b64encode(blob).decode("ascii"),
                    }
                    for i, blob in enumerate(STORED)
                ],
            )
        binary = ColumnPlan(table="t", column="b", type="string", context="t.b")
        text = ColumnPlan(table="t", column="s", type="string", context="t.s", storage="text")
        with engine.connect() as conn:
            assert key_versions(conn, binary) == EXPECTED
            assert key_versions(conn, text) == EXPECTED
    finally:
        engine.dispose()
    reread = Counter(v for v in map(envelope_version, STORED) if v is not None)
    assert reread == EXPECTED
