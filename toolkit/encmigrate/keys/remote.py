"""What the networked providers (Vault, AWS) share: caching, retries, wrapping, redaction.

* :class:`KeyringCache` keeps the last keyring for a TTL, so the application's
  read path asks the secret store at most once per TTL per process, and
  serves the same :class:`Keyring` object (with its derived-key cache) meanwhile.
* :func:`call_with_retries` retries throttling and transient failures, and
  only those, under the one :class:`~encmigrate.retry.RetryPolicy`
  (re-exported here; its defaults are the providers').
* :func:`wrap_keyring` / :func:`unwrap_keyring` store a keyring whose master
  keys are wrapped by a KMS (Vault Transit, AWS KMS): the stored document has
  no plaintext key, and the keyring format itself is unchanged once unwrapped.
  The whole stored document (states, current version, audit head, wrapped
  keys: every field) is authenticated by an HMAC under a key derived from the
  document's data key (:func:`check_document`), which only the KMS can
  unwrap: whoever can write the stored secret but not use the KMS key cannot
  revive a disabled version, add one or remove one.
* :class:`Redacted` holds a credential so that no ``repr`` shows it.
* :func:`build_provider` makes the provider the plan and environment name,
  importing its module (and so hvac or boto3) only then.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from encmigrate.errors import KeyConfigError
from encmigrate.keys.audit import current_actor
from encmigrate.keys.keyring import Keyring
from encmigrate.retry import RetryPolicy

if TYPE_CHECKING:
    from encmigrate.config import KeysSettings
    from encmigrate.keys.providers import KeyProvider

__all__ = [
    "ADMIN_ROLE_REFUSED",
    "REMOTE_PROVIDERS",
    "WRAPPED_FORMAT",
    "KeyringCache",
    "Redacted",
    "RetryPolicy",
    "audit_load_failure",
    "build_provider",
    "call_with_retries",
    "check_document",
    "missing_extra",
    "read_wrapped",
    "unauthenticated_message",
    "unwrap_keyring",
    "wrap_keyring",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("encmigrate.audit")

WRAPPED_FORMAT = "encmigrate-wrapped-keyring/1"
ADMIN_ROLE_REFUSED = "permission denied: needs the key-administrator role"
# HKDF info of the key that authenticates a stored wrapped keyring (docs/FORMAT.md).
DOCUMENT_MAC_LABEL = b"encmigrate/1/wrapped-keyring-mac"


def missing_extra(extra: str, module: str) -> KeyConfigError:
    """The error for a provider whose optional dependency is not installed."""
    return KeyConfigError(
        f"the {extra} key provider needs the {module} package: pip install 'encmigrate[{extra}]'"
    )


class Redacted:
    """A credential that never shows in ``repr``, ``str`` or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Redacted(<hidden>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def call_with_retries(
    call: Callable[[], T],
    transient: Callable[[BaseException], bool],
    policy: RetryPolicy,
    what: str,
) -> T:
    """``call()``, retried while it raises an error ``transient`` accepts; the last error wins.

    Anything else (permission denied, not found, a CAS conflict) is raised at
    once: retrying those only delays a clear answer.
    """
    return policy.run(call, transient=transient, what=what)


class KeyringCache:
    """The last keyring read, served for ``ttl`` seconds (0 disables the cache).

    Inside :meth:`bypass` (a key operation's load-modify-save) every load goes
    to the store: an administrator must change the newest keyring, not a copy
    that may be up to a TTL old.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0:
            raise ValueError("ttl must be 0 or more seconds")
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._keyring: Keyring | None = None
        self._stamp = 0.0
        self._bypass = threading.local()

    def get(self) -> Keyring | None:
        if getattr(self._bypass, "on", False):
            return None
        with self._lock:
            if self._keyring is not None and self._clock() - self._stamp < self.ttl:
                return self._keyring
            return None

    def put(self, keyring: Keyring) -> Keyring:
        with self._lock:
            self._keyring, self._stamp = keyring, self._clock()
        return keyring

    def clear(self) -> None:
        with self._lock:
            self._keyring = None

    def generation(self) -> int:
        """A number that changes at most once per TTL (for callers' own caches)."""
        if self.ttl <= 0:
            return time.monotonic_ns()
        return int(self._clock() // self.ttl)

    @contextmanager
    def bypass(self) -> Iterator[None]:
        self._bypass.on = True
        try:
            yield
        finally:
            self._bypass.on = False


def wrap_keyring(
    keyring: Keyring,
    wrap: Callable[[int, bytes], str],
    wrapping: str,
    extra: Mapping[str, Any],
    *,
    data_key: bytes,
) -> str:
    """The stored document: ``keyring`` with each master key replaced by ``wrap(version, key)``.

    ``extra`` holds the wrapped ``data_key``; ``data_key`` itself (never
    stored) authenticates the whole document: the ``mac`` member.
    """
    document = json.loads(keyring.to_json())
    for entry in document["versions"]:
        if entry.get("key") is not None:
            entry["key"] = wrap(entry["version"], base64.b64decode(entry["key"]))
    stored = {"format": WRAPPED_FORMAT, "wrapping": wrapping, **extra, "keyring": document}
    stored["mac"] = base64.b64encode(_document_tag(stored, data_key)).decode("ascii")
    return json.dumps(stored, indent=2) + "\n"


def read_wrapped(text: str, wrapping: str, source: str) -> dict[str, Any]:
    """The stored document, checked to be a wrapped keyring for ``wrapping`` (not yet authentic)."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise KeyConfigError(
            f"{source}: not valid JSON; expected a {WRAPPED_FORMAT} document"
        ) from None
    if not isinstance(document, dict) or document.get("format") != WRAPPED_FORMAT:
        raise KeyConfigError(
            f"{source}: not a {WRAPPED_FORMAT} document (was it written by another provider?)"
        )
    if document.get("wrapping") != wrapping:
        raise KeyConfigError(
            f"{source}: the keys are wrapped by another key or provider than this one, which is "
            f"configured for {wrapping}"
        )
    if not isinstance(document.get("keyring"), dict):
        raise KeyConfigError(f"{source}: the wrapped document has no keyring")
    return document


def check_document(
    document: Mapping[str, Any],
    data_key: bytes,
    source: str,
    *,
    allow_unauthenticated: bool = False,
) -> None:
    """Refuse a stored document whose ``mac`` does not authenticate it under ``data_key``.

    A document without a ``mac`` was written by an encmigrate before
    authentication (or had it removed): refused, unless
    ``allow_unauthenticated`` (``keys upgrade`` only).
    """
    mac = document.get("mac")
    if mac is None and allow_unauthenticated:
        return
    if mac is None:
        raise KeyConfigError(unauthenticated_message(source))
    try:
        tag = base64.b64decode(str(mac), validate=True)
        checker = HMAC(_document_key(data_key), hashes.SHA256())
        checker.update(_canonical(document))
        checker.verify(tag)
    except (InvalidSignature, binascii.Error, ValueError, RecursionError):
        raise KeyConfigError(
            f"{source}: the stored keyring does not authenticate: it was changed outside "
            "encmigrate (a state, the current version, or a version edited, added or removed); "
            "refused. Restore the previous version of the stored keyring (docs/providers.md)"
        ) from None


def unauthenticated_message(source: str) -> str:
    return (
        f"{source}: the stored keyring is not authenticated (written by an encmigrate before "
        "keyring authentication, or its mac was removed); refused: a key administrator runs "
        "`encmigrate keys upgrade` once, which shows the versions it authenticates"
    )


def _document_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=DOCUMENT_MAC_LABEL).derive(
        data_key
    )


def _canonical(document: Mapping[str, Any]) -> bytes:
    """The document without its ``mac``: sorted keys, no spaces, ASCII (what the MAC signs)."""
    unsigned = {name: value for name, value in document.items() if name != "mac"}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _document_tag(document: Mapping[str, Any], data_key: bytes) -> bytes:
    signer = HMAC(_document_key(data_key), hashes.SHA256())
    signer.update(_canonical(document))
    return signer.finalize()


def unwrap_keyring(
    document: Mapping[str, Any], unwrap: Callable[[int, str], bytes], source: str
) -> Keyring:
    """The keyring of a stored document, master keys unwrapped into memory only.

    Call :func:`check_document` first: this trusts the document.
    """
    ring = json.loads(json.dumps(document["keyring"]))
    for entry in ring.get("versions", []):
        if isinstance(entry, dict) and entry.get("key") is not None:
            entry["key"] = base64.b64encode(unwrap(entry["version"], entry["key"])).decode()
    return Keyring.from_json(json.dumps(ring), source=source)


def audit_load_failure(provider: str, where: str, error: BaseException) -> None:
    """A failed key retrieval as a structured audit event on the ``encmigrate.audit`` logger."""
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": current_actor(),
        "action": "keyring.load",
        "version": None,
        "outcome": "failed",
        "reason": str(error).splitlines()[0] if str(error) else type(error).__name__,
        "provider": provider,
        "where": where,
    }
    audit_logger.warning("key retrieval failed", extra={"audit": record})


REMOTE_PROVIDERS = ("vault", "aws-secrets-manager", "aws-kms")


def build_provider(
    kind: str, settings: KeysSettings, environ: Mapping[str, str], prefix: str, directory: Path
) -> KeyProvider:
    """The Vault or AWS provider ``kind``, from the plan's ``[keys]`` and the environment.

    The provider modules are imported here, on demand, so that importing
    encmigrate never imports hvac or boto3.
    """
    ttl_text = environ.get(f"{prefix}KEY_CACHE_TTL")
    try:
        ttl = float(ttl_text) if ttl_text else settings.cache_ttl
    except ValueError:
        ttl = -1.0
    if not 0 <= ttl < float("inf"):
        raise KeyConfigError(f"{prefix}KEY_CACHE_TTL: must be a number of seconds (0 or more)")
    if kind == "vault":
        from encmigrate.keys.vault import VaultProvider

        return VaultProvider.from_settings(settings.vault, environ, prefix, cache_ttl=ttl)
    aws = settings.aws
    secret_id = environ.get(f"{prefix}AWS_SECRET_ID") or aws.secret_id
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or aws.region
    if kind == "aws-secrets-manager":
        from encmigrate.keys.aws import SecretsManagerProvider

        return SecretsManagerProvider(secret_id, region=region, cache_ttl=ttl)
    if kind == "aws-kms":
        from encmigrate.keys.aws_kms import KmsProvider

        key_id = environ.get(f"{prefix}KMS_KEY_ID") or aws.kms_key_id
        if not key_id:
            raise KeyConfigError(
                f"the aws-kms provider needs a KMS key: set [keys.aws] kms_key_id or "
                f"{prefix}KMS_KEY_ID"
            )
        file = environ.get(f"{prefix}KMS_KEYRING_FILE")
        if file or aws.store == "file":
            return KmsProvider.with_file(
                key_id, Path(file) if file else directory / settings.path, region, cache_ttl=ttl
            )
        return KmsProvider.with_secret(key_id, secret_id, region, cache_ttl=ttl)
    raise KeyConfigError(f"unknown key provider: choose env, file, {', '.join(REMOTE_PROVIDERS)}")
