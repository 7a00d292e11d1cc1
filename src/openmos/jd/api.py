"""``mos jd``'s dashboard: whose template the farm is mining (our own, or the pool's as a fallback), that
template's fees, transaction count and weight, the template policy in force and the service's counters.

``GET /api/v1/jd`` answers JSON; ``GET /`` is a page (static HTML + one script under a strict
Content-Security-Policy, every value written as text) that polls it. Read-only, loopback by default.
Reasons shown come partly from upstream (a JDS's refusal details): they are data, never markup.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Response

from openmos import __version__
from openmos.api.server import HttpServer
from openmos.bitcoin.tx import tx_hash_hex
from openmos.jd.service import JdService

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'"
_WEB = resources.files("openmos.jd") / "web"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def jd_status(service: JdService) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data."""
    s, p = service.status, service.policy
    own = s.mode == "own"
    template: dict[str, Any] = {
        "source": {"own": "own", "pool": "pool (fallback)"}.get(s.mode, "none"),
        "height": s.height if own else None,
        "fees_sat": s.fees if own else None,
        "tx_count": s.tx_count if own else None,
        "weight": s.weight if own else None,
        "excluded_by_policy": s.excluded if own else None,
        "note": "" if own else "the pool's own job: its transactions are not disclosed to miners, only a merkle "
                               "path" if s.mode == "pool" else "no work yet",
    }
    return {
        "mode": s.mode,
        "reason": s.reason,
        "template": template,
        "last_own_template": {"height": s.height, "fees_sat": s.fees, "tx_count": s.tx_count, "weight": s.weight,
                              "excluded_by_policy": s.excluded, "build_ms": _ms(s.build_seconds)},
        "policy": {"min_fee_rate_sat_vb": p.min_fee_rate, "max_weight": p.max_weight,
                   "excluded_txids": sorted(tx_hash_hex(t) for t in p.excluded_txids),
                   "excluded_scripts": sorted(x.hex() for x in p.excluded_scripts),
                   "unverifiable_by_pool": len(service.unverifiable)},
        "counters": {"templates": s.templates, "empty_block_jobs": s.empty_jobs, "fallbacks": s.fallbacks,
                     "shares_forwarded": s.forwarded, "pool_accepted": service.mining.accepted,
                     "pool_rejected": sum(service.mining.rejected.values()),
                     "stale_after_new_block": service.mining.stale_new_block,
                     "optimistic_lost": s.optimistic_lost, "blocks": len(s.blocks)},
        "blocks": s.blocks[-20:],
        "latency_ms": {"first_job": _ms(s.last_job_latency), "full_template": _ms(s.last_template_latency)},
        "upstream": {"pool": f"{service.mining.host}:{service.mining.port}",
                     "jds": f"{service.jds.host}:{service.jds.port}",
                     "node": f"{service.node.host}:{service.node.port}"},
        "miners_url": service.url if service.downstream is not None else None,
    }


def create_app(service: JdService) -> FastAPI:
    app = FastAPI(title="OpenMOS mos jd", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
               "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

    @app.get("/api/v1/jd")
    def _status() -> Response:
        import orjson

        return Response(orjson.dumps(jd_status(service)), media_type="application/json", headers=headers)

    def static(name: str, media_type: str) -> Response:
        return Response((_WEB / name).read_bytes(), media_type=media_type, headers=headers)

    @app.get("/")
    def _index() -> Response:
        return static("index.html", "text/html; charset=utf-8")

    @app.get("/jd.js")
    def _script() -> Response:
        return static("jd.js", "text/javascript; charset=utf-8")

    @app.get("/jd.css")
    def _style() -> Response:
        return static("jd.css", "text/css; charset=utf-8")

    return app


class JdApi:
    """The dashboard's HTTP server for a running ``JdService`` (``await start()`` / ``await stop()``)."""

    def __init__(self, service: JdService, host: str = "127.0.0.1", port: int = 8083) -> None:
        self.http = HttpServer(create_app(service), host, port, name="mos jd dashboard")

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return f"http://{self.http.host}:{self.port}"

    async def start(self) -> None:
        await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()
