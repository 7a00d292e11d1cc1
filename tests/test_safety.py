"""The safety monitor protects any hardware with sensors with no tuner, with a tuner, and after a tuner crash."""

from __future__ import annotations

import math

from openmos.control import RunState
from openmos.hw.interface import HardwareTelemetry
from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.control import AgentControl
from openmos.miner.safety import SafetyMonitor, SafetyOptions
from openmos.tuning.thermal import CoolingConfig

from helpers import wait_for

POOLS = [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:9", "user": "t.1"}]}]


def agent(hw: SimHardware, performance: dict[str, object] | None = None) -> MiningAgent:
    return MiningAgent(AgentConfig.from_dict({"groups": POOLS, "performance": performance or {}}), hw)


async def run(monitor: SafetyMonitor, clock: SimClock, seconds: float) -> None:
    for _ in range(int(seconds / monitor.options.period_s)):
        clock.advance(monitor.options.period_s)
        await monitor.check()


def boards_on(hw: SimHardware) -> list[bool]:
    return [b.enabled for b in hw.telemetry().boards]


async def test_untuned_sim_s21_is_protected_fans_throttle_and_shutdown() -> None:
    """`sim:s21` without a target: the monitor drives the fans, throttles when hot, shuts down when dangerous."""
    clock = SimClock(speed=0)
    hw = SimHardware("s21", seed=1, clock=clock)
    a = agent(hw)
    assert a.tuner is None and a.safety is not None
    monitor = a.safety
    await run(monitor, clock, 120)
    assert monitor.duty_pct is not None and 20 <= monitor.duty_pct <= 100 and monitor.tripped is None
    hw.set_inlet_temperature(45.0)
    await run(monitor, clock, 600)
    stock = hw.limits().stock_freq_mhz
    assert monitor.guard.dps_steps >= 1 and monitor.tripped is None
    assert max(c.frequency_mhz or 0 for b in hw.telemetry().boards for c in b.chips) < stock  # throttled
    hw.set_inlet_temperature(65.0)
    await run(monitor, clock, 600)
    assert monitor.tripped and "dangerous" in monitor.tripped and not any(boards_on(hw))
    assert a.safety_hold and a.next_work() is None
    assert AgentControl(a).get_data().state is RunState.PROTECTING
    hw.set_inlet_temperature(20.0)  # cools down; restarts after restart_after_s, a step lower
    await run(monitor, clock, 900)
    assert monitor.tripped is None and all(boards_on(hw)) and not a.safety_hold
    assert any(d.startswith("restart") for d in monitor.decisions)


async def test_fan_failure_shuts_down_and_stays_down() -> None:
    clock = SimClock(speed=0)
    hw = SimHardware("s21", seed=2, clock=clock)
    monitor = SafetyMonitor(hw, CoolingConfig(min_fans=4), clock=clock)
    await run(monitor, clock, 20)
    assert monitor.tripped is None
    hw.fail_fan(0)
    await run(monitor, clock, 20)
    assert monitor.tripped and "fan failure" in monitor.tripped and not any(boards_on(hw))
    await run(monitor, clock, 3600)
    assert monitor.tripped and not any(boards_on(hw))  # a dead fan never comes back by itself


class FlakySensors(SimHardware):
    """Sensors that stop answering (NaN), like a failed I2C bus."""

    lost = False

    def telemetry(self) -> HardwareTelemetry:
        tel = super().telemetry()
        if self.lost:
            for b in tel.boards:
                b.temperatures_c = [math.nan] * len(b.temperatures_c)
                b.chip_temperatures_c = [float("1e400")] * len(b.chip_temperatures_c)
        return tel


async def test_lost_sensor_readings_shut_down_after_the_timeout() -> None:
    clock = SimClock(speed=0)
    hw = FlakySensors("s21", seed=3, clock=clock)
    monitor = SafetyMonitor(hw, CoolingConfig(), clock=clock, options=SafetyOptions(sensor_timeout_s=10))
    await run(monitor, clock, 10)
    hw.lost = True
    await run(monitor, clock, 6)
    assert monitor.tripped is None  # a brief gap is tolerated
    await run(monitor, clock, 10)
    assert monitor.tripped and "sensors lost" in monitor.tripped and not any(boards_on(hw))


async def test_monitor_keeps_protecting_after_the_tuner_crashes() -> None:
    hw = SimHardware("s21", seed=4, clock=SimClock(speed=200.0), tick_s=0.05)
    a = agent(hw, {"power_w": 3000})
    assert a.tuner is not None and a.safety is not None

    async def crash(until: object = None) -> None:
        raise RuntimeError("tuner bug")

    a.tuner.run = crash  # type: ignore[method-assign]
    await a.start()
    try:
        await wait_for(lambda: not a.tuner_running(), 20, "the tuner task to crash")
        hw.set_inlet_temperature(70.0)
        await wait_for(lambda: a.safety is not None and a.safety.tripped is not None, 60, "the monitor to trip")
        assert a.safety.tripped and not any(boards_on(hw))
        assert a.safety.duty_pct == 100.0  # it took over the fans
    finally:
        await a.stop()


def test_hardware_without_sensors_has_no_monitor() -> None:
    from openmos.hw.cpu import CpuHardware, CpuSettings

    a = MiningAgent(AgentConfig.from_dict({"groups": POOLS}), CpuHardware(CpuSettings(workers=1)))
    assert a.safety is None
