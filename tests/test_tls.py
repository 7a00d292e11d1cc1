"""stratum+ssl: the agent mines through TLS to the local pool, trusting only the CA it was given."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool
from openmos.stratum import PoolUrl
from openmos.stratum.client import PoolUnavailable, StratumClient

from helpers import easy_pool_settings, wait_for


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openmos-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_agent_mines_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
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
