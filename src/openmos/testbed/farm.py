"""Many simulated miners on the network for fleet tests and benchmarks: each has its own loopback
address (127.1.x.y) and answers the cgminer API on port 4028 with modelled figures, like a LAN of miners.

Personas: ``openmos`` (OpenMOS devices: summary/pools/devs/temps/fans/stats/version/tunerstatus) and
``stock-s9`` (an Antminer S9 on Bitmain's stock bmminer: version/summary/stats/pools in bmminer's layout --
``GHS 5s``, ``chain_rate6..8``, ``chain_acn6..8``, ``temp6..8`` / ``temp2_6..8``, ``fan1``/``fan2``,
``total_rateideal`` -- as documented by the bmminer API and read by pyasic's stock ``BMMinerS9``).
Run it in its own process: ``python -m openmos.testbed.farm N [openmos|stock-s9]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

from openmos import __version__
from openmos.api.cgminer import CgminerServer, parse_request
from openmos.base.net import raise_open_files

MODELS = (("Antminer S21 (simulated)", 200.0, 3500.0, 108), ("Antminer S19j Pro (simulated)", 104.0, 3068.0, 126))


def device_ip(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


class _Responder:
    """A cgminer-API responder built from one ``section`` per command (joined commands answered together)."""

    def section(self, command: str) -> dict[str, Any]:
        raise NotImplementedError

    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]:
        try:
            req = parse_request(raw)
        except ValueError:
            return {"STATUS": [{"STATUS": "E", "Code": 23, "Msg": "invalid request"}], "id": 1}
        if len(req.commands) == 1:
            return self.section(req.commands[0])
        return {c: [self.section(c)] for c in req.commands} | {"id": 1}


class SimulatedDevice(_Responder):
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


class StockS9Device(_Responder):
    """An Antminer S9 on stock bmminer firmware (modelled figures), as a cgminer-API responder."""

    CHAINS = (6, 7, 8)

    def __init__(self, index: int, rng: np.random.Generator) -> None:
        self.index = index
        self.started = time.time()
        self.board_ghs = [4_500.0 * rng.uniform(0.96, 1.02) for _ in self.CHAINS]
        self.accepted = int(rng.integers(100, 10_000))

    def section(self, command: str) -> dict[str, Any]:
        now = int(time.time())
        status = [{"STATUS": "S", "When": now, "Code": 11, "Msg": command, "Description": "bmminer 1.0.0"}]
        ghs = sum(self.board_ghs)
        elapsed = now - int(self.started)
        if command == "version":
            return {"STATUS": status, "VERSION": [{"BMMiner": "2.0.0", "API": "3.1", "Miner": "16.8.1.3",
                                                   "CompileTime": "Fri Nov 17 20:37:17 CST 2017",
                                                   "Type": "Antminer S9"}], "id": 1}
        if command == "summary":
            return {"STATUS": status, "SUMMARY": [{"Elapsed": elapsed, "GHS 5s": f"{ghs:.2f}", "GHS av": ghs,
                                                   "Found Blocks": 0, "Accepted": self.accepted, "Rejected": 4,
                                                   "Hardware Errors": 12, "Stale": 0}], "id": 1}
        if command == "stats":
            row: dict[str, Any] = {"STATS": 0, "ID": "BC50", "Elapsed": elapsed, "Calls": 0, "Wait": 0.0,
                                   "GHS 5s": f"{ghs:.2f}", "GHS av": ghs, "miner_count": 3, "frequency": "650",
                                   "fan_num": 2, "fan1": 5880, "fan2": 5760, "total_rateideal": 13_500.0,
                                   "total_freqavg": 650.0, "total_acn": 189, "total_rate": ghs, "temp_max": 74}
            for n, chain in enumerate(self.CHAINS):
                row |= {f"temp{chain}": 60 + n, f"temp2_{chain}": 72 + n, f"chain_acn{chain}": 63,
                        f"chain_acs{chain}": " oooooooo oooooooo oooooooo",
                        f"chain_rate{chain}": f"{self.board_ghs[n]:.2f}", f"chain_hw{chain}": 4}
            return {"STATUS": status, "STATS": [{"BMMiner": "2.0.0", "Miner": "16.8.1.3",
                                                 "CompileTime": "Fri Nov 17 20:37:17 CST 2017",
                                                 "Type": "Antminer S9"}, row], "id": 1}
        if command == "pools":
            return {"STATUS": status, "POOLS": [{"POOL": 0, "URL": "stratum+tcp://pool.example:3333",
                                                 "Status": "Alive", "Priority": 0, "Quota": 1, "Getworks": 100,
                                                 "Accepted": self.accepted, "Rejected": 4, "Get Failures": 0,
                                                 "Remote Failures": 0, "User": f"site.s9-{self.index}",
                                                 "Stratum Active": True, "Diff": "65.5K"}], "id": 1}
        return {"STATUS": [{"STATUS": "E", "When": now, "Code": 14, "Msg": "Invalid command"}], "id": 1}


PERSONAS: dict[str, type[SimulatedDevice] | type[StockS9Device]] = {"openmos": SimulatedDevice,
                                                                     "stock-s9": StockS9Device}


async def serve(count: int, port: int = 4028, persona: str = "openmos") -> list[CgminerServer]:
    rng = np.random.default_rng(0)
    kind = PERSONAS[persona]
    servers = []
    for i in range(count):
        server = CgminerServer(kind(i, rng), device_ip(i), port)
        await server.start()
        servers.append(server)
    return servers


async def _main(count: int, persona: str) -> None:
    raise_open_files(2 * count + 512)
    servers = await serve(count, persona=persona)
    print(json.dumps({"devices": count, "persona": persona}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in servers:
        await s.stop()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "openmos"))
