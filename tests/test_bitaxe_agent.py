"""A Bitaxe (emulated over ptys) under the whole agent: the safety monitor protects it, the device APIs show it
like any other device, the autotuner gets the chip's real PLL grid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np
from pyasic.rpc.cgminer import CGMinerRPCAPI

from openmos.api.service import DeviceApis
from openmos.emulator.devices import EmulatedBitaxe
from openmos.hw.bm13xx.backend import Bm13xxHardware
from openmos.hw.bm13xx.bm1370 import BM1370
from openmos.hw.factory import create_hardware
from openmos.miner import MiningAgent
from openmos.miner.safety import SafetyMonitor, SafetyOptions
from openmos.pool import LocalPool
from openmos.tuning.planning import snap_down

from helpers import cpu_agent, easy_pool_settings, running, wait_for

SHIFT = 20
FAST = f"diff1_shift={SHIFT}&ticket=4&ramp_step=0.005&job_interval=1"
# The chip reports nonces of difficulty >= 4 * 2**-SHIFT (its ticket); half of them are shares at this pool
# difficulty, so the emulated 40 kH/s makes a share about every second (2**-14 took ~7 s per share).
SHARE_DIFFICULTY = 2.0 ** -17


@dataclass
class Rig:
    emu: EmulatedBitaxe
    hw: Bm13xxHardware
    agent: MiningAgent
    pool: LocalPool

    @property
    def safety(self) -> SafetyMonitor:
        assert self.agent.safety is not None, "no safety monitor on a board with sensors"
        return self.agent.safety


@asynccontextmanager
async def bitaxe_rig(performance: dict[str, Any] | None = None, api: dict[str, Any] | None = None
                     ) -> AsyncIterator[Rig]:
    emu = EmulatedBitaxe("bitaxe-gamma", hashrate=40_000, diff1_shift=SHIFT)
    ctl, data = await emu.start()
    hw = create_hardware(f"bitaxe:{ctl},{data}?{FAST}")
    assert isinstance(hw, Bm13xxHardware)
    pool = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFFICULTY))
    try:
        async with running(pool):
            agent = cpu_agent(pool.url, user="rig.bitaxe", hardware=hw, retry_delay_s=0.2,
                              sections={"performance": performance or {}, "api": api or {}})
            async with running(agent):
                yield Rig(emu, hw, agent, pool)
    finally:
        await emu.stop()


def on_grid(mhz: float) -> bool:
    return min(abs(mhz - f) for f in BM1370.grid_mhz) < 1e-5


def fast_safety(rig: Rig, restart_after_s: float | None = None) -> None:
    rig.safety.options = SafetyOptions(period_s=0.2, sensor_timeout_s=5.0, fan_fail_checks=3)
    rig.safety.guard.config = replace(rig.safety.cooling, restart_after_s=restart_after_s)


async def test_stuck_fan_powers_the_bitaxe_off_and_it_comes_back_after_repair() -> None:
    async with bitaxe_rig() as rig:
        fast_safety(rig, restart_after_s=1.0)
        emu = rig.emu
        await wait_for(lambda: len(rig.pool.accepted) >= 1, 120, "a share before the fault")
        emu.emc.stuck_fan = True
        await wait_for(lambda: rig.safety.tripped is not None, 30, "the safety monitor to trip")
        assert "fan" in (rig.safety.tripped or "")
        await wait_for(lambda: not emu.vr.on and not emu.reset_released, 60, "regulator off, chip in reset")
        assert rig.agent.safety_hold and not rig.hw.telemetry().boards[0].enabled
        assert rig.hw.stats.emergency_stops == 0  # the safety monitor's power-off, not the regulator-fault path
        assert rig.hw.telemetry().fans, "sensors are still read while the board is off"
        # Repaired: cools down, restarts, re-enumerates and mines again at the frequency it had.
        emu.emc.stuck_fan = False
        await wait_for(lambda: rig.safety.tripped is None, 60, "the restart")
        await wait_for(lambda: emu.vr.on and emu.reset_released and emu.chain.chips[0].mhz > 400, 30,
                       "the chip powered and ramped again")
        n = len(rig.pool.accepted)
        await wait_for(lambda: len(rig.pool.accepted) > n, 120, "shares after the restart")
        assert any(d.startswith("restart") for d in rig.safety.decisions)


async def test_over_temperature_throttles_on_the_grid_then_shuts_down() -> None:
    async with bitaxe_rig() as rig:
        fast_safety(rig)
        emu = rig.emu
        await wait_for(lambda: rig.safety.hottest_c is not None, 30, "a die temperature")
        # Hot (>= 75 C) but not dangerous: one DPS step down, on the PLL grid.
        assert emu.chain.chips[0].mhz == 525.0
        emu.thermal.ambient_c = 77.0
        await wait_for(lambda: emu.chain.chips[0].mhz < 525.0, 60, "a thermal throttle")
        assert on_grid(emu.chain.chips[0].mhz)
        assert rig.safety.tripped is None and emu.vr.on
        assert any(d.startswith("hot") for d in rig.safety.decisions)
        # Dangerous (>= 85 C): safe power-off.
        emu.thermal.ambient_c = 95.0
        await wait_for(lambda: rig.safety.tripped is not None, 60, "the over-temperature shutdown")
        assert "dangerous" in (rig.safety.tripped or "")
        await wait_for(lambda: not emu.vr.on and not emu.reset_released, 60, "regulator off, chip in reset")
        assert emu.emc.duty_pct == 100.0


async def test_regulator_fault_under_the_agent_powers_off_within_a_second() -> None:
    async with bitaxe_rig() as rig:
        fast_safety(rig)
        await wait_for(lambda: len(rig.pool.accepted) >= 1, 120, "a share")
        # "Within a second" is a property of the driver, not of this (possibly loaded) machine's clock: it reads
        # the regulator's STATUS_WORD every poll_s and must cut the power at the first read that reports the
        # fault. So: a poll period well under a second, and exactly one fault report before the output went off.
        assert rig.hw.settings.poll_s <= 0.5
        rig.emu.inject_vr_fault()
        await wait_for(lambda: bool(rig.emu.events.regulator_off_at), 60, "the regulator off")
        assert rig.emu.vr.fault_reports == 1, f"{rig.emu.vr.fault_reports} fault reports before the power-off"
        assert not rig.emu.reset_released and not rig.hw.telemetry().boards[0].enabled
        assert rig.hw.stats.emergency_stops == 1 and "over-current" in rig.hw.stats.last_fault


async def test_device_apis_show_the_bitaxe() -> None:
    api = {"cgminer_host": "127.0.0.1", "cgminer_port": 0, "rest_port": 0, "cgminer_allow": []}
    async with bitaxe_rig(api=api) as rig:
        apis = DeviceApis(rig.agent)
        await apis.start()
        try:
            await wait_for(lambda: len(rig.pool.accepted) >= 1 and rig.agent.hashrate.rate(60) > 0, 120,
                           "a share and a hashrate sample")
            rpc = CGMinerRPCAPI("127.0.0.1", port=apis.cgminer.port)
            devs, stats, summary = await rpc.devs(), await rpc.stats(), await rpc.summary()
            assert len(devs["DEVS"]) == 1 and devs["DEVS"][0]["Chips"] == 1
            assert summary["SUMMARY"][0]["Hashrate Source"] != "modelled"
            assert stats["STATS"][1]["fan_num"] == 1
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{apis.rest_port}") as client:
                status = (await client.get("/api/v1/status")).json()
                boards = (await client.get("/api/v1/hashboards")).json()
                chips = (await client.get("/api/v1/hashboards/0/chips")).json()
            assert "BM1370" in str(status["device"]) and status["device"]["hashrate_source"] != "modelled"
            assert len(boards) == 1 and boards[0]["chips"] == 1
            assert chips[0]["frequency_mhz"] == 525.0 and chips[0]["nonces"] >= 1
            assert str(boards[0]).count("temp") >= 1
        finally:
            await apis.stop()


def test_limits_give_the_tuner_the_pll_grid_and_regulator_steps() -> None:
    hw = create_hardware("bitaxe:/dev/a,/dev/b")
    assert isinstance(hw, Bm13xxHardware)
    lim = hw.limits()
    assert lim.freq_grid_mhz == BM1370.grid_mhz and len(lim.freq_grid_mhz) > 100
    assert lim.stock_freq_mhz in lim.freq_grid_mhz
    # Whatever the tuner plans lands on a frequency the PLL makes, and below what it asked for.
    asked = np.array([[401.0, 533.3, 610.0]])
    snapped = snap_down(lim, asked)
    assert all(on_grid(f) for f in snapped.ravel()) and (snapped <= asked).all()
    assert (lim.volt_min, lim.volt_max) == BM1370.volt_range and lim.volt_step > 0
