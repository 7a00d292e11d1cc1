"""BM13xx frame codec: command and job frames to the chips, an incremental decoder for their responses.

Wire facts (public: ESP-Miner ``components/asic``, mujina ``bm13xx/PROTOCOL.md``, shared/reference/protocols.md):

- host -> chip: ``55 AA | HDR | LEN | DATA | CRC``; HDR = type (0x40 register, 0x20 job) | 0x10 broadcast | cmd
  (0 set address, 1 write, 2 read, 3 chain inactive); LEN counts everything after the preamble. Register
  commands end in a CRC5 over HDR..DATA, jobs in a big-endian CRC16-CCITT-FALSE over HDR..DATA.
- chip -> host: 11 bytes ``AA 55 | d0 d1 d2 d3 | b6 | b7 | b8 b9 | b10``; the top bit of b10 says "nonce"
  (else register read), its low 5 bits are a CRC5 such that the CRC5 over bytes 2..10 is zero.
  Register reads: value big-endian in d0..d3, b6 the chip address, b7 the register.
  Nonces: the header nonce little-endian in d0..d3, b6 midstate number, b7 result header (job id and
  small core, per chip type), b8 b9 the rolled version bits big-endian (version |= bits << 13).
- register values travel big-endian (``write 0xA4 = 0x9000FFFF`` is ``... A4 90 00 FF FF``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from openmos.hw.bm13xx.crc import crc5, crc16_false

log = logging.getLogger(__name__)

CMD_PREAMBLE = b"\x55\xaa"
RESPONSE_PREAMBLE = b"\xaa\x55"
RESPONSE_LEN = 11

TYPE_JOB = 0x20
TYPE_CMD = 0x40
BROADCAST = 0x10
CMD_SET_ADDRESS = 0x00
CMD_WRITE = 0x01
CMD_READ = 0x02
CMD_CHAIN_INACTIVE = 0x03

# Registers shared by the BM1366/68/70 (chip modules hold what differs).
REG_CHIP_ID = 0x00
REG_PLL = 0x08
REG_HASH_COUNTING = 0x10
REG_TICKET_MASK = 0x14
REG_MISC_CONTROL = 0x18
REG_FAST_UART = 0x28
REG_CORE_CONTROL = 0x3C
REG_ERROR_COUNT = 0x4C
REG_TOTAL_HASH_COUNT = 0x8C
REG_VERSION_ROLLING = 0xA4

JOB_DATA_LEN = 82
UART_CLOCK_HZ = 25_000_000


def command(header: int, data: bytes) -> bytes:
    """A register-type frame: preamble, header, length, data, CRC5."""
    body = bytes((header, len(data) + 3)) + data
    return CMD_PREAMBLE + body + bytes((crc5(body),))


def job_command(data: bytes) -> bytes:
    """A job frame (type job, single, write): preamble, 0x21, length, job data, CRC16 big-endian."""
    body = bytes((TYPE_JOB | CMD_WRITE, len(data) + 4)) + data
    return CMD_PREAMBLE + body + crc16_false(body).to_bytes(2, "big")


def read_register(chip_address: int, register: int, *, broadcast: bool = False) -> bytes:
    return command(TYPE_CMD | (BROADCAST if broadcast else 0) | CMD_READ, bytes((chip_address, register)))


def write_register(chip_address: int, register: int, value: int, *, broadcast: bool = False) -> bytes:
    if not 0 <= value < 1 << 32:
        raise ValueError(f"register value {value!r} does not fit 32 bits")
    data = bytes((chip_address, register)) + value.to_bytes(4, "big")
    return command(TYPE_CMD | (BROADCAST if broadcast else 0) | CMD_WRITE, data)


def chain_inactive() -> bytes:
    return command(TYPE_CMD | BROADCAST | CMD_CHAIN_INACTIVE, b"\x00\x00")


def set_address(chip_address: int) -> bytes:
    return command(TYPE_CMD | CMD_SET_ADDRESS, bytes((chip_address, 0)))


def chip_addresses(chips: int) -> list[int]:
    """Addresses spread evenly over the 8-bit space (chip i gets i x 256/n), as the chips expect."""
    if not 1 <= chips <= 256:
        raise ValueError(f"a chain holds 1..256 chips, not {chips}")
    step = 256 // chips
    return [i * step for i in range(chips)]


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def ticket_mask_value(difficulty: float) -> tuple[int, int]:
    """(register value, effective difficulty) for a ticket mask of at most ``difficulty`` (a power of 2).

    The mask is 2^N - 1 stored with each byte's bits reversed: difficulty 256 -> ``00 00 00 FF``,
    512 -> ``00 00 80 FF``.
    """
    if not difficulty >= 1 or difficulty != difficulty or difficulty == float("inf"):
        raise ValueError(f"ticket difficulty must be a finite number >= 1, got {difficulty!r}")
    effective = 1 << min(int(difficulty).bit_length() - 1, 32)
    mask = effective - 1
    raw = bytes(_reverse_bits((mask >> (8 * i)) & 0xFF) for i in range(4))  # byte 0 = least significant
    return int.from_bytes(raw[::-1], "big"), effective


def version_rolling_value(mask: int) -> int:
    """Register 0xA4: 0x90000000 | (mask >> 13) enables rolling of the BIP320 bits in ``mask``."""
    if mask & ~0x1FFFE000 & 0xFFFFFFFF or mask < 0:
        raise ValueError(f"version mask {mask:#x} has bits outside BIP320's 0x1fffe000")
    return 0x90000000 | (mask >> 13)


DEFAULT_BAUD = 115_200  # every BM13xx's UART rate after reset


def uart_divider_for(baud: int) -> int:
    """The 5-bit divider whose rate 25 MHz / (8 x (div + 1)) is closest to ``baud``."""
    best = min(range(32), key=lambda d: abs(UART_CLOCK_HZ / (8 * (d + 1)) - baud))
    return best


def baud_for_divider(divider: int) -> float:
    return UART_CLOCK_HZ / (8 * (divider + 1))


def encode_job_data(job_header: int, nbits: int, ntime: int, merkle_root: bytes, prev_hash: bytes, version: int,
                    starting_nonce: int = 0) -> bytes:
    """The 82-byte job of the BM1366/68/70 (chip computes its own midstates).

    ``merkle_root`` and ``prev_hash`` in Bitcoin's internal byte order; on the wire their 4-byte words are in
    reverse order.
    """
    if len(merkle_root) != 32 or len(prev_hash) != 32:
        raise ValueError("merkle root and previous hash are 32 bytes each")
    return (bytes((job_header, 1)) + starting_nonce.to_bytes(4, "little") + nbits.to_bytes(4, "little")
            + ntime.to_bytes(4, "little") + _reverse_words(merkle_root) + _reverse_words(prev_hash)
            + version.to_bytes(4, "little"))


def _reverse_words(data: bytes) -> bytes:
    return b"".join(data[i:i + 4] for i in range(len(data) - 4, -4, -4))


@dataclass(frozen=True, slots=True)
class RegisterReply:
    chip_address: int
    register: int
    value: int


@dataclass(frozen=True, slots=True)
class NonceReply:
    nonce: int  # as it goes into the header (little-endian on the wire)
    midstate: int
    result_header: int
    version_bits: int  # already shifted: OR it into the job's version

    @property
    def nonce_be(self) -> int:
        """The nonce's bytes read big-endian: where chips put core (bits 31-25) and chip address (24-17)."""
        n = self.nonce
        return ((n & 0xFF) << 24) | ((n & 0xFF00) << 8) | ((n >> 8) & 0xFF00) | (n >> 24)


Reply = RegisterReply | NonceReply


@dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    garbage_bytes: int = 0  # bytes skipped while hunting for a preamble


class ResponseDecoder:
    """Turns a byte stream from the chain into replies; resynchronises on garbage, counts what it drops.

    Memory is bounded: at most one partial frame is kept between calls.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        out: list[Reply] = []
        i = 0
        n = len(buf)
        stats = self.stats
        while n - i >= RESPONSE_LEN:
            if buf[i] != 0xAA or buf[i + 1] != 0x55:
                j = buf.find(RESPONSE_PREAMBLE, i + 1)
                skip_to = j if j >= 0 else n - 1
                stats.garbage_bytes += skip_to - i
                i = skip_to
                continue
            frame = bytes(buf[i + 2:i + RESPONSE_LEN])
            if crc5(frame) != 0:
                # Not a frame (or a corrupted one): count it and resync one byte further on.
                stats.crc_errors += 1
                stats.garbage_bytes += 1
                i += 1
                continue
            stats.frames += 1
            i += RESPONSE_LEN
            if frame[8] & 0x80:
                out.append(NonceReply(int.from_bytes(frame[0:4], "little"), frame[4], frame[5],
                                      int.from_bytes(frame[6:8], "big") << 13))
            else:
                out.append(RegisterReply(frame[4], frame[5], int.from_bytes(frame[0:4], "big")))
        del buf[:i]
        return out
