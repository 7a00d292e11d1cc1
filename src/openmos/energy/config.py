"""``site.toml`` for ``mos energy run``: price source, hashprice, meter, cap, OpenADR VEN, fleet, rules.

Example::

    site = "north"                    # the fleet site whose devices energy commands
    interval_s = 300                  # optimiser decision interval
    hashprice_usd_per_ph_day = 45.0
    cap_w = 450000                    # optional metered site cap (needs [meter])

    [price]                           # exactly one of:
    fixed_usd_per_kwh = 0.05
    # tou = { "0" = 0.04, "7" = 0.09, "17" = 0.18, "21" = 0.09 }
    # csv = "prices.csv"              # unix_time,usd_per_kwh (a real-time feed: decided on the last price)

    [meter]                           # Modbus TCP site meter: float32 in two registers
    host = "10.0.0.5"
    port = 502
    address = 0                       # first of the two registers
    scale = 1.0                       # 1000 for a meter that reports kW

    [openadr]
    vtn_url = "https://vtn.example/OpenADR2/Simple/2.0b"
    ven_name = "openmos-north"

    [fleet]
    dir = "fleet"                     # from `mos fleet init`: command key, enrolled devices, CA
    connect = ["tls/10.0.0.2:7447"]
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openmos.base.files import read_toml
from openmos.energy.economics import FixedPrice, PriceFeed, PriceSource, TimeOfUse
from openmos.energy.modbus import Register
from openmos.energy.optimizer import DispatchRules


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has nan and inf


class PriceConfig(_Model):
    fixed_usd_per_kwh: float | None = Field(default=None, ge=-10, le=100, allow_inf_nan=False)
    tou: dict[str, float] | None = None
    csv: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PriceConfig:
        if sum(x is not None for x in (self.fixed_usd_per_kwh, self.tou, self.csv)) != 1:
            raise ValueError("give exactly one of fixed_usd_per_kwh, tou or csv")
        return self

    def source(self, base: Path) -> PriceSource:
        if self.fixed_usd_per_kwh is not None:
            return FixedPrice(self.fixed_usd_per_kwh)
        if self.tou is not None:
            try:
                return TimeOfUse({int(h): float(p) for h, p in self.tou.items()})
            except ValueError as exc:
                raise ValueError(f"price.tou: {exc}") from None
        assert self.csv is not None
        return PriceFeed.from_csv(base / self.csv)


class MeterConfig(_Model):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=502, ge=1, le=65535)
    address: int = Field(default=0, ge=0, le=65535, description="first of the two registers")
    scale: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    input: bool = False  # input registers instead of holding registers
    device_id: int = Field(default=1, ge=0, le=247)

    @property
    def reg(self) -> Register:
        return Register(self.address, "input" if self.input else "holding", self.scale)


class OpenAdrConfig(_Model):
    vtn_url: str = Field(min_length=8, max_length=512)
    ven_name: str = Field(default="openmos-site", min_length=1, max_length=64)


class FleetLinkConfig(_Model):
    dir: str = Field(description="fleet directory from `mos fleet init`")
    connect: list[str] = Field(min_length=1, max_length=16)
    tls: bool = True


class RulesConfig(_Model):
    min_on_s: float = Field(default=1800.0, ge=0, le=86400)
    min_off_s: float = Field(default=1800.0, ge=0, le=86400)
    ramp_w_per_s: float = Field(default=50.0, gt=0, le=1e6)
    wear_cost_usd: float = Field(default=0.20, ge=0, le=1000)

    def rules(self) -> DispatchRules:
        return DispatchRules(self.min_on_s, self.min_off_s, self.ramp_w_per_s, self.wear_cost_usd)


class SiteConfig(_Model):
    site: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    interval_s: float = Field(default=300.0, ge=5, le=86400)
    hashprice_usd_per_ph_day: float = Field(gt=0, le=10_000, allow_inf_nan=False)
    assumed_j_per_th: float = Field(default=20.0, gt=1, le=1000)
    cap_w: float | None = Field(default=None, gt=0, le=1e10, allow_inf_nan=False)
    cap_interval_s: float = Field(default=2.0, ge=0.2, le=600)
    price: PriceConfig
    meter: MeterConfig | None = None
    openadr: OpenAdrConfig | None = None
    fleet: FleetLinkConfig
    rules: RulesConfig = Field(default_factory=RulesConfig)

    @model_validator(mode="after")
    def _cap_needs_meter(self) -> SiteConfig:
        if self.cap_w is not None and self.meter is None:
            raise ValueError("cap_w needs a [meter] to measure the site against")
        return self

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        try:
            data = read_toml(path)
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path}: {problems}") from None
