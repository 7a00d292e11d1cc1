"""Start and stop the device APIs next to an agent."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from openmos.api.app import create_app
from openmos.api.auth import AuthError, AuthStore
from openmos.api.cgminer import CgminerApi, CgminerServer
from openmos.api.logs import LogBuffer
from openmos.api.server import HttpServer
from openmos.api.view import DeviceView
from openmos.base.files import state_dir
from openmos.base.net import AllowList
from openmos.miner.agent import MiningAgent
from openmos.miner.config import ConfigError
from openmos.miner.control import AgentControl

log = logging.getLogger(__name__)


ACCOUNTS_FILE = "accounts.json"


class PortBusy(OSError):
    """One of the device APIs could not listen on its port (another process holds it, or no permission).
    ``api`` is ``"rest"`` or ``"cgminer"``; every listener opened before it is closed again."""

    def __init__(self, api: str, host: str, port: int, cause: OSError) -> None:
        name = "REST API" if api == "rest" else "cgminer API"
        reason = os.strerror(cause.errno) if cause.errno else str(cause)  # asyncio's text repeats the address
        super().__init__(cause.errno, f"the {name} port {host}:{port} is not free ({reason.lower()})")
        self.api, self.host, self.port = api, host, port

    def __str__(self) -> str:
        return str(self.strerror)


class DeviceApis:
    """The cgminer API and the REST API + web page of one agent. Accounts live in ``api.auth_file`` or, by
    default, in ``accounts.json`` of the agent's state directory (``--state-dir`` / ``$OPENMOS_STATE_DIR``)."""

    def __init__(self, agent: MiningAgent, *, config_path: Path | None = None, state: Path | None = None,
                 control: AgentControl | None = None) -> None:
        cfg = agent.config.api
        self.view = DeviceView(agent, control=control)  # pass the fleet worker's surface to share its state
        self.logs = LogBuffer()
        logging.getLogger("openmos").addHandler(self.logs)
        self.accounts_path = Path(cfg.auth_file) if cfg.auth_file else (state or state_dir()) / ACCOUNTS_FILE
        try:
            self.auth = AuthStore(self.accounts_path)
        except AuthError as exc:
            raise ConfigError(str(exc)) from None
        self.cgminer = CgminerServer(CgminerApi(self.view, AllowList.parse(cfg.cgminer_allow)), cfg.cgminer_host,
                                     cfg.cgminer_port)
        self.app = create_app(self.view, self.auth, config_path=config_path, logs=self.logs,
                              allowed_hosts=[*cfg.allowed_hosts, *([cfg.rest_host] if cfg.rest_host else [])])
        self.http = HttpServer(self.app, cfg.rest_host, cfg.rest_port, name="REST API")

    @property
    def rest_port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        """Bind both listeners (raises :class:`PortBusy` naming the one that failed, with none left open)."""
        try:
            await self.http.start()
        except OSError as exc:
            await self.http.stop()
            raise PortBusy("rest", self.http.host, self.http.port, exc) from None
        try:
            await self.cgminer.start()
        except OSError as exc:
            await self.stop()
            raise PortBusy("cgminer", self.cgminer.host, self.cgminer.port, exc) from None
        if not self.auth.has_owner:
            log.warning("no owner account yet: create one with POST /api/v1/auth/setup (there is no default "
                        "password; it will be kept in %s); until then every write is refused", self.accounts_path)
        log.info("REST API and web page on http://%s:%d; cgminer API on %s:%d", self.http.host, self.rest_port,
                 self.cgminer.host, self.cgminer.port)  # free ports may have replaced busy ones: say which

    async def stop(self) -> None:
        await self.http.stop()
        await self.cgminer.stop()
        logging.getLogger("openmos").removeHandler(self.logs)
