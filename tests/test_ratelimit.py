"""The one token bucket every rate limit uses (submits, MQTT commands, fleet enrollment and telemetry)."""

from __future__ import annotations

import math

import pytest

from openmos.base.ratelimit import TokenBucket


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_burst_then_refill_at_the_rate_on_the_injected_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=5.0, clock=clock)
    assert sum(bucket.take() for _ in range(50)) == 5
    assert bucket.refused == 45
    clock.t += 0.6  # 1.2 tokens back
    assert bucket.take() and not bucket.take()
    clock.t += 1000.0  # refills up to the burst, never beyond
    assert sum(bucket.take() for _ in range(50)) == 5


def test_an_explicit_time_overrides_the_clock() -> None:
    bucket = TokenBucket(rate=2.0, burst=5.0, clock=lambda: pytest.fail("clock asked"))
    assert sum(bucket.take(100.0) for _ in range(50)) == 5
    assert bucket.take(100.6) and not bucket.take(100.6)


def test_a_clock_stepping_backwards_refills_nothing_and_drains_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=3.0, clock=clock)
    assert sum(bucket.take() for _ in range(3)) == 3
    clock.t -= 50.0
    assert not bucket.take()
    clock.t += 51.0  # one second after the last forward time: one token, not 51
    assert bucket.take() and not bucket.take()


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1.0, 0.0, -math.inf, float("1e400")])
def test_hostile_rates_are_refused_at_construction(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, 5.0)


@pytest.mark.parametrize("burst", [math.nan, math.inf, -1.0, 0.0, 0.5])
def test_hostile_bursts_are_refused_at_construction(burst: float) -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, burst)


def test_every_rate_limit_uses_the_shared_bucket() -> None:
    from openmos.fleet import enroll, trust
    from openmos.miner import pool_manager
    from openmos.mqtt import bridge

    for module in (enroll, trust, pool_manager, bridge):
        assert module.TokenBucket is TokenBucket, module.__name__
