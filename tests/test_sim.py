"""The ASIC simulator: calibration, physics invariants, determinism, oracle, and the agent on top of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openmos.cli.main import main
from openmos.hw.sim import MODELS, FleetSim, SimClock, get_model, physics
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.oracle import Oracle
from openmos.hw.sim.report import calibrate
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool

from helpers import easy_pool_settings, wait_for


@pytest.mark.parametrize("key", list(MODELS))
def test_stock_matches_nameplate(key: str) -> None:
    model = MODELS[key]
    cal = calibrate(model, miners=25, seed=11)
    assert abs(cal.median_ths / model.nameplate_ths - 1) <= 0.03, cal.median_ths
    assert abs(cal.median_w / model.nameplate_w - 1) <= 0.05, cal.median_w


def test_power_does_not_fall_when_chips_error() -> None:
    fleet = FleetSim(get_model("s21"), miners=1, seed=2)
    fleet.settle(600)
    before_w = fleet.true_wall_power()[0]
    before_ths = fleet.valid_hashrate_ths()[0]
    for chip in range(0, 108, 9):
        fleet.kill_chip(0, 1, chip)
    fleet.step(1.0)
    assert fleet.valid_hashrate_ths()[0] < before_ths * 0.97
    assert fleet.true_wall_power()[0] >= before_w * 0.999
    # Overclocking far past f_crit: every hash is wrong, and power still rises with frequency.
    fleet.set_frequency(0, 0, slice(None), 900.0)
    fleet.step(1.0)
    assert fleet.error_fraction()[0, 0].mean() > 0.99
    assert fleet.true_wall_power()[0] > before_w * 1.2


def test_thermal_steady_state_matches_energy_balance() -> None:
    model = get_model("s21")
    fleet = FleetSim(model, miners=2, seed=3, t_inlet=30.0)
    fleet.set_fan_duty(1, 0.4)
    fleet.settle(3600, dt=10)
    m_cp = physics.airflow_kg_s(model, fleet.duty) * physics.CP_AIR  # per board, W/K
    board_w = fleet.chip_w.sum(axis=-1)
    air_rise_outlet = board_w / m_cp[:, None]  # P / (m c_p)
    rth = physics.r_th(model.chip, fleet.duty)[:, None, None]
    # Outlet-column chips: T_j - R_th P_chip is the outlet air temperature.
    outlet = physics.chip_positions(model) == 1.0
    air_at_outlet = (fleet.t_j - rth * fleet.chip_w)[..., outlet].mean(axis=-1)
    np.testing.assert_allclose(air_at_outlet - 30.0, air_rise_outlet, rtol=0.01)
    # Less airflow -> hotter chips.
    assert fleet.t_j[1].mean() > fleet.t_j[0].mean() + 5


def test_thermal_time_constants() -> None:
    fleet = FleetSim(get_model("s21"), miners=1, seed=4)
    fleet.settle(3600)
    start = fleet.t_j.mean()
    fleet.set_frequency(0, slice(None), slice(None), 300.0)  # type: ignore[arg-type]
    fleet.step(20.0)
    after_20s = fleet.t_j.mean()
    fleet.settle(3600)
    final = fleet.t_j.mean()
    fraction = (start - after_20s) / (start - final)
    assert 0.15 < fraction < 0.6, fraction  # fast junction node plus a slow heatsink


def test_same_seed_same_fleet_different_seed_different() -> None:
    a = FleetSim(get_model("s19jpro"), miners=3, seed=5)
    b = FleetSim(get_model("s19jpro"), miners=3, seed=5)
    c = FleetSim(get_model("s19jpro"), miners=3, seed=6)
    np.testing.assert_array_equal(a.hidden().k, b.hidden().k)
    np.testing.assert_array_equal(a.hidden().g, b.hidden().g)
    for fleet in (a, b):
        for _ in range(5):
            fleet.step(1.0)
    np.testing.assert_array_equal(a.nonces, b.nonces)
    np.testing.assert_array_equal(a.read_wall_power(), b.read_wall_power())
    assert not np.array_equal(a.hidden().k, c.hidden().k)


def test_variation_and_weak_chips() -> None:
    k = FleetSim(get_model("s21"), miners=20, seed=7).hidden().k
    median = np.median(k)
    weak = k < 0.85 * median
    assert 0.005 < weak.mean() < 0.04
    spread = np.percentile(k[~weak], 99) / np.percentile(k[~weak], 1)
    assert 1.10 < spread < 1.25  # best vs worst (non-weak) chips on the order of 10-15 %


def test_counters_follow_valid_hashrate() -> None:
    fleet = FleetSim(get_model("s21"), miners=1, seed=8, ticket_difficulty=1.0)
    fleet.kill_chip(0, 0, 5)
    for _ in range(10):
        fleet.step(1.0)
    per_chip = fleet.nonces[0, 0]
    assert per_chip[5] == 0 and fleet.errors[0, 0, 5] > 0
    valid = fleet.hashes[0] * (1 - fleet.error_fraction()[0]) / 2**32
    assert abs(fleet.nonces[0].sum() / valid.sum() - 1) < 0.02  # Poisson over ~40k nonces


def test_oracle_beats_stock_underclock_and_meets_power() -> None:
    fleet = FleetSim(get_model("s21"), miners=1, seed=9)
    oracle = Oracle(fleet)
    stock_w = oracle.stock_uniform(490).wall_power_w
    gains = []
    for frac in (0.6, 0.8, 1.0):
        stock = oracle.stock_at_power(frac * stock_w)
        best = oracle.best_at_power(frac * stock_w)
        assert best.wall_power_w <= frac * stock_w * 1.001
        assert best.wall_power_w >= frac * stock_w * 0.99
        gains.append(stock.j_per_th / best.j_per_th - 1)
    assert gains[0] > gains[1] > gains[2] > 0  # per-chip tuning matters most when underclocked
    at_rate = oracle.best_at_hashrate(150.0)
    assert at_rate.hashrate_ths >= 150.0 * 0.999


def test_sim_clock() -> None:
    manual = SimClock(speed=0)
    manual.advance(3600)
    assert manual.now() == 3600
    fast = SimClock(speed=1000)
    assert fast.now() >= 0
    with pytest.raises(ValueError):
        SimClock(speed=-1)


def test_hardware_interface_hides_model_parameters() -> None:
    hw = SimHardware("s21", seed=1)
    public = {name for name in dir(hw) if not name.startswith("_")}
    assert not {"fleet", "hidden", "k", "g"} & public
    tel = hw.telemetry()
    assert tel.modelled and len(tel.boards) == 3 and len(tel.boards[0].chips) == 108
    assert tel.input_power_w is not None and len(tel.fans) == 4
    assert tel.boards[0].chip_temperatures_c and tel.boards[0].temperatures_c


async def test_agent_mines_real_shares_on_simulated_s21() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=0.0001))
    await pool.start()
    hw = SimHardware("s21", seed=3, clock=SimClock(speed=60.0), tick_s=0.1)
    config = AgentConfig.from_dict({"groups": [{"pools": [{"url": pool.url, "user": "sim.s21"}]}]})
    agent = MiningAgent(config, hw)
    await agent.start()
    try:
        await wait_for(lambda: pool.workers.get("sim.s21") is not None and pool.workers["sim.s21"].accepted >= 3,
                       60, "shares from the simulated miner")
        await wait_for(lambda: agent.telemetry().hashes > 1e15, 10, "modelled hash counters")
    finally:
        await agent.stop()
        await pool.stop()
    tel = agent.telemetry()
    assert tel.modelled
    # Modelled hashrate is S21-class; what the pool verified is what a CPU really hashed: far smaller.
    assert pool.workers["sim.s21"].hashrate() < 1e9
    assert hw.real_nonces >= 3
    assert agent.stats.hardware_errors == hw.corrupted_nonces
    assert pool.rejections.get("low difficulty share", 0) == 0


def test_sim_report_cli(tmp_path: Path) -> None:
    plot = tmp_path / "r.png"
    assert main(["sim", "report", "bitaxe-gamma", "--miners", "5", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sim", "list"]) == 0
    assert main(["sim", "report", "s99"]) == 2
