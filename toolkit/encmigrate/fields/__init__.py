"""SQLAlchemy column types that encrypt on write and decrypt on read (issue 4).

See docs/fields.md for recipes. Modules, one concept each:

* :mod:`.encrypted`: the base class (storage, processors, comparisons, repr);
* :mod:`.types`: one type per type name;
* :mod:`.context`: how a type finds its column, context and keyring;
* :mod:`.hotpath`: the per-value encryption and decryption path;
* :mod:`.search`: searchable types and ``.search`` lookups;
* :mod:`.token_index`: the token column and which columns pair up;
* :mod:`.tokens`: filling token columns on every write;
* :mod:`.render`: the Alembic ``render_item`` hook.
"""

from encmigrate.fields.context import VIEW_OF, column_context
from encmigrate.fields.encrypted import EncryptedType
from encmigrate.fields.render import render_item
from encmigrate.fields.search import (
    EncryptedSearchableBigInteger,
    EncryptedSearchableBinary,
    EncryptedSearchableDate,
    EncryptedSearchableInteger,
    EncryptedSearchableString,
    EncryptedSearchableText,
)
from encmigrate.fields.token_index import SearchTokenIndex
from encmigrate.fields.types import (
    EncryptedBigInteger,
    EncryptedBinary,
    EncryptedBoolean,
    EncryptedDate,
    EncryptedDateTime,
    EncryptedFloat,
    EncryptedInteger,
    EncryptedJSON,
    EncryptedNumeric,
    EncryptedString,
    EncryptedText,
    EncryptedTime,
)

__all__ = [
    "VIEW_OF",
    "EncryptedBigInteger",
    "EncryptedBinary",
    "EncryptedBoolean",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedFloat",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedNumeric",
    "EncryptedSearchableBigInteger",
    "EncryptedSearchableBinary",
    "EncryptedSearchableDate",
    "EncryptedSearchableInteger",
    "EncryptedSearchableString",
    "EncryptedSearchableText",
    "EncryptedString",
    "EncryptedText",
    "EncryptedTime",
    "EncryptedType",
    "SearchTokenIndex",
    "column_context",
    "render_item",
]
