"""The batch machinery of steps 2 and 3: migrate-data, verify, status.

Usable from Python as well as from the CLI::

    from encmigrate import migrate
    engine = migrate.connect(url)
    options = migrate.MigrateOptions(batch_size=1000)
    reports = migrate.migrate_data(plan, engine, keyring, options=options)
    verdicts = migrate.verify(plan, engine, keyring)
"""

from encmigrate.migrate.database import RetryPolicy, connect, is_transient
from encmigrate.migrate.runner import MigrateOptions, Progress, TableReport, migrate_data
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
    "is_transient",
    "key_versions",
    "migrate_data",
    "status",
    "verify",
]
