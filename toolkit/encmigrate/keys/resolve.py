"""Which keyring the library uses when it is given none.

First match wins: ``<P>KEYRING`` (the JSON) > ``<P>MASTER_KEY`` (with
``<P>KEY_VERSION``, default 1) > ``<P>KEYRING_FILE`` > ``<P>KEY_PROVIDER`` (a
Vault or AWS provider, configured by the environment and the plan, see
docs/providers.md) > the plan's ``[keys]`` > an error naming these. ``<P>`` is
``ENCMIGRATE_`` unless ``ENCMIGRATE_ENV_PREFIX`` or the plan's ``[keys]
env_prefix`` replaces it.

The keyring file defaults to ``keyring.json`` beside the plan, the audit log
to ``encmigrate-audit.jsonl`` beside the keyring file (``[keys] audit_log``
or ``<P>AUDIT_LOG`` overrides). A keyring from the environment has an audit
file only when one of those names it; its events still go to logging.

:func:`default_keyring` keeps what it loaded for at most
``ENCMIGRATE_KEYRING_TTL`` seconds (default 5) before it looks at the store
again, and sooner when a key variable, the working folder or the keyring
file's metadata changes: a ``keys disable`` made by another process is in
force here within that time (for Vault and AWS, plus the provider's own
``cache_ttl``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
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
    "DEFAULT_KEYRING_TTL",
    "KEYRING_TTL_ENV",
    "PREFIX_ENV",
    "KeySetup",
    "default_keyring",
    "holds_default_keyring",
    "load_keyring",
    "reset_default_keyring",
    "resolve_key_setup",
]

PREFIX_ENV = "ENCMIGRATE_ENV_PREFIX"
KEYRING_TTL_ENV = "ENCMIGRATE_KEYRING_TTL"
DEFAULT_KEYRING_TTL = 5.0
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
            f"{prefix}KEY_PROVIDER: not a provider encmigrate knows; choose one of "
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
    process, is one audit event, keyed under the keyring loaded. Key material
    is never part of one.
    """
    return _adopt(setup, setup.provider.load())


def _adopt(setup: KeySetup, keyring: Keyring) -> Keyring:
    """Audit the load of ``keyring`` and of each key it derives from now on."""
    _record(
        setup,
        AuditEvent(
            action="keyring.load", version=keyring.current, extra={"provider": setup.provider.name}
        ),
        keyring,
    )

    def on_derive(version: int, context: str, purpose: KeyPurpose) -> None:
        _record(
            setup,
            AuditEvent(
                action=f"key.derive.{purpose.value}", version=version, extra={"context": context}
            ),
            keyring,
        )

    keyring.observe_derivations(on_derive)
    return keyring


def _record(setup: KeySetup, event: AuditEvent, keyring: Keyring) -> None:
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
        setup.audit.append(event, keyring=keyring)
    except AuditLogError as exc:
        logger.warning("key access not audited: %s", exc)


@dataclass(frozen=True, slots=True)
class _Entry:
    """What :func:`default_keyring` loaded, and what it saw of the store at the time."""

    keyring: Keyring
    setup: KeySetup
    quick: str  # the key variables, working folder and file metadata: checked on every call
    content: str  # the keyring file's digest (file provider), or "" for the others
    checked: float  # when the store was last looked at (clock seconds)


_cache_lock = threading.Lock()
# The keyring default_keyring() serves, by name; values are Keyring objects (callers may check
# membership by identity, see holds_default_keyring).
_cache: dict[str, Keyring] = {}
_entry: _Entry | None = None


def default_keyring(
    environ: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.monotonic
) -> Keyring:
    """The keyring the configuration names: the same object until the stored keyring changes.

    Every call compares the key variables, the working folder and the keyring
    file's metadata (a ``stat``) with what they were at the load. At most
    every ``ENCMIGRATE_KEYRING_TTL`` seconds (default 5; 0: every call) it
    also resolves the configuration again and looks at the store itself (the
    file's content; a Vault or AWS provider's load, itself cached for its
    ``cache_ttl``), so even a change the metadata does not show is in force
    within that time. A caller that builds something from the keyring keeps
    it while :func:`holds_default_keyring` says the keyring is still served.
    """
    global _entry
    env = os.environ if environ is None else environ
    ttl = _ttl(env)
    with _cache_lock:
        now = clock()
        entry = _entry
        fresh = entry is not None and now - entry.checked < ttl
        if entry is not None and fresh and _quick_stamp(entry.setup, env) == entry.quick:
            return entry.keyring
        setup = resolve_key_setup(environ=env)
        content = _content_stamp(setup, env)
        keyring: Keyring | None = None
        if entry is not None and _same_source(entry.setup, setup):
            setup = entry.setup  # keep the provider object: its own cache lives there
            if content == entry.content:
                keyring = _unchanged(entry)
        if keyring is None:
            keyring = load_keyring(setup)
        _entry = _Entry(keyring, setup, _quick_stamp(setup, env), content, now)
        _cache.clear()
        _cache["default"] = keyring
        return keyring


def holds_default_keyring(keyring: Keyring) -> bool:
    """Whether :func:`default_keyring` still serves this very object (identity, not equality)."""
    entry = _entry
    return entry is not None and entry.keyring is keyring


def reset_default_keyring() -> None:
    """Forget the cached default keyring (tests, or after an in-process key operation)."""
    global _entry
    with _cache_lock:
        _cache.clear()
        _entry = None


def _ttl(env: Mapping[str, str]) -> float:
    text = env.get(KEYRING_TTL_ENV)
    if not text:
        return DEFAULT_KEYRING_TTL
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if not 0 <= ttl < math.inf:
        raise KeyConfigError(f"{KEYRING_TTL_ENV}: must be a number of seconds (0 or more)")
    return ttl


def _unchanged(entry: _Entry) -> Keyring | None:
    """The cached keyring if the store still holds it, else ``None`` (load again)."""
    provider = entry.setup.provider
    if isinstance(provider, FileProvider | EnvProvider):
        return entry.keyring  # the content stamp covers them
    # Vault and AWS: their load() serves the same object until their own cache_ttl runs out.
    return entry.keyring if provider.load() is entry.keyring else None


def _same_source(old: KeySetup, new: KeySetup) -> bool:
    return (
        old.rule == new.rule
        and old.prefix == new.prefix
        and type(old.provider) is type(new.provider)
        and old.provider.describe() == new.provider.describe()
        and (old.audit.path if old.audit else None) == (new.audit.path if new.audit else None)
    )


def _quick_stamp(setup: KeySetup, env: Mapping[str, str]) -> str:
    """Everything cheap that shows a change: key variables, folder, the file's metadata."""
    digest = hashlib.sha256(setup.rule.encode())
    names = [f"{setup.prefix}{name}" for name in _KEY_VARIABLES] + [
        PREFIX_ENV,
        "ENCMIGRATE_CONFIG",
        KEYRING_TTL_ENV,
    ]
    for name in names:
        digest.update(b"\0" + env.get(name, "").encode())
    try:
        digest.update(b"\0" + os.getcwd().encode())
    except OSError:
        digest.update(b"\0?")
    if isinstance(setup.provider, FileProvider):
        try:
            info = setup.provider.path.stat()
            stamp = f"{setup.provider.path}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"
            digest.update(stamp.encode())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()


_KEY_VARIABLES = ("KEYRING", "MASTER_KEY", "KEY_VERSION", "KEYRING_FILE", "KEY_PROVIDER")


def _content_stamp(setup: KeySetup, env: Mapping[str, str]) -> str:
    """What the keyring is made of, where that is cheap to read: the file, or the variables.

    The file is read before the load, so a change made after it shows next time.
    """
    if isinstance(setup.provider, EnvProvider):
        digest = hashlib.sha256()
        for name in ("KEYRING", "MASTER_KEY", "KEY_VERSION"):
            digest.update(b"\0" + env.get(f"{setup.prefix}{name}", "").encode())
        return digest.hexdigest()
    if not isinstance(setup.provider, FileProvider):
        return ""
    try:
        return hashlib.sha256(setup.provider.path.read_bytes()).hexdigest()
    except OSError:
        return "missing"
