"""Alembic operations the generated revisions call: ``op.install_shadow_trigger`` and friends.

Each operation is a small reversible object registered with
``Operations.register_operation``, executed by an ``implementation_for``
function (which only emits SQL, so ``alembic upgrade --sql`` renders it) and
written into revision files by a ``renderers.dispatch_for`` function. A
revision imports this package for the side effect of registering them all:
``import encmigrate.revisions.ops`` is the line every generated revision holds,
so this package imports each of its modules, and re-exports their names.

* :mod:`~encmigrate.revisions.ops.text`: comments and SQL run as written;
* :mod:`~encmigrate.revisions.ops.locks`: DDL lock timeouts and their retries;
* :mod:`~encmigrate.revisions.ops.trigger`: the shadow trigger and the check before the drop;
* :mod:`~encmigrate.revisions.ops.fence`: MariaDB's fence on the plaintext during the drop;
* :mod:`~encmigrate.revisions.ops.index`: search-token indexes (partitioned tables too);
* :mod:`~encmigrate.revisions.ops.view`: secure views;
* :mod:`~encmigrate.revisions.ops.table`: the drop's table rewrite and status update.

Names reach the revision file only as Python string literals (``repr``) and
comments only through :func:`~encmigrate.revisions.sqltext.printable`; SQL
built from names runs through :func:`~encmigrate.revisions.sqltext.verbatim`.
"""

from encmigrate.revisions.ops.fence import FencePlaintextOp, LiftFenceOp
from encmigrate.revisions.ops.index import CreateSearchIndexOp, DropSearchIndexOp
from encmigrate.revisions.ops.locks import (
    DDL_RETRIES_ATTRIBUTE,
    LOCK_FAILURES,
    ResetDDLTimeoutsOp,
    SetDDLTimeoutsOp,
    ddl_retrying,
    lock_failure,
)
from encmigrate.revisions.ops.table import RewriteTableOp, SetMigrationStatusOp
from encmigrate.revisions.ops.text import ExecuteVerbatimOp, NoteOp
from encmigrate.revisions.ops.trigger import (
    CheckEncryptedOp,
    DropShadowTriggerOp,
    InstallShadowTriggerOp,
)
from encmigrate.revisions.ops.view import CreateSecureViewOp, DropSecureViewOp

__all__ = [
    "DDL_RETRIES_ATTRIBUTE",
    "LOCK_FAILURES",
    "CheckEncryptedOp",
    "CreateSearchIndexOp",
    "CreateSecureViewOp",
    "DropSearchIndexOp",
    "DropSecureViewOp",
    "DropShadowTriggerOp",
    "ExecuteVerbatimOp",
    "FencePlaintextOp",
    "InstallShadowTriggerOp",
    "LiftFenceOp",
    "NoteOp",
    "ResetDDLTimeoutsOp",
    "RewriteTableOp",
    "SetDDLTimeoutsOp",
    "SetMigrationStatusOp",
    "ddl_retrying",
    "lock_failure",
]
