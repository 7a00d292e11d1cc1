"""PEM files of keys and certificates (``cryptography``): one spelling for every layer that writes them."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID


def private_pem(key: PrivateKeyTypes) -> bytes:
    """An unencrypted PKCS#8 PEM private key (EC or Ed25519): protect the file, not the bytes."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed_loopback(directory: Path, hours: float = 24.0) -> tuple[Path, Path]:
    """A fresh ECDSA P-256 key and a self-signed certificate for 127.0.0.1 valid ``hours``, written as
    ``directory/cert.pem`` and ``directory/key.pem``. The certificate is its own CA: a client trusts the server
    only when given that very file (``cafile``). For loopback TLS (tests, benchmarks), never a real deployment."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=hours))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path
