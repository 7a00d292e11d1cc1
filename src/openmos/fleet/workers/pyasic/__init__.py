"""Third-party miners through pyasic: one adapter over any pyasic miner object (stock Antminer, Whatsminer,
Braiins OS, LuxOS, Vnish, ESP-Miner/Bitaxe ...). Actions a vendor does not support say so."""

from __future__ import annotations

from typing import Any

from pyasic.config.pools import Pool, PoolConfig, PoolGroup


class PyasicWorker:
    def __init__(self, miner: Any, device_id: str, tags: dict[str, str] | None = None) -> None:
        self.miner = miner
        self.device_id = device_id
        self.tags = tags or {}
        self._last: dict[str, Any] = {}

    async def refresh(self) -> dict[str, Any]:
        """Poll the miner (pyasic get_data) and remember the result for inventory/status."""
        data = await self.miner.get_data()
        self._last = {
            "model": str(data.model) if data.model else None, "make": str(data.make) if data.make else None,
            "firmware": data.fw_ver, "mac": data.mac, "hostname": data.hostname,
            "hashrate_ths": float(data.hashrate) if data.hashrate is not None else 0.0,
            "power_w": data.wattage, "boards": len(data.hashboards),
            "hottest_c": max((b.chip_temp or b.temp or 0 for b in data.hashboards), default=None),
            "fans_rpm": [f.speed for f in data.fans],
            "pools": [{"url": str(p.url), "user": p.user} for p in data.pools],
        }
        return self._last

    def inventory(self) -> dict[str, Any]:
        keys = ("model", "make", "firmware", "mac", "hostname", "boards")
        return {"tags": self.tags, "vendor_api": type(self.miner).__name__, **{k: self._last.get(k) for k in keys}}

    def status(self) -> dict[str, Any]:
        return {"healthy": bool(self._last.get("hashrate_ths")), "modelled": False,
                **{k: self._last.get(k) for k in ("hashrate_ths", "power_w", "hottest_c", "fans_rpm", "pools")}}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        miner = self.miner
        try:
            if action == "reboot":
                ok = await miner.reboot()
            elif action == "pause":
                ok = await miner.stop_mining()
            elif action == "resume":
                ok = await miner.resume_mining()
            elif action == "set_power":
                ok = await miner.set_power_limit(int(args["watts"]))
            elif action == "locate":
                ok = await miner.fault_light_on()
            elif action == "set_pools":
                config = await miner.get_config()
                pools = [Pool(url=p["url"], user=p["user"], password=p.get("password", "x")) for p in args["pools"]]
                config = config.model_copy(update={"pools": PoolConfig(groups=[PoolGroup(pools=pools)])})
                await miner.send_config(config)
                ok = True
            else:
                return {"ok": False, "error": f"{action} is not supported through pyasic"}
        except (NotImplementedError, AttributeError) as exc:
            return {"ok": False, "error": f"{type(miner).__name__} cannot {action}: {exc}"}
        return {"action": action, "ok": bool(ok)} if not ok else {"action": action}
