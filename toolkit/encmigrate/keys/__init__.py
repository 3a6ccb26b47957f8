"""The keyring and key manager: versioned master keys, providers, audit log."""

from encmigrate.keys.audit import AuditEvent, AuditLog, AuditReport, verify_audit_log
from encmigrate.keys.keyring import AuditHead, Keyring, KeyState, KeyVersion, MasterKey
from encmigrate.keys.manager import KeyManager, KeyStatus, VersionStatus
from encmigrate.keys.providers import EnvProvider, FileProvider, KeyProvider
from encmigrate.keys.resolve import (
    KeySetup,
    default_keyring,
    load_keyring,
    reset_default_keyring,
    resolve_key_setup,
)

__all__ = [
    "AuditEvent",
    "AuditHead",
    "AuditLog",
    "AuditReport",
    "EnvProvider",
    "FileProvider",
    "KeyManager",
    "KeyProvider",
    "KeySetup",
    "KeyState",
    "KeyStatus",
    "KeyVersion",
    "Keyring",
    "MasterKey",
    "VersionStatus",
    "default_keyring",
    "load_keyring",
    "reset_default_keyring",
    "resolve_key_setup",
    "verify_audit_log",
]
