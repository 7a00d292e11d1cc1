"""Pure pieces behind issue 11: difficulty checks, the share-rate governor, the rate-limited log."""

from __future__ import annotations

import logging
import math

import pytest

from openmos.base.logs import LogLimiter
from openmos.miner.governor import governed_difficulty
from openmos.stratum.difficulty import (
    ABS_MAX_DIFFICULTY,
    BadDifficulty,
    DifficultyRange,
    check_difficulty,
    difficulty_for_interval,
    seconds_per_share,
    suggested_difficulty,
)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0, 0.0, -1, 1e-300, 1e300, 10**400, True, "5",
                                   None, [1]])
def test_hostile_difficulties_refused(value: object) -> None:
    with pytest.raises(BadDifficulty):
        check_difficulty(value, DifficultyRange.for_hashrate(1e6))


def test_sane_difficulties_pass_and_range_follows_the_hashrate() -> None:
    cpu, asic = DifficultyRange.for_hashrate(1e6), DifficultyRange.for_hashrate(200e12)
    assert check_difficulty(0.001, cpu) == 0.001 and check_difficulty(16384, cpu) == 16384.0
    assert check_difficulty(ABS_MAX_DIFFICULTY, asic) == ABS_MAX_DIFFICULTY
    with pytest.raises(BadDifficulty, match="sane minimum"):
        check_difficulty(cpu.low / 2, cpu)
    # An S21 would find 1000 shares/s at difficulty ~47, but difficulty 1 (the Stratum default) is always
    # accepted: below it is refused, a CPU's 0.001 included.
    assert asic.low == 1.0 and cpu.low == pytest.approx(1e6 / 2**32 / 1000)
    with pytest.raises(BadDifficulty):
        check_difficulty(0.001, asic)


def test_suggested_difficulty_gives_a_share_every_few_seconds() -> None:
    for rate in (3e5, 2e6, 200e12):
        assert 4.5 < seconds_per_share(rate, suggested_difficulty(rate)) < 5.5
    assert difficulty_for_interval(2**32, 1.0) == 1.0


def test_governor_raises_difficulty_only_when_it_would_flood() -> None:
    rate = 2**32 * 100.0  # 100 difficulty-1 shares per second
    assert governed_difficulty(0.01, rate, 5.0) == pytest.approx(20.0)  # 5 shares/s instead of 10,000
    assert governed_difficulty(50.0, rate, 5.0) == 50.0  # already slower than 5/s: untouched
    assert governed_difficulty(0.01, None, 5.0) == 0.01  # unknown hashrate: the bucket still limits


def test_log_limiter_bounds_lines_and_says_how_many_it_held(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("test.limiter"), interval=10.0, burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.limiter"):
        written = sum(limiter.log(logging.INFO, "k", "share %d", i) for i in range(1000))
        now[0] = 11.0
        limiter.log(logging.INFO, "k", "share %d", 1000)
    assert written == 3 and len(caplog.records) == 4
    assert "997 similar lines suppressed" in caplog.records[-1].getMessage()


def test_range_edges_follow_the_hashrate_and_the_governor() -> None:
    rate = 2**32 * 100.0  # 100 difficulty-1 shares per second
    edges = DifficultyRange.for_hashrate(rate, max_share_rate=5.0, slow_hours=24.0)
    assert edges.governed_below == pytest.approx(20.0)  # 5 shares/s
    assert edges.low == pytest.approx(100.0 / 1000.0)  # 200 x 5 = 1000 shares/s: refused below
    assert edges.slow_above == pytest.approx(100.0 * 86400)  # one share a day
    assert check_difficulty(edges.slow_above * 10, edges) == edges.slow_above * 10  # used, not refused
    with pytest.raises(BadDifficulty):
        check_difficulty(edges.low / 2, edges)
    fast = DifficultyRange.for_hashrate(200e12, max_share_rate=5.0)
    assert fast.low == 1.0  # difficulty 1, the Stratum default, is never refused


def test_governor_floor_and_range_use_one_hashrate_figure() -> None:
    """The floor the hardware mines at followed the live rate while the range that counts and logs "mining at
    X instead" kept the start-up calibration: with the CPU measuring itself 4x faster than calibrated, a pool
    difficulty was silently raised 4x with no count, or counted as governed while mined at the pool's value."""
    from openmos.hw.cpu import CpuHardware, CpuSettings
    from openmos.miner import AgentConfig, MiningAgent

    rate = [1e6]
    hw = CpuHardware(CpuSettings(workers=1))
    hw.expected_hashrate = lambda: rate[0]  # type: ignore[method-assign]
    agent = MiningAgent(AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1",
                                                                       "user": "w"}]}]}), hw)
    max_rate = agent.config.stratum.max_share_rate

    def consistent() -> None:
        governed_below = agent.policy.difficulty_range.governed_below
        assert governed_below == pytest.approx(difficulty_for_interval(agent.governor_hashrate or 0, 1 / max_rate))
        for pool_difficulty in (governed_below / 3, governed_below * 3):  # one governed, one not
            assert agent.mining_difficulty(pool_difficulty) == pytest.approx(max(pool_difficulty, governed_below))
        options = agent.pools.groups[0]._options(agent.pools.groups[0].connections[0])
        assert options.difficulty_range == agent.policy.difficulty_range

    consistent()
    rate[0] = 4e6  # the workers' measured rate replaces the calibration
    assert agent.refresh_governor() and agent.governor_hashrate == 4e6
    consistent()
    rate[0] = 4.2e6  # within the hysteresis: nothing moves
    assert not agent.refresh_governor() and agent.governor_hashrate == 4e6
    consistent()
