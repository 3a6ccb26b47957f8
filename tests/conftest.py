"""Suite-wide test configuration.

The database fixtures (pg_url, db_url, sqlite_engine, ...) come from the encmigrate.testing
plugin, loaded through its pytest11 entry point; pytester lets tests run pytest on pytest.
"""

pytest_plugins = ["pytester"]
