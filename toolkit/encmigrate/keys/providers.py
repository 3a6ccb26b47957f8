"""Where keyrings live: the provider seam, and the environment and file providers.

Vault and AWS providers implement the same :class:`KeyProvider` protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.files import replace_private_file
from encmigrate.keys.keyring import Keyring, decode_master_key

__all__ = ["DEFAULT_PREFIX", "EnvProvider", "FileProvider", "KeyProvider"]

DEFAULT_PREFIX = "ENCMIGRATE_"
logger = logging.getLogger(__name__)


@runtime_checkable
class KeyProvider(Protocol):
    """Loads and stores one keyring."""

    @property
    def name(self) -> str:
        """Short provider name for messages and the audit log (``env``, ``file``, ...)."""
        ...

    def describe(self) -> str:
        """Where the keyring is, for messages (never secrets)."""
        ...

    def load(self) -> Keyring:
        """The keyring; raises :class:`KeyConfigError` when missing or malformed."""
        ...

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        """Store ``keyring``; with ``erase_previous``, overwrite the old copy's material."""
        ...

    def exists(self) -> bool: ...

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive access for a load-modify-save cycle."""
        ...


class EnvProvider:
    """A keyring from environment variables (read-only).

    ``<PREFIX>KEYRING`` holds a whole keyring document; otherwise
    ``<PREFIX>MASTER_KEY`` holds one base64 master key, with its version in
    ``<PREFIX>KEY_VERSION`` (default 1).
    """

    name = "env"

    def __init__(
        self, prefix: str = DEFAULT_PREFIX, environ: Mapping[str, str] | None = None
    ) -> None:
        self.prefix = prefix
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return f"EnvProvider(prefix={self.prefix!r})"

    def describe(self) -> str:
        return f"environment ({self.prefix}KEYRING or {self.prefix}MASTER_KEY)"

    def exists(self) -> bool:
        return bool(
            self._environ.get(f"{self.prefix}KEYRING")
            or self._environ.get(f"{self.prefix}MASTER_KEY")
        )

    def load(self) -> Keyring:
        document = self._environ.get(f"{self.prefix}KEYRING")
        if document:
            return Keyring.from_json(document, source=f"{self.prefix}KEYRING")
        encoded = self._environ.get(f"{self.prefix}MASTER_KEY")
        if not encoded:
            raise KeyConfigError(
                f"no key in the environment: set {self.prefix}KEYRING or {self.prefix}MASTER_KEY"
            )
        try:
            key = decode_master_key(encoded)
        except ValueError as exc:
            raise KeyConfigError(f"{self.prefix}MASTER_KEY: {exc}") from None
        return Keyring.single(key, self._version())

    def _version(self) -> int:
        """``<PREFIX>KEY_VERSION``: the envelope stores it in 4 bytes, so 1 to 4294967295."""
        raw = self._environ.get(f"{self.prefix}KEY_VERSION", "1")
        problem = (
            f"{self.prefix}KEY_VERSION: must be a whole number from 1 to {MAX_VERSION} "
            "(the version the master key was created under)"
        )
        try:
            version = int(raw)
        except ValueError:
            raise KeyConfigError(problem) from None
        if not 1 <= version <= MAX_VERSION:
            raise KeyConfigError(problem)
        return version

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        raise KeyProviderError(
            "the environment provider is read-only: key operations need a writable provider "
            '(e.g. [keys] provider = "file" in encmigrate.toml, or ENCMIGRATE_KEYRING_FILE)'
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield


class FileProvider:
    """A keyring in a JSON file that only its owner may read (mode 0600).

    Writes are atomic (temporary file, fsync, rename, fsync of the folder),
    so a crash leaves either the old keyring or the new one, never half; the
    replaced file's bytes are then overwritten with zeros.
    """

    name = "file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileProvider({str(self.path)!r})"

    def describe(self) -> str:
        return f"keyring file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> Keyring:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyConfigError(
                f"keyring file {self.path} does not exist; "
                "create one with `encmigrate keys generate`"
            ) from None
        except OSError as exc:
            raise KeyProviderError(
                f"cannot read keyring file {self.path}: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyProviderError(
                    f"keyring file {self.path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {self.path}`"
                )
            text = handle.read()
        return Keyring.from_json(text, source=str(self.path))

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        """Replace the file atomically, then overwrite the replaced file's bytes with zeros.

        Every save erases the old content, not only ``destroy``'s: a keyring
        that was replaced holds material (a destroyed version, a disabled
        one's state) nobody should find later. ``erase_previous`` is kept for
        the provider protocol; files always get it.
        """
        replace_private_file(self.path, keyring.to_json().encode("utf-8"), "keyring file")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``<keyring>.lock`` beside the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
