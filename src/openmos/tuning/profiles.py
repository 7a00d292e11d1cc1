"""Tuned profiles per target, and the learned chip model, stored as JSON (atomically) for reuse at boot."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openmos.base.files import atomic_write

log = logging.getLogger(__name__)


@dataclass
class TunedProfile:
    target_key: str
    board_voltage: list[float]
    freq_mhz: list[list[float]]  # per board, per chip (0 = chip disabled)
    measured_power_w: float
    measured_hashrate_ths: float
    created: float = field(default_factory=time.time)

    @property
    def j_per_th(self) -> float:
        return self.measured_power_w / self.measured_hashrate_ths if self.measured_hashrate_ths else float("inf")


@dataclass
class ChipModel:
    """What tuning learned about this unit's chips, enough to plan any target without sweeping again."""

    sweep_voltages: list[float]  # board voltages the sweeps ran at
    fmax_mhz: list[list[list[float]]]  # [sweep][board][chip]: highest clean frequency (0 = dead)
    power_coeffs: list[float]  # wall W = a * sum_b V_b^2 F_b + b * sum_b V_b^2 + c  (F_b: sum of MHz)
    dead: list[list[int]] = field(default_factory=list)  # [board, chip] pairs
    margin: list[list[float]] = field(default_factory=list)  # per-chip trim (fraction below fmax)


class ProfileStore:
    """A JSON file holding profiles by target key and the chip model. Corrupt files are reported, not fatal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = {"profiles": {}, "chip_model": None}
        if path.exists():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict) and isinstance(loaded.get("profiles"), dict):
                    self._data = loaded
                else:
                    raise ValueError("unexpected structure")
            except (OSError, ValueError) as exc:
                log.error("profile store %s is unreadable (%s); starting empty, the file is kept as .bad", path, exc)
                path.replace(path.with_suffix(path.suffix + ".bad"))

    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self._data, indent=1).encode())

    def get(self, target_key: str) -> TunedProfile | None:
        raw = self._data["profiles"].get(target_key)
        return TunedProfile(**raw) if raw else None

    def put(self, profile: TunedProfile) -> None:
        self._data["profiles"][profile.target_key] = asdict(profile)
        self._save()

    def profiles(self) -> list[TunedProfile]:
        return [TunedProfile(**raw) for raw in self._data["profiles"].values()]

    def chip_model(self) -> ChipModel | None:
        raw = self._data.get("chip_model")
        return ChipModel(**raw) if raw else None

    def put_chip_model(self, model: ChipModel) -> None:
        self._data["chip_model"] = asdict(model)
        self._save()
