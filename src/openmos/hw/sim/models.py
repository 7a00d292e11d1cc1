"""Miner and chip models as data, calibrated to public figures (shared/reference/physics.md).

Sources: [S] stated publicly, [D] derived from public numbers, [A] an assumption made explicit here.
``stock_board_voltage`` is the one calibrated number per miner: the board voltage at which the modelled
stock miner (median chips, steady-state temperatures at 25 C inlet) draws its nameplate wall power.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChipType:
    name: str
    cores: int  # small cores; GH/s = f(MHz) * cores / 1000  [S]
    stack: int  # internal series voltage stack: V_core = V_chip / stack  [D]
    c_dyn: float  # W / (V^2 MHz)  [D]
    g_leak: float  # W / V^2 at 60 C  [D]
    alpha: float = 1.3  # alpha-power law exponent  [D]
    v_threshold: float = 0.216  # V per core layer  [D]
    crit_margin: float = 1.10  # median f_crit(V_stock) / f_stock  [A]
    error_width: float = 0.02  # error fraction = Phi((f - f_crit) / (width * f_crit))  [A]
    leak_temp_coeff: float = 0.02  # leakage grows exp(coeff * (T - 60))  [D]
    r_th_full: float = 2.0  # junction-to-air C/W at full fan duty; scales duty^-0.8  [A]
    fcrit_temp_coeff: float = 0.0015  # f_crit falls this share per C of junction above 60 C  [A]
    fb_div: tuple[int, int] = (144, 235)  # PLL feedback divider range (BM1366/68 [S]; BM1362 assumed alike)
    ref_divs: tuple[int, ...] = (1, 2)  # PLL reference dividers  [S]
    post_div_max: int = 7  # post dividers pd2 < pd1 <= 7  [S]
    pll_ref_mhz: float = 25.0  # crystal  [S]
    pll_ramp_mhz_s: float = 62.5  # drivers ramp up in 6.25 MHz steps [S], one per ~100 ms  [A]


BM1362 = ChipType("BM1362", cores=514, stack=1, c_dyn=0.123, g_leak=7.3, r_th_full=2.4)
BM1366 = ChipType("BM1366", cores=894, stack=4, c_dyn=0.0111, g_leak=0.55, r_th_full=2.6)
BM1368 = ChipType("BM1368", cores=1276, stack=4, c_dyn=0.0142, g_leak=0.75, r_th_full=2.4)
BM1370 = ChipType("BM1370", cores=2040, stack=4, c_dyn=0.0178, g_leak=1.2, r_th_full=1.3, fb_div=(160, 239))


@dataclass(frozen=True)
class MinerModel:
    key: str
    name: str
    chip: ChipType
    boards: int
    chips_per_board: int
    domains: int  # series voltage domains per board; chips in a domain share its voltage
    stock_freq_mhz: float
    stock_board_voltage: float  # calibrated, see module docstring
    nameplate_ths: float
    nameplate_w: float
    fans: int
    fan_max_w: float = 20.0  # per fan at full duty; power ~ duty^3  [S/A]
    fan_max_rpm: int = 6000
    airflow_full_kg_s: float = 0.30  # whole miner at full duty  [A]
    stock_fan_duty: float = 0.70  # [A]
    psu_efficiency: float = 0.94  # [A]
    overhead_w: float = 10.0  # control board etc.  [A]
    air_columns: int = 12  # chip columns along the airflow (position x in [0, 1])
    sensors_per_board: int = 4
    min_freq_mhz: float = 50.0
    max_freq_mhz: float = 1000.0
    min_board_voltage: float = 0.0  # 0: derived as 0.85 x stock
    max_board_voltage: float = 0.0  # 0: derived as 1.12 x stock
    volt_step: float = 0.02  # board supply set-point resolution  [A]
    vr_slew_v_s: float = 0.2  # board supply slew rate  [A]
    board_resistance_ohm: float = 0.001  # supply path to the string: V_string = V_set - R I  [A]
    psu_rated_frac: float = 1.25  # PSU rating at the wall / nameplate power  [A]
    psu_curve: float = 0.08  # efficiency falls a (x - 0.5)^2 with x = load / rating; calibrated at 80 %  [A]
    psu_temp_coeff: float = 0.0005  # efficiency lost per C of inlet above 25 C  [A]
    meter_tau_s: float = 1.0  # PSU input-power reading: first-order lag  [A]
    meter_gain_sigma: float = 0.004  # per-unit gain error (clipped at 2.5 sigma)  [A]
    meter_offset_w: float = 5.0  # per-unit offset sigma  [A]
    meter_noise: float = 0.003  # relative noise per reading  [A]

    @property
    def chips(self) -> int:
        return self.boards * self.chips_per_board

    @property
    def stock_chip_voltage(self) -> float:
        return self.stock_board_voltage / self.domains

    @property
    def voltage_range(self) -> tuple[float, float]:
        lo = self.min_board_voltage or 0.85 * self.stock_board_voltage
        hi = self.max_board_voltage or 1.12 * self.stock_board_voltage
        return lo, hi

    @property
    def psu_max_w(self) -> float:
        """Rated wall power of the PSU."""
        return self.psu_rated_frac * self.nameplate_w

    @property
    def nominal_ths(self) -> float:
        """Hashrate of the stock frequency with every chip valid (GH/s formula, no errors)."""
        return self.stock_freq_mhz * self.chip.cores * self.chips / 1e6

    @property
    def nameplate_j_per_th(self) -> float:
        return self.nameplate_w / self.nameplate_ths


MODELS: dict[str, MinerModel] = {m.key: m for m in (
    MinerModel("s19jpro", "Antminer S19j Pro", BM1362, 3, 126, 42, 545.0, 13.42, 104.0, 3068.0, fans=4),
    MinerModel("s19xp", "Antminer S19 XP", BM1366, 3, 110, 11, 480.0, 13.23, 141.0, 3031.0, fans=4),
    # Runs its fans harder at stock: with the public derating fact (440 MHz above 40 C ambient) in mind,
    # little cooling headroom is left at 40 C inlet.  [A]
    MinerModel("s21", "Antminer S21", BM1368, 3, 108, 12, 490.0, 13.67, 200.0, 3500.0, fans=4,
               stock_fan_duty=0.85),
    MinerModel("s21pro", "Antminer S21 Pro", BM1370, 3, 65, 13, 590.0, 15.51, 234.0, 3510.0, fans=4),
    MinerModel("s21xp", "Antminer S21 XP", BM1370, 3, 91, 13, 490.0, 14.63, 270.0, 3645.0, fans=4),
    MinerModel("bitaxe-gamma", "Bitaxe Gamma", BM1370, 1, 1, 1, 525.0, 1.173, 1.07, 19.0, fans=1,
               fan_max_w=1.5, fan_max_rpm=5000, airflow_full_kg_s=0.012, psu_efficiency=0.88,
               overhead_w=2.0, air_columns=1, sensors_per_board=1,
               # TPS546 buck: VOUT in 1/512 V LSBs [S], sensed at the chip (no path drop), fast slew.
               volt_step=0.002, vr_slew_v_s=5.0, board_resistance_ohm=0.0, meter_offset_w=0.1),
)}


def get_model(key: str) -> MinerModel:
    try:
        return MODELS[key.lower()]
    except KeyError:
        raise ValueError(f"unknown miner model {key!r}; known: {', '.join(MODELS)}") from None
