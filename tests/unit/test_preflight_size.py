"""The size estimate is plain arithmetic; on SQLite the preflight checks the keys and the disk."""

from __future__ import annotations

from pathlib import Path

from encmigrate import plan as plan_module
from encmigrate.errors import KeyConfigError
from encmigrate.keys import Keyring
from encmigrate.migrate import connect
from encmigrate.preflight import Verdict, run_preflight
from encmigrate.preflight.size import (
    INDEX_ENTRY_OVERHEAD,
    VALUE_OVERHEAD,
    ColumnSample,
    SizeEstimate,
    TableSample,
    ciphertext_size,
    estimate,
    human_bytes,
)


def test_an_envelope_is_the_value_plus_header_nonce_and_tag() -> None:
    assert ciphertext_size(0, text=False) == 33  # 5 + 12 + 0 + 16
    assert ciphertext_size(20, text=False) == 53
    assert ciphertext_size(20, text=True) == 72  # base64 of 53 bytes
    assert ciphertext_size(19.2, text=False) == 53  # a fractional average rounds up


def test_the_estimate_of_a_table() -> None:
    sample = TableSample(
        rows=1000,
        row_width=100.0,
        columns=(
            ColumnSample(non_null=0.5, average_bytes=20, searchable=True, text=False),
            ColumnSample(non_null=1.0, average_bytes=7, searchable=False, text=False),
        ),
    )
    email_envelope = 53 + VALUE_OVERHEAD
    token = 32 + VALUE_OVERHEAD
    phone_envelope = 40 + VALUE_OVERHEAD
    shadow = 500 * (email_envelope + token) + 1000 * phone_envelope
    found = estimate(sample)
    assert found.shadow == shadow
    assert found.indexes == 500 * (token + INDEX_ENTRY_OVERHEAD)
    # Every row with a plaintext is rewritten once, whole, with its new values.
    assert found.wal == 1000 * 100 + shadow
    assert found.total == found.shadow + found.indexes + found.wal
    assert found + SizeEstimate(1, 2, 3) == SizeEstimate(
        found.shadow + 1, found.indexes + 2, found.wal + 3
    )


def test_an_empty_table_needs_nothing() -> None:
    assert estimate(TableSample(0, 0.0, ())) == SizeEstimate()


def test_sizes_read_as_an_operator_reads_them() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_500) == "1.5 kB"
    assert human_bytes(2_000_000_000) == "2.0 GB"


def test_on_sqlite_the_keys_and_disk_are_checked_and_the_rest_skipped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = connect(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE customers (id integer PRIMARY KEY, email text)")
            conn.exec_driver_sql("INSERT INTO customers VALUES (1, 'someone@example.com')")
        (tmp_path / "encmigrate.toml").write_text(
            '[[columns]]\ntable = "customers"\ncolumn = "email"\n'
        )
        plan = plan_module.load(tmp_path / "encmigrate.toml", database_url=url, environ={})
        keyring = Keyring.generate()
        report = run_preflight(plan, engine, keyring, step=1, app_keyring=keyring)
        verdicts = {c.name: c.verdict for c in report.checks}
        assert verdicts == {
            "keys": Verdict.PASS,
            "canary": Verdict.PASS,
            "disk": Verdict.PASS,
            "privileges": Verdict.SKIP,
            "sessions": Verdict.SKIP,
            "timeouts": Verdict.SKIP,
        }
        assert "free" in next(c.figure for c in report.checks if c.name == "disk")
        assert not report.failed

        def refuse() -> Keyring:
            raise KeyConfigError("no keyring configured")

        report = run_preflight(plan, engine, refuse, step=2)
        assert report.key_failed
        assert report.checks[0].detail == "no keyring configured"
        assert report.as_dict()["ok"] is False
    finally:
        engine.dispose()
