"""Batches of ``rewrap`` (old key version -> current) and ``decrypt-back`` (the rollback).

Both run on the same chunk, checkpoint, retry and progress machinery as the
backfill; only which rows need work and what a batch writes differ.

* rewrap: rows whose ciphertext is under another version than the current
  one, or in format 1 (without the type bound in), read from the envelope
  header in SQL (``--from-version``: rows under that version, in either
  format); each value is decrypted and sealed again with a fresh nonce, in
  the current format with the column's type, its search token recomputed.
  Old and new versions stay readable throughout.
* decrypt-back: rows with a ciphertext and no plaintext (the plaintext
  columns that the drop revision's downgrade re-added empty) get their
  plaintext back. The ciphertext is sealed again in the same statement, so
  the shadow trigger, which clears a ciphertext whose plaintext changed
  alone, keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.codecs import JSON_NULL
from encmigrate.crypto.envelope import (
    FORMATS,
    HEADER_SIZE,
    envelope_version,
    header_bytes,
    read_header,
)
from encmigrate.database import MYSQL_DIALECTS
from encmigrate.errors import DecryptionError
from encmigrate.migrate.batch import BatchResult, PreparedBatch, compute_encrypt, read_encrypt
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.table import ShadowColumns, TableWork
from encmigrate.roundtrip import written_form

__all__ = [
    "DECRYPT_BACK",
    "ENCRYPT",
    "Operation",
    "locked_rows",
    "operation_from_spec",
    "rewrap_operation",
]

Read = Callable[[sa.Connection, TableWork, Cursor | None, Cursor | None, int], list[Any]]
Compute = Callable[[TableWork, Sequence[Any]], PreparedBatch]


@dataclass(frozen=True, slots=True)
class Operation:
    """What a run does: its name (chunk bookkeeping), which rows need it, one batch of it.

    ``read`` locks and reads a batch's rows in the caller's transaction,
    ``compute`` works out their new values without the database, and the
    batch's ``write`` stores them. (A three-stage pipeline that read batch
    N + 1 on a third connection while N was encrypted was tried: no faster
    on two cores, the reader's Python competing with the encryption.)
    """

    name: str
    pending: Callable[[TableWork], sa.ColumnElement[bool]]
    read: Read
    compute: Compute
    needs_plaintext: bool = True
    spec: tuple[Any, ...] = ()  # rebuilds it in a worker process: operation_from_spec(spec)
    # Step 2's own work (backfill, repair): it sets the columns' status in
    # encryption_migrations (running, then completed); rewrap and decrypt-back leave it.
    backfill: bool = False
    # The operation of the catch-up passes after the chunks (default: this one). A repair
    # is followed by the backfill's: rows changed meanwhile had their ciphertext cleared.
    catch_up: Operation | None = None

    @property
    def command(self) -> str:
        """The CLI command that runs this operation (what to run again after a failure)."""
        return {"encrypt": "migrate-data", "repair": "migrate-data --repair"}.get(
            self.name, self.name
        )

    def prepare(
        self,
        conn: sa.Connection,
        work: TableWork,
        lower: Cursor | None,
        upper: Cursor | None,
        limit: int,
    ) -> PreparedBatch:
        """Read and compute one batch in the caller's transaction."""
        return self.compute(work, self.read(conn, work, lower, upper, limit))

    def batch(
        self,
        conn: sa.Connection,
        work: TableWork,
        lower: Cursor | None,
        upper: Cursor | None,
        limit: int,
    ) -> BatchResult:
        """One whole batch in the caller's transaction: prepare, then write."""
        return self.prepare(conn, work, lower, upper, limit).write(conn)


def _encrypt_pending(work: TableWork) -> sa.ColumnElement[bool]:
    return work.needs_work()


ENCRYPT = Operation(
    "encrypt", _encrypt_pending, read_encrypt, compute_encrypt, spec=("encrypt",), backfill=True
)


# -- rewrap --------------------------------------------------------------------


def rewrap_operation(current: int, from_version: int | None = None) -> Operation:
    """Re-encrypt values under ``from_version`` (default: all but format 2 under ``current``)."""

    def pending(work: TableWork) -> sa.ColumnElement[bool]:
        return sa.or_(*(_stale(s, current, from_version) for s in work.shadows))

    def read(
        conn: sa.Connection, work: TableWork, lower: Cursor | None, upper: Cursor | None, limit: int
    ) -> list[Any]:
        selected = [*work.primary_key, *(s.ciphertext for s in work.shadows)]
        return locked_rows(conn, work, selected, pending(work), lower, upper, limit)

    def compute(work: TableWork, rows: Sequence[Any]) -> PreparedBatch:
        return _compute_rewrap(work, rows, from_version)

    spec = ("rewrap", current, from_version)
    return Operation("rewrap", pending, read, compute, needs_plaintext=False, spec=spec)


def _stale(shadow: ShadowColumns, current: int, from_version: int | None) -> sa.ColumnElement[bool]:
    column = shadow.ciphertext
    if shadow.work.plan.storage == "text":
        # The version is not cut cleanly by base64 characters: decide per row in Python.
        return column.is_not(None)
    head = sa.func.substr(column, 1, HEADER_SIZE)
    if from_version is not None:
        # That version in any format.
        heads = [header_bytes(from_version, f) for f in sorted(FORMATS)]
        return head.in_([sa.literal(h, sa.LargeBinary) for h in heads])
    # The header the writers write now: a format-1 value under the current
    # version is stale too (rewrap binds its type in).
    return sa.and_(column.is_not(None), head != sa.literal(header_bytes(current), sa.LargeBinary))


def _compute_rewrap(
    work: TableWork, rows: Sequence[Any], from_version: int | None
) -> PreparedBatch:
    batch = PreparedBatch(work, rows)
    if not rows:
        return batch
    for index, shadow in enumerate(work.shadows):
        blobs = [row[batch.width + index] for row in rows]
        # What the column's cipher writes now: its format and the current version.
        cipher = shadow.work.cipher
        current = (cipher.write_format, cipher.keys.current_version)
        wanted = [
            b is not None
            and (envelope_version(b) == from_version if from_version else read_header(b) != current)
            for b in blobs
        ]
        chosen = [b if w else None for b, w in zip(blobs, wanted, strict=True)]
        values = _open_values(batch, shadow, chosen)
        batch.seal(shadow, values, decrypted=True)
    return batch


def _open_values(batch: PreparedBatch, shadow: ShadowColumns, blobs: list[Any]) -> list[Any]:
    """Decrypted values; a value that fails is recorded and left alone (None)."""
    values, failed = _open(shadow, blobs)
    for row_index in failed:
        batch.fail(shadow.work.plan.column, row_index, "cannot decrypt the stored value")
    if shadow.work.plan.type == "json":  # an encrypted JSON null decrypts to None
        values = [
            JSON_NULL if v is None and b is not None and i not in failed else v
            for i, (v, b) in enumerate(zip(values, blobs, strict=True))
        ]
    return values


def _open(shadow: ShadowColumns, blobs: list[Any]) -> tuple[list[Any], list[int]]:
    """Decrypted values (None where nothing to do or failed) and the failed indexes."""
    cipher = shadow.work.cipher
    try:
        return cipher.batch_decrypt(blobs), []
    except DecryptionError:
        values: list[Any] = []
        failed: list[int] = []
        for index, blob in enumerate(blobs):
            try:
                values.append(cipher.decrypt(blob))
            except DecryptionError:
                values.append(None)
                failed.append(index)
        return values, failed


def locked_rows(
    conn: sa.Connection,
    work: TableWork,
    selected: list[Any],
    pending: sa.ColumnElement[bool],
    lower: Cursor | None,
    upper: Cursor | None,
    limit: int,
) -> list[Any]:
    query = (
        sa.select(*selected)
        .where(*work.key_range(lower, upper), pending)
        .order_by(*work.primary_key)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)
    elif conn.dialect.name in MYSQL_DIALECTS:
        query = query.with_for_update()  # InnoDB has no FOR NO KEY UPDATE (migrate/mysql.py)
    return list(conn.execute(query).all())


# -- decrypt-back ----------------------------------------------------------------


def _decrypt_back_pending(work: TableWork) -> sa.ColumnElement[bool]:
    work.require_plaintext(
        "re-add them first (`alembic downgrade -1` undoes the drop-unencrypted revision), "
        "then run decrypt-back"
    )
    return sa.or_(
        *(
            sa.and_(s.ciphertext.is_not(None), s.plaintext.is_(None))  # type: ignore[union-attr]
            for s in work.shadows
        )
    )


def _read_decrypt_back(
    conn: sa.Connection, work: TableWork, lower: Cursor | None, upper: Cursor | None, limit: int
) -> list[Any]:
    selected: list[Any] = list(work.primary_key)
    for index, shadow in enumerate(work.shadows):
        assert shadow.plaintext is not None
        # Whether the plaintext is missing, not its value: one value the driver cannot
        # decode (non-UTF-8 text on SQLite) would otherwise fail the whole batch's fetch.
        missing = shadow.plaintext.is_(None).label(f"_missing_{index}")
        selected += [missing, shadow.ciphertext]
    return locked_rows(conn, work, selected, _decrypt_back_pending(work), lower, upper, limit)


def _compute_decrypt_back(work: TableWork, rows: Sequence[Any]) -> PreparedBatch:
    batch = PreparedBatch(work, rows)
    if not rows:
        return batch
    for index, shadow in enumerate(work.shadows):
        assert shadow.plaintext is not None
        missing = [row[batch.width + 2 * index] for row in rows]
        blobs = [row[batch.width + 2 * index + 1] for row in rows]
        values = _open_values(
            batch, shadow, [b if m else None for m, b in zip(missing, blobs, strict=True)]
        )
        column = shadow.plaintext
        kind = shadow.work.plan.type
        batch.set(column, [written_form(v, column.type, work.dialect, kind) for v in values])
        # In the same statement as the plaintext, marked as the migrator's: the trigger keeps both.
        batch.seal(shadow, values, decrypted=True)
    return batch


DECRYPT_BACK = Operation(
    "decrypt-back",
    _decrypt_back_pending,
    _read_decrypt_back,
    _compute_decrypt_back,
    needs_plaintext=True,
    spec=("decrypt-back",),
)


def operation_from_spec(spec: Sequence[Any]) -> Operation:
    """The operation an ``Operation.spec`` describes (worker processes get specs, not code)."""
    if spec[0] == "rewrap":
        return rewrap_operation(int(spec[1]), None if spec[2] is None else int(spec[2]))
    if spec[0] == "repair":
        from encmigrate.migrate.repair import REPAIR  # repair builds on this module

        return REPAIR
    known = {op.spec[0]: op for op in (ENCRYPT, DECRYPT_BACK)}
    return known[spec[0]]
