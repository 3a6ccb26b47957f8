"""The keyring and key manager: versioned master keys, providers, audit log.

The Vault and AWS providers are importable without their extras installed:
hvac and boto3 are imported on first use.
"""

from encmigrate.keys.audit import AuditEvent, AuditLog
from encmigrate.keys.audit_verify import AuditReport, verify_audit_log
from encmigrate.keys.aws import SecretsManagerProvider
from encmigrate.keys.aws_kms import KmsProvider
from encmigrate.keys.keyring import AuditHead, Keyring, KeyState, KeyVersion, MasterKey
from encmigrate.keys.manager import KeyManager, KeyStatus, VersionStatus
from encmigrate.keys.providers import EnvProvider, FileProvider, KeyProvider
from encmigrate.keys.remote import RetryPolicy
from encmigrate.keys.resolve import (
    KeySetup,
    default_keyring,
    load_keyring,
    reset_default_keyring,
    resolve_key_setup,
)
from encmigrate.keys.vault import VaultProvider

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
    "KmsProvider",
    "MasterKey",
    "RetryPolicy",
    "SecretsManagerProvider",
    "VaultProvider",
    "VersionStatus",
    "default_keyring",
    "load_keyring",
    "reset_default_keyring",
    "resolve_key_setup",
    "verify_audit_log",
]
