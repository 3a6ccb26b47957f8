"""``verify``: prove the shadow columns hold the plaintext, independently of the migrator.

Every row (or a random sample) is streamed and classified per column: both
NULL (fine), plaintext only (missing), both (must decrypt to the plaintext
and, when searchable, carry the token of the plaintext under the
ciphertext's key version), ciphertext only (must decrypt). Nothing of the
migrator's own bookkeeping is trusted.

What it shares with the migrator, and nothing more: the column's cipher,
built from the plan's :class:`~encmigrate.spec.ColumnSpec` as the column
types build theirs, and the reading and comparing of plaintexts. The
plaintext is read and compared exactly as the backfill reads and
encrypts it (``table.read_expression``, ``ColumnWork.same_value``): a
comparison of its own would raise false alarms (a jsonb string re-parsed
by the driver, NaN never equal to itself) that block step 5, or miss real
differences (1.10 against 1.1). Text that is not UTF-8 is counted per
column as undecodable, by key: the value is never decoded into a message.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from encmigrate.crypto.envelope import envelope_version
from encmigrate.errors import DatabaseError, DecryptionError
from encmigrate.keys.keyring import Keyring
from encmigrate.migrate.bookkeeping import error_kind
from encmigrate.migrate.database import sqlstate
from encmigrate.migrate.table import ShadowColumns, TableWork, read_expression
from encmigrate.plan import Plan
from encmigrate.tracking import MigrationStatus, migrations

__all__ = ["ColumnVerdict", "verify"]

SHOWN_KEYS = 5
STREAM_ROWS = 2000


@dataclass(slots=True)
class ColumnVerdict:
    """What verify found in one column. Keys are shown, values never."""

    table: str
    column: str
    plaintext_dropped: bool = False
    sampled: bool = False
    rows_checked: int = 0
    matches: int = 0
    both_null: int = 0
    ciphertext_only: int = 0
    missing: int = 0
    mismatches: int = 0
    token_mismatches: int = 0
    undecryptable: int = 0
    undecodable: int = 0  # plaintext text that is not valid UTF-8
    unreadable_version: int = 0
    versions: Counter[int] = field(default_factory=Counter)
    problem_keys: list[tuple[str, list[Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.mismatches
            or self.token_mismatches
            or self.undecryptable
            or self.undecodable
        )

    @property
    def key_problem(self) -> bool:
        """Values under an unreadable version, or a keyring that opens none of them."""
        opened = self.matches + self.ciphertext_only
        return self.unreadable_version > 0 or (self.undecryptable > 0 and opened == 0)

    def note(self, kind: str, key: list[Any]) -> None:
        if len(self.problem_keys) < SHOWN_KEYS:
            self.problem_keys.append((kind, key))

    def summary(self) -> str:
        parts = [f"{self.rows_checked} rows checked"]
        for label, count in (
            ("missing", self.missing),
            ("mismatched", self.mismatches),
            ("wrong search token", self.token_mismatches),
            ("undecryptable", self.undecryptable),
            ("undecodable", self.undecodable),
        ):
            if count:
                parts.append(f"{count} {label}")
        return ", ".join(parts)


def verify(
    plan: Plan,
    engine: sa.Engine,
    keyring: Keyring,
    *,
    tables: Sequence[str] | None = None,
    sample: int | None = None,
    record: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> list[ColumnVerdict]:
    """Check every planned column of the selected tables; record the outcome unless told not to."""
    verdicts: list[ColumnVerdict] = []
    for table_plan in plan.select(tables):
        work = TableWork(engine, table_plan, keyring)
        found = _verify_table(engine, work, sample, progress)
        if record:
            _record(engine, work, found, sampled=sample is not None)
        verdicts += found
    return verdicts


def _verify_table(
    engine: sa.Engine,
    work: TableWork,
    sample: int | None,
    progress: Callable[[str, int], None] | None,
) -> list[ColumnVerdict]:
    verdicts = [
        ColumnVerdict(
            work.name,
            s.work.plan.column,
            plaintext_dropped=s.plaintext is None,
            sampled=sample is not None,
        )
        for s in work.shadows
    ]
    selected: list[Any] = list(work.primary_key)
    for shadow in work.shadows:
        selected += [
            read_expression(shadow) if shadow.plaintext is not None else sa.null(),
            shadow.ciphertext,
            shadow.search if shadow.search is not None else sa.null(),
        ]
    query = sa.select(*selected)
    query = (
        query.order_by(sa.func.random()).limit(sample)
        if sample is not None
        else query.order_by(*work.primary_key)
    )
    width = len(work.primary_key)
    seen = 0
    try:
        with engine.connect() as conn:
            options = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS)
            rows = options.execute(query)
            for batch in _partitions(rows, STREAM_ROWS):
                keys = [work.keys.to_json(tuple(row[:width])) or [] for row in batch]
                for index, (shadow, verdict) in enumerate(zip(work.shadows, verdicts, strict=True)):
                    base = width + 3 * index
                    _check(
                        shadow,
                        verdict,
                        keys,
                        [row[base] for row in batch],
                        [row[base + 1] for row in batch],
                        [row[base + 2] for row in batch],
                    )
                seen += len(batch)
                if progress is not None:
                    progress(work.name, seen)
    except sa.exc.DBAPIError as exc:
        # The driver's message can quote a value (PostgreSQL names the bytes of text it
        # cannot convert to the client encoding): only its SQLSTATE and class are shown.
        hint = _HINTS.get(sqlstate(exc) or "", "")
        raise DatabaseError(
            f"{work.name}: verify could not read the rows ({error_kind(exc)}){hint}"
        ) from None
    return verdicts


_HINTS = {
    "22021": (
        "; a text value is not valid in the connection's encoding "
        "(a SQL_ASCII database holding text that is not UTF-8)"
    ),
}


def _partitions(rows: Any, size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _check(
    shadow: ShadowColumns,
    verdict: ColumnVerdict,
    keys: list[list[Any]],
    plaintexts: list[Any],
    ciphertexts: list[Any],
    tokens: list[Any],
) -> None:
    work = shadow.work
    cipher = work.cipher
    opened = _open_all(cipher.batch_decrypt, cipher.decrypt, ciphertexts)
    for key, plain, blob, token, value in zip(
        keys, plaintexts, ciphertexts, tokens, opened, strict=True
    ):
        verdict.rows_checked += 1
        if blob is None:
            if plain is None:
                verdict.both_null += 1
            elif work.undecodable(plain):
                verdict.undecodable += 1
                verdict.note("undecodable", key)
            else:
                verdict.missing += 1
                verdict.note("missing", key)
            continue
        version = envelope_version(blob)
        if version is not None:
            verdict.versions[version] += 1
        if isinstance(value, DecryptionError):
            verdict.undecryptable += 1
            if version is not None and version not in cipher.keys.readable_versions():
                verdict.unreadable_version += 1
            verdict.note("undecryptable", key)
            continue
        if plain is None:
            verdict.ciphertext_only += 1
            continue
        if work.undecodable(plain):
            verdict.undecodable += 1
            verdict.note("undecodable", key)
            continue
        if not work.same_value(plain, value):
            verdict.mismatches += 1
            verdict.note("mismatch", key)
            continue
        if (
            shadow.search is not None
            and version is not None
            and not work.token_matches(plain, token, version)
        ):
            verdict.token_mismatches += 1
            verdict.note("token", key)
            continue
        verdict.matches += 1


def _open_all(
    batch: Callable[[Sequence[Any]], list[Any]],
    single: Callable[[Any], Any],
    blobs: list[Any],
) -> list[Any]:
    """Decrypted values, with the DecryptionError in place of each value that fails."""
    try:
        return batch(blobs)
    except DecryptionError:
        opened: list[Any] = []
        for blob in blobs:
            try:
                opened.append(single(blob))
            except DecryptionError as exc:
                opened.append(exc)
        return opened


def _record(
    engine: sa.Engine, work: TableWork, verdicts: list[ColumnVerdict], *, sampled: bool
) -> None:
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for verdict in verdicts:
            where = (
                migrations.c.table_name == work.name,
                migrations.c.column_name == verdict.column,
            )
            current = conn.execute(
                sa.select(migrations.c.status).where(*where)
            ).scalar_one_or_none()
            values: dict[str, Any] = {"updated_at": now}
            if not verdict.ok:
                values.update(
                    status=MigrationStatus.FAILED.value, last_error="verify: " + verdict.summary()
                )
            elif not sampled:
                dropped = current == MigrationStatus.DROPPED.value or verdict.plaintext_dropped
                values.update(
                    status=MigrationStatus.DROPPED.value
                    if dropped
                    else MigrationStatus.VERIFIED.value,
                    verified_at=now,
                    last_error=None,
                )
            if current is None:
                conn.execute(
                    migrations.insert().values(
                        table_name=work.name,
                        column_name=verdict.column,
                        status=values.get("status", MigrationStatus.PENDING.value),
                        **{k: v for k, v in values.items() if k != "status"},
                    )
                )
            else:
                conn.execute(migrations.update().where(*where).values(**values))
