"""REST API (FastAPI, OpenAPI at /openapi.json), Server-Sent Events, metrics and the web page."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, model_validator

from openmos import __version__
from openmos.api.auth import AuthError, AuthStore, Role, Session
from openmos.api.metrics import registry_for
from openmos.api.view import DeviceView
from openmos.miner.config import AgentConfig, ConfigError, PoolEndpoint
from openmos.tuning import PerformanceTarget

log = logging.getLogger(__name__)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnerSetup(_Body):
    user: str = Field(default="admin", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=10, max_length=256)


class Login(_Body):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class NewPool(_Body):
    url: str = Field(description="stratum+tcp://host:port or stratum+ssl://host:port")
    user: str = Field(min_length=1, max_length=256)
    password: str = Field(default="x", max_length=256)
    group: int = Field(default=0, ge=0)


class PoolPatch(_Body):
    enabled: bool | None = None
    priority: int | None = Field(default=None, ge=0)


class PerformanceRequest(_Body):
    power_w: float | None = Field(default=None, gt=0, le=100_000)
    hashrate_ths: float | None = Field(default=None, gt=0, le=100_000)
    profile: Literal["eco", "balanced", "performance"] | None = None
    step_percent: float | None = Field(default=None, ge=-50, le=50, description="relative step, e.g. -10")

    @model_validator(mode="after")
    def _exactly_one(self) -> PerformanceRequest:
        given = [x for x in (self.power_w, self.hashrate_ths, self.profile, self.step_percent) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of power_w, hashrate_ths, profile, step_percent")
        return self


class CurtailRequest(_Body):
    fraction: float = Field(gt=0, le=1.5, description="share of the target to run at (1 = full)")


class LogBuffer(logging.Handler):
    """Keeps the last lines of the agent's log for /api/v1/logs."""

    def __init__(self, size: int = 500) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"time": record.created, "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})


def session(request: Request, authorization: Annotated[str | None, Header()] = None) -> Session:
    """The caller's session from a bearer token (401 without one, 403 before the owner exists)."""
    auth: AuthStore = request.app.state.auth
    if not auth.has_owner:
        raise HTTPException(403, "no owner account yet: create one with POST /api/v1/auth/setup")
    token = authorization.removeprefix("Bearer ").strip() if authorization else None
    try:
        return auth.check(token)
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def operator(s: Annotated[Session, Depends(session)], request: Request) -> Session:
    """A session allowed to change the device; every such call goes to the audit log."""
    if not s.role.allows(Role.OPERATOR):
        raise HTTPException(403, f"role {s.role.value} may not change the device")
    request.app.state.audit.append({"time": time.time(), "user": s.user, "method": request.method,
                                    "path": request.url.path})
    log.info("audit: %s %s by %s", request.method, request.url.path, s.user)
    return s


Operator = Annotated[Session, Depends(operator)]
AnySession = Annotated[Session, Depends(session)]


def create_app(view: DeviceView, auth: AuthStore, *, config_path: Path | None = None,
               logs: LogBuffer | None = None) -> FastAPI:
    app = FastAPI(title="OpenMOS device API", version=__version__,
                  description="Status, hashboards, pools, performance and actions of one OpenMOS device. "
                              "Reads are open; writes need a bearer token (POST /api/v1/auth/login).")
    agent = view.agent
    audit: deque[dict[str, Any]] = deque(maxlen=1000)
    app.state.auth = auth
    app.state.audit = audit
    registry = registry_for(view)


    # -- auth -----------------------------------------------------------------------------------------

    @app.post("/api/v1/auth/setup", status_code=201, tags=["auth"])
    async def setup(body: OwnerSetup) -> dict[str, str]:
        """Create the owner (admin) account. Only possible once, at first start: there is no default."""
        try:
            auth.setup_owner(body.user, body.password)
        except AuthError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"user": body.user, "role": "admin"}

    @app.post("/api/v1/auth/login", tags=["auth"])
    async def login(body: Login) -> dict[str, str]:
        try:
            return {"token": auth.login(body.user, body.password), "type": "Bearer"}
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None

    # -- reads ----------------------------------------------------------------------------------------

    def status_doc() -> dict[str, Any]:
        power = view.power_w
        ths = view.hashrate(60) / 1e12
        tuner = agent.tuner
        boards = view.boards()
        temps = [t for b in boards for t in (b.chip_temperatures_c or b.temperatures_c)]
        return {
            "device": {"firmware": "OpenMOS", "version": __version__, "hardware": agent.hardware.model,
                       "uptime_s": view.uptime_s, "paused": agent.paused,
                       "hashrate_source": "modelled" if view.modelled else "measured"},
            "hashrate_ths": {"5s": view.hashrate(5) / 1e12, "1m": ths, "15m": view.hashrate(900) / 1e12},
            "power_w": power, "efficiency_j_per_th": (power / ths) if power and ths else None,
            "hottest_c": max(temps) if temps else None,
            "shares": {"found": agent.stats.shares_found, "hardware_errors": agent.stats.hardware_errors,
                       "accepted": sum(p.accepted for p in view.pools()),
                       "rejected": sum(p.rejected for p in view.pools())},
            "tuner": asdict(tuner.status) if tuner else None,
            "pools": [asdict(p) for p in view.pools()],
            "fans": [{"index": i, "rpm": rpm, "duty_pct": duty} for i, rpm, duty in view.fans()],
            "locate": view.locate_until > time.time(),
        }

    @app.get("/api/v1/status", tags=["status"])
    async def get_status() -> dict[str, Any]:
        return status_doc()

    @app.get("/api/v1/hashboards", tags=["hashboards"])
    async def hashboards() -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(b).items() if k != "chips"} | {"chips": len(b.chips),
                "hardware_errors": b.hardware_errors} for b in view.boards()]

    @app.get("/api/v1/hashboards/{board}/chips", tags=["hashboards"])
    async def chips(board: int) -> list[dict[str, Any]]:
        boards = view.boards()
        if not 0 <= board < len(boards):
            raise HTTPException(404, f"no hashboard {board}")
        return [asdict(c) for c in boards[board].chips]

    @app.get("/api/v1/pools", tags=["pools"])
    async def pools() -> list[dict[str, Any]]:
        return [asdict(p) for p in view.pools()]

    @app.get("/api/v1/performance", tags=["performance"])
    async def performance() -> dict[str, Any]:
        tuner = agent.tuner
        if tuner is None:
            return {"tuner": None, "curve": []}
        return {"tuner": asdict(tuner.status), "target": str(tuner.base_target),
                "curve": [asdict(p) for p in tuner.efficiency_curve(10)]}

    @app.get("/api/v1/cooling", tags=["cooling"])
    async def cooling() -> dict[str, Any]:
        tuner = agent.tuner
        return {"fans": [{"index": i, "rpm": rpm, "duty_pct": duty} for i, rpm, duty in view.fans()],
                "mode": tuner.cooling.mode.value if tuner else None,
                "limits": asdict(tuner.cooling.limits) if tuner else None,
                "dps_steps": tuner.guard.dps_steps if tuner else 0}

    @app.get("/api/v1/logs", tags=["logs"])
    async def get_logs(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
        return list(logs.lines)[-limit:] if logs else []

    @app.get("/api/v1/audit", tags=["logs"])
    async def get_audit(_: AnySession) -> list[dict[str, Any]]:
        return list(audit)

    @app.get("/api/v1/config", tags=["config"])
    async def get_config() -> dict[str, Any]:
        doc = agent.config.model_dump(mode="json")
        for group in doc["groups"]:
            for pool in group["pools"]:
                pool["password"] = "***"  # never echo pool passwords
        return doc

    @app.get("/api/v1/stream", tags=["status"])
    async def stream(interval: Annotated[float, Query(ge=0.2, le=60)] = 1.0) -> StreamingResponse:
        """Server-Sent Events: one ``status`` event per interval."""
        async def events() -> AsyncIterator[str]:
            while True:
                yield f"event: status\ndata: {json.dumps(status_doc())}\n\n"
                await asyncio.sleep(interval)
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- writes ---------------------------------------------------------------------------------------

    @app.post("/api/v1/pools", status_code=201, tags=["pools"])
    async def add_pool(body: NewPool, _: Operator) -> dict[str, Any]:
        try:
            endpoint = PoolEndpoint.checked(body.url, body.user, body.password)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        if body.group >= len(agent.pools.groups):
            raise HTTPException(404, f"no pool group {body.group}")
        conn = agent.pools.groups[body.group].add(endpoint)
        return {"url": conn.endpoint.url, "priority": conn.priority}

    @app.patch("/api/v1/pools/{index}", tags=["pools"])
    async def patch_pool(index: int, body: PoolPatch, _: Operator) -> dict[str, Any]:
        try:
            group, conn = agent.pools.locate(index)
            if body.enabled is not None:
                group.set_enabled(conn, body.enabled)
            if body.priority is not None:
                group.move_to(conn, body.priority)
        except IndexError:
            raise HTTPException(404, f"no pool {index}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"index": index, "enabled": conn.enabled, "priority": conn.priority}

    @app.delete("/api/v1/pools/{index}", tags=["pools"])
    async def delete_pool(index: int, _: Operator) -> dict[str, Any]:
        try:
            group, conn = agent.pools.locate(index)
            await group.remove(conn)
        except IndexError:
            raise HTTPException(404, f"no pool {index}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"removed": conn.endpoint.url}

    @app.put("/api/v1/performance", tags=["performance"])
    async def set_performance(body: PerformanceRequest, _: Operator) -> dict[str, Any]:
        tuner = agent.tuner
        if tuner is None:
            raise HTTPException(409, "this hardware has no autotuner (no tunable clocks or no target configured)")
        limits = agent.hardware.limits()
        if body.step_percent is not None:
            target = tuner.base_target.step(body.step_percent)
        else:
            target = PerformanceTarget.choose(power_w=body.power_w, hashrate_ths=body.hashrate_ths,
                                              profile=body.profile,
                                              nameplate_w=(limits.nameplate_power_w if limits else 0) or 0)
        await tuner.set_target(target)
        return {"target": str(target)}

    @app.post("/api/v1/performance/curtail", tags=["performance"])
    async def curtail(body: CurtailRequest, _: Operator) -> dict[str, Any]:
        if agent.tuner is None:
            raise HTTPException(409, "this hardware has no autotuner")
        await agent.tuner.curtail(body.fraction)
        return {"fraction": body.fraction}

    @app.post("/api/v1/actions/{action}", tags=["actions"])
    async def act(action: Literal["pause", "resume", "restart", "locate"], _: Operator) -> dict[str, str]:
        if action == "pause":
            await agent.pause()
        elif action == "resume":
            await agent.resume()
        elif action == "restart":
            await agent.restart()
        else:
            view.locate_until = time.time() + 60
        return {"action": action, "result": "ok"}

    @app.put("/api/v1/config", tags=["config"])
    async def put_config(body: dict[str, Any], _: Operator,
                         mode: Annotated[Literal["save", "save_and_apply"], Query()] = "save") -> dict[str, Any]:
        """Validate and store a full agent config (atomically). ``save_and_apply`` also applies pools."""
        try:
            config = AgentConfig.from_dict(body, source="request body")
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        if config_path is None:
            raise HTTPException(409, "the agent was started without a config file; nothing to save to")
        config.save(config_path)
        if mode == "save_and_apply":
            await agent.apply_pools(config)
        return {"saved": str(config_path), "applied": mode == "save_and_apply"}

    def scan_doc() -> dict[str, Any]:
        report = agent.last_scan
        return {"configured": bool(agent.config.security.scan_root),
                "last_scan": None if report is None else {
                    "root": report.root, "started": report.started, "files_hashed": report.files_hashed,
                    "worst": report.worst(), "findings": [asdict(f) for f in report.findings]},
                "events": list(agent.security_events)}

    @app.get("/api/v1/security", tags=["security"])
    async def security() -> dict[str, Any]:
        return scan_doc()

    @app.post("/api/v1/security/scan", tags=["security"])
    async def security_scan(_: Operator) -> dict[str, Any]:
        if not agent.config.security.scan_root and not agent.config.security.desired_pools:
            raise HTTPException(409, "no scan configured (security.scan_root / security.desired_pools)")
        await agent.run_security_checks()
        return scan_doc()

    # -- web page -------------------------------------------------------------------------------------

    web = resources.files("openmos.api").joinpath("web")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(web.joinpath("index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: Literal["app.js", "style.css"]) -> Response:
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(web.joinpath(name).read_text(), media_type=media)

    return app
