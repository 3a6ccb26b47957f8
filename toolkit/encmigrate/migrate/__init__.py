"""The batch machinery: migrate-data (step 2), verify (3), status, rewrap, decrypt-back.

Usable from Python as well as from the CLI::

    from encmigrate import migrate
    engine = migrate.connect(url)
    options = migrate.MigrateOptions(batch_size=1000)
    reports = migrate.migrate_data(plan, engine, keyring, options=options)
    verdicts = migrate.verify(plan, engine, keyring)
"""

from encmigrate.migrate.database import RetryPolicy, connect
from encmigrate.migrate.runner import (
    MigrateOptions,
    Progress,
    TableReport,
    decrypt_back,
    migrate_data,
    rewrap,
)
from encmigrate.migrate.status import ColumnStatus, key_versions, status
from encmigrate.migrate.verify import ColumnVerdict, verify

__all__ = [
    "ColumnStatus",
    "ColumnVerdict",
    "MigrateOptions",
    "Progress",
    "RetryPolicy",
    "TableReport",
    "connect",
    "decrypt_back",
    "key_versions",
    "migrate_data",
    "rewrap",
    "status",
    "verify",
]
