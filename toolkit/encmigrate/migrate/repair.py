"""``migrate-data --repair``: re-encrypt every row whose ciphertext disagrees with its plaintext.

The backfill and the catch-up pass only touch rows whose ciphertext is NULL:
once a wrong ciphertext is stored (a bug, a restore of the wrong backup, an
application writing another column's value), nothing else ever rewrites it,
and ``verify`` would block step 5 forever. A repair run walks every row that
has both a plaintext and a ciphertext, in the same chunks, batches, locks,
checkpoints and retries as the backfill, and seals again from the plaintext
each value that

* does not decrypt (tampered, truncated, another column's context), or
* decrypts to something else than what the backfill encrypts for the
  plaintext (the same comparison ``verify`` makes: ``ColumnWork.same_value``), or
* carries a search token that is not the plaintext's under the ciphertext's
  key version.

The plaintext is the truth until step 5, so repair needs it: after the drop it
refuses. It holds each batch's rows locked (``FOR NO KEY UPDATE``) from the
read to the write, as the backfill does: an application update in between
would otherwise be overwritten by a ciphertext of the old value. Rows the
application changes while the repair runs are cleared by the shadow trigger
and encrypted by the catch-up pass that follows, which is the backfill's.

A keyring that decrypts none of a column's values is the wrong keyring, not a
table full of bad ciphertexts: the run refuses (KeyConfigError, exit 3) before
writing anything, instead of re-encrypting every row under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.envelope import envelope_version
from encmigrate.errors import DecryptionError, KeyConfigError
from encmigrate.migrate.batch import PreparedBatch
from encmigrate.migrate.keyset import Cursor
from encmigrate.migrate.rekey import ENCRYPT, Operation, locked_rows
from encmigrate.migrate.table import ShadowColumns, TableWork, read_expression

__all__ = ["REPAIR", "require_readable"]

# How many stored ciphertexts per column the keyring must be able to open (any one of).
PROBE_VALUES = 200


def _pending(work: TableWork) -> sa.ColumnElement[bool]:
    """Rows with a plaintext and a ciphertext in some selected column: the candidates."""
    work.require_plaintext(
        "a repair re-encrypts from the plaintext, so it is possible only before drop-unencrypted"
    )
    return sa.or_(
        *(
            sa.and_(s.plaintext.is_not(None), s.ciphertext.is_not(None))  # type: ignore[union-attr]
            for s in work.shadows
        )
    )


def _read(
    conn: sa.Connection, work: TableWork, lower: Cursor | None, upper: Cursor | None, limit: int
) -> list[Any]:
    selected: list[Any] = list(work.primary_key)
    for shadow in work.shadows:
        token = shadow.search if shadow.search is not None else sa.null()
        selected += [read_expression(shadow), shadow.ciphertext, token]
    return locked_rows(conn, work, selected, _pending(work), lower, upper, limit)


def _compute(work: TableWork, rows: Sequence[Any]) -> PreparedBatch:
    batch = PreparedBatch(work, rows)
    for index, shadow in enumerate(work.shadows):
        base = batch.width + 3 * index
        plaintexts = [row[base] for row in rows]
        wrong = _wrong_rows(
            shadow, plaintexts, [row[base + 1] for row in rows], [row[base + 2] for row in rows]
        )
        # None keeps the stored ciphertext: only the wrong ones are sealed again.
        batch.seal(shadow, [p if w else None for p, w in zip(plaintexts, wrong, strict=True)])
    return batch


def _wrong_rows(
    shadow: ShadowColumns, plaintexts: list[Any], blobs: list[Any], tokens: list[Any]
) -> list[bool]:
    work = shadow.work
    wrong: list[bool] = []
    for plain, blob, token in zip(plaintexts, blobs, tokens, strict=True):
        if plain is None or blob is None or work.undecodable(plain):
            wrong.append(False)  # nothing to compare (an undecodable plaintext fails in seal)
            continue
        try:
            value = work.cipher.decrypt(blob)
        except DecryptionError:
            wrong.append(True)
            continue
        if not work.same_value(plain, value):
            wrong.append(True)
            continue
        version = envelope_version(blob)
        wrong.append(
            shadow.search is not None
            and (version is None or not work.token_matches(plain, token, version))
        )
    return wrong


def require_readable(conn: sa.Connection, work: TableWork) -> None:
    """Refuse a keyring that opens none of a column's stored ciphertexts (the wrong one)."""
    for shadow in work.shadows:
        sample = (
            conn.execute(
                sa.select(shadow.ciphertext)
                .where(shadow.ciphertext.is_not(None))
                .limit(PROBE_VALUES)
            )
            .scalars()
            .all()
        )
        if not sample:
            continue
        for blob in sample:
            try:
                shadow.work.cipher.decrypt(blob)
            except DecryptionError:
                continue
            break
        else:
            raise KeyConfigError(
                f"the keyring decrypts none of the {len(sample)} values of "
                f"{work.name}.{shadow.work.plan.column} checked: is it the right keyring? "
                "Nothing was repaired"
            )


REPAIR = Operation(
    "repair",
    _pending,
    _read,
    _compute,
    spec=("repair",),
    backfill=True,
    catch_up=ENCRYPT,
)
