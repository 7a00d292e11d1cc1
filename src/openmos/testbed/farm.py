"""Many simulated miners on the network for fleet tests and benchmarks: each has its own loopback
address (127.1.x.y) and answers the cgminer API on port 4028 with modelled figures, like a LAN of
OpenMOS devices. Run it in its own process: ``python -m openmos.testbed.farm N``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import numpy as np

from openmos import __version__
from openmos.api.cgminer import CgminerServer, parse_request

MODELS = (("Antminer S21 (simulated)", 200.0, 3500.0, 108), ("Antminer S19j Pro (simulated)", 104.0, 3068.0, 126))


def device_ip(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


class SimulatedDevice:
    def __init__(self, index: int, rng: np.random.Generator) -> None:
        self.index = index
        name, ths, watts, chips = MODELS[index % len(MODELS)]
        self.name, self.ths, self.watts, self.chips = name, ths * rng.uniform(0.97, 1.01), watts, chips
        self.started = time.time()
        self.accepted = int(rng.integers(100, 10_000))

    def section(self, command: str) -> dict[str, Any]:
        status = [{"STATUS": "S", "When": int(time.time()), "Code": 11, "Msg": command,
                   "Description": f"OpenMOS {__version__}"}]
        mhs = self.ths * 1e6
        rows: dict[str, list[dict[str, Any]]] = {
            "summary": [{"Elapsed": int(time.time() - self.started), "MHS av": mhs, "MHS 5s": mhs, "MHS 1m": mhs,
                         "MHS 5m": mhs, "MHS 15m": mhs, "Accepted": self.accepted, "Rejected": 3,
                         "Hardware Errors": 1, "Stale": 0, "Power": self.watts, "Hashrate Source": "modelled",
                         "Paused": False}],
            "pools": [{"POOL": 0, "URL": "stratum+tcp://pool.example:3333", "User": f"site.w{self.index}",
                       "Status": "Alive", "Priority": 0, "Quota": 1, "Accepted": self.accepted, "Rejected": 3,
                       "Stale": 0, "Stratum Active": True}],
            "devs": [{"ASC": b, "ID": b, "Name": "OMOS", "Enabled": "Y", "Status": "Alive", "Temperature": 62.0 + b,
                      "MHS av": mhs / 3, "MHS 1m": mhs / 3, "Chips": self.chips, "Expected Chips": self.chips,
                      "Voltage": 13.6, "Hardware Errors": 0} for b in range(3)],
            "temps": [{"TEMPS": b, "ID": b, "Board": 55.0 + b, "Chip": 64.0 + b} for b in range(3)],
            "fans": [{"FAN": i, "ID": i, "RPM": 4800, "Speed": 80.0} for i in range(4)],
            "stats": [{"STATS": 0, "ID": "OMOS0", "Type": self.name, "total_rateideal": self.ths * 1000,
                       "fan_num": 4}],
            "version": [{"OpenMOS": __version__, "API": "3.7", "Type": self.name}],
            "tunerstatus": [{"TunerState": "STABLE", "Target": f"{self.watts:,.0f} W"}],
        }
        if command not in rows:
            return {"STATUS": [{"STATUS": "E", "Code": 14, "Msg": "Invalid command"}], "id": 1}
        return {"STATUS": status, command.upper(): rows[command], "id": 1}

    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]:
        try:
            req = parse_request(raw)
        except ValueError:
            return {"STATUS": [{"STATUS": "E", "Code": 23, "Msg": "invalid request"}], "id": 1}
        if len(req.commands) == 1:
            return self.section(req.commands[0])
        return {c: [self.section(c)] for c in req.commands} | {"id": 1}


async def serve(count: int, port: int = 4028) -> list[CgminerServer]:
    rng = np.random.default_rng(0)
    servers = []
    for i in range(count):
        server = CgminerServer(SimulatedDevice(i, rng), device_ip(i), port)
        await server.start()
        servers.append(server)
    return servers


async def _main(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * count + 512)), hard))
    servers = await serve(count)
    print(json.dumps({"devices": count}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in servers:
        await s.stop()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
