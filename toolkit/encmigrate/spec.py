"""The one description of an encrypted column, from which every cipher of a column is built.

Three parties encrypt and read a column and must agree on its bytes: the
application's column types (``fields/``), the batch migrator (``migrate/``)
and the tools that read what both wrote (``verify``, ``status``, ``inspect``,
``find``, ``api.py``'s calls). Each builds its cipher from a
:class:`ColumnSpec`, and the rules a spec carries are written here once:

* the **context** rule: ``[<schema>.]<table>.<column>``, the planned
  column's name as the database spells it (:func:`default_context`); a
  column type bound to a ``<column>_encrypted`` shadow column uses its
  planned column's context (:func:`planned_name`);
* the **codec** (the type name: ``string``, ``integer``, ...), whether the
  column is **searchable** and how its search tokens **normalise** strings;
* the **storage** of the envelope: ``bytea``/``BLOB`` or base64 text;
* the **names** the steps derive from a planned column: the shadow column
  (``<column>_encrypted``), the token column (``<column>_search``) and the
  view (``<table>_secure``).

A spec holds no key: :meth:`ColumnSpec.cipher` binds one to the derived keys
of a keyring (or to a source of the keyring in force).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from encmigrate.crypto.cipher import FieldCipher, KeysSource
from encmigrate.crypto.codecs import Codec, codec_for
from encmigrate.crypto.derived import DerivedKeys
from encmigrate.crypto.search import Normalize, SearchableCipher

__all__ = [
    "SEARCH_SUFFIX",
    "SHADOW_SUFFIX",
    "VIEW_SUFFIX",
    "ColumnSpec",
    "Storage",
    "check_storage",
    "default_context",
    "normalize_mode",
    "planned_name",
]

SHADOW_SUFFIX = "_encrypted"
"""Suffix of the shadow column step 1 adds beside a planned column."""

SEARCH_SUFFIX = "_search"
"""Suffix of the search-token column step 1 adds for a searchable planned column."""

VIEW_SUFFIX = "_secure"
"""Suffix of the view step 4 creates over a table (unless the plan names it)."""

Storage = Literal["binary", "text"]


def check_storage(storage: str) -> Storage:
    """``storage`` if it is one the types and the migrator know, else ValueError."""
    if storage == "binary":
        return "binary"
    if storage == "text":
        return "text"
    raise ValueError("storage must be 'binary' or 'text'")


def planned_name(column: str) -> str:
    """The planned column a column name stands for: a shadow column's name loses its suffix.

    A model mapped onto the shadow columns reads what the migrator wrote under
    the planned column's context, and the migrator's ``verify`` reads what
    such a model wrote.
    """
    if column.endswith(SHADOW_SUFFIX) and len(column) > len(SHADOW_SUFFIX):
        return column[: -len(SHADOW_SUFFIX)]
    return column


def default_context(table: str, column: str, *, schema: str | None = None) -> str:
    """The context of planned column ``column`` of ``table``: ``[<schema>.]<table>.<column>``.

    ``table`` may also be written ``"<schema>.<table>"`` (as a plan writes it)
    with ``schema`` None; names keep their case. A column type bound to a
    shadow column passes its :func:`planned_name`.
    """
    prefix = f"{schema}.{table}" if schema else table
    return f"{prefix}.{column}"


def normalize_mode(normalize: Normalize | str) -> Normalize:
    """``normalize`` as a :class:`Normalize`, or ValueError naming the choices."""
    try:
        return Normalize(normalize)
    except ValueError:
        choices = ", ".join(m.value for m in Normalize)
        raise ValueError(f"normalize must be one of {choices}") from None


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """What an encrypted column is: its context, codec, search settings, storage and name.

    ``column`` is the planned column's name when the spec describes a column
    of a plan or of a model (it gives the shadow and token names); a cipher
    built for a context alone (``get_cipher("billing.card")``) has none.
    """

    context: str
    type_name: str = "string"
    searchable: bool = False
    normalize: Normalize = Normalize.NONE
    storage: Storage = "binary"
    column: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.context, str) or not self.context:
            raise ValueError("context must be a non-empty string")
        codec_for(self.type_name)  # ValueError naming the known types
        check_storage(self.storage)
        mode = normalize_mode(self.normalize)
        if mode is not Normalize.NONE and not self.searchable:
            raise ValueError("normalize applies to searchable columns only")
        if mode is not Normalize.NONE and self.type_name not in ("string", "text"):
            raise ValueError(
                f"normalize={mode.value!r} applies to string fields, not {self.type_name}"
            )
        object.__setattr__(self, "normalize", mode)

    @property
    def codec(self) -> Codec:
        return codec_for(self.type_name)

    @property
    def text_storage(self) -> bool:
        return self.storage == "text"

    @property
    def shadow_column(self) -> str:
        """``<column>_encrypted``; ValueError for a spec without a column."""
        return self._column() + SHADOW_SUFFIX

    @property
    def search_column(self) -> str | None:
        """``<column>_search`` for a searchable column, else None."""
        return self._column() + SEARCH_SUFFIX if self.searchable else None

    def cipher(self, keys: DerivedKeys | KeysSource) -> FieldCipher:
        """The cipher of this column under ``keys`` (a :class:`SearchableCipher` if searchable).

        ``keys`` is one keyring's derived keys (``keyring.derived_keys``), fixed
        for the cipher's life, or a source asked at every call for the keys in
        force (what ``get_cipher()`` without a keyring passes).
        """
        if self.searchable:
            return SearchableCipher(keys, self.context, self.codec, normalize=self.normalize)
        return FieldCipher(keys, self.context, self.codec)

    def _column(self) -> str:
        if self.column is None:
            raise ValueError(f"the column spec of context {self.context!r} names no column")
        return self.column
