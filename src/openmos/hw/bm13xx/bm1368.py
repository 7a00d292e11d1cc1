"""BM1368 (Antminer S21, Bitaxe Supra): 1276 small cores, fb_div 144-235.

Result header: job slot in bits 7-4, small core in bits 3-0 (as the BM1370).
"""

from openmos.hw.bm13xx.chip import ChipType

BM1368 = ChipType(
    name="BM1368",
    chip_id=0x1368,
    cores=80,
    small_cores=1276,
    fb_div_range=(144, 235),
    freq_range_mhz=(50.0, 650.0),
    stock_mhz=490.0,
    volt_range=(1.1, 1.3),
    stock_voltage=1.166,
    job_id_from_header=lambda h: h >> 4,
    small_core_from_header=lambda h: h & 0x0F,
    init_writes=((0xA8, 0x00070000), (0x18, 0xFF0FC100), (0x3C, 0x80008B00), (0x3C, 0x80001800),
                 (0x54, 0x00000003), (0x58, 0x02111111)),
    per_chip_writes=((0xA8, 0x000701F0), (0x18, 0xF000C100), (0x3C, 0x80008540), (0x3C, 0x80002000),
                     (0x3C, 0x800082AA)),
    hash_counting=0x000015A4,
)
