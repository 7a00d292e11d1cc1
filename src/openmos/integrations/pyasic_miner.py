"""An optional pyasic class for OpenMOS devices, for what stock pyasic cannot express.

Stock pyasic needs nothing from this project: ``pyasic.get_miner(ip)`` finds an OpenMOS device through the
LuxOS dialect of the cgminer API it answers (see ``openmos.api.cgminer.handlers``) and ``get_data()`` reads
hashrate, power, boards, temperatures, fans and pools; stop/resume and preset power limits work through
LuxOS sessions. This class adds exact power targets in watts (not just presets), pool replacement, the
OpenMOS-only fields (tuner state, "modelled" vs "measured") and works on any port::

    miner = OpenMOSMiner("10.0.0.5")            # cgminer API on 4028
    data = await miner.get_data()               # hashrate, wattage, boards, fans, pools ...
    await miner.set_power_limit(3000)           # needs this host in the device's API allow list
    await miner.send_pools([("stratum+tcp://pool.example:3333", "me.rig")])
    await miner.reboot()                        # restarts the pool side of the agent

Everything goes through the device's cgminer-compatible API.
"""

from __future__ import annotations

from typing import Any

from pyasic.data import Fan, HashBoard
from pyasic.data.pools import PoolMetrics, PoolUrl
from pyasic.device.algorithm import MinerAlgo
from pyasic.errors import APIError
from pyasic.miners.base import BaseMiner
from pyasic.miners.data import DataFunction, DataLocations, DataOptions, RPCAPICommand
from pyasic.rpc.cgminer import CGMinerRPCAPI


class OpenMOSRPCAPI(CGMinerRPCAPI):
    """cgminer API plus OpenMOS's extra read commands (so pyasic's multicommand checks accept them)."""

    async def fans(self) -> dict[str, Any]:
        return await self.send_command("fans")

    async def temps(self) -> dict[str, Any]:
        return await self.send_command("temps")

    async def tunerstatus(self) -> dict[str, Any]:
        return await self.send_command("tunerstatus")


def _loc(name: str, *cmds: str) -> DataFunction:
    return DataFunction(name, [RPCAPICommand(f"rpc_{c}", c) for c in cmds])


OPENMOS_DATA_LOC = DataLocations(**{
    str(DataOptions.HASHRATE): _loc("_get_hashrate", "summary"),
    str(DataOptions.EXPECTED_HASHRATE): _loc("_get_expected_hashrate", "stats"),
    str(DataOptions.HASHBOARDS): _loc("_get_hashboards", "devs", "temps"),
    str(DataOptions.WATTAGE): _loc("_get_wattage", "summary"),
    str(DataOptions.WATTAGE_LIMIT): _loc("_get_wattage_limit", "tunerstatus"),
    str(DataOptions.FANS): _loc("_get_fans", "fans"),
    str(DataOptions.UPTIME): _loc("_get_uptime", "summary"),
    str(DataOptions.POOLS): _loc("_get_pools", "pools"),
    str(DataOptions.FW_VERSION): _loc("_get_fw_ver", "version"),
    str(DataOptions.API_VERSION): _loc("_get_api_ver", "version"),
    str(DataOptions.IS_MINING): _loc("_is_mining", "summary"),
})


def _section(data: dict[str, Any] | None, name: str) -> list[dict[str, Any]]:
    if not data:
        return []
    rows = data.get(name.upper())
    return rows if isinstance(rows, list) else []


class OpenMOSMiner(BaseMiner):
    """pyasic miner class for OpenMOS. ``port`` defaults to the cgminer API's 4028."""

    _rpc_cls = OpenMOSRPCAPI
    rpc: OpenMOSRPCAPI
    algo = MinerAlgo.SHA256
    data_locations = OPENMOS_DATA_LOC
    supports_shutdown = True
    supports_autotuning = True

    def __init__(self, ip: str, port: int = 4028, version: str | None = None) -> None:
        super().__init__(ip, version)
        self.rpc = OpenMOSRPCAPI(ip, port=port)
        self.expected_hashboards: int | None = None

    async def _summary(self, rpc_summary: dict[str, Any] | None) -> dict[str, Any]:
        if rpc_summary is None:
            rpc_summary = await self.rpc.summary()
        rows = _section(rpc_summary, "summary")
        return rows[0] if rows else {}

    async def _get_hashrate(self, rpc_summary: dict[str, Any] | None = None) -> Any:
        row = await self._summary(rpc_summary)
        if "MHS 1m" not in row:
            return None
        return self.algo.hashrate(rate=float(row["MHS 1m"]), unit=self.algo.unit.MH).into(self.algo.unit.default)

    async def _get_expected_hashrate(self, rpc_stats: dict[str, Any] | None = None) -> Any:
        if rpc_stats is None:
            rpc_stats = await self.rpc.stats()
        rows = [r for r in _section(rpc_stats, "stats") if "total_rateideal" in r]  # row 1 of the two-row form
        if not rows:
            return None
        return self.algo.hashrate(rate=float(rows[0]["total_rateideal"]), unit=self.algo.unit.GH).into(
            self.algo.unit.default)

    async def _get_hashboards(self, rpc_devs: dict[str, Any] | None = None,
                              rpc_temps: dict[str, Any] | None = None) -> list[HashBoard]:
        if rpc_devs is None:
            rpc_devs = await self.rpc.devs()
        if rpc_temps is None:
            rpc_temps = await self.rpc.temps()
        temps = {row["ID"]: row for row in _section(rpc_temps, "temps")}
        boards = []
        for dev in _section(rpc_devs, "devs"):
            t = temps.get(dev["ID"], {})
            boards.append(HashBoard(
                slot=int(dev["ID"]),
                hashrate=self.algo.hashrate(rate=float(dev["MHS 1m"] if "MHS 1m" in dev else dev["MHS av"]),
                                            unit=self.algo.unit.MH).into(self.algo.unit.default),
                temp=t.get("Board"), chip_temp=t.get("Chip"), chips=int(dev["Chips"]),
                expected_chips=int(dev["Expected Chips"]), missing=False, active=dev["Status"] == "Alive",
                voltage=float(dev["Voltage"]) or None))
        self.expected_hashboards = len(boards)
        return boards

    async def _get_wattage(self, rpc_summary: dict[str, Any] | None = None) -> int | None:
        row = await self._summary(rpc_summary)
        return round(row["Power"]) if row.get("Power") else None

    async def _get_wattage_limit(self, rpc_tunerstatus: dict[str, Any] | None = None) -> int | None:
        if rpc_tunerstatus is None:
            rpc_tunerstatus = await self.rpc.tunerstatus()
        rows = _section(rpc_tunerstatus, "tunerstatus")
        target = rows[0].get("Target", "") if rows else ""
        if isinstance(target, str) and target.endswith(" W"):
            return round(float(target[:-2].replace(",", "")))
        return None

    async def _get_fans(self, rpc_fans: dict[str, Any] | None = None) -> list[Fan]:
        if rpc_fans is None:
            rpc_fans = await self.rpc.fans()
        return [Fan(speed=int(row["RPM"])) for row in _section(rpc_fans, "fans")]

    async def _get_uptime(self, rpc_summary: dict[str, Any] | None = None) -> int | None:
        row = await self._summary(rpc_summary)
        return int(row["Elapsed"]) if "Elapsed" in row else None

    async def _is_mining(self, rpc_summary: dict[str, Any] | None = None) -> bool | None:
        row = await self._summary(rpc_summary)
        return not row.get("Paused", False) if row else None

    async def _get_pools(self, rpc_pools: dict[str, Any] | None = None) -> list[PoolMetrics]:
        if rpc_pools is None:
            rpc_pools = await self.rpc.pools()
        return [PoolMetrics(url=PoolUrl.from_str(row["URL"]), accepted=row["Accepted"], rejected=row["Rejected"],
                            active=row["Stratum Active"], alive=row["Status"] == "Alive", index=row["POOL"],
                            user=row["User"]) for row in _section(rpc_pools, "pools")]

    async def _get_fw_ver(self, rpc_version: dict[str, Any] | None = None) -> str | None:
        if rpc_version is None:
            rpc_version = await self.rpc.version()
        rows = _section(rpc_version, "version")
        return f"OpenMOS {rows[0]['OpenMOS']}" if rows else None

    async def _get_api_ver(self, rpc_version: dict[str, Any] | None = None) -> str | None:
        if rpc_version is None:
            rpc_version = await self.rpc.version()
        rows = _section(rpc_version, "version")
        return str(rows[0]["API"]) if rows else None

    # -- control ------------------------------------------------------------------------------------

    async def _privileged(self, command: str, parameter: str | None = None) -> bool:
        try:
            if parameter is None:
                await self.rpc.send_command(command)
            else:
                await self.rpc.send_command(command, parameters=parameter)
        except APIError:
            return False
        return True

    async def set_power_limit(self, wattage: int) -> bool:
        return await self._privileged("ascset", f"0,power,{int(wattage)}")

    async def stop_mining(self) -> bool:
        return await self._privileged("pause")

    async def resume_mining(self) -> bool:
        return await self._privileged("resume")

    async def reboot(self) -> bool:
        return await self._privileged("restart")

    async def restart_backend(self) -> bool:
        return await self._privileged("restart")

    async def send_pools(self, pools: list[tuple[str, str]]) -> bool:
        """Replace the first group's pools: add the new ones, then remove the old ones."""
        before = _section(await self.rpc.pools(), "pools")
        for url, user in pools:
            if not await self._privileged("addpool", f"{url},{user},x"):
                return False
        for row in sorted(before, key=lambda r: r["POOL"], reverse=True):
            if not await self._privileged("removepool", str(row["POOL"])):
                return False
        return True
