"""BM13xx codec against frames written out by hand from the public documentation, per chip type.

Sources of the expected bytes: protocols.md (chip-id read, chain inactive, version write), ESP-Miner's
init sequences (set address 0, ticket mask 256, fast UART, BM1366 485 MHz PLL, BM1370 200 MHz default PLL),
mujina's PROTOCOL.md (register and nonce replies). Where a CRC byte is not printed in a source it was
cross-checked with the emulator's independent bit-by-bit CRC (a second implementation).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openmos.emulator import wire as emu_wire
from openmos.hw.bm13xx import BM1366, BM1368, BM1370
from openmos.hw.bm13xx import protocol as p
from openmos.hw.bm13xx.chip import PllSetting
from openmos.hw.bm13xx.crc import crc5, crc16_false


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_crcs_match_their_definitions() -> None:
    assert crc16_false(b"123456789") == 0x29B1  # the CRC16-CCITT-FALSE check value
    assert crc5(h("52 05 00 00")) == 0x0A
    for data in (b"", b"\x00", h("51 09 00 a4 90 00 ff ff"), bytes(range(40))):
        assert crc5(data) == emu_wire.crc5_bits(emu_wire.to_bits(data))
        assert crc16_false(data) == emu_wire.crc16_ccitt(data)


def test_command_frames_by_hand() -> None:
    assert p.read_register(0, 0x00, broadcast=True) == h("55 AA 52 05 00 00 0A")  # chip-id read (enumeration)
    assert p.chain_inactive() == h("55 AA 53 05 00 00 03")
    assert p.set_address(0x00) == h("55 AA 40 05 00 00 1C")
    assert p.set_address(0x04) == h("55 AA 40 05 04 00 03")
    assert BM1370.version_write(0x1FFFE000) == h("55 AA 51 09 00 A4 90 00 FF FF 1C")
    value, effective = p.ticket_mask_value(256)
    assert effective == 256
    assert p.write_register(0, 0x14, value, broadcast=True) == h("55 AA 51 09 00 14 00 00 00 FF 08")
    assert p.ticket_mask_value(512)[0] == 0x000080FF  # 2^9 - 1, each byte's bits reversed
    assert p.ticket_mask_value(300)[1] == 256  # rounds down to a power of two
    assert p.write_register(0, 0x28, 0x11300200, broadcast=True) == h("55 AA 51 09 00 28 11 30 02 00 03")
    assert p.write_register(0x40, 0x08, 0x40A00241) == h("55 AA 41 09 40 08 40 A0 02 41") + bytes(
        (emu_wire.crc5_bits(emu_wire.to_bits(h("41 09 40 08 40 A0 02 41"))),))


def test_pll_frames_per_chip_type() -> None:
    # BM1366 at 485 MHz: fb 194, ref 2, pd1 5, pd2 1 (VCO 2425 MHz >= 2400 -> 0x50), ESP-Miner's last ramp write.
    assert BM1366.pll_for(485) == PllSetting(194, 2, 5, 1)
    assert p.write_register(0, 0x08, BM1366.pll_for(485).register(), broadcast=True) == h(
        "55 AA 51 09 00 08 50 C2 02 40 1C")
    # BM1370 at 200 MHz: fb 160 (its lowest), ref 2, pd1 5, pd2 2 -> ESP-Miner's default `40 A0 02 41`.
    assert BM1370.pll_for(200).register() == 0x40A00241
    # BM1368 at 490 MHz: 25 x 196 / (2 x 5 x 1); VCO 2450 MHz -> 0x50.
    assert BM1368.pll_for(490).register() == 0x50C40240
    for chip in (BM1366, BM1368, BM1370):
        lo, hi = chip.fb_div_range
        for f, setting in chip.pll_grid:
            assert lo <= setting.fb_div <= hi and setting.ref_div in (1, 2)
            assert 1 <= setting.post_div2 <= setting.post_div1 <= 7
            assert abs(setting.mhz - f) < 1e-6
            assert PllSetting.from_register(setting.register()) == setting
        assert chip.quantise(chip.stock_mhz) == chip.stock_mhz
    assert BM1370.fb_div_range == (160, 239) and BM1366.fb_div_range == (144, 235)


def test_ramp_steps_about_six_mhz_and_ends_on_target() -> None:
    steps = BM1370.ramp(56.25, 525)
    assert steps[-1] == 525
    assert all(abs(b - a) <= 6.25 + 1e-6 for a, b in zip([56.25, *steps], steps, strict=False))
    down = BM1370.ramp(525, 400)
    assert down[-1] == 400 and all(b < a for a, b in zip([525, *down], down, strict=False))


def test_job_frame_layout_by_hand() -> None:
    merkle = bytes(range(32))  # internal byte order
    prev = bytes(range(100, 132))
    data = p.encode_job_data(BM1370.job_header(3), 0x170E3AB4, 0x67678B5C, merkle, prev, 0x20000000)
    words = lambda b: b"".join(b[i:i + 4] for i in (28, 24, 20, 16, 12, 8, 4, 0))  # noqa: E731
    expected = (h("18 01 00000000 B4 3A 0E 17 5C 8B 67 67") + words(merkle) + words(prev) + h("00 00 00 20"))
    assert data == expected and len(data) == 82
    frame = p.job_command(data)
    assert frame[:4] == h("55 AA 21 56") and len(frame) == 88
    assert frame[-2:] == emu_wire.crc16_ccitt(frame[2:-2]).to_bytes(2, "big")


def test_replies_by_hand() -> None:
    d = p.ResponseDecoder()
    [reg] = d.feed(h("AA 55 13 70 00 00 00 00 00 00 10"))  # BM1370 chip-id reply (mujina)
    assert reg == p.RegisterReply(0, 0, 0x13700000)
    [reg68] = d.feed(h("AA 55 13 68 00 00 00 00 00 00 0F"))  # BM1368 (ESP-Miner comment)
    assert isinstance(reg68, p.RegisterReply) and reg68.value >> 16 == 0x1368
    [nonce] = d.feed(h("AA 55 18 00 A6 40 02 99 22 F9 91"))  # a BM1370 nonce (mujina)
    assert isinstance(nonce, p.NonceReply)
    assert nonce.nonce == 0x40A60018 and nonce.version_bits == 0x045F2000
    assert BM1370.job_id_from_header(nonce.result_header) == 9 and BM1370.small_core_from_header(0x99) == 9
    assert BM1370.core_of(nonce.nonce_be) == 0x0C and BM1370.chip_address_of(nonce.nonce_be) == 0
    # BM1366 puts the slot in bits 6-3 of the result header (the job byte as sent), small core in 2-0.
    assert BM1366.job_id_from_header(BM1366.job_header(5) | 0x03) == 5
    assert BM1366.small_core_from_header(0x2B) == 3
    assert BM1368.job_id_from_header(0x5A) == 5 and BM1368.small_core_from_header(0x5A) == 0x0A
    assert d.stats.frames == 3 and d.stats.crc_errors == 0


def test_hostile_bytes_are_counted_never_raised() -> None:
    d = p.ResponseDecoder()
    good = h("AA 55 13 70 00 00 00 00 00 00 10")
    bad_crc = good[:-1] + b"\x11"
    out = d.feed(b"\x00garbage\xaa" + bad_crc + good[:5])  # garbage, a bad CRC, a truncated frame
    assert out == []
    out = d.feed(good[5:] + good)
    assert len(out) == 2
    assert d.stats.crc_errors >= 1 and d.stats.garbage_bytes >= 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=30))
def test_decoder_survives_any_stream_with_bounded_memory(chunks: list[bytes]) -> None:
    d = p.ResponseDecoder()
    for chunk in chunks:
        d.feed(chunk)
        assert len(d._buf) < p.RESPONSE_LEN + 64


def test_bad_inputs_are_clear_errors() -> None:
    import pytest

    for bad in (float("nan"), float("inf"), 0.5, -1.0, 1e400):
        with pytest.raises(ValueError):
            p.ticket_mask_value(bad)
    with pytest.raises(ValueError):
        p.version_rolling_value(0xFFFFFFFF)
    with pytest.raises(ValueError):
        BM1370.pll_for(float("nan"))
    assert BM1370.quantise(1e9) == BM1370.pll_grid[-1][0] and BM1370.quantise(-5) == BM1370.pll_grid[0][0]
