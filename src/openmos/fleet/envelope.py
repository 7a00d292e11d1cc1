"""Signed envelopes on the fleet bus: ``{"signed": {...}, "signature": "<base64 ed25519>"}``.

Every device-originated message (telemetry, events, acknowledgements, query replies, enrollment requests)
is signed by the device's own ed25519 key; every command by the controller's key. The signed document
always names its ``site`` and ``device`` so a message captured at one site or for one device means nothing
anywhere else. Keys are parsed once and kept as key objects: verifying is ~50 us, not a PEM parse.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from openmos.security.signing import SignatureError, canonical


class DeviceKey:
    """A node's ed25519 signing key (generated on the device; only the public half is ever sent)."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key or Ed25519PrivateKey.generate()
        self.public_b64 = public_b64(self._key.public_key())

    @classmethod
    def from_pem(cls, pem: bytes) -> DeviceKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("signing key must be ed25519")
        return cls(key)

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {"signed": doc, "signature": base64.b64encode(self._key.sign(canonical(doc))).decode()}


def public_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def parse_public(value: str | bytes) -> Ed25519PublicKey:
    """An ed25519 public key from base64 of its 32 raw bytes, or from PEM."""
    try:
        if isinstance(value, bytes) and value.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(value)
            if not isinstance(key, Ed25519PublicKey):
                raise SignatureError("public key must be ed25519")
            return key
        raw = base64.b64decode(value, validate=True)
        if len(raw) != 32:
            raise SignatureError("an ed25519 public key is 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError, TypeError):
        raise SignatureError("public key is not valid base64 ed25519") from None


def verify(envelope: Any, key: Ed25519PublicKey) -> dict[str, Any]:
    """The signed document if ``envelope`` carries a valid signature by ``key``; SignatureError otherwise."""
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "signature"}:
        raise SignatureError("not a signed envelope")
    doc, sig = envelope["signed"], envelope["signature"]
    if not isinstance(doc, dict) or not isinstance(sig, str) or len(sig) > 100:
        raise SignatureError("not a signed envelope")
    try:
        key.verify(base64.b64decode(sig, validate=True), canonical(doc))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError("signature does not verify against the enrolled key") from None
    return doc


def signed_part(envelope: Any) -> dict[str, Any]:
    """The (not yet verified) signed document, to learn which key to verify it with."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise SignatureError("not a signed envelope")
    doc: dict[str, Any] = envelope["signed"]
    return doc
