"""What every bench script reports alike: paired per-round ratios, targets, the machine.

Why paired ratios: on a shared machine the speed drifts from one round to the next.
Every script runs all its contenders in turn within a round, so a ratio of two of
them *in the same round* cancels the drift that hit both; a ratio of each side's
best round instead pairs one side's luckiest moment with the other's. So each ratio
is computed per round, and its median (the verdict), minimum and maximum over the
rounds are printed, beside the medians of the absolute figures.

Why the machine line: the figures mean little without the cores the run could use
(``os.cpu_count()`` counts the machine's, the affinity mask the ones this process
may run on) and the versions of the libraries doing the work.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

__all__ = [
    "Ratio",
    "Target",
    "machine",
    "machine_line",
    "paired",
    "ratio_json",
    "ratio_line",
    "time_once",
]


@dataclass(frozen=True, slots=True)
class Ratio:
    """One ratio, computed within each round: ``per_round[i] = top[i] / bottom[i]``."""

    name: str
    per_round: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)

    @property
    def minimum(self) -> float:
        return min(self.per_round)

    @property
    def maximum(self) -> float:
        return max(self.per_round)


def paired(name: str, top: Sequence[float], bottom: Sequence[float]) -> Ratio:
    """The ratio ``top / bottom`` of two contenders' figures, round by round."""
    if len(top) != len(bottom) or not top:
        raise ValueError(f"{name}: paired figures need the same number of rounds (>= 1)")
    return Ratio(name, tuple(t / b for t, b in zip(top, bottom, strict=True)))


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on a ratio's median: ``ratio >= bound`` (``at_least``) or ``ratio <= bound``."""

    bound: float
    at_least: bool

    def passes(self, ratio: Ratio) -> bool:
        median = ratio.median
        return median >= self.bound if self.at_least else median <= self.bound

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:.2f}x"


def ratio_line(ratio: Ratio, target: Target | None = None, *, width: int = 40) -> str:
    """``name  median  min  max  per round  [target verdict]`` on one line."""
    rounds = " ".join(f"{r:.2f}" for r in ratio.per_round)
    line = (
        f"  {ratio.name:<{width}} median {ratio.median:6.2f}x  min {ratio.minimum:6.2f}x  "
        f"max {ratio.maximum:6.2f}x  rounds [{rounds}]"
    )
    if target is not None:
        line += f"  target {target.describe()} {'PASS' if target.passes(ratio) else 'MISS'}"
    return line


def ratio_json(ratio: Ratio, target: Target | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": ratio.name,
        "per_round": [round(r, 4) for r in ratio.per_round],
        "median": round(ratio.median, 4),
        "min": round(ratio.minimum, 4),
        "max": round(ratio.maximum, 4),
    }
    if target is not None:
        document["target"] = target.describe()
        document["verdict"] = "PASS" if target.passes(ratio) else "MISS"
    return document


def time_once(run: Callable[[], object]) -> float:
    """Seconds for one call of ``run``, the collector run before and held off during.

    As ``timeit`` does: a collection that happens to fall inside one contender's
    call would otherwise be charged to it alone.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        output = run()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    del output
    return elapsed


def _version(package: str) -> str:
    try:
        return package_version(package)
    except PackageNotFoundError:
        return "absent"


def machine(*packages: str) -> dict[str, Any]:
    """The machine, Python and the versions of ``packages`` (cryptography, SQLAlchemy first)."""
    from cryptography.hazmat.backends.openssl import backend as openssl_backend

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    names = dict.fromkeys(("cryptography", "sqlalchemy", *packages))
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {name: _version(name) for name in names},
        "openssl": openssl_backend.openssl_version_text(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def machine_line(env: dict[str, Any]) -> str:
    """One line: cores, load, Python and library versions, platform."""
    versions = " | ".join(f"{name} {v}" for name, v in env["versions"].items())
    load = env["loadavg"]
    return (
        f"cores: os.cpu_count() {env['cpu_count']}, sched_getaffinity {env['affinity']} | "
        f"load {' '.join(map(str, load)) if load else 'n/a'} at start\n"
        f"{env['python']} | {versions} | {env['openssl']} | {env['platform']}"
    )
