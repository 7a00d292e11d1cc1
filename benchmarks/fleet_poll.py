"""Fleet polling against the strongest fair baseline: stock pyasic on a device type it supports natively.

The farm (its own process) puts simulated miners on loopback addresses 127.1.x.y:4028. For the comparison
every device answers as an Antminer S9 on Bitmain's stock bmminer firmware (``testbed.farm`` persona
``stock-s9``, modelled figures) -- a type stock pyasic detects and reads with its own ``BMMinerS9`` class.
Both sides gather the same fields: hashrate, expected hashrate, per-board hashrate / temperatures / chips,
fans, pools (url, user, accepted, rejected, active, alive), uptime and firmware version; both send one
multi-command (version+summary+stats+pools) per device at the same concurrency, and their readings are
checked to agree. A second line times the OpenMOS poller over a 10,000-device farm of OpenMOS devices
(absolute figure, no baseline).

Usage: python benchmarks/fleet_poll.py [--devices 2000] [--big 10000] [--concurrency 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

from pyasic.miners.antminer.bmminer.X9.S9 import BMMinerS9
from pyasic.miners.data import DataOptions

from openmos.base.net import raise_open_files
from openmos.fleet.poller import DeviceSnapshot, poll_all
from openmos.testbed.farm import device_ip

FIELDS = [DataOptions.HASHRATE, DataOptions.EXPECTED_HASHRATE, DataOptions.HASHBOARDS, DataOptions.FANS,
          DataOptions.POOLS, DataOptions.UPTIME, DataOptions.FW_VERSION]


async def pyasic_poll(ips: list[str], concurrency: int) -> tuple[dict[str, Any], float]:
    limit = asyncio.Semaphore(concurrency)
    out: dict[str, Any] = {}

    async def one(ip: str) -> None:
        async with limit:
            with contextlib.suppress(Exception):  # pyasic raises many kinds of errors: counted as failed
                out[ip] = await BMMinerS9(ip).get_data(include=FIELDS)

    began = time.perf_counter()
    await asyncio.gather(*(one(ip) for ip in ips))
    return out, time.perf_counter() - began


def agree(ours: DeviceSnapshot, theirs: Any) -> bool:
    boards = theirs.hashboards
    return (abs(float(theirs.hashrate) - ours.hashrate_ths) < 0.01
            and abs(float(theirs.expected_hashrate) - (ours.expected_ths or 0)) < 0.01
            and len(boards) == len(ours.board_list)
            and all(abs(float(b.hashrate) - o.hashrate_ths) < 0.01 and b.chips == o.chips and b.temp == o.temp_c
                    for b, o in zip(boards, ours.board_list, strict=True))
            and [f.speed for f in theirs.fans] == ours.fans_rpm
            and [p.user for p in theirs.pools] == [p.user for p in ours.pools])


async def farm(devices: int, persona: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "openmos.testbed.farm", str(devices), persona,
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    json.loads(await child.stdout.readline())
    return child


async def stop(child: asyncio.subprocess.Process) -> None:
    assert child.stdin is not None
    child.stdin.close()
    await child.wait()


async def run(devices: int, big: int, concurrency: int) -> None:
    raise_open_files(concurrency * 4 + 512)
    child = await farm(devices, "stock-s9")
    ips = [device_ip(i) for i in range(devices)]
    await poll_all(ips[:50], concurrency=concurrency, dialect="bmminer")  # warm both paths up alike
    await pyasic_poll(ips[:50], concurrency)
    rounds: list[tuple[float, float]] = []
    for _ in range(2):  # alternate the order so neither side always runs on a warmer machine
        began = time.perf_counter()
        snaps = await poll_all(ips, concurrency=concurrency, dialect="bmminer")
        ours = time.perf_counter() - began
        theirs, py_time = await pyasic_poll(ips, concurrency)
        rounds.append((ours, py_time))
    ok = [s for s in snaps if s.ok]
    same = sum(agree(s, theirs[s.ip]) for s in ok if s.ip in theirs)
    await stop(child)
    ours = min(r[0] for r in rounds)
    py_time = min(r[1] for r in rounds)
    print(f"{devices:,} simulated Antminer S9 on stock bmminer (own process, 127.1.x.y:4028, modelled), "
          f"concurrency {concurrency}, same fields both sides, best of {len(rounds)} rounds")
    print(f"  OpenMOS poller:        {len(ok):,} ok in {ours:.2f} s ({devices / ours:,.0f} devices/s)")
    print(f"  stock pyasic BMMinerS9 {len(theirs):,} ok in {py_time:.2f} s ({devices / py_time:,.0f} devices/s)")
    print(f"  readings agree on {same:,}/{len(ok):,} devices; OpenMOS / pyasic speed: {py_time / ours:.2f}x")
    if big:
        child = await farm(big, "openmos")
        began = time.perf_counter()
        snaps = await poll_all([device_ip(i) for i in range(big)], concurrency=concurrency)
        elapsed = time.perf_counter() - began
        await stop(child)
        good = sum(s.ok for s in snaps)
        print(f"{big:,} simulated OpenMOS devices: {good:,} polled in {elapsed:.2f} s "
              f"(goal 10k in < 10 s: {'met' if elapsed < 10 and good == big else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--big", type=int, default=10_000, help="OpenMOS-device farm size (0: skip)")
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.devices, args.big, args.concurrency))


if __name__ == "__main__":
    main()
