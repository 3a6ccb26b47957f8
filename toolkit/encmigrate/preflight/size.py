"""How much the shadow columns, their token indexes and the backfill's WAL will take.

Pure arithmetic over a few figures read from the database (rows, non-NULL
share, the plaintext's average length, the row's average width), so the
estimate is testable without one. It is an estimate: page fill, alignment,
TOAST compression and full-page images in the WAL move the real figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from encmigrate.crypto.envelope import HEADER_SIZE, NONCE_SIZE, TAG_SIZE

__all__ = [
    "INDEX_ENTRY_OVERHEAD",
    "TOKEN_SIZE",
    "VALUE_OVERHEAD",
    "ColumnSample",
    "SizeEstimate",
    "TableSample",
    "ciphertext_size",
    "estimate",
    "human_bytes",
]

# An HMAC-SHA256 search token.
TOKEN_SIZE = 32
# A stored variable-length value's own header (PostgreSQL varlena, SQLite record header).
VALUE_OVERHEAD = 4
# A B-tree entry beyond its key: tuple header and line pointer (PostgreSQL's figures).
INDEX_ENTRY_OVERHEAD = 12


def ciphertext_size(plaintext_bytes: float, *, text: bool) -> int:
    """Bytes (or base64 characters) of one envelope for a value of ``plaintext_bytes``."""
    raw = HEADER_SIZE + NONCE_SIZE + math.ceil(plaintext_bytes) + TAG_SIZE
    return 4 * math.ceil(raw / 3) if text else raw


def _token_size(*, text: bool) -> int:
    return 4 * math.ceil(TOKEN_SIZE / 3) if text else TOKEN_SIZE


@dataclass(frozen=True, slots=True)
class ColumnSample:
    """What the estimate needs of one planned column, read from a sample of its table."""

    non_null: float  # share of rows with a plaintext, 0..1
    average_bytes: float  # average plaintext length in bytes (its text form)
    searchable: bool
    text: bool  # storage = "text": base64 envelopes


@dataclass(frozen=True, slots=True)
class TableSample:
    """One planned table: its rows, its rows' average width, and its planned columns."""

    rows: int  # an estimate on PostgreSQL
    row_width: float  # bytes; 0 when unknown
    columns: tuple[ColumnSample, ...]


@dataclass(frozen=True, slots=True)
class SizeEstimate:
    """Bytes each part will take; ``wal`` counts what the backfill's updates log."""

    shadow: int = 0
    indexes: int = 0
    wal: int = 0

    @property
    def total(self) -> int:
        return self.shadow + self.indexes + self.wal

    def __add__(self, other: SizeEstimate) -> SizeEstimate:
        return SizeEstimate(
            self.shadow + other.shadow, self.indexes + other.indexes, self.wal + other.wal
        )


def estimate(table: TableSample) -> SizeEstimate:
    """The shadow columns (token columns and indexes too) of one table, and its backfill's WAL.

    Every non-NULL plaintext gets an envelope (and a token when searchable).
    The backfill updates each row that has a plaintext once, all its shadow
    columns in one write: the WAL holds about the new version of the whole row,
    the old row's width plus its new shadow values.
    """
    shadow = 0.0
    index = 0.0
    for column in table.columns:
        filled = table.rows * _share(column.non_null)
        envelope = ciphertext_size(column.average_bytes, text=column.text) + VALUE_OVERHEAD
        token = _token_size(text=column.text) + VALUE_OVERHEAD if column.searchable else 0
        shadow += filled * (envelope + token)
        index += filled * (token + INDEX_ENTRY_OVERHEAD) if column.searchable else 0.0
    updated = table.rows * max((_share(c.non_null) for c in table.columns), default=0.0)
    wal = updated * table.row_width + shadow
    return SizeEstimate(math.ceil(shadow), math.ceil(index), math.ceil(wal))


def _share(value: float) -> float:
    return max(0.0, min(1.0, value))


def human_bytes(count: float) -> str:
    """``1.2 GB``: a size as an operator reads it (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")
