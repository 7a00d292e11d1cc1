"""Dashboard API and page: site overview, device explorer with filters, container heatmap, charts over
time, alerts, and an action sidebar with approvals. Writes use the device API's accounts and roles."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from openmos.api import errors
from openmos.api.auth import AuthError, AuthStore, TooManyAttempts
from openmos.api.deps import Admin
from openmos.api.middleware import HostAllowList, RequestGuard
from openmos.api.rest import Operator
from openmos.fleet import keys
from openmos.fleet.control import ApprovalError, TargetQuery
from openmos.fleet.enroll import EnrollmentRefused, fingerprint
from openmos.fleet.messages import CHUNK
from openmos.fleet.rollout import rollout
from openmos.fleet.service import FleetService
from openmos.fleet.store import ROLLUPS

MAX_ROLLOUTS = 64  # rollout progress records kept (finished ones go first)
MAX_ARGS_BYTES = 16 * 1024  # an action's arguments as JSON: eight pools with long URLs fit several times over


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["pause", "resume", "set_power", "set_pools", "reboot", "locate", "install", "scan"]
    args: dict[str, Any] = Field(default_factory=dict)
    site: Annotated[str, Field(max_length=256)] | None = None
    model: Annotated[str, Field(max_length=256)] | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)
    devices: list[str] = Field(default_factory=list, max_length=20_000)

    @field_validator("args")
    @classmethod
    def _small_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(args)) > MAX_ARGS_BYTES:  # each request holds them in memory and the audit log
            raise ValueError(f"args take at most {MAX_ARGS_BYTES} bytes of JSON")
        return args


class EnrollmentDecision(BaseModel):
    """The request an admin decides on, and the key fingerprint they compared (the decision only applies if
    the waiting key still has it)."""

    model_config = ConfigDict(extra="forbid")
    site: Annotated[str, Field(min_length=1, max_length=256)]
    device: Annotated[str, Field(min_length=1, max_length=256)]
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{4}(:[0-9a-f]{4}){3}$")]


def masked(args: dict[str, Any]) -> dict[str, Any]:
    """An action's arguments as the (unauthenticated) request list shows them: pool passwords masked, as the
    device API's config read does."""
    pools = args.get("pools")
    if not isinstance(pools, list):
        return args
    return {**args, "pools": [{**p, "password": "***"} if isinstance(p, dict) and "password" in p else p
                              for p in pools]}


def _rollup_bucket(seconds: int) -> int:
    if seconds not in ROLLUPS:
        raise ValueError(f"bucket must be one of {', '.join(map(str, ROLLUPS))} seconds")
    return seconds


# A query string is text: ``Literal[300, ...]`` refused "300" itself (every ?bucket= was a 422, the dashboard's
# history chart included). An int, converted as usual, then checked against the store's rollup sizes.
Bucket = Annotated[int, AfterValidator(_rollup_bucket)]


def create_fleet_app(service: FleetService, auth: AuthStore, *,
                     allowed_hosts: list[str] | tuple[str, ...] = ()) -> FastAPI:
    app = FastAPI(title="OpenMOS fleet", description="Fleet overview, devices, alerts and approved bulk actions.",
                  docs_url=None, redoc_url=None)
    # The device API's front door: Host allow-list, body limit, bearer token before any write body is read,
    # CSP and frame protection. Tokens travel only in the Authorization header (no cookie: no CSRF).
    app.add_middleware(RequestGuard, auth=lambda: auth, hosts=HostAllowList.default(allowed_hosts))
    errors.install(app)  # the device API's error replies: what is wrong, never the input echoed back
    app.state.auth = auth
    app.state.audit = []

    def device_rows(site: str | None, model: str | None, q: str | None) -> list[dict[str, Any]]:
        """One row per (site, device): the same device id at two sites is two rows, never one."""
        now = time.time()
        rows = []
        for (dev_site, device), inv in sorted(service.inventory.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            latest = service.latest.get((dev_site, device), {})
            if (site and dev_site != site) or (model and inv.get("model") != model):
                continue
            if q and q.lower() not in f"{dev_site}/{device} {inv.get('model')} {inv.get('tags')}".lower():
                continue
            rows.append({"id": keys.device_ref(dev_site, device), "device": device, "site": dev_site,
                         "model": inv.get("model"),
                         "tags": inv.get("tags", {}), "firmware": latest.get("firmware") or inv.get("firmware"),
                         "hashrate_ths": latest.get("hashrate_ths"), "power_w": latest.get("power_w"),
                         "hottest_c": latest.get("hottest_c"), "paused": latest.get("paused"),
                         "online": bool(latest) and now - latest["received"] < service.alerts.rules.offline_after_s})
        return rows

    @app.post("/api/v1/auth/login")
    async def login(body: dict[str, str], request: Request) -> dict[str, str]:
        """Throttled per account and client; the password hash runs off the event loop (as on devices)."""
        client = request.client.host if request.client else "?"
        try:
            token = await auth.login_async(str(body.get("user", ""))[:64], str(body.get("password", ""))[:256], client)
        except TooManyAttempts as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None
        return {"token": token, "type": "Bearer"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text: bus messages accepted by kind and dropped by reason, enrollment state."""
        snap = service.bus.metrics.snapshot()
        lines = ["# HELP openmos_fleet_bus_accepted_total Bus messages believed (signed by the enrolled key, valid).",
                 "# TYPE openmos_fleet_bus_accepted_total counter"]
        lines += [f'openmos_fleet_bus_accepted_total{{kind="{k}"}} {v}' for k, v in sorted(snap["accepted"].items())]
        lines += ["# HELP openmos_fleet_bus_dropped_total Bus messages dropped, by reason.",
                  "# TYPE openmos_fleet_bus_dropped_total counter"]
        lines += [f'openmos_fleet_bus_dropped_total{{reason="{k}"}} {v}' for k, v in sorted(snap["dropped"].items())]
        lines += ["# TYPE openmos_fleet_devices_enrolled gauge",
                  f"openmos_fleet_devices_enrolled {len(service.registry.enrolled)}",
                  "# TYPE openmos_fleet_enrollments_pending gauge",
                  f"openmos_fleet_enrollments_pending {len(service.registry.pending)}"]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/api/fleet/overview")
    async def overview() -> dict[str, Any]:
        return service.overview()

    @app.get("/api/fleet/devices")
    async def devices(site: str | None = None, model: str | None = None,
                      q: Annotated[str | None, Query(max_length=100)] = None) -> list[dict[str, Any]]:
        return device_rows(site, model, q)

    @app.get("/api/fleet/maintenance")
    async def maintenance_queue(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
        """The maintenance queue: every component the devices' models flag, soonest estimated failure first
        (no estimate: after those, by how far out of band)."""
        rows = []
        for (site, device), latest in service.latest.items():
            m = latest.get("maintenance") or {}
            for f in m.get("flags", []):
                rows.append({"device": device, "site": site, "modelled": bool(m.get("modelled")),
                             **{k: f.get(k) for k in ("component", "board", "index", "reason", "score",
                                                      "lead_time_h")}})
        rows.sort(key=lambda r: (r["lead_time_h"] is None, r["lead_time_h"] or 0.0, -(r["score"] or 0.0)))
        return rows[:limit]

    @app.get("/api/fleet/heatmap")
    async def heatmap(tag: str = "container") -> dict[str, list[dict[str, Any]]]:
        grid: dict[str, list[dict[str, Any]]] = {}
        for row in device_rows(None, None, None):
            grid.setdefault(str(row["tags"].get(tag, "-")), []).append(
                {"id": row["id"], "device": row["device"], "site": row["site"], "hottest_c": row["hottest_c"],
                 "hashrate_ths": row["hashrate_ths"]})
        return grid

    @app.get("/api/fleet/devices/{site}/{device}")
    async def device_detail(site: Annotated[str, Path(pattern=CHUNK)],
                            device: Annotated[str, Path(pattern=CHUNK)],
                            bucket: Bucket = 300) -> dict[str, Any]:
        """One device of one site: its row and its history from the store's rollups."""
        if (site, device) not in service.inventory and (site, device) not in service.latest:
            raise HTTPException(404, "no such device at that site")
        row = next((r for r in device_rows(site, None, None) if r["device"] == device),
                   {"id": keys.device_ref(site, device), "site": site, "device": device})
        history = await asyncio.to_thread(service.store.series, site, device, bucket)
        return {**row, "series": [{"time": t, "hashrate_ths": h, "power_w": w} for t, h, w in history]}

    @app.get("/api/fleet/series")
    async def series(bucket: Bucket = 300,
                     days: Annotated[float, Query(gt=0, le=3660, allow_inf_nan=False)] = 1.0, site: str | None = None
                     ) -> list[dict[str, float]]:
        """Fleet totals over time from the store's rollups (history that survives a page reload)."""
        tags = {"site": site} if site else {}
        rows = await asyncio.to_thread(service.store.totals_series, bucket, time.time() - days * 86400, **tags)
        return [{"time": t, "hashrate_ths": h, "power_w": w} for t, h, w in rows]

    @app.get("/api/fleet/by-tag")
    async def by_tag(tag: str = "site", bucket: Bucket = 3600) -> dict[str, Any]:
        # An SQL aggregation over the whole fleet: on a thread (the store serialises its connection with a lock
        # and allows other threads), so the event loop keeps serving the bus and other requests meanwhile.
        return await asyncio.to_thread(service.store.aggregate_by_tag, tag, bucket, since=time.time() - 86400)

    @app.get("/api/fleet/alerts")
    async def alerts() -> dict[str, Any]:
        return {"active": [asdict(a) for a in service.alerts.active.values()],
                "recent": [asdict(a) for a in service.alerts.history[-50:]]}

    @app.get("/api/fleet/requests")
    async def requests() -> list[dict[str, Any]]:
        return [{"request_id": r.request_id, "action": r.action, "args": masked(r.args), "state": r.state,
                 "requested_by": r.requested_by, "approvals": r.approvals, "needed": r.approvals_needed,
                 "results": r.results} for r in service.controller.requests.values()]

    @app.post("/api/fleet/requests", status_code=201)
    async def create_request(body: ActionBody, s: Operator) -> dict[str, Any]:
        if body.site is None and any("/" not in d for d in body.devices):
            raise HTTPException(422, "name devices as SITE/DEVICE (or give the site): a device id is unique only "
                                     "within its site")
        target = TargetQuery(site=body.site, model=body.model, tags=body.tags, devices=tuple(body.devices))
        try:
            req = service.controller.request(body.action, body.args, target, s.user)
        except ApprovalError as exc:
            raise HTTPException(429, str(exc)) from None
        return {"request_id": req.request_id, "state": req.state, "needed": req.approvals_needed}

    @app.post("/api/fleet/requests/{request_id}/approve")
    async def approve(request_id: str, s: Operator) -> dict[str, Any]:
        if request_id not in service.controller.requests:
            raise HTTPException(404, "no such request")
        try:
            req = service.controller.approve(request_id, s.user)
        except ApprovalError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"request_id": request_id, "state": req.state, "approvals": req.approvals}

    @app.post("/api/fleet/requests/{request_id}/execute")
    async def execute(request_id: str, s: Operator) -> dict[str, Any]:
        if request_id not in service.controller.requests:
            raise HTTPException(404, "no such request")
        try:
            results = await service.controller.execute(request_id, s.user)
        except ApprovalError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"request_id": request_id, "results": results}

    @app.get("/api/fleet/enrollments")
    async def enrollments(s: Admin) -> dict[str, Any]:
        """Enrollment requests waiting for an operator (admins only): compare the fingerprint with the one the
        device shows before approving."""
        now = time.time()
        registry = service.registry
        await asyncio.to_thread(registry.refresh, True)  # requests the CLI or another process changed
        pending = [{"id": name, "site": name.partition("/")[0], "device": name.partition("/")[2],
                    "fingerprint": fingerprint(p.public_key), "source": p.source,
                    "requested_at": p.requested_at, "age_s": max(0.0, now - p.requested_at)}
                   for name, p in sorted(registry.pending.items())]
        return {"pending": pending, "enrolled": len(registry.enrolled)}

    @app.post("/api/fleet/enrollments/{verdict}")
    async def decide_enrollment(verdict: Literal["approve", "reject"], body: EnrollmentDecision,
                                s: Admin) -> dict[str, str]:
        """Approve (pin the key) or reject a waiting request: the same registry call as `mos fleet approve`."""
        decide = service.registry.approve if verdict == "approve" else service.registry.reject
        try:
            await asyncio.to_thread(decide, body.site, body.device, body.fingerprint)
        except KeyError:
            raise HTTPException(404, "no such pending enrollment") from None
        except EnrollmentRefused as exc:
            raise HTTPException(409, str(exc)) from None
        service.controller._audit(s.user, f"enrollment_{verdict}", {"site": body.site, "device": body.device,
                                                                    "fingerprint": body.fingerprint})
        return {"state": "enrolled" if verdict == "approve" else "rejected"}

    rollouts: dict[str, dict[str, Any]] = {}
    app.state.rollouts = rollouts
    app.state.tasks = set()

    @app.post("/api/fleet/requests/{request_id}/rollout", status_code=202)
    async def start_rollout(request_id: str, s: Operator,
                            soak_s: Annotated[float, Query(ge=0, le=86400, allow_inf_nan=False)] = 30.0
                            ) -> dict[str, Any]:
        """Run an approved ``install`` request as a staged rollout (canary, 10 %, all) with health gates."""
        req = service.controller.requests.get(request_id)
        if req is None:
            raise HTTPException(404, "no such request")
        if req.action != "install" or req.state != "ready":
            raise HTTPException(409, "a rollout needs an approved install request that has not run yet")
        req.state = "running"  # before any await: a second POST (a double click) starts no second rollout
        state: dict[str, Any] = {"request_id": request_id, "version": req.args.get("version"), "progress": 0.0,
                                 "messages": [], "done": False}
        rollouts[request_id] = state
        for old in [k for k, v in rollouts.items() if v["done"]][: max(0, len(rollouts) - MAX_ROLLOUTS)]:
            del rollouts[old]  # the newest finished ones stay for the page

        def progress(message: str, fraction: float) -> None:
            state["messages"].append(message)
            state["progress"] = fraction

        async def run() -> None:
            try:
                report = await rollout(service.controller, req.target, str(req.args["version"]), s.user,
                                       req.approvals, soak_s=soak_s, progress=progress,
                                       package={k: str(v) for k, v in req.args.items() if k in ("target", "sha256")})
                state.update(halted=report.halted, reason=report.reason, updated=report.updated,
                             failed=report.failed, rolled_back=report.rolled_back)
            finally:
                state["done"] = True
                req.state = "done"

        task = asyncio.get_running_loop().create_task(run())
        app.state.tasks.add(task)
        task.add_done_callback(app.state.tasks.discard)
        return state

    @app.get("/api/fleet/rollouts")
    async def list_rollouts() -> list[dict[str, Any]]:
        return list(rollouts.values())

    web = resources.files("openmos.fleet.web")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(web.joinpath("index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: Literal["fleet.js", "style.css"]) -> Response:
        if name == "style.css":  # one stylesheet for the device page and the dashboard
            return Response(resources.files("openmos.api").joinpath("web", "style.css").read_text(),
                            media_type="text/css")
        return Response(web.joinpath(name).read_text(), media_type="text/javascript")

    return app
