"""The emulator's own view of the BM13xx wire: bitwise CRCs, host-frame parsing, chip reply frames."""

from __future__ import annotations

from dataclasses import dataclass


def crc5_bits(bits: list[int]) -> int:
    """CRC5 (x^5 + x^2 + 1, init all ones) over a list of bits, MSB first, computed bit by bit."""
    c = [1, 1, 1, 1, 1]
    for bit in bits:
        fb = c[4] ^ bit
        c = [fb, c[0], c[1] ^ fb, c[2], c[3]]
    return c[4] << 4 | c[3] << 3 | c[2] << 2 | c[1] << 1 | c[0]


def to_bits(data: bytes) -> list[int]:
    return [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]


def crc16_ccitt(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True)
class HostFrame:
    header: int
    data: bytes

    @property
    def is_job(self) -> bool:
        return not self.header & 0x40

    @property
    def broadcast(self) -> bool:
        return bool(self.header & 0x10)

    @property
    def cmd(self) -> int:
        return self.header & 0x0F


@dataclass
class ParseStats:
    frames: int = 0
    bad_crc: int = 0
    skipped_bytes: int = 0


class HostFrameParser:
    """55 AA | header | length | data | CRC5 (commands) or CRC16 big-endian (jobs)."""

    def __init__(self) -> None:
        self.buf = b""
        self.stats = ParseStats()

    def push(self, data: bytes) -> list[HostFrame]:
        self.buf += data
        frames: list[HostFrame] = []
        while True:
            start = self.buf.find(b"\x55\xaa")
            if start < 0:
                keep = 1 if self.buf.endswith(b"\x55") else 0
                self.stats.skipped_bytes += len(self.buf) - keep
                self.buf = self.buf[len(self.buf) - keep:]
                return frames
            if start:
                self.stats.skipped_bytes += start
                self.buf = self.buf[start:]
            if len(self.buf) < 4:
                return frames
            header, length = self.buf[2], self.buf[3]
            if length < 5 or length > 200:
                self.stats.skipped_bytes += 1
                self.buf = self.buf[1:]
                continue
            if len(self.buf) < 2 + length:
                return frames
            body = self.buf[2:2 + length]
            if header & 0x40:
                ok = crc5_bits(to_bits(body[:-1])) == body[-1]
                data = body[2:-1]
            else:
                ok = crc16_ccitt(body[:-2]) == (body[-2] << 8 | body[-1])
                data = body[2:-2]
            if not ok:
                self.stats.bad_crc += 1
                self.buf = self.buf[1:]
                continue
            self.stats.frames += 1
            self.buf = self.buf[2 + length:]
            frames.append(HostFrame(header, data))


def reply(d: bytes, b6: int, b7: int, ver: bytes, is_nonce: bool) -> bytes:
    """An 11-byte reply whose last byte holds the type bit and a CRC5 making bytes 2..10 check to zero."""
    body = d + bytes((b6, b7)) + ver
    type_bits = 0x80 if is_nonce else 0x00
    for crc in range(32):  # the one value that zeroes the CRC over all 72 bits
        if crc5_bits(to_bits(body + bytes((type_bits | crc,)))) == 0:
            return b"\xaa\x55" + body + bytes((type_bits | crc,))
    raise AssertionError("unreachable: one CRC5 value always fits")


def register_reply(value: int, chip_address: int, register: int) -> bytes:
    return reply(value.to_bytes(4, "big"), chip_address, register, b"\x00\x00", False)


def nonce_reply(nonce: int, midstate: int, result_header: int, version_field: int) -> bytes:
    return reply(nonce.to_bytes(4, "little"), midstate, result_header, version_field.to_bytes(2, "big"), True)
