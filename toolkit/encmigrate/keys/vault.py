"""The HashiCorp Vault (or OpenBao) provider: the keyring in KV v2, optionally Transit-wrapped.

The keyring is one KV v2 secret (field ``keyring``, the JSON document) at
``<mount>/data/<path>``. Every write is check-and-set against the version
read inside the key operation's lock: two operators rotating at once cannot
both win, the second is refused (HTTP 400, "check-and-set parameter did not
match") and told to run the command again, so no version is ever lost.

With ``transit_key`` the stored document holds no plaintext key: each master
key is wrapped by the Transit engine (``encrypt``/``decrypt``), unwrapped into
memory on load and cached for the TTL. A random data key, wrapped by Transit
too, authenticates the whole document (every field: states, current version,
versions), so writing the secret without Transit rights cannot revive a
disabled version. The keyring format, envelope and key derivation are
unchanged. (Without Transit the secret holds plaintext keys: whoever can
write it can replace the keyring, and the secret's ACL is the only guard.)

Credentials come from the environment: ``VAULT_ADDR``, ``VAULT_TOKEN`` or
``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID`` (AppRole), ``VAULT_NAMESPACE``,
``VAULT_CACERT``. hvac is imported on first use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.remote import (
    ADMIN_ROLE_REFUSED,
    KeyringCache,
    Redacted,
    RetryPolicy,
    audit_load_failure,
    call_with_retries,
    check_document,
    missing_extra,
    read_wrapped,
    unauthenticated_message,
    unwrap_keyring,
    wrap_keyring,
)

if TYPE_CHECKING:
    from encmigrate.config import VaultSettings

__all__ = ["VaultAuth", "VaultProvider"]

T = TypeVar("T")
FIELD = "keyring"


class VaultAuth:
    """A token, or an AppRole role id and secret id; neither ever shows in ``repr``."""

    def __init__(
        self,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        approle_mount: str = "approle",
    ) -> None:
        if not token and not (role_id and secret_id):
            raise KeyConfigError(
                "Vault needs credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID "
                "(AppRole)"
            )
        self.token = Redacted(token) if token else None
        self.role_id = role_id
        self.secret_id = Redacted(secret_id) if secret_id else None
        self.approle_mount = approle_mount

    def __repr__(self) -> str:
        kind = "token" if self.token else f"approle(role_id={self.role_id!r})"
        return f"VaultAuth({kind})"


class VaultProvider:
    """A keyring in Vault KV v2 (``[keys] provider = "vault"``)."""

    name = "vault"

    def __init__(
        self,
        url: str,
        auth: VaultAuth,
        *,
        mount: str = "secret",
        path: str = "encmigrate/keyring",
        namespace: str | None = None,
        transit_key: str | None = None,
        transit_mount: str = "transit",
        verify: bool | str = True,
        cache_ttl: float = 300.0,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self.mount = mount.strip("/")
        self.path = path.strip("/")
        self.namespace = namespace
        self.transit_key = transit_key
        self.transit_mount = transit_mount.strip("/")
        self.cache = KeyringCache(cache_ttl)
        self._verify = verify
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._client: Any = None
        # The KV version read inside the current key operation: the CAS of its write.
        self._read_version: int | None = None

    @classmethod
    def from_settings(
        cls,
        settings: VaultSettings,
        environ: Mapping[str, str],
        prefix: str = "ENCMIGRATE_",
        *,
        cache_ttl: float = 300.0,
    ) -> VaultProvider:
        """The provider the plan's ``[keys.vault]`` and the environment describe."""
        url = environ.get("VAULT_ADDR") or settings.url
        if not url:
            raise KeyConfigError(
                "the vault provider needs VAULT_ADDR (or [keys.vault] url in encmigrate.toml)"
            )
        auth = VaultAuth(
            environ.get("VAULT_TOKEN"),
            environ.get("VAULT_ROLE_ID"),
            environ.get("VAULT_SECRET_ID"),
            settings.approle_mount,
        )
        return cls(
            url,
            auth,
            mount=environ.get(f"{prefix}VAULT_MOUNT") or settings.mount,
            path=environ.get(f"{prefix}VAULT_PATH") or settings.path,
            namespace=environ.get("VAULT_NAMESPACE") or settings.namespace,
            transit_key=environ.get(f"{prefix}VAULT_TRANSIT_KEY") or settings.transit_key,
            transit_mount=settings.transit_mount,
            verify=environ.get("VAULT_CACERT") or True,
            cache_ttl=cache_ttl,
        )

    def __repr__(self) -> str:
        transit = f", transit_key={self.transit_key!r}" if self.transit_key else ""
        return f"VaultProvider({self.url!r}, {self.mount}/{self.path!s}{transit}, {self.auth!r})"

    def describe(self) -> str:
        wrapped = f", keys wrapped by Transit key {self.transit_key}" if self.transit_key else ""
        return f"Vault {self.url} secret {self.mount}/{self.path}{wrapped}"

    @property
    def wrapping(self) -> str:
        return f"vault-transit:{self.transit_mount}/{self.transit_key}"

    # -- KeyProvider ------------------------------------------------------------

    def exists(self) -> bool:
        try:
            self._read()
        except KeyProviderError:
            raise
        except KeyConfigError:
            return False
        return True

    def load(self) -> Keyring:
        cached = self.cache.get()
        if cached is not None:
            return cached
        try:
            text, _ = self._read()
            keyring = self._from_text(text)
        except KeyConfigError as exc:
            audit_load_failure(self.name, self.describe(), exc)
            raise
        return self.cache.put(keyring)

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        text = keyring.to_json() if not self.transit_key else self._wrap(keyring)
        cas = self._read_version or 0
        answer = self._call(
            "write",
            True,
            lambda client: client.secrets.kv.v2.create_or_update_secret(
                path=self.path, secret={FIELD: text}, cas=cas, mount_point=self.mount
            ),
        )
        written = int(answer["data"]["version"])
        self._read_version = written
        if erase_previous and written > 1:
            # Older KV versions still hold the erased material: destroy them for good.
            self._call(
                "destroy old versions of",
                True,
                lambda client: client.secrets.kv.v2.destroy_secret_versions(
                    path=self.path, versions=list(range(1, written)), mount_point=self.mount
                ),
            )
        self.cache.put(keyring)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """No lock service: read fresh, and let check-and-set refuse a concurrent change."""
        self._read_version = None
        with self.cache.bypass():
            yield

    def generation(self) -> int:
        return self.cache.generation()

    def load_unauthenticated(self) -> Keyring:
        """The stored keyring even without authentication (``keys upgrade`` only; not cached)."""
        text, _ = self._read()
        return self._from_text(text, allow_unauthenticated=True)

    def recover_previous(self) -> Keyring:
        """The keyring as it was one KV version before the newest (before the last operation)."""
        _, newest = self._read()
        if newest <= 1:
            raise KeyConfigError(f"{self.describe()} has no previous version")
        text, _ = self._read(newest - 1)
        return self._from_text(text)

    # -- plumbing -----------------------------------------------------------

    def _read(self, version: int | None = None) -> tuple[str, int]:
        answer = self._call(
            "read",
            False,
            lambda client: client.secrets.kv.v2.read_secret_version(
                path=self.path,
                version=version,
                mount_point=self.mount,
                raise_on_deleted_version=True,
            ),
        )
        data = answer["data"]
        number = int(data["metadata"]["version"])
        if version is None:
            self._read_version = number
        text = (data.get("data") or {}).get(FIELD)
        if not isinstance(text, str):
            raise KeyConfigError(f"{self.describe()}: the secret has no {FIELD!r} field")
        return text, number

    def _from_text(self, text: str, *, allow_unauthenticated: bool = False) -> Keyring:
        if not self.transit_key:
            return Keyring.from_json(text, source=self.describe())
        source = self.describe()
        document = read_wrapped(text, self.wrapping, source)
        wrapped_data_key = document.get("data_key")
        if not isinstance(wrapped_data_key, str):
            if not allow_unauthenticated:
                raise KeyConfigError(unauthenticated_message(source))
            return unwrap_keyring(document, self._unwrap, source)
        data_key = bytearray(self._unwrap(0, wrapped_data_key))
        try:
            check_document(
                document, bytes(data_key), source, allow_unauthenticated=allow_unauthenticated
            )
        finally:
            for i in range(len(data_key)):
                data_key[i] = 0
        return unwrap_keyring(document, self._unwrap, source)

    def _wrap(self, keyring: Keyring) -> str:
        data_key = bytearray(os.urandom(32))
        try:
            extra = {"data_key": self._encrypt(bytes(data_key))}
            return wrap_keyring(
                keyring,
                lambda _, key: self._encrypt(key),
                self.wrapping,
                extra,
                data_key=bytes(data_key),
            )
        finally:
            for i in range(len(data_key)):
                data_key[i] = 0

    def _encrypt(self, plaintext: bytes) -> str:
        answer = self._call(
            "encrypt with",
            True,
            lambda client: client.secrets.transit.encrypt_data(
                name=self.transit_key,
                plaintext=base64.b64encode(plaintext).decode(),
                mount_point=self.transit_mount,
            ),
        )
        return str(answer["data"]["ciphertext"])

    def _unwrap(self, version: int, ciphertext: str) -> bytes:
        answer = self._call(
            "decrypt with",
            False,
            lambda client: client.secrets.transit.decrypt_data(
                name=self.transit_key, ciphertext=ciphertext, mount_point=self.transit_mount
            ),
        )
        return base64.b64decode(answer["data"]["plaintext"])

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        hvac = _hvac()
        token = self.auth.token.reveal() if self.auth.token else None
        client = hvac.Client(
            url=self.url,
            token=token,
            namespace=self.namespace,
            verify=self._verify,
            timeout=self._timeout,
        )
        if token is None and self.auth.secret_id is not None:
            secret_id = self.auth.secret_id.reveal()
            call_with_retries(
                lambda: client.auth.approle.login(
                    role_id=self.auth.role_id,
                    secret_id=secret_id,
                    mount_point=self.auth.approle_mount,
                ),
                _is_transient,
                self._retry,
                "vault approle login",
            )
        self._client = client
        return client

    def _call(self, verb: str, write: bool, request: Callable[[Any], T]) -> T:
        """``request(client)`` with retries; hvac and requests errors mapped here, once."""
        _hvac()  # a missing extra is a configuration error, not a Vault failure
        import requests  # present: hvac depends on it

        try:
            return call_with_retries(
                lambda: request(self._connect()), _is_transient, self._retry, f"vault {verb}"
            )
        except KeyConfigError:
            raise
        except requests.RequestException as exc:
            raise KeyProviderError(
                f"cannot reach Vault at {self.url} after {self._retry.attempts} attempts "
                f"({type(exc).__name__})"
            ) from None
        except Exception as exc:
            raise self._mapped(exc, verb, write) from None

    def _mapped(self, exc: Exception, verb: str, write: bool) -> KeyConfigError:
        exceptions = _hvac().exceptions

        target = self._target(verb)
        if isinstance(exc, exceptions.VaultDown) and _sealed(exc):
            return KeyProviderError(
                f"Vault at {self.url} is sealed: unseal it (`vault operator unseal`), then retry"
            )
        if isinstance(exc, exceptions.Forbidden | exceptions.Unauthorized):
            self._client = None  # an expired AppRole token logs in again next time
            if write:
                return KeyProviderError(f"{ADMIN_ROLE_REFUSED} (Vault refused to {verb} {target})")
            return KeyProviderError(
                f"permission denied: Vault refused to {verb} {target} "
                "(the application policy needs it; see docs/policies/)"
            )
        if isinstance(exc, exceptions.InvalidPath):
            if verb == "read":
                return KeyConfigError(
                    f"no keyring at {self.describe()}; create one with `encmigrate keys generate`"
                )
            return KeyProviderError(f"Vault has no {target} (is the engine mounted?)")
        if isinstance(exc, exceptions.InvalidRequest) and "check-and-set" in str(exc):
            return KeyProviderError(
                f"{self.describe()} changed since it was read (another key operation ran at the "
                "same time); nothing was written: run the command again"
            )
        if isinstance(exc, exceptions.VaultError):
            return KeyProviderError(
                f"Vault refused to {verb} {target} ({type(exc).__name__}, after "
                f"{self._retry.attempts if _is_transient(exc) else 1} attempt(s))"
            )
        return KeyProviderError(f"Vault {verb} failed ({type(exc).__name__})")

    def _target(self, verb: str) -> str:
        if verb.endswith("with"):
            return f"Transit key {self.transit_mount}/{self.transit_key}"
        return f"{self.mount}/{self.path}"


def _hvac() -> Any:
    try:
        import hvac  # type: ignore[import-untyped]
    except ImportError:
        raise missing_extra("vault", "hvac") from None
    return hvac


def _sealed(exc: Exception) -> bool:
    return "sealed" in json.dumps(getattr(exc, "errors", None) or str(exc)).lower()


def _is_transient(error: BaseException) -> bool:
    """Rate limits, 5xx other than a sealed Vault, and network failures (nothing else)."""
    import requests

    exceptions = _hvac().exceptions

    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(error, exceptions.VaultDown):
        return not _sealed(error)
    return isinstance(
        error,
        exceptions.RateLimitExceeded
        | exceptions.InternalServerError
        | exceptions.BadGateway
        | exceptions.PreconditionFailed,
    )
