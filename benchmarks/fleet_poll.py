"""Fleet polling: OpenMOS's poller vs pyasic polling the same simulated devices, measured in one run.

Each simulated device (in a separate process) has its own loopback address 127.1.x.y and answers the
cgminer API on 4028. OpenMOS sends one multi-command per device; pyasic (0.79) runs its own
``get_data()`` through its backend class for OpenMOS devices, which builds full MinerData.
Both run at the same concurrency. Goal: >= 3x faster, 10k devices in < 10 s on this 2-core machine.

Usage: python benchmarks/fleet_poll.py [--devices 10000] [--pyasic-devices 2000] [--concurrency 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time

from openmos.fleet.poller import poll_all
from openmos.integrations.pyasic_miner import OpenMOSMiner
from openmos.testbed.farm import device_ip


async def pyasic_poll(ips: list[str], concurrency: int) -> tuple[int, float]:
    limit = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(ip: str) -> None:
        nonlocal ok
        async with limit:
            try:
                data = await OpenMOSMiner(ip).get_data()
                ok += data.hashrate is not None
            except Exception:  # pyasic raises a variety of errors; count as failed
                pass

    began = time.perf_counter()
    await asyncio.gather(*(one(ip) for ip in ips))
    return ok, time.perf_counter() - began


async def run(devices: int, pyasic_devices: int, concurrency: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, concurrency * 4 + 512)), hard))
    farm = await asyncio.create_subprocess_exec(sys.executable, "-m", "openmos.testbed.farm", str(devices),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert farm.stdout is not None and farm.stdin is not None
    json.loads(await farm.stdout.readline())
    ips = [device_ip(i) for i in range(devices)]
    began = time.perf_counter()
    snaps = await poll_all(ips, concurrency=concurrency)
    ours = time.perf_counter() - began
    ok = sum(s.ok for s in snaps)
    subset = ips[:pyasic_devices]
    began = time.perf_counter()
    await poll_all(subset, concurrency=concurrency)
    ours_subset = time.perf_counter() - began
    py_ok, py_time = await pyasic_poll(subset, concurrency)
    print(f"simulated devices: {devices:,} (own process, 127.1.x.y:4028); concurrency {concurrency}")
    print(f"OpenMOS poller: {ok:,}/{devices:,} devices in {ours:.2f} s ({devices / ours:,.0f}/s) "
          f"(goal 10k in < 10 s: {'met' if ours < 10 and ok == devices else 'NOT met'})")
    print(f"same {pyasic_devices:,} devices: OpenMOS {ours_subset:.2f} s, pyasic get_data {py_time:.2f} s "
          f"({py_ok:,} ok) -> {py_time / ours_subset:.1f}x faster (goal >= 3x)")
    farm.stdin.close()
    await farm.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--pyasic-devices", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.devices, args.pyasic_devices, args.concurrency))


if __name__ == "__main__":
    main()
