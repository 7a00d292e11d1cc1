"""Hashprice, break-even power price and electricity price sources."""

from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

BLOCK_SUBSIDY_BTC = 3.125


def hashprice_usd_per_ph_day(btc_price_usd: float, difficulty: float, fees_btc_per_block: float = 0.0,
                             subsidy_btc: float = BLOCK_SUBSIDY_BTC) -> float:
    """Expected revenue of 1 PH/s for a day: 86400 * 1e15 * (subsidy + fees) * price / (difficulty * 2^32)."""
    if difficulty <= 0 or btc_price_usd < 0:
        raise ValueError("difficulty must be positive and the BTC price non-negative")
    return 86400 * 1e15 * (subsidy_btc + fees_btc_per_block) * btc_price_usd / (difficulty * 2**32)


def revenue_usd_per_th_hour(hashprice_ph_day: float) -> float:
    return hashprice_ph_day / 1000.0 / 24.0


def break_even_usd_per_kwh(hashprice_ph_day: float, j_per_th: float) -> float:
    """Electricity price at which a machine of this efficiency stops earning: HP / (24 * J/TH)."""
    return hashprice_ph_day / (24.0 * j_per_th)


class PriceSource(Protocol):
    @property
    def published_ahead(self) -> bool:
        """True for tariffs known in advance; False for real-time prices known only afterwards."""
        ...

    def price_usd_per_kwh(self, when: float) -> float:
        """Price in force at unix time ``when``."""
        ...


@dataclass(frozen=True)
class FixedPrice:
    usd_per_kwh: float
    published_ahead: bool = True

    def price_usd_per_kwh(self, when: float) -> float:
        return self.usd_per_kwh


MIN_PRICE_USD_PER_KWH = -10.0  # negative prices happen (paid to consume); beyond these bounds a price is garbage
MAX_PRICE_USD_PER_KWH = 100.0


def check_price(usd_per_kwh: float) -> float:
    """A price as given, or ValueError when it is NaN, infinite or outside the plausible bounds (a NaN price made
    every comparison in the optimiser false)."""
    if not math.isfinite(usd_per_kwh) or not MIN_PRICE_USD_PER_KWH <= usd_per_kwh <= MAX_PRICE_USD_PER_KWH:
        raise ValueError(f"electricity prices must be finite, from {MIN_PRICE_USD_PER_KWH:g} to "
                         f"{MAX_PRICE_USD_PER_KWH:g} $/kWh")
    return usd_per_kwh


@dataclass(frozen=True)
class TimeOfUse:
    """Hour-of-day tariff: ``{start_hour: price}``, e.g. {0: 0.04, 7: 0.09, 17: 0.18, 21: 0.09} (UTC hours)."""

    schedule: dict[int, float]
    published_ahead: bool = True

    def __post_init__(self) -> None:
        if not self.schedule or any(not 0 <= h < 24 for h in self.schedule):
            raise ValueError("time-of-use schedule needs start hours within 0..23")
        for price in self.schedule.values():
            check_price(price)

    def price_usd_per_kwh(self, when: float) -> float:
        hour = int(when // 3600) % 24
        starts = sorted(self.schedule)
        idx = bisect.bisect_right(starts, hour) - 1
        return self.schedule[starts[idx]]


@dataclass
class PriceFeed:
    """A price series (real-time feed or CSV of ``unix_time,usd_per_kwh``); the latest price at or before."""

    times: list[float] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    published_ahead: bool = False  # a real-time price is known only once its interval has run

    @classmethod
    def from_csv(cls, path: Path) -> PriceFeed:
        feed = cls()
        with path.open() as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or row[0].startswith("#") or row[0] == "time":
                    continue
                try:
                    feed.push(float(row[0]), float(row[1]))
                except (ValueError, IndexError):
                    raise ValueError(f"{path}:{n}: expected 'unix_time,usd_per_kwh', got {row!r}") from None
        return feed

    def push(self, when: float, usd_per_kwh: float) -> None:
        check_price(usd_per_kwh)
        if not math.isfinite(when):
            raise ValueError("price feed times must be finite")
        if self.times and when < self.times[-1]:
            raise ValueError("price feed times must not go backwards")
        self.times.append(when)
        self.prices.append(usd_per_kwh)

    def price_usd_per_kwh(self, when: float) -> float:
        idx = bisect.bisect_right(self.times, when) - 1
        if idx < 0:
            raise LookupError("no price known yet for that time")
        return self.prices[idx]
