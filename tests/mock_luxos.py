"""A mock LuxOS miner for tests: the cgminer-style API on loopback with LuxOS's extra commands and its
session-gated privileged commands (``session``/``logon`` then ``curtail,<session>,sleep``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any


class MockLuxOS:
    def __init__(self, host: str = "127.0.0.8") -> None:
        self.host = host
        self.port = 0
        self.sleeping = False
        self.session = ""
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def _status(self, code: int = 1, msg: str = "ok", kind: str = "S") -> list[dict[str, Any]]:
        return [{"STATUS": kind, "When": int(time.time()), "Code": code, "Msg": msg, "Description": "LUXminer 2024"}]

    def _section(self, command: str, params: list[str]) -> dict[str, Any]:
        rate = 0.0 if self.sleeping else 65_000.0  # GH/s per board
        sections: dict[str, Any] = {
            "version": {"VERSION": [{"Miner": "LUXminer 2024.10.1", "API": "3.7", "Type": "Antminer S21"}]},
            "config": {"CONFIG": [{"MACAddr": "02:11:22:33:44:55", "RedLed": "off", "Profile": "default",
                                   "ASC Count": 3}]},
            "summary": {"SUMMARY": [{"GHS 5s": 3 * rate, "GHS av": 3 * rate, "Elapsed": 7200, "Accepted": 500}]},
            "stats": {"STATS": [{"STATS": 0, "Type": "Antminer S21"},
                                {"Elapsed": 7200, "total_rateideal": 200_000.0, "rate_unit": "GH",
                                 **{f"chain_rate{n}": rate for n in (1, 2, 3)},
                                 **{f"chain_acn{n}": 108 for n in (1, 2, 3)},
                                 **{f"temp_chip{n}": "66-68-70-67" for n in (1, 2, 3)},
                                 **{f"temp_pcb{n}": "50-52-54-51" for n in (1, 2, 3)}}]},
            "power": {"POWER": [{"Watts": 15 if self.sleeping else 3480}]},
            "fans": {"FANS": [{"ID": i, "RPM": 4500, "Speed": 70} for i in range(4)],
                     "FANCTRL": [{"MinFans": 1, "PowerOff": False}]},
            "pools": {"POOLS": [{"POOL": 0, "URL": "stratum+tcp://pool.example:3333", "User": "lux.rig",
                                 "Status": "Alive", "Stratum Active": True, "Accepted": 500, "Rejected": 1,
                                 "GROUP": 0}]},
            "groups": {"GROUPS": [{"GROUP": 0, "Name": "default", "Quota": 1}]},
            "tempctrl": {"TEMPCTRL": [{"Mode": "Auto", "Target": 65, "Hot": 75, "Dangerous": 85}]},
            "profiles": {"PROFILES": [{"Profile Name": "default", "Frequency": 490, "Voltage": 13.7,
                                       "Watts": 3500, "Hashrate": 200.0, "Step": "0", "IsTuned": False,
                                       "IsDynamic": False}]},
            "session": {"SESSION": [{"SessionID": self.session}]},
            "logon": {"SESSION": [{"SessionID": "S3SS10N"}]},
        }
        if command == "logon":
            self.session = "S3SS10N"
        if command == "curtail":
            if len(params) < 2 or params[0] != self.session or not self.session:
                return {"STATUS": self._status(45, "session required", "E"), "id": 1}
            self.sleeping = params[1] == "sleep"
            return {"STATUS": self._status(0, f"curtail {params[1]}"), "id": 1}
        if command not in sections:
            return {"STATUS": self._status(14, "Invalid command", "E"), "id": 1}
        return {"STATUS": self._status(), **sections[command], "id": 1}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = json.loads(await asyncio.wait_for(reader.read(8192), 5))
            params = [p for p in str(req.get("parameter", "")).split(",") if p]
            commands = str(req["command"]).split("+")
            self.commands += commands
            if len(commands) == 1:
                reply = self._section(commands[0], params)
            else:
                reply = {c: [self._section(c, params)] for c in commands} | {"id": 1}
            writer.write(json.dumps(reply).encode() + b"\x00")
            await writer.drain()
        except (ValueError, KeyError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
