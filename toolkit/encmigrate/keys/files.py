"""Key files on disk: written 0600 and atomically, the replaced content zeroed.

Used by the file provider (the keyring), the KMS provider (the wrapped
keyring) and the backup export.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path

from encmigrate.errors import KeyProviderError

__all__ = ["fsync_directory", "replace_private_file", "write_temporary"]

logger = logging.getLogger(__name__)


def write_temporary(path: Path, data: bytes) -> str:
    """``data`` in a new 0600 file beside ``path``, synced; returns its name (raises OSError).

    The caller gives it its final name (rename or link) or removes it.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


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
    temporary = write_temporary(path, data)
    old_fd: int | None = None
    try:
        old_fd = _keep_old(path, shred)
        os.replace(temporary, path)
        fsync_directory(directory)
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


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
