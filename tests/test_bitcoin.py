"""Bitcoin primitives against real mainnet data."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmos.bitcoin import (
    BIP320_MASK,
    DIFF1_TARGET,
    BlockHeader,
    Midstate,
    apply_version_bits,
    bits_to_target,
    build_coinbase,
    difficulty_to_target,
    hash_difficulty,
    merkle_branches,
    merkle_root,
    merkle_root_from_branch,
    rolled_versions,
    sha256d,
    target_to_bits,
    target_to_difficulty,
)
from openmos.bitcoin.version import version_for_index
from openmos.stratum.job import StratumJob


def rev(hex_str: str) -> bytes:
    """Explorer hex -> internal byte order."""
    return bytes.fromhex(hex_str)[::-1]


GENESIS = BlockHeader(1, bytes(32), rev("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"),
                      1231006505, 0x1D00FFFF, 2083236893)

# Block 100,000: four transactions, coinbase included.
B100K_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08044c86041b02"
    "0602ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516"
    "c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000")
B100K_TXIDS = [rev(h) for h in (
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d")]
B100K_MERKLE = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
B100K_PREV = "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"
B100K_HASH = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"


def test_genesis_hash() -> None:
    assert GENESIS.hash_hex() == "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def test_header_roundtrip() -> None:
    raw = GENESIS.serialize()
    assert len(raw) == 80
    assert BlockHeader.parse(raw) == GENESIS
    with pytest.raises(ValueError):
        BlockHeader.parse(raw[:79])


def test_block_125552_hash() -> None:
    header = BlockHeader(1, rev("00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81"),
                         rev("2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3"),
                         1305998791, 440711666, 2504433986)
    assert header.hash_hex() == "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"


def test_block_100000_coinbase_merkle_and_header() -> None:
    assert sha256d(B100K_COINBASE) == B100K_TXIDS[0]
    assert merkle_root(B100K_TXIDS) == rev(B100K_MERKLE)
    branch = merkle_branches(B100K_TXIDS[1:])
    assert len(branch) == 2
    assert merkle_root_from_branch(B100K_TXIDS[0], branch) == rev(B100K_MERKLE)
    header = BlockHeader(1, rev(B100K_PREV), rev(B100K_MERKLE), 1293623863, 0x1B04864C, 274148111)
    assert header.hash_hex() == B100K_HASH
    assert int.from_bytes(header.hash(), "little") <= bits_to_target(0x1B04864C)


def test_stratum_job_rebuilds_block_100000() -> None:
    """Split the real coinbase around its scriptSig as a pool would, and rebuild the real header."""
    cut = B100K_COINBASE.index(bytes.fromhex("044c86041b")) + 1  # after the push opcode
    coinb1, en1, en2, coinb2 = (B100K_COINBASE[:cut], B100K_COINBASE[cut:cut + 4],
                                B100K_COINBASE[cut + 4:cut + 7], B100K_COINBASE[cut + 7:])
    assert build_coinbase(coinb1, en1, en2, coinb2) == B100K_COINBASE
    prev_stratum = b"".join(rev(B100K_PREV)[i:i + 4][::-1] for i in range(0, 32, 4)).hex()
    job = StratumJob.from_notify(["j1", prev_stratum, coinb1.hex(), coinb2.hex(),
                                  [h.hex() for h in merkle_branches(B100K_TXIDS[1:])],
                                  "00000001", "1b04864c", f"{1293623863:08x}", True])
    assert job.to_notify_params()[1] == prev_stratum
    header = job.header(en1, en2, ntime=1293623863, nonce=274148111, version=1)
    assert header.hash_hex() == B100K_HASH


def test_midstate_matches_plain_hash_and_scan_finds_genesis_nonce() -> None:
    raw = GENESIS.serialize()
    mid = Midstate.of(raw[:64])
    assert mid.hash_tail(raw[64:]) == sha256d(raw) == hashlib.sha256(hashlib.sha256(raw).digest()).digest()
    target = bits_to_target(GENESIS.bits)
    found = list(mid.scan(raw[64:76], range(GENESIS.nonce - 500, GENESIS.nonce + 500), target))
    assert [n for n, _ in found] == [GENESIS.nonce]
    with pytest.raises(ValueError):
        Midstate.of(raw[:63])


def test_scan_agrees_with_brute_force_at_easy_target() -> None:
    raw = GENESIS.serialize()
    target = DIFF1_TARGET << 22  # about one hit per 1024 hashes
    expected = [n for n in range(20_000)
                if int.from_bytes(sha256d(raw[:76] + n.to_bytes(4, "little")), "little") <= target]
    got = [n for n, _ in Midstate.of(raw[:64]).scan(raw[64:76], range(20_000), target)]
    assert got == expected and got


@pytest.mark.parametrize("bits", [0x1D00FFFF, 0x1B04864C, 0x1A44B9F2, 0x17034219, 0x207FFFFF])
def test_nbits_roundtrip(bits: int) -> None:
    assert target_to_bits(bits_to_target(bits)) == bits


def test_nbits_known_values() -> None:
    assert bits_to_target(0x1D00FFFF) == 0xFFFF << 208 == DIFF1_TARGET
    with pytest.raises(ValueError):
        bits_to_target(0x1D800000)


@given(st.integers(min_value=1, max_value=(1 << 255)))
def test_target_to_bits_never_exceeds_target(target: int) -> None:
    decoded = bits_to_target(target_to_bits(target))
    assert decoded <= target
    assert decoded > 0


def test_difficulty_target_conversions() -> None:
    assert difficulty_to_target(1) == DIFF1_TARGET
    assert difficulty_to_target(2) == DIFF1_TARGET // 2
    assert difficulty_to_target(0.5) == DIFF1_TARGET * 2
    assert abs(target_to_difficulty(difficulty_to_target(1234.5)) - 1234.5) < 1e-9
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            difficulty_to_target(bad)


def test_hash_difficulty_of_genesis() -> None:
    # The genesis hash beats difficulty 1 by a factor of ~2536 (its leading zeros).
    assert 2500 < hash_difficulty(GENESIS.hash()) < 2600


def test_version_rolling() -> None:
    job_version = 0x20000000
    assert apply_version_bits(job_version, 0x00002000, BIP320_MASK) == 0x20002000
    assert apply_version_bits(job_version, 0xE0000000, BIP320_MASK) == 0x20000000  # outside mask ignored
    versions = list(rolled_versions(job_version, 0x00006000))
    assert versions == [0x20000000, 0x20002000, 0x20004000, 0x20006000]
    assert all(v & ~BIP320_MASK == job_version & ~BIP320_MASK for v in versions)
    assert version_for_index(job_version, 0x00006000, 3) == 0x20006000
    assert list(rolled_versions(job_version, 0)) == [job_version]
    with pytest.raises(ValueError):
        version_for_index(job_version, 0, 1)
