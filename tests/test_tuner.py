"""The autotuner on simulated hardware: targets, safety, chip faults, profiles, quick ramps."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmos.hw.cpu import CpuHardware
from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.oracle import Oracle
from openmos.hw.sim.realism import InletCurve, Realism
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool
from openmos.tuning import (
    Autotuner,
    CoolingConfig,
    CoolingMode,
    PerformanceTarget,
    ProfileStore,
    ThermalLimits,
    TunerOptions,
    TunerState,
)
from openmos.tuning.measurement import hottest
from openmos.tuning.thermal import Pid, ThermalAction, ThermalGuard, arrhenius_hazard_ratio

from helpers import easy_pool_settings, wait_for


def rig(model: str = "s21", seed: int = 5, **kwargs: object) -> tuple[SimHardware, SimClock]:
    clock = SimClock(speed=0)
    return SimHardware(model, seed=seed, clock=clock, **kwargs), clock  # type: ignore[arg-type]


def as_read(hw: SimHardware) -> float:
    """The modelled true wall power as the unit's PSU reads it (its per-unit gain and offset, no noise or lag):
    what a tuner can hold a power goal on. Truth differs from it by the meter's own error (benchmarks/tuner.py
    reports both)."""
    fleet = hw.oracle_view()
    return float(fleet._meter_gain[0] * hw.modelled_truth()[0] + fleet._meter_offset[0])


async def settle(tuner: Autotuner, clock: SimClock, max_minutes: float = 20) -> None:
    end = clock.now() + max_minutes * 60
    while tuner.status.state is not TunerState.STABLE and clock.now() < end:
        await tuner.run_for(30)
    assert tuner.status.state is TunerState.STABLE, tuner.status


async def test_power_target_not_exceeded_after_settling() -> None:
    hw, clock = rig(seed=5)
    target = 2600.0
    tuner = Autotuner(hw, PerformanceTarget.power(target), clock=clock)
    await settle(tuner, clock)
    worst = 0.0
    for _ in range(60):  # 30 more minutes
        await tuner.run_for(30)
        worst = max(worst, hw.modelled_truth()[0])
    assert worst <= target * 1.02, worst
    assert abs(hw.modelled_truth()[0] / target - 1) < 0.01


async def test_hashrate_target() -> None:
    hw, clock = rig(seed=6)
    tuner = Autotuner(hw, PerformanceTarget.hashrate(150.0), clock=clock)
    await settle(tuner, clock)
    await tuner.run_for(600)
    assert abs(hw.modelled_truth()[1] / 150.0 - 1) < 0.02


@pytest.mark.parametrize(("seed", "inlet"), [(1, 80.0), (2, 95.0), (3, 85.0)])
async def test_dangerous_temperature_always_shuts_down(seed: int, inlet: float) -> None:
    cooling = CoolingConfig(limits=ThermalLimits(65, 75, 85), restart_after_s=None)
    hw, clock = rig(seed=seed)
    tuner = Autotuner(hw, PerformanceTarget.power(3500), clock=clock, cooling=cooling)
    await tuner.run_for(120)
    hw.set_inlet_temperature(inlet)
    peak = 0.0
    for _ in range(40):
        await tuner.run_for(30)
        peak = max(peak, tuner.status.hottest_c)
        if tuner.status.state is TunerState.ERROR:
            break
    assert tuner.status.state is TunerState.ERROR and "EMERGENCY" in " ".join(tuner.status.events)
    assert peak < 85 + 10  # caught within a tick or two, not after a runaway
    assert not any(b.enabled for b in hw.telemetry().boards)
    assert hw.modelled_truth()[0] < 200  # boards off: fans and controller only
    await tuner.run_for(600)  # and it stays off (no automatic restart configured)
    assert not any(b.enabled for b in hw.telemetry().boards)


@given(st.floats(min_value=85.0, max_value=200.0), st.integers(min_value=0, max_value=5))
def test_guard_shuts_down_at_any_dangerous_reading(reading: float, steps: int) -> None:
    guard = ThermalGuard(CoolingConfig(limits=ThermalLimits(65, 75, 85)))
    guard.dps_steps = steps
    assert guard.assess(reading, now=100.0) is ThermalAction.SHUTDOWN


def test_guard_waits_for_a_plan_before_scaling_but_never_before_shutting_down() -> None:
    guard = ThermalGuard(CoolingConfig(limits=ThermalLimits(65, 75, 85)))
    assert guard.assess(80.0, now=10.0, can_scale=False) is ThermalAction.NONE
    assert guard.dps_steps == 0 and guard.scale == 1.0
    assert guard.assess(80.0, now=12.0) is ThermalAction.STEP_DOWN  # the first reading once a plan runs
    assert guard.assess(90.0, now=14.0, can_scale=False) is ThermalAction.SHUTDOWN


async def test_a_unit_hot_at_start_does_not_lower_the_goal_it_is_still_learning_for() -> None:
    """Stock S21 at a 40 C inlet reads above "hot"; the tuner's first sweep (for 70 % power) is what cools
    it. A DPS step during learning would cool nothing and leave the plan 5 % under the goal for minutes."""
    hw, clock = rig(seed=0, t_inlet=40.0)
    hw.oracle_view().set_fan_duty(0, 1.0)
    hw.oracle_view().settle(1200.0, 30.0)
    stock = Oracle(hw.oracle_view()).stock_uniform(hw.limits().stock_freq_mhz)
    start_c = hottest(hw.telemetry())
    seen: list[tuple[bool, float, int]] = []  # (learning, hottest sensor, DPS steps) at each progress report
    tuner = Autotuner(hw, PerformanceTarget.power(0.7 * stock.wall_power_w), clock=clock,
                      progress=lambda st: seen.append((tuner.plan is None, st.hottest_c, st.dps_steps)))
    await tuner.run_for(60)  # returns once learning is over and the first plan runs
    learning = [(hot, steps) for first, hot, steps in seen if first]
    assert learning and start_c >= tuner.cooling.limits.hot_c  # it was hot ...
    assert all(steps == 0 for _, steps in learning)  # ... while learning: nothing scaled
    assert tuner.plan is not None and tuner.guard.dps_steps == 0  # and the plan it made, cooler, needs none
    assert tuner.effective_target.value == pytest.approx(0.7 * stock.wall_power_w)


async def test_hot_inlet_steps_down_then_recovers() -> None:
    hw, clock = rig(seed=7)
    target = 3450.0
    tuner = Autotuner(hw, PerformanceTarget.power(target), clock=clock)
    await settle(tuner, clock)
    hw.set_inlet_temperature(40.0)
    for _ in range(40):
        await tuner.run_for(30)
    assert tuner.guard.dps_steps >= 1, tuner.status.events
    assert any("re-tuning" in e for e in tuner.status.events)
    hot_power = hw.modelled_truth()[0]
    assert hot_power < target * 0.97
    assert tuner.status.state is not TunerState.ERROR
    hw.set_inlet_temperature(25.0)
    for _ in range(120):
        await tuner.run_for(30)
        if tuner.guard.dps_steps == 0 and tuner.status.state is TunerState.STABLE:
            break
    await tuner.run_for(300)
    assert tuner.guard.dps_steps == 0
    assert abs(hw.modelled_truth()[0] / target - 1) < 0.02
    assert any("recovered" in e for e in tuner.status.events)


async def test_chip_killed_mid_run_is_isolated() -> None:
    hw, clock = rig(seed=8)
    target = 2500.0
    tuner = Autotuner(hw, PerformanceTarget.power(target), clock=clock)
    await settle(tuner, clock)
    hw.kill_chip(1, 17)
    for _ in range(20):
        await tuner.run_for(30)
    assert (1, 17) in tuner.status.dead_chips
    assert tuner.freq[1, 17] == 0
    assert hw.telemetry().boards[1].chips[17].frequency_mhz == 0
    assert abs(hw.modelled_truth()[0] / target - 1) < 0.015


async def test_profile_and_chip_model_reused_at_boot(tmp_path: Path) -> None:
    store_path = tmp_path / "profiles.json"
    hw, clock = rig(seed=9)
    target = PerformanceTarget.power(2450)
    tuner = Autotuner(hw, target, clock=clock, store=ProfileStore(store_path))
    await settle(tuner, clock)
    first_jth = hw.modelled_truth()[0] / hw.modelled_truth()[1]
    # Reboot: same unit (same seed), fresh state, the store on disk.
    hw2, clock2 = rig(seed=9)
    tuner2 = Autotuner(hw2, target, clock=clock2, store=ProfileStore(store_path))
    await tuner2.run_for(60)
    assert tuner2.status.state is TunerState.STABLE
    assert "saved profile verified" in tuner2.status.message
    await tuner2.run_for(600)  # let temperatures settle before comparing efficiency
    assert abs(hw2.modelled_truth()[0] / hw2.modelled_truth()[1] / first_jth - 1) < 0.01
    # A new target is planned from the saved chip model: no sweep, converges fast.
    await tuner2.set_target(PerformanceTarget.power(2100))
    await tuner2.run_for(240)
    assert tuner2.status.state is TunerState.STABLE
    assert abs(as_read(hw2) / 2100 - 1) < 0.01  # held on the PSU's reading; truth also has the meter's error
    assert abs(hw2.modelled_truth()[0] / 2100 - 1) < 0.025
    assert not any(e.startswith("sweep") for e in [tuner2.status.phase])


async def test_quick_ramp_curtail_sleep_wake() -> None:
    hw, clock = rig(seed=10)
    target = 3000.0
    tuner = Autotuner(hw, PerformanceTarget.power(target), clock=clock)
    await settle(tuner, clock)
    await tuner.curtail(0.5)
    clock.advance(4.0)
    assert hw.modelled_truth()[0] < target * 0.6  # within seconds (supply slew), no re-tune
    await tuner.run_for(120)
    assert abs(hw.modelled_truth()[0] / (target * 0.5) - 1) < 0.02
    await tuner.curtail(1.0)
    await tuner.run_for(120)
    assert abs(hw.modelled_truth()[0] / target - 1) < 0.015
    await tuner.sleep()
    clock.advance(2.0)
    assert hw.modelled_truth()[1] == 0
    await tuner.wake()
    clock.advance(2.0)
    assert hw.modelled_truth()[0] > target * 0.9


async def test_efficiency_curve() -> None:
    hw, clock = rig(seed=11)
    tuner = Autotuner(hw, PerformanceTarget.power(2800), clock=clock)
    await settle(tuner, clock)
    curve = [p for p in tuner.efficiency_curve(10) if p.source == "estimated"]
    assert 6 <= len(curve) <= 20
    powers = [p.power_w for p in curve]
    assert powers == sorted(powers)
    assert curve[0].j_per_th < curve[-1].j_per_th  # lower power, better efficiency


async def test_immersion_mode_never_drives_fans() -> None:
    hw, clock = rig(seed=12)
    calls: list[float] = []
    original = hw.set_fan_duty

    async def spy(duty: float) -> None:
        calls.append(duty)
        await original(duty)

    hw.set_fan_duty = spy  # type: ignore[method-assign]
    tuner = Autotuner(hw, PerformanceTarget.power(2400), clock=clock,
                      cooling=CoolingConfig(mode=CoolingMode.IMMERSION))
    await tuner.run_for(300)
    assert calls == []


async def test_missing_fans_stop_mining() -> None:
    hw, clock = rig(seed=13)
    tuner = Autotuner(hw, PerformanceTarget.power(2400), clock=clock, cooling=CoolingConfig(min_fans=4))
    await tuner.run_for(60)
    hw.fail_fan(2)
    await tuner.run_for(30)
    assert tuner.status.state is TunerState.ERROR and "fans" in tuner.status.message


async def test_lifetime_mode_runs_cooler_and_reports_hazard() -> None:
    normal_hw, clock = rig(seed=14)
    normal = Autotuner(normal_hw, PerformanceTarget.power(3450), clock=clock)
    await normal.run_for(1800)
    life_hw, clock2 = rig(seed=14)
    life = Autotuner(life_hw, PerformanceTarget.power(3450), clock=clock2,
                     cooling=CoolingConfig(lifetime_target_c=55.0))
    await life.run_for(1800)
    assert life.status.hottest_c < normal.status.hottest_c - 5
    assert life.status.hazard_ratio is not None and life.status.hazard_ratio < 0.8


def test_tuner_code_cannot_reach_hidden_parameters() -> None:
    """The tuner sees hardware only through the HAL: no simulator imports, no back doors."""
    forbidden_attrs = {"oracle_view", "modelled_truth", "hidden", "kill_chip", "fail_fan", "_fleet",
                       "set_inlet_temperature", "_k", "_g", "_dead"}
    root = Path(__file__).parents[1] / "src" / "openmos" / "tuning"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("openmos.hw.sim") for n in names), f"{path.name} imports {names}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in forbidden_attrs, f"{path.name} uses .{node.attr}"


def test_targets_presets_and_steps() -> None:
    eco = PerformanceTarget.preset("eco", 3500)
    assert eco.value == 2450 and eco.key == "power-2450W"
    assert PerformanceTarget.preset("performance", 3500).value == 3500
    assert eco.step(+10).value == pytest.approx(2695)
    assert eco.step(-10).value == pytest.approx(2205)
    with pytest.raises(ValueError, match="unknown profile"):
        PerformanceTarget.preset("turbo", 3500)
    with pytest.raises(ValueError):
        PerformanceTarget.power(0)
    with pytest.raises(ValueError):
        ThermalLimits(80, 75, 85)


def test_pid_holds_a_first_order_plant() -> None:
    pid = Pid()
    temp = 80.0
    for _ in range(600):
        duty = pid.update(temp - 65.0, 1.0)
        steady = 25 + 4000 / (duty + 20)  # hotter with less airflow
        temp += (steady - temp) * 0.1
    assert abs(temp - 65.0) < 1.0


def test_arrhenius_ratio() -> None:
    assert arrhenius_hazard_ratio(70, 70) == pytest.approx(1.0)
    assert 1.6 < arrhenius_hazard_ratio(60, 70) < 2.0  # ~1.6-2x per 10 C near 70 C
    assert arrhenius_hazard_ratio(65, 55) < 1


async def test_agent_runs_the_tuner_on_simulated_hardware() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=0.0001))
    await pool.start()
    hw = SimHardware("s21", seed=15, clock=SimClock(speed=300.0), tick_s=0.05)
    config = AgentConfig.from_dict({"groups": [{"pools": [{"url": pool.url, "user": "tuned.s21"}]}],
                                    "performance": {"profile": "eco"}})
    agent = MiningAgent(config, hw)
    await agent.start()
    try:
        assert agent.tuner is not None
        await wait_for(lambda: agent.tuner is not None and agent.tuner.status.state is TunerState.STABLE, 180,
                       "the tuner to settle")
        await wait_for(lambda: pool.workers.get("tuned.s21") is not None, 30, "shares")
    finally:
        await agent.stop()
        await pool.stop()
    assert abs(hw.modelled_truth()[0] / 2450 - 1) < 0.02


def test_cpu_hardware_refuses_a_performance_target() -> None:
    config = AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}],
                                    "performance": {"power_w": 100}})
    with pytest.raises(ValueError, match="no tunable clocks"):
        MiningAgent(config, CpuHardware())


# -- the tuner on the hard simulator ---------------------------------------------------------------------


async def test_decisions_are_logged_with_reasons_and_settings_respect_the_hardware() -> None:
    hw, clock = rig(seed=30)
    tuner = Autotuner(hw, PerformanceTarget.power(2400), clock=clock)
    await settle(tuner, clock)
    actions = [d.action for d in tuner.status.decisions]
    assert "sweep" in actions and "plan" in actions
    assert all(d.reason for d in tuner.status.decisions)
    limits = hw.limits()
    grid = set(limits.freq_grid_mhz)
    assert grid and all(f == 0 or f in grid for f in tuner.freq.ravel())  # only frequencies the PLL can make
    steps = (tuner.voltage - limits.volt_min) / limits.volt_step
    np.testing.assert_allclose(steps, steps.round(), atol=1e-6)  # on the supply's steps
    assert limits.settle_s > 0


async def test_overclock_hashrate_target_within_limits() -> None:
    hw, clock = rig(seed=31)
    stock_ths = hw.limits().stock_freq_mhz * hw.limits().hashes_per_mhz * 324 / 1e12
    goal = 1.12 * stock_ths
    tuner = Autotuner(hw, PerformanceTarget.hashrate(goal), clock=clock)
    await settle(tuner, clock)
    await tuner.run_for(1800)
    watts, ths = hw.modelled_truth()
    assert abs(ths / goal - 1) < 0.02
    assert tuner.voltage.mean() > hw.limits().stock_voltage  # more hashrate per chip needs more voltage
    assert watts < (hw.limits().psu_max_w or 0) and tuner.guard.dps_steps == 0
    assert not any(e.startswith("hot") for e in tuner.status.events)


async def test_power_target_above_the_psu_rating_is_capped() -> None:
    hw, clock = rig(seed=32)
    cap = hw.limits().psu_max_w or 0
    tuner = Autotuner(hw, PerformanceTarget.power(cap * 1.3), clock=clock)
    await tuner.run_for(1800)
    assert as_read(hw) <= cap  # the PSU's own reading, as every firmware caps; truth within its meter error
    assert hw.modelled_truth()[0] <= cap * 1.015
    assert any("PSU" in d.action or "PSU" in d.reason for d in tuner.status.decisions)


async def test_efficiency_ceiling_profile() -> None:
    hw, clock = rig(seed=33)
    stock = Oracle(hw.oracle_view()).stock_uniform(490.0)
    ceiling = 0.93 * stock.j_per_th
    tuner = Autotuner(hw, PerformanceTarget.efficiency(ceiling), clock=clock)
    await settle(tuner, clock, max_minutes=30)
    await tuner.run_for(1200)
    watts, ths = hw.modelled_truth()
    assert watts / ths <= ceiling * 1.01
    # It spends the budget: close to the ceiling, not at some needlessly low power.
    assert watts / ths >= ceiling * 0.97
    assert any(d.action.startswith("efficiency") for d in tuner.status.decisions)


async def test_dropped_domain_is_isolated_and_hashrate_target_recovered() -> None:
    hw, clock = rig(seed=34)
    tuner = Autotuner(hw, PerformanceTarget.hashrate(150.0), clock=clock)
    await settle(tuner, clock)
    hw.drop_domain(2, 5)
    for _ in range(30):
        await tuner.run_for(30)
    assert {(2, c) for c in range(45, 54)} <= set(tuner.status.dead_chips)
    assert abs(hw.modelled_truth()[1] / 150.0 - 1) < 0.02
    assert [e.kind.value for e in hw.fault_events()] == ["domain_drop"]


async def test_retunes_through_ageing_and_a_day_without_the_operator() -> None:
    clock = SimClock(speed=0)
    realism = Realism(ageing_speedup=365.0 * 12, inlet=InletCurve(mean_c=25.0, day_amplitude_c=7.0, start_hour=10))
    hw = SimHardware("s21", seed=35, clock=clock, realism=realism)  # 4 h of this age the unit two years
    new_k = hw.oracle_view().hidden().k
    target = 2500.0
    tuner = Autotuner(hw, PerformanceTarget.power(target), clock=clock,
                      options=TunerOptions(tick_s=5.0, stable_window_s=60.0))
    errors = []
    for _ in range(8):
        await tuner.run_for(1800)
        errors.append(abs(hw.modelled_truth()[0] / target - 1))
    fleet = hw.oracle_view()
    assert (fleet.hidden().k < new_k * 0.99).all()  # every chip lost >1 % of its speed
    assert max(errors[1:]) < 0.03 and float(np.median(errors)) < 0.01
    assert float(fleet.error_fraction().mean()) < 0.01  # limits fell; the tuner trimmed
    assert max(fleet.t_inlet) > 30 and tuner.guard.dps_steps == 0


def test_tune_cli_on_the_hard_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    from openmos.cli.main import main

    assert main(["tune", "bitaxe-gamma", "--power", "15", "--minutes", "4", "--day-swing", "3"]) == 0
    out = capsys.readouterr().out
    assert "modelled" in out and "decision:" in out
    assert main(["tune", "bitaxe-gamma", "--efficiency", "nan", "--minutes", "1"]) != 0


async def test_a_quick_ramp_reaches_the_hardware_one_board_per_call() -> None:
    """A curtail re-plans every chip; each board's new frequencies arrive in one call (one ramp per BM13xx
    chain, one write in a simulator), not one call per chip, and the hardware ends up running the plan."""
    from openmos.testbed.site import FleetSimSite, SlotHardware
    from openmos.tuning.learning import expected_limits
    from openmos.tuning.planning import PowerModel

    calls: list[str] = []

    class Recording(SlotHardware):
        async def set_chip_frequency(self, board: int, chip: int, mhz: float) -> None:
            calls.append("chip")
            await super().set_chip_frequency(board, chip, mhz)

        async def set_chip_frequencies(self, board: int, mhz: Sequence[float]) -> None:
            calls.append("board")
            await super().set_chip_frequencies(board, mhz)

    site = FleetSimSite(1, counters=True)
    hw = Recording(site, 0)
    limits = hw.limits()
    tuner = Autotuner(hw, PerformanceTarget.power(3500.0), clock=SimClock(1.0))
    kn = tuner.knowledge
    kn.sweep_voltages = [limits.stock_voltage - 1.0, limits.stock_voltage]
    kn.sweep_fmax = [expected_limits(limits, tuner.freq.shape, v) / 0.9 for v in kn.sweep_voltages]
    kn.power_model = PowerModel(1.5e-4, 0.0, 300.0)
    await tuner._apply_plan(tuner._plan())
    calls.clear()
    await tuner.curtail(0.6)
    assert 0 < len(calls) <= limits.boards and "chip" not in calls
    assert tuner.plan is not None and np.allclose(site.fleet.freq[0], tuner.freq)
    assert float(site.fleet.freq[0].mean()) < 0.9 * limits.stock_freq_mhz or \
        float(site.fleet.v_board[0].mean()) < limits.stock_voltage - 0.1


async def test_a_quick_ramp_down_keeps_the_planned_power_while_the_supply_slews() -> None:
    """Clocks drop at once, the board supply slews down (0.2 V/s here): until it is there, the chips run
    at clocks whose modelled power at the running voltage is the plan's, never above it (the plan's own
    clocks at the old voltage would draw more); the plan's clocks follow once the supply has settled."""
    from openmos.testbed.site import FleetSimSite, SlotHardware
    from openmos.tuning.learning import expected_limits
    from openmos.tuning.planning import PowerModel

    site = FleetSimSite(1, counters=True)
    hw = SlotHardware(site, 0)
    limits = hw.limits()
    tuner = Autotuner(hw, PerformanceTarget.power(3500.0), clock=SimClock(speed=0))
    kn = tuner.knowledge
    kn.sweep_voltages = [limits.stock_voltage - 1.0, limits.stock_voltage]
    kn.sweep_fmax = [expected_limits(limits, tuner.freq.shape, v) / 0.9 for v in kn.sweep_voltages]
    kn.power_model = model = PowerModel(1.1e-4, 0.3, 25.0)  # about what a fit to a simulated S21 gives
    await tuner._apply_plan(tuner._plan())
    site.fleet.settle(60)
    high = float(site.fleet.v_board[0].mean())
    await tuner.curtail(0.6)
    plan = tuner.plan
    assert plan is not None and plan.voltage < high - 0.3 and tuner._ramp_until > tuner.clock.now()
    assert (tuner.freq <= plan.freq + 1e-9).all() and tuner.freq.sum() < 0.95 * plan.freq.sum()
    worst = 0.0
    for _ in range(int(4 * (high - plan.voltage) / 0.2) + 8):  # the whole slew, 0.25 s physics steps
        site.fleet.step(0.25)
        running_v = site.fleet._v_run[0]
        worst = max(worst, model.predict(running_v, site.fleet.freq[0]))
        assert not np.isclose(running_v, high).all() or worst <= plan.predicted_power_w * 1.001
    assert worst <= plan.predicted_power_w * 1.001
    assert model.predict(np.full(limits.boards, high), plan.freq) > 1.05 * plan.predicted_power_w  # the old way
    for _ in range(3):  # the first cooling tick after the supply's settling time: the plan's own clocks
        await tuner._tick()
    assert np.array_equal(tuner.freq, plan.freq) and tuner._bridged is None
