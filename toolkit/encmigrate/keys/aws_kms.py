"""The AWS KMS provider: envelope encryption of the keyring's master keys.

Each save asks KMS for a fresh data key (``GenerateDataKey``, AES-256) and
seals every version's master key with it (AES-256-GCM, the version number in
the associated data, so wrapped keys cannot be swapped between versions), and
authenticates the whole document under a key derived from it (states,
current version, every field: :func:`~encmigrate.keys.remote.check_document`).
The stored document holds the KMS-encrypted data key and the sealed master
keys, never a plaintext key; it lives in a file (mode 0600) or a Secrets
Manager secret. A load calls ``Decrypt`` once, checks the document, unseals
the master keys into memory, wipes the data key, and caches the keyring for
the TTL.

The KMS key never leaves KMS; revoking ``kms:Decrypt`` from a role cuts its
access to every version at once.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.aws import AwsCalls, SecretStore, aws_client
from encmigrate.keys.files import replace_private_file
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.remote import (
    KeyringCache,
    RetryPolicy,
    audit_load_failure,
    check_document,
    read_wrapped,
    unwrap_keyring,
    wrap_keyring,
)

__all__ = ["KeyringFileStore", "KmsProvider", "WrappedStore"]

_NONCE = 12
_ENCRYPTION_CONTEXT = {"encmigrate": "keyring"}


class WrappedStore(Protocol):
    """Where the wrapped keyring document lives."""

    def describe(self) -> str: ...
    def read(self) -> str: ...
    def exists(self) -> bool: ...
    def write(self, text: str, *, erase_previous: bool = False) -> Any: ...


class KeyringFileStore:
    """The wrapped keyring in a local file, written atomically with mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyringFileStore({str(self.path)!r})"

    def describe(self) -> str:
        return f"wrapped keyring file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyConfigError(
                f"{self.describe()} does not exist; create one with `encmigrate keys generate`"
            ) from None
        except OSError as exc:
            raise KeyProviderError(f"cannot read {self.describe()}: {exc.strerror}") from None

    def write(self, text: str, *, erase_previous: bool = False) -> None:
        """Replace the file atomically and zero the replaced one.

        The old copy holds only wrapped keys, but its data key still unwraps
        under the KMS key: after a destroy it would bring the version back.
        """
        replace_private_file(self.path, text.encode("utf-8"), "wrapped keyring file")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class KmsProvider:
    """Master keys wrapped under an AWS KMS key (``[keys] provider = "aws-kms"``)."""

    name = "aws-kms"

    def __init__(
        self,
        key_id: str,
        store: WrappedStore,
        *,
        region: str | None = None,
        client: Any = None,
        cache_ttl: float = 300.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.key_id = key_id
        self.store = store
        self.region = region
        self.cache = KeyringCache(cache_ttl)
        self._client = client
        self._retry = retry or RetryPolicy()
        self._calls: AwsCalls | None = None

    @classmethod
    def with_file(
        cls, key_id: str, path: Path, region: str | None = None, **options: Any
    ) -> KmsProvider:
        return cls(key_id, KeyringFileStore(path), region=region, **options)

    @classmethod
    def with_secret(
        cls, key_id: str, secret_id: str, region: str | None = None, **options: Any
    ) -> KmsProvider:
        store = SecretStore(secret_id, region=region, retry=options.get("retry"))
        return cls(key_id, store, region=region, **options)

    def __repr__(self) -> str:
        return f"KmsProvider({self.key_id!r}, {self.store!r})"

    @property
    def wrapping(self) -> str:
        return f"aws-kms:{self.key_id}"

    def describe(self) -> str:
        return f"{self.store.describe()}, keys wrapped by AWS KMS key {self.key_id}"

    @property
    def calls(self) -> AwsCalls:
        if self._calls is None:
            client = self._client or aws_client("kms", self.region)
            where = f"AWS KMS key {self.key_id}"
            self._calls = AwsCalls(client, "kms", where, self._retry)
        return self._calls

    def exists(self) -> bool:
        return self.store.exists()

    def load(self) -> Keyring:
        cached = self.cache.get()
        if cached is not None:
            return cached
        try:
            keyring = self._unwrap(self.store.read())
        except KeyConfigError as exc:
            audit_load_failure(self.name, self.describe(), exc)
            raise
        return self.cache.put(keyring)

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        answer = self.calls(
            "generate_data_key",
            admin=True,
            KeyId=self.key_id,
            KeySpec="AES_256",
            EncryptionContext=_ENCRYPTION_CONTEXT,
        )
        data_key = bytearray(answer["Plaintext"])
        try:
            sealer = AESGCM(bytes(data_key))

            def wrap(version: int, key: bytes) -> str:
                nonce = os.urandom(_NONCE)
                sealed = sealer.encrypt(nonce, key, _associated(version))
                return base64.b64encode(nonce + sealed).decode()

            extra = {"data_key": base64.b64encode(answer["CiphertextBlob"]).decode()}
            text = wrap_keyring(keyring, wrap, self.wrapping, extra, data_key=bytes(data_key))
        finally:
            _wipe(data_key)
        self.store.write(text, erase_previous=erase_previous)
        self.cache.put(keyring)

    def load_unauthenticated(self) -> Keyring:
        """The stored keyring even without authentication (``keys upgrade`` only; not cached)."""
        return self._unwrap(self.store.read(), allow_unauthenticated=True)

    def _unwrap(self, text: str, *, allow_unauthenticated: bool = False) -> Keyring:
        source = self.describe()
        document = read_wrapped(text, self.wrapping, source)
        try:
            blob = base64.b64decode(document["data_key"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeyConfigError(f"{source}: the wrapped document has no valid data_key") from None
        answer = self.calls(
            "decrypt", KeyId=self.key_id, CiphertextBlob=blob, EncryptionContext=_ENCRYPTION_CONTEXT
        )
        data_key = bytearray(answer["Plaintext"])
        try:
            check_document(
                document, bytes(data_key), source, allow_unauthenticated=allow_unauthenticated
            )
            opener = AESGCM(bytes(data_key))

            def unwrap(version: int, wrapped: str) -> bytes:
                try:
                    raw = base64.b64decode(wrapped, validate=True)
                    return opener.decrypt(raw[:_NONCE], raw[_NONCE:], _associated(version))
                except (InvalidTag, ValueError):
                    raise KeyConfigError(
                        f"{source}: wrapped key of version {version} does not unwrap "
                        "(tampered, or wrapped under another data key)"
                    ) from None

            return unwrap_keyring(document, unwrap, source)
        finally:
            _wipe(data_key)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        file_lock = getattr(self.store, "lock", None)
        with self.cache.bypass(), file_lock() if file_lock else contextlib.nullcontext():
            yield

    def generation(self) -> int:
        return self.cache.generation()


def _associated(version: int) -> bytes:
    return b"encmigrate-keyring/1/version/" + str(version).encode()


def _wipe(buffer: bytearray) -> None:
    for i in range(len(buffer)):
        buffer[i] = 0
