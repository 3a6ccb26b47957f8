"""The one retry policy, shared by the migrator and the networked key providers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest
import sqlalchemy as sa

from encmigrate.keys import remote as keys_remote
from encmigrate.migrate import MigrateOptions
from encmigrate.migrate import database as migrate_database
from encmigrate.retry import RetryPolicy

NO_WAIT = RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.0)


class FlakyError(Exception):
    pass


def _failing(times: int, error: BaseException) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, work


def test_both_import_paths_give_the_one_class() -> None:
    assert keys_remote.RetryPolicy is RetryPolicy
    assert migrate_database.RetryPolicy is RetryPolicy


def test_the_migrators_spelling_and_the_providers_are_the_same_policy() -> None:
    migrator = RetryPolicy(attempts=10, initial=0.02, maximum=0.3)
    provider = RetryPolicy(attempts=10, initial_wait=0.02, max_wait=0.3)
    assert migrator == provider
    assert (migrator.initial, migrator.maximum) == (0.02, 0.3)


def test_each_use_keeps_its_default() -> None:
    assert MigrateOptions().retry == RetryPolicy(attempts=8, initial_wait=0.05, max_wait=5.0)
    assert RetryPolicy() == RetryPolicy(attempts=5, initial_wait=0.2, max_wait=5.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"attempts": 0}, "attempts must be 1 or more"),
        ({"initial_wait": -1.0}, "initial_wait and max_wait must be 0 or more seconds"),
        ({"initial_wait": 0.1, "initial": 0.1}, "give initial_wait or initial, not both"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_parameter(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        RetryPolicy(**arguments)


def test_a_transient_failure_is_retried_until_it_clears() -> None:
    calls, work = _failing(2, FlakyError())
    retries: list[int] = []
    result = NO_WAIT.run(
        work,
        transient=lambda e: isinstance(e, FlakyError),
        what="test",
        on_retry=lambda e, n: retries.append(n),
    )
    assert result == "done"
    assert len(calls) == 3
    assert retries == [1, 2]


def test_a_failure_that_outlasts_the_attempts_is_raised() -> None:
    calls, work = _failing(5, FlakyError())
    with pytest.raises(FlakyError):
        NO_WAIT.run(work, transient=lambda e: isinstance(e, FlakyError))
    assert len(calls) == 3


def test_any_other_failure_is_raised_at_once() -> None:
    calls, work = _failing(1, PermissionError("denied"))
    with pytest.raises(PermissionError):
        NO_WAIT.run(work, transient=lambda e: isinstance(e, FlakyError))
    assert len(calls) == 1


def test_by_default_a_locked_sqlite_database_is_retried_and_a_bad_statement_is_not() -> None:
    locked = sa.exc.OperationalError("UPDATE t", {}, sqlite3.OperationalError("database is locked"))
    calls, work = _failing(1, locked)
    assert NO_WAIT.run(work) == "done"
    assert len(calls) == 2
    syntax = sa.exc.OperationalError("UPDAT t", {}, sqlite3.OperationalError("syntax error"))
    calls, work = _failing(1, syntax)
    with pytest.raises(sa.exc.OperationalError):
        NO_WAIT.run(work)
    assert len(calls) == 1


def test_the_policy_travels_to_helper_processes_as_json() -> None:
    policy = RetryPolicy(attempts=4, initial=0.01, maximum=0.5)
    assert RetryPolicy(**json.loads(json.dumps(asdict(policy)))) == policy
