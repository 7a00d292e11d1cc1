"""Share-validation throughput per core vs raw hashlib, measured in the same run.

Rows (all single-core, same machine, same run):
- raw hashlib sha256d over a full 80-byte header (the plain baseline)
- midstate hashlib: the first 64 bytes hashed once, ``copy()`` + 16-byte tail per nonce (the goal's baseline)
- openmos scan: ``Midstate.scan`` -- the CPU backend's hot loop
- openmos nonce validation: what the agent does for every nonce a backend reports
- openmos pool share validation: what the local pool does per submit (coinbase, merkle, header, hash)

Usage: python benchmarks/sha256d.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

from openmos.bitcoin import BIP320_MASK, BlockHeader, Midstate, difficulty_to_target, hash_to_int, sha256d
from openmos.hw.work import WorkItem
from openmos.miner.validation import WorkValidator
from openmos.stratum import StratumJob

HEADER = BlockHeader(0x20000000, bytes(range(32)), bytes(range(32, 64)), 1_700_000_000, 0x1703255B, 0)
RAW = HEADER.serialize()


def rate(fn: Callable[[int], int], seconds: float) -> float:
    """Operations per second: run fn in growing batches until ``seconds`` have passed."""
    n, done, start = 10_000, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn(n)
    return done / (time.perf_counter() - start)


def raw_hashlib(n: int) -> int:
    sha = hashlib.sha256
    prefix = RAW[:76]
    for nonce in range(n):
        sha(sha(prefix + nonce.to_bytes(4, "little")).digest()).digest()
    return n


def midstate_hashlib(n: int) -> int:
    sha = hashlib.sha256
    state = sha(RAW[:64])
    tail = RAW[64:76]
    for nonce in range(n):
        h = state.copy()
        h.update(tail + nonce.to_bytes(4, "little"))
        sha(h.digest()).digest()
    return n


def openmos_scan(n: int) -> int:
    mid = Midstate.of(RAW[:64])
    for _ in mid.scan(RAW[64:76], range(n), 0):  # target 0: nothing matches, pure hashing cost
        pass
    return n


def openmos_nonce_validation(n: int) -> int:
    """Agent path: the WorkValidator the agent runs on every reported nonce (target = everything passes)."""
    validator = WorkValidator(WorkItem(1, 0, HEADER, BIP320_MASK, (1 << 256) - 1))
    digest = validator.digest
    version = HEADER.version | 0x2000
    for nonce in range(n):
        digest(nonce, version)
    return n


JOB = StratumJob("1", bytes(32), bytes(60), bytes(80), tuple(bytes([i]) * 32 for i in range(12)),
                 0x20000000, 0x1703255B, 1_700_000_000, True)


def openmos_pool_validation(n: int) -> int:
    """Pool path per submit: coinbase + 12-level merkle branch + header + hash."""
    target = difficulty_to_target(1)
    en1 = b"\x00\x00\x00\x01"
    for i in range(n):
        header = JOB.header(en1, i.to_bytes(4, "big"), ntime=JOB.ntime, nonce=i, version=JOB.version)
        hash_to_int(header.hash()) <= target  # noqa: B015
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    assert sha256d(RAW) == hashlib.sha256(hashlib.sha256(RAW).digest()).digest()
    rows = [
        ("raw hashlib sha256d (80 B header)", raw_hashlib),
        ("midstate hashlib (baseline)", midstate_hashlib),
        ("openmos Midstate.scan (CPU backend loop)", openmos_scan),
        ("openmos agent nonce re-validation", openmos_nonce_validation),
        ("openmos pool share validation (12-level merkle)", openmos_pool_validation),
    ]
    results = {name: rate(fn, args.seconds) for name, fn in rows}
    base = results["midstate hashlib (baseline)"]
    raw = results["raw hashlib sha256d (80 B header)"]
    print(f"{'single core, measured now':<50} {'hashes/s':>12} {'vs midstate':>12} {'vs raw':>8}")
    for name, value in results.items():
        print(f"{name:<50} {value:>12,.0f} {value / base:>11.2f}x {value / raw:>7.2f}x")
    for name in ("openmos Midstate.scan (CPU backend loop)", "openmos agent nonce re-validation"):
        ratio = results[name] / base
        print(f"goal >= 0.8x of midstate hashlib: {name}: {ratio:.2f}x ({'met' if ratio >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
