"""Persistence: the learned chip model and per-target profiles to and from the profile store.

A reboot, or a new target, then needs no new sweep: the chip model plans any target, and a profile that
verifies (measured power within 2 % of what it drew when saved) is applied as it is. The efficiency curve
shows both: what the chip model predicts and what saved profiles measured.
"""

from __future__ import annotations

import numpy as np

from openmos.tuning.planning import Knowledge, PowerModel
from openmos.tuning.profiles import ChipModel, ProfileStore, TunedProfile
from openmos.tuning.state import CurvePoint

PROFILE_VERIFY_TOLERANCE = 0.02


def save_knowledge(store: ProfileStore, knowledge: Knowledge) -> None:
    pm = knowledge.power_model
    if pm is None:
        return
    store.put_chip_model(ChipModel(
        [float(v) for v in knowledge.sweep_voltages], [f.round(2).tolist() for f in knowledge.sweep_fmax],
        [pm.a, pm.b, pm.c], [[int(b), int(c)] for b, c in np.argwhere(knowledge.dead)],
        knowledge.margin.round(4).tolist()))


def load_knowledge(store: ProfileStore, knowledge: Knowledge) -> bool:
    """Fill ``knowledge`` from the store; False if it holds no chip model (or one for another shape)."""
    model = store.chip_model()
    if model is None:
        return False
    shape = knowledge.margin.shape
    fmax = [np.array(f, dtype=np.float64) for f in model.fmax_mhz]
    if not fmax or any(f.shape != shape for f in fmax) or len(fmax) != len(model.sweep_voltages):
        return False
    knowledge.sweep_voltages = list(model.sweep_voltages)
    knowledge.sweep_fmax = fmax
    knowledge.power_model = PowerModel(*model.power_coeffs)
    for b, c in model.dead:
        if 0 <= b < shape[0] and 0 <= c < shape[1]:
            knowledge.dead[b, c] = True
    if model.margin and np.shape(model.margin) == shape:
        knowledge.margin = np.array(model.margin, dtype=np.float64)
    return True


def make_profile(target_key: str, v_board: np.ndarray, freq: np.ndarray, power_w: float,
                 hashrate_ths: float) -> TunedProfile:
    return TunedProfile(target_key, [float(v) for v in v_board], freq.round(2).tolist(), power_w, hashrate_ths)


def profile_verified(profile: TunedProfile, measured_power_w: float) -> bool:
    return profile.measured_power_w > 0 and \
        abs(measured_power_w / profile.measured_power_w - 1) < PROFILE_VERIFY_TOLERANCE


def efficiency_curve(knowledge: Knowledge, store: ProfileStore | None, nameplate_w: float,
                     points: int = 10) -> list[CurvePoint]:
    """Power, hashrate and J/TH from 50 % to 110 % of nameplate power (6-20 points, "estimated" from the chip
    model) and every saved profile ("measured"), by power."""
    points = min(max(points, 6), 20)
    out: list[CurvePoint] = []
    if knowledge.ready:
        stock = nameplate_w or knowledge.at(knowledge.limits.stock_voltage).predicted_power_w
        for frac in np.linspace(0.5, 1.1, points):
            p = knowledge.plan("power", float(frac * stock))
            if p.predicted_ths > 0:
                out.append(CurvePoint(p.predicted_power_w, p.predicted_ths, p.predicted_power_w / p.predicted_ths,
                                      "estimated"))
    if store is not None:
        out += [CurvePoint(pr.measured_power_w, pr.measured_hashrate_ths, pr.j_per_th, "measured")
                for pr in store.profiles() if pr.measured_hashrate_ths > 0]
    return sorted(out, key=lambda c: c.power_w)
