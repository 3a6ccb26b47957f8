"""Finding and reading encmigrate's settings file (the plan).

The first found wins: an explicit path (``--config``), then
``ENCMIGRATE_CONFIG``, then ``./encmigrate.toml``, then the
``[tool.encmigrate]`` table of ``./pyproject.toml`` (docs/architecture.md,
"Where things are found", has every such order). This module only finds
and parses the file; :mod:`encmigrate.plan` validates the columns and
:mod:`encmigrate.keys` reads the ``[keys]`` table.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from encmigrate.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "MAX_ROTATION_DAYS",
    "AwsSettings",
    "ConfigFile",
    "KeysSettings",
    "VaultSettings",
    "find_config",
    "keys_settings",
]

CONFIG_ENV = "ENCMIGRATE_CONFIG"
MAX_ROTATION_DAYS = 36_500
PLAN_FILE = "encmigrate.toml"


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The encmigrate table of a settings file and where it came from."""

    path: Path
    table: Mapping[str, Any]
    origin: str  # "--config", "ENCMIGRATE_CONFIG", "encmigrate.toml" or "pyproject.toml"

    @property
    def directory(self) -> Path:
        return self.path.parent

    def where(self, key: str) -> str:
        """A location for messages: ``encmigrate.toml: keys.path``."""
        prefix = "tool.encmigrate." if self.path.name == "pyproject.toml" else ""
        return f"{self.path}: {prefix}{key}"


def find_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ConfigFile | None:
    """The settings file in force, or None when there is none."""
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else Path(cwd)
    if explicit is not None:
        return _read(_must_exist(Path(explicit), "--config"), "--config")
    if env.get(CONFIG_ENV):
        return _read(_must_exist(Path(env[CONFIG_ENV]), CONFIG_ENV), CONFIG_ENV)
    plan = here / PLAN_FILE
    if plan.is_file():
        return _read(plan, PLAN_FILE)
    pyproject = here / "pyproject.toml"
    if pyproject.is_file():
        found = _read(pyproject, "pyproject.toml")
        if found.table:
            return found
    return None


def _must_exist(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{origin}: settings file {path} does not exist")
    return path


def _read(path: Path, origin: str) -> ConfigFile:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    if path.name == "pyproject.toml":
        table = document.get("tool", {}).get("encmigrate", {})
    else:
        table = document
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: the encmigrate settings must be a table")
    return ConfigFile(path=path.resolve(), table=table, origin=origin)


ProviderName = Literal["env", "file", "vault", "aws-secrets-manager", "aws-kms"]


class VaultSettings(BaseModel):
    """The ``[keys.vault]`` table (``VAULT_ADDR`` and friends override; see docs/providers.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    mount: str = Field(default="secret", min_length=1)
    path: str = Field(default="encmigrate/keyring", min_length=1)
    namespace: str | None = None
    approle_mount: str = Field(default="approle", min_length=1)
    transit_key: str | None = None
    transit_mount: str = Field(default="transit", min_length=1)


class AwsSettings(BaseModel):
    """The ``[keys.aws]`` table (``AWS_REGION``, ``AWS_ENDPOINT_URL`` and friends also apply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    secret_id: str = Field(default="encmigrate/keyring", min_length=1)
    kms_key_id: str | None = None
    # aws-kms only: where the wrapped keyring lives ("secrets-manager" or a file).
    store: Literal["secrets-manager", "file"] = "secrets-manager"


class KeysSettings(BaseModel):
    """The ``[keys]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: ProviderName = "file"
    path: str = Field(default="keyring.json", min_length=1)
    audit_log: str | None = None
    env_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Upper bounds keep date arithmetic in range (10**9 days overflows datetime): a century,
    # and a day of caching (a longer cache would hide a rotation from readers that long).
    rotation_days: int = Field(default=90, ge=1, le=MAX_ROTATION_DAYS, strict=True)
    cache_ttl: float = Field(default=300.0, ge=0, le=86_400, allow_inf_nan=False)
    vault: VaultSettings = VaultSettings()
    aws: AwsSettings = AwsSettings()


def keys_settings(config: ConfigFile | None) -> KeysSettings:
    """The validated ``[keys]`` table of ``config`` (defaults when absent)."""
    if config is None:
        return KeysSettings()
    table = config.table.get("keys", {})
    try:
        return KeysSettings.model_validate(table)
    except ValidationError as exc:
        problems = [
            f"  {config.where('keys.' + '.'.join(str(p) for p in error['loc']))}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigError("invalid [keys] settings:\n" + "\n".join(problems)) from None
