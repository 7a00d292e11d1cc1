"""Signed envelopes on the fleet bus: ``{"signed": {...}, "signature": "<base64>"}``.

Every device-originated message (telemetry, events, acknowledgements, query replies, enrollment requests)
is signed by the device's own key: BIP340 Schnorr over secp256k1 (libsecp256k1 through ``coincurve``),
over SHA-256 of a domain tag and the canonical JSON of the document. The controller verifies ~10k of
these per poll, and libsecp256k1 verifies several times faster than ed25519 does here.
Commands from the controller are ed25519 (``security.signing``, the fleet command key).

The signed document always names its ``site`` and ``device``, so a message captured at one site or for one
device means nothing anywhere else. Keys are parsed once and kept as key objects.

On the wire a device sends the envelope in one fixed layout (``sign_payload``):
``{"signature":"<88 base64 chars>","signed":<canonical JSON of the document>}``, which is also the canonical
JSON of the envelope itself. The controller verifies the signature over the document bytes exactly as they
arrived (``split_payload`` + ``verify_bytes``) and parses them once: nothing is re-serialised on either side.
An envelope in any other layout is still accepted through the parsed path (``verify``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
from coincurve.context import GLOBAL_CONTEXT
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openmos.security.signing import SignatureError, canonical

DOMAIN = b"openmos/fleet/device/v1\x00"


PREFIX = b'{"signature":"'
MIDDLE = b'","signed":'
SIG_B64 = 88  # base64 of 64 bytes
_DOC_AT = len(PREFIX) + SIG_B64 + len(MIDDLE)


def _digest(doc: dict[str, Any]) -> bytes:
    return hashlib.sha256(DOMAIN + canonical(doc)).digest()


class DeviceKey:
    """A device's signing key (generated on the device; only the 32-byte x-only public key is ever sent)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = PrivateKey(secret) if secret is not None else PrivateKey()
        self.public_b64 = base64.b64encode(self._key.public_key_xonly.format()).decode()
        # The BIP340 keypair is computed once (coincurve's sign_schnorr recomputes it on every call: 3.5x slower).
        self._keypair = ffi.new("secp256k1_keypair *")
        if not lib.secp256k1_keypair_create(GLOBAL_CONTEXT.ctx, self._keypair, self._key.secret):
            raise ValueError("invalid device secret key")

    @property
    def secret(self) -> bytes:
        """The 32-byte secret, for the device's own key store (0600)."""
        return bytes(self._key.secret)

    def _schnorr(self, digest: bytes) -> bytes:
        out = ffi.new("unsigned char[64]")
        if not lib.secp256k1_schnorrsig_sign32(GLOBAL_CONTEXT.ctx, out, digest, self._keypair, os.urandom(32)):
            raise SignatureError("BIP340 signing failed")
        return bytes(ffi.buffer(out, 64))

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The envelope as a dict (for callers that build on it; the wire form is ``sign_payload``)."""
        return {"signed": doc, "signature": base64.b64encode(self._schnorr(_digest(doc))).decode()}

    def sign_payload(self, doc: dict[str, Any]) -> bytes:
        """The envelope as the bytes to send: the document serialised once, signed over those very bytes."""
        body = canonical(doc)
        signature = base64.b64encode(self._schnorr(hashlib.sha256(DOMAIN + body).digest()))
        return PREFIX + signature + MIDDLE + body + b"}"


def split_payload(payload: bytes) -> tuple[bytes, bytes] | None:
    """(signature, signed document bytes) of a payload in the compact layout, or None for any other layout."""
    if len(payload) <= _DOC_AT + 2 or not payload.startswith(PREFIX) or payload[-1:] != b"}" \
            or payload[_DOC_AT - len(MIDDLE):_DOC_AT] != MIDDLE:
        return None
    try:
        signature = base64.b64decode(payload[len(PREFIX):len(PREFIX) + SIG_B64], validate=True)
    except (binascii.Error, ValueError):
        return None
    return signature, payload[_DOC_AT:-1]


def verify_bytes(signature: bytes, document: bytes, key: PublicKeyXOnly) -> None:
    """SignatureError unless ``signature`` is device ``key``'s over exactly these document bytes."""
    try:
        ok = len(signature) == 64 and key.verify(signature, hashlib.sha256(DOMAIN + document).digest())
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise SignatureError("signature does not verify against the enrolled key")


def _envelope(envelope: Any, max_signature: int) -> tuple[dict[str, Any], bytes]:
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "signature"}:
        raise SignatureError("not a signed envelope")
    doc, sig = envelope["signed"], envelope["signature"]
    if not isinstance(doc, dict) or not isinstance(sig, str) or len(sig) > max_signature:
        raise SignatureError("not a signed envelope")
    try:
        return doc, base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None


def parse_public(value: str) -> PublicKeyXOnly:
    """A device public key from base64 of its 32 x-only bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
        if len(raw) != 32:
            raise SignatureError("a device public key is 32 bytes (BIP340 x-only)")
        return PublicKeyXOnly(raw)
    except (binascii.Error, ValueError, TypeError):
        raise SignatureError("device public key is not a valid base64 secp256k1 x-only key") from None


def verify(envelope: Any, key: PublicKeyXOnly) -> dict[str, Any]:
    """The signed document if ``envelope`` carries a valid signature by device ``key``; SignatureError else."""
    doc, sig = _envelope(envelope, 100)
    try:
        ok = len(sig) == 64 and key.verify(sig, _digest(doc))
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise SignatureError("signature does not verify against the enrolled key")
    return doc


def signed_part(envelope: Any) -> dict[str, Any]:
    """The (not yet verified) signed document, to learn which key to verify it with."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise SignatureError("not a signed envelope")
    doc: dict[str, Any] = envelope["signed"]
    return doc


def parse_command_key(pem: bytes) -> Ed25519PublicKey:
    """The fleet command key a device trusts (ed25519 public key, PEM)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SignatureError("command key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("command key must be ed25519")
    return key


def verify_command(envelope: Any, key: Ed25519PublicKey) -> dict[str, Any]:
    """The signed command if the fleet command ``key`` signed it (``security.signing`` format)."""
    doc, sig = _envelope(envelope, 100)
    try:
        key.verify(sig, canonical(doc))
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify: the command was altered or signed by another key") from None
    return doc
