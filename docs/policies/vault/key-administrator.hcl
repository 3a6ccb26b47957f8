# encmigrate key administrator: every key operation (generate, rotate, disable, enable,
# destroy, recover). Replace <mount>, <path>, <transit_mount> and <transit_key> with the
# values of [keys.vault] (defaults: secret, encmigrate/keyring, transit, no Transit key).

# Read the keyring and write new versions (check-and-set writes need create and update).
path "<mount>/data/<path>" {
  capabilities = ["create", "read", "update"]
}

# See the version history (recover the previous keyring).
path "<mount>/metadata/<path>" {
  capabilities = ["read"]
}

# `keys destroy` destroys the older KV versions that still hold the erased material.
path "<mount>/destroy/<path>" {
  capabilities = ["update"]
}

# Transit option: wrap new master keys and unwrap the stored ones.
path "<transit_mount>/encrypt/<transit_key>" {
  capabilities = ["update"]
}
path "<transit_mount>/decrypt/<transit_key>" {
  capabilities = ["update"]
}
