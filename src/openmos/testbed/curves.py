"""Efficiency curves as a tuner measures them on simulated hardware (for reports and benchmarks).

A real ``Autotuner`` tunes a simulated unit on a stepped clock; its ``efficiency_curve`` (learned from its
own sweeps and measurements, never from the simulator's hidden parameters) is resampled up to nameplate
power exactly as the energy service does with ``member_curves``.
"""

from __future__ import annotations

import asyncio

import numpy as np
from numpy.typing import NDArray

from openmos.control import CurvePoint
from openmos.energy.service import member_curves
from openmos.energy.site import SiteMember
from openmos.hw.sim import SimClock, get_model
from openmos.hw.sim.backend import SimHardware
from openmos.tuning import Autotuner, CoolingConfig, PerformanceTarget


async def tuned_curve(model: str, seed: int = 0, minutes: float = 45.0
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(power W, hashrate TH/s) at the energy layer's curve points, from a tuner run on a simulated unit."""
    clock = SimClock(speed=0)
    hw = SimHardware(model, seed=seed, clock=clock)
    nameplate = get_model(model).nameplate_w
    tuner = Autotuner(hw, PerformanceTarget.power(0.85 * nameplate), clock=clock, cooling=CoolingConfig())
    await tuner.run_for(minutes * 60)
    points = tuple(CurvePoint(p.power_w, p.hashrate_ths, p.source) for p in tuner.efficiency_curve(12))
    curves, sources = member_curves([SiteMember(model, nameplate, points)])
    if sources == ["assumed"]:
        raise RuntimeError(f"the tuner learned no curve for {model} in {minutes:g} simulated minutes")
    return np.asarray(curves.power_w[0]), np.asarray(curves.hashrate_ths[0])


def tuned_curve_sync(model: str, seed: int = 0, minutes: float = 45.0
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    return asyncio.run(tuned_curve(model, seed, minutes))
