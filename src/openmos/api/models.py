"""Request bodies of the REST API (pydantic; unknown fields are refused)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from openmos.control.commands import MAX_THS, MAX_WATTS, MIN_TARGET_THS, MIN_TARGET_W


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnerSetup(Body):
    user: str = Field(default="admin", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=10, max_length=256)


class Login(Body):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class NewPool(Body):
    url: str = Field(max_length=512, description="stratum+tcp://host:port or stratum+ssl://host:port")
    user: str = Field(min_length=1, max_length=256)
    password: str = Field(default="x", max_length=256)
    group: int = Field(default=0, ge=0, le=1000)


class PoolPatch(Body):
    enabled: bool | None = None
    priority: int | None = Field(default=None, ge=0, le=1000)


class PerformanceRequest(Body):
    power_w: float | None = Field(default=None, ge=MIN_TARGET_W, le=MAX_WATTS, allow_inf_nan=False)
    hashrate_ths: float | None = Field(default=None, ge=MIN_TARGET_THS, le=MAX_THS, allow_inf_nan=False)
    profile: Literal["eco", "balanced", "performance"] | None = None
    step_percent: float | None = Field(default=None, ge=-50, le=50, allow_inf_nan=False,
                                       description="relative step, e.g. -10")

    @model_validator(mode="after")
    def _exactly_one(self) -> PerformanceRequest:
        given = [x for x in (self.power_w, self.hashrate_ths, self.profile, self.step_percent) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of power_w, hashrate_ths, profile, step_percent")
        return self


class CurtailRequest(Body):
    fraction: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                   description="share of the target to run at (1 = full, 0 = sleep)")
    watts: float | None = Field(default=None, ge=0, le=MAX_WATTS, allow_inf_nan=False,
                                description="wall power to run at (0 = sleep)")

    @model_validator(mode="after")
    def _exactly_one(self) -> CurtailRequest:
        if (self.fraction is None) == (self.watts is None):
            raise ValueError("give exactly one of fraction or watts")
        return self


class PoolsReplace(Body):
    pools: list[NewPool] = Field(min_length=1, max_length=8)


class CoolingRequest(Body):
    mode: Literal["auto", "manual", "immersion", "hydro"] = "auto"
    duty_pct: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
