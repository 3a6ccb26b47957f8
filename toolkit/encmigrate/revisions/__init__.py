"""Alembic revision generators for steps 1, 4 and 5 of the five steps (docs/architecture.md).

* :func:`add_columns` (step 1): shadow columns, search indexes, tracking tables, trigger;
* :func:`create_views` (step 4): a ``<table>_secure`` view per table;
* :func:`drop_unencrypted` (step 5): drops the plaintext columns once verified.

Each writes an ordinary Alembic revision chained on the head (``apply=True``
also runs ``alembic upgrade head``), or with ``sql=True`` returns its SQL
instead of writing a file. The custom operations those revisions call
(``op.install_shadow_trigger`` & co.) live in :mod:`encmigrate.revisions.ops`.
"""

from encmigrate.revisions.add_columns import add_columns
from encmigrate.revisions.drop import drop_unencrypted
from encmigrate.revisions.generate import RevisionResult
from encmigrate.revisions.views import create_views

__all__ = ["RevisionResult", "add_columns", "create_views", "drop_unencrypted"]
