"""Emulated BM13xx chips and the daisy chain they form: registers, addressing, jobs and real SHA-256d hashing."""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

from openmos.emulator import wire

log = logging.getLogger(__name__)

DIFF1 = 0xFFFF << 208
RESET_BAUD_REGISTER = 0x01301A00  # divider 26: 25 MHz / (8 x 27) = 115,740 baud


@dataclass(frozen=True)
class ChipModel:
    """What the public description says differs between chip types."""

    name: str
    chip_id: int
    cores: int
    stock_mhz: float
    watts_per_mhz_v2: float  # dynamic power model: P = k x f x V^2 (modelled)
    slot_shift: int  # where the returned job slot sits in the result header
    small_core_bits: int


MODELS = {
    "bm1366": ChipModel("BM1366", 0x1366, 112, 485.0, 0.0215, 3, 3),
    "bm1368": ChipModel("BM1368", 0x1368, 80, 490.0, 0.0195, 4, 4),
    "bm1370": ChipModel("BM1370", 0x1370, 128, 525.0, 0.0172, 4, 4),
}


def pll_mhz(value: int) -> float:
    fb, ref, post = (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
    pd1, pd2 = (post >> 4) + 1, (post & 0x0F) + 1
    if not fb or not ref:
        return 0.0
    return 25.0 * fb / (ref * pd1 * pd2)


def ticket_difficulty(value: int) -> int:
    raw = value.to_bytes(4, "big")
    mask = 0
    for i, byte in enumerate(reversed(raw)):  # last byte on the wire holds the least significant bits
        mask |= int(f"{byte:08b}"[::-1], 2) << (8 * i)
    return mask + 1


def spread_bits(index: int, mask: int) -> int:
    """The ``index``-th combination of the bits set in ``mask``."""
    out, bit = 0, 0
    while index and mask >> bit:
        if mask >> bit & 1:
            out |= (index & 1) << bit
            index >>= 1
        bit += 1
    return out


@dataclass
class Job:
    slot: int
    version: int
    prev_hash: bytes  # internal byte order
    merkle_root: bytes
    ntime: int
    nbits: int

    @classmethod
    def from_wire(cls, data: bytes) -> Job:
        if len(data) != 82:
            raise ValueError("job data is 82 bytes")

        def words_back(b: bytes) -> bytes:
            return b"".join(b[i:i + 4] for i in (28, 24, 20, 16, 12, 8, 4, 0))

        return cls((data[0] >> 3) & 0x0F, int.from_bytes(data[78:82], "little"), words_back(data[46:78]),
                   words_back(data[14:46]), int.from_bytes(data[10:14], "little"), int.from_bytes(data[6:10], "little"))


@dataclass
class EmulatedChip:
    model: ChipModel
    position: int
    address: int = 0
    addressed: bool = False
    dead: bool = False
    registers: dict[int, int] = field(default_factory=dict)
    job: Job | None = None
    cursor: int = 0  # position in this job's search space
    hashes: int = 0
    hash_remainder: float = 0.0
    errors: int = 0

    def reset(self) -> None:
        self.address, self.addressed, self.job, self.cursor = 0, False, None, 0
        self.registers = {0x00: self.model.chip_id << 16, 0x28: RESET_BAUD_REGISTER, 0x08: 0x40A00241,
                          0x14: 0, 0xA4: 0}

    @property
    def mhz(self) -> float:
        return pll_mhz(self.registers.get(0x08, 0))

    @property
    def version_mask(self) -> int:
        value = self.registers.get(0xA4, 0)
        return (value & 0xFFFF) << 13 if value >> 28 == 0x9 else 0

    def read(self, register: int) -> int:
        if register == 0x8C:
            return (self.hashes >> 32) & 0xFFFFFFFF  # counts in units of 2^32 (emulated) hashes
        if register == 0x4C:
            return self.errors & 0xFFFFFFFF
        return self.registers.get(register, 0)

    def hash(self, count: int, diff1_shift: int) -> list[bytes]:
        """Scan ``count`` nonces of the current job; reply frames for those meeting the ticket mask."""
        job = self.job
        if job is None or count <= 0:
            return []
        target = (DIFF1 << diff1_shift) // ticket_difficulty(self.registers.get(0x14, 0))
        mask = self.version_mask
        out = []
        per_version = self.model.cores << 17
        tail_base = job.merkle_root[28:32] + job.ntime.to_bytes(4, "little") + job.nbits.to_bytes(4, "little")
        head = job.prev_hash + job.merkle_root[:28]
        state = None
        state_roll = -1
        for _ in range(count):
            roll, within = divmod(self.cursor, per_version)
            self.cursor += 1
            if roll != state_roll:
                rolled = spread_bits(roll, mask) if mask else 0
                if roll and not mask:
                    continue  # no rolling allowed: the search space is exhausted
                version = job.version | rolled
                state = hashlib.sha256(version.to_bytes(4, "little") + head)
                state_roll = roll
            core, counter = within % self.model.cores, within // self.model.cores
            nonce_be = (core << 25) | (self.address << 17) | counter
            nonce = int.from_bytes(nonce_be.to_bytes(4, "big"), "little")
            assert state is not None
            h = state.copy()
            h.update(tail_base + nonce.to_bytes(4, "little"))
            digest = hashlib.sha256(h.digest()).digest()
            if int.from_bytes(digest, "little") <= target:
                small = random.getrandbits(self.model.small_core_bits)
                header = (job.slot << self.model.slot_shift) | small
                out.append(wire.nonce_reply(nonce, 0, header, rolled >> 13))
        self.hashes += count << diff1_shift if diff1_shift >= 0 else count
        return out


@dataclass
class ChainFaults:
    crc_error_every: int = 0  # corrupt every N-th reply (0: never)
    drop_byte_next: int = 0  # drop one byte from each of the next N replies
    corrupted: int = 0
    dropped: int = 0


class EmulatedChain:
    """The daisy chain: what the host's frames do to the chips, and what the chips send back."""

    def __init__(self, model: str, chips: int, *, hashrate: float = 20_000.0, diff1_shift: int = 20,
                 seed: int = 0) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown chip {model!r}: one of {', '.join(MODELS)}")
        if not 1 <= chips <= 256:
            raise ValueError("1..256 chips")
        self.model = MODELS[model]
        self.chips = [EmulatedChip(self.model, i) for i in range(chips)]
        self.hashrate = hashrate  # emulated hashes per second per chip at the stock frequency
        self.diff1_shift = diff1_shift
        self.parser = wire.HostFrameParser()
        self.faults = ChainFaults()
        self.powered = True
        self.replies_sent = 0
        self.jobs_received = 0
        random.seed(seed)
        for chip in self.chips:
            chip.reset()

    def reset(self) -> None:
        for chip in self.chips:
            chip.reset()

    def live(self) -> list[EmulatedChip]:
        return [c for c in self.chips if not c.dead] if self.powered else []

    def baud(self) -> float:
        divider = (self.chips[0].registers.get(0x28, RESET_BAUD_REGISTER) >> 8) & 0x1F
        return 25e6 / (8 * (divider + 1))

    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for frame in self.parser.push(data):
            out += self.apply(frame)
        return [self._faulty(r) for r in out]

    def apply(self, frame: wire.HostFrame) -> list[bytes]:
        live = self.live()
        if frame.is_job:
            self.jobs_received += 1
            try:
                job = Job.from_wire(frame.data)
            except ValueError:
                return []
            for chip in live:
                chip.job, chip.cursor = job, 0
            return []
        cmd, d = frame.cmd, frame.data
        if cmd == 3:  # chain inactive: every chip forgets its address and forwards addressing downstream
            for chip in live:
                chip.addressed = False
            return []
        if cmd == 0 and len(d) >= 1:
            for chip in live:
                if not chip.addressed:
                    chip.address, chip.addressed = d[0], True
                    break
            return []
        targets = live if frame.broadcast else [c for c in live if c.address == (d[0] if d else -1)]
        if cmd == 1 and len(d) == 6:
            value = int.from_bytes(d[2:6], "big")
            for chip in targets:
                chip.registers[d[1]] = value
                if d[1] == 0x08 and chip.job is not None:
                    pass  # a PLL change keeps the job
            return []
        if cmd == 2 and len(d) == 2:
            return [wire.register_reply(chip.read(d[1]), chip.address, d[1]) for chip in targets]
        return []

    def tick(self, dt: float) -> list[bytes]:
        """Hash for ``dt`` seconds on every live chip."""
        out: list[bytes] = []
        for chip in self.live():
            rate = self.hashrate * chip.mhz / self.model.stock_mhz
            want = rate * dt + chip.hash_remainder
            count = int(want)
            chip.hash_remainder = want - count
            out += chip.hash(min(count, 200_000), self.diff1_shift)
        return [self._faulty(r) for r in out]

    def _faulty(self, frame: bytes) -> bytes:
        self.replies_sent += 1
        f = self.faults
        if f.crc_error_every and self.replies_sent % f.crc_error_every == 0:
            f.corrupted += 1
            frame = frame[:5] + bytes((frame[5] ^ 0x5A,)) + frame[6:]
        if f.drop_byte_next > 0:
            f.drop_byte_next -= 1
            f.dropped += 1
            frame = frame[:4] + frame[5:]
        return frame
