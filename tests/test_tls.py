"""stratum+ssl: the agent mines through TLS to the local pool, trusting only the CA it was given."""

from __future__ import annotations

from pathlib import Path

from openmos.base.pem import self_signed_loopback
from openmos.pool import LocalPool
from openmos.stratum import PoolUrl
from openmos.stratum.client import PoolUnavailable, StratumClient

from helpers import cpu_agent, easy_pool_settings, running, wait_for


async def test_agent_mines_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_loopback(tmp_path, hours=1)
    pool = LocalPool(easy_pool_settings(start_difficulty=0.00003, tls_cert=str(cert), tls_key=str(key)))
    await pool.start()
    assert pool.url.startswith("stratum+ssl://")
    # Without the CA the certificate is not trusted: the connection is refused, not silently downgraded.
    untrusted = StratumClient(PoolUrl.parse(pool.url), "x")
    try:
        await untrusted.connect()
        raise AssertionError("connected to an untrusted TLS pool")
    except PoolUnavailable as exc:
        assert "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower()
    agent = cpu_agent(pool.url, user="tls.cpu", pool_options={"tls_ca_file": str(cert)})
    try:
        async with running(agent):
            await wait_for(lambda: pool.workers.get("tls.cpu") is not None
                           and pool.workers["tls.cpu"].accepted >= 2, 60, "shares over TLS")
    finally:
        await pool.stop()
