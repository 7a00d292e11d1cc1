"""cgminer API command handlers: one method per command, answering from the agent's ``DeviceView``.

Access: read-only commands for anyone who can connect (the default listen address is 127.0.0.1);
privileged commands only for addresses in an explicit allow list (``W:127.0.0.1/32``); wildcards and
anything wider than a /24 are refused when the configuration is loaded.

Dialect: the rows follow cgminer, plus the fields and commands of the LuxOS dialect (``luxos``: two-row
``stats``, ``power``, ``profiles``, sessions), so stock pyasic reads a device fully. The version row names
that dialect; the firmware it reports is OpenMOS. Device controls go through the control surface.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from openmos import __version__
from openmos.api.cgminer.luxos import DIALECT, Sessions, four_positions, mean, profile_rows
from openmos.api.cgminer.protocol import (
    ACCESS_DENIED,
    API_VERSION,
    CODES,
    INVALID_COMMAND,
    INVALID_PARAMETER,
    MISSING_PARAMETER,
    PRIVILEGED,
    READ_ONLY,
    UNSUPPORTED,
    BadRequest,
    answer,
    error_reply,
    status,
)
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.control import (
    Command,
    Curtail,
    Locate,
    Pause,
    Reboot,
    Resume,
    SetFrequency,
    SetTarget,
    Sleep,
    UnsupportedControl,
)
from openmos.control.commands import MAX_LOCATE_S, MAX_THS, MAX_WATTS
from openmos.miner.config import ConfigError, PoolEndpoint
from openmos.tuning.targets import PRESETS

log = logging.getLogger(__name__)




Handler = Callable[[str | None], Awaitable[dict[str, Any]]]


@dataclass
class CgminerApi:
    """Answers cgminer API requests from one agent."""

    view: DeviceView
    allow: AllowList = field(default_factory=AllowList)
    _sessions: Sessions = field(default_factory=Sessions)

    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]:
        return await answer(raw, lambda command, parameter: self._one(command, parameter, peer))

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
        except UnsupportedControl as exc:
            return error_reply(UNSUPPORTED, f"{command}: not supported here ({exc})")
        except (ValueError, IndexError, OverflowError) as exc:
            return error_reply(INVALID_PARAMETER, f"{command}: {str(exc)[:120]}")
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
                        [{"OpenMOS": __version__, "API": API_VERSION, "Type": self.view.agent.hardware.model,
                          "Miner": f"OpenMOS {__version__}", "Dialect": DIALECT}])

    async def _r_config(self, _: str | None) -> dict[str, Any]:
        boards = self.view.boards()
        return self._ok("config", "OpenMOS config", "CONFIG", [{
            "ASC Count": len(boards), "PGA Count": 0, "Pool Count": len(self.view.pools()),
            "Strategy": "Failover" if len(self.view.agent.pools.groups) == 1 else "Load Balance",
            "Log Interval": 5, "Device Code": "OpenMOS", "OS": "Linux", "Hotplug": "None",
            "Firmware": "OpenMOS", "Profile": profile_rows(self.view)[0]["Profile Name"],
            "RedLed": "blink" if self.view.control.locating else "off"}])

    async def _r_profiles(self, _: str | None) -> dict[str, Any]:
        return self._ok("profiles", "Profiles", "PROFILES", profile_rows(self.view))

    async def _r_groups(self, _: str | None) -> dict[str, Any]:
        rows = [{"GROUP": i, "Name": g.name, "Quota": g.quota} for i, g in enumerate(self.view.agent.pools.groups)]
        return self._ok("groups", f"{len(rows)} Group(s)", "GROUPS", rows)

    async def _r_tempctrl(self, _: str | None) -> dict[str, Any]:
        perf = self.view.agent.config.performance
        return self._ok("tempctrl", "Temperature control", "TEMPCTRL", [{
            "Target": perf.target_c, "Hot": perf.hot_c, "Dangerous": perf.dangerous_c,
            "Mode": "Manual" if perf.cooling == "manual" else "Auto"}])

    async def _r_atm(self, _: str | None) -> dict[str, Any]:
        return self._ok("atm", "ATM", "ATM", [{"Enabled": False}])  # the autotuner is not LuxOS's ATM

    async def _r_session(self, _: str | None) -> dict[str, Any]:
        return self._ok("session", "Session", "SESSION", [{"SessionID": ""}])  # sessions are never shared

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
        # OpenMOS share accounting (extra keys: cgminer clients such as pyasic ignore what they do not know)
        row |= {f"OpenMOS {k.replace('_', ' ').title()}": val for k, val in v.share_accounting(pools).items()}
        return row

    async def _r_summary(self, _: str | None) -> dict[str, Any]:
        return self._ok("summary", "Summary", "SUMMARY", [self._summary_row()])

    async def _r_pools(self, _: str | None) -> dict[str, Any]:
        groups = {g.name: i for i, g in enumerate(self.view.agent.pools.groups)}
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
            "Queued Shares": p.queued, "Lost Shares": p.lost, "GROUP": groups.get(p.group, 0),
            "Superseded Shares": p.superseded, "Throttled Shares": p.throttled,
            "Unrecoverable Shares": p.unrecoverable, "Resent Duplicates": p.resent_duplicates,
            "Resumed Sessions": p.resumed_sessions, "Difficulty Refused": p.difficulty_refused,
            "Difficulty Governed": p.difficulty_governed, "Difficulty Slow": p.difficulty_slow,
            "Mining Difficulty": p.mining_difficulty, "Governor Active": p.governor_active,
            "Quality Failures": p.quality_failures, "Backoff": p.backoff_s, "Bad For": p.bad_for_s,
            "Last Error": p.last_error, "Liveness Probes": p.liveness_probes, "Probe Answers": p.probe_answers,
            "Stall Suspicions": p.stall_suspicions,
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
                "Frequency": mean([c.frequency_mhz for c in b.chips if c.frequency_mhz]),
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
        """Two rows like cgminer-based Antminer firmwares: [0] identity, [1] figures."""
        v = self.view
        ident = {"STATS": 0, "ID": "OMOS0", "Type": v.agent.hardware.model, "Miner": f"OpenMOS {__version__}",
                 "CompileTime": "", "Elapsed": v.uptime_s}
        row: dict[str, Any] = {"STATS": 1, "ID": "OMOS1", "Elapsed": v.uptime_s, "Type": v.agent.hardware.model,
                               "Miner": f"OpenMOS {__version__}", "GHS 5s": v.hashrate(5) / 1e9,
                               "GHS av": v.hashrate(900) / 1e9, "miner_count": len(v.boards()),
                               "fan_num": len(v.fans()), "Hashrate Source": "modelled" if v.modelled else "measured",
                               "rate_unit": "GH"}
        tel = v.agent.telemetry()
        if tel.nominal_hashrate_ths:
            row["total_rateideal"] = tel.nominal_hashrate_ths * 1000  # GH/s
        for i, rpm, _duty in v.fans():
            row[f"fan{i + 1}"] = rpm
        for b in v.boards():
            n = b.index + 1
            row[f"chain_rate{n}"] = b.hashrate_ths * 1000
            row[f"chain_acn{n}"] = sum(1 for c in b.chips if c.enabled)
            row[f"chain_acs{n}"] = "".join("o" if c.enabled else "x" for c in b.chips)
            row[f"chain_hw{n}"] = b.hardware_errors
            # Four sensor positions as "a-b-c-d" (whole degrees), the hottest reading at each: what readers of
            # this dialect average to one board and one chip temperature.
            row[f"temp_pcb{n}"] = four_positions(b.temperatures_c)
            row[f"temp_chip{n}"] = four_positions(b.chip_temperatures_c)
            row[f"chain_vol{n}"] = b.voltage_v or 0
        return self._ok("stats", "CGMiner stats", "STATS", [ident, row])

    async def _r_power(self, _: str | None) -> dict[str, Any]:
        watts = self.view.power_w
        return self._ok("power", "Power", "POWER", [{
            "Watts": round(watts) if watts is not None else 0, "PSU": watts is not None,
            "Source": "modelled" if self.view.modelled else "measured"}])

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
        items = [x.strip() for x in (p or "").split(",")]
        if items == [""]:
            raise BadRequest(MISSING_PARAMETER, "poolpriority needs pool numbers in the new order")
        if not all(x.isdigit() for x in items):
            raise BadRequest(INVALID_PARAMETER, "poolpriority needs pool numbers separated by commas")
        if len(set(items)) != len(items):
            raise BadRequest(INVALID_PARAMETER, "poolpriority: duplicate pool specified")
        conns = [self.view.agent.pools.locate(self._pool_index(x)) for x in items]  # all valid before moving
        placed: dict[int, int] = {}  # per group: how many listed pools were put first
        for group, conn in conns:
            position = placed.get(id(group), 0)
            group.move_to(conn, position)
            placed[id(group)] = position + 1
        return self._ok("poolpriority", "Changed pool priorities")

    # Device controls go through the control surface, like REST, the fleet and energy.

    async def _control(self, command: Command, name: str, msg: str) -> dict[str, Any]:
        ack = await self.view.control.execute(command)
        return self._ok(name, f"{msg}: {ack.message}" if ack.message else msg)

    async def _w_pause(self, _: str | None) -> dict[str, Any]:
        return await self._control(Pause(), "pause", "Mining paused")

    async def _w_resume(self, _: str | None) -> dict[str, Any]:
        return await self._control(Resume(), "resume", "Mining resumed")

    async def _w_restart(self, _: str | None) -> dict[str, Any]:
        return await self._control(Reboot(), "restart", "Restarting pool connections")

    # LuxOS-style session commands: a session comes from ``logon`` (privileged, so only allow-listed hosts
    # get one); ``curtail`` and ``profileset`` then carry it as their first parameter.

    async def _w_logon(self, _: str | None) -> dict[str, Any]:
        return self._ok("logon", "Session created", "SESSION", [{"SessionID": self._sessions.open()}])

    async def _w_logoff(self, p: str | None) -> dict[str, Any]:
        self._sessions.close(p)
        return self._ok("logoff", "Session closed")

    async def _w_curtail(self, p: str | None) -> dict[str, Any]:
        args = self._sessions.arguments(p, "curtail")
        mode = args[0].lower() if args else ""
        if mode not in ("sleep", "wakeup"):
            raise BadRequest(INVALID_PARAMETER, "curtail needs sleep or wakeup")
        return await self._control(Sleep() if mode == "sleep" else Resume(), "curtail", f"curtail {mode}")

    async def _w_ledset(self, p: str | None) -> dict[str, Any]:
        """``ledset|SESSION,red,on|blink|off``: pyasic's fault light, i.e. the device's locate (off ends it)."""
        args = [a.lower() for a in self._sessions.arguments(p, "ledset")]
        if len(args) != 2 or args[0] != "red" or args[1] not in ("on", "blink", "off"):
            raise BadRequest(INVALID_PARAMETER, "ledset needs red,on|blink|off")
        return await self._control(Locate(0.0 if args[1] == "off" else MAX_LOCATE_S), "ledset", f"LED {args[1]}")

    async def _w_resetminer(self, p: str | None) -> dict[str, Any]:
        """``resetminer|SESSION``: restart mining (pool connections), like ``restart``."""
        self._sessions.arguments(p, "resetminer")
        return await self._control(Reboot(), "resetminer", "Restarting pool connections")

    async def _w_profileset(self, p: str | None) -> dict[str, Any]:
        args = self._sessions.arguments(p, "profileset")
        name = args[0].lower() if args else ""
        current = profile_rows(self.view)[0]["Profile Name"]
        if name == current:  # the running target: nothing to change
            reply = self._ok("profileset", "Profile unchanged")
        elif name in PRESETS:
            reply = await self._control(SetTarget(profile=name), "profileset", "Profile set")
        else:
            raise BadRequest(INVALID_PARAMETER, f"profile must be one of {', '.join([current, *PRESETS])}")
        reply["PROFILE"] = [{"Profile": name}]
        return reply

    async def _w_ascset(self, p: str | None) -> dict[str, Any]:
        """``N,freq,MHz`` (all chips of board N; -1 all boards), ``0,power,W``, ``0,hashrate,THs``,
        ``0,profile,eco`` or ``0,curtail,FRACTION`` (0 = sleep)."""
        parts = (p or "").split(",")
        if len(parts) != 3:
            raise BadRequest(MISSING_PARAMETER, "ascset needs N,option,value")
        board, option, value = parts[0].strip(), parts[1].strip().lower(), parts[2].strip()
        command: Command
        if option == "freq":
            if not board.lstrip("-").isdigit() or len(board) > 5:
                raise BadRequest(INVALID_PARAMETER, "ascset freq needs a board number")
            command = SetFrequency(int(board), _number(value, "frequency (MHz)", 10_000))
        elif option == "power":
            command = SetTarget(power_w=_number(value, "power (W)", MAX_WATTS))
        elif option == "hashrate":
            command = SetTarget(hashrate_ths=_number(value, "hashrate (TH/s)", MAX_THS))
        elif option == "profile":
            command = SetTarget(profile=value)
        elif option == "curtail":
            try:
                command = Curtail(fraction=float(value))
            except (ValueError, OverflowError):
                raise BadRequest(INVALID_PARAMETER, "curtail needs a fraction between 0 and 1") from None
        else:
            raise BadRequest(INVALID_PARAMETER, "unknown ascset option (freq, power, hashrate, profile, curtail)")
        return await self._control(command, "ascset", f"ascset {option} done")


def _number(text: str, what: str, upper: float) -> float:
    """A finite, positive number no larger than ``upper`` (NaN, inf, 1e400 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(INVALID_PARAMETER, f"{what} must be a number") from None
    if not math.isfinite(value) or not 0 < value <= upper:
        raise BadRequest(INVALID_PARAMETER, f"{what} must be between 0 and {upper:g}")
    return value
