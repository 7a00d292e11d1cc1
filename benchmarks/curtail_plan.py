"""Device-side cost of one curtail: the control surface call down to the settings applied to the simulated hardware.

What an agent does when a curtail reaches it (``benchmarks/curtail.py`` measures the whole site; this measures
one device's share of it, which that benchmark runs serially, thousands per process): ``AgentWorker.act``
("curtail" as it arrives off the bus) -> ``AgentControl`` -> ``Autotuner.curtail`` (plan from its chip model,
quick ramp) -> ``SlotHardware`` (one miner of a vectorised simulated site, modelled). Every device is a real
``MiningAgent`` whose tuner starts from a chip model (the tuner's prior limits at two voltages and a power model
fitted on a simulated unit, as ``benchmarks/curtail.py`` seeds them) and has applied its first plan, as after
convergence. Timings are CPU time of this thread (the machine is shared: wall clock would measure the
neighbours), serial, one process; the machine's load is printed.

Each device receives, in turn, the curtails a site sends: to 57.6 % (a 60 % cap less the fast path's 4 %
margin), back to full, then to 80 %. Two cases:
- warm: nothing changed in the tuner's chip model since its last regular window planned;
- cold: a window has just trimmed one chip's margin (the per-level plan arrays must be rebuilt for it).
The ratio is cold / warm. Each curtail's plan is checked: planned (modelled) power under the target, clocks on
the PLL grid, board voltage on the supply's steps.

Usage: python benchmarks/curtail_plan.py [--models s21,s19xp,s19jpro] [--devices 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curtail import POOLS, fitted_power_model, seed_chip_model
from openmos.fleet.workers.openmos import AgentWorker
from openmos.miner import AgentConfig, MiningAgent
from openmos.testbed.site import FleetSimSite, SlotHardware
from openmos.tuning import Autotuner
from openmos.tuning.learning import on_volt_grid

FRACTIONS = (0.576, 1.0, 0.8)


def check_plan(tuner: Autotuner) -> str | None:
    """Why the tuner's present plan is wrong (None if it is right): over target, off grid, off the supply's steps."""
    plan, lim = tuner.plan, tuner.limits
    assert plan is not None
    goal = tuner.effective_target
    if goal.kind.value == "power" and plan.scale > 0.05 and plan.predicted_power_w > goal.value * (1 + 1e-9):
        return f"planned {plan.predicted_power_w:.1f} W over the {goal.value:.1f} W target"
    grid = np.asarray(lim.freq_grid_mhz)
    on = tuner.freq[tuner.freq > 0]
    if grid.size and not np.isin(on, grid).all():
        return "a clock off the PLL grid"
    steps = (tuner.voltage - lim.volt_min) / lim.volt_step
    if not np.allclose(steps, np.round(steps), atol=1e-6):
        return f"board voltage {tuner.voltage} off the supply's {lim.volt_step} V steps"
    return None


async def devices(model: str, n: int) -> list[AgentWorker]:
    site = FleetSimSite(n, model=model, seed=1)
    power = fitted_power_model(model)
    config = AgentConfig.from_dict({"groups": POOLS, "performance": {"power_w": site.model.nameplate_w}})
    workers = []
    for i in range(n):
        agent = MiningAgent(config, SlotHardware(site, i))
        assert agent.tuner is not None
        seed_chip_model(agent.tuner, power)
        kn = agent.tuner.knowledge  # the prior's voltages on the supply's steps, as a sweep's are
        kn.sweep_voltages = [on_volt_grid(agent.tuner.limits, v) for v in kn.sweep_voltages]
        await agent.tuner._apply_plan(agent.tuner._plan())  # as after the tuner's first window
        workers.append(AgentWorker(agent, f"m{i:05d}"))
    return workers


def tuner_of(worker: AgentWorker) -> Autotuner:
    tuner = worker.agent.tuner
    assert tuner is not None
    return tuner


async def one_case(workers: list[AgentWorker], cold: bool) -> tuple[float, list[str]]:
    """Microseconds per curtail over every device and fraction; the wrong plans seen."""
    spent, calls, wrong = 0.0, 0, []
    for fraction in FRACTIONS:
        for w in workers:
            tuner = tuner_of(w)
            if cold:  # a regular window trimmed a chip: what the tuner knows has changed since it last planned
                kn = tuner.knowledge
                kn.margin = kn.margin.copy()
                kn.margin[0, calls % kn.margin.shape[1]] += 0.001
            began = time.thread_time()
            answer = await w.act("curtail", {"fraction": fraction})
            spent += time.thread_time() - began
            calls += 1
            if answer.get("ok") is False:
                wrong.append(f"{w.device_id}: {answer.get('error')}")
            why = check_plan(tuner)
            if why:
                wrong.append(f"{w.device_id} at {fraction:.1%}: {why}")
            tuner._bridged = None  # the supply has slewed (the tuner's next tick would apply the plan's clocks)
            if tuner.plan is not None:
                await tuner._apply_plan(tuner.plan)
    return 1e6 * spent / calls, wrong


async def run(models: list[str], n: int) -> None:
    logging.disable(logging.WARNING)
    print(f"device-side curtail: AgentWorker.act -> AgentControl -> Autotuner.curtail -> SlotHardware (modelled), "
          f"{n} devices per model, serial, 1 process; load average {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores\n")
    failed = False
    print(f"{'model':>8} {'board':>9} {'warm us':>8} {'cold us':>8} {'cold/warm':>9}  plans")
    for model in models:
        workers = await devices(model, n)
        await one_case(workers, cold=False)  # first pass: every level each device will see is planned once
        warm, bad_warm = await one_case(workers, cold=False)
        cold, bad_cold = await one_case(workers, cold=True)
        lim = tuner_of(workers[0]).limits
        bad = bad_warm + bad_cold
        verdict = "all under target, on grid and steps" if not bad else f"{len(bad)} WRONG: {bad[0]}"
        print(f"{model:>8} {lim.boards:>3}x{lim.chips_per_board:<5} {warm:>8.0f} {cold:>8.0f} {cold / warm:>8.1f}x  "
              f"{verdict}", flush=True)
        failed = failed or bool(bad)
    print(f"\nus: CPU microseconds per curtail (fractions {', '.join(f'{f:.1%}' for f in FRACTIONS)} in turn, "
          "this thread's CPU time); warm: the chip model unchanged since the tuner last planned; cold: one chip's "
          "margin trimmed just before each curtail")
    if failed:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="s21,s19xp,s19jpro", help="comma-separated simulated models")
    parser.add_argument("--devices", type=int, default=200, help="devices per model (default %(default)s)")
    args = parser.parse_args()
    asyncio.run(run([m for m in args.models.split(",") if m], max(1, args.devices)))


if __name__ == "__main__":
    main()
