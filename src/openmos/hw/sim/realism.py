"""How hard the simulator is: which non-ideal effects run, the inlet-air curve, ageing and fault rates.

The default is the hard simulator: limits fall with temperature, PLL grid and supply steps, settling,
a biased and lagging power meter, PSU efficiency varying with load and temperature, supply-path voltage drop.
Ageing and random faults are off by default (deterministic benchmarks); switch them on with a speed-up so a
simulated day can age a unit by a year. ``Realism.ideal()`` is the old, kind simulator (for comparisons).
All of it is modelled: every number is an assumption [A] or derived from public facts in models.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from openmos.hw.sim.models import MinerModel

SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(frozen=True)
class InletCurve:
    """Inlet air following a day and a season: mean + season cos(day of year) + day cos(hour)  [A]."""

    mean_c: float = 25.0
    day_amplitude_c: float = 5.0  # half the day-night swing
    season_amplitude_c: float = 0.0  # half the summer-winter swing
    start_day: float = 200.0  # day of year at t = 0 (200: mid July, the warm peak)
    start_hour: float = 0.0
    peak_hour: float = 15.0

    def at(self, t_s: float) -> float:
        hours = self.start_hour + t_s / 3600.0
        day = self.start_day + hours / 24.0
        season = self.season_amplitude_c * math.cos(2 * math.pi * (day - 200.0) / 365.0)
        daily = self.day_amplitude_c * math.cos(2 * math.pi * (hours - self.peak_hour) / 24.0)
        return self.mean_c + season + daily


@dataclass(frozen=True)
class AgeingRates:
    """Per year of operation at a 70 C junction; Arrhenius-accelerated with the chip's temperature  [A]."""

    k_loss: float = 0.03  # critical-frequency constant lost per year
    g_gain: float = 0.15  # leakage gained per year
    rth_gain: float = 0.10  # thermal resistance gained per year (paste and solder degradation)
    activation_ev: float = 0.6


@dataclass(frozen=True)
class FaultRates:
    """Sudden faults per unit-year at a 70 C junction (chip death Arrhenius-accelerated)  [A]."""

    chip_death: float = 0.003  # per chip
    domain_drop: float = 0.01  # per board: a voltage domain's chips stop answering
    fan_wear: float = 0.10  # per fan: the bearing starts to wear, losing speed over ``fan_wear_days``
    sensor_stuck: float = 0.02  # per temperature sensor
    fan_wear_days: float = 30.0


@dataclass(frozen=True)
class Realism:
    temp_limits: bool = True  # critical frequency falls with die temperature
    pll_grid: bool = True  # frequencies snap to what the PLL can make, voltages to the supply's steps
    settling: bool = True  # PLL ramp, supply slew, power-meter lag
    meter_errors: bool = True  # power reading offset, gain error, noise, PMBus LINEAR11 quantisation
    psu_curve: bool = True  # PSU efficiency varies with load and inlet temperature
    supply_drop: bool = True  # V_string = V_set - R I on the supply path
    ageing_speedup: float = 0.0  # 0: no ageing; 1: real time; 365: a simulated day ages a year
    fault_speedup: float = 0.0  # 0: no random faults (injected ones still happen)
    ageing: AgeingRates = AgeingRates()
    faults: FaultRates = FaultRates()
    inlet: InletCurve | None = None  # None: constant inlet (set by hand)

    @classmethod
    def ideal(cls) -> Realism:
        return cls(False, False, False, False, False, False)

    def apply(self, model: MinerModel) -> MinerModel:
        """The model with the coefficients of switched-off effects zeroed."""
        chip = model.chip if self.temp_limits else dataclasses.replace(model.chip, fcrit_temp_coeff=0.0)
        return dataclasses.replace(
            model, chip=chip,
            psu_curve=model.psu_curve if self.psu_curve else 0.0,
            psu_temp_coeff=model.psu_temp_coeff if self.psu_curve else 0.0,
            board_resistance_ohm=model.board_resistance_ohm if self.supply_drop else 0.0)
