"""Predictive maintenance: precursor physics in the simulator (with its ground truth), the health model on
telemetry only, the threshold-rule baseline, scoring, and hostile telemetry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openmos.hw.interface import BoardTelemetry, ChipTelemetry, FanTelemetry, HardwareTelemetry
from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.faults import FaultKind
from openmos.hw.sim.precursors import Failure, Mode, draw_failures
from openmos.maintenance import HealthModel, MaintenanceMonitor, Thresholds
from openmos.maintenance.evaluate import (
    DAY,
    RunResult,
    bin_weak_chips,
    episodes,
    merge,
    run_fleet,
    score,
    sim_snapshot,
)
from openmos.maintenance.snapshot import from_telemetry
from openmos.maintenance.threshold import ThresholdAlerts

SAMPLE_S = 900.0


def fleet_with(failures: list[Failure], miners: int = 6, seed: int = 3) -> FleetSim:
    fleet = FleetSim(get_model("s21"), miners=miners, seed=seed)
    fleet.settle(1800, 300)
    bin_weak_chips(fleet, rounds=2)
    fleet.schedule_failures([Failure(f.mode, f.miner, f.board, f.index, fleet.time + f.onset_s,
                                     fleet.time + f.fail_s) for f in failures])
    return fleet


# One failure of each announced kind, on its own miner; miner 5 stays healthy. Times relative to the start.
ANNOUNCED = [
    Failure(Mode.CHIP_WEAROUT, 0, 1, 40, 1.5 * DAY, 7 * DAY),
    Failure(Mode.BOARD_THERMAL, 1, 2, None, 1.0 * DAY, 9 * DAY),
    Failure(Mode.VR_DEGRADE, 2, 0, 5, 2.0 * DAY, 7 * DAY),
    Failure(Mode.FAN_BEARING, 3, None, 2, 1.0 * DAY, 8 * DAY),
    Failure(Mode.PSU_AGEING, 4, None, None, 1.0 * DAY, 8 * DAY),
]


@pytest.fixture(scope="module")
def announced_run() -> RunResult:
    fleet = fleet_with(ANNOUNCED)
    t0 = fleet.time
    result = run_fleet(fleet, 9.5, SAMPLE_S)
    result.failures = [Failure(f.mode, f.miner, f.board, f.index, f.onset_s - t0, f.fail_s - t0)
                       for f in fleet.wear.failures]
    kinds = {e.kind for e in fleet.events}
    assert {FaultKind.CHIP_DEAD, FaultKind.BOARD_DEAD, FaultKind.DOMAIN_DROP, FaultKind.FAN_STOP,
            FaultKind.PSU_TRIP} <= kinds  # the ground-truth log has every failure, at its time
    assert all(any(abs(e.time_s - t0 - f.fail_s) <= SAMPLE_S and e.miner == f.miner for e in fleet.events)
               for f in result.failures)
    return result


def test_every_announced_failure_is_flagged_a_day_ahead_and_healthy_miners_are_not(announced_run: RunResult
                                                                                   ) -> None:
    s = score(announced_run, {})
    assert s.failures == 5 and s.announced == 5
    assert s.caught_announced == 5, s.by_component
    assert min(s.leads_h) >= 24
    within, estimated = s.estimate_within(4.0)  # an estimate, not a promise: within 4x for most
    assert estimated >= 4 and within >= estimated - 1, s.estimates_h
    for channel in ("chip", "board", "vr", "fan", "psu"):
        for idx, _, _, _ in episodes(announced_run, channel, 1.0):
            miner = int(np.unravel_index(idx, announced_run.shapes[channel])[0])
            assert miner != 5, f"healthy miner flagged on {channel}"


def test_the_threshold_rule_sees_fans_late_and_psus_never(announced_run: RunResult) -> None:
    rule = score(announced_run, {"rule_board": 1.0, "rule_fan": 1.0}, ("rule_board", "rule_fan"))
    model = score(announced_run, {})
    assert rule.by_component.get("psu", (0, 0, 0))[2] == 0  # no PSU rule in today's tools
    assert rule.caught_announced < model.caught_announced


def test_sudden_failures_have_no_precursor() -> None:
    fleet = fleet_with([Failure(Mode.CHIP_SUDDEN, 0, 0, 3, 2 * DAY, 2 * DAY),
                        Failure(Mode.FAN_SUDDEN, 1, None, 0, 2 * DAY, 2 * DAY)], miners=2)
    for _ in range(int(1.9 * DAY / SAMPLE_S)):
        fleet.step(SAMPLE_S)
    assert np.all(fleet.wear.k_mult == 1.0) and np.all(fleet.fan_health == 1.0) and not fleet.events
    for _ in range(20):
        fleet.step(SAMPLE_S)
    assert {e.kind for e in fleet.events} == {FaultKind.CHIP_DEAD, FaultKind.FAN_STOP}


def test_draw_failures_mixes_sudden_and_announced_and_degradation_can_predate_the_record() -> None:
    failures = draw_failures(get_model("s21"), 1000, 90 * DAY, np.random.default_rng(1))
    announced = [f for f in failures if f.announced]
    assert 0.4 < len(announced) / len(failures) < 0.9
    assert any(f.onset_s < 0 for f in announced)
    assert all(0 <= f.fail_s < 90 * DAY for f in failures)
    assert {f.component for f in failures} == {"chip", "board", "domain", "fan", "psu", "sensor"}


def test_scoring_counts_false_alarms_and_ignores_flags_after_a_failure() -> None:
    shapes = {"chip": (2, 1, 4), "board": (2, 1), "vr": (2, 1), "fan": (2, 2), "psu": (2,), "sensor": (2, 1, 1),
              "rule_board": (2, 1), "rule_fan": (2, 2)}
    fail = Failure(Mode.FAN_BEARING, 0, None, 1, 2 * DAY, 5 * DAY)
    res = RunResult(2, 10.0, 3600.0, shapes, [fail], 2)
    res.leads["fan"] = np.full(25, 48.0)
    hours = np.arange(60, 70, dtype=np.int64)  # fan (0, 1) flagged from hour 60 (lead 60 h)
    late = np.arange(200, 205, dtype=np.int64)  # fan (1, 0) flagged, nothing follows: a false alarm
    after = np.arange(130, 140, dtype=np.int64)  # fan (0, 1) again after it failed: a report, not counted
    steps = np.concatenate([hours, late, after])
    idx = np.concatenate([np.full(10, 1), np.full(5, 2), np.full(10, 1)]).astype(np.int64)
    res.records["fan"] = (steps, idx, np.full(len(steps), 1.5))
    s = score(res, {"fan": 1.0})
    assert (s.caught_announced, s.false_alarms) == (1, 1)
    assert s.leads_h == [60.0] and s.estimates_h == [(48.0, 60.0)] and s.estimate_within(2.0) == (1, 1)
    assert score(res, {"fan": 2.0}).caught_announced == 0  # above every score: nothing flagged


def test_a_chip_that_was_always_weak_is_its_own_baseline() -> None:
    """Constant 30 % errors from the start: not flagged. Errors climbing from 0: flagged, with the reason."""
    model = HealthModel((1, 1, 3), 1, 1, Thresholds(persist=2, warmup_s=6 * 3600))
    tel = {"nonces": np.zeros(3), "errors": np.zeros(3)}
    rng = np.random.default_rng(0)
    findings = []
    for k in range(400):
        t = k * SAMPLE_S
        p = np.array([0.3, 0.0, min(0.5, max(0.0, (t - 2 * DAY) / (3 * DAY)) ** 2)])
        n = rng.poisson(500 * (1 - p))
        e = rng.poisson(500 * p)
        tel["nonces"] += n
        tel["errors"] += e
        snap = from_telemetry(HardwareTelemetry("x", [BoardTelemetry(0, [
            ChipTelemetry(i, 500.0, int(tel["nonces"][i]), int(tel["errors"][i]), 500.0 * (k + 1) * 2**32, True)
            for i in range(3)], [50.0], [60.0 + rng.normal(0, 0.5)], 13.0)], [FanTelemetry(0, 5000, 70.0)],
            3000.0), t)
        model.update(snap)
        findings = model.findings()
        if findings:
            break
    assert findings and all(f.component == "chip" and f.index == 2 for f in findings)
    assert "hardware errors" in findings[0].reason and findings[0].value >= findings[0].band
    assert t < 4.5 * DAY  # well before the chip reaches 50 % errors (5 days)


def test_threshold_alerts_scores() -> None:
    fleet = FleetSim(get_model("s21"), miners=2, seed=1)
    fleet.settle(600, 300)
    alerts = ThresholdAlerts()
    alerts.update(sim_snapshot(fleet))
    fleet.stop_fan(1, 3)
    fleet.step(300)
    out = alerts.update(sim_snapshot(fleet))
    assert out["fan"][1, 3] >= 1 and out["fan"][0].max() < 1


HOSTILE = [math.nan, math.inf, -math.inf, 1e400, -1e308, 1e-300, -5]


def hostile_telemetry(value: float, boards: int = 3) -> HardwareTelemetry:
    chips = [ChipTelemetry(i, value, value, value, value, True, value) for i in range(5)]  # type: ignore[arg-type]
    return HardwareTelemetry("evil", [BoardTelemetry(b, chips, [value], [value, value], value, True, value, value)
                                      for b in range(boards)],
                             [FanTelemetry(0, value, value)], value, value, False, value, value)  # type: ignore[arg-type]


def test_hostile_telemetry_never_breaks_the_monitor() -> None:
    monitor = MaintenanceMonitor(sample_s=60)
    for k, value in enumerate(HOSTILE * 3):
        monitor.observe(hostile_telemetry(value), 60.0 * k)
    report = monitor.report()
    assert report["findings"] == [] or all(math.isfinite(f["score"] or 0) for f in report["findings"])
    # Flooding shapes: thousands of boards and chips are cut to bounded arrays; a shape change restarts.
    huge = HardwareTelemetry("flood", [BoardTelemetry(b, [ChipTelemetry(i, 500.0) for i in range(5000)])
                                       for b in range(200)])
    snap = from_telemetry(huge, 0.0)
    assert snap.nonces.shape == (1, 16, 512)
    monitor.observe(huge, 10_000.0)
    monitor.observe(hostile_telemetry(1.0, boards=1), 10_060.0)
    assert monitor.report()["samples"] == len(HOSTILE) * 3 + 2
    # Out-of-order and repeated timestamps are ignored, not divided by.
    monitor.observe(hostile_telemetry(1.0, boards=1), 10_060.0)
    monitor.observe(hostile_telemetry(1.0, boards=1), 5.0)


def test_sim_hardware_reports_regulator_and_psu_readings() -> None:
    hw = SimHardware("s21", seed=4)
    tel = hw.telemetry()
    assert tel.psu_output_w and tel.input_power_w and 0.85 < tel.psu_output_w / tel.input_power_w < 0.99
    assert tel.psu_output_v and abs(tel.psu_output_v - tel.boards[0].voltage_v) < 0.1  # type: ignore[operator]
    for board in tel.boards:
        assert board.vr_temperature_c and board.vr_temperature_c > board.temperatures_c[0]
        assert board.vr_voltage_v and 0.9 < board.vr_voltage_v / board.voltage_v < 1.0  # type: ignore[operator]


def test_racks_merge_into_one_fleet() -> None:
    shapes = {"fan": (2, 4)}
    a = RunResult(2, 10.0, 900.0, shapes, [Failure(Mode.FAN_BEARING, 1, None, 3, 0.0, 5 * DAY)], 9)
    b = RunResult(3, 10.0, 900.0, {"fan": (3, 4)}, [Failure(Mode.FAN_SUDDEN, 0, None, 1, 4 * DAY, 4 * DAY)], 9)
    for part, fan in ((a, 1 * 4 + 3), (b, 0 * 4 + 1)):
        part.records["fan"] = (np.array([1, 2], dtype=np.int64), np.array([fan, fan], dtype=np.int64),
                               np.array([2.0, 2.0]))
        part.leads["fan"] = np.array([10.0, 9.0])
    fleet = merge([a, b])
    assert fleet.miners == 5 and fleet.shapes["fan"] == (5, 4)
    assert [(f.miner, f.index) for f in fleet.failures] == [(1, 3), (2, 1)]
    assert sorted(set(fleet.records["fan"][1].tolist())) == [1 * 4 + 3, 2 * 4 + 1]  # rack b's miner 0 is miner 2
    with pytest.raises(ValueError):
        merge([a, RunResult(1, 5.0, 900.0, shapes, [], 9)])
