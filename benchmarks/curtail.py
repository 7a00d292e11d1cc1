"""Curtailment on production code: decision -> signed fleet bus -> real device nodes -> agents -> tuner -> hardware.

The device end is the production stack, several thousand devices per process: one ``DeviceHost`` per process
(one zenoh queryable and one site subscription for all its devices; the command's signature checked once,
each device admitting it itself) -> ``DeviceNode`` (signs its acknowledgement with its own key; acks leave
in batches of 100, each still the device's own signed message) -> ``AgentWorker`` -> ``AgentControl``
(the agent's control surface) -> the running agent's autotuner quick ramp (``Autotuner.curtail``: a new
plan from its chip model, one call per board) -> ``MiningHardware``. Every agent is started for real:
its autotuner task (closed loop on measured power and per-chip counters), its safety monitor, its pool
manager (no pool answers: this measures control, not mining). The hardware is ``testbed.SlotHardware``:
one miner of a vectorised simulated site (modelled physics and counters, no hashing), metered by a Modbus
TCP meter per site process, a process of its own (``testbed.SiteMeter``, 0.5 s refresh, modelled). The
controller end is the production energy stack in this process: ``Site`` -> ``FleetLink`` ->
``FleetController.curtail_site`` (one signed publication on a zenoh bus on 127.0.0.1) and ``ModbusPowerMeter``
(pymodbus client).

The tuners start from a chip model instead of sweeping (a sweep takes ~20 min per device): the tuner's
own prior for the chip limits at two voltages and a power model fitted to a simulated unit measured at
three operating points; from there they converge on measured power as usual. The safety monitor period
and the tuner tick are ``--period`` (default: 2 s, the production default, up to 200 devices; devices/100 s
beyond, so that thousands of agents' background control fits on this machine's shared cores -- printed).

Measured in this run (wall clock), per site size: time from the signed decision's publication to the
acknowledgements of every device (a device acknowledges once the command is verified, admitted, valid and
queued on its control surface: "accepted, will apply"), to every device's signed "applied" event (its
control surface ran the quick ramp), and until the summed metered site power reads under the cap (the fast
path aims at the cap from nameplate figures; the production cap loop then corrects on meter readings);
and the device-side CPU (accepting; agent + tuner + hardware) per device, which a real site does on each device's
own controller in parallel but this run does serially on shared cores. Baseline in the same run (up to
``--baseline-max`` devices): the same curtailment sent as one signed command per device
(``FleetLink.set_watts``, 500 in flight), i.e. what a fleet manager without a site broadcast does.

Usage: python benchmarks/curtail.py [--sizes 100,1000,10000] [--procs 2] [--cap-fraction 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from openmos.base.net import free_local_port, raise_open_files
from openmos.energy.modbus import DeviceUnavailable, ModbusPowerMeter
from openmos.energy.site import CapController, Site
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.energy import FleetLink
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.workers.openmos import AgentWorker
from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.backend import limits_for
from openmos.miner import AgentConfig, MiningAgent
from openmos.security.signing import generate_keypair
from openmos.testbed.site import FleetSimSite, SiteMeter, SlotHardware
from openmos.tuning import Autotuner
from openmos.tuning.learning import expected_limits
from openmos.tuning.planning import PowerModel

SITE = "bench"
POOLS = [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:9", "user": "bench.w"}]}]


# -- the site end: one process holds many devices -----------------------------------------------------


class TimedWorker(AgentWorker):
    """The production worker, with the device-side CPU time of each action summed (for the report only: the
    event loop thread's CPU, which a machine shared with other work does not inflate as wall time would)."""

    spent_s = 0.0
    acts = 0

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        began = time.thread_time()
        try:
            return await super().act(action, args)
        finally:
            TimedWorker.spent_s += time.thread_time() - began
            TimedWorker.acts += 1


class TimedHost(DeviceHost):
    """The production host, with the CPU time of accepting a site curtailment (signature check once, then
    each device's admission and signed acknowledgement) summed (for the report only)."""

    spent_s = 0.0

    def _on_curtail(self, key: str, envelope: Any) -> None:
        began = time.thread_time()
        try:
            super()._on_curtail(key, envelope)
        finally:
            TimedHost.spent_s += time.thread_time() - began


def fitted_power_model(model: str) -> PowerModel:
    """wall W vs sum V^2 F, sum V^2: one simulated unit (modelled) measured at three settled operating points,
    as the tuner fits it from its own windows."""
    limits = limits_for(get_model(model))
    samples = []
    for volts, scale in ((limits.stock_voltage, 1.0), (limits.stock_voltage, 0.7), (limits.stock_voltage - 1.0, 0.6)):
        unit = FleetSim(get_model(model), miners=1, seed=99, sample_counters=False)
        for b in range(limits.boards):
            unit.set_board_voltage(0, b, volts)
            unit.set_frequency(0, b, slice(None), limits.stock_freq_mhz * scale)
        unit.settle(600)
        v = np.full(limits.boards, unit.v_board[0].mean())
        samples.append((float((v**2 * unit.freq[0].sum(axis=1)).sum()), float((v**2).sum()),
                        float(unit.true_wall_power()[0])))
    return PowerModel.fit(samples)


def seed_chip_model(tuner: Autotuner, power: PowerModel) -> None:
    """The tuner's prior chip limits at stock and 1 V lower (what its first sweep would start from)."""
    lim = tuner.limits
    tuner.knowledge.sweep_voltages = [lim.stock_voltage - 1.0, lim.stock_voltage]
    tuner.knowledge.sweep_fmax = [expected_limits(lim, tuner.freq.shape, v) / 0.9
                                  for v in tuner.knowledge.sweep_voltages]
    tuner.knowledge.power_model = power


class FeederMeter:
    """The feeder's meter is a device of its own: its Modbus server runs in its own process (a thread of the
    device process was starved by thousands of agents and stopped answering), told the modelled site power
    by the device process (a line on its stdin every 50 ms)."""

    def __init__(self, seed: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--meter", str(seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def feed(self, watts: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{watts!r}\n".encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


async def serve_meter(seed: int) -> None:
    watts = [0.0]

    def follow() -> None:
        for line in sys.stdin:
            watts[0] = float(line)

    meter = SiteMeter(lambda: watts[0], period_s=0.5, seed=seed)
    await meter.start()
    print(meter.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, follow)  # until the device process goes
    await meter.stop()


async def serve_devices(first: int, count: int, endpoint: str, pub: Path, seed: int, period_s: float) -> None:
    logging.disable(logging.WARNING)
    site = FleetSimSite(count, seed=seed, site=SITE, counters=True)
    began = time.perf_counter()
    site.fleet.step(0.25)
    step_s = physics_step(time.perf_counter() - began)
    await site.start(step_s=step_s)
    bus = FleetBus(BusConfig(connect=[endpoint]))
    await bus.open()
    power = fitted_power_model("s21")
    config = AgentConfig.from_dict({"groups": POOLS, "performance": {"power_w": site.model.nameplate_w},
                                    "stratum": {"fallback_interval_s": 600, "retry_delay_s": 300}})
    host = TimedHost(bus, SITE, name=f"proc{seed}")
    agents = []
    for i in range(count):
        agent = MiningAgent(config, SlotHardware(site, i))
        assert agent.tuner is not None and agent.safety is not None
        seed_chip_model(agent.tuner, power)
        agent.tuner.options = replace(agent.tuner.options, tick_s=period_s)
        agent.safety.options = replace(agent.safety.options, period_s=period_s)
        agents.append(agent)
        host.add(DeviceNode(bus, SITE, TimedWorker(agent, f"m{first + i:05d}"), [pub.read_bytes()],
                            interval_s=3600.0))
    meter = FeederMeter(seed)

    async def feed() -> None:
        while True:
            meter.feed(float(site.watts.sum()))
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(feed())
    keys = {d: n.public_key for d, n in host.nodes.items()}
    print(json.dumps({"meter_port": meter.port, "keys": keys, "step_s": step_s}), flush=True)
    if not await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):  # "go": start the agents
        return  # the parent went away
    for agent in agents:
        await agent.start()  # pools, autotuner, safety monitor
    while not all(a.tuner is not None and a.tuner.plan is not None for a in agents):
        await asyncio.sleep(0.2)  # every tuner has applied its first plan (converging from the chip model)
    await host.start()  # serves commands, joins the site broadcast, publishes its first telemetry
    print("started", flush=True)
    while line := await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):
        if line.strip() == "stats":
            print(json.dumps({"acts": TimedWorker.acts, "act_s": TimedWorker.spent_s, "accept_s": TimedHost.spent_s}),
                  flush=True)
            TimedWorker.acts, TimedWorker.spent_s, TimedHost.spent_s = 0, 0.0, 0.0
    await host.stop()
    await asyncio.gather(*(agent.stop() for agent in agents))
    feeding.cancel()
    meter.stop()
    await site.stop()
    await bus.close()


# -- the controller end ----------------------------------------------------------------------------------


class SiteMeters:
    """The site's feeder meters read as one (each device process is one feeder)."""

    def __init__(self, meters: list[ModbusPowerMeter]) -> None:
        self.meters = meters

    async def read_power_w(self) -> float:
        return sum([await m.read_power_w() for m in self.meters])


def physics_step(cost_s: float) -> float:
    """The modelled site's physics period: 0.25 s, or longer where one step of this many miners costs more
    than a tenth of it (the physics is not what is measured, it must leave the cores to the devices): the
    metered power follows a curtailment up to one period late. (Stepping soon after every control change
    instead made it later: a step in a thread, contending for the GIL with thousands of agents, took seconds.)"""
    return max(0.25, round(10 * cost_s * 4) / 4)


async def cap_loop(cap: CapController, since: float, watch_s: float, limit_s: float = 60.0) -> dict[str, float]:
    """The production cap loop on the metered power: seconds from ``since`` to the first reading under the cap,
    then ``watch_s`` more seconds of it: highest and lowest reading after that (share of the cap), and how many
    times it changed the site level."""
    under = float("inf")
    seen: list[float] = []
    while time.perf_counter() - since < limit_s:
        await cap.step()
        if cap.meter_ok and cap.last_reading_w is not None:
            if under == float("inf") and cap.last_reading_w <= cap.cap_w:
                under = time.perf_counter() - since
            if under < float("inf"):
                seen.append(cap.last_reading_w / cap.cap_w)
                if time.perf_counter() - since > under + watch_s:
                    break
        await asyncio.sleep(0.25)
    nan = float("nan")
    return {"under_s": under, "after_max": max(seen, default=nan), "after_min": min(seen, default=nan),
            "corrections": cap.corrections}


async def device_stats(children: list[Any]) -> tuple[int, float, float]:
    """(curtailments applied, CPU seconds applying them, CPU seconds accepting them) over the device processes."""
    acts, spent, accept = 0, 0.0, 0.0
    for child in children:
        child.stdin.write(b"stats\n")
        await child.stdin.drain()
        stats = json.loads(await asyncio.wait_for(child.stdout.readline(), 120))
        acts, spent, accept = acts + stats["acts"], spent + stats["act_s"], accept + stats["accept_s"]
    return acts, spent, accept


async def one_size(n: int, procs: int, cap_fraction: float, baseline: bool, period_s: float, tmp: Path
                   ) -> dict[str, float]:
    generate_keypair(tmp / "cmd.pem", tmp / "cmd.pub")
    endpoint = f"tcp/127.0.0.1:{free_local_port()}"
    bus = FleetBus(BusConfig(listen=[endpoint]))
    await bus.open()
    procs = max(1, min(procs, n // 50 or 1))
    shares = [n // procs + (1 if p < n % procs else 0) for p in range(procs)]
    children, meters, registry, steps = [], [], EnrollmentRegistry(None), []
    built = time.perf_counter()
    first = 0
    for p, count in enumerate(shares):
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(first), str(count), endpoint, str(tmp / "cmd.pub"), str(p),
            str(period_s),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        children.append(child)
        first += count
    for child in children:
        assert child.stdout is not None
        info = json.loads(await child.stdout.readline())
        meters.append(ModbusPowerMeter("127.0.0.1", info["meter_port"]))
        steps.append(info["step_s"])
        registry.pin_many([(SITE, d, k) for d, k in info["keys"].items()])
    controller = FleetController(bus, (tmp / "cmd.pem").read_bytes(), tmp / "audit.jsonl", registry=registry)
    link = FleetLink(controller, SITE, timeout_s=max(10.0, n / 500))
    link.start()
    for child in children:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    for child in children:
        assert child.stdout is not None
        await child.stdout.readline()
    deadline = time.monotonic() + 60 + n / 100
    while len(link.members()) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    setup_s = time.perf_counter() - built
    print(f"  {n:,} devices: {len(link.members()):,} on the bus after {setup_s:.0f} s", file=sys.stderr, flush=True)
    site = Site(link)
    metered = SiteMeters(meters)
    await asyncio.sleep(1.0)  # let the meters refresh at full power
    for _ in range(20):  # the meters answer (they may be slow while the device processes settle)
        with contextlib.suppress(DeviceUnavailable):
            before = await metered.read_power_w()
            break
    else:
        raise SystemExit("the site meters do not answer")
    cap = cap_fraction * before
    called = time.perf_counter()
    result = await site.curtail_to_w(cap * site.nameplate_w / before)  # the decision: aim at the metered cap
    published = time.perf_counter() - result.seconds
    broadcast = controller.last_broadcast[SITE]
    watched = await cap_loop(CapController(site, metered, cap), published, watch_s=30.0)
    await broadcast.wait_applied(max(0.0, 60.0 - (time.perf_counter() - published)))
    applied_s = broadcast.applied_s if broadcast.applied_s is not None else float("inf")
    print(f"  decision acknowledged by {result.acknowledged:,} in {result.seconds:.2f} s; applied by "
          f"{len(broadcast.applied):,} in {applied_s:.2f} s; under the cap after {watched['under_s']:.2f} s",
          file=sys.stderr, flush=True)
    acts, act_s, accept_s = await device_stats(children)
    row = {"devices": n, "seen": len(link.members()), "acked": result.acknowledged, "ack_s": result.seconds,
           "applied": len(broadcast.applied), "applied_s": applied_s,
           "before_kw": before / 1000, "cap_kw": cap / 1000, "setup_s": setup_s, "step_s": max(steps),
           "call_s": time.perf_counter() - called, "procs": procs, "act_ms": 1000 * act_s / max(acts, 1),
           "accept_ms": 1000 * accept_s / max(result.acknowledged, 1), "device_s": (act_s + accept_s) / procs,
           **watched}
    if baseline:
        await site.set_fraction(1.0)
        await asyncio.sleep(1.5)
        per_device = {m.device_id: cap_fraction * 0.98 * m.full_power_w for m in link.members()}
        began = time.perf_counter()
        base = await site.dispatch(per_device)
        row["base_ack_s"] = time.perf_counter() - began
        row["base_acked"] = base.acknowledged
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
    for child in children:  # a child stops its agents one by one; past a minute it is killed
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()
    for m in meters:
        m.close()
    await bus.close()
    return row


def default_period(n: int) -> float:
    """2 s (the production default) up to 200 devices; beyond, longer in proportion, so that the agents'
    background control (tuner tick + safety check, ~0.7 ms per device here, serial on shared cores where a
    real site has one controller per device) leaves the device processes time to answer."""
    return max(2.0, n / 100)


async def run(sizes: list[int], procs: int, cap_fraction: float, baseline_max: int, period: float | None) -> None:
    raise_open_files(65536)
    print("curtail on production code: decision -> signed zenoh publication -> DeviceHost -> DeviceNode -> "
          "AgentWorker -> AgentControl -> running autotuner quick ramp -> hardware clocks;\nsite power modelled "
          "(vectorised simulator with per-chip counters), metered over Modbus TCP (0.5 s refresh), device "
          f"processes on a {len(os.sched_getaffinity(0))}-core machine shared with other work\n")
    print(f"{'devices':>8} {'procs':>5} {'period s':>8} {'step s':>6} {'acked':>7} {'acks s':>7} {'applied':>7} "
          f"{'applied s':>9} {'under cap s':>11} {'after: max':>10} {'min':>5} {'cuts':>4} {'accept ms':>9} "
          f"{'apply ms':>8} {'dev work s':>10} {'per-device cmds s':>17} {'ratio':>6} {'setup s':>8} {'load':>5}")
    rows = []
    for n in sizes:
        this_period = period or default_period(n)
        with TemporaryDirectory() as tmp:
            row = await one_size(n, procs, cap_fraction, n <= baseline_max, this_period, Path(tmp))
        rows.append(row)
        base = f"{row['base_ack_s']:>17.2f}" if "base_ack_s" in row else f"{'(skipped)':>17}"
        ratio = f"{row['base_ack_s'] / row['applied_s']:>5.1f}x" if "base_ack_s" in row and row["applied_s"] > 0 \
            else " " * 6
        print(f"{n:>8,} {row['procs']:>5.0f} {this_period:>8.0f} {row['step_s']:>6.2f} {row['acked']:>7,.0f} "
              f"{row['ack_s']:>7.2f} {row['applied']:>7,.0f} {row['applied_s']:>9.2f} {row['under_s']:>11.2f} "
              f"{row['after_max']:>10.1%} {row['after_min']:>5.0%} {row['corrections']:>4.0f} "
              f"{row['accept_ms']:>9.3f} {row['act_ms']:>8.2f} {row['device_s']:>10.2f} {base} {ratio} "
              f"{row['setup_s']:>8.0f} {os.getloadavg()[0]:>5.1f}", flush=True)
        if "base_acked" in row and row["base_acked"] < n:
            print(f"         baseline: only {row['base_acked']:,.0f} of {n:,} per-device commands acknowledged in time")
        if row["acked"] < n:
            print(f"         only {row['acked']:,.0f} of {n:,} acknowledged within the timeout "
                  f"({row['seen']:,.0f} seen on the bus)")
        if row["applied"] < n:
            print(f"         only {row['applied']:,.0f} of {n:,} reported the level applied within 60 s")
    print("\nacks s: signed site broadcast published -> last device acknowledgement verified at the controller "
          "(goal at 10,000: < 2 s); an acknowledgement, signed by the device, means the command was verified, "
          "admitted (site, address, age, nonce), valid and queued on the device's control surface\napplied s: "
          "same start -> last device's signed 'applied' event verified at the controller (its control surface ran "
          "the tuner's quick ramp and set the clocks)\nunder cap s: same start -> summed metered power <= cap "
          "(goal < 5 s; includes the physics step and the 0.5 s meter refresh)\nafter: max/min: highest and "
          "lowest metered power in the 30 s after, as a share of the cap; cuts: level changes the cap loop made on "
          "readings (0: the one decision held; it waits while devices still report applying)\naccept ms / apply "
          "ms: device-side CPU per device to accept and acknowledge (admission + signed ack) / to apply (agent "
          "control + tuner quick ramp + simulated hardware; the signed 'applied' event, ~0.05 ms, not counted); dev "
          "work s: their sum per device process, done one "
          "device after another (on its own controller, in parallel, on a real site)\nperiod s: tuner tick and "
          "safety monitor period of every agent; step s: the modelled site's physics period\nper-device cmds s: "
          "baseline, one signed command per device (500 in flight, each reply sent once applied); ratio = baseline "
          "/ applied s; load: 1-min load average of the machine after the row")
    extrapolate(rows)


def extrapolate(rows: list[dict[str, float]]) -> None:
    """A straight line through (devices per process, seconds): the scaling curve's honest extrapolation."""
    done = [r for r in rows if r["acked"] == r["devices"]]
    if len(done) < 2 or max(r["devices"] for r in done) >= 10_000:
        return
    x = np.array([r["devices"] / r["procs"] for r in done])
    sizes = ", ".join(f"{r['devices']:,.0f}" for r in done)
    for key, label in (("ack_s", "acks"), ("applied_s", "applied"), ("under_s", "under the cap"),
                       ("device_s", "device work")):
        slope, icept = np.polyfit(x, np.array([r[key] for r in done]), 1)
        print(f"extrapolated {label} at 10,000 devices in {done[-1]['procs']:.0f} processes: "
              f"{icept + slope * 10_000 / done[-1]['procs']:.1f} s ({1000 * slope:.2f} ms per device per process "
              f"+ {icept:.2f} s, fitted on {sizes})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--meter":
        asyncio.run(serve_meter(int(sys.argv[2])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        first, count, endpoint, pub, seed, period = sys.argv[2:8]
        raise_open_files(65536)
        asyncio.run(serve_devices(int(first), int(count), endpoint, Path(pub), int(seed), float(period)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated site sizes")
    parser.add_argument("--procs", type=int, default=2, help="device processes (default %(default)s)")
    parser.add_argument("--cap-fraction", type=float, default=0.6)
    parser.add_argument("--period", type=float, default=None,
                        help="tuner tick and safety period of every agent (default: 2 s up to 200 devices, "
                             "devices/100 s beyond)")
    parser.add_argument("--baseline-max", type=int, default=1000, help="largest size for the per-device baseline")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.procs, args.cap_fraction, args.baseline_max,
                    args.period))


if __name__ == "__main__":
    main()
