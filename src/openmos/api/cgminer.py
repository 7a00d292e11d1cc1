"""cgminer-compatible TCP API (port 4028): what pyasic, Awesome Miner, Foreman and friends speak.

One request per connection: JSON ``{"command": "summary", "parameter": "..."}`` or plain ``cmd|param``;
read-only commands combine with ``+``. Replies are JSON with a STATUS array and end with a NUL byte, then
the server closes. The identity reported is OpenMOS -- never another firmware's.

Access: read-only commands for anyone who can connect (the default listen address is 127.0.0.1);
privileged commands only for addresses in an explicit allow list (``W:127.0.0.1/32``). A wildcard entry
(``0.0.0.0/0``, ``::/0``) is refused when the configuration is loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmos import __version__
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.miner.config import ConfigError, PoolEndpoint
from openmos.tuning import PerformanceTarget

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
API_VERSION = "3.7"

READ_ONLY = ("version", "config", "summary", "pools", "devs", "edevs", "devdetails", "stats", "estats",
             "fans", "temps", "tunerstatus", "coin", "check", "asccount")
PRIVILEGED = ("addpool", "removepool", "switchpool", "enablepool", "disablepool", "poolpriority", "pause",
              "resume", "restart", "ascset")

# Status codes (cgminer's numbering where it has one).
CODES = {
    "pools": 7, "devs": 9, "summary": 11, "version": 22, "config": 33, "stats": 70, "coin": 78,
    "devdetails": 69, "asccount": 104, "check": 72, "edevs": 9, "estats": 70, "fans": 202, "temps": 201,
    "tunerstatus": 203, "addpool": 55, "removepool": 68, "switchpool": 27, "enablepool": 47,
    "disablepool": 48, "poolpriority": 73, "pause": 204, "resume": 205, "restart": 7, "ascset": 120,
}
INVALID_COMMAND = 14
MISSING_PARAMETER = 15
INVALID_PARAMETER = 16
INVALID_JSON = 23
ACCESS_DENIED = 45


@dataclass(frozen=True)
class Request:
    commands: list[str]
    parameter: str | None
    json_style: bool


class BadRequest(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_request(raw: bytes) -> Request:
    """Decode a request (pure; BadRequest explains what is wrong)."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadRequest(INVALID_JSON, f"request longer than {MAX_REQUEST_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace").strip().rstrip("\x00").strip()
    if not text:
        raise BadRequest(INVALID_COMMAND, "empty request")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise BadRequest(INVALID_JSON, "invalid JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("command"), str):
            raise BadRequest(INVALID_JSON, 'JSON request needs a "command" string')
        param = obj.get("parameter")
        if (param is not None and not isinstance(param, str | int | float)) or isinstance(param, bool):
            raise BadRequest(INVALID_PARAMETER, "parameter must be a string or a number")
        command, parameter, json_style = obj["command"], None if param is None else str(param), True
    else:
        command, _, rest = text.partition("|")
        parameter, json_style = (rest if rest else None), False
    commands = [c.strip().lower() for c in command.split("+")]
    if not all(c and c.isascii() and c.replace("_", "").isalnum() and len(c) <= 32 for c in commands):
        raise BadRequest(INVALID_COMMAND, "invalid command name")
    if len(commands) > 1 and any(c in PRIVILEGED for c in commands):
        raise BadRequest(INVALID_COMMAND, "privileged commands cannot be combined with +")
    return Request(commands, parameter, json_style)


def status(kind: str, code: int, msg: str) -> list[dict[str, Any]]:
    return [{"STATUS": kind, "When": int(time.time()), "Code": code, "Msg": msg,
             "Description": f"OpenMOS {__version__}"}]


def error_reply(code: int, msg: str) -> dict[str, Any]:
    return {"STATUS": status("E", code, msg), "id": 1}


Handler = Callable[[str | None], Awaitable[dict[str, Any]]]


@dataclass
class CgminerApi:
    """Answers cgminer API requests from one agent."""

    view: DeviceView
    allow: AllowList = field(default_factory=AllowList)

    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]:
        try:
            req = parse_request(raw)
        except BadRequest as exc:
            return error_reply(exc.code, str(exc))
        if len(req.commands) == 1:
            return await self._one(req.commands[0], req.parameter, peer)
        combined: dict[str, Any] = {}
        for command in req.commands:
            combined[command] = [await self._one(command, req.parameter, peer)]
        combined["id"] = 1
        return combined

    async def _one(self, command: str, parameter: str | None, peer: str) -> dict[str, Any]:
        if command in PRIVILEGED:
            if not self.allow.permits(peer):
                log.warning("cgminer api: refused privileged %r from %s (not in the allow list)", command, peer)
                return error_reply(ACCESS_DENIED, f"Access denied to '{command}' command")
            handler = getattr(self, f"_w_{command}")
        elif command in READ_ONLY:
            handler = getattr(self, f"_r_{command}")
        else:
            return error_reply(INVALID_COMMAND, "Invalid command")
        try:
            result: dict[str, Any] = await handler(parameter)
        except BadRequest as exc:
            return error_reply(exc.code, str(exc))
        except (ValueError, IndexError) as exc:
            return error_reply(INVALID_PARAMETER, f"{command}: {exc}")
        result.setdefault("id", 1)
        return result

    def _ok(self, command: str, msg: str, section: str | None = None,
            rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"STATUS": status("S", CODES[command], msg)}
        if section is not None:
            out[section] = rows or []
        return out

    # -- read-only ------------------------------------------------------------------------------------

    async def _r_version(self, _: str | None) -> dict[str, Any]:
        return self._ok("version", "OpenMOS versions", "VERSION",
                        [{"OpenMOS": __version__, "API": API_VERSION, "Type": self.view.agent.hardware.model}])

    async def _r_config(self, _: str | None) -> dict[str, Any]:
        boards = self.view.boards()
        return self._ok("config", "OpenMOS config", "CONFIG", [{
            "ASC Count": len(boards), "PGA Count": 0, "Pool Count": len(self.view.pools()),
            "Strategy": "Failover" if len(self.view.agent.pools.groups) == 1 else "Load Balance",
            "Log Interval": 5, "Device Code": "OpenMOS", "OS": "Linux", "Hotplug": "None",
            "Firmware": "OpenMOS"}])

    def _summary_row(self) -> dict[str, Any]:
        v, stats = self.view, self.view.agent.stats
        pools = v.pools()
        acc = sum(p.accepted for p in pools)
        rej = sum(p.rejected for p in pools)
        stale = sum(p.stale for p in pools)
        elapsed = max(v.uptime_s, 1)
        mhs = {w: v.hashrate(s) / 1e6 for w, s in (("5s", 5), ("1m", 60), ("5m", 300), ("15m", 900))}
        total = acc + rej + stale
        row = {
            "Elapsed": elapsed, "MHS av": v.hashrate(900) / 1e6, "MHS 5s": mhs["5s"], "MHS 1m": mhs["1m"],
            "MHS 5m": mhs["5m"], "MHS 15m": mhs["15m"], "Found Blocks": stats.block_candidates,
            "Accepted": acc, "Rejected": rej, "Hardware Errors": stats.hardware_errors,
            "Utility": acc / elapsed * 60, "Stale": stale,
            "Difficulty Accepted": sum(p.accepted_difficulty for p in pools),
            "Difficulty Rejected": sum(p.rejected_difficulty for p in pools), "Difficulty Stale": 0.0,
            "Best Share": max((p.best_share for p in pools), default=0.0),
            "Device Hardware%": 100.0 * stats.hardware_errors / max(stats.valid_nonces + stats.hardware_errors, 1),
            "Pool Rejected%": 100.0 * rej / total if total else 0.0,
            "Pool Stale%": 100.0 * stale / total if total else 0.0,
            "Power": v.power_w if v.power_w is not None else 0.0,
            "Hashrate Source": "modelled" if v.modelled else "measured",
            "Paused": v.agent.paused,
        }
        return row

    async def _r_summary(self, _: str | None) -> dict[str, Any]:
        return self._ok("summary", "Summary", "SUMMARY", [self._summary_row()])

    async def _r_pools(self, _: str | None) -> dict[str, Any]:
        rows = [{
            "POOL": p.index, "URL": p.url, "Status": p.status, "Priority": p.priority, "Quota": p.quota,
            "Long Poll": "N", "Getworks": 0, "Accepted": p.accepted, "Rejected": p.rejected, "Works": 0,
            "Discarded": 0, "Stale": p.stale, "Get Failures": 0, "Remote Failures": 0, "User": p.user,
            "Last Share Time": int(p.last_share_time), "Diff1 Shares": 0, "Proxy Type": "", "Proxy": "",
            "Difficulty Accepted": p.accepted_difficulty, "Difficulty Rejected": p.rejected_difficulty,
            "Difficulty Stale": 0.0, "Last Share Difficulty": p.difficulty, "Has Stratum": True,
            "Stratum Active": p.active, "Stratum URL": p.url.split("://", 1)[-1].split(":")[0],
            "Stratum Difficulty": p.difficulty, "Has Vmask": p.has_vmask, "Has GBT": False,
            "Best Share": p.best_share, "Pool Rejected%": 0.0, "Pool Stale%": 0.0, "Group": p.group,
            "Queued Shares": p.queued, "Lost Shares": p.lost,
        } for p in self.view.pools()]
        return self._ok("pools", f"{len(rows)} Pool(s)", "POOLS", rows)

    def _dev_rows(self) -> list[dict[str, Any]]:
        rows = []
        for b in self.view.boards():
            temps = b.chip_temperatures_c or b.temperatures_c
            rows.append({
                "ASC": b.index, "Name": "OMOS", "ID": b.index, "Enabled": "Y" if b.enabled else "N",
                "Status": "Alive" if b.enabled else "Disabled",
                "Temperature": max(temps) if temps else 0.0, "MHS av": b.hashrate_ths * 1e6,
                "MHS 5s": b.hashrate_ths * 1e6, "Accepted": 0, "Rejected": 0,
                "Hardware Errors": b.hardware_errors, "Utility": 0.0, "Last Share Pool": -1,
                "Chips": sum(1 for c in b.chips if c.enabled), "Expected Chips": len(b.chips),
                "Voltage": b.voltage_v or 0.0,
                "Frequency": _mean([c.frequency_mhz for c in b.chips if c.frequency_mhz]),
            })
        return rows

    async def _r_devs(self, _: str | None) -> dict[str, Any]:
        rows = self._dev_rows()
        return self._ok("devs", f"{len(rows)} ASC(s)", "DEVS", rows)

    async def _r_edevs(self, p: str | None) -> dict[str, Any]:
        return await self._r_devs(p)

    async def _r_asccount(self, _: str | None) -> dict[str, Any]:
        return self._ok("asccount", "ASC count", "ASCS", [{"Count": len(self.view.boards())}])

    async def _r_devdetails(self, _: str | None) -> dict[str, Any]:
        rows = [{"DEVDETAILS": b.index, "Name": "OMOS", "ID": b.index, "Driver": "openmos",
                 "Kernel": "", "Model": self.view.agent.hardware.model, "Device Path": "",
                 "Chips": len(b.chips)} for b in self.view.boards()]
        return self._ok("devdetails", "Device Details", "DEVDETAILS", rows)

    async def _r_stats(self, _: str | None) -> dict[str, Any]:
        v = self.view
        row: dict[str, Any] = {"STATS": 0, "ID": "OMOS0", "Elapsed": v.uptime_s, "Type": v.agent.hardware.model,
                               "Miner": f"OpenMOS {__version__}", "GHS 5s": v.hashrate(5) / 1e9,
                               "GHS av": v.hashrate(900) / 1e9, "miner_count": len(v.boards()),
                               "fan_num": len(v.fans()), "Hashrate Source": "modelled" if v.modelled else "measured"}
        tel = v.agent.telemetry()
        if tel.nominal_hashrate_ths:
            row["total_rateideal"] = tel.nominal_hashrate_ths * 1000  # GH/s
        for i, rpm, _duty in v.fans():
            row[f"fan{i + 1}"] = rpm
        for b in v.boards():
            n = b.index + 1
            row[f"chain_rate{n}"] = b.hashrate_ths * 1000
            row[f"chain_acn{n}"] = sum(1 for c in b.chips if c.enabled)
            row[f"chain_hw{n}"] = b.hardware_errors
            row[f"temp_pcb{n}"] = max(b.temperatures_c) if b.temperatures_c else 0
            row[f"temp_chip{n}"] = max(b.chip_temperatures_c) if b.chip_temperatures_c else 0
            row[f"chain_vol{n}"] = b.voltage_v or 0
        return self._ok("stats", "CGMiner stats", "STATS", [row])

    async def _r_estats(self, p: str | None) -> dict[str, Any]:
        return await self._r_stats(p)

    async def _r_fans(self, _: str | None) -> dict[str, Any]:
        rows = [{"FAN": i, "ID": i, "RPM": rpm, "Speed": duty} for i, rpm, duty in self.view.fans()]
        return self._ok("fans", f"{len(rows)} Fan(s)", "FANS", rows)

    async def _r_temps(self, _: str | None) -> dict[str, Any]:
        rows = [{"TEMPS": b.index, "ID": b.index, "Board": max(b.temperatures_c, default=0.0),
                 "Chip": max(b.chip_temperatures_c, default=0.0)} for b in self.view.boards()]
        return self._ok("temps", f"{len(rows)} Temp(s)", "TEMPS", rows)

    async def _r_tunerstatus(self, _: str | None) -> dict[str, Any]:
        tuner = self.view.agent.tuner
        if tuner is None:
            return self._ok("tunerstatus", "Tuner", "TUNERSTATUS", [{"TunerState": "DISABLED"}])
        s = tuner.status
        return self._ok("tunerstatus", "Tuner", "TUNERSTATUS", [{
            "TunerState": s.state.value, "Phase": s.phase, "Percent": round(s.percent, 1),
            "Target": s.target, "EffectiveTarget": s.effective_target, "PowerW": s.power_w,
            "DPSSteps": s.dps_steps, "DeadChips": len(s.dead_chips), "Message": s.message}])

    async def _r_coin(self, _: str | None) -> dict[str, Any]:
        return self._ok("coin", "OpenMOS coin", "COIN", [{"Hash Method": "sha256", "Current Block Time": 0,
                                                          "Current Block Hash": "", "LP": False,
                                                          "Network Difficulty": 0}])

    async def _r_check(self, p: str | None) -> dict[str, Any]:
        if not p:
            raise BadRequest(MISSING_PARAMETER, "check needs a command name")
        name = p.strip().lower()
        exists = name in READ_ONLY or name in PRIVILEGED
        return self._ok("check", "Check command", "CHECK", [{"Exists": "Y" if exists else "N",
                                                            "Access": "Y" if name in READ_ONLY else "N"}])

    # -- privileged -----------------------------------------------------------------------------------

    def _pool_index(self, p: str | None) -> int:
        if p is None or not p.strip().lstrip("-").isdigit():
            raise BadRequest(MISSING_PARAMETER, "a pool number is required")
        index = int(p)
        if not 0 <= index < len(self.view.pools()):
            raise BadRequest(INVALID_PARAMETER, f"invalid pool id {index}")
        return index

    async def _w_addpool(self, p: str | None) -> dict[str, Any]:
        parts = (p or "").split(",")
        if len(parts) < 2:
            raise BadRequest(MISSING_PARAMETER, "addpool needs url,user[,password]")
        try:
            endpoint = PoolEndpoint.checked(parts[0], parts[1], parts[2] if len(parts) > 2 else "x")
        except ConfigError as exc:
            raise BadRequest(INVALID_PARAMETER, f"invalid pool: {exc}") from None
        self.view.agent.pools.groups[0].add(endpoint)
        return self._ok("addpool", f"Added pool '{endpoint.url}'")

    async def _w_removepool(self, p: str | None) -> dict[str, Any]:
        group, conn = self.view.agent.pools.locate(self._pool_index(p))
        await group.remove(conn)
        return self._ok("removepool", f"Removed pool {p}")

    async def _w_switchpool(self, p: str | None) -> dict[str, Any]:
        group, conn = self.view.agent.pools.locate(self._pool_index(p))
        conn.enabled = True
        group.move_to(conn, 0)
        return self._ok("switchpool", f"Switching to pool {p}")

    async def _w_enablepool(self, p: str | None) -> dict[str, Any]:
        group, conn = self.view.agent.pools.locate(self._pool_index(p))
        group.set_enabled(conn, True)
        return self._ok("enablepool", f"Enabled pool {p}")

    async def _w_disablepool(self, p: str | None) -> dict[str, Any]:
        group, conn = self.view.agent.pools.locate(self._pool_index(p))
        group.set_enabled(conn, False)
        return self._ok("disablepool", f"Disabled pool {p}")

    async def _w_poolpriority(self, p: str | None) -> dict[str, Any]:
        order = [int(x) for x in (p or "").split(",") if x.strip().isdigit()]
        if not order:
            raise BadRequest(MISSING_PARAMETER, "poolpriority needs pool numbers in the new order")
        conns = [self.view.agent.pools.locate(self._pool_index(str(i))) for i in order]
        for position, (group, conn) in enumerate(conns):
            group.move_to(conn, position)
        return self._ok("poolpriority", "Changed pool priorities")

    async def _w_pause(self, _: str | None) -> dict[str, Any]:
        await self.view.agent.pause()
        return self._ok("pause", "Mining paused")

    async def _w_resume(self, _: str | None) -> dict[str, Any]:
        await self.view.agent.resume()
        return self._ok("resume", "Mining resumed")

    async def _w_restart(self, _: str | None) -> dict[str, Any]:
        await self.view.agent.restart()
        return self._ok("restart", "Restarting pool connections")

    async def _w_ascset(self, p: str | None) -> dict[str, Any]:
        """``N,freq,MHz`` (all chips of board N), ``0,power,W``, ``0,hashrate,THs`` or ``0,profile,eco``."""
        parts = (p or "").split(",")
        if len(parts) != 3:
            raise BadRequest(MISSING_PARAMETER, "ascset needs N,option,value")
        board, option, value = parts[0].strip(), parts[1].strip().lower(), parts[2].strip()
        agent = self.view.agent
        if option == "freq":
            n = int(board)
            if not 0 <= n < len(agent.telemetry().boards):
                raise BadRequest(INVALID_PARAMETER, f"no board {n}")
            chips = len(agent.telemetry().boards[n].chips)
            for chip in range(chips):
                await agent.hardware.set_chip_frequency(n, chip, float(value))
            return self._ok("ascset", f"ASC {n} frequency set to {float(value):g} MHz")
        if agent.tuner is None:
            raise BadRequest(INVALID_PARAMETER, "no autotuner on this hardware")
        limits = agent.hardware.limits()
        if option not in ("power", "hashrate", "profile"):
            raise BadRequest(INVALID_PARAMETER, f"unknown ascset option {option!r}")
        target = PerformanceTarget.choose(
            power_w=float(value) if option == "power" else None,
            hashrate_ths=float(value) if option == "hashrate" else None,
            profile=value if option == "profile" else None,
            nameplate_w=(limits.nameplate_power_w if limits else None) or 0.0)
        await agent.tuner.set_target(target)
        return self._ok("ascset", f"target set to {target}")


def _mean(values: list[float | None]) -> float:
    nums = [v for v in values if v is not None]
    return sum(nums) / len(nums) if nums else 0.0


class Responder(Protocol):
    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]: ...


class CgminerServer:
    """asyncio TCP server speaking the cgminer wire format in front of a responder (:class:`CgminerApi`, or
    a simulated device)."""

    def __init__(self, api: Responder, host: str = "127.0.0.1", port: int = 4028) -> None:
        self.api = api
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        allow = getattr(self.api, "allow", None)
        networks = ", ".join(str(n) for n in allow.networks) if allow is not None else ""
        log.info("cgminer API on %s:%d (privileged for %s)", self.host, self.port, networks or "nobody")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes:
        data = b""
        while len(data) <= MAX_REQUEST_BYTES:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), READ_TIMEOUT_S if not data else 0.25)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            text = data.strip().rstrip(b"\x00")
            if text.startswith(b"{"):
                try:
                    json.loads(text)
                    break
                except ValueError:
                    continue
            elif text:
                break  # plain cmd|param arrives in one write
        return data

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            raw = await self._read_request(reader)
            try:
                reply = await self.api.respond(raw, peer)
            except Exception:  # a bug must not take the API down: answer with an error STATUS
                log.exception("cgminer api: internal error on %.80r", raw)
                reply = error_reply(INVALID_COMMAND, "internal error")
            writer.write(json.dumps(reply).encode() + b"\x00")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
