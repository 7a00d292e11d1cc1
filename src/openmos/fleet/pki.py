"""The fleet's certificate authority (X.509 via ``cryptography``) and the TLS identities of bus nodes.

``mos fleet init DIR`` creates the layout below; every private key is written 0600 and never leaves the
node it belongs to (a device sends a CSR, never its key). See docs/fleet-keys.md for rotation.

    DIR/ca/ca.crt            fleet CA certificate (ECDSA P-256): the only root every node trusts
    DIR/ca/ca.key            fleet CA key (0600): keep it offline once the fleet is enrolled
    DIR/controller/node.crt  the controller's TLS certificate (CN openmos-controller)
    DIR/controller/node.key  its key (0600)
    DIR/controller/command.key / command.pub   ed25519 key that signs commands to devices
    DIR/enrollment.json      pinned device keys, pending requests, one-time token hashes

The certificate's common name is the node's *role* (``openmos-controller``, ``openmos-device``,
``openmos-enrollee``), and for a device certificate issued for a site, the site too
(``openmos-device@north``): zenoh's access control matches them by common name, so a device node of one
site cannot publish or answer in another site's key space. The node's identity (site and device) is in a
``URI:openmos://<site>/<device>`` subject alternative name.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openmos.base.files import atomic_write
from openmos.base.pem import private_pem
from openmos.security.signing import generate_keypair

Role = Literal["controller", "device", "enrollee"]
ROLES: tuple[Role, ...] = ("controller", "device", "enrollee")
NODE_DAYS = {"controller": 365, "device": 90, "enrollee": 1}  # enrollee certificates only reach enrollment
CA_DAYS = 3650


def common_name(role: Role, site: str = "") -> str:
    """The certificate common name zenoh's access control matches: the role, and for a device certificate
    issued for one site, that site (``openmos-device@north``): such a node may only publish and answer
    under ``openmos/north/...``."""
    return f"openmos-{role}@{site}" if role == "device" and site else f"openmos-{role}"


@dataclass(frozen=True)
class TlsIdentity:
    """PEM bytes of one node's TLS identity: the fleet CA, its certificate and its private key.

    Held in memory and handed to zenoh inline (base64), so a node needs no key file on a shared disk."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def zenoh_tls(self) -> dict[str, object]:
        """The ``transport/link/tls`` section: mutual TLS, the fleet CA as the only root."""
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {"root_ca_certificate_base64": b64(self.ca_pem),
                "listen_certificate_base64": b64(self.cert_pem), "listen_private_key_base64": b64(self.key_pem),
                "connect_certificate_base64": b64(self.cert_pem), "connect_private_key_base64": b64(self.key_pem),
                "enable_mtls": True, "verify_name_on_connect": False, "close_link_on_expiration": True}

    @property
    def role(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, data)
    path.chmod(0o600)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, role: Role) -> bytes:
    """A certificate signing request a node sends at enrollment (its key stays with it)."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name(role))])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


class FleetCA:
    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert_pem = cert_pem
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the fleet CA key must be an EC key")
        self._key = key

    @classmethod
    def create(cls, name: str = "OpenMOS fleet CA") -> FleetCA:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert.public_bytes(serialization.Encoding.PEM), private_pem(key))

    @property
    def key_pem(self) -> bytes:
        return private_pem(self._key)

    def sign_csr(self, csr_pem: bytes, role: Role, site: str = "", device: str = "",
                 days: int | None = None) -> bytes:
        """Issue a node certificate for the public key in ``csr_pem``. The role and identity come from the
        CA's decision, never from the request's subject."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise ValueError("not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise ValueError("the certificate signing request is not signed by its own key")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("node keys must be EC (P-256)")
        return self._issue(public, role, site, device, days)

    def _issue(self, public: ec.EllipticCurvePublicKey, role: Role, site: str, device: str,
               days: int | None) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        if site or device:
            names.append(x509.UniformResourceIdentifier(f"openmos://{site}/{device}"))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name(role, site))]))
                .issuer_name(self.cert.subject).public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days or NODE_DAYS[role]))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, role: Role, site: str = "", device: str = "", days: int | None = None) -> TlsIdentity:
        """A fresh key and certificate for a node (the key is generated here: use for local nodes only)."""
        key = new_key()
        return TlsIdentity(self.cert_pem, self._issue(key.public_key(), role, site, device, days), private_pem(key))


@dataclass(frozen=True)
class FleetDir:
    """The on-disk layout of ``mos fleet init`` (see the module docstring)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def controller_cert(self) -> Path:
        return self.root / "controller" / "node.crt"

    @property
    def controller_key(self) -> Path:
        return self.root / "controller" / "node.key"

    @property
    def command_key(self) -> Path:
        return self.root / "controller" / "command.key"

    @property
    def command_pub(self) -> Path:
        return self.root / "controller" / "command.pub"

    @property
    def enrollment(self) -> Path:
        return self.root / "enrollment.json"

    def exists(self) -> bool:
        return self.ca_cert.exists()

    def init(self) -> FleetCA:
        """Create the CA, the controller's TLS identity and its command-signing key."""
        if self.exists():
            raise FileExistsError(f"{self.root} already holds a fleet CA: refusing to overwrite it")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = FleetCA.create()
        _write_secret(self.ca_key, ca.key_pem)
        atomic_write(self.ca_cert, ca.cert_pem)
        self.write_controller(ca)
        generate_keypair(self.command_key, self.command_pub)
        return ca

    def write_controller(self, ca: FleetCA) -> TlsIdentity:
        """(Re-)issue the controller certificate: rotation of the controller's TLS key."""
        ident = ca.issue("controller")
        _write_secret(self.controller_key, ident.key_pem)
        atomic_write(self.controller_cert, ident.cert_pem)
        return ident

    def ca(self) -> FleetCA:
        if not self.exists():
            raise FileNotFoundError(f"no fleet CA in {self.root}: run `mos fleet init {self.root}` first")
        return FleetCA(self.ca_cert.read_bytes(), self.ca_key.read_bytes())

    def controller_identity(self) -> TlsIdentity:
        return TlsIdentity(self.ca_cert.read_bytes(), self.controller_cert.read_bytes(),
                           self.controller_key.read_bytes())
