"""Agent configuration: validated with pydantic, stored as TOML, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from openmos.base.files import atomic_write, read_toml
from openmos.base.net import AllowList
from openmos.control.commands import MAX_THS, MAX_WATTS, MIN_TARGET_THS, MIN_TARGET_W
from openmos.hw.cpu import cpu_workers
from openmos.hw.sim.models import get_model
from openmos.stratum.v2.url import parse_pool_url

MAX_GROUPS = 32  # pool groups mine at once (each with its pool and a hot standby connected)
MAX_POOLS_PER_GROUP = 32


# Stratum V1 requests that create or change the session's state: never usable as a liveness probe.
SESSION_METHODS = frozenset({"mining.subscribe", "mining.authorize", "mining.submit", "mining.configure",
                             "mining.suggest_difficulty", "mining.suggest_target", "mining.multi_version"})


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says where and why."""


class _Model(BaseModel):
    # No float in a config may be NaN or infinite (TOML's nan/inf, JSON's 1e400): bounds like ``gt=0`` let inf
    # through, and an inf target saved over REST stopped the agent from starting again.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def describe(exc: ValidationError) -> str:
    """One line per problem: 'field: message'."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())


class PoolEndpoint(_Model):
    url: str = Field(description="stratum+tcp://host:port, stratum+ssl://host:port or "
                              "stratum2+tcp://host:port/AUTHORITY_PUBKEY (Stratum V2)")
    user: str = Field(min_length=1, max_length=256, description="worker name, usually wallet.worker")
    password: str = Field(default="x", max_length=256)
    tls_ca_file: str | None = Field(default=None, description="PEM CA bundle for stratum+ssl (default: system)")

    @classmethod
    def checked(cls, url: str, user: str, password: str = "x") -> PoolEndpoint:
        """Build from untrusted input; ConfigError says what is wrong."""
        try:
            return cls(url=url, user=user, password=password)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return str(parse_pool_url(value))  # V1 or V2, stored normalised; ValueError says what is wrong

    @field_validator("user", "password")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\x00"):
            raise ValueError("must not contain line breaks or NUL bytes")
        return value


class PoolGroupConfig(_Model):
    name: str = Field(default="default", min_length=1, max_length=64)
    quota: int = Field(default=1, ge=1, le=1000, description="share of work relative to other groups")
    pools: list[PoolEndpoint] = Field(min_length=1, max_length=MAX_POOLS_PER_GROUP,
                                      description="in priority order: first is primary")


class StratumTuning(_Model):
    response_timeout_s: float = Field(default=10.0, gt=0, le=300)
    stall_timeout_s: float = Field(default=180.0, gt=0, le=3600, description="no message for this long: failover")
    stall_suspect_s: float = Field(
        default=1.0, ge=0, le=600, allow_inf_nan=False,
        description="a share unanswered and nothing received from the pool for this long (at least 3x the "
                    "pool's recent slowest answer): the work moves to the hot standby at once; the session is "
                    "kept until stall_timeout_s / response_timeout_s confirm it dead (0: off)")
    stall_probe_s: float = Field(
        default=2.0, ge=0, le=3600, allow_inf_nan=False,
        description="the pool in use silent this long with no request outstanding (and a hot standby ready): "
                    "send it a liveness probe, at most one per this interval; unanswered past stall_suspect_s "
                    "it means a stall, as an unanswered share does. Stratum V1 only (V2 has no request "
                    "that is always answered and free of side effects). Only on a pool that answers the probe "
                    "(learnt per session) (0: off)")
    stall_probe_method: str = Field(
        default="mining.extranonce.subscribe", pattern=r"^[A-Za-z0-9_.]{1,64}$",
        description="the request sent as liveness probe (no params): one without side effects that this pool "
                    "answers; the default is the request every session already sends once")
    hot_standby: bool = Field(default=True, description="keep the next pool of the group connected and "
                                                        "authorised, ready to take the work at once")
    fallback_interval_s: float = Field(default=15.0, gt=0, le=3600,
                                       description="how often to check whether a better pool is back")
    retry_delay_s: float = Field(default=2.0, gt=0, le=300, description="first back-off after a pool failed")
    max_backoff_s: float = Field(default=600.0, gt=0, le=86400, description="back-off doubles up to this")
    version_rolling: bool = True
    allowed_reconnect_hosts: list[str] = Field(default_factory=list)
    suggest_difficulty: float | None = Field(
        default=None, ge=0, le=1e18, allow_inf_nan=False,
        description="start difficulty asked of the pool (mining.suggest_difficulty); unset: derived from the "
                    "hardware's hashrate (a share every ~5 s); 0: do not ask")
    difficulty_suffix: Literal["none", "user", "password"] = Field(
        default="none", description="also offer the suggested difficulty as worker+DIFF (user) or d=DIFF "
                                    "(password), for pools that read it there instead")
    max_share_rate: float = Field(default=5.0, gt=0, le=1000, allow_inf_nan=False,
                                  description="governor: mine at a difficulty that keeps shares/s at most this")
    slow_share_hours: float = Field(default=24.0, gt=0, le=1e6, allow_inf_nan=False,
                                    description="a pool difficulty meaning one share per more than this on the "
                                                "hardware is used but warned about and counted")
    max_bad_messages: int = Field(default=20, ge=1, le=100_000,
                                  description="this many bad pool messages within a minute: failover")
    job_timeout_s: float = Field(default=30.0, gt=0, le=3600,
                                 description="a pool that sends no valid job this long after connecting fails over")
    max_reject_ratio: float = Field(default=0.5, gt=0, le=1,
                                    description="rejected/(accepted+rejected) above this (after "
                                                "reject_ratio_min_shares answers): failover")
    reject_ratio_min_shares: int = Field(default=20, ge=1, le=100_000,
                                         description="answered shares of a session before max_reject_ratio is "
                                                     "judged (fewer: a few unlucky stale shares fail over)")

    @field_validator("stall_probe_method")
    @classmethod
    def _probe_has_no_side_effects(cls, method: str) -> str:
        # Sent with no params every stall_probe_s: a request that changes the session (a pool answering
        # mining.subscribe with a new extranonce1 every 2 s would have every share rejected) cannot be a probe.
        if method in SESSION_METHODS:
            raise ValueError(f"{method} changes the pool session; a liveness probe must not "
                             "(e.g. mining.extranonce.subscribe or mining.get_transactions)")
        return method


class PerformanceConfig(_Model):
    """Autotuning target and cooling. Only for hardware with tunable clocks (not the CPU backend)."""

    power_w: float | None = Field(default=None, ge=MIN_TARGET_W, le=MAX_WATTS, description="wall power target")
    hashrate_ths: float | None = Field(default=None, ge=MIN_TARGET_THS, le=MAX_THS,
                                       description="valid hashrate target")
    profile: Literal["eco", "balanced", "performance"] | None = None
    cooling: Literal["auto", "manual", "immersion", "hydro"] = "auto"
    manual_fan_pct: float = Field(default=70.0, ge=0, le=100)
    target_c: float = Field(default=65.0, gt=0, lt=150)
    hot_c: float = Field(default=75.0, gt=0, lt=150)
    dangerous_c: float = Field(default=85.0, gt=0, lt=150)
    min_fans: int = Field(default=1, ge=0, le=16)
    lifetime_target_c: float | None = Field(default=None, gt=0, lt=150)
    profile_store: str | None = Field(default=None, description="JSON file for tuned profiles")

    @model_validator(mode="after")
    def _one_target(self) -> PerformanceConfig:
        if sum(x is not None for x in (self.power_w, self.hashrate_ths, self.profile)) > 1:
            raise ValueError("give one of power_w, hashrate_ths or profile")
        if not self.target_c < self.hot_c < self.dangerous_c:
            raise ValueError("temperatures must satisfy target_c < hot_c < dangerous_c")
        return self

    @property
    def enabled(self) -> bool:
        return any(x is not None for x in (self.power_w, self.hashrate_ths, self.profile))


class ApiConfig(_Model):
    """Device APIs. Defaults: everything on localhost, cgminer API read-only, REST writes need a token."""

    cgminer_host: str = "127.0.0.1"
    cgminer_port: int = Field(default=4028, ge=0, le=65535)
    cgminer_allow: list[str] = Field(default_factory=list, description="W:ip/prefix entries for privileged commands")
    rest_host: str = "127.0.0.1"
    rest_port: int = Field(default=8080, ge=0, le=65535)
    auth_file: str | None = Field(default=None, description="accounts file (default: accounts.json in the agent's "
                                                             "state directory); only an admin may change it")
    allowed_hosts: list[str] = Field(default_factory=list, max_length=32,
                                     description="extra host names the web page and REST API answer to (IP "
                                                 "addresses, localhost and this machine's name always work)")
    enabled: bool = True

    @field_validator("cgminer_allow")
    @classmethod
    def _no_wildcards(cls, entries: list[str]) -> list[str]:
        AllowList.parse(entries)
        return entries


class SecurityConfig(_Model):
    """Scheduled integrity scan and signed desired pool state (see ``mos scan`` / ``mos keygen``)."""

    scan_root: str | None = Field(default=None, description="filesystem root to scan on a schedule (e.g. /)")
    baseline: str | None = Field(default=None, description="signed baseline JSON")
    pubkey: str | None = Field(default=None, description="public key for the baseline and desired pools")
    declared_endpoints: list[str] = Field(default_factory=list, description="ip[:port] the device may talk to")
    interval_s: float = Field(default=3600.0, ge=10, le=7 * 86400)
    desired_pools: str | None = Field(default=None, description="signed desired pool state JSON")
    config_path: str | None = Field(default=None, description="this agent's config file, restored on tamper")


class UpdateConfig(_Model):
    """Where signed updates come from (``mos release``) and the root of trust this device ships with."""

    repo: str | None = Field(default=None, description="file:// path (or mirror) of the TUF release repository")
    root_of_trust: str | None = Field(default=None, description="the root.json shipped with the device")
    state_dir: str | None = Field(default=None, description="A/B slots and trusted metadata")
    health_deadline_s: float = Field(default=90.0, ge=1, le=3600,
                                     description="seconds a new slot's agent gets to hash and get a share accepted")


class MqttConfig(_Model):
    """MQTT with Home Assistant discovery (``openmos.mqtt``; topic layout in docs/mqtt.md). Off without a host."""

    host: str | None = Field(default=None, description="broker host name or address; unset = MQTT off")
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password_file: str | None = Field(default=None, description="file holding the broker password")
    tls: bool = Field(default=False, description="TLS to the broker (server certificate always verified)")
    ca_file: str | None = Field(default=None, description="CA bundle for the broker certificate")
    cert_file: str | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: str | None = None
    base_topic: str = Field(default="openmos", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    device_id: str | None = Field(default=None, description="topic and entity id (default: host name)")
    role: Literal["readonly", "operator"] = Field(
        default="readonly", description="what MQTT commands may do: readonly publishes only; operator also "
                                        "accepts pause/resume, power target, profile and locate")
    interval_s: float = Field(default=10.0, ge=1.0, le=3600.0)


class AgentConfig(_Model):
    hardware: str = Field(default="cpu", description="cpu, cpu:N (N workers) or sim:MODEL")
    groups: list[PoolGroupConfig] = Field(min_length=1, max_length=MAX_GROUPS)
    stratum: StratumTuning = Field(default_factory=StratumTuning)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)

    @field_validator("hardware")
    @classmethod
    def _sane_cpu_count(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind == "cpu":
            cpu_workers(arg)  # checked when the config is saved or loaded, not when the agent restarts
        elif kind == "sim":
            get_model(arg)  # likewise: "sim:s99" saved over REST stopped the agent at its next start
        return value

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        try:
            data = read_toml(path)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (create one with `mos config init`)") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AgentConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {describe(exc)}") from None

    def save(self, path: Path) -> None:
        atomic_write(path, tomli_w.dumps(self.model_dump(mode="json", exclude_none=True)).encode())
