"""Scoring a maintenance model against the simulator's ground truth (benchmarks and tests; all *modelled*).

``sim_snapshot`` reads a simulated fleet only through what its hardware would report (counters, sensors,
regulator and PSU readings). ``run_fleet`` steps the fleet's physics every ``sample_s`` (the simulator's
exact exponential relaxation keeps long steps stable), feeds the health model and the threshold rule, and keeps
every score above a floor (sparse) so the same run can be scored at any flag level. ``score`` matches flag
episodes to failures: an episode is true when a failure of its component (or of the board/domain holding it)
follows within ``horizon``; a failure is caught >= 24 h ahead when such an episode was open at least a day
before it. Episodes starting after their component already failed are neither.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from openmos.hw.sim.fleet import FleetSim
from openmos.hw.sim.precursors import Failure
from openmos.maintenance.model import CHANNELS, HealthModel, Thresholds
from openmos.maintenance.snapshot import HASHES_PER_DIFF1, Snapshot
from openmos.maintenance.threshold import ThresholdAlerts, ThresholdRule

DAY = 86400.0
HORIZON_S = 30 * DAY
MIN_LEAD_S = DAY
FLOOR = 0.5  # scores kept for calibration: levels below this cannot be evaluated
RULE_CHANNELS = ("rule_board", "rule_fan")


def sim_snapshot(fleet: FleetSim) -> Snapshot:
    """Every miner's readings, as hardware reports them (no hidden state)."""
    _, chip_t = fleet.read_board_temps(slice(None))
    vr_t, vr_v = fleet.wear.read_vr(fleet)
    psu_v, psu_w = fleet.wear.read_psu(fleet)
    expected = fleet.hashes / (HASHES_PER_DIFF1 * fleet.ticket_difficulty)
    chip_on = (fleet.freq > 0) & fleet.board_enabled[..., None]
    return Snapshot(fleet.time, fleet.nonces.astype(np.float64), fleet.errors.astype(np.float64), expected,
                    chip_on, np.asarray(chip_t), vr_t, vr_v, fleet.v_board.copy(), fleet.read_fans(),
                    np.asarray(fleet.read_wall_power()), psu_w, psu_v)


@dataclass
class RunResult:
    miners: int
    days: float
    sample_s: float
    shapes: dict[str, tuple[int, ...]]
    failures: list[Failure]
    domain_chips: int
    records: dict[str, tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]] = field(default_factory=dict)
    leads: dict[str, NDArray[np.float64]] = field(default_factory=dict)  # estimated lead at each record, h


def run_fleet(fleet: FleetSim, days: float, sample_s: float, thresholds: Thresholds | None = None,
              rule: ThresholdRule | None = None, progress: Callable[[float], None] | None = None) -> RunResult:
    """Step ``fleet`` (failures already scheduled) for ``days``, sampling every ``sample_s``."""
    m = fleet.model
    th = thresholds or Thresholds(persist=max(1, math.ceil(3600 / sample_s)))
    model = HealthModel((fleet.miners, m.boards, m.chips_per_board), m.sensors_per_board, m.fans, th)
    alerts = ThresholdAlerts(rule)
    steps = round(days * DAY / sample_s)
    t_start = fleet.time
    buf: dict[str, list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]]] = {}
    lead_buf: dict[str, list[NDArray[np.float64]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for step in range(steps + 1):
        if step:
            fleet.step(sample_s)
        snap = sim_snapshot(fleet)
        held = model.update(snap)
        flags = alerts.update(snap)
        channels = {**held, **{f"rule_{k}": v for k, v in flags.items()}}
        for name, score in channels.items():
            shapes[name] = score.shape
            flat = score.ravel()
            idx = np.flatnonzero(flat >= FLOOR)
            if len(idx):
                buf.setdefault(name, []).append((np.full(len(idx), step, dtype=np.int64), idx, flat[idx]))
                lead_buf.setdefault(name, []).append(model.lead_h(name, idx))
        if progress is not None:
            progress((fleet.time - t_start) / DAY)
    result = RunResult(fleet.miners, days, sample_s, shapes, fleet.wear.failures,
                       m.chips_per_board // m.domains)
    for name, parts in buf.items():
        result.records[name] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                                np.concatenate([p[2] for p in parts]))
        result.leads[name] = np.concatenate(lead_buf[name])
    return result


def merge(parts: list[RunResult]) -> RunResult:
    """One fleet from independently simulated racks (same model, days and sampling): miners renumbered."""
    first = parts[0]
    miners = sum(p.miners for p in parts)
    shapes = {k: (miners, *v[1:]) for k, v in first.shapes.items()}
    out = RunResult(miners, first.days, first.sample_s, shapes, [], first.domain_chips)
    offset = 0
    for part in parts:
        if (part.days, part.sample_s, part.domain_chips) != (first.days, first.sample_s, first.domain_chips):
            raise ValueError("racks differ in days, sampling or model")
        out.failures += [dataclasses.replace(f, miner=f.miner + offset) for f in part.failures]
        for name, (step, idx, score) in part.records.items():
            rest = int(np.prod(part.shapes[name][1:], dtype=np.int64))
            prev = out.records.get(name)
            new = (step, idx + offset * rest, score)
            out.records[name] = new if prev is None else tuple(  # type: ignore[assignment]
                np.concatenate([a, b]) for a, b in zip(prev, new, strict=True))
            lead = part.leads[name]
            out.leads[name] = lead if name not in out.leads else np.concatenate([out.leads[name], lead])
        offset += part.miners
    return out


def bin_weak_chips(fleet: FleetSim, rounds: int = 3, hours: float = 1.0, max_error: float = 0.01) -> int:
    """What stock firmware does at first boot: chips whose error share (from their counters) is over
    ``max_error`` step down 10 % in frequency, a few rounds. Returns how many chips were slowed."""
    slowed = np.zeros(fleet.freq.shape, dtype=bool)
    for _ in range(rounds):
        n0, e0 = fleet.nonces.copy(), fleet.errors.copy()
        for _ in range(int(hours * 12)):
            fleet.step(300.0)
        dn, de = fleet.nonces - n0, fleet.errors - e0
        bad = (de / np.maximum(dn + de, 1)) > max_error
        for m, b, c in np.argwhere(bad):
            fleet.set_frequency(int(m), int(b), int(c), max(float(fleet.freq[m, b, c]) * 0.9, fleet.model.min_freq_mhz))
        slowed |= bad
    return int(slowed.sum())


def _keys(f: Failure, res: RunResult) -> list[tuple[str, int]]:
    """(channel, flat index) of every component whose flag counts for failure ``f``."""
    sh = res.shapes

    def flat(channel: str, *at: int) -> tuple[str, int]:
        return channel, int(np.ravel_multi_index(at, sh[channel]))
    m, b, i = f.miner, f.board or 0, f.index or 0
    n_chips = sh["chip"][2]
    if f.component in ("chip", "domain", "board"):
        chips = [i] if f.component == "chip" else \
            list(range(i * res.domain_chips, (i + 1) * res.domain_chips)) if f.component == "domain" else \
            list(range(n_chips))
        return [flat("chip", m, b, c) for c in chips] + [flat("board", m, b), flat("vr", m, b),
                                                          flat("rule_board", m, b)]
    if f.component == "fan":
        return [flat("fan", m, i), flat("rule_fan", m, i)]
    if f.component == "psu":
        return [flat("psu", m)]
    return [flat("sensor", m, b, i)]


@dataclass(frozen=True)
class Scores:
    failures: int  # that happened within the run
    announced: int
    caught_announced: int  # flagged >= 24 h ahead
    caught_all: int
    false_alarms: int
    miner_days: float
    leads_h: list[float]  # actual lead of every failure caught >= 24 h ahead
    estimates_h: list[tuple[float, float]]  # (estimated lead when flagged, actual lead) of those
    by_component: dict[str, tuple[int, int, int]]  # component: (failures, announced, caught >= 24 h)

    @property
    def recall_announced(self) -> float:
        return self.caught_announced / self.announced if self.announced else math.nan

    @property
    def recall_all(self) -> float:
        return self.caught_all / self.failures if self.failures else math.nan

    @property
    def false_per_1000_days(self) -> float:
        return 1000.0 * self.false_alarms / self.miner_days

    def estimate_within(self, factor: float = 2.0) -> tuple[int, int]:
        """(caught failures whose lead estimate at the flag was within ``factor`` of the actual lead, those
        with an estimate at all)."""
        pairs = [(e, a) for e, a in self.estimates_h if math.isfinite(e) and e > 0]
        return sum(1 for e, a in pairs if a / factor <= e <= a * factor), len(pairs)

    @property
    def median_lead_h(self) -> float:
        return float(np.median(self.leads_h)) if self.leads_h else math.nan


def episodes(res: RunResult, channel: str, level: float, merge_s: float = DAY
             ) -> list[tuple[int, int, int, float]]:
    """(flat index, first step, last step, the model's lead-time estimate when raised, h) of every flag
    episode at or above ``level``: runs of samples, a re-raise within ``merge_s`` of the last clear being the
    same open ticket (as alerting tools dedup)."""
    if channel not in res.records:
        return []
    step, idx, score = res.records[channel]
    keep = score >= level
    step, idx = step[keep], idx[keep]
    lead = res.leads[channel][keep] if channel in res.leads else np.full(len(step), np.nan)
    if not len(step):
        return []
    order = np.lexsort((step, idx))
    step, idx, lead = step[order], idx[order], lead[order]
    new = np.ones(len(step), dtype=bool)
    gap = max(1, round(merge_s / res.sample_s))
    new[1:] = (idx[1:] != idx[:-1]) | (step[1:] > step[:-1] + gap)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:] - 1, len(step) - 1)
    return [(int(idx[s]), int(step[s]), int(step[e]), float(lead[s])) for s, e in zip(starts, ends, strict=True)]


def score(res: RunResult, levels: dict[str, float], channels: tuple[str, ...] = CHANNELS) -> Scores:
    """Recall, false alarms and lead of the flags of ``channels`` at ``levels`` against the ground truth."""
    end_s = res.days * DAY
    fail_at: dict[tuple[str, int], list[float]] = {}
    for f in res.failures:
        for key in _keys(f, res):
            fail_at.setdefault(key, []).append(f.fail_s)
    psu_trip = {f.miner: f.fail_s for f in sorted(res.failures, key=lambda f: -f.fail_s) if f.component == "psu"}
    open_eps: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    false = 0
    for channel in channels:
        if channel not in res.shapes:
            continue
        for idx, first, last, estimate in episodes(res, channel, levels.get(channel, 1.0)):
            t0, t1 = first * res.sample_s, last * res.sample_s
            key = (channel, idx)
            times = fail_at.get(key, [])
            miner = int(np.unravel_index(idx, res.shapes[channel])[0])
            dead = min([*times, psu_trip.get(miner, math.inf)], default=math.inf)
            if t0 >= dead:
                continue  # the component had already failed: a report, not a prediction
            open_eps.setdefault(key, []).append((t0, t1, estimate))
            if not any(t0 < t <= t0 + HORIZON_S for t in times):
                false += 1
    happened = [f for f in res.failures if f.fail_s <= end_s]
    leads: list[float] = []
    estimates: list[tuple[float, float]] = []
    by: dict[str, list[int]] = {}
    caught_a = caught_all = 0
    for f in happened:
        best, best_estimate = -math.inf, math.nan
        for key in _keys(f, res):
            for t0, t1, estimate in open_eps.get(key, []):
                if t0 <= f.fail_s - MIN_LEAD_S and t1 >= f.fail_s - HORIZON_S:
                    lead = f.fail_s - max(t0, f.fail_s - HORIZON_S)
                    if lead > best:
                        best, best_estimate = lead, estimate
        hit = best >= MIN_LEAD_S
        row = by.setdefault(f.component, [0, 0, 0])
        row[0] += 1
        row[1] += f.announced
        row[2] += hit
        if hit:
            leads.append(best / 3600.0)
            estimates.append((best_estimate, best / 3600.0))
            caught_all += 1
            caught_a += f.announced
    return Scores(len(happened), sum(f.announced for f in happened), caught_a, caught_all, false,
                  res.miners * res.days, leads, estimates, {k: (v[0], v[1], v[2]) for k, v in by.items()})


GRID = (1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


def calibrate(res: RunResult, budget_per_1000_days: float, channels: tuple[str, ...] = CHANNELS,
              grid: tuple[float, ...] = GRID) -> dict[str, float]:
    """Per channel, the lowest level whose false alarms on this (training) run stay within its share of the
    budget; the ground truth of this run is the only label used."""
    share = budget_per_1000_days / len(channels)
    levels: dict[str, float] = {}
    for channel in channels:
        chosen = grid[-1]
        for level in grid:
            s = score(res, {channel: level}, (channel,))
            if s.false_per_1000_days <= share:
                chosen = level
                break
        levels[channel] = chosen
    return levels
