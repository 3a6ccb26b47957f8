"""What a preflight check says: a verdict, the figure it is based on, and the report of all."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["KEY_CHECKS", "Check", "PreflightReport", "Verdict"]


class Verdict(enum.StrEnum):
    """How a check came out; only ``fail`` makes the preflight fail."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


# The checks whose failure is a key problem (the CLI's exit 3, as verify's key problems).
KEY_CHECKS = frozenset({"keys", "canary"})


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, its verdict, the figure it measured and what to do about it.

    ``figure`` is the measurement in a few words ("2 sessions, oldest 75 s");
    ``detail`` says why the verdict and what to do. Neither ever holds a key,
    a value of the database or the canary's plaintext.
    """

    name: str
    verdict: Verdict
    figure: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "verdict": self.verdict.value,
            "figure": self.figure,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """The checks of one preflight, in the order they ran, for the step they prepare."""

    step: int
    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        return any(c.verdict is Verdict.FAIL for c in self.checks)

    @property
    def key_failed(self) -> bool:
        """A key or canary check failed: the keys, not the database, need attention."""
        return any(c.verdict is Verdict.FAIL and c.name in KEY_CHECKS for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "ok": not self.failed,
            "checks": [c.as_dict() for c in self.checks],
        }
