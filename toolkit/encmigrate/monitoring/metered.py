"""A cipher wrapper that counts encryptions and decryptions without slowing the hot path.

The batch methods add to the Prometheus counters once per batch. Single
``encrypt``/``decrypt`` calls only bump plain integers on the wrapper; the
totals reach the counters when a batch runs, every ``FLUSH_EVERY`` calls, and
before each scrape or textfile write (:meth:`Metrics.track`). So a single call
costs one Python attribute increment, not a locked counter update.

Counting happens here, not in :mod:`encmigrate.crypto`, which stays free of
any metrics import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from encmigrate.crypto.cipher import FieldCipher
from encmigrate.errors import DecryptionError, EncmigrateError
from encmigrate.monitoring.metrics import Metrics, decrypt_failure_reason

__all__ = ["FLUSH_EVERY", "MeteredCipher"]

FLUSH_EVERY = 1024


class MeteredCipher:
    """Wraps a :class:`FieldCipher` (or ``SearchableCipher``); other attributes pass through."""

    def __init__(self, cipher: FieldCipher, metrics: Metrics) -> None:
        self._cipher = cipher
        self._metrics = metrics
        context = cipher.context
        self._encrypted = metrics.encrypted.labels(context)
        self._decrypted = metrics.decrypted.labels(context)
        self._encrypt_failed = metrics.encrypt_failures.labels(context)
        self._pending_encrypted = 0
        self._pending_decrypted = 0
        metrics.track(self)

    def __repr__(self) -> str:
        return f"MeteredCipher({self._cipher!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cipher, name)

    def encrypt(self, value: Any) -> bytes | None:
        try:
            blob = self._cipher.encrypt(value)
        except EncmigrateError:
            self._encrypt_failed.inc()
            raise
        self._pending_encrypted += 1
        if self._pending_encrypted >= FLUSH_EVERY:
            self.flush()
        return blob

    def decrypt(self, blob: Any) -> Any:
        try:
            value = self._cipher.decrypt(blob)
        except DecryptionError as exc:
            self._decrypt_failed(exc)
            raise
        self._pending_decrypted += 1
        if self._pending_decrypted >= FLUSH_EVERY:
            self.flush()
        return value

    def batch_encrypt(self, values: Sequence[Any]) -> list[bytes | None]:
        try:
            blobs = self._cipher.batch_encrypt(values)
        except EncmigrateError:
            self._encrypt_failed.inc()
            raise
        self._encrypted.inc(len(blobs) + self._take_encrypted())
        return blobs

    def batch_decrypt(self, blobs: Sequence[Any]) -> list[Any]:
        try:
            values = self._cipher.batch_decrypt(blobs)
        except DecryptionError as exc:
            self._decrypt_failed(exc)
            raise
        self._decrypted.inc(len(values) + self._take_decrypted())
        return values

    def flush(self) -> None:
        """Move the single-call tallies into the counters."""
        encrypted, decrypted = self._take_encrypted(), self._take_decrypted()
        if encrypted:
            self._encrypted.inc(encrypted)
        if decrypted:
            self._decrypted.inc(decrypted)

    def _take_encrypted(self) -> int:
        count, self._pending_encrypted = self._pending_encrypted, 0
        return count

    def _take_decrypted(self) -> int:
        count, self._pending_decrypted = self._pending_decrypted, 0
        return count

    def _decrypt_failed(self, error: DecryptionError) -> None:
        reason = decrypt_failure_reason(error)
        self._metrics.decrypt_failures.labels(self._cipher.context, reason).inc()
