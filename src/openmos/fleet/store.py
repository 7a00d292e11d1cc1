"""Inventory and telemetry store: SQLite by default, PostgreSQL for large sites -- one schema, one code path.

Raw samples are rolled up into 5-minute, hourly and daily buckets; retention drops raw samples and fine
rollups after configurable ages. Tags (site, container, rack, model, ...) live in their own table so
per-tag aggregates are plain SQL on either database. A device id is unique only within its site: every
table is keyed by (site, device), so two sites may each have a ``miner-1``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    """One statement sequence at a time on the connection: callers on several threads (the service's database
    thread, the dashboard's requests) never interleave transactions."""
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, FleetStore)
        with self._lock:
            if self._closed:
                raise RuntimeError("the fleet store is closed")
            try:
                return method(*args, **kwargs)
            except Exception:
                self._conn.rollback()  # never leave a half transaction open for the next caller
                raise
    return wrapper

ROLLUPS = (300, 3600, 86400)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device TEXT NOT NULL, site TEXT NOT NULL, model TEXT, serial TEXT, mac TEXT, firmware TEXT,
        ip TEXT, container TEXT, rack TEXT, slot TEXT, boards INTEGER, last_seen DOUBLE PRECISION,
        info TEXT, PRIMARY KEY (site, device))""",
    """CREATE TABLE IF NOT EXISTS device_tags (
        site TEXT NOT NULL, device TEXT NOT NULL, tag TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (site, device, tag))""",
    """CREATE TABLE IF NOT EXISTS samples (
        site TEXT NOT NULL, device TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, hashrate_ths DOUBLE PRECISION,
        power_w DOUBLE PRECISION, hottest_c DOUBLE PRECISION, online INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS samples_site_device_ts ON samples (site, device, ts)",
    """CREATE TABLE IF NOT EXISTS rollups (
        bucket_s INTEGER NOT NULL, bucket_start DOUBLE PRECISION NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL,
        hashrate_ths DOUBLE PRECISION, power_w DOUBLE PRECISION, hottest_c DOUBLE PRECISION,
        samples INTEGER NOT NULL, online_share DOUBLE PRECISION,
        PRIMARY KEY (bucket_s, bucket_start, site, device))""",
)
# A store written before devices were keyed by (site, device): its rows move to the new tables, each sample
# and rollup taking the site its device had in the inventory.
MIGRATE_V1 = (
    "ALTER TABLE devices RENAME TO devices_v1",
    "ALTER TABLE device_tags RENAME TO device_tags_v1",
    "ALTER TABLE samples RENAME TO samples_v1",
    "ALTER TABLE rollups RENAME TO rollups_v1",
    *SCHEMA,
    "INSERT INTO devices SELECT device, site, model, serial, mac, firmware, ip, container, rack, slot, boards, "
    "last_seen, info FROM devices_v1",
    "INSERT INTO device_tags SELECT d.site, t.device, t.tag, t.value FROM device_tags_v1 t "
    "JOIN devices_v1 d ON d.device = t.device",
    "INSERT INTO samples SELECT COALESCE(d.site, ''), s.device, s.ts, s.hashrate_ths, s.power_w, s.hottest_c, "
    "s.online FROM samples_v1 s LEFT JOIN devices_v1 d ON d.device = s.device",
    "INSERT INTO rollups SELECT r.bucket_s, r.bucket_start, COALESCE(d.site, ''), r.device, r.hashrate_ths, "
    "r.power_w, r.hottest_c, r.samples, r.online_share FROM rollups_v1 r LEFT JOIN devices_v1 d ON d.device = r.device",
    "DROP TABLE devices_v1", "DROP TABLE device_tags_v1", "DROP TABLE samples_v1", "DROP TABLE rollups_v1",
)


def _tag_joins(alias: str, tags: dict[str, str]) -> tuple[str, list[Any]]:
    """SQL joining table ``alias`` (with site and device columns) to ``device_tags`` once per tag to match, and its
    parameters (tag names and values are parameters, never SQL)."""
    sql, params = "", []
    for i, (tag, value) in enumerate(sorted(tags.items())):
        sql += (f" JOIN device_tags t{i} ON t{i}.site = {alias}.site AND t{i}.device = {alias}.device "
                f"AND t{i}.tag = ? AND t{i}.value = ?")
        params += [tag, value]
    return sql, params


@dataclass(frozen=True)
class Sample:
    site: str
    device: str
    ts: float
    hashrate_ths: float | None
    power_w: float | None
    hottest_c: float | None
    online: bool


class FleetStore:
    """``FleetStore("sqlite:///path.db")``, ``FleetStore("sqlite://")`` (memory) or ``postgresql://...``."""

    def __init__(self, url: str = "sqlite://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._closed = False
        if url.startswith("sqlite://"):
            path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
            self._conn: Any = sqlite3.connect(path if path == ":memory:" else "/" + path, check_same_thread=False)
            self._param = "?"
            self.kind = "sqlite"
        elif url.startswith(("postgresql://", "postgres://")):
            import psycopg

            self._conn = psycopg.connect(url, autocommit=False)
            self._param = "%s"
            self.kind = "postgresql"
        else:
            raise ValueError(f"unsupported store URL {url!r}: use sqlite:///file.db or postgresql://...")
        if self._has_v1_layout():
            for statement in MIGRATE_V1:
                self._exec(statement)
        for statement in SCHEMA:
            self._exec(statement)
        self._conn.commit()

    def _has_v1_layout(self) -> bool:
        """True for a store whose samples have no site column (devices keyed by id only)."""
        try:
            self._exec("SELECT device FROM samples WHERE 1 = 0")
        except Exception:
            self._conn.rollback()
            return False  # a new, empty database
        try:
            self._exec("SELECT site FROM samples WHERE 1 = 0")
        except Exception:
            self._conn.rollback()
            return True
        return False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._param)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cur = self._conn.cursor()
        cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    # -- inventory ------------------------------------------------------------------------------------

    @_locked
    def upsert_device(self, inv: dict[str, Any]) -> None:
        tags: dict[str, str] = {str(k): str(v) for k, v in inv.get("tags", {}).items()}
        cols = ("site", "device", "model", "serial", "mac", "firmware", "ip", "container", "rack", "slot",
                "boards", "last_seen", "info")
        values = [inv.get("site", ""), inv.get("device"), inv.get("model"), inv.get("serial"), inv.get("mac"),
                  inv.get("firmware"), inv.get("ip"), tags.get("container"), tags.get("rack"), tags.get("slot"),
                  inv.get("boards"), time.time(), json.dumps(inv, default=str)]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        self._exec(f"INSERT INTO devices ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                   f"ON CONFLICT (site, device) DO UPDATE SET {updates}", values)
        site = str(inv.get("site", ""))
        self._exec("DELETE FROM device_tags WHERE site = ? AND device = ?", [site, inv["device"]])
        all_tags = {"site": site, "model": inv.get("model") or "", **tags}
        self._many("INSERT INTO device_tags (site, device, tag, value) VALUES (?, ?, ?, ?)",
                   [(site, inv["device"], k, v) for k, v in all_tags.items()])
        self._conn.commit()

    @_locked
    def devices(self, **tags: str) -> list[dict[str, Any]]:
        """Devices whose tags match all of ``tags`` (e.g. site="north", container="c1")."""
        sql = "SELECT d.device, d.site, d.model, d.serial, d.firmware, d.container, d.rack, d.last_seen FROM devices d"
        joins, params = _tag_joins("d", tags)
        sql += joins
        rows = self._exec(sql + " ORDER BY d.device, d.site", params).fetchall()
        keys = ("device", "site", "model", "serial", "firmware", "container", "rack", "last_seen")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- telemetry ------------------------------------------------------------------------------------

    @_locked
    def add_samples(self, samples: Iterable[Sample]) -> None:
        rows = [(s.site, s.device, s.ts, s.hashrate_ths, s.power_w, s.hottest_c, int(s.online)) for s in samples]
        self._many("INSERT INTO samples (site, device, ts, hashrate_ths, power_w, hottest_c, online) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._conn.commit()

    @_locked
    def rollup(self, until: float) -> int:
        """Aggregate raw samples before ``until`` into every bucket size (idempotent: buckets are replaced)."""
        written = 0
        for bucket in ROLLUPS:
            end = until - until % bucket
            bstart = f"(CAST(ts / {bucket} AS INTEGER) * {bucket})" if self.kind == "sqlite" \
                else f"(FLOOR(ts / {bucket}) * {bucket})"
            rows = self._exec(
                f"SELECT {bstart} AS b, site, device, AVG(hashrate_ths), AVG(power_w), MAX(hottest_c), COUNT(*), "
                f"AVG(online) FROM samples WHERE ts < ? GROUP BY b, site, device", [end]).fetchall()
            self._many(
                "INSERT INTO rollups (bucket_s, bucket_start, site, device, hashrate_ths, power_w, hottest_c, "
                "samples, online_share) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (bucket_s, bucket_start, site, device) DO UPDATE "
                "SET hashrate_ths = excluded.hashrate_ths, power_w = excluded.power_w, hottest_c = excluded.hottest_c, "
                "samples = excluded.samples, online_share = excluded.online_share",
                [(bucket, float(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], float(r[7])) for r in rows])
            written += len(rows)
        self._conn.commit()
        return written

    @_locked
    def apply_retention(self, now: float, raw_s: float = 2 * 86400, five_min_s: float = 30 * 86400,
                        hourly_s: float = 365 * 86400) -> None:
        self._exec("DELETE FROM samples WHERE ts < ?", [now - raw_s])
        self._exec("DELETE FROM rollups WHERE bucket_s = 300 AND bucket_start < ?", [now - five_min_s])
        self._exec("DELETE FROM rollups WHERE bucket_s = 3600 AND bucket_start < ?", [now - hourly_s])
        self._conn.commit()

    @_locked
    def series(self, site: str, device: str, bucket_s: int) -> list[tuple[float, float, float]]:
        rows = self._exec("SELECT bucket_start, hashrate_ths, power_w FROM rollups WHERE site = ? AND device = ? "
                          "AND bucket_s = ? ORDER BY bucket_start", [site, device, bucket_s]).fetchall()
        return [(float(r[0]), float(r[1] or 0), float(r[2] or 0)) for r in rows]

    @_locked
    def totals_series(self, bucket_s: int, since: float, **tags: str) -> list[tuple[float, float, float]]:
        """(bucket start, total TH/s, total W) over time for every device matching ``tags``."""
        sql = "SELECT r.bucket_start, SUM(r.hashrate_ths), SUM(r.power_w) FROM rollups r"
        joins, params = _tag_joins("r", tags)
        sql += joins
        rows = self._exec(sql + " WHERE r.bucket_s = ? AND r.bucket_start >= ? GROUP BY r.bucket_start "
                          "ORDER BY r.bucket_start", [*params, bucket_s, since]).fetchall()
        return [(float(r[0]), float(r[1] or 0), float(r[2] or 0)) for r in rows]

    @_locked
    def aggregate_by_tag(self, tag: str, bucket_s: int, since: float) -> dict[str, dict[str, float]]:
        """Per tag value, the latest bucket since ``since``: total hashrate and power (sum over devices of their
        bucket averages) and J/TH."""
        rows = self._exec(
            "SELECT t.value, r.bucket_start, SUM(r.hashrate_ths), SUM(r.power_w) FROM rollups r "
            "JOIN device_tags t ON t.site = r.site AND t.device = r.device AND t.tag = ? "
            "WHERE r.bucket_s = ? AND r.bucket_start >= ? "
            "GROUP BY t.value, r.bucket_start ORDER BY t.value, r.bucket_start", [tag, bucket_s, since]).fetchall()
        out: dict[str, dict[str, float]] = {}
        for value, _, ths, watts in rows:
            out[value] = {"hashrate_ths": float(ths or 0), "power_w": float(watts or 0),
                          "j_per_th": float(watts or 0) / float(ths) if ths else 0.0}
        return out
