"""The two checksums of the BM13xx wire: CRC5 on commands and responses, CRC16-CCITT-FALSE on jobs.

Pure functions over bytes, table-driven (one lookup per byte) because responses are checked per nonce.
"""

from __future__ import annotations


def _crc5_table() -> tuple[int, ...]:
    # CRC5, polynomial x^5 + x^2 + 1, MSB first. The register is kept left-aligned in a byte (bits 7..3)
    # so a whole input byte can be folded in at once.
    table = []
    for byte in range(256):
        reg = byte
        for _ in range(8):
            reg = ((reg << 1) ^ (0x05 << 3)) & 0xFF if reg & 0x80 else (reg << 1) & 0xFF
        table.append(reg)
    return tuple(table)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        reg = byte << 8
        for _ in range(8):
            reg = ((reg << 1) ^ 0x1021) & 0xFFFF if reg & 0x8000 else (reg << 1) & 0xFFFF
        table.append(reg)
    return tuple(table)


_CRC5 = _crc5_table()
_CRC16 = _crc16_table()


def crc5(data: bytes, bits: int | None = None) -> int:
    """CRC5 (init 0x1F) over ``data``; over only its first ``bits`` bits when given (MSB first)."""
    reg = 0x1F << 3
    if bits is None:
        for byte in data:
            reg = _CRC5[reg ^ byte]
        return reg >> 3
    whole, rest = divmod(bits, 8)
    for byte in data[:whole]:
        reg = _CRC5[reg ^ byte]
    if rest:
        tail = data[whole]
        for i in range(rest):
            bit = (tail >> (7 - i)) & 1
            top = (reg >> 7) & 1
            reg = (reg << 1) & 0xFF
            if bit ^ top:
                reg ^= 0x05 << 3
    return reg >> 3


def crc16_false(data: bytes) -> int:
    """CRC16-CCITT-FALSE: polynomial 0x1021, init 0xFFFF, no reflection, no final xor."""
    reg = 0xFFFF
    table = _CRC16
    for byte in data:
        reg = ((reg << 8) & 0xFFFF) ^ table[(reg >> 8) ^ byte]
    return reg
