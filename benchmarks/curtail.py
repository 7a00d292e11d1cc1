"""Curtailment fast path: 10,000 simulated devices (in their own process), each on its own persistent
control-channel TCP connection on 127.0.0.1, plus a Modbus TCP site meter.

Measured in this run (wall clock): time from the curtail command to acknowledgements from every device,
and time until the meter reads under the new cap. The devices' power response (0.5 s first-order lag)
and the meter's 1 s refresh are modelled.

Usage: python benchmarks/curtail.py [--devices 10000] [--cap-fraction 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import numpy as np

from openmos.energy.control import ControlChannelDevice
from openmos.energy.modbus import ModbusPowerMeter
from openmos.energy.site import Site


async def run(devices: int, cap_fraction: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, devices + 512)), hard))
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "openmos.hw.sim.sitesim", str(devices),
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                 limit=1 << 22)
    assert child.stdout is not None and child.stdin is not None
    info = json.loads(await child.stdout.readline())
    max_power = np.array(info["max_power_w"])
    connect_began = time.perf_counter()
    conns: list[ControlChannelDevice] = []
    for start in range(0, devices, 500):
        conns += await asyncio.gather(*(ControlChannelDevice.connect("127.0.0.1", info["control_port"], f"m-{i}",
                                                                      float(max_power[i]))
                                        for i in range(start, min(start + 500, devices))))
    print(f"{devices:,} devices connected in {time.perf_counter() - connect_began:.1f} s "
          f"(site nameplate {max_power.sum() / 1e6:.1f} MW)")
    site = Site(conns, concurrency=devices)
    meter = ModbusPowerMeter("127.0.0.1", info["meter_port"])
    await asyncio.sleep(1.2)
    before = await meter.read_power_w()
    cap = cap_fraction * site.nameplate_w
    began = time.perf_counter()
    result = await site.curtail_to_w(cap)
    acked = time.perf_counter() - began
    while (await meter.read_power_w()) > cap:
        await asyncio.sleep(0.05)
    under = time.perf_counter() - began
    print(f"curtail {before / 1e6:.2f} MW -> cap {cap / 1e6:.2f} MW")
    print(f"  acknowledgements from {result.acknowledged:,}/{devices:,} devices: {acked:.2f} s "
          f"(goal < 2 s: {'met' if acked < 2 and result.acknowledged == devices else 'NOT met'})")
    print(f"  metered site power under the cap after: {under:.2f} s "
          "(includes the modelled 0.5 s power response and 1 s meter refresh)")
    for c in conns:
        c.close()
    meter.close()
    child.stdin.close()
    await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--cap-fraction", type=float, default=0.6)
    args = parser.parse_args()
    asyncio.run(run(args.devices, args.cap_fraction))


if __name__ == "__main__":
    main()
