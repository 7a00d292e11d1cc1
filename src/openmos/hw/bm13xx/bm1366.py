"""BM1366 (Antminer S19 XP, Bitaxe Ultra): 894 small cores, fb_div 144-235.

Result header: job slot in bits 6-3 (``header & 0xF8`` is the job byte as sent), small core in bits 2-0.
"""

from openmos.hw.bm13xx.chip import ChipType

BM1366 = ChipType(
    name="BM1366",
    chip_id=0x1366,
    cores=112,
    small_cores=894,
    fb_div_range=(144, 235),
    freq_range_mhz=(50.0, 600.0),
    stock_mhz=485.0,
    volt_range=(1.1, 1.3),
    stock_voltage=1.2,
    job_id_from_header=lambda h: (h >> 3) & 0x0F,
    small_core_from_header=lambda h: h & 0x07,
    init_writes=((0xA8, 0x00070000), (0x18, 0xFF0FC100), (0x3C, 0x80008540), (0x3C, 0x80002000),
                 (0x54, 0x00000003), (0x58, 0x02111111)),
    per_chip_writes=((0xA8, 0x000701F0), (0x18, 0xF000C100), (0x3C, 0x80008540), (0x3C, 0x80002000),
                     (0x3C, 0x800082AA)),
    hash_counting=0x0000151C,
)
