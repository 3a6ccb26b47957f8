"""Filling search token columns on every write, from the ORM and from Core.

One ``before_execute`` listener (installed on the ``Engine`` class the first
time a :class:`~encmigrate.fields.SearchTokenIndex` is attached to a column)
sees every INSERT and UPDATE, from the ORM's flush and bulk paths and from
Core alike, before SQLAlchemy compiles it. Whenever the statement
writes the source column (in its parameters or in ``.values()``), the
listener writes the token column too, computing all tokens of an
executemany in one ``batch_tokens`` call; a statement that does not write
the source column leaves the token alone. Column defaults could not do this:
an ``onupdate`` fires on every UPDATE, and would clobber the token of an
UPDATE that does not touch the source.

The ORM does not learn about parameters added that way, so two more things
keep its instances honest: ``before_insert``/``before_update`` mapper hooks
set the token attribute whenever the searchable attribute changed (the
listener then writes the same value), and the token column is declared
``server_default``/``server_onupdate`` = ``FetchedValue()``, so after a bulk
UPDATE the ORM expires the attribute rather than keep a stale token.

Not covered: ``INSERT ... FROM SELECT`` leaves tokens NULL, and a SQL
expression as the value of a searchable column raises :class:`ConfigError`:
a token needs the plaintext in Python. ``ordered_values()`` writing a
searchable column raises too (it takes no second column afterwards).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, Engine, Table, event
from sqlalchemy import inspect as inspect_object
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql import bindparam
from sqlalchemy.sql.dml import Insert, Update, ValuesBase
from sqlalchemy.sql.elements import BindParameter

from encmigrate.errors import ConfigError
from encmigrate.fields.token_index import TokenPair, pairs_of, where

__all__ = ["fill_search_tokens", "install_token_writers"]

_listener_lock = threading.Lock()
_listener_installed = False


def install_token_writers() -> None:
    """Install the statement listener and the ORM hooks, once per process."""
    global _listener_installed
    with _listener_lock:
        if not _listener_installed:
            event.listen(Engine, "before_execute", fill_search_tokens, retval=True)
            _install_orm_hooks()
            _listener_installed = True


def _install_orm_hooks() -> None:
    """Keep the token attribute of ORM instances in step with the searchable one."""
    event.listen(Mapper, "before_insert", _refresh_instance_tokens)
    event.listen(Mapper, "before_update", _refresh_instance_tokens)


def _refresh_instance_tokens(mapper: Any, connection: Any, target: Any) -> None:
    """Set the token attribute when the searchable attribute changed.

    The ``before_execute`` listener would write the same token anyway; doing
    it on the instance as well means the identity map never holds a stale
    token (the ORM does not learn about parameters added by that listener).
    """
    table = mapper.local_table
    if not isinstance(table, Table):
        return
    pairs = pairs_of(table)
    if not pairs:
        return
    state = inspect_object(target)
    for pair in pairs:
        try:
            source = mapper.get_property_by_column(pair.source).key
            token_attribute = mapper.get_property_by_column(pair.token).key
        except UnmappedColumnError:
            continue  # not both mapped: the statement listener still fills the column
        if state.key is not None and not state.attrs[source].history.has_changes():
            continue
        [token] = pair.searchable.search_cipher().batch_tokens([getattr(target, source)])
        setattr(target, token_attribute, token)


Params = Mapping[str, Any]


def fill_search_tokens(
    conn: Connection,
    statement: Any,
    multiparams: Sequence[Params],
    params: Params,
    execution_options: Any,
) -> tuple[Any, Sequence[Params], Params]:
    """``before_execute`` hook: write the token wherever the source column is written."""
    if not isinstance(statement, Insert | Update):
        return statement, multiparams, params
    table = statement.table._deannotate() if hasattr(statement.table, "_deannotate") else None
    if not isinstance(table, Table):
        return statement, multiparams, params
    pairs = pairs_of(table)
    for pair in pairs:
        statement, multiparams, params = _fill_pair(pair, statement, multiparams, params)
    return statement, multiparams, params


def _fill_pair(
    pair: TokenPair, statement: ValuesBase, multiparams: Sequence[Params], params: Params
) -> tuple[ValuesBase, Sequence[Params], Params]:
    source_key, token_key = pair.source.key, pair.token.key
    tokens = pair.searchable.search_cipher().batch_tokens
    if statement._multi_values:
        statement = _fill_multi_values(pair, statement, tokens)
    written = _statement_value(statement, pair.source)
    if written is not None:
        if statement._maintain_values_ordering:
            # ordered_values() can be given once only, so the token cannot join it.
            raise ConfigError(
                f"{where(pair.source)} is searchable: write it with .values(), "
                "not ordered_values(), so its token can be written too"
            )
        if not isinstance(written, BindParameter):
            raise ConfigError(
                f"{where(pair.source)} is searchable: write it with a Python value, "
                "not a SQL expression (its search token is computed in Python)"
            )
        if written.key in (multiparams[0] if multiparams else params):
            # A named bindparam filled per parameter set: give the token its own.
            source_key = written.key
            token_key = f"{written.key}__search_token"
            statement = statement.values({pair.token: bindparam(token_key)})
        elif not written.callable:
            [token] = tokens([written.value])
            return statement.values({pair.token: token}), multiparams, params
    if multiparams and source_key in multiparams[0]:
        values = [p.get(source_key) for p in multiparams]
        new = [{**p, token_key: t} for p, t in zip(multiparams, tokens(values), strict=True)]
        return statement, new, params
    if params and source_key in params:
        [token] = tokens([params[source_key]])
        return statement, multiparams, {**params, token_key: token}
    return statement, multiparams, params


def _statement_value(statement: ValuesBase, column: Column[Any]) -> Any:
    """What ``.values()`` gives ``column``, or None when it is not there."""
    values: Mapping[Any, Any] = statement._values or {}
    for key, value in values.items():
        if key == column.key if isinstance(key, str) else getattr(key, "key", None) == column.key:
            return value
    return None


def _fill_multi_values(
    pair: TokenPair, statement: ValuesBase, tokens: Callable[[Sequence[Any]], list[bytes | None]]
) -> ValuesBase:
    """``insert().values([{...}, {...}])``: add the token to each row dict."""
    [rows] = statement._multi_values
    if not rows or not all(isinstance(row, dict) for row in rows):
        return statement
    dicts = cast("list[dict[Any, Any]]", rows)
    if pair.source.key not in dicts[0]:
        return statement
    computed = tokens([row.get(pair.source.key) for row in dicts])
    new_rows = [{**row, pair.token.key: t} for row, t in zip(dicts, computed, strict=True)]
    clone = statement._generate()
    clone._multi_values = (cast(Any, new_rows),)
    return clone
