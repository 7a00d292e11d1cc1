"""Detached ed25519 signatures over canonical JSON documents (baselines, desired pool state)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from openmos.base.files import atomic_write
from openmos.base.pem import private_pem


class SignatureError(Exception):
    pass


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def generate_keypair(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    atomic_write(private_path, private_pem(key))
    private_path.chmod(0o600)
    atomic_write(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))


def sign_document(doc: dict[str, Any], private_pem: bytes) -> dict[str, Any]:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("signing key must be ed25519")
    return {"signed": doc, "signature": base64.b64encode(key.sign(canonical(doc))).decode()}


def verify_document(envelope: dict[str, Any], public_pem: bytes) -> dict[str, Any]:
    """The signed document, or SignatureError if the envelope was not signed by this key."""
    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("verification key must be ed25519")
    try:
        doc, sig = envelope["signed"], base64.b64decode(envelope["signature"])
        key.verify(sig, canonical(doc))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise SignatureError("signature does not verify: the document was altered or signed by another key") \
            from None
    if not isinstance(doc, dict):
        raise SignatureError("signed document must be an object")
    return doc
