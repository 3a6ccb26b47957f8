# encmigrate application service: read the current keyring, nothing else.
# Replace <mount>, <path>, <transit_mount> and <transit_key> as in key-administrator.hcl.

path "<mount>/data/<path>" {
  capabilities = ["read"]
}

# Transit option only: unwrap the stored master keys into memory.
path "<transit_mount>/decrypt/<transit_key>" {
  capabilities = ["update"]
}
