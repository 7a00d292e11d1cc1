"""One reading of every miner's telemetry as arrays (miners first): what the health model consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.hw.interface import HardwareTelemetry

Array = NDArray[np.float64]
HASHES_PER_DIFF1 = 2.0**32


@dataclass(frozen=True)
class Snapshot:
    """Counters are cumulative; any reading a miner lacks is NaN. Shapes: chips (M, B, C), sensors (M, B, S),
    boards (M, B), fans (M, F), miners (M,)."""

    time_s: float
    nonces: Array  # valid nonces per chip
    errors: Array  # hardware errors per chip
    expected: Array  # nonces a healthy chip would have reported (cumulative), from hashes done
    chip_on: NDArray[np.bool_]
    chip_temps: Array  # chip-temperature sensors per board
    vr_temp: Array
    vr_volts: Array
    v_set: Array
    fan_rpm: Array
    input_w: Array
    psu_out_w: Array
    psu_out_v: Array

    @property
    def shape(self) -> tuple[int, int, int]:
        m, b, c = self.nonces.shape
        return m, b, c


def _num(x: float | int | None) -> float:
    """A finite float or NaN: hostile or missing readings never reach the model as numbers."""
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return v if math.isfinite(v) and abs(v) < 1e15 else math.nan


def from_telemetry(tel: HardwareTelemetry, time_s: float, max_chips: int = 512, max_sensors: int = 16,
                   max_boards: int = 16, max_fans: int = 16) -> Snapshot:
    """One miner's telemetry as a (1, ...) snapshot; ragged boards are padded with NaN, sizes are bounded."""
    boards = tel.boards[:max_boards]
    nb = max(len(boards), 1)
    nc = max((min(len(b.chips), max_chips) for b in boards), default=1) or 1
    ns = max((min(len(b.chip_temperatures_c or b.temperatures_c), max_sensors) for b in boards), default=1) or 1
    nonces, errors, expected = (np.full((1, nb, nc), np.nan) for _ in range(3))
    chip_on = np.zeros((1, nb, nc), dtype=bool)
    temps = np.full((1, nb, ns), np.nan)
    vr_t, vr_v, v_set = (np.full((1, nb), np.nan) for _ in range(3))
    for i, b in enumerate(boards):
        for j, c in enumerate(b.chips[:max_chips]):
            nonces[0, i, j] = _num(c.nonces)
            errors[0, i, j] = _num(c.errors)
            ticket = _num(c.ticket_difficulty)
            hashes = _num(c.hashes)
            expected[0, i, j] = hashes / (HASHES_PER_DIFF1 * ticket) if ticket > 0 else math.nan
            chip_on[0, i, j] = bool(c.enabled and b.enabled and (_num(c.frequency_mhz) or 0) > 0)
        for j, t in enumerate((b.chip_temperatures_c or b.temperatures_c)[:max_sensors]):
            temps[0, i, j] = _num(t)
        vr_t[0, i] = _num(b.vr_temperature_c)
        vr_v[0, i] = _num(b.vr_voltage_v)
        v_set[0, i] = _num(b.voltage_v)
    fans = tel.fans[:max_fans]
    rpm = np.array([[_num(f.rpm) for f in fans]]) if fans else np.full((1, 1), np.nan)
    return Snapshot(float(time_s), nonces, errors, expected, chip_on, temps, vr_t, vr_v, v_set, rpm,
                    np.array([_num(tel.input_power_w)]), np.array([_num(tel.psu_output_w)]),
                    np.array([_num(tel.psu_output_v)]))
