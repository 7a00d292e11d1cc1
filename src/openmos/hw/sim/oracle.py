"""The oracle: the best J/TH the hidden chip parameters allow, for scoring tuners. Never used by firmware.

For a multiplier ``lam`` (GH/s given up per W saved), every chip's optimal frequency at board voltage V is
``u*(a) f_crit`` where ``a = lam C V^2 1000 / cores``: the frequency ratio that balances the marginal valid
hashrate against marginal power does not depend on the chip, only on ``a``. Each board then picks the
voltage on a fine grid that maximises ``H - lam P``, and ``lam`` is bisected until the steady-state wall
power (leakage at the temperatures it causes, fans and PSU included) meets the target.
Frequencies are snapped down to the PLL grid and voltages come from the supply's steps, so every oracle
point can really be set. The chip limits use the temperatures and the supply-path drop of the last solution
(one refresh); the final score is always the exact steady state of ``evaluate``.

On discrete grids the multiplier only reaches points of the convex hull (0.1-0.3 % of valid hashrate under
the budget on an S21). Two exact steps close that: the multiplier search again with every mix of each
board's best and runner-up supply step held, then a local search scored by ``evaluate`` (spend what is left
of the budget on the chips that turn it into the most valid hashrate; trade PLL steps between chips).
``upper_bound_at_power`` certifies the result by Lagrangian duality at the solution's temperatures: on the
S21 and S19j Pro at 50-100 % power the best point is within 0.06 % of that bound; on a six-chip board it
matches a brute-force search of every setting (tests/test_sim.py).

``best_uniform_at_power`` is the strongest simple baseline: one frequency for every chip and one voltage for
every board, both chosen for the best J/TH at the power (uniform frequency *with* voltage scaling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from openmos.hw.sim import physics
from openmos.hw.sim.fleet import FleetSim
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.physics import Array

VOLTAGE_STEPS = 160
UNIFORM_BISECTIONS = 32
REFRESHES = 4
POLISH_ROUNDS = 200
BOUND_STEPS = 36
VOLTAGE_MIXES = 8  # board-voltage mixes tried (all of them for up to three boards)
POLISHED = 3


@dataclass(frozen=True)
class OperatingPoint:
    """Per-board voltages and per-chip frequencies with their modelled steady-state results."""

    board_voltage: Array  # (boards,)
    freq: Array  # (boards, chips)
    wall_power_w: float
    hashrate_ths: float  # valid hashes only

    @property
    def j_per_th(self) -> float:
        return self.wall_power_w / self.hashrate_ths if self.hashrate_ths > 0 else float("inf")


def _optimal_ratio(a: Array, width: float) -> Array:
    """u maximising u (1 - Phi((u - 1)/w)) - a u, by bisection on its derivative (decreasing near 1)."""
    lo = np.full(np.shape(a), 0.5)
    hi = np.full(np.shape(a), 1.3)
    for _ in range(40):
        u = (lo + hi) / 2
        z = (u - 1) / width
        deriv = 1 - ndtr(z) - u * np.exp(-0.5 * z * z) / (np.sqrt(2 * np.pi) * width) - a
        lo = np.where(deriv > 0, u, lo)
        hi = np.where(deriv > 0, hi, u)
    return np.asarray((lo + hi) / 2)


def evaluate_many(model: MinerModel, k: Array, g: Array, dead: np.ndarray, v_board: Array, freq: Array,
                  duty: float, t_inlet: float, rth_scale: Array | float = 1.0,
                  airflow_scale: float = 1.0) -> tuple[Array, Array]:
    """Steady-state (wall W, valid TH/s) for settings of shape (..., boards, chips) / (..., boards)."""
    steady = physics.steady_state(model, freq, v_board, g, duty, t_inlet, rth_scale=rth_scale,
                                  airflow_scale=airflow_scale)
    fcrit = physics.critical_frequency(model.chip, k, steady.v_chip, steady.t_j)
    p = np.where(dead, 1.0, physics.error_fraction(model.chip, freq, fcrit))
    ths = (physics.hashrate_ghs(model.chip, freq) * (1 - p)).sum(axis=(-2, -1)) / 1000.0
    wall = physics.wall_power_w(model, steady.chip_w.sum(axis=(-2, -1)), duty, t_inlet)
    return np.asarray(wall), np.asarray(ths)


def evaluate(model: MinerModel, k: Array, g: Array, dead: np.ndarray, v_board: Array, freq: Array,
             duty: float, t_inlet: float, rth_scale: Array | float = 1.0,
             airflow_scale: float = 1.0) -> OperatingPoint:
    """Steady-state wall power and valid hashrate of one miner at given settings (shape (boards, chips))."""
    wall, ths = evaluate_many(model, k, g, dead, v_board, freq, duty, t_inlet, rth_scale, airflow_scale)
    return OperatingPoint(v_board, freq, float(wall), float(ths))


class Oracle:
    """Optimal settings for one miner of a fleet, at the fleet's fan duty and inlet temperature."""

    def __init__(self, fleet: FleetSim, miner: int = 0, duty: float | None = None) -> None:
        """``duty``: score at this fan duty (e.g. a run's mean) instead of the fleet's present one."""
        hidden = fleet.hidden()
        self.model = fleet.model
        self.k, self.g, self.dead = hidden.k[miner], hidden.g[miner], hidden.dead[miner]
        self.rth_scale = hidden.rth_scale[miner]
        self.airflow = float(hidden.airflow_scale[miner])
        self.duty = float(fleet.duty[miner]) if duty is None else float(duty)
        self.t_inlet = float(fleet.t_inlet[miner])
        self.grid = np.asarray(fleet.grid)
        lo, hi = self.model.voltage_range
        self.voltages = np.array(sorted({fleet.snap_voltage(v) for v in np.linspace(lo, hi, VOLTAGE_STEPS)}))
        self.voltages = self.voltages[(self.voltages >= lo - 1e-9) & (self.voltages <= hi + 1e-9)]
        stock = self.stock_uniform(self.model.stock_freq_mhz)
        self._refresh(stock)
        self._lam = 1.0
        self._runner_up: NDArray[np.intp] = np.zeros(self.model.boards, dtype=np.intp)

    def _refresh(self, point: OperatingPoint) -> None:
        """Temperatures and string voltages of a solution, for the next round of chip limits."""
        steady = physics.steady_state(self.model, point.freq, point.board_voltage, self.g, self.duty, self.t_inlet,
                                      rth_scale=self.rth_scale, airflow_scale=self.airflow)
        self._t_j = steady.t_j
        self._drop = point.board_voltage[:, None] / self.model.domains - steady.v_chip  # (boards, 1)

    def _snap_down(self, freq: Array) -> Array:
        if not len(self.grid):
            return freq
        idx = np.clip(np.searchsorted(self.grid, freq + 1e-9, side="right") - 1, 0, len(self.grid) - 1)
        return np.asarray(np.where(freq > 0, self.grid[idx], 0.0))

    def _evaluate(self, v_board: Array, freq: Array) -> OperatingPoint:
        return evaluate(self.model, self.k, self.g, self.dead, v_board, freq, self.duty, self.t_inlet,
                        self.rth_scale, self.airflow)

    def stock_uniform(self, freq_mhz: float) -> OperatingPoint:
        """Stock-style operation: every chip at one frequency, stock board voltage."""
        m = self.model
        return self._evaluate(np.full(m.boards, m.stock_board_voltage), np.full((m.boards, m.chips_per_board),
                                                                               float(freq_mhz)))

    def stock_at_power(self, wall_w: float) -> OperatingPoint:
        """Uniform underclock (stock low-power mode) that draws ``wall_w``."""
        m = self.model
        return self._uniform_at_power(np.array([m.stock_board_voltage]), wall_w)

    def best_uniform_at_power(self, wall_w: float) -> OperatingPoint:
        """The best single frequency for every chip at the best single board voltage, drawing ``wall_w``."""
        return self._uniform_at_power(self.voltages, wall_w)

    def _uniform_at_power(self, voltages: Array, wall_w: float) -> OperatingPoint:
        """For each voltage, the uniform frequency (on the PLL grid) drawing at most ``wall_w``; the best one."""
        m = self.model
        shape = (len(voltages), m.boards, m.chips_per_board)
        vb = np.repeat(voltages[:, None], m.boards, axis=1)
        lo = np.full(len(voltages), m.min_freq_mhz)
        hi = np.full(len(voltages), m.max_freq_mhz)
        for _ in range(UNIFORM_BISECTIONS):
            mid = (lo + hi) / 2
            wall, _ = evaluate_many(m, self.k, self.g, self.dead, vb, np.broadcast_to(mid[:, None, None], shape),
                                    self.duty, self.t_inlet, self.rth_scale, self.airflow)
            over = wall > wall_w
            hi = np.where(over, mid, hi)
            lo = np.where(over, lo, mid)
        f = self._snap_down(lo)
        freq = np.broadcast_to(f[:, None, None], shape)
        wall, ths = evaluate_many(m, self.k, self.g, self.dead, vb, freq, self.duty, self.t_inlet, self.rth_scale,
                                  self.airflow)
        ok = wall <= wall_w * 1.0005
        best = int(np.argmax(np.where(ok, ths, -1.0)))
        return OperatingPoint(vb[best].copy(), np.array(freq[best]), float(wall[best]), float(ths[best]))

    def settings_for(self, lam: float, fixed: Array | None = None) -> tuple[Array, Array]:
        """Per-board voltage and per-chip frequency maximising H - lam P at this multiplier (``fixed``: each
        board's index into ``voltages`` instead of its best one)."""
        m, chip = self.model, self.model.chip
        boards = np.arange(m.boards)
        # (V, 1, 1) against (boards, chips); held voltages: (1, boards, 1), one per board
        v = self.voltages[:, None, None] if fixed is None else self.voltages[np.asarray(fixed)][None, :, None]
        v_chip = v / m.domains - self._drop[None]  # (V, boards, 1)
        fcrit = physics.critical_frequency(chip, self.k[None], v_chip, self._t_j[None])
        a = lam * chip.c_dyn * v_chip**2 * 1000.0 / chip.cores
        ratio = _optimal_ratio(np.broadcast_to(a, v_chip.shape), chip.error_width)
        freq = self._snap_down(np.clip(ratio * fcrit, m.min_freq_mhz, m.max_freq_mhz))
        p = physics.error_fraction(chip, freq, fcrit)
        gain = physics.hashrate_ghs(chip, freq) * (1 - p) - lam * physics.chip_power(chip, freq, v_chip,
                                                                                      self.g[None], self._t_j[None])
        # A chip whose best contribution is negative (or that is dead) is switched off: leakage only.
        off = (gain < -lam * physics.chip_power(chip, 0.0 * freq, v_chip, self.g[None], self._t_j[None])) | \
            self.dead[None]
        freq = np.where(off, 0.0, freq)
        gain = np.where(off, -lam * physics.chip_power(chip, 0.0 * freq, v_chip, self.g[None], self._t_j[None]),
                        gain)
        if fixed is not None:
            return self.voltages[np.asarray(fixed)], freq[0]
        value = gain.sum(axis=-1)  # (V, boards)
        best = value.argmax(axis=0)
        self._runner_up = np.argsort(-value, axis=0)[1] if len(self.voltages) > 1 else best
        return self.voltages[best], freq[best, boards]

    def _solve(self, metric: str, target: float, fixed: Array | None = None,
               bracket: tuple[float, float] = (1e-4, 1e3)) -> OperatingPoint:
        lo, hi = bracket  # GH/s per W, log-bisected
        best: OperatingPoint | None = None
        if metric == "hashrate":
            # Hashrate is not monotone in lam: far past stock, hot chips lose their limits and valid hashrate
            # collapses. Walk down from the cheap end to the first lam that reaches the target, then bisect.
            for lam in np.logspace(3, -1, 33):
                point = self._evaluate(*self.settings_for(float(lam), fixed))
                if point.hashrate_ths > target:
                    lo, best = float(lam), point
                    break
                hi = float(lam)
        for _ in range(60):
            lam = float(np.sqrt(lo * hi))
            point = self._evaluate(*self.settings_for(lam, fixed))
            value = point.wall_power_w if metric == "power" else point.hashrate_ths
            self._lam = lam
            if value > target:
                lo = lam  # too much: value more power (raise lam)
                if metric == "hashrate":
                    best = point  # the least hashrate still at or above the target so far
            else:
                hi = lam
                if metric == "power":
                    best = point
            if hi / lo < 1.0005:
                break
        if best is None:
            raise ValueError(f"{metric} target {target:g} is below what {self.model.name} can reach")
        # Refresh leakage temperatures for the chosen point once and re-solve around it.
        self._refresh(best)
        return best

    def best_at_power(self, wall_w: float) -> OperatingPoint:
        """Highest valid hashrate within ``wall_w`` (so the best J/TH at that power).

        Chip limits depend on the temperatures the solution itself causes: solve, refresh, re-solve a few
        times and keep the best point (every candidate is scored exactly, so taking the best is sound).
        """
        if self.k.size == 1:
            return self._one_chip_at_power(wall_w)
        points = [self._solve("power", wall_w) for _ in range(REFRESHES)]
        best = max(points, key=lambda p: p.hashrate_ths)
        # The multiplier picks each board's voltage; on a few boards, a budget between two hull points can be
        # spent better with another board's runner-up voltage: solve again with every mix of each board's
        # best and runner-up supply step (held), and polish the best few exactly.
        lam = self._lam
        self.settings_for(lam)
        first = np.searchsorted(self.voltages, best.board_voltage - 1e-9)
        second = self._runner_up
        for mix in range(1, min(2**self.model.boards, VOLTAGE_MIXES)):
            fixed = np.where([(mix >> b) & 1 for b in range(self.model.boards)], second, first)
            try:
                points.append(self._solve("power", wall_w, np.asarray(fixed), (lam / 8, lam * 8)))
            except ValueError:
                continue
        feasible = sorted((p for p in points if p.wall_power_w <= wall_w), key=lambda p: -p.hashrate_ths)
        if not feasible:
            return best
        polished = [self._polish(p, wall_w) for p in feasible[:POLISHED]]
        return max(polished, key=lambda p: p.hashrate_ths)

    def _moves(self, freq: Array) -> tuple[Array, Array]:
        """Each chip one PLL step up and one step down (the same setting where there is none): a chip that is off
        can start at the lowest step, one on the lowest step can be switched off; dead chips stay off."""
        grid = self.grid[(self.grid >= self.model.min_freq_mhz - 1e-9) & (self.grid <= self.model.max_freq_mhz + 1e-9)]
        n = len(grid)
        idx = np.searchsorted(grid, freq - 1e-9)
        on = freq > 0
        up = np.where(on, grid[np.minimum(idx + 1, n - 1)], grid[0])
        up = np.where(on & (idx + 1 >= n), freq, up)
        down = np.where(idx > 0, grid[np.maximum(idx - 1, 0)], 0.0)
        down = np.where(on, down, freq)
        return np.asarray(np.where(self.dead, freq, up)), np.asarray(np.where(self.dead, freq, down))

    def _single_moves(self, v_board: Array, freq: Array, target: Array) -> tuple[NDArray[np.intp], Array, Array]:
        """(flat chip index, wall W, TH/s) of every setting that changes one chip from ``freq`` to ``target``."""
        chips = np.flatnonzero(target.ravel() != freq.ravel())
        if not len(chips):
            return chips, np.zeros(0), np.zeros(0)  # nothing to move
        batch = np.repeat(freq[None], len(chips), axis=0)
        batch.reshape(len(chips), -1)[np.arange(len(chips)), chips] = target.ravel()[chips]
        wall, ths = evaluate_many(self.model, self.k, self.g, self.dead, np.broadcast_to(v_board, (len(chips),
                                  len(v_board))), batch, self.duty, self.t_inlet, self.rth_scale, self.airflow)
        return chips, np.atleast_1d(wall), np.atleast_1d(ths)

    def _polish(self, point: OperatingPoint, wall_w: float) -> OperatingPoint:
        """Exact local search from the multiplier solution, every candidate scored by ``evaluate``: spend the
        power left under the budget on the chips that turn it into the most valid hashrate, then trade PLL steps
        between chips (one up, one down) while that gains. On a grid of discrete steps the multiplier search
        alone stops at a point of the convex hull, up to a few chips' steps under the budget."""
        if not len(self.grid):
            return point
        cur = point
        for _ in range(POLISH_ROUNDS):
            up, down = self._moves(cur.freq)
            ui, uw, uh = self._single_moves(cur.board_voltage, cur.freq, up)
            di, dw, dh = self._single_moves(cur.board_voltage, cur.freq, down)
            nxt = self._fill(cur, wall_w, ui, uw, uh, up) or self._trade(cur, wall_w, ui, uw, uh, up, di, dw, dh,
                                                                           down)
            if nxt is None:
                break
            cur = nxt
        return cur

    def _combined(self, cur: OperatingPoint, changes: list[tuple[int, float]]) -> OperatingPoint:
        freq = cur.freq.copy()
        for flat, mhz in changes:
            freq.reshape(-1)[flat] = mhz
        return self._evaluate(cur.board_voltage, freq)

    def _fill(self, cur: OperatingPoint, wall_w: float, ui: NDArray[np.intp], uw: Array, uh: Array,
              up: Array) -> OperatingPoint | None:
        """Step up the chips with the best valid TH/s per W that still fit the budget (as many as fit at once)."""
        gain, cost = uh - cur.hashrate_ths, np.maximum(uw - cur.wall_power_w, 1e-9)
        fits = (uw <= wall_w) & (gain > 0)
        if not fits.any():
            return None
        order = np.flatnonzero(fits)[np.argsort(-(gain / cost)[fits])]
        take = max(1, int(np.searchsorted(np.cumsum(cost[order]), wall_w - cur.wall_power_w, side="right")))
        while take >= 1:
            trial = self._combined(cur, [(int(ui[j]), float(up.reshape(-1)[ui[j]])) for j in order[:take]])
            if trial.wall_power_w <= wall_w and trial.hashrate_ths > cur.hashrate_ths:
                return trial
            take //= 2
        return None

    def _trade(self, cur: OperatingPoint, wall_w: float, ui: NDArray[np.intp], uw: Array, uh: Array, up: Array,
               di: NDArray[np.intp],
               dw: Array, dh: Array, down: Array) -> OperatingPoint | None:
        """Pairs of one step up on the chips gaining most per W and one step down on those losing least per W."""
        gain_up, cost_up = uh - cur.hashrate_ths, uw - cur.wall_power_w
        loss_dn, save_dn = cur.hashrate_ths - dh, cur.wall_power_w - dw
        ok_up = (gain_up > 0) & (cost_up > 0)
        ok_dn = save_dn > 0
        if not ok_up.any() or not ok_dn.any():
            return None
        ups = np.flatnonzero(ok_up)[np.argsort(-(gain_up / np.maximum(cost_up, 1e-9))[ok_up])]
        dns = np.flatnonzero(ok_dn)[np.argsort((loss_dn / np.maximum(save_dn, 1e-9))[ok_dn])]
        pairs: list[tuple[int, int]] = []
        used: set[int] = set()
        j = 0
        for i in ups:
            while j < len(dns) and int(di[dns[j]]) in used | {int(ui[i])}:
                j += 1
            if j >= len(dns):
                break
            k = dns[j]
            if gain_up[i] / cost_up[i] <= loss_dn[k] / save_dn[k]:
                break
            pairs.append((int(i), int(k)))
            used |= {int(ui[i]), int(di[k])}
            j += 1
        take = len(pairs)
        while take >= 1:
            changes = [c for i, k in pairs[:take] for c in ((int(ui[i]), float(up.reshape(-1)[ui[i]])),
                                                            (int(di[k]), float(down.reshape(-1)[di[k]])))]
            trial = self._combined(cur, changes)
            if trial.wall_power_w <= wall_w and trial.hashrate_ths > cur.hashrate_ths * (1 + 1e-12):
                return trial
            take //= 2
        return None

    def upper_bound_at_power(self, point: OperatingPoint, wall_w: float) -> float:
        """A bound on the valid TH/s any grid setting can reach within ``wall_w`` *at the temperatures and
        supply-path drops of* ``point`` (Lagrangian duality: for every multiplier, max (H - lam P) + lam budget
        bounds H under the budget; minimised over the multiplier). Each chip's best is taken over the PLL steps
        either side of its continuous optimum (the value is unimodal in frequency) and off; each board's over
        every supply step. Temperatures are held, so it certifies the search, not the thermal coupling."""
        self._refresh(point)
        m, chip = self.model, self.model.chip
        lo_w, hi_w = 0.0, 10.0 * m.nameplate_w  # chip watts whose wall power is ``wall_w`` (monotone)
        for _ in range(60):
            mid = (lo_w + hi_w) / 2
            if float(physics.wall_power_w(m, mid, self.duty, self.t_inlet)) > wall_w:
                hi_w = mid
            else:
                lo_w = mid
        budget = lo_w
        v = self.voltages[:, None, None]
        v_chip = v / m.domains - self._drop[None]
        fcrit = physics.critical_frequency(chip, self.k[None], v_chip, self._t_j[None])
        leak = physics.chip_power(chip, np.zeros_like(fcrit), v_chip, self.g[None], self._t_j[None])

        def dual(lam: float) -> float:
            a = lam * chip.c_dyn * v_chip**2 * 1000.0 / chip.cores
            f = np.clip(_optimal_ratio(np.broadcast_to(a, v_chip.shape), chip.error_width) * fcrit,
                        m.min_freq_mhz, m.max_freq_mhz)
            best = -lam * leak  # off
            for cand in (self._snap_down(f), self._snap_up(f)):
                p = np.where(self.dead[None], 1.0, physics.error_fraction(chip, cand, fcrit))
                val = physics.hashrate_ghs(chip, cand) * (1 - p) - lam * physics.chip_power(
                    chip, cand, v_chip, self.g[None], self._t_j[None])
                best = np.maximum(best, val)
            return float(best.sum(axis=-1).max(axis=0).sum() + lam * budget) / 1000.0

        # The dual is convex in lam (a maximum of affine functions): golden-section search on log lam. Any lam
        # gives a valid bound; the search only makes it tight.
        r = (np.sqrt(5.0) - 1) / 2
        lo, hi = np.log(1e-4), np.log(1e3)
        a, b = hi - r * (hi - lo), lo + r * (hi - lo)
        fa, fb = dual(float(np.exp(a))), dual(float(np.exp(b)))
        for _ in range(BOUND_STEPS):
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - r * (hi - lo)
                fa = dual(float(np.exp(a)))
            else:
                lo, a, fa = a, b, fb
                b = lo + r * (hi - lo)
                fb = dual(float(np.exp(b)))
        return min(fa, fb)

    def _snap_up(self, freq: Array) -> Array:
        if not len(self.grid):
            return freq
        idx = np.clip(np.searchsorted(self.grid, freq - 1e-9, side="left"), 0, len(self.grid) - 1)
        return np.asarray(self.grid[idx])

    def _one_chip_at_power(self, wall_w: float) -> OperatingPoint:
        """One chip (a Bitaxe): every supply step against every PLL frequency, exactly. On two coarse grids the
        multiplier search only finds points on the convex hull, and which one moved by up to ~1 % of J/TH with
        a 0.005 change of fan duty: scoring noise larger than the differences it scores."""
        m = self.model
        lo, hi = max(m.min_freq_mhz, 0.25 * m.stock_freq_mhz), min(m.max_freq_mhz, 1.8 * m.stock_freq_mhz)
        grid = self.grid[(self.grid >= lo) & (self.grid <= hi)] if len(self.grid) else np.arange(lo, hi, 1.0)
        shape = (len(self.voltages), len(grid))
        volts = np.broadcast_to(self.voltages[:, None], shape)
        freqs = np.broadcast_to(grid[None, :], shape)
        wall, ths = evaluate_many(m, self.k, self.g, self.dead, volts[..., None], freqs[..., None, None], self.duty,
                                  self.t_inlet, self.rth_scale, self.airflow)
        score = np.where(wall <= wall_w, ths, -1.0)
        i, j = np.unravel_index(int(np.argmax(score)), shape)
        if score[i, j] < 0:  # below the least power the chip can run at: the cheapest point
            i, j = np.unravel_index(int(np.argmin(wall)), shape)
        return OperatingPoint(np.array([volts[i, j]]), np.array([[freqs[i, j]]]), float(wall[i, j]),
                              float(ths[i, j]))

    def best_at_hashrate(self, ths: float) -> OperatingPoint:
        """Lowest power that still delivers ``ths`` of valid hashrate."""
        points = [self._solve("hashrate", ths) for _ in range(REFRESHES)]
        return min(points, key=lambda p: p.wall_power_w)
