"""BM13xx driver CPU cost per nonce, and frames decoded per second vs the rate a chain needs.

Real nonces: found here by hashing (SHA-256d) a work item at an easy target, encoded as 11-byte reply frames by
the emulator's independent encoder, then pushed through the driver's receive path (frame decoder -> chain
nonce decode -> job/version lookup -> SHA-256d re-check against the ticket target -> sink) with no I/O.
Baseline, measured in the same run: the bare SHA-256d re-check from a cached midstate (the irreducible cost
of verifying one nonce). Needed rates are computed from the chips' core counts at stock frequency and a
ticket difficulty of 256 (a nonce per 256 x 2^32 hashes).

Usage: python benchmarks/bm13xx.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from openmos.bitcoin import BlockHeader, Midstate, difficulty_to_target, hash_to_int
from openmos.emulator import wire
from openmos.hw.bm13xx import BM1368, BM1370
from openmos.hw.bm13xx.backend import Bm13xxHardware, Bm13xxSettings, BoardSensors, _ChipCounters, _Job
from openmos.hw.bm13xx.chain import Chain, ChipState
from openmos.hw.bm13xx.chip import ChipType
from openmos.hw.work import NonceResult, WorkItem

TICKET = 256


class NullStream:
    async def write(self, data: bytes) -> None: ...

    async def read(self) -> bytes:
        await asyncio.Event().wait()
        return b""

    def set_baud(self, baud: int) -> None: ...

    def close(self) -> None: ...


class NullBoard:
    name = "bench"

    async def open(self) -> list[Chain]:
        return []

    async def close(self) -> None: ...

    async def emergency_off(self, why: str) -> None: ...

    async def sensors(self) -> BoardSensors:
        return BoardSensors()

    async def set_voltage(self, volts: float) -> None: ...

    async def set_fan(self, duty_pct: float) -> None: ...


def find_nonces(header: BlockHeader, count: int, shift: int, chips: int) -> list[int]:
    """Real nonces laid out as the chips report them: core in bits 31-25 and the chip's address in bits 24-17
    of the nonce read big-endian (spread over every chip of the chain)."""
    mid = header.midstate()
    tail12 = header.serialize()[64:76]
    target = difficulty_to_target(2.0 ** -shift)
    step = 256 // chips
    found: list[int] = []
    i = 0
    while len(found) < count:
        chip, counter = len(found) % chips, i
        i += 1
        nonce_be = ((counter % 128) << 25) | ((chip * step) << 17) | ((counter // 128) & 0x1FFFF)
        nonce = int.from_bytes(nonce_be.to_bytes(4, "big"), "little")
        if hash_to_int(mid.hash_tail(tail12 + nonce.to_bytes(4, "little"))) <= target:
            found.append(nonce)
    return found


def build(chip: ChipType, chips: int, shift: int) -> tuple[Bm13xxHardware, Chain, WorkItem]:
    hw = Bm13xxHardware(NullBoard(), Bm13xxSettings(chip, chips, diff1_shift=shift))
    chain = Chain(NullStream(), chip, on_nonce=lambda hit: hw._on_nonce(0, hit))
    addresses = [i * (256 // chips) for i in range(chips)]
    chain.chips = [ChipState(i, a, chip.stock_mhz) for i, a in enumerate(addresses)]
    chain._by_address = {c.address: c for c in chain.chips}
    chain.ticket_difficulty = 1
    hw.chains = [chain]
    hw._counters = [[_ChipCounters() for _ in range(chips)]]
    header = BlockHeader(0x20000000, bytes(range(32)), bytes(range(32, 64)), 1_700_000_000, 0x1D00FFFF, 0)
    work = WorkItem(1, 0, header, 0x1FFFE000, difficulty_to_target(1e9))  # nothing reaches the pool
    hw._jobs = [{3: _Job(work)}]
    hw._update_ticket_target()
    return hw, chain, work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    args = ap.parse_args()
    shift = 20  # ticket target 2**-20 so the benchmark can find real nonces quickly
    header = BlockHeader(0x20000000, bytes(range(32)), bytes(range(32, 64)), 1_700_000_000, 0x1D00FFFF, 0)
    sent: list[NonceResult] = []
    print(f"real nonces at difficulty 2^-{shift}, replayed as {args.frames} reply frames per case")
    for label, chip, chips, chains in (("4 x BM1370 (Bitaxe-class chain)", BM1370, 4, 1),
                                       ("3 x 108 BM1368 (S21-sized; per-chain cost x 3 chains)", BM1368, 108, 3)):
        nonces = find_nonces(header, 200, shift, chips)
        hashrate_ths_per_chip = chip.hashrate_ghs(chip.stock_mhz) / 1000
        hw, chain, _work = build(chip, chips, shift)
        hw._sink = sent.append
        frames = []
        for i, n in enumerate(nonces):
            frames.append(wire.nonce_reply(n, 0, (3 << (3 if chip.name == "BM1366" else 4)) | (i & 7), 0))
        stream = b"".join(frames)
        reps = max(1, args.frames // len(frames))
        # Driver receive path.
        began = time.process_time()
        for _ in range(reps):
            for reply in chain.decoder.feed(stream):
                chain._on_nonce_reply(reply)  # type: ignore[arg-type]
        driver_s = (time.process_time() - began) / (reps * len(frames))
        handled = chain.stats.nonces + chain.stats.unknown_chip_nonces
        # Decode only.
        began = time.process_time()
        for _ in range(reps):
            chain.decoder.feed(stream)
        decode_s = (time.process_time() - began) / (reps * len(frames))
        # Baseline: bare SHA-256d re-check from a cached midstate.
        mid = Midstate.of(header.serialize()[:64])
        tail12 = header.serialize()[64:76]
        target = difficulty_to_target(2.0 ** -shift)
        began = time.process_time()
        for _ in range(reps):
            for n in nonces:
                assert hash_to_int(mid.hash_tail(tail12 + n.to_bytes(4, "little"))) <= target
        base_s = (time.process_time() - began) / (reps * len(nonces))
        ths = chains * chips * hashrate_ths_per_chip
        rate = ths * 1e12 / (TICKET * 2 ** 32)
        print(f"\n{label}: {ths:.1f} TH/s at stock -> {rate:.1f} nonces/s at ticket difficulty {TICKET}")
        print(f"  driver per nonce        {driver_s * 1e6:8.2f} us   ({driver_s / base_s:.2f} x the bare SHA-256d "
              f"re-check, {base_s * 1e6:.2f} us)")
        print(f"  CPU at that rate        {driver_s * rate * 100:8.3f} % of one core (goal < 5 %)")
        print(f"  frames decoded/s        {1 / decode_s:10.0f}   ({1 / decode_s / rate:.0f} x the needed {rate:.1f}/s)")
        print(f"  nonces checked          {handled} (valid {sum(c.nonces for c in hw._counters[0])}, "
              f"chip errors {sum(c.errors for c in hw._counters[0])}, unknown chip {chain.stats.unknown_chip_nonces})")


if __name__ == "__main__":
    main()
