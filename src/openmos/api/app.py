"""The device REST API assembled: routers, the request guard (hosts, body size, auth before parsing,
security headers) and the error handlers. OpenAPI at ``/openapi.json``; no third-party docs page (it would
load scripts from a CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from openmos import __version__
from openmos.api import errors
from openmos.api.auth import AuthStore
from openmos.api.deps import ApiContext
from openmos.api.logs import LogBuffer
from openmos.api.metrics import registry_for
from openmos.api.middleware import MAX_BODY_BYTES, HostAllowList, RequestGuard
from openmos.api.routers import actions, auth, config, maintenance, performance, pools, security, status, web
from openmos.api.view import DeviceView

ROUTERS = (auth, status, pools, performance, actions, config, security, maintenance, web)


def create_app(view: DeviceView, auth_store: AuthStore, *, config_path: Path | None = None,
               logs: LogBuffer | None = None, allowed_hosts: list[str] | tuple[str, ...] = (),
               max_body: int = MAX_BODY_BYTES, max_streams: int = 8) -> FastAPI:
    app = FastAPI(title="OpenMOS device API", version=__version__, docs_url=None, redoc_url=None,
                  description="Status, hashboards, pools, performance and actions of one OpenMOS device. "
                              "Reads are open; writes need 'Authorization: Bearer <token>' "
                              "(POST /api/v1/auth/login).")
    ctx = ApiContext(view=view, auth=auth_store, registry=registry_for(view), config_path=config_path, logs=logs,
                     max_streams=max_streams)
    app.state.ctx = ctx
    app.state.auth = auth_store  # what openmos.api.deps.session reads (shared with the fleet dashboard)
    app.state.audit = ctx.audit
    for module in ROUTERS:
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(RequestGuard, auth=lambda: auth_store, hosts=HostAllowList.default(allowed_hosts),
                       max_body=max_body)
    return app
