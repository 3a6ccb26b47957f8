"""Where keyrings live: the provider seam, and the environment and file providers.

Vault and AWS providers implement the same :class:`KeyProvider` protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.keyring import Keyring, decode_master_key

__all__ = ["DEFAULT_PREFIX", "EnvProvider", "FileProvider", "KeyProvider"]

DEFAULT_PREFIX = "ENCMIGRATE_"


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
        raw_version = self._environ.get(f"{self.prefix}KEY_VERSION", "1")
        try:
            version = int(raw_version)
        except ValueError:
            raise KeyConfigError(
                f"{self.prefix}KEY_VERSION: must be a whole number, got {raw_version!r}"
            ) from None
        if version < 1:
            raise KeyConfigError(f"{self.prefix}KEY_VERSION: must be 1 or more, got {version}")
        return Keyring.single(key, version)

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
    so a crash leaves either the old keyring or the new one, never half.
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
        """Replace the file atomically; ``erase_previous`` overwrites the old file's bytes.

        The old file is hard-linked aside before the rename and overwritten
        with zeros only after the new keyring is in place, so no crash can
        leave the project without a keyring. A leftover ``.shred`` file from
        a crash is erased by the next save.
        """
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        shred = self.path.with_name(self.path.name + ".shred")
        _erase(shred)
        data = keyring.to_json().encode("utf-8")
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if erase_previous and self.path.exists():
                os.link(self.path, shred)
            os.replace(temporary, self.path)
            _fsync_directory(directory)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise KeyProviderError(
                f"cannot write keyring file {self.path}: {exc.strerror}"
            ) from None
        _erase(shred)

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


def _erase(path: Path) -> None:
    """Overwrite a file's bytes with zeros, sync, and remove it.

    On journaling, copy-on-write or flash storage the old blocks may survive
    elsewhere; this is best effort, as docs/keys.md explains.
    """
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
