"""The ``encmigrate`` command line. Only this package prints."""

from encmigrate.cli.app import app, main

__all__ = ["app", "main"]
