# encmigrate backup service: write-only to the backup location. Each backup is a new path
# (e.g. <backup_path>/2026-11-29T10-00-00Z), so "create" is enough and nothing can be read
# back or overwritten with this policy. Replace <backup_mount> and <backup_path>.

path "<backup_mount>/data/<backup_path>/*" {
  capabilities = ["create"]
}
