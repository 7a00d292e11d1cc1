"""Curtailment on production code: decision -> signed fleet bus -> real device nodes -> agents -> hardware.

The device end is the production stack, several devices per process: ``DeviceNode`` (verifies the signed
command, acknowledges on its events, signs the ack with its own key) -> ``AgentWorker`` -> ``AgentControl``
(the agent's control surface) -> the agent's safety monitor clock path -> ``MiningHardware``. The hardware is
``testbed.SlotHardware``: one miner of a vectorised simulated site (modelled physics, no hashing), metered by a
Modbus TCP meter per site process (``testbed.SiteMeter``, 0.5 s refresh, modelled). The controller end is the
production energy stack in this process: ``Site`` -> ``FleetLink`` -> ``FleetController.curtail_site`` (one
signed publication on a zenoh bus on 127.0.0.1) and ``ModbusPowerMeter`` (pymodbus client).

Measured in this run (wall clock), per site size: time from the signed decision's publication to the
acknowledgements of every device, and until the summed metered site power reads under the cap (the fast
path aims at the cap from nameplate figures; the production cap loop then corrects on meter readings). Baseline in
the same run: the same curtailment sent as one signed command per device (``FleetLink.set_watts``, 500 in
flight), i.e. what a fleet manager without a site broadcast does. Agents run without a tuner (the untuned
clock path); the tuner quick ramp is the same surface call, tested in tests/test_control.py.

Limit: every ``DeviceNode`` declares 12 zenoh queryables and a subscriber, and zenoh-python starts a thread
for each, so one process holds about a thousand devices; ``--procs`` spreads them (2 cores here).

Usage: python benchmarks/curtail.py [--sizes 100,1000,2000] [--procs 2] [--cap-fraction 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from openmos.base.net import free_local_port
from openmos.energy.modbus import ModbusPowerMeter
from openmos.energy.site import CapController, Site
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.energy import FleetLink
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceNode
from openmos.fleet.workers.openmos import AgentWorker
from openmos.miner import AgentConfig, MiningAgent
from openmos.security.signing import generate_keypair
from openmos.testbed.site import FleetSimSite, SiteMeter, SlotHardware

SITE = "bench"
POOLS = [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:9", "user": "bench.w"}]}]


def _raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n)), hard))


# -- the site end: one process holds many devices -----------------------------------------------------


async def serve_devices(first: int, count: int, endpoint: str, pub: Path, seed: int) -> None:
    logging.disable(logging.WARNING)
    site = FleetSimSite(count, seed=seed, site=SITE)
    await site.start(step_s=0.25)
    bus = FleetBus(BusConfig(connect=[endpoint]))
    await bus.open()
    config = AgentConfig.from_dict({"groups": POOLS})
    trusted = [pub.read_bytes()]
    nodes = [DeviceNode(bus, SITE, AgentWorker(MiningAgent(config, SlotHardware(site, i)), f"m{first + i:05d}"),
                        trusted, interval_s=3600.0) for i in range(count)]
    meter = SiteMeter(lambda: float(site.watts.sum()), period_s=0.5, seed=seed)
    await meter.start()
    keys = {n.device.device_id: n.public_key for n in nodes}
    print(json.dumps({"meter_port": meter.port, "keys": keys}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go": start the nodes
    for node in nodes:
        await node.start()  # serves commands, joins the site broadcast, publishes its first telemetry
    print("started", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    for node in nodes:
        await node.stop()
    await meter.stop()
    await site.stop()
    await bus.close()


# -- the controller end ----------------------------------------------------------------------------------


class SiteMeters:
    """The site's feeder meters read as one (each device process is one feeder)."""

    def __init__(self, meters: list[ModbusPowerMeter]) -> None:
        self.meters = meters

    async def read_power_w(self) -> float:
        return sum([await m.read_power_w() for m in self.meters])


async def cap_loop_until_under(cap: CapController, since: float, limit_s: float = 60.0) -> float:
    """The production cap loop on the metered power until a reading is under the cap; seconds since ``since``."""
    while time.perf_counter() - since < limit_s:
        await cap.step()
        if cap.meter_ok and cap.last_reading_w is not None and cap.last_reading_w <= cap.cap_w:
            return time.perf_counter() - since
        await asyncio.sleep(0.25)
    return float("inf")


async def one_size(n: int, procs: int, cap_fraction: float, baseline: bool, tmp: Path) -> dict[str, float]:
    generate_keypair(tmp / "cmd.pem", tmp / "cmd.pub")
    endpoint = f"tcp/127.0.0.1:{free_local_port()}"
    bus = FleetBus(BusConfig(listen=[endpoint]))
    await bus.open()
    procs = max(1, min(procs, n // 50 or 1))
    shares = [n // procs + (1 if p < n % procs else 0) for p in range(procs)]
    children, meters, registry = [], [], EnrollmentRegistry(None)
    built = time.perf_counter()
    first = 0
    for p, count in enumerate(shares):
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(first), str(count), endpoint, str(tmp / "cmd.pub"), str(p),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        children.append(child)
        first += count
    for child in children:
        assert child.stdout is not None
        info = json.loads(await child.stdout.readline())
        meters.append(ModbusPowerMeter("127.0.0.1", info["meter_port"]))
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
    site = Site(link)
    metered = SiteMeters(meters)
    await asyncio.sleep(1.0)  # let the meters refresh at full power
    before = await metered.read_power_w()
    cap = cap_fraction * before
    called = time.perf_counter()
    result = await site.curtail_to_w(cap * site.nameplate_w / before)  # the decision: aim at the metered cap
    published = time.perf_counter() - result.seconds
    under = await cap_loop_until_under(CapController(site, metered, cap), published)
    row = {"devices": n, "seen": len(link.members()), "acked": result.acknowledged, "ack_s": result.seconds,
           "under_s": under, "before_kw": before / 1000, "cap_kw": cap / 1000, "setup_s": setup_s,
           "call_s": time.perf_counter() - called}
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
    for child in children:
        await child.wait()
    for m in meters:
        m.close()
    await bus.close()
    return row


async def run(sizes: list[int], procs: int, cap_fraction: float, baseline_max: int) -> None:
    _raise_nofile(65536)
    print("curtail on production code: decision -> signed zenoh publication -> DeviceNode -> AgentWorker -> "
          "AgentControl -> hardware clocks;\nsite power modelled (vectorised simulator), metered over Modbus TCP "
          f"(0.5 s refresh), {procs} device process(es) on a {len(__import__('os').sched_getaffinity(0))}-core "
          "machine shared with other work\n")
    print(f"{'devices':>8} {'acked':>7} {'acks s':>8} {'under cap s':>12} {'per-device cmds s':>18} {'ratio':>6}"
          f" {'setup s':>8}")
    for n in sizes:
        with TemporaryDirectory() as tmp:
            row = await one_size(n, procs, cap_fraction, n <= baseline_max, Path(tmp))
        base = f"{row['base_ack_s']:>18.2f}" if "base_ack_s" in row else f"{'(skipped)':>18}"
        ratio = f"{row['base_ack_s'] / row['ack_s']:>5.1f}x" if "base_ack_s" in row and row["ack_s"] > 0 else " " * 6
        print(f"{n:>8,} {row['acked']:>7,.0f} {row['ack_s']:>8.2f} {row['under_s']:>12.2f} {base} {ratio}"
              f" {row['setup_s']:>8.0f}", flush=True)
        if row["acked"] < n:
            print(f"         only {row['acked']:,.0f} of {n:,} acknowledged within the timeout "
                  f"({row['seen']:,.0f} seen on the bus)")
    print("\nacks s: signed site broadcast published -> last device acknowledgement verified at the controller "
          "(goal at 10,000: < 2 s)\nunder cap s: same start -> summed metered power <= cap (goal < 5 s; includes "
          "the modelled 0.25 s physics step and 0.5 s meter refresh)\nper-device cmds s: baseline, one signed "
          "command per device (500 in flight); ratio = baseline / broadcast")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        first, count, endpoint, pub, seed = sys.argv[2:7]
        _raise_nofile(65536)
        asyncio.run(serve_devices(int(first), int(count), endpoint, Path(pub), int(seed)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,2000",
                        help="comma-separated site sizes (about 1,000 devices per device process, see above)")
    parser.add_argument("--procs", type=int, default=2, help="device processes (default %(default)s)")
    parser.add_argument("--cap-fraction", type=float, default=0.6)
    parser.add_argument("--baseline-max", type=int, default=1000, help="largest size for the per-device baseline")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.procs, args.cap_fraction, args.baseline_max))


if __name__ == "__main__":
    main()
