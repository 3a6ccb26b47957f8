"""Which keyring the library uses when it is given none.

Order (DESIGN.md): ``<P>KEYRING`` (the JSON) > ``<P>MASTER_KEY`` (with
``<P>KEY_VERSION``, default 1) > ``<P>KEYRING_FILE`` > ``<P>KEY_PROVIDER`` (a
Vault or AWS provider, configured by the environment and the plan, see
docs/providers.md) > the plan's ``[keys]`` > an error naming these. ``<P>`` is
``ENCMIGRATE_`` unless ``ENCMIGRATE_ENV_PREFIX`` or the plan's ``[keys]
env_prefix`` replaces it.

The keyring file defaults to ``keyring.json`` beside the plan, the audit log
to ``encmigrate-audit.jsonl`` beside the keyring file (``[keys] audit_log``
or ``<P>AUDIT_LOG`` overrides). A keyring from the environment has an audit
file only when one of those names it; its events still go to logging.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from encmigrate.config import ConfigFile, find_config, keys_settings
from encmigrate.crypto.kdf import KeyPurpose
from encmigrate.errors import AuditLogError, KeyConfigError
from encmigrate.keys.audit import AuditEvent, AuditLog
from encmigrate.keys.keyring import Keyring
from encmigrate.keys.providers import DEFAULT_PREFIX, EnvProvider, FileProvider, KeyProvider
from encmigrate.keys.remote import REMOTE_PROVIDERS, build_provider

__all__ = [
    "AUDIT_FILE",
    "PREFIX_ENV",
    "KeySetup",
    "default_keyring",
    "load_keyring",
    "reset_default_keyring",
    "resolve_key_setup",
]

PREFIX_ENV = "ENCMIGRATE_ENV_PREFIX"
AUDIT_FILE = "encmigrate-audit.jsonl"
logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("encmigrate.audit")


@dataclass(frozen=True, slots=True)
class KeySetup:
    """The provider in force, its audit log, and which rule chose them."""

    provider: KeyProvider
    audit: AuditLog | None
    prefix: str
    rule: str
    rotation_days: int = 90


def resolve_key_setup(
    config: ConfigFile | str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> KeySetup:
    """Apply the lookup order; raises :class:`KeyConfigError` when nothing is configured."""
    env = os.environ if environ is None else environ
    plan = config if isinstance(config, ConfigFile) else find_config(config, environ=env, cwd=cwd)
    settings = keys_settings(plan)
    prefix = env.get(PREFIX_ENV) or settings.env_prefix or DEFAULT_PREFIX
    explicit_audit = env.get(f"{prefix}AUDIT_LOG")
    if plan is not None and settings.audit_log:
        explicit_audit = explicit_audit or str(plan.directory / settings.audit_log)

    if env.get(f"{prefix}KEYRING") or env.get(f"{prefix}MASTER_KEY"):
        name = "KEYRING" if env.get(f"{prefix}KEYRING") else "MASTER_KEY"
        return KeySetup(
            EnvProvider(prefix, env),
            _audit(explicit_audit),
            prefix,
            f"{prefix}{name}",
            settings.rotation_days,
        )
    if env.get(f"{prefix}KEYRING_FILE"):
        path = Path(env[f"{prefix}KEYRING_FILE"])
        return KeySetup(
            FileProvider(path),
            _audit(explicit_audit or path.parent / AUDIT_FILE),
            prefix,
            f"{prefix}KEYRING_FILE",
            settings.rotation_days,
        )
    remote = env.get(f"{prefix}KEY_PROVIDER") or (settings.provider if plan is not None else "")
    if remote in REMOTE_PROVIDERS:
        directory = plan.directory if plan is not None else Path.cwd()
        default_audit = plan.directory / AUDIT_FILE if plan is not None else None
        return KeySetup(
            build_provider(remote, settings, env, prefix, directory),
            _audit(explicit_audit or default_audit),
            prefix,
            f"{prefix}KEY_PROVIDER" if env.get(f"{prefix}KEY_PROVIDER") else _where(plan),
            settings.rotation_days,
        )
    if env.get(f"{prefix}KEY_PROVIDER"):
        raise KeyConfigError(
            f"{prefix}KEY_PROVIDER: unknown provider {remote!r}; choose one of "
            f"{', '.join(REMOTE_PROVIDERS)} (for a file or the environment use "
            f"{prefix}KEYRING_FILE, {prefix}KEYRING or {prefix}MASTER_KEY)"
        )
    if plan is not None:
        if settings.provider == "env":
            return KeySetup(
                EnvProvider(prefix, env),
                _audit(explicit_audit),
                prefix,
                plan.where("keys.provider"),
                settings.rotation_days,
            )
        path = plan.directory / settings.path
        return KeySetup(
            FileProvider(path),
            _audit(explicit_audit or path.parent / AUDIT_FILE),
            prefix,
            plan.where("keys.path"),
            settings.rotation_days,
        )
    raise KeyConfigError(
        f"no keyring configured: set {prefix}KEYRING, {prefix}MASTER_KEY or {prefix}KEYRING_FILE, "
        "or add a [keys] table to encmigrate.toml "
        "(`encmigrate keys generate` creates a keyring)"
    )


def _where(plan: ConfigFile | None) -> str:
    return plan.where("keys.provider") if plan is not None else "keys.provider"


def _audit(path: str | os.PathLike[str] | None) -> AuditLog | None:
    return AuditLog(path) if path else None


def load_keyring(setup: KeySetup) -> Keyring:
    """Load the keyring from ``setup``'s provider, auditing the access.

    Each load, and each first derivation of a (version, context) key in this
    process, is one audit event. Key material is never part of one.
    """
    keyring = setup.provider.load()
    _record(
        setup,
        AuditEvent(
            action="keyring.load", version=keyring.current, extra={"provider": setup.provider.name}
        ),
    )

    def on_derive(version: int, context: str, purpose: KeyPurpose) -> None:
        _record(
            setup,
            AuditEvent(
                action=f"key.derive.{purpose.value}", version=version, extra={"context": context}
            ),
        )

    keyring.observe_derivations(on_derive)
    return keyring


def _record(setup: KeySetup, event: AuditEvent) -> None:
    """Audit a key *access*; a log that cannot be written is reported, not fatal."""
    if setup.audit is None:
        # No audit file: the event still reaches logging as a structured record (a SIEM ships it).
        record = {
            "actor": event.actor,
            "action": event.action,
            "version": event.version,
            "outcome": event.outcome,
            "reason": event.reason,
            **event.extra,
        }
        audit_logger.info("key audit event", extra={"audit": record})
        return
    try:
        setup.audit.append(event)
    except AuditLogError as exc:
        logger.warning("key access not audited: %s", exc)


_cache_lock = threading.Lock()
_cache: dict[str, Keyring] = {}


def default_keyring(environ: Mapping[str, str] | None = None) -> Keyring:
    """The keyring the configuration names, loaded once and reloaded when it changes.

    The cache is keyed by a fingerprint of everything the lookup reads (the
    environment variables, the plan, the keyring file's size and mtime), so a
    rotation written to the file or a changed variable is picked up on the
    next call without a restart.
    """
    env = os.environ if environ is None else environ
    setup = resolve_key_setup(environ=env)
    fingerprint = _fingerprint(setup, env)
    with _cache_lock:
        found = _cache.get(fingerprint)
        if found is None:
            found = load_keyring(setup)
            _cache.clear()
            _cache[fingerprint] = found
        return found


def reset_default_keyring() -> None:
    """Forget the cached default keyring (tests, or after an in-process key operation)."""
    with _cache_lock:
        _cache.clear()


def _fingerprint(setup: KeySetup, env: Mapping[str, str]) -> str:
    digest = hashlib.sha256(setup.rule.encode())
    for name in ("KEYRING", "MASTER_KEY", "KEY_VERSION", "KEYRING_FILE"):
        digest.update(b"\0" + env.get(f"{setup.prefix}{name}", "").encode())
    if isinstance(setup.provider, FileProvider):
        try:
            info = setup.provider.path.stat()
            stamp = f"{setup.provider.path}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"
            digest.update(stamp.encode())
        except OSError:
            digest.update(b"missing")
    # Remote providers cache with a TTL; their generation moves once per TTL, so does ours.
    generation = getattr(setup.provider, "generation", None)
    if callable(generation):
        digest.update(str(generation()).encode())
    return digest.hexdigest()
