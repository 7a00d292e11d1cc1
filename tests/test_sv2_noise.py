"""Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256: primitives against published vectors (BIP324 EllSwift
and ECDH, BIP340 Schnorr, the sv2-spec authority-key vector, RFC 5869 HKDF via `cryptography`), then the
handshake, certificates and the encrypted framing with their refusals."""

from __future__ import annotations

import pytest
from coincurve import PrivateKey, PublicKeyXOnly
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from openmos.stratum.v2 import noise
from openmos.stratum.v2.noise import (
    ACT2_SIZE,
    MAX_PT_LEN,
    Certificate,
    CertificateError,
    CipherState,
    Initiator,
    KeyPair,
    NoiseError,
    Responder,
    ciphertext_length,
    decrypt_payload,
    encrypt_payload,
    issue_server_identity,
)

# bitcoin/bips bip-0324/xswiftec_test_vectors.csv: (u, t) -> x via XSwiftEC (ellswift_decode)
XSWIFTEC = [
    ("0a6361b3a802f55cd5ae06101c88a1e216320fe11cc0cfe1d791eed08a1200fd",
     "60a3ed14bd9df0bfb89ada9372a7b5790b123a66bf130f5788237e8cd5225de4",
     "a0223bc98997647daf4d520129bdb66e4937a00d1533af1fa29645fb96fb5bb5"),
    ("0a6361b3a802f55cd5ae06101c88a1e216320fe11cc0cfe1d791eed08a1200fd",
     "34c6053ffa0d923f5c7c159b3464c4f4d98980dfdcd351bb790cd6fa20b0f74c",
     "a0223bc98997647daf4d520129bdb66e4937a00d1533af1fa29645fb96fb5bb5"),
    ("2921a11f25dadaa24aa79a548e4e81508c2e5e56af2d833d65e2bcce448ce2f5",
     "b9c76c21d3fabb948fa0326bf9e999068e9eed56ee4e76cb81558aa26969c56c",
     "3a70c472406b83d9f1c4398b8ecef786499bc44a3b30c34ac30f2d8a418bffa3"),
    ("f566cc6fccc657365c0197accf3a7d6f80f85209ff666ff774f4dcbc524aa842",
     "c64fbf71138e66de8ce0abdf3b6f51d151ca8e1037ab5b979e62b2faa15be81c",
     "0a9933903339a8c9a3fe685330c582907f07adf6009990088b0b2342adb553ed"),
]

# bitcoin/bips bip-0324/packet_encoding_test_vectors.csv: in_priv_ours, in_ellswift_ours,
# in_ellswift_theirs, in_initiating, mid_x_ours, mid_shared_secret
BIP324_ECDH = [
    ("e79f04ad4c684525ff3e3cf7c19f4cdb11193d387d7f3fe82a948a0c3165f5fe",
     "4eff53ea1945e57b5d170565e760d771e5d496101c1005c302fd687af80d8b858c5a681c474fc4c0546ee464a1b95899ecb9d4f50c2c0854fe029fc054ae6777",
     "824a1da0530fa695b95b375fee2a56ec96ce375ddd2fcf8367cc8ec1c0b751a3304bbef5dc96543acaac50c24be8cb39906ef8521727de0c6e96c2060a026bd7",
     True, "b63341693587b4944b865485cffcc34707b3e0760a6ba8d1d402fc1c996c4e91",
     "05ac09c882b2cddd57fd4a1a14f93ae78d78a2ab2adb8cb6d67176cdb3101e15"),
    ("53a915e6d8f6c5bbb93e537081085e9e642dc525649acf05be74e3a825e20921",
     "715d7b8357dd4d15a07b3f8c6764ebd9927140f75047fb50478c33ea8889d710511cdf39aa0fd6b1e94ea660d87f9d97bffc548646f9e2aaebc1468fe563fb97",
     "cea7abc3112397b894bd3e89a615248af473f897bbdd30997c20e53e7ce499a295e55c4c5655cd3d21191e76c8af0aa1bbea10fd1b540a42d0fbed388dc59877",
     False, "533bbaefc711f303be5e8271fdecfd31d03abd42128ff73479e2a427059e4a74",
     "08cbe6a86ff92a9757b2aeea92b8b2f4d78426786a2caec99c3cc73d7dda47ab"),
    ("f360308206fb441c7713b1a24ba4096a2fa0d5401411198b7008f82ae85257fe",
     "3d4aa6a71a8a734e014b4d9e6b62989f022c1e2238ae476b11465cb86fe8cf7243db6f9472e188590705cf9b35121e06e57cb106a6043ab147b7c73871da8222",
     "f0ebc3c872339622fbf2ab1b8aa2117c4d752b64eac9203962c03a47497a89c0dd298348e5bb63d3433c48ed6da6bc2e2dbe78f7b91247dd29f1f51a858d464a",
     False, "29bf8fe2cbd12835d3e6652840b8b1a2acf99d7b44610e738aafd7fd207c9b25",
     "07eff272cd331aeb14db342b82f6df98303b01471f4dbe71028b127577216d9b"),
    ("073f53403256e2b699e32cd4cebadfab63d9076a7cd541d9656e27b1baff66bb",
     "5c9c90c4e216f8a4c2642535d1f699364f9054ca01bca0239fa65bcaf0ec0278e5a36bc85eae96850feff889b66c9106c170fe655f973f533ee3557bd3cb6e64",
     "e9221c9698cb69b63c5a4e224132389d346fd2f0f3262218301be51687b8de846c652ea8aa7425a5c08a7bd52078168d28ecf42196e33e155e215553ce6aee83",
     True, "0ce4860107efd6deb9e8fc71cfc2522b4a5a0dc171746fb995ce485570449ab5",
     "88cf0eb49ee4b7b46cd39fb3f4126b285750d897fdcba72b08d9da351167e227"),
]

# bitcoin/bips bip-0340/test-vectors.csv: secret, public key, aux_rand, message, signature
BIP340_SIGN = [
    ("0000000000000000000000000000000000000000000000000000000000000003",
     "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
     "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0"),
    ("B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "0000000000000000000000000000000000000000000000000000000000000001",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
     "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A"),
]
BIP340_VERIFY_FALSE = [  # index 6 (has_even_y(R) false), 7 (negated message), 8 (negated s)
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A1460297556"
     "3CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2"),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F"
     "28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD"),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6"),
]


@pytest.mark.parametrize(("u", "t", "x"), XSWIFTEC)
def test_ellswift_decode_matches_bip324(u: str, t: str, x: str) -> None:
    assert noise.ellswift_decode_x(bytes.fromhex(u + t)) == bytes.fromhex(x)


@pytest.mark.parametrize(("priv", "ours", "theirs", "initiating", "x_ours", "secret"), BIP324_ECDH)
def test_ellswift_ecdh_matches_bip324(priv: str, ours: str, theirs: str, initiating: bool, x_ours: str,
                                      secret: str) -> None:
    sk, ell_ours, ell_theirs = bytes.fromhex(priv), bytes.fromhex(ours), bytes.fromhex(theirs)
    assert noise.ellswift_decode_x(ell_ours) == bytes.fromhex(x_ours)
    assert noise.ellswift_ecdh(sk, ell_ours, ell_theirs, initiating) == bytes.fromhex(secret)


def test_ellswift_keys_of_a_pair_agree_from_both_roles() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    assert noise.ellswift_decode_x(a.ellswift) == a.xonly
    assert (noise.ellswift_ecdh(a.secret, a.ellswift, b.ellswift, True)
            == noise.ellswift_ecdh(b.secret, b.ellswift, a.ellswift, False))
    assert noise.ellswift_ecdh(a.secret, a.ellswift, b.ellswift, True) != \
        noise.ellswift_ecdh(a.secret, a.ellswift, b.ellswift, False)  # roles matter (sv2-spec 4.4.2)


@pytest.mark.parametrize(("sk", "pk", "aux", "msg", "sig"), BIP340_SIGN)
def test_bip340_sign_and_verify(sk: str, pk: str, aux: str, msg: str, sig: str) -> None:
    key = bytes.fromhex(sk)
    assert noise.xonly_public_key(key) == bytes.fromhex(pk)
    assert PrivateKey(key).sign_schnorr(bytes.fromhex(msg), bytes.fromhex(aux)) == bytes.fromhex(sig)
    assert PublicKeyXOnly(bytes.fromhex(pk)).verify(bytes.fromhex(sig), bytes.fromhex(msg))


@pytest.mark.parametrize(("pk", "msg", "sig"), BIP340_VERIFY_FALSE)
def test_bip340_rejects_invalid(pk: str, msg: str, sig: str) -> None:
    assert not PublicKeyXOnly(bytes.fromhex(pk)).verify(bytes.fromhex(sig), bytes.fromhex(msg))


def test_authority_key_vector_from_the_spec() -> None:
    raw = bytes([118, 99, 112, 0, 151, 156, 28, 17, 175, 12, 48, 11, 205, 140, 127, 228, 134, 16, 252, 233, 185,
                 193, 30, 61, 174, 227, 90, 224, 176, 138, 116, 85])
    text = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"
    assert noise.encode_authority_key(raw) == text
    assert noise.decode_authority_key(text) == raw
    for bad in (text[:-1] + ("j" if text[-1] != "j" else "k"), "0OIl", "", text + "1"):
        with pytest.raises(ValueError):
            noise.decode_authority_key(bad)


def test_hkdf_chain_matches_rfc5869() -> None:
    ck, ikm = bytes(range(32)), b"input key material"
    okm = HKDF(hashes.SHA256(), 64, salt=ck, info=b"").derive(ikm)
    assert noise.hkdf2(ck, ikm) == (okm[:32], okm[32:])


def test_cipher_state_nonce_layout_and_limits() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = bytes(range(32))
    cs = CipherState(key)
    cs.n = 0x0102030405060708
    ct = cs.encrypt(b"ad", b"hello")
    assert ChaCha20Poly1305(key).decrypt(b"\0\0\0\0" + bytes.fromhex("0807060504030201"), ct, b"ad") == b"hello"
    assert cs.n == 0x0102030405060709
    cs.n = noise.NONCE_LIMIT
    with pytest.raises(NoiseError, match="exhausted"):
        cs.encrypt(b"", b"x")
    rx = CipherState(key)
    with pytest.raises(NoiseError, match="authentication"):
        rx.decrypt(b"", b"\0" * 21)
    assert rx.n == 0  # not advanced by a failed decryption


def test_rekey_keeps_both_sides_in_step() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    a.rekey()
    b.rekey()
    assert a.key == b.key != bytes(32)
    assert b.decrypt(b"", a.encrypt(b"", b"after rekey")) == b"after rekey"


def _handshake(authority: KeyPair, expected: bytes | None = None, *, now: float | None = None,
               validity: int = 3600) -> tuple[noise.Session, noise.Session]:
    static, cert = issue_server_identity(authority.secret, validity, now=now)
    initiator, responder = Initiator(expected if expected is not None else authority.xonly), Responder(static, cert)
    reply, server = responder.act2(initiator.act1())
    assert len(reply) == ACT2_SIZE == 234
    return initiator.act2(reply), server


def test_handshake_agrees_on_keys_and_authenticates_the_server() -> None:
    authority = KeyPair.generate()
    client, server = _handshake(authority)
    assert client.handshake_hash == server.handshake_hash
    assert server.recv.decrypt(b"", client.send.encrypt(b"", b"up")) == b"up"
    assert client.recv.decrypt(b"", server.send.encrypt(b"", b"down")) == b"down"
    assert client.send.key != client.recv.key  # one key per direction


def test_wrong_authority_key_is_refused() -> None:
    with pytest.raises(CertificateError, match="not signed by the configured authority"):
        _handshake(KeyPair.generate(), expected=KeyPair.generate().xonly)


def test_expired_and_not_yet_valid_certificates_are_refused() -> None:
    authority = KeyPair.generate()
    static, cert = issue_server_identity(authority.secret, 3600, now=1_000_000)
    initiator = Initiator(authority.xonly)
    reply, _ = Responder(static, cert).act2(initiator.act1())
    with pytest.raises(CertificateError, match="not valid now"):
        initiator.act2(reply, now=1_000_000 + 7200)
    initiator = Initiator(authority.xonly)
    reply, _ = Responder(static, cert).act2(initiator.act1())
    with pytest.raises(CertificateError, match="not valid now"):
        initiator.act2(reply, now=1_000_000 - 3600)


def test_certificate_for_another_server_key_is_refused() -> None:
    authority = KeyPair.generate()
    static = KeyPair.generate()
    cert = Certificate.issue(authority.secret, KeyPair.generate().xonly, 0, 2**32 - 1)  # signed for someone else
    initiator = Initiator(authority.xonly)
    reply, _ = Responder(static, cert).act2(initiator.act1())
    with pytest.raises(CertificateError):
        initiator.act2(reply)


@pytest.mark.parametrize("position", [0, 63, 64, 100, 143, 144, 200, 233])
def test_any_flipped_handshake_byte_is_detected(position: int) -> None:
    authority = KeyPair.generate()
    static, cert = issue_server_identity(authority.secret, 3600)
    initiator = Initiator(authority.xonly)
    reply, _ = Responder(static, cert).act2(initiator.act1())
    tampered = bytearray(reply)
    tampered[position] ^= 0x01
    with pytest.raises(NoiseError):
        initiator.act2(bytes(tampered))


def test_payload_chunking_across_noise_blocks() -> None:
    authority = KeyPair.generate()
    client, server = _handshake(authority)
    for size in (0, 1, MAX_PT_LEN, MAX_PT_LEN + 1, 3 * MAX_PT_LEN + 7):
        payload = bytes(i % 251 for i in range(size))
        ct = encrypt_payload(client.send, payload)
        assert len(ct) == ciphertext_length(size)
        assert decrypt_payload(server.recv, ct) == payload
    assert ciphertext_length(MAX_PT_LEN) == 65535 and ciphertext_length(1) == 17 and ciphertext_length(0) == 0


def test_handshake_transcript_follows_the_spec_steps_independently() -> None:
    """Recompute act 2 and the split from sv2-spec 4.5 step by step with bare primitives (hashlib, hmac,
    ChaCha20-Poly1305, BIP324 XDH) and compare with the implementation's bytes and keys."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        temp = hmac.new(ck, ikm, "sha256").digest()
        o1 = hmac.new(temp, b"\x01", "sha256").digest()
        return o1, hmac.new(temp, o1 + b"\x02", "sha256").digest()

    def enc(k: bytes, n: int, ad: bytes, pt: bytes) -> bytes:
        return ChaCha20Poly1305(k).encrypt(b"\0" * 4 + n.to_bytes(8, "little"), pt, ad)

    authority = KeyPair.from_secret(bytes([7]) * 32, aux=bytes(32))
    e_i = KeyPair.from_secret(bytes([1]) * 32, aux=bytes(32))
    e_r = KeyPair.from_secret(bytes([2]) * 32, aux=bytes(32))
    s_r = KeyPair.from_secret(bytes([3]) * 32, aux=bytes(32))
    cert = Certificate.issue(authority.secret, s_r.xonly, 1_700_000_000, 1_800_000_000)

    initiator = Initiator(authority.xonly, ephemeral=e_i)
    act1 = initiator.act1()
    act2, server = Responder(s_r, cert, ephemeral=e_r).act2(act1)
    client = initiator.act2(act2, now=1_750_000_000)

    # 4.5.1: h = HASH(protocolName); ck = h; h = HASH(h)
    hh = h(b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256")
    ck, hh = hh, h(hh)
    assert act1 == e_i.ellswift
    hh = h(hh + e_i.ellswift)  # MixHash(e.public_key)
    hh = h(hh)  # EncryptAndHash(empty) with empty k = MixHash(empty)
    # 4.5.2.1 responder
    expected = bytearray(e_r.ellswift)
    hh = h(hh + e_r.ellswift)
    ee = noise.ellswift_ecdh(e_r.secret, e_r.ellswift, e_i.ellswift, initiator=False)
    ck, k = hkdf(ck, ee)
    ct = enc(k, 0, hh, s_r.ellswift)
    expected += ct
    hh = h(hh + ct)
    es = noise.ellswift_ecdh(s_r.secret, s_r.ellswift, e_i.ellswift, initiator=False)
    ck, k = hkdf(ck, es)
    ct = enc(k, 0, hh, cert.encode())
    expected += ct
    hh = h(hh + ct)
    assert act2 == bytes(expected)
    k1, k2 = hkdf(ck, b"")
    assert (client.send.key, client.recv.key) == (k1, k2)
    assert (server.recv.key, server.send.key) == (k1, k2)
    assert client.handshake_hash == server.handshake_hash == hh
    # The certificate signs SHA-256(version || valid_from || not_valid_after || server x-only key).
    m = h((0).to_bytes(2, "little") + (1_700_000_000).to_bytes(4, "little") + (1_800_000_000).to_bytes(4, "little")
          + s_r.xonly)
    assert PublicKeyXOnly(authority.xonly).verify(cert.signature, m)
