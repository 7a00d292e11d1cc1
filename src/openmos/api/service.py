"""Start and stop the device APIs next to an agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import uvicorn

from openmos.api.auth import AuthStore
from openmos.api.cgminer import CgminerApi, CgminerServer
from openmos.api.rest import LogBuffer, create_app
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.miner.agent import MiningAgent

log = logging.getLogger(__name__)


class DeviceApis:
    def __init__(self, agent: MiningAgent, *, config_path: Path | None = None) -> None:
        cfg = agent.config.api
        self.view = DeviceView(agent)
        self.logs = LogBuffer()
        logging.getLogger("openmos").addHandler(self.logs)
        self.auth = AuthStore(Path(cfg.auth_file) if cfg.auth_file else None)
        self.cgminer = CgminerServer(CgminerApi(self.view, AllowList.parse(cfg.cgminer_allow)), cfg.cgminer_host,
                                     cfg.cgminer_port)
        self.app = create_app(self.view, self.auth, config_path=config_path, logs=self.logs)
        self._uvicorn = uvicorn.Server(uvicorn.Config(self.app, host=cfg.rest_host, port=cfg.rest_port,
                                                      log_level="warning", lifespan="off"))
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def rest_port(self) -> int:
        return int(self._socket.getsockname()[1]) if self._socket is not None else self._uvicorn.config.port

    async def start(self) -> None:
        cfg = self._uvicorn.config
        # Bind here so a busy port is an OSError we can report (uvicorn itself would exit the process).
        self._socket = socket.create_server((cfg.host, cfg.port), reuse_port=False)
        await self.cgminer.start()
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[self._socket]), name="rest-api")
        while not self._uvicorn.started:
            if self._task.done():
                raise OSError(f"REST API failed to start: {self._task.exception()!r}")
            await asyncio.sleep(0.02)
        if not self.auth.has_owner:
            log.warning("no owner account yet: create one with POST /api/v1/auth/setup (there is no default "
                        "password); until then every write is refused")
        log.info("REST API and web page on http://%s:%d", self._uvicorn.config.host, self.rest_port)

    async def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        await self.cgminer.stop()
        if self._socket is not None:
            self._socket.close()
        logging.getLogger("openmos").removeHandler(self.logs)
