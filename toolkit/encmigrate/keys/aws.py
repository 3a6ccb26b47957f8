"""The AWS Secrets Manager provider, and the AWS plumbing the KMS provider shares.

The keyring is one secret; each save is a new secret version labelled
``AWSCURRENT``, and Secrets Manager moves ``AWSPREVIOUS`` to the version it
replaced, so the version before a rotation stays recoverable
(``recover_previous``). ``put_secret_value`` carries a ``ClientRequestToken``
made once per save and reused by every retry of it: a write whose response was
lost and that is sent again creates no second version.

Secrets Manager has no check-and-set. A key operation reads the current
version id inside its lock and checks it again just before writing, so two
operators rotating at once are refused rather than silently losing a version
(the window left is the few milliseconds between that check and the write).

The application's read path calls ``GetSecretValue`` only; every call made
for a key operation (``admin=True``) maps AccessDenied to "permission denied:
needs the key-administrator role".
boto3 is imported on first use, so ``import encmigrate`` never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from encmigrate.errors import KeyConfigError, KeyProviderError
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.remote import (
    ADMIN_ROLE_REFUSED,
    KeyringCache,
    RetryPolicy,
    audit_load_failure,
    call_with_retries,
    missing_extra,
)

__all__ = ["AwsCalls", "SecretStore", "SecretsManagerProvider", "aws_client"]

logger = logging.getLogger(__name__)

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
    }
)
_TRANSIENT = frozenset(
    {
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceErrorException",
        "KMSInternalException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "KMSAccessDeniedException"}
)


def aws_client(service: str, region: str | None = None) -> Any:
    """A boto3 client whose own retries are off: :func:`call_with_retries` is the one policy."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError:
        raise missing_extra("aws", "boto3") from None
    from botocore.exceptions import NoRegionError  # type: ignore[import-untyped]

    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    try:
        return boto3.session.Session(region_name=region).client(service, config=config)
    except NoRegionError:
        raise KeyConfigError(
            "no AWS region: set [keys.aws] region in encmigrate.toml or AWS_REGION"
        ) from None


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_transient_aws_error(error: BaseException) -> bool:
    """Throttling, a 5xx, or a connection that failed or timed out (and nothing else)."""
    from botocore import exceptions  # type: ignore[import-untyped]

    if isinstance(
        error,
        exceptions.EndpointConnectionError
        | exceptions.ConnectionClosedError
        | exceptions.ReadTimeoutError
        | exceptions.ConnectTimeoutError,
    ):
        return True
    if isinstance(error, exceptions.ClientError):
        code = _error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _THROTTLING or code in _TRANSIENT or int(status) >= 500
    return False


class AwsCalls:
    """Calls one AWS client with retries, mapping its errors to ours at this one boundary.

    Messages carry the AWS error *code* only: AWS messages can quote request
    details (ARNs, signing data) that do not belong in our logs.
    """

    def __init__(self, client: Any, service: str, where: str, retry: RetryPolicy) -> None:
        self.client = client
        self.service = service
        self.where = where
        self.retry = retry

    def __call__(self, operation: str, *, admin: bool = False, **params: Any) -> Any:
        """``client.<operation>(**params)``; ``operation`` in boto3's snake_case.

        ``admin`` marks a call only key operations make: refused, it needs the
        key-administrator role; a refused read names the application role.
        """
        from botocore import exceptions

        method: Callable[..., Any] = getattr(self.client, operation)
        action = f"{self.service}:{''.join(p.title() for p in operation.split('_'))}"
        try:
            return call_with_retries(
                lambda: method(**params), is_transient_aws_error, self.retry, action
            )
        except exceptions.NoCredentialsError:
            raise KeyConfigError(
                "no AWS credentials found (environment, profile, or instance/task role)"
            ) from None
        except exceptions.ClientError as exc:
            raise self._mapped(exc, action, admin) from None
        except exceptions.BotoCoreError as exc:
            raise KeyProviderError(
                f"{self.where}: {action} failed after {self.retry.attempts} attempts "
                f"({type(exc).__name__})"
            ) from None

    def _mapped(self, exc: Exception, action: str, admin: bool) -> KeyConfigError:
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            return KeyConfigError(
                f"no keyring in {self.where}; create one with `encmigrate keys generate`"
            )
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _DENIED or status == 403:
            if admin:
                return KeyProviderError(f"{ADMIN_ROLE_REFUSED} ({action} on {self.where})")
            return KeyProviderError(
                f"permission denied: {action} on {self.where} was refused "
                "(the application role needs it; see docs/policies/)"
            )
        if code in _THROTTLING or code in _TRANSIENT:
            return KeyProviderError(
                f"{self.where}: {action} still failing after {self.retry.attempts} attempts "
                f"({code}); try again later"
            )
        return KeyProviderError(f"{self.where}: {action} failed ({code or type(exc).__name__})")


class SecretStore:
    """A text document kept as a Secrets Manager secret (the keyring, or a wrapped keyring)."""

    def __init__(
        self,
        secret_id: str,
        *,
        region: str | None = None,
        client: Any = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.secret_id = secret_id
        self.region = region
        self._client = client
        self._retry = retry or RetryPolicy()
        self._calls: AwsCalls | None = None
        # The AWSCURRENT version id seen by the last read: the write checks it has not moved.
        self.read_version: str | None = None

    def __repr__(self) -> str:
        return f"SecretStore({self.secret_id!r}, region={self.region!r})"

    def describe(self) -> str:
        where = f" in {self.region}" if self.region else ""
        return f"AWS Secrets Manager secret {self.secret_id}{where}"

    @property
    def calls(self) -> AwsCalls:
        if self._calls is None:
            client = self._client or aws_client("secretsmanager", self.region)
            self._calls = AwsCalls(client, "secretsmanager", self.describe(), self._retry)
        return self._calls

    def read(self, stage: str = "AWSCURRENT") -> str:
        answer = self.calls("get_secret_value", SecretId=self.secret_id, VersionStage=stage)
        if stage == "AWSCURRENT":
            self.read_version = answer["VersionId"]
        text = answer.get("SecretString")
        if not isinstance(text, str):
            raise KeyConfigError(f"{self.describe()}: the secret has no SecretString")
        return text

    def exists(self) -> bool:
        try:
            self.calls("describe_secret", admin=True, SecretId=self.secret_id)
        except KeyProviderError:
            raise
        except KeyConfigError:
            return False
        return True

    def current_version(self) -> str | None:
        stages = self.calls("describe_secret", admin=True, SecretId=self.secret_id).get(
            "VersionIdsToStages", {}
        )
        return next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)

    def write(self, text: str, *, erase_previous: bool = False, expect_current: bool = True) -> str:
        """Store ``text`` as the new AWSCURRENT version; returns its version id.

        One request token per write, reused by its retries, makes a retried
        write idempotent. ``expect_current`` refuses the write when the
        secret moved since :meth:`read`.
        """
        token = str(uuid.uuid4())
        if not self.exists():
            created = self.calls(
                "create_secret",
                admin=True,
                Name=self.secret_id,
                SecretString=text,
                ClientRequestToken=token,
                Description="encmigrate keyring",
            )
            self.read_version = str(created["VersionId"])
            return self.read_version
        if expect_current and self.read_version is not None:
            now = self.current_version()
            if now != self.read_version:
                raise KeyProviderError(
                    f"{self.describe()} changed since it was read (another key operation ran "
                    "at the same time); nothing was written: run the command again"
                )
        previous = self.read_version
        answer = self.calls(
            "put_secret_value",
            admin=True,
            SecretId=self.secret_id,
            SecretString=text,
            ClientRequestToken=token,
        )
        self.read_version = answer["VersionId"]
        if erase_previous and previous is not None:
            self._deprecate(previous)
        return str(answer["VersionId"])

    def _deprecate(self, version_id: str) -> None:
        """Take the AWSPREVIOUS label off ``version_id``: unlabelled versions are deleted by AWS.

        Secrets Manager offers no call that deletes one version at once; an
        unlabelled version is deprecated and removed by the service later
        (docs/providers.md says so).
        """
        self.calls(
            "update_secret_version_stage",
            admin=True,
            SecretId=self.secret_id,
            VersionStage="AWSPREVIOUS",
            RemoveFromVersionId=version_id,
        )


class SecretsManagerProvider:
    """A keyring kept as an AWS Secrets Manager secret.

    Chosen by ``[keys] provider = "aws-secrets-manager"`` or ``ENCMIGRATE_KEY_PROVIDER``.
    """

    name = "aws-secrets-manager"

    def __init__(
        self,
        secret_id: str,
        *,
        region: str | None = None,
        client: Any = None,
        cache_ttl: float = 300.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = SecretStore(secret_id, region=region, client=client, retry=retry)
        self.cache = KeyringCache(cache_ttl)

    def __repr__(self) -> str:
        return f"SecretsManagerProvider({self.store.secret_id!r}, region={self.store.region!r})"

    def describe(self) -> str:
        return self.store.describe()

    def exists(self) -> bool:
        return self.store.exists()

    def load(self) -> Keyring:
        cached = self.cache.get()
        if cached is not None:
            return cached
        try:
            keyring = Keyring.from_json(self.store.read(), source=self.describe())
        except KeyConfigError as exc:
            audit_load_failure(self.name, self.describe(), exc)
            raise
        return self.cache.put(keyring)

    def save(self, keyring: Keyring, *, erase_previous: bool = False) -> None:
        self.store.write(keyring.to_json(), erase_previous=erase_previous)
        self.cache.put(keyring)

    def recover_previous(self) -> Keyring:
        """The keyring labelled AWSPREVIOUS (the one before the last key operation)."""
        return Keyring.from_json(
            self.store.read("AWSPREVIOUS"), source=f"{self.describe()} (AWSPREVIOUS)"
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """No lock service: read fresh, and let :meth:`SecretStore.write` refuse a moved secret."""
        with self.cache.bypass():
            yield

    def generation(self) -> int:
        return self.cache.generation()
