"""The one control surface: hostile inputs are refused at the edge, and every device kind gives the same
result for the same command (curtail 0 is sleep, an operator pause holds against energy, watts -> fraction)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from openmos.base.tasks import cancel_and_wait
from openmos.control import (
    ControlSurface,
    Curtail,
    InvalidCommand,
    RunState,
    SetFrequency,
    SetTarget,
    UnsupportedControl,
    command_from_wire,
    to_wire,
)
from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.control import AgentControl
from openmos.testbed.device import SimulatedFleetDevice
from openmos.testbed.site import FleetSimSite
from openmos.tuning import TunerState

from helpers import wait_for

POOLS = [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:3333", "user": "t.1"}]}]


def agent_on(hardware: str, performance: dict[str, Any] | None = None) -> MiningAgent:
    hw = CpuHardware(CpuSettings(workers=1)) if hardware == "cpu" else SimHardware(
        hardware, seed=1, clock=SimClock(speed=50.0), tick_s=0.1)
    return MiningAgent(AgentConfig.from_dict({"groups": POOLS, "performance": performance or {}}), hw)


@pytest.mark.parametrize(("action", "args"), [
    ("curtail", {"fraction": float("nan")}), ("curtail", {"fraction": float("inf")}),
    ("curtail", {"fraction": "1e400"}), ("curtail", {"fraction": -1e-300}), ("curtail", {"fraction": 1.5}),
    ("curtail", {"fraction": 0.5, "watts": 100}), ("curtail", {}), ("curtail", {"watts": -5}),
    ("curtail", {"fraction": True}), ("curtail", {"fraction": [0.5]}), ("curtail", {"fraction": {"a": {"b": 1}}}),
    ("set_power", {"watts": 1e400}), ("set_power", {}), ("set_power", {"watts": 0}),
    ("set_target", {"power_w": 3000, "profile": "eco"}), ("set_target", {"profile": "x" * 10_000}),
    ("set_pools", {"pools": "stratum+tcp://a:1"}), ("set_pools", {"pools": [{"url": "a", "user": "u"}] * 1000}),
    ("set_pools", {"pools": [{"url": "stratum+tcp://a:1\r\nmining.authorize", "user": "u"}]}),
    ("set_pools", {"pools": [["url", "user"]]}), ("set_frequency", {"board": "0", "mhz": 500}),
    ("set_frequency", {"board": 0, "mhz": -500}), ("locate", {"seconds": 1e9}), ("set_cooling", {"mode": "lava"}),
    ("set_cooling", {"mode": "manual"}), ("self_destruct", {}), ("a" * 100_000, {}),
])
def test_hostile_wire_commands_are_refused_with_a_clear_error(action: str, args: dict[str, Any]) -> None:
    with pytest.raises(InvalidCommand) as err:
        command_from_wire(action, args)
    assert 0 < len(str(err.value)) < 300


def test_wire_commands_parse_to_typed_commands() -> None:
    assert command_from_wire("curtail", {"fraction": "0.25"}) == Curtail(fraction=0.25)
    assert command_from_wire("curtail", {"watts": 0}).is_sleep  # type: ignore[union-attr]
    assert command_from_wire("set_power", {"watts": 2450}) == SetTarget(power_w=2450)
    assert command_from_wire("set_frequency", {"board": 1, "mhz": 480}) == SetFrequency(1, 480.0)
    assert command_from_wire("pause", "not a mapping") == command_from_wire("pause")  # type: ignore[arg-type]


def _sim_device() -> ControlSurface:
    return SimulatedFleetDevice("d1")


def _site_worker() -> ControlSurface:
    return FleetSimSite(2, seed=3).workers[0]


def _agent_untuned() -> ControlSurface:
    return AgentControl(agent_on("s21"), "agent-untuned")


def _agent_tuned() -> ControlSurface:
    return AgentControl(agent_on("s21", {"power_w": 3000}), "agent-tuned")


KINDS: dict[str, Callable[[], ControlSurface]] = {"simulated": _sim_device, "site": _site_worker,
                                                   "agent": _agent_untuned, "agent+tuner": _agent_tuned}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_device_kind_has_the_same_semantics(kind: str) -> None:
    dev = KINDS[kind]()
    assert dev.state is RunState.MINING
    slept = await dev.curtail(fraction=0.0)
    assert slept.state is RunState.SLEEPING and dev.fraction == 0.0
    assert (await dev.sleep()).state is RunState.SLEEPING  # curtail 0 == sleep
    half = await dev.curtail(fraction=0.5)
    assert half.ok and half.state is RunState.CURTAILED and dev.fraction == 0.5
    full = dev.full_power_w()
    assert full is not None and full > 0
    assert (await dev.curtail(watts=full / 4)).state is RunState.CURTAILED and math.isclose(dev.fraction, 0.25)
    assert (await dev.curtail(watts=10 * full)).state is RunState.MINING  # clamped to full
    await dev.pause()
    held = await dev.curtail(fraction=0.7)  # energy cannot restart a device an operator paused
    assert held.state is RunState.PAUSED and "paused by operator" in held.message and dev.fraction == 0.7
    resumed = await dev.resume()
    assert resumed.state is RunState.MINING and dev.fraction == 1.0
    assert json.loads(json.dumps(to_wire(dev.get_data())))["state"] == json.loads(json.dumps(to_wire(resumed)))["state"]


async def test_agent_curtail_goes_through_the_tuner_and_never_around_it() -> None:
    ctl = AgentControl(agent_on("s21", {"power_w": 3000}), "tuned")
    tuner = ctl.agent.tuner
    assert tuner is not None
    await ctl.curtail(fraction=0.6)
    assert tuner.curtail_scale == 0.6
    await ctl.sleep()
    assert tuner.status.state is TunerState.SLEEPING and ctl.agent.paused
    await ctl.curtail(fraction=0.8)
    assert tuner.status.state is not TunerState.SLEEPING and tuner.curtail_scale == 0.8 and not ctl.agent.paused
    with pytest.raises(UnsupportedControl, match="autotuner owns the chip clocks"):
        await ctl.execute(SetFrequency(-1, 400.0))
    await ctl.execute(SetTarget(profile="eco"))
    assert tuner.base_target.value == pytest.approx(0.7 * 3500, rel=0.01)
    with pytest.raises(InvalidCommand):
        await ctl.execute(SetTarget(profile="turbo"))


async def test_agent_without_a_tuner_scales_clocks_and_sets_frequency_directly() -> None:
    ctl = AgentControl(agent_on("s21"), "untuned")
    hw = ctl.agent.hardware
    limits = hw.limits()
    assert limits is not None
    await ctl.execute(SetFrequency(0, limits.freq_min_mhz + 50))
    freqs = [c.frequency_mhz for c in hw.telemetry().boards[0].chips]
    assert all(f == pytest.approx(limits.freq_min_mhz + 50) for f in freqs)
    with pytest.raises(InvalidCommand):
        await ctl.execute(SetFrequency(0, limits.freq_max_mhz * 10))
    await ctl.curtail(fraction=0.5)
    chip = hw.telemetry().boards[1].chips[0]
    assert chip.frequency_mhz == pytest.approx(max(limits.freq_min_mhz, limits.stock_freq_mhz * 0.5))
    await ctl.sleep()
    assert not any(b.enabled for b in hw.telemetry().boards)
    await ctl.resume()
    assert all(b.enabled for b in hw.telemetry().boards)
    with pytest.raises(UnsupportedControl):
        await ctl.execute(SetTarget(power_w=2000))


async def test_cpu_agent_refuses_what_it_cannot_do() -> None:
    ctl = AgentControl(agent_on("cpu"), "cpu")
    with pytest.raises(UnsupportedControl):
        await ctl.curtail(fraction=0.5)
    with pytest.raises(UnsupportedControl):
        await ctl.curtail(watts=100)  # no known full power
    assert (await ctl.sleep()).state is RunState.SLEEPING and ctl.agent.paused
    assert (await ctl.curtail(fraction=1.0)).state is RunState.MINING and not ctl.agent.paused


async def test_bus_edge_reports_refusals_instead_of_raising() -> None:
    dev = SimulatedFleetDevice("d1")
    bad = await dev.act("curtail", {"fraction": float("nan")})
    assert bad["ok"] is False and "fraction" in bad["error"]
    ok = await dev.act("curtail", {"fraction": 0})
    assert ok["ok"] and ok["state"] == "sleeping" and dev.status()["paused"]
    worker = FleetSimSite(1).workers[0]
    refused = await worker.act("set_pools", {"pools": [{"url": "stratum+tcp://a:1", "user": "u"}]})
    assert refused["ok"] is False and "cannot change pools" in refused["error"]


async def test_fleet_edge_energy_and_the_surface_give_the_same_result() -> None:
    """The same curtail through the surface, the fleet edge and the energy layer: same state, same clocks."""
    from openmos.energy.site import LocalLink, Site
    from openmos.fleet.workers.openmos import AgentWorker

    direct = AgentControl(agent_on("s21"), "direct")
    fleet = AgentWorker(agent_on("s21"), "fleet")
    energy = AgentControl(agent_on("s21"), "energy")
    site = Site(LocalLink([energy]))

    def clocks(ctl: AgentControl) -> list[float]:
        return sorted({c.frequency_mhz or 0.0 for b in ctl.agent.hardware.telemetry().boards for c in b.chips})

    for fraction, state in ((0.5, RunState.CURTAILED), (0.0, RunState.SLEEPING), (1.0, RunState.MINING)):
        ack = await direct.curtail(fraction=fraction)
        wire = await fleet.act("curtail", {"fraction": fraction})
        result = await site.set_fraction(fraction)
        assert ack.state is state and wire["state"] == state.value and result.acknowledged == 1
        assert direct.state is fleet.state is energy.state is state
        assert clocks(direct) == clocks(fleet) == clocks(energy)
        assert direct.agent.paused == fleet.agent.paused == energy.agent.paused == (fraction == 0.0)


async def test_a_site_slot_reads_its_sensors_once_per_physics_step_and_the_agent_samples_counters_only() -> None:
    """Thousands of agents in one process: a ``SlotHardware`` snapshot is taken once per physics step or control
    change (not once per reader), and the agent's once-a-second hashrate sample reads the hash counters alone
    (a whole snapshot only when the health model wants one)."""
    from openmos.testbed.site import SlotHardware

    site = FleetSimSite(2, counters=True)
    hw = SlotHardware(site, 0)
    first = hw.telemetry()
    assert hw.telemetry() is first  # nothing changed: the same readings
    await hw.set_fan_duty(60.0)
    after_control = hw.telemetry()
    assert after_control is not first and after_control.fans[0].duty_pct == pytest.approx(60.0)
    site.fleet.step(0.5)
    assert hw.telemetry() is not after_control  # a physics step: new readings
    assert hw.hash_count() == hw.telemetry().hashes == 0.0  # it has no hash counter

    snapshots = 0

    class Counting(SlotHardware):
        def telemetry(self) -> Any:
            nonlocal snapshots
            snapshots += 1
            return super().telemetry()

        def hash_count(self) -> float:
            return 7.0

    agent = MiningAgent(AgentConfig.from_dict({"groups": [{"name": "g", "pools": [
        {"url": "stratum+tcp://127.0.0.1:9", "user": "u"}]}]}), Counting(site, 1))
    snapshots = 0  # (building the agent reads one: its safety monitor looks for sensors)
    sampler = asyncio.create_task(agent._sample_loop())
    try:
        await wait_for(lambda: len(agent.hashrate._samples) >= 3, 60, "three hashrate samples")
    finally:
        await cancel_and_wait(sampler)
    assert snapshots == 1 and agent.maintenance.samples == 1  # the health model's first sample only
    assert [h for _, h in agent.hashrate._samples][1:] == [7.0] * (len(agent.hashrate._samples) - 1)
