"""Alembic autogenerate support: render encmigrate column types as importable code.

Alembic renders a third-party type as ``<module>.<repr>`` but adds no import
for it, so the revision would not run. Pass :func:`render_item` to
``context.configure(..., render_item=render_item)`` in ``env.py``: it renders
``encmigrate.fields.EncryptedString(...)`` and adds ``import encmigrate.fields``
to the revision. The ``repr`` of every type is its constructor call without
the keyring (a keyring never belongs in a revision file); a token column's
type is rendered with ``index=False``, as its index is an ``op.create_index``
of its own in the revision.
"""

from __future__ import annotations

from typing import Any

from encmigrate.fields.encrypted import EncryptedType
from encmigrate.fields.token_index import SearchTokenIndex

__all__ = ["render_item"]

MODULE = "encmigrate.fields"


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Alembic ``render_item`` hook; returns False for everything that is not ours."""
    if type_ == "type" and isinstance(obj, EncryptedType | SearchTokenIndex):
        autogen_context.imports.add(f"import {MODULE}")
        code = obj.migration_repr() if isinstance(obj, SearchTokenIndex) else repr(obj)
        return f"{MODULE}.{code}"
    return False
