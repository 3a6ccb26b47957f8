"""Suite-wide test configuration.

The database fixtures (pg_url, db_url, sqlite_engine, ...) come from the encmigrate.testing
plugin, loaded through its pytest11 entry point; pytester lets tests run pytest on pytest.
"""

import pytest

from support import prefork

pytest_plugins = ["pytester", "support.output_scan"]


@pytest.fixture(scope="session")
def warm_cli() -> prefork.Prefork:
    """Runs ``encmigrate``/``alembic`` commands in a pre-warmed interpreter (support/prefork.py)."""
    return prefork.shared()
