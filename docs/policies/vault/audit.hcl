# encmigrate audit service: read-only on logs and on the keyring's metadata (version history,
# times), never on key material. encmigrate's own audit log is a local JSON-lines file: grant
# read on it through file permissions, or ship the `encmigrate.audit` logger to your SIEM.
# Replace <mount> and <path>.

# Which Vault audit devices are enabled (reading this endpoint needs sudo).
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

# Versions and timestamps of the keyring secret, without its data.
path "<mount>/metadata/<path>" {
  capabilities = ["read", "list"]
}
