"""BM1370 (Antminer S21 Pro, Bitaxe Gamma): 128 cores x 16 small cores, fb_div 160-239.

Result header: job slot in bits 7-4, small core in bits 3-0. Init register values from ESP-Miner's public
bring-up sequence (misc control 0x18, core register 0x3C, analog mux 0x54, IO driver 0x58, 0xA8).
"""

from openmos.hw.bm13xx.chip import ChipType

BM1370 = ChipType(
    name="BM1370",
    chip_id=0x1370,
    cores=128,
    small_cores=2040,
    fb_div_range=(160, 239),
    freq_range_mhz=(50.0, 800.0),
    stock_mhz=525.0,
    volt_range=(1.0, 1.3),
    stock_voltage=1.15,
    job_id_from_header=lambda h: h >> 4,
    small_core_from_header=lambda h: h & 0x0F,
    init_writes=((0xA8, 0x00070000), (0x18, 0xFF0FC100), (0x3C, 0x80008B00), (0x3C, 0x80001800),
                 (0x54, 0x00000003), (0x58, 0x02111111)),
    per_chip_writes=((0xA8, 0x000701F0), (0x18, 0xF000C100), (0x3C, 0x80008B00), (0x3C, 0x80001800),
                     (0x3C, 0x800082AA)),
    hash_counting=0x00001EB5,
    job_slot_step=3,
)
