"""Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256 (sv2-spec section 4), certificates and authority keys.

- keys: secp256k1 secret -> 64-byte ElligatorSwift public key (BIP324), X-only ECDH with the BIP324
  tagged hash (libsecp256k1 through coincurve), BIP340 Schnorr for certificates;
- ``CipherState``: ChaCha20-Poly1305 (IETF) with nonce = 32 zero bits || 64-bit little-endian counter,
  one per direction; a counter that reaches 2^64-1 (the Noise limit, reserved for rekeying) ends the
  session rather than ever reusing a nonce;
- the NX handshake as ``Initiator`` / ``Responder`` state machines over plain bytes (act 1: 64 bytes,
  act 2: 64 + 80 + 90 = 234 bytes; the spec's table still says 170, a figure from before the keys became
  64-byte EllSwift encodings), so the transport and the tests drive the same code;
- ``Certificate``: SIGNATURE_NOISE_MESSAGE {version U16, valid_from U32, not_valid_after U32, signature}
  over SHA-256(version || valid_from || not_valid_after || server x-only key), signed by the pool authority;
- authority public keys in the URL form: base58check of [1, 0] || 32-byte x-only key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
from coincurve.context import GLOBAL_CONTEXT
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
ELLSWIFT_SIZE = 64
MAC_SIZE = 16
CERT_SIZE = 74
ACT1_SIZE = ELLSWIFT_SIZE
ACT2_SIZE = ELLSWIFT_SIZE + (ELLSWIFT_SIZE + MAC_SIZE) + (CERT_SIZE + MAC_SIZE)  # 234
MAX_CT_LEN = 65535
MAX_PT_LEN = MAX_CT_LEN - MAC_SIZE  # 65519
NONCE_LIMIT = (1 << 64) - 1  # Noise reserves n = 2^64-1; we never encrypt with it
CERT_VERSION = 0
AUTHORITY_KEY_PREFIX = b"\x01\x00"


class NoiseError(ConnectionError):
    """The encrypted session cannot continue (bad MAC, bad certificate, nonce exhaustion...)."""


class CertificateError(NoiseError):
    """The pool's certificate is not signed by the expected authority or is outside its validity window."""


# -- keys ---------------------------------------------------------------------------------------------


def _ctx() -> object:
    return GLOBAL_CONTEXT.ctx


def valid_secret(secret: bytes) -> bytes:
    if len(secret) != 32:
        raise ValueError("a secp256k1 secret key is 32 bytes")
    if not lib.secp256k1_ec_seckey_verify(_ctx(), secret):
        raise ValueError("secret key is zero or not below the curve order")
    return secret


def ellswift_create(secret: bytes, aux: bytes | None = None) -> bytes:
    """The 64-byte ElligatorSwift encoding of secret*G (random-looking; ``aux`` picks among encodings)."""
    out = ffi.new("unsigned char[64]")
    if not lib.secp256k1_ellswift_create(_ctx(), out, valid_secret(secret), aux if aux is not None else os.urandom(32)):
        raise ValueError("ellswift_create failed")
    return bytes(ffi.buffer(out, 64))


def ellswift_decode_x(ell: bytes) -> bytes:
    """The 32-byte x coordinate an ElligatorSwift encoding stands for (every 64-byte string decodes)."""
    if len(ell) != ELLSWIFT_SIZE:
        raise ValueError("an ElligatorSwift public key is 64 bytes")
    pub = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ellswift_decode(_ctx(), pub, ell):
        raise ValueError("ellswift_decode failed")
    out = ffi.new("unsigned char[33]")
    size = ffi.new("size_t *", 33)
    lib.secp256k1_ec_pubkey_serialize(_ctx(), out, size, pub, lib.SECP256K1_EC_COMPRESSED)
    return bytes(ffi.buffer(out, 33))[1:]


def ellswift_ecdh(secret: bytes, ours: bytes, theirs: bytes, initiator: bool) -> bytes:
    """v2_ecdh of BIP324: tagged_hash(ell_initiator || ell_responder || x(secret * theirs))."""
    if len(ours) != ELLSWIFT_SIZE or len(theirs) != ELLSWIFT_SIZE:
        raise ValueError("ElligatorSwift keys are 64 bytes")
    out = ffi.new("unsigned char[32]")
    ell_a, ell_b = (ours, theirs) if initiator else (theirs, ours)
    ok = lib.secp256k1_ellswift_xdh(_ctx(), out, ell_a, ell_b, valid_secret(secret), 0 if initiator else 1,
                                    lib.secp256k1_ellswift_xdh_hash_function_bip324, ffi.NULL)
    if not ok:
        raise NoiseError("ECDH failed")
    return bytes(ffi.buffer(out, 32))


def xonly_public_key(secret: bytes) -> bytes:
    return PublicKeyXOnly.from_secret(valid_secret(secret)).format()


@dataclass(frozen=True)
class KeyPair:
    """A secp256k1 key pair with its ElligatorSwift public encoding."""

    secret: bytes
    ellswift: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_secret(PrivateKey().secret)

    @classmethod
    def from_secret(cls, secret: bytes, aux: bytes | None = None) -> KeyPair:
        return cls(valid_secret(secret), ellswift_create(secret, aux))

    @property
    def xonly(self) -> bytes:
        return xonly_public_key(self.secret)


# -- authority keys (sv2-spec 4.7) --------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58check_encode(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = _B58[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58check_decode(text: str) -> bytes:
    if not text or len(text) > 200 or any(c not in _B58 for c in text):
        raise ValueError("not a base58 string")
    n = 0
    for c in text:
        n = n * 58 + _B58.index(c)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    data = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    if len(data) < 5:
        raise ValueError("base58check string too short")
    payload, check = data[:-4], data[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise ValueError("base58check checksum mismatch (mistyped key?)")
    return payload


def encode_authority_key(xonly: bytes) -> str:
    if len(xonly) != 32:
        raise ValueError("an authority public key is a 32-byte x-only key")
    return b58check_encode(AUTHORITY_KEY_PREFIX + xonly)


def decode_authority_key(text: str) -> bytes:
    """The 32-byte x-only authority key from its URL form; ValueError says what is wrong."""
    payload = b58check_decode(text)
    if len(payload) != 34 or payload[:2] != AUTHORITY_KEY_PREFIX:
        raise ValueError("authority key must be version [1, 0] followed by a 32-byte public key")
    key = payload[2:]
    try:
        PublicKeyXOnly(key)
    except ValueError:
        raise ValueError("authority key is not a point on secp256k1") from None
    return key


# -- certificate (sv2-spec 4.5.3) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """SIGNATURE_NOISE_MESSAGE; with the server's static key it forms the signed CERTIFICATE."""

    version: int
    valid_from: int
    not_valid_after: int
    signature: bytes

    @staticmethod
    def signed_hash(version: int, valid_from: int, not_valid_after: int, server_xonly: bytes) -> bytes:
        return hashlib.sha256(struct.pack("<HII", version, valid_from, not_valid_after) + server_xonly).digest()

    @classmethod
    def issue(cls, authority_secret: bytes, server_xonly: bytes, valid_from: int, not_valid_after: int,
              version: int = CERT_VERSION) -> Certificate:
        m = cls.signed_hash(version, valid_from, not_valid_after, server_xonly)
        return cls(version, valid_from, not_valid_after, PrivateKey(valid_secret(authority_secret)).sign_schnorr(m))

    def encode(self) -> bytes:
        return struct.pack("<HII", self.version, self.valid_from, self.not_valid_after) + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        if len(data) != CERT_SIZE:
            raise CertificateError(f"certificate must be {CERT_SIZE} bytes, got {len(data)}")
        version, valid_from, not_valid_after = struct.unpack("<HII", data[:10])
        return cls(version, valid_from, not_valid_after, data[10:])

    def verify(self, authority_xonly: bytes, server_xonly: bytes, now: float) -> None:
        """Raise CertificateError unless signed by ``authority_xonly`` for this server key and valid now."""
        m = self.signed_hash(self.version, self.valid_from, self.not_valid_after, server_xonly)
        try:
            good = PublicKeyXOnly(authority_xonly).verify(self.signature, m)
        except ValueError:
            good = False
        if not good:
            raise CertificateError("pool certificate is not signed by the configured authority key "
                                   "(wrong key in the URL, or someone is impersonating the pool)")
        if not self.valid_from <= int(now) <= self.not_valid_after:
            raise CertificateError(f"pool certificate is not valid now: valid {self.valid_from}.."
                                   f"{self.not_valid_after}, clock says {int(now)} (check the clock)")


# -- symmetric state (sv2-spec 4.4) -------------------------------------------------------------------


def hmac_hash(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac_hash(chaining_key, ikm)
    out1 = hmac_hash(temp, b"\x01")
    return out1, hmac_hash(temp, out1 + b"\x02")


_NONCE = struct.Struct("<4xQ")  # 32 zero bits, then the 64-bit counter little-endian (sv2-spec 4.4.1)


def _nonce(n: int) -> bytes:
    return _NONCE.pack(n)


class CipherState:
    """ChaCha20-Poly1305 with a 64-bit message counter; one object per direction."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.n = 0
        self._aead = ChaCha20Poly1305(key) if key is not None else None

    def has_key(self) -> bool:
        return self._aead is not None

    def _next(self) -> int:
        if self.n >= NONCE_LIMIT:
            raise NoiseError("nonce counter exhausted (2^64-1 messages): the session must be re-established")
        return self.n

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            return plaintext
        ct = aead.encrypt(_NONCE.pack(self._next()), plaintext, ad)
        self.n += 1
        return ct

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            return ciphertext
        try:
            pt = aead.decrypt(_NONCE.pack(self._next()), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("authentication failed: the frame was altered in transit or the keys differ") from None
        self.n += 1  # only after a successful decryption (sv2-spec 4.4.1)
        return pt

    def rekey(self) -> None:
        """Noise Rekey(): k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes)."""
        if self._aead is None:
            raise NoiseError("no key to rekey")
        self.key = self._aead.encrypt(_nonce(NONCE_LIMIT), bytes(32), b"")[:32]
        self._aead = ChaCha20Poly1305(self.key)


class _Symmetric:
    def __init__(self) -> None:
        h = hashlib.sha256(PROTOCOL_NAME).digest()
        self.ck = h
        self.h = hashlib.sha256(h).digest()
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf2(self.ck, ikm)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


@dataclass
class Session:
    """The transport keys after the handshake: ``send`` encrypts, ``recv`` decrypts."""

    send: CipherState
    recv: CipherState
    handshake_hash: bytes
    remote_static_xonly: bytes | None = None
    certificate: Certificate | None = None


class Initiator:
    """Client side: ``act1()`` -> 64 bytes to send; ``act2(234 bytes)`` -> Session (after the cert check)."""

    def __init__(self, authority_xonly: bytes | None, ephemeral: KeyPair | None = None) -> None:
        self.authority = authority_xonly
        self.e = ephemeral or KeyPair.generate()
        self.sym = _Symmetric()

    def act1(self) -> bytes:
        self.sym.mix_hash(self.e.ellswift)
        self.sym.encrypt_and_hash(b"")
        return self.e.ellswift

    def act2(self, message: bytes, now: float | None = None) -> Session:
        if len(message) != ACT2_SIZE:
            raise NoiseError(f"handshake reply must be {ACT2_SIZE} bytes, got {len(message)}")
        re = message[:64]
        self.sym.mix_hash(re)
        self.sym.mix_key(ellswift_ecdh(self.e.secret, self.e.ellswift, re, initiator=True))
        rs = self.sym.decrypt_and_hash(message[64:144])
        self.sym.mix_key(ellswift_ecdh(self.e.secret, self.e.ellswift, rs, initiator=True))
        cert = Certificate.decode(self.sym.decrypt_and_hash(message[144:234]))
        server_xonly = ellswift_decode_x(rs)
        if self.authority is not None:
            cert.verify(self.authority, server_xonly, time.time() if now is None else now)
        c1, c2 = self.sym.split()
        return Session(send=c1, recv=c2, handshake_hash=self.sym.h, remote_static_xonly=server_xonly,
                       certificate=cert)


class Responder:
    """Pool side: ``act2(64 bytes from the client)`` -> (234 bytes to send, Session)."""

    def __init__(self, static: KeyPair, certificate: Certificate, ephemeral: KeyPair | None = None) -> None:
        self.s = static
        self.cert = certificate
        self.e = ephemeral or KeyPair.generate()
        self.sym = _Symmetric()

    def act2(self, message: bytes) -> tuple[bytes, Session]:
        if len(message) != ACT1_SIZE:
            raise NoiseError(f"handshake opening must be {ACT1_SIZE} bytes, got {len(message)}")
        re = message
        self.sym.mix_hash(re)
        self.sym.decrypt_and_hash(b"")
        out = bytearray(self.e.ellswift)
        self.sym.mix_hash(self.e.ellswift)
        self.sym.mix_key(ellswift_ecdh(self.e.secret, self.e.ellswift, re, initiator=False))
        out += self.sym.encrypt_and_hash(self.s.ellswift)
        self.sym.mix_key(ellswift_ecdh(self.s.secret, self.s.ellswift, re, initiator=False))
        out += self.sym.encrypt_and_hash(self.cert.encode())
        c1, c2 = self.sym.split()
        return bytes(out), Session(send=c2, recv=c1, handshake_hash=self.sym.h)


def issue_server_identity(authority_secret: bytes, validity_s: int, now: float | None = None,
                          static: KeyPair | None = None) -> tuple[KeyPair, Certificate]:
    """A fresh static key for a pool server and its certificate, valid from a minute ago for validity_s."""
    static = static or KeyPair.generate()
    start = int(time.time() if now is None else now) - 60
    return static, Certificate.issue(authority_secret, static.xonly, start, start + 60 + validity_s)


# -- transport framing (sv2-spec 4.6) -----------------------------------------------------------------


def ciphertext_length(plaintext_length: int) -> int:
    full, rest = divmod(plaintext_length, MAX_PT_LEN)
    return full * MAX_CT_LEN + (rest + MAC_SIZE if rest else 0)


def encrypt_payload(cipher: CipherState, payload: bytes) -> bytes:
    if len(payload) <= MAX_PT_LEN:
        return cipher.encrypt(b"", payload) if payload else b""
    return b"".join(cipher.encrypt(b"", payload[i:i + MAX_PT_LEN]) for i in range(0, len(payload), MAX_PT_LEN))


def decrypt_payload(cipher: CipherState, ciphertext: bytes) -> bytes:
    if len(ciphertext) <= MAX_CT_LEN:
        return cipher.decrypt(b"", ciphertext) if ciphertext else b""
    return b"".join(cipher.decrypt(b"", ciphertext[i:i + MAX_CT_LEN])
                    for i in range(0, len(ciphertext), MAX_CT_LEN))
