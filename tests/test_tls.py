"""stratum+ssl: the agent mines through TLS to the local pool, trusting only the CA it was given."""

from __future__ import annotations

from pathlib import Path

from openmos.base.pem import self_signed_loopback
from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool
from openmos.stratum import PoolUrl
from openmos.stratum.client import PoolUnavailable, StratumClient

from helpers import easy_pool_settings, wait_for


async def test_agent_mines_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_loopback(tmp_path, hours=1)
    pool = LocalPool(easy_pool_settings(start_difficulty=0.0001, tls_cert=str(cert), tls_key=str(key)))
    await pool.start()
    assert pool.url.startswith("stratum+ssl://")
    # Without the CA the certificate is not trusted: the connection is refused, not silently downgraded.
    untrusted = StratumClient(PoolUrl.parse(pool.url), "x")
    try:
        await untrusted.connect()
        raise AssertionError("connected to an untrusted TLS pool")
    except PoolUnavailable as exc:
        assert "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower()
    config = AgentConfig.from_dict({"groups": [{"pools": [
        {"url": pool.url, "user": "tls.cpu", "tls_ca_file": str(cert)}]}]})
    agent = MiningAgent(config, CpuHardware(CpuSettings(workers=1, chunk_seconds=0.2)))
    await agent.start()
    try:
        await wait_for(lambda: pool.workers.get("tls.cpu") is not None and pool.workers["tls.cpu"].accepted >= 2,
                       60, "shares over TLS")
    finally:
        await agent.stop()
        await pool.stop()
