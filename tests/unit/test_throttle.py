"""The throttle and the adaptive batch size, with fake probes and clocks."""

from __future__ import annotations

import threading

import pytest

from encmigrate.errors import ConfigError
from encmigrate.migrate.throttle import (
    BatchSizer,
    Limit,
    LsnLag,
    Throttle,
    parse_lsn,
    parse_max_load,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStop(threading.Event):
    """A stop whose wait advances the fake clock instead of sleeping."""

    def __init__(self, clock: Clock, after: float | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.after = after

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0
        if self.after is not None and self.clock.now >= self.after:
            self.set()
        return self.is_set()


def test_parse_lsn() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848


def test_lsn_lag_is_the_age_of_the_oldest_unreplayed_position() -> None:
    clock = Clock()
    primary = {"lsn": 100}
    standby: dict[str, int | None] = {"lsn": 100}
    lag = LsnLag(lambda: primary["lsn"], lambda: standby["lsn"], clock)
    assert lag() == 0.0  # caught up
    primary["lsn"] = 200  # the primary writes; replay is paused
    clock.now = 1.0
    assert lag() == 0.0  # seen just now
    clock.now = 6.0
    primary["lsn"] = 300
    assert lag() == 5.0  # 200 was written 5 s ago and is not replayed
    standby["lsn"] = 200
    assert lag() == 0.0  # 300 was seen just now
    clock.now = 9.0
    assert lag() == 3.0
    standby["lsn"] = 300
    assert lag() == 0.0


def test_lsn_lag_on_an_idle_primary_stays_zero() -> None:
    clock = Clock()
    lag = LsnLag(lambda: 500, lambda: 500, clock)
    for second in range(100):
        clock.now = float(second)
        assert lag() == 0.0


def test_no_standby_means_no_lag() -> None:
    assert LsnLag(lambda: 5, lambda: None)() == 0.0


def test_throttle_waits_while_over_the_limit_and_counts_the_seconds() -> None:
    clock = Clock()
    values = iter([12.0, 12.0, 9.0, 3.0, 0.0])
    throttle = Throttle([Limit("replica lag", lambda: next(values), 5, "s")], clock=clock)
    assert throttle.check() == "replica lag 12 s > 5 s"
    reasons: list[str] = []
    waited = throttle.wait(FakeStop(clock), reasons.append)
    assert waited == pytest.approx(3.0)
    assert throttle.throttled_seconds == pytest.approx(3.0)
    assert reasons == ["replica lag 12 s > 5 s", "replica lag 12 s > 5 s", "replica lag 9 s > 5 s"]
    assert throttle.reason is None and throttle.since is None


def test_throttle_probes_at_most_once_per_interval() -> None:
    clock = Clock()
    calls = []

    def probe() -> float:
        calls.append(clock.now)
        return 0.0

    throttle = Throttle([Limit("x", probe, 1)], interval=1.0, clock=clock)
    for step in range(10):
        clock.now = step * 0.25
        throttle.check()
    assert calls == [0.0, 1.0, 2.0]


def test_a_stop_cuts_the_wait_short() -> None:
    clock = Clock()
    throttle = Throttle([Limit("load", lambda: 99.0, 1)], clock=clock)
    waited = throttle.wait(FakeStop(clock, after=4.0))
    assert waited == pytest.approx(4.0)


def test_a_failing_probe_throttles_with_its_error_class() -> None:
    def broken() -> float:
        raise ConnectionError("gone")

    assert Throttle([Limit("replica lag", broken, 5)]).check() == (
        "replica lag probe failed (ConnectionError)"
    )


def test_parse_max_load() -> None:
    assert parse_max_load(["active_sessions=50", "waiting_sessions=3"]) == (
        ("active_sessions", 50.0),
        ("waiting_sessions", 3.0),
    )
    with pytest.raises(ConfigError, match="NAME=LIMIT"):
        parse_max_load(["cpu=3"])
    with pytest.raises(ConfigError, match="not a number"):
        parse_max_load(["active_sessions=many"])


def test_fixed_size_without_a_target() -> None:
    sizer = BatchSizer(1000, target=None, minimum=None, maximum=None)
    assert sizer.observe(1000, 30.0) == 1000
    assert sizer.hand_out("w") == 1000 and sizer.limit_of("w") == 1000
    assert sizer.sizes == [1000]


def test_sizer_grows_by_at_most_a_fifth_and_shrinks_by_at_most_half() -> None:
    sizer = BatchSizer(1000, target=1.0, minimum=10, maximum=100_000)
    assert sizer.observe(1000, 0.01) == 1200  # far too fast: +20 %
    assert sizer.observe(1200, 50.0) == 600  # far too slow: -50 %
    assert sizer.sizes == [1000, 1200, 600]


def test_sizer_keeps_the_size_inside_the_efficiency_band() -> None:
    sizer = BatchSizer(1000, target=1.0, minimum=10, maximum=100_000)
    assert sizer.observe(1000, 0.92) == 1000
    assert sizer.observe(1000, 0.8) > 1000  # under 90 %
    before = sizer.size
    assert sizer.observe(before, 1.0) < before  # over 95 %


def test_sizer_converges_toward_the_target_and_respects_bounds() -> None:
    sizer = BatchSizer(100, target=0.5, minimum=50, maximum=5000)
    per_row = 0.0002  # 5,000 rows/s: the target is about 2,300 rows
    for _ in range(40):
        sizer.observe(sizer.size, sizer.size * per_row)
    assert 0.9 * 0.5 <= sizer.size * per_row <= 0.95 * 0.5 + 0.05
    slow = BatchSizer(100, target=0.5, minimum=50, maximum=5000)
    for _ in range(20):
        slow.observe(slow.size, slow.size * 1.0)  # one row a second
    assert slow.size == 50


def test_sizer_ignores_a_short_last_batch() -> None:
    sizer = BatchSizer(1000, target=1.0, minimum=10, maximum=100_000)
    assert sizer.observe(10, 5.0) == 1000


def test_limit_of_is_never_larger_than_the_committed_batchs_size() -> None:
    sizer = BatchSizer(1000, target=1.0, minimum=10, maximum=100_000)
    first = sizer.hand_out("w")  # batch N
    sizer.observe(1000, 50.0)  # the size halves before N commits
    second = sizer.hand_out("w")  # batch N + 1
    assert (first, second) == (1000, 500)
    assert sizer.limit_of("w") <= first
    assert sizer.limit_of("other") == sizer.minimum
