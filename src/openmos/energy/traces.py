"""Synthetic electricity price and hashprice traces for benchmarks and reports (documented, seeded).

Price model per 5-minute interval ($/kWh), shaped after ERCOT real-time prices:
- a daily shape: cheap nights (~0.6x), an afternoon/evening peak (~1.6x) around a base of $0.045;
- mean-reverting log noise (AR(1), phi 0.97, sigma 0.12 per step): hour-scale volatility;
- scarcity spikes: on average 0.3 per day, 10-60 minutes long, $0.3-3/kWh (the 4CP / summer-peak kind);
- negative-price hours on windy nights: about 3 % of night intervals at -$0.01 to -$0.03.
Hashprice: $45/PH/day with a slow random walk (sigma 1 % per day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class MarketTrace:
    step_s: float
    price_usd_per_kwh: NDArray[np.float64]
    hashprice_usd_per_ph_day: NDArray[np.float64]

    @property
    def steps(self) -> int:
        return len(self.price_usd_per_kwh)


def synthetic_market(days: int = 30, step_s: float = 300.0, seed: int = 0, base: float = 0.045,
                     spikes_per_day: float = 0.3, hashprice: float = 45.0) -> MarketTrace:
    rng = np.random.default_rng(seed)
    steps = int(days * 86400 / step_s)
    t = np.arange(steps) * step_s
    hour = (t / 3600.0) % 24
    shape = 1.0 + 0.6 * np.exp(-((hour - 18.0) ** 2) / 8.0) - 0.4 * np.exp(-((hour - 3.0) ** 2) / 6.0)
    noise = np.empty(steps)
    level = 0.0
    for i in range(steps):
        level = 0.97 * level + rng.normal(0.0, 0.12)
        noise[i] = level
    price = base * shape * np.exp(noise)
    n_spikes = rng.poisson(spikes_per_day * days)
    for _ in range(n_spikes):
        start = rng.integers(0, steps)
        length = max(1, int(rng.uniform(600, 3600) / step_s))
        price[start:start + length] = rng.uniform(0.3, 3.0)
    night = (hour < 6) & (rng.random(steps) < 0.03)
    price[night] = rng.uniform(-0.03, -0.01, night.sum())
    daily = 1.0 + np.cumsum(rng.normal(0.0, 0.01, days + 1))
    hp = hashprice * daily[(t // 86400).astype(int)]
    return MarketTrace(step_s, price, hp)
