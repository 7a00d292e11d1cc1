"""The proxy's statistics on the usual interfaces: cgminer API (``summary``, ``pools``, ``devs``: one row
per downstream miner), REST (``/api/v1/proxy``, ``/api/v1/proxy/downstreams``) and Prometheus
``/metrics``. Read-only: the proxy has no privileged commands. The cgminer wire format, limits and server
are the device API's own (``openmos.api.cgminer``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from openmos import __version__
from openmos.api.cgminer.protocol import (
    API_VERSION,
    CODES,
    INVALID_COMMAND,
    answer,
    error_reply,
    status,
)
from openmos.api.cgminer.server import CgminerServer
from openmos.api.server import HttpServer
from openmos.proxy.server import FarmProxy


class ProxyCgminer:
    """cgminer-dialect answers about the proxy: ``devs`` lists the downstream miners."""

    COMMANDS = ("version", "summary", "pools", "devs")

    def __init__(self, proxy: FarmProxy) -> None:
        self.proxy = proxy

    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]:
        async def one(command: str, parameter: str | None) -> dict[str, Any]:
            return self._one(command)

        return await answer(raw, one)

    def _one(self, command: str) -> dict[str, Any]:
        if command not in self.COMMANDS:
            return error_reply(INVALID_COMMAND, "Invalid command (the proxy answers version, summary, pools, devs)")
        rows, section = getattr(self, f"_{command}")()
        return {"STATUS": status("S", CODES[command], f"OpenMOS proxy {command}"), section: rows, "id": 1}

    def _version(self) -> tuple[list[dict[str, Any]], str]:
        return [{"OpenMOS": __version__, "API": API_VERSION, "Type": "OpenMOS SV2 proxy"}], "VERSION"

    def _summary(self) -> tuple[list[dict[str, Any]], str]:
        return [summary(self.proxy)], "SUMMARY"

    def _pools(self) -> tuple[list[dict[str, Any]], str]:
        p = self.proxy
        rows = []
        for i, url in enumerate(p.urls):
            active = p.upstream_index == i and p.upstream is not None and not p.upstream.closed.is_set()
            rows.append({"POOL": i, "URL": str(url), "Status": "Alive" if active else "Dead", "Priority": i,
                         "Stratum Active": active, "Last Error": p.upstream_errors.get(str(url), ""),
                         "Protocol": "Stratum V2 (extended channel)"})
        return rows, "POOLS"

    def _devs(self) -> tuple[list[dict[str, Any]], str]:
        now = time.time()
        rows = [{"ASC": i, "Name": "V1 miner", "Worker": s.worker, "Peer": s.peer, "Status":
                 "Alive" if s.connected else "Dead", "Accepted": s.accepted, "Rejected": s.rejected,
                 "Stale": s.stale, "Duplicate": s.duplicate, "Forwarded": s.forwarded,
                 "Upstream Accepted": s.upstream_accepted, "Upstream Rejected": s.upstream_rejected,
                 "Difficulty Accepted": s.accepted_difficulty, "Difficulty": s.difficulty,
                 "MHS av": s.hashrate(now) / 1e6, "Last Share Time": int(s.last_share),
                 "Extranonce1": s.extranonce1} for i, s in enumerate(self.proxy.stats())]
        return rows, "DEVS"


def summary(proxy: FarmProxy) -> dict[str, Any]:
    stats = [s for s in proxy.stats() if s.connected]
    latencies = sorted(proxy.forward_latency)
    return {"Downstreams": len(stats), "Accepted": sum(s.accepted for s in stats),
            "Rejected": sum(s.rejected for s in stats), "Forwarded": sum(s.forwarded for s in stats),
            "Upstream Accepted": sum(s.upstream_accepted for s in stats),
            "MHS av": sum(s.hashrate() for s in stats) / 1e6,
            "Upstream": str(proxy.upstream.url) if proxy.upstream is not None else "",
            "Upstream Switches": proxy.upstream_switches,
            "Median Forward Latency ms": latencies[len(latencies) // 2] * 1e3 if latencies else None}


class ProxyCollector(Collector):
    def __init__(self, proxy: FarmProxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "peer"]
        shares = CounterMetricFamily("openmos_proxy_downstream_shares", "Shares per downstream miner and result",
                                     labels=[*labels, "result"])
        rate = GaugeMetricFamily("openmos_proxy_downstream_hashrate_hashes_per_second",
                                 "Proxy-verified hashrate per downstream miner", labels=labels)
        diff = GaugeMetricFamily("openmos_proxy_downstream_difficulty", "Current vardiff per downstream",
                                 labels=labels)
        now = time.time()
        for s in self.proxy.stats():
            if not s.connected:
                continue
            key = [s.worker or "-", s.peer]
            for result, n in (("accepted", s.accepted), ("rejected", s.rejected), ("stale", s.stale),
                              ("duplicate", s.duplicate), ("forwarded", s.forwarded),
                              ("upstream_accepted", s.upstream_accepted),
                              ("upstream_rejected", s.upstream_rejected)):
                shares.add_metric([*key, result], n)
            rate.add_metric(key, s.hashrate(now))
            diff.add_metric(key, s.difficulty)
        yield shares
        yield rate
        yield diff
        yield GaugeMetricFamily("openmos_proxy_upstream_connected", "1 while an upstream V2 channel is open",
                                value=float(self.proxy.upstream is not None
                                            and not self.proxy.upstream.closed.is_set()))


def create_app(proxy: FarmProxy) -> FastAPI:
    app = FastAPI(title="OpenMOS proxy", version=__version__)
    registry = CollectorRegistry()
    registry.register(ProxyCollector(proxy))

    @app.get("/api/v1/proxy")
    def _summary() -> dict[str, Any]:
        return summary(proxy)

    @app.get("/api/v1/proxy/downstreams")
    def _downstreams() -> list[dict[str, Any]]:
        now = time.time()
        return [{**asdict(s), "hashrate": s.hashrate(now)} for s in proxy.stats()]

    @app.get("/metrics")
    def _metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class ProxyApis:
    """cgminer API and REST/Prometheus for a running proxy (loopback by default)."""

    def __init__(self, proxy: FarmProxy, host: str = "127.0.0.1", cgminer_port: int = 4029, rest_port: int = 8081
                 ) -> None:
        self.cgminer = CgminerServer(ProxyCgminer(proxy), host, cgminer_port)
        self.http = HttpServer(create_app(proxy), host, rest_port, name="proxy REST API")

    @property
    def rest_port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        await self.http.start()
        await self.cgminer.start()

    async def stop(self) -> None:
        await self.http.stop()
        await self.cgminer.stop()
