"""The fleet store passes the same suite on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openmos.fleet.store import FleetStore, Sample

import pg


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[FleetStore]:
    if request.param == "sqlite":
        s = FleetStore("sqlite://")
        yield s
        s.close()
        return
    if not pg.available():
        pytest.skip("PostgreSQL is not installed (make test installs it as root)")
    with pg.postgres_server() as url:
        s = FleetStore(url)
        assert s.kind == "postgresql"
        yield s
        s.close()


def inv(device: str, site: str, container: str, model: str = "s21") -> dict[str, object]:
    return {"device": device, "site": site, "model": model, "serial": f"SN-{device}", "firmware": "openmos 0.1.0",
            "tags": {"container": container, "rack": "r1"}}


def test_inventory_upsert_and_tag_queries(store: FleetStore) -> None:
    store.upsert_device(inv("a1", "north", "c1"))
    store.upsert_device(inv("a2", "north", "c2", "s19jpro"))
    store.upsert_device(inv("b1", "south", "c1"))
    store.upsert_device({**inv("a1", "north", "c1"), "firmware": "openmos 0.2.0"})  # update, not duplicate
    assert [d["device"] for d in store.devices()] == ["a1", "a2", "b1"]
    assert [d["device"] for d in store.devices(site="north")] == ["a1", "a2"]
    assert [d["device"] for d in store.devices(site="north", container="c1")] == ["a1"]
    assert [d["device"] for d in store.devices(model="s19jpro")] == ["a2"]
    assert store.devices(site="north")[0]["firmware"] == "openmos 0.2.0"


def test_rollups_retention_and_tag_aggregates(store: FleetStore) -> None:
    for d, site in (("a1", "north"), ("a2", "north"), ("b1", "south")):
        store.upsert_device(inv(d, site, "c1"))
    day = 86400.0 * 100
    samples = [Sample(d, day + t, 200.0 if d != "b1" else 100.0, 3500.0 if d != "b1" else 3000.0, 65.0, True)
               for t in range(0, 7200, 60) for d in ("a1", "a2", "b1")]
    store.add_samples(samples)
    assert store.rollup(until=day + 7200) > 0
    five = store.series("a1", 300)
    assert len(five) == 24 and all(abs(h - 200.0) < 1e-9 for _, h, _ in five)
    hourly = store.series("a1", 3600)
    assert len(hourly) == 2 and abs(hourly[0][2] - 3500.0) < 1e-9
    by_site = store.aggregate_by_tag("site", 3600, since=day)
    assert by_site["north"]["hashrate_ths"] == pytest.approx(400.0)
    assert by_site["south"]["j_per_th"] == pytest.approx(30.0)
    totals = store.totals_series(3600, since=day)
    assert [round(h) for _, h, _ in totals] == [500, 500]
    assert [round(h) for _, h, _ in store.totals_series(3600, since=day, site="north")] == [400, 400]
    store.rollup(until=day + 7200)  # idempotent
    assert len(store.series("a1", 300)) == 24
    store.apply_retention(now=day + 40 * 86400)
    assert store.series("a1", 300) == [] and len(store.series("a1", 3600)) == 2
