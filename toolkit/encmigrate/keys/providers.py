"""Where keyrings live: the provider seam, and the environment and file providers.

Vault and AWS providers implement the same :class:`KeyProvider` protocol.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from encmigrate.crypto.envelope import MAX_VERSION
from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.keyring import Keyring, decode_master_key

__all__ = ["DEFAULT_PREFIX", "EnvProvider", "FileProvider", "KeyProvider", "replace_private_file"]

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


def replace_private_file(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically, and zero the content it replaces.

    The old file is hard-linked aside (``<name>.shred``) before the rename and
    zeroed in place after it: the zeros reach the old inode, so every other
    hard link to the old file shows zeros, never the old keys; and a crash
    between the two steps leaves the new keyring in place and a ``.shred``
    that the next save erases. Zeroing before the rename instead could leave
    the project with no keyring at all. Where hard links are not supported,
    the old file is held open across the rename and zeroed through that.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    shred = path.with_name(path.name + ".shred")
    _erase(shred)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    old_fd: int | None = None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        old_fd = _keep_old(path, shred)
        os.replace(temporary, path)
        _fsync_directory(directory)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if old_fd is not None:  # the old file is still the keyring: drop the link, keep the bytes
            os.close(old_fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(shred)
        raise KeyProviderError(f"cannot write {what} {path}: {exc.strerror}") from None
    if old_fd is not None:
        try:
            _zero(old_fd)
        finally:
            os.close(old_fd)
    _erase(shred)


def _keep_old(path: Path, shred: Path) -> int | None:
    """An open descriptor of the file about to be replaced (and a ``.shred`` link to it)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return None
    except PermissionError:
        logger.warning("%s is not writable: the content it replaces cannot be zeroed", path)
        return None
    links = os.fstat(fd).st_nlink
    if links > 1:
        logger.warning(
            "%s has %d other hard link(s): they show zeros after this save, not the new "
            "content (a hard link is not a backup: use `encmigrate keys export`)",
            path,
            links - 1,
        )
    try:
        os.link(path, shred)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            os.close(fd)
            raise
    return fd


def _zero(fd: int) -> None:
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = memoryview(b"\0" * size)
    while zeros:
        zeros = zeros[os.write(fd, zeros) :]
    os.fsync(fd)


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
        _zero(fd)
    finally:
        os.close(fd)
    os.unlink(path)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
