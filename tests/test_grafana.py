"""The Grafana dashboard and provisioning under deploy/: every query names metrics the exporters expose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import generate_latest

from openmos.api.metrics import registry_for
from openmos.api.view import DeviceView
from openmos.hw.factory import create_hardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool

from helpers import easy_pool_settings, wait_for

DEPLOY = Path(__file__).parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "openmos.json"
NAME = re.compile(r"\b(openmos_[a-zA-Z0-9_:]+)")


def exposed_names(text: str) -> set[str]:
    """Metric names in Prometheus text exposition (samples and # TYPE lines)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(target["expr"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return found


async def device_metrics() -> str:
    """/metrics text of a running agent on a simulated S21 with an autotuner (figures labelled modelled)."""
    pool = LocalPool(easy_pool_settings())
    await pool.start()
    config = AgentConfig.from_dict({"hardware": "sim:s21", "performance": {"profile": "eco"},
                                    "groups": [{"pools": [{"url": pool.url, "user": "grafana.rig"}]}]})
    agent = MiningAgent(config, create_hardware("sim:s21"))
    await agent.start()
    try:
        view = DeviceView(agent)
        await wait_for(lambda: view.hashrate(60) > 0 and view.power_w is not None, 120, "a hashing simulated miner")
        return generate_latest(registry_for(view)).decode()
    finally:
        await agent.stop()
        await pool.stop()


async def fleet_metrics(tmp_path: Path) -> str:
    from openmos.api.auth import AuthStore
    from openmos.base.net import free_local_port
    from openmos.fleet.bus import BusConfig
    from openmos.fleet.service import FleetService
    from openmos.fleet.web.app import create_fleet_app
    from openmos.security.signing import generate_keypair

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]), f"sqlite:///{tmp_path}/f.db",
                           (tmp_path / "k.pem").read_bytes(), tmp_path / "audit.jsonl")
    service.bus.metrics.accept("telemetry")
    service.bus.metrics.drop("bad_signature")
    app = create_fleet_app(service, AuthStore(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        reply = await client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return reply.text


async def test_every_dashboard_query_names_an_exposed_metric(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names(await device_metrics()) | exposed_names(await fleet_metrics(tmp_path))
    assert "openmos_power_watts" in exposed and "openmos_fleet_bus_dropped_total" in exposed
    used: set[str] = set()
    for expr in queries(dashboard):
        names = set(NAME.findall(expr))
        assert names, f"query names no OpenMOS metric: {expr}"
        used |= names
        assert names <= exposed, f"{expr}: {sorted(names - exposed)} not exposed by any exporter"
    # The dashboard covers device and fleet: hashrate, power, efficiency, temperatures, fans, shares, bus.
    assert {"openmos_hashrate_hashes_per_second", "openmos_power_watts", "openmos_efficiency_joules_per_terahash",
            "openmos_temperature_celsius", "openmos_fan_rpm", "openmos_shares_total",
            "openmos_fleet_bus_dropped_total", "openmos_fleet_devices_enrolled"} <= used


def test_a_misspelt_metric_would_be_caught() -> None:
    """The check above is not vacuous: a query on a metric nobody exports is reported."""
    exposed = {"openmos_power_watts"}
    bad = {"panels": [{"targets": [{"expr": "sum(openmos_power_wats)"}]}], "templating": {"list": []}}
    assert any(not set(NAME.findall(q)) <= exposed for q in queries(bad))


def test_dashboard_and_provisioning_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/openmos.yaml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/openmos.yaml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert {j["metrics_path"] for j in prom["scrape_configs"]} == {"/metrics"}


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.y*ml")))
def test_yaml_files_load(path: str) -> None:
    assert yaml.safe_load((DEPLOY / path).read_text())
