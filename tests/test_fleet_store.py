"""The fleet store passes the same suite on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    samples = [Sample("north" if d != "b1" else "south", d, day + t, 200.0 if d != "b1" else 100.0,
                      3500.0 if d != "b1" else 3000.0, 65.0, True)
               for t in range(0, 7200, 60) for d in ("a1", "a2", "b1")]
    store.add_samples(samples)
    assert store.rollup(until=day + 7200) > 0
    five = store.series("north", "a1", 300)
    assert len(five) == 24 and all(abs(h - 200.0) < 1e-9 for _, h, _ in five)
    hourly = store.series("north", "a1", 3600)
    assert len(hourly) == 2 and abs(hourly[0][2] - 3500.0) < 1e-9
    by_site = store.aggregate_by_tag("site", 3600, since=day)
    assert by_site["north"]["hashrate_ths"] == pytest.approx(400.0)
    assert by_site["south"]["j_per_th"] == pytest.approx(30.0)
    totals = store.totals_series(3600, since=day)
    assert [round(h) for _, h, _ in totals] == [500, 500]
    assert [round(h) for _, h, _ in store.totals_series(3600, since=day, site="north")] == [400, 400]
    store.rollup(until=day + 7200)  # idempotent
    assert len(store.series("north", "a1", 300)) == 24
    store.apply_retention(now=day + 40 * 86400)
    assert store.series("north", "a1", 300) == [] and len(store.series("north", "a1", 3600)) == 2


def test_the_same_device_id_at_two_sites_never_collides(store: FleetStore) -> None:
    """Attack: site B names a device like one of site A's; nothing of A's row, tags or history changes."""
    store.upsert_device(inv("miner-1", "north", "c1", "s21"))
    store.upsert_device(inv("miner-1", "south", "c9", "evil"))
    rows = {(d["site"], d["device"]): d for d in store.devices()}
    assert set(rows) == {("north", "miner-1"), ("south", "miner-1")}
    assert rows["north", "miner-1"]["model"] == "s21" and rows["north", "miner-1"]["container"] == "c1"
    assert [d["site"] for d in store.devices(container="c1")] == ["north"]
    assert [d["site"] for d in store.devices(model="evil")] == ["south"]
    day = 86400.0 * 100
    store.add_samples([Sample("north", "miner-1", day + t, 200.0, 3500.0, 65.0, True) for t in range(0, 3600, 60)]
                      + [Sample("south", "miner-1", day + t, 9e6, 1.0, 99.0, True) for t in range(0, 3600, 60)])
    store.rollup(until=day + 3600)
    assert [round(h) for _, h, _ in store.series("north", "miner-1", 3600)] == [200]
    assert [round(h) for _, h, _ in store.totals_series(3600, since=day, site="north")] == [200]
    assert store.aggregate_by_tag("model", 3600, since=day)["s21"]["hashrate_ths"] == pytest.approx(200.0)


def test_a_store_keyed_by_device_only_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE devices (device TEXT PRIMARY KEY, site TEXT NOT NULL, model TEXT, serial TEXT, mac TEXT,
            firmware TEXT, ip TEXT, container TEXT, rack TEXT, slot TEXT, boards INTEGER, last_seen DOUBLE PRECISION,
            info TEXT);
        CREATE TABLE device_tags (device TEXT NOT NULL, tag TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (device, tag));
        CREATE TABLE samples (device TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, hashrate_ths DOUBLE PRECISION,
            power_w DOUBLE PRECISION, hottest_c DOUBLE PRECISION, online INTEGER NOT NULL);
        CREATE INDEX samples_device_ts ON samples (device, ts);
        CREATE TABLE rollups (bucket_s INTEGER NOT NULL, bucket_start DOUBLE PRECISION NOT NULL, device TEXT NOT NULL,
            hashrate_ths DOUBLE PRECISION, power_w DOUBLE PRECISION, hottest_c DOUBLE PRECISION,
            samples INTEGER NOT NULL, online_share DOUBLE PRECISION, PRIMARY KEY (bucket_s, bucket_start, device));
        INSERT INTO devices (device, site, model) VALUES ('a1', 'north', 's21');
        INSERT INTO device_tags VALUES ('a1', 'site', 'north');
        INSERT INTO samples VALUES ('a1', 8640000.0, 200.0, 3500.0, 65.0, 1);
        INSERT INTO rollups VALUES (3600, 8640000.0, 'a1', 200.0, 3500.0, 65.0, 1, 1.0);
    """)
    conn.commit()
    conn.close()
    store = FleetStore(f"sqlite:///{db}")
    try:
        assert [(d["site"], d["device"]) for d in store.devices(site="north")] == [("north", "a1")]
        assert store.series("north", "a1", 3600) == [(8640000.0, 200.0, 3500.0)]
        store.upsert_device(inv("a1", "south", "c1"))
        assert len(store.devices()) == 2
    finally:
        store.close()
    FleetStore(f"sqlite:///{db}").close()  # opening a migrated store again changes nothing
