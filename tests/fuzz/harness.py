"""How every fuzz target runs: one property, two budgets, and a count of what it tried.

A target is a Hypothesis strategy of inputs and a check that feeds one input to
the code under test and returns how it ended (``"accepted"``, or the name of
the documented error it raised). Any other exception propagates: Hypothesis
shrinks the input to a minimal one and the test fails with it.

``FAST`` runs in ``make test``: derandomized (the same inputs every run, so a
failure there is reproducible as is) and reported as found, unshrunk.
``SLOW`` runs with ``make test-slow`` (``-m slow``): random, 200 times longer,
and a failing input is shrunk to a minimal one. ``tally`` keeps what each target
tried; the fuzz suite's conftest prints it at the end of the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

__all__ = ["BUDGETS", "FAST", "SLOW", "Budget", "Tally", "fuzz", "only", "tallies"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    examples: int
    derandomize: bool
    shrink: bool


# The fast budget reports a failing input as found (shrinking one can take half a minute);
# the slow one shrinks it to a minimal one.
FAST = Budget("fast", examples=100, derandomize=True, shrink=False)
SLOW = Budget("slow", examples=20_000, derandomize=False, shrink=True)
BUDGETS = [
    pytest.param(FAST, id="fast"),
    pytest.param(SLOW, id="slow", marks=pytest.mark.slow),
]


@dataclass
class Tally:
    """Inputs one target tried, by outcome."""

    target: str
    budget: str
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())


tallies: list[Tally] = []


def fuzz(
    target: str,
    budget: Budget,
    inputs: st.SearchStrategy[T],
    check: Callable[[T], str],
    *,
    examples: int | None = None,
) -> Tally:
    """Feed ``budget`` inputs (``examples`` overrides the fast count) to ``check``."""
    tally = Tally(target, budget.name)
    count = examples if examples is not None and budget is FAST else budget.examples

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=budget.derandomize,
        database=None if budget.derandomize else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
        phases=tuple(p for p in Phase if budget.shrink or p is not Phase.shrink),
    )
    @given(inputs)
    def run(value: T) -> None:
        tally.outcomes[check(value)] += 1

    run()
    tallies.append(tally)
    # Hypothesis stops early only when it has tried every input the strategy can make.
    assert tally.tried >= min(count, 50), tally
    return tally


def only(allowed: tuple[type[BaseException], ...], call: Callable[[], Any]) -> str:
    """``"accepted"``, or the name of the allowed exception ``call`` raised; others propagate."""
    try:
        call()
    except allowed as exc:
        return type(exc).__name__
    return "accepted"
