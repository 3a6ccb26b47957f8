"""The backup key: a Fernet key kept apart from the keyring, and the files only it may read.

A keyring backup is encrypted under a *separate* backup key, never one of the
keyring's own master keys, and there is no plaintext backup: without a backup
key nothing is written. The key is a Fernet key (``Fernet.generate_key()``: 32
random bytes, urlsafe base64) from ``ENCMIGRATE_BACKUP_KEY`` or a file only its
owner may read; the key file and the backups are written with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

from encmigrate.errors import ConfigError, KeyConfigError, KeyProviderError, RefusedError
from encmigrate.keys.files import fsync_directory, write_temporary
from encmigrate.keys.keyring import Keyring

__all__ = [
    "BACKUP_KEY_ENV",
    "BackupKey",
    "load_backup_key",
    "read_private",
    "write_new_backup_key",
    "write_private",
]

BACKUP_KEY_ENV = "ENCMIGRATE_BACKUP_KEY"
_FERNET_KEY_SIZE = 32


class BackupKey:
    """A Fernet key for keyring backups; ``repr`` never shows it."""

    __slots__ = ("_fernet", "_material", "source")

    def __init__(self, text: str | bytes, *, source: str = "backup key") -> None:
        raw = text.encode("ascii", "replace") if isinstance(text, str) else text
        cleaned = b"".join(raw.split())
        try:
            material = base64.urlsafe_b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != _FERNET_KEY_SIZE:
            raise KeyConfigError(
                f"{source} is not a Fernet key (32 bytes, urlsafe base64); create one with "
                "`encmigrate keys export --generate-backup-key --backup-key-file FILE --out BACKUP`"
            )
        self._material = material
        self._fernet = Fernet(base64.urlsafe_b64encode(material))
        self.source = source

    @classmethod
    def generate(cls) -> BackupKey:
        return cls(Fernet.generate_key(), source="new backup key")

    def encoded(self) -> bytes:
        """The key as Fernet writes it (urlsafe base64), for the key file."""
        return base64.urlsafe_b64encode(self._material)

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """The plaintext of ``token``; raises ``InvalidToken`` for every failure alike."""
        return self._fernet.decrypt(token)

    def is_master_key_of(self, keyring: Keyring) -> bool:
        """Whether this key is one of ``keyring``'s master keys (a backup under itself)."""
        return any(
            v.key is not None and hmac.compare_digest(v.key.reveal(), self._material)
            for v in keyring.versions
        )

    def __repr__(self) -> str:
        return f"BackupKey(<redacted>, source={self.source!r})"

    __str__ = __repr__


def load_backup_key(
    key_file: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> BackupKey:
    """The backup key from ``key_file`` if given, else ``ENCMIGRATE_BACKUP_KEY``.

    Raises :class:`KeyConfigError` (exit 3) naming both places when there is
    none: a backup is never written in plaintext.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        return BackupKey(read_private(Path(key_file)), source=f"backup key file {key_file}")
    text = env.get(BACKUP_KEY_ENV, "")
    if text.strip():
        return BackupKey(text, source=BACKUP_KEY_ENV)
    raise KeyConfigError(
        f"no backup key: set {BACKUP_KEY_ENV} to a Fernet key or pass --backup-key-file FILE "
        "(`--generate-backup-key --backup-key-file FILE` creates one); "
        "a keyring backup is never written in plaintext"
    )


def write_new_backup_key(path: str | os.PathLike[str]) -> BackupKey:
    """Generate a backup key and write it to ``path`` (mode 0600; never replaces a file)."""
    key = BackupKey.generate()
    target = Path(path)
    if target.exists():
        raise RefusedError(
            f"backup key file {target} already exists; refusing to replace it (backups made "
            "with it would become unreadable); use it without --generate-backup-key"
        )
    write_private(target, key.encoded() + b"\n", overwrite=False, what="backup key file")
    return BackupKey(key.encoded(), source=f"backup key file {target}")


def read_private(path: Path) -> bytes:
    """The bytes of ``path``, refused when its group or others may access it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyConfigError(
            f"backup key file {path} does not exist; create one with "
            f"`encmigrate keys export --generate-backup-key --backup-key-file {path} --out BACKUP`"
        ) from None
    except OSError as exc:
        raise KeyProviderError(f"cannot read backup key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyProviderError(
                f"backup key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
            )
        return handle.read()


def write_private(path: Path, data: bytes, *, overwrite: bool, what: str) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file in the same folder, are synced, and
    then take the final name in one step: a crash leaves the old file or the
    new one, never half of one. Without ``overwrite`` the final step is a
    hard link, which fails if the name exists, so a file that appeared since
    the caller looked is never replaced either.
    """
    try:
        temporary = write_temporary(path, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
        fsync_directory(path.parent)
    except FileExistsError:
        raise RefusedError(
            f"{what} {path} already exists; refusing to replace it (pass --force)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
